//! Database care, run by the daemon at start and every
//! `database.maintenance_interval_h`: retention of the sampled
//! concentration history, WAL checkpoints and `PRAGMA optimize`.
//!
//! * **Retention.** `concentration_history` is derived data (sampled from
//!   the PK state, recomputable from the inputs), so points older than
//!   `database.history_retention_days` are deleted ([`WriteOp::PruneHistory`]),
//!   a few thousand rows per op, each op one short step of the single
//!   writer's queue: ingest ops queued meanwhile are committed between two
//!   steps, never held behind the whole deletion. Inputs, rejected messages,
//!   alerts, alert events, operator commands and published states are never
//!   deleted (they are the record).
//! * **Checkpoint.** After the deletions (and at a clean stop, see
//!   `writer`): `PRAGMA wal_checkpoint(PASSIVE)` (never waits), then
//!   `TRUNCATE` with a short busy timeout, so the `-wal` file is emptied
//!   when no reader holds an old snapshot, and the writer is never stalled
//!   for long when one does (the next run tries again).
//! * **Optimize.** `PRAGMA optimize` in each run, before the checkpoint
//!   (what its ANALYZE writes is checkpointed too; the writer connection
//!   also runs `PRAGMA optimize=0x10002` when it opens, as the SQLite docs
//!   advise for long-lived connections).
//!
//! The deletion itself ([`prune_history`]) runs inside the writer's
//! transaction; the checkpoint ([`checkpoint`]) outside any transaction, on
//! the writer's connection.

use super::{StoreError, WriteOp, WriteResult, Writer};
use crate::clock::Clock;
use rusqlite::{params, Connection, OptionalExtension};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most history rows deleted by one [`WriteOp::PruneHistory`] (about a
/// millisecond of work: the writer's queue moves on in between).
pub(crate) const PRUNE_BATCH_ROWS: usize = 2000;

/// How long the `TRUNCATE` checkpoint may wait for readers to leave an old
/// snapshot before it gives up (the writer waits meanwhile).
pub(crate) const TRUNCATE_BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// What the maintenance does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Keep this many days of concentration history; `None`: keep it all.
    pub history_retention: Option<Duration>,
    /// Run this often (after the run at start).
    pub interval: Duration,
    /// Most history rows deleted per op.
    pub prune_batch_rows: usize,
}

impl MaintenanceConfig {
    /// From the config's `history_retention_days` (0 = keep forever) and
    /// `maintenance_interval_h`.
    pub fn new(history_retention_days: u32, maintenance_interval_h: u32) -> MaintenanceConfig {
        let history_retention = if history_retention_days == 0 {
            None
        } else {
            Some(Duration::from_secs(
                u64::from(history_retention_days) * 86_400,
            ))
        };
        MaintenanceConfig {
            history_retention,
            interval: Duration::from_secs(u64::from(maintenance_interval_h.max(1)) * 3600),
            prune_batch_rows: PRUNE_BATCH_ROWS,
        }
    }
}

/// What a `wal_checkpoint` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointReport {
    /// The `-wal` file's size before, in bytes.
    pub wal_bytes_before: u64,
    /// ... and after (0 once truncated).
    pub wal_bytes_after: u64,
    /// Frames in the WAL when the passive checkpoint ran.
    pub wal_frames: i64,
    /// Frames of them copied into the database file.
    pub checkpointed_frames: i64,
    /// The `TRUNCATE` step could not finish within
    /// [`TRUNCATE_BUSY_TIMEOUT`] (a reader held an old snapshot): the WAL
    /// was checkpointed as far as it could be, not truncated.
    pub busy: bool,
}

/// What one maintenance run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaintenanceReport {
    /// History points older than this were deleted (`None`: retention off).
    pub history_cutoff_ms: Option<i64>,
    /// History rows deleted.
    pub history_rows_deleted: u64,
    /// Prune ops used.
    pub prune_steps: u64,
    pub checkpoint: CheckpointReport,
    /// The run was stopped (daemon stopping) before it finished.
    pub interrupted: bool,
    pub duration: Duration,
}

