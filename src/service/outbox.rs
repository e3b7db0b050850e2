//! The outbox publisher: alert messages go out from the `outbox` table.
//!
//! Alert lifecycle messages and active lists are committed to the outbox
//! in the same transaction as the alert state they come from
//! ([`crate::store::AlertCommit`]). This task publishes the unpublished rows,
//! each confirmed by the broker's PUBACK, and then marks them published. A
//! crash or a broker outage in between loses nothing: at the next start (or
//! reconnect) the rows still unmarked are published again — at least once,
//! so consumers dedupe on `alert_id` and `phase`.
//!
//! Order is kept within a scope (a patient's or a device's alert topics),
//! not across scopes: each round takes every scope's oldest rows first
//! ([`SCOPE_ROUND_MAX`] at most per scope, [`ROUND_MAX`] in all), and a
//! row that fails only holds back the later rows of its own scope. A row
//! the broker connection refuses for good (larger than `max_packet_bytes`,
//! a topic that cannot be published) is never retried: it is moved to the
//! `outbox_dead_letter` table, logged at error, counted
//! (`dosetrack_outbox_dead_letter_total`) and raised as the technical
//! problem `alerts_undeliverable` (status and `/healthz`).
//!
//! The rows carry their topics, named by stage B when it committed them
//! ([`crate::contract::Topics`]); a row is marked published at the daemon
//! clock's time. The failpoints `outbox_before_publish` and
//! `outbox_refuse_retained` ([`crate::service::failpoint`]) are here.

use crate::clock::Clock;
use crate::mqtt::{MqttError, Publisher};
use crate::service::failpoint::{Failpoint, Failpoints};
use crate::service::health::{Health, ProblemCode};
use crate::service::metrics::Metrics;
use crate::store::{DeadLetter, PendingPublish, Reader, StoreError, WriteOp, Writer};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// Rows published per round.
const ROUND_MAX: usize = 256;
/// Rows of one scope published per round.
const SCOPE_ROUND_MAX: usize = 32;
/// How long one publish may wait for its PUBACK before the round is retried.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Wakes the outbox task after a commit.
#[derive(Debug, Clone)]
pub(super) struct OutboxHandle {
    notify: Arc<Notify>,
}

impl OutboxHandle {
    /// New rows were committed.
    pub(super) fn wake(&self) {
        self.notify.notify_one();
    }
}

/// What the outbox task works with.
pub(super) struct OutboxTask {
    pub database: PathBuf,
    pub writer: Writer,
    pub publisher: Publisher,
    pub stop: CancellationToken,
    pub failpoints: Failpoints,
    pub clock: Clock,
    pub health: Health,
    pub metrics: Arc<Metrics>,
}

/// A refusal that no retry can change: the row is moved aside.
fn refused_for_good(e: &MqttError) -> bool {
    matches!(
        e,
        MqttError::TooLarge { .. } | MqttError::InvalidTopic { .. }
    )
}

/// Move `dead` to the dead-letter table: logged, counted, raised. `false`
/// if the write failed (the rows stay in the outbox, refused again next
/// round).
async fn move_aside(t: &OutboxTask, dead: Vec<(PendingPublish, String)>) -> bool {
    let rows: Vec<DeadLetter> = dead
        .iter()
        .map(|(row, reason)| DeadLetter {
            id: row.id,
            reason: reason.clone(),
        })
        .collect();
    let n = rows.len() as u64;
    let now_ms = t.clock.now_ms();
    match t
        .writer
        .write(WriteOp::OutboxDeadLetter {
            rows,
            at_ms: now_ms,
        })
        .await
    {
        Ok(_) => {
            for (row, reason) in &dead {
                error!(
                    outbox_id = row.id,
                    topic = %row.topic,
                    scope = %row.scope_key,
                    payload_bytes = row.payload.len(),
                    retained = row.retained,
                    reason = %reason,
                    "alert message cannot be published: moved to the outbox_dead_letter table (not retried; other alerts go on)"
                );
            }
            t.metrics.outbox_dead_lettered(n);
            t.health.raise(
                ProblemCode::AlertsUndeliverable,
                format!(
                    "alert message(s) could not be published and were moved to the outbox_dead_letter table (first: {} on {}); see dosetrack_outbox_dead_letter_total and the log",
                    dead.first().map_or("", |(_, r)| r.as_str()),
                    dead.first().map_or("", |(row, _)| row.topic.as_str()),
                ),
                now_ms,
            );
            true
        }
        Err(e) => {
            warn!(error = %e, rows = n, "unpublishable alert rows not moved to the dead-letter table; retried");
            false
        }
    }
}

