//! The daemon's technical problems: what is wrong with the daemon itself
//! (not with a patient) right now, for operators.
//!
//! This module owns the set of current problems ([`Health`]), their codes
//! ([`ProblemCode`]), the online status payload that carries them
//! ([`online_status`]) and the task that republishes it as they change
//! ([`publish_problems`]). A database problem is raised by any failing write
//! the daemon sees (inputs, alerts, derived state, history) and cleared by
//! the next input write that succeeds (the daemon's write retry loop);
//! `database_replaced` (the file deleted or replaced under the daemon: no
//! write succeeds again), `stored_inputs_unreadable` (raised once at
//! start, [`Health::raise`]) and `alerts_undeliverable` (the outbox moved
//! an alert message the broker connection refuses to the dead-letter
//! table) last until a restart. Every
//! change is logged once (`error!` when raised, `info!` when cleared),
//! shown on the systemd `STATUS=` line ([`crate::service::systemd`]) and published
//! as the retained `{prefix}/v1/status` message, `"state": "online"` with a
//! `problems` array (empty when all is well; see `docs/mqtt-api.md`).
//! `state` keeps its contract meaning: the daemon runs and is connected.

use crate::mqtt::Publisher;
use crate::store::StoreError;
use crate::vocab::{format_rfc3339, TimeMs};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// What kind of technical problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
// The variants spell the status's wire codes (`database_locked`, …).
#[allow(clippy::enum_variant_names)]
pub enum ProblemCode {
    /// The database is locked by another process beyond the busy timeout
    /// (SQLITE_BUSY / SQLITE_LOCKED): inputs are not stored, so not
    /// acknowledged; the writes are retried.
    DatabaseLocked,
    /// The disk (or the database's size limit) is full (SQLITE_FULL).
    DatabaseFull,
    /// Another database write failure (I/O error, …).
    DatabaseWriteFailing,
    /// The database file was deleted or replaced while the daemon ran:
    /// nothing more is stored or acknowledged until a restart.
    DatabaseReplaced,
    /// Stored inputs no longer parse at start (not applied: the patients
    /// they concern are not tracked as recorded). Until a restart.
    StoredInputsUnreadable,
    /// An alert message could not be published (larger than
    /// `max_packet_bytes`, …): moved to the `outbox_dead_letter` table
    /// instead of being retried ahead of every other alert. Until a
    /// restart.
    AlertsUndeliverable,
}

impl ProblemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::DatabaseLocked => "database_locked",
            ProblemCode::DatabaseFull => "database_full",
            ProblemCode::DatabaseWriteFailing => "database_write_failing",
            ProblemCode::DatabaseReplaced => "database_replaced",
            ProblemCode::StoredInputsUnreadable => "stored_inputs_unreadable",
            ProblemCode::AlertsUndeliverable => "alerts_undeliverable",
        }
    }

    /// The database problem a failed write shows.
    pub fn of_store_error(e: &StoreError) -> ProblemCode {
        use rusqlite::ErrorCode as C;
        if matches!(e, StoreError::Replaced { .. }) {
            return ProblemCode::DatabaseReplaced;
        }
        match e.sqlite_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => ProblemCode::DatabaseLocked,
            Some(C::DiskFull) => ProblemCode::DatabaseFull,
            _ => ProblemCode::DatabaseWriteFailing,
        }
    }

    fn is_database(self) -> bool {
        matches!(
            self,
            ProblemCode::DatabaseLocked
                | ProblemCode::DatabaseFull
                | ProblemCode::DatabaseWriteFailing
                | ProblemCode::DatabaseReplaced
        )
    }
}

/// One current problem, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: ProblemCode,
    /// When it began, RFC 3339 UTC.
    pub since: String,
    /// For people: what failed and what the daemon does about it.
    pub message: String,
}

