//! How long relief lasts for a regimen (`dosetrack relief`): the acute
//! window around the doses and the relief over the weeks after them.
//!
//! It owns the relief computations on a solved regimen ([`Solved`]), pure:
//!
//! * **Acute**: graded relief per indication (the drug file's
//!   `[relief.acute]`: an Emax model of relief against Ce, and the relief
//!   fraction wanted, which sets the patient's analgesic floor): the peak,
//!   the relief at the peak, the first and last minute at or above the
//!   floor, and the minutes at or above it in all.
//! * **Over weeks** (the drug file's `[relief.chronic]`, Dahan 2011): a
//!   slow effect compartment driven by the S-ketamine concentration
//!   (`s_fraction` × Cp), `dC/dt = ln 2 / t½ · (s_fraction · Cp − C)`, and
//!   relief `C^γ / (C50^γ + C^γ)` as a fraction of the maximal relief of a
//!   responder; the probability of response beside it. The slow
//!   compartment is the PK engine's own effect site with ke0 = ln 2 / t½
//!   (linear, so the S fraction applies afterwards): exact, no integration
//!   step.
//! * **Norketamine** (the drug file's `[norketamine]`): its exposure over
//!   the acute window (peak on the same 1-minute grid, exact AUC), from the
//!   parent–metabolite model of [`crate::pk::metabolite`]. Its potency is 0
//!   (a labelled sensitivity setting): it is not counted in either relief.
//!   Without the section the keys are present and null.

use crate::drug::{emax_fraction, ChronicReliefSpec, NorketamineSpec};
use crate::pk::{MetaboliteParams, MetaboliteSolution, PkParams, Schedule, Solution, System};
use crate::simulate::{SimulateError, Solved, NOTICE};
use crate::vocab::{format_rfc3339, round3, TimeMs};
use serde::Serialize;
use std::sync::Arc;

const MINUTE_MS: TimeMs = 60_000;
const HOUR_MS: TimeMs = 3_600_000;
const DAY_MS: TimeMs = 86_400_000;

/// How far after the last input the acute window is looked for.
pub const ACUTE_SCAN_AFTER_LAST_MS: TimeMs = 48 * HOUR_MS;

/// Below this peak (a fraction of a responder's maximal relief) the text
/// says no lasting relief is expected instead of how long a negligible
/// relief stays above half of itself. Wording only: the JSON carries the
/// numbers either way.
pub const NEGLIGIBLE_RELIEF_OVER_WEEKS: f64 = 0.1;

/// Default length of the curve over weeks (days from the first input).
pub const DEFAULT_DAYS: u32 = 90;

/// The answer of `dosetrack relief`.
#[derive(Debug, Clone, Serialize)]
pub struct ReliefReport {
    pub notice: &'static str,
    pub model: String,
    pub acute: AcuteRelief,
    /// `None` when the drug file has no `[relief.chronic]`.
    pub chronic: Option<ChronicRelief>,
    pub norketamine: Norketamine,
    pub assumptions: Vec<String>,
}

/// The acute relief window: Ce at or above the analgesic floor, where the
/// indication's relief reaches the fraction wanted.
#[derive(Debug, Clone, Serialize)]
pub struct AcuteRelief {
    /// Indication key (`None`: the drug file has no `[relief.acute]`, and
    /// the floor is its single analgesic floor).
    pub indication: Option<String>,
    pub indication_title: Option<String>,
    pub ec50_ng_per_ml: Option<f64>,
    pub hill: Option<f64>,
    /// The relief fraction wanted; the floor is where relief reaches it.
    pub target_relief_fraction: Option<f64>,
    pub floor_ng_per_ml: f64,
    pub peak_ce_ng_per_ml: f64,
    /// Relief at the Ce peak, a fraction of the maximal relief.
    pub peak_relief_fraction: Option<f64>,
    pub peak_at: Option<String>,
    /// First minute at or above the floor (`None`: never reached).
    pub relief_from: Option<String>,
    /// Last minute at or above the floor.
    pub relief_until: Option<String>,
    /// Minutes at or above the floor in all.
    pub duration_min: f64,
}

