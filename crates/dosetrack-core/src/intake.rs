//! Intake: one MQTT message in, one decision out — what to store, and what
//! to tell the world. Pure: the daemon passes the receive time.
//!
//! Order of checks, each failure a rejection with the contract's code:
//! topic (`bad_topic`), the device allow-list (`unknown_device`, dosetrack's
//! addition; only when [`IntakeRules::allowed_devices`] is set), size
//! (`too_large`), JSON and fields (`invalid_json`, `not_an_object`,
//! `missing_field`, `invalid_value`, `unknown_kind`), occurrence time ahead
//! of the clock (`clock_skew`) or too far behind it (`invalid_value` on
//! `time`, when [`IntakeRules::max_past_age_ms`] is set), for an alert
//! command its operator (`unknown_operator`, with
//! [`IntakeRules::operators`]) and age (`stale_command`, with
//! [`IntakeRules::max_command_age_ms`]), and what only the
//! drug file can judge (an admission's model and targets: `invalid_value`).
//!
//! A device event's `device_id` comes from the topic only (contract): a
//! `device_id` field in the payload is an unknown field, ignored like any
//! other, even when it names another device. The raw payload is stored, so
//! the disagreement stays visible in the audit trail. `duplicate_conflict` needs the store and is decided
//! there. Every message ends up stored — accepted in `inputs`, refused in
//! `rejected` — before it is acknowledged.

use crate::contract::{self, ErrorCode, Input, InputTopic, Rejection};
use crate::patient::Formulary;
use crate::records::{
    AdmitProjection, InputRecord, Projection, RejectedRecord, Source, StoredInput,
};
use crate::tracker::{check_input, TrackedInput};
use crate::vocab::{format_rfc3339, TimeMs};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;

/// What to do with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// Valid: store it; once stored (and not a redelivery), apply it.
    Accept {
        record: Box<InputRecord>,
        topic: InputTopic,
        input: Box<Input>,
    },
    /// Refused: store it as rejected and publish the notice.
    Reject {
        record: RejectedRecord,
        notice: RejectedNotice,
    },
}

/// The `rejected` topic's message (contract §Rejections).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedNotice {
    pub topic: String,
    pub received_at: String,
    pub error: RejectedError,
    pub payload_excerpt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedError {
    pub code: ErrorCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// Bytes of the payload quoted in a rejection notice.
pub const EXCERPT_BYTES: usize = 200;

/// The configurable checks of [`intake_with`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntakeRules {
    /// Inputs dated further ahead of the receive time are `clock_skew`.
    pub max_future_skew_ms: i64,
    /// Inputs dated further behind the receive time are `invalid_value` on
    /// `time`. `None`: no bound.
    pub max_past_age_ms: Option<i64>,
    /// Devices whose events are accepted. `None`: every device (the
    /// contract's behaviour); otherwise any other device's event is
    /// `unknown_device`.
    pub allowed_devices: Option<Arc<HashSet<String>>>,
    /// Operators whose alert commands are accepted (`by`). `None`: every
    /// operator (the contract's behaviour); otherwise any other is
    /// `unknown_operator`.
    pub operators: Option<Arc<HashSet<String>>>,
    /// Alert commands dated further behind the receive time are
    /// `stale_command`. `None`: no bound (the past bound still applies).
    pub max_command_age_ms: Option<i64>,
}

impl IntakeRules {
    /// Only the contract's clock-skew check: no past bound, no allow-list.
    pub fn with_skew(max_future_skew_ms: i64) -> IntakeRules {
        IntakeRules {
            max_future_skew_ms,
            ..IntakeRules::default()
        }
    }
}

/// Decide what to do with a message received at `received_at_ms`, with the
/// contract's checks only (no past bound, every device accepted).
pub fn intake(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    received_at_ms: TimeMs,
    max_future_skew_ms: i64,
    formulary: &Formulary,
) -> Intake {
    intake_with(
        prefix,
        topic,
        payload,
        received_at_ms,
        &IntakeRules::with_skew(max_future_skew_ms),
        formulary,
    )
}

