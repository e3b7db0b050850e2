//! Restart after a year (issue #16 item 2; figures in docs/benchmarks.md).
//!
//! A simulated year of a 200-bed hospital is written through the library's
//! store writer exactly as the daemon stores inputs (intake, projections),
//! then the real `dosetrack run` binary (`CARGO_BIN_EXE_dosetrack`, same
//! profile) is started on a copy of that database and timed from exec to
//! `READY=1` on a simulated systemd `NOTIFY_SOCKET`; its RSS (VmRSS, and
//! the peak VmHWM) is read from `/proc` at READY and 3 s later. Three
//! starts, the median reported. For comparison, the full replay the
//! daemon did before (`dosetrack::service::rebuild`: every stored input)
//! is timed in this process on the same database, with the peak RSS it
//! adds.
//!
//! The year (deterministic, seeded): every bed holds one stay after
//! another (length exponential, mean 3.4 days, 5 h to 30 days; gaps up to
//! 12 h: ~20,000 stays a year), each stay a new patient (weight 45–115 kg) admitted and, unless
//! still in care at the end, discharged. Four beds in five have a pump
//! (`pump-{bed}`, reused stay after stay: its association moves):
//! `infusion_started` naming the patient 20 min after admission, a rate
//! change every 8 h, `infusion_stopped` 30 min before discharge; one bed in
//! five a patch (`patch-{bed}`: applied 20 min after admission, a new one
//! every 72 h, removed before discharge). Manual doses every 6 h in turn
//! oral, intranasal, IM, SC. Devices send a heartbeat every 10 min while
//! in use, without `patient_id` (attributed through the association):
//! ~90 % of the inputs.
//!
//! Size: `DOSETRACK_YEAR=small` (default, 7 days: seconds) or `full`
//! (365 days: ~10 M inputs, built in minutes, once); `DOSETRACK_YEAR_DAYS`
//! overrides the days. The database is cached under
//! `target/dosetrack-bench/` by size and generator version.
//! `DOSETRACK_YEAR_FULL_REPLAY=0` skips the in-process full replay.
//! `DOSETRACK_YEAR_COLD=1` starts from a cold page cache: before each
//! start the copy is synced and its pages dropped from the cache
//! (`posix_fadvise(POSIX_FADV_DONTNEED)`: that file only, no root needed),
//! as after a reboot (the binary's own pages stay cached).
//! Broker: `DOSETRACK_BENCH_BROKER` (default `mqtt://127.0.0.1:1883`; the
//! start does not wait for it).
//!
//! ```text
//! cargo bench --bench restart                      # small
//! DOSETRACK_YEAR=full cargo bench --bench restart  # the issue's size
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use dosetrack::drug::DrugFile;
use dosetrack::intake::{self, Intake};
use dosetrack::patient::Formulary;
use dosetrack::service::rebuild;
use dosetrack::store::{Reader, StoreConfig, WriteOp, Writer};
use dosetrack::tracker::{Tracker, TrackerConfig};
use dosetrack::vocab::format_rfc3339;
use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bump when the generated year changes (the cache key).
const GENERATOR_VERSION: u32 = 1;
const PREFIX: &str = "yearbench";
const BEDS: usize = 200;
const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MIN_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const HEARTBEAT_MS: i64 = 10 * MIN_MS;
const RATE_CHANGE_MS: i64 = 8 * HOUR_MS;
const DOSE_MS: i64 = 6 * HOUR_MS;
const PATCH_MS: i64 = 72 * HOUR_MS;
const DEVICE_LEAD_MS: i64 = 20 * MIN_MS;
const DEVICE_TAIL_MS: i64 = 30 * MIN_MS;
const MIB: f64 = 1024.0 * 1024.0;

/// xorshift64*: the same year on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone)]
struct Stay {
    bed: usize,
    patient: String,
    weight_kg: u32,
    start_ms: i64,
    end_ms: i64,
    /// Discharged at `end_ms` (else still in care at the end of the year).
    discharged: bool,
}

