//! The daemon end to end: the real binary as a separate process, the real
//! Mosquitto at 127.0.0.1:1883 (a unique topic prefix and client id per
//! test), and a real SQLite file.
//!
//! Checked: published state against the engine and against a clean replay,
//! rows in SQLite, every rejection code, duplicates, a kill -9 mid-stream
//! (every input stored exactly once, state = clean replay), and a clean
//! stop (offline status, session kept, state rebuilt at restart).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

use dosetrack::drug::DrugFile;
use dosetrack::intake;
use dosetrack::patient::Formulary;
use dosetrack::store::Reader;
use dosetrack::tracker::{Tracker, TrackerConfig};
use dosetrack::vocab::{format_rfc3339, parse_rfc3339_ms};
use mqtt_common::blocking::PrefixClient;
use mqtt_common::daemon::{derefs_to_process, DaemonProcess};
use mqtt_common::{poll_until, unique};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;

/// The daemon against the shared broker, its database in the test's dir.
struct Daemon {
    process: DaemonProcess,
    db: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, prefix: &str, client_id: &str) -> Daemon {
        let db = dir.join("dosetrack.db");
        let mut process = DaemonProcess::run((BROKER, PORT), &db, prefix, client_id, &[], dir);
        process.spawn();
        Daemon { process, db }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate_within(Duration::from_secs(40))
    }

    fn reader(&self) -> Reader {
        Reader::open(&self.db).unwrap()
    }
}

derefs_to_process!(Daemon, process);

/// A test client: publishes inputs and records every output under the prefix.
struct Client(PrefixClient);

impl Client {
    fn connect(prefix: &str) -> Client {
        let id = unique("client");
        Client(PrefixClient::watching_outputs(BROKER, PORT, &id, prefix))
    }

    fn publish(&self, topic_suffix: &str, payload: &str) {
        self.0.publish(topic_suffix, payload);
    }

    fn publish_bytes(&self, topic_suffix: &str, payload: Vec<u8>) {
        self.0.publish(topic_suffix, payload);
    }

    fn seen(&self) -> Vec<(String, Value)> {
        let all = self.0.inner.received().into_iter();
        all.map(|m| (m.topic, m.json)).collect()
    }

    /// Wait until `pred` holds over everything seen.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[(String, Value)]) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.seen()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; seen: {:#?}", self.seen());
    }

    fn last_state(&self, patient: &str) -> Option<Value> {
        self.0.on(&format!("patients/{patient}/state")).pop()
    }

    fn rejections(&self) -> Vec<Value> {
        self.0.on("rejected")
    }
}

/// Times a few minutes in the past, so clock skew never trips.
fn t(minutes_ago: i64) -> String {
    format_rfc3339(chrono::Utc::now().timestamp_millis() - minutes_ago * 60_000)
}

fn wait_online(c: &Client) {
    c.wait_for("status online", Duration::from_secs(20), |seen| {
        seen.iter()
            .any(|(t, v)| t.ends_with("/v1/status") && v["state"] == "online")
    });
}

/// Rebuild the tracker from the database, as a clean replay.
fn replay(reader: &Reader) -> Tracker {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut tr = Tracker::new(Arc::new(f), TrackerConfig::default());
    for s in reader.inputs(0).unwrap() {
        tr.apply(intake::replay(&s).unwrap());
    }
    tr
}

