//! The daemon's durable storage: one SQLite file (WAL, `synchronous=FULL`)
//! holding every accepted input, every rejected message, the projections
//! derived from the inputs, the computed concentration history, the last
//! published state per patient and (from issue 4) the publish outbox.
//!
//! This module owns the records the rest of the daemon hands to the store
//! ([`WriteOp`] and its parts), the store's error type ([`StoreError`]) and
//! its configuration ([`StoreConfig`]). The work is split into:
//!
//! * `schema`: the embedded migrations (`migrations/NN-name/up.sql`) and
//!   the connection set-up (PRAGMAs) for the writer and for readers;
//! * `apply`: what one [`WriteOp`] does inside a transaction: the input
//!   insert with duplicate/conflict detection and its projections, rejected
//!   messages, history and published-state upserts;
//! * `writer`: [`Writer`], the single writer thread with group commit;
//! * `read`: [`Reader`], read-only queries that never block the writer;
//! * `ward`: more [`Reader`] queries, the ward's read models for the HTTP
//!   API and pages (stay start, last input, changed states and alerts);
//! * `lock`: [`DatabaseLock`], one daemon per database (`<db>.lock`);
//! * `maintenance`: database care (history retention, WAL checkpoints,
//!   `PRAGMA optimize`), run by the daemon at start and periodically.
//!
//! # The durability rule
//!
//! An input may be acknowledged to the broker only after the
//! [`Writer::write`] call that carried it returned `Ok`: that happens only
//! after the `COMMIT` containing it returned, with `synchronous=FULL` (the
//! WAL is fsynced at every commit). Any `Err` means "not stored": do not
//! acknowledge.
//!
//! # Duplicates
//!
//! An input is identified by (source kind, source id, input id). The store
//! compares the canonical form of the *parsed* input (`parsed_json`
//! re-serialised with sorted keys) with the stored one, so key order,
//! whitespace, number spelling (`100` vs `100.0`) and unknown fields (which
//! the contract ignores) do not matter: the same content is a redelivery
//! ([`StoreOutcome::Duplicate`], nothing is applied again), other content a
//! conflict ([`StoreOutcome::Conflict`], nothing is stored; the caller
//! stores the message as rejected with `duplicate_conflict`).

mod alerts;
mod apply;
mod backup;
mod lock;
pub(crate) mod maintenance;
#[macro_use]
mod read;
mod schema;
mod start;
mod ward;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use alerts::{AlertCommit, DeadLetter, OutboxMessage, PendingPublish};
pub use backup::{backup, BackupError, BackupReport};
pub use dosetrack_core::records::{
    AdmitProjection, AlertWrite, CommandOutcome, HistoryRow, InputRecord, Projection,
    RejectedRecord, Source, StateRow, StoredInput, REJECTED_PAYLOAD_KEEP_BYTES,
};
pub use lock::{check_directory, DatabaseLock};
pub use maintenance::{CheckpointReport, MaintenanceConfig, MaintenanceReport};
pub use read::{Counts, PatientRow, PublishedState, Reader, RejectedRow};
pub use schema::migrations;
pub use start::StartInputs;
pub use ward::{AlertMessageRow, CommandFate, StateMark};
pub use writer::{CommitObserver, Queued, Writer, WriterPragmas, WriterStats, WriterThread};

/// Why an op could not be applied.
#[derive(Debug)]
// Shared by `apply` and `alerts` (both run inside the writer's transaction).
enum ApplyError {
    /// The op is unusable; nothing of it is stored, the batch goes on.
    Op(StoreError),
    /// The database failed; the batch must be abandoned.
    Fatal(rusqlite::Error),
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> ApplyError {
        match e.sqlite_error_code() {
            // The statement (and so the op) is at fault, not the database.
            Some(
                rusqlite::ErrorCode::ConstraintViolation
                | rusqlite::ErrorCode::TypeMismatch
                | rusqlite::ErrorCode::TooBig
                | rusqlite::ErrorCode::ParameterOutOfRange,
            ) => ApplyError::Op(StoreError::InvalidRecord(format!("sqlite: {e}"))),
            Some(_) => ApplyError::Fatal(e),
            // rusqlite-side conversion errors: about this op's values.
            None => ApplyError::Op(StoreError::InvalidRecord(format!("sqlite binding: {e}"))),
        }
    }
}