/// Decide what to do with a message received at `received_at_ms` under
/// `rules`.
pub fn intake_with(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    received_at_ms: TimeMs,
    rules: &IntakeRules,
    formulary: &Formulary,
) -> Intake {
    let reject = |r: Rejection| reject(topic, payload, received_at_ms, r);
    let parsed_topic = match contract::parse_topic(prefix, topic) {
        Ok(t) => t,
        Err(r) => return reject(r),
    };
    if let (InputTopic::DeviceEvent { device_id }, Some(allowed)) =
        (&parsed_topic, &rules.allowed_devices)
    {
        if !allowed.contains(device_id) {
            return reject(Rejection::new(
                ErrorCode::UnknownDevice,
                Some("device_id"),
                format!(
                    "device '{device_id}' is not on the daemon's device allow-list \
                     ([devices] allow / allow_file)"
                ),
            ));
        }
    }
    let input = match contract::parse_payload(&parsed_topic, payload) {
        Ok(i) => i,
        Err(r) => return reject(r),
    };
    let time_ms = occurred_at(&input);
    if let Err(r) = contract::check_clock_skew(time_ms, received_at_ms, rules.max_future_skew_ms) {
        return reject(r);
    }
    if let Input::AlertCommand(cmd) = &input {
        if let Err(r) = contract::check_operator(cmd, rules.operators.as_deref()) {
            return reject(r);
        }
        if let Err(r) = contract::check_command_age(cmd, received_at_ms, rules.max_command_age_ms) {
            return reject(r);
        }
    }
    if let Err(r) = contract::check_past_age(time_ms, received_at_ms, rules.max_past_age_ms) {
        return reject(r);
    }
    if let Err(r) = check_input(formulary, &input) {
        return reject(r);
    }
    // parse_payload accepted it, so it is UTF-8 JSON.
    let text = String::from_utf8_lossy(payload).into_owned();
    let record = record_for(topic, &parsed_topic, &input, text, received_at_ms);
    Intake::Accept {
        record: Box::new(record),
        topic: parsed_topic,
        input: Box::new(input),
    }
}

/// The rejection to store and publish.
pub fn reject(topic: &str, payload: &[u8], received_at_ms: TimeMs, r: Rejection) -> Intake {
    let notice = RejectedNotice {
        topic: topic.to_owned(),
        received_at: format_rfc3339(received_at_ms),
        error: RejectedError {
            code: r.code,
            field: r.field.clone(),
            message: r.message.clone(),
        },
        payload_excerpt: excerpt(payload),
    };
    Intake::Reject {
        record: RejectedRecord {
            topic: topic.to_owned(),
            received_at_ms,
            code: r.code,
            field: r.field,
            message: r.message,
            payload: payload.to_vec(),
        },
        notice,
    }
}

/// The first [`EXCERPT_BYTES`] of a payload as text (invalid UTF-8
/// replaced), with `…` when cut.
pub fn excerpt(payload: &[u8]) -> String {
    let cut = payload.len() > EXCERPT_BYTES;
    let mut s = String::from_utf8_lossy(&payload[..payload.len().min(EXCERPT_BYTES)]).into_owned();
    if cut {
        s.push('…');
    }
    s
}

/// When the input happened.
pub fn occurred_at(input: &Input) -> TimeMs {
    match input {
        Input::Admit(a) => a.time_ms,
        Input::Discharge(d) => d.time_ms,
        Input::Dose(d) => d.time_ms,
        Input::DeviceEvent(e) => e.time_ms,
        Input::AlertCommand(c) => c.time_ms,
    }
}

fn record_for(
    topic: &str,
    parsed_topic: &InputTopic,
    input: &Input,
    payload: String,
    received_at_ms: TimeMs,
) -> InputRecord {
    let (source, patient_id, device_id) = match parsed_topic {
        InputTopic::Admit { patient_id }
        | InputTopic::Discharge { patient_id }
        | InputTopic::Dose { patient_id } => (
            Source::Patient(patient_id.clone()),
            Some(patient_id.clone()),
            None,
        ),
        InputTopic::DeviceEvent { device_id } => {
            let pid = match input {
                Input::DeviceEvent(e) => e.patient_id.clone(),
                _ => None,
            };
            (
                Source::Device(device_id.clone()),
                pid,
                Some(device_id.clone()),
            )
        }
        InputTopic::AlertCommand { alert_id } => (Source::Alert(alert_id.clone()), None, None),
    };
    let (input_id, kind, projection) = match input {
        Input::Admit(a) => (
            a.id.clone(),
            "admit".to_owned(),
            Projection::Admit(AdmitProjection {
                weight_kg: a.weight_kg,
                age_years: a.age_years,
                sex: a.sex.map(|s| match s {
                    crate::vocab::Sex::Female => "female".to_owned(),
                    crate::vocab::Sex::Male => "male".to_owned(),
                }),
                height_cm: a.height_cm,
                model: a.model.clone(),
                setting: a.setting.as_str().to_owned(),
                comedications: a.comedications.clone(),
                targets_json: serde_json::to_string(&a.targets).unwrap_or_else(|_| "{}".to_owned()),
            }),
        ),
        Input::Discharge(d) => (d.id.clone(), "discharge".to_owned(), Projection::Discharge),
        Input::Dose(d) => (d.id.clone(), "dose".to_owned(), Projection::None),
        Input::DeviceEvent(e) => (
            e.id.clone(),
            e.kind.kind_name().to_owned(),
            Projection::DeviceEvent {
                patient_id: e.patient_id.clone(),
            },
        ),
        Input::AlertCommand(c) => (c.id.clone(), "alert_command".to_owned(), Projection::None),
    };
    InputRecord {
        topic: topic.to_owned(),
        source,
        input_id,
        kind,
        patient_id,
        device_id,
        occurred_at_ms: occurred_at(input),
        received_at_ms,
        payload,
        parsed_json: serde_json::to_string(input).unwrap_or_else(|_| "null".to_owned()),
        projection,
    }
}

