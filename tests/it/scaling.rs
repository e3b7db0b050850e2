//! Past one machine (issue #16 item 5, `docs/scaling.md`): two daemons
//! on one broker, one per unit, each with its own topic prefix, database
//! and client id. Each stores and acknowledges exactly its own unit's
//! inputs, once; each publishes states only under its own prefix and only
//! for its own patients — also for a patient id both units use; a consumer
//! of `{site}/+/v1/patients/+/state` sees every unit's patients, each from
//! exactly one instance.

use crate::mqtt_common::blocking::BlockingClient;
use crate::mqtt_common::daemon::{write_http_config, DaemonProcess};
use crate::mqtt_common::{http_get, poll_until, shared_broker, unique};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn ago_ms(ms: i64) -> String {
    let t = chrono::Utc::now() - chrono::Duration::milliseconds(ms);
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One unit: its prefix, its daemon (own database, client id, HTTP port)
/// and the inputs published to it.
struct Unit {
    prefix: String,
    db: PathBuf,
    http_port: u16,
    daemon: DaemonProcess,
    /// Patient id → the iv_infusion rate given to that patient here.
    patients: BTreeMap<String, f64>,
    /// (topic, input id) of every input published to this unit.
    published: Vec<(String, String)>,
}

impl Unit {
    fn start(dir: &Path, site: &str, name: &str) -> Unit {
        let prefix = format!("{site}/{name}");
        let config = dir.join(format!("{name}.toml"));
        let http_port = write_http_config(&config);
        let db = dir.join(format!("{name}.db"));
        let log_dir = dir.join(name);
        std::fs::create_dir_all(&log_dir).unwrap();
        let (host, port) = shared_broker();
        let mut daemon = DaemonProcess::run(
            (&host, port),
            &db,
            &prefix,
            &unique(&format!("dosetrack-{name}")),
            &["--config", config.to_str().unwrap()],
            &log_dir,
        );
        daemon.spawn();
        Unit {
            prefix,
            db,
            http_port,
            daemon,
            patients: BTreeMap::new(),
            published: Vec::new(),
        }
    }

    fn healthz(&self) -> Option<(u16, Value)> {
        let (status, _, body) = http_get(self.http_port, "/healthz")?;
        Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    fn wait_healthy(&self) {
        poll_until(
            &format!("{} healthy", self.prefix),
            Duration::from_secs(30),
            || matches!(self.healthz(), Some((200, _))),
        );
    }

    /// Admit `pid` (weight `kg`) and give two doses: an IV bolus and an
    /// infusion at `rate` mg/h, ids unique to this unit.
    fn admit_and_dose(&mut self, c: &BlockingClient, pid: &str, kg: f64, rate: f64) {
        let tag = self
            .prefix
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let inputs = [
            (
                "admit",
                json!({"id": format!("{tag}-adm-{pid}"), "time": ago_ms(600_000),
                       "weight_kg": kg, "age_years": 50}),
            ),
            (
                "doses",
                json!({"id": format!("{tag}-bol-{pid}"), "time": ago_ms(300_000),
                       "route": "iv_bolus", "amount_mg": 10}),
            ),
            (
                "doses",
                json!({"id": format!("{tag}-inf-{pid}"), "time": ago_ms(240_000),
                       "route": "iv_infusion", "rate_mg_per_h": rate,
                       "duration_min": 120}),
            ),
        ];
        for (kind, payload) in inputs {
            let topic = format!("{}/v1/patients/{pid}/{kind}", self.prefix);
            let id = payload["id"].as_str().unwrap().to_owned();
            c.publish(topic.clone(), payload.to_string());
            self.published.push((topic, id));
        }
        self.patients.insert(pid.to_owned(), rate);
    }

    fn query<T: rusqlite::types::FromSql>(&self, sql: &str) -> Vec<T> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn stored_inputs(&self) -> usize {
        self.query::<i64>("SELECT count(*) FROM inputs")[0] as usize
    }
}

/// The iv_infusion rates a state shows as delivering.
fn rates(state: &Value) -> Vec<f64> {
    state["active_inputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["rate_mg_per_h"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_instances_on_one_broker_each_track_only_their_own_unit() {
    let dir = tempfile::tempdir().unwrap();
    let site = unique("site");
    let mut a = Unit::start(dir.path(), &site, "unit-a");
    let mut b = Unit::start(dir.path(), &site, "unit-b");
    a.wait_healthy();
    b.wait_healthy();

    // A site-wide consumer: every unit's states and statuses, one filter
    // each (docs/scaling.md, "What a consumer sees").
    let (host, port) = shared_broker();
    let consumer = BlockingClient::connect(
        &host,
        port,
        &unique("site-consumer"),
        &[
            format!("{site}/+/v1/patients/+/state"),
            format!("{site}/+/v1/status"),
        ],
    );
    let publisher = BlockingClient::connect(&host, port, &unique("gateways"), &[]);

    // Unit A: P-1, P-2 and P-SAME; unit B: P-3 and a different P-SAME
    // (same id, another person: another weight, another rate).
    a.admit_and_dose(&publisher, "P-1", 70.0, 10.0);
    a.admit_and_dose(&publisher, "P-2", 55.0, 12.0);
    a.admit_and_dose(&publisher, "P-SAME", 60.0, 20.0);
    b.admit_and_dose(&publisher, "P-3", 80.0, 15.0);
    b.admit_and_dose(&publisher, "P-SAME", 95.0, 7.0);
    let sent = a.published.len() + b.published.len();
    assert_eq!(sent, 15);
    poll_until("every input PUBACKed", Duration::from_secs(20), || {
        publisher.pubacks() == sent
    });

    // Each database holds its own unit's inputs, all of them, once.
    for u in [&a, &b] {
        poll_until(
            &format!("{}: every input stored", u.prefix),
            Duration::from_secs(30),
            || u.stored_inputs() >= u.published.len(),
        );
    }
    // Long enough for a stray or redelivered input to have landed.
    std::thread::sleep(Duration::from_secs(2));
    for (u, other) in [(&a, &b), (&b, &a)] {
        let stored: Vec<String> = u.query("SELECT topic || ' ' || input_id FROM inputs");
        let expected: Vec<String> = u
            .published
            .iter()
            .map(|(t, i)| format!("{t} {i}"))
            .collect();
        let mut sorted = stored.clone();
        sorted.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(sorted, want, "{}: stored inputs", u.prefix);
        // Nothing doubled, nothing of the other unit.
        let distinct: BTreeSet<&String> = stored.iter().collect();
        assert_eq!(
            distinct.len(),
            stored.len(),
            "{}: an input stored twice",
            u.prefix
        );
        assert!(
            stored
                .iter()
                .all(|s| s.starts_with(&format!("{}/v1/", u.prefix))),
            "{}: {stored:?}",
            u.prefix
        );
        assert!(
            !stored.iter().any(|s| s.contains(&other.prefix)),
            "{}: {stored:?}",
            u.prefix
        );
        let rejected: Vec<i64> = u.query("SELECT count(*) FROM rejected");
        assert_eq!(rejected, vec![0], "{}: rejections", u.prefix);
        // The patients it tracks are its own.
        let tracked: BTreeSet<String> = u
            .query("SELECT patient_id FROM patients")
            .into_iter()
            .collect();
        assert_eq!(
            tracked,
            u.patients.keys().cloned().collect::<BTreeSet<_>>(),
            "{}",
            u.prefix
        );
    }

    // Every input acknowledged: none waits unacknowledged (a redelivery
    // would be a second copy at the broker, stored once anyway: checked
    // above).
    for u in [&a, &b] {
        poll_until(
            &format!("{}: nothing unacknowledged", u.prefix),
            Duration::from_secs(20),
            || matches!(u.healthz(), Some((200, ref h)) if h["unacked_inputs"].as_u64() == Some(0)),
        );
    }

    // The consumer sees a state for each of the five (unit, patient)
    // pairs, under the unit's own prefix, showing that unit's infusion.
    let expect: BTreeSet<(String, String)> = [&a, &b]
        .iter()
        .flat_map(|u| u.patients.keys().map(|p| (u.prefix.clone(), p.clone())))
        .collect();
    assert_eq!(expect.len(), 5);
    let state_pairs = |c: &BlockingClient| -> BTreeSet<(String, String)> {
        c.received()
            .iter()
            .filter_map(|m| {
                let (prefix, rest) = m.topic.split_once("/v1/patients/")?;
                let pid = rest.strip_suffix("/state")?;
                Some((prefix.to_owned(), pid.to_owned()))
            })
            .collect()
    };
    poll_until(
        "a state per unit and patient",
        Duration::from_secs(30),
        || {
            let got = state_pairs(&consumer);
            expect.iter().all(|p| got.contains(p))
                && [&a, &b].iter().all(|u| {
                    u.patients.iter().all(|(pid, rate)| {
                        consumer
                            .json_on(&format!("{}/v1/patients/{pid}/state", u.prefix))
                            .last()
                            .is_some_and(|s| rates(s) == vec![*rate])
                    })
                })
        },
    );
    assert_eq!(state_pairs(&consumer), expect, "states from nowhere else");
    for u in [&a, &b] {
        for (pid, rate) in &u.patients {
            for s in consumer.json_on(&format!("{}/v1/patients/{pid}/state", u.prefix)) {
                assert_eq!(s["patient_id"], json!(pid));
                // P-SAME under unit A never shows unit B's infusion, nor
                // the other way round.
                let r = rates(&s);
                assert!(r.is_empty() || r == vec![*rate], "{}/{pid}: {s}", u.prefix);
            }
        }
    }
    // Each instance's own status topic says online.
    for u in [&a, &b] {
        let status = consumer.json_on(&format!("{}/v1/status", u.prefix));
        assert_eq!(
            status.last().map(|s| s["state"].clone()),
            Some(json!("online")),
            "{}",
            u.prefix
        );
    }

    // What each instance wrote to publish is under its own prefix, and
    // its states are for its own patients only.
    for u in [&a, &b] {
        let topics: Vec<String> = u.query("SELECT DISTINCT topic FROM outbox");
        assert!(!topics.is_empty());
        for t in &topics {
            assert!(
                t.starts_with(&format!("{}/v1/", u.prefix)),
                "{}: {t}",
                u.prefix
            );
            if let Some(pid) = t
                .strip_prefix(&format!("{}/v1/patients/", u.prefix))
                .and_then(|r| r.strip_suffix("/state"))
            {
                assert!(u.patients.contains_key(pid), "{}: {t}", u.prefix);
            }
        }
        let states: Vec<String> = u.query("SELECT patient_id FROM published_state");
        assert_eq!(
            states.into_iter().collect::<BTreeSet<_>>(),
            u.patients.keys().cloned().collect::<BTreeSet<_>>()
        );
    }

    let (stored_a, stored_b) = (a.stored_inputs(), b.stored_inputs());
    assert_eq!((stored_a, stored_b), (9, 6));
    assert!(a.daemon.terminate().success());
    assert!(b.daemon.terminate().success());
}
