//! The alerts' tables: alert state, lifecycle messages, operator command
//! outcomes and the outbox they are published from.
//!
//! [`AlertCommit`] is one atomic unit: the changed alert records, the
//! lifecycle messages they produced and the outbox rows that publish them
//! go into the same transaction, so a message exists if and only if its
//! state change does, and survives a crash until it is published
//! ([`Reader::unpublished`], then [`WriteOp::OutboxPublished`]).
//!
//! The alert engine's [`AlertWrite`] names each outbox row's scope; the
//! `outbox` table keeps its topic, named when the write becomes an
//! [`AlertCommit`] (with the one topic builder, [`Topics`]), and its scope
//! key (the scope's lifecycle topic): rows are published in order within a
//! scope, and [`Reader::unpublished`] serves every scope's oldest rows
//! first, so one scope's backlog never holds back another's. A row the
//! broker connection refuses for good is moved to `outbox_dead_letter`
//! ([`WriteOp::OutboxDeadLetter`]).
//!
//! [`WriteOp::OutboxDeadLetter`]: super::WriteOp::OutboxDeadLetter
//!
//! [`WriteOp::OutboxPublished`]: super::WriteOp::OutboxPublished

use super::read::Reader;
use super::{ApplyError, StoreError};
use crate::alerts::report::AlertEvent;
use crate::alerts::{AlertMessage, AlertRecord, Phase, Rule, Scope};
use crate::contract::Topics;
use crate::records::{AlertWrite, CommandOutcome, OutboxKind};
use rusqlite::{params, Connection};

/// One atomic alerts write as the store commits it: the engine's
/// [`AlertWrite`] with each outbox row's topic named ([`AlertCommit::new`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertCommit {
    pub records: Vec<AlertRecord>,
    pub messages: Vec<AlertMessage>,
    pub outbox: Vec<OutboxMessage>,
    pub commands: Vec<CommandOutcome>,
    pub created_at_ms: i64,
}

/// An outbox row to store: a message and the topic it is published on.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub topic: String,
    /// The scope the row belongs to (its lifecycle topic): the order of
    /// publishing is kept within a scope.
    pub scope_key: String,
    pub payload: String,
    pub retained: bool,
}

impl AlertCommit {
    /// `write`, its outbox rows' topics named under `topics`: a lifecycle
    /// message on its scope's `…/alerts`, an active list on
    /// `…/alerts/active`. (Its `unserialisable` notes are not stored: the
    /// caller logs them.)
    pub fn new(write: AlertWrite, topics: &Topics) -> AlertCommit {
        let outbox = write
            .outbox
            .into_iter()
            .map(|row| OutboxMessage {
                topic: match row.kind {
                    OutboxKind::Message => topics.alerts(&row.scope),
                    OutboxKind::ActiveList => topics.alerts_active(&row.scope),
                },
                scope_key: topics.alerts(&row.scope),
                payload: row.payload,
                retained: row.retained,
            })
            .collect();
        AlertCommit {
            records: write.records,
            messages: write.messages,
            outbox,
            commands: write.commands,
            created_at_ms: write.created_at_ms,
        }
    }
}

/// An outbox row waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingPublish {
    pub id: i64,
    pub topic: String,
    /// Its scope (order is kept within a scope); rows stored before scope
    /// keys were have their topic here.
    pub scope_key: String,
    pub payload: String,
    pub retained: bool,
}

/// An outbox row to move to `outbox_dead_letter`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub reason: String,
}

/// The number in an alert id (`al-{number}-{since}`).
pub(super) fn alert_number(alert_id: &str) -> Option<u64> {
    alert_id
        .strip_prefix("al-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn scope_parts(scope: &Scope) -> (&'static str, &str) {
    match scope {
        Scope::Patient(p) => ("patient", p.as_str()),
        Scope::Device(d) => ("device", d.as_str()),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, ApplyError> {
    serde_json::to_string(v)
        .map_err(|e| ApplyError::Op(StoreError::InvalidRecord(format!("alert JSON: {e}"))))
}

pub(super) fn apply_alerts(conn: &Connection, w: &AlertCommit) -> Result<(), ApplyError> {
    for r in &w.records {
        let (kind, id) = scope_parts(&r.scope);
        conn.prepare_cached(
            "INSERT INTO alert_state (alert_id, number, scope_kind, scope_id, rule, subject, open,
                                      raised_at_ms, cleared_at_ms, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (alert_id) DO UPDATE SET open = excluded.open,
                 cleared_at_ms = excluded.cleared_at_ms, record = excluded.record",
        )?
        .execute(params![
            r.alert_id,
            alert_number(&r.alert_id).unwrap_or(0) as i64,
            kind,
            id,
            r.rule.as_str(),
            r.subject,
            r.cleared_at_ms.is_none(),
            r.raised_at_ms,
            r.cleared_at_ms,
            json(r)?,
        ])?;
    }
    for m in &w.messages {
        conn.prepare_cached(
            "INSERT INTO alert_events (alert_id, patient_id, device_id, rule, phase, priority,
                                       time_ms, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            m.alert_id,
            m.patient_id,
            m.device_id,
            m.rule.as_str(),
            m.phase.as_str(),
            m.priority.as_str(),
            m.time_ms,
            json(m)?,
        ])?;
    }
    for o in &w.outbox {
        conn.prepare_cached(
            "INSERT INTO outbox (topic, payload, retained, qos, created_at_ms, scope_key)
             VALUES (?1, ?2, ?3, 1, ?4, ?5)",
        )?
        .execute(params![
            o.topic,
            o.payload,
            o.retained,
            w.created_at_ms,
            o.scope_key
        ])?;
    }
    for c in &w.commands {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO alert_commands (input_seq, alert_id, action, by, applied, outcome, time_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            c.input_seq,
            c.alert_id,
            c.action,
            c.by,
            c.applied,
            c.outcome,
            c.time_ms
        ])?;
    }
    Ok(())
}

pub(super) fn mark_published(conn: &Connection, ids: &[i64], at_ms: i64) -> Result<(), ApplyError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE outbox SET published_at_ms = ?2 WHERE id = ?1 AND published_at_ms IS NULL",
    )?;
    for id in ids {
        stmt.execute(params![id, at_ms])?;
    }
    Ok(())
}

