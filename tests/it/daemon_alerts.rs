//! Alert acceptance tests against a live daemon: the real `dosetrack run`
//! binary as a separate process, the real Mosquitto at 127.0.0.1:1883 (a
//! unique topic prefix and client id per test) and a real SQLite file.
//!
//! Checked: every rule raises its alert (rule, subject, priority) with the
//! engine's own predicted times; the lifecycle live (acknowledge, latch,
//! pause, escalation on the timer, the retained active list, discharge);
//! crashes at both failpoints (the alert is published exactly once, with
//! the stored id); a clean restart continues open alerts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

use dosetrack::alerts::{default_rule, Rule, RuleSettings};
use dosetrack::intake::{self, Intake};
use dosetrack::pk::{Direction, Output};
use dosetrack::service::settings::Config;
use dosetrack::store::Reader;
use dosetrack::tracker::{TrackedInput, Tracker, TrackerConfig};
use dosetrack::vocab::{format_rfc3339, parse_rfc3339_ms, TimeMs};
use mqtt_common::blocking::BlockingClient;
use mqtt_common::daemon::{derefs_to_process, DaemonProcess};
use mqtt_common::unique;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;
const MIN: TimeMs = 60_000;
const H: TimeMs = 3_600_000;

fn now_ms() -> TimeMs {
    chrono::Utc::now().timestamp_millis()
}

/// `ms_ago` milliseconds before now, as RFC 3339.
fn ago(ms_ago: TimeMs) -> String {
    format_rfc3339(now_ms() - ms_ago)
}

// ---------------------------------------------------------------------------
// The daemon's config file
// ---------------------------------------------------------------------------

/// A daemon config: `[state]` keys and every rule's settings written out in
/// full (the shipped defaults, changed by `tweak`), plus extra `[alerts]`
/// keys.
fn config(state: &str, alerts: &str, tweak: impl Fn(Rule, &mut RuleSettings)) -> String {
    let mut s = format!("[state]\n{state}\n\n[alerts]\n{alerts}\n");
    for r in Rule::ALL {
        let mut rs = default_rule(r);
        tweak(r, &mut rs);
        writeln!(
            s,
            "\n[alerts.rules.{}]\nenabled = {}\ncondition_delay_s = {}\nclear_delay_s = {}\nlatch = {}",
            r.as_str(),
            rs.enabled,
            rs.condition_delay_s,
            rs.clear_delay_s,
            rs.latch
        )
        .unwrap();
        if let Some(e) = rs.escalate_after_min {
            writeln!(s, "escalate_after_min = {e:?}").unwrap();
        }
    }
    s
}

/// Every condition delay 0 (raised at once); the rest as shipped.
fn immediate(_: Rule, rs: &mut RuleSettings) {
    rs.condition_delay_s = 0;
}

// ---------------------------------------------------------------------------
// A daemon process
// ---------------------------------------------------------------------------

