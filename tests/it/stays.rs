//! Issue #13 items 1, 4 and 5 ("stays as episodes") through the real binary
//! and a real Mosquitto: a readmitted patient is tracked and alerted on; a
//! late discharge closes only its own stay; a late input rewrites the
//! stored history from its time (checked against an independent replay of
//! the stored inputs); history exists only inside stays; an ended stay
//! leaves memory and a late input reloads it; no alert evaluation for a
//! discharged patient; a backlog of past stays is caught up quickly and
//! the daemon's memory after many stays returns near an empty daemon's.
//!
//! The scale test is sized by `DOSETRACK_STAYS=small|full` (small, the CI
//! size, by default; full: 10,000 stays for memory, 300 × 6 inputs for the
//! backlog rate). Figures in `docs/reliability.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common::blocking::BlockingClient;
use crate::mqtt_common::daemon::DaemonProcess;
use crate::mqtt_common::{free_port, http_get, poll_until, unique, OwnBroker};
use dosetrack::drug::DrugFile;
use dosetrack::intake;
use dosetrack::patient::Formulary;
use dosetrack::store::Reader;
use dosetrack::tracker::{Tracker, TrackerConfig};
use dosetrack::vocab::{format_rfc3339, TimeMs};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;
const MIN: TimeMs = 60_000;
const H: TimeMs = 3_600_000;

fn now_ms() -> TimeMs {
    chrono::Utc::now().timestamp_millis()
}

fn at(t: TimeMs) -> String {
    format_rfc3339(t)
}

struct Ward {
    client: BlockingClient,
    prefix: String,
}

