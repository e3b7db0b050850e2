//! What one [`WriteOp`] does to the database, inside the writer's open
//! transaction: the input insert with its duplicate/conflict check and its
//! projections (`patients`, `patient_covariates`, `devices`,
//! `device_associations`), rejected messages, history and published-state
//! upserts; and the canonical form of a JSON payload.
//!
//! Errors are sorted in two: [`ApplyError::Op`] when the op itself is
//! unusable (its savepoint is rolled back, the rest of the batch goes on) and
//! [`ApplyError::Fatal`] when the database is in trouble (busy, full, I/O):
//! the whole batch is abandoned.

use super::{
    ApplyError, HistoryRow, InputRecord, Projection, RejectedRecord, Source, StoreError,
    StoreOutcome, WriteOp, WriteResult, REJECTED_PAYLOAD_KEEP_BYTES,
};
use dosetrack_core::tracker::{association_decision, AssociationDecision};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

/// The stored input with the same identity, if any.
pub(super) const SQL_FIND_INPUT: &str = "SELECT seq, canonical FROM inputs
     WHERE source_kind = ?1 AND source_id = ?2 AND input_id = ?3";

/// A device's patient at a time.
pub(super) const SQL_ASSOCIATION_AT: &str = "SELECT patient_id FROM device_associations
     WHERE device_id = ?1 AND from_ms <= ?2
     ORDER BY from_ms DESC, input_seq DESC LIMIT 1";

/// A patient's admits and discharges (the `kind IN` term must match the
/// partial index `inputs_patient_lifecycle` word for word).
pub(super) const SQL_PATIENT_LIFECYCLE: &str = "SELECT seq, kind, occurred_at_ms FROM inputs
     WHERE patient_id = ?1 AND kind IN ('admit', 'discharge') AND source_kind = 'patient'";

fn invalid(message: impl Into<String>) -> ApplyError {
    ApplyError::Op(StoreError::InvalidRecord(message.into()))
}

/// Apply one op; the caller wraps it in a savepoint.
pub(super) fn apply(conn: &Connection, op: &WriteOp) -> Result<WriteResult, ApplyError> {
    match op {
        WriteOp::Input(rec) => apply_input(conn, rec).map(WriteResult::Input),
        WriteOp::Rejected(rec) => {
            insert_rejected(conn, rec)?;
            Ok(WriteResult::Written)
        }
        WriteOp::RejectedRetained(rec) => {
            if rejection_stored(conn, rec)? {
                return Ok(WriteResult::AlreadyStored);
            }
            insert_rejected(conn, rec)?;
            Ok(WriteResult::Written)
        }
        WriteOp::RejectionCounted(c) => {
            conn.prepare_cached(
                "INSERT INTO rejection_counts (source, code, minute_ms, count, first_ms, last_ms, last_topic)
                 VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5)
                 ON CONFLICT (source, code, minute_ms) DO UPDATE SET
                   count = count + 1,
                   first_ms = min(first_ms, excluded.first_ms),
                   last_ms = max(last_ms, excluded.last_ms),
                   last_topic = excluded.last_topic",
            )?
            .execute(params![
                c.source,
                c.code.as_str(),
                c.minute_ms,
                c.received_at_ms,
                c.topic
            ])?;
            Ok(WriteResult::Written)
        }
        WriteOp::History(rows) => {
            upsert_history(conn, rows)?;
            Ok(WriteResult::Written)
        }
        WriteOp::Alerts(w) => {
            super::alerts::apply_alerts(conn, w)?;
            Ok(WriteResult::Written)
        }
        WriteOp::OutboxPublished { ids, at_ms } => {
            super::alerts::mark_published(conn, ids, *at_ms)?;
            Ok(WriteResult::Written)
        }
        WriteOp::OutboxDeadLetter { rows, at_ms } => {
            super::alerts::dead_letter(conn, rows, *at_ms)?;
            Ok(WriteResult::Written)
        }
        WriteOp::State {
            patient_id,
            time_ms,
            payload,
        } => {
            upsert_state(conn, patient_id, *time_ms, payload)?;
            Ok(WriteResult::Written)
        }
        WriteOp::Derived {
            states,
            history,
            replace_history_from,
        } => {
            check_history(history)?;
            for (patient_id, from_ms) in replace_history_from {
                conn.prepare_cached(
                    "DELETE FROM concentration_history WHERE patient_id = ?1 AND t_ms >= ?2",
                )?
                .execute(params![patient_id, from_ms])?;
            }
            for s in states {
                upsert_state(conn, &s.patient_id, s.time_ms, &s.payload)?;
            }
            upsert_history(conn, history)?;
            Ok(WriteResult::Written)
        }
        WriteOp::PruneHistory {
            before_ms,
            max_rows,
        } => {
            let rows = super::maintenance::prune_history(conn, *before_ms, *max_rows)?;
            Ok(WriteResult::Pruned { rows })
        }
    }
}