/// The daemon against the shared broker with a config file, its database
/// and logs in the test's dir.
struct Daemon {
    process: DaemonProcess,
    db: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, prefix: &str, config_text: &str) -> Daemon {
        let mut d = Daemon::new(dir, prefix, config_text);
        d.spawn(None);
        d
    }

    fn new(dir: &Path, prefix: &str, config_text: &str) -> Daemon {
        let config = dir.join("dosetrack.toml");
        std::fs::write(&config, config_text).unwrap();
        let db = dir.join("dosetrack.db");
        let process = DaemonProcess::run(
            (BROKER, PORT),
            &db,
            prefix,
            &unique("d"),
            &["--config", config.to_str().unwrap()],
            dir,
        )
        .env_remove("DOSETRACK_FAILPOINT");
        Daemon { process, db }
    }

    /// Start the process (with `failpoint` armed, if any); its log goes to a
    /// new file each time.
    fn spawn(&mut self, failpoint: Option<&str>) {
        match failpoint {
            Some(f) => self.process.spawn_with_env(&[("DOSETRACK_FAILPOINT", f)]),
            None => self.process.spawn(),
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        self.process.terminate_within(Duration::from_secs(40))
    }

    fn reader(&self) -> Reader {
        Reader::open(&self.db).unwrap()
    }

    fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
    }

    /// Rows of a one-column-per-field query, as strings.
    fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let conn = self.sql();
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    let v: rusqlite::types::Value = r.get(i)?;
                    Ok(match v {
                        rusqlite::types::Value::Null => "NULL".to_owned(),
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Real(f) => f.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        rusqlite::types::Value::Blob(_) => "<blob>".to_owned(),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
}

derefs_to_process!(Daemon, process);

// ---------------------------------------------------------------------------
// A test client
// ---------------------------------------------------------------------------

/// One message received: topic, JSON payload, retained flag.
type Seen = (String, Value, bool);

struct Client {
    inner: BlockingClient,
    prefix: String,
}

impl Client {
    /// Subscribed to the status and every alert topic under `prefix`.
    fn connect(prefix: &str) -> Client {
        Client::subscribed(
            prefix,
            vec![
                format!("{prefix}/v1/status"),
                format!("{prefix}/v1/patients/+/alerts"),
                format!("{prefix}/v1/patients/+/alerts/active"),
                format!("{prefix}/v1/devices/+/alerts"),
                format!("{prefix}/v1/devices/+/alerts/active"),
            ],
        )
    }

    fn subscribed(prefix: &str, filters: Vec<String>) -> Client {
        Client {
            inner: BlockingClient::connect(BROKER, PORT, &unique("client"), &filters),
            prefix: prefix.to_owned(),
        }
    }

    fn publish(&self, topic_suffix: &str, payload: Value) {
        let topic = format!("{}/v1/{topic_suffix}", self.prefix);
        self.inner.publish(topic, payload.to_string());
    }

    fn admit(&self, pid: &str, at: &str, extra: Value) {
        let mut p = json!({"id": unique("adm"), "time": at, "weight_kg": 70, "age_years": 40});
        merge(&mut p, extra);
        self.publish(&format!("patients/{pid}/admit"), p);
    }

    fn dose(&self, pid: &str, id: &str, at: &str, fields: Value) {
        let mut p = json!({"id": id, "time": at});
        merge(&mut p, fields);
        self.publish(&format!("patients/{pid}/doses"), p);
    }

    fn device(&self, dev: &str, at: &str, fields: Value) {
        let mut p = json!({"id": unique("ev"), "time": at});
        merge(&mut p, fields);
        self.publish(&format!("devices/{dev}/events"), p);
    }

    fn command(&self, alert_id: &str, fields: Value) -> String {
        let id = unique("cmd");
        let mut p = json!({"id": id, "time": ago(0), "by": "rn-4471"});
        merge(&mut p, fields);
        self.publish(&format!("alerts/{alert_id}/commands"), p);
        id
    }

    fn seen(&self) -> Vec<Seen> {
        let all = self.inner.received().into_iter();
        all.map(|m| (m.topic, m.json, m.retain)).collect()
    }

    fn topic(&self, scope: &str) -> String {
        format!("{}/v1/{scope}/alerts", self.prefix)
    }

    /// Lifecycle messages on `scope` (`patients/P-1`, `devices/pump-1`).
    fn alerts(&self, scope: &str) -> Vec<Value> {
        let topic = self.topic(scope);
        self.seen()
            .into_iter()
            .filter(|(t, _, _)| *t == topic)
            .map(|(_, v, _)| v)
            .collect()
    }

    /// Every lifecycle message under the prefix.
    fn all_alerts(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|(t, _, _)| t.ends_with("/alerts"))
            .map(|(_, v, _)| v)
            .collect()
    }

    /// The latest active list on `scope`.
    fn active(&self, scope: &str) -> Option<Value> {
        let topic = format!("{}/active", self.topic(scope));
        self.seen()
            .into_iter()
            .rev()
            .find(|(t, _, _)| *t == topic)
            .map(|(_, v, _)| v)
    }

    /// Wait for a lifecycle message on `scope` matching rule, subject (a
    /// prefix of it) and phase; return it.
    fn wait_alert(&self, scope: &str, rule: &str, subject: &str, phase: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(m) = self.alerts(scope).into_iter().find(|m| {
                m["rule"] == rule
                    && m["phase"] == phase
                    && m["subject"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(subject))
            }) {
                return m;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {scope} {rule} {subject} {phase}; seen: {:#?}",
                    self.alerts(scope)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, what: &str, secs: u64, pred: impl Fn(&[Seen]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if pred(&self.seen()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; seen: {:#?}", self.seen());
    }

    fn wait_online(&self) {
        self.wait_for("status online", 20, |seen| {
            seen.iter()
                .any(|(t, v, _)| t.ends_with("/v1/status") && v["state"] == "online")
        });
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(o), Some(e)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
}

/// The phases of `alert_id`'s messages, in order.
fn phases(msgs: &[Value], alert_id: &str) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["alert_id"] == alert_id)
        .map(|m| m["phase"].as_str().unwrap().to_owned())
        .collect()
}

fn ms(v: &Value) -> TimeMs {
    parse_rfc3339_ms(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

fn assert_near(a: TimeMs, b: TimeMs, tol: TimeMs, what: &str) {
    assert!(
        (a - b).abs() <= tol,
        "{what}: {} vs {} ({} ms apart)",
        format_rfc3339(a),
        format_rfc3339(b),
        a - b
    );
}

// ---------------------------------------------------------------------------
// The engine's own numbers
// ---------------------------------------------------------------------------

/// Rebuild the tracker from the daemon's database, as the daemon does.
fn replay(reader: &Reader) -> Tracker {
    let f = dosetrack::service::formulary(&Config::default()).unwrap();
    let mut tr = Tracker::new(Arc::new(f), TrackerConfig::default());
    for s in reader.inputs(0).unwrap() {
        tr.apply(intake::replay(&s).unwrap());
    }
    tr
}

/// How long after the start of `dose` (given alone at t = 0 to a 70 kg,
/// 40-year-old, `setting`) Ce first crosses `level` in `direction`.
fn crossing_after_start(
    dose: Value,
    setting: &str,
    level_of: fn(f64, f64) -> f64,
    direction: Direction,
) -> TimeMs {
    let t0: TimeMs = 1_795_000_000_000;
    let f = Arc::new(dosetrack::service::formulary(&Config::default()).unwrap());
    let mut tr = Tracker::new(f.clone(), TrackerConfig::default());
    let mut seq = 0;
    let mut send = |topic: String, payload: Value| match intake::intake(
        "dosetrack",
        &topic,
        payload.to_string().as_bytes(),
        t0 + 1000 * H,
        0,
        &f,
    ) {
        Intake::Accept { topic, input, .. } => {
            seq += 1;
            tr.apply(TrackedInput {
                seq,
                topic,
                input: *input,
            });
        }
        Intake::Reject { notice, .. } => panic!("{notice:?}"),
    };
    let at = format_rfc3339(t0);
    send(
        "dosetrack/v1/patients/X/admit".into(),
        json!({"id": "a", "time": at, "weight_kg": 70, "age_years": 40, "setting": setting}),
    );
    let mut d = json!({"id": "d", "time": at});
    merge(&mut d, dose);
    send("dosetrack/v1/patients/X/doses".into(), d);
    let derived = tr.derived("X").unwrap();
    let targets = &derived.patient.targets;
    let level = level_of(targets.analgesic_floor_ng_per_ml, targets.ceiling_ng_per_ml);
    // The first crossing of `level` in `direction` within 24 h.
    let mut from = t0 + 1;
    loop {
        let c = derived
            .solution
            .next_crossing(Output::Ce, level, from, 24 * H)
            .expect("a crossing");
        if c.direction == direction {
            return c.at_ms - t0;
        }
        from = c.at_ms + 1_000;
    }
}

// ---------------------------------------------------------------------------
// 1. Every rule on a live daemon
// ---------------------------------------------------------------------------

#[test]
fn concentration_rules_raise_with_the_engines_predicted_times() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("conc");
    let client = Client::connect(&prefix);
    let daemon = Daemon::start(dir.path(), &prefix, &config("", "", immediate));
    client.wait_online();

    // redose_due: a 2 h infusion that ended so that Ce falls below the
    // floor ~15 min from now (inside the 30 min lead).
    let infusion = json!({"route": "iv_infusion", "rate_mg_per_h": 35, "duration_min": 120});
    let fall = crossing_after_start(
        infusion.clone(),
        "ward",
        |floor, _| floor,
        Direction::Falling,
    );
    client.admit("P-rd", &ago(fall + 10 * MIN), json!({}));
    client.dose("P-rd", "inf-rd", &ago(fall - 15 * MIN), infusion);

    // concentration_high (predictive): 1 mg/kg/h for 10 h, started so that
    // Ce reaches the ceiling ~15 min from now (monitored: under the rate
    // limit).
    let high = json!({"route": "iv_infusion", "rate_mg_per_h": 70, "duration_min": 600});
    let rise = crossing_after_start(
        high.clone(),
        "monitored",
        |_, ceiling| ceiling,
        Direction::Rising,
    );
    client.admit(
        "P-hi",
        &ago(rise + 10 * MIN),
        json!({"setting": "monitored"}),
    );
    client.dose("P-hi", "inf-hi", &ago(rise - 15 * MIN), high);

    // subtherapeutic: a bolus 3 h ago, Ce long below the floor, therapy
    // still active (within 24 h).
    client.admit("P-sub", &ago(4 * H), json!({}));
    client.dose(
        "P-sub",
        "bol-sub",
        &ago(3 * H),
        json!({"route": "iv_bolus", "amount_mg": 20}),
    );

    let rd = client.wait_alert("patients/P-rd", "redose_due", "floor", "raised", 20);
    let hi = client.wait_alert("patients/P-hi", "concentration_high", "ce", "raised", 20);
    let sub = client.wait_alert("patients/P-sub", "subtherapeutic", "ce", "raised", 20);
    let due_now = client.wait_alert("patients/P-sub", "redose_due", "floor", "raised", 20);

    assert_eq!(rd["priority"], "low", "{rd}");
    assert_eq!(rd["patient_id"], "P-rd");
    assert_eq!(rd["details"]["cause"]["input_id"], "inf-rd");
    assert_eq!(hi["priority"], "high", "{hi}");
    assert_eq!(hi["details"]["cause"]["input_id"], "inf-hi");
    assert_eq!(hi["condition_present"], true);
    assert_eq!(sub["priority"], "medium", "{sub}");
    assert_eq!(due_now["priority"], "low");
    assert!(
        due_now["message"].as_str().unwrap().contains("due now"),
        "{due_now}"
    );
    assert!(sub["details"]["ce_ng_per_ml"].as_f64().unwrap() < 100.0);

    // The predicted times are the engine's own forecast from the stored
    // inputs, at the time of the message.
    let mut tr = replay(&daemon.reader());
    let d = tr.derived("P-rd").unwrap();
    let floor = d.patient.targets.analgesic_floor_ng_per_ml;
    let at = ms(&rd["time"]);
    let c = d
        .solution
        .next_crossing(Output::Ce, floor, at, 12 * H)
        .unwrap();
    assert_eq!(c.direction, Direction::Falling);
    assert_near(
        ms(&rd["details"]["below_floor_at"]),
        c.at_ms,
        2_000,
        "below_floor_at",
    );
    assert_near(c.at_ms, at + 15 * MIN, 2 * MIN, "the planned crossing");

    let d = tr.derived("P-hi").unwrap();
    let ceiling = d.patient.targets.ceiling_ng_per_ml;
    let at = ms(&hi["time"]);
    let c = d
        .solution
        .next_crossing(Output::Ce, ceiling, at, 12 * H)
        .unwrap();
    assert_eq!(c.direction, Direction::Rising);
    assert_near(
        ms(&hi["details"]["above_ceiling_at"]),
        c.at_ms,
        2_000,
        "above_ceiling_at",
    );
    assert_near(c.at_ms, at + 15 * MIN, 2 * MIN, "the planned crossing");

    // One alert each; the retained active list holds them.
    for (pid, n) in [("P-rd", 1), ("P-hi", 1), ("P-sub", 2)] {
        let scope = format!("patients/{pid}");
        client.wait_for("the active list", 10, |_| {
            client
                .active(&scope)
                .and_then(|a| a.as_array().map(|a| a.len()))
                == Some(n)
        });
        let raised = client
            .alerts(&scope)
            .iter()
            .filter(|m| m["phase"] == "raised")
            .count();
        assert_eq!(raised, n, "{:#?}", client.alerts(&scope));
    }
    // Stored as published.
    let stored = daemon.reader().alert_messages(Some("P-rd")).unwrap();
    let stored: Value = serde_json::from_str(&stored[0]).unwrap();
    assert_eq!(stored, rd);
}

#[test]
fn dose_interaction_domain_and_unassigned_rules_raise_live() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("dose");
    let client = Client::connect(&prefix);
    let cfg = config("", "", |r, rs| {
        rs.condition_delay_s = if r == Rule::UnassignedInput { 2 } else { 0 };
    });
    let daemon = Daemon::start(dir.path(), &prefix, &cfg);
    client.wait_online();

    // dose_limit: 30 mg IV = 0.43 mg/kg on the ward (limit 0.35); then
    // dose_stacking: another bolus 10 s later, while Ce still rises.
    client.admit("P-lim", &ago(30 * MIN), json!({}));
    client.dose(
        "P-lim",
        "bol-1",
        &ago(2 * MIN),
        json!({"route": "iv_bolus", "amount_mg": 30}),
    );
    client.dose(
        "P-lim",
        "bol-2",
        &ago(2 * MIN - 10_000),
        json!({"route": "iv_bolus", "amount_mg": 10}),
    );
    // interaction: clarithromycin.
    client.admit(
        "P-int",
        &ago(10 * MIN),
        json!({"comedications": ["clarithromycin"]}),
    );
    // model_domain: a 16-year-old of 20 kg.
    client.admit(
        "P-dom",
        &ago(10 * MIN),
        json!({"age_years": 16, "weight_kg": 20}),
    );
    // unassigned_input: a dose for a patient never admitted, and an event
    // from a device with no patient.
    client.dose(
        "P-orph",
        "orph-1",
        &ago(MIN),
        json!({"route": "oral", "amount_mg": 25}),
    );
    client.device("pump-lost", &ago(MIN), json!({"kind": "heartbeat"}));

    let lim = client.wait_alert("patients/P-lim", "dose_limit", "bolus:", "raised", 20);
    assert_eq!(lim["priority"], "high");
    assert!(
        lim["subject"].as_str().unwrap().ends_with(":bol-1"),
        "{lim}"
    );
    assert_eq!(lim["details"]["limit_mg_per_kg"], 0.35);
    assert_eq!(lim["details"]["setting"], "ward");
    let stack = client.wait_alert("patients/P-lim", "dose_stacking", "dose:", "raised", 20);
    assert_eq!(stack["priority"], "medium");
    assert!(
        stack["subject"].as_str().unwrap().ends_with(":bol-2"),
        "{stack}"
    );
    assert_eq!(stack["details"]["previous"]["input_id"], "bol-1");
    // The 10 mg bolus is under the limit: one dose_limit alert.
    assert_eq!(
        client
            .alerts("patients/P-lim")
            .iter()
            .filter(|m| m["rule"] == "dose_limit")
            .count(),
        1,
        "{:#?}",
        client.alerts("patients/P-lim")
    );

    let int = client.wait_alert(
        "patients/P-int",
        "interaction",
        "clarithromycin",
        "raised",
        20,
    );
    assert_eq!(int["priority"], "medium");
    assert_eq!(int["details"]["model_adjusted"], true);
    let dom = client.wait_alert("patients/P-dom", "model_domain", "covariates", "raised", 20);
    assert_eq!(dom["priority"], "low");

    let orph = client.wait_alert(
        "patients/P-orph",
        "unassigned_input",
        "not_admitted",
        "raised",
        20,
    );
    assert_eq!(orph["priority"], "medium");
    assert_eq!(orph["technical"], true);
    let lost = client.wait_alert(
        "devices/pump-lost",
        "unassigned_input",
        "device:pump-lost",
        "raised",
        20,
    );
    assert_eq!(lost["patient_id"], Value::Null);
    assert_eq!(lost["device_id"], "pump-lost");
    // Raised on the timer once the 2 s condition delay passed (no input
    // came after them).
    let received: TimeMs = daemon
        .query("SELECT received_at_ms FROM inputs WHERE device_id = 'pump-lost'")[0][0]
        .parse()
        .unwrap();
    let after = ms(&lost["raised_at"]) - received;
    assert!(
        (1_900..6_000).contains(&after),
        "raised {after} ms after the input"
    );
    let active = client.active("devices/pump-lost").unwrap();
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");

    // Admitting the patient applies the orphan dose: the alert clears.
    client.admit("P-orph", &ago(2 * MIN), json!({}));
    client.wait_alert(
        "patients/P-orph",
        "unassigned_input",
        "not_admitted",
        "cleared",
        20,
    );
    drop(daemon);
}

#[test]
fn device_rules_raise_on_the_timer_and_by_alarm_code() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("dev");
    let client = Client::connect(&prefix);
    // A delivering device is silent after 3 s.
    let cfg = config("device_stale_after_min = 0.05", "", |r, rs| {
        rs.condition_delay_s = 0;
        if matches!(r, Rule::DeviceSilent | Rule::DeviceFault) {
            rs.clear_delay_s = 1;
        }
    });
    let daemon = Daemon::start(dir.path(), &prefix, &cfg);
    client.wait_online();

    client.admit("P-dev", &ago(30 * MIN), json!({}));
    let started = Instant::now();
    client.device(
        "pump-a",
        &ago(0),
        json!({"kind": "infusion_started", "patient_id": "P-dev", "rate_mg_per_h": 40}),
    );
    // device_silent with no further input: the timer raises it.
    let silent = client.wait_alert("patients/P-dev", "device_silent", "pump-a", "raised", 20);
    assert!(
        started.elapsed() >= Duration::from_millis(2_500),
        "raised after {:?}",
        started.elapsed()
    );
    assert_eq!(silent["priority"], "medium");
    assert_eq!(silent["details"]["device_id"], "pump-a");

    // Alarms: occlusion high (with the consequence), door_open medium,
    // battery_low low.
    client.device(
        "pump-a",
        &ago(0),
        json!({"kind": "alarm", "code": "occlusion"}),
    );
    client.device(
        "pump-a",
        &ago(0),
        json!({"kind": "alarm", "code": "door_open"}),
    );
    client.device(
        "pump-a",
        &ago(0),
        json!({"kind": "alarm", "code": "battery_low"}),
    );
    let occ = client.wait_alert(
        "patients/P-dev",
        "device_fault",
        "pump-a:occlusion",
        "raised",
        20,
    );
    assert_eq!(occ["priority"], "high");
    assert!(occ["details"]["below_floor_at"].is_string(), "{occ}");
    let door = client.wait_alert(
        "patients/P-dev",
        "device_fault",
        "pump-a:door_open",
        "raised",
        20,
    );
    assert_eq!(door["priority"], "medium");
    let low = client.wait_alert(
        "patients/P-dev",
        "device_fault",
        "pump-a:battery_low",
        "raised",
        20,
    );
    assert_eq!(low["priority"], "low");

    // The device is heard again: device_silent clears; an alarm_cleared
    // clears its alert.
    client.device(
        "pump-a",
        &ago(0),
        json!({"kind": "alarm_cleared", "code": "battery_low"}),
    );
    client.wait_alert("patients/P-dev", "device_silent", "pump-a", "cleared", 20);
    client.wait_alert(
        "patients/P-dev",
        "device_fault",
        "pump-a:battery_low",
        "cleared",
        20,
    );
    drop(daemon);
}

/// A heartbeat from a pump that has gone silent is news: it clears
/// `device_silent` and the state says the pump is fresh again. (A
/// heartbeat from a pump that is not stale publishes nothing of its own:
/// `Tracker::is_quiet_heartbeat`, unit-tested in the core.)
#[test]
fn a_heartbeat_after_silence_clears_device_silent_and_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("hb");
    let client = Client::connect(&prefix);
    let cfg = config("device_stale_after_min = 0.05", "", |r, rs| {
        rs.condition_delay_s = 0;
        if matches!(r, Rule::DeviceSilent) {
            rs.clear_delay_s = 1;
        }
    });
    let daemon = Daemon::start(dir.path(), &prefix, &cfg);
    client.wait_online();
    client.admit("P-hb", &ago(30 * MIN), json!({}));
    client.device(
        "pump-h",
        &ago(0),
        json!({"kind": "infusion_started", "patient_id": "P-hb", "rate_mg_per_h": 20}),
    );
    client.wait_alert("patients/P-hb", "device_silent", "pump-h", "raised", 20);
    let sent_ms = now_ms();
    client.device("pump-h", &ago(0), json!({"kind": "heartbeat"}));
    client.wait_alert("patients/P-hb", "device_silent", "pump-h", "cleared", 20);
    let rows =
        daemon.query("SELECT time_ms, payload FROM published_state WHERE patient_id = 'P-hb'");
    let time_ms: i64 = rows[0][0].parse().unwrap();
    let state: Value = serde_json::from_str(&rows[0][1]).unwrap();
    assert!(
        time_ms >= sent_ms - 1_000,
        "no state after the heartbeat: {state}"
    );
    assert_eq!(state["stale"], false, "{state}");
    drop(daemon);
}

// ---------------------------------------------------------------------------
// 2. The lifecycle, live
// ---------------------------------------------------------------------------

#[test]
fn acknowledge_pause_escalate_latch_and_the_active_list() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("life");
    let client = Client::connect(&prefix);
    // interaction escalates every 3 s; a dose over the limit stays a
    // condition for 6 s (then the latch holds it).
    let cfg = config("", "event_hold_min = 0.1", |r, rs| {
        rs.condition_delay_s = 0;
        if r == Rule::Interaction {
            rs.escalate_after_min = Some(0.05);
        }
    });
    let daemon = Daemon::start(dir.path(), &prefix, &cfg);
    client.wait_online();

    client.admit(
        "P-esc",
        &ago(10 * MIN),
        json!({"comedications": ["clarithromycin"]}),
    );
    client.admit("P-latch", &ago(10 * MIN), json!({}));
    client.dose(
        "P-latch",
        "big",
        &ago(0),
        json!({"route": "iv_bolus", "amount_mg": 30}),
    );

    // Escalation with no new input: the timer queue works.
    let raised = client.wait_alert(
        "patients/P-esc",
        "interaction",
        "clarithromycin",
        "raised",
        20,
    );
    let id = raised["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(raised["priority"], "medium");
    let esc = client.wait_alert(
        "patients/P-esc",
        "interaction",
        "clarithromycin",
        "escalated",
        20,
    );
    assert_eq!(esc["alert_id"], id.as_str());
    assert_eq!(esc["priority"], "high");
    assert!(ms(&esc["time"]) - ms(&raised["time"]) >= 2_900, "{esc}");

    // A late subscriber sees the current alerts at once (retained).
    let late = Client::subscribed(
        &prefix,
        vec![format!("{prefix}/v1/patients/P-esc/alerts/active")],
    );
    late.wait_for("the retained active list", 10, |seen| !seen.is_empty());
    let (_, list, retained) = late.seen()[0].clone();
    assert!(retained);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["alert_id"], id.as_str());

    // Pause for longer than allowed: capped at max_pause_min (30).
    client.command(&id, json!({"action": "pause", "minutes": 90}));
    let paused = client.wait_alert(
        "patients/P-esc",
        "interaction",
        "clarithromycin",
        "paused",
        20,
    );
    assert_eq!(paused["alert_id"], id.as_str());
    assert_eq!(paused["details"]["requested_min"].as_f64(), Some(90.0));
    assert_eq!(paused["details"]["granted_min"].as_f64(), Some(30.0));
    // No escalation while paused.
    let n = client.alerts("patients/P-esc").len();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        phases(&client.alerts("patients/P-esc")[n..], &id),
        Vec::<String>::new(),
        "nothing while paused"
    );

    // Acknowledge: published and stored.
    let cmd = client.command(&id, json!({"action": "acknowledge"}));
    let ack = client.wait_alert(
        "patients/P-esc",
        "interaction",
        "clarithromycin",
        "acknowledged",
        20,
    );
    assert_eq!(ack["alert_id"], id.as_str());
    assert_eq!(ack["acknowledged"]["by"], "rn-4471", "{ack}");
    let rows = daemon.query(&format!(
        "SELECT c.alert_id, c.action, c.applied FROM alert_commands c JOIN inputs i ON i.seq = c.input_seq
         WHERE i.input_id = '{cmd}'"
    ));
    assert_eq!(
        rows,
        vec![vec![id.clone(), "acknowledge".into(), "1".into()]]
    );
    // A command for an unknown alert is stored as not applied.
    let bogus = client.command("al-999999-0", json!({"action": "acknowledge"}));
    let q = format!(
        "SELECT c.applied FROM alert_commands c JOIN inputs i ON i.seq = c.input_seq WHERE i.input_id = '{bogus}'"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.query(&q).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon.query(&q), vec![vec!["0".to_owned()]]);

    // The latched dose_limit: the condition ends after event_hold (6 s),
    // the alert stays (updated, latched) until acknowledged, then clears.
    let lim = client.wait_alert("patients/P-latch", "dose_limit", "bolus:", "raised", 20);
    let lim_id = lim["alert_id"].as_str().unwrap().to_owned();
    let latched = client.wait_alert("patients/P-latch", "dose_limit", "bolus:", "updated", 20);
    assert_eq!(latched["latched"], true, "{latched}");
    assert_eq!(latched["condition_present"], false);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !phases(&client.alerts("patients/P-latch"), &lim_id).contains(&"cleared".to_owned()),
        "a latched alert does not clear before acknowledgement"
    );
    client.command(&lim_id, json!({"action": "acknowledge"}));
    client.wait_alert("patients/P-latch", "dose_limit", "bolus:", "cleared", 20);
    assert_eq!(
        phases(&client.alerts("patients/P-latch"), &lim_id),
        ["raised", "updated", "acknowledged", "cleared"]
    );
    client.wait_for("P-latch's active list without it", 10, |_| {
        client.active("patients/P-latch").is_some_and(|a| {
            a.as_array()
                .is_some_and(|a| a.iter().all(|m| m["alert_id"] != lim_id.as_str()))
        })
    });

    // Discharge clears everything; the active list is [].
    client.publish(
        "patients/P-esc/discharge",
        json!({"id": unique("dis"), "time": ago(0)}),
    );
    let cleared = client.wait_alert(
        "patients/P-esc",
        "interaction",
        "clarithromycin",
        "cleared",
        20,
    );
    assert_eq!(cleared["details"]["reason"], "discharged", "{cleared}");
    client.wait_for("P-esc's active list empty", 10, |_| {
        client.active("patients/P-esc") == Some(json!([]))
    });
    let mut seq = phases(&client.alerts("patients/P-esc"), &id);
    seq.dedup(); // a second escalation may come before the pause
    assert_eq!(
        seq,
        ["raised", "escalated", "paused", "acknowledged", "cleared"]
    );
    let late = Client::subscribed(
        &prefix,
        vec![format!("{prefix}/v1/patients/P-esc/alerts/active")],
    );
    late.wait_for("the retained active list", 10, |seen| !seen.is_empty());
    assert_eq!(late.seen()[0].1, json!([]));
}

