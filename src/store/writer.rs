//! The single writer: one `std::thread` owns the read-write `Connection`;
//! callers hand it [`WriteOp`]s over a bounded channel and get the answer
//! once the transaction containing their op has committed.
//!
//! Group commit: the thread waits for a first op, then takes more until
//! `batch_max` ops or `batch_window` has passed, and applies the batch in ONE
//! `BEGIN IMMEDIATE` transaction, each op inside its own savepoint (an
//! unusable op is rolled back alone). Only after `COMMIT` returned does it
//! answer, in submission order. When the batch fails as a whole (begin or
//! commit failed, `SQLITE_BUSY` past the busy timeout, disk full, I/O
//! error), every op of the batch gets [`StoreError::BatchFailed`] and nothing
//! of it is stored; the thread logs it and goes on with the next batch.
//! Before each batch the writer checks that the database path still names
//! the file it opened (device and inode): a file deleted or replaced under
//! it fails every batch with [`StoreError::Replaced`]. An existing empty
//! file is refused at open ([`StoreError::EmptyFile`]).
//! Opened with [`Writer::open_with_metrics`], it records each committed
//! transaction's op count and duration in the daemon's metrics.

use super::apply;
use super::maintenance::{self, CheckpointReport};
use super::schema;
use super::ApplyError;
use super::{StoreConfig, StoreError, WriteOp, WriteResult};
use rusqlite::{Connection, TransactionBehavior};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<WriteResult, StoreError>>;

// Most messages are ops; the others are rare.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Op {
        op: WriteOp,
        reply: Reply,
    },
    Pragmas(oneshot::Sender<Result<WriterPragmas, StoreError>>),
    /// Liveness probe: answered as soon as the thread takes it from the
    /// queue (after the ops ahead of it), with no SQLite work.
    Ping(oneshot::Sender<()>),
    /// Does the path still name the database file the writer writes to?
    CheckFile(oneshot::Sender<Result<(), StoreError>>),
    /// `wal_checkpoint` PASSIVE then TRUNCATE (database maintenance).
    Checkpoint(oneshot::Sender<Result<CheckpointReport, StoreError>>),
    /// `PRAGMA optimize` (database maintenance).
    Optimize(oneshot::Sender<Result<(), StoreError>>),
    Shutdown,
}

/// Cloneable handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
}

/// An op in the writer's queue (see [`Writer::enqueue`]). Dropping it does
/// not withdraw the op.
#[derive(Debug)]
pub struct Queued {
    answer: oneshot::Receiver<Result<WriteResult, StoreError>>,
}

impl Queued {
    /// The op's result, once the transaction containing it committed (`Ok`)
    /// or failed (`Err`: nothing of the op is stored).
    pub async fn outcome(self) -> Result<WriteResult, StoreError> {
        self.answer.await.map_err(|_| StoreError::WriterClosed)?
    }
}

/// The writer thread itself; [`WriterThread::shutdown`] stops it cleanly.
/// Dropping it without `shutdown` leaves the thread running until every
/// [`Writer`] handle is gone too.
pub struct WriterThread {
    tx: mpsc::Sender<Msg>,
    handle: JoinHandle<Result<(), StoreError>>,
}

/// Told of every committed transaction (the daemon's commit metrics),
/// from the writer thread: must not block.
pub trait CommitObserver: Send + Sync {
    /// A transaction of `ops` ops committed after `seconds` (begin to
    /// commit, fsync included).
    fn committed(&self, ops: usize, seconds: f64);
}

#[derive(Default)]
struct Stats {
    ops: AtomicU64,
    batches: AtomicU64,
    commits: AtomicU64,
    failed_batches: AtomicU64,
    largest_batch: AtomicU64,
    /// The daemon's commit histograms, when it asked for them.
    metrics: Option<Arc<dyn CommitObserver>>,
}

/// Counters of the writer since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Ops taken from the queue and applied (committed or not).
    pub ops: u64,
    /// Transactions attempted.
    pub batches: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Transactions that failed as a whole (every op answered `Err`).
    pub failed_batches: u64,
    /// Most ops in one transaction.
    pub largest_batch: u64,
}

/// The writer connection's settings, as SQLite reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterPragmas {
    /// `wal`.
    pub journal_mode: String,
    /// 2 = FULL.
    pub synchronous: i64,
    pub foreign_keys: bool,
    pub busy_timeout_ms: i64,
}

