//! Health and metrics end to end: the real binary with `[http] listen` on a
//! free loopback port, scraped over HTTP.
//!
//! * Against the shared broker (unique prefix and client id): a known mix
//!   of inputs — admits, a discharge, doses, a device event, three bad
//!   messages with known codes, a redelivery — and `/metrics` parsed
//!   strictly as the Prometheus text format 0.0.4 (the parser below) must
//!   count exactly that: per kind, per event, per code, duplicates, tracked
//!   patients, a `dose_limit` alert raised, consistent histograms (count =
//!   commits > 0, cumulative buckets, `+Inf` = count), both connections up,
//!   the build version. `/healthz` is 200 with its JSON.
//! * Against a broker of the test's own: `/healthz` turns 503 naming the
//!   broker when it stops, 200 again when it is back, and the reconnect
//!   counters moved.
//! * A port already in use stops the start with an error naming
//!   `http.listen`; a non-loopback address is warned about.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

use mqtt_common::daemon::{derefs_to_process, DaemonProcess};
use mqtt_common::{free_port, http_get, shared_broker, unique, OwnBroker, TestClient};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The daemon.
// ---------------------------------------------------------------------------

/// The daemon with a config file naming the broker, the database and the
/// `[http]` listener on a free loopback port.
struct Daemon {
    process: DaemonProcess,
    http_port: u16,
}

