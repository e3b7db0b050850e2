//! The shipped drug file against published observations: the engine, with
//! the default adult model resolved from the built-in drug file, reproduces
//! what was measured in patients, within tolerances stated (and argued)
//! beside each check.
//!
//! Observations: Singh V et al., Pharmacotherapy 2022;42(4):298
//! (PMC9118341), Table 6: 10 adult cancer-pain patients given 10 mg IV and
//! 10, 30 and 50 mg intranasal racemic ketamine; geometric means (their
//! geometric SDs are 1.7–2.3, so a typical patient lies within a factor of
//! ~2 of these means). The patients' weights are not in the table; the
//! checks use the 70 kg reference adult.

use crate::common::*;
use dosetrack_core::drug::DrugFile;
use dosetrack_core::patient::{Formulary, PatientSpec, ResolvedPatient};
use dosetrack_core::pk::{Dosing, Solution};
use dosetrack_core::vocab::{Route, TimeMs};

fn adult_70kg() -> ResolvedPatient {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut spec = PatientSpec::weight_only(70.0);
    spec.covariates.age_years = Some(50.0);
    f.resolve(&spec).unwrap()
}

fn single(p: &ResolvedPatient, route: Route, amount_mg: f64) -> Solution {
    solve(
        p.params.clone(),
        &[Dosing::Bolus {
            at_ms: 0,
            route,
            amount_mg,
        }],
    )
}

/// AUC of Cp from 0 to 72 h (ng·h/mL = µg·h/L), trapezoids every 15 s (the
/// remaining tail after 72 h is below 0.1 % for these models).
fn auc_ug_h_per_l(s: &Solution) -> f64 {
    let step_ms: TimeMs = 15_000;
    let n = 72 * 60 * 4;
    let mut sum = 0.0;
    let mut prev = s.at(0).cp_ng_per_ml;
    for i in 1..=n {
        let c = s.at(i * step_ms).cp_ng_per_ml;
        sum += 0.5 * (prev + c) * step_ms as f64 / 3_600_000.0;
        prev = c;
    }
    sum
}

/// (Cmax ng/mL, Tmax min) of Cp over the first 3 h, on a 6-s grid.
fn cmax_tmax(s: &Solution) -> (f64, f64) {
    (0..=1800)
        .map(|i| (s.at(i * 6_000).cp_ng_per_ml, i as f64 * 0.1))
        .fold(
            (f64::MIN, 0.0),
            |best, x| if x.0 > best.0 { x } else { best },
        )
}

#[track_caller]
fn within(predicted: f64, observed: f64, tolerance: f64, what: &str) {
    let ratio = predicted / observed;
    assert!(
        (ratio - 1.0).abs() <= tolerance,
        "{what}: predicted {predicted:.1}, observed {observed:.1} (ratio {ratio:.3}, tolerance ±{:.0} %)",
        tolerance * 100.0
    );
}

#[test]
fn the_adult_default_is_kamp2020() {
    assert_eq!(adult_70kg().model_label, "ketamine/kamp2020");
}

/// IV 10 mg: AUC 113 µg·h/L observed (CL ≈ 88 L/h). kamp2020 clears 84 L/h
/// at 70 kg, so it predicts 119 (+5 %); the tolerance, ±15 %, is the
/// meta-analytic CI of clearance (69–90 L/h around 79) in relative terms.
/// Domino, the former default (CL ~116 L/h), predicts ~86 and fails it.
#[test]
fn iv_10_mg_auc_matches_pmc9118341() {
    let p = adult_70kg();
    let auc = auc_ug_h_per_l(&single(&p, Route::IvBolus, 10.0));
    within(auc, 113.0, 0.15, "IV 10 mg AUC (µg·h/L)");
    // The exact AUC of a linear model is F·dose/CL: the quadrature agrees.
    let exact = 10.0 / (p.params.cl_l_per_min() * 60.0) * 1000.0;
    assert!((auc - exact).abs() / exact < 2e-3, "{auc} vs {exact}");

    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut spec = PatientSpec::weight_only(70.0);
    spec.model = Some("domino".into());
    let domino = f.resolve(&spec).unwrap();
    let auc_domino = auc_ug_h_per_l(&single(&domino, Route::IvBolus, 10.0));
    assert!(
        auc_domino / 113.0 < 0.85,
        "domino's AUC {auc_domino:.1} is the under-prediction the recalibration fixes"
    );
}