/// What became of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// New: stored with this `seq`, projections applied.
    Inserted { seq: i64 },
    /// A redelivery of the input stored as `seq`: nothing changed. Acknowledge.
    Duplicate { seq: i64 },
    /// Same (source, id) as the input stored as `seq`, other content: nothing
    /// stored. The caller stores the message as rejected
    /// (`duplicate_conflict`), then acknowledges.
    Conflict { seq: i64 },
    /// A device event naming another patient than the one its device is
    /// associated with at the event's time, that cannot move the device
    /// (`dosetrack_core::tracker::association_decision`): nothing stored.
    /// The caller stores the message as rejected (`association_conflict`),
    /// then acknowledges.
    AssociationConflict { associated: String },
}

/// One unit of work for the writer; each is applied atomically (all of it
/// or none of it) inside the batch's transaction.
#[derive(Debug, Clone, PartialEq)]
// Built once and moved into the writer's queue: boxing the input would add
// an allocation per op for nothing.
#[allow(clippy::large_enum_variant)]
pub enum WriteOp {
    Input(InputRecord),
    Rejected(RejectedRecord),
    /// A rejected message delivered with the retain flag (the broker's
    /// retained copy, sent again at every subscription): stored unless the
    /// same message (topic, code, bytes) is already stored, which answers
    /// [`WriteResult::AlreadyStored`].
    RejectedRetained(RejectedRecord),
    /// A rejection counted, not stored in full: the (source, code, minute)
    /// row of `rejection_counts` gains one (a repeat beyond the samples
    /// kept in `rejected`).
    RejectionCounted(RejectionCount),
    /// Upsert of concentration points (a recompute overwrites).
    History(Vec<HistoryRow>),
    /// Upsert of the last state message published for a patient.
    State {
        patient_id: String,
        time_ms: i64,
        payload: String,
    },
    /// Alert records, their lifecycle messages and outbox rows: one unit.
    Alerts(Box<AlertCommit>),
    /// Outbox rows confirmed published (PUBACK received).
    OutboxPublished {
        ids: Vec<i64>,
        at_ms: i64,
    },
    /// Outbox rows the broker connection refused for good: moved to
    /// `outbox_dead_letter`, never retried.
    OutboxDeadLetter {
        rows: Vec<DeadLetter>,
        at_ms: i64,
    },
    /// What one round of publishing derived, in one op: the published
    /// states (upserted) and concentration points (upserted; a recompute
    /// overwrites). For each `(patient, from_ms)` of
    /// `replace_history_from`, the patient's stored points at or after
    /// `from_ms` are deleted first (an input changed the model from there:
    /// the points given here replace them). All of it or none of it is
    /// stored.
    Derived {
        states: Vec<StateRow>,
        history: Vec<HistoryRow>,
        replace_history_from: Vec<(String, i64)>,
    },
    /// Database care (retention): delete at most `max_rows` concentration
    /// history points dated before `before_ms`. Answered with
    /// [`WriteResult::Pruned`]; fewer rows than `max_rows` means none older
    /// are left. Touches nothing but `concentration_history`.
    PruneHistory {
        before_ms: i64,
        max_rows: usize,
    },
}

/// One counted rejection ([`WriteOp::RejectionCounted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionCount {
    /// `devices/pump-1`, `patients/P-1`, … ([`crate::contract::topic_source`]).
    pub source: String,
    pub code: crate::contract::ErrorCode,
    /// The minute it was received in (ms, a multiple of 60,000).
    pub minute_ms: i64,
    pub received_at_ms: i64,
    pub topic: String,
}

/// The answer to a [`WriteOp`], given after its batch committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// For [`WriteOp::Input`].
    Input(StoreOutcome),
    /// For every other op.
    Written,
    /// For [`WriteOp::RejectedRetained`]: the same message was already
    /// stored; nothing written.
    AlreadyStored,
    /// For [`WriteOp::PruneHistory`]: the history rows deleted.
    Pruned { rows: u64 },
}

