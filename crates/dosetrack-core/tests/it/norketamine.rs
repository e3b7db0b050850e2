//! Norketamine (the drug file's `[norketamine]`, `pk::metabolite`) with the
//! shipped drug file, on the 70 kg reference adult (kamp2020):
//!
//! * mass balance: the metabolite's exact area to infinity is what was
//!   formed over its clearance, `(fm·F + fp)·dose / CLn`, and the parent's
//!   `F·dose / CL`, for every bolus route;
//! * the parent is untouched: the relief report's acute and chronic parts
//!   are identical with and without the `[norketamine]` section, and a file
//!   without it loads and reports null norketamine keys;
//! * published observations (Singh V et al., Pharmacotherapy 2022;42:298,
//!   PMC9118341, Table 6 and text: 10 adult cancer-pain patients, 10 mg IV
//!   and 10/30/50 mg intranasal racemic ketamine; geometric SDs 1.7–2.3);
//! * the relief report: an oral dose gives more norketamine relative to
//!   ketamine than the same dose IV.
//!
//! The exactness against an independent integration is in
//! `engine_vs_rk45` (`metabolite_matches_rk45`).

use crate::common::*;
use dosetrack_core::drug::{DrugFile, BUILTIN_TOML};
use dosetrack_core::patient::{Formulary, PatientSpec, ResolvedPatient};
use dosetrack_core::pk::{Dosing, MetaboliteParams, MetaboliteSolution, Solution};
use dosetrack_core::relief::{relief, ReliefReport};
use dosetrack_core::simulate::{parse_events, solve as solve_events};
use dosetrack_core::vocab::Route;
use serde_json::json;
use std::path::Path;

fn patient_and_metabolite() -> (ResolvedPatient, MetaboliteParams) {
    let d = DrugFile::builtin().unwrap();
    let nk = d.norketamine().unwrap().clone();
    let f = Formulary::new(d).unwrap();
    let mut spec = PatientSpec::weight_only(70.0);
    spec.covariates.age_years = Some(50.0);
    let p = f.resolve(&spec).unwrap();
    let (v, cl, vp, q) = nk.at_weight(70.0);
    let mut fp = [0.0; 9];
    for (r, s) in &nk.first_pass_fraction {
        fp[r.index()] = s.value;
    }
    let m = MetaboliteParams::from_clearances(v, cl, vp, q, nk.formation_fraction.value, fp);
    (p, m)
}

fn single(route: Route, amount_mg: f64) -> (Solution, MetaboliteSolution) {
    let (p, m) = patient_and_metabolite();
    let s = solve(
        p.params.clone(),
        &[Dosing::Bolus {
            at_ms: 0,
            route,
            amount_mg,
        }],
    );
    let ms = MetaboliteSolution::new(&s, &m).unwrap();
    (s, ms)
}

/// Long enough for every area to be complete (norketamine's terminal
/// half-life here is a few hours).
const INFINITY_MS: i64 = 30 * 24 * MS_PER_H;

#[test]
fn areas_to_infinity_balance_what_was_formed() {
    let (p, m) = patient_and_metabolite();
    let cl_n_l_per_h = m.k_el_per_min * m.v_l * 60.0;
    let cl_l_per_h = p.params.cl_l_per_min() * 60.0;
    for route in BOLUS_ROUTES_ALL {
        let dose = 40.0;
        let (_, ms) = single(route, dose);
        let f = p.params.route(route).f;
        let fp = m.first_pass_fraction[route.index()];
        let a = ms.at(INFINITY_MS);
        let parent = f * dose / cl_l_per_h * 1000.0;
        let formed = (m.formation_fraction * f + fp) * dose;
        let metabolite = formed / cl_n_l_per_h * 1000.0;
        assert!(
            (a.parent_auc_ng_h_per_ml - parent).abs() <= 1e-9 * parent,
            "{route}: parent AUC {} vs {parent}",
            a.parent_auc_ng_h_per_ml
        );
        assert!(
            (a.auc_ng_h_per_ml - metabolite).abs() <= 1e-9 * metabolite,
            "{route}: norketamine AUC {} vs {metabolite}",
            a.auc_ng_h_per_ml
        );
    }
}

