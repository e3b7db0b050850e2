//! Read-only access to the store: a [`Reader`] holds its own
//! `SQLITE_OPEN_READ_ONLY` connection. With WAL, readers see the last
//! committed state and never block the writer (nor are blocked by it); each
//! method is one statement, so one short read transaction.
//!
//! It owns the read models: [`StoredInput`] (to rebuild state at start and
//! a patient's ledger), [`PatientRow`], [`RejectedRow`] and [`Counts`].

use super::schema;
use super::{HistoryRow, InputRecord, Source, StoreError, StoredInput};
use rusqlite::{params, Connection, Row};
use std::path::Path;
use std::time::Duration;

/// How long a reader waits on a lock (only checkpoints and WAL recovery
/// take one a reader must wait for).
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A read-only connection to the store. `Send`, not `Sync`: one per thread
/// or task.
pub struct Reader {
    pub(super) conn: Connection,
}

/// A patient of the `patients` projection, with its last published state.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientRow {
    pub patient_id: String,
    pub first_admitted_at_ms: i64,
    pub last_admit_seq: i64,
    pub discharged_at_ms: Option<i64>,
    pub last_state: Option<PublishedState>,
}

/// The last state message published for a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedState {
    pub time_ms: i64,
    pub payload: String,
}

/// A rejected message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    pub seq: i64,
    pub topic: String,
    pub received_at_ms: i64,
    /// The contract's error code (`invalid_value`, …).
    pub code: String,
    pub field: Option<String>,
    pub message: String,
    /// At most the first 64 KiB of the raw payload.
    pub payload: Vec<u8>,
    /// The raw payload's full length in bytes.
    pub payload_len: i64,
}

impl RejectedRow {
    /// The code as the contract's [`crate::contract::ErrorCode`], if known.
    pub fn error_code(&self) -> Option<crate::contract::ErrorCode> {
        crate::contract::ErrorCode::from_name(&self.code)
    }
}

/// Row counts of the main tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub inputs: u64,
    pub rejected: u64,
    pub patients: u64,
    pub devices: u64,
    pub history_rows: u64,
}

/// The columns of [`StoredInput`], in the order `raw_input` reads them.
macro_rules! input_columns {
    () => {
        "seq, topic, source_kind, source_id, input_id, kind, patient_id, device_id, \
         occurred_at_ms, received_at_ms, payload, parsed"
    };
}

const SQL_INPUTS_AFTER: &str = concat!(
    "SELECT ",
    input_columns!(),
    " FROM inputs WHERE seq > ?1 ORDER BY seq"
);

const SQL_INPUTS_PAGE: &str = concat!(
    "SELECT ",
    input_columns!(),
    " FROM inputs WHERE seq > ?1 ORDER BY seq LIMIT ?2"
);

/// Inputs naming the patient, plus device events without `patient_id` from
/// a device whose association at the event's time is the patient. (The `+`
/// keeps the planner off the `source_kind` index: the device index must
/// drive the second half.)
pub(super) const SQL_INPUTS_FOR_PATIENT: &str = concat!(
    "SELECT ",
    input_columns!(),
    " FROM inputs WHERE patient_id = ?1
     UNION ALL
     SELECT ",
    input_columns!(),
    " FROM inputs AS i
     WHERE i.device_id IN (SELECT device_id FROM device_associations WHERE patient_id = ?1)
       AND (SELECT a.patient_id FROM device_associations AS a
            WHERE a.device_id = i.device_id AND a.from_ms <= i.occurred_at_ms
            ORDER BY a.from_ms DESC, a.input_seq DESC LIMIT 1) = ?1
       AND i.patient_id IS NULL AND +i.source_kind = 'device'
     ORDER BY occurred_at_ms, seq"
);

/// An input row before its source is checked.
pub(super) struct RawInput {
    source_kind: String,
    source_id: String,
    pub(super) input: StoredInput,
}

pub(super) fn raw_input(row: &Row<'_>) -> rusqlite::Result<RawInput> {
    Ok(RawInput {
        source_kind: row.get(2)?,
        source_id: row.get(3)?,
        input: StoredInput {
            seq: row.get(0)?,
            record: InputRecord {
                topic: row.get(1)?,
                // Replaced by the decoded source in `decode`.
                source: Source::Patient(String::new()),
                input_id: row.get(4)?,
                kind: row.get(5)?,
                patient_id: row.get(6)?,
                device_id: row.get(7)?,
                occurred_at_ms: row.get(8)?,
                received_at_ms: row.get(9)?,
                payload: row.get(10)?,
                parsed_json: row.get(11)?,
                projection: (),
            },
        },
    })
}

