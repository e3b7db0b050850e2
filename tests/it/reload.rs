//! Reload, stop and log format of the real `dosetrack run` binary, against
//! the shared Mosquitto at 127.0.0.1:1883 (a unique topic prefix and client
//! ids per test) and a real SQLite file, with a config file and a copy of
//! the shipped drug file in a temp dir.
//!
//! Checked:
//! * SIGHUP applies a lowered ceiling from the drug file live: the NEXT
//!   alert (concentration_high) carries the new ceiling, and the log line
//!   names the change; a changed `broker.port` is refused with one clear
//!   line and the daemon keeps running and ingesting; a broken config is
//!   refused and the old one kept. The daemon logs `format = "json"`: every
//!   stderr line is a JSON object with a level and fields.
//! * SIGTERM under load loses nothing: N QoS-1 inputs published at a steady
//!   rate, SIGTERM mid-stream, exit 0 within the stop timeout, restart, the
//!   publisher finishes: N inputs in the database, none twice.
//!   `DOSETRACK_TEST_LOAD_N` changes N (default 2000). This one runs its own
//!   Mosquitto with the queue limits of `config/mosquitto/dosetrack.conf`
//!   (the default `max_queued_messages 1000` drops messages for a daemon
//!   that is down, which is the broker's loss, not the daemon's).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

use mqtt_common::blocking::{options, BlockingClient};
use mqtt_common::daemon::{derefs_to_process, DaemonProcess};
use mqtt_common::{unique, OwnBroker};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;
/// The unit's TimeoutStopSec.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

fn ago_min(min: i64) -> String {
    dosetrack::vocab::format_rfc3339(chrono::Utc::now().timestamp_millis() - min * 60_000)
}

/// The daemon with a config file (the broker from the file, not the command
/// line), the database and prefix on the command line; logs in `format =
/// "json"` when the config says so (no RUST_LOG, no journal, no systemd).
struct Daemon {
    process: DaemonProcess,
    dir: PathBuf,
    config: PathBuf,
}

impl Daemon {
    fn new(dir: &Path, prefix: &str) -> Daemon {
        let config = dir.join("dosetrack.toml");
        let process = DaemonProcess::new(
            [
                "run",
                "--config",
                config.to_str().unwrap(),
                "--database",
                dir.join("dosetrack.db").to_str().unwrap(),
                "--topic-prefix",
                prefix,
                "--client-id",
                &unique("rl"),
            ],
            dir,
        )
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
        Daemon {
            process,
            dir: dir.to_owned(),
            config,
        }
    }

