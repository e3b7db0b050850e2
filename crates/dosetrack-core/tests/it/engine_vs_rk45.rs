//! Property test: the exact engine against an independent numerical
//! integration (adaptive Dormand–Prince at tight tolerance) of the same
//! ODEs, written here from the model equations, for random parameters and
//! random regimens over every route.
//!
//! Acceptance: relative error ≤ 1e-6 wherever the concentration is above
//! 1e-3 of its peak.

use crate::common;

use common::{rk45, solve};
use dosetrack_core::pk::{Dosing, PkParams};
use dosetrack_core::vocab::Route;
use proptest::prelude::*;

const H: i64 = 3_600_000;
const MIN: i64 = 60_000;

use common::strategies::BOLUS_ROUTES;

fn params() -> impl Strategy<Value = PkParams> {
    common::strategies::params(common::strategies::ParamRanges {
        v1_l: 1.0..100.0,
        k10: 0.002..1.0,
        k12: 0.002..1.0,
        k21: 0.002..1.0,
        k13: 0.001..0.5,
        k31: 0.001..0.5,
        ke0: 0.05..5.0,
        f: 0.05..=1.0,
        ka: 0.005..2.0,
        // Half the routes without lag, half with up to 30 min.
        lag_min: prop_oneof![Just(0.0), 0.0f64..30.0].boxed(),
        iv_infusion_lag_min: (0.0f64..10.0).boxed(),
    })
}

fn dosing() -> impl Strategy<Value = Dosing> {
    // Times on a 1-ms grid within the first 12 h.
    let t = 0i64..12 * H;
    prop_oneof![
        (t.clone(), 0usize..BOLUS_ROUTES.len(), 1.0f64..200.0).prop_map(|(at_ms, r, amount_mg)| {
            Dosing::Bolus {
                at_ms,
                route: BOLUS_ROUTES[r],
                amount_mg,
            }
        }),
        (
            t.clone(),
            prop_oneof![Just(None), (MIN..6 * H).prop_map(Some)],
            0.5f64..100.0
        )
            .prop_map(|(start_ms, dur, rate)| Dosing::Infusion {
                start_ms,
                end_ms: dur.map(|d| start_ms + d),
                rate_mg_per_h: rate,
            }),
        (t, H..48 * H, 0.2f64..5.0).prop_map(|(start_ms, wear, rate)| Dosing::Patch {
            start_ms,
            end_ms: start_ms + wear,
            release_rate_mg_per_h: rate,
        }),
    ]
}

/// Reference state: A1, A2, A3, Ce, six route depots, skin depot.
const REF_N: usize = 11;

fn depot_index(route: Route) -> Option<usize> {
    match route {
        Route::Im => Some(4),
        Route::Sc => Some(5),
        Route::Intranasal => Some(6),
        Route::Oral => Some(7),
        Route::Sublingual => Some(8),
        Route::Rectal => Some(9),
        Route::Transdermal => Some(10),
        Route::IvBolus | Route::IvInfusion => None,
    }
}

