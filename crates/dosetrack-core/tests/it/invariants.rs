//! Invariants of the engine that hold for any valid parameters and regimen:
//! superposition, steady state, mass balance, non-negative concentrations,
//! linearity in F, and AUC = F·dose/CL.

use crate::common;

use common::{bolus, solve, MS_PER_H};
use dosetrack_core::pk::system::{ELIMINATED, RATE_CENTRAL, RATE_SKIN};
use dosetrack_core::pk::{Dosing, PkParams};
use dosetrack_core::vocab::Route;
use proptest::prelude::*;

fn params() -> impl Strategy<Value = PkParams> {
    common::strategies::params(common::strategies::ParamRanges {
        v1_l: 1.0..100.0,
        k10: 0.005..1.0,
        k12: 0.005..1.0,
        k21: 0.005..1.0,
        k13: 0.002..0.5,
        k31: 0.002..0.5,
        ke0: 0.05..5.0,
        f: 0.05..=1.0,
        ka: 0.005..2.0,
        lag_min: (0.0..20.0).boxed(),
        iv_infusion_lag_min: Just(0.0).boxed(),
    })
}

use common::strategies::BOLUS_ROUTES as ROUTES;

fn dosing() -> impl Strategy<Value = Dosing> {
    let t = 0i64..12 * MS_PER_H;
    prop_oneof![
        (t.clone(), 0usize..7, 1.0f64..200.0).prop_map(|(at, r, a)| bolus(at, ROUTES[r], a)),
        (t.clone(), 60_000i64..6 * MS_PER_H, 0.5f64..100.0).prop_map(|(s, d, r)| {
            Dosing::Infusion {
                start_ms: s,
                end_ms: Some(s + d),
                rate_mg_per_h: r,
            }
        }),
        (t, MS_PER_H..24 * MS_PER_H, 0.2f64..5.0).prop_map(|(s, w, r)| Dosing::Patch {
            start_ms: s,
            end_ms: s + w,
            release_rate_mg_per_h: r,
        }),
    ]
}