/// The database file as it was opened, to tell whether the path still
/// names it.
struct FileWatch {
    path: std::path::PathBuf,
    /// (device, inode) at open; `None` where the platform has none.
    identity: Option<(u64, u64)>,
}

impl FileWatch {
    /// `Err` ([`StoreError::Replaced`]) when the path no longer names the
    /// file the connection writes to.
    fn check(&self) -> Result<(), StoreError> {
        let Some(at_open) = self.identity else {
            return Ok(());
        };
        let what = match file_identity(&self.path) {
            Some(now) if now == at_open => return Ok(()),
            Some(_) => "replaced",
            None => "deleted",
        };
        Err(StoreError::Replaced {
            path: self.path.clone(),
            what,
        })
    }
}

/// (device, inode) of the file at `path`; `None` when there is none.
#[cfg(unix)]
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_identity(_path: &std::path::Path) -> Option<(u64, u64)> {
    None
}

struct LoopConfig {
    batch_max: usize,
    batch_window: Duration,
    busy_timeout: Duration,
}

impl Writer {
    /// Open or create the database, apply pending migrations, and start the
    /// writer thread, which owns the connection from then on.
    pub fn open(cfg: StoreConfig) -> Result<(Writer, WriterThread), StoreError> {
        Self::open_with_metrics(cfg, None)
    }

    /// [`Writer::open`], telling `metrics` every committed transaction's
    /// size and duration.
    pub fn open_with_metrics(
        cfg: StoreConfig,
        metrics: Option<Arc<dyn CommitObserver>>,
    ) -> Result<(Writer, WriterThread), StoreError> {
        // Create a database only where none exists: an existing empty file
        // is not one (SQLite would take it as an empty database).
        if std::fs::metadata(&cfg.path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            return Err(StoreError::EmptyFile(cfg.path.clone()));
        }
        let conn = schema::open_writer(&cfg.path, cfg.busy_timeout)?;
        // The file the connection writes to, to notice it deleted or
        // replaced under the daemon (checked before each batch).
        let file = FileWatch {
            path: cfg.path.clone(),
            identity: file_identity(&cfg.path),
        };
        // Only to wait for more ops with a deadline inside the thread.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(StoreError::Spawn)?;
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let stats = Arc::new(Stats {
            metrics,
            ..Stats::default()
        });
        let loop_cfg = LoopConfig {
            batch_max: cfg.batch_max.max(1),
            batch_window: cfg.batch_window,
            busy_timeout: cfg.busy_timeout,
        };
        let thread_stats = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("dosetrack-store".to_owned())
            .spawn(move || run(conn, rx, &loop_cfg, &thread_stats, &timer, &file))
            .map_err(StoreError::Spawn)?;
        tracing::info!(
            path = %cfg.path.display(),
            batch_max = cfg.batch_max,
            batch_window_us = u64::try_from(cfg.batch_window.as_micros()).unwrap_or(u64::MAX),
            busy_timeout_ms = u64::try_from(cfg.busy_timeout.as_millis()).unwrap_or(u64::MAX),
            "store writer started"
        );
        Ok((
            Writer {
                tx: tx.clone(),
                stats,
            },
            WriterThread { tx, handle },
        ))
    }

    /// Store `op`. Resolves only after the transaction containing it
    /// committed (`Ok`) or failed (`Err`: nothing of `op` is stored).
    ///
    /// Dropping the future after the op was queued does not withdraw it: it
    /// may still be stored (a redelivery is then a `Duplicate`).
    pub async fn write(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        self.enqueue(op).await?.outcome().await
    }