fn write_config(dir: &Path, broker: (&str, u16), prefix: &str, listen: &str) -> PathBuf {
    let path = dir.join("dosetrack.toml");
    let text = format!(
        "[broker]\nhost = \"{}\"\nport = {}\nclient_id = \"{}\"\n\n\
         [topics]\nprefix = \"{prefix}\"\n\n\
         [database]\npath = \"{}\"\n\n\
         [http]\nlisten = \"{listen}\"\n",
        broker.0,
        broker.1,
        unique("obs"),
        dir.join("dosetrack.db").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl Daemon {
    fn start(dir: &Path, broker: (&str, u16), prefix: &str) -> Daemon {
        let http_port = free_port();
        let config = write_config(dir, broker, prefix, &format!("127.0.0.1:{http_port}"));
        let mut process = DaemonProcess::new(["run", "--config", config.to_str().unwrap()], dir);
        process.spawn();
        Daemon { process, http_port }
    }

    fn get(&self, path: &str) -> Option<(u16, String, String)> {
        http_get(self.http_port, path)
    }

    /// Poll `path` until `pred(status, body)` holds.
    fn wait_get(
        &self,
        what: &str,
        path: &str,
        timeout: Duration,
        pred: impl Fn(u16, &str) -> bool,
    ) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some((status, _, body)) = self.get(path) {
                if pred(status, &body) {
                    return (status, body);
                }
                last = Some((status, body));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; last answer {last:?}\nlog:\n{}",
            self.log_text()
        );
    }

    fn terminate(&mut self) {
        self.process.terminate_within(Duration::from_secs(30));
    }
}

derefs_to_process!(Daemon, process);

// ---------------------------------------------------------------------------
// A strict parser of the Prometheus text exposition format 0.0.4.
// ---------------------------------------------------------------------------

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name → type.
    types: BTreeMap<String, String>,
    help: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    matches!(chars.next(), Some(c) if first_ok(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` (the braces included) → labels; escapes \\ \" \n.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let inner = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or("labels not in braces")?;
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    loop {
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() && chars.peek().is_none() {
            break; // `{}` or a trailing comma
        }
        if !is_name(&name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(format!("label {name}: expected =\""));
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or("unterminated label value")? {
                '"' => break,
                '\\' => match chars.next().ok_or("dangling escape")? {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                '\n' => return Err("newline in a label value".into()),
                c => value.push(c),
            }
        }
        if labels.insert(name.clone(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(c) => return Err(format!("expected , after a label, got {c:?}")),
        }
    }
    Ok(labels)
}

/// The family a sample belongs to, given its type.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return Some(base);
            }
        }
    }
    None
}

fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    if !text.ends_with('\n') {
        return Err("the last line must end with a line feed".into());
    }
    let mut seen_samples_of: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| at("HELP without a name".into()))?;
                    if !is_name(name, true) {
                        return Err(at("bad metric name".into()));
                    }
                    let help = parts.next().unwrap_or("").to_owned();
                    if e.help.insert(name.to_owned(), help).is_some() {
                        return Err(at("second HELP".into()));
                    }
                }
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| at("TYPE without a name".into()))?;
                    let ty = parts
                        .next()
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    if !is_name(name, true) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                        return Err(at(format!("unknown type {ty}")));
                    }
                    if seen_samples_of.iter().any(|s| s == name) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                    if e.types.insert(name.to_owned(), ty.to_owned()).is_some() {
                        return Err(at("second TYPE".into()));
                    }
                }
                _ => {} // a comment
            }
            continue;
        }
        // name[{labels}] value [timestamp]
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            // The closing brace: the first `}` outside a quoted value.
            let mut in_quotes = false;
            let mut escaped = false;
            let mut close = None;
            for (i, c) in line[name_end..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_quotes => escaped = true,
                    '"' => in_quotes = !in_quotes,
                    '}' if !in_quotes => {
                        close = Some(name_end + i);
                        break;
                    }
                    _ => {}
                }
            }
            let close = close.ok_or_else(|| at("unclosed labels".into()))?;
            (
                parse_labels(&line[name_end..=close]).map_err(at)?,
                &line[close + 1..],
            )
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &e.types).ok_or_else(|| at("sample without a TYPE".into()))?;
        let family = family.to_owned();
        // A family's samples are contiguous.
        if seen_samples_of.last() != Some(&family) {
            if seen_samples_of.contains(&family) {
                return Err(at("family's samples not contiguous".into()));
            }
            seen_samples_of.push(family.clone());
        }
        if e.types[&family] == "histogram"
            && name.ends_with("_bucket")
            && !labels.contains_key("le")
        {
            return Err(at("bucket without le".into()));
        }
        if e.samples
            .iter()
            .any(|s| s.name == name && s.labels == labels)
        {
            return Err(at("duplicate sample".into()));
        }
        e.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(e)
}

impl Exposition {
    /// The value of `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// Sum of every sample of `name`.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// Check a histogram's internal consistency; returns its count.
    fn histogram(&self, family: &str) -> f64 {
        assert_eq!(
            self.types.get(family).map(String::as_str),
            Some("histogram"),
            "{family}"
        );
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .map(|s| (parse_value(&s.labels["le"]).unwrap(), s.value))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() >= 2, "{family}: buckets {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family}: buckets not cumulative: {buckets:?}"
        );
        let count = self.get(&format!("{family}_count"), &[]);
        let inf = buckets.last().unwrap();
        assert!(inf.0.is_infinite(), "{family}: no +Inf bucket");
        assert_eq!(inf.1, count, "{family}: +Inf bucket != count");
        let sum = self.get(&format!("{family}_sum"), &[]);
        assert!(sum >= 0.0 && sum.is_finite(), "{family}: sum {sum}");
        count
    }
}

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"}\"} 1\n\
              # TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let e = parse_exposition(ok).unwrap();
    assert_eq!(e.get("a_total", &[("k", "v\"}")]), 1.0);
    assert_eq!(e.histogram("h"), 2.0);
    for bad in [
        "a 1\n",                                                    // no TYPE
        "# TYPE a gauge\na 1",                                      // no final line feed
        "# TYPE a gauge\na{k=v} 1\n",                               // unquoted label
        "# TYPE a gauge\na one\n",                                  // bad value
        "# TYPE a gauge\na 1\na 2\n",                               // duplicate sample
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n", // not contiguous
        "# TYPE a wobble\na 1\n",                                   // unknown type
        "# TYPE 1a gauge\n",                                        // bad name
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

fn ago(min: i64) -> String {
    dosetrack::vocab::format_rfc3339(chrono::Utc::now().timestamp_millis() - min * 60_000)
}

fn healthy(status: u16, body: &str) -> bool {
    status == 200 && serde_json::from_str::<Value>(body).is_ok_and(|v| v["status"] == "ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_was_published() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("obs");
    let (host, port) = shared_broker();
    let mut daemon = Daemon::start(dir.path(), (&host, port), &prefix);
    let d = &daemon;
    tokio::task::block_in_place(|| {
        d.wait_get(
            "a healthy daemon",
            "/healthz",
            Duration::from_secs(20),
            healthy,
        )
    });

    let client = TestClient::connect(&host, port, &unique("obs-pub")).await;
    let topic = |s: &str| format!("{prefix}/v1/{s}");
    let dose =
        json!({"id": "oral-1", "time": ago(20), "route": "oral", "amount_mg": 25}).to_string();
    let msgs: Vec<(String, String)> = vec![
        // 2 admits, 1 discharge.
        (
            topic("patients/P-1/admit"),
            json!({"id": "adm-1", "time": ago(60), "weight_kg": 70, "age_years": 50}).to_string(),
        ),
        (
            topic("patients/P-2/admit"),
            json!({"id": "adm-2", "time": ago(60), "weight_kg": 80, "age_years": 40}).to_string(),
        ),
        (
            topic("patients/P-2/discharge"),
            json!({"id": "dis-2", "time": ago(10)}).to_string(),
        ),
        // 2 doses: 30 mg IV = 0.43 mg/kg on the ward (limit 0.35) raises
        // dose_limit at once.
        (
            topic("patients/P-1/doses"),
            json!({"id": "bol-1", "time": ago(5), "route": "iv_bolus", "amount_mg": 30})
                .to_string(),
        ),
        (topic("patients/P-1/doses"), dose.clone()),
        // 1 device event (a heartbeat).
        (
            topic("devices/pump-1/events"),
            json!({"id": "hb-1", "time": ago(1), "kind": "heartbeat", "patient_id": "P-1"})
                .to_string(),
        ),
        // 3 bad messages.
        (topic("patients/P-1/doses"), "{not json".to_owned()),
        (
            topic("patients/P-1/doses"),
            json!({"id": "x-1", "route": "oral", "amount_mg": 5}).to_string(),
        ),
        (
            topic("devices/pump-1/events"),
            json!({"id": "x-2", "time": ago(1), "kind": "teleport"}).to_string(),
        ),
        // A redelivery of the oral dose.
        (topic("patients/P-1/doses"), dose),
    ];
    let bytes: Vec<(String, Vec<u8>)> =
        msgs.into_iter().map(|(t, p)| (t, p.into_bytes())).collect();
    client.publish_all(&bytes).await;

    // Until everything is counted (and the alert is committed).
    let (_, body) = tokio::task::block_in_place(|| {
        d.wait_get(
            "every input counted",
            "/metrics",
            Duration::from_secs(20),
            |_, body| {
                parse_exposition(body).is_ok_and(|e| {
                    e.sum("dosetrack_inputs_total") == 6.0
                        && e.sum("dosetrack_rejected_total") == 3.0
                        && e.value("dosetrack_duplicates_total", &[]) == Some(1.0)
                        && e.value(
                            "dosetrack_alert_messages_total",
                            &[("rule", "dose_limit"), ("phase", "raised")],
                        ) == Some(1.0)
                        && e.value("dosetrack_unacked_inputs", &[]) == Some(0.0)
                })
            },
        )
    });
    let (status, content_type, again) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let e = parse_exposition(&again).unwrap_or_else(|err| panic!("{err}\n{again}"));
    let _ = body;

    for (kind, n) in [
        ("admit", 2.0),
        ("discharge", 1.0),
        ("dose", 2.0),
        ("device_event", 1.0),
        ("alert_command", 0.0),
    ] {
        assert_eq!(
            e.get("dosetrack_inputs_total", &[("kind", kind)]),
            n,
            "{kind}"
        );
    }
    assert_eq!(
        e.get("dosetrack_device_events_total", &[("event", "heartbeat")]),
        1.0
    );
    assert_eq!(e.sum("dosetrack_device_events_total"), 1.0);
    for (code, n) in [
        ("invalid_json", 1.0),
        ("missing_field", 1.0),
        ("unknown_kind", 1.0),
        ("duplicate_conflict", 0.0),
        ("too_large", 0.0),
    ] {
        assert_eq!(
            e.get("dosetrack_rejected_total", &[("code", code)]),
            n,
            "{code}"
        );
    }
    assert_eq!(e.get("dosetrack_duplicates_total", &[]), 1.0);
    // P-1 tracked; P-2 discharged.
    assert_eq!(e.get("dosetrack_tracked_patients", &[]), 1.0);
    assert_eq!(e.types["dosetrack_tracked_patients"], "gauge");
    assert_eq!(e.types["dosetrack_inputs_total"], "counter");

    // Histograms: one observation per committed transaction in both; every
    // input, rejection and redelivery was an op of one.
    let commits = e.histogram("dosetrack_commit_batch_ops");
    assert!(commits > 0.0);
    assert_eq!(e.histogram("dosetrack_commit_duration_seconds"), commits);
    assert!(e.get("dosetrack_commit_batch_ops_sum", &[]) >= 10.0);
    assert!(e.get("dosetrack_commit_batch_ops_sum", &[]) >= commits);

    for c in ["ingest", "publisher"] {
        assert_eq!(
            e.get("dosetrack_broker_connected", &[("connection", c)]),
            1.0
        );
        assert_eq!(
            e.get("dosetrack_broker_reconnects_total", &[("connection", c)]),
            0.0
        );
    }
    assert!(e.value("dosetrack_outbox_pending", &[]).is_some());
    // The process's own memory: the heap in use is the live daemon's (a
    // few MiB at least), SQLite's share is part of it, and the free part is
    // reported beside it.
    let heap = e.get("dosetrack_memory_heap_in_use_bytes", &[]);
    let sqlite = e.get("dosetrack_memory_sqlite_bytes", &[]);
    assert!(heap > 1_000_000.0, "heap in use {heap}");
    assert!(
        sqlite > 0.0 && sqlite < heap,
        "sqlite {sqlite} of heap {heap}"
    );
    assert!(e.value("dosetrack_memory_heap_free_bytes", &[]).is_some());
    assert_eq!(e.types["dosetrack_memory_heap_in_use_bytes"], "gauge");
    // The core's retained inputs (set at each state tick, every 10 s at
    // the 60 s interval): at least the two admissions and two doses.
    assert!(e.value("dosetrack_alert_book_entries", &[]).is_some());
    tokio::task::block_in_place(|| {
        d.wait_get(
            "the retained inputs counted",
            "/metrics",
            Duration::from_secs(25),
            |_, b| {
                parse_exposition(b)
                    .is_ok_and(|e| e.value("dosetrack_tracker_retained_inputs", &[]) >= Some(4.0))
            },
        )
    });
    assert_eq!(
        e.get("dosetrack_oldest_unacked_input_age_seconds", &[]),
        0.0
    );
    assert_eq!(
        e.get(
            "dosetrack_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for name in e.types.keys() {
        assert!(e.help.contains_key(name), "{name} has no HELP");
    }

    // The outbox drains: the alert is confirmed by the broker.
    tokio::task::block_in_place(|| {
        d.wait_get(
            "the outbox drained",
            "/metrics",
            Duration::from_secs(20),
            |_, b| {
                parse_exposition(b)
                    .is_ok_and(|e| e.value("dosetrack_outbox_pending", &[]) == Some(0.0))
            },
        )
    });

    // /healthz: 200 with its JSON; an unknown path is 404.
    let (status, content_type, body) = d.get("/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["reasons"], json!([]));
    assert_eq!(h["broker_ingest_connected"], true);
    assert_eq!(h["broker_publisher_connected"], true);
    assert_eq!(h["writer_alive"], true);
    assert_eq!(h["unacked_inputs"], 0);
    assert!(
        h["last_commit_age_s"]
            .as_f64()
            .is_some_and(|a| (0.0..60.0).contains(&a)),
        "{h}"
    );
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d.get("/nope").unwrap().0, 404);

    daemon.terminate();
    assert!(
        http_get(daemon.http_port, "/healthz").is_none(),
        "the listener is closed after a stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_broker_and_reconnects_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = OwnBroker::start(false);
    let daemon = Daemon::start(dir.path(), ("127.0.0.1", broker.port), &unique("obs-own"));
    let d = &daemon;
    tokio::task::block_in_place(|| {
        d.wait_get(
            "a healthy daemon",
            "/healthz",
            Duration::from_secs(20),
            healthy,
        );
    });

    broker.stop();
    let (_, body) = tokio::task::block_in_place(|| {
        d.wait_get(
            "503 without the broker, both connections seen down",
            "/healthz",
            Duration::from_secs(20),
            // The two connections notice the broker's loss separately: the
            // first 503 may name only one of them.
            |s, body| s == 503 && body.contains("\"broker_ingest_connected\":false"),
        )
    });
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "unhealthy");
    assert_eq!(h["broker_ingest_connected"], false, "{h}");
    let reasons = h["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("broker")),
        "{h}"
    );
    assert_eq!(h["writer_alive"], true, "{h}");
    let (_, _, m) = d.get("/metrics").unwrap();
    let e = parse_exposition(&m).unwrap();
    assert_eq!(
        e.get("dosetrack_broker_connected", &[("connection", "ingest")]),
        0.0
    );

    broker.restart();
    tokio::task::block_in_place(|| {
        d.wait_get(
            "200 with the broker back",
            "/healthz",
            Duration::from_secs(40),
            healthy,
        );
    });
    let (_, _, m) = d.get("/metrics").unwrap();
    let e = parse_exposition(&m).unwrap();
    for c in ["ingest", "publisher"] {
        assert_eq!(
            e.get("dosetrack_broker_connected", &[("connection", c)]),
            1.0,
            "{c}"
        );
        assert!(
            e.get("dosetrack_broker_reconnects_total", &[("connection", c)]) >= 1.0,
            "{c}: {m}"
        );
    }
}

#[test]
fn a_port_in_use_stops_the_start_naming_http_listen() {
    let dir = tempfile::tempdir().unwrap();
    // Taken on every interface; the daemon is told to use it there too (not
    // loopback: warned about).
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = write_config(
        dir.path(),
        ("127.0.0.1", free_port()),
        &unique("obs-bind"),
        &format!("0.0.0.0:{port}"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dosetrack"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("http.listen"), "{stderr}");
    assert!(stderr.contains(&format!("0.0.0.0:{port}")), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    // Nothing else was started: no database.
    assert!(!dir.path().join("dosetrack.db").exists());
    drop(taken);
}
