//! The alert engine: rules + lifecycle + timers over the tracker.
//!
//! Still pure (no clock, socket or database): the daemon calls it with
//! "now" after applying inputs, when a timer is due and for operator
//! commands, and gets back one [`AlertWrite`] — the changed alert records,
//! the lifecycle messages and the outbox rows that publish them — to commit
//! atomically. An outbox row names its scope, not a topic: the shell names
//! the topic ([`crate::contract::Topics`]). The offline ward-day run drives
//! the same engine with a virtual clock.

use super::lifecycle::{Command, CommandError};
use super::rules::{self, DeviceFacts, PatientFacts};
use super::{AlertBook, AlertMessage, Scope, TimerQueue};
use super::{AlertWrite, CommandOutcome, OutboxKind, OutboxRow};
use crate::contract::{AlertCommand, AlertScope, CommandAction, ErrorCode, Rejection};
use crate::tracker::Tracker;
use crate::vocab::TimeMs;
use std::collections::BTreeSet;

/// Rules, lifecycle and timers, for every scope.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    book: AlertBook,
    timers: TimerQueue,
}

/// A wake-up at or before "now" is moved this far ahead (no busy loop).
const MIN_WAKE_MS: TimeMs = 1_000;

impl AlertEngine {
    pub fn new(book: AlertBook) -> Self {
        AlertEngine {
            book,
            timers: TimerQueue::new(),
        }
    }

    pub fn book(&self) -> &AlertBook {
        &self.book
    }

    pub fn book_mut(&mut self) -> &mut AlertBook {
        &mut self.book
    }

    /// The earliest timer.
    pub fn next_wake(&self) -> Option<TimeMs> {
        self.timers.next()
    }

    /// Scopes whose timer is due (removed from the queue; evaluating them
    /// sets their next one).
    pub fn due(&mut self, now_ms: TimeMs) -> BTreeSet<Scope> {
        self.timers.pop_due(now_ms).into_iter().collect()
    }

    /// Every scope worth evaluating at start: tracked patients, patients
    /// with unassigned doses, devices with unassigned events, and every
    /// scope with an open alert.
    pub fn all_scopes(&self, tracker: &Tracker, now_ms: TimeMs) -> BTreeSet<Scope> {
        let mut s: BTreeSet<Scope> = tracker
            .tracked(now_ms)
            .into_iter()
            .map(Scope::Patient)
            .collect();
        s.extend(
            tracker
                .orphan_patients()
                .map(|p| Scope::Patient(p.to_owned())),
        );
        s.extend(
            tracker
                .device_ids()
                .filter(|d| !tracker.unowned_seqs(d).is_empty())
                .map(|d| Scope::Device(d.to_owned())),
        );
        s.extend(self.book.scopes());
        s
    }

    /// Evaluate `scopes` at `now_ms`.
    pub fn evaluate(
        &mut self,
        tracker: &mut Tracker,
        scopes: &BTreeSet<Scope>,
        now_ms: TimeMs,
    ) -> AlertWrite {
        let mut messages = Vec::new();
        for scope in scopes {
            messages.extend(self.evaluate_one(tracker, scope, now_ms));
        }
        self.write(messages, Vec::new(), now_ms)
    }

