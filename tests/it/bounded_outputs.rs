//! Issue #13 item 3 through the real binary and the shared Mosquitto: every
//! outgoing alert message is bounded (the retained active list and the
//! `unassigned_input` list are capped, with their counts), a row the broker
//! connection refuses is moved to the dead-letter table (logged, counted in
//! `/metrics`, a technical problem on the status and `/healthz`) instead of
//! being retried ahead of every other row, and one patient's alert flood
//! never delays another patient's alert.
//!
//! Before the fix the outbox published its rows strictly in order and
//! retried a refused row forever: A's active list over `max_packet_bytes`
//! stopped every later alert, B's `dose_limit` included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common::blocking::BlockingClient;
use crate::mqtt_common::daemon::DaemonProcess;
use crate::mqtt_common::{free_port, http_get, poll_until, unique};
use dosetrack::vocab::{format_rfc3339, TimeMs};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;
const MIN: TimeMs = 60_000;
const H: TimeMs = 3_600_000;
/// B's `dose_limit` must be out within this time of its dose.
const B_WITHIN: Duration = Duration::from_secs(5);

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
            format!("{prefix}/v1/patients/+/alerts"),
            format!("{prefix}/v1/devices/+/alerts"),
        ];
        Ward {
            client: BlockingClient::connect(BROKER, PORT, &unique("ward"), &filters),
            prefix: prefix.to_owned(),
        }
    }

    fn topic(&self, suffix: &str) -> String {
        format!("{}/v1/{suffix}", self.prefix)
    }

    fn publish(&self, suffix: &str, payload: Value) {
        self.client.publish(self.topic(suffix), payload.to_string());
    }

    fn on(&self, suffix: &str) -> Vec<Value> {
        self.client.json_on(&self.topic(suffix))
    }

    fn wait_online(&self) {
        poll_until("status online", Duration::from_secs(20), || {
            self.on("status").iter().any(|v| v["state"] == "online")
        });
    }

    fn admit(&self, pid: &str) {
        self.publish(
            &format!("patients/{pid}/admit"),
            json!({"id": unique("adm"), "time": ago(2 * H), "weight_kg": 70, "age_years": 40}),
        );
    }

    /// 30 mg IV for 70 kg: 0.43 mg/kg, over the ward's 0.35 mg/kg.
    fn over_limit_bolus(&self, pid: &str, id: &str, at: &str) {
        self.publish(
            &format!("patients/{pid}/doses"),
            json!({"id": id, "time": at, "route": "iv_bolus", "amount_mg": 30}),
        );
    }

    fn raised(&self, pid: &str, rule: &str) -> bool {
        self.on(&format!("patients/{pid}/alerts"))
            .iter()
            .any(|m| m["rule"] == rule && m["phase"] == "raised")
    }

    /// The retained message on `suffix`, as a new subscriber finds it.
    fn retained(&self, suffix: &str) -> (Vec<u8>, Value) {
        let c = BlockingClient::connect(BROKER, PORT, &unique("late"), &[self.topic(suffix)]);
        poll_until("the retained message", Duration::from_secs(10), || {
            !c.received().is_empty()
        });
        let m = c.received().last().cloned().unwrap();
        assert!(m.retain, "not retained: {m:?}");
        (m.payload, m.json)
    }
}

/// A daemon with `config` (TOML) as its config file.
fn daemon(dir: &Path, prefix: &str, config: &str) -> DaemonProcess {
    daemon_with(dir, prefix, config, &[])
}

/// [`daemon`] with `env` set for the run.
fn daemon_with(dir: &Path, prefix: &str, config: &str, env: &[(&str, &str)]) -> DaemonProcess {
    let path = dir.join("dosetrack.toml");
    std::fs::write(&path, config).unwrap();
    let mut d = DaemonProcess::run(
        (BROKER, PORT),
        &dir.join("dosetrack.db"),
        prefix,
        &unique("d"),
        &["--config", path.to_str().unwrap()],
        dir,
    );
    d.spawn_with_env(env);
    d
}

