//! The alert rules: which conditions hold for one patient at one moment.
//!
//! [`evaluate`] reads the patient's derived model (resolved patient, ledger,
//! solution) and devices at `now` and returns every condition that holds,
//! each with its numbers, the model and assumptions it rests on and the
//! input that drove it, plus the earliest future moment at which a
//! condition could start or stop holding without a new input (a predicted
//! crossing entering the lead time, a device deadline, a dose leaving the
//! 24-hour window). The lifecycle adds the delays and hysteresis in time;
//! level hysteresis is applied here, from whether the alert is already
//! active.

use super::{min_ms, AlertConfig, Condition, Priority, Rule};
use crate::ledger::Delivery;
use crate::pk::{Direction, Dosing, Output, Schedule, Solution};
use crate::tracker::Derived;
use crate::vocab::{format_rfc3339, Route, TimeMs};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// What the rules know about a device delivering to the patient.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFacts {
    pub device_id: String,
    /// Latest occurrence time heard from it (any event, heartbeats too).
    pub last_heard_ms: TimeMs,
}

/// Everything the rules look at for one patient.
#[derive(Debug, Clone)]
pub struct PatientFacts<'a> {
    pub patient_id: &'a str,
    /// The patient's model; `None` when not admitted (or not solvable).
    pub derived: Option<&'a Derived>,
    /// Discharged at or before now: nothing holds any more.
    pub discharged: bool,
    /// Devices this patient's deliveries come from.
    pub devices: &'a [DeviceFacts],
    /// Stored inputs for this patient that cannot be applied (sequence
    /// numbers): doses before any admission.
    pub orphan_inputs: &'a [i64],
    /// A delivering device not heard from for this long is silent.
    pub device_stale_after_ms: TimeMs,
    /// How far ahead forecasts look.
    pub horizon_ms: TimeMs,
}

/// The conditions holding now, and when to look again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub conditions: Vec<Condition>,
    /// The earliest moment a condition could change with no new input.
    pub next_at_ms: Option<TimeMs>,
}

impl Evaluation {
    fn wake(&mut self, at_ms: TimeMs) {
        self.next_at_ms = Some(self.next_at_ms.map_or(at_ms, |t| t.min(at_ms)));
    }
}

/// Whether an alert is currently active for (rule, subject): level
/// hysteresis keeps an active alert until the level is clearly back.
pub type IsActive<'a> = &'a dyn Fn(Rule, &str) -> bool;

const MIN_MS: f64 = 60_000.0;

fn clock(t_ms: TimeMs) -> String {
    // `HH:MM UTC` from the RFC 3339 text.
    let s = format_rfc3339(t_ms);
    s.get(11..16).map_or(s.clone(), |hm| format!("{hm} UTC"))
}

