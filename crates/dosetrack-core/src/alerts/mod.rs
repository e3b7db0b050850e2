//! Alerts: the rules that watch each patient, and the alarm lifecycle.
//!
//! Pure and deterministic, like the engine: facts and "now" in, messages
//! out. No clock, socket or database in here.
//!
//! * [`rules`] looks at one patient's model, ledger and devices at a moment
//!   and says which alert *conditions* hold (with the numbers, the model and
//!   the input that drove each), and when that could next change.
//! * [`lifecycle`] keeps, per (scope, rule, subject), the condition state
//!   apart from the operator state (acknowledged, paused) and turns
//!   conditions over time into the contract's phases: condition delays,
//!   clear hysteresis, latching, escalation, re-notification.
//! * [`timers`] is the queue of each scope's next interesting moment, so the
//!   daemon wakes for the earliest instead of scanning every patient.
//! * [`engine`] composes the three over the tracker and turns the result
//!   into one atomic store write (records, messages, outbox rows).
//! * [`write`](AlertWrite) is the one atomic store write the engine returns.
//! * [`details`] types each rule's numbers (the messages' `details`).
//! * [`report`] computes the alarm-burden report from stored lifecycle
//!   messages.
//!
//! Rule names, priorities and phases are the contract's
//! (`patients/{patient_id}/alerts`).

pub mod details;
pub mod engine;
pub mod lifecycle;
pub mod report;
pub mod rules;
pub mod timers;
mod write;

pub use details::{AlertDetails, LifecycleNotes, RuleDetails};
pub use engine::AlertEngine;
pub use lifecycle::{AlertBook, AlertMessage, AlertRecord, CommandError};
pub use rules::{evaluate, DeviceFacts, Evaluation, PatientFacts};
pub use timers::TimerQueue;
pub use write::{AlertWrite, CommandOutcome, OutboxKind, OutboxRow};

use crate::vocab::{Route, TimeMs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The alert rules (the contract's `rule` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    RedoseDue,
    Subtherapeutic,
    ConcentrationHigh,
    DoseLimit,
    DoseStacking,
    DeviceSilent,
    DeviceFault,
    Interaction,
    ModelDomain,
    UnassignedInput,
    AssociationConflict,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::RedoseDue,
        Rule::Subtherapeutic,
        Rule::ConcentrationHigh,
        Rule::DoseLimit,
        Rule::DoseStacking,
        Rule::DeviceSilent,
        Rule::DeviceFault,
        Rule::Interaction,
        Rule::ModelDomain,
        Rule::UnassignedInput,
        Rule::AssociationConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::RedoseDue => "redose_due",
            Rule::Subtherapeutic => "subtherapeutic",
            Rule::ConcentrationHigh => "concentration_high",
            Rule::DoseLimit => "dose_limit",
            Rule::DoseStacking => "dose_stacking",
            Rule::DeviceSilent => "device_silent",
            Rule::DeviceFault => "device_fault",
            Rule::Interaction => "interaction",
            Rule::ModelDomain => "model_domain",
            Rule::UnassignedInput => "unassigned_input",
            Rule::AssociationConflict => "association_conflict",
        }
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Technical alerts are about the system's inputs, not the patient's
    /// physiology (IEC 60601-1-8 technical alarm conditions).
    pub fn is_technical(self) -> bool {
        matches!(
            self,
            Rule::DeviceSilent
                | Rule::DeviceFault
                | Rule::UnassignedInput
                | Rule::AssociationConflict
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Alarm priority (IEC 60601-1-8 high / medium / low).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }

    /// One step up (high stays high).
    pub fn raised(self) -> Priority {
        match self {
            Priority::Low => Priority::Medium,
            _ => Priority::High,
        }
    }
}

/// Lifecycle phase of a published alert message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Raised,
    Updated,
    Escalated,
    Acknowledged,
    Paused,
    Cleared,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Raised => "raised",
            Phase::Updated => "updated",
            Phase::Escalated => "escalated",
            Phase::Acknowledged => "acknowledged",
            Phase::Paused => "paused",
            Phase::Cleared => "cleared",
        }
    }
}

/// What an alert is about: a patient, or (for inputs that belong to no
/// patient yet) a device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Scope {
    Patient(String),
    Device(String),
}

