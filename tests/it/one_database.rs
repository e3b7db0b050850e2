//! The database and the daemon's start, through the real binary (issue 13,
//! items 8, 9, 10 and 15): one daemon per database (a lock held for the
//! process's life); a database deleted while running is a technical
//! problem and inputs are no longer acknowledged; an existing 0-byte file is
//! not taken as an empty record; a topic prefix the topic grammar cannot
//! round-trip is refused at start and by `check-config`; a stored input that
//! no longer parses at start is a technical problem; the new user's
//! frictions (a missing database directory, `| head`, `alerts report` over a
//! short window).

use crate::mqtt_common::blocking::{BlockingClient, PrefixClient};
use crate::mqtt_common::daemon::{write_http_config, DaemonProcess};
use crate::mqtt_common::{http_get, poll_until, shared_broker, unique};
use serde_json::{json, Value};
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dosetrack");

fn ago_ms(ms: i64) -> String {
    let t = chrono::Utc::now() - chrono::Duration::milliseconds(ms);
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A daemon on the shared broker with an `[http]` listener; its port.
fn daemon(dir: &Path, db: &Path, prefix: &str, tag: &str) -> (DaemonProcess, u16) {
    let config = dir.join(format!("{tag}.toml"));
    let port = write_http_config(&config);
    let (host, broker_port) = shared_broker();
    let d = DaemonProcess::run(
        (&host, broker_port),
        db,
        prefix,
        &unique(tag),
        &["--config", config.to_str().unwrap()],
        &dir.join(tag),
    );
    std::fs::create_dir_all(dir.join(tag)).unwrap();
    (d, port)
}

fn healthz(port: u16) -> Option<(u16, Value)> {
    let (status, _, body) = http_get(port, "/healthz")?;
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn wait_healthy(port: u16) {
    poll_until("/healthz 200", Duration::from_secs(20), || {
        matches!(healthz(port), Some((200, _)))
    });
}

fn client(prefix: &str) -> PrefixClient {
    let (host, port) = shared_broker();
    PrefixClient::watching_outputs(&host, port, &unique("db-client"), prefix)
}

fn admit(c: &PrefixClient, pid: &str) {
    c.publish(
        &format!("patients/{pid}/admit"),
        json!({"id": unique("adm"), "time": ago_ms(120_000), "weight_kg": 70}).to_string(),
    );
}

fn wait_state(c: &PrefixClient, pid: &str) {
    poll_until(
        &format!("a state for {pid}"),
        Duration::from_secs(20),
        || !c.on(&format!("patients/{pid}/state")).is_empty(),
    );
}

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`cli`] for a command that may not end by itself (a daemon that
/// starts): killed after 10 s (code `None`).
fn cli_within(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Item 8: a second `dosetrack run` on the same database refuses to start,
/// quickly and clearly; the first keeps working.
#[test]
fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ward.db");
    let prefix = unique("onedb");
    let (mut first, port) = daemon(dir.path(), &db, &prefix, "first");
    first.spawn();
    wait_healthy(port);

    let (mut second, _) = daemon(dir.path(), &db, &prefix, "second");
    let started = Instant::now();
    second.spawn();
    let status = second.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    let log = second.log_text();
    assert!(!status.success(), "the second daemon ran: {log}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        log.contains("another dosetrack is running on this database"),
        "{log}"
    );
    assert!(log.contains("ward.db.lock"), "{log}");

    // The first is still working: an input gets its state.
    let c = client(&prefix);
    admit(&c, "P-1");
    wait_state(&c, "P-1");
    assert!(matches!(healthz(port), Some((200, _))));
    assert!(first.running());
    assert!(first.terminate().success());
}

/// Item 9: the database file deleted while running is a technical problem
/// (`/healthz` 503 naming `database_replaced`) and inputs are no longer
/// acknowledged.
#[test]
fn a_deleted_database_is_a_technical_problem_and_inputs_are_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ward.db");
    let prefix = unique("deldb");
    let (mut d, port) = daemon(dir.path(), &db, &prefix, "del");
    d.spawn();
    wait_healthy(port);
    let c = client(&prefix);
    admit(&c, "P-1");
    wait_state(&c, "P-1");

    std::fs::remove_file(&db).unwrap();
    poll_until(
        "/healthz 503 database_replaced",
        Duration::from_secs(15),
        || matches!(healthz(port), Some((503, ref b)) if b.to_string().contains("database_replaced")),
    );
    // A new input is not acknowledged.
    admit(&c, "P-2");
    poll_until(
        "P-2 unacknowledged",
        Duration::from_secs(10),
        || matches!(healthz(port), Some((503, ref b)) if b["unacked_inputs"].as_u64() >= Some(1)),
    );
    assert!(c.on("patients/P-2/state").is_empty());
    let log = d.log_text();
    assert!(log.contains("database_replaced"), "{log}");
    // No database was created again at the path.
    assert!(!db.exists());
    d.kill9();
}

/// Item 9: an existing 0-byte file is not a database: refused, left as it is.
#[test]
fn an_empty_database_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ward.db");
    std::fs::write(&db, b"").unwrap();
    let (mut d, _) = daemon(dir.path(), &db, &unique("emptydb"), "empty");
    d.spawn();
    let status = d.wait_exit(Duration::from_secs(10));
    let log = d.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("is empty (0 bytes)"), "{log}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}

/// Item 10: a prefix the topic grammar cannot round-trip is refused by
/// `run` and by `check-config`, with the reason.
#[test]
fn a_topic_prefix_that_cannot_round_trip_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ward.db");
    for prefix in ["site/v1", "a/v1/b"] {
        let (code, _, stderr) = cli_within(&[
            "run",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--database",
            db.to_str().unwrap(),
            "--topic-prefix",
            prefix,
        ]);
        assert_eq!(code, Some(2), "{prefix}: {stderr}");
        assert!(stderr.contains("topics.prefix"), "{stderr}");
        assert!(stderr.contains("/v1"), "{stderr}");
        assert!(!db.exists());
        let config = dir.path().join("p.toml");
        std::fs::write(&config, format!("[topics]\nprefix = \"{prefix}\"\n")).unwrap();
        let (code, _, stderr) = cli(&["check-config", config.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{prefix}: {stderr}");
        assert!(stderr.contains("topics.prefix"), "{stderr}");
    }
    // An ordinary multi-level prefix still works.
    let config = dir.path().join("ok.toml");
    std::fs::write(&config, "[topics]\nprefix = \"site/ward-3\"\n").unwrap();
    let (code, _, stderr) = cli(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Item 10: a stored input that no longer parses at start is an error and
/// a technical problem, never a warning.
#[test]
fn a_stored_input_that_no_longer_parses_is_a_technical_problem() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ward.db");
    let prefix = unique("unparsed");
    let (mut d, port) = daemon(dir.path(), &db, &prefix, "unparsed");
    d.spawn();
    wait_healthy(port);
    let c = client(&prefix);
    admit(&c, "P-1");
    wait_state(&c, "P-1");
    assert!(d.terminate().success());
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n = conn
            .execute(
                "UPDATE inputs SET topic = ?1",
                [format!("{prefix}/v1/patients/P-1/bogus")],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    d.spawn();
    poll_until(
        "/healthz 503 stored_inputs_unreadable",
        Duration::from_secs(20),
        || matches!(healthz(port), Some((503, ref b)) if b.to_string().contains("stored_inputs_unreadable")),
    );
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("no longer parse"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(d.terminate().success());
}

/// Item 15: a database directory that does not exist is named once, with a
/// hint, by `run`; `check-config` reports it.
#[test]
fn a_missing_database_directory_is_named_once_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("no-such-dir/ward.db");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nport = 1\n[database]\npath = \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = cli(&["run", "--config", config.to_str().unwrap()]);
    assert_ne!(code, Some(0), "{stderr}");
    let shown = db.display().to_string();
    assert_eq!(stderr.matches(&shown).count(), 1, "{stderr}");
    assert!(stderr.contains("--database"), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");

    let (code, stdout, stderr) = cli(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("(its directory does not exist)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("note: the database directory does not exist here"),
        "{stdout}"
    );
}

/// Item 15: printing commands end quietly when their reader goes away.
#[test]
fn printing_commands_end_quietly_into_a_closed_pipe() {
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ward-day.jsonl");
    for args in [
        vec!["simulate", "--events", events.to_str().unwrap()],
        vec!["generate", "completions", "bash"],
        vec!["model", "list"],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one byte, then close the pipe (as `| head -c 1` would).
        let mut stdout = child.stdout.take().unwrap();
        let mut one = [0u8; 1];
        let _ = stdout.read(&mut one);
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.code().is_some(), "{args:?}: killed by a signal");
    }
}

/// Item 15: `alerts report` over less than a day of observation does not
/// extrapolate "per patient-day": the raw count, and why.
#[test]
fn alerts_report_over_a_short_window_does_not_extrapolate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ward.db");
    let prefix = unique("report");
    let (mut d, port) = daemon(dir.path(), &db, &prefix, "report");
    d.spawn();
    wait_healthy(port);
    let (host, broker_port) = shared_broker();
    let c = PrefixClient {
        inner: BlockingClient::connect(
            &host,
            broker_port,
            &unique("report-client"),
            &[format!("{prefix}/v1/#")],
        ),
        prefix: prefix.clone(),
    };
    admit(&c, "P-1");
    // 100 mg IV for 70 kg: 1.4 mg/kg, over the dose limit.
    c.publish(
        "patients/P-1/doses",
        json!({"id": "bol-1", "time": ago_ms(60_000), "route": "iv_bolus", "amount_mg": 100})
            .to_string(),
    );
    poll_until("dose_limit raised", Duration::from_secs(20), || {
        c.inner
            .received()
            .iter()
            .any(|m| m.json["rule"] == "dose_limit")
    });
    assert!(d.terminate().success());
    let (code, stdout, stderr) = cli(&["alerts", "report", "--database", db.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("dose_limit"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "1", "{stdout}");
    assert_eq!(cols[2], "-", "per patient-day extrapolated: {stdout}");
    assert!(stdout.contains("not extrapolated"), "{stdout}");
    let (code, stdout, _) = cli(&[
        "alerts",
        "report",
        "--format",
        "json",
        "--database",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let rule = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "dose_limit")
        .unwrap();
    assert_eq!(rule["per_patient_day"], Value::Null, "{stdout}");
    assert!(v["per_patient_day_withheld"].is_string(), "{stdout}");
}
