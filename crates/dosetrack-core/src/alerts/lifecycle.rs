//! The alarm lifecycle: conditions over time → the contract's phases.
//!
//! One alert per (scope, rule, subject). Its **condition** (does the rule
//! hold?) is kept apart from its **operator state** (acknowledged, paused):
//!
//! * A condition must hold for the rule's condition delay before the alert
//!   is `raised`; one that goes away sooner raises nothing.
//! * An active alert whose numbers move (a predicted time by at least
//!   `update_shift_min`, or another fingerprint) is `updated`, at most
//!   once per `update_min_interval_min` (a priority change at once).
//! * A condition must stay away for the rule's clear delay before the alert
//!   is `cleared` (hysteresis in time; level hysteresis is in the rules).
//!   A latching rule's alert whose condition ended stays, `latched`, until
//!   acknowledged, then clears.
//! * Unacknowledged and not paused, an alert is re-notified every
//!   `escalate_after_min` as `escalated`, one priority step up each time.
//! * `acknowledge` stops the repeats of this occurrence; `pause` silences
//!   it for a bounded time, after which it is re-notified (`updated`,
//!   `reason: pause_ended`). Neither clears the condition. The pauses of
//!   one occurrence add up to at most `max_pause_per_occurrence_min`: a
//!   renewal is granted what is left, and none left is refused
//!   ([`CommandError::PauseLimit`]).
//! * Discharge clears every alert of the patient (`reason: discharged`).
//!
//! The book is pure: every call takes `now`. Raised alerts are
//! [`AlertRecord`]s the daemon persists (and restores at start); pending
//! conditions (inside their delay) live in memory only and start their
//! delay again after a restart.

use super::{min_ms, AlertConfig, AlertDetails, Condition, Phase, Priority, Rule, Scope};
use crate::vocab::{format_rfc3339, TimeMs};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// An operator's action on an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorAction {
    pub by: String,
    pub at: String,
    pub at_ms: TimeMs,
    pub command_id: String,
}

/// A raised alert, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert_id: String,
    pub scope: Scope,
    pub rule: Rule,
    pub subject: String,
    /// The priority the rule gives.
    pub base_priority: Priority,
    /// The priority now (escalation raises it).
    pub priority: Priority,
    pub raised_at_ms: TimeMs,
    /// Does the condition hold (as of the last evaluation)?
    pub present: bool,
    pub absent_since_ms: Option<TimeMs>,
    /// The condition ended but the alert waits for acknowledgement.
    pub latched: bool,
    pub last_notified_ms: TimeMs,
    /// The last `updated` for changed numbers (rate-limited).
    #[serde(default)]
    pub last_updated_ms: Option<TimeMs>,
    pub last_phase: Phase,
    pub acknowledged: Option<OperatorAction>,
    pub paused_until_ms: Option<TimeMs>,
    pub paused: Option<OperatorAction>,
    /// Pause granted to this occurrence so far, in total (capped at
    /// `max_pause_per_occurrence_min`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paused_total_ms: TimeMs,
    pub escalations: u32,
    pub message: String,
    pub details: AlertDetails,
    pub key_time_ms: Option<TimeMs>,
    pub fingerprint: String,
    pub model: Option<String>,
    pub assumptions: Vec<String>,
    /// Set when cleared (the record is then closed).
    pub cleared_at_ms: Option<TimeMs>,
}

/// One lifecycle message (`patients/{patient_id}/alerts`), and an entry of
/// the retained active list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    pub alert_id: String,
    /// `null` for an alert about a device with no patient.
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub rule: Rule,
    pub priority: Priority,
    pub phase: Phase,
    pub time: String,
    pub message: String,
    pub details: AlertDetails,
    /// What within the rule (one alert per patient, rule and subject).
    pub subject: String,
    /// A technical alert (about inputs and devices, not physiology).
    pub technical: bool,
    pub raised_at: String,
    /// The model that produced it, and the assumption-flagged drug-file
    /// values it rests on.
    pub model: Option<String>,
    pub assumptions: Vec<String>,
    pub acknowledged: Option<OperatorAction>,
    pub paused_until: Option<String>,
    /// The condition ended; the alert stays until acknowledged.
    pub latched: bool,
    /// Whether the condition holds now.
    pub condition_present: bool,
    #[serde(skip)]
    pub time_ms: TimeMs,
    #[serde(skip)]
    pub scope: Option<Scope>,
}

fn is_zero(v: &TimeMs) -> bool {
    *v == 0
}

