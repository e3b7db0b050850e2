//! The outbox publisher: alert messages go out from the `outbox` table.
//!
//! Alert lifecycle messages and active lists are committed to the outbox
//! in the same transaction as the alert state they come from
//! ([`crate::store::AlertCommit`]). This task publishes the unpublished rows
//! in order, each confirmed by the broker's PUBACK, and then marks them
//! published. A crash or a broker outage in between loses nothing: at the
//! next start (or reconnect) the rows still unmarked are published again —
//! at least once, so consumers dedupe on `alert_id` and `phase`.
//!
//! The rows carry their topics, named by stage B when it committed them
//! ([`crate::contract::Topics`]); a row is marked published at the daemon
//! clock's time. The failpoint `outbox_before_publish`
//! ([`crate::service::failpoint`]) is here.

use crate::clock::Clock;
use crate::mqtt::Publisher;
use crate::service::failpoint::{Failpoint, Failpoints};
use crate::store::{Reader, StoreError, WriteOp, Writer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Rows published per round.
const ROUND_MAX: usize = 256;
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

/// Start the outbox task; it runs until `stop`, then makes one bounded last
/// attempt to publish what is left.
pub(super) fn spawn_outbox(
    database: PathBuf,
    writer: Writer,
    publisher: Publisher,
    stop: CancellationToken,
    failpoints: Failpoints,
    clock: Clock,
) -> (OutboxHandle, JoinHandle<Result<u64, StoreError>>) {
    let notify = Arc::new(Notify::new());
    let handle = OutboxHandle {
        notify: notify.clone(),
    };
    let task = tokio::spawn(async move {
        let reader = Reader::open(&database)?;
        let mut published = 0u64;
        let mut delay = Duration::from_millis(200);
        loop {
            let rows = match reader.unpublished(ROUND_MAX) {
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
            failpoints.hit(Failpoint::OutboxBeforePublish);
            // Queue every publish (the publisher keeps their order), then
            // collect the confirmations in order.
            let mut pending = Vec::with_capacity(rows.len());
            for row in &rows {
                let p = publisher.clone();
                let (topic, payload, retained) = (
                    row.topic.clone(),
                    row.payload.clone().into_bytes(),
                    row.retained,
                );
                pending.push((
                    row.id,
                    tokio::spawn(async move {
                        tokio::time::timeout(
                            CONFIRM_TIMEOUT,
                            p.publish_confirmed(topic, payload, retained),
                        )
                        .await
                    }),
                ));
            }
            let mut confirmed = Vec::with_capacity(pending.len());
            let mut failed = false;
            for (id, h) in pending {
                match h.await {
                    Ok(Ok(Ok(()))) if !failed => confirmed.push(id),
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => {
                        failed = true;
                        debug!(error = %e, "alert publish failed; will retry");
                    }
                    Ok(Err(_)) | Err(_) => failed = true,
                }
            }
            if !confirmed.is_empty() {
                let n = confirmed.len() as u64;
                match writer
                    .write(WriteOp::OutboxPublished {
                        ids: confirmed,
                        at_ms: clock.now_ms(),
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