// ---------------------------------------------------------------------------
// 3. Crashes
// ---------------------------------------------------------------------------

/// Count the lifecycle messages with `phase` for `alert_id` over `secs`.
fn count_for(client: &Client, alert_id: &str, phase: &str, secs: u64) -> usize {
    std::thread::sleep(Duration::from_secs(secs));
    client
        .all_alerts()
        .iter()
        .filter(|m| m["alert_id"] == alert_id && m["phase"] == phase)
        .count()
}

#[test]
fn crash_after_the_outbox_commit_publishes_the_stored_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("crash1");
    let client = Client::connect(&prefix);
    let mut daemon = Daemon::new(dir.path(), &prefix, &config("", "", immediate));
    daemon.spawn(Some("outbox_before_publish"));
    client.wait_online();

    client.admit(
        "P-1",
        &ago(10 * MIN),
        json!({"comedications": ["clarithromycin"]}),
    );
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "aborted: {status:?}");
    assert!(daemon.log_text().contains("failpoint reached"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(client.all_alerts().is_empty(), "{:#?}", client.all_alerts());

    // Committed, not published.
    let open = daemon.reader().open_alerts().unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    let id = open[0].alert_id.clone();
    let rows = daemon.query("SELECT topic, published_at_ms FROM outbox ORDER BY id");
    assert_eq!(rows.len(), 2, "message and active list: {rows:?}");
    assert!(rows[0][0].ends_with("/patients/P-1/alerts"));
    assert!(rows.iter().all(|r| r[1] == "NULL"), "{rows:?}");

    // Restart without the failpoint: published once, with the stored id.
    daemon.spawn(None);
    client.wait_alert(
        "patients/P-1",
        "interaction",
        "clarithromycin",
        "raised",
        20,
    );
    assert_eq!(count_for(&client, &id, "raised", 3), 1);
    assert_eq!(client.all_alerts().len(), 1, "{:#?}", client.all_alerts());
    let rows = daemon.query("SELECT count(*) FROM outbox WHERE published_at_ms IS NULL");
    assert_eq!(rows, vec![vec!["0".to_owned()]]);
    assert_eq!(
        daemon.query("SELECT count(*) FROM alert_state"),
        vec![vec!["1".to_owned()]]
    );
}

#[test]
fn crash_before_the_alert_write_derives_the_alert_again_once() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("crash2");
    let client = Client::connect(&prefix);
    let mut daemon = Daemon::new(dir.path(), &prefix, &config("", "", immediate));
    daemon.spawn(Some("alerts_before_commit"));
    client.wait_online();

    client.admit(
        "P-1",
        &ago(10 * MIN),
        json!({"comedications": ["clarithromycin"]}),
    );
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "aborted: {status:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(client.all_alerts().is_empty());
    // The input is stored, the alert is not.
    assert_eq!(daemon.reader().inputs(0).unwrap().len(), 1);
    assert!(daemon.reader().open_alerts().unwrap().is_empty());
    assert_eq!(
        daemon.query("SELECT count(*) FROM outbox"),
        vec![vec!["0".to_owned()]]
    );

    daemon.spawn(None);
    let m = client.wait_alert(
        "patients/P-1",
        "interaction",
        "clarithromycin",
        "raised",
        20,
    );
    let id = m["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(count_for(&client, &id, "raised", 3), 1);
    assert_eq!(client.all_alerts().len(), 1, "{:#?}", client.all_alerts());
    let open = daemon.reader().open_alerts().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].alert_id, id);
    assert_eq!(
        daemon.reader().inputs(0).unwrap().len(),
        1,
        "not stored twice"
    );
}