    /// Put `op` in the writer's queue (waiting only for room in it) and
    /// return at once; [`Queued::outcome`] then waits for its commit like
    /// [`Writer::write`]. Ops enqueued one after the other from one task are
    /// applied in that order (so inputs get their `seq` in arrival order).
    pub async fn enqueue(&self, op: WriteOp) -> Result<Queued, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Op { op, reply })
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        Ok(Queued { answer })
    }

    /// [`Writer::write`] for threads outside an async runtime. Called from
    /// inside one it returns [`StoreError::BlockingInAsyncContext`] (tokio
    /// would panic).
    pub fn write_blocking(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(StoreError::BlockingInAsyncContext);
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Op { op, reply })
            .map_err(|_| StoreError::WriterClosed)?;
        answer
            .blocking_recv()
            .map_err(|_| StoreError::WriterClosed)?
    }

    /// The writer connection's PRAGMAs as SQLite reports them (for start-up
    /// logs and tests).
    pub async fn pragmas(&self) -> Result<WriterPragmas, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Pragmas(reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// Resolves once the writer thread has taken this probe from its queue,
    /// i.e. has got through every op queued before it: a liveness check
    /// (the service watchdog). Never resolves while a batch is stuck (a
    /// hung fsync, a lock held forever); wrap it in a timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Ping(reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        answer.await.map_err(|_| StoreError::WriterClosed)
    }

    /// Checkpoint the WAL: `PRAGMA wal_checkpoint(PASSIVE)`, then
    /// `(TRUNCATE)` waiting at most
    /// [`TRUNCATE_BUSY_TIMEOUT`](super::maintenance::TRUNCATE_BUSY_TIMEOUT)
    /// for readers on an old snapshot. Runs between two batches.
    pub async fn checkpoint(&self) -> Result<CheckpointReport, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Checkpoint(reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// Whether the database path still names the file the writer writes
    /// to: `Err(`[`StoreError::Replaced`]`)` once it was deleted or
    /// replaced (every write fails the same way from then on).
    pub async fn check_file(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::CheckFile(reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// `PRAGMA optimize` on the writer's connection, between two batches.
    pub async fn optimize(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Optimize(reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// Counters since the writer started.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            ops: self.stats.ops.load(Ordering::Relaxed),
            batches: self.stats.batches.load(Ordering::Relaxed),
            commits: self.stats.commits.load(Ordering::Relaxed),
            failed_batches: self.stats.failed_batches.load(Ordering::Relaxed),
            largest_batch: self.stats.largest_batch.load(Ordering::Relaxed),
        }
    }
}

impl WriterThread {
    /// Stop the writer: every op queued before this call is applied and
    /// committed (and answered), later writes get
    /// [`StoreError::WriterClosed`], the connection is closed and the thread
    /// joined. Blocks the calling thread until then.
    pub fn shutdown(self) -> Result<(), StoreError> {
        let mut msg = Msg::Shutdown;
        loop {
            match self.tx.try_send(msg) {
                Ok(()) | Err(TrySendError::Closed(_)) => break,
                Err(TrySendError::Full(back)) => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        drop(self.tx);
        self.handle.join().map_err(|_| StoreError::WriterPanicked)?
    }
}

/// What the thread does with one message while collecting a batch.
enum Collected {
    More,
    Stop,
}

fn take(
    msg: Msg,
    conn: &Connection,
    cfg: &LoopConfig,
    file: &FileWatch,
    batch: &mut Vec<(WriteOp, Reply)>,
) -> Collected {
    match msg {
        Msg::Op { op, reply } => {
            batch.push((op, reply));
            Collected::More
        }
        Msg::Pragmas(reply) => {
            // No transaction is open while collecting.
            if reply.send(read_pragmas(conn)).is_err() {
                tracing::debug!("pragmas asked for, but the asker is gone");
            }
            Collected::More
        }
        Msg::Ping(reply) => {
            let _ = reply.send(());
            Collected::More
        }
        Msg::CheckFile(reply) => {
            let _ = reply.send(file.check());
            Collected::More
        }
        Msg::Checkpoint(reply) => {
            // No transaction is open while collecting.
            let report =
                maintenance::checkpoint(conn, cfg.busy_timeout).map_err(StoreError::Sqlite);
            let _ = reply.send(report);
            Collected::More
        }
        Msg::Optimize(reply) => {
            let done = conn
                .execute_batch("PRAGMA optimize")
                .map_err(StoreError::Sqlite);
            let _ = reply.send(done);
            Collected::More
        }
        Msg::Shutdown => Collected::Stop,
    }
}

fn read_pragmas(conn: &Connection) -> Result<WriterPragmas, StoreError> {
    Ok(WriterPragmas {
        journal_mode: conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
        synchronous: conn.pragma_query_value(None, "synchronous", |r| r.get(0))?,
        foreign_keys: conn.pragma_query_value(None, "foreign_keys", |r| r.get::<_, i64>(0))? == 1,
        busy_timeout_ms: conn.pragma_query_value(None, "busy_timeout", |r| r.get(0))?,
    })
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Msg>,
    cfg: &LoopConfig,
    stats: &Stats,
    timer: &tokio::runtime::Runtime,
    file: &FileWatch,
) -> Result<(), StoreError> {
    let mut batch: Vec<(WriteOp, Reply)> = Vec::with_capacity(cfg.batch_max);
    'serve: loop {
        // Wait for the first message of a batch.
        let Some(first) = rx.blocking_recv() else {
            break 'serve; // every sender is gone
        };
        let mut stop = matches!(take(first, &conn, cfg, file, &mut batch), Collected::Stop);
        if batch.is_empty() && !stop {
            continue; // a pragmas or ping request
        }
        // Take more until the batch is full or the window has passed.
        let deadline = Instant::now().checked_add(cfg.batch_window);
        while !stop && batch.len() < cfg.batch_max {
            let msg = match rx.try_recv() {
                Ok(msg) => msg,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let Some(deadline) = deadline.filter(|d| *d > Instant::now()) else {
                        break;
                    };
                    // The timer must be created inside the runtime.
                    let waited = timer.block_on(async {
                        tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), rx.recv())
                            .await
                    });
                    match waited {
                        Ok(Some(msg)) => msg,
                        Ok(None) | Err(_) => break, // closed, or the window has passed
                    }
                }
            };
            stop = matches!(take(msg, &conn, cfg, file, &mut batch), Collected::Stop);
        }
        if !batch.is_empty() {
            run_batch(&mut conn, &mut batch, stats, file);
        }
        if stop {
            // Refuse new ops; apply what was queued before the shutdown.
            rx.close();
            while let Ok(msg) = rx.try_recv() {
                // A second shutdown request changes nothing.
                let _ = take(msg, &conn, cfg, file, &mut batch);
                if batch.len() >= cfg.batch_max {
                    run_batch(&mut conn, &mut batch, stats, file);
                }
            }
            if !batch.is_empty() {
                run_batch(&mut conn, &mut batch, stats, file);
            }
            break 'serve;
        }
    }
    close(conn, cfg, stats)
}

