//! Issue #13 item 2 through the real binary and the shared Mosquitto: a
//! device event naming another patient than its device's never re-associates
//! the device (refused `association_conflict`, with a technical alert on the
//! device's patient), and a device that moves to another patient ends what
//! it was delivering to the first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common::blocking::BlockingClient;
use crate::mqtt_common::daemon::DaemonProcess;
use crate::mqtt_common::{poll_until, unique};
use dosetrack::vocab::{format_rfc3339, TimeMs};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;
const MIN: TimeMs = 60_000;
const H: TimeMs = 3_600_000;

fn ago(ms: TimeMs) -> String {
    format_rfc3339(chrono::Utc::now().timestamp_millis() - ms)
}

struct Ward {
    client: BlockingClient,
    prefix: String,
}

impl Ward {
    fn connect(prefix: &str) -> Ward {
        let filters = vec![
            format!("{prefix}/v1/status"),
            format!("{prefix}/v1/rejected"),
            format!("{prefix}/v1/patients/+/state"),
            format!("{prefix}/v1/patients/+/alerts"),
            format!("{prefix}/v1/devices/+/alerts"),
        ];
        Ward {
            client: BlockingClient::connect(BROKER, PORT, &unique("ward"), &filters),
            prefix: prefix.to_owned(),
        }
    }

    fn publish(&self, suffix: &str, payload: Value) {
        self.client
            .publish(format!("{}/v1/{suffix}", self.prefix), payload.to_string());
    }

    fn on(&self, suffix: &str) -> Vec<Value> {
        self.client.json_on(&format!("{}/v1/{suffix}", self.prefix))
    }

    fn wait_online(&self) {
        poll_until("status online", Duration::from_secs(20), || {
            self.on("status").iter().any(|v| v["state"] == "online")
        });
    }

    fn admit(&self, pid: &str, at: &str) {
        self.publish(
            &format!("patients/{pid}/admit"),
            json!({"id": unique("adm"), "time": at, "weight_kg": 70, "age_years": 40}),
        );
    }
}

fn daemon(dir: &Path, prefix: &str) -> DaemonProcess {
    let mut d = DaemonProcess::run(
        (BROKER, PORT),
        &dir.join("dosetrack.db"),
        prefix,
        &unique("d"),
        &[],
        dir,
    );
    d.spawn();
    d
}