fn in_min(from_ms: TimeMs, to_ms: TimeMs) -> String {
    let m = ((to_ms - from_ms) as f64 / MIN_MS).round() as i64;
    if m <= 0 {
        "now".to_owned()
    } else {
        format!("in {m} min")
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn num(x: f64) -> Value {
    json!(round1(x))
}

/// The conditions for one patient at `now_ms`.
pub fn evaluate(
    facts: &PatientFacts<'_>,
    cfg: &AlertConfig,
    now_ms: TimeMs,
    active: IsActive<'_>,
) -> Evaluation {
    let mut ev = Evaluation::default();
    if facts.discharged {
        return ev;
    }
    if !facts.orphan_inputs.is_empty() && cfg.rule(Rule::UnassignedInput).enabled {
        ev.conditions.push(unassigned_patient(facts));
    }
    let Some(d) = facts.derived else {
        return ev;
    };
    let ctx = Ctx {
        d,
        cfg,
        now: now_ms,
        active,
        horizon: facts.horizon_ms.max(1),
        model: d.patient.model_label.clone(),
        assumptions: d
            .patient
            .assumptions
            .iter()
            .map(|a| a.key.clone())
            .collect(),
    };
    let on = |r: Rule| cfg.rule(r).enabled;
    let therapy = ctx.therapy_active();
    if on(Rule::RedoseDue) {
        ctx.redose_due(therapy, &mut ev);
    }
    if on(Rule::Subtherapeutic) {
        ctx.subtherapeutic(therapy, &mut ev);
    }
    if on(Rule::ConcentrationHigh) {
        ctx.concentration_high(&mut ev);
    }
    if on(Rule::DoseLimit) {
        ctx.dose_limit(&mut ev);
    }
    if on(Rule::DoseStacking) {
        ctx.dose_stacking(&mut ev);
    }
    if on(Rule::DeviceSilent) {
        ctx.device_silent(facts, &mut ev);
    }
    if on(Rule::DeviceFault) {
        ctx.device_fault(&mut ev);
    }
    if on(Rule::Interaction) {
        ctx.interaction(&mut ev);
    }
    if on(Rule::ModelDomain) {
        ctx.model_domain(&mut ev);
    }
    // Nothing is predicted beyond the horizon: look again before it ends.
    if therapy {
        ev.wake(now_ms + ctx.horizon / 2);
    }
    ev
}

/// Conditions for inputs from `device_id` that belong to no admitted
/// patient (`unowned`: their sequence numbers).
pub fn evaluate_device(device_id: &str, unowned: &[i64], cfg: &AlertConfig) -> Evaluation {
    let mut ev = Evaluation::default();
    if unowned.is_empty() || !cfg.rule(Rule::UnassignedInput).enabled {
        return ev;
    }
    let mut details = Map::new();
    details.insert("device_id".into(), json!(device_id));
    details.insert("input_seqs".into(), json!(unowned));
    ev.conditions.push(Condition {
        rule: Rule::UnassignedInput,
        subject: format!("device:{device_id}"),
        priority: Priority::Medium,
        message: format!(
            "{} stored input(s) from device {device_id} cannot be applied: the device has no admitted patient",
            unowned.len()
        ),
        details,
        key_time_ms: None,
        fingerprint: unowned.len().to_string(),
        condition_delay_ms: None,
        model: None,
        assumptions: Vec::new(),
    });
    ev
}

fn unassigned_patient(facts: &PatientFacts<'_>) -> Condition {
    let mut details = Map::new();
    details.insert("input_seqs".into(), json!(facts.orphan_inputs));
    Condition {
        rule: Rule::UnassignedInput,
        subject: "not_admitted".to_owned(),
        priority: Priority::Medium,
        message: format!(
            "{} stored dose(s) for patient {} cannot be applied: the patient has not been admitted",
            facts.orphan_inputs.len(),
            facts.patient_id
        ),
        details,
        key_time_ms: None,
        fingerprint: facts.orphan_inputs.len().to_string(),
        condition_delay_ms: None,
        model: None,
        assumptions: Vec::new(),
    }
}

struct Ctx<'a> {
    d: &'a Derived,
    cfg: &'a AlertConfig,
    now: TimeMs,
    active: IsActive<'a>,
    horizon: TimeMs,
    model: String,
    assumptions: Vec<String>,
}

impl Ctx<'_> {
    fn condition(
        &self,
        rule: Rule,
        subject: String,
        priority: Priority,
        message: String,
        mut details: Map<String, Value>,
    ) -> Condition {
        details.insert("model".into(), json!(self.model));
        details.insert(
            "assumes".into(),
            json!(crate::simulate::FORECAST_ASSUMPTIONS),
        );
        Condition {
            rule,
            subject,
            priority,
            message,
            details,
            key_time_ms: None,
            fingerprint: String::new(),
            condition_delay_ms: None,
            model: Some(self.model.clone()),
            assumptions: self.assumptions.clone(),
        }
    }

    fn is_active(&self, rule: Rule, subject: &str) -> bool {
        (self.active)(rule, subject)
    }

    fn weight_kg(&self) -> f64 {
        self.d.patient.covariates.weight_kg
    }

    /// A delivery runs now, or one started within the therapy window.
    fn therapy_active(&self) -> bool {
        let window = min_ms(self.cfg.active_therapy_h * 60.0);
        self.d.ledger.deliveries.iter().any(|del| {
            del.start_ms <= self.now
                && (del.is_running_at(self.now)
                    || del.start_ms >= self.now - window
                    || del.end_ms.is_some_and(|e| e >= self.now - window))
        })
    }

    /// When Ce falls below `level` from `now` (now itself if already below),
    /// within `within_ms`.
    fn falls_below(&self, level: f64, within_ms: TimeMs) -> Option<TimeMs> {
        let s = &self.d.solution;
        if s.at(self.now).ce_ng_per_ml < level {
            return Some(self.now);
        }
        s.next_crossing(Output::Ce, level, self.now, within_ms)
            .filter(|c| c.direction == Direction::Falling)
            .map(|c| c.at_ms)
    }

    /// The latest delivery started at or before now (the input that drove
    /// the current course).
    fn last_delivery(&self) -> Option<&Delivery> {
        self.d
            .ledger
            .deliveries
            .iter()
            .filter(|d| d.start_ms <= self.now)
            .max_by_key(|d| d.start_ms)
    }

    fn cause(&self, details: &mut Map<String, Value>, del: Option<&Delivery>) {
        if let Some(del) = del {
            details.insert(
                "cause".into(),
                json!({"source": del.source, "input_id": del.input_id,
                       "time": format_rfc3339(del.start_ms), "what": del.label()}),
            );
        }
    }

    fn redose_due(&self, therapy: bool, ev: &mut Evaluation) {
        if !therapy {
            return;
        }
        let floor = self.d.patient.targets.analgesic_floor_ng_per_ml;
        let lead = min_ms(self.cfg.redose_lead_min);
        let was = self.is_active(Rule::RedoseDue, "floor");
        // An active alert holds a little longer (level hysteresis).
        let lead_now = if was {
            lead + (lead as f64 * self.cfg.level_hysteresis) as TimeMs
        } else {
            lead
        };
        let ce = self.d.solution.at(self.now).ce_ng_per_ml;
        let below = self.falls_below(floor, self.horizon);
        match below {
            Some(t) if t - self.now <= lead_now => {
                let mut details = Map::new();
                details.insert("floor_ng_per_ml".into(), num(floor));
                details.insert("ce_ng_per_ml".into(), num(ce));
                details.insert("below_floor_at".into(), json!(format_rfc3339(t)));
                details.insert("lead_min".into(), num(self.cfg.redose_lead_min));
                self.cause(&mut details, self.last_delivery());
                let message = if t <= self.now {
                    format!(
                        "Redose due now: Ce {:.0} ng/mL is below the analgesic floor {:.0} ng/mL",
                        ce, floor
                    )
                } else {
                    format!(
                        "Redose due: Ce will fall below {:.0} ng/mL at {} ({})",
                        floor,
                        clock(t),
                        in_min(self.now, t)
                    )
                };
                let mut c = self.condition(
                    Rule::RedoseDue,
                    "floor".into(),
                    Priority::Low,
                    message,
                    details,
                );
                // Already below: the crossing is "now" at every evaluation,
                // not a predicted time (a moving key would be an `updated`
                // every `update_shift_min` for as long as Ce stays low).
                if t > self.now {
                    c.key_time_ms = Some(t);
                    c.fingerprint = "predicted".into();
                } else {
                    c.fingerprint = "below".into();
                }
                ev.conditions.push(c);
                // It stops holding when Ce climbs back over the floor.
                if let Some(up) = self
                    .d
                    .solution
                    .next_crossing(Output::Ce, floor, self.now, self.horizon)
                    .filter(|c| c.direction == Direction::Rising)
                {
                    ev.wake(up.at_ms);
                }
            }
            Some(t) => ev.wake(t - lead),
            None => {}
        }
        // A patch reaching its planned end (not one removed early).
        let deliveries = &self.d.ledger.deliveries;
        for p in deliveries.iter().filter(|d| d.route == Route::Transdermal) {
            let Some(end) = p.planned_end_ms.filter(|&e| p.end_ms == Some(e)) else {
                continue;
            };
            let replaced = deliveries
                .iter()
                .any(|o| o.route == Route::Transdermal && o.start_ms > p.start_ms);
            if replaced || p.start_ms > self.now {
                continue;
            }
            let subject = format!("patch_end:{}", p.source);
            if self.now >= end - lead && self.now < end + lead {
                let mut details = Map::new();
                details.insert("patch_source".into(), json!(p.source));
                details.insert("planned_end".into(), json!(format_rfc3339(end)));
                self.cause(&mut details, Some(p));
                let message = if self.now < end {
                    format!(
                        "Patch from {} reaches its planned end at {} ({}): plan the next dose",
                        p.source,
                        clock(end),
                        in_min(self.now, end)
                    )
                } else {
                    format!(
                        "Patch from {} reached its planned end at {}: plan the next dose",
                        p.source,
                        clock(end)
                    )
                };
                let mut c =
                    self.condition(Rule::RedoseDue, subject, Priority::Low, message, details);
                c.key_time_ms = Some(end);
                ev.conditions.push(c);
                ev.wake(end + lead);
            } else if self.now < end - lead {
                ev.wake(end - lead);
            }
        }
    }

    fn subtherapeutic(&self, therapy: bool, ev: &mut Evaluation) {
        if !therapy {
            return;
        }
        let floor = self.d.patient.targets.analgesic_floor_ng_per_ml;
        let was = self.is_active(Rule::Subtherapeutic, "ce");
        let level = if was {
            floor * (1.0 + self.cfg.level_hysteresis)
        } else {
            floor
        };
        let ce = self.d.solution.at(self.now).ce_ng_per_ml;
        // A dose still being absorbed that brings Ce over the floor within
        // the lead time is not under-dosing (an oral dose, a new patch).
        let rising_soon = self
            .d
            .solution
            .next_crossing(
                Output::Ce,
                level,
                self.now,
                min_ms(self.cfg.redose_lead_min),
            )
            .filter(|c| c.direction == Direction::Rising);
        if ce < level && !was {
            if let Some(c) = rising_soon {
                ev.wake(c.at_ms);
                return;
            }
        }
        if ce < level {
            let mut details = Map::new();
            details.insert("floor_ng_per_ml".into(), num(floor));
            details.insert("ce_ng_per_ml".into(), num(ce));
            self.cause(&mut details, self.last_delivery());
            ev.conditions.push(self.condition(
                Rule::Subtherapeutic,
                "ce".into(),
                Priority::Medium,
                format!(
                    "Ce {:.0} ng/mL is below the analgesic floor {:.0} ng/mL during active therapy",
                    ce, floor
                ),
                details,
            ));
            if let Some(c) =
                self.d
                    .solution
                    .next_crossing(Output::Ce, level, self.now, self.horizon)
            {
                ev.wake(c.at_ms);
            }
        } else if let Some(t) = self.falls_below(level, self.horizon) {
            ev.wake(t);
        }
    }

    fn concentration_high(&self, ev: &mut Evaluation) {
        let ceiling = self.d.patient.targets.ceiling_ng_per_ml;
        let h = self.cfg.level_hysteresis;
        let s = &self.d.solution;
        let now_c = s.at(self.now);
        let lead = min_ms(self.cfg.high_lead_min);
        // Ce: above now, or predicted to rise above within the lead.
        let was_ce = self.is_active(Rule::ConcentrationHigh, "ce");
        let level = if was_ce { ceiling * (1.0 - h) } else { ceiling };
        let cross = s.next_crossing(Output::Ce, level, self.now, self.horizon);
        let above_now = now_c.ce_ng_per_ml > level;
        let rising_at = cross
            .filter(|c| c.direction == Direction::Rising)
            .map(|c| c.at_ms);
        let predicted = rising_at.filter(|t| t - self.now <= lead);
        if above_now || predicted.is_some() {
            let mut details = Map::new();
            details.insert("ceiling_ng_per_ml".into(), num(ceiling));
            details.insert("ce_ng_per_ml".into(), num(now_c.ce_ng_per_ml));
            details.insert("cp_ng_per_ml".into(), num(now_c.cp_ng_per_ml));
            let running: Vec<String> = self
                .d
                .ledger
                .running_at(self.now)
                .map(|d| format!("{} {}", d.source, d.label()))
                .collect();
            details.insert("running".into(), json!(running));
            self.cause(&mut details, self.last_delivery());
            let (message, key) = match predicted {
                Some(t) if !above_now => {
                    details.insert("above_ceiling_at".into(), json!(format_rfc3339(t)));
                    (
                        format!(
                            "Ce will rise above the ceiling {:.0} ng/mL at {} ({}) under current inputs",
                            ceiling,
                            clock(t),
                            in_min(self.now, t)
                        ),
                        Some(t),
                    )
                }
                _ => (
                    format!(
                        "Ce {:.0} ng/mL is above the ceiling {:.0} ng/mL",
                        now_c.ce_ng_per_ml, ceiling
                    ),
                    None,
                ),
            };
            let mut c = self.condition(
                Rule::ConcentrationHigh,
                "ce".into(),
                Priority::High,
                message,
                details,
            );
            c.key_time_ms = key;
            c.fingerprint = if above_now { "above" } else { "predicted" }.into();
            ev.conditions.push(c);
            if let Some(c) = cross.filter(|c| c.direction == Direction::Falling) {
                ev.wake(c.at_ms);
            }
        } else if let Some(t) = rising_at {
            ev.wake(t - lead);
        }
        // Cp: above the ceiling for a sustained time (a bolus's plasma peak
        // passes; the delay is the condition delay of this subject).
        let was_cp = self.is_active(Rule::ConcentrationHigh, "cp");
        let level = if was_cp { ceiling * (1.0 - h) } else { ceiling };
        if now_c.cp_ng_per_ml > level {
            let mut details = Map::new();
            details.insert("ceiling_ng_per_ml".into(), num(ceiling));
            details.insert("cp_ng_per_ml".into(), num(now_c.cp_ng_per_ml));
            details.insert("ce_ng_per_ml".into(), num(now_c.ce_ng_per_ml));
            details.insert("sustained_min".into(), num(self.cfg.cp_high_delay_min));
            self.cause(&mut details, self.last_delivery());
            let mut c = self.condition(
                Rule::ConcentrationHigh,
                "cp".into(),
                Priority::High,
                format!(
                    "Cp {:.0} ng/mL has stayed above the ceiling {:.0} ng/mL for {:.0} min",
                    now_c.cp_ng_per_ml, ceiling, self.cfg.cp_high_delay_min
                ),
                details,
            );
            c.condition_delay_ms = Some(min_ms(self.cfg.cp_high_delay_min));
            ev.conditions.push(c);
            if let Some(c) = s.next_crossing(Output::Cp, level, self.now, self.horizon) {
                ev.wake(c.at_ms);
            }
        } else if let Some(c) = s.next_crossing(Output::Cp, level, self.now, self.horizon) {
            ev.wake(c.at_ms);
        }
    }

    fn dose_limit(&self, ev: &mut Evaluation) {
        let w = self.weight_kg();
        if w.is_nan() || w <= 0.0 {
            return;
        }
        let limits = &self.d.patient.limits;
        let setting = self.d.patient.setting;
        let hold = min_ms(self.cfg.event_hold_min);
        let deliveries = &self.d.ledger.deliveries;
        // Single doses over the bolus limit.
        let max_bolus = limits.max_bolus_mg_per_kg.value;
        for del in deliveries {
            let Some(amount) = del.amount_mg else {
                continue;
            };
            if !self.cfg.bolus_limit_routes.contains(&del.route) {
                continue;
            }
            if del.start_ms > self.now || del.start_ms < self.now - hold {
                continue;
            }
            let per_kg = amount / w;
            if per_kg > max_bolus {
                let mut details = Map::new();
                details.insert("kind".into(), json!("bolus"));
                details.insert("amount_mg".into(), num(amount));
                details.insert(
                    "dose_mg_per_kg".into(),
                    json!((per_kg * 1000.0).round() / 1000.0),
                );
                details.insert("limit_mg_per_kg".into(), json!(max_bolus));
                details.insert("weight_kg".into(), json!(w));
                details.insert("setting".into(), json!(setting));
                details.insert(
                    "limit_source".into(),
                    json!(limits.max_bolus_mg_per_kg.source),
                );
                self.cause(&mut details, Some(del));
                ev.conditions.push(self.condition(
                    Rule::DoseLimit,
                    format!("bolus:{}:{}", del.source, del.input_id),
                    Priority::High,
                    format!(
                        "{} at {} is {:.2} mg/kg, over the {} limit of {} mg/kg",
                        del.label(),
                        clock(del.start_ms),
                        per_kg,
                        setting.as_str(),
                        max_bolus
                    ),
                    details,
                ));
                ev.wake(del.start_ms + hold);
            }
        }
        // Infusion rates over the limit, per source.
        let max_rate = limits.max_infusion_mg_per_kg_per_h.value;
        for del in self.d.ledger.running_at(self.now) {
            if del.route != Route::IvInfusion {
                continue;
            }
            let rate = del.rate_mg_per_h.unwrap_or(0.0);
            let per_kg = rate / w;
            if per_kg > max_rate {
                let mut details = Map::new();
                details.insert("kind".into(), json!("infusion_rate"));
                details.insert("rate_mg_per_h".into(), num(rate));
                details.insert(
                    "rate_mg_per_kg_per_h".into(),
                    json!((per_kg * 1000.0).round() / 1000.0),
                );
                details.insert("limit_mg_per_kg_per_h".into(), json!(max_rate));
                details.insert("weight_kg".into(), json!(w));
                details.insert("setting".into(), json!(setting));
                details.insert(
                    "limit_source".into(),
                    json!(limits.max_infusion_mg_per_kg_per_h.source),
                );
                self.cause(&mut details, Some(del));
                let mut c = self.condition(
                    Rule::DoseLimit,
                    format!("rate:{}", del.source),
                    Priority::High,
                    format!(
                        "Infusion from {} at {} mg/h is {:.2} mg/kg/h, over the {} limit of {} mg/kg/h",
                        del.source,
                        round1(rate),
                        per_kg,
                        setting.as_str(),
                        max_rate
                    ),
                    details,
                );
                c.fingerprint = format!("{rate}");
                ev.conditions.push(c);
                if let Some(end) = del.end_ms {
                    ev.wake(end);
                }
            }
        }
        // Several infusions together over the limit, none alone.
        let running: Vec<&Delivery> = self
            .d
            .ledger
            .running_at(self.now)
            .filter(|d| d.route == Route::IvInfusion)
            .collect();
        let total: f64 = running.iter().filter_map(|d| d.rate_mg_per_h).sum();
        let any_alone = running
            .iter()
            .any(|d| d.rate_mg_per_h.unwrap_or(0.0) / w > max_rate);
        if running.len() > 1 && !any_alone && total / w > max_rate {
            let sources: Vec<String> = running
                .iter()
                .map(|d| format!("{} {}", d.source, d.label()))
                .collect();
            let mut details = Map::new();
            details.insert("kind".into(), json!("infusion_rate_total"));
            details.insert("rate_mg_per_h".into(), num(total));
            details.insert(
                "rate_mg_per_kg_per_h".into(),
                json!((total / w * 1000.0).round() / 1000.0),
            );
            details.insert("limit_mg_per_kg_per_h".into(), json!(max_rate));
            details.insert("infusions".into(), json!(sources));
            details.insert("weight_kg".into(), json!(w));
            details.insert("setting".into(), json!(setting));
            details.insert(
                "limit_source".into(),
                json!(limits.max_infusion_mg_per_kg_per_h.source),
            );
            self.cause(&mut details, self.last_delivery());
            let mut c = self.condition(
                Rule::DoseLimit,
                "rate:total".into(),
                Priority::High,
                format!(
                    "{} infusions together run at {} mg/h = {:.2} mg/kg/h, over the {} limit of {} mg/kg/h ({})",
                    running.len(),
                    round1(total),
                    total / w,
                    setting.as_str(),
                    max_rate,
                    sources.join(", ")
                ),
                details,
            );
            c.fingerprint = format!("{total}");
            ev.conditions.push(c);
        }
        // Rolling 24-hour cumulative dose (amount given, every route).
        let max_cum = limits.max_cumulative_mg_per_kg_per_24h.value;
        let day = 24 * 3_600_000;
        let from = self.now - day;
        let mut total_mg = 0.0;
        let mut running_mg_per_h = 0.0;
        let mut next_leave: Option<TimeMs> = None;
        for del in deliveries {
            if let Some(a) = del.amount_mg {
                if del.start_ms > from && del.start_ms <= self.now {
                    total_mg += a;
                    let leaves = del.start_ms + day;
                    next_leave = Some(next_leave.map_or(leaves, |t: TimeMs| t.min(leaves)));
                }
            } else if let Some(r) = del.rate_mg_per_h {
                let s = del.start_ms.max(from);
                let e = del.end_ms.unwrap_or(TimeMs::MAX).min(self.now);
                if e > s {
                    total_mg += r * (e - s) as f64 / 3_600_000.0;
                }
                if del.is_running_at(self.now) {
                    running_mg_per_h += r;
                }
            }
        }
        let per_kg = total_mg / w;
        let was = self.is_active(Rule::DoseLimit, "cumulative_24h");
        let level = if was {
            max_cum * (1.0 - self.cfg.level_hysteresis)
        } else {
            max_cum
        };
        if per_kg > level {
            let mut details = Map::new();
            details.insert("kind".into(), json!("cumulative_24h"));
            details.insert("total_mg".into(), num(total_mg));
            details.insert(
                "total_mg_per_kg".into(),
                json!((per_kg * 100.0).round() / 100.0),
            );
            details.insert("limit_mg_per_kg_per_24h".into(), json!(max_cum));
            details.insert("weight_kg".into(), json!(w));
            details.insert("setting".into(), json!(setting));
            details.insert("counts".into(), json!("amount given by every route, infusions and patches as rate x time, over the last 24 h"));
            details.insert(
                "limit_source".into(),
                json!(limits.max_cumulative_mg_per_kg_per_24h.source),
            );
            self.cause(&mut details, self.last_delivery());
            ev.conditions.push(self.condition(
                Rule::DoseLimit,
                "cumulative_24h".into(),
                Priority::High,
                format!(
                    "{:.0} mg ({:.1} mg/kg) given in the last 24 h, over the {} limit of {} mg/kg/24 h",
                    total_mg,
                    per_kg,
                    setting.as_str(),
                    max_cum
                ),
                details,
            ));
            // Look again as doses leave the window.
            ev.wake(
                next_leave
                    .unwrap_or(self.now + 15 * 60_000)
                    .min(self.now + 15 * 60_000),
            );
        } else if running_mg_per_h > 0.0 {
            // Earliest the running deliveries can take it over the limit
            // (doses leaving the window only make it later).
            let h = (level * w - total_mg) / running_mg_per_h;
            ev.wake(self.now + ((h * 3_600_000.0).ceil() as TimeMs).max(1_000));
        }
    }

    /// Time from a single dose by `route` at `at_ms` to its Ce peak, for
    /// this patient's model.
    fn ce_peak_after(&self, route: Route, at_ms: TimeMs) -> Option<TimeMs> {
        let system = self.d.solution.system_at(at_ms).clone();
        let schedule = Schedule::build(
            system.params(),
            &[Dosing::Bolus {
                at_ms: 0,
                route,
                amount_mg: 1.0,
            }],
        )
        .ok()?;
        let sol = Solution::new(Arc::new(system), &schedule);
        // Ce of one dose rises to a single peak: 15 s grid over 12 h.
        let samples = sol.sample(0, 12 * 3_600_000, 15_000);
        samples
            .iter()
            .max_by(|a, b| a.ce_ng_per_ml.total_cmp(&b.ce_ng_per_ml))
            .map(|s| s.t_ms)
    }

    fn dose_stacking(&self, ev: &mut Evaluation) {
        let hold = min_ms(self.cfg.event_hold_min);
        let singles: Vec<&Delivery> = self
            .d
            .ledger
            .deliveries
            .iter()
            .filter(|d| d.amount_mg.is_some() && d.start_ms <= self.now)
            .collect();
        for (i, dose) in singles.iter().enumerate() {
            if dose.start_ms < self.now - hold {
                continue;
            }
            // The previous single dose (ties: arrival order).
            let Some(prev) = singles[..i]
                .iter()
                .rev()
                .find(|p| p.start_ms <= dose.start_ms)
            else {
                continue;
            };
            let gap = dose.start_ms - prev.start_ms;
            let mut reason = None;
            if let Some(peak) = self.ce_peak_after(prev.route, prev.start_ms) {
                if gap < peak {
                    reason = Some((
                        "previous_ce_rising",
                        format!(
                            "given while the previous dose ({} at {}) was still rising (its Ce peak is at {})",
                            prev.label(),
                            clock(prev.start_ms),
                            clock(prev.start_ms + peak)
                        ),
                        peak,
                    ));
                }
            }
            if reason.is_none() {
                if let Some(&m) = self.cfg.min_interval_min.get(&dose.route) {
                    let min = min_ms(m);
                    if gap < min {
                        reason = Some((
                            "min_interval",
                            format!(
                                "given {} min after the previous dose ({} at {}); the minimum interval is {} min",
                                gap / 60_000,
                                prev.label(),
                                clock(prev.start_ms),
                                m
                            ),
                            min,
                        ));
                    }
                }
            }
            let Some((why, text, _)) = reason else {
                continue;
            };
            let mut details = Map::new();
            details.insert("reason".into(), json!(why));
            details.insert(
                "previous".into(),
                json!({"source": prev.source, "input_id": prev.input_id,
                       "time": format_rfc3339(prev.start_ms), "what": prev.label()}),
            );
            details.insert("interval_min".into(), num(gap as f64 / MIN_MS));
            self.cause(&mut details, Some(dose));
            ev.conditions.push(self.condition(
                Rule::DoseStacking,
                format!("dose:{}:{}", dose.source, dose.input_id),
                Priority::Medium,
                format!("{} at {} {}", dose.label(), clock(dose.start_ms), text),
                details,
            ));
            ev.wake(dose.start_ms + hold);
        }
    }

    fn device_silent(&self, facts: &PatientFacts<'_>, ev: &mut Evaluation) {
        let stale = facts.device_stale_after_ms;
        let mut seen = std::collections::BTreeSet::new();
        for del in self.d.ledger.running_at(self.now) {
            let Some(id) = del.source.strip_prefix("devices/") else {
                continue;
            };
            if !seen.insert(id) {
                continue;
            }
            let heard = facts
                .devices
                .iter()
                .find(|d| d.device_id == id)
                .map(|d| d.last_heard_ms);
            let deadline = heard.map_or(self.now, |h| h.saturating_add(stale));
            if self.now > deadline || heard.is_none() {
                let mut details = Map::new();
                details.insert("device_id".into(), json!(id));
                details.insert("last_heard".into(), json!(heard.map(format_rfc3339)));
                details.insert("expected_within_min".into(), num(stale as f64 / MIN_MS));
                details.insert("delivering".into(), json!(del.label()));
                details.insert(
                    "consequence".into(),
                    json!("the model assumes the device keeps delivering as last reported; the state is marked stale"),
                );
                let mut c = self.condition(
                    Rule::DeviceSilent,
                    id.to_owned(),
                    Priority::Medium,
                    format!(
                        "Device {id} ({}) not heard from since {}: the model assumes it still delivers",
                        del.label(),
                        heard.map_or("never".to_owned(), clock)
                    ),
                    details,
                );
                c.fingerprint = heard.unwrap_or(0).to_string();
                ev.conditions.push(c);
            } else {
                ev.wake(deadline + 1);
            }
        }
    }

    fn device_fault(&self, ev: &mut Evaluation) {
        let floor = self.d.patient.targets.analgesic_floor_ng_per_ml;
        for alarm in self.d.ledger.alarms_at(self.now) {
            let (priority, stops) = match alarm.code.as_str() {
                "occlusion" | "air_in_line" | "battery_depleted" => (Priority::High, true),
                "door_open" => (Priority::Medium, true),
                "patch_detached" => (Priority::Medium, false),
                "other" => (Priority::Medium, false),
                // Low-value alarms: infusion_complete, battery_low.
                _ => (Priority::Low, false),
            };
            let mut details = Map::new();
            details.insert("device_id".into(), json!(alarm.device_id));
            details.insert("code".into(), json!(alarm.code));
            details.insert("since".into(), json!(format_rfc3339(alarm.start_ms)));
            if let Some(m) = &alarm.message {
                details.insert("device_message".into(), json!(m));
            }
            details.insert(
                "cause".into(),
                json!({"source": alarm.source, "input_id": alarm.input_id,
                       "time": format_rfc3339(alarm.start_ms)}),
            );
            // The model's consequence.
            let delivering = self.d.ledger.deliveries.iter().any(|d| {
                // Running at the alarm, or stopped by the pump with it
                // (`infusion_stopped` at the alarm's time).
                d.source == alarm.source
                    && d.rate_mg_per_h.is_some()
                    && d.start_ms < alarm.start_ms
                    && d.end_ms.is_none_or(|e| e >= alarm.start_ms)
            });
            let consequence = if stops && delivering {
                self.below_floor_if_stopped(&alarm.source, alarm.start_ms, floor)
                    .map(|t| (t, "if delivery does not resume"))
            } else if alarm.code == "patch_detached" {
                self.falls_below(floor, self.horizon)
                    .map(|t| (t, "with the patch off"))
            } else {
                None
            };
            let mut message = format!(
                "Device {} alarm: {}{}",
                alarm.device_id,
                alarm.code.replace('_', " "),
                alarm
                    .message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
            let mut key = None;
            if let Some((t, assume)) = consequence {
                details.insert("below_floor_at".into(), json!(format_rfc3339(t)));
                details.insert("consequence_assumes".into(), json!(assume));
                message.push_str(&if t <= self.now {
                    format!("; Ce is below the floor {floor:.0} ng/mL")
                } else {
                    format!(
                        "; Ce will fall below {floor:.0} ng/mL at {} ({}) {assume}",
                        clock(t),
                        in_min(self.now, t)
                    )
                });
                // Already below: "now" is no predicted time (see redose_due).
                key = (t > self.now).then_some(t);
            }
            let mut c = self.condition(
                Rule::DeviceFault,
                format!("{}:{}", alarm.device_id, alarm.code),
                priority,
                message,
                details,
            );
            c.key_time_ms = key;
            ev.conditions.push(c);
        }
    }

    /// When Ce falls below `floor` if `source`'s deliveries stopped at
    /// `stop_ms` (the latest parameters throughout).
    fn below_floor_if_stopped(&self, source: &str, stop_ms: TimeMs, floor: f64) -> Option<TimeMs> {
        let dosing = self.d.ledger.dosing_stopped(source, stop_ms);
        let system = self.d.solution.system().clone();
        let schedule = Schedule::build(system.params(), &dosing).ok()?;
        let sol = Solution::new(Arc::new(system), &schedule);
        if sol.at(self.now).ce_ng_per_ml < floor {
            return Some(self.now);
        }
        sol.next_crossing(Output::Ce, floor, self.now, self.horizon)
            .filter(|c| c.direction == Direction::Falling)
            .map(|c| c.at_ms)
    }

    fn interaction(&self, ev: &mut Evaluation) {
        for i in &self.d.patient.interactions {
            let changes_pk = i.clearance_multiplier.is_some_and(|m| m != 1.0)
                || i.route_f_multipliers.values().any(|&m| m != 1.0);
            if !changes_pk && i.pd_warning.is_none() {
                continue;
            }
            let mut details = Map::new();
            details.insert("comedication".into(), json!(i.comedication));
            details.insert("mechanism".into(), json!(i.mechanism));
            details.insert("summary".into(), json!(i.summary));
            details.insert("source".into(), json!(i.source));
            details.insert("clearance_multiplier".into(), json!(i.clearance_multiplier));
            details.insert("route_f_multipliers".into(), json!(i.route_f_multipliers));
            details.insert("pd_warning".into(), json!(i.pd_warning));
            details.insert("model_adjusted".into(), json!(changes_pk));
            let what = if changes_pk {
                "the model is adjusted for it"
            } else {
                "pharmacodynamic: the model is not adjusted"
            };
            ev.conditions.push(self.condition(
                Rule::Interaction,
                i.comedication.clone(),
                Priority::Medium,
                format!(
                    "Interaction with {} ({}): {what}. {}",
                    i.comedication, i.mechanism, i.summary
                ),
                details,
            ));
        }
    }

    fn model_domain(&self, ev: &mut Evaluation) {
        let warnings: Vec<&str> = self
            .d
            .patient
            .warnings
            .iter()
            .filter(|w| w.code == "model_domain")
            .map(|w| w.message.as_str())
            .collect();
        if warnings.is_empty() {
            return;
        }
        let mut details = Map::new();
        details.insert("warnings".into(), json!(warnings));
        let mut c = self.condition(
            Rule::ModelDomain,
            "covariates".into(),
            Priority::Low,
            format!(
                "Outside the validity domain of {}: {}",
                self.model,
                warnings.join("; ")
            ),
            details,
        );
        c.fingerprint = warnings.join("|");
        ev.conditions.push(c);
    }
}