fn sql_i64(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Send `n` over-limit boluses for A over the last 50 minutes and wait
/// until the daemon stored them and opened their alerts.
fn flood_a(ward: &Ward, db: &Path, n: usize) {
    for i in 0..n {
        let at = ago(50 * MIN - (i as TimeMs) * 50 * MIN / n as TimeMs);
        ward.over_limit_bolus("P-A", &format!("a-{i}"), &at);
    }
    poll_until("A's boluses stored", Duration::from_secs(60), || {
        db.exists()
            && sql_i64(
                db,
                "SELECT count(*) FROM inputs WHERE kind = 'dose' AND source_id = 'P-A'",
            ) == n as i64
    });
    poll_until("A's alerts opened", Duration::from_secs(60), || {
        sql_i64(
            db,
            "SELECT count(*) FROM alert_state WHERE scope_id = 'P-A' AND rule = 'dose_limit'",
        ) >= n as i64
    });
}

/// Send B's over-limit bolus; how long until its `dose_limit` was raised
/// on B's alert topic (`None`: not within 30 s).
fn b_dose_limit_after(ward: &Ward) -> Option<Duration> {
    let sent = Instant::now();
    ward.over_limit_bolus("P-B", "b-1", &ago(MIN));
    let deadline = sent + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ward.raised("P-B", "dose_limit") {
            return Some(sent.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The flood at a smaller size: with `max_packet_bytes` at its
/// least (65 KiB), 80 over-limit boluses for A open 161 alerts; the
/// uncapped active list (~1.5 KiB an alert) was refused, retried forever in
/// order, and B's `dose_limit` never went out. Now A's list is capped (with its counts)
/// and fits, and B's alert is out within seconds.
#[test]
fn one_patients_alert_flood_never_delays_another_patients_alert() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dosetrack.db");
    let prefix = unique("flood");
    let ward = Ward::connect(&prefix);
    let max_packet = 65 * 1024;
    let mut d = daemon(
        dir.path(),
        &prefix,
        &format!("[broker]\nmax_packet_bytes = {max_packet}\n"),
    );
    ward.wait_online();
    ward.admit("P-A");
    ward.admit("P-B");
    flood_a(&ward, &db, 80);

    let took = b_dose_limit_after(&ward);
    assert!(
        took.is_some_and(|t| t <= B_WITHIN),
        "B's dose_limit not delivered within {B_WITHIN:?} (took {took:?}) while A's alerts were \
         in the outbox; unpublished rows: {}\n{}",
        sql_i64(
            &db,
            "SELECT count(*) FROM outbox WHERE published_at_ms IS NULL"
        ),
        d.log_tail(4_000)
    );

    // A's retained list: under the packet size, capped, with the counts.
    poll_until(
        "every outbox row published",
        Duration::from_secs(30),
        || {
            sql_i64(
                &db,
                "SELECT count(*) FROM outbox WHERE published_at_ms IS NULL",
            ) == 0
        },
    );
    let open_a = sql_i64(
        &db,
        "SELECT count(*) FROM alert_state WHERE scope_id = 'P-A' AND open = 1",
    );
    assert!(open_a > 80, "{open_a}");
    let (bytes, list) = ward.retained("patients/P-A/alerts/active");
    assert!(bytes.len() < max_packet, "{} bytes", bytes.len());
    let list = list.as_array().cloned().unwrap();
    assert!(
        !list.is_empty() && list.len() < open_a as usize,
        "{}",
        list.len()
    );
    for e in &list {
        assert_eq!(e["active_total"].as_i64(), Some(open_a), "{e}");
        assert_eq!(
            e["active_omitted"].as_i64(),
            Some(open_a - list.len() as i64),
            "{e}"
        );
        assert_eq!(e["patient_id"], "P-A");
    }
    // Nothing was refused.
    assert_eq!(sql_i64(&db, "SELECT count(*) FROM outbox_dead_letter"), 0);
    let largest = sql_i64(&db, "SELECT max(length(CAST(payload AS BLOB))) FROM outbox");
    assert!(largest < max_packet as i64, "{largest}");
    d.terminate();
}

/// A row the publisher refuses (here every retained active list, by the
/// failpoint `outbox_refuse_retained`: the capped lists no longer exceed
/// any allowed `max_packet_bytes`) is moved to `outbox_dead_letter`,
/// logged at error, counted in `/metrics`, raised as `alerts_undeliverable`
/// on the status and `/healthz` (503), and B's alert still goes out at
/// once. Before the fix the refused row was retried forever, in order.
#[test]
fn an_unpublishable_alert_row_is_moved_aside_counted_raised_and_delays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dosetrack.db");
    let prefix = unique("deadl");
    let ward = Ward::connect(&prefix);
    let port = free_port();
    let mut d = daemon_with(
        dir.path(),
        &prefix,
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        &[("DOSETRACK_FAILPOINT", "outbox_refuse_retained")],
    );
    ward.wait_online();
    ward.admit("P-A");
    ward.admit("P-B");
    flood_a(&ward, &db, 3);
    poll_until("A's list moved aside", Duration::from_secs(20), || {
        sql_i64(&db, "SELECT count(*) FROM outbox_dead_letter") > 0
    });

    let took = b_dose_limit_after(&ward);
    assert!(
        took.is_some_and(|t| t <= B_WITHIN),
        "B's dose_limit not delivered within {B_WITHIN:?} (took {took:?})\n{}",
        d.log_tail(4_000)
    );

    // Moved aside, not retried: nothing left unpublished, every dead letter
    // is A's active list, with its size and reason.
    poll_until("every outbox row settled", Duration::from_secs(20), || {
        sql_i64(
            &db,
            "SELECT count(*) FROM outbox WHERE published_at_ms IS NULL",
        ) == 0
    });
    let dead = sql_i64(&db, "SELECT count(*) FROM outbox_dead_letter");
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM outbox_dead_letter
             WHERE topic LIKE '%/alerts/active' AND payload_bytes > 2
               AND reason LIKE '%max_packet_bytes%'"
        ),
        dead
    );
    // A's lifecycle messages went out.
    assert!(ward.raised("P-A", "dose_limit"));

    // /metrics counts them.
    let (status, _, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("dosetrack_outbox_dead_letter_total {dead}")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("dosetrack_outbox_dead_letter_rows {dead}")),
        "{metrics}"
    );
    // /healthz and the status carry the technical problem.
    let (status, _, body) = http_get(port, "/healthz").unwrap();
    assert_eq!(status, 503, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert!(
        h["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["code"] == "alerts_undeliverable"),
        "{body}"
    );
    poll_until("the problem on the status", Duration::from_secs(10), || {
        ward.on("status").last().is_some_and(|s| {
            s["state"] == "online"
                && s["problems"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["code"] == "alerts_undeliverable"))
        })
    });
    d.terminate();
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("outbox_dead_letter")
            && l.contains("outbox_id")),
        "no error line for the dead letter:\n{log}"
    );
}