/// Why an operator command was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("no active alert {0} (unknown, or already cleared)")]
    UnknownAlert(String),
    /// The occurrence's pauses already add up to the cap: refused
    /// (`pause_limit`), never silently shortened to nothing.
    #[error(
        "alert {alert_id} was already paused for {paused_total_min} min in total, the most \
         one occurrence may be paused (alerts.max_pause_per_occurrence_min = {cap_min})"
    )]
    PauseLimit {
        alert_id: String,
        paused_total_min: f64,
        cap_min: f64,
    },
}

/// An operator command, as the lifecycle needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Acknowledge,
    Pause { minutes: f64 },
}

type Key = (Scope, Rule, String);

/// The entries of `map` in `scope`: keys are ordered by scope first, so
/// this is a range from the scope's least key, not a scan of every scope
/// (a scan made each evaluation cost O(every alert and pending condition),
/// and a batch touching many patients quadratic: at 10,000 patients the
/// daemon fell to ~50 inputs/s).
fn scope_range<'a, V>(
    map: &'a BTreeMap<Key, V>,
    scope: &'a Scope,
) -> impl Iterator<Item = (&'a Key, &'a V)> + 'a {
    let least_rule = Rule::ALL.iter().copied().min().unwrap_or(Rule::RedoseDue);
    map.range((scope.clone(), least_rule, String::new())..)
        .take_while(move |(k, _)| &k.0 == scope)
}

/// Every alert's lifecycle.
#[derive(Debug, Clone)]
pub struct AlertBook {
    cfg: AlertConfig,
    alerts: BTreeMap<Key, AlertRecord>,
    /// Conditions inside their delay: since, delay.
    pending: BTreeMap<Key, (TimeMs, TimeMs)>,
    ids: HashMap<String, Key>,
    next_number: u64,
    /// Records changed since the last `take_changes` (cleared ones too).
    changed: BTreeMap<String, AlertRecord>,
}

impl AlertBook {
    pub fn new(cfg: AlertConfig) -> Self {
        AlertBook {
            cfg,
            alerts: BTreeMap::new(),
            pending: BTreeMap::new(),
            ids: HashMap::new(),
            next_number: 1,
            changed: BTreeMap::new(),
        }
    }

    /// The book with the open records of an earlier run; `next_number`
    /// continues after the highest number ever used.
    pub fn restore(cfg: AlertConfig, open: Vec<AlertRecord>, next_number: u64) -> Self {
        let mut book = AlertBook::new(cfg);
        book.next_number = next_number.max(1);
        for r in open {
            // Never reuse an open alert's number, whatever the caller
            // passed (`al-{number}-{since}`).
            if let Some(n) = r
                .alert_id
                .strip_prefix("al-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                book.next_number = book.next_number.max(n.saturating_add(1));
            }
            let key = (r.scope.clone(), r.rule, r.subject.clone());
            book.ids.insert(r.alert_id.clone(), key.clone());
            book.alerts.insert(key, r);
        }
        book
    }

    pub fn config(&self) -> &AlertConfig {
        &self.cfg
    }

    /// Replace the settings (reload); open alerts keep their state.
    pub fn set_config(&mut self, cfg: AlertConfig) {
        self.cfg = cfg;
    }

    /// The number the next alert id will carry.
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// Is an alert raised with its condition present for this key? (The
    /// rules hold such an alert with level hysteresis. A condition still
    /// inside its delay is not active: it must hold at the plain threshold
    /// for the whole delay, or the alert would be raised with the level on
    /// the wrong side of it.)
    pub fn is_active(&self, scope: &Scope, rule: Rule, subject: &str) -> bool {
        let key = (scope.clone(), rule, subject.to_owned());
        self.alerts.get(&key).is_some_and(|r| r.present)
    }

    /// Entries held in memory: open alerts, conditions inside their delay
    /// and changes not yet taken (for memory accounting; each is bounded by
    /// the scopes × rules × subjects in play, not by time).
    pub fn entries(&self) -> usize {
        self.alerts.len() + self.pending.len() + self.changed.len()
    }

    /// Scopes with open alerts or pending conditions.
    pub fn scopes(&self) -> BTreeSet<Scope> {
        self.alerts
            .keys()
            .chain(self.pending.keys())
            .map(|(s, _, _)| s.clone())
            .collect()
    }

    /// Records changed since the last call, to persist.
    pub fn take_changes(&mut self) -> Vec<AlertRecord> {
        std::mem::take(&mut self.changed).into_values().collect()
    }