fn close(conn: Connection, cfg: &LoopConfig, stats: &Stats) -> Result<(), StoreError> {
    if let Err(e) = conn.execute_batch("PRAGMA optimize") {
        tracing::warn!(error = %e, "PRAGMA optimize at shutdown failed");
    }
    // Leave an empty WAL behind (SQLite also checkpoints when the last
    // connection closes, but not while a reader is still open).
    match maintenance::checkpoint(&conn, cfg.busy_timeout) {
        Ok(c) => tracing::info!(
            wal_bytes_before = c.wal_bytes_before,
            wal_bytes_after = c.wal_bytes_after,
            busy = c.busy,
            "WAL checkpointed at stop"
        ),
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint at stop failed"),
    }
    let result = conn.close().map_err(|(_, e)| StoreError::Sqlite(e));
    tracing::info!(
        ops = stats.ops.load(Ordering::Relaxed),
        commits = stats.commits.load(Ordering::Relaxed),
        failed_batches = stats.failed_batches.load(Ordering::Relaxed),
        closed_ok = result.is_ok(),
        "store writer stopped"
    );
    result
}

/// Why a batch failed as a whole.
struct BatchError {
    stage: &'static str,
    error: rusqlite::Error,
}

fn stage(stage: &'static str) -> impl Fn(rusqlite::Error) -> BatchError {
    move |error| BatchError { stage, error }
}