impl Ward {
    fn connect(port: u16, prefix: &str) -> Ward {
        let filters = vec![
            format!("{prefix}/v1/status"),
            format!("{prefix}/v1/patients/+/state"),
            format!("{prefix}/v1/patients/+/alerts"),
        ];
        Ward {
            client: BlockingClient::connect(BROKER, port, &unique("ward"), &filters),
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
        poll_until("status online", Duration::from_secs(30), || {
            self.on("status").iter().any(|v| v["state"] == "online")
        });
    }

    fn admit(&self, pid: &str, t: TimeMs) {
        self.publish(
            &format!("patients/{pid}/admit"),
            json!({"id": unique("adm"), "time": at(t), "weight_kg": 70, "age_years": 40}),
        );
    }

    fn discharge(&self, pid: &str, t: TimeMs) {
        self.publish(
            &format!("patients/{pid}/discharge"),
            json!({"id": unique("dis"), "time": at(t)}),
        );
    }

    fn bolus(&self, pid: &str, t: TimeMs, mg: f64) {
        self.publish(
            &format!("patients/{pid}/doses"),
            json!({"id": unique("mar"), "time": at(t), "route": "iv_bolus", "amount_mg": mg}),
        );
    }

    fn pump(&self, device: &str, pid: &str, t: TimeMs, rate: f64) {
        self.publish(
            &format!("devices/{device}/events"),
            json!({"id": unique("p"), "time": at(t), "kind": "infusion_started",
                   "patient_id": pid, "rate_mg_per_h": rate}),
        );
    }

    fn states(&self, pid: &str) -> Vec<Value> {
        self.on(&format!("patients/{pid}/state"))
    }

    fn alerts(&self, pid: &str) -> Vec<Value> {
        self.on(&format!("patients/{pid}/alerts"))
    }
}

/// Config: immediate `concentration_high`, the given `[state]` lines.
fn config(dir: &Path, state: &str) -> PathBuf {
    let path = dir.join("dosetrack.toml");
    std::fs::write(
        &path,
        format!("[state]\n{state}\n\n[alerts.rules.concentration_high]\ncondition_delay_s = 0\n"),
    )
    .unwrap();
    path
}

fn daemon_on(port: u16, dir: &Path, prefix: &str, state: &str) -> DaemonProcess {
    let cfg = config(dir, state);
    let mut d = DaemonProcess::run(
        (BROKER, port),
        &dir.join("dosetrack.db"),
        prefix,
        &unique("d"),
        &["--config", cfg.to_str().unwrap()],
        dir,
    );
    d.spawn();
    d
}

fn reader(dir: &Path) -> Reader {
    Reader::open(&dir.join("dosetrack.db")).unwrap()
}

fn sql_i64(dir: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("dosetrack.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A fresh tracker fed every stored input: the independent replay.
fn replay(reader: &Reader) -> Tracker {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut tr = Tracker::new(Arc::new(f), TrackerConfig::default());
    for s in reader.inputs(0).unwrap() {
        tr.apply(intake::replay(&s).unwrap());
    }
    tr
}

/// Every stored history point of `pid` against the replay at its time:
/// the points that differ (time, stored Ce, replayed Ce).
fn history_mismatches(reader: &Reader, pid: &str) -> Vec<(String, f64, f64)> {
    let mut tr = replay(reader);
    let d = tr.derived(pid).unwrap();
    reader
        .history(pid, None, None)
        .unwrap()
        .into_iter()
        .filter_map(|r| {
            let c = d.solution.at(r.t_ms);
            let tol = 1e-6 * c.ce_ng_per_ml.abs().max(1.0) + 1e-3;
            ((r.ce_ng_per_ml - c.ce_ng_per_ml).abs() > tol
                || (r.cp_ng_per_ml - c.cp_ng_per_ml).abs() > tol)
                .then(|| (at(r.t_ms), r.ce_ng_per_ml, c.ce_ng_per_ml))
        })
        .collect()
}

fn stored_inputs(dir: &Path) -> i64 {
    sql_i64(dir, "SELECT count(*) FROM inputs")
}

/// Item 1, the sequence: admit → discharge → admit again, then a
/// 100 mg bolus and 200 mg/h. The readmitted patient is tracked (the state
/// does not say `discharged`) and `concentration_high` is raised.
#[test]
fn a_readmitted_patient_is_tracked_and_alerted_on() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("readmit");
    let ward = Ward::connect(PORT, &prefix);
    let _d = daemon_on(PORT, dir.path(), &prefix, "");
    ward.wait_online();
    let t0 = now_ms();
    ward.admit("P-R", t0 - 3 * H);
    ward.discharge("P-R", t0 - 2 * H);
    ward.admit("P-R", t0 - 30 * MIN);
    ward.bolus("P-R", t0 - 20 * MIN, 100.0);
    ward.pump("pump-R", "P-R", t0 - 20 * MIN, 200.0);
    poll_until("5 inputs stored", Duration::from_secs(20), || {
        stored_inputs(dir.path()) == 5
    });
    poll_until("a state after the pump", Duration::from_secs(20), || {
        ward.states("P-R")
            .last()
            .is_some_and(|s| s["active_inputs"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let s = ward.states("P-R").last().cloned().unwrap();
    assert!(s.get("discharged").is_none(), "readmitted, in care: {s}");
    assert!(s["ce_ng_per_ml"].as_f64().unwrap() > 500.0, "{s}");
    poll_until(
        "concentration_high raised for the readmitted patient",
        Duration::from_secs(20),
        || {
            ward.alerts("P-R")
                .iter()
                .any(|a| a["rule"] == "concentration_high" && a["phase"] == "raised")
        },
    );
}

/// Item 1: a discharge of an earlier stay that arrives after the new
/// admission closes that stay only; the current stay goes on (its alert is
/// not cleared as "discharged", its state is not `discharged`).
#[test]
fn a_late_discharge_of_an_earlier_stay_does_not_close_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("latedis");
    let ward = Ward::connect(PORT, &prefix);
    let _d = daemon_on(PORT, dir.path(), &prefix, "");
    ward.wait_online();
    let t0 = now_ms();
    ward.admit("P-L", t0 - 3 * H);
    ward.admit("P-L", t0 - 30 * MIN);
    ward.bolus("P-L", t0 - 20 * MIN, 100.0);
    ward.pump("pump-L", "P-L", t0 - 20 * MIN, 200.0);
    poll_until("concentration_high raised", Duration::from_secs(20), || {
        ward.alerts("P-L")
            .iter()
            .any(|a| a["rule"] == "concentration_high" && a["phase"] == "raised")
    });
    // The first stay's discharge, late. (States counted before it is sent:
    // its state may arrive before the store is seen to hold it.)
    let states_before = ward.states("P-L").len();
    ward.discharge("P-L", t0 - 2 * H);
    poll_until("5 inputs stored", Duration::from_secs(20), || {
        stored_inputs(dir.path()) == 5
    });
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while ward.states("P-L").len() <= states_before {
        assert!(
            std::time::Instant::now() < end,
            "no state after the late discharge: {}",
            _d.log_tail(6000)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give a wrongly closed scope time to show.
    std::thread::sleep(Duration::from_secs(2));
    let s = ward.states("P-L").last().cloned().unwrap();
    assert!(
        s.get("discharged").is_none(),
        "the current stay is open: {s}"
    );
    let cleared: Vec<Value> = ward
        .alerts("P-L")
        .into_iter()
        .filter(|a| a["phase"] == "cleared")
        .collect();
    assert!(cleared.is_empty(), "no alert cleared: {cleared:?}");
    let r = reader(dir.path());
    let p = r
        .patients()
        .unwrap()
        .into_iter()
        .find(|p| p.patient_id == "P-L")
        .unwrap();
    assert_eq!(p.discharged_at_ms, None, "the patients projection: {p:?}");
}

/// Item 4a: states recorded before a late input do not stay in the
/// history. Inputs arrive live (each recording a point at its "now"), then
/// four back-dated inputs: every stored point equals an independent replay
/// of the stored inputs at its time. The chart's dose lane shows the doses.
#[test]
fn a_late_input_rewrites_the_stored_history_from_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("latehist");
    let ward = Ward::connect(PORT, &prefix);
    let _d = daemon_on(PORT, dir.path(), &prefix, "history_interval_s = 60");
    ward.wait_online();
    let t0 = now_ms();
    ward.admit("P-H", t0 - 2 * H);
    ward.pump("pump-H", "P-H", t0 - 90 * MIN, 20.0);
    // Live points: several batches, each recording a point at its "now".
    for i in 0..4 {
        ward.bolus("P-H", now_ms() - 1000, 10.0 + i as f64);
        let n = 3 + i;
        poll_until("stored", Duration::from_secs(20), || {
            stored_inputs(dir.path()) == n
        });
        std::thread::sleep(Duration::from_millis(400));
    }
    let before = reader(dir.path()).history("P-H", None, None).unwrap().len();
    assert!(before > 60, "history from the back-dated pump: {before}");
    // Four back-dated inputs (a bolus, an infusion, an intranasal dose, a
    // second bolus), into the recorded past.
    ward.bolus("P-H", t0 - 60 * MIN, 100.0);
    ward.pump("pump-H2", "P-H", t0 - 50 * MIN, 60.0);
    ward.publish(
        "patients/P-H/doses",
        json!({"id": unique("in"), "time": at(t0 - 40 * MIN), "route": "intranasal", "amount_mg": 50}),
    );
    ward.bolus("P-H", t0 - 30 * MIN, 50.0);
    poll_until("10 inputs stored", Duration::from_secs(20), || {
        stored_inputs(dir.path()) == 10
    });
    let r = reader(dir.path());
    poll_until(
        "the stored history equals the replay",
        Duration::from_secs(20),
        || history_mismatches(&r, "P-H").is_empty(),
    );
    let bad = history_mismatches(&r, "P-H");
    assert!(bad.is_empty(), "stale points: {bad:?}");

    // `dosetrack history --plot`: the dose lane has the doses.
    let svg = dir.path().join("h.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dosetrack"))
        .args(["history", "P-H", "--database"])
        .arg(dir.path().join("dosetrack.db"))
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        !text.contains("no doses in this period"),
        "the dose lane is empty"
    );
    assert!(
        text.contains("IN 50 mg") || text.contains("50 mg"),
        "the intranasal dose is marked"
    );
}

/// Item 4b: history exists only inside stays. A past stay of 55 minutes,
/// published now (a backlog): about 55 points (one per minute), none outside
/// the stay.
#[test]
fn history_exists_only_inside_stays() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("histstay");
    let ward = Ward::connect(PORT, &prefix);
    let _d = daemon_on(PORT, dir.path(), &prefix, "history_interval_s = 60");
    ward.wait_online();
    let start = now_ms() - 10 * H;
    let end = start + 55 * MIN;
    ward.admit("P-S", start);
    ward.bolus("P-S", start + MIN, 20.0);
    ward.pump("pump-S", "P-S", start + 2 * MIN, 20.0);
    ward.discharge("P-S", end);
    poll_until("4 inputs stored", Duration::from_secs(20), || {
        stored_inputs(dir.path()) == 4
    });
    poll_until("the discharged state", Duration::from_secs(20), || {
        ward.states("P-S")
            .last()
            .is_some_and(|s| s["discharged"] == true)
    });
    std::thread::sleep(Duration::from_millis(500));
    let rows = reader(dir.path()).history("P-S", None, None).unwrap();
    assert!(
        (50..=60).contains(&rows.len()),
        "{} points for a 55-minute stay",
        rows.len()
    );
    let outside: Vec<_> = rows
        .iter()
        .filter(|r| r.t_ms < start || r.t_ms >= end)
        .map(|r| at(r.t_ms))
        .collect();
    assert!(outside.is_empty(), "points outside the stay: {outside:?}");
}

/// Item 5: an ended stay leaves memory after the grace period (0 here);
/// a late input for it reloads the stay from the store and recomputes its
/// history correctly; a discharged patient with a silent pump gets no
/// alert evaluation (no `device_silent`).
#[test]
fn an_ended_stay_is_released_and_a_late_input_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("release");
    let ward = Ward::connect(PORT, &prefix);
    let mut d = daemon_on(
        PORT,
        dir.path(),
        &prefix,
        "history_interval_s = 1\nrelease_after_discharge_min = 0\ndevice_stale_after_min = 0.05",
    );
    ward.wait_online();
    let t0 = now_ms();
    let (start, end) = (t0 - 3 * H, t0 - H);
    ward.admit("P-X", start);
    ward.discharge("P-X", end);
    // Documented after the discharge: the pump is never stopped, and silent
    // since: for a discharged patient it must not raise device_silent. (Sent
    // before the discharge, the pump would rightly raise it for the moments
    // the patient seemed in care, when the inputs fall in separate batches.)
    ward.pump("pump-X", "P-X", start + 10 * MIN, 20.0);
    ward.bolus("P-X", start + 20 * MIN, 30.0);
    poll_until("4 inputs stored", Duration::from_secs(20), || {
        stored_inputs(dir.path()) == 4
    });
    d.wait_log("released from memory", Duration::from_secs(20));
    // A late, back-dated bolus into the ended stay.
    ward.bolus("P-X", start + 60 * MIN, 80.0);
    poll_until("5 inputs stored", Duration::from_secs(20), || {
        stored_inputs(dir.path()) == 5
    });
    d.wait_log(
        "released patient reloaded from the store",
        Duration::from_secs(20),
    );
    let r = reader(dir.path());
    poll_until(
        "the stay's history equals the replay (the late bolus included)",
        Duration::from_secs(20),
        || history_mismatches(&r, "P-X").is_empty(),
    );
    let rows = r.history("P-X", None, None).unwrap();
    // One point a second would be 7,200 for the 2 h stay; the late bolus
    // recomputed the stay from its time on (60 min of it).
    assert!(
        rows.iter().all(|p| p.t_ms >= start && p.t_ms < end),
        "history only inside the stay"
    );
    let after_bolus = rows.iter().filter(|p| p.t_ms >= start + 60 * MIN).count();
    assert!(
        (3_500..=3_700).contains(&after_bolus),
        "{after_bolus} points recomputed from the late bolus"
    );
    let s = ward.states("P-X").last().cloned().unwrap();
    assert_eq!(s["discharged"], true, "{s}");
    // Released again after the late input, with the grace of 0.
    poll_until("released again", Duration::from_secs(20), || {
        d.log_text().matches("released from memory").count() >= 2
    });
    std::thread::sleep(Duration::from_secs(2));
    let silent: Vec<Value> = ward
        .alerts("P-X")
        .into_iter()
        .filter(|a| a["phase"] == "raised")
        .collect();
    assert!(
        silent.is_empty(),
        "no alert for a discharged patient: {silent:?}"
    );
}

/// How big the scale test is.
struct Size {
    /// Stays for the memory figure (3 inputs each).
    memory_stays: usize,
    /// Past stays of 6 inputs for the backlog rate.
    backlog_stays: usize,
}

fn size() -> Size {
    match std::env::var("DOSETRACK_STAYS").as_deref() {
        Ok("full") => Size {
            memory_stays: 10_000,
            backlog_stays: 300,
        },
        _ => Size {
            memory_stays: 600,
            backlog_stays: 60,
        },
    }
}

/// The daemon's memory gauges from `/metrics` (heap in use, allocator's
/// free pages, SQLite), in MiB, as one line.
fn memory_metrics(http_port: u16) -> String {
    let Some((_, _, body)) = http_get(http_port, "/metrics") else {
        return "(no /metrics)".to_owned();
    };
    body.lines()
        .filter(|l| {
            l.starts_with("dosetrack_memory_")
                || l.starts_with("dosetrack_tracker_retained_inputs")
                || l.starts_with("dosetrack_alert_book_entries")
                || l.starts_with("dosetrack_tracked_patients")
                || l.starts_with("dosetrack_outbox_pending")
        })
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            let v: f64 = v.parse().ok()?;
            Some(match name.strip_prefix("dosetrack_memory_") {
                Some(n) => format!("{n} {:.1}", v / (1024.0 * 1024.0)),
                None => format!("{} {v}", name.trim_start_matches("dosetrack_")),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `VmRSS` of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// The six inputs of past stay `i` (55 minutes, one starting every 30
/// minutes back from `base`, so that 300 stays fit in the 7 days a late
/// input's history is recomputed over): admit, bolus, pump on, intranasal,
/// pump off, discharge.
fn past_stay(prefix: &str, i: usize, base: TimeMs) -> Vec<(String, Vec<u8>)> {
    let pid = format!("B-{i}");
    let start = base - H - i as TimeMs * 30 * MIN;
    let dev = format!("pump-{}", i % 20);
    let t = |m: TimeMs| at(start + m * MIN);
    let topic = |s: &str| format!("{prefix}/v1/{s}");
    vec![
        (
            topic(&format!("patients/{pid}/admit")),
            json!({"id": format!("a-{i}"), "time": t(0), "weight_kg": 70, "age_years": 40}),
        ),
        (
            topic(&format!("patients/{pid}/doses")),
            json!({"id": format!("b-{i}"), "time": t(1), "route": "iv_bolus", "amount_mg": 20}),
        ),
        (
            topic(&format!("devices/{dev}/events")),
            json!({"id": format!("on-{i}"), "time": t(2), "kind": "infusion_started",
                   "patient_id": pid, "rate_mg_per_h": 20}),
        ),
        (
            topic(&format!("patients/{pid}/doses")),
            json!({"id": format!("n-{i}"), "time": t(20), "route": "intranasal", "amount_mg": 25}),
        ),
        (
            topic(&format!("devices/{dev}/events")),
            json!({"id": format!("off-{i}"), "time": t(50), "kind": "infusion_stopped"}),
        ),
        (
            topic(&format!("patients/{pid}/discharge")),
            json!({"id": format!("d-{i}"), "time": t(55)}),
        ),
    ]
    .into_iter()
    .map(|(t, v)| (t, v.to_string().into_bytes()))
    .collect()
}

/// Items 4b and 5 at scale: a backlog of past stays queued while the daemon
/// is down (a persistent session on a broker of the test's own) is caught
/// up at its rate, with ~55 history points per stay; then many admitted-
/// and-discharged stays leave the daemon's RSS within 20 MiB of its empty
/// figure. Prints the figures (`STAYS …` lines) for docs/reliability.md.
#[test]
fn a_backlog_of_past_stays_is_caught_up_and_memory_returns() {
    let size = size();
    let broker = OwnBroker::start_with(
        "persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("backlog");
    let ward = Ward::connect(broker.port, &prefix);
    // The metrics listener tells the heap in use, the allocator's free
    // pages and SQLite's share apart (printed with the RSS figures).
    let http_port = free_port();
    let state = format!(
        "history_interval_s = 60\nrelease_after_discharge_min = 0\n\n[http]\nlisten = \"127.0.0.1:{http_port}\""
    );
    let mut d = daemon_on(broker.port, dir.path(), &prefix, &state);
    ward.wait_online();
    std::thread::sleep(Duration::from_secs(1));
    let empty_rss = rss(d.pid());
    let empty_mem = memory_metrics(http_port);
    // The session is known to the broker: stop, queue the backlog, start.
    d.terminate_within(Duration::from_secs(30));
    let base = now_ms();
    let backlog: Vec<(String, Vec<u8>)> = (0..size.backlog_stays)
        .flat_map(|i| past_stay(&prefix, i, base))
        .collect();
    let n = backlog.len() as i64;
    for (topic, payload) in backlog {
        ward.client.publish(topic, payload);
    }
    poll_until("the backlog queued", Duration::from_secs(60), || {
        ward.client.pubacks() >= n as usize
    });
    let t_start = Instant::now();
    d.spawn();
    poll_until("the backlog stored", Duration::from_secs(240), || {
        stored_inputs(dir.path()) == n
    });
    let caught_up = t_start.elapsed();
    let rate = n as f64 / caught_up.as_secs_f64();
    // The history of every stay written too (after the inputs' commit).
    let want_rows = 50 * size.backlog_stays as i64;
    poll_until(
        "the backlog's history written",
        Duration::from_secs(240),
        || sql_i64(dir.path(), "SELECT count(*) FROM concentration_history") >= want_rows,
    );
    let with_history = t_start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rows = sql_i64(dir.path(), "SELECT count(*) FROM concentration_history");
    let per_stay = rows as f64 / size.backlog_stays as f64;
    eprintln!(
        "STAYS backlog: {n} inputs of {} past stays stored in {:.2} s (start included): {rate:.0} inputs/s; their history written by {:.2} s ({:.0} inputs/s); {rows} history rows ({per_stay:.1} per 55-min stay)",
        size.backlog_stays,
        caught_up.as_secs_f64(),
        with_history.as_secs_f64(),
        n as f64 / with_history.as_secs_f64()
    );
    assert!(
        (50.0..=60.0).contains(&per_stay),
        "{per_stay} history points per 55-minute stay"
    );
    assert!(rate >= 150.0, "backlog caught up at {rate:.0} inputs/s");

    // Memory: many admitted-and-discharged stays (admit, bolus, discharge),
    // published live.
    let before_mem = stored_inputs(dir.path());
    let t_mem = Instant::now();
    let base = now_ms();
    for i in 0..size.memory_stays {
        let pid = format!("M-{i}");
        let start = base - 2 * H + (i as TimeMs % 60) * MIN;
        ward.admit(&pid, start);
        ward.bolus(&pid, start + MIN, 20.0);
        ward.discharge(&pid, start + 30 * MIN);
    }
    let m = before_mem + 3 * size.memory_stays as i64;
    let mut peak = 0u64;
    poll_until("the stays stored", Duration::from_secs(600), || {
        peak = peak.max(rss(d.pid()));
        stored_inputs(dir.path()) == m
    });
    let mem_rate = (3 * size.memory_stays) as f64 / t_mem.elapsed().as_secs_f64();
    // Released at the next history tick (60 s), then trimmed.
    let released = size.backlog_stays + size.memory_stays;
    poll_until(
        "every ended stay released",
        Duration::from_secs(120),
        || {
            peak = peak.max(rss(d.pid()));
            d.log_text()
                .lines()
                .filter(|l| l.contains("released from memory"))
                .any(|l| l.contains(&format!("released_total={released}")))
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let after = rss(d.pid());
    let after_mem = memory_metrics(http_port);
    const MIB: f64 = 1024.0 * 1024.0;
    eprintln!("STAYS memory metrics (MiB): empty {empty_mem}; after {after_mem}");
    eprintln!(
        "STAYS memory: RSS empty {:.1} MiB, peak {:.1} MiB, after {} stays released {:.1} MiB (+{:.1} MiB); {} inputs at {mem_rate:.0}/s",
        empty_rss as f64 / MIB,
        peak as f64 / MIB,
        size.memory_stays,
        after as f64 / MIB,
        (after as f64 - empty_rss as f64) / MIB,
        3 * size.memory_stays
    );
    assert!(
        (after as f64) < empty_rss as f64 + 20.0 * MIB,
        "RSS after the stays: {:.1} MiB vs {:.1} MiB empty",
        after as f64 / MIB,
        empty_rss as f64 / MIB
    );
}
