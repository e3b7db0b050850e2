//! The contract's unit tests, one file per module, with the fixtures they
//! share: the contract's examples verbatim and payload builders.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::json::mark_non_finite_numbers;
use super::*;
use crate::vocab::{parse_rfc3339_ms, Route, Setting, Sex, TimeMs};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

mod command;
mod device;
mod limits;
mod names;
mod patient;
mod payload;
mod simulation;
mod topic;

const PREFIX: &str = "dosetrack";

const T0: &str = "2026-11-27T10:00:00Z";

fn patient(kind: &str) -> InputTopic {
    let patient_id = "P-1001".to_owned();
    match kind {
        "admit" => InputTopic::Admit { patient_id },
        "discharge" => InputTopic::Discharge { patient_id },
        _ => InputTopic::Dose { patient_id },
    }
}

fn device() -> InputTopic {
    InputTopic::DeviceEvent {
        device_id: "pump-7".to_owned(),
    }
}

fn alert() -> InputTopic {
    InputTopic::AlertCommand {
        alert_id: "al-1".to_owned(),
    }
}

fn accept(topic: &InputTopic, payload: &str) -> Input {
    match parse_payload(topic, payload.as_bytes()) {
        Ok(input) => input,
        Err(e) => panic!("rejected {payload}: {e}"),
    }
}

fn reject(topic: &InputTopic, payload: &[u8]) -> Rejection {
    match parse_payload(topic, payload) {
        Ok(input) => panic!("accepted {}: {input:?}", String::from_utf8_lossy(payload)),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_rejects(topic: &InputTopic, payload: &str, code: ErrorCode, field: Option<&str>) {
    let e = reject(topic, payload.as_bytes());
    assert_eq!(
        (e.code, e.field.as_deref()),
        (code, field),
        "payload {payload}: {e}"
    );
}

fn obj(json: &str) -> Map<String, Value> {
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => m,
        other => panic!("test fixture is not an object: {other:?}"),
    }
}

/// `base` with `field` (a top-level name or `targets.name`) set to the
/// raw JSON text `raw`, or removed when `raw` is `None`.
fn with_raw(base: &str, field: &str, raw: Option<&str>) -> String {
    let mut m = obj(base);
    const SLOT: &str = "__raw_slot__";
    let (container, key) = match field.split_once('.') {
        Some((outer, inner)) => match m.get_mut(outer) {
            Some(Value::Object(inner_obj)) => (inner_obj, inner),
            _ => panic!("fixture lacks object {outer}"),
        },
        None => (&mut m, field),
    };
    match raw {
        Some(_) => {
            container.insert(key.to_owned(), Value::String(SLOT.to_owned()));
        }
        None => {
            container.remove(key);
        }
    }
    let text = Value::Object(m).to_string();
    match raw {
        Some(raw) => text.replace(&format!("\"{SLOT}\""), raw),
        None => text,
    }
}

// Contract examples, verbatim (placeholder times "…" filled in).

const ADMIT_EXAMPLE: &str = r#"{"id": "adm-1", "time": "2026-11-27T08:00:00Z",
 "weight_kg": 72.5, "age_years": 41, "sex": "female", "height_cm": 168,
 "model": "domino",
 "setting": "ward",
 "comedications": ["clarithromycin", "midazolam"],
 "targets": {"analgesic_floor_ng_per_ml": 100, "ceiling_ng_per_ml": 500}}"#;

const DOSE_EXAMPLE_1: &str =
    r#"{"id": "mar-7", "time": "2026-11-27T09:00:00Z", "route": "intranasal", "amount_mg": 50}"#;

const DOSE_EXAMPLE_2: &str = r#"{"id": "mar-8", "time": "2026-11-27T09:30:00Z", "route": "iv_infusion", "rate_mg_per_h": 20, "duration_min": 120}"#;

const PATCH_DOSE: &str = r#"{"id": "mar-9", "time": "2026-11-27T09:30:00Z", "route": "transdermal", "release_rate_mg_per_h": 1.04, "wear_h": 24}"#;

const CMD_ACK: &str =
    r#"{"id": "cmd-1", "time": "2026-11-27T10:00:00Z", "action": "acknowledge", "by": "rn-4471"}"#;

const CMD_PAUSE: &str = r#"{"id": "cmd-2", "time": "2026-11-27T10:00:00Z", "action": "pause", "minutes": 15, "by": "rn-4471"}"#;

const DISCHARGE: &str = r#"{"id": "dis-1", "time": "2026-11-27T10:00:00Z"}"#;

const STARTED: &str = r#"{"id": "e-9", "time": "2026-11-27T10:00:00Z", "kind": "infusion_started", "patient_id": "P-1001", "rate_mg_per_h": 20}"#;

const STARTED_ML: &str = r#"{"id": "e-9", "time": "2026-11-27T10:00:00Z", "kind": "infusion_started", "rate_ml_per_h": 10, "concentration_mg_per_ml": 2}"#;

const BOLUS: &str = r#"{"id": "e-10", "time": "2026-11-27T10:00:00Z", "kind": "bolus_delivered", "patient_id": "P-1001", "amount_mg": 5, "source": "pca"}"#;

const HEARTBEAT_PUMP: &str = r#"{"id": "e-11", "time": "2026-11-27T10:00:00Z", "kind": "heartbeat", "delivered_total_mg": 250}"#;

const HEARTBEAT_PATCH: &str = r#"{"id": "e-12", "time": "2026-11-27T10:00:00Z", "kind": "heartbeat", "skin_contact": true, "skin_temp_c": 33.5}"#;

const PATCH_APPLIED: &str = r#"{"id": "e-13", "time": "2026-11-27T10:00:00Z", "kind": "patch_applied", "patient_id": "P-1001", "release_rate_mg_per_h": 1.04, "wear_h": 24, "site": "left upper arm"}"#;

const ALARM: &str = r#"{"id": "e-14", "time": "2026-11-27T10:00:00Z", "kind": "alarm", "code": "occlusion", "message": "downstream occlusion"}"#;

fn t(text: &str) -> TimeMs {
    match parse_rfc3339_ms(text) {
        Ok(ms) => ms,
        Err(e) => panic!("{e}"),
    }
}

fn event(payload: &str) -> DeviceEvent {
    match accept(&device(), payload) {
        Input::DeviceEvent(e) => e,
        other => panic!("not a device event: {other:?}"),
    }
}

fn accepts_payload(topic: &InputTopic, payload: &str) {
    accept(topic, payload);
}