    fn evaluate_one(
        &mut self,
        tracker: &mut Tracker,
        scope: &Scope,
        now_ms: TimeMs,
    ) -> Vec<AlertMessage> {
        let cfg = self.book.config().clone();
        let evaluation = match scope {
            Scope::Patient(pid) => {
                if tracker.discharged_at(pid).is_some_and(|t| t <= now_ms) {
                    self.timers.set(scope, None);
                    return self.book.close_scope(scope, now_ms, "discharged");
                }
                let derived = tracker.derived(pid);
                let devices: Vec<DeviceFacts> = derived
                    .as_deref()
                    .map(|d| {
                        let ids: BTreeSet<&str> = d
                            .ledger
                            .deliveries
                            .iter()
                            .filter_map(|del| del.source.strip_prefix("devices/"))
                            .collect();
                        ids.into_iter()
                            .filter_map(|id| {
                                tracker.last_heard(id).map(|t| DeviceFacts {
                                    device_id: id.to_owned(),
                                    last_heard_ms: t,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let orphans = tracker.orphan_seqs(pid);
                let refused = tracker.refused_events(pid, now_ms);
                let tc = tracker.config();
                let facts = PatientFacts {
                    patient_id: pid,
                    derived: derived.as_deref(),
                    discharged: false,
                    devices: &devices,
                    orphan_inputs: &orphans,
                    refused: &refused,
                    device_stale_after_ms: tc.device_stale_after_ms,
                    horizon_ms: tc.forecast_horizon_ms,
                };
                let book = &self.book;
                let active = |rule, subject: &str| book.is_active(scope, rule, subject);
                rules::evaluate(&facts, &cfg, now_ms, &active)
            }
            Scope::Device(device_id) => {
                rules::evaluate_device(device_id, &tracker.unowned_seqs(device_id), &cfg)
            }
        };
        let messages = self.book.update(scope, evaluation.conditions, now_ms);
        let next = [evaluation.next_at_ms, self.book.next_at(scope)]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(now_ms + MIN_WAKE_MS));
        self.timers.set(scope, next);
        messages
    }

    /// Apply an operator command (stored as input `input_seq`).
    pub fn command(
        &mut self,
        input_seq: i64,
        alert_id: &str,
        cmd: &AlertCommand,
        now_ms: TimeMs,
    ) -> AlertWrite {
        let (command, action) = match cmd.action {
            CommandAction::Acknowledge => (Command::Acknowledge, "acknowledge"),
            CommandAction::Pause { minutes } => (Command::Pause { minutes }, "pause"),
        };
        let scope = self.book.get(alert_id).map(|r| r.scope.clone());
        let mut refused = None;
        let (messages, applied, outcome) = match self
            .book
            .command(alert_id, &command, &cmd.by, &cmd.id, now_ms)
        {
            Ok(m) => {
                let outcome = if m.is_empty() {
                    "no change (already in that state)".to_owned()
                } else {
                    m.iter()
                        .map(|x| x.phase.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                (m, true, outcome)
            }
            Err(e @ CommandError::PauseLimit { .. }) => {
                let r = Rejection::new(ErrorCode::PauseLimit, Some("minutes"), e.to_string());
                let outcome = format!("{}: {}", r.code, r.message);
                refused = Some(r);
                (Vec::new(), false, outcome)
            }
            Err(e) => (Vec::new(), false, e.to_string()),
        };
        if let Some(scope) = scope {
            let next = self
                .book
                .next_at(&scope)
                .map(|t| t.max(now_ms + MIN_WAKE_MS));
            // Keep an earlier timer set by the rules.
            let keep = self.timers_at(&scope);
            self.timers
                .set(&scope, [next, keep].into_iter().flatten().min());
        }
        let outcome = CommandOutcome {
            input_seq,
            alert_id: alert_id.to_owned(),
            action: action.to_owned(),
            by: cmd.by.clone(),
            applied,
            outcome,
            time_ms: now_ms,
            refused,
        };
        self.write(messages, vec![outcome], now_ms)
    }

    fn timers_at(&self, scope: &Scope) -> Option<TimeMs> {
        self.timers.at(scope)
    }

    fn write(
        &mut self,
        messages: Vec<AlertMessage>,
        commands: Vec<CommandOutcome>,
        now_ms: TimeMs,
    ) -> AlertWrite {
        let mut outbox = Vec::new();
        let mut unserialisable = Vec::new();
        let mut scopes = BTreeSet::new();
        for m in &messages {
            let Some(scope) = m.scope.clone() else {
                continue;
            };
            match serde_json::to_string(m) {
                Ok(payload) => outbox.push(OutboxRow {
                    scope: scope.clone(),
                    kind: OutboxKind::Message,
                    payload,
                    retained: false,
                }),
                Err(e) => unserialisable.push(format!("alert {}: {e}", m.alert_id)),
            }
            scopes.insert(scope);
        }
        for scope in scopes {
            let active = self.book.active(&scope, now_ms);
            match serde_json::to_string(&active) {
                Ok(payload) => outbox.push(OutboxRow {
                    scope: scope.clone(),
                    kind: OutboxKind::ActiveList,
                    payload,
                    retained: true,
                }),
                Err(e) => unserialisable.push(format!("active alerts of {scope}: {e}")),
            }
        }
        AlertWrite {
            records: self.book.take_changes(),
            messages,
            outbox,
            commands,
            created_at_ms: now_ms,
            unserialisable,
        }
    }
}

/// A scope's alert topics are the patient's or the device's
/// ([`crate::contract::Topics::alerts`]).
impl<'a> From<&'a Scope> for AlertScope<'a> {
    fn from(scope: &'a Scope) -> AlertScope<'a> {
        match scope {
            Scope::Patient(p) => AlertScope::Patient(p),
            Scope::Device(d) => AlertScope::Device(d),
        }
    }
}