impl Scope {
    pub fn patient_id(&self) -> Option<&str> {
        match self {
            Scope::Patient(p) => Some(p),
            Scope::Device(_) => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Patient(p) => write!(f, "patient {p}"),
            Scope::Device(d) => write!(f, "device {d}"),
        }
    }
}

/// An alert condition that holds at the moment evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub rule: Rule,
    /// What within the rule: `ce`, `cp`, a device id, an input id, …; one
    /// alert per (scope, rule, subject).
    pub subject: String,
    pub priority: Priority,
    /// For a nurse: what and when, with numbers.
    pub message: String,
    /// The numbers, the predicted time, the input that drove it.
    pub details: RuleDetails,
    /// The instant the alert is about (a predicted crossing), if any: a
    /// shift of at least [`AlertConfig::update_shift_min`] is an `updated`.
    pub key_time_ms: Option<TimeMs>,
    /// Anything else whose change is worth an `updated` (a new rate, …).
    pub fingerprint: String,
    /// Overrides the rule's condition delay for this subject.
    pub condition_delay_ms: Option<TimeMs>,
    /// The model that produced it (`ketamine/domino`), if a model did.
    pub model: Option<String>,
    /// The assumption-flagged drug-file values it rests on (dotted keys).
    pub assumptions: Vec<String>,
}

/// Lifecycle settings of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSettings {
    pub enabled: bool,
    /// The condition must hold this long before the alert is raised.
    pub condition_delay_s: u64,
    /// The condition must be absent this long before the alert clears.
    pub clear_delay_s: u64,
    /// A high-priority style latch: after the condition ends the alert
    /// stays until acknowledged.
    pub latch: bool,
    /// Unacknowledged: re-notify (phase `escalated`, one priority step up)
    /// every this many minutes. `None` (in the config file: 0): never.
    pub escalate_after_min: Option<f64>,
}

/// One rule's section as written in the config: only the keys given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulePatch {
    enabled: Option<bool>,
    condition_delay_s: Option<u64>,
    clear_delay_s: Option<u64>,
    latch: Option<bool>,
    escalate_after_min: Option<f64>,
}

fn rules_over_defaults<'de, D>(d: D) -> Result<BTreeMap<Rule, RuleSettings>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let patches: BTreeMap<Rule, RulePatch> = BTreeMap::deserialize(d)?;
    let mut rules: BTreeMap<Rule, RuleSettings> =
        Rule::ALL.iter().map(|&r| (r, default_rule(r))).collect();
    for (rule, p) in patches {
        let s = rules.entry(rule).or_insert_with(|| default_rule(rule));
        if let Some(v) = p.enabled {
            s.enabled = v;
        }
        if let Some(v) = p.condition_delay_s {
            s.condition_delay_s = v;
        }
        if let Some(v) = p.clear_delay_s {
            s.clear_delay_s = v;
        }
        if let Some(v) = p.latch {
            s.latch = v;
        }
        if let Some(v) = p.escalate_after_min {
            // 0 says "never" explicitly.
            s.escalate_after_min = (v != 0.0).then_some(v);
        }
    }
    Ok(rules)
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            enabled: true,
            condition_delay_s: 0,
            clear_delay_s: 120,
            latch: false,
            escalate_after_min: None,
        }
    }
}

