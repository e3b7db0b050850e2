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
//!
//! The rules by group: `levels` (`redose_due`, `subtherapeutic`,
//! `concentration_high`), `doses` (`dose_limit`, `dose_stacking`),
//! `devices` (`device_silent`, `device_fault`) and `model`
//! (`interaction`, `model_domain`); `unassigned_input` is here.

mod devices;
mod doses;
mod levels;
mod model;

use super::details::{CappedSeqs, Cause, RuleDetails, UnassignedDevice, UnassignedPatient};
use super::{min_ms, AlertConfig, Condition, Priority, Rule};
use crate::ledger::{Delivery, DeviceAlarm};
use crate::pk::{Direction, Output};
use crate::tracker::Derived;
use crate::vocab::{format_rfc3339, TimeMs};

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
    /// Device events refused (`association_conflict`) from devices still
    /// associated with this patient.
    pub refused: &'a [crate::tracker::RefusedEvents],
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

/// The delivery that drove a condition.
fn cause(del: &Delivery) -> Cause {
    Cause {
        input_id: del.input_id.clone(),
        source: del.source.clone(),
        time: format_rfc3339(del.start_ms),
        what: Some(del.label()),
    }
}

/// The input that started a device alarm.
fn alarm_cause(alarm: &DeviceAlarm) -> Cause {
    Cause {
        input_id: alarm.input_id.clone(),
        source: alarm.source.clone(),
        time: format_rfc3339(alarm.start_ms),
        what: None,
    }
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
    if on(Rule::AssociationConflict) {
        ctx.association_conflict(facts, &mut ev);
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
    let capped = CappedSeqs::of(unowned);
    let details = RuleDetails::UnassignedDevice(UnassignedDevice {
        device_id: device_id.to_owned(),
        input_seqs: capped.seqs,
        input_seqs_omitted: capped.omitted,
        input_seqs_total: capped.total,
    });
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
    let capped = CappedSeqs::of(facts.orphan_inputs);
    let details = RuleDetails::UnassignedPatient(UnassignedPatient {
        input_seqs: capped.seqs,
        input_seqs_omitted: capped.omitted,
        input_seqs_total: capped.total,
    });
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
        details: RuleDetails,
    ) -> Condition {
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

    /// The model the numbers come from.
    fn model(&self) -> String {
        self.model.clone()
    }

    /// What every forecast assumes.
    fn assumes(&self) -> String {
        crate::pk::FORECAST_ASSUMPTIONS.to_owned()
    }
}
