#![allow(clippy::expect_used)]
//! Engine benchmarks for the targets of issue #2 (numbers in
//! docs/benchmarks.md):
//!
//! * a 24-hour regimen (an infusion with 3 rate changes, 6 doses by
//!   different routes, one patch) sampled at 1 s: 86,400 Cp/Ce points < 5 ms;
//! * "now" for a patient with 10,000 past inputs < 2 µs;
//! * a forecast (next crossing) < 50 µs.

use criterion::{criterion_group, criterion_main, Criterion};
use dosetrack_core::drug::DrugFile;
use dosetrack_core::patient::{Formulary, PatientSpec};
use dosetrack_core::pk::{Dosing, Output, PkParams, Schedule, Solution, System};
use dosetrack_core::vocab::Route;
use std::hint::black_box;
use std::sync::Arc;

const H: i64 = 3_600_000;
const MIN: i64 = 60_000;

fn domino() -> PkParams {
    let f = Formulary::new(DrugFile::builtin().expect("drug file")).expect("formulary");
    f.resolve(&PatientSpec::weight_only(70.0))
        .expect("patient")
        .params
}

fn day_regimen() -> Vec<Dosing> {
    let seg = |s: i64, e: Option<i64>, r: f64| Dosing::Infusion {
        start_ms: s,
        end_ms: e,
        rate_mg_per_h: r,
    };
    let bolus = |t: i64, route: Route, a: f64| Dosing::Bolus {
        at_ms: t,
        route,
        amount_mg: a,
    };
    vec![
        seg(0, Some(2 * H), 20.0),
        seg(2 * H, Some(6 * H), 15.0),
        seg(6 * H, Some(10 * H), 10.0),
        seg(10 * H, Some(14 * H), 5.0),
        bolus(0, Route::IvBolus, 20.0),
        bolus(3 * H, Route::Im, 25.0),
        bolus(7 * H + 13 * MIN, Route::Sc, 20.0),
        bolus(11 * H, Route::Intranasal, 50.0),
        bolus(15 * H + 30 * MIN, Route::Oral, 50.0),
        bolus(19 * H, Route::Sublingual, 25.0),
        Dosing::Patch {
            start_ms: 12 * H,
            end_ms: 36 * H,
            release_rate_mg_per_h: 1.04,
        },
    ]
}

fn bench(c: &mut Criterion) {
    let params = domino();
    let system = Arc::new(System::new(params.clone()).expect("system"));

    c.bench_function("system_new (model build, once per patient model)", |b| {
        b.iter(|| System::new(black_box(params.clone())))
    });

    let regimen = day_regimen();
    let schedule = Schedule::build(&params, &regimen).expect("schedule");
    let solution = Solution::new(system.clone(), &schedule);
    c.bench_function("day_86400_points_sample_only", |b| {
        b.iter(|| black_box(solution.sample(0, 24 * H - 1000, 1000)))
    });
    c.bench_function("day_86400_points_from_dosing", |b| {
        b.iter(|| {
            let schedule = Schedule::build(&params, black_box(&regimen)).expect("schedule");
            let s = Solution::new(system.clone(), &schedule);
            black_box(s.sample(0, 24 * H - 1000, 1000))
        })
    });

    // 10,000 past inputs over 30 days: boluses by every route, pump segments.
    let routes = [
        Route::IvBolus,
        Route::Im,
        Route::Intranasal,
        Route::Oral,
        Route::Sublingual,
        Route::Sc,
    ];
    let mut long: Vec<Dosing> = Vec::with_capacity(10_000);
    let span = 30 * 24 * H;
    for i in 0..10_000i64 {
        let t = i * span / 10_000;
        if i % 2 == 0 {
            long.push(Dosing::Bolus {
                at_ms: t,
                route: routes[(i / 2) as usize % routes.len()],
                amount_mg: 5.0 + (i % 7) as f64,
            });
        } else {
            long.push(Dosing::Infusion {
                start_ms: t,
                end_ms: Some(t + 90 * MIN),
                rate_mg_per_h: 5.0 + (i % 5) as f64,
            });
        }
    }
    let schedule = Schedule::build(&params, &long).expect("schedule");
    let history = Solution::new(system.clone(), &schedule);
    let now = span + 17 * MIN + 123;
    let mut k = 0i64;
    c.bench_function("now_with_10000_past_inputs", |b| {
        b.iter(|| {
            k = (k + 7_919) % 600_000;
            black_box(history.at(black_box(now + k)))
        })
    });

    // Forecasts from mid-day of the day regimen.
    let day = Solution::new(
        system.clone(),
        &Schedule::build(&params, &regimen).expect("schedule"),
    );
    let at = 13 * H;
    for (name, horizon) in [
        ("forecast_redose_ce_floor_12h", 12 * H),
        ("forecast_no_crossing_24h", 24 * H),
    ] {
        let level = if horizon == 12 * H { 100.0 } else { 5_000.0 };
        c.bench_function(name, |b| {
            b.iter(|| black_box(day.next_crossing(Output::Ce, black_box(level), at, horizon)))
        });
    }
    // Worst case: a steady infusion whose plateau sits 2 % under the level
    // for the whole horizon (the walk must stay careful near the level).
    let plateau = Solution::new(
        system.clone(),
        &Schedule::build(
            &params,
            &[Dosing::Infusion {
                start_ms: 0,
                end_ms: None,
                rate_mg_per_h: 20.0,
            }],
        )
        .expect("schedule"),
    );
    let css = 20.0 / 60.0 / params.cl_l_per_min() * 1000.0;
    let late = 100 * H;
    c.bench_function("forecast_flat_tail_2pct_below_level_24h", |b| {
        b.iter(|| black_box(plateau.next_crossing(Output::Ce, black_box(css * 1.02), late, 24 * H)))
    });
    c.bench_function("forecast_in_history_of_10000_inputs_6h", |b| {
        b.iter(|| black_box(history.next_crossing(Output::Ce, black_box(100.0), now, 6 * H)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