impl Stay {
    fn patch(&self) -> bool {
        self.bed % 5 == 4
    }
    fn device(&self) -> String {
        if self.patch() {
            format!("patch-{}", self.bed)
        } else {
            format!("pump-{}", self.bed)
        }
    }
    fn device_from(&self) -> i64 {
        self.start_ms + DEVICE_LEAD_MS
    }
    fn device_to(&self) -> i64 {
        self.end_ms - DEVICE_TAIL_MS
    }
}

/// Every bed's stays over `[t0, t1)`.
fn stays(t0: i64, t1: i64) -> Vec<Stay> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    for bed in 0..BEDS {
        // Beds start staggered: the year begins mid-stay.
        let mut t = t0 + (rng.unit() * 2.0 * DAY_MS as f64) as i64;
        while t < t1 {
            let len_ms = (-(1.0 - rng.unit()).ln() * 3.4 * DAY_MS as f64)
                .clamp(5.0 * HOUR_MS as f64, 30.0 * DAY_MS as f64) as i64;
            let end = t + len_ms;
            out.push(Stay {
                bed,
                patient: format!("P-{:06}", out.len()),
                weight_kg: 45 + (rng.unit() * 70.0) as u32,
                start_ms: t,
                end_ms: end.min(t1),
                discharged: end < t1,
            });
            t = end + (rng.unit() * 12.0 * HOUR_MS as f64) as i64 + MIN_MS;
        }
    }
    out
}

/// Times `from + k·step` in `[lo, hi)` (and `< until`).
fn grid(from: i64, step: i64, until: i64, lo: i64, hi: i64) -> impl Iterator<Item = i64> {
    let k0 = if lo > from {
        (lo - from + step - 1) / step
    } else {
        0
    };
    (k0..)
        .map(move |k| from + k * step)
        .take_while(move |&t| t < hi && t < until)
}