/// Wait until `pred` holds or `timeout` passes, without failing.
fn wait_quietly(timeout: Duration, pred: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline && !pred() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sql_count(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The sequence: pump A runs 20 mg/h for patient A; one heartbeat
/// from pump A naming patient B, dated 2 h back; then `infusion_stopped`
/// without `patient_id`. A's infusion must end, B must get nothing, the
/// heartbeat is refused `association_conflict` and an alert is raised.
#[test]
fn a_heartbeat_naming_another_patient_never_moves_the_pump() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("assoc");
    let ward = Ward::connect(&prefix);
    let mut d = daemon(dir.path(), &prefix);
    ward.wait_online();

    ward.admit("P-A", &ago(4 * H));
    ward.admit("P-B", &ago(4 * H));
    ward.publish(
        "devices/pump-A/events",
        json!({"id": "start-1", "time": ago(3 * H), "kind": "infusion_started",
               "patient_id": "P-A", "rate_mg_per_h": 20}),
    );
    ward.publish(
        "devices/pump-A/events",
        json!({"id": "hb-1", "time": ago(2 * H), "kind": "heartbeat", "patient_id": "P-B"}),
    );
    ward.publish(
        "devices/pump-A/events",
        json!({"id": "stop-1", "time": ago(MIN), "kind": "infusion_stopped"}),
    );
    // Wait (at most 20 s) for the outcome the fix gives; assert below.
    wait_quietly(Duration::from_secs(20), || {
        !ward.on("rejected").is_empty()
            && ward
                .on("patients/P-A/state")
                .last()
                .is_some_and(|s| s["active_inputs"] == json!([]))
    });
    std::thread::sleep(Duration::from_secs(2));

    // A's infusion ended at the stop.
    let a = ward.on("patients/P-A/state").last().cloned().unwrap();
    assert_eq!(
        a["active_inputs"],
        json!([]),
        "A's infusion still runs after infusion_stopped: {a}"
    );
    // B got nothing: no delivery, no concentration.
    let b = ward.on("patients/P-B/state").last().cloned().unwrap();
    assert_eq!(b["active_inputs"], json!([]), "{b}");
    assert_eq!(b["ce_ng_per_ml"].as_f64(), Some(0.0), "B got a dose: {b}");

    // The heartbeat was refused association_conflict on patient_id.
    let rejected = ward.on("rejected");
    let conflict = rejected
        .iter()
        .find(|r| r["error"]["code"] == "association_conflict")
        .unwrap_or_else(|| panic!("no association_conflict rejection: {rejected:#?}"));
    assert_eq!(conflict["error"]["field"], "patient_id");
    assert!(conflict["payload_excerpt"]
        .as_str()
        .unwrap()
        .contains("hb-1"));

    // A technical alert on A (the device's patient), saying which model.
    poll_until(
        "association_conflict alert",
        Duration::from_secs(20),
        || {
            ward.on("patients/P-A/alerts")
                .iter()
                .any(|m| m["rule"] == "association_conflict" && m["phase"] == "raised")
        },
    );
    let alert = ward
        .on("patients/P-A/alerts")
        .into_iter()
        .find(|m| m["rule"] == "association_conflict")
        .unwrap();
    assert_eq!(alert["subject"], "pump-A");
    assert_eq!(alert["details"]["device_id"], "pump-A");
    assert_eq!(alert["details"]["named_patient_id"], "P-B");
    assert!(alert["details"]["model"].as_str().is_some(), "{alert}");
    assert!(alert["details"]["assumes"].as_str().is_some(), "{alert}");

    // Stored: the heartbeat as a rejection, never as an input; one
    // association only.
    d.terminate();
    let db = dir.path().join("dosetrack.db");
    assert_eq!(
        sql_count(&db, "SELECT count(*) FROM inputs WHERE input_id = 'hb-1'"),
        0
    );
    assert_eq!(
        sql_count(
            &db,
            "SELECT count(*) FROM rejected WHERE code = 'association_conflict'"
        ),
        1
    );
    assert_eq!(
        sql_count(
            &db,
            "SELECT count(*) FROM device_associations WHERE device_id = 'pump-A'"
        ),
        1
    );
}

/// A pump moved to another patient (`infusion_started` naming them) without
/// a stop: what it delivered to the first patient ends at the move, and the
/// daemon says so.
#[test]
fn a_pump_moved_to_another_patient_ends_the_first_patients_infusion() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("move");
    let ward = Ward::connect(&prefix);
    let mut d = daemon(dir.path(), &prefix);
    ward.wait_online();

    ward.admit("P-A", &ago(4 * H));
    ward.admit("P-B", &ago(4 * H));
    ward.publish(
        "devices/pump-M/events",
        json!({"id": "m-start-a", "time": ago(3 * H), "kind": "infusion_started",
               "patient_id": "P-A", "rate_mg_per_h": 20}),
    );
    let moved_at = ago(H);
    ward.publish(
        "devices/pump-M/events",
        json!({"id": "m-start-b", "time": moved_at, "kind": "infusion_started",
               "patient_id": "P-B", "rate_mg_per_h": 10}),
    );
    poll_until("B's infusion", Duration::from_secs(20), || {
        ward.on("patients/P-B/state")
            .last()
            .is_some_and(|s| s["active_inputs"].as_array().is_some_and(|a| a.len() == 1))
    });
    std::thread::sleep(Duration::from_secs(2));
    let a = ward.on("patients/P-A/state").last().cloned().unwrap();
    assert_eq!(
        a["active_inputs"],
        json!([]),
        "the pump moved to P-B, yet A's infusion still runs: {a}"
    );
    let b = ward.on("patients/P-B/state").last().cloned().unwrap();
    assert_eq!(b["active_inputs"][0]["rate_mg_per_h"], json!(10.0), "{b}");
    assert!(
        ward.on("rejected").is_empty(),
        "a move is no conflict: {:?}",
        ward.on("rejected")
    );
    d.terminate();
    let log = d.log_text();
    assert!(
        log.contains("device moved to another patient"),
        "the move is not logged: {log}"
    );
}