fn upsert_state(
    conn: &Connection,
    patient_id: &str,
    time_ms: i64,
    payload: &str,
) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT INTO published_state (patient_id, time_ms, payload) VALUES (?1, ?2, ?3)
         ON CONFLICT (patient_id) DO UPDATE
         SET time_ms = excluded.time_ms, payload = excluded.payload",
    )?
    .execute(params![patient_id, time_ms, payload])?;
    Ok(())
}

/// The payload re-serialised with every object's keys sorted (bytewise) and
/// no whitespace. Independent of serde_json's `preserve_order` feature:
/// objects are rebuilt in sorted order, and both map kinds keep that.
pub(super) fn canonical_json(text: &str) -> Result<String, serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    serde_json::to_string(&sorted(value))
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Check that the record's projection fits it, before touching the database.
fn check_input(rec: &InputRecord) -> Result<(), ApplyError> {
    match &rec.projection {
        Projection::None => Ok(()),
        Projection::Admit(_) | Projection::Discharge => {
            let wanted = if matches!(rec.projection, Projection::Admit(_)) {
                "admit"
            } else {
                "discharge"
            };
            if rec.kind != wanted {
                return Err(invalid(format!(
                    "projection {wanted} on an input of kind '{}'",
                    rec.kind
                )));
            }
            if !matches!(rec.source, Source::Patient(_)) {
                return Err(invalid(format!(
                    "{wanted} from a {} source",
                    rec.source.kind()
                )));
            }
            if rec.patient_id.is_none() {
                return Err(invalid(format!("{wanted} without patient_id")));
            }
            if let Projection::Admit(admit) = &rec.projection {
                for (name, value) in [
                    ("weight_kg", Some(admit.weight_kg)),
                    ("age_years", admit.age_years),
                    ("height_cm", admit.height_cm),
                ] {
                    if value.is_some_and(|v| !v.is_finite()) {
                        return Err(invalid(format!("admit {name} is not a finite number")));
                    }
                }
                serde_json::from_str::<serde::de::IgnoredAny>(&admit.targets_json)
                    .map_err(|e| invalid(format!("admit targets_json is not JSON: {e}")))?;
            }
            Ok(())
        }
        Projection::DeviceEvent { .. } => {
            if !matches!(rec.source, Source::Device(_)) {
                return Err(invalid(format!(
                    "device event from a {} source",
                    rec.source.kind()
                )));
            }
            if rec.device_id.is_none() {
                return Err(invalid("device event without device_id"));
            }
            Ok(())
        }
    }
}

