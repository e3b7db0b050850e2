//! What a start reads instead of every stored input.
//!
//! A full replay of the store grows with history: a year of a hospital is
//! ~10 M inputs, nearly all of patients long gone and of heartbeats. A
//! start needs only what the tracker would still hold after replaying
//! everything and releasing the patients whose last stay ended before the
//! release cut-off ([`dosetrack_core::tracker`], "Releasing ended stays"):
//!
//! * the lifecycle index (every admission and discharge) decides who is
//!   released ([`released_at_start`]);
//! * every input naming a patient who is not released, heartbeats aside
//!   (a heartbeat only says the device is alive: the `devices`
//!   projection's `last_heard_ms` carries that);
//! * the inputs that made the devices' associations (`device_associations`),
//!   whoever they name: associations attribute later events;
//! * per device, its events without a patient in their payload that the
//!   tracker would hold: every one before its first association (no
//!   patient), and the others while its patient is not released
//!   ([`device_spans`]);
//! * the inputs the caller names (operator commands whose outcome was never
//!   recorded).
//!
//! The reads run in one read transaction, so they see one state of the
//! store. `tests/it/restart.rs` checks the result against a full replay.

use super::read::{decode, raw_input};
use super::{Reader, StoreError, StoredInput};
use dosetrack_core::tracker::{
    device_spans, released_at_start, AssociationRow, DeviceSpans, LifecycleRow,
};
use dosetrack_core::vocab::TimeMs;
use rusqlite::params;
use std::collections::{BTreeMap, BTreeSet};

/// What [`Reader::start_inputs`] read.
#[derive(Debug, Default)]
pub struct StartInputs {
    /// The inputs to apply, in arrival order (`seq`), each once.
    pub inputs: Vec<StoredInput>,
    /// The patients to restore as released.
    pub released: BTreeSet<String>,
    /// Every device ever heard from, with its latest occurrence time.
    pub last_heard: Vec<(String, TimeMs)>,
}

/// Admissions and discharges, from the partial index
/// `inputs_patient_lifecycle` alone (it covers every column named; its
/// `kind IN` term must match word for word). `INDEXED BY` because the
/// planner, misled by sampled statistics (`PRAGMA optimize`), preferred the
/// source index on a year's database: every patient input visited in the
/// table, 22 s of a start with a cold page cache; an index gone is an error
/// here, not a silent scan of the whole store.
pub(super) const SQL_LIFECYCLE: &str = "SELECT patient_id, kind, occurred_at_ms, seq
     FROM inputs INDEXED BY inputs_patient_lifecycle
     WHERE kind IN ('admit', 'discharge') AND source_kind = 'patient'
       AND patient_id IS NOT NULL";

/// Every distinct `patient_id`, one index seek each (a skip-scan of
/// `inputs_patient_time`).
const SQL_PATIENT_IDS: &str = "WITH RECURSIVE ids(p) AS (
         SELECT (SELECT min(patient_id) FROM inputs WHERE patient_id IS NOT NULL)
         UNION ALL
         SELECT (SELECT min(patient_id) FROM inputs WHERE patient_id > ids.p)
         FROM ids WHERE ids.p IS NOT NULL)
     SELECT p FROM ids WHERE p IS NOT NULL";

const SQL_NAMING: &str = concat!(
    "SELECT ",
    input_columns!(),
    " FROM inputs WHERE patient_id = ?1 AND kind != 'heartbeat'"
);

const SQL_BY_SEQ: &str = concat!("SELECT ", input_columns!(), " FROM inputs WHERE seq = ?1");

/// A device's events without a patient, all of them.
const SQL_DEVICE_UNNAMED: &str = concat!(
    "SELECT ",
    input_columns!(),
    " FROM inputs WHERE device_id = ?1 AND patient_id IS NULL"
);

/// A device's events without a patient before a time.
const SQL_DEVICE_UNNAMED_BEFORE: &str = concat!(
    "SELECT ",
    input_columns!(),
    " FROM inputs WHERE device_id = ?1 AND occurred_at_ms < ?2 AND patient_id IS NULL"
);

