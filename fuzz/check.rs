//! The consistency check shared by the `intake` fuzz target
//! (`fuzz/fuzz_targets/intake.rs`) and the stable regression test that
//! replays the fuzz corpus (`tests/it/hostile.rs`): one (topic, payload)
//! through the pure [`intake::intake_with`], with and without a device
//! allow-list, and every decision checked for consistency. Any accepted
//! input is then applied to a tracker that has a patient and a running pump,
//! and the state is computed: nothing from outside may panic anywhere on the
//! daemon's path.
//!
//! Input format of one case: the topic, a `\n`, then the payload bytes
//! (no `\n`: the whole case is a payload on `dosetrack/v1/patients/P-1/doses`).

use dosetrack_core::contract::{ErrorCode, InputTopic, MAX_PAYLOAD_BYTES};
use dosetrack_core::drug::DrugFile;
use dosetrack_core::intake::{self, Intake, IntakeRules, EXCERPT_BYTES};
use dosetrack_core::patient::Formulary;
use dosetrack_core::records::StoredInput;
use dosetrack_core::tracker::{TrackedInput, Tracker, TrackerConfig};
use dosetrack_core::vocab::TimeMs;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

/// The receive time of every case: 2026-11-27T10:00:00Z.
pub(super) const NOW_MS: TimeMs = 1_795_773_600_000;
pub(super) const PREFIX: &str = "dosetrack";
/// The devices on the allow-list of the second run.
pub(super) const ALLOWED: [&str; 2] = ["pump-1", "patch-1"];

struct Fixture {
    formulary: Arc<Formulary>,
    /// P-1 admitted two hours before [`NOW_MS`], pump-1 running for them.
    tracker: Tracker,
    open: IntakeRules,
    listed: IntakeRules,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let formulary = Arc::new(Formulary::new(DrugFile::builtin().unwrap()).unwrap());
        let mut tracker = Tracker::new(formulary.clone(), TrackerConfig::default());
        let open = IntakeRules {
            max_future_skew_ms: 300_000,
            max_past_age_ms: Some(720 * 3_600_000),
            ..IntakeRules::default()
        };
        let setup: [(&str, &str); 2] = [
            (
                "dosetrack/v1/patients/P-1/admit",
                r#"{"id":"adm-1","time":"2026-11-27T08:00:00Z","weight_kg":72,"age_years":41}"#,
            ),
            (
                "dosetrack/v1/devices/pump-1/events",
                r#"{"id":"e-1","time":"2026-11-27T08:05:00Z","kind":"infusion_started","patient_id":"P-1","rate_mg_per_h":10}"#,
            ),
        ];
        for (seq, (topic, payload)) in setup.into_iter().enumerate() {
            match intake::intake_with(PREFIX, topic, payload.as_bytes(), NOW_MS, &open, &formulary)
            {
                Intake::Accept { topic, input, .. } => {
                    tracker.apply(TrackedInput {
                        seq: seq as i64 + 1,
                        topic,
                        input: *input,
                    });
                }
                other => panic!("fixture input refused: {other:?}"),
            }
        }
        let listed = IntakeRules {
            allowed_devices: Some(Arc::new(ALLOWED.iter().map(|s| s.to_string()).collect::<HashSet<_>>())),
            ..open.clone()
        };
        Fixture {
            formulary,
            tracker,
            open,
            listed,
        }
    })
}

/// Split a case into (topic, payload).
pub(super) fn split(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("dosetrack/v1/patients/P-1/doses".to_owned(), data),
    }
}

/// What one case gave, for tests that want more than "no panic".
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    Accepted,
    Rejected(ErrorCode, Option<String>),
}

/// Check one case; panics on any inconsistency. Returns the outcome
/// without the allow-list.
pub(super) fn check_case(data: &[u8]) -> Outcome {
    let (topic, payload) = split(data);
    check(&topic, payload)
}

