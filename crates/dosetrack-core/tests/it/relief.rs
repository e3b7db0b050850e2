//! Relief over weeks (the drug file's `[relief.chronic]`, Dahan 2011) and
//! the acute window, on the default adult (70 kg, 45 y) resolved from the
//! built-in drug file.
//!
//! * The Dahan 2011 decay: once the infusion is over, the slow compartment
//!   halves every 10.9 days.
//! * The Sigtermans 2009 shape: after a 4.2-day infusion (S-ketamine up to
//!   22.2 mg/h per 70 kg; racemic 44.4 mg/h with the S fraction 0.5),
//!   marked relief at week 1, faded by week 12.
//! * The clinical review's derived vector for 5 × 4 h at 0.35 mg/kg/h:
//!   peak 0.39 of the maximum, above 0.25 until about day 15.
//! * The acute window of a 0.35 mg/kg bolus: from when Ce reaches the floor
//!   to when it leaves it, around the Ce peak.

use dosetrack_core::drug::DrugFile;
use dosetrack_core::patient::{Formulary, PatientSpec};
use dosetrack_core::relief::{relief, ReliefReport};
use dosetrack_core::simulate::{parse_events, solve};
use serde_json::json;

fn run(lines: &[serde_json::Value], days: u32) -> ReliefReport {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut spec = PatientSpec::weight_only(70.0);
    spec.covariates.age_years = Some(45.0);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let inputs = parse_events(&text).unwrap();
    let solved = solve(&f, &spec, &inputs, None).unwrap();
    let chronic = f.drug().relief().map(|r| &r.chronic);
    relief(&solved, chronic, days).unwrap()
}

/// An infusion at `rate_mg_per_h` from `start` for `hours`.
fn infusion(id: &str, start: &str, end: &str, rate_mg_per_h: f64) -> Vec<serde_json::Value> {
    vec![
        json!({"device_id": "pump-1", "id": format!("{id}-s"), "time": start,
               "kind": "infusion_started", "patient_id": "P", "rate_mg_per_h": rate_mg_per_h}),
        json!({"device_id": "pump-1", "id": format!("{id}-e"), "time": end,
               "kind": "infusion_stopped", "patient_id": "P"}),
    ]
}

fn day(r: &ReliefReport, d: u32) -> (f64, f64) {
    let c = r.chronic.as_ref().unwrap();
    let x = c.curve.iter().find(|x| x.day == d).unwrap();
    (x.relief_fraction, x.ce_slow_ng_per_ml)
}

#[test]
fn the_slow_compartment_halves_every_10_9_days_after_the_infusion() {
    let r = run(
        &infusion("a", "2026-01-05T08:00:00Z", "2026-01-09T12:00:00Z", 44.4),
        90,
    );
    let c = r.chronic.as_ref().unwrap();
    assert_eq!(c.half_life_days, 10.9);
    // Days 30 and 52 are long after the end (day 4.2): Cp is nil, only the
    // slow compartment's own decay is left: 2^(-22 / 10.9).
    let (_, c30) = day(&r, 30);
    let (_, c52) = day(&r, 52);
    let expected = 2f64.powf(-22.0 / 10.9);
    assert!(
        (c52 / c30 - expected).abs() < 0.01 * expected,
        "{c52} / {c30} = {}, expected {expected}",
        c52 / c30
    );
    assert_eq!(c.response_probability, 0.67);
    assert_eq!(c.placebo_response_probability, 0.23);
}

#[test]
fn a_sigtermans_infusion_relieves_at_week_1_and_has_faded_by_week_12() {
    let r = run(
        &infusion("a", "2026-01-05T08:00:00Z", "2026-01-09T12:00:00Z", 44.4),
        90,
    );
    let c = r.chronic.as_ref().unwrap();
    let (week1, _) = day(&r, 7);
    let (week12, _) = day(&r, 84);
    assert!(week1 >= 0.5, "week 1: {week1}");
    assert!(week12 <= 0.05, "week 12: {week12}");
    // The peak is at the end of the infusion (day 4.2), not later.
    assert!((4.0..=4.5).contains(&c.peak_day), "{}", c.peak_day);
    // Relief falls below half its peak between weeks 3 and 6; the next
    // series is due that day.
    let below = c.below_half_of_peak_day.unwrap();
    assert!((21..=42).contains(&below), "{below}");
    assert_eq!(
        c.next_series_due.as_deref(),
        Some(&*date_in_2026(5 + below))
    );
    // Monotone decline after the peak.
    assert!(c
        .curve
        .windows(2)
        .filter(|w| f64::from(w[0].day) > c.peak_day)
        .all(|w| w[1].relief_fraction <= w[0].relief_fraction));
}

