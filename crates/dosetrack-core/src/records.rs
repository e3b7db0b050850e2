//! The records the core hands to the store and gets back from it: an
//! accepted input ([`InputRecord`]) with what storing it projects
//! ([`Projection`]), a refused message ([`RejectedRecord`]), computed
//! concentration points and published states, one atomic alerts write
//! ([`AlertWrite`]), and an input as stored ([`StoredInput`]).
//!
//! They are plain data: the shell's store persists them, the core builds
//! and reads them. Nothing here knows SQLite. The alerts write is defined
//! by [`crate::alerts`], which builds it, and re-exported here (imports
//! point from here to the alerts, never back).

pub use crate::alerts::{AlertWrite, CommandOutcome, OutboxKind, OutboxRow};
use crate::contract::ErrorCode;

/// Most raw bytes of a rejected payload kept in `rejected.payload` (the
/// contract's payload limit, 64 KiB); the full length goes to `payload_len`.
pub const REJECTED_PAYLOAD_KEEP_BYTES: usize = crate::contract::MAX_PAYLOAD_BYTES;

/// Who an input comes from; with the input's `id` it identifies the input
/// (the contract: ids are unique per device, per patient, per alert).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// `patients/{patient_id}/…` topics.
    Patient(String),
    /// `devices/{device_id}/events`.
    Device(String),
    /// `alerts/{alert_id}/commands`.
    Alert(String),
}

impl Source {
    /// The `source_kind` column: `patient`, `device` or `alert`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Patient(_) => "patient",
            Source::Device(_) => "device",
            Source::Alert(_) => "alert",
        }
    }

    /// The source's identifier (patient, device or alert id).
    pub fn id(&self) -> &str {
        match self {
            Source::Patient(id) | Source::Device(id) | Source::Alert(id) => id,
        }
    }

    /// The source from its stored `source_kind` and `source_id`, if the
    /// kind is one of the three.
    pub fn from_parts(kind: &str, id: String) -> Option<Source> {
        match kind {
            "patient" => Some(Source::Patient(id)),
            "device" => Some(Source::Device(id)),
            "alert" => Some(Source::Alert(id)),
            _ => None,
        }
    }
}

/// What storing an input changes besides the `inputs` log (applied in the
/// same transaction, and only when the input is new).
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// Nothing (doses, alert commands).
    None,
    /// `admit`: creates or updates `patients` and adds a
    /// `patient_covariates` row valid from the input's occurrence time.
    Admit(AdmitProjection),
    /// `discharge`: marks the patient discharged (when it is the latest
    /// admit/discharge in occurrence time).
    Discharge,
    /// Any device event: updates `devices`, and when `patient_id` (from the
    /// payload) differs from the device's association at the event's time,
    /// adds a `device_associations` row.
    DeviceEvent { patient_id: Option<String> },
}

/// The covariates of an `admit`, as validated by `contract`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmitProjection {
    pub weight_kg: f64,
    pub age_years: Option<f64>,
    pub sex: Option<String>,
    pub height_cm: Option<f64>,
    pub model: Option<String>,
    pub setting: String,
    pub comedications: Vec<String>,
    /// The target overrides as a JSON object (`{}` when none).
    pub targets_json: String,
}

/// An accepted (valid) input, as the `inputs` log holds it.
///
/// `P` is what storing it changes besides the log: a [`Projection`] for an
/// input on its way to the store (the default), `()` for one read back
/// ([`StoredInput`]: its projection was applied when it was stored, and is
/// not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct InputRecord<P = Projection> {
    pub topic: String,
    pub source: Source,
    /// The payload's `id`.
    pub input_id: String,
    /// `admit`, `discharge`, `dose`, a device event kind
    /// (`infusion_started`, …) or `alert_command`.
    pub kind: String,
    /// From the topic (patient messages) or the payload (device events).
    pub patient_id: Option<String>,
    /// From the topic (device events).
    pub device_id: Option<String>,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
    /// The raw payload as received (must be JSON).
    pub payload: String,
    /// The parsed fields as JSON (must be JSON).
    pub parsed_json: String,
    pub projection: P,
}

impl InputRecord {
    /// The record as the store gives it back: the same fields, its
    /// projection applied and not kept.
    pub fn to_stored(&self) -> InputRecord<()> {
        InputRecord {
            topic: self.topic.clone(),
            source: self.source.clone(),
            input_id: self.input_id.clone(),
            kind: self.kind.clone(),
            patient_id: self.patient_id.clone(),
            device_id: self.device_id.clone(),
            occurred_at_ms: self.occurred_at_ms,
            received_at_ms: self.received_at_ms,
            payload: self.payload.clone(),
            parsed_json: self.parsed_json.clone(),
            projection: (),
        }
    }
}

/// A refused message, kept for audit.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    pub topic: String,
    pub received_at_ms: i64,
    pub code: ErrorCode,
    pub field: Option<String>,
    pub message: String,
    /// The raw bytes; any content, any length (only the first
    /// [`REJECTED_PAYLOAD_KEEP_BYTES`] are kept).
    pub payload: Vec<u8>,
}

/// One computed concentration point.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub patient_id: String,
    pub t_ms: i64,
    pub cp_ng_per_ml: f64,
    pub ce_ng_per_ml: f64,
}

/// The last state message published for a patient.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub patient_id: String,
    pub time_ms: i64,
    /// The message as published (JSON).
    pub payload: String,
}

/// An input as stored: its arrival sequence number and the record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInput {
    pub seq: i64,
    pub record: InputRecord<()>,
}