/// Re-read a stored input for the tracker (at start, to rebuild state).
/// The stored topic carries the prefix it arrived with. `Err` when the
/// stored text no longer parses (a contract change between versions):
/// reported, never silently dropped.
pub fn replay(stored: &StoredInput) -> Result<TrackedInput, Rejection> {
    let record = &stored.record;
    let prefix = contract::prefix_of(&record.topic).ok_or_else(|| Rejection {
        code: ErrorCode::BadTopic,
        field: None,
        message: format!("stored topic '{}' has no /v1/ segment", record.topic),
    })?;
    let topic = contract::parse_topic(prefix, &record.topic)?;
    let input = contract::parse_payload(&topic, record.payload.as_bytes())?;
    Ok(TrackedInput {
        seq: stored.seq,
        topic,
        input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drug::DrugFile;
    use crate::patient::Formulary;
    use crate::vocab::parse_rfc3339_ms;

    fn tracker() -> Formulary {
        Formulary::new(DrugFile::builtin().unwrap()).unwrap()
    }

    fn now() -> TimeMs {
        parse_rfc3339_ms("2026-11-27T10:00:00Z").unwrap()
    }

    fn code_of(i: &Intake) -> Option<ErrorCode> {
        match i {
            Intake::Reject { record, .. } => Some(record.code),
            Intake::Accept { .. } => None,
        }
    }

    #[test]
    fn accepted_admit_carries_its_projection() {
        let tr = tracker();
        let payload = br#"{"id":"adm-1","time":"2026-11-27T08:00:00Z","weight_kg":72.5,"age_years":41,"sex":"female","comedications":["midazolam"]}"#;
        let i = intake(
            "dosetrack",
            "dosetrack/v1/patients/P-1/admit",
            payload,
            now(),
            300_000,
            &tr,
        );
        let Intake::Accept { record, .. } = i else {
            panic!("{i:?}")
        };
        assert_eq!(record.source, Source::Patient("P-1".into()));
        assert_eq!(record.kind, "admit");
        assert!(
            matches!(&record.projection, Projection::Admit(a) if a.weight_kg == 72.5 && a.sex.as_deref() == Some("female"))
        );
    }

    #[test]
    fn each_check_rejects_with_its_code() {
        let tr = tracker();
        let cases: [(&str, &[u8], ErrorCode); 7] = [
            (
                "dosetrack/v1/patients/P 1/admit",
                b"{}",
                ErrorCode::BadTopic,
            ),
            (
                "dosetrack/v1/patients/P-1/doses",
                b"{not json",
                ErrorCode::InvalidJson,
            ),
            (
                "dosetrack/v1/patients/P-1/doses",
                b"[1]",
                ErrorCode::NotAnObject,
            ),
            (
                "dosetrack/v1/patients/P-1/doses",
                br#"{"id":"x","route":"oral","amount_mg":5}"#,
                ErrorCode::MissingField,
            ),
            (
                "dosetrack/v1/devices/pump-1/events",
                br#"{"id":"x","time":"2026-11-27T09:00:00Z","kind":"teleport"}"#,
                ErrorCode::UnknownKind,
            ),
            (
                "dosetrack/v1/patients/P-1/doses",
                br#"{"id":"x","time":"2026-11-27T10:06:00Z","route":"oral","amount_mg":5}"#,
                ErrorCode::ClockSkew,
            ),
            (
                "dosetrack/v1/patients/P-1/admit",
                br#"{"id":"x","time":"2026-11-27T09:00:00Z","weight_kg":70,"model":"nope"}"#,
                ErrorCode::InvalidValue,
            ),
        ];
        for (topic, payload, code) in cases {
            let i = intake("dosetrack", topic, payload, now(), 300_000, &tr);
            assert_eq!(
                code_of(&i),
                Some(code),
                "{topic} {}",
                String::from_utf8_lossy(payload)
            );
        }
        let big = vec![b' '; 70 * 1024];
        let i = intake(
            "dosetrack",
            "dosetrack/v1/patients/P-1/doses",
            &big,
            now(),
            300_000,
            &tr,
        );
        assert_eq!(code_of(&i), Some(ErrorCode::TooLarge));
        let Intake::Reject { notice, .. } = i else {
            panic!()
        };
        assert!(notice.payload_excerpt.ends_with('…'));
        assert_eq!(notice.payload_excerpt.chars().count(), EXCERPT_BYTES + 1);
    }

    #[test]
    fn the_allow_list_rejects_other_devices_before_reading_the_payload() {
        let tr = tracker();
        let rules = IntakeRules {
            max_future_skew_ms: 300_000,
            max_past_age_ms: None,
            allowed_devices: Some(Arc::new(HashSet::from(["pump-1".to_owned()]))),
            ..IntakeRules::default()
        };
        let event = br#"{"id":"e-1","time":"2026-11-27T09:00:00Z","kind":"heartbeat"}"#;
        let run = |topic: &str, payload: &[u8]| {
            intake_with("dosetrack", topic, payload, now(), &rules, &tr)
        };
        assert_eq!(
            code_of(&run("dosetrack/v1/devices/pump-1/events", event)),
            None
        );
        let i = run("dosetrack/v1/devices/pump-2/events", event);
        assert_eq!(code_of(&i), Some(ErrorCode::UnknownDevice));
        let Intake::Reject { notice, .. } = i else {
            panic!()
        };
        assert_eq!(notice.error.field.as_deref(), Some("device_id"));
        // Not even parsed: an unknown device's garbage is unknown_device.
        assert_eq!(
            code_of(&run("dosetrack/v1/devices/pump-2/events", b"\xff{")),
            Some(ErrorCode::UnknownDevice)
        );
        // A bad topic is still bad_topic; patient topics are not affected.
        assert_eq!(
            code_of(&run("dosetrack/v1/devices/pump 2/events", event)),
            Some(ErrorCode::BadTopic)
        );
        let dose = br#"{"id":"d-1","time":"2026-11-27T09:00:00Z","route":"oral","amount_mg":5}"#;
        assert_eq!(code_of(&run("dosetrack/v1/patients/P-1/doses", dose)), None);
        // The payload's device_id is ignored: the topic's device is the source.
        let claims_other =
            br#"{"id":"e-2","time":"2026-11-27T09:00:00Z","kind":"heartbeat","device_id":"pump-2"}"#;
        let Intake::Accept { record, .. } = run("dosetrack/v1/devices/pump-1/events", claims_other)
        else {
            panic!()
        };
        assert_eq!(record.device_id.as_deref(), Some("pump-1"));
        assert_eq!(record.source, Source::Device("pump-1".into()));
    }

    #[test]
    fn the_past_bound_refuses_ancient_times_as_invalid_time() {
        let tr = tracker();
        let rules = IntakeRules {
            max_future_skew_ms: 300_000,
            max_past_age_ms: Some(720 * 3_600_000),
            ..IntakeRules::default()
        };
        let dose =
            |time: &str| format!(r#"{{"id":"d-1","time":"{time}","route":"oral","amount_mg":5}}"#);
        let run = |time: &str| {
            intake_with(
                "dosetrack",
                "dosetrack/v1/patients/P-1/doses",
                dose(time).as_bytes(),
                now(),
                &rules,
                &tr,
            )
        };
        // 29 days back: late, but accepted.
        assert_eq!(code_of(&run("2026-10-29T10:00:00Z")), None);
        for ancient in [
            "2026-10-28T09:59:59Z",
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
        ] {
            let i = run(ancient);
            assert_eq!(code_of(&i), Some(ErrorCode::InvalidValue), "{ancient}");
            let Intake::Reject { notice, .. } = i else {
                panic!()
            };
            assert_eq!(notice.error.field.as_deref(), Some("time"));
        }
        // Without the bound (the plain `intake`), the contract accepts them.
        let i = intake(
            "dosetrack",
            "dosetrack/v1/patients/P-1/doses",
            dose("1970-01-01T00:00:00Z").as_bytes(),
            now(),
            300_000,
            &tr,
        );
        assert_eq!(code_of(&i), None);
    }

    #[test]
    fn commands_from_unknown_operators_or_too_old_are_refused() {
        let tr = tracker();
        let rules = IntakeRules {
            max_future_skew_ms: 300_000,
            max_past_age_ms: Some(720 * 3_600_000),
            operators: Some(Arc::new(HashSet::from(["rn-1".to_owned()]))),
            max_command_age_ms: Some(600_000),
            ..IntakeRules::default()
        };
        let cmd = |time: &str, by: &str| {
            format!(r#"{{"id":"c-1","time":"{time}","action":"acknowledge","by":"{by}"}}"#)
        };
        let run = |rules: &IntakeRules, payload: String| {
            intake_with(
                "dosetrack",
                "dosetrack/v1/alerts/al-1-0/commands",
                payload.as_bytes(),
                now(),
                rules,
                &tr,
            )
        };
        assert_eq!(
            code_of(&run(&rules, cmd("2026-11-27T09:59:00Z", "rn-1"))),
            None
        );
        // Exactly the maximum age is still accepted; a millisecond more is not.
        assert_eq!(
            code_of(&run(&rules, cmd("2026-11-27T09:50:00Z", "rn-1"))),
            None
        );
        let stale = run(&rules, cmd("2026-11-27T09:49:59.999Z", "rn-1"));
        assert_eq!(code_of(&stale), Some(ErrorCode::StaleCommand));
        let Intake::Reject { notice, .. } = stale else {
            panic!()
        };
        assert_eq!(notice.error.field.as_deref(), Some("time"));
        // 29 days back: within the past bound, but far too old for a command.
        assert_eq!(
            code_of(&run(&rules, cmd("2026-10-29T10:00:00Z", "rn-1"))),
            Some(ErrorCode::StaleCommand)
        );
        let stranger = run(&rules, cmd("2026-11-27T09:59:00Z", "rn-9"));
        assert_eq!(code_of(&stranger), Some(ErrorCode::UnknownOperator));
        let Intake::Reject { notice, .. } = stranger else {
            panic!()
        };
        assert_eq!(notice.error.field.as_deref(), Some("by"));
        // Other inputs are not affected by the operator list or the age.
        let dose = br#"{"id":"d-1","time":"2026-11-20T10:00:00Z","route":"oral","amount_mg":5}"#;
        let i = intake_with(
            "dosetrack",
            "dosetrack/v1/patients/P-1/doses",
            dose,
            now(),
            &rules,
            &tr,
        );
        assert_eq!(code_of(&i), None);
        // Without the settings, the contract's behaviour.
        let open = IntakeRules::with_skew(300_000);
        assert_eq!(
            code_of(&run(&open, cmd("2026-10-29T10:00:00Z", "anyone"))),
            None
        );
    }

    #[test]
    fn notices_quote_invalid_utf8_safely() {
        let tr = tracker();
        let i = intake(
            "dosetrack",
            "dosetrack/v1/patients/P-1/doses",
            &[0xff, 0xfe, b'{'],
            now(),
            300_000,
            &tr,
        );
        let Intake::Reject { notice, record } = i else {
            panic!()
        };
        assert_eq!(record.code, ErrorCode::InvalidJson);
        assert_eq!(record.payload, vec![0xff, 0xfe, b'{']);
        let json = serde_json::to_string(&notice).unwrap();
        assert!(json.contains("\"code\":\"invalid_json\""));
    }

    #[test]
    fn stored_inputs_replay_to_the_same_input() {
        let tr = tracker();
        let payload = br#"{"id":"e-1","time":"2026-11-27T09:00:00Z","kind":"infusion_started","patient_id":"P-1","rate_ml_per_h":10,"concentration_mg_per_ml":2}"#;
        let i = intake(
            "ward-7",
            "ward-7/v1/devices/pump-1/events",
            payload,
            now(),
            300_000,
            &tr,
        );
        let Intake::Accept {
            record,
            topic,
            input,
        } = i
        else {
            panic!()
        };
        let stored = StoredInput {
            seq: 42,
            record: record.to_stored(),
        };
        let back = replay(&stored).unwrap();
        assert_eq!((back.seq, back.topic, back.input), (42, topic, *input));
    }
}
