//! The ward's read models for the HTTP API and pages (`src/service/api.rs`,
//! `src/service/live.rs`, `src/service/acknowledge.rs`): each patient's
//! current stay start and last input time, the published states and
//! lifecycle messages changed since a mark (what the live stream forwards),
//! a patient's open and past alerts, and what became of a command the ward
//! page sent. All on a read-only [`Reader`] (WAL: never blocks the writer);
//! each method is one or two statements.

use super::read::Reader;
use super::StoreError;
use rusqlite::{params, OptionalExtension};

/// A published state's change mark: its time and length (a republish or a
/// new state changes one of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMark {
    pub patient_id: String,
    pub time_ms: i64,
    pub payload_len: i64,
}

/// A stored alert lifecycle message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMessageRow {
    pub seq: i64,
    pub patient_id: Option<String>,
    pub time_ms: i64,
    /// The message as published (JSON).
    pub payload: String,
}

/// What became of an operator command put into intake by the daemon
/// itself (the ward page's acknowledge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandFate {
    /// Neither stored nor rejected yet, or stored and not yet applied.
    Pending,
    /// Stored and applied by the alert lifecycle: `applied` false when it
    /// changed nothing (no open alert of that id), `outcome` says why.
    Done { applied: bool, outcome: String },
    /// Refused at intake (stored in `rejected`).
    Rejected { code: String, message: String },
}

impl Reader {
    /// The highest `rejected` row so far (0 for none): rows after it are
    /// the ones a command sent now may have produced.
    pub fn rejected_mark(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM rejected", [], |r| {
                r.get(0)
            })?)
    }

    /// What became of the command `command_id` on alert `alert_id` (sent
    /// on `topic` with exactly `payload`): its outcome once applied, the
    /// rejection (a row after `rejected_after`) if refused.
    pub fn command_fate(
        &self,
        topic: &str,
        alert_id: &str,
        command_id: &str,
        payload: &[u8],
        rejected_after: i64,
    ) -> Result<CommandFate, StoreError> {
        let done = self
            .conn
            .query_row(
                "SELECT c.applied, c.outcome FROM inputs i JOIN alert_commands c ON c.input_seq = i.seq
                  WHERE i.source_kind = 'alert' AND i.source_id = ?1 AND i.input_id = ?2",
                params![alert_id, command_id],
                |r| Ok((r.get::<_, i64>(0)? != 0, r.get::<_, String>(1)?)),
            )
            .optional()?;
        if let Some((applied, outcome)) = done {
            return Ok(CommandFate::Done { applied, outcome });
        }
        let rejected = self
            .conn
            .query_row(
                "SELECT code, message FROM rejected WHERE seq > ?1 AND topic = ?2 AND payload = ?3
                  ORDER BY seq LIMIT 1",
                params![rejected_after, topic, payload],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?;
        Ok(match rejected {
            Some((code, message)) => CommandFate::Rejected { code, message },
            None => CommandFate::Pending,
        })
    }

    /// Is `patient_id` known to the store (ever admitted)?
    pub fn patient_known(&self, patient_id: &str) -> Result<bool, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM patients WHERE patient_id = ?1",
            [patient_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// When the patient's current (or last) stay began: the occurrence
    /// time of their last admit.
    pub fn stay_start_ms(&self, patient_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT i.occurred_at_ms FROM patients AS p JOIN inputs AS i
                   ON i.seq = p.last_admit_seq WHERE p.patient_id = ?1",
                [patient_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The occurrence time of the patient's latest input: their own inputs
    /// and the last word of every device whose latest association is the
    /// patient (both through indexes).
    pub fn last_input_ms(&self, patient_id: &str) -> Result<Option<i64>, StoreError> {
        let t: Option<i64> = self.conn.query_row(
            "SELECT max(t) FROM (
               SELECT max(occurred_at_ms) AS t FROM inputs WHERE patient_id = ?1
               UNION ALL
               SELECT max(d.last_heard_ms) FROM devices AS d
                WHERE (SELECT a.patient_id FROM device_associations AS a
                        WHERE a.device_id = d.device_id
                        ORDER BY a.from_ms DESC, a.input_seq DESC LIMIT 1) = ?1
                  AND d.device_id IN (SELECT device_id FROM device_associations
                                       WHERE patient_id = ?1))",
            [patient_id],
            |r| r.get(0),
        )?;
        Ok(t)
    }

    /// Every published state's change mark.
    pub fn state_marks(&self) -> Result<Vec<StateMark>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT patient_id, time_ms, length(payload) FROM published_state ORDER BY patient_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StateMark {
                patient_id: r.get(0)?,
                time_ms: r.get(1)?,
                payload_len: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last published state of one patient (its JSON text).
    pub fn published_state(&self, patient_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT payload FROM published_state WHERE patient_id = ?1",
                [patient_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The highest lifecycle message sequence number (0 if none).
    pub fn last_alert_message_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM alert_events", [], |r| {
                r.get(0)
            })?)
    }

    /// Lifecycle messages after `after_seq`, at most `limit`, in order.
    pub fn alert_messages_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AlertMessageRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, patient_id, time_ms, payload FROM alert_events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_seq, limit as i64], alert_message)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A patient's lifecycle messages from `from_ms` on, in order (the
    /// alert timeline), the last `limit` of them.
    pub fn patient_alert_messages(
        &self,
        patient_id: &str,
        from_ms: i64,
        limit: usize,
    ) -> Result<Vec<AlertMessageRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT * FROM (SELECT seq, patient_id, time_ms, payload FROM alert_events
                            WHERE patient_id = ?1 AND time_ms >= ?2 ORDER BY seq DESC LIMIT ?3)
             ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![patient_id, from_ms, limit as i64], alert_message)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn alert_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertMessageRow> {
    Ok(AlertMessageRow {
        seq: r.get(0)?,
        patient_id: r.get(1)?,
        time_ms: r.get(2)?,
        payload: r.get(3)?,
    })
}