/// Every alert setting (`[alerts]` in the daemon config). Thresholds —
/// floor, ceiling, dose limits, interactions — come from the drug file;
/// these are the alarm system's own timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// `redose_due`: warn this long before Ce falls below the floor, and
    /// before a patch's planned end.
    pub redose_lead_min: f64,
    /// `concentration_high`: warn this long before Ce rises above the
    /// ceiling.
    pub high_lead_min: f64,
    /// Level hysteresis: an active level alert clears only when the level
    /// is this fraction beyond the threshold (0.05 = 5 %).
    pub level_hysteresis: f64,
    /// Therapy is active while a delivery runs or one started within this
    /// many hours.
    pub active_therapy_h: f64,
    /// Cp above the ceiling must last this long to raise (a bolus's plasma
    /// peak passes in minutes; the effect site follows Ce).
    pub cp_high_delay_min: f64,
    /// One-off events (a dose over the limit, a stacked dose) stay a
    /// condition this long.
    pub event_hold_min: f64,
    /// The bolus limit applies to these routes (Schwenk 2018 is about IV
    /// ketamine boluses).
    pub bolus_limit_routes: Vec<Route>,
    /// Minimum interval between two single doses by a route (`dose_stacking`);
    /// empty: only the Ce-still-rising test.
    pub min_interval_min: BTreeMap<Route, f64>,
    /// A predicted time moving by at least this much is an `updated`.
    pub update_shift_min: f64,
    /// At most one `updated` for changed numbers per alert this often (a
    /// wobbling prediction is not a stream of messages).
    pub update_min_interval_min: f64,
    /// Longest `pause` an operator may ask for.
    pub max_pause_min: f64,
    /// Most pause one alert occurrence may be granted in total, over every
    /// renewal; a pause beyond it is refused (`pause_limit`).
    pub max_pause_per_occurrence_min: f64,
    /// Operators (`by`) whose alert commands are accepted; empty: every
    /// operator. Any other is refused (`unknown_operator`) at intake.
    pub operators: Vec<String>,
    /// Alert commands dated further behind the daemon's clock at receipt
    /// are refused (`stale_command`) at intake.
    pub max_command_age_min: f64,
    /// Per rule: delays, latch, escalation. A rule's section in the config
    /// changes only the keys it gives; the others keep the rule's shipped
    /// settings ([`default_rule`]), so a partial section never turns off a
    /// latch or an escalation by omission.
    #[serde(deserialize_with = "rules_over_defaults")]
    pub rules: BTreeMap<Rule, RuleSettings>,
}

/// The shipped settings of a rule (the daemon config may override them).
pub fn default_rule(rule: Rule) -> RuleSettings {
    let s = |condition_delay_s, clear_delay_s, latch, escalate_after_min| RuleSettings {
        enabled: true,
        condition_delay_s,
        clear_delay_s,
        latch,
        escalate_after_min,
    };
    match rule {
        Rule::RedoseDue => s(0, 600, false, None),
        Rule::Subtherapeutic => s(300, 900, false, Some(15.0)),
        Rule::ConcentrationHigh => s(30, 120, true, Some(5.0)),
        Rule::DoseLimit => s(0, 0, true, Some(5.0)),
        Rule::DoseStacking => s(0, 0, false, Some(15.0)),
        Rule::DeviceSilent | Rule::DeviceFault => s(0, 30, false, Some(10.0)),
        Rule::Interaction | Rule::ModelDomain => s(0, 0, false, None),
        Rule::UnassignedInput => s(60, 0, false, Some(30.0)),
        // Latched: an event, not a state; it stays until acknowledged (also
        // across a restart, where the refusal is not replayed).
        Rule::AssociationConflict => s(0, 0, true, Some(30.0)),
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            redose_lead_min: 30.0,
            high_lead_min: 30.0,
            level_hysteresis: 0.05,
            active_therapy_h: 24.0,
            cp_high_delay_min: 15.0,
            event_hold_min: 60.0,
            bolus_limit_routes: vec![Route::IvBolus],
            min_interval_min: BTreeMap::new(),
            update_shift_min: 5.0,
            update_min_interval_min: 15.0,
            max_pause_min: 30.0,
            max_pause_per_occurrence_min: 60.0,
            operators: Vec::new(),
            max_command_age_min: 10.0,
            rules: Rule::ALL.iter().map(|&r| (r, default_rule(r))).collect(),
        }
    }
}