/// Delete at most `max_rows` history points older than `before_ms`, walking
/// the patients in order (each step a primary-key seek: no full scan).
/// Returns the rows deleted; fewer than `max_rows` means none are left.
pub(super) fn prune_history(
    conn: &Connection,
    before_ms: i64,
    max_rows: usize,
) -> Result<u64, rusqlite::Error> {
    let mut budget = i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX);
    let mut deleted = 0u64;
    let mut first = conn.prepare_cached(
        "SELECT patient_id FROM concentration_history ORDER BY patient_id LIMIT 1",
    )?;
    let mut next = conn.prepare_cached(
        "SELECT patient_id FROM concentration_history WHERE patient_id > ?1
         ORDER BY patient_id LIMIT 1",
    )?;
    let mut delete = conn.prepare_cached(
        "DELETE FROM concentration_history WHERE patient_id = ?1 AND t_ms IN (
             SELECT t_ms FROM concentration_history WHERE patient_id = ?1 AND t_ms < ?2
             ORDER BY t_ms LIMIT ?3)",
    )?;
    let mut patient: Option<String> = first.query_row([], |r| r.get(0)).optional()?;
    while let Some(p) = patient {
        let n = delete.execute(params![p, before_ms, budget])?;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        deleted = deleted.saturating_add(u64::try_from(n).unwrap_or(0));
        budget -= n;
        if budget <= 0 {
            break;
        }
        patient = next.query_row([&p], |r| r.get(0)).optional()?;
    }
    Ok(deleted)
}

fn wal_bytes(conn: &Connection) -> u64 {
    match conn.path() {
        Some(path) if !path.is_empty() => std::fs::metadata(format!("{path}-wal"))
            .map(|m| m.len())
            .unwrap_or(0),
        _ => 0,
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`, then `(TRUNCATE)` waiting at most
/// [`TRUNCATE_BUSY_TIMEOUT`] for readers; `busy_timeout` is restored
/// after. Must run outside a transaction.
pub(super) fn checkpoint(
    conn: &Connection,
    busy_timeout: Duration,
) -> Result<CheckpointReport, rusqlite::Error> {
    let wal_bytes_before = wal_bytes(conn);
    let (_, wal_frames, checkpointed_frames): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    conn.busy_timeout(TRUNCATE_BUSY_TIMEOUT)?;
    let truncated = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    conn.busy_timeout(busy_timeout)?;
    let busy = match truncated {
        Ok(busy) => busy != 0,
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => true,
        Err(e) => return Err(e),
    };
    Ok(CheckpointReport {
        wal_bytes_before,
        wal_bytes_after: wal_bytes(conn),
        wal_frames,
        checkpointed_frames,
        busy,
    })
}

/// One maintenance run: delete the history older than the retention (in
/// steps, stopping early when `stop` is cancelled), checkpoint, optimize.
/// Logs what it did.
pub(crate) async fn run_once(
    writer: &Writer,
    cfg: &MaintenanceConfig,
    now_ms: i64,
    stop: &CancellationToken,
) -> Result<MaintenanceReport, StoreError> {
    let started = Instant::now();
    let mut report = MaintenanceReport::default();
    if let Some(retention) = cfg.history_retention {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(retention_ms);
        report.history_cutoff_ms = Some(cutoff);
        loop {
            if stop.is_cancelled() {
                report.interrupted = true;
                break;
            }
            let rows = match writer
                .write(WriteOp::PruneHistory {
                    before_ms: cutoff,
                    max_rows: cfg.prune_batch_rows,
                })
                .await?
            {
                WriteResult::Pruned { rows } => rows,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "history prune answered {other:?}"
                    )))
                }
            };
            report.prune_steps += 1;
            report.history_rows_deleted += rows;
            if rows < u64::try_from(cfg.prune_batch_rows.max(1)).unwrap_or(u64::MAX) {
                break;
            }
        }
    }
    // Optimize first: its ANALYZE writes, and the checkpoint then takes
    // those pages too, leaving an empty WAL.
    writer.optimize().await?;
    report.checkpoint = writer.checkpoint().await?;
    report.duration = started.elapsed();
    tracing::info!(
        retention_days = cfg.history_retention.map(|d| d.as_secs() / 86_400),
        history_cutoff = report
            .history_cutoff_ms
            .map(crate::vocab::format_rfc3339)
            .as_deref(),
        history_rows_deleted = report.history_rows_deleted,
        prune_steps = report.prune_steps,
        wal_bytes_before = report.checkpoint.wal_bytes_before,
        wal_bytes_after = report.checkpoint.wal_bytes_after,
        checkpoint_busy = report.checkpoint.busy,
        interrupted = report.interrupted,
        duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
        "database maintenance done"
    );
    Ok(report)
}

/// The daemon's maintenance task: a run at once, then every
/// `cfg.interval` on `clock`, until `stop` is cancelled; each run's
/// history cutoff is taken from `clock`. A failed run is logged and tried
/// again at the next interval (the data is not at risk: nothing was
/// deleted that its transaction did not commit).
pub(crate) async fn run_periodic(
    writer: Writer,
    cfg: MaintenanceConfig,
    stop: CancellationToken,
    clock: Clock,
) {
    loop {
        if let Err(e) = run_once(&writer, &cfg, clock.now_ms(), &stop).await {
            match e {
                StoreError::WriterClosed => return,
                e => {
                    tracing::warn!(error = %e, "database maintenance failed; trying again at the next interval")
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = clock.sleep(cfg.interval) => {}
        }
    }
}