const BOLUS_ROUTES_ALL: [Route; 7] = [
    Route::IvBolus,
    Route::Im,
    Route::Sc,
    Route::Intranasal,
    Route::Oral,
    Route::Sublingual,
    Route::Rectal,
];

fn report(toml: &str, lines: &[serde_json::Value]) -> ReliefReport {
    let d = DrugFile::from_toml_str(toml, Path::new("test/ketamine.toml")).unwrap();
    let f = Formulary::new(d).unwrap();
    let mut spec = PatientSpec::weight_only(70.0);
    spec.covariates.age_years = Some(45.0);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let inputs = parse_events(&text).unwrap();
    let solved = solve_events(&f, &spec, &inputs, None).unwrap();
    let chronic = f.drug().relief().map(|r| &r.chronic);
    relief(&solved, chronic, 30).unwrap()
}

fn one_dose(route: &str, amount_mg: f64) -> Vec<serde_json::Value> {
    vec![
        json!({"id": "d1", "time": "2026-01-05T08:00:00Z", "route": route, "amount_mg": amount_mg}),
    ]
}

/// The shipped file without its `[norketamine]` tables.
fn without_norketamine() -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in BUILTIN_TOML.lines() {
        if line.starts_with('[') {
            skipping = line.starts_with("[norketamine");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(out.len() < BUILTIN_TOML.len());
    out
}

#[test]
fn the_parent_is_untouched_and_the_section_is_optional() {
    let dosing = [
        one_dose("oral", 50.0),
        vec![json!({"id": "d2", "time": "2026-01-05T12:00:00Z", "route": "iv_bolus", "amount_mg": 20})],
    ]
    .concat();
    let with = report(BUILTIN_TOML, &dosing);
    let plain = report(&without_norketamine(), &dosing);
    let j = |r: &ReliefReport| serde_json::to_value(r).unwrap();
    let (a, b) = (j(&with), j(&plain));
    assert_eq!(a["acute"], b["acute"]);
    assert_eq!(a["chronic"], b["chronic"]);
    for k in [
        "peak_ng_per_ml",
        "peak_at",
        "auc_ng_h_per_ml",
        "auc_ratio_to_ketamine",
    ] {
        assert!(b["norketamine"][k].is_null(), "{k}");
        assert!(!a["norketamine"][k].is_null(), "{k}");
    }
    assert!(plain
        .assumptions
        .iter()
        .any(|s| s.contains("no [norketamine]")));
    assert!(with
        .assumptions
        .iter()
        .any(|s| s.contains("potency is 0") && s.contains("sensitivity setting")));
    assert!(!with.assumptions.iter().any(|s| s.contains("not modelled")));
}

#[test]
fn an_oral_dose_makes_more_norketamine_than_the_same_dose_iv() {
    let oral = report(BUILTIN_TOML, &one_dose("oral", 50.0));
    let iv = report(BUILTIN_TOML, &one_dose("iv_bolus", 50.0));
    let (o, i) = (&oral.norketamine, &iv.norketamine);
    let (o_peak, o_auc, o_ratio) = (
        o.peak_ng_per_ml.unwrap(),
        o.auc_ng_h_per_ml.unwrap(),
        o.auc_ratio_to_ketamine.unwrap(),
    );
    let i_ratio = i.auc_ratio_to_ketamine.unwrap();
    assert!(o_peak > 0.0 && o_auc > 0.0);
    // First pass: relative to ketamine, oral makes several times more
    // (5.2 against 1.6 here over the 48-h window; Fanta 2015 found 16.5×
    // for oral S-ketamine, whose F is 8 %, not 20 %).
    assert!(o_ratio > 2.5 * i_ratio, "oral {o_ratio} vs IV {i_ratio}");
    // The peak comes after the ketamine peak, about 1.5–2 h after the dose.
    let at = o.peak_at.as_deref().unwrap();
    assert!(
        at > "2026-01-05T09:15" && at < "2026-01-05T10:30",
        "peak at {at}"
    );
}

#[track_caller]
fn within_factor(model: f64, observed: f64, factor: f64, what: &str) {
    let r = model / observed;
    assert!(
        r <= factor && r >= 1.0 / factor,
        "{what}: model {model:.3}, observed {observed:.3} (model/observed {r:.2}, allowed within a factor of {factor})"
    );
}

/// Intranasal, the route whose norketamine is mostly first pass: the
/// observed norketamine/ketamine AUC ratio is 3.95–4.54 (Table 6); the
/// model gives 4.12 (areas to infinity). The observed norketamine
/// concentration after 50 mg is 105 ng/mL at 56 min; the model gives 77
/// (0.74). Tolerance: within a factor of 1.5, inside the geometric SDs of
/// 1.7–2.3 of these means.
#[test]
fn intranasal_norketamine_matches_pmc9118341() {
    for dose in [30.0, 50.0] {
        let (_, ms) = single(Route::Intranasal, dose);
        let a = ms.at(INFINITY_MS);
        within_factor(
            a.auc_ng_h_per_ml / a.parent_auc_ng_h_per_ml,
            4.2,
            1.5,
            &format!("intranasal {dose} mg norketamine/ketamine AUC ratio"),
        );
    }
    let (_, ms) = single(Route::Intranasal, 50.0);
    within_factor(
        ms.at(56 * MS_PER_MIN).c_ng_per_ml,
        105.0,
        1.5,
        "intranasal 50 mg norketamine at 56 min (ng/mL)",
    );
}

/// IV: **the model does not meet this observation.** The observed
/// norketamine/ketamine AUC ratio after 10 mg IV is 0.19, and norketamine
/// 2.8 ng/mL at 30 min; the model gives 1.57 (areas to infinity; 0.9 over
/// the first 4 h) and 27 ng/mL, about 8–10 times too much. With the
/// esketamine disposition (CLn/F 38 L/h) and formation fraction 0.71 of
/// Perez-Ruixo 2021, systemic formation is `fm · CL / CLn = 0.71 · 84 / 38
/// ≈ 1.6` times the parent's area; to give 0.19 with the same clearance the
/// formation fraction would have to be ~0.09, against 0.71 (Perez-Ruixo)
/// and 0.80 (Simons 2022) in esketamine studies, and that would break the
/// intranasal match above (same patients, ratio ~4 with F 0.13). The
/// discrepancy is not fudged: this test pins its size (model/observed
/// between 5 and 12 for both figures), so a change of model that closes or
/// widens it is seen. Intranasal and oral norketamine come mostly from
/// first pass and are less affected; IV and infusion norketamine are
/// probably over-predicted several-fold.
#[test]
fn iv_norketamine_is_over_predicted_by_a_known_factor() {
    let (_, ms) = single(Route::IvBolus, 10.0);
    let a = ms.at(INFINITY_MS);
    let ratio = a.auc_ng_h_per_ml / a.parent_auc_ng_h_per_ml;
    let at_30 = ms.at(30 * MS_PER_MIN).c_ng_per_ml;
    for (what, model, observed) in [
        ("IV 10 mg norketamine/ketamine AUC ratio", ratio, 0.19),
        ("IV 10 mg norketamine at 30 min (ng/mL)", at_30, 2.8),
    ] {
        let over = model / observed;
        assert!(
            (5.0..=12.0).contains(&over),
            "{what}: model {model:.3}, observed {observed}: over-prediction {over:.1}× is no longer the documented 8–10×"
        );
    }
}