/// Relief over the weeks after the regimen.
#[derive(Debug, Clone, Serialize)]
pub struct ChronicRelief {
    /// Daily from the first input (day 0).
    pub curve: Vec<DayRelief>,
    /// Highest relief fraction (hourly grid).
    pub peak_relief_fraction: f64,
    pub peak_day: f64,
    /// First whole day after the peak with relief below half its peak
    /// (`None`: not within the curve, or no relief at all).
    pub below_half_of_peak_day: Option<u32>,
    /// That day's date: when another series would be due to keep relief
    /// above half its peak.
    pub next_series_due: Option<String>,
    pub response_probability: f64,
    pub placebo_response_probability: f64,
    pub half_life_days: f64,
    pub c50_ng_per_ml: f64,
}

/// One day of the curve.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DayRelief {
    pub day: u32,
    pub relief_fraction: f64,
    /// The slow compartment's S-ketamine concentration.
    pub ce_slow_ng_per_ml: f64,
}

/// Norketamine exposure over the acute window (from the first input to
/// [`ACUTE_SCAN_AFTER_LAST_MS`] after the last); every key null when the
/// drug file has no `[norketamine]`.
#[derive(Debug, Clone, Serialize)]
pub struct Norketamine {
    /// Highest plasma concentration on the window's 1-minute grid.
    pub peak_ng_per_ml: Option<f64>,
    pub peak_at: Option<String>,
    /// Area under the plasma curve over the window (exact).
    pub auc_ng_h_per_ml: Option<f64>,
    /// That area over ketamine's (Cp) over the same window.
    pub auc_ratio_to_ketamine: Option<f64>,
}

/// The relief of a solved regimen: acute window, and over `days` days when
/// `chronic` is given.
pub fn relief(
    solved: &Solved,
    chronic: Option<&ChronicReliefSpec>,
    days: u32,
) -> Result<ReliefReport, SimulateError> {
    let acute = acute(solved);
    let mut assumptions = match &solved.patient.indication {
        Some(i) => vec![format!(
            "acute relief for {} is relief = Ce^{} / ({}^{} + Ce^{}) of the maximal relief; the window is where it reaches {} (Ce at or above {} ng/mL)",
            i.title,
            i.hill,
            round3(i.ec50_ng_per_ml),
            i.hill,
            i.hill,
            i.target_relief_fraction,
            round3(acute.floor_ng_per_ml)
        )],
        None => vec![format!(
            "acute relief is Ce at or above the analgesic floor ({} ng/mL), a yes/no level: the drug file has no graded relief per indication",
            round3(acute.floor_ng_per_ml)
        )],
    };
    if solved.patient.indication.as_ref().is_some_and(|i| {
        (i.floor_ng_per_ml - solved.patient.targets.analgesic_floor_ng_per_ml).abs() > 1e-9
    }) {
        assumptions.push(format!(
            "the analgesic floor is set for this patient ({} ng/mL), not from the indication",
            round3(solved.patient.targets.analgesic_floor_ng_per_ml)
        ));
    }
    let chronic = match chronic {
        Some(spec) => {
            for s in [
                &spec.half_life_days,
                &spec.c50_ng_per_ml,
                &spec.hill,
                &spec.s_fraction,
            ] {
                if s.assumption {
                    assumptions.push(s.source.clone());
                }
            }
            assumptions.push(
                "relief over weeks is the fraction of a responder's maximal relief; whether this patient responds is the probability beside it".to_owned(),
            );
            Some(over_weeks(solved, spec, days)?)
        }
        None => {
            assumptions
                .push("the drug file has no [relief.chronic]: no relief over weeks".to_owned());
            None
        }
    };
    let norketamine = match &solved.norketamine {
        Some(spec) => {
            assumptions.extend(norketamine_assumptions(spec));
            norketamine(solved, spec)?
        }
        None => {
            assumptions.push(
                "the drug file has no [norketamine]: norketamine exposure is not reported and its effect (disputed) not counted".to_owned(),
            );
            Norketamine {
                peak_ng_per_ml: None,
                peak_at: None,
                auc_ng_h_per_ml: None,
                auc_ratio_to_ketamine: None,
            }
        }
    };
    Ok(ReliefReport {
        notice: NOTICE,
        model: solved.patient.model_label.clone(),
        acute,
        chronic,
        norketamine,
        assumptions,
    })
}

