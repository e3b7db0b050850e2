//! Daemon ingest benchmark (issue #3; figures in docs/benchmarks.md).
//!
//! It runs the real `dosetrack` binary as a separate process (the one cargo
//! builds for this bench: `CARGO_BIN_EXE_dosetrack`, same profile) against
//! a Mosquitto it starts itself on a free port, with a temporary SQLite
//! database, and measures:
//!
//! 1. **Throughput ratio against a relay** (issue #16 item 3). The same
//!    stream of N contract inputs (admits for P patients, a pump start per
//!    patient, then infusion rate changes, heartbeats attributed through
//!    the pump's association, and manual doses) is consumed, one after the
//!    other through the same broker, by:
//!    (A) the old yardstick, a subscriber that only receives and
//!    acknowledges (rumqttc, persistent session, QoS 1, manual acks, acked
//!    on receipt), kept for comparison (`ack_baseline_*`);
//!    (R) **the relay**, the least any implementation of the contract can
//!    do: this bench binary run again as a process of its own
//!    (`DOSETRACK_BENCH_RELAY_CHILD`, current-thread tokio, one rumqttc
//!    connection, persistent session, QoS 1, manual acks, request channel
//!    100) that for each input publishes one retained QoS 1 message of
//!    ~2.1 KB of JSON (the size class of a state message) to
//!    `{its prefix}/v1/relay/{patient or device id}/state` and then
//!    acknowledges it — the ack handed to the client after the publish, as
//!    the daemon acks after its commit;
//!    (B) the daemon, which stores every input durably (SQLite, WAL,
//!    `synchronous=FULL`) before acknowledging it and publishes a state per
//!    touched patient per batch. Rates: N / (last − first receipt) for A;
//!    N / (the N-th ack handed to the client − the first receipt) for R;
//!    N / (the moment the N-th input is committed, polled in the database,
//!    − the first input's `received_at_ms`) for B. `relay_ratio` = B / R.
//!    CPU per input: user + sys of the daemon process (from /proc, over
//!    its phase) / N, and the relay process's own over its span / N.
//!    Two delivery modes: `preload` (the stream is queued in the broker
//!    while the consumer is offline, then drained: the consumer alone sets
//!    the pace) and `live` (the consumer is online while a publisher sends
//!    the stream as fast as it can). Each broker in-flight window in
//!    `DOSETRACK_BENCH_WINDOWS` gets its own broker. The load average is
//!    printed with each phase: the machine is shared.
//! 2. **Latency** from the publish of an input to the receipt of the next
//!    `state` message of its patient, with inputs paced at a fixed rate
//!    (1,000/s); also the daemon's CPU per input and the mean size of its
//!    state messages.
//!    **With late events** (`late`, issue #16 item 1): the same paced
//!    stream while one more patient, whose `DOSETRACK_BENCH_LATE_EVENTS`
//!    pump events (full 40,000, small 10,000: one a minute up to a minute
//!    ago) were stored before the daemon started, gets a dose dated 10 min
//!    back every second (each recomputes that patient's model, history and
//!    alerts from its time): the others' latency and the daemon's CPU,
//!    against the phase without it.
//! 3. **Memory** (VmRSS/VmHWM of the daemon) when empty and after admitting
//!    patients, each with a pump start and a dose.
//! 4. **Stock broker limits** (`stock`): the same stream as one live burst
//!    through a broker with Mosquitto's default in-flight window (20) and
//!    queue (1000): how many inputs the broker drops (they were PUBACKed to
//!    the publisher) when the daemon falls behind.
//!
//! Inputs are dated in the recent past (no `clock_skew`, and no history
//! backfill: the daemon recomputes history for inputs older than its
//! history step, which a backlog dated hours ago would measure instead).
//!
//! Run:
//!
//! ```sh
//! cargo bench --bench ingest                               # small, < 1 min
//! DOSETRACK_BENCH_SCALE=full cargo bench --bench ingest    # ~3 min a window
//! DOSETRACK_BENCH_SCALE=full DOSETRACK_BENCH_WINDOWS=1000 \
//!     DOSETRACK_BENCH_ONLY=throughput cargo bench --bench ingest
//! ```
//!
//! Every measurement prints one `RESULT ...` line (key=value, for scripts).
//! Overrides (environment): `DOSETRACK_BENCH_N`, `_PATIENTS`, `_LATENCY_S`,
//! `_LATENCY_RATE`, `_LATENCY_PATIENTS`, `_MEMORY` (comma-separated patient
//! counts), `_WINDOWS` (broker `max_inflight_messages` values, default
//! `1000,100,20`), `_MODES` (`preload,live`), `_ONLY` (`throughput`, `latency`,
//! `late`, `memory`, `stock`), `_LATE_EVENTS`, `_SPREAD_S` (the stream's occurrence times span this
//! many seconds before its generation, default 30), `_WEIGHT_DECIMALS`
//! (admitted weights are rounded to this many decimals, default 1),
//! `_MOSQUITTO` (broker binary), `_BIN` (daemon binary),
//! `_DAEMON_WRAPPER` (a command the daemon runs under, e.g.
//! `heaptrack -o /tmp/dt-heap`), `_KEEP=1` (keep the temporary directory
//! and the logs).
//!
//! Without `--bench` on the command line (so: `cargo test --benches`) and
//! without `DOSETRACK_BENCH_SCALE` it does nothing: the measurement needs a
//! broker and minutes, and belongs to `cargo bench`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dosetrack::vocab::format_rfc3339;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Settings.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Scale {
    name: String,
    /// Inputs in the throughput stream.
    n: usize,
    /// Patients in the throughput stream.
    patients: usize,
    latency_s: f64,
    latency_rate: f64,
    latency_patients: usize,
    /// Memory checkpoints (patients admitted so far).
    memory: Vec<usize>,
    windows: Vec<u32>,
    modes: Vec<String>,
    only: Option<Vec<String>>,
    spread_ms: i64,
    weight_decimals: i32,
    /// Stored pump events of the one patient the `late` phase sends a late
    /// event for every second.
    late_events: usize,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v}: not a valid value")),
        Err(_) => default,
    }
}

fn env_list<T: std::str::FromStr>(key: &str, default: Vec<T>) -> Vec<T> {
    match std::env::var(key) {
        Ok(v) => v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{key}={v}: not a valid list"))
            })
            .collect(),
        Err(_) => default,
    }
}

impl Scale {
    fn from_env() -> Scale {
        let name = std::env::var("DOSETRACK_BENCH_SCALE").unwrap_or_else(|_| "small".into());
        let (n, patients, latency_s, latency_patients, memory, late_events) = match name.as_str() {
            "small" => (5_000, 100, 5.0, 100, vec![500, 1_000], 10_000),
            "full" => (
                100_000,
                1_000,
                60.0,
                500,
                vec![1_000, 2_500, 5_000, 10_000],
                40_000,
            ),
            other => panic!("DOSETRACK_BENCH_SCALE={other}: use small or full"),
        };
        let only = std::env::var("DOSETRACK_BENCH_ONLY")
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
        Scale {
            name,
            n: env_or("DOSETRACK_BENCH_N", n),
            patients: env_or("DOSETRACK_BENCH_PATIENTS", patients),
            latency_s: env_or("DOSETRACK_BENCH_LATENCY_S", latency_s),
            latency_rate: env_or("DOSETRACK_BENCH_LATENCY_RATE", 1_000.0),
            latency_patients: env_or("DOSETRACK_BENCH_LATENCY_PATIENTS", latency_patients),
            memory: env_list("DOSETRACK_BENCH_MEMORY", memory),
            windows: env_list("DOSETRACK_BENCH_WINDOWS", vec![1_000, 100, 20]),
            modes: env_list(
                "DOSETRACK_BENCH_MODES",
                vec!["preload".into(), "live".into()],
            ),
            only,
            spread_ms: env_or("DOSETRACK_BENCH_SPREAD_S", 30i64) * 1000,
            weight_decimals: env_or("DOSETRACK_BENCH_WEIGHT_DECIMALS", 1),
            late_events: env_or("DOSETRACK_BENCH_LATE_EVENTS", late_events),
        }
    }