/// Amount that has entered the body by `t` (bioavailability applied).
fn amount_given(p: &PkParams, regimen: &[Dosing], t: i64) -> f64 {
    let lag = |r: Route| (p.route(r).lag_min * 60_000.0).round() as i64;
    let overlap = |s: i64, e: i64| ((e.min(t) - s).max(0)) as f64 / 60_000.0;
    regimen
        .iter()
        .map(|d| match *d {
            Dosing::Bolus {
                at_ms,
                route,
                amount_mg,
            } if at_ms + lag(route) <= t => p.route(route).f * amount_mg,
            Dosing::Bolus { .. } => 0.0,
            Dosing::Infusion {
                start_ms,
                end_ms,
                rate_mg_per_h,
            } => rate_mg_per_h / 60.0 * overlap(start_ms, end_ms.unwrap_or(i64::MAX)),
            Dosing::Patch {
                start_ms,
                end_ms,
                release_rate_mg_per_h,
            } => {
                let l = lag(Route::Transdermal);
                p.route(Route::Transdermal).f * release_rate_mg_per_h / 60.0
                    * overlap(start_ms + l, end_ms + l)
            }
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The model is linear: the regimen's concentrations are the sum of its
    /// parts' concentrations.
    #[test]
    fn superposition(p in params(), a in proptest::collection::vec(dosing(), 1..5),
                     b in proptest::collection::vec(dosing(), 1..5), t in 0i64..36 * MS_PER_H) {
        let both: Vec<Dosing> = a.iter().chain(&b).cloned().collect();
        let (sa, sb, sab) = (solve(p.clone(), &a), solve(p.clone(), &b), solve(p, &both));
        let (ca, cb, cab) = (sa.at(t), sb.at(t), sab.at(t));
        for (x, y, z) in [(ca.cp_ng_per_ml, cb.cp_ng_per_ml, cab.cp_ng_per_ml),
                          (ca.ce_ng_per_ml, cb.ce_ng_per_ml, cab.ce_ng_per_ml)] {
            prop_assert!((x + y - z).abs() <= 1e-9 * z.abs().max(1e-6), "{} + {} != {}", x, y, z);
        }
    }

    /// Everything that entered is in the body or eliminated; the eliminated
    /// amount also equals CL·∫Cp, integrated numerically here.
    #[test]
    fn mass_balance(p in params(), regimen in proptest::collection::vec(dosing(), 1..6),
                    t in 0i64..36 * MS_PER_H) {
        let s = solve(p.clone(), &regimen);
        let x = s.state_at(t);
        let given = amount_given(&p, &regimen, t);
        let accounted = s.system().amount_in_body_mg(&x) + x[ELIMINATED];
        prop_assert!((given - accounted).abs() <= 1e-9 * given.max(1e-9),
                     "given {} vs body+eliminated {}", given, accounted);
        prop_assert!(x[RATE_CENTRAL] >= 0.0 && x[RATE_SKIN] >= 0.0);
    }

    /// No component of the state (amounts, Ce) is ever negative.
    #[test]
    fn concentrations_never_negative(p in params(), regimen in proptest::collection::vec(dosing(), 1..6)) {
        let s = solve(p, &regimen);
        for smp in s.sample(0, 48 * MS_PER_H, 7_000) {
            prop_assert!(smp.cp_ng_per_ml >= 0.0 && smp.ce_ng_per_ml >= 0.0,
                         "negative at {}: {:?}", smp.t_ms, smp);
        }
        for (i, _) in s.event_times().iter().enumerate() {
            let x = s.checkpoint(i).copied().unwrap_or_default();
            prop_assert!(x.iter().all(|v| *v >= 0.0), "negative state {:?}", x);
        }
    }

    /// Exposure is linear in F: halving a route's F halves its curve.
    #[test]
    fn bioavailability_scales_exposure_linearly(p in params(), r in 1usize..7,
                                                 amount in 1.0f64..200.0, t in 0i64..24 * MS_PER_H) {
        let route = ROUTES[r];
        let mut half = p.clone();
        half.route_mut(route).f = p.route(route).f / 2.0;
        let full = solve(p, &[bolus(0, route, amount)]).at(t);
        let halved = solve(half, &[bolus(0, route, amount)]).at(t);
        prop_assert!((full.cp_ng_per_ml - 2.0 * halved.cp_ng_per_ml).abs() <= 1e-12 * full.cp_ng_per_ml.max(1e-9));
        prop_assert!((full.ce_ng_per_ml - 2.0 * halved.ce_ng_per_ml).abs() <= 1e-12 * full.ce_ng_per_ml.max(1e-9));
    }
}

/// Long infusion: Cp and Ce settle at rate/CL.
#[test]
fn steady_state_is_rate_over_clearance() {
    let runner_params = [
        common::from_per_hour(10.0, 50.0, 5.0, 100.0, 3.0, 150.0, 0.5, 1.0),
        common::from_per_hour(84.0, 25.0, 161.0, 56.0, 79.0, 157.0, 1.0, 1.0),
        common::from_per_hour(5.4, 4.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0),
    ];
    for p in runner_params {
        let rate_mg_per_h = 20.0;
        let s = solve(
            p.clone(),
            &[Dosing::Infusion {
                start_ms: 0,
                end_ms: None,
                rate_mg_per_h,
            }],
        );
        let css = rate_mg_per_h / 60.0 / p.cl_l_per_min() * 1000.0;
        let c = s.at(2000 * MS_PER_H);
        assert!(
            (c.cp_ng_per_ml - css).abs() < 1e-9 * css,
            "{} vs {css}",
            c.cp_ng_per_ml
        );
        assert!((c.ce_ng_per_ml - css).abs() < 1e-9 * css);
    }
}

/// AUC(0–∞) of a single dose = F·dose/CL, by Simpson's rule on the engine's
/// samples (independent of the engine's eliminated-amount bookkeeping).
#[test]
fn auc_of_a_dose_is_f_dose_over_clearance() {
    let p = common::from_per_hour(5.0, 20.0, 8.0, 70.0, 2.0, 40.0, 1.2, 0.37);
    for route in [Route::IvBolus, Route::Oral, Route::Intranasal] {
        let dose = 100.0;
        let s = solve(p.clone(), &[bolus(0, route, dose)]);
        // The slowest exponent is ~0.03/h: 2000 h leaves a tail < 1e-20.
        let step = 20_000i64;
        let end = 2000 * MS_PER_H;
        let samples = s.sample(0, end, step);
        let h_min = step as f64 / 60_000.0;
        // Composite Simpson on Cp in mg/L · min.
        let n = samples.len() - 1;
        let n_even = n - n % 2;
        let mut auc = samples[0].cp_ng_per_ml + samples[n_even].cp_ng_per_ml;
        for (i, smp) in samples.iter().enumerate().take(n_even).skip(1) {
            auc += if i % 2 == 1 { 4.0 } else { 2.0 } * smp.cp_ng_per_ml;
        }
        auc *= h_min / 3.0 / 1000.0;
        let f = p.route(route).f;
        let expected = f * dose / p.cl_l_per_min();
        assert!(
            ((auc - expected) / expected).abs() < 1e-8,
            "{route}: AUC {auc} vs F·dose/CL {expected}"
        );
    }
}
