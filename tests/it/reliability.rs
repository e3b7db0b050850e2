//! Reliability harness (issue #6): the real binary, a private Mosquitto with
//! persistence (its own port, started by each test) and a real SQLite file,
//! under a steady load from the deterministic ward simulator
//! (`dosetrack::sim::ward::Ward`), with faults injected while it runs:
//!
//! * `crash_under_load`: SIGKILL of the daemon at random moments, restarted;
//! * `broker_restart_under_load`: the broker restarted (SIGTERM, persistence
//!   on) during the load;
//! * `database_locked_under_load`: another connection holds the write lock
//!   (`BEGIN EXCLUSIVE`) for 10 s;
//! * `disk_full_under_load`: the database lives on a small tmpfs that is
//!   filled up, then freed (needs root for the mount; says so when refused).
//!
//! The publisher is reliable (the library's QoS 1 publisher: every message
//! is resent across reconnects until its PUBACK), so "published" means "the
//! broker acknowledged it". Each test prints one line of figures and fails
//! when an input is lost or stored twice, the final state differs from a
//! clean replay of the stored inputs, or an alert with a stored cause was
//! not published.
//!
//! Size: `DOSETRACK_RELIABILITY=small` (default, for CI: ~2-3 min in all) or
//! `full` (minutes of load per scenario). Run: `scripts/reliability.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

use dosetrack::drug::DrugFile;
use dosetrack::intake;
use dosetrack::mqtt::{spawn_publisher, BrokerConfig, Publisher};
use dosetrack::patient::Formulary;
use dosetrack::sim::ward::{SimMessage, Ward, WardSpec};
use dosetrack::store::Reader;
use dosetrack::tracker::{Tracker, TrackerConfig};
use mqtt_common::daemon::{derefs_to_process, write_http_config, DaemonProcess};
use mqtt_common::{http_get, unique, OwnBroker};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// Size.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    Small,
    Full,
}

fn size() -> Size {
    match std::env::var("DOSETRACK_RELIABILITY").as_deref() {
        Ok("full") => Size::Full,
        Ok("small") | Ok("") | Err(_) => Size::Small,
        Ok(other) => panic!("DOSETRACK_RELIABILITY={other}: expected small or full"),
    }
}

/// A small deterministic generator for the fault timings (seed printed).
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("DOSETRACK_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("fault timing seed {seed} (DOSETRACK_RELIABILITY_SEED to repeat)");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

// ---------------------------------------------------------------------------
// The broker: a private mosquitto with persistence.
// ---------------------------------------------------------------------------

/// No cap on queued messages: a session of a daemon that is down (or not
/// acknowledging) must keep everything (mosquitto's default cap of 1000
/// would drop the rest).
fn start_broker() -> OwnBroker {
    OwnBroker::start_with(
        "persistence true\nmax_queued_messages 0\n\
         log_type error\nlog_type warning\nlog_type notice\n",
    )
}

// ---------------------------------------------------------------------------
// The daemon: the real binary.
// ---------------------------------------------------------------------------

/// The daemon with a config file for the `[http]` listener (`/healthz`, the
/// same port across restarts); run N logs to `daemon-N.log`.
struct Daemon {
    process: DaemonProcess,
    db: PathBuf,
    http_port: u16,
}

impl Daemon {
    fn start(db: PathBuf, logs: &Path, port: u16, prefix: &str) -> Daemon {
        let config = logs.join("dosetrack.toml");
        let http_port = write_http_config(&config);
        let mut process = DaemonProcess::run(
            ("127.0.0.1", port),
            &db,
            prefix,
            &unique("d"),
            &["--config", config.to_str().unwrap()],
            logs,
        );
        process.spawn();
        Daemon {
            process,
            db,
            http_port,
        }
    }

    /// SIGTERM (when a run is going); exit 0 expected.
    fn terminate(&mut self) {
        if !self.process.spawned() {
            return;
        }
        let status = self.process.terminate();
        assert!(
            status.success(),
            "daemon exit {status:?}: {}",
            self.log_tail(6000)
        );
    }

    /// `/healthz` answers 200; while a technical problem is raised it must
    /// answer 503 naming it (checked here too).
    fn healthz_ok(&self) -> bool {
        match http_get(self.http_port, "/healthz") {
            Some((200, _, _)) => true,
            Some((503, _, body)) => {
                // The lock is the only fault of that scenario: the reason is
                // the raised problem (or the lag it causes).
                assert!(
                    body.contains("database_locked") || body.contains("not acknowledged"),
                    "503 without the problem: {body}"
                );
                false
            }
            other => panic!("/healthz: {other:?}"),
        }
    }

    /// Inputs stored (0 while the database does not exist yet).
    fn stored(&self) -> u64 {
        Reader::open(&self.db)
            .and_then(|r| r.counts())
            .map(|c| c.inputs + c.rejected)
            .unwrap_or(0)
    }
}

derefs_to_process!(Daemon, process);

// ---------------------------------------------------------------------------
// The observer: status and alert lifecycle messages.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    statuses: Vec<(Instant, Value)>,
    /// (alert_id, phase) of every lifecycle message.
    alerts: BTreeSet<(String, String)>,
    /// Every lifecycle message, as received.
    messages: Vec<Value>,
    subacks: u64,
}