/// Move outbox rows to `outbox_dead_letter` (copied, then deleted from the
/// outbox; a row already moved or published is left alone).
pub(super) fn dead_letter(
    conn: &Connection,
    rows: &[DeadLetter],
    at_ms: i64,
) -> Result<(), ApplyError> {
    for r in rows {
        let moved = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox_dead_letter (outbox_id, topic, scope_key, payload,
                     retained, created_at_ms, moved_at_ms, payload_bytes, reason)
                 SELECT id, topic, scope_key, payload, retained, created_at_ms, ?2,
                        length(CAST(payload AS BLOB)), ?3
                 FROM outbox WHERE id = ?1 AND published_at_ms IS NULL",
            )?
            .execute(params![r.id, at_ms, r.reason])?;
        if moved > 0 {
            conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                .execute([r.id])?;
        }
    }
    Ok(())
}

impl Reader {
    /// Every open alert's record.
    pub fn open_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT alert_id, record FROM alert_state WHERE open = 1 ORDER BY number",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text) = row?;
            let rec: AlertRecord = serde_json::from_str(&text).map_err(|e| {
                StoreError::InvalidRecord(format!("alert {id}: stored record does not parse: {e}"))
            })?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Sequence numbers of stored operator commands the alert lifecycle has
    /// not recorded an outcome for (a crash came in between): they are
    /// applied at start.
    pub fn unapplied_commands(&self) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq FROM inputs WHERE source_kind = 'alert'
               AND seq NOT IN (SELECT input_seq FROM alert_commands) ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The highest alert number ever used (0 if none).
    pub fn max_alert_number(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT coalesce(max(number), 0) FROM alert_state",
            [],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Every topic an outbox row was (or is to be) published on retained:
    /// the active lists (to clear them, e.g. after the demo).
    pub fn retained_alert_topics(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT topic FROM outbox WHERE retained = 1 ORDER BY topic",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Outbox rows not yet published: at most `per_scope` of each scope
    /// (its oldest) and `limit` in all, every scope's oldest row before any
    /// scope's second, returned in id order (the order within each scope).
    pub fn unpublished(
        &self,
        limit: usize,
        per_scope: usize,
    ) -> Result<Vec<PendingPublish>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "WITH ranked AS (
                 SELECT id, row_number() OVER (PARTITION BY scope_key ORDER BY id) AS n
                 FROM outbox WHERE published_at_ms IS NULL),
             chosen AS (SELECT id FROM ranked WHERE n <= ?2 ORDER BY n, id LIMIT ?1)
             SELECT o.id, o.topic, coalesce(o.scope_key, o.topic), o.payload, o.retained
             FROM chosen c JOIN outbox o ON o.id = c.id ORDER BY o.id",
        )?;
        let rows = stmt.query_map([limit as i64, per_scope as i64], |r| {
            Ok(PendingPublish {
                id: r.get(0)?,
                topic: r.get(1)?,
                scope_key: r.get(2)?,
                payload: r.get(3)?,
                retained: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many outbox rows were moved to `outbox_dead_letter` (ever).
    pub fn outbox_dead_letters(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM outbox_dead_letter", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How many outbox rows are not yet marked published.
    pub fn outbox_pending(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE published_at_ms IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Lifecycle messages of the alerts raised in `[from_ms, to_ms)`.
    pub fn alert_events(&self, from_ms: i64, to_ms: i64) -> Result<Vec<AlertEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.alert_id, e.rule, e.phase, e.time_ms FROM alert_events e
             WHERE e.alert_id IN (SELECT alert_id FROM alert_events
                                  WHERE phase = 'raised' AND time_ms >= ?1 AND time_ms < ?2)
             ORDER BY e.seq",
        )?;
        let rows = stmt.query_map(params![from_ms, to_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (alert_id, rule, phase, time_ms) = row?;
            let (Some(rule), Some(phase)) = (Rule::from_name(&rule), phase_from(&phase)) else {
                continue;
            };
            out.push(AlertEvent {
                alert_id,
                rule,
                phase,
                time_ms,
            });
        }
        Ok(out)
    }

    /// Every stored lifecycle message (JSON payloads), in order.
    pub fn alert_messages(&self, patient_id: Option<&str>) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT payload FROM alert_events WHERE ?1 IS NULL OR patient_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([patient_id], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Patient-days tracked within `[from_ms, to_ms)` (admission to
    /// discharge, or to the end of the window).
    pub fn patient_days(&self, from_ms: i64, to_ms: i64) -> Result<f64, StoreError> {
        let ms: f64 = self.conn.query_row(
            "SELECT coalesce(sum(max(0, min(coalesce(discharged_at_ms, ?2), ?2)
                                     - max(first_admitted_at_ms, ?1))), 0)
             FROM patients",
            params![from_ms, to_ms],
            |r| r.get::<_, f64>(0),
        )?;
        Ok(ms / 86_400_000.0)
    }
}

fn phase_from(s: &str) -> Option<Phase> {
    [
        Phase::Raised,
        Phase::Updated,
        Phase::Escalated,
        Phase::Acknowledged,
        Phase::Paused,
        Phase::Cleared,
    ]
    .into_iter()
    .find(|p| p.as_str() == s)
}