pub(super) fn decode(raw: Vec<RawInput>) -> Result<Vec<StoredInput>, StoreError> {
    raw.into_iter()
        .map(|r| {
            let seq = r.input.seq;
            let source = Source::from_parts(&r.source_kind, r.source_id).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "input {seq} has unknown source_kind '{}'",
                    r.source_kind
                ))
            })?;
            let mut input = r.input;
            input.record.source = source;
            Ok(input)
        })
        .collect()
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Reader {
    /// Open the store at `path` read-only. The database must exist and be
    /// at this build's schema version (open the [`super::Writer`] first).
    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        Ok(Reader {
            conn: schema::open_reader(path, READER_BUSY_TIMEOUT)?,
        })
    }

    /// Every input with `seq > after_seq`, in arrival (`seq`) order.
    pub fn inputs(&self, after_seq: i64) -> Result<Vec<StoredInput>, StoreError> {
        let mut stmt = self.conn.prepare_cached(SQL_INPUTS_AFTER)?;
        let raw = stmt
            .query_map(params![after_seq], raw_input)?
            .collect::<Result<Vec<_>, _>>()?;
        decode(raw)
    }

    /// At most `limit` inputs with `seq > after_seq`, in arrival (`seq`)
    /// order: pass the last `seq` of a page as the next `after_seq` to walk
    /// the whole store holding one page at a time (the start-up replay:
    /// [`Reader::inputs`] would hold every stored input at once).
    pub fn inputs_page(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredInput>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(SQL_INPUTS_PAGE)?;
        let raw = stmt
            .query_map(params![after_seq, limit], raw_input)?
            .collect::<Result<Vec<_>, _>>()?;
        decode(raw)
    }

    /// The inputs of one patient in occurrence order (ties: arrival order):
    /// every input naming the patient, plus the device events without
    /// `patient_id` (heartbeats, alarms) from a device whose association at
    /// the event's occurrence time is this patient.
    pub fn inputs_for_patient(&self, patient_id: &str) -> Result<Vec<StoredInput>, StoreError> {
        let mut stmt = self.conn.prepare_cached(SQL_INPUTS_FOR_PATIENT)?;
        let raw = stmt
            .query_map(params![patient_id], raw_input)?
            .collect::<Result<Vec<_>, _>>()?;
        decode(raw)
    }

    /// Every admitted patient (by id) with its last published state.
    pub fn patients(&self) -> Result<Vec<PatientRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.patient_id, p.first_admitted_at_ms, p.last_admit_seq, p.discharged_at_ms,
                    s.time_ms, s.payload
             FROM patients AS p LEFT JOIN published_state AS s ON s.patient_id = p.patient_id
             ORDER BY p.patient_id",
        )?;
        let rows = stmt
            .query_map([], |row| {
                let time_ms: Option<i64> = row.get(4)?;
                let payload: Option<String> = row.get(5)?;
                Ok(PatientRow {
                    patient_id: row.get(0)?,
                    first_admitted_at_ms: row.get(1)?,
                    last_admit_seq: row.get(2)?,
                    discharged_at_ms: row.get(3)?,
                    last_state: time_ms
                        .zip(payload)
                        .map(|(time_ms, payload)| PublishedState { time_ms, payload }),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A patient's concentration history in time order, from `from_ms` to
    /// `to_ms` (both inclusive; `None`: unbounded).
    pub fn history(
        &self,
        patient_id: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT patient_id, t_ms, cp_ng_per_ml, ce_ng_per_ml FROM concentration_history
             WHERE patient_id = ?1 AND t_ms >= ?2 AND t_ms <= ?3 ORDER BY t_ms",
        )?;
        let rows = stmt
            .query_map(
                params![
                    patient_id,
                    from_ms.unwrap_or(i64::MIN),
                    to_ms.unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok(HistoryRow {
                        patient_id: row.get(0)?,
                        t_ms: row.get(1)?,
                        cp_ng_per_ml: row.get(2)?,
                        ce_ng_per_ml: row.get(3)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The `limit` most recent rejected messages, newest first.
    pub fn rejected(&self, limit: usize) -> Result<Vec<RejectedRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, topic, received_at_ms, code, field, message, payload, payload_len
             FROM rejected ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                Ok(RejectedRow {
                    seq: row.get(0)?,
                    topic: row.get(1)?,
                    received_at_ms: row.get(2)?,
                    code: row.get(3)?,
                    field: row.get(4)?,
                    message: row.get(5)?,
                    payload: row.get(6)?,
                    payload_len: row.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The newest `limit` rejections received at or after `since_ms` (all
    /// of them when `None`), oldest first.
    pub fn rejected_since(
        &self,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RejectedRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, topic, received_at_ms, code, field, message, payload, payload_len
             FROM rejected WHERE received_at_ms >= ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let mut rows = stmt
            .query_map(
                params![
                    since_ms.unwrap_or(i64::MIN),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok(RejectedRow {
                        seq: row.get(0)?,
                        topic: row.get(1)?,
                        received_at_ms: row.get(2)?,
                        code: row.get(3)?,
                        field: row.get(4)?,
                        message: row.get(5)?,
                        payload: row.get(6)?,
                        payload_len: row.get(7)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Row counts, read in one snapshot.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let counts = self.conn.query_row(
            "SELECT (SELECT count(*) FROM inputs), (SELECT count(*) FROM rejected),
                    (SELECT count(*) FROM patients), (SELECT count(*) FROM devices),
                    (SELECT count(*) FROM concentration_history)",
            [],
            |row| {
                Ok(Counts {
                    inputs: count(row.get(0)?),
                    rejected: count(row.get(1)?),
                    patients: count(row.get(2)?),
                    devices: count(row.get(3)?),
                    history_rows: count(row.get(4)?),
                })
            },
        )?;
        Ok(counts)
    }
}