/// What the norketamine figures assume, in words.
fn norketamine_assumptions(spec: &NorketamineSpec) -> Vec<String> {
    let mut out = vec![format!(
        "norketamine's potency is {} (a sensitivity setting of the drug file): it is not counted in the acute relief or the relief over weeks (its effect is disputed: Olofsen 2012 found it opposes analgesia, Sigtermans 2009 no contribution)",
        spec.potency_relative_to_ketamine.value
    )];
    out.push(format!(
        "norketamine: {} of ketamine's elimination becomes norketamine, and part of an oral, sublingual or intranasal dose becomes norketamine on first pass (that share of the first-pass loss held constant: an interaction that raises F lowers it); disposition from esketamine data (Perez-Ruixo 2021) used for racemic ketamine",
        spec.formation_fraction.value
    ));
    out.push(
        "norketamine exposure is over the acute window (first input to 48 h after the last): peak on its 1-minute grid, area exact".to_owned(),
    );
    out
}

/// Norketamine's exposure over the acute window.
fn norketamine(solved: &Solved, spec: &NorketamineSpec) -> Result<Norketamine, SimulateError> {
    let patient = &solved.patient;
    let (v_l, cl_l_per_h, vp_l, q_l_per_h) = spec.at_weight(patient.covariates.weight_kg);
    let mut first_pass = [0.0; 9];
    for r in &patient.routes {
        if let Some(fp) = spec.first_pass_fraction.get(&r.route) {
            // The share of the first-pass loss (1 − F) that becomes
            // norketamine is the drug file's; an interaction that raises F
            // leaves less to lose.
            let share = if r.f_drug_file < 1.0 {
                fp.value / (1.0 - r.f_drug_file)
            } else {
                0.0
            };
            first_pass[r.route.index()] = (share * (1.0 - r.f)).clamp(0.0, 1.0 - r.f);
        }
    }
    let params = MetaboliteParams::from_clearances(
        v_l,
        cl_l_per_h,
        vp_l,
        q_l_per_h,
        spec.formation_fraction.value,
        first_pass,
    );
    let nk = MetaboliteSolution::new(&solved.solution, &params)
        .map_err(crate::patient::PatientError::from)?;
    let from = solved.first_event_ms;
    let to = solved.last_event_ms + ACUTE_SCAN_AFTER_LAST_MS;
    let to_grid = from + (to - from) / MINUTE_MS * MINUTE_MS;
    let (peak, peak_ms) =
        nk.sample(from, to_grid, MINUTE_MS)
            .iter()
            .fold((0.0_f64, None), |(best, at), s| {
                if s.c_ng_per_ml > best {
                    (s.c_ng_per_ml, Some(s.t_ms))
                } else {
                    (best, at)
                }
            });
    let (start, end) = (nk.at(from), nk.at(to_grid));
    let auc = end.auc_ng_h_per_ml - start.auc_ng_h_per_ml;
    let parent_auc = end.parent_auc_ng_h_per_ml - start.parent_auc_ng_h_per_ml;
    Ok(Norketamine {
        peak_ng_per_ml: Some(round3(peak)),
        peak_at: peak_ms.map(format_rfc3339),
        auc_ng_h_per_ml: Some(round3(auc)),
        auc_ratio_to_ketamine: (parent_auc > 0.0).then(|| round3(auc / parent_auc)),
    })
}