/// A stay's messages with times in `[lo, hi)`: (time, topic, payload).
fn messages(s: &Stay, lo: i64, hi: i64, out: &mut Vec<(i64, String, String)>) {
    let p = &s.patient;
    let d = s.device();
    let ptopic = |what: &str| format!("{PREFIX}/v1/patients/{p}/{what}");
    let dtopic = format!("{PREFIX}/v1/devices/{d}/events");
    let t = |ms: i64| format_rfc3339(ms);
    let within = |ms: i64| lo <= ms && ms < hi;
    if within(s.start_ms) {
        out.push((
            s.start_ms,
            ptopic("admit"),
            format!(
                r#"{{"id":"adm","time":"{}","weight_kg":{},"age_years":50}}"#,
                t(s.start_ms),
                s.weight_kg
            ),
        ));
    }
    if s.discharged && within(s.end_ms) {
        out.push((
            s.end_ms,
            ptopic("discharge"),
            format!(r#"{{"id":"dis","time":"{}"}}"#, t(s.end_ms)),
        ));
    }
    for at in grid(s.start_ms + HOUR_MS, DOSE_MS, s.end_ms, lo, hi) {
        let n = (at - s.start_ms - HOUR_MS) / DOSE_MS;
        let (route, mg) = match n % 4 {
            0 => ("oral", 25),
            1 => ("intranasal", 25),
            2 => ("im", 20),
            _ => ("sc", 20),
        };
        out.push((
            at,
            ptopic("doses"),
            format!(
                r#"{{"id":"d{n}","time":"{}","route":"{route}","amount_mg":{mg}}}"#,
                t(at)
            ),
        ));
    }
    let (from, to) = (s.device_from(), s.device_to());
    if to <= from {
        return;
    }
    let ev = |id: String, at: i64, body: &str| {
        (
            at,
            dtopic.clone(),
            format!(r#"{{"id":"{id}","time":"{}",{body}}}"#, t(at)),
        )
    };
    if s.patch() {
        for at in grid(from, PATCH_MS, to, lo, hi) {
            let n = (at - from) / PATCH_MS;
            out.push(ev(
                format!("{p}-a{n}"),
                at,
                &format!(
                    r#""kind":"patch_applied","patient_id":"{p}","release_rate_mg_per_h":1.5,"wear_h":72"#
                ),
            ));
        }
        if s.discharged && within(to) {
            out.push(ev(
                format!("{p}-r"),
                to,
                &format!(r#""kind":"patch_removed","patient_id":"{p}""#),
            ));
        }
    } else {
        if within(from) {
            out.push(ev(
                format!("{p}-s"),
                from,
                &format!(r#""kind":"infusion_started","patient_id":"{p}","rate_mg_per_h":12"#),
            ));
        }
        for at in grid(from + RATE_CHANGE_MS, RATE_CHANGE_MS, to, lo, hi) {
            let n = (at - from) / RATE_CHANGE_MS;
            let rate = [6, 12, 18, 9][(n % 4) as usize];
            out.push(ev(
                format!("{p}-c{n}"),
                at,
                &format!(
                    r#""kind":"infusion_rate_changed","patient_id":"{p}","rate_mg_per_h":{rate}"#
                ),
            ));
        }
        if s.discharged && within(to) {
            out.push(ev(
                format!("{p}-x"),
                to,
                &format!(r#""kind":"infusion_stopped","patient_id":"{p}""#),
            ));
        }
    }
    for at in grid(from + HEARTBEAT_MS, HEARTBEAT_MS, to, lo, hi) {
        let n = (at - from) / HEARTBEAT_MS;
        out.push(ev(format!("{p}-h{n}"), at, r#""kind":"heartbeat""#));
    }
}

struct Size {
    name: String,
    days: i64,
}

fn size() -> Size {
    let name = std::env::var("DOSETRACK_YEAR").unwrap_or_else(|_| "small".to_owned());
    let default_days = if name == "full" { 365 } else { 7 };
    let days = std::env::var("DOSETRACK_YEAR_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(default_days);
    Size { name, days }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the cached year holds.
#[derive(Debug, Default)]
struct YearFacts {
    inputs: u64,
    heartbeats: u64,
    stays: u64,
    in_care: u64,
    db_mib: f64,
    built_s: Option<f64>,
}

fn count(db: &Path, sql: &str) -> u64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// Build the year at `db` (through the store writer), unless cached.
async fn year(db: &Path, days: i64) -> YearFacts {
    let mut built_s = None;
    if !db.exists() {
        let started = Instant::now();
        let tmp = db.with_extension("building");
        let _ = std::fs::remove_file(&tmp);
        let formulary = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
        let mut cfg = StoreConfig::new(tmp.clone());
        cfg.batch_max = 4096;
        let (writer, thread) = Writer::open(cfg).unwrap();
        let t1 = wall_ms() - HOUR_MS;
        let t0 = t1 - days * DAY_MS;
        let all = stays(t0, t1);
        let mut pending = Vec::with_capacity(8192);
        let mut window = Vec::new();
        let mut lo = t0;
        let mut written = 0u64;
        while lo < t1 {
            let hi = (lo + HOUR_MS).min(t1);
            window.clear();
            for s in all.iter().filter(|s| s.start_ms < hi && s.end_ms >= lo) {
                messages(s, lo, hi, &mut window);
            }
            window.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            for (at, topic, payload) in &window {
                match intake::intake(
                    PREFIX,
                    topic,
                    payload.as_bytes(),
                    at + 40,
                    300_000,
                    &formulary,
                ) {
                    Intake::Accept { record, .. } => {
                        pending.push(writer.enqueue(WriteOp::Input(*record)).await.unwrap());
                        written += 1;
                    }
                    Intake::Reject { record, .. } => {
                        panic!("generated input refused: {record:?}")
                    }
                }
                if pending.len() >= 8192 {
                    for q in pending.drain(..) {
                        q.outcome().await.unwrap();
                    }
                }
            }
            lo = hi;
            if (lo - t0) % (30 * DAY_MS) < HOUR_MS {
                println!(
                    "  year: day {} of {days}, {written} inputs",
                    (lo - t0) / DAY_MS
                );
            }
        }
        for q in pending.drain(..) {
            q.outcome().await.unwrap();
        }
        drop(writer);
        thread.shutdown().unwrap();
        std::fs::rename(&tmp, db).unwrap();
        built_s = Some(started.elapsed().as_secs_f64());
    }
    // A year cached by an older build: migrate it once, in place, so that
    // every start below is a start, not an upgrade; the time is what the
    // first start after an upgrade adds.
    let version = count(db, "PRAGMA user_version");
    let started = Instant::now();
    let (writer, thread) = Writer::open(StoreConfig::new(db.to_path_buf())).unwrap();
    drop(writer);
    thread.shutdown().unwrap();
    let migrated = count(db, "PRAGMA user_version");
    if migrated != version {
        println!(
            "  schema: the cached year migrated from version {version} to {migrated} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    YearFacts {
        inputs: count(db, "SELECT count(*) FROM inputs"),
        heartbeats: count(db, "SELECT count(*) FROM inputs WHERE kind = 'heartbeat'"),
        stays: count(db, "SELECT count(*) FROM inputs WHERE kind = 'admit'"),
        in_care: count(
            db,
            "SELECT count(*) FROM patients WHERE discharged_at_ms IS NULL",
        ),
        db_mib: std::fs::metadata(db).unwrap().len() as f64 / MIB,
        built_s,
    }
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Start {
    ready_s: f64,
    rss_ready_mib: f64,
    hwm_ready_mib: f64,
    rss_later_mib: f64,
    hwm_later_mib: f64,
    log_line: String,
}

/// One start of the daemon on a copy of `db`.
fn start_once(db: &Path) -> Start {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("dosetrack.db");
    std::fs::copy(db, &copy).unwrap();
    if cold() {
        drop_from_page_cache(&copy);
    }
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let broker = std::env::var("DOSETRACK_BENCH_BROKER")
        .unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned());
    let client_id = format!("yearbench-{}", std::process::id());
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dosetrack"))
        .args([
            "run",
            "--broker",
            &broker,
            "--database",
            copy.to_str().unwrap(),
            "--topic-prefix",
            PREFIX,
            "--client-id",
            &client_id,
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut buf = [0u8; 4096];
    let ready_s = loop {
        if let Ok(n) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break started.elapsed().as_secs_f64();
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "daemon exited ({status}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "no READY=1 in 30 min"
        );
    };
    let (rss_ready_mib, hwm_ready_mib) = rss_mib(pid);
    std::thread::sleep(Duration::from_secs(3));
    let (rss_later_mib, hwm_later_mib) = rss_mib(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let log_line = text
        .lines()
        .find(|l| l.contains("state rebuilt from the database"))
        .unwrap_or("")
        .to_owned();
    Start {
        ready_s,
        rss_ready_mib,
        hwm_ready_mib,
        rss_later_mib,
        hwm_later_mib,
        log_line,
    }
}

/// Whether the starts begin with the database out of the page cache.
fn cold() -> bool {
    std::env::var("DOSETRACK_YEAR_COLD").as_deref() == Ok("1")
}

/// Write `path` to disk and drop its pages from the page cache, so that a
/// start reads it from the disk as after a reboot; prints the page cache's
/// size (`/proc/meminfo` `Cached:`) before and after, to show they went.
#[allow(unsafe_code)]
fn drop_from_page_cache(path: &Path) {
    use std::os::fd::AsRawFd as _;
    let cached_kib = || {
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Cached:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = cached_kib();
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: a plain advice call on a file descriptor this function owns
    // for the duration of the call; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed: {rc}");
    let after = cached_kib();
    println!(
        "  cold: page cache {:.0} -> {:.0} MiB ({:.0} MiB dropped)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        before.saturating_sub(after) as f64 / 1024.0
    );
}

/// `key=value` from a log line.
fn log_field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or("?")
        .to_owned()
}

/// The old start: every stored input replayed, in this process.
fn full_replay(db: &Path) -> (f64, f64, usize) {
    let formulary = Arc::new(Formulary::new(DrugFile::builtin().unwrap()).unwrap());
    let me = std::process::id();
    let (before_rss, _) = rss_mib(me);
    let started = Instant::now();
    let reader = Reader::open(db).unwrap();
    let mut tracker = Tracker::new(formulary, TrackerConfig::default());
    let rebuilt = rebuild(&reader, &mut tracker, &BTreeSet::new()).unwrap();
    let s = started.elapsed().as_secs_f64();
    let (after_rss, _) = rss_mib(me);
    drop(tracker);
    (s, after_rss - before_rss, rebuilt.replayed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that does not name this
    // bench skips it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(filter) = args.first() {
        if !"restart".contains(filter.as_str()) {
            return;
        }
    }
    let size = size();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("dosetrack-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!(
        "year-{}-{}d-v{GENERATOR_VERSION}.db",
        size.name, size.days
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let facts = rt.block_on(year(&db, size.days));
    drop(rt);
    println!(
        "year: {} days, {} inputs ({} heartbeats), {} stays, {} in care, {:.0} MiB{}",
        size.days,
        facts.inputs,
        facts.heartbeats,
        facts.stays,
        facts.in_care,
        facts.db_mib,
        facts
            .built_s
            .map(|s| format!(", built in {s:.1} s"))
            .unwrap_or_else(|| " (cached)".to_owned())
    );
    let starts: Vec<Start> = (0..3).map(|_| start_once(&db)).collect();
    for s in &starts {
        println!(
            "  start: READY {:.3} s, RSS {:.1} MiB (peak {:.1}), 3 s later {:.1} MiB (peak {:.1}); replayed={} released={} elapsed_ms={}",
            s.ready_s,
            s.rss_ready_mib,
            s.hwm_ready_mib,
            s.rss_later_mib,
            s.hwm_later_mib,
            log_field(&s.log_line, "replayed="),
            log_field(&s.log_line, "released="),
            log_field(&s.log_line, "elapsed_ms="),
        );
    }
    let full = if std::env::var("DOSETRACK_YEAR_FULL_REPLAY").as_deref() == Ok("0") {
        None
    } else {
        Some(full_replay(&db))
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "RESULT restart size={} cache={} days={} inputs={} heartbeats={} stays={} in_care={} db_mib={:.0} ready_s={:.3} rss_ready_mib={:.1} peak_rss_mib={:.1} rss_3s_mib={:.1} replayed={} full_replay_s={} full_replay_rss_mib={} load={}",
        size.name,
        if cold() { "cold" } else { "warm" },
        size.days,
        facts.inputs,
        facts.heartbeats,
        facts.stays,
        facts.in_care,
        facts.db_mib,
        median(starts.iter().map(|s| s.ready_s).collect()),
        median(starts.iter().map(|s| s.rss_ready_mib).collect()),
        median(starts.iter().map(|s| s.hwm_later_mib).collect()),
        median(starts.iter().map(|s| s.rss_later_mib).collect()),
        log_field(&starts[0].log_line, "replayed="),
        full.map_or("skipped".to_owned(), |f| format!("{:.2}", f.0)),
        full.map_or("skipped".to_owned(), |f| format!("{:.0}", f.1)),
        load.split_whitespace().take(3).collect::<Vec<_>>().join("/"),
    );
}
