//! The alert engine: rules + lifecycle + timers over the tracker.
//!
//! Still pure (no clock, socket or database): the daemon calls it with
//! "now" after applying inputs, when a timer is due and for operator
//! commands, and gets back one [`AlertWrite`] — the changed alert records,
//! the lifecycle messages and the outbox rows that publish them — to commit
//! atomically. An outbox row names its scope, not a topic: the shell names
//! the topic ([`crate::contract::Topics`]). The offline ward-day run drives
//! the same engine with a virtual clock.
//!
//! Every outbox row is bounded: a scope's retained active list holds at
//! most [`ACTIVE_LIST_MAX`] alerts and [`ACTIVE_LIST_MAX_BYTES`] bytes (the
//! most important and newest; when capped every entry carries
//! `active_total` and `active_omitted`), and it is written only when it
//! changed (its content apart from the `time` stamps), not at every
//! evaluation that produced a lifecycle message.

use super::lifecycle::{Command, CommandError};
use super::rules::{self, DeviceFacts, PatientFacts};
use super::{AlertBook, AlertMessage, Scope, TimerQueue};
use super::{AlertWrite, CommandOutcome, OutboxKind, OutboxRow};
use crate::contract::{AlertCommand, AlertScope, CommandAction, ErrorCode, Rejection};
use crate::tracker::Tracker;
use crate::vocab::TimeMs;
use serde::Serialize;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

/// At most this many alerts in a scope's retained active list.
pub const ACTIVE_LIST_MAX: usize = 25;

/// At most this many bytes in a scope's retained active list (far below
/// the publisher's default `max_packet_bytes`, 1 MiB).
pub const ACTIVE_LIST_MAX_BYTES: usize = 256 * 1024;

/// Rules, lifecycle and timers, for every scope.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    book: AlertBook,
    timers: TimerQueue,
    /// Per scope, a hash of the active list last written to the outbox
    /// (without its `time` stamps); absent once written empty.
    written_active: HashMap<Scope, u64>,
}

/// One entry of the retained active list: the alert's message, and when
/// the list is capped the counts.
#[derive(Serialize)]
struct ActiveEntry<'a> {
    #[serde(flatten)]
    alert: &'a AlertMessage,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_total: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_omitted: Option<usize>,
}

/// The payload of a scope's retained active list from its open alerts
/// (`active`, in the book's order: priority, then raise time). At most
/// [`ACTIVE_LIST_MAX`] entries and [`ACTIVE_LIST_MAX_BYTES`] bytes: when
/// there are more, the highest priority and newest are kept (in the same
/// order) and each entry carries `active_total` (open alerts in all) and
/// `active_omitted` (left out).
pub fn active_list_payload(active: &[AlertMessage]) -> Result<String, serde_json::Error> {
    let total = active.len();
    // Most important first, then newest.
    let mut by_importance: Vec<usize> = (0..total).collect();
    by_importance.sort_by(|&a, &b| {
        let (x, y) = (&active[a], &active[b]);
        y.priority
            .cmp(&x.priority)
            .then_with(|| y.raised_at.cmp(&x.raised_at))
            .then_with(|| b.cmp(&a))
    });
    let mut keep = by_importance.len().min(ACTIVE_LIST_MAX);
    loop {
        let mut kept: Vec<usize> = by_importance[..keep].to_vec();
        kept.sort_unstable();
        let capped = keep < total;
        let entries: Vec<ActiveEntry<'_>> = kept
            .iter()
            .map(|&i| ActiveEntry {
                alert: &active[i],
                active_total: capped.then_some(total),
                active_omitted: capped.then_some(total - keep),
            })
            .collect();
        let payload = serde_json::to_string(&entries)?;
        if payload.len() <= ACTIVE_LIST_MAX_BYTES || keep == 0 {
            return Ok(payload);
        }
        // Too big: drop the least important; at least one less per round,
        // more when one entry is far over the budget's share.
        let per_entry = payload.len() / keep.max(1);
        let over = (payload.len() - ACTIVE_LIST_MAX_BYTES).div_ceil(per_entry.max(1));
        keep = keep.saturating_sub(over.max(1));
    }
}

/// A wake-up at or before "now" is moved this far ahead (no busy loop).
const MIN_WAKE_MS: TimeMs = 1_000;

