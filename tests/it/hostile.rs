//! Hostile input (issue #6 item 4): the corpus `tests/hostile/corpus.jsonl`
//! (how it was made: `tests/hostile/gen_corpus.py`) of broken JSON, wrong
//! types, NaN/Infinity, negative and absurd doses, huge numbers, over-size
//! payloads, deep nesting, invalid UTF-8, bad ids and topics, future and
//! ancient times, unknown devices and conflicting duplicates, interleaved
//! with valid traffic.
//!
//! * `the_daemon_rejects_every_bad_message_and_applies_every_good_one`: the
//!   real binary against the shared Mosquitto (unique prefix) and a real
//!   SQLite file. Every bad message is on `{prefix}/v1/rejected` and in the
//!   `rejected` table with its expected code and field; every good one is in
//!   `inputs` once, and the published states equal a clean tracker fed only
//!   the good ones; the daemon is the same process throughout.
//! * `every_corpus_case_gets_its_code_from_the_pure_intake`: the same corpus
//!   (plus the cases Mosquitto cannot carry: wildcards, control characters
//!   in topics, output topics) through the pure intake, and through the
//!   fuzz target's consistency check.
//! * `the_fuzz_corpus_passes_the_fuzz_check`: every file of
//!   `fuzz/corpus/intake` and `fuzz/regressions` through the fuzz target's
//!   check (`fuzz/check.rs`), so CI covers the fuzz corpus on stable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

#[path = "../../fuzz/check.rs"]
#[allow(dead_code)]
mod check;

use dosetrack::contract::ErrorCode;
use dosetrack::drug::DrugFile;
use dosetrack::intake::{self, Intake, IntakeRules};
use dosetrack::patient::Formulary;
use dosetrack::store::Reader;
use dosetrack::tracker::{TrackedInput, Tracker, TrackerConfig};
use dosetrack::vocab::{format_rfc3339, TimeMs};
use mqtt_common::blocking::PrefixClient;
use mqtt_common::daemon::DaemonProcess;
use mqtt_common::{poll_until, unique};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;
/// The test daemon's device allow-list.
const ALLOWED: [&str; 3] = ["pump-h1", "pump-h2", "patch-h1"];
const MAX_FUTURE_SKEW_MS: i64 = 300_000;
const MAX_PAST_AGE_H: i64 = 720;
/// `[alerts] operators` and `max_command_age_min` of the corpus.
const OPERATORS: [&str; 1] = ["rn-1"];
const MAX_COMMAND_AGE_MIN: i64 = 10;

// ---------------------------------------------------------------------------
// The corpus.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Ok,
    Redelivery,
    Reject(ErrorCode, Option<String>),
}

#[derive(Debug, Clone)]
struct Case {
    line: usize,
    topic_suffix: String,
    payload: Vec<u8>,
    expect: Expect,
    broker: bool,
    note: String,
}

impl Case {
    fn bad(&self) -> bool {
        matches!(self.expect, Expect::Reject(..))
    }
}

fn corpus_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/corpus.jsonl")
}

/// `{{now}}`, `{{now-90m}}`, `{{now+1h}}` (s, m, h, d) as RFC 3339.
fn render_times(text: &str, now_ms: TimeMs) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{now") {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find("}}").expect("closing }}");
        let spec = &rest[start + 5..end];
        let offset_ms = if spec.is_empty() {
            0
        } else {
            let sign = if spec.starts_with('-') { -1 } else { 1 };
            let (n, unit) = spec[1..].split_at(spec.len() - 2);
            let n: i64 = n.parse().expect("offset number");
            let unit_ms = match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                other => panic!("unit {other}"),
            };
            sign * n * unit_ms
        };
        out.push_str(&format_rfc3339(now_ms + offset_ms));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A payload the test builds (too big or too repetitive for the file).