/// A pump never associated with a patient: its `unassigned_input` alert
/// lists the newest 50 of its stored events with the total, not every
/// heartbeat it ever sent.
#[test]
fn an_unassociated_pump_with_many_heartbeats_gives_a_bounded_unassigned_input_alert() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dosetrack.db");
    let prefix = unique("unassigned");
    let ward = Ward::connect(&prefix);
    let mut d = daemon(
        dir.path(),
        &prefix,
        "[alerts]\nupdate_min_interval_min = 0\n\n[alerts.rules.unassigned_input]\ncondition_delay_s = 0\n",
    );
    ward.wait_online();
    let n = 300;
    for i in 0..n {
        ward.publish(
            "devices/pump-Z/events",
            json!({"id": format!("hb-{i}"), "time": ago(30 * MIN - i * 5_000), "kind": "heartbeat"}),
        );
    }
    poll_until("the heartbeats stored", Duration::from_secs(60), || {
        db.exists()
            && sql_i64(
                &db,
                "SELECT count(*) FROM inputs WHERE source_id = 'pump-Z'",
            ) == n
    });
    let newest = sql_i64(
        &db,
        "SELECT max(seq) FROM inputs WHERE source_id = 'pump-Z'",
    );
    poll_until(
        "unassigned_input counting every heartbeat",
        Duration::from_secs(30),
        || {
            ward.on("devices/pump-Z/alerts").iter().any(|m| {
                m["rule"] == "unassigned_input"
                    && m["details"]["input_seqs"]
                        .as_array()
                        .is_some_and(|s| s.last() == Some(&json!(newest)))
            })
        },
    );
    let last = ward
        .on("devices/pump-Z/alerts")
        .into_iter()
        .rfind(|m| m["rule"] == "unassigned_input")
        .unwrap();
    let details = &last["details"];
    let seqs = details["input_seqs"].as_array().unwrap();
    assert_eq!(seqs.len(), 50, "{details}");
    assert_eq!(details["input_seqs_total"], n, "{details}");
    assert_eq!(details["input_seqs_omitted"], n - 50, "{details}");
    assert!(
        last.to_string().len() < 4_096,
        "{} bytes",
        last.to_string().len()
    );
    // The retained device list says the same (it is published after the
    // alert message, from the same scope's outbox: wait for it).
    let mut list = Value::Null;
    poll_until(
        "the retained list counting every heartbeat",
        Duration::from_secs(10),
        || {
            list = ward.retained("devices/pump-Z/alerts/active").1;
            list[0]["details"]["input_seqs_total"] == n
        },
    );
    assert_eq!(
        list[0]["details"]["input_seqs"].as_array().map(Vec::len),
        Some(50),
        "{list}"
    );
    d.terminate();
}