fn apply_input(conn: &Connection, rec: &InputRecord) -> Result<StoreOutcome, ApplyError> {
    check_input(rec)?;
    serde_json::from_str::<serde::de::IgnoredAny>(&rec.payload)
        .map_err(|e| invalid(format!("payload is not JSON: {e}")))?;
    // "Same content" is the same parsed input: the contract ignores unknown
    // fields, and 100 and 100.0 are the same dose.
    let canonical = canonical_json(&rec.parsed_json)
        .map_err(|e| invalid(format!("parsed_json is not JSON: {e}")))?;

    // Looked up inside the batch's transaction, so an identical op earlier
    // in the same batch is seen too.
    let existing: Option<(i64, String)> = conn
        .prepare_cached(SQL_FIND_INPUT)?
        .query_row(
            params![rec.source.kind(), rec.source.id(), rec.input_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((seq, stored)) = existing {
        return Ok(if stored == canonical {
            StoreOutcome::Duplicate { seq }
        } else {
            StoreOutcome::Conflict { seq }
        });
    }
    let association = association_of(conn, rec)?;
    if let AssociationDecision::Conflict { associated } = association {
        return Ok(StoreOutcome::AssociationConflict { associated });
    }

    conn.prepare_cached(
        "INSERT INTO inputs (topic, source_kind, source_id, input_id, kind, patient_id,
                             device_id, occurred_at_ms, received_at_ms, payload, canonical, parsed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        rec.topic,
        rec.source.kind(),
        rec.source.id(),
        rec.input_id,
        rec.kind,
        rec.patient_id,
        rec.device_id,
        rec.occurred_at_ms,
        rec.received_at_ms,
        rec.payload,
        canonical,
        rec.parsed_json,
    ])?;
    let seq = conn.last_insert_rowid();
    apply_projection(conn, rec, seq, &association)?;
    Ok(StoreOutcome::Inserted { seq })
}

/// What a device event does to its device's association (the core's rule
/// over the stored association at the event's time); `Keep` for any other
/// input.
fn association_of(conn: &Connection, rec: &InputRecord) -> Result<AssociationDecision, ApplyError> {
    let (
        Projection::DeviceEvent {
            patient_id: Some(patient_id),
        },
        Some(device_id),
    ) = (&rec.projection, rec.device_id.as_deref())
    else {
        return Ok(AssociationDecision::Keep);
    };
    let current: Option<String> = conn
        .prepare_cached(SQL_ASSOCIATION_AT)?
        .query_row(params![device_id, rec.occurred_at_ms], |row| row.get(0))
        .optional()?;
    Ok(association_decision(
        &rec.kind,
        Some(patient_id),
        current.as_deref(),
    ))
}

fn apply_projection(
    conn: &Connection,
    rec: &InputRecord,
    seq: i64,
    association: &AssociationDecision,
) -> Result<(), ApplyError> {
    match &rec.projection {
        Projection::None => Ok(()),
        Projection::Admit(admit) => {
            let Some(patient_id) = rec.patient_id.as_deref() else {
                return Err(invalid("admit without patient_id"));
            };
            let comedications = serde_json::to_string(&admit.comedications)
                .map_err(|e| invalid(format!("admit comedications: {e}")))?;
            refresh_patient(conn, patient_id)?;
            conn.prepare_cached(
                "INSERT INTO patient_covariates (patient_id, valid_from_ms, input_seq, weight_kg,
                     age_years, sex, height_cm, model, setting, comedications, targets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                patient_id,
                rec.occurred_at_ms,
                seq,
                admit.weight_kg,
                admit.age_years,
                admit.sex,
                admit.height_cm,
                admit.model,
                admit.setting,
                comedications,
                admit.targets_json,
            ])?;
            Ok(())
        }
        Projection::Discharge => {
            let Some(patient_id) = rec.patient_id.as_deref() else {
                return Err(invalid("discharge without patient_id"));
            };
            refresh_patient(conn, patient_id)
        }
        Projection::DeviceEvent { patient_id } => {
            let Some(device_id) = rec.device_id.as_deref() else {
                return Err(invalid("device event without device_id"));
            };
            conn.prepare_cached(
                "INSERT INTO devices (device_id, first_seen_ms, last_heard_ms, last_input_seq)
                 VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT (device_id) DO UPDATE SET
                     first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                     last_heard_ms = max(last_heard_ms, excluded.last_heard_ms),
                     last_input_seq = excluded.last_input_seq",
            )?
            .execute(params![device_id, rec.occurred_at_ms, seq])?;
            if let (Some(patient_id), AssociationDecision::Associate { previous }) =
                (patient_id, association)
            {
                conn.prepare_cached(
                    "INSERT INTO device_associations (device_id, patient_id, from_ms, input_seq)
                         VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    device_id,
                    patient_id,
                    rec.occurred_at_ms,
                    seq
                ])?;
                match previous {
                        Some(previous) => tracing::info!(
                            device_id,
                            patient_id = patient_id.as_str(),
                            previous = previous.as_str(),
                            from_ms = rec.occurred_at_ms,
                            "device moved to another patient: what it was delivering to the previous patient ends here"
                        ),
                        None => tracing::debug!(
                            device_id,
                            patient_id = patient_id.as_str(),
                            from_ms = rec.occurred_at_ms,
                            "device associated with a patient"
                        ),
                    }
            }
            Ok(())
        }
    }
}