fn generate(spec: &str, line: usize, now_ms: TimeMs) -> Vec<u8> {
    let (kind, n) = spec.split_once(':').expect("kind:N");
    let n: usize = n.parse().expect("N");
    let time = format_rfc3339(now_ms - 15 * 60_000);
    match kind {
        "spaces" => vec![b' '; n],
        "bytes" => vec![0xff; n],
        "pad" => {
            let head = format!(
                r#"{{"id":"gen-{line}","time":"{time}","route":"oral","amount_mg":1,"pad":""#
            );
            let tail = r#""}"#;
            let fill = n.checked_sub(head.len() + tail.len()).expect("room to pad");
            let mut s = head;
            s.push_str(&"x".repeat(fill));
            s.push_str(tail);
            assert_eq!(s.len(), n);
            s.into_bytes()
        }
        "nest" => format!(
            r#"{{"id":"gen-{line}","time":"{time}","route":"oral","amount_mg":1,"deep":{}{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
        .into_bytes(),
        other => panic!("generator {other}"),
    }
}

fn load_corpus(now_ms: TimeMs) -> Vec<Case> {
    let text = std::fs::read_to_string(corpus_path()).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let line = i + 1;
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("line {line}: {e}"));
            let payload = if let Some(p) = v["payload"].as_str() {
                render_times(p, now_ms).into_bytes()
            } else if let Some(b) = v["payload_b64"].as_str() {
                base64_decode(b)
            } else {
                generate(v["generate"].as_str().expect("a payload"), line, now_ms)
            };
            let field = v["field"].as_str().map(str::to_owned);
            let expect = match v["expect"].as_str().unwrap() {
                "ok" => Expect::Ok,
                "redelivery" => Expect::Redelivery,
                code => Expect::Reject(
                    ErrorCode::from_name(code).unwrap_or_else(|| panic!("line {line}: {code}")),
                    field,
                ),
            };
            Case {
                line,
                topic_suffix: v["topic"].as_str().unwrap().to_owned(),
                payload,
                expect,
                broker: v["broker"].as_bool().unwrap_or(true),
                note: v["note"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn rules() -> IntakeRules {
    IntakeRules {
        max_future_skew_ms: MAX_FUTURE_SKEW_MS,
        max_past_age_ms: Some(MAX_PAST_AGE_H * 3_600_000),
        allowed_devices: Some(Arc::new(ALLOWED.iter().map(|s| s.to_string()).collect())),
        operators: Some(Arc::new(OPERATORS.iter().map(|s| s.to_string()).collect())),
        max_command_age_ms: Some(MAX_COMMAND_AGE_MIN * 60_000),
    }
}

fn formulary() -> Arc<Formulary> {
    Arc::new(Formulary::new(DrugFile::builtin().unwrap()).unwrap())
}

// ---------------------------------------------------------------------------
// Pure: the corpus and the fuzz corpus.
// ---------------------------------------------------------------------------

#[test]
fn every_corpus_case_gets_its_code_from_the_pure_intake() {
    let now = check::NOW_MS;
    let cases = load_corpus(now);
    let f = formulary();
    let rules = rules();
    let mut failures = Vec::new();
    for c in &cases {
        let topic = format!("dosetrack/v1/{}", c.topic_suffix);
        let got = match intake::intake_with("dosetrack", &topic, &c.payload, now, &rules, &f) {
            Intake::Accept { .. } => None,
            Intake::Reject { record, .. } => Some((record.code, record.field)),
        };
        // duplicate_conflict and association_conflict need the store: the
        // pure intake accepts.
        let want = match &c.expect {
            Expect::Reject(ErrorCode::DuplicateConflict | ErrorCode::AssociationConflict, _)
            | Expect::Ok
            | Expect::Redelivery => None,
            Expect::Reject(code, field) => Some((*code, field.clone())),
        };
        if got != want {
            failures.push(format!(
                "line {} ({}): expected {want:?}, got {got:?}",
                c.line, c.note
            ));
        }
        // The fuzz target's consistency check holds on every case.
        check::check(&topic, &c.payload);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let bad = cases.iter().filter(|c| c.bad()).count();
    assert!(bad >= 200, "the corpus has {bad} bad cases");
    // Every contract code (and dosetrack's unknown_device) is exercised.
    // pause_limit needs an alert occurrence already paused to its cap
    // (tests/it/alert_command_trust.rs has it); wrong_qos a QoS 0 publish,
    // and the corpus is published at QoS 1 (tests/it/bounded_intake.rs).
    for code in ErrorCode::ALL
        .iter()
        .filter(|c| !matches!(c, ErrorCode::PauseLimit | ErrorCode::WrongQos))
    {
        assert!(
            cases
                .iter()
                .any(|c| matches!(&c.expect, Expect::Reject(k, _) if k == code)),
            "no case for {code}"
        );
    }
}

fn fuzz_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus/intake", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for e in entries {
                let p = e.unwrap().path();
                if p.is_file() {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_fuzz_corpus_passes_the_fuzz_check() {
    let files = fuzz_files();
    assert!(files.len() >= 10, "fuzz corpus: {} files", files.len());
    let mut accepted = 0;
    for p in &files {
        let data = std::fs::read(p).unwrap();
        let outcome = std::panic::catch_unwind(|| check::check_case(&data))
            .unwrap_or_else(|_| panic!("fuzz check failed on {}", p.display()));
        if outcome == check::Outcome::Accepted {
            accepted += 1;
        }
    }
    // Seeds include valid inputs, so the check's Accept branch runs too.
    assert!(accepted >= 3, "only {accepted} accepted fuzz seeds");
}

// ---------------------------------------------------------------------------
// The daemon.
// ---------------------------------------------------------------------------

/// (topic, code, field, excerpt) of one rejection, for multiset comparison.
type NoticeKey = (String, String, Option<String>, String);

fn count<K: Ord>(keys: impl IntoIterator<Item = K>) -> BTreeMap<K, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[test]
fn the_daemon_rejects_every_bad_message_and_applies_every_good_one() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("hostile");
    let db = dir.path().join("dosetrack.db");
    let config = dir.path().join("dosetrack.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_future_skew_s = {}\nmax_past_age_h = {MAX_PAST_AGE_H}\n\
             rejection_samples_per_minute = 100000\n\n\
             [devices]\nallow = [{}]\n\n\
             [alerts]\noperators = [{}]\nmax_command_age_min = {MAX_COMMAND_AGE_MIN}.0\n",
            MAX_FUTURE_SKEW_MS / 1000,
            ALLOWED.map(|d| format!("\"{d}\"")).join(", "),
            OPERATORS.map(|d| format!("\"{d}\"")).join(", ")
        ),
    )
    .unwrap();
    let client = PrefixClient::watching_outputs(BROKER, PORT, &unique("hc"), &prefix);
    let mut daemon = DaemonProcess::run(
        (BROKER, PORT),
        &db,
        &prefix,
        &unique("hd"),
        &["--config", config.to_str().unwrap()],
        dir.path(),
    );
    daemon.spawn();
    let pid = daemon.pid();
    poll_until("status online", Duration::from_secs(20), || {
        client.on("status").iter().any(|v| v["state"] == "online")
    });

    let now = chrono::Utc::now().timestamp_millis();
    let cases: Vec<Case> = load_corpus(now).into_iter().filter(|c| c.broker).collect();
    for c in &cases {
        client.publish(&c.topic_suffix, c.payload.clone());
    }
    let bad: Vec<&Case> = cases.iter().filter(|c| c.bad()).collect();
    let good: Vec<&Case> = cases.iter().filter(|c| c.expect == Expect::Ok).collect();
    let redeliveries = cases
        .iter()
        .filter(|c| c.expect == Expect::Redelivery)
        .count();
    let reader = Reader::open(&db).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = reader.counts().unwrap();
        if n.rejected as usize >= bad.len() && n.inputs as usize >= good.len() {
            break;
        }
        if Instant::now() > deadline || !daemon.running() {
            let log = daemon.log_text();
            let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            let got = count(
                reader
                    .rejected(10_000)
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.topic, r.code)),
            );
            let want = count(bad.iter().map(|c| {
                let Expect::Reject(code, _) = &c.expect else {
                    unreachable!()
                };
                (
                    format!("{prefix}/v1/{}", c.topic_suffix),
                    code.as_str().to_owned(),
                )
            }));
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, n)| got.get(*k) != Some(n))
                .map(|(k, n)| (k, n, got.get(k)))
                .collect();
            panic!(
                "not every input stored: {n:?} (want {} rejected, {} inputs); rejections (topic, code) missing: {missing:#?}\ndaemon log (last lines first):\n{tail}",
                bad.len(),
                good.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    poll_until("every rejection published", Duration::from_secs(20), || {
        client.on("rejected").len() >= bad.len()
    });

    // Every bad message: on `rejected` with the expected code and field.
    let expected: BTreeMap<NoticeKey, usize> = count(bad.iter().map(|c| {
        let Expect::Reject(code, field) = &c.expect else {
            unreachable!()
        };
        (
            format!("{prefix}/v1/{}", c.topic_suffix),
            code.as_str().to_owned(),
            field.clone(),
            intake::excerpt(&c.payload),
        )
    }));
    let published: BTreeMap<NoticeKey, usize> = count(client.on("rejected").iter().map(|v| {
        (
            v["topic"].as_str().unwrap().to_owned(),
            v["error"]["code"].as_str().unwrap().to_owned(),
            v["error"]["field"].as_str().map(str::to_owned),
            v["payload_excerpt"].as_str().unwrap().to_owned(),
        )
    }));
    if published != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, n)| published.get(*k) != Some(n))
            .collect();
        let extra: Vec<_> = published
            .iter()
            .filter(|(k, n)| expected.get(*k) != Some(n))
            .collect();
        panic!("rejections differ.\nexpected, not published: {missing:#?}\npublished, not expected: {extra:#?}");
    }
    // ... and in the `rejected` table, with the raw bytes (up to 64 KiB).
    let stored = reader.rejected(10_000).unwrap();
    let key = |topic: &str, code: &str, field: Option<String>, payload: &[u8], len: usize| {
        (
            topic.to_owned(),
            code.to_owned(),
            field,
            payload.to_vec(),
            len,
        )
    };
    let stored = count(stored.iter().map(|r| {
        key(
            &r.topic,
            &r.code,
            r.field.clone(),
            &r.payload,
            r.payload_len as usize,
        )
    }));
    let want = count(bad.iter().map(|c| {
        let Expect::Reject(code, field) = &c.expect else {
            unreachable!()
        };
        key(
            &format!("{prefix}/v1/{}", c.topic_suffix),
            code.as_str(),
            field.clone(),
            &c.payload[..c.payload.len().min(64 * 1024)],
            c.payload.len(),
        )
    }));
    assert!(stored == want, "the rejected table differs from the corpus");

    // Every good message: in `inputs` once, verbatim; the redelivery is not
    // a second row.
    let inputs = reader.inputs(0).unwrap();
    assert_eq!(inputs.len(), good.len(), "inputs rows");
    let stored_inputs: HashSet<(String, Vec<u8>)> = inputs
        .iter()
        .map(|s| (s.record.topic.clone(), s.record.payload.as_bytes().to_vec()))
        .collect();
    for c in &good {
        let topic = format!("{prefix}/v1/{}", c.topic_suffix);
        assert!(
            stored_inputs.contains(&(topic, c.payload.clone())),
            "line {} ({}) not stored",
            c.line,
            c.note
        );
    }

    // Applied: the published state of each tracked patient equals a clean
    // tracker fed only the good messages.
    let f = formulary();
    let mut clean = Tracker::new(f.clone(), TrackerConfig::default());
    for (seq, c) in good.iter().enumerate() {
        let topic = format!("{prefix}/v1/{}", c.topic_suffix);
        match intake::intake_with(&prefix, &topic, &c.payload, now, &rules(), &f) {
            Intake::Accept { topic, input, .. } => {
                clean.apply(TrackedInput {
                    seq: seq as i64 + 1,
                    topic,
                    input: *input,
                });
            }
            Intake::Reject { notice, .. } => panic!("line {}: {notice:?}", c.line),
        }
    }
    for patient in ["P-H1", "P-H2"] {
        let mut last = Value::Null;
        let mut expected = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = client.on(&format!("patients/{patient}/state")).pop() {
                let at = dosetrack::vocab::parse_rfc3339_ms(s["time"].as_str().unwrap()).unwrap();
                expected = serde_json::to_value(clean.state(patient, at).unwrap()).unwrap();
                last = s;
                if last == expected {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{patient}: published state {last:#} != clean replay of the good inputs {expected:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            last["ce_ng_per_ml"].as_f64().unwrap() > 0.0,
            "{patient} received ketamine: {last}"
        );
    }
    let p1 = client.on("patients/P-H1/state").pop().unwrap();
    assert!(
        p1["active_inputs"].as_array().unwrap().is_empty(),
        "pump-h1 stopped (the last good pump event): {p1}"
    );

    // The same process throughout: never restarted, never exited.
    assert!(daemon.running(), "the daemon exited: {}", daemon.log_text());
    assert_eq!(daemon.pid(), pid);
    let online: HashSet<String> = client
        .on("status")
        .iter()
        .filter(|v| v["state"] == "online")
        .map(|v| v["started_at"].to_string())
        .collect();
    assert_eq!(online.len(), 1, "one start only: {online:?}");
    assert!(!daemon.log_text().contains("panicked"));
    println!(
        "hostile: {} bad, {} good (+{redeliveries} redelivery), all rejected with the expected code, 0 restarts ({:.1} s)",
        bad.len(),
        good.len(),
        started.elapsed().as_secs_f64()
    );
}
