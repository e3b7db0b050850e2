#![allow(clippy::expect_used)]
//! The cost of one input to a patient with a long pump history (issue #16
//! item 1; figures in docs/benchmarks.md, "Incremental apply"): one input
//! in occurrence order, and one late input (10 minutes before the patient's
//! latest), each applied and the model brought up to date
//! (`Tracker::apply` + `Tracker::derived`), at 10,000 and 40,000 pump
//! events; incrementally (the default), with the previous model still held
//! elsewhere (as the daemon's forecast endpoint holds it), and rebuilt from
//! all inputs (`Tracker::set_full_rebuild`, the behaviour before).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use dosetrack_core::contract::{parse_payload, parse_topic};
use dosetrack_core::drug::DrugFile;
use dosetrack_core::patient::Formulary;
use dosetrack_core::tracker::{TrackedInput, Tracker, TrackerConfig};
use dosetrack_core::vocab::{format_rfc3339, TimeMs};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: TimeMs = 1_795_766_400_000; // 2026-11-27T08:00:00Z
const STEP_MS: TimeMs = 60_000;
const PID: &str = "P-1";

fn input(seq: i64, topic: &str, payload: &str) -> TrackedInput {
    let topic = parse_topic("dosetrack", topic).expect("topic");
    let input = parse_payload(&topic, payload.as_bytes()).expect("payload");
    TrackedInput { seq, topic, input }
}

/// Pump event number `i` at `t`: a start, then rate changes (every 50th a
/// stop, restarted at the next).
fn pump_event(seq: i64, i: i64, t: TimeMs) -> TrackedInput {
    let time = format_rfc3339(t);
    let rate = 5 + i % 17;
    let body = match i % 50 {
        0 => format!(r#""kind":"infusion_started","patient_id":"{PID}","rate_mg_per_h":{rate}"#),
        49 => r#""kind":"infusion_stopped""#.to_owned(),
        _ => format!(r#""kind":"infusion_rate_changed","rate_mg_per_h":{rate}"#),
    };
    input(
        seq,
        "dosetrack/v1/devices/pump-1/events",
        &format!(r#"{{"id":"e-{seq}","time":"{time}",{body}}}"#),
    )
}

fn dose(seq: i64, t: TimeMs) -> TrackedInput {
    input(
        seq,
        &format!("dosetrack/v1/patients/{PID}/doses"),
        &format!(
            r#"{{"id":"d-{seq}","time":"{}","route":"iv_bolus","amount_mg":10}}"#,
            format_rfc3339(t)
        ),
    )
}

/// A tracker holding one patient with `n` pump events, one a minute.
fn patient(n: i64, full: bool) -> Tracker {
    let f = Arc::new(Formulary::new(DrugFile::builtin().expect("drug file")).expect("formulary"));
    let mut tr = Tracker::new(f, TrackerConfig::default());
    tr.set_full_rebuild(full);
    tr.apply(input(
        1,
        &format!("dosetrack/v1/patients/{PID}/admit"),
        &format!(
            r#"{{"id":"adm-1","time":"{}","weight_kg":72,"age_years":41}}"#,
            format_rfc3339(T0)
        ),
    ));
    for i in 0..n {
        tr.apply(pump_event(i + 2, i, T0 + i * STEP_MS));
    }
    black_box(tr.derived(PID).expect("model"));
    tr
}

#[derive(Clone, Copy)]
enum Kind {
    InOrder,
    Late,
}

/// `iters` inputs of `kind`, timed one by one (apply + derived). A late
/// input follows an untimed in-order pump event each time, so the history
/// after the late input's time stays ten minutes long. With `shared`, the
/// previous model is held elsewhere while the input is applied.
fn run(
    tr: &mut Tracker,
    next: &mut (i64, TimeMs),
    kind: Kind,
    shared: bool,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (seq, t) = *next;
        let timed = match kind {
            Kind::InOrder => pump_event(seq, seq, t),
            Kind::Late => {
                tr.apply(pump_event(seq, seq, t));
                black_box(tr.derived(PID));
                dose(seq + 1, t - 10 * 60_000 + 1_000)
            }
        };
        let held = if shared { tr.derived(PID) } else { None };
        let start = Instant::now();
        tr.apply(timed);
        black_box(tr.derived(PID));
        total += start.elapsed();
        drop(held);
        *next = (seq + 2, t + STEP_MS);
    }
    total
}

fn bench(c: &mut Criterion) {
    for n in [10_000i64, 40_000] {
        let mut g = c.benchmark_group(format!("apply_{n}_pump_events"));
        g.sample_size(20).warm_up_time(Duration::from_millis(500));
        for (name, kind, shared) in [
            ("in_order", Kind::InOrder, false),
            ("late_10min", Kind::Late, false),
            ("in_order_model_shared", Kind::InOrder, true),
            ("late_10min_model_shared", Kind::Late, true),
        ] {
            let mut tr = patient(n, false);
            let mut next = (n + 2, T0 + n * STEP_MS);
            g.bench_function(name, |b| {
                b.iter_custom(|iters| run(&mut tr, &mut next, kind, shared, iters))
            });
        }
        // Before: every input rebuilds the patient's model from all inputs
        // (in order or late costs the same).
        let mut tr = patient(n, true);
        let mut next = (n + 2, T0 + n * STEP_MS);
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
        g.bench_function("late_10min_full_rebuild", |b| {
            b.iter_custom(|iters| run(&mut tr, &mut next, Kind::Late, false, iters))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