    /// Open alerts of a scope (the retained active list), by raise time.
    pub fn active(&self, scope: &Scope, now_ms: TimeMs) -> Vec<AlertMessage> {
        let mut v: Vec<AlertMessage> = self
            .in_scope(scope)
            .filter_map(|k| self.alerts.get(k))
            .map(|r| message(r, r.last_phase, now_ms))
            .collect();
        v.sort_by_key(|m| (std::cmp::Reverse(m.priority), m.raised_at.clone()));
        v
    }

    /// Look up an open alert.
    pub fn get(&self, alert_id: &str) -> Option<&AlertRecord> {
        self.ids.get(alert_id).and_then(|k| self.alerts.get(k))
    }

    fn in_scope<'a>(&'a self, scope: &'a Scope) -> impl Iterator<Item = &'a Key> + 'a {
        scope_range(&self.alerts, scope).map(|(k, _)| k)
    }

    /// Drop the scope's pending conditions that `keep` rejects.
    fn drop_pending(&mut self, scope: &Scope, keep: impl Fn(&Key) -> bool) {
        let gone: Vec<Key> = scope_range(&self.pending, scope)
            .map(|(k, _)| k)
            .filter(|k| !keep(k))
            .cloned()
            .collect();
        for k in gone {
            self.pending.remove(&k);
        }
    }

    fn touch(&mut self, key: &Key) {
        if let Some(r) = self.alerts.get(key) {
            self.changed.insert(r.alert_id.clone(), r.clone());
        }
    }

    /// Apply the complete set of conditions holding for `scope` at `now_ms`
    /// (every condition of that scope not in `conditions` is absent).
    pub fn update(
        &mut self,
        scope: &Scope,
        conditions: Vec<Condition>,
        now_ms: TimeMs,
    ) -> Vec<AlertMessage> {
        let mut out = Vec::new();
        let mut present: BTreeSet<Key> = BTreeSet::new();
        let shift_ms = min_ms(self.cfg.update_shift_min);
        let update_every_ms = min_ms(self.cfg.update_min_interval_min);
        for c in conditions {
            let key = (scope.clone(), c.rule, c.subject.clone());
            if !present.insert(key.clone()) {
                continue; // one condition per key
            }
            let settings = self.cfg.rule(c.rule);
            if let Some(rec) = self.alerts.get_mut(&key) {
                let mut changed = false;
                let mut notify = false;
                if !rec.present {
                    rec.present = true;
                    rec.absent_since_ms = None;
                    changed = true;
                    if rec.latched {
                        rec.latched = false;
                        notify = true;
                    }
                }
                let moved = match (rec.key_time_ms, c.key_time_ms) {
                    (Some(a), Some(b)) => (a - b).abs() >= shift_ms,
                    (None, None) => false,
                    _ => true,
                };
                let priority_changed = rec.base_priority != c.priority;
                let quiet = rec
                    .last_updated_ms
                    .is_some_and(|t| now_ms - t < update_every_ms);
                if priority_changed || ((moved || rec.fingerprint != c.fingerprint) && !quiet) {
                    notify = true;
                    rec.last_updated_ms = Some(now_ms);
                }
                if notify {
                    if c.priority > rec.priority {
                        rec.priority = c.priority;
                    }
                    rec.base_priority = c.priority;
                    rec.message = c.message;
                    rec.details = AlertDetails::of(c.details);
                    rec.key_time_ms = c.key_time_ms;
                    rec.fingerprint = c.fingerprint;
                    rec.model = c.model;
                    rec.assumptions = c.assumptions;
                    rec.last_phase = Phase::Updated;
                    out.push(message(rec, Phase::Updated, now_ms));
                    changed = true;
                }
                if changed {
                    self.touch(&key);
                }
                continue;
            }
            let delay = c
                .condition_delay_ms
                .unwrap_or(settings.condition_delay_s as TimeMs * 1000);
            let (since, _) = *self.pending.entry(key.clone()).or_insert((now_ms, delay));
            if now_ms - since < delay {
                continue;
            }
            self.pending.remove(&key);
            let alert_id = format!("al-{}-{}", self.next_number, since);
            self.next_number += 1;
            let rec = AlertRecord {
                alert_id: alert_id.clone(),
                scope: scope.clone(),
                rule: c.rule,
                subject: c.subject,
                base_priority: c.priority,
                priority: c.priority,
                raised_at_ms: now_ms,
                present: true,
                absent_since_ms: None,
                latched: false,
                last_notified_ms: now_ms,
                last_updated_ms: None,
                last_phase: Phase::Raised,
                acknowledged: None,
                paused_until_ms: None,
                paused: None,
                paused_total_ms: 0,
                escalations: 0,
                message: c.message,
                details: AlertDetails::of(c.details),
                key_time_ms: c.key_time_ms,
                fingerprint: c.fingerprint,
                model: c.model,
                assumptions: c.assumptions,
                cleared_at_ms: None,
            };
            out.push(message(&rec, Phase::Raised, now_ms));
            self.ids.insert(alert_id, key.clone());
            self.alerts.insert(key.clone(), rec);
            self.touch(&key);
        }
        // Pending conditions that went away raise nothing.
        self.drop_pending(scope, |k| present.contains(k));
        // Raised alerts whose condition is absent.
        let absent: Vec<Key> = self
            .in_scope(scope)
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in absent {
            let Some(rec) = self.alerts.get_mut(&key) else {
                continue;
            };
            let settings = self.cfg.rule(rec.rule);
            if rec.present {
                rec.present = false;
                rec.absent_since_ms = Some(now_ms);
                self.touch(&key);
            }
            let Some(rec) = self.alerts.get_mut(&key) else {
                continue;
            };
            let since = rec.absent_since_ms.unwrap_or(now_ms);
            if now_ms - since < settings.clear_delay_s as TimeMs * 1000 {
                continue;
            }
            if settings.latch && rec.acknowledged.is_none() {
                if !rec.latched {
                    rec.latched = true;
                    rec.last_phase = Phase::Updated;
                    rec.details.lifecycle.reason = Some("condition_ended_latched".to_owned());
                    rec.message = format!(
                        "{} — condition ended at {}; stays until acknowledged",
                        rec.message.trim_end_matches('.'),
                        format_rfc3339(since)
                    );
                    out.push(message(rec, Phase::Updated, now_ms));
                    self.touch(&key);
                }
                continue;
            }
            out.extend(self.clear(&key, now_ms, "condition_ended"));
        }
        out.extend(self.timers(scope, now_ms));
        out
    }

    fn clear(&mut self, key: &Key, now_ms: TimeMs, reason: &str) -> Option<AlertMessage> {
        let mut rec = self.alerts.remove(key)?;
        self.ids.remove(&rec.alert_id);
        rec.cleared_at_ms = Some(now_ms);
        rec.last_phase = Phase::Cleared;
        rec.present = false;
        rec.details.lifecycle.reason = Some(reason.to_owned());
        let m = message(&rec, Phase::Cleared, now_ms);
        self.changed.insert(rec.alert_id.clone(), rec);
        Some(m)
    }

    /// Escalations, re-notifications and pause ends due at `now_ms`.
    fn timers(&mut self, scope: &Scope, now_ms: TimeMs) -> Vec<AlertMessage> {
        let mut out = Vec::new();
        let keys: Vec<Key> = self.in_scope(scope).cloned().collect();
        for key in keys {
            let Some(rec) = self.alerts.get_mut(&key) else {
                continue;
            };
            let settings = self.cfg.rule(rec.rule);
            let mut changed = false;
            if let Some(until) = rec.paused_until_ms {
                if until <= now_ms {
                    rec.paused_until_ms = None;
                    if rec.acknowledged.is_none() {
                        rec.last_notified_ms = now_ms;
                        rec.last_phase = Phase::Updated;
                        let mut m = message(rec, Phase::Updated, now_ms);
                        m.details.lifecycle.reason = Some("pause_ended".to_owned());
                        out.push(m);
                    }
                    changed = true;
                }
            }
            if rec.acknowledged.is_none() && rec.paused_until_ms.is_none() {
                if let Some(every) = settings.escalate_after_min {
                    if now_ms - rec.last_notified_ms >= min_ms(every) {
                        rec.priority = rec.priority.raised();
                        rec.escalations += 1;
                        rec.last_notified_ms = now_ms;
                        rec.last_phase = Phase::Escalated;
                        let mut m = message(rec, Phase::Escalated, now_ms);
                        m.details.lifecycle.escalations = Some(rec.escalations);
                        out.push(m);
                        changed = true;
                    }
                }
            }
            if changed {
                self.touch(&key);
            }
        }
        out
    }

    /// The earliest moment the lifecycle of `scope` needs a look with no
    /// new input: a delay expiring, a clear, an escalation, a pause end.
    pub fn next_at(&self, scope: &Scope) -> Option<TimeMs> {
        let mut next: Option<TimeMs> = None;
        let mut at = |t: TimeMs| next = Some(next.map_or(t, |n| n.min(t)));
        for (_, (since, delay)) in scope_range(&self.pending, scope) {
            at(since + delay);
        }
        for key in self.in_scope(scope) {
            let Some(rec) = self.alerts.get(key) else {
                continue;
            };
            let settings = self.cfg.rule(rec.rule);
            if let Some(a) = rec.absent_since_ms {
                if !rec.latched {
                    at(a + settings.clear_delay_s as TimeMs * 1000);
                }
            }
            if let Some(p) = rec.paused_until_ms {
                at(p);
            } else if rec.acknowledged.is_none() {
                if let Some(every) = settings.escalate_after_min {
                    at(rec.last_notified_ms + min_ms(every));
                }
            }
        }
        next
    }

    /// Apply an operator command to an open alert.
    pub fn command(
        &mut self,
        alert_id: &str,
        command: &Command,
        by: &str,
        command_id: &str,
        now_ms: TimeMs,
    ) -> Result<Vec<AlertMessage>, CommandError> {
        let key = self
            .ids
            .get(alert_id)
            .cloned()
            .ok_or_else(|| CommandError::UnknownAlert(alert_id.to_owned()))?;
        let max_pause = self.cfg.max_pause_min;
        let cap_ms = min_ms(self.cfg.max_pause_per_occurrence_min);
        let Some(rec) = self.alerts.get_mut(&key) else {
            return Err(CommandError::UnknownAlert(alert_id.to_owned()));
        };
        let action = OperatorAction {
            by: by.to_owned(),
            at: format_rfc3339(now_ms),
            at_ms: now_ms,
            command_id: command_id.to_owned(),
        };
        let mut out = Vec::new();
        match command {
            Command::Acknowledge => {
                if rec.acknowledged.is_some() {
                    return Ok(out); // repeats of an ack change nothing
                }
                rec.acknowledged = Some(action);
                rec.paused_until_ms = None;
                rec.last_phase = Phase::Acknowledged;
                out.push(message(rec, Phase::Acknowledged, now_ms));
                let ends = rec.latched;
                self.touch(&key);
                if ends {
                    out.extend(self.clear(&key, now_ms, "acknowledged_after_condition_ended"));
                }
            }
            Command::Pause { minutes } => {
                // The cap is on the pause granted to this occurrence in
                // total: a renewal gets at most what is left of it, and
                // nothing left is a refusal (pause_limit).
                let left_ms = (cap_ms - rec.paused_total_ms).max(0);
                if left_ms == 0 {
                    return Err(CommandError::PauseLimit {
                        alert_id: alert_id.to_owned(),
                        paused_total_min: rec.paused_total_ms as f64 / 60_000.0,
                        cap_min: self.cfg.max_pause_per_occurrence_min,
                    });
                }
                let granted = minutes
                    .min(max_pause)
                    .min(left_ms as f64 / 60_000.0)
                    .max(0.0);
                rec.paused_total_ms += min_ms(granted);
                rec.paused_until_ms = Some(now_ms + min_ms(granted));
                rec.paused = Some(action);
                rec.last_phase = Phase::Paused;
                let mut m = message(rec, Phase::Paused, now_ms);
                m.details.lifecycle.requested_min = Some(*minutes);
                m.details.lifecycle.granted_min = Some(granted);
                m.details.lifecycle.max_pause_min = Some(max_pause);
                out.push(m);
                self.touch(&key);
            }
        }
        Ok(out)
    }

    /// Clear every alert of `scope` (a discharge): latched ones too.
    pub fn close_scope(
        &mut self,
        scope: &Scope,
        now_ms: TimeMs,
        reason: &str,
    ) -> Vec<AlertMessage> {
        self.drop_pending(scope, |_| false);
        let keys: Vec<Key> = self.in_scope(scope).cloned().collect();
        keys.iter()
            .filter_map(|k| self.clear(k, now_ms, reason))
            .collect()
    }
}

fn message(rec: &AlertRecord, phase: Phase, now_ms: TimeMs) -> AlertMessage {
    let (patient_id, device_id) = match &rec.scope {
        Scope::Patient(p) => (Some(p.clone()), None),
        Scope::Device(d) => (None, Some(d.clone())),
    };
    AlertMessage {
        alert_id: rec.alert_id.clone(),
        patient_id,
        device_id,
        rule: rec.rule,
        priority: rec.priority,
        phase,
        time: format_rfc3339(now_ms),
        message: rec.message.clone(),
        details: rec.details.clone(),
        subject: rec.subject.clone(),
        technical: rec.rule.is_technical(),
        raised_at: format_rfc3339(rec.raised_at_ms),
        model: rec.model.clone(),
        assumptions: rec.assumptions.clone(),
        acknowledged: rec.acknowledged.clone(),
        paused_until: rec.paused_until_ms.map(format_rfc3339),
        latched: rec.latched,
        condition_present: rec.present,
        time_ms: now_ms,
        scope: Some(rec.scope.clone()),
    }
}