#[test]
fn state_follows_inputs_in_and_out_of_order_and_matches_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("state");
    let client = Client::connect(&prefix);
    let mut daemon = Daemon::start(dir.path(), &prefix, &unique("d"));
    wait_online(&client);

    let (t0, t1, t2) = (t(90), t(85), t(30));
    client.publish(
        "patients/P-1/admit",
        &json!({"id": "adm-1", "time": t0, "weight_kg": 72, "age_years": 41}).to_string(),
    );
    client.publish(
        "patients/P-1/doses",
        &json!({"id": "mar-1", "time": t0, "route": "iv_bolus", "amount_mg": 20}).to_string(),
    );
    client.publish(
        "devices/pump-7/events",
        &json!({"id": "p-1", "time": t1, "kind": "infusion_started", "patient_id": "P-1", "rate_mg_per_h": 18})
            .to_string(),
    );
    client.wait_for(
        "a state with the pump running",
        Duration::from_secs(20),
        |seen| {
            seen.iter().any(|(t, v)| {
                t.ends_with("/P-1/state")
                    && v["active_inputs"].as_array().is_some_and(|a| a.len() == 1)
            })
        },
    );
    let s = client.last_state("P-1").unwrap();
    assert_eq!(s["model"], "ketamine/kamp2020");
    assert_eq!(s["active_inputs"][0]["source"], "devices/pump-7");
    assert_eq!(s["stale"], true, "pump silent for 85 min > 10 min: {s}");

    // The published numbers are the engine's at the state's own time.
    let at = parse_rfc3339_ms(s["time"].as_str().unwrap()).unwrap();
    let mut replayed = replay(&daemon.reader());
    let engine = replayed.derived("P-1").unwrap().solution.at(at);
    assert!(
        (s["cp_ng_per_ml"].as_f64().unwrap() - engine.cp_ng_per_ml).abs() < 1e-3,
        "{s}"
    );
    assert!(
        (s["ce_ng_per_ml"].as_f64().unwrap() - engine.ce_ng_per_ml).abs() < 1e-3,
        "{s}"
    );

    // A stop that arrives late but happened earlier: recompute.
    let before = client.seen().len();
    client.publish(
        "devices/pump-7/events",
        &json!({"id": "p-2", "time": t2, "kind": "infusion_stopped"}).to_string(),
    );
    client.wait_for(
        "a state with the pump stopped",
        Duration::from_secs(20),
        |seen| {
            seen[before..].iter().any(|(t, v)| {
                t.ends_with("/P-1/state")
                    && v["active_inputs"].as_array().is_some_and(|a| a.is_empty())
            })
        },
    );
    let s = client.last_state("P-1").unwrap();
    let at = parse_rfc3339_ms(s["time"].as_str().unwrap()).unwrap();
    let mut clean = replay(&daemon.reader());
    let expected = clean.state("P-1", at).unwrap();
    assert_eq!(
        serde_json::to_value(&expected).unwrap(),
        s,
        "published state = clean replay"
    );

    // Rows in SQLite.
    let counts = daemon.reader().counts().unwrap();
    assert_eq!(
        (
            counts.inputs,
            counts.patients,
            counts.devices,
            counts.rejected
        ),
        (4, 1, 1, 0)
    );
    let events = daemon.reader().inputs_for_patient("P-1").unwrap();
    assert_eq!(
        events.len(),
        4,
        "the stop without patient_id is the pump's patient's"
    );
    assert!(counts.history_rows > 0);

    let status = daemon.terminate();
    assert!(status.success(), "exit {status:?}: {}", daemon.log_text());
    client.wait_for("status offline", Duration::from_secs(10), |seen| {
        seen.iter()
            .any(|(t, v)| t.ends_with("/v1/status") && v["state"] == "offline")
    });
}

