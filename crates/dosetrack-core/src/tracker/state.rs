//! The tracker's state message: Cp and Ce now, the trend, the forecast
//! floor and ceiling crossings, what is running, and staleness, for a
//! tracked patient at "now" (the contract's `patients/{id}/state`).

use super::*;

/// One running delivery in a state message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveInput {
    pub source: String,
    pub route: Route,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_mg_per_h: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_rate_mg_per_h: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

/// The state message's forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateForecast {
    /// When Ce falls below the analgesic floor (now, if already below;
    /// `null` if not within the horizon).
    pub below_floor_at: Option<String>,
    /// When Ce rises above the ceiling (now, if already above).
    pub above_ceiling_at: Option<String>,
    /// How far ahead it looked, in hours.
    pub horizon_h: f64,
}

/// Relief now and until when (dosetrack's addition to the state message).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateRelief {
    /// The patient's indication key (`acute_pain`).
    pub indication: String,
    /// Graded acute relief at Ce now, a fraction of the maximal relief.
    pub relief_fraction: f64,
    /// The relief fraction wanted (reached at the analgesic floor).
    pub target_relief_fraction: f64,
    /// Ce is at or above the floor now: when it is forecast to fall below
    /// it (`null`: not within the forecast horizon, or below now).
    pub relief_until: Option<String>,
    /// Ce is below the floor now: when it is forecast to reach it with the
    /// doses given so far (`null`: not within the horizon, or above now).
    pub relief_from: Option<String>,
    /// Relief over weeks (chronic pain after infusion series), for an
    /// indication that carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_weeks: Option<StateReliefOverWeeks>,
}

/// Relief over weeks in the state message (`[relief.chronic]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateReliefOverWeeks {
    /// Now, a fraction of a responder's maximal relief.
    pub relief_fraction: f64,
    /// The highest, on a daily grid from the first dose to 90 days ahead.
    pub peak_relief_fraction: f64,
    /// The first day after the peak with relief below half of it: when the
    /// next series would be due (`null`: not within 90 days).
    pub below_half_of_peak_on: Option<String>,
    pub response_probability: f64,
}

/// The retained `patients/{id}/state` message (contract fields first; the
/// rest are additions the contract allows).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateMessage {
    pub patient_id: String,
    pub time: String,
    pub cp_ng_per_ml: f64,
    pub ce_ng_per_ml: f64,
    /// `rising`, `falling` or `steady` (Ce).
    pub trend: &'static str,
    pub active_inputs: Vec<ActiveInput>,
    pub forecast: StateForecast,
    pub model: String,
    pub stale: bool,
    /// Devices delivering to the patient that have gone quiet.
    pub stale_devices: Vec<String>,
    pub targets: crate::patient::PatientTargets,
    /// What the forecast assumes about future inputs.
    pub assumes: &'static str,
    pub warnings: Vec<PatientWarning>,
    /// Drug-file keys of the assumed values this state rests on.
    pub assumptions: Vec<String>,
    /// Relief now and until when (`null` when the drug file has no graded
    /// relief per indication).
    pub relief: Option<StateRelief>,
    /// dosetrack's addition: `true` in a state published at or after the
    /// patient's discharge (the last retained state says the patient is
    /// no longer tracked); absent while the patient is in care.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub discharged: bool,
}