/// Start the outbox task; it runs until `stop`, then makes one bounded last
/// attempt to publish what is left.
pub(super) fn spawn_outbox(t: OutboxTask) -> (OutboxHandle, JoinHandle<Result<u64, StoreError>>) {
    let notify = Arc::new(Notify::new());
    let handle = OutboxHandle {
        notify: notify.clone(),
    };
    let task = tokio::spawn(async move {
        let reader = Reader::open(&t.database)?;
        let (writer, publisher, stop) = (t.writer.clone(), t.publisher.clone(), t.stop.clone());
        let mut published = 0u64;
        let mut delay = Duration::from_millis(200);
        loop {
            let rows = match reader.unpublished(ROUND_MAX, SCOPE_ROUND_MAX) {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "outbox not readable; retrying");
                    Vec::new()
                }
            };
            if rows.is_empty() {
                if stop.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            t.failpoints.hit(Failpoint::OutboxBeforePublish);
            // Queue every publish (the publisher keeps their order), then
            // collect the confirmations in order.
            let mut pending = Vec::with_capacity(rows.len());
            for row in rows {
                let p = publisher.clone();
                let (topic, payload, retained) = (
                    row.topic.clone(),
                    row.payload.clone().into_bytes(),
                    row.retained,
                );
                // Test only (feature `failpoints`): refuse retained rows.
                let refuse = retained && t.failpoints.armed(Failpoint::OutboxRefuseRetained);
                pending.push((
                    row,
                    tokio::spawn(async move {
                        if refuse {
                            return Ok(Err(MqttError::TooLarge {
                                size: payload.len(),
                                topic,
                                max: 0,
                            }));
                        }
                        tokio::time::timeout(
                            CONFIRM_TIMEOUT,
                            p.publish_confirmed(topic, payload, retained),
                        )
                        .await
                    }),
                ));
            }
            let mut confirmed = Vec::with_capacity(pending.len());
            let mut dead = Vec::new();
            // Scopes with a row not confirmed this round: their later rows
            // are not marked (published again next round, in order).
            let mut held: BTreeSet<String> = BTreeSet::new();
            let mut failed = false;
            for (row, h) in pending {
                match h.await {
                    Ok(Ok(Ok(()))) if !held.contains(&row.scope_key) => confirmed.push(row.id),
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) if refused_for_good(&e) => dead.push((row, e.to_string())),
                    Ok(Ok(Err(e))) => {
                        failed = true;
                        debug!(error = %e, scope = %row.scope_key, "alert publish failed; will retry");
                        held.insert(row.scope_key);
                    }
                    Ok(Err(_)) | Err(_) => {
                        failed = true;
                        held.insert(row.scope_key);
                    }
                }
            }
            if !dead.is_empty() && !move_aside(&t, dead).await {
                failed = true;
            }
            if !confirmed.is_empty() {
                let n = confirmed.len() as u64;
                match writer
                    .write(WriteOp::OutboxPublished {
                        ids: confirmed,
                        at_ms: t.clock.now_ms(),
                    })
                    .await
                {
                    Ok(_) => published += n,
                    // Published but not marked: published again later
                    // (at least once).
                    Err(e) => warn!(error = %e, "published alert rows not marked"),
                }
            }
            if failed {
                if stop.is_cancelled() {
                    warn!("stopping with alert messages not yet published; they go out at the next start");
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            } else {
                delay = Duration::from_millis(200);
            }
        }
        Ok(published)
    });
    (handle, task)
}