impl AlertConfig {
    /// The settings of `rule` (defaults where the config has none).
    pub fn rule(&self, rule: Rule) -> RuleSettings {
        self.rules
            .get(&rule)
            .copied()
            .unwrap_or_else(|| default_rule(rule))
    }

    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), AlertConfigError> {
        let nonneg = |key: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(AlertConfigError::Negative {
                    key: key.to_owned(),
                    value,
                })
            }
        };
        nonneg("redose_lead_min", self.redose_lead_min)?;
        nonneg("high_lead_min", self.high_lead_min)?;
        nonneg("active_therapy_h", self.active_therapy_h)?;
        nonneg("cp_high_delay_min", self.cp_high_delay_min)?;
        nonneg("event_hold_min", self.event_hold_min)?;
        nonneg("update_shift_min", self.update_shift_min)?;
        nonneg("update_min_interval_min", self.update_min_interval_min)?;
        if !(self.level_hysteresis.is_finite() && (0.0..0.5).contains(&self.level_hysteresis)) {
            return Err(AlertConfigError::Hysteresis(self.level_hysteresis));
        }
        if !(self.max_pause_min.is_finite() && self.max_pause_min > 0.0) {
            return Err(AlertConfigError::MaxPause(self.max_pause_min));
        }
        if !(self.max_pause_per_occurrence_min.is_finite()
            && self.max_pause_per_occurrence_min > 0.0)
        {
            return Err(AlertConfigError::Positive {
                key: "max_pause_per_occurrence_min".to_owned(),
                value: self.max_pause_per_occurrence_min,
            });
        }
        if !(self.max_command_age_min.is_finite() && self.max_command_age_min > 0.0) {
            return Err(AlertConfigError::Positive {
                key: "max_command_age_min".to_owned(),
                value: self.max_command_age_min,
            });
        }
        for op in &self.operators {
            let printable = !op.is_empty()
                && op.chars().count() <= crate::contract::BY_MAX_CHARS
                && !op.chars().any(char::is_control);
            if !printable {
                return Err(AlertConfigError::Operator(op.clone()));
            }
        }
        for (route, v) in &self.min_interval_min {
            nonneg(&format!("min_interval_min.{}", route.as_str()), *v)?;
        }
        for (&rule, r) in &self.rules {
            if let Some(value) = r.escalate_after_min {
                if !(value.is_finite() && value > 0.0) {
                    return Err(AlertConfigError::Escalation { rule, value });
                }
            }
        }
        Ok(())
    }
}

/// An `[alerts]` setting out of range; the message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertConfigError {
    /// A duration or lead (`key`, under `alerts.`) below 0 or not finite.
    #[error("alerts.{key} must be a finite number >= 0 (got {value})")]
    Negative { key: String, value: f64 },
    #[error("alerts.level_hysteresis must be from 0 to below 0.5 (got {0})")]
    Hysteresis(f64),
    #[error("alerts.max_pause_min must be a number > 0 (got {0})")]
    MaxPause(f64),
    /// A setting (`key`, under `alerts.`) that must be a finite number > 0.
    #[error("alerts.{key} must be a finite number > 0 (got {value})")]
    Positive { key: String, value: f64 },
    /// An `operators` entry that no command's `by` could match.
    #[error("alerts.operators: {0:?} is not an operator identity (1 to 128 printable characters)")]
    Operator(String),
    #[error("alerts.rules.{rule}.escalate_after_min must be a number > 0 (got {value})")]
    Escalation { rule: Rule, value: f64 },
}

/// Minutes to milliseconds (rounded).
pub fn min_ms(min: f64) -> TimeMs {
    (min * 60_000.0).round() as TimeMs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AlertConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_partial_rule_section_keeps_the_rules_other_shipped_settings() {
        let cfg = parse("[rules.concentration_high]\ncondition_delay_s = 0\n");
        let high = cfg.rule(Rule::ConcentrationHigh);
        assert_eq!(high.condition_delay_s, 0);
        // Not turned off by omission.
        assert!(high.latch);
        assert_eq!(high.escalate_after_min, Some(5.0));
        assert_eq!(high.clear_delay_s, 120);
        // Other rules untouched.
        assert_eq!(cfg.rule(Rule::RedoseDue), default_rule(Rule::RedoseDue));
    }

    #[test]
    fn escalation_is_switched_off_explicitly_with_zero() {
        let cfg = parse("[rules.device_silent]\nescalate_after_min = 0\n");
        assert_eq!(cfg.rule(Rule::DeviceSilent).escalate_after_min, None);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_rules_are_errors() {
        assert!(toml::from_str::<AlertConfig>("[rules.redose_due]\nlatched = true\n").is_err());
        assert!(toml::from_str::<AlertConfig>("[rules.no_such_rule]\nlatch = true\n").is_err());
    }
}
