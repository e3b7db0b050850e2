#![allow(clippy::expect_used)]
//! `dosetrack simulate`'s work in process, piece by piece (issue #16 item
//! 4; the whole process against opentiva is measured by
//! `scripts/simulate-vs-opentiva.sh`, figures in docs/benchmarks.md): the
//! day of `scripts/simulate_vs_opentiva.py` ("full": the regimen of
//! benches/engine.rs as an events file), a 70 kg adult on Domino, 24 h at
//! 1-s steps (86,401 rows).
//!
//! * reading the built-in drug file (parse and validate);
//! * resolving the patient and solving the events (the model derived on
//!   demand, as the command line does);
//! * the CSV of the day, sampled as written (the command line's path), and
//!   sampled into a vector first (JSON and charts);
//! * sampling alone.

use criterion::{criterion_group, criterion_main, Criterion};
use dosetrack_core::drug::DrugFile;
use dosetrack_core::patient::{Formulary, PatientSpec};
use dosetrack_core::simulate;
use std::hint::black_box;

/// The day as contract payloads (as the comparison script writes it).
const DAY: &str = r#"{"id": "b0", "time": "2026-11-27T00:00:00Z", "route": "iv_bolus", "amount_mg": 20.0}
{"device_id": "pump-1", "id": "p0", "time": "2026-11-27T00:00:00Z", "kind": "infusion_started", "patient_id": "P-1", "rate_mg_per_h": 20.0}
{"device_id": "pump-1", "id": "p1", "time": "2026-11-27T02:00:00Z", "kind": "infusion_rate_changed", "patient_id": "P-1", "rate_mg_per_h": 15.0}
{"device_id": "pump-1", "id": "p2", "time": "2026-11-27T06:00:00Z", "kind": "infusion_rate_changed", "patient_id": "P-1", "rate_mg_per_h": 10.0}
{"device_id": "pump-1", "id": "p3", "time": "2026-11-27T10:00:00Z", "kind": "infusion_rate_changed", "patient_id": "P-1", "rate_mg_per_h": 5.0}
{"device_id": "pump-1", "id": "p-stop", "time": "2026-11-27T14:00:00Z", "kind": "infusion_stopped"}
{"id": "d0", "time": "2026-11-27T03:00:00Z", "route": "im", "amount_mg": 25.0}
{"id": "d1", "time": "2026-11-27T07:13:00Z", "route": "sc", "amount_mg": 20.0}
{"id": "d2", "time": "2026-11-27T11:00:00Z", "route": "intranasal", "amount_mg": 50.0}
{"id": "d3", "time": "2026-11-27T15:30:00Z", "route": "oral", "amount_mg": 50.0}
{"id": "d4", "time": "2026-11-27T19:00:00Z", "route": "sublingual", "amount_mg": 25.0}
{"id": "patch", "time": "2026-11-27T12:00:00Z", "route": "transdermal", "release_rate_mg_per_h": 1.04, "wear_h": 24.0}
"#;

fn domino_70kg() -> PatientSpec {
    let mut spec = PatientSpec::weight_only(70.0);
    spec.model = Some("domino".to_owned());
    spec
}

fn bench(c: &mut Criterion) {
    c.bench_function("simulate/drug_file_builtin", |b| {
        b.iter(|| black_box(DrugFile::builtin().expect("drug file")))
    });

    let drug = DrugFile::builtin().expect("drug file");
    let inputs = simulate::parse_events(DAY).expect("events");
    let spec = domino_70kg();
    c.bench_function("simulate/resolve_and_solve_day", |b| {
        b.iter(|| {
            let f = Formulary::on_demand(drug.clone());
            black_box(simulate::solve(&f, &spec, &inputs, None).map(|s| s.last_event_ms))
        })
    });

    let f = Formulary::on_demand(drug.clone());
    let solved = simulate::solve(&f, &spec, &inputs, None).expect("solved");
    let day = Some("24h");
    c.bench_function("simulate/day_csv_sampled_as_written", |b| {
        b.iter(|| {
            let table = simulate::simulate_table(&solved, None, day, 1_000).expect("table");
            simulate::write_csv_streamed(&solved, &table, &mut std::io::sink()).expect("csv")
        })
    });
    c.bench_function("simulate/day_csv_from_sample_vector", |b| {
        b.iter(|| {
            let report = simulate::simulate(&solved, None, day, 1_000).expect("report");
            simulate::write_csv(&report, &mut std::io::sink()).expect("csv")
        })
    });
    let table = simulate::simulate_table(&solved, None, day, 1_000).expect("table");
    c.bench_function("simulate/day_samples_only", |b| {
        b.iter(|| {
            solved
                .solution
                .samples(table.from_ms, table.to_ms, 1_000)
                .fold(0.0, |acc, s| acc + s.cp_ng_per_ml)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