    /// SIGTERM; the exit status and how long the stop took (at most the
    /// stop timeout).
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        let status = self.process.terminate_within(STOP_TIMEOUT);
        (status, t0.elapsed())
    }

    fn count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.join("dosetrack.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

derefs_to_process!(Daemon, process);

/// A test client: publishes QoS 1, records what arrives on its filters and
/// counts PUBACKs.
struct Client {
    inner: BlockingClient,
    prefix: String,
}

impl Client {
    fn connect(prefix: &str, filters: &[String], port: u16) -> Client {
        let mut opts = options(BROKER, port, &unique("c"));
        opts.set_inflight(100);
        Client {
            inner: BlockingClient::connect_with(opts, 10_000, filters),
            prefix: prefix.to_owned(),
        }
    }

    fn publish(&self, suffix: &str, payload: Value) {
        let topic = format!("{}/v1/{suffix}", self.prefix);
        self.inner.publish(topic, payload.to_string());
    }

    fn seen(&self, topic_suffix: &str) -> Vec<Value> {
        self.inner
            .json_on(&format!("{}/v1/{topic_suffix}", self.prefix))
    }

    fn wait(&self, what: &str, secs: u64, mut f: impl FnMut(&Client) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!(
            "timed out waiting for {what}; seen: {:#?}",
            self.inner
                .received()
                .iter()
                .map(|m| (&m.topic, &m.json))
                .collect::<Vec<_>>()
        );
    }
}

fn config_text(port: u16, drug: &Path, extra: &str) -> String {
    format!(
        "[broker]\nhost = \"{BROKER}\"\nport = {port}\n\n[drug]\nfile = \"{}\"\n\n[log]\nformat = \"json\"\n\n[alerts.rules.concentration_high]\ncondition_delay_s = 0\n{extra}",
        drug.display()
    )
}

const CEILING_500: &str = "[targets.ceiling_ng_per_ml]\nvalue = 500.0";

#[test]
fn sighup_applies_a_new_ceiling_refuses_a_broker_change_and_keeps_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("reload");
    let drug = dir.path().join("ketamine.toml");
    let shipped = dosetrack::drug::BUILTIN_TOML;
    assert!(shipped.contains(CEILING_500));
    std::fs::write(&drug, shipped).unwrap();
    let mut d = Daemon::new(dir.path(), &prefix);
    std::fs::write(&d.config, config_text(PORT, &drug, "")).unwrap();
    let client = Client::connect(
        &prefix,
        &[
            format!("{prefix}/v1/patients/+/alerts"),
            format!("{prefix}/v1/patients/+/state"),
        ],
        PORT,
    );
    d.spawn();
    // Subscribed: a new session gets nothing published before.
    d.wait_log("subscribed to the input topics", Duration::from_secs(20));

    // An infusion of 20 mg/h (0.29 mg/kg/h, under the ward limit) for the
    // last 2 h: Ce well below the shipped ceiling of 500 ng/mL.
    client.publish(
        "patients/P-1/admit",
        json!({"id": "adm-1", "time": ago_min(130), "weight_kg": 70, "age_years": 40}),
    );
    client.publish(
        "patients/P-1/doses",
        json!({"id": "inf-1", "time": ago_min(120), "route": "iv_infusion", "rate_mg_per_h": 20, "duration_min": 600}),
    );
    client.wait("a state with the infusion", 20, |c| {
        c.seen("patients/P-1/state")
            .iter()
            .any(|s| s["ce_ng_per_ml"].as_f64().is_some_and(|ce| ce > 50.0))
    });
    let state = client.seen("patients/P-1/state").pop().unwrap();
    let ce = state["ce_ng_per_ml"].as_f64().unwrap();
    assert!((50.0..400.0).contains(&ce), "Ce {ce}");
    assert_eq!(state["targets"]["ceiling_ng_per_ml"], 500.0, "{state}");
    let high = |c: &Client| {
        c.seen("patients/P-1/alerts")
            .into_iter()
            .filter(|a| a["rule"] == "concentration_high")
            .collect::<Vec<_>>()
    };
    assert!(high(&client).is_empty(), "{:?}", high(&client));

    // (a) Lower the targets under the current Ce (floor < caution <
    // ceiling), reload: the next alert uses the new ceiling.
    let lowered = shipped
        .replacen(CEILING_500, "[targets.ceiling_ng_per_ml]\nvalue = 30.0", 1)
        .replacen(
            "[targets.psychotomimetic_caution_ng_per_ml]\nvalue = 250.0",
            "[targets.psychotomimetic_caution_ng_per_ml]\nvalue = 20.0",
            1,
        )
        .replacen(
            "[targets.analgesic_floor_ng_per_ml]\nvalue = 100.0",
            "[targets.analgesic_floor_ng_per_ml]\nvalue = 10.0",
            1,
        )
        // Each indication's floor (its EC50 at half the maximal relief)
        // must stay below the caution level too.
        .replacen(
            "[relief.acute.indications.acute_pain.ec50_ng_per_ml]\nvalue = 100.0",
            "[relief.acute.indications.acute_pain.ec50_ng_per_ml]\nvalue = 10.0",
            1,
        )
        .replacen(
            "[relief.acute.indications.chronic_neuropathic.ec50_ng_per_ml]\nvalue = 21.0",
            "[relief.acute.indications.chronic_neuropathic.ec50_ng_per_ml]\nvalue = 10.0",
            1,
        );
    std::fs::write(&drug, &lowered).unwrap();
    d.signal("HUP");
    client.wait("concentration_high with the new ceiling", 20, |c| {
        !high(c).is_empty()
    });
    let alert = high(&client).remove(0);
    assert_eq!(alert["phase"], "raised", "{alert}");
    assert_eq!(alert["details"]["ceiling_ng_per_ml"], 30.0, "{alert}");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("ceiling 30 ng/mL"),
        "{alert}"
    );
    let line = d.wait_log("reloaded", Duration::from_secs(10));
    assert!(
        line.contains("drug file targets.ceiling_ng_per_ml.value 500.0 -> 30.0"),
        "{line}"
    );
    client.wait("a state with the new ceiling", 10, |c| {
        c.seen("patients/P-1/state")
            .last()
            .is_some_and(|s| s["targets"]["ceiling_ng_per_ml"] == 30.0)
    });

    // (b) A new broker port is refused with one clear line; the daemon
    // keeps running and ingesting.
    std::fs::write(&d.config, config_text(1884, &drug, "")).unwrap();
    d.signal("HUP");
    let refused = d.wait_log("broker.port changed", Duration::from_secs(10));
    assert!(
        refused.contains(
            "broker.port changed from 1883 to 1884: restart dosetrack to apply; keeping 1883"
        ),
        "{refused}"
    );
    d.wait_log("nothing to apply", Duration::from_secs(10));
    client.publish(
        "patients/P-1/doses",
        json!({"id": "bol-2", "time": ago_min(0), "route": "iv_bolus", "amount_mg": 5}),
    );

    // (c) A broken config: refused, naming the key; the old one is kept.
    std::fs::write(
        &d.config,
        config_text(PORT, &drug, "\n[state]\ninterval_s = 0\n"),
    )
    .unwrap();
    d.signal("HUP");
    let broken = d.wait_log("reload refused", Duration::from_secs(10));
    assert!(broken.contains("state.interval_s"), "{broken}");
    assert!(d.running(), "{}", d.log_text());
    // ... and a broken drug file likewise.
    std::fs::write(&d.config, config_text(PORT, &drug, "")).unwrap();
    let broken_drug = lowered.replacen(
        "[targets.ceiling_ng_per_ml]\nvalue = 30.0",
        "[targets.ceiling_ng_per_ml]\nvalue = -3.0",
        1,
    );
    assert_ne!(broken_drug, lowered);
    std::fs::write(&drug, broken_drug).unwrap();
    d.signal("HUP");
    client.wait("the second refusal", 10, |_| {
        d.log_text().matches("reload refused").count() == 2
    });
    assert!(d.log_text().contains("ketamine.toml"), "{}", d.log_text());
    client.wait("the bolus stored and applied", 10, |_| {
        d.count("SELECT COUNT(*) FROM inputs WHERE input_id = 'bol-2'") == 1
    });
    assert!(d.running());
    // Still the reloaded ceiling, still alive.
    client.publish(
        "patients/P-1/doses",
        json!({"id": "bol-3", "time": ago_min(0), "route": "iv_bolus", "amount_mg": 5}),
    );
    client.wait("a state after bol-3", 10, |_| {
        d.count("SELECT COUNT(*) FROM inputs WHERE input_id = 'bol-3'") == 1
    });
    assert_eq!(
        client.seen("patients/P-1/state").last().unwrap()["targets"]["ceiling_ng_per_ml"],
        30.0
    );

    let (status, took) = d.terminate();
    assert!(status.success(), "{status}: {}", d.log_text());
    assert!(took < STOP_TIMEOUT);

    // (e) format = "json": every stderr line is one JSON object with a
    // level and fields.
    let log = d.log_text();
    assert!(log.lines().count() > 10, "{log}");
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string(), "{l}");
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
    let reloaded: Value = serde_json::from_str(line.as_str()).unwrap();
    assert_eq!(reloaded["level"], "INFO");
    assert!(reloaded["fields"]["changes"]
        .as_str()
        .unwrap()
        .contains("targets.ceiling_ng_per_ml.value"));
}