    fn wants(&self, what: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == what))
    }
}

// ---------------------------------------------------------------------------
// Clock, randomness, /proc.
// ---------------------------------------------------------------------------

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn now_ms() -> i64 {
    now_us() / 1000
}

/// SplitMix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Normal (Box–Muller).
    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn round_dp(x: f64, d: i32) -> f64 {
    let s = 10f64.powi(d);
    (x * s).round() / s
}

/// utime + stime of a process, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

/// CPU seconds per thread name of a process (threads with the same name
/// summed), largest first.
fn cpu_by_thread(pid: u32) -> Vec<(String, f64)> {
    let mut by: HashMap<String, f64> = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
        *by.entry(name).or_default() += ticks / clock_ticks();
    }
    let mut v: Vec<(String, f64)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

fn fmt_threads(v: &[(String, f64)]) -> String {
    v.iter()
        .filter(|(_, s)| *s >= 0.01)
        .map(|(n, s)| format!("{n} {s:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pid` or its first descendant whose name is `name`.
fn find_process(pid: u32, name: &str) -> Option<u32> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() == name {
        return Some(pid);
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            if let Some(found) = find_process(c, name) {
                return Some(found);
            }
        }
    }
    None
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// VmRSS, VmHWM, RssAnon of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let get = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"), get("RssAnon:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------
// The broker.
// ---------------------------------------------------------------------------

struct Broker {
    child: Child,
    port: u16,
    config: String,
}

impl Broker {
    /// Start Mosquitto on a free port with the given per-client in-flight
    /// window and queue limit (0: unlimited).
    fn start(dir: &Path, inflight: u32, queued: u32) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             max_inflight_messages {inflight}\n\
             max_queued_messages {queued}\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n"
        );
        let path = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(&path, &config).unwrap();
        let log = std::fs::File::create(dir.join(format!("mosquitto-{port}.log"))).unwrap();
        let bin =
            std::env::var("DOSETRACK_BENCH_MOSQUITTO").unwrap_or("/usr/sbin/mosquitto".into());
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            child,
            port,
            config,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// SIGTERM (then SIGKILL after `grace`) a child we started.
fn terminate(child: &mut Child, grace: Duration) -> bool {
    if child.try_wait().ok().flatten().is_some() {
        return true;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn mosquitto_version() -> String {
    let bin = std::env::var("DOSETRACK_BENCH_MOSQUITTO").unwrap_or("/usr/sbin/mosquitto".into());
    Command::new(bin)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------
// The daemon.
// ---------------------------------------------------------------------------

struct Daemon {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    db: PathBuf,
    log: PathBuf,
    prefix: String,
    client_id: String,
    /// "subscribed" lines seen in the log before the current start.
    subscribed_before: usize,
}

/// What the daemon's log says at a clean stop.
#[derive(Debug, Default, Clone, Copy)]
struct WriterStats {
    ops: u64,
    commits: u64,
}

impl Daemon {
    fn new(bin: &Path, dir: &Path, port: u16, tag: &str) -> Daemon {
        let id = format!("dtb-{tag}-{}", std::process::id());
        Daemon {
            bin: bin.to_owned(),
            child: None,
            port,
            db: dir.join(format!("{tag}.db")),
            log: dir.join(format!("{tag}.log")),
            prefix: id.clone(),
            client_id: id,
            subscribed_before: 0,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Start it and wait until its ingest connection has subscribed.
    fn start(&mut self) {
        self.subscribed_before = self
            .log_text()
            .matches("subscribed to the input topics")
            .count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // An optional wrapper (`heaptrack`, `valgrind --tool=massif`, …).
        let wrapper: Vec<String> = std::env::var("DOSETRACK_BENCH_DAEMON_WRAPPER")
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = command
            .args([
                "run",
                "--broker",
                &format!("mqtt://127.0.0.1:{}", self.port),
                "--database",
                self.db.to_str().unwrap(),
                "--topic-prefix",
                &self.prefix,
                "--client-id",
                &self.client_id,
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = self
                .log_text()
                .matches("subscribed to the input topics")
                .count();
            if n > self.subscribed_before {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("daemon exited ({status}): {}", self.log_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not subscribe: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's pid (below the wrapper, if there is one).
    fn pid(&self) -> u32 {
        let top = self.child.as_ref().unwrap().id();
        find_process(top, "dosetrack").unwrap_or(top)
    }

    /// SIGTERM and wait for a clean stop; the writer's counters of this run.
    fn stop(&mut self) -> WriterStats {
        let real = self.pid();
        let mut child = self.child.take().unwrap();
        if real != child.id() {
            // Under a wrapper: signal the daemon itself, let the wrapper
            // finish its work.
            let _ = Command::new("kill")
                .args(["-TERM", &real.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(600);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let clean = terminate(&mut child, Duration::from_secs(300));
        assert!(clean, "daemon did not stop cleanly: {}", self.log_text());
        let text = self.log_text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("store writer stopped"))
            .unwrap_or("");
        let field = |key: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        WriterStats {
            ops: field("ops="),
            commits: field("commits="),
        }
    }

    fn sqlite(&self) -> rusqlite::Connection {
        sqlite(&self.db)
    }

    fn first_received_ms(&self) -> f64 {
        let conn = self.sqlite();
        let v: i64 = conn
            .query_row("SELECT min(received_at_ms) FROM inputs", [], |r| r.get(0))
            .unwrap();
        v as f64
    }

    fn count(&self, sql: &str) -> u64 {
        let v: i64 = self.sqlite().query_row(sql, [], |r| r.get(0)).unwrap();
        v as u64
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(30));
        }
    }
}

/// A read-only connection to a daemon's database.
fn sqlite(db: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// Poll until `max(seq)` of `inputs` (= their count: nothing is deleted)
/// reaches `target`; the wall clock (ms) when it did. Panics after
/// `timeout` with the counts.
fn wait_inputs(db: &Path, target: u64, timeout: Duration) -> f64 {
    let conn = sqlite(db);
    let deadline = Instant::now() + timeout;
    loop {
        let max: i64 = conn
            .query_row("SELECT coalesce(max(seq), 0) FROM inputs", [], |r| r.get(0))
            .unwrap();
        if max as u64 >= target {
            return now_us() as f64 / 1000.0;
        }
        if Instant::now() > deadline {
            let counts = dosetrack::store::Reader::open(db)
                .and_then(|r| r.counts())
                .map(|c| format!("{c:?}"))
                .unwrap_or_default();
            panic!("{max} of {target} inputs stored after {timeout:?}: {counts}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// [`wait_inputs`] off the async workers.
async fn wait_blocking(d: &Daemon, target: u64) -> f64 {
    let db = d.db.clone();
    tokio::task::spawn_blocking(move || wait_inputs(&db, target, Duration::from_secs(1800)))
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// The input stream.
// ---------------------------------------------------------------------------

/// One contract input: topic after `{prefix}/v1/`, payload.
#[derive(Debug, Clone)]
struct Input {
    suffix: String,
    payload: String,
}

fn patient_id(i: usize) -> String {
    format!("P-{i:05}")
}

fn pump_id(i: usize) -> String {
    format!("pump-{i:05}")
}

fn admit(i: usize, time_ms: i64, rng: &mut Rng, weight_decimals: i32, tag: &str) -> Input {
    let weight = round_dp(rng.normal(78.0, 16.0).clamp(40.0, 160.0), weight_decimals);
    let age = rng.range(18.0, 90.0).floor();
    let sex = if rng.unit() < 0.5 { "female" } else { "male" };
    let height = rng.range(150.0, 195.0).round();
    Input {
        suffix: format!("patients/{}/admit", patient_id(i)),
        payload: json!({"id": format!("adm-{tag}"), "time": format_rfc3339(time_ms),
            "weight_kg": weight, "age_years": age, "sex": sex, "height_cm": height})
        .to_string(),
    }
}

/// The `k`-th rate of a patient's pump: consecutive rates always differ
/// (5–24.75 mg/h: under 0.5 mg/kg/h for every admitted weight).
fn rate_of(k: usize) -> f64 {
    5.0 + (k % 80) as f64 * 0.25
}

/// A device or dose input for patient `p`, its `k`-th; `r` picks the kind.
fn event(p: usize, k: usize, j: usize, time_ms: i64, r: f64, tag: &str) -> Input {
    let time = format_rfc3339(time_ms);
    if k == 0 {
        return Input {
            suffix: format!("devices/{}/events", pump_id(p)),
            payload: json!({"id": format!("e-{tag}-{j}"), "time": time, "kind": "infusion_started",
                "patient_id": patient_id(p), "rate_mg_per_h": rate_of(k)})
            .to_string(),
        };
    }
    if r < 0.3 {
        Input {
            suffix: format!("devices/{}/events", pump_id(p)),
            payload:
                json!({"id": format!("e-{tag}-{j}"), "time": time, "kind": "infusion_rate_changed",
                "patient_id": patient_id(p), "rate_mg_per_h": rate_of(k)})
                .to_string(),
        }
    } else if r < 0.9 {
        Input {
            suffix: format!("devices/{}/events", pump_id(p)),
            payload: json!({"id": format!("e-{tag}-{j}"), "time": time, "kind": "heartbeat",
                "delivered_total_mg": round_dp(k as f64 * 0.3, 2)})
            .to_string(),
        }
    } else {
        let routes = ["iv_bolus", "intranasal", "im", "sc", "oral"];
        let route = routes[k % routes.len()];
        Input {
            suffix: format!("patients/{}/doses", patient_id(p)),
            payload: json!({"id": format!("d-{tag}-{j}"), "time": time, "route": route, "amount_mg": 10 + (k % 3) * 5})
                .to_string(),
        }
    }
}

/// Before the `late` phase's daemon starts: patient `p` admitted with a
/// pump started 20 min later and then `n` rate changes, one a minute, the
/// last a minute ago, written into the daemon's database through the
/// library's store writer as the daemon stores inputs (publishing them
/// would recompute the history from each one's time: hours for the setup).
async fn store_long_history(db: &Path, prefix: &str, p: usize, n: usize) {
    use dosetrack::intake::{self, Intake};
    use dosetrack::store::{StoreConfig, WriteOp, Writer};
    let formulary =
        dosetrack::patient::Formulary::new(dosetrack::drug::DrugFile::builtin().unwrap()).unwrap();
    let (writer, thread) = Writer::open(StoreConfig::new(db.to_owned())).unwrap();
    let now = now_ms();
    let minute = 60_000;
    let first = now - (n as i64 + 1) * minute;
    let mut inputs = vec![
        (
            format!("patients/{}/admit", patient_id(p)),
            json!({"id": "adm-long", "time": format_rfc3339(first - 30 * minute),
                "weight_kg": 80, "age_years": 50})
            .to_string(),
        ),
        (
            format!("devices/{}/events", pump_id(p)),
            json!({"id": "long-0", "time": format_rfc3339(first - 10 * minute),
                "kind": "infusion_started", "patient_id": patient_id(p), "rate_mg_per_h": rate_of(0)})
            .to_string(),
        ),
    ];
    for k in 1..=n {
        inputs.push((
            format!("devices/{}/events", pump_id(p)),
            json!({"id": format!("long-{k}"), "time": format_rfc3339(first + k as i64 * minute),
                "kind": "infusion_rate_changed", "patient_id": patient_id(p), "rate_mg_per_h": rate_of(k)})
            .to_string(),
        ));
    }
    let mut pending = Vec::new();
    for (suffix, payload) in inputs {
        let topic = format!("{prefix}/v1/{suffix}");
        match intake::intake(prefix, &topic, payload.as_bytes(), now, 300_000, &formulary) {
            Intake::Accept { record, .. } => {
                pending.push(writer.enqueue(WriteOp::Input(*record)).await.unwrap());
            }
            Intake::Reject { record, .. } => panic!("long history input refused: {record:?}"),
        }
        if pending.len() >= 4096 {
            for q in pending.drain(..) {
                q.outcome().await.unwrap();
            }
        }
    }
    for q in pending.drain(..) {
        q.outcome().await.unwrap();
    }
    drop(writer);
    thread.shutdown().unwrap();
}

/// The throughput stream: `patients` admits, then `n - patients` events
/// round-robin over the patients (the first of each a pump start), with
/// occurrence times rising evenly from `t0_ms` to `t1_ms`.
fn stream(n: usize, patients: usize, t0_ms: i64, t1_ms: i64, weight_decimals: i32) -> Vec<Input> {
    assert!(
        n >= 2 * patients,
        "the stream needs at least 2 inputs per patient"
    );
    let tag = format!("{:x}", now_us());
    let mut rng = Rng(0x5eed_1234);
    let at = |j: usize| t0_ms + ((t1_ms - t0_ms) as f64 * j as f64 / n as f64) as i64;
    let mut out = Vec::with_capacity(n);
    for p in 0..patients {
        out.push(admit(p, at(p), &mut rng, weight_decimals, &tag));
    }
    let mut per_patient = vec![0usize; patients];
    for j in patients..n {
        let p = (j - patients) % patients;
        let k = per_patient[p];
        per_patient[p] += 1;
        let r = rng.unit();
        out.push(event(p, k, j, at(j), r, &tag));
    }
    out
}

// ---------------------------------------------------------------------------
// MQTT clients.
// ---------------------------------------------------------------------------

fn options(id: &str, port: u16, clean: bool, manual_acks: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(clean)
        .set_manual_acks(manual_acks)
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// Publish every input at QoS 1 as fast as the connection allows (client
/// in-flight window 1000) and wait for every PUBACK. Returns the time from
/// the first publish to the last PUBACK.
async fn publish_all(port: u16, id: &str, prefix: &str, inputs: &[Input]) -> Duration {
    let (client, mut eventloop) = AsyncClient::new(options(id, port, true, false), 1000);
    let acked = Arc::new(AtomicU64::new(0));
    let acked2 = acked.clone();
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked2.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    let started = Instant::now();
    for i in inputs {
        client
            .publish(
                format!("{prefix}/v1/{}", i.suffix),
                QoS::AtLeastOnce,
                false,
                i.payload.clone().into_bytes(),
            )
            .await
            .unwrap();
    }
    let n = inputs.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "publisher {id}: {} of {n} PUBACKs after 120 s",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    elapsed
}

/// Create a persistent session subscribed to the daemon's input filters,
/// then disconnect (the broker queues what arrives meanwhile).
async fn make_session(port: u16, id: &str, prefix: &str) {
    let (client, mut eventloop) = AsyncClient::new(options(id, port, false, true), 100);
    let filters = dosetrack::mqtt::input_filters(prefix)
        .into_iter()
        .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
    client.subscribe_many(filters).await.unwrap();
    loop {
        match eventloop.poll().await.unwrap() {
            Event::Incoming(Packet::SubAck(_)) => break,
            _ => continue,
        }
    }
    client.disconnect().await.unwrap();
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// The baseline consumer: resume the persistent session `id`, receive `n`
/// messages, acknowledge each on receipt. Sends on `connected` once the
/// broker accepted the connection. Returns (first, last) receipt in µs.
async fn baseline_consume(
    port: u16,
    id: &str,
    n: usize,
    connected: tokio::sync::oneshot::Sender<()>,
) -> (i64, i64) {
    let (client, mut eventloop) = AsyncClient::new(options(id, port, false, true), 10_000);
    let mut connected = Some(connected);
    let mut pending: VecDeque<Publish> = VecDeque::new();
    let (mut first, mut last, mut count) = (0i64, 0i64, 0usize);
    let deadline = Instant::now() + Duration::from_secs(600);
    while count < n {
        assert!(Instant::now() < deadline, "baseline: {count} of {n}");
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(c) = connected.take() {
                    let _ = c.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let t = now_us();
                if count == 0 {
                    first = t;
                }
                last = t;
                count += 1;
                if client.try_ack(&p).is_err() {
                    pending.push_back(p);
                }
            }
            Ok(_) => {}
            Err(e) => panic!("baseline consumer: {e}"),
        }
        while let Some(p) = pending.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            pending.pop_front();
        }
    }
    // Hand over the remaining acks (polling, so the channel drains), then
    // leave: the DISCONNECT queues behind them.
    while !pending.is_empty() {
        while let Some(p) = pending.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            pending.pop_front();
        }
        if !pending.is_empty() {
            eventloop.poll().await.unwrap();
        }
    }
    while client.try_disconnect().is_err() {
        eventloop.poll().await.unwrap();
    }
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    (first, last)
}

// ---------------------------------------------------------------------------
// The relay baseline (issue #16 item 3).
// ---------------------------------------------------------------------------

/// Set (to `port,client id,input prefix,output prefix,n,payload bytes`) in
/// the environment of the relay process: this bench binary run again as the
/// relay, so that its CPU is its own process's.
const RELAY_CHILD_ENV: &str = "DOSETRACK_BENCH_RELAY_CHILD";

/// Size class of the relay's output message: the daemon's state messages
/// in the latency phase are 2,084 bytes of JSON on average (1,553–2,676,
/// 4 Dec 2026); the relay pads its message to this many bytes.
const RELAY_PAYLOAD_BYTES: usize = 2_100;

/// What the relay process reports on its last stdout line.
#[derive(Debug, Clone, Copy, Default)]
struct RelayReport {
    /// First input received (µs, wall clock).
    first_us: i64,
    /// The N-th input's acknowledgement handed to the client (µs).
    last_ack_us: i64,
    /// The N-th PUBACK of its own publishes received (µs).
    last_puback_us: i64,
    /// Its own CPU (user + sys, s) at CONNACK and at the N-th ack.
    cpu_connected_s: f64,
    cpu_done_s: f64,
}

impl RelayReport {
    fn line(&self) -> String {
        format!(
            "RELAY-DONE first_us={} last_ack_us={} last_puback_us={} cpu_connected_s={} cpu_done_s={}",
            self.first_us, self.last_ack_us, self.last_puback_us, self.cpu_connected_s, self.cpu_done_s
        )
    }

    fn parse(line: &str) -> Option<RelayReport> {
        let rest = line.strip_prefix("RELAY-DONE ")?;
        let field = |key: &str| -> Option<&str> {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        Some(RelayReport {
            first_us: field("first_us")?.parse().ok()?,
            last_ack_us: field("last_ack_us")?.parse().ok()?,
            last_puback_us: field("last_puback_us")?.parse().ok()?,
            cpu_connected_s: field("cpu_connected_s")?.parse().ok()?,
            cpu_done_s: field("cpu_done_s")?.parse().ok()?,
        })
    }
}

/// The relay's message for one input: a ~`bytes` JSON object naming the
/// input's topic, its receipt time and its payload (as a string), padded.
fn relay_payload(topic: &str, input: &[u8], received_us: i64, bytes: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(input);
    let mut v = serde_json::to_vec(&json!({
        "relay_of": topic,
        "received_at_ms": received_us / 1000,
        "input": text,
        "padding": "",
    }))
    .unwrap();
    if v.len() + 1 < bytes {
        // Fill the empty padding string (just before `"}`).
        let at = v.len() - 2;
        let fill = vec![b'.'; bytes - v.len()];
        v.splice(at..at, fill);
    }
    v
}

/// The relay's output topic for an input topic `{in}/v1/{kind}/{id}/...`:
/// `{out}/v1/relay/{id}/state`, one retained message per patient or device
/// named by the inputs' topics (in this stream pump `i` serves patient `i`:
/// at most 2 × P retained topics, against the daemon's P).
fn relay_topic(out_prefix: &str, in_topic: &str) -> String {
    let id = in_topic.split('/').nth(3).unwrap_or("unknown");
    format!("{out_prefix}/v1/relay/{id}/state")
}

/// The relay process's main: resume the persistent session, and for each
/// input publish its relay message (QoS 1, retained) and then acknowledge
/// it — the ack is handed to the client after the publish, the analogue of
/// the daemon acknowledging after its commit. Prints `RELAY-CONNECTED` at
/// the CONNACK and a [`RelayReport`] line when all N inputs are
/// acknowledged and all N publishes PUBACKed.
fn relay_child(spec: &str) {
    let f: Vec<&str> = spec.split(',').collect();
    assert_eq!(f.len(), 6, "{RELAY_CHILD_ENV}={spec}");
    let port: u16 = f[0].parse().unwrap();
    let (id, out_prefix) = (f[1].to_owned(), f[3].to_owned());
    let n: usize = f[4].parse().unwrap();
    let bytes: usize = f[5].parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(relay_run(port, id, out_prefix, n, bytes));
    println!("{}", report.line());
}

async fn relay_run(
    port: u16,
    id: String,
    out_prefix: String,
    n: usize,
    bytes: usize,
) -> RelayReport {
    use std::io::Write as _;
    // A request channel of 100: "handed to the client" is close to "on the
    // wire" (with 10,000 the whole small stream's publishes and acks were
    // queued in the channel at once, long before they were sent).
    let (client, mut eventloop) = AsyncClient::new(options(&id, port, false, true), 100);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Publish)>();
    let report = Arc::new(Mutex::new(RelayReport::default()));
    // The worker: publish, then acknowledge, in arrival order.
    let worker = {
        let client = client.clone();
        let report = report.clone();
        tokio::spawn(async move {
            let mut count = 0usize;
            while let Some((t, p)) = rx.recv().await {
                let topic = relay_topic(&out_prefix, &p.topic);
                let payload = relay_payload(&p.topic, &p.payload, t, bytes);
                client
                    .publish(topic, QoS::AtLeastOnce, true, payload)
                    .await
                    .unwrap();
                client.ack(&p).await.unwrap();
                count += 1;
                if count == n {
                    let mut r = report.lock().unwrap();
                    r.last_ack_us = now_us();
                    r.cpu_done_s = cpu_s(std::process::id());
                    break;
                }
            }
        })
    };
    let (mut received, mut pubacked) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(1800);
    while received < n || pubacked < n {
        assert!(
            Instant::now() < deadline,
            "relay: {received} of {n} received, {pubacked} PUBACKed"
        );
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                report.lock().unwrap().cpu_connected_s = cpu_s(std::process::id());
                println!("RELAY-CONNECTED");
                std::io::stdout().flush().unwrap();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let t = now_us();
                if received == 0 {
                    report.lock().unwrap().first_us = t;
                }
                received += 1;
                tx.send((t, p)).unwrap();
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                pubacked += 1;
                if pubacked == n {
                    report.lock().unwrap().last_puback_us = now_us();
                }
            }
            Ok(_) => {}
            Err(e) => panic!("relay: {e}"),
        }
    }
    worker.await.unwrap();
    // The acks are queued before the DISCONNECT.
    client.disconnect().await.unwrap();
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let r = *report.lock().unwrap();
    r
}

/// The relay process, as seen from the bench.
struct RelayProcess {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl RelayProcess {
    fn spawn(port: u16, id: &str, in_prefix: &str, out_prefix: &str, n: usize) -> RelayProcess {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .env(
                RELAY_CHILD_ENV,
                format!("{port},{id},{in_prefix},{out_prefix},{n},{RELAY_PAYLOAD_BYTES}"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        RelayProcess { child, lines }
    }

    /// The next line that starts with `prefix` (panics if the relay exits).
    async fn line(&mut self, prefix: &str) -> String {
        loop {
            match self.lines.recv().await {
                Some(l) if l.starts_with(prefix) => return l,
                Some(_) => continue,
                None => panic!("the relay process exited before `{prefix}`"),
            }
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// The relay phase: the same stream through the relay, same broker, same
/// delivery mode. Rate = N / (N-th ack handed to the client − first
/// receipt), as the daemon's is N / (N-th commit − first receipt);
/// `consumer_cpu_s` is the relay process's CPU over that span.
async fn relay_phase(
    broker: &Broker,
    mode: &str,
    inputs: &[Input],
    tag: &str,
) -> (Rate, RelayReport) {
    let prefix = format!("dtb-{tag}-{}", std::process::id());
    let id = format!("{prefix}-relay");
    let out = format!("{prefix}-out");
    make_session(broker.port, &id, &prefix).await;
    let n = inputs.len();
    let cpu_b0;
    let report_line = if mode == "preload" {
        publish_all(broker.port, &format!("{prefix}-pub"), &prefix, inputs).await;
        cpu_b0 = cpu_s(broker.pid());
        let mut relay = RelayProcess::spawn(broker.port, &id, &prefix, &out, n);
        let l = relay.line("RELAY-DONE").await;
        let _ = relay.child.wait();
        l
    } else {
        cpu_b0 = cpu_s(broker.pid());
        let mut relay = RelayProcess::spawn(broker.port, &id, &prefix, &out, n);
        relay.line("RELAY-CONNECTED").await;
        publish_all(broker.port, &format!("{prefix}-pub"), &prefix, inputs).await;
        let l = relay.line("RELAY-DONE").await;
        let _ = relay.child.wait();
        l
    };
    let r = RelayReport::parse(&report_line)
        .unwrap_or_else(|| panic!("relay report unreadable: {report_line}"));
    let elapsed_s = (r.last_ack_us - r.first_us) as f64 / 1e6;
    (
        Rate {
            per_s: n as f64 / elapsed_s,
            broker_cpu_s: cpu_s(broker.pid()) - cpu_b0,
            consumer_cpu_s: r.cpu_done_s - r.cpu_connected_s,
            elapsed_s,
        },
        r,
    )
}

/// The 1-, 5- and 15-minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// 1. Throughput.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_s: f64,
    broker_cpu_s: f64,
    consumer_cpu_s: f64,
    elapsed_s: f64,
}

async fn baseline_phase(broker: &Broker, mode: &str, inputs: &[Input], tag: &str) -> Rate {
    let prefix = format!("dtb-{tag}-{}", std::process::id());
    let id = format!("{prefix}-sub");
    make_session(broker.port, &id, &prefix).await;
    let n = inputs.len();
    let cpu0 = cpu_s(broker.pid());
    let self0 = cpu_s(std::process::id());
    let (first, last) = if mode == "preload" {
        publish_all(broker.port, &format!("{prefix}-pub"), &prefix, inputs).await;
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let cpu0b = cpu_s(broker.pid());
        let r = baseline_consume(broker.port, &id, n, tx).await;
        // In preload mode count only the drain.
        return finish_rate(n, r, cpu_s(broker.pid()) - cpu0b, f64::NAN);
    } else {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let port = broker.port;
        let id2 = id.clone();
        let consumer = tokio::spawn(async move { baseline_consume(port, &id2, n, tx).await });
        rx.await.unwrap();
        publish_all(broker.port, &format!("{prefix}-pub"), &prefix, inputs).await;
        consumer.await.unwrap()
    };
    finish_rate(
        n,
        (first, last),
        cpu_s(broker.pid()) - cpu0,
        cpu_s(std::process::id()) - self0,
    )
}

fn finish_rate(
    n: usize,
    (first, last): (i64, i64),
    broker_cpu_s: f64,
    consumer_cpu_s: f64,
) -> Rate {
    let elapsed_s = (last - first) as f64 / 1e6;
    Rate {
        per_s: n as f64 / elapsed_s,
        broker_cpu_s,
        consumer_cpu_s,
        elapsed_s,
    }
}

async fn daemon_phase(
    broker: &Broker,
    bin: &Path,
    dir: &Path,
    mode: &str,
    inputs: &[Input],
    tag: &str,
) -> (Rate, WriterStats, String) {
    let mut d = Daemon::new(bin, dir, broker.port, tag);
    let n = inputs.len();
    let pub_id = format!("{}-pub-in", d.prefix);
    d.start();
    let (cpu_b0, cpu_d0, done_ms, daemon_cpu) = if mode == "preload" {
        // Session exists and is subscribed: stop, queue the stream, restart.
        d.stop();
        publish_all(broker.port, &pub_id, &d.prefix, inputs).await;
        let cpu_b0 = cpu_s(broker.pid());
        d.start();
        let cpu_d0 = cpu_s(d.pid());
        let done = wait_blocking(&d, n as u64).await;
        (cpu_b0, cpu_d0, done, cpu_s(d.pid()))
    } else {
        let cpu_b0 = cpu_s(broker.pid());
        let cpu_d0 = cpu_s(d.pid());
        let port = broker.port;
        let prefix = d.prefix.clone();
        let inputs2 = inputs.to_vec();
        let publisher =
            tokio::spawn(async move { publish_all(port, &pub_id, &prefix, &inputs2).await });
        let done = wait_blocking(&d, n as u64).await;
        publisher.await.unwrap();
        (cpu_b0, cpu_d0, done, cpu_s(d.pid()))
    };
    let broker_cpu = cpu_s(broker.pid()) - cpu_b0;
    let threads = fmt_threads(&cpu_by_thread(d.pid()));
    let first = d.first_received_ms();
    let stats = d.stop();
    let counts = dosetrack::store::Reader::open(&d.db)
        .unwrap()
        .counts()
        .unwrap();
    assert_eq!(counts.inputs, n as u64, "{counts:?}");
    assert_eq!(counts.rejected, 0, "{counts:?}");
    let elapsed_s = (done_ms - first) / 1000.0;
    (
        Rate {
            per_s: n as f64 / elapsed_s,
            broker_cpu_s: broker_cpu,
            consumer_cpu_s: daemon_cpu - cpu_d0,
            elapsed_s,
        },
        stats,
        threads,
    )
}

async fn throughput(scale: &Scale, bin: &Path, dir: &Path) {
    for &window in &scale.windows {
        let broker = Broker::start(dir, window, 0);
        println!(
            "\n== throughput: broker max_inflight_messages {window}, max_queued_messages 0 (unlimited), port {}",
            broker.port
        );
        println!("   broker config:\n{}", indent(&broker.config));
        for mode in &scale.modes {
            // Occurrence times: the last `spread` before now (no clock_skew).
            let t1 = now_ms();
            let inputs = stream(
                scale.n,
                scale.patients,
                t1 - scale.spread_ms,
                t1,
                scale.weight_decimals,
            );
            let tag = format!("w{window}-{mode}");
            let load_a = loadavg();
            let a = baseline_phase(&broker, mode, &inputs, &format!("{tag}-a")).await;
            let load_r = loadavg();
            let (r, rr) = relay_phase(&broker, mode, &inputs, &format!("{tag}-r")).await;
            let load_b = loadavg();
            let (b, stats, threads) =
                daemon_phase(&broker, bin, dir, mode, &inputs, &format!("{tag}-b")).await;
            let load_end = loadavg();
            let ratio = b.per_s / a.per_s;
            let relay_ratio = b.per_s / r.per_s;
            let per_commit = stats.ops as f64 / stats.commits.max(1) as f64;
            let n = scale.n as f64;
            let relay_out_s = (rr.last_puback_us - rr.first_us) as f64 / 1e6;
            println!(
                "   {mode:>7}: relay {:>8.0} inputs/s ({:.2} s; its publishes all PUBACKed at {relay_out_s:.2} s)   daemon {:>7.0} inputs/s ({:.2} s)   relay ratio {relay_ratio:.3}",
                r.per_s, r.elapsed_s, b.per_s, b.elapsed_s
            );
            println!(
                "            receive-and-ack baseline (old yardstick) {:>8.0} msg/s ({:.2} s), daemon / it {ratio:.3}",
                a.per_s, a.elapsed_s
            );
            println!(
                "            CPU per input: daemon {:.1} µs, relay {:.1} µs; broker CPU {:.2} s (ack baseline) / {:.2} s (relay) / {:.2} s (daemon)",
                b.consumer_cpu_s / n * 1e6,
                r.consumer_cpu_s / n * 1e6,
                a.broker_cpu_s,
                r.broker_cpu_s,
                b.broker_cpu_s,
            );
            println!(
                "            writer {} ops in {} commits ({per_commit:.1} ops/commit); load average before the ack baseline {load_a}, the relay {load_r}, the daemon {load_b}, after {load_end}",
                stats.ops, stats.commits,
            );
            println!("            daemon CPU by thread over its life: {threads}");
            println!(
                "RESULT ingest scale={} mode={mode} window={window} n={} patients={} relay_per_s={:.0} daemon_per_s={:.0} relay_ratio={relay_ratio:.3} daemon_cpu_us_per_input={:.1} relay_cpu_us_per_input={:.1} ack_baseline_per_s={:.0} ack_baseline_ratio={ratio:.3} relay_s={:.3} relay_out_s={relay_out_s:.3} daemon_s={:.3} ack_baseline_s={:.3} broker_cpu_ack_s={:.2} broker_cpu_relay_s={:.2} broker_cpu_daemon_s={:.2} daemon_cpu_s={:.2} relay_cpu_s={:.2} writer_ops={} writer_commits={} ops_per_commit={per_commit:.1} load_before_daemon={load_b} load_after={load_end}",
                scale.name,
                scale.n,
                scale.patients,
                r.per_s,
                b.per_s,
                b.consumer_cpu_s / n * 1e6,
                r.consumer_cpu_s / n * 1e6,
                a.per_s,
                r.elapsed_s,
                b.elapsed_s,
                a.elapsed_s,
                a.broker_cpu_s,
                r.broker_cpu_s,
                b.broker_cpu_s,
                b.consumer_cpu_s,
                r.consumer_cpu_s,
                stats.ops,
                stats.commits,
            );
        }
    }
}

/// The stock Mosquitto limits (in-flight 20, queue 1000), live: does a
/// burst faster than the daemon lose inputs at the broker?
async fn stock(scale: &Scale, bin: &Path, dir: &Path) {
    let broker = Broker::start(dir, 20, 1000);
    println!(
        "\n== stock limits: max_inflight_messages 20, max_queued_messages 1000 (Mosquitto's defaults), live burst of {}",
        scale.n
    );
    let t1 = now_ms();
    let inputs = stream(
        scale.n,
        scale.patients,
        t1 - scale.spread_ms,
        t1,
        scale.weight_decimals,
    );
    let mut d = Daemon::new(bin, dir, broker.port, "stock");
    d.start();
    let published = publish_all(
        broker.port,
        &format!("{}-burst", d.prefix),
        &d.prefix,
        &inputs,
    )
    .await;
    // Wait until nothing more arrives for 3 s.
    let mut last = (u64::MAX, Instant::now());
    loop {
        let c = d.count("SELECT count(*) FROM inputs");
        if c != last.0 {
            last = (c, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) || c == scale.n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.stop();
    let stored = d.count("SELECT count(*) FROM inputs");
    println!(
        "   published (all PUBACKed) in {:.2} s; stored {stored} of {}; lost at the broker {}",
        published.as_secs_f64(),
        scale.n,
        scale.n as u64 - stored
    );
    println!(
        "RESULT stock_limits scale={} n={} published_s={:.3} stored={stored} lost={}",
        scale.name,
        scale.n,
        published.as_secs_f64(),
        scale.n as u64 - stored
    );
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("     | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// 2. Latency.
// ---------------------------------------------------------------------------

/// Received state messages: (patient id, receipt µs, payload).
type StateLog = Arc<Mutex<Vec<(String, i64, bytes::Bytes)>>>;

async fn state_subscriber(port: u16, prefix: &str) -> (AsyncClient, StateLog) {
    let id = format!("{prefix}-states");
    let (client, mut eventloop) = AsyncClient::new(options(&id, port, true, false), 1000);
    let log: StateLog = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    client
        .subscribe(format!("{prefix}/v1/patients/+/state"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let t = now_us();
                    let pid = p.topic.split('/').nth(3).unwrap_or("").to_owned();
                    sink.lock().unwrap().push((pid, t, p.payload));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    rx.await.unwrap();
    (client, log)
}

fn distinct_patients(log: &StateLog, after_us: i64) -> usize {
    let l = log.lock().unwrap();
    let mut s: Vec<&str> = l
        .iter()
        .filter(|(_, t, _)| *t > after_us)
        .map(|(p, _, _)| p.as_str())
        .collect();
    s.sort_unstable();
    s.dedup();
    s.len()
}

struct Sent {
    patient: String,
    at_us: i64,
    /// For a rate change: the new rate.
    rate: Option<f64>,
    /// A heartbeat from a pump that is not stale changes no state: the
    /// daemon publishes none for it (the contract), so it has no latency.
    heartbeat: bool,
}

async fn latency(scale: &Scale, bin: &Path, dir: &Path, late_events: usize) {
    let window = scale.windows.first().copied().unwrap_or(1000);
    let broker = Broker::start(dir, window, 0);
    let patients = scale.latency_patients;
    let total = (scale.latency_rate * scale.latency_s).round() as usize;
    let phase = if late_events > 0 {
        "latency_late"
    } else {
        "latency"
    };
    println!(
        "\n== {phase}: {total} inputs at {}/s for {} s over {patients} patients (broker max_inflight_messages {window}){}",
        scale.latency_rate,
        scale.latency_s,
        if late_events > 0 {
            format!("; meanwhile one late dose a second for {} ({late_events} stored pump events, one a minute up to a minute ago), dated 10 min back", patient_id(patients))
        } else {
            String::new()
        }
    );
    let mut d = Daemon::new(bin, dir, broker.port, phase);
    if late_events > 0 {
        store_long_history(&d.db, &d.prefix, patients, late_events).await;
    }
    d.start();
    let (sub, states) = state_subscriber(broker.port, &d.prefix).await;

    // Admit everyone and start their pumps; wait for their states.
    let t = now_ms();
    let mut rng = Rng(0x1a7e);
    let tag = format!("{:x}", now_us());
    let mut setup = Vec::new();
    for p in 0..patients {
        setup.push(admit(p, t - 20_000, &mut rng, scale.weight_decimals, &tag));
    }
    for p in 0..patients {
        setup.push(event(p, 0, p, t - 10_000, 0.0, &tag));
    }
    let t_setup = now_us();
    publish_all(
        broker.port,
        &format!("{}-setup", d.prefix),
        &d.prefix,
        &setup,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct_patients(&states, t_setup) < patients {
        assert!(Instant::now() < deadline, "setup states missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_blocking(&d, 2 * patients as u64).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The paced stream.
    let (client, mut eventloop) = AsyncClient::new(
        options(&format!("{}-paced", d.prefix), broker.port, true, false),
        10_000,
    );
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => panic!("paced publisher: {e}"),
            }
        }
    });
    let mut sent: Vec<Sent> = Vec::with_capacity(total);
    let mut per_patient = vec![1usize; patients];
    // One late dose a second for the patient with the long history.
    let late_sent = Arc::new(AtomicU64::new(0));
    let late_task = (late_events > 0).then(|| {
        let client = client.clone();
        let topic = format!("{}/v1/patients/{}/doses", d.prefix, patient_id(patients));
        let late_sent = late_sent.clone();
        let tag = tag.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for k in 0.. {
                tick.tick().await;
                let payload = json!({"id": format!("late-{tag}-{k}"),
                    "time": format_rfc3339(now_ms() - 10 * 60_000),
                    "route": "iv_bolus", "amount_mg": 5})
                .to_string();
                if client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload.into_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                late_sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let cpu_d0 = cpu_s(d.pid());
    let cpu_b0 = cpu_s(broker.pid());
    let start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / scale.latency_rate);
    let mut rng = Rng(0x9ace);
    for i in 0..total {
        tokio::time::sleep_until(start + period * i as u32).await;
        let p = i % patients;
        let k = per_patient[p];
        per_patient[p] += 1;
        let r = rng.unit();
        let now = now_ms();
        let input = event(p, k, 1_000_000 + i, now, r, &tag);
        let rate = input
            .payload
            .contains("infusion_rate_changed")
            .then(|| rate_of(k));
        let heartbeat = input.payload.contains(r#""kind":"heartbeat""#);
        let at_us = now_us();
        client
            .publish(
                format!("{}/v1/{}", d.prefix, input.suffix),
                QoS::AtLeastOnce,
                false,
                input.payload.into_bytes(),
            )
            .await
            .unwrap();
        sent.push(Sent {
            patient: patient_id(p),
            at_us,
            rate,
            heartbeat,
        });
    }
    let paced_s = start.elapsed().as_secs_f64();
    if let Some(t) = late_task {
        t.abort();
    }
    let late_sent = late_sent.load(Ordering::Relaxed);
    // Let the daemon catch up: every input stored, every patient's last
    // input followed by a state.
    let stored_target = (2 * patients + total) as u64
        + if late_events > 0 {
            late_events as u64 + 1 + late_sent
        } else {
            0
        };
    let probe_db = d.db.clone();
    let mut caught_up = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let stored: i64 = sqlite(&probe_db)
            .query_row("SELECT count(*) FROM inputs", [], |r| r.get(0))
            .unwrap();
        if stored as u64 >= stored_target {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let daemon_cpu = cpu_s(d.pid()) - cpu_d0;
    let broker_cpu = cpu_s(broker.pid()) - cpu_b0;
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    sub.disconnect().await.unwrap();
    d.stop();

    // Match inputs with states.
    let log = states.lock().unwrap();
    let mut by_patient: HashMap<&str, Vec<(i64, Vec<f64>)>> = HashMap::new();
    for (pid, t, payload) in log.iter() {
        let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let rates: Vec<f64> = v["active_inputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["rate_mg_per_h"].as_f64())
                    .collect()
            })
            .unwrap_or_default();
        by_patient
            .entry(pid.as_str())
            .or_default()
            .push((*t, rates));
    }
    for v in by_patient.values_mut() {
        v.sort_by_key(|(t, _)| *t);
    }
    let mut next_state = Vec::new();
    let mut showing_rate = Vec::new();
    let mut next_by_input: Vec<Option<f64>> = Vec::with_capacity(sent.len());
    let mut unmatched = 0usize;
    let heartbeats = sent.iter().filter(|s| s.heartbeat).count();
    for s in sent.iter().filter(|s| !s.heartbeat) {
        let Some(list) = by_patient.get(s.patient.as_str()) else {
            unmatched += 1;
            next_by_input.push(None);
            continue;
        };
        let from = list.partition_point(|(t, _)| *t <= s.at_us);
        match list.get(from) {
            Some((t, _)) => {
                let ms = (t - s.at_us) as f64 / 1000.0;
                next_state.push(ms);
                next_by_input.push(Some(ms));
            }
            None => {
                unmatched += 1;
                next_by_input.push(None);
            }
        }
        if let Some(rate) = s.rate {
            if let Some((t, _)) = list[from..]
                .iter()
                .find(|(_, rates)| rates.iter().any(|r| (r - rate).abs() < 1e-9))
            {
                showing_rate.push((t - s.at_us) as f64 / 1000.0);
            }
        }
    }
    // The first and the last tenth of the stream apart: the daemon's work
    // per input grows with what it holds.
    let tenth = (next_by_input.len() / 10).max(1);
    let mut early: Vec<f64> = next_by_input
        .iter()
        .take(tenth)
        .flatten()
        .copied()
        .collect();
    let mut late: Vec<f64> = next_by_input
        .iter()
        .skip(next_by_input.len().saturating_sub(tenth))
        .flatten()
        .copied()
        .collect();
    early.sort_by(f64::total_cmp);
    late.sort_by(f64::total_cmp);
    next_state.sort_by(f64::total_cmp);
    showing_rate.sort_by(f64::total_cmp);
    let rate_changes = sent.iter().filter(|s| s.rate.is_some()).count();
    let state_bytes: Vec<usize> = log.iter().map(|(_, _, b)| b.len()).collect();
    let mean_state_bytes =
        state_bytes.iter().sum::<usize>() as f64 / state_bytes.len().max(1) as f64;
    let p = |v: &[f64], q: f64| percentile(v, q);
    println!(
        "   paced {total} inputs in {paced_s:.2} s ({:.0}/s); daemon caught up: {caught_up}; daemon CPU {daemon_cpu:.2} s ({:.0} % of one core), broker CPU {broker_cpu:.2} s",
        total as f64 / paced_s,
        daemon_cpu / paced_s * 100.0
    );
    println!(
        "   state messages: {} received, {mean_state_bytes:.0} bytes on average (min {}, max {})",
        state_bytes.len(),
        state_bytes.iter().min().copied().unwrap_or(0),
        state_bytes.iter().max().copied().unwrap_or(0)
    );
    println!(
        "   publish → next state of the patient: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} measured, {unmatched} without a later state; {heartbeats} heartbeats not measured: no state of their own)",
        p(&next_state, 50.0),
        p(&next_state, 90.0),
        p(&next_state, 99.0),
        next_state.last().copied().unwrap_or(f64::NAN),
        next_state.len()
    );
    println!(
        "   first tenth of the stream: p50 {:.1} ms, p99 {:.1} ms; last tenth: p50 {:.1} ms, p99 {:.1} ms",
        p(&early, 50.0),
        p(&early, 99.0),
        p(&late, 50.0),
        p(&late, 99.0)
    );
    println!(
        "   rate change → first state showing the new rate: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {rate_changes})",
        p(&showing_rate, 50.0),
        p(&showing_rate, 99.0),
        showing_rate.last().copied().unwrap_or(f64::NAN),
        showing_rate.len()
    );
    println!(
        "RESULT {phase} late_events={late_events} late_sent={late_sent} scale={} rate_per_s={} duration_s={} patients={patients} inputs={total} heartbeats_not_measured={heartbeats} measured={} unmatched={unmatched} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} rate_shown_p50_ms={:.2} rate_shown_p99_ms={:.2} rate_shown_measured={} first_tenth_p99_ms={:.2} last_tenth_p50_ms={:.2} last_tenth_p99_ms={:.2} daemon_cpu_pct={:.0} daemon_cpu_us_per_input={:.1} mean_state_bytes={mean_state_bytes:.0} load={}",
        scale.name,
        scale.latency_rate,
        scale.latency_s,
        next_state.len(),
        p(&next_state, 50.0),
        p(&next_state, 90.0),
        p(&next_state, 99.0),
        next_state.last().copied().unwrap_or(f64::NAN),
        p(&showing_rate, 50.0),
        p(&showing_rate, 99.0),
        showing_rate.len(),
        p(&early, 99.0),
        p(&late, 50.0),
        p(&late, 99.0),
        daemon_cpu / paced_s * 100.0,
        daemon_cpu / total as f64 * 1e6,
        loadavg()
    );
}

// ---------------------------------------------------------------------------
// 3. Memory.
// ---------------------------------------------------------------------------

async fn memory(scale: &Scale, bin: &Path, dir: &Path) {
    let window = scale.windows.first().copied().unwrap_or(1000);
    let broker = Broker::start(dir, window, 0);
    println!(
        "\n== memory: patients admitted with a pump start and a dose each (weights to {} decimal(s))",
        scale.weight_decimals
    );
    let mut d = Daemon::new(bin, dir, broker.port, "memory");
    d.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = |patients: usize, distinct: usize, secs: f64, pid: u32| {
        let (rss, hwm, anon) = memory_kib(pid);
        println!(
            "   {patients:>6} patients ({distinct} distinct weights): VmRSS {:>8.1} MiB, VmHWM {:>8.1} MiB, RssAnon {:>8.1} MiB{}",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            anon as f64 / 1024.0,
            if secs > 0.0 { format!(" (ingested in {secs:.1} s)") } else { String::new() }
        );
        println!(
            "RESULT memory scale={} patients={patients} distinct_weights={distinct} vm_rss_kib={rss} vm_hwm_kib={hwm} rss_anon_kib={anon}",
            scale.name
        );
    };
    report(0, 0, 0.0, d.pid());
    let mut rng = Rng(0xa11c);
    let tag = format!("{:x}", now_us());
    let mut weights: Vec<u64> = Vec::new();
    let mut done = 0usize;
    for &upto in &scale.memory {
        let t = now_ms();
        let mut inputs = Vec::new();
        for p in done..upto {
            let a = admit(p, t - 30_000, &mut rng, scale.weight_decimals, &tag);
            let v: Value = serde_json::from_str(&a.payload).unwrap();
            weights.push(v["weight_kg"].as_f64().unwrap().to_bits());
            inputs.push(a);
            inputs.push(event(p, 0, p, t - 20_000, 0.0, &tag));
            inputs.push(Input {
                suffix: format!("patients/{}/doses", patient_id(p)),
                payload: json!({"id": format!("d-{tag}-{p}"), "time": format_rfc3339(t - 10_000),
                    "route": "intranasal", "amount_mg": 25})
                .to_string(),
            });
        }
        let started = Instant::now();
        publish_all(
            broker.port,
            &format!("{}-pub-{upto}", d.prefix),
            &d.prefix,
            &inputs,
        )
        .await;
        wait_blocking(&d, 3 * upto as u64).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        while d.count("SELECT count(*) FROM published_state") < upto as u64 {
            assert!(Instant::now() < deadline, "states missing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut distinct = weights.clone();
        distinct.sort_unstable();
        distinct.dedup();
        report(upto, distinct.len(), secs, d.pid());
        done = upto;
    }
    d.stop();
}

// ---------------------------------------------------------------------------

fn main() {
    // This binary run again as the relay process of the relay baseline.
    if let Ok(spec) = std::env::var(RELAY_CHILD_ENV) {
        relay_child(&spec);
        return;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    if !bench && std::env::var_os("DOSETRACK_BENCH_SCALE").is_none() {
        println!("ingest benchmark: run with `cargo bench --bench ingest` (skipped)");
        return;
    }
    let scale = Scale::from_env();
    let bin = std::env::var_os("DOSETRACK_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dosetrack")));
    let tmp = tempfile::Builder::new()
        .prefix("dosetrack-bench-")
        .tempdir()
        .unwrap();
    // Kept (with the daemon and broker logs) on request.
    let keep = std::env::var_os("DOSETRACK_BENCH_KEEP").is_some();
    let (dir, _guard) = if keep {
        (tmp.keep(), None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "dosetrack ingest benchmark, scale {}: {} CPUs ({cpu}), {}; daemon {}; database in {}",
        scale.name,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mosquitto_version(),
        bin.display(),
        dir.display()
    );
    println!("{scale:?}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(async {
        if scale.wants("throughput") {
            throughput(&scale, &bin, &dir).await;
        }
        if scale.wants("stock") {
            stock(&scale, &bin, &dir).await;
        }
        if scale.wants("latency") {
            latency(&scale, &bin, &dir, 0).await;
        }
        if scale.wants("late") {
            latency(&scale, &bin, &dir, scale.late_events).await;
        }
        if scale.wants("memory") {
            memory(&scale, &bin, &dir).await;
        }
    });
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    if keep {
        println!("kept {}", dir.display());
    }
}