// ---------------------------------------------------------------------------
// 4. Restart continuity
// ---------------------------------------------------------------------------

#[test]
fn an_open_alert_continues_across_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("restart");
    let client = Client::connect(&prefix);
    let mut daemon = Daemon::start(dir.path(), &prefix, &config("", "", immediate));
    client.wait_online();

    client.admit(
        "P-1",
        &ago(10 * MIN),
        json!({"comedications": ["clarithromycin"]}),
    );
    client.admit("P-2", &ago(30 * MIN), json!({}));
    client.dose(
        "P-2",
        "big",
        &ago(MIN),
        json!({"route": "iv_bolus", "amount_mg": 30}),
    );
    let int = client.wait_alert(
        "patients/P-1",
        "interaction",
        "clarithromycin",
        "raised",
        20,
    );
    let lim = client.wait_alert("patients/P-2", "dose_limit", "bolus:", "raised", 20);
    let (int_id, lim_id) = (
        int["alert_id"].as_str().unwrap().to_owned(),
        lim["alert_id"].as_str().unwrap().to_owned(),
    );

    let status = daemon.terminate();
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
    let before = client.all_alerts().len();
    daemon.spawn(None);
    client.wait_for("online again", 20, |seen| {
        seen.iter()
            .filter(|(t, v, _)| t.ends_with("/v1/status") && v["state"] == "online")
            .count()
            >= 2
    });
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<Value> = client.all_alerts()[before..].to_vec();
    assert!(after.is_empty(), "nothing new at restart: {after:#?}");

    // The lifecycle continues with the same ids.
    client.command(&lim_id, json!({"action": "acknowledge"}));
    let ack = client.wait_alert("patients/P-2", "dose_limit", "bolus:", "acknowledged", 20);
    assert_eq!(ack["alert_id"], lim_id.as_str());
    client.publish(
        "patients/P-1/discharge",
        json!({"id": unique("dis"), "time": ago(0)}),
    );
    let cleared = client.wait_alert(
        "patients/P-1",
        "interaction",
        "clarithromycin",
        "cleared",
        20,
    );
    assert_eq!(cleared["alert_id"], int_id.as_str());
    for id in [&int_id, &lim_id] {
        let raised = client
            .all_alerts()
            .iter()
            .filter(|m| m["alert_id"] == id.as_str() && m["phase"] == "raised")
            .count();
        assert_eq!(raised, 1, "{:#?}", client.all_alerts());
    }
    // One alert per (patient, rule, subject), across the restart.
    let dup = daemon.query(
        "SELECT scope_id, rule, subject, count(*) FROM alert_state
         GROUP BY scope_id, rule, subject HAVING count(*) > 1",
    );
    assert!(dup.is_empty(), "{dup:?}");
}

