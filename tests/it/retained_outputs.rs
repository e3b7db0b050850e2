//! Issue #13 item 6 through the real binary and a real Mosquitto: after a
//! discharge the retained `state` says so (`"discharged": true`), and a
//! retained message on an input topic, delivered again at every restart, is
//! a redelivery (one stored row), not a new input each time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common::blocking::BlockingClient;
use crate::mqtt_common::daemon::DaemonProcess;
use crate::mqtt_common::{poll_until, unique, OwnBroker};
use dosetrack::vocab::{format_rfc3339, TimeMs};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const H: TimeMs = 3_600_000;

fn ago(ms: TimeMs) -> String {
    format_rfc3339(chrono::Utc::now().timestamp_millis() - ms)
}

fn sql_count(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn watch(port: u16, prefix: &str, filters: &[&str]) -> BlockingClient {
    let filters: Vec<String> = filters.iter().map(|f| format!("{prefix}/v1/{f}")).collect();
    BlockingClient::connect("127.0.0.1", port, &unique("watch"), &filters)
}

fn online_count(c: &BlockingClient, prefix: &str) -> usize {
    c.json_on(&format!("{prefix}/v1/status"))
        .iter()
        .filter(|v| v["state"] == "online")
        .count()
}

/// A dashboard that connects after a discharge sees, retained, a state that
/// says the patient was discharged.
#[test]
fn the_retained_state_after_a_discharge_says_discharged() {
    let broker = OwnBroker::start(false);
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("ret");
    let c = watch(broker.port, &prefix, &["status", "patients/+/state"]);
    let mut d = DaemonProcess::run(
        ("127.0.0.1", broker.port),
        &dir.path().join("dosetrack.db"),
        &prefix,
        &unique("d"),
        &[],
        dir.path(),
    );
    d.spawn();
    poll_until("online", Duration::from_secs(20), || {
        online_count(&c, &prefix) >= 1
    });

    let pub_ = |suffix: &str, v: Value| c.publish(format!("{prefix}/v1/{suffix}"), v.to_string());
    pub_(
        "patients/P-1/admit",
        json!({"id": "adm-1", "time": ago(2 * H), "weight_kg": 70, "age_years": 40}),
    );
    pub_(
        "patients/P-1/doses",
        json!({"id": "d-1", "time": ago(H), "route": "iv_bolus", "amount_mg": 50}),
    );
    let state = format!("{prefix}/v1/patients/P-1/state");
    poll_until("a state with Ce", Duration::from_secs(20), || {
        c.json_on(&state)
            .last()
            .is_some_and(|s| s["ce_ng_per_ml"].as_f64().is_some_and(|ce| ce > 0.0))
    });
    pub_(
        "patients/P-1/discharge",
        json!({"id": "dis-1", "time": ago(60_000)}),
    );
    let n = c.json_on(&state).len();
    poll_until(
        "the state after the discharge",
        Duration::from_secs(20),
        || c.json_on(&state).len() > n,
    );
    std::thread::sleep(Duration::from_secs(1));

    // A dashboard connecting later.
    let late = watch(broker.port, &prefix, &["patients/+/state"]);
    poll_until("the retained state", Duration::from_secs(10), || {
        !late.json_on(&state).is_empty()
    });
    let retained = late
        .received()
        .into_iter()
        .find(|m| m.topic == state)
        .unwrap();
    assert!(retained.retain);
    assert_eq!(
        retained.json["discharged"],
        json!(true),
        "the retained state does not say the patient was discharged: {}",
        retained.json
    );
    d.terminate();
}

/// A retained message on an input topic is delivered again at every
/// (re)subscription; the daemon must store it once.
#[test]
fn a_retained_input_is_stored_once_across_restarts() {
    let broker = OwnBroker::start(false);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dosetrack.db");
    let prefix = unique("reti");
    let c = watch(broker.port, &prefix, &["status", "rejected"]);
    let mut d = DaemonProcess::run(
        ("127.0.0.1", broker.port),
        &db,
        &prefix,
        &unique("d"),
        &[],
        dir.path(),
    );
    d.spawn();
    poll_until("online", Duration::from_secs(20), || {
        online_count(&c, &prefix) >= 1
    });
    c.publish_retained(
        format!("{prefix}/v1/patients/P-R/admit"),
        json!({"id": "adm-r", "time": ago(H), "weight_kg": 70, "age_years": 40}).to_string(),
    );
    // And one the contract refuses (stored in `rejected`).
    c.publish_retained(
        format!("{prefix}/v1/patients/P-R/doses"),
        json!({"id": "bad-r", "time": ago(H), "route": "oral", "amount_mg": -5}).to_string(),
    );
    poll_until("stored", Duration::from_secs(20), || {
        db.exists()
            && sql_count(&db, "SELECT count(*) FROM inputs WHERE input_id = 'adm-r'") >= 1
            && sql_count(&db, "SELECT count(*) FROM rejected") >= 1
    });
    for run in 2..=3 {
        d.terminate();
        d.spawn();
        poll_until("online again", Duration::from_secs(20), || {
            online_count(&c, &prefix) >= run
        });
        // Time for the retained redelivery to be handled.
        std::thread::sleep(Duration::from_secs(3));
    }
    d.terminate();
    let inputs = sql_count(&db, "SELECT count(*) FROM inputs WHERE input_id = 'adm-r'");
    let rejected = sql_count(&db, "SELECT count(*) FROM rejected");
    assert_eq!(
        (inputs, rejected),
        (1, 1),
        "a retained input redelivered at two restarts: {inputs} input rows, {rejected} rejected rows"
    );
}