/// Check one (topic, payload); panics on any inconsistency.
pub(super) fn check(topic: &str, payload: &[u8]) -> Outcome {
    let f = fixture();
    let open = decide(f, topic, payload, &f.open);
    let listed = decide(f, topic, payload, &f.listed);
    // The allow-list only ever turns a device event into unknown_device.
    match (&open, &listed) {
        (a, b) if a == b => {}
        (_, Outcome::Rejected(ErrorCode::UnknownDevice, _)) => {
            let device = topic.split('/').nth(3).unwrap_or_default();
            assert!(
                topic.starts_with("dosetrack/v1/devices/") && !ALLOWED.contains(&device),
                "unknown_device for an allowed device or a non-device topic: {topic}"
            );
        }
        (a, b) => panic!("the allow-list changed {a:?} into {b:?} on {topic}"),
    }
    open
}

fn decide(f: &Fixture, topic: &str, payload: &[u8], rules: &IntakeRules) -> Outcome {
    let decision = intake::intake_with(PREFIX, topic, payload, NOW_MS, rules, &f.formulary);
    // Pure and deterministic.
    assert_eq!(
        decision,
        intake::intake_with(PREFIX, topic, payload, NOW_MS, rules, &f.formulary)
    );
    match decision {
        Intake::Reject { record, notice } => {
            assert_eq!(record.code, notice.error.code);
            assert_eq!(record.field, notice.error.field);
            assert_eq!(record.message, notice.error.message);
            assert!(!record.message.is_empty());
            assert_ne!(record.code, ErrorCode::DuplicateConflict, "needs the store");
            assert_eq!(
                record.payload, payload,
                "the rejected record keeps the bytes"
            );
            assert_eq!(record.topic, topic);
            assert_eq!(notice.topic, topic);
            assert!(notice.payload_excerpt.chars().count() <= EXCERPT_BYTES + 1);
            if record.code == ErrorCode::TooLarge {
                assert!(payload.len() > MAX_PAYLOAD_BYTES);
            }
            if payload.len() > MAX_PAYLOAD_BYTES {
                assert!(
                    matches!(
                        record.code,
                        ErrorCode::TooLarge | ErrorCode::BadTopic | ErrorCode::UnknownDevice
                    ),
                    "{:?} for an over-size payload",
                    record.code
                );
            }
            let json = serde_json::to_value(&notice).unwrap();
            assert_eq!(json["error"]["code"], record.code.as_str());
            Outcome::Rejected(record.code, record.field)
        }
        Intake::Accept {
            record,
            topic: parsed,
            input,
        } => {
            assert!(payload.len() <= MAX_PAYLOAD_BYTES);
            assert_eq!(
                record.payload.as_bytes(),
                payload,
                "accepted payload stored verbatim"
            );
            assert_eq!(record.topic, topic);
            assert!(record.occurred_at_ms <= NOW_MS + rules.max_future_skew_ms);
            if let Some(age) = rules.max_past_age_ms {
                assert!(record.occurred_at_ms >= NOW_MS - age);
            }
            if let (InputTopic::DeviceEvent { device_id }, Some(allowed)) =
                (&parsed, &rules.allowed_devices)
            {
                assert!(allowed.contains(device_id));
            }
            let _: serde_json::Value = serde_json::from_str(&record.parsed_json).unwrap();
            // What is stored replays to the same input.
            let stored = StoredInput {
                seq: 100,
                record: record.to_stored(),
            };
            let back = intake::replay(&stored).unwrap();
            assert_eq!(back.topic, parsed);
            assert_eq!(back.input, *input);
            // Applied, the tracker still computes finite states.
            let mut tracker = f.tracker.clone();
            let dirty = tracker.apply(back);
            for patient in dirty.iter().map(String::as_str).chain(["P-1"]) {
                if let Some(state) = tracker.state(patient, NOW_MS) {
                    let json = serde_json::to_value(&state).unwrap();
                    for key in ["cp_ng_per_ml", "ce_ng_per_ml"] {
                        let x = json[key].as_f64().unwrap();
                        assert!(x.is_finite() && x >= 0.0, "{key} = {x} for {patient}");
                    }
                }
            }
            Outcome::Accepted
        }
    }
}