/// Integrate the model ODEs from 0 to each of `times` (increasing); returns
/// (Cp, Ce) in ng/mL at each.
fn reference(p: &PkParams, dosing: &[Dosing], times: &[i64]) -> Vec<(f64, f64)> {
    let lag = |r: Route| (p.route(r).lag_min * 60_000.0).round() as i64;
    // Discontinuities: (time, kind).
    let mut jumps: Vec<(i64, usize, f64)> = Vec::new(); // bolus: into index, amount
    let mut infusions: Vec<(i64, Option<i64>, f64)> = Vec::new(); // mg/min into central
    let mut patches: Vec<(i64, i64, f64)> = Vec::new(); // mg/min into skin
    for d in dosing {
        match *d {
            Dosing::Bolus {
                at_ms,
                route,
                amount_mg,
            } => {
                let rp = p.route(route);
                jumps.push((
                    at_ms + lag(route),
                    depot_index(route).unwrap_or(0),
                    rp.f * amount_mg,
                ));
            }
            Dosing::Infusion {
                start_ms,
                end_ms,
                rate_mg_per_h,
            } => {
                let l = lag(Route::IvInfusion);
                infusions.push((start_ms + l, end_ms.map(|e| e + l), rate_mg_per_h / 60.0));
            }
            Dosing::Patch {
                start_ms,
                end_ms,
                release_rate_mg_per_h,
            } => {
                let l = lag(Route::Transdermal);
                let f = p.route(Route::Transdermal).f;
                patches.push((start_ms + l, end_ms + l, f * release_rate_mg_per_h / 60.0));
            }
        }
    }
    let mut breaks: Vec<i64> = jumps.iter().map(|j| j.0).collect();
    for i in &infusions {
        breaks.push(i.0);
        breaks.extend(i.1);
    }
    for pt in &patches {
        breaks.push(pt.0);
        breaks.push(pt.1);
    }
    breaks.extend_from_slice(times);
    breaks.sort_unstable();
    breaks.dedup();

    let ka = |r: Route| p.route(r).ka_per_min.unwrap_or(0.0);
    let kas = [
        ka(Route::Im),
        ka(Route::Sc),
        ka(Route::Intranasal),
        ka(Route::Oral),
        ka(Route::Sublingual),
        ka(Route::Rectal),
        ka(Route::Transdermal),
    ];
    let mut y = [0.0f64; REF_N];
    let mut t_prev = i64::MIN;
    let mut out = Vec::new();
    for &b in &breaks {
        if t_prev != i64::MIN && b > t_prev {
            // Rates constant on [t_prev, b): evaluate them at t_prev.
            let inf: f64 = infusions
                .iter()
                .filter(|i| i.0 <= t_prev && i.1.is_none_or(|e| t_prev < e))
                .map(|i| i.2)
                .sum();
            let patch: f64 = patches
                .iter()
                .filter(|pt| pt.0 <= t_prev && t_prev < pt.1)
                .map(|pt| pt.2)
                .sum();
            let rhs = |_t: f64, y: &[f64], dy: &mut [f64]| {
                let absorbed: f64 = (0..7).map(|k| kas[k] * y[4 + k]).sum();
                dy[0] = -(p.k10_per_min + p.k12_per_min + p.k13_per_min) * y[0]
                    + p.k21_per_min * y[1]
                    + p.k31_per_min * y[2]
                    + absorbed
                    + inf;
                dy[1] = p.k12_per_min * y[0] - p.k21_per_min * y[1];
                dy[2] = p.k13_per_min * y[0] - p.k31_per_min * y[2];
                dy[3] = p.ke0_per_min * (y[0] / p.v1_l - y[3]);
                for k in 0..7 {
                    dy[4 + k] = -kas[k] * y[4 + k];
                }
                dy[10] += patch;
            };
            let t0 = t_prev as f64 / 60_000.0;
            let t1 = b as f64 / 60_000.0;
            rk45::integrate(rhs, t0, t1, &mut y, 1e-12, 1e-18);
        }
        for j in jumps.iter().filter(|j| j.0 == b) {
            y[j.1] += j.2;
        }
        if times.binary_search(&b).is_ok() {
            out.push((y[0] / p.v1_l * 1000.0, y[3] * 1000.0));
        }
        t_prev = b;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_rk45(
        p in params(),
        regimen in proptest::collection::vec(dosing(), 1..8),
        checks in proptest::collection::vec(0i64..24 * H, 12),
    ) {
        let mut times = checks;
        times.sort_unstable();
        times.dedup();
        let s = solve(p.clone(), &regimen);
        let expected = reference(&p, &regimen, &times);
        prop_assert_eq!(expected.len(), times.len());
        // Peaks from a dense engine sampling plus the check points.
        let dense = s.sample(0, 24 * H, 30_000);
        let mut cp_peak = dense.iter().map(|d| d.cp_ng_per_ml).fold(0.0, f64::max);
        let mut ce_peak = dense.iter().map(|d| d.ce_ng_per_ml).fold(0.0, f64::max);
        for e in &expected {
            cp_peak = cp_peak.max(e.0);
            ce_peak = ce_peak.max(e.1);
        }
        for (t, (cp_ref, ce_ref)) in times.iter().zip(&expected) {
            let c = s.at(*t);
            for (name, ours, theirs, peak) in [
                ("Cp", c.cp_ng_per_ml, *cp_ref, cp_peak),
                ("Ce", c.ce_ng_per_ml, *ce_ref, ce_peak),
            ] {
                if theirs > 1e-3 * peak {
                    let rel = ((ours - theirs) / theirs).abs();
                    prop_assert!(rel <= 1e-6, "{} at {} ms: engine {} vs rk45 {} (rel {:e})", name, t, ours, theirs, rel);
                }
            }
        }
    }
}