/// The current problems, shared by the daemon's tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    tx: Arc<watch::Sender<BTreeMap<ProblemCode, Problem>>>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            tx: Arc::new(watch::channel(BTreeMap::new()).0),
        }
    }

    /// A database write failed with `e` at `now_ms`: raise the matching
    /// database problem (replacing another database problem). Logged when
    /// it is new; a repeat of the same code keeps its `since`.
    pub fn database_failing(&self, e: &StoreError, now_ms: TimeMs) {
        let code = ProblemCode::of_store_error(e);
        let message = match code {
            ProblemCode::DatabaseReplaced => {
                format!("{e}; inputs are not acknowledged (the broker keeps them for the next run)")
            }
            _ => format!(
                "database write failing ({e}); inputs are not acknowledged and the write is retried"
            ),
        };
        self.tx.send_if_modified(|p| {
            if p.contains_key(&code) {
                return false;
            }
            p.retain(|c, _| !c.is_database());
            error!(problem = code.as_str(), error = %e, "technical problem raised: database writes failing; inputs are not acknowledged until they can be stored");
            p.insert(
                code,
                Problem {
                    code,
                    since: format_rfc3339(now_ms),
                    message,
                },
            );
            true
        });
    }

    /// Raise a problem that stays until the daemon restarts (not a
    /// database write problem): logged at error once.
    pub fn raise(&self, code: ProblemCode, message: String, now_ms: TimeMs) {
        self.tx.send_if_modified(|p| {
            if p.contains_key(&code) {
                return false;
            }
            error!(problem = code.as_str(), message = %message, "technical problem raised");
            p.insert(
                code,
                Problem {
                    code,
                    since: format_rfc3339(now_ms),
                    message,
                },
            );
            true
        });
    }

    /// A database write succeeded: clear any database problem.
    pub fn database_ok(&self) {
        self.tx.send_if_modified(|p| {
            let before = p.len();
            p.retain(|c, _| !c.is_database());
            let cleared = p.len() != before;
            if cleared {
                info!("technical problem cleared: database writes succeed again");
            }
            cleared
        });
    }

    /// The current problems, by code.
    pub fn problems(&self) -> Vec<Problem> {
        self.tx.borrow().values().cloned().collect()
    }

    /// Wakes on every change of the set.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<ProblemCode, Problem>> {
        self.tx.subscribe()
    }
}

/// The retained online status with the current problems.
pub(super) fn online_status(started_at: &str, problems: &[Problem]) -> String {
    serde_json::json!({
        "state": "online",
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": started_at,
        "problems": problems,
    })
    .to_string()
}

/// Republish the retained online status whenever the set of technical
/// problems changes, until `stop`.
pub(super) async fn publish_problems(
    health: Health,
    publisher: Publisher,
    started_at: String,
    stop: CancellationToken,
) {
    let mut changes = health.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return; },
        }
        let problems = health.problems();
        let payload = online_status(&started_at, &problems);
        if let Err(e) = publisher.set_online(payload.into_bytes()).await {
            warn!(error = %e, "status with the technical problems not published");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn failed(code: rusqlite::ErrorCode) -> StoreError {
        StoreError::BatchFailed {
            stage: "commit",
            batch_len: 1,
            code: Some(code),
            message: "x".into(),
        }
    }

    #[test]
    fn raised_once_replaced_and_cleared() {
        let h = Health::new();
        let mut rx = h.subscribe();
        h.database_failing(&failed(rusqlite::ErrorCode::DatabaseBusy), 1_000);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let p = h.problems();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].code, ProblemCode::DatabaseLocked);
        assert_eq!(p[0].since, "1970-01-01T00:00:01Z");
        // The same again: no change, `since` kept.
        h.database_failing(&failed(rusqlite::ErrorCode::DatabaseBusy), 9_000);
        assert!(!rx.has_changed().unwrap());
        // Another database problem replaces it.
        h.database_failing(&failed(rusqlite::ErrorCode::DiskFull), 9_000);
        assert_eq!(h.problems().len(), 1);
        assert_eq!(h.problems()[0].code, ProblemCode::DatabaseFull);
        rx.borrow_and_update();
        h.database_ok();
        assert!(rx.has_changed().unwrap());
        assert!(h.problems().is_empty());
        let v: serde_json::Value =
            serde_json::from_str(&online_status("2026-01-01T00:00:00Z", &[])).unwrap();
        assert_eq!(v["state"], "online");
        assert_eq!(v["problems"], serde_json::json!([]));
    }
}