struct Observer {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// A persistent session (it survives broker restarts with its
    /// subscriptions), subscribing again after every connect.
    async fn connect(port: u16, prefix: &str) -> Observer {
        let mut o = MqttOptions::new(unique("obs"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 100);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        let filters = [
            format!("{prefix}/v1/status"),
            format!("{prefix}/v1/patients/+/alerts"),
            format!("{prefix}/v1/devices/+/alerts"),
        ];
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => sink.lock().unwrap().subacks += 1,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let mut s = sink.lock().unwrap();
                        if p.topic.ends_with("/v1/status") {
                            s.statuses.push((Instant::now(), v));
                        } else if let (Some(id), Some(phase)) =
                            (v["alert_id"].as_str(), v["phase"].as_str())
                        {
                            s.alerts.insert((id.to_owned(), phase.to_owned()));
                            s.messages.push(v.clone());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let obs = Observer { seen, task };
        let s = obs.seen.clone();
        wait_for("observer subscribed", Duration::from_secs(10), || {
            s.lock().unwrap().subacks >= 3
        })
        .await;
        obs
    }

    /// How many online statuses with `pred(problems)` came after `since`.
    fn count_since(&self, since: Instant, pred: impl Fn(&[Value]) -> bool) -> usize {
        self.seen
            .lock()
            .unwrap()
            .statuses
            .iter()
            .filter(|(t, v)| {
                *t >= since
                    && v["state"] == "online"
                    && v["problems"].as_array().is_some_and(|p| pred(p))
            })
            .count()
    }

    /// Whether the latest status is online with no problem.
    fn latest_problems_empty(&self) -> bool {
        self.seen
            .lock()
            .unwrap()
            .statuses
            .last()
            .is_some_and(|(_, v)| {
                v["state"] == "online" && v["problems"].as_array().is_some_and(|p| p.is_empty())
            })
    }

    /// Whether an online status with `pred(problems)` came after `since`.
    fn status_since(&self, since: Instant, pred: impl Fn(&[Value]) -> bool) -> bool {
        self.seen.lock().unwrap().statuses.iter().any(|(t, v)| {
            *t >= since
                && v["state"] == "online"
                && v["problems"].as_array().is_some_and(|p| pred(p))
        })
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn has_code(problems: &[Value], code: &str) -> bool {
    problems.iter().any(|p| p["code"] == code)
}

async fn wait_for(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !pred() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// The load.
// ---------------------------------------------------------------------------

/// The first `n` messages of a simulated ward of 30 patients (heartbeats
/// every 2 s), dated in the past (late inputs are normal).
fn ward_messages(prefix: &str, n: usize) -> Vec<SimMessage> {
    let now = chrono::Utc::now().timestamp_millis();
    let start = now - 8 * 3_600_000;
    let mut spec = WardSpec::new(30, 6, start);
    spec.prefix = prefix.to_owned();
    spec.heartbeat_interval_ms = 2_000;
    let mut ward = Ward::new(spec);
    let mut out = Vec::new();
    let mut from = start;
    while out.len() < n {
        let to = from + 600_000;
        assert!(to < now - 60_000, "the ward is too small for {n} messages");
        out.extend(ward.messages_between(from, to));
        from = to;
    }
    out.truncate(n);
    out
}

/// (topic, id) of a message.
fn key_of(m: &SimMessage) -> (String, String) {
    let v: Value = serde_json::from_str(&m.payload).unwrap();
    (m.topic.clone(), v["id"].as_str().unwrap().to_owned())
}

/// Publish `msgs` at `rate_per_s`, each at QoS 1 until the broker
/// acknowledged it (resent across reconnects); `confirmed` counts PUBACKs.
async fn run_load(
    publisher: Publisher,
    msgs: Arc<Vec<SimMessage>>,
    rate_per_s: f64,
    confirmed: Arc<AtomicU64>,
) {
    let start = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, m) in msgs.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate_per_s)).await;
        let (p, c) = (publisher.clone(), confirmed.clone());
        let (topic, payload) = (m.topic.clone(), m.payload.clone().into_bytes());
        set.spawn(async move {
            p.publish_confirmed(topic, payload, false).await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

// ---------------------------------------------------------------------------
// A scenario: set-up, load with faults, checks, one line of figures.
// ---------------------------------------------------------------------------

struct Ctx {
    broker: OwnBroker,
    daemon: Daemon,
    observer: Observer,
    confirmed: Arc<AtomicU64>,
    n: usize,
    rate_per_s: f64,
    /// Base of the database path (a tmpfs mount for the disk-full case).
    _db_dir: Option<tempfile::TempDir>,
    _logs: tempfile::TempDir,
}

impl Ctx {
    fn load_secs(&self) -> f64 {
        self.n as f64 / self.rate_per_s
    }
}

/// Run `n` messages at `rate_per_s` against a fresh daemon (database at
/// `db`, or in a temp dir) while `fault` runs; then check and return the
/// figures common to every scenario.
async fn scenario<F, Fut>(
    n: usize,
    rate_per_s: f64,
    db: Option<(tempfile::TempDir, PathBuf)>,
    fault: F,
) -> (Ctx, Figures)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = Ctx>,
{
    let broker = start_broker();
    let prefix = unique("p");
    let logs = tempfile::tempdir().unwrap();
    let (db_dir, db_path) = match db {
        Some((d, p)) => (Some(d), p),
        None => {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("dosetrack.db");
            (Some(d), p)
        }
    };
    let observer = Observer::connect(broker.port, &prefix).await;
    let started = Instant::now();
    let daemon = Daemon::start(db_path, logs.path(), broker.port, &prefix);
    wait_for("daemon online", Duration::from_secs(30), || {
        observer.status_since(started, |_| true)
    })
    .await;

    let msgs = Arc::new(ward_messages(&prefix, n));
    let confirmed = Arc::new(AtomicU64::new(0));
    let pub_stop = CancellationToken::new();
    let (publisher, pub_task) = spawn_publisher(
        BrokerConfig::new("127.0.0.1", broker.port, unique("sim")),
        format!("{prefix}-sim/status"),
        "{\"state\":\"online\"}".into(),
        "{\"state\":\"offline\"}".into(),
        pub_stop.clone(),
    );
    let load = tokio::spawn(run_load(
        publisher,
        msgs.clone(),
        rate_per_s,
        confirmed.clone(),
    ));
    let ctx = Ctx {
        broker,
        daemon,
        observer,
        confirmed: confirmed.clone(),
        n,
        rate_per_s,
        _db_dir: db_dir,
        _logs: logs,
    };
    let load_started = Instant::now();
    let mut ctx = fault(ctx).await;
    tokio::time::timeout(Duration::from_secs(600), load)
        .await
        .expect("every message acknowledged by the broker")
        .unwrap();
    let load_s = load_started.elapsed().as_secs_f64();
    pub_stop.cancel();
    let _ = pub_task.await;
    if !ctx.daemon.running() {
        ctx.daemon.spawn();
    }
    let figures = check(&mut ctx, &msgs, load_s).await;
    (ctx, figures)
}

/// What every scenario measures.
struct Figures {
    published: u64,
    stored: usize,
    duplicates: usize,
    lost: usize,
    patients_compared: usize,
    alerts_published: usize,
    alerts_total: usize,
    load_s: f64,
    catch_up_s: f64,
}

impl Figures {
    fn line(&self, rate_per_s: f64) -> String {
        format!(
            "{} published at {rate_per_s:.0}/s over {:.0} s, stored {}, duplicates {}, lost {}, \
             state = replay ({} patients), alerts with a stored cause {}/{} published, \
             caught up {:.1} s after the load",
            self.published,
            self.load_s,
            self.stored,
            self.duplicates,
            self.lost,
            self.patients_compared,
            self.alerts_published,
            self.alerts_total,
            self.catch_up_s
        )
    }
}

async fn check(ctx: &mut Ctx, msgs: &[SimMessage], load_s: f64) -> Figures {
    let published = ctx.confirmed.load(Ordering::SeqCst);
    assert_eq!(published as usize, msgs.len(), "every message acknowledged");
    // Every input stored.
    let t0 = Instant::now();
    let want = msgs.len() as u64;
    let d = &ctx.daemon;
    let end = Instant::now() + Duration::from_secs(240);
    while d.stored() < want {
        assert!(
            Instant::now() < end,
            "only {} of {want} stored after 240 s: {}",
            d.stored(),
            d.log_tail(6000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up_s = t0.elapsed().as_secs_f64();

    // Alerts: every lifecycle message committed was published (outbox
    // drained) and seen by a subscriber.
    let db = ctx.daemon.db.clone();
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let events = || -> BTreeSet<(String, String)> {
        let mut st = conn
            .prepare("SELECT alert_id, phase FROM alert_events")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let unpublished = || -> i64 {
        conn.query_row(
            "SELECT count(*) FROM outbox WHERE published_at_ms IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let ev = events();
        let seen = ctx.observer.seen.lock().unwrap().alerts.clone();
        let missing: Vec<_> = ev.difference(&seen).cloned().collect();
        if missing.is_empty() && unpublished() == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "alerts not published: {} outbox rows unpublished, not seen: {missing:?}",
            unpublished()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alerts_total = events().len();
    drop(conn);

    // A clean stop, then the checks on the file.
    ctx.daemon.terminate();
    let reader = Reader::open(&db).unwrap();
    let stored = reader.inputs(0).unwrap();
    let rejected = reader.counts().unwrap().rejected;
    assert_eq!(rejected, 0, "the simulator's inputs are all valid");
    let mut keys: BTreeMap<(String, String), usize> = BTreeMap::new();
    for s in &stored {
        *keys
            .entry((s.record.topic.clone(), s.record.input_id.clone()))
            .or_default() += 1;
    }
    let duplicates = keys.values().filter(|&&c| c > 1).count();
    let published_keys: BTreeSet<(String, String)> = msgs.iter().map(key_of).collect();
    assert_eq!(published_keys.len(), msgs.len(), "distinct ids");
    let lost = published_keys
        .iter()
        .filter(|k| !keys.contains_key(*k))
        .count();
    let extra = keys.keys().filter(|k| !published_keys.contains(*k)).count();
    assert_eq!(
        (duplicates, lost, extra),
        (0, 0, 0),
        "duplicates, lost, stored but never published"
    );

    // The last published state of every patient = a clean replay of the
    // stored inputs at that state's time.
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut tracker = Tracker::new(Arc::new(f), TrackerConfig::default());
    for s in &stored {
        tracker.apply(intake::replay(s).unwrap());
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut st = conn
        .prepare("SELECT patient_id, time_ms, payload FROM published_state ORDER BY patient_id")
        .unwrap();
    let rows: Vec<(String, i64, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!rows.is_empty(), "states were published");
    for (pid, time_ms, payload) in &rows {
        let published: Value = serde_json::from_str(payload).unwrap();
        let replayed = serde_json::to_value(tracker.state(pid, *time_ms).unwrap()).unwrap();
        assert!(
            approx_eq(&published, &replayed),
            "{pid} at {time_ms}: published {published}\n  replay {replayed}"
        );
    }
    Figures {
        published,
        stored: stored.len(),
        duplicates,
        lost,
        patients_compared: rows.len(),
        alerts_published: alerts_total,
        alerts_total,
        load_s,
        catch_up_s,
    }
}

/// JSON equality with numbers equal to 1e-9 (relative).
fn approx_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs()))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| approx_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| approx_eq(v, w)))
        }
        _ => a == b,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn report(line: String) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------
// 1. Crash during load.
// ---------------------------------------------------------------------------

#[test]
fn crash_under_load() {
    let (n, rate, kills) = match size() {
        Size::Small => (2_400, 120.0, 5),
        Size::Full => (36_000, 200.0, 12),
    };
    let mut rng = Rng::seeded();
    runtime().block_on(async move {
        let (ctx, fig) = scenario(n, rate, None, |mut ctx| async move {
            let gap = ctx.load_secs() / (kills as f64 + 1.0);
            for _ in 0..kills {
                tokio::time::sleep(Duration::from_secs_f64(gap * rng.between(0.5, 1.1))).await;
                ctx.daemon.kill9();
                tokio::time::sleep(Duration::from_secs_f64(rng.between(0.0, 0.5))).await;
                ctx.daemon.spawn();
            }
            ctx
        })
        .await;
        report(format!(
            "crash-under-load: {}, {} SIGKILLs",
            fig.line(ctx.rate_per_s),
            ctx.daemon.runs() - 1
        ));
        assert!(ctx.daemon.runs() > kills);
    });
}

// ---------------------------------------------------------------------------
// 2. Broker restart during load.
// ---------------------------------------------------------------------------

#[test]
fn broker_restart_under_load() {
    let (n, rate, restarts) = match size() {
        Size::Small => (1_500, 100.0, 2),
        Size::Full => (18_000, 150.0, 3),
    };
    let mut rng = Rng::seeded();
    runtime().block_on(async move {
        let (ctx, fig) = scenario(n, rate, None, |mut ctx| async move {
            let gap = ctx.load_secs() / (restarts as f64 + 1.0);
            for _ in 0..restarts {
                tokio::time::sleep(Duration::from_secs_f64(gap * rng.between(0.7, 1.1))).await;
                let down = Duration::from_secs_f64(rng.between(0.5, 3.0));
                ctx.broker.restart_after(down);
                assert!(ctx.daemon.running(), "{}", ctx.daemon.log_tail(6000));
            }
            ctx
        })
        .await;
        report(format!(
            "broker-restart-under-load: {}, {} broker restarts (persistence on)",
            fig.line(ctx.rate_per_s),
            ctx.broker.restarts
        ));
    });
}

// ---------------------------------------------------------------------------
// 3. Database trouble.
// ---------------------------------------------------------------------------

/// Hold the database's write lock from another connection for `hold`.
/// Returns (stored at +1 s, stored 2 s before the end, `/healthz` 200 2 s
/// before the end) while held. (`/healthz` is read well before the lock is
/// released — the writer's busy timeout is 5 s, so the problem is raised
/// by then: read at the very end, on a loaded machine the read came after
/// the release and a daemon that recovers at once made the test fail.)
async fn hold_write_lock(d: &Daemon, hold: Duration) -> (u64, u64, bool) {
    let db = d.db.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let locker = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        tx.send(()).unwrap();
        std::thread::sleep(hold);
        c.execute_batch("COMMIT").unwrap();
    });
    rx.recv().unwrap();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = d.stored();
    tokio::time::sleep_until((t0 + hold - Duration::from_secs(2)).into()).await;
    let healthy = d.healthz_ok();
    let b = d.stored();
    tokio::task::spawn_blocking(move || locker.join().unwrap())
        .await
        .unwrap();
    (a, b, healthy)
}

#[test]
fn database_locked_under_load() {
    let (n, rate, locks) = match size() {
        Size::Small => (2_000, 100.0, 1),
        Size::Full => (18_000, 150.0, 3),
    };
    let hold = Duration::from_secs(10);
    runtime().block_on(async move {
        let stats = Arc::new(Mutex::new(Vec::new()));
        let s = stats.clone();
        let (ctx, fig) = scenario(n, rate, None, |mut ctx| async move {
            let gap = (ctx.load_secs() - locks as f64 * 10.0) / (locks as f64 + 1.0);
            for _ in 0..locks {
                tokio::time::sleep(Duration::from_secs_f64(gap.max(2.0))).await;
                let since = Instant::now();
                let published_before = ctx.confirmed.load(Ordering::SeqCst);
                let (a, b, healthy_while_locked) = hold_write_lock(&ctx.daemon, hold).await;
                let published_during = ctx.confirmed.load(Ordering::SeqCst) - published_before;
                assert_eq!(a, b, "nothing stored while the lock is held");
                assert!(ctx.daemon.running(), "{}", ctx.daemon.log_tail(6000));
                assert!(
                    ctx.observer
                        .status_since(since, |p| has_code(p, "database_locked")),
                    "status problem database_locked published during the lock"
                );
                assert!(
                    !healthy_while_locked,
                    "/healthz stays 200 with the database locked"
                );
                let released = Instant::now();
                wait_for("the problem cleared", Duration::from_secs(30), || {
                    ctx.observer.status_since(released, |p| p.is_empty())
                })
                .await;
                wait_for("/healthz 200 again", Duration::from_secs(30), || {
                    ctx.daemon.healthz_ok()
                })
                .await;
                let cleared_s = released.elapsed().as_secs_f64();
                s.lock().unwrap().push((published_during, a, b, cleared_s));
            }
            ctx
        })
        .await;
        let stats = stats.lock().unwrap();
        let during: Vec<String> = stats
            .iter()
            .map(|(p, _, _, c)| format!("{p} published / 0 stored, cleared {c:.1} s after"))
            .collect();
        report(format!(
            "database-locked-under-load: {}, {} write locks of {} s held by another process \
             (status database_locked raised each time; during each lock: {})",
            fig.line(ctx.rate_per_s),
            stats.len(),
            hold.as_secs(),
            during.join("; ")
        ));
    });
}

/// A small tmpfs mounted for the test; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mb: u32) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs { dir })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `dir` with `dir/filler` until ENOSPC.
fn fill(dir: &Path) -> u64 {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = f.sync_all();
    written
}

#[test]
fn disk_full_under_load() {
    let (n, rate, fills) = match size() {
        Size::Small => (2_000, 100.0, 1),
        Size::Full => (18_000, 150.0, 3),
    };
    let mount = match Tmpfs::mount(64) {
        Ok(m) => m,
        Err(e) => {
            report(format!(
                "disk-full-under-load: NOT RUN: mounting a tmpfs was refused ({e}); run as root"
            ));
            return;
        }
    };
    let db_dir = mount.dir.path().to_owned();
    let db = db_dir.join("dosetrack.db");
    runtime().block_on(async move {
        let stats = Arc::new(Mutex::new(Vec::new()));
        let s = stats.clone();
        let keep = tempfile::tempdir().unwrap();
        let (ctx, fig) = scenario(n, rate, Some((keep, db)), |mut ctx| async move {
            let gap = ctx.load_secs() / (fills as f64 + 1.0);
            for _ in 0..fills {
                tokio::time::sleep(Duration::from_secs_f64(gap * 0.6)).await;
                let since = Instant::now();
                let published_before = ctx.confirmed.load(Ordering::SeqCst);
                let dir = db_dir.clone();
                let filled = tokio::task::spawn_blocking(move || fill(&dir))
                    .await
                    .unwrap();
                wait_for(
                    "status problem database_full",
                    Duration::from_secs(90),
                    || {
                        ctx.observer
                            .status_since(since, |p| has_code(p, "database_full"))
                    },
                )
                .await;
                let detected_s = since.elapsed().as_secs_f64();
                // Held full a while: (almost) nothing is stored — a commit
                // whose pages fit in space SQLite already holds may still
                // succeed, and is then acknowledged; nothing else is — and
                // the daemon runs.
                let (a, p0) = (ctx.daemon.stored(), ctx.confirmed.load(Ordering::SeqCst));
                tokio::time::sleep(Duration::from_secs(5)).await;
                let (b, p1) = (ctx.daemon.stored(), ctx.confirmed.load(Ordering::SeqCst));
                assert!(
                    (b - a) * 10 < p1 - p0,
                    "stored {} of {} published while the disk is full",
                    b - a,
                    p1 - p0
                );
                assert!(ctx.daemon.running(), "{}", ctx.daemon.log_tail(6000));
                let published_during = ctx.confirmed.load(Ordering::SeqCst) - published_before;
                let raised = ctx
                    .observer
                    .count_since(since, |p| has_code(p, "database_full"));
                std::fs::remove_file(db_dir.join("filler")).unwrap();
                let freed = Instant::now();
                // Cleared: the latest status has no problem, and inputs are
                // stored again.
                let stored_at_free = ctx.daemon.stored();
                wait_for("the problem cleared", Duration::from_secs(30), || {
                    ctx.observer.latest_problems_empty() && ctx.daemon.stored() > stored_at_free
                })
                .await;
                s.lock().unwrap().push((
                    filled,
                    detected_s,
                    published_during,
                    freed.elapsed().as_secs_f64(),
                    (b - a, p1 - p0, raised),
                ));
            }
            ctx
        })
        .await;
        let stats = stats.lock().unwrap();
        let each: Vec<String> = stats
            .iter()
            .map(|(f, d, p, c, (held_stored, held_published, raised))| {
                format!(
                    "filled {} KiB, database_full raised after {d:.1} s ({raised} status messages \
                     with it), {held_stored} stored / {held_published} published in 5 s held full, \
                     {p} published meanwhile, cleared {c:.1} s after freeing",
                    f / 1024
                )
            })
            .collect();
        report(format!(
            "disk-full-under-load (tmpfs 64 MiB, real ENOSPC): {}, {} fills ({})",
            fig.line(ctx.rate_per_s),
            stats.len(),
            each.join("; ")
        ));
    });
    drop(mount);
}

// ---------------------------------------------------------------------------
// 5. Realistic ward traffic (issue #13).
// ---------------------------------------------------------------------------

/// A scripted ward in two parts. The *backlog* is published while the
/// daemon is down (its persistent session keeps it): 24 h of past stays —
/// admitted, dosed by hand and by pump, discharged, some readmitted — and
/// the earlier inputs of the patients still in care. The *live* part comes
/// while it runs: doses documented 1–4 h late, a readmitted patient's
/// over-limit bolus and infusion, the late discharge of an earlier stay
/// arriving after the readmission, a discharge followed by a late dose from
/// inside the stay and one from after it, and a pump moved to another
/// patient. Times are relative to `t0`, the scenario's start.
struct WardTraffic {
    backlog: Vec<(String, String)>,
    live: Vec<(String, String)>,
}

const H_MS: i64 = 3_600_000;
const MIN_MS: i64 = 60_000;

impl WardTraffic {
    fn new(prefix: &str, backlog_stays: usize) -> WardTraffic {
        let t0 = chrono::Utc::now().timestamp_millis();
        let mut w = WardTraffic {
            backlog: Vec::new(),
            live: Vec::new(),
        };
        let mut n = 0usize;
        let mut id = |p: &str| {
            n += 1;
            format!("{p}-{n}")
        };
        let at = |ms_before: i64| dosetrack::vocab::format_rfc3339(t0 - ms_before);
        let admit = |id: String, t: i64, kg: u32| {
            serde_json::json!({"id": id, "time": at(t), "weight_kg": kg, "age_years": 45})
                .to_string()
        };
        let dose = |id: String, t: i64, route: &str, mg: f64| {
            serde_json::json!({"id": id, "time": at(t), "route": route, "amount_mg": mg})
                .to_string()
        };
        let event = |id: String, t: i64, kind: &str, extra: Value| {
            let mut v = serde_json::json!({"id": id, "time": at(t), "kind": kind});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v.to_string()
        };
        let discharge =
            |id: String, t: i64| serde_json::json!({"id": id, "time": at(t)}).to_string();
        let mut b: Vec<(String, String)> = Vec::new();

        // 24 h of past stays of 50 min, every 55 min, four pumps in turn;
        // every sixth patient comes back three hours later for a short stay.
        // Stays are spread over the 23 h before t0 - 1 h.
        let span = 22 * H_MS;
        let step = span / backlog_stays.max(1) as i64;
        for i in 0..backlog_stays {
            let pid = format!("P-B{i:04}");
            let dev = format!("D-B{}", i % 4);
            let s = 24 * H_MS - i as i64 * step; // ms before t0
            let p = |x: &str| format!("patients/{pid}/{x}");
            let d = format!("devices/{dev}/events");
            b.push((p("admit"), admit(id("a"), s, 60 + (i % 30) as u32)));
            b.push((p("doses"), dose(id("d"), s - 5 * MIN_MS, "iv_bolus", 15.0)));
            b.push((
                d.clone(),
                event(
                    id("e"),
                    s - 10 * MIN_MS,
                    "infusion_started",
                    serde_json::json!({"patient_id": pid, "rate_mg_per_h": 10}),
                ),
            ));
            b.push((
                d.clone(),
                event(id("e"), s - 20 * MIN_MS, "heartbeat", serde_json::json!({})),
            ));
            b.push((p("doses"), dose(id("d"), s - 25 * MIN_MS, "oral", 50.0)));
            b.push((
                d.clone(),
                event(id("e"), s - 30 * MIN_MS, "heartbeat", serde_json::json!({})),
            ));
            b.push((
                d.clone(),
                event(
                    id("e"),
                    s - 40 * MIN_MS,
                    "infusion_stopped",
                    serde_json::json!({}),
                ),
            ));
            b.push((p("discharge"), discharge(id("x"), s - 50 * MIN_MS)));
            if i % 6 == 0 && s - 3 * H_MS - 40 * MIN_MS > 2 * H_MS {
                let r = s - 3 * H_MS;
                b.push((p("admit"), admit(id("a"), r, 60 + (i % 30) as u32)));
                b.push((
                    p("doses"),
                    dose(id("d"), r - 10 * MIN_MS, "intranasal", 25.0),
                ));
                b.push((p("discharge"), discharge(id("x"), r - 40 * MIN_MS)));
            }
        }
        // Patients in care at the end. P-RA: a first stay 20 h ago, back 2 h ago.
        b.push(("patients/P-RA/admit".into(), admit(id("a"), 20 * H_MS, 70)));
        b.push((
            "patients/P-RA/doses".into(),
            dose(id("d"), 19 * H_MS + 30 * MIN_MS, "iv_bolus", 20.0),
        ));
        b.push((
            "patients/P-RA/discharge".into(),
            discharge(id("x"), 18 * H_MS),
        ));
        b.push(("patients/P-RA/admit".into(), admit(id("a"), 2 * H_MS, 70)));
        // P-RL: admitted 10 h ago and again 3 h ago; the discharge that
        // ended the first stay (8 h ago) is documented live, late.
        b.push(("patients/P-RL/admit".into(), admit(id("a"), 10 * H_MS, 70)));
        b.push((
            "patients/P-RL/doses".into(),
            dose(id("d"), 9 * H_MS, "im", 30.0),
        ));
        b.push(("patients/P-RL/admit".into(), admit(id("a"), 3 * H_MS, 70)));
        // P-LATE: on a pump for 5 h; three hand doses are documented late.
        b.push(("patients/P-LATE/admit".into(), admit(id("a"), 6 * H_MS, 80)));
        b.push((
            "devices/D-L/events".into(),
            event(
                id("e"),
                5 * H_MS,
                "infusion_started",
                serde_json::json!({"patient_id": "P-LATE", "rate_mg_per_h": 10}),
            ),
        ));
        // P-DIS: a bolus 7 h ago; discharged live, then late doses arrive.
        b.push(("patients/P-DIS/admit".into(), admit(id("a"), 8 * H_MS, 75)));
        b.push((
            "patients/P-DIS/doses".into(),
            dose(id("d"), 7 * H_MS, "iv_bolus", 30.0),
        ));
        // D-MOVE: on P-A1 from 3 h ago to 1 h ago, then moved to P-A2.
        b.push(("patients/P-A1/admit".into(), admit(id("a"), 4 * H_MS, 65)));
        b.push(("patients/P-A2/admit".into(), admit(id("a"), 2 * H_MS, 90)));
        b.push((
            "devices/D-MOVE/events".into(),
            event(
                id("e"),
                3 * H_MS,
                "infusion_started",
                serde_json::json!({"patient_id": "P-A1", "rate_mg_per_h": 15}),
            ),
        ));
        b.push((
            "devices/D-MOVE/events".into(),
            event(id("e"), 2 * H_MS, "heartbeat", serde_json::json!({})),
        ));
        b.push((
            "devices/D-MOVE/events".into(),
            event(id("e"), H_MS, "infusion_stopped", serde_json::json!({})),
        ));

        let l = vec![
            // Documented 1-4 h late.
            (
                "patients/P-LATE/doses".into(),
                dose(id("d"), 4 * H_MS, "im", 20.0),
            ),
            (
                "patients/P-LATE/doses".into(),
                dose(id("d"), 3 * H_MS, "oral", 50.0),
            ),
            (
                "patients/P-LATE/doses".into(),
                dose(id("d"), 90 * MIN_MS, "intranasal", 25.0),
            ),
            (
                "patients/P-LATE/doses".into(),
                dose(id("d"), H_MS, "iv_bolus", 10.0),
            ),
            // The readmitted patient: 1.43 mg/kg IV bolus, then 200 mg/h.
            (
                "patients/P-RA/doses".into(),
                dose(id("d"), MIN_MS, "iv_bolus", 100.0),
            ),
            (
                "devices/D-RA/events".into(),
                event(
                    id("e"),
                    MIN_MS,
                    "infusion_started",
                    serde_json::json!({"patient_id": "P-RA", "rate_mg_per_h": 200}),
                ),
            ),
            // The first stay's discharge, documented after the readmission,
            // then an over-limit bolus in the second stay.
            (
                "patients/P-RL/discharge".into(),
                discharge(id("x"), 8 * H_MS),
            ),
            (
                "patients/P-RL/doses".into(),
                dose(id("d"), MIN_MS, "iv_bolus", 100.0),
            ),
            // Discharged 10 min ago; then a dose from inside the stay and one
            // from after it.
            (
                "patients/P-DIS/discharge".into(),
                discharge(id("x"), 10 * MIN_MS),
            ),
            (
                "patients/P-DIS/doses".into(),
                dose(id("d"), 5 * H_MS, "oral", 40.0),
            ),
            (
                "patients/P-DIS/doses".into(),
                dose(id("d"), 5 * MIN_MS, "intranasal", 25.0),
            ),
            // The pump moved: now on P-A2.
            (
                "devices/D-MOVE/events".into(),
                event(
                    id("e"),
                    30 * MIN_MS,
                    "infusion_started",
                    serde_json::json!({"patient_id": "P-A2", "rate_mg_per_h": 12}),
                ),
            ),
        ];
        let full = |(t, p): (String, String)| (format!("{prefix}/v1/{t}"), p);
        w.backlog = b.into_iter().map(full).collect();
        w.live = l.into_iter().map(full).collect();
        w
    }

    fn all(&self) -> impl Iterator<Item = &(String, String)> {
        self.backlog.iter().chain(self.live.iter())
    }
}

/// Publish `msgs` in order, each confirmed by the broker before the next.
async fn publish_in_order(publisher: &Publisher, msgs: &[(String, String)], gap: Duration) {
    for (topic, payload) in msgs {
        publisher
            .publish_confirmed(topic.clone(), payload.clone().into_bytes(), false)
            .await
            .unwrap();
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
}

/// Stays as the inputs define them, derived here without the tracker: an
/// admit opens a stay unless one is open; a discharge closes the open one.
fn stays_of(stored: &[dosetrack::records::StoredInput]) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut events: BTreeMap<String, Vec<(i64, i64, bool)>> = BTreeMap::new();
    for s in stored {
        let r = &s.record;
        let admit = match r.kind.as_str() {
            "admit" => true,
            "discharge" => false,
            _ => continue,
        };
        if let Some(p) = &r.patient_id {
            events
                .entry(p.clone())
                .or_default()
                .push((r.occurred_at_ms, s.seq, admit));
        }
    }
    let mut out = BTreeMap::new();
    for (p, mut ev) in events {
        ev.sort();
        let mut stays = Vec::new();
        let mut open: Option<i64> = None;
        for (t, _, admit) in ev {
            match (admit, open) {
                (true, None) => open = Some(t),
                (false, Some(a)) => {
                    stays.push((a, t));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(a) = open {
            stays.push((a, i64::MAX));
        }
        out.insert(p, stays);
    }
    out
}

/// Alert raises of a replay of the stored inputs through the core, in
/// arrival order, each evaluated at its receive time, the engine's timers
/// at their own times, up to `end_ms`: (subject scope id, rule).
fn replay_raises(
    stored: &[dosetrack::records::StoredInput],
    end_ms: i64,
) -> BTreeSet<(String, String)> {
    use dosetrack::alerts::{AlertBook, AlertConfig, AlertEngine, Phase, Scope};
    use dosetrack::contract::{Input, InputTopic};
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut tracker = Tracker::new(Arc::new(f), TrackerConfig::default());
    let mut engine = AlertEngine::new(AlertBook::new(AlertConfig::default()));
    let mut raised = BTreeSet::new();
    let mut note = |msgs: Vec<dosetrack::alerts::AlertMessage>| {
        for m in msgs {
            if m.phase == Phase::Raised {
                let who = m
                    .patient_id
                    .clone()
                    .or(m.device_id.clone())
                    .unwrap_or_default();
                raised.insert((who, m.rule.as_str().to_owned()));
            }
        }
    };
    let timers_until = |tracker: &mut Tracker, engine: &mut AlertEngine, t: i64| {
        let mut out = Vec::new();
        while let Some(w) = engine.next_wake().filter(|&w| w <= t) {
            let due = engine.due(w);
            out.extend(engine.evaluate(tracker, &due, w).messages);
        }
        out
    };
    for s in stored {
        let now = s.record.received_at_ms;
        note(timers_until(&mut tracker, &mut engine, now));
        let input = intake::replay(s).unwrap();
        let mut scopes: BTreeSet<Scope> = BTreeSet::new();
        match (&input.topic, &input.input) {
            (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e)) => {
                scopes.insert(Scope::Device(device_id.clone()));
                if let Some(p) = &e.patient_id {
                    scopes.insert(Scope::Patient(p.clone()));
                }
            }
            (
                InputTopic::Admit { patient_id }
                | InputTopic::Discharge { patient_id }
                | InputTopic::Dose { patient_id },
                _,
            ) => {
                scopes.insert(Scope::Patient(patient_id.clone()));
            }
            _ => {}
        }
        let touched = tracker.apply(input);
        scopes.extend(touched.into_iter().map(Scope::Patient));
        note(engine.evaluate(&mut tracker, &scopes, now).messages);
    }
    note(timers_until(&mut tracker, &mut engine, end_ms));
    raised
}

/// The patient rules whose conditions follow from the inputs alone (not
/// from how long a device has been quiet): these must match the replay.
const INPUT_RULES: [&str; 5] = [
    "dose_limit",
    "concentration_high",
    "dose_stacking",
    "interaction",
    "model_domain",
];

#[test]
fn realistic_ward_traffic() {
    let backlog_stays = match size() {
        Size::Small => 24,
        Size::Full => 300,
    };
    runtime().block_on(async move {
        let broker = start_broker();
        let prefix = unique("wt");
        let logs = tempfile::tempdir().unwrap();
        let dbdir = tempfile::tempdir().unwrap();
        let db = dbdir.path().join("dosetrack.db");
        let observer = Observer::connect(broker.port, &prefix).await;
        let traffic = WardTraffic::new(&prefix, backlog_stays);

        // The daemon's first run makes its session; then it is down.
        let started = Instant::now();
        let mut daemon = Daemon::start(db.clone(), logs.path(), broker.port, &prefix);
        wait_for("daemon online", Duration::from_secs(30), || {
            observer.status_since(started, |_| true)
        })
        .await;
        daemon.terminate();

        let pub_stop = CancellationToken::new();
        let (publisher, pub_task) = spawn_publisher(
            BrokerConfig::new("127.0.0.1", broker.port, unique("wtp")),
            format!("{prefix}-sim/status"),
            "{\"state\":\"online\"}".into(),
            "{\"state\":\"offline\"}".into(),
            pub_stop.clone(),
        );
        // The downtime's backlog, queued in the daemon's session.
        publish_in_order(&publisher, &traffic.backlog, Duration::ZERO).await;
        let backlog = traffic.backlog.len() as u64;

        // Back up: the backlog is caught up.
        let catch_up = Instant::now();
        daemon.spawn();
        let end = Instant::now() + Duration::from_secs(120);
        while daemon.stored() < backlog {
            assert!(
                Instant::now() < end,
                "backlog: {} of {backlog} stored after 120 s: {}",
                daemon.stored(),
                daemon.log_tail(4000)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let catch_up_s = catch_up.elapsed().as_secs_f64();

        // Live traffic, a little apart.
        publish_in_order(&publisher, &traffic.live, Duration::from_millis(150)).await;
        let total = (traffic.backlog.len() + traffic.live.len()) as u64;
        wait_for("every input stored", Duration::from_secs(60), || {
            daemon.stored() >= total
        })
        .await;
        pub_stop.cancel();
        let _ = pub_task.await;

        // The readmitted patient's infusion must raise concentration_high
        // (30-s condition delay); wait for it, then for the outbox.
        let raised = |who: &str, rule: &str| {
            observer.seen.lock().unwrap().messages.iter().any(|m| {
                m["patient_id"] == who && m["rule"] == rule && m["phase"] == "raised"
            })
        };
        wait_for(
            "P-RA concentration_high delivered",
            Duration::from_secs(90),
            || raised("P-RA", "concentration_high"),
        )
        .await;
        let end_ms = chrono::Utc::now().timestamp_millis();
        let conn = rusqlite::Connection::open_with_flags(
            &db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let unpublished = || -> i64 {
            conn.query_row(
                "SELECT count(*) FROM outbox WHERE published_at_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        wait_for("outbox drained", Duration::from_secs(30), || unpublished() == 0).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(conn);
        let delivered: Vec<Value> = observer.seen.lock().unwrap().messages.clone();
        daemon.terminate();

        // Nothing lost, nothing twice, nothing refused.
        let reader = Reader::open(&db).unwrap();
        let stored = reader.inputs(0).unwrap();
        assert_eq!(reader.counts().unwrap().rejected, 0, "every input is valid");
        let mut keys: BTreeMap<(String, String), usize> = BTreeMap::new();
        for s in &stored {
            *keys
                .entry((s.record.topic.clone(), s.record.input_id.clone()))
                .or_default() += 1;
        }
        let published: BTreeSet<(String, String)> = traffic
            .all()
            .map(|(t, p)| {
                let v: Value = serde_json::from_str(p).unwrap();
                (t.clone(), v["id"].as_str().unwrap().to_owned())
            })
            .collect();
        assert_eq!(published.len() as u64, total, "distinct ids");
        let lost = published.iter().filter(|k| !keys.contains_key(*k)).count();
        let twice = keys.values().filter(|&&c| c > 1).count();
        assert_eq!((lost, twice, keys.len() as u64), (0, 0, total), "lost, twice, stored");

        // Every history point = a replay of the stored inputs at its time,
        // and inside one of the patient's stays.
        let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
        let mut tracker = Tracker::new(Arc::new(f), TrackerConfig::default());
        for s in &stored {
            tracker.apply(intake::replay(s).unwrap());
        }
        let stays = stays_of(&stored);
        let conn = rusqlite::Connection::open(&db).unwrap();
        let history: Vec<(String, i64, f64, f64)> = conn
            .prepare(
                "SELECT patient_id, t_ms, cp_ng_per_ml, ce_ng_per_ml FROM concentration_history \
                 ORDER BY patient_id, t_ms",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // The state message rounds concentrations to 0.001 ng/mL; a stored
        // point is exact.
        let close = |a: f64, b: f64| (a - b).abs() <= 5.1e-4 + 1e-9 * a.abs().max(b.abs());
        let mut per_stay: BTreeMap<(String, i64), usize> = BTreeMap::new();
        let mut differ = Vec::new();
        let mut outside = Vec::new();
        for (pid, t, cp, ce) in &history {
            match stays
                .get(pid)
                .and_then(|s| s.iter().find(|(a, d)| a <= t && t <= d))
            {
                Some((a, _)) => *per_stay.entry((pid.clone(), *a)).or_default() += 1,
                None => outside.push((pid.clone(), *t)),
            }
            match tracker.state(pid, *t) {
                Some(s) if close(s.cp_ng_per_ml, *cp) && close(s.ce_ng_per_ml, *ce) => {}
                other => differ.push(format!(
                    "{pid} at {t}: stored cp {cp} ce {ce}, replay {:?}",
                    other.map(|s| (s.cp_ng_per_ml, s.ce_ng_per_ml))
                )),
            }
        }
        assert!(
            differ.is_empty(),
            "{} of {} history points differ from the replay, e.g. {:?}",
            differ.len(),
            history.len(),
            &differ[..differ.len().min(5)]
        );
        assert!(
            outside.is_empty(),
            "{} history points outside every stay, e.g. {:?}",
            outside.len(),
            &outside[..outside.len().min(5)]
        );
        // A past stay has about one point per history step (60 s), not one
        // per step up to now.
        for ((pid, a), n) in &per_stay {
            if let Some((_, d)) = stays[pid].iter().find(|(s, _)| s == a) {
                if *d != i64::MAX {
                    let want = (d - a) / MIN_MS;
                    assert!(
                        (*n as i64 - want).abs() <= 2,
                        "{pid}'s stay from {a}: {n} history points, ~{want} expected"
                    );
                }
            }
        }
        let p_late = history.iter().filter(|h| h.0 == "P-LATE").count();
        assert!(p_late >= 300, "P-LATE's 6-h stay has {p_late} history points");

        // Alerts: the input-driven raises = those of the replay (none
        // missed, none extra); the named ones among them.
        let replay = replay_raises(&stored, end_ms);
        let replay: BTreeSet<_> = replay
            .into_iter()
            .filter(|(_, r)| INPUT_RULES.contains(&r.as_str()))
            .collect();
        let daemon_raised: BTreeSet<(String, String)> = delivered
            .iter()
            .filter(|m| m["phase"] == "raised")
            .filter(|m| INPUT_RULES.iter().any(|r| m["rule"] == *r))
            .filter(|m| {
                m["time"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t.timestamp_millis() <= end_ms)
            })
            .map(|m| {
                (
                    m["patient_id"].as_str().unwrap_or("").to_owned(),
                    m["rule"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let missed: Vec<_> = replay.difference(&daemon_raised).collect();
        let extra: Vec<_> = daemon_raised.difference(&replay).collect();
        assert!(
            missed.is_empty() && extra.is_empty(),
            "alerts missed {missed:?}, not in the replay {extra:?}"
        );
        for want in [
            ("P-RA", "dose_limit"),
            ("P-RA", "concentration_high"),
            ("P-RL", "dose_limit"),
        ] {
            assert!(
                daemon_raised.contains(&(want.0.to_owned(), want.1.to_owned())),
                "{want:?} not delivered: {daemon_raised:?}"
            );
        }

        // The last published states = the replay; the discharged patient
        // says so; the moved pump delivers to P-A2 only.
        let states: BTreeMap<String, (i64, Value)> = conn
            .prepare("SELECT patient_id, time_ms, payload FROM published_state")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
            })
            .unwrap()
            .map(|r| {
                let (p, t, s) = r.unwrap();
                (p, (t, serde_json::from_str(&s).unwrap()))
            })
            .collect();
        for (pid, (t, published)) in &states {
            let replayed = serde_json::to_value(tracker.state(pid, *t).unwrap()).unwrap();
            assert!(
                approx_eq(published, &replayed),
                "{pid} at {t}: published {published}\n  replay {replayed}"
            );
        }
        assert_eq!(states["P-DIS"].1["discharged"], true, "{}", states["P-DIS"].1);
        assert_eq!(states["P-A1"].1["active_inputs"], serde_json::json!([]));
        assert_eq!(
            states["P-A2"].1["active_inputs"][0]["rate_mg_per_h"],
            serde_json::json!(12.0),
            "{}",
            states["P-A2"].1
        );
        for p in ["P-RA", "P-RL", "P-LATE", "P-A2"] {
            assert!(states[p].1.get("discharged").is_none(), "{p} is in care: {}", states[p].1);
        }

        report(format!(
            "realistic-ward-traffic: {total} inputs ({backlog} in a 24-h backlog of {backlog_stays} \
             stays, caught up in {catch_up_s:.1} s = {:.0} inputs/s; {} live), {} history points \
             = replay, none outside a stay, input-driven raises {} = replay, nothing lost",
            backlog as f64 / catch_up_s,
            traffic.live.len(),
            history.len(),
            daemon_raised.len(),
        ));
    });
}