#[test]
fn a_command_lost_in_a_crash_is_applied_at_restart_once() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("crash3");
    let client = Client::connect(&prefix);
    let mut daemon = Daemon::start(dir.path(), &prefix, &config("", "", immediate));
    client.wait_online();
    client.admit(
        "P-1",
        &ago(10 * MIN),
        json!({"comedications": ["clarithromycin"]}),
    );
    let m = client.wait_alert(
        "patients/P-1",
        "interaction",
        "clarithromycin",
        "raised",
        20,
    );
    let id = m["alert_id"].as_str().unwrap().to_owned();
    assert!(daemon.terminate().success());

    // The acknowledgement is stored, then the process dies before its
    // outcome (and the acknowledged message) is written.
    daemon.spawn(Some("alerts_before_commit"));
    client.wait_for("online again", 20, |seen| {
        seen.iter()
            .filter(|(t, v, _)| t.ends_with("/v1/status") && v["state"] == "online")
            .count()
            >= 2
    });
    let cmd = client.command(&id, json!({"action": "acknowledge"}));
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let q = format!(
        "SELECT count(*) FROM alert_commands c JOIN inputs i ON i.seq = c.input_seq WHERE i.input_id = '{cmd}'"
    );
    assert_eq!(daemon.query(&q), vec![vec!["0".to_owned()]]);
    assert_eq!(daemon.reader().unapplied_commands().unwrap().len(), 1);

    daemon.spawn(None);
    let ack = client.wait_alert(
        "patients/P-1",
        "interaction",
        "clarithromycin",
        "acknowledged",
        20,
    );
    assert_eq!(ack["alert_id"], id.as_str());
    assert_eq!(count_for(&client, &id, "acknowledged", 3), 1);
    assert_eq!(daemon.query(&q), vec![vec!["1".to_owned()]]);
    assert!(daemon.reader().unapplied_commands().unwrap().is_empty());
    assert_eq!(
        phases(&client.all_alerts(), &id),
        ["raised", "acknowledged"]
    );
}