/// Recompute a patient's `patients` row from all its stored admits and
/// discharges, so the result does not depend on arrival order:
/// first admission = earliest admit; last admit = latest admit to arrive;
/// discharged when the latest admit/discharge in occurrence order (ties:
/// arrival order) is a discharge. No admit yet: no row.
fn refresh_patient(conn: &Connection, patient_id: &str) -> Result<(), ApplyError> {
    let mut stmt = conn.prepare_cached(SQL_PATIENT_LIFECYCLE)?;
    let rows = stmt
        .query_map(params![patient_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;

    let first_admit = rows.iter().filter(|r| r.1 == "admit").map(|r| r.2).min();
    let last_admit_seq = rows.iter().filter(|r| r.1 == "admit").map(|r| r.0).max();
    let (Some(first_admit), Some(last_admit_seq)) = (first_admit, last_admit_seq) else {
        tracing::info!(
            patient_id,
            "discharge stored for a patient not admitted (yet)"
        );
        return Ok(());
    };
    let latest = rows.iter().max_by_key(|r| (r.2, r.0));
    let discharged_at = latest.filter(|r| r.1 == "discharge").map(|r| r.2);

    conn.prepare_cached(
        "INSERT INTO patients (patient_id, first_admitted_at_ms, last_admit_seq, discharged_at_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (patient_id) DO UPDATE SET
             first_admitted_at_ms = excluded.first_admitted_at_ms,
             last_admit_seq = excluded.last_admit_seq,
             discharged_at_ms = excluded.discharged_at_ms",
    )?
    .execute(params![
        patient_id,
        first_admit,
        last_admit_seq,
        discharged_at
    ])?;
    Ok(())
}

/// Whether the same message (topic, code and kept bytes, full length) is
/// already stored as rejected: the retained copy of a message is delivered
/// again at every subscription. (A scan of `rejected`, made only for
/// retained deliveries.)
fn rejection_stored(conn: &Connection, rec: &RejectedRecord) -> Result<bool, ApplyError> {
    let kept = &rec.payload[..rec.payload.len().min(REJECTED_PAYLOAD_KEEP_BYTES)];
    let full_len = i64::try_from(rec.payload.len())
        .map_err(|_| invalid("rejected payload length does not fit i64"))?;
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM rejected
             WHERE topic = ?1 AND code = ?2 AND payload_len = ?3 AND payload = ?4 LIMIT 1",
        )?
        .query_row(
            params![rec.topic, rec.code.as_str(), full_len, kept],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn insert_rejected(conn: &Connection, rec: &RejectedRecord) -> Result<(), ApplyError> {
    let kept = &rec.payload[..rec.payload.len().min(REJECTED_PAYLOAD_KEEP_BYTES)];
    let full_len = i64::try_from(rec.payload.len())
        .map_err(|_| invalid("rejected payload length does not fit i64"))?;
    conn.prepare_cached(
        "INSERT INTO rejected (topic, received_at_ms, code, field, message, payload, payload_len)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        rec.topic,
        rec.received_at_ms,
        rec.code.as_str(),
        rec.field,
        rec.message,
        kept,
        full_len,
    ])?;
    Ok(())
}

/// Refuse non-finite points before anything is written.
fn check_history(rows: &[HistoryRow]) -> Result<(), ApplyError> {
    if let Some(bad) = rows
        .iter()
        .find(|r| !r.cp_ng_per_ml.is_finite() || !r.ce_ng_per_ml.is_finite())
    {
        return Err(invalid(format!(
            "history point for {} at {} is not finite (cp {}, ce {})",
            bad.patient_id, bad.t_ms, bad.cp_ng_per_ml, bad.ce_ng_per_ml
        )));
    }
    Ok(())
}

fn upsert_history(conn: &Connection, rows: &[HistoryRow]) -> Result<(), ApplyError> {
    check_history(rows)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO concentration_history (patient_id, t_ms, cp_ng_per_ml, ce_ng_per_ml)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (patient_id, t_ms) DO UPDATE SET
             cp_ng_per_ml = excluded.cp_ng_per_ml, ce_ng_per_ml = excluded.ce_ng_per_ml",
    )?;
    for r in rows {
        stmt.execute(params![
            r.patient_id,
            r.t_ms,
            r.cp_ng_per_ml,
            r.ce_ng_per_ml
        ])?;
    }
    Ok(())
}