#[test]
fn every_rejection_code_is_stored_published_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rej");
    let client = Client::connect(&prefix);
    let daemon = Daemon::start(dir.path(), &prefix, &unique("d"));
    wait_online(&client);

    let now = t(1);
    let future = format_rfc3339(chrono::Utc::now().timestamp_millis() + 3_600_000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("patients/P-1/doses", b"{not json".to_vec(), "invalid_json"),
        ("patients/P-1/doses", b"[1,2]".to_vec(), "not_an_object"),
        (
            "patients/P-1/doses",
            json!({"id": "a", "route": "oral", "amount_mg": 5})
                .to_string()
                .into_bytes(),
            "missing_field",
        ),
        (
            "patients/P-1/doses",
            json!({"id": "b", "time": now, "route": "oral", "amount_mg": -5})
                .to_string()
                .into_bytes(),
            "invalid_value",
        ),
        (
            "devices/pump-1/events",
            json!({"id": "c", "time": now, "kind": "teleport"})
                .to_string()
                .into_bytes(),
            "unknown_kind",
        ),
        // Matches the daemon's devices/+/events subscription, but the id has
        // a space.
        ("devices/pump 1/events", b"{}".to_vec(), "bad_topic"),
        ("patients/P-1/doses", vec![b' '; 70 * 1024], "too_large"),
        (
            "patients/P-1/doses",
            json!({"id": "d", "time": future, "route": "oral", "amount_mg": 5})
                .to_string()
                .into_bytes(),
            "clock_skew",
        ),
    ];
    for (topic, payload, _) in &cases {
        client.publish_bytes(topic, payload.clone());
    }
    // duplicate_conflict: the same id with other content.
    client.publish(
        "patients/P-1/doses",
        &json!({"id": "dup", "time": now, "route": "oral", "amount_mg": 5}).to_string(),
    );
    client.publish(
        "patients/P-1/doses",
        &json!({"id": "dup", "time": now, "route": "oral", "amount_mg": 5.0, "note": "ignored"})
            .to_string(),
    );
    client.publish(
        "patients/P-1/doses",
        &json!({"id": "dup", "time": now, "route": "oral", "amount_mg": 50}).to_string(),
    );
    let rejected_topic = format!("{prefix}/v1/rejected");
    client.wait_for("every rejection", Duration::from_secs(20), |seen| {
        seen.iter().filter(|(t, _)| *t == rejected_topic).count() >= 9
    });
    // QoS 1 is at-least-once: a bad message the broker redelivers is
    // rejected (stored, acknowledged) again. What must hold: each of the 9
    // distinct bad messages is rejected with its code, and nothing else is.
    let mut distinct: Vec<(String, String, String)> = client
        .rejections()
        .iter()
        .map(|r| {
            (
                r["topic"].as_str().unwrap_or("?").to_owned(),
                r["error"]["code"].as_str().unwrap_or("?").to_owned(),
                r["payload_excerpt"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    distinct.sort();
    distinct.dedup();
    let codes: Vec<&str> = distinct.iter().map(|d| d.1.as_str()).collect();
    for (_, _, code) in &cases {
        assert!(codes.contains(code), "{code} missing from {codes:?}");
    }
    assert!(codes.contains(&"duplicate_conflict"), "{codes:?}");
    assert_eq!(distinct.len(), 9, "{distinct:?}");
    poll_until("rows in SQLite", Duration::from_secs(10), || {
        daemon.reader().counts().unwrap().rejected >= 9
    });
    let stored: std::collections::BTreeSet<(String, String)> = daemon
        .reader()
        .rejected(1000)
        .unwrap()
        .into_iter()
        .map(|r| (r.topic, r.code))
        .collect();
    assert_eq!(stored.len(), 9, "{stored:?}");
    let counts = daemon.reader().counts().unwrap();
    assert_eq!(
        counts.inputs, 1,
        "the redelivery (20 vs 20.0, unknown field) is the same input"
    );
    drop(daemon);
}

/// N inputs published while the daemon is killed with SIGKILL mid-stream and
/// restarted: every input stored exactly once; state = clean replay.
#[test]
fn kill_9_mid_stream_loses_nothing_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("kill");
    let client_id = unique("d");
    let client = Client::connect(&prefix);
    let mut daemon = Daemon::start(dir.path(), &prefix, &client_id);
    wait_online(&client);

    let patients = 5;
    for p in 0..patients {
        client.publish(
            &format!("patients/P-{p}/admit"),
            &json!({"id": "adm", "time": t(120), "weight_kg": 60 + p, "age_years": 50}).to_string(),
        );
    }
    let n = 600;
    let start = chrono::Utc::now().timestamp_millis() - 110 * 60_000;
    let mut published = 0;
    for i in 0..n {
        let p = i % patients;
        let time = format_rfc3339(start + (i as i64) * 6_000);
        let payload = if i % 3 == 0 {
            json!({"id": format!("e-{i}"), "time": time, "kind": "infusion_rate_changed", "patient_id": format!("P-{p}"), "rate_mg_per_h": 5 + (i % 7)})
                .to_string()
        } else {
            json!({"id": format!("e-{i}"), "time": time, "kind": "heartbeat"}).to_string()
        };
        client.publish(&format!("devices/pump-{p}/events"), &payload);
        published += 1;
        if i == n / 3 {
            // Let the daemon take some, then kill it mid-stream.
            std::thread::sleep(Duration::from_millis(300));
            daemon.kill9();
        }
    }
    let stored_before = Reader::open(&daemon.db).unwrap().counts().unwrap().inputs;
    assert!(
        stored_before < (published + patients) as u64,
        "the kill came mid-stream"
    );
    daemon.spawn();
    let expected = (published + patients) as u64;
    poll_until("every input stored", Duration::from_secs(60), || {
        Reader::open(&daemon.db)
            .map(|r| r.counts().map(|c| c.inputs).unwrap_or(0))
            .unwrap_or(0)
            >= expected
    });
    std::thread::sleep(Duration::from_millis(500));
    let reader = daemon.reader();
    assert_eq!(
        reader.counts().unwrap().inputs,
        expected,
        "exactly once: {}",
        daemon.log_text()
    );
    // Every (device, id) once.
    let mut ids: HashMap<(String, String), usize> = HashMap::new();
    for s in reader.inputs(0).unwrap() {
        *ids.entry((s.record.source.id().to_owned(), s.record.input_id))
            .or_default() += 1;
    }
    assert!(ids.values().all(|&c| c == 1));
    // The state after restart equals a clean replay of the stored inputs.
    client.wait_for("states after restart", Duration::from_secs(20), |seen| {
        seen.iter()
            .filter(|(t, _)| t.ends_with("/P-0/state"))
            .count()
            >= 2
    });
    let s = client.last_state("P-0").unwrap();
    let at = parse_rfc3339_ms(s["time"].as_str().unwrap()).unwrap();
    let mut clean = replay(&daemon.reader());
    let expected_state = clean.state("P-0", at).unwrap();
    assert!(
        (expected_state.ce_ng_per_ml - s["ce_ng_per_ml"].as_f64().unwrap()).abs() < 1e-3,
        "{s} vs {expected_state:?}"
    );
    let status = daemon.terminate();
    assert!(status.success(), "{}", daemon.log_text());
}

/// A clean stop keeps the session: inputs published while the daemon is down
/// arrive when it comes back, and the state is rebuilt from the database.
#[test]
fn clean_stop_keeps_the_session_and_restart_rebuilds_state() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("restart");
    let client_id = unique("d");
    let client = Client::connect(&prefix);
    let mut daemon = Daemon::start(dir.path(), &prefix, &client_id);
    wait_online(&client);
    client.publish(
        "patients/P-9/admit",
        &json!({"id": "adm", "time": t(60), "weight_kg": 80}).to_string(),
    );
    client.publish(
        "patients/P-9/doses",
        &json!({"id": "m1", "time": t(59), "route": "intranasal", "amount_mg": 50}).to_string(),
    );
    client.wait_for("first state", Duration::from_secs(20), |seen| {
        seen.iter().any(|(t, _)| t.ends_with("/P-9/state"))
    });
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
    // While it is down.
    client.publish(
        "patients/P-9/doses",
        &json!({"id": "m2", "time": t(10), "route": "oral", "amount_mg": 50}).to_string(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = client.seen().len();
    daemon.spawn();
    poll_until("the input sent while down", Duration::from_secs(30), || {
        Reader::open(&daemon.db)
            .map(|r| r.counts().map(|c| c.inputs).unwrap_or(0))
            .unwrap_or(0)
            == 3
    });
    client.wait_for("a new state", Duration::from_secs(20), |seen| {
        seen[before..]
            .iter()
            .any(|(t, _)| t.ends_with("/P-9/state"))
    });
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
}

/// Patch events and manual doses by other routes; the read-side commands
/// (`patients`, `history`, `events`) on the live database.
#[test]
fn patches_and_manual_doses_and_the_read_side() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("patch");
    let client = Client::connect(&prefix);
    let mut daemon = Daemon::start(dir.path(), &prefix, &unique("d"));
    wait_online(&client);
    client.publish(
        "patients/P-5/admit",
        &json!({"id": "adm", "time": t(200), "weight_kg": 64, "age_years": 70, "comedications": ["midazolam"]}).to_string(),
    );
    client.publish(
        "devices/patch-2/events",
        &json!({"id": "t-1", "time": t(190), "kind": "patch_applied", "patient_id": "P-5", "release_rate_mg_per_h": 1.04, "wear_h": 24, "site": "arm"}).to_string(),
    );
    client.publish(
        "patients/P-5/doses",
        &json!({"id": "m-1", "time": t(60), "route": "intranasal", "amount_mg": 40}).to_string(),
    );
    client.wait_for(
        "a state with the patch on",
        Duration::from_secs(20),
        |seen| {
            seen.iter().any(|(t, v)| {
                t.ends_with("/P-5/state")
                    && v["active_inputs"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|i| i["route"] == "transdermal"))
            })
        },
    );
    let s = client.last_state("P-5").unwrap();
    let patch = &s["active_inputs"][0];
    assert_eq!(patch["release_rate_mg_per_h"], 1.04);
    assert!(patch["ends_at"].is_string(), "planned end: {s}");
    assert!(
        s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "pd_interaction"),
        "midazolam: {s}"
    );
    let before = client.seen().len();
    client.publish(
        "devices/patch-2/events",
        &json!({"id": "t-2", "time": t(5), "kind": "patch_detached"}).to_string(),
    );
    client.wait_for(
        "a state with the patch off",
        Duration::from_secs(20),
        |seen| {
            seen[before..].iter().any(|(t, v)| {
                t.ends_with("/P-5/state")
                    && v["active_inputs"].as_array().is_some_and(|a| a.is_empty())
            })
        },
    );
    let s = client.last_state("P-5").unwrap();
    let at = parse_rfc3339_ms(s["time"].as_str().unwrap()).unwrap();
    let expected = replay(&daemon.reader()).state("P-5", at).unwrap();
    assert_eq!(serde_json::to_value(&expected).unwrap(), s);

    // The read side, while the daemon runs.
    let db = daemon.db.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dosetrack"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let patients = run(&["patients", "--database", &db, "--format", "json"]);
    let patients: Value = serde_json::from_str(&patients).unwrap();
    assert_eq!(patients[0]["patient_id"], "P-5");
    assert_eq!(patients[0]["model"], "ketamine/kamp2020");
    let events = run(&["events", "P-5", "--database", &db]);
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(
        lines[0],
        "seq,occurred_at,received_at,source,kind,id,payload"
    );
    assert_eq!(lines.len(), 5, "admit, patch on, dose, patch off: {events}");
    assert!(events.contains("patch_detached"));
    let history = run(&["history", "P-5", "--database", &db]);
    assert!(history.starts_with("time,t_min,cp_ng_per_ml,ce_ng_per_ml\n"));
    assert!(history.lines().count() >= 2);
    let missing = Command::new(env!("CARGO_BIN_EXE_dosetrack"))
        .args(["history", "P-404", "--database", &db])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
}
