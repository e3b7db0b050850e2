//! Property test: the exact engine against an independent numerical
//! integration (adaptive Dormand–Prince at tight tolerance) of the same
//! ODEs, written here from the model equations, for random parameters and
//! random regimens over every route.
//!
//! Acceptance: relative error ≤ 1e-6 wherever the concentration is above
//! 1e-3 of its peak.
//!
//! The second property does the same for the metabolite (norketamine,
//! `pk::metabolite`): random metabolite parameters (one or two
//! compartments, any formation fraction, a first-pass fraction on every
//! extravascular route) on the same random parents and regimens. The
//! reference writes the first pass its own way: a separate first-pass depot
//! per route receives `fp · dose` with the route's lag and empties with the
//! route's ka into the metabolite (the engine instead draws `ka·fp/F` from
//! the parent's depot, which holds `F · dose`). Checked: the metabolite's
//! concentration and its AUC, and the parent's AUC.

use crate::common;

use common::{rk45, solve};
use dosetrack_core::pk::{Dosing, MetaboliteParams, MetaboliteSolution, PkParams};
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

/// As [`params`], with the slow effect compartment of relief over weeks:
/// ke0 from 1e-5 to 1e-3 per minute (Dahan 2011's ln 2 / 10.9 d is
/// 4.4e-5/min).
fn slow_params() -> impl Strategy<Value = PkParams> {
    common::strategies::params(common::strategies::ParamRanges {
        v1_l: 1.0..100.0,
        k10: 0.002..1.0,
        k12: 0.002..1.0,
        k21: 0.002..1.0,
        k13: 0.001..0.5,
        k31: 0.001..0.5,
        ke0: 1e-5..1e-3,
        f: 0.05..=1.0,
        ka: 0.005..2.0,
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

/// Reference state: A1, A2, A3, Ce, six route depots, skin depot (0..11);
/// then metabolite central and peripheral (11, 12), seven first-pass
/// depots in the same route order (13..20), ∫Cn dt and ∫Cp dt (20, 21).
const REF_N: usize = 22;
const NC: usize = 11;
const NP: usize = 12;
const FP0: usize = 13;
const AUC_N: usize = 20;
const AUC_P: usize = 21;

/// What the reference returns at one time: Cp, Ce, Cn (ng/mL), and the
/// areas under Cn and Cp (ng·h/mL).
#[derive(Debug, Clone, Copy)]
struct RefPoint {
    cp: f64,
    ce: f64,
    cn: f64,
    auc_n: f64,
    auc_p: f64,
}

fn metabolite_params() -> impl Strategy<Value = (f64, f64, f64, f64, f64, [f64; 7])> {
    (
        5.0f64..200.0,
        0.001f64..0.2,
        prop_oneof![Just((0.0, 0.0)), (0.001f64..0.2, 0.001f64..0.2)],
        0.0f64..=1.0,
        proptest::collection::vec(0.0f64..=1.0, 7),
    )
        .prop_map(|(v, kel, (kcp, kpc), fm, fp)| {
            let mut share = [0.0; 7];
            share.copy_from_slice(&fp);
            (v, kel, kcp, kpc, fm, share)
        })
}

/// The engine's metabolite parameters from the drawn values: each
/// extravascular route's first-pass fraction is a share of what its F
/// leaves (`share · (1 − F)`), so `F + fp ≤ 1`.
fn engine_metabolite(
    p: &PkParams,
    (v, kel, kcp, kpc, fm, share): (f64, f64, f64, f64, f64, [f64; 7]),
) -> MetaboliteParams {
    let mut fp = [0.0; 9];
    for (k, route) in EV_ROUTES.iter().enumerate() {
        fp[route.index()] = share[k] * (1.0 - p.route(*route).f);
    }
    MetaboliteParams {
        v_l: v,
        k_el_per_min: kel,
        k_cp_per_min: kcp,
        k_pc_per_min: kpc,
        formation_fraction: fm,
        first_pass_fraction: fp,
    }
}

/// The extravascular routes, in reference depot order.
const EV_ROUTES: [Route; 7] = [
    Route::Im,
    Route::Sc,
    Route::Intranasal,
    Route::Oral,
    Route::Sublingual,
    Route::Rectal,
    Route::Transdermal,
];

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

/// Integrate the model ODEs from 0 to each of `times` (increasing), with
/// the metabolite when `m` is given (otherwise its components stay 0).
fn reference(
    p: &PkParams,
    m: Option<&MetaboliteParams>,
    dosing: &[Dosing],
    times: &[i64],
) -> Vec<RefPoint> {
    let fp_of = |r: Route| m.map_or(0.0, |m| m.first_pass_fraction[r.index()]);
    let lag = |r: Route| (p.route(r).lag_min * 60_000.0).round() as i64;
    // Discontinuities: (time, kind).
    let mut jumps: Vec<(i64, usize, f64)> = Vec::new(); // bolus: into index, amount
    let mut infusions: Vec<(i64, Option<i64>, f64)> = Vec::new(); // mg/min into central
    let mut patches: Vec<(i64, i64, f64, f64)> = Vec::new(); // mg/min into skin, into its first-pass depot
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
                if let Some(d) = depot_index(route) {
                    // The first-pass depot: fp of the dose, same lag.
                    jumps.push((at_ms + lag(route), FP0 + d - 4, fp_of(route) * amount_mg));
                }
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
                let fp = fp_of(Route::Transdermal);
                patches.push((
                    start_ms + l,
                    end_ms + l,
                    f * release_rate_mg_per_h / 60.0,
                    fp * release_rate_mg_per_h / 60.0,
                ));
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
            let active = |pt: &&(i64, i64, f64, f64)| pt.0 <= t_prev && t_prev < pt.1;
            let patch: f64 = patches.iter().filter(active).map(|pt| pt.2).sum();
            let patch_fp: f64 = patches.iter().filter(active).map(|pt| pt.3).sum();
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
                // The metabolite, from the model equations.
                let (fm, kel, kcp, kpc, vn) = m.map_or((0.0, 0.0, 0.0, 0.0, 1.0), |m| {
                    (
                        m.formation_fraction,
                        m.k_el_per_min,
                        m.k_cp_per_min,
                        m.k_pc_per_min,
                        m.v_l,
                    )
                });
                let first_pass: f64 = (0..7).map(|k| kas[k] * y[FP0 + k]).sum();
                dy[NC] = fm * p.k10_per_min * y[0] + first_pass - (kel + kcp) * y[NC] + kpc * y[NP];
                dy[NP] = kcp * y[NC] - kpc * y[NP];
                for k in 0..7 {
                    dy[FP0 + k] = -kas[k] * y[FP0 + k];
                }
                dy[FP0 + 6] += patch_fp;
                dy[AUC_N] = y[NC] / vn;
                dy[AUC_P] = y[0] / p.v1_l;
            };
            let t0 = t_prev as f64 / 60_000.0;
            let t1 = b as f64 / 60_000.0;
            rk45::integrate(rhs, t0, t1, &mut y, 1e-12, 1e-18);
        }
        for j in jumps.iter().filter(|j| j.0 == b) {
            y[j.1] += j.2;
        }
        if times.binary_search(&b).is_ok() {
            let vn = m.map_or(1.0, |m| m.v_l);
            out.push(RefPoint {
                cp: y[0] / p.v1_l * 1000.0,
                ce: y[3] * 1000.0,
                cn: y[NC] / vn * 1000.0,
                auc_n: y[AUC_N] * 1000.0 / 60.0,
                auc_p: y[AUC_P] * 1000.0 / 60.0,
            });
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
        let expected = reference(&p, None, &regimen, &times);
        prop_assert_eq!(expected.len(), times.len());
        // Peaks from a dense engine sampling plus the check points.
        let dense = s.sample(0, 24 * H, 30_000);
        let mut cp_peak = dense.iter().map(|d| d.cp_ng_per_ml).fold(0.0, f64::max);
        let mut ce_peak = dense.iter().map(|d| d.ce_ng_per_ml).fold(0.0, f64::max);
        for e in &expected {
            cp_peak = cp_peak.max(e.cp);
            ce_peak = ce_peak.max(e.ce);
        }
        for (t, e) in times.iter().zip(&expected) {
            let c = s.at(*t);
            for (name, ours, theirs, peak) in [
                ("Cp", c.cp_ng_per_ml, e.cp, cp_peak),
                ("Ce", c.ce_ng_per_ml, e.ce, ce_peak),
            ] {
                if theirs > 1e-3 * peak {
                    let rel = ((ours - theirs) / theirs).abs();
                    prop_assert!(rel <= 1e-6, "{} at {} ms: engine {} vs rk45 {} (rel {:e})", name, t, ours, theirs, rel);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The slow effect compartment (relief over weeks) is the engine's
    /// effect site with a tiny ke0: the same exactness over three days.
    #[test]
    fn slow_effect_compartment_matches_rk45(
        p in slow_params(),
        regimen in proptest::collection::vec(dosing(), 1..6),
        checks in proptest::collection::vec(0i64..72 * H, 8),
    ) {
        let mut times = checks;
        times.sort_unstable();
        times.dedup();
        let s = solve(p.clone(), &regimen);
        let expected = reference(&p, None, &regimen, &times);
        prop_assert_eq!(expected.len(), times.len());
        let dense = s.sample(0, 72 * H, 60_000);
        let mut ce_peak = dense.iter().map(|d| d.ce_ng_per_ml).fold(0.0, f64::max);
        for e in &expected {
            ce_peak = ce_peak.max(e.ce);
        }
        for (t, e) in times.iter().zip(&expected) {
            let ours = s.at(*t).ce_ng_per_ml;
            if e.ce > 1e-3 * ce_peak {
                let rel = ((ours - e.ce) / e.ce).abs();
                prop_assert!(rel <= 1e-6, "slow Ce at {} ms: engine {} vs rk45 {} (rel {:e})", t, ours, e.ce, rel);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn metabolite_matches_rk45(
        p in params(),
        drawn in metabolite_params(),
        regimen in proptest::collection::vec(dosing(), 1..8),
        checks in proptest::collection::vec(0i64..24 * H, 12),
    ) {
        let mut times = checks;
        times.sort_unstable();
        times.dedup();
        let m = engine_metabolite(&p, drawn);
        let s = solve(p.clone(), &regimen);
        let ms = MetaboliteSolution::new(&s, &m).unwrap();
        let expected = reference(&p, Some(&m), &regimen, &times);
        prop_assert_eq!(expected.len(), times.len());
        let dense = ms.sample(0, 24 * H, 30_000);
        let mut cn_peak = dense.iter().map(|d| d.c_ng_per_ml).fold(0.0, f64::max);
        let (mut auc_n_peak, mut auc_p_peak) = (0.0f64, 0.0f64);
        for e in &expected {
            cn_peak = cn_peak.max(e.cn);
            auc_n_peak = auc_n_peak.max(e.auc_n);
            auc_p_peak = auc_p_peak.max(e.auc_p);
        }
        for (t, e) in times.iter().zip(&expected) {
            let c = ms.at(*t);
            // The augmented state's parent part is the engine's state.
            // (Within rounding of the state's size: the augmented
            // exponential does not keep the parent's structural zeros exactly.)
            let (aug, plain) = (ms.state_at(*t), s.state_at(*t));
            let size: f64 = plain.iter().map(|x| x.abs()).sum();
            for i in 0..plain.len() {
                prop_assert!((aug[i] - plain[i]).abs() <= 1e-9 * plain[i].abs() + 1e-12 * size, "component {} at {}: {} vs {}", i, t, aug[i], plain[i]);
            }
            for (name, ours, theirs, peak) in [
                ("Cn", c.c_ng_per_ml, e.cn, cn_peak),
                ("AUC Cn", c.auc_ng_h_per_ml, e.auc_n, auc_n_peak),
                ("AUC Cp", c.parent_auc_ng_h_per_ml, e.auc_p, auc_p_peak),
            ] {
                if theirs > 1e-3 * peak {
                    let rel = ((ours - theirs) / theirs).abs();
                    prop_assert!(rel <= 1e-6, "{} at {} ms: engine {} vs rk45 {} (rel {:e})", name, t, ours, theirs, rel);
                }
            }
        }
    }
}