impl Tracker {
    /// The state message for a tracked patient at `now_ms`.
    pub fn state(&mut self, patient_id: &str, now_ms: TimeMs) -> Option<StateMessage> {
        let d = self.derived(patient_id)?;
        let p = &d.patient;
        let s = &d.solution;
        let now = s.at(now_ms);
        let (x, sys) = s.state_and_system_at(now_ms);
        let ce_slope_per_min = sys.ce_slope_ng_per_ml_per_min(&x);
        let trend = if ce_slope_per_min.abs() <= (0.005 * now.ce_ng_per_ml).max(0.05) {
            "steady"
        } else if ce_slope_per_min > 0.0 {
            "rising"
        } else {
            "falling"
        };
        let horizon = self.config.forecast_horizon_ms;
        let when = |level: f64, falling: bool| -> Option<String> {
            let below = now.ce_ng_per_ml < level;
            if below == falling {
                return Some(format_rfc3339(now_ms));
            }
            s.next_crossing(Output::Ce, level, now_ms, horizon)
                .filter(|Crossing { direction, .. }| (*direction == Direction::Falling) == falling)
                .map(|c| format_rfc3339(c.at_ms))
        };
        let floor = p.targets.analgesic_floor_ng_per_ml;
        let relief = p.indication.as_ref().map(|ind| {
            let above = now.ce_ng_per_ml >= floor;
            let crossing = |falling: bool| {
                s.next_crossing(Output::Ce, floor, now_ms, horizon)
                    .filter(|c| (c.direction == Direction::Falling) == falling)
                    .map(|c| format_rfc3339(c.at_ms))
            };
            StateRelief {
                indication: ind.key.clone(),
                relief_fraction: round3(ind.relief_at(now.ce_ng_per_ml)),
                target_relief_fraction: ind.target_relief_fraction,
                relief_until: if above { crossing(true) } else { None },
                relief_from: if above { None } else { crossing(false) },
                over_weeks: d.slow.as_ref().and_then(|slow| {
                    let spec = &self.formulary.drug().relief()?.chronic;
                    over_weeks_now(slow, spec, &d.ledger, now_ms)
                }),
            }
        });
        let forecast = StateForecast {
            below_floor_at: when(p.targets.analgesic_floor_ng_per_ml, true),
            above_ceiling_at: when(p.targets.ceiling_ng_per_ml, false),
            horizon_h: horizon as f64 / 3_600_000.0,
        };
        let active_inputs: Vec<ActiveInput> = d
            .ledger
            .running_at(now_ms)
            .map(|del| {
                let patch = del.route == Route::Transdermal;
                ActiveInput {
                    source: del.source.clone(),
                    route: del.route,
                    rate_mg_per_h: if patch { None } else { del.rate_mg_per_h },
                    release_rate_mg_per_h: if patch { del.rate_mg_per_h } else { None },
                    ends_at: del.end_ms.map(format_rfc3339),
                }
            })
            .collect();
        let stale_after = self.config.device_stale_after_ms;
        let stale_devices: Vec<String> = active_inputs
            .iter()
            .filter_map(|a| a.source.strip_prefix("devices/"))
            .filter(|id| {
                // Heard-from times are live (heartbeats do not rebuild).
                self.devices
                    .get(*id)
                    .map(|dev| dev.last_heard_ms)
                    .is_none_or(|heard| now_ms.saturating_sub(heard) > stale_after)
            })
            .map(str::to_owned)
            .collect();
        Some(StateMessage {
            patient_id: patient_id.to_owned(),
            time: format_rfc3339(now_ms),
            cp_ng_per_ml: round3(now.cp_ng_per_ml),
            ce_ng_per_ml: round3(now.ce_ng_per_ml),
            trend,
            active_inputs,
            forecast,
            model: p.model_label.clone(),
            stale: !stale_devices.is_empty(),
            stale_devices,
            targets: p.targets,
            assumes: crate::pk::FORECAST_ASSUMPTIONS,
            warnings: p.warnings.clone(),
            assumptions: p.assumptions.iter().map(|a| a.key.clone()).collect(),
            relief,
            discharged: self.stay_ended(patient_id, now_ms),
        })
    }
}

/// Relief over weeks at `now_ms` on the slow compartment: now, the peak on
/// a daily grid from the first dose to 90 days ahead, and the first day
/// after the peak below half of it (`None` without doses).
fn over_weeks_now(
    slow: &Solution,
    spec: &crate::drug::ChronicReliefSpec,
    ledger: &Ledger,
    now_ms: TimeMs,
) -> Option<StateReliefOverWeeks> {
    const DAY_MS: TimeMs = 86_400_000;
    let first = ledger.dosing().iter().map(|d| d.start_ms()).min()?;
    let relief = |t: TimeMs| crate::relief::chronic_relief_of(slow.at(t).ce_ng_per_ml, spec);
    let end = now_ms.max(first) + 90 * DAY_MS;
    let days: Vec<(TimeMs, f64)> = (0..)
        .map(|k: i64| first + k * DAY_MS)
        .take_while(|t| *t <= end)
        .map(|t| (t, relief(t)))
        .collect();
    let (peak_ms, peak) =
        days.iter().copied().fold(
            (first, 0.0_f64),
            |acc, (t, r)| if r > acc.1 { (t, r) } else { acc },
        );
    let below = if peak > 0.0 {
        days.iter()
            .find(|(t, r)| *t > peak_ms && *r < peak / 2.0)
            .map(|(t, _)| format_rfc3339(*t)[..10].to_owned())
    } else {
        None
    };
    Some(StateReliefOverWeeks {
        relief_fraction: round3(relief(now_ms)),
        peak_relief_fraction: round3(peak),
        below_half_of_peak_on: below,
        response_probability: spec.response_probability.value,
    })
}