fn acute(solved: &Solved) -> AcuteRelief {
    let floor = solved.patient.targets.analgesic_floor_ng_per_ml;
    let from = solved.first_event_ms;
    let to = solved.last_event_ms + ACUTE_SCAN_AFTER_LAST_MS;
    let mut peak = (0.0_f64, None);
    let (mut first, mut last, mut minutes) = (None, None, 0.0);
    let mut t = from;
    while t <= to {
        let ce = solved.solution.at(t).ce_ng_per_ml;
        if ce > peak.0 {
            peak = (ce, Some(t));
        }
        if ce >= floor {
            first.get_or_insert(t);
            last = Some(t);
            minutes += 1.0;
        }
        t += MINUTE_MS;
    }
    let ind = solved.patient.indication.as_ref();
    AcuteRelief {
        indication: ind.map(|i| i.key.clone()),
        indication_title: ind.map(|i| i.title.clone()),
        ec50_ng_per_ml: ind.map(|i| i.ec50_ng_per_ml),
        hill: ind.map(|i| i.hill),
        target_relief_fraction: ind.map(|i| i.target_relief_fraction),
        floor_ng_per_ml: floor,
        peak_ce_ng_per_ml: round3(peak.0),
        peak_relief_fraction: ind.map(|i| round4(i.relief_at(peak.0))),
        peak_at: peak.1.map(format_rfc3339),
        relief_from: first.map(format_rfc3339),
        relief_until: last.map(format_rfc3339),
        duration_min: minutes,
    }
}

/// The slow compartment's engine parameters: the patient's, with the
/// effect site's rate set to ln 2 / t½ (the compartment is linear, so the
/// S fraction applies to its output).
pub fn slow_params(params: &PkParams, spec: &ChronicReliefSpec) -> PkParams {
    let half_life_min = spec.half_life_days.value * 1440.0;
    PkParams {
        ke0_per_min: std::f64::consts::LN_2 / half_life_min,
        ..params.clone()
    }
}

/// Relief over weeks (a fraction of a responder's maximal relief) of a
/// slow compartment's S-ketamine concentration.
pub fn chronic_relief_of(slow_ce_ng_per_ml: f64, spec: &ChronicReliefSpec) -> f64 {
    emax_fraction(
        spec.s_fraction.value * slow_ce_ng_per_ml,
        spec.c50_ng_per_ml.value,
        spec.hill.value,
    )
}

fn over_weeks(
    solved: &Solved,
    spec: &ChronicReliefSpec,
    days: u32,
) -> Result<ChronicRelief, SimulateError> {
    let params = slow_params(&solved.patient.params, spec);
    let schedule = Schedule::build(&params, &solved.ledger.dosing())?;
    let system = System::new(params).map_err(crate::patient::PatientError::from)?;
    let slow = Solution::new(Arc::new(system), &schedule);
    Ok(chronic_on(
        &slow,
        spec,
        solved.first_event_ms,
        days,
        HOUR_MS,
    ))
}

/// Relief over weeks on a solved slow compartment ([`slow_params`]): the
/// daily curve from `start_ms` for `days` days, the peak on a
/// `peak_step_ms` grid, and the first whole day after the peak with relief
/// below half of it.
pub fn chronic_on(
    slow: &Solution,
    spec: &ChronicReliefSpec,
    start_ms: TimeMs,
    days: u32,
    peak_step_ms: TimeMs,
) -> ChronicRelief {
    let s_fraction = spec.s_fraction.value;
    let c50 = spec.c50_ng_per_ml.value;
    let relief_of = |c: f64| chronic_relief_of(c, spec);
    let start = start_ms;
    let curve: Vec<DayRelief> = (0..=days)
        .map(|day| {
            let c = slow.at(start + TimeMs::from(day) * DAY_MS).ce_ng_per_ml;
            DayRelief {
                day,
                relief_fraction: round4(relief_of(c)),
                ce_slow_ng_per_ml: round4(s_fraction * c),
            }
        })
        .collect();
    // The peak on an hourly grid.
    let (mut peak, mut peak_ms) = (0.0_f64, start);
    let end = start + TimeMs::from(days) * DAY_MS;
    let mut t = start;
    while t <= end {
        let r = relief_of(slow.at(t).ce_ng_per_ml);
        if r > peak {
            (peak, peak_ms) = (r, t);
        }
        t += peak_step_ms.max(MINUTE_MS);
    }
    let peak_day = (peak_ms - start) as f64 / DAY_MS as f64;
    let below_half = if peak > 0.0 {
        curve
            .iter()
            .find(|d| f64::from(d.day) > peak_day && d.relief_fraction < peak / 2.0)
            .map(|d| d.day)
    } else {
        None
    };
    ChronicRelief {
        curve,
        peak_relief_fraction: round4(peak),
        peak_day: round3(peak_day),
        below_half_of_peak_day: below_half,
        next_series_due: below_half
            .map(|d| format_rfc3339(start + TimeMs::from(d) * DAY_MS)[..10].to_owned()),
        response_probability: spec.response_probability.value,
        placebo_response_probability: spec.placebo_response_probability.value,
        half_life_days: spec.half_life_days.value,
        c50_ng_per_ml: c50,
    }
}