#[test]
fn sigterm_under_load_loses_nothing() {
    let n: usize = std::env::var("DOSETRACK_TEST_LOAD_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    // The queue limits of config/mosquitto/dosetrack.conf.
    let broker = OwnBroker::start_with("max_queued_messages 300000\nmax_queued_bytes 0\n");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("load");
    let mut d = Daemon::new(dir.path(), &prefix);
    std::fs::write(
        &d.config,
        format!(
            "[broker]\nhost = \"{BROKER}\"\nport = {}\n\n[log]\nformat = \"text\"\n",
            broker.port
        ),
    )
    .unwrap();
    d.spawn();
    // The daemon's session is subscribed (so the broker queues for it while
    // it is down).
    d.wait_log("subscribed to the input topics", Duration::from_secs(20));
    let client = Arc::new(Client::connect(&prefix, &[], broker.port));
    // N heartbeats from 20 pumps, one every 4 ms, from another thread.
    let publisher = {
        let client = client.clone();
        std::thread::spawn(move || {
            let period = Duration::from_millis(4);
            let start = Instant::now();
            for i in 0..n {
                let due = start + period * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                client.publish(
                    &format!("devices/pump-{}/events", i % 20),
                    json!({"id": format!("hb-{i}"), "time": ago_min(0), "kind": "heartbeat"}),
                );
            }
        })
    };
    // SIGTERM a third of the way in, and start again at once.
    client.wait("a third published", 30, |c| c.inner.pubacks() >= n / 3);
    let stored_before = d.count("SELECT COUNT(*) FROM inputs");
    let (status, took) = d.terminate();
    assert!(status.success(), "{status}: {}", d.log_text());
    assert!(d.log_text().contains("stopped cleanly"), "{}", d.log_text());
    let stored_at_stop = d.count("SELECT COUNT(*) FROM inputs");
    eprintln!(
        "SIGTERM after {} PUBACKs ({stored_before} stored): exit 0 in {} ms, {stored_at_stop} stored",
        n / 3,
        took.as_millis()
    );
    d.spawn();
    publisher.join().unwrap();
    let (stopped_at, restarted) = (Some(took), true);
    assert!(restarted && stopped_at.is_some());
    client.wait("every PUBACK", 30, |c| c.inner.pubacks() >= n);
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.count("SELECT COUNT(*) FROM inputs") < n as i64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        d.count("SELECT COUNT(*) FROM inputs"),
        n as i64,
        "{}",
        d.log_text()
    );
    assert_eq!(
        d.count("SELECT COUNT(DISTINCT input_id) FROM inputs"),
        n as i64
    );
    assert_eq!(d.count("SELECT COUNT(*) FROM rejected"), 0);
    let (status, _) = d.terminate();
    assert!(status.success());
}