/// Intranasal 10, 30 and 50 mg with one F (0.13): the measured F falls with
/// dose (0.17, 0.13, 0.11), so the model's AUC is ~20 % low at 10 mg and
/// ~20 % high at 50 mg; tolerance ±25 % for AUC. Cmax uses the kamp2020
/// intranasal ka and lag fitted to these three means; tolerance ±25 %
/// (well inside the observed geometric SDs of 1.9–2.3). Tmax within the
/// observed 14–23 min.
#[test]
fn intranasal_10_30_50_mg_auc_and_cmax_match_pmc9118341() {
    let p = adult_70kg();
    let observed = [
        // dose mg, AUC µg·h/L, Cmax ng/mL, Tmax min
        (10.0, 19.0, 22.9, 23.0),
        (30.0, 46.0, 60.8, 14.0),
        (50.0, 64.0, 77.6, 16.0),
    ];
    let mut ratios = Vec::new();
    for (dose, auc_obs, cmax_obs, _tmax_obs) in observed {
        let s = single(&p, Route::Intranasal, dose);
        let auc = auc_ug_h_per_l(&s);
        within(auc, auc_obs, 0.25, &format!("intranasal {dose} mg AUC"));
        let (cmax, tmax) = cmax_tmax(&s);
        within(cmax, cmax_obs, 0.25, &format!("intranasal {dose} mg Cmax"));
        assert!(
            (14.0..=23.0).contains(&tmax),
            "intranasal {dose} mg Tmax {tmax} min outside the observed 14–23 min"
        );
        ratios.push(cmax / cmax_obs);
    }
    // No systematic bias in Cmax across the three doses.
    let gm = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
    assert!(gm.exp() > 0.9 && gm.exp() < 1.1, "Cmax ratios {ratios:?}");
}

/// A guideline-maximum IV bolus (0.35 mg/kg, Schwenk 2018) in a 70 kg adult
/// peaks in Ce below the psychotomimetic caution level (and so far below
/// the ceiling), about 10 min after the dose with the analgesic ke0.
#[test]
fn guideline_bolus_peaks_below_the_caution_level() {
    let p = adult_70kg();
    let s = single(&p, Route::IvBolus, 0.35 * 70.0);
    let (peak, at_min) = (0..=600)
        .map(|i| (s.at(i * 6_000).ce_ng_per_ml, i as f64 * 0.1))
        .fold((f64::MIN, 0.0), |b, x| if x.0 > b.0 { x } else { b });
    assert!(
        peak < p.targets.psychotomimetic_caution_ng_per_ml,
        "peak Ce {peak:.1} ng/mL"
    );
    assert!((150.0..200.0).contains(&peak), "peak Ce {peak:.1} ng/mL");
    assert!((8.0..12.0).contains(&at_min), "peak at {at_min} min");
}

/// Every model's solved absorption rate gives its own Tmax: a single dose
/// by each tmax-defined route peaks at that route's tmax_min in a 70 kg
/// patient of every model (not only the one the rate was once solved on).
#[test]
fn every_models_tmax_holds() {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    for key in f.drug().models().keys() {
        let mut spec = PatientSpec::weight_only(70.0);
        spec.model = Some(key.clone());
        let p = f.resolve(&spec).unwrap();
        for r in p.routes.iter().filter(|r| r.ka_from_tmax_min.is_some()) {
            let tmax = r.ka_from_tmax_min.unwrap_or_default() + r.lag_min;
            let s = single(&p, r.route, 10.0);
            let (_, at) = (0..=6000)
                .map(|i| (s.at(i * 3_000).cp_ng_per_ml, i as f64 * 0.05))
                .fold((f64::MIN, 0.0), |b, x| if x.0 > b.0 { x } else { b });
            assert!(
                (at - tmax).abs() <= 0.1,
                "{key} {}: peaks at {at} min, tmax {tmax}",
                r.route
            );
        }
    }
}