/// The answer in words a clinician can read (times in UTC).
pub fn relief_text(r: &ReliefReport) -> String {
    let hm = |t: &Option<String>| {
        t.as_deref()
            .map(|s| format!("{} {} UTC", &s[..10], &s[11..16]))
            .unwrap_or_default()
    };
    let a = &r.acute;
    let mut out = format!("{}\nModel: {}.\n", r.notice, r.model);
    let what = match (&a.indication_title, a.target_relief_fraction) {
        (Some(title), Some(f)) => format!(
            "for {title}: at least {:.0} % of the maximal relief, Ce at or above {} ng/mL",
            f * 100.0,
            round3(a.floor_ng_per_ml)
        ),
        _ => format!("Ce at or above {} ng/mL", round3(a.floor_ng_per_ml)),
    };
    let at_peak = a
        .peak_relief_fraction
        .map(|r| format!(" ({:.0} % of the maximal relief)", r * 100.0))
        .unwrap_or_default();
    if a.relief_from.is_some() {
        out.push_str(&format!(
            "Acute relief ({what}) expected from {} to {}, {} min in all; Ce peaks at {} ng/mL{at_peak} at {}.\n",
            hm(&a.relief_from),
            hm(&a.relief_until),
            a.duration_min,
            a.peak_ce_ng_per_ml,
            hm(&a.peak_at)
        ));
    } else {
        out.push_str(&format!(
            "No acute relief expected from the concentration ({what} is never reached; Ce peaks at {} ng/mL{at_peak}).\n",
            a.peak_ce_ng_per_ml
        ));
    }
    if let Some(c) = &r.chronic {
        let weeks = c.below_half_of_peak_day.map(|d| f64::from(d) / 7.0);
        match (weeks, &c.next_series_due) {
            _ if c.peak_relief_fraction < NEGLIGIBLE_RELIEF_OVER_WEEKS => out.push_str(&format!(
                "No lasting relief over the following weeks is expected from this regimen (its peak is {:.2} of a responder's maximum).\n",
                c.peak_relief_fraction
            )),
            (Some(w), Some(due)) => out.push_str(&format!(
                "Over the following weeks relief peaks at {:.2} of a responder's maximum (day {:.0}) and stays above half of that for about {:.1} weeks, until {due} (probability of response {:.2}, {:.2} on placebo).\n",
                c.peak_relief_fraction, c.peak_day, w, c.response_probability, c.placebo_response_probability
            )),
            _ => out.push_str(&format!(
                "Over the following weeks relief peaks at {:.2} of a responder's maximum (day {:.0}) (probability of response {:.2}, {:.2} on placebo).\n",
                c.peak_relief_fraction, c.peak_day, c.response_probability, c.placebo_response_probability
            )),
        }
    }
    let n = &r.norketamine;
    if let (Some(peak), Some(auc)) = (n.peak_ng_per_ml, n.auc_ng_h_per_ml) {
        let ratio = n
            .auc_ratio_to_ketamine
            .map(|x| format!(", {x:.2} times ketamine's"))
            .unwrap_or_default();
        out.push_str(&format!(
            "Norketamine (reported, not counted in relief): peaks at {peak} ng/mL at {}; AUC {auc} ng·h/mL over the acute window{ratio}.\n",
            hm(&n.peak_at)
        ));
    }
    out.push_str("Assumptions:\n");
    for a in &r.assumptions {
        out.push_str("  - ");
        out.push_str(a);
        out.push('\n');
    }
    out
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