/// YYYY-MM-DD of day `d` of 2026 counted from 1 January (d = 1), for
/// January to March.
fn date_in_2026(d: u32) -> String {
    let (mut day, mut month) = (d, 1);
    for len in [31, 28] {
        if day > len {
            day -= len;
            month += 1;
        }
    }
    format!("2026-{month:02}-{day:02}")
}

#[test]
fn five_4_hour_infusions_match_the_clinical_reviews_derived_vector() {
    // 0.35 mg/kg/h for 70 kg = 24.5 mg/h, 08:00–12:00 on five days.
    let mut lines = Vec::new();
    for d in 0..5 {
        let date = format!("2026-01-{:02}", 5 + d);
        lines.extend(infusion(
            &format!("d{d}"),
            &format!("{date}T08:00:00Z"),
            &format!("{date}T12:00:00Z"),
            24.5,
        ));
    }
    let r = run(&lines, 90);
    let c = r.chronic.as_ref().unwrap();
    assert!(
        (c.peak_relief_fraction - 0.39).abs() <= 0.05,
        "peak {}",
        c.peak_relief_fraction
    );
    let (d13, _) = day(&r, 13);
    let (d17, _) = day(&r, 17);
    assert!(d13 > 0.25 && d17 < 0.25, "day 13 {d13}, day 17 {d17}");
    // One 4-h infusion alone: far less (the review: 0.06 for its regimen).
    let one = run(&lines[..2], 30);
    let peak_one = one.chronic.as_ref().unwrap().peak_relief_fraction;
    assert!(peak_one < c.peak_relief_fraction / 2.5, "{peak_one}");
}

#[test]
fn a_bolus_relieves_acutely_around_its_ce_peak_only() {
    // 0.35 mg/kg IV (the guideline maximum) for 70 kg.
    let r = run(
        &[
            json!({"id": "b", "time": "2026-01-05T08:00:00Z", "route": "iv_bolus", "amount_mg": 24.5}),
        ],
        30,
    );
    let a = &r.acute;
    assert_eq!(a.floor_ng_per_ml, 100.0);
    // Ce peaks ~10 min after the dose at ~177 ng/mL (drug-file note).
    assert!((150.0..=200.0).contains(&a.peak_ce_ng_per_ml), "{a:?}");
    let from = a.relief_from.as_deref().unwrap();
    let until = a.relief_until.as_deref().unwrap();
    let peak = a.peak_at.as_deref().unwrap();
    assert!(from < peak && peak < until, "{a:?}");
    assert!((15.0..=90.0).contains(&a.duration_min), "{a:?}");
    // Hardly anything over weeks from one bolus.
    assert!(r.chronic.as_ref().unwrap().peak_relief_fraction < 0.05);
    // Norketamine is reported (tests/it/norketamine.rs) and not counted.
    assert!(r.norketamine.peak_ng_per_ml.is_some_and(|c| c > 0.0));
    assert!(r
        .assumptions
        .iter()
        .any(|a| a.contains("norketamine's potency is 0")));
    assert!(r.assumptions.iter().any(|a| a.contains("S-ketamine")));
}

#[test]
fn an_oral_dose_never_reaches_the_floor_and_says_so() {
    let r = run(
        &[json!({"id": "o", "time": "2026-01-05T08:00:00Z", "route": "oral", "amount_mg": 35})],
        30,
    );
    assert!(r.acute.relief_from.is_none() && r.acute.relief_until.is_none());
    assert_eq!(r.acute.duration_min, 0.0);
    assert!(r.acute.peak_ce_ng_per_ml > 0.0);
}

fn run_for(lines: &[serde_json::Value], indication: Option<&str>) -> ReliefReport {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut spec = PatientSpec::weight_only(70.0);
    spec.covariates.age_years = Some(45.0);
    spec.indication = indication.map(str::to_owned);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let inputs = parse_events(&text).unwrap();
    let solved = solve(&f, &spec, &inputs, None).unwrap();
    relief(&solved, f.drug().relief().map(|r| &r.chronic), 30).unwrap()
}