#[test]
fn escalation_continues_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("restart-esc");
    let client = Client::connect(&prefix);
    // interaction escalates every 6 s.
    let cfg = config("", "", |r, rs| {
        rs.condition_delay_s = 0;
        if r == Rule::Interaction {
            rs.escalate_after_min = Some(0.1);
        }
    });
    let mut daemon = Daemon::start(dir.path(), &prefix, &cfg);
    client.wait_online();
    client.admit(
        "P-1",
        &ago(10 * MIN),
        json!({"comedications": ["clarithromycin"]}),
    );
    let m = client.wait_alert(
        "patients/P-1",
        "interaction",
        "clarithromycin",
        "raised",
        20,
    );
    let id = m["alert_id"].as_str().unwrap().to_owned();
    assert!(daemon.terminate().success());
    daemon.spawn(None);

    // With no input after the restart, the restored alert escalates on its
    // own schedule (raised + 6 s), under the same id.
    let esc = client.wait_alert(
        "patients/P-1",
        "interaction",
        "clarithromycin",
        "escalated",
        20,
    );
    assert_eq!(esc["alert_id"], id.as_str());
    assert_eq!(esc["priority"], "high");
    assert_eq!(esc["raised_at"], m["raised_at"]);
    let late = ms(&esc["time"]) - ms(&m["time"]);
    assert!(
        (5_900..9_000).contains(&late),
        "escalated {late} ms after raised"
    );
    assert_eq!(phases(&client.all_alerts(), &id), ["raised", "escalated"]);
}
