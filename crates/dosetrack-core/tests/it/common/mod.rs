//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::too_many_arguments
)]

use dosetrack_core::pk::{Dosing, PkParams, RouteParams, Schedule, Solution, System};
use dosetrack_core::vocab::{Route, TimeMs};
use std::sync::Arc;

pub(crate) mod rk45;
pub(crate) mod strategies;

pub(crate) const MS_PER_H: i64 = 3_600_000;
pub(crate) const MS_PER_MIN: i64 = 60_000;

/// Parameters from clearances and volumes in per-hour units (as PKPDsim,
/// Torsten and mrgsolve print them), converted to the engine's per-minute
/// micro constants. Every extravascular route gets `ka_per_h` and `f`.
pub(crate) fn from_per_hour(
    cl: f64,
    v1: f64,
    q2: f64,
    v2: f64,
    q3: f64,
    v3: f64,
    ka_per_h: f64,
    f: f64,
) -> PkParams {
    let per_min = |x: f64| x / 60.0;
    let ev = RouteParams {
        f,
        ka_per_min: Some(per_min(ka_per_h)),
        lag_min: 0.0,
    };
    let iv = RouteParams {
        f: 1.0,
        ka_per_min: None,
        lag_min: 0.0,
    };
    PkParams {
        v1_l: v1,
        k10_per_min: per_min(cl / v1),
        k12_per_min: if v2 > 0.0 { per_min(q2 / v1) } else { 0.0 },
        k21_per_min: if v2 > 0.0 { per_min(q2 / v2) } else { 0.0 },
        k13_per_min: if v3 > 0.0 { per_min(q3 / v1) } else { 0.0 },
        k31_per_min: if v3 > 0.0 { per_min(q3 / v3) } else { 0.0 },
        ke0_per_min: 1.0,
        routes: [iv, iv, ev, ev, ev, ev, ev, ev, ev],
    }
}

pub(crate) fn solve(params: PkParams, dosing: &[Dosing]) -> Solution {
    let schedule = Schedule::build(&params, dosing).expect("valid dosing");
    Solution::new(
        Arc::new(System::new(params).expect("valid params")),
        &schedule,
    )
}

pub(crate) fn bolus(at_ms: TimeMs, route: Route, amount_mg: f64) -> Dosing {
    Dosing::Bolus {
        at_ms,
        route,
        amount_mg,
    }
}

/// Assert `actual` equals `printed` to the precision it is printed with:
/// rounding or truncating `actual` to the printed number of decimals gives
/// the printed value (the sources do both: Torsten's fixtures truncate).
#[track_caller]
pub(crate) fn assert_printed(actual: f64, printed: &str, what: &str) {
    let expected: f64 = printed.parse().expect("number");
    let decimals = printed.split('.').nth(1).map_or(0, str::len) as i32;
    let scale = 10f64.powi(decimals);
    let target = (expected * scale).round();
    let scaled = actual * scale;
    // 1e-6 of a last-digit unit absorbs the binary representation of the
    // printed decimal itself.
    let rounded_ok = (scaled - target).abs() <= 0.5 + 1e-6;
    let truncated_ok = (scaled.trunc() - target).abs() < 0.5 || (scaled - target).abs() < 1e-6;
    assert!(
        rounded_ok || truncated_ok,
        "{what}: engine {actual:.10} vs printed {printed}"
    );
}