impl AlertEngine {
    pub fn new(book: AlertBook) -> Self {
        AlertEngine {
            book,
            timers: TimerQueue::new(),
            written_active: HashMap::new(),
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
                // Out of care (stay ended, or released): no evaluation, no
                // device_silent; what was open is cleared.
                if tracker.stay_ended(pid, now_ms) {
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
            // Written only when it changed apart from its time stamps.
            let mut untimed = active.clone();
            for m in &mut untimed {
                m.time.clear();
            }
            let key = active_list_payload(&untimed).map(|p| {
                let mut h = DefaultHasher::new();
                p.hash(&mut h);
                h.finish()
            });
            if let Ok(k) = key {
                if self.written_active.get(&scope) == Some(&k) {
                    continue;
                }
            }
            match active_list_payload(&active) {
                Ok(payload) => {
                    match (key, active.is_empty()) {
                        (Ok(_), true) | (Err(_), _) => {
                            self.written_active.remove(&scope);
                        }
                        (Ok(k), false) => {
                            self.written_active.insert(scope.clone(), k);
                        }
                    }
                    outbox.push(OutboxRow {
                        scope: scope.clone(),
                        kind: OutboxKind::ActiveList,
                        payload,
                        retained: true,
                    })
                }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::alerts::details::{CappedSeqs, RuleDetails, INPUT_SEQS_MAX};
    use crate::alerts::{AlertConfig, AlertDetails, Phase, Priority, Rule};
    use serde_json::Value;

    fn alert(n: usize, priority: Priority, details: RuleDetails) -> AlertMessage {
        AlertMessage {
            alert_id: format!("al-{n}-0"),
            patient_id: Some("P-A".to_owned()),
            device_id: None,
            rule: Rule::DoseLimit,
            priority,
            phase: Phase::Raised,
            time: "2026-11-27T10:00:00Z".to_owned(),
            message: format!("alert {n}"),
            details: AlertDetails::of(details),
            subject: format!("bolus:manual:d-{n}"),
            technical: false,
            // Newer with n.
            raised_at: format!("2026-11-27T10:{:02}:{:02}Z", n / 60 % 60, n % 60),
            model: None,
            assumptions: Vec::new(),
            acknowledged: None,
            paused_until: None,
            latched: false,
            condition_present: true,
            time_ms: 0,
            scope: Some(Scope::Patient("P-A".to_owned())),
        }
    }

    fn parse(payload: &str) -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(payload).unwrap()
    }

    #[test]
    fn a_short_active_list_is_written_as_before() {
        let list: Vec<AlertMessage> = (0..3)
            .map(|n| alert(n, Priority::High, RuleDetails::default()))
            .collect();
        let payload = active_list_payload(&list).unwrap();
        assert_eq!(payload, serde_json::to_string(&list).unwrap());
        assert!(!payload.contains("active_total"));
    }

    #[test]
    fn a_long_active_list_keeps_the_most_important_and_newest_with_counts() {
        // 1,401 alerts: one medium among highs, oldest first (the book's
        // order within a priority).
        let mut list: Vec<AlertMessage> = (0..1_401)
            .map(|n| alert(n, Priority::High, RuleDetails::default()))
            .collect();
        list[0].priority = Priority::Medium;
        list.sort_by_key(|m| (std::cmp::Reverse(m.priority), m.raised_at.clone()));
        let payload = active_list_payload(&list).unwrap();
        let v = parse(&payload);
        assert_eq!(v.len(), ACTIVE_LIST_MAX);
        assert!(payload.len() <= ACTIVE_LIST_MAX_BYTES);
        for e in &v {
            assert_eq!(e["active_total"], 1_401);
            assert_eq!(e["active_omitted"], 1_401 - ACTIVE_LIST_MAX);
            assert_eq!(e["priority"], "high");
        }
        // The newest highs, in the book's order (oldest of them first).
        let ids: Vec<&str> = v.iter().map(|e| e["alert_id"].as_str().unwrap()).collect();
        let expected: Vec<String> = (1_401 - ACTIVE_LIST_MAX..1_401)
            .map(|n| format!("al-{n}-0"))
            .collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn an_active_list_over_the_byte_budget_drops_entries_until_it_fits() {
        // Entries of ~20 KiB each: 25 would be ~500 KiB.
        let big = "x".repeat(20 * 1024);
        let list: Vec<AlertMessage> = (0..30)
            .map(|n| {
                let mut m = alert(n, Priority::High, RuleDetails::default());
                m.message = big.clone();
                m
            })
            .collect();
        let payload = active_list_payload(&list).unwrap();
        assert!(payload.len() <= ACTIVE_LIST_MAX_BYTES, "{}", payload.len());
        let v = parse(&payload);
        assert!(v.len() >= 10 && v.len() < ACTIVE_LIST_MAX, "{}", v.len());
        assert_eq!(v[0]["active_total"], 30);
        assert_eq!(v[0]["active_omitted"], 30 - v.len());
    }

    #[test]
    fn unassigned_input_lists_the_newest_seqs_with_the_counts() {
        let seqs: Vec<i64> = (1..=165_000).collect();
        let c = CappedSeqs::of(&seqs);
        assert_eq!(c.seqs.len(), INPUT_SEQS_MAX);
        assert_eq!(c.seqs.first(), Some(&(165_001 - INPUT_SEQS_MAX as i64)));
        assert_eq!(c.seqs.last(), Some(&165_000));
        assert_eq!(c.total, Some(165_000));
        assert_eq!(c.omitted, Some(165_000 - INPUT_SEQS_MAX));
        let few = CappedSeqs::of(&[3, 4]);
        assert_eq!((few.seqs, few.total, few.omitted), (vec![3, 4], None, None));

        let ev = rules::evaluate_device("pump-9", &seqs, &AlertConfig::default());
        let c = &ev.conditions[0];
        let json = serde_json::to_string(&c.details).unwrap();
        assert!(json.len() < 1_024, "{json}");
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["input_seqs"].as_array().unwrap().len(), INPUT_SEQS_MAX);
        assert_eq!(v["input_seqs_total"], 165_000);
        assert_eq!(v["input_seqs_omitted"], 165_000 - INPUT_SEQS_MAX);
        assert!(
            c.message.starts_with("165000 stored input(s)"),
            "{}",
            c.message
        );
        // Stored and read back: typed, the same bytes.
        let back = RuleDetails::from_json(serde_json::from_str(&json).unwrap());
        assert!(matches!(back, RuleDetails::UnassignedDevice(_)));
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn the_active_list_is_written_only_when_it_changed() {
        let rec = crate::alerts::AlertRecord {
            alert_id: "al-1-0".to_owned(),
            scope: Scope::Patient("P-A".to_owned()),
            rule: Rule::DoseLimit,
            subject: "cumulative_24h".to_owned(),
            base_priority: Priority::High,
            priority: Priority::High,
            raised_at_ms: 1_000,
            present: true,
            absent_since_ms: None,
            latched: false,
            last_notified_ms: 1_000,
            last_updated_ms: None,
            last_phase: Phase::Raised,
            acknowledged: None,
            paused_until_ms: None,
            paused: None,
            paused_total_ms: 0,
            escalations: 0,
            message: "over".to_owned(),
            details: AlertDetails::default(),
            key_time_ms: None,
            fingerprint: String::new(),
            model: None,
            assumptions: Vec::new(),
            cleared_at_ms: None,
        };
        let book = AlertBook::restore(AlertConfig::default(), vec![rec], 2);
        let mut engine = AlertEngine::new(book);
        let msg = |t: TimeMs| {
            let mut m = alert(1, Priority::High, RuleDetails::default());
            m.time_ms = t;
            m
        };
        let actives = |w: &AlertWrite| {
            w.outbox
                .iter()
                .filter(|r| r.kind == OutboxKind::ActiveList)
                .count()
        };
        let first = engine.write(vec![msg(5_000)], Vec::new(), 5_000);
        assert_eq!(actives(&first), 1);
        assert_eq!(first.outbox.len(), 2);
        // The same list a minute later (only its time stamps differ): the
        // lifecycle message goes out, the list is not copied again.
        let again = engine.write(vec![msg(65_000)], Vec::new(), 65_000);
        assert_eq!(actives(&again), 0);
        assert_eq!(again.outbox.len(), 1);
        // A change (acknowledged) writes it.
        engine
            .book_mut()
            .command("al-1-0", &Command::Acknowledge, "rn", "c-1", 70_000)
            .unwrap();
        let acked = engine.write(vec![msg(70_000)], Vec::new(), 70_000);
        assert_eq!(actives(&acked), 1);
    }
}