/// Apply and commit one batch, then answer every op in submission order.
fn run_batch(
    conn: &mut Connection,
    batch: &mut Vec<(WriteOp, Reply)>,
    stats: &Stats,
    file: &FileWatch,
) {
    let len = batch.len();
    // A deleted or replaced file: nothing is stored (a commit would go to
    // a file nobody will open again), every op answered with the reason.
    if let Err(e) = file.check() {
        stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        tracing::error!(batch_len = len, error = %e, "batch not stored: the database file is gone");
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(Err(match &e {
                StoreError::Replaced { path, what } => StoreError::Replaced {
                    path: path.clone(),
                    what,
                },
                _ => StoreError::WriterClosed,
            }));
        }
        return;
    }
    let len_u64 = u64::try_from(len).unwrap_or(u64::MAX);
    stats.ops.fetch_add(len_u64, Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.largest_batch.fetch_max(len_u64, Ordering::Relaxed);
    let started = Instant::now();

    match execute(conn, batch) {
        Ok(results) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &stats.metrics {
                m.committed(len, started.elapsed().as_secs_f64());
            }
            tracing::debug!(
                batch_len = len,
                elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "batch committed"
            );
            for ((_, reply), result) in batch.drain(..).zip(results) {
                // The caller may have stopped waiting; the op is stored anyway.
                let _ = reply.send(result);
            }
        }
        Err(BatchError { stage, error }) => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            let code = error.sqlite_error_code();
            tracing::error!(
                batch_len = len,
                stage,
                sqlite_code = code.map(tracing::field::debug),
                error = %error,
                "batch not stored; every op of it answered with an error"
            );
            if !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "rollback after a failed batch failed");
                }
            }
            let message = error.to_string();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(StoreError::BatchFailed {
                    stage,
                    batch_len: len,
                    code,
                    message: message.clone(),
                }));
            }
        }
    }
}

/// One transaction for the batch; each op that writes more than one
/// statement runs inside a savepoint (a single statement is atomic by
/// itself). Returns each op's result once `COMMIT` returned.
fn execute(
    conn: &mut Connection,
    batch: &[(WriteOp, Reply)],
) -> Result<Vec<Result<WriteResult, StoreError>>, BatchError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(stage("begin"))?;
    let mut results = Vec::with_capacity(batch.len());
    for (op, _) in batch {
        let savepoint = needs_savepoint(op);
        if savepoint {
            run_cached(&tx, "SAVEPOINT op")?;
        }
        match apply::apply(&tx, op) {
            Ok(result) => {
                if savepoint {
                    run_cached(&tx, "RELEASE op")?;
                }
                results.push(Ok(result));
            }
            Err(ApplyError::Op(error)) => {
                if savepoint {
                    run_cached(&tx, "ROLLBACK TO op")?;
                    run_cached(&tx, "RELEASE op")?;
                }
                tracing::warn!(error = %error, op = op_name(op), "op refused by the store");
                results.push(Err(error));
            }
            Err(ApplyError::Fatal(error)) => {
                return Err(BatchError {
                    stage: "apply",
                    error,
                })
            }
        }
        if tx.is_autocommit() {
            // SQLite rolled the whole transaction back on its own.
            return Err(BatchError {
                stage: "apply",
                error: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    Some("the transaction was rolled back by SQLite".to_owned()),
                ),
            });
        }
    }
    tx.commit().map_err(stage("commit"))?;
    Ok(results)
}

/// Ops that may fail after a first write need a savepoint to be undone
/// alone; the others write (at most) one statement, which SQLite undoes by
/// itself when it fails.
fn needs_savepoint(op: &WriteOp) -> bool {
    match op {
        WriteOp::Input(rec) => !matches!(rec.projection, super::Projection::None),
        WriteOp::History(rows) => rows.len() > 1,
        WriteOp::Derived {
            states,
            history,
            replace_history_from,
        } => states.len() + history.len() + replace_history_from.len() > 1,
        WriteOp::Rejected(_)
        | WriteOp::RejectedRetained(_)
        | WriteOp::RejectionCounted(_)
        | WriteOp::State { .. } => false,
        WriteOp::Alerts(_) | WriteOp::OutboxPublished { .. } | WriteOp::OutboxDeadLetter { .. } => {
            true
        }
        WriteOp::PruneHistory { .. } => true,
    }
}

fn run_cached(conn: &Connection, sql: &str) -> Result<(), BatchError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(|_| ())
        .map_err(stage("apply"))
}

fn op_name(op: &WriteOp) -> &'static str {
    match op {
        WriteOp::Input(_) => "input",
        WriteOp::Rejected(_) | WriteOp::RejectedRetained(_) => "rejected",
        WriteOp::RejectionCounted(_) => "rejection_counted",
        WriteOp::History(_) => "history",
        WriteOp::State { .. } => "state",
        WriteOp::Alerts(_) => "alerts",
        WriteOp::OutboxPublished { .. } => "outbox_published",
        WriteOp::OutboxDeadLetter { .. } => "outbox_dead_letter",
        WriteOp::Derived { .. } => "derived",
        WriteOp::PruneHistory { .. } => "prune_history",
    }
}