/// Graded acute relief per indication: the floor is where the indication's
/// Emax curve reaches the relief wanted (half the maximum: the EC50), the
/// relief at the Ce peak follows the curve, and the lower chronic-pain EC50
/// widens the same dose's window on both sides.
#[test]
fn acute_relief_is_graded_per_indication() {
    let bolus = [
        json!({"id": "b", "time": "2026-01-05T08:00:00Z", "route": "iv_bolus", "amount_mg": 24.5}),
    ];
    let acute = run_for(&bolus, None);
    let a = &acute.acute;
    assert_eq!(a.indication.as_deref(), Some("acute_pain"));
    assert_eq!((a.ec50_ng_per_ml, a.hill), (Some(100.0), Some(1.0)));
    assert_eq!(a.floor_ng_per_ml, 100.0);
    let peak = a.peak_ce_ng_per_ml;
    let expected = peak / (100.0 + peak);
    let got = a.peak_relief_fraction.unwrap();
    assert!((got - expected).abs() < 1e-3, "{got} vs {expected}");
    assert!(acute.assumptions[0].contains("acute postoperative or emergency pain"));

    let chronic = run_for(&bolus, Some("chronic_neuropathic"));
    let c = &chronic.acute;
    assert_eq!(c.indication.as_deref(), Some("chronic_neuropathic"));
    assert_eq!(c.floor_ng_per_ml, 21.0);
    assert_eq!(c.peak_ce_ng_per_ml, peak, "same dose, same Ce");
    let got = c.peak_relief_fraction.unwrap();
    assert!((got - peak / (21.0 + peak)).abs() < 1e-3);
    assert!(c.relief_from.as_deref().unwrap() < a.relief_from.as_deref().unwrap());
    assert!(c.relief_until.as_deref().unwrap() > a.relief_until.as_deref().unwrap());
    assert!(
        c.duration_min > 2.0 * a.duration_min,
        "{} vs {}",
        c.duration_min,
        a.duration_min
    );
}

/// Intranasal 50 mg (observed Cmax 77.6 ng/mL, PMC9118341): no acute
/// relief for acute pain (never 100 ng/mL) but a window for chronic
/// neuropathic pain, whose floor is 21; an oral 0.5 mg/kg dose reaches
/// neither, yet its graded relief is higher for the lower EC50.
#[test]
fn intranasal_50_mg_relieves_chronic_neuropathic_pain_but_not_acute_pain() {
    let nasal = [
        json!({"id": "n", "time": "2026-01-05T08:00:00Z", "route": "intranasal", "amount_mg": 50}),
    ];
    let acute = run_for(&nasal, Some("acute_pain"));
    let chronic = run_for(&nasal, Some("chronic_neuropathic"));
    assert!(acute.acute.relief_from.is_none());
    let peak = chronic.acute.peak_ce_ng_per_ml;
    assert!((21.0..100.0).contains(&peak), "intranasal peak {peak}");
    assert!(chronic.acute.relief_from.is_some() && chronic.acute.duration_min > 30.0);
    let text = dosetrack_core::relief::relief_text(&acute);
    assert!(text.contains("No acute relief expected"), "{text}");
    let text = dosetrack_core::relief::relief_text(&chronic);
    assert!(
        text.contains("for chronic neuropathic pain or CRPS"),
        "{text}"
    );

    let oral =
        [json!({"id": "o", "time": "2026-01-05T08:00:00Z", "route": "oral", "amount_mg": 35})];
    let (a, c) = (
        run_for(&oral, Some("acute_pain")),
        run_for(&oral, Some("chronic_neuropathic")),
    );
    let (ra, rc) = (
        a.acute.peak_relief_fraction.unwrap(),
        c.acute.peak_relief_fraction.unwrap(),
    );
    assert!(rc > 2.0 * ra && rc < 0.5, "oral: {ra} vs {rc}");
}

#[test]
fn an_unknown_indication_is_refused_with_the_known_ones() {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut spec = PatientSpec::weight_only(70.0);
    spec.indication = Some("migraine".to_owned());
    let e = f.resolve(&spec).unwrap_err().to_string();
    assert!(
        e.contains("migraine") && e.contains("acute_pain, chronic_neuropathic"),
        "{e}"
    );
}

/// The admission's floor still overrides the indication's, and says so.
#[test]
fn a_floor_set_for_the_patient_overrides_the_indication() {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut spec = PatientSpec::weight_only(70.0);
    spec.indication = Some("chronic_neuropathic".to_owned());
    spec.targets.analgesic_floor_ng_per_ml = Some(60.0);
    let p = f.resolve(&spec).unwrap();
    assert_eq!(p.targets.analgesic_floor_ng_per_ml, 60.0);
    assert_eq!(p.indication.as_ref().unwrap().floor_ng_per_ml, 21.0);
    // The indication's assumption-flagged values leave the list with it.
    assert!(!p.assumptions.iter().any(|a| a.key.contains("indications")));
    spec.targets.analgesic_floor_ng_per_ml = None;
    let p = f.resolve(&spec).unwrap();
    assert!(p
        .assumptions
        .iter()
        .any(|a| a.key == "relief.acute.indications.chronic_neuropathic.ec50_ng_per_ml"));
    assert!(!p.assumptions.iter().any(|a| a.key.contains("acute_pain")));
}