/// How to open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The SQLite file (created with its schema if absent).
    pub path: PathBuf,
    /// Most ops per transaction (default 256; 0 counts as 1).
    pub batch_max: usize,
    /// How long the writer waits for more ops after the first of a batch
    /// (default 2 ms; zero: take only what is already queued).
    pub batch_window: Duration,
    /// How long a write waits for another connection's write lock before
    /// the batch fails with `SQLITE_BUSY` (default 5 s).
    pub busy_timeout: Duration,
    /// Capacity of the bounded queue to the writer (default 1024; 0 counts
    /// as 1). A full queue makes [`Writer::write`] wait: back-pressure.
    pub queue_capacity: usize,
}

impl StoreConfig {
    /// The defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            batch_max: 256,
            batch_window: Duration::from_millis(2),
            busy_timeout: Duration::from_secs(5),
            queue_capacity: 1024,
        }
    }
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An SQLite error outside a batch (opening, PRAGMAs, reads).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Applying the schema migrations failed.
    #[error("migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A PRAGMA did not take the value the store needs.
    #[error("PRAGMA {pragma} is '{actual}', the store needs '{wanted}'")]
    Pragma {
        pragma: &'static str,
        wanted: &'static str,
        actual: String,
    },
    /// The database's schema is not the one this build expects (a reader
    /// opened before the writer migrated it, or a newer database).
    #[error("database schema is not at this build's version ({0})")]
    SchemaVersion(String),
    /// The op itself is unusable (not JSON where JSON is required, a
    /// non-finite number, a projection that does not fit the record, a
    /// constraint violation). Nothing of this op was stored; the rest of its
    /// batch was. Retrying the same op fails the same way.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// The batch containing the op could not be committed (SQLITE_BUSY
    /// beyond the busy timeout, disk full, I/O error, …). Nothing of the
    /// batch was stored; the writer keeps running, so a retry may succeed.
    #[error("batch of {batch_len} not stored ({stage} failed): {message}")]
    BatchFailed {
        /// `begin`, `apply` or `commit`.
        stage: &'static str,
        batch_len: usize,
        /// The SQLite primary result code, when SQLite gave one.
        code: Option<rusqlite::ErrorCode>,
        message: String,
    },
    /// The writer has shut down (or its thread ended): nothing was stored.
    #[error("the store writer is not running")]
    WriterClosed,
    /// [`Writer::write_blocking`] or [`WriterThread::shutdown`] was
    /// misused from inside an async runtime (where blocking would panic).
    #[error("blocking store call made from inside an async runtime; use the async API")]
    BlockingInAsyncContext,
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The writer thread panicked (a bug; nothing of its last batch was
    /// acknowledged).
    #[error("the writer thread panicked")]
    WriterPanicked,
    /// Another process holds the database's lock: a second daemon on the
    /// same database.
    #[error("another dosetrack is running on this database ({} is locked by another process); stop it first, or give this one its own --database", lock.display())]
    InUse { lock: PathBuf },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database's directory does not exist (the store creates the
    /// file, never its directory).
    #[error("cannot create the database {}: its directory does not exist; create the directory, or choose another path with --database", db.display())]
    NoDirectory { db: PathBuf, dir: PathBuf },
    /// The file at the database's path exists but is empty: not a dosetrack
    /// database (a truncated copy, a placeholder). Never taken as an empty
    /// record.
    #[error("{} is empty (0 bytes): not a dosetrack database; restore the database, or remove the file to start a new empty one", .0.display())]
    EmptyFile(PathBuf),
    /// The database file was deleted or replaced while the daemon ran: the
    /// writer's connection no longer writes to the file at the path, so
    /// nothing more is stored (and no input is acknowledged) until a
    /// restart.
    #[error("the database file {} was {what} while the daemon ran; nothing more is stored: restore it and restart the daemon", path.display())]
    Replaced { path: PathBuf, what: &'static str },
    /// A stored row does not decode (unknown `source_kind`, …).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when retrying the same op later may succeed (the batch failed
    /// for a reason outside the op: lock held, disk full, I/O error).
    pub fn is_retryable(&self) -> bool {
        // Replaced: never mended by a retry, but the inputs must stay
        // unacknowledged (the broker keeps them) rather than be dropped.
        matches!(
            self,
            StoreError::BatchFailed { .. } | StoreError::Replaced { .. }
        )
    }

    /// The SQLite primary result code behind the error, if any.
    pub fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            StoreError::Sqlite(e) => e.sqlite_error_code(),
            StoreError::BatchFailed { code, .. } => *code,
            _ => None,
        }
    }
}