/// A device's events without a patient, heartbeats aside, in `[?2, ?3)`,
/// from the partial index that holds exactly those (its condition spelt
/// word for word; `INDEXED BY` as for [`SQL_LIFECYCLE`]: through the
/// device index every heartbeat of the span was a table lookup).
pub(super) const SQL_DEVICE_UNNAMED_SPAN: &str = concat!(
    "SELECT ",
    input_columns!(),
    " FROM inputs INDEXED BY inputs_device_unnamed_events
     WHERE device_id = ?1 AND occurred_at_ms >= ?2 AND occurred_at_ms < ?3
       AND patient_id IS NULL AND kind != 'heartbeat'"
);

impl Reader {
    /// The inputs a start applies, the patients it restores as released
    /// (whose last stay ended at or before `release_before_ms`) and the
    /// devices' last-heard times (module doc). `also` are inputs read
    /// whatever they are.
    pub fn start_inputs(
        &self,
        release_before_ms: TimeMs,
        also: &BTreeSet<i64>,
    ) -> Result<StartInputs, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let lifecycle = {
            let mut stmt = tx.prepare_cached(SQL_LIFECYCLE)?;
            let rows = stmt.query_map([], |row| {
                let kind: String = row.get(1)?;
                Ok(LifecycleRow {
                    patient_id: row.get(0)?,
                    admit: kind == "admit",
                    time_ms: row.get(2)?,
                    seq: row.get(3)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let released = released_at_start(&lifecycle, release_before_ms);
        drop(lifecycle);

        let mut raw = Vec::new();
        let ids: Vec<String> = {
            let mut stmt = tx.prepare_cached(SQL_PATIENT_IDS)?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        {
            let mut stmt = tx.prepare_cached(SQL_NAMING)?;
            for id in ids.iter().filter(|id| !released.contains(*id)) {
                for r in stmt.query_map(params![id], raw_input)? {
                    raw.push(r?);
                }
            }
        }

        let mut associations: BTreeMap<String, Vec<AssociationRow>> = BTreeMap::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT device_id, patient_id, from_ms, input_seq FROM device_associations",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    AssociationRow {
                        patient_id: row.get(1)?,
                        from_ms: row.get(2)?,
                        seq: row.get(3)?,
                    },
                ))
            })?;
            for r in rows {
                let (device_id, a) = r?;
                associations.entry(device_id).or_default().push(a);
            }
        }
        // The inputs that made associations to released patients (the
        // others name a patient read above).
        let mut by_seq: BTreeSet<i64> = associations
            .values()
            .flatten()
            .filter(|a| released.contains(&a.patient_id))
            .map(|a| a.seq)
            .collect();
        by_seq.extend(also.iter().copied());
        {
            let mut stmt = tx.prepare_cached(SQL_BY_SEQ)?;
            for seq in &by_seq {
                for r in stmt.query_map(params![seq], raw_input)? {
                    raw.push(r?);
                }
            }
        }

        let last_heard: Vec<(String, TimeMs)> = {
            let mut stmt = tx.prepare_cached("SELECT device_id, last_heard_ms FROM devices")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        {
            let mut all = tx.prepare_cached(SQL_DEVICE_UNNAMED)?;
            let mut before = tx.prepare_cached(SQL_DEVICE_UNNAMED_BEFORE)?;
            let mut span = tx.prepare_cached(SQL_DEVICE_UNNAMED_SPAN)?;
            for (device_id, _) in &last_heard {
                let DeviceSpans {
                    unowned_before_ms,
                    kept,
                } = device_spans(
                    associations.get(device_id).map_or(&[][..], Vec::as_slice),
                    &released,
                );
                match unowned_before_ms {
                    None => {
                        for r in all.query_map(params![device_id], raw_input)? {
                            raw.push(r?);
                        }
                    }
                    Some(t) => {
                        for r in before.query_map(params![device_id, t], raw_input)? {
                            raw.push(r?);
                        }
                    }
                }
                for (from, to) in kept {
                    let to = to.unwrap_or(TimeMs::MAX);
                    for r in span.query_map(params![device_id, from, to], raw_input)? {
                        raw.push(r?);
                    }
                }
            }
        }
        tx.commit()?;

        raw.sort_by_key(|r| r.input.seq);
        raw.dedup_by_key(|r| r.input.seq);
        Ok(StartInputs {
            inputs: decode(raw)?,
            released,
            last_heard,
        })
    }
}
