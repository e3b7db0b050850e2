//! Issue #13's operator-facing items through the real binary: a message on
//! an unknown leaf of the input space is rejected `unknown_topic` (stored,
//! published, acknowledged) while the daemon's own outputs are ignored; the
//! HTTP listener survives a flood of half-sent requests; the log has no
//! colour codes when it is not a terminal, logs rejections at warn, and
//! `dosetrack rejected` lists them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

use dosetrack::store::Reader;
use dosetrack::vocab::format_rfc3339;
use mqtt_common::blocking::PrefixClient;
use mqtt_common::daemon::DaemonProcess;
use mqtt_common::{poll_until, unique};
use serde_json::json;
use std::time::Duration;

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;

fn minutes_ago(m: i64) -> String {
    format_rfc3339(chrono::Utc::now().timestamp_millis() - m * 60_000)
}

fn online(client: &PrefixClient) -> bool {
    client.on("status").iter().any(|v| v["state"] == "online")
}

/// Item 11: `patients/P-1/dose`, `devices/D1/event`, `alerts/a-1/ack`
/// reach the daemon and are rejected `unknown_topic`; the daemon's own
/// state and alert topics (which its wider filters also match) are not.
/// Acknowledged: a restart on the same session brings none of them back.
#[test]
fn unknown_leaves_are_rejected_unknown_topic_and_own_outputs_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("unk");
    let db = dir.path().join("dosetrack.db");
    let client = PrefixClient::watching_outputs(BROKER, PORT, &unique("unkc"), &prefix);
    let mut daemon = DaemonProcess::run(
        (BROKER, PORT),
        &db,
        &prefix,
        &unique("unkd"),
        &[],
        dir.path(),
    );
    daemon.spawn();
    poll_until("status online", Duration::from_secs(20), || online(&client));

    // A valid admission: its retained state comes back on the daemon's own
    // subscription and must be ignored.
    client.publish(
        "patients/P-1/admit",
        json!({"id": "adm-1", "time": minutes_ago(5), "weight_kg": 72, "age_years": 41})
            .to_string(),
    );
    poll_until("a state for P-1", Duration::from_secs(20), || {
        !client.on("patients/P-1/state").is_empty()
    });
    let dose = json!({"id": "mar-1", "time": minutes_ago(4), "route": "iv_bolus", "amount_mg": 5});
    let unknown = [
        ("patients/P-1/dose", dose.to_string()),
        (
            "devices/D1/event",
            json!({"id": "e-1", "time": minutes_ago(3), "kind": "heartbeat"}).to_string(),
        ),
        ("alerts/a-1/ack", json!({"id": "c-1"}).to_string()),
    ];
    for (suffix, payload) in &unknown {
        client.publish(suffix, payload.clone());
    }
    poll_until(
        "three rejections published",
        Duration::from_secs(20),
        || client.on("rejected").len() >= 3,
    );
    let published = client.on("rejected");
    for (suffix, _) in &unknown {
        let topic = client.topic(suffix);
        let n = published
            .iter()
            .filter(|v| v["topic"] == topic.as_str() && v["error"]["code"] == "unknown_topic")
            .count();
        assert_eq!(n, 1, "{topic}: {published:#?}");
    }
    let stored = Reader::open(&db).unwrap().rejected(100).unwrap();
    assert_eq!(stored.len(), 3, "only the unknown leaves: {stored:#?}");
    assert!(
        stored.iter().all(|r| r.code == "unknown_topic"),
        "{stored:#?}"
    );

    // Acknowledged (nothing redelivered) and own outputs still ignored
    // after a restart (the retained state is delivered again at SUBSCRIBE).
    daemon.terminate_within(Duration::from_secs(30));
    daemon.spawn();
    daemon.wait_log("subscribed to the input topics", Duration::from_secs(20));
    client.publish(
        "patients/P-1/doses",
        json!({"id": "mar-2", "time": minutes_ago(2), "route": "iv_bolus", "amount_mg": 5})
            .to_string(),
    );
    let reader = Reader::open(&db).unwrap();
    poll_until(
        "the dose after the restart",
        Duration::from_secs(20),
        || reader.counts().unwrap().inputs >= 2,
    );
    let stored = reader.rejected(100).unwrap();
    assert_eq!(stored.len(), 3, "after the restart: {stored:#?}");
}

/// Whether the server has closed `s` (EOF or reset); false while it is
/// still open with nothing to read.
fn closed_by_server(mut s: &std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Item 12: 1,100 half-sent requests against a daemon limited to 1,024
/// descriptors (systemd's default soft limit): `/healthz` still answers
/// within 1 s, and every half-sent connection is closed once the
/// header-read timeout (5 s) has passed; so is an idle keep-alive one.
#[test]
fn half_sent_requests_cannot_starve_the_http_listener() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("http");
    let db = dir.path().join("dosetrack.db");
    let config = dir.path().join("dosetrack.toml");
    let http = mqtt_common::daemon::write_http_config(&config);
    let mut daemon = DaemonProcess::run(
        (BROKER, PORT),
        &db,
        &prefix,
        &unique("httpd"),
        &["--config", config.to_str().unwrap()],
        dir.path(),
    );
    daemon.spawn();
    let limited = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", daemon.pid()))
        .arg("--nofile=1024:1024")
        .status()
        .unwrap();
    assert!(limited.success());
    poll_until("/healthz answers", Duration::from_secs(20), || {
        mqtt_common::http_get(http, "/healthz").is_some()
    });

    // An idle keep-alive connection after one complete request.
    let mut keep_alive = TcpStream::connect(("127.0.0.1", http)).unwrap();
    write!(keep_alive, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    keep_alive
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut first = [0u8; 12];
    keep_alive.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1"), "{first:?}");

    let flood_started = Instant::now();
    let mut half_sent = Vec::new();
    for _ in 0..1100 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", http)) else {
            continue;
        };
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        half_sent.push(s);
    }
    assert!(half_sent.len() >= 1000, "{} connected", half_sent.len());
    let flooded_in = flood_started.elapsed();
    let flood_ended = Instant::now();

    // /healthz answers within 1 s, with the flood still open.
    for _ in 0..3 {
        let asked = Instant::now();
        let answer = std::thread::scope(|s| {
            s.spawn(|| mqtt_common::http_get(http, "/healthz"))
                .join()
                .unwrap()
        });
        let took = asked.elapsed();
        assert!(
            answer.is_some() && took < Duration::from_secs(1),
            "/healthz during the flood: {answer:?} after {took:?} (flood opened in {flooded_in:?})"
        );
    }

    // Every half-sent connection (and the idle keep-alive one) is closed
    // once the header-read timeout (5 s) has passed for the last of them.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(flood_ended.elapsed()));
    let deadline = flood_ended + Duration::from_secs(9);
    loop {
        let open = half_sent.iter().filter(|s| !closed_by_server(s)).count();
        let keep_alive_open = !closed_by_server(&keep_alive);
        if open == 0 && !keep_alive_open {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of {} half-sent connections still open {:?} after the flood \
             (keep-alive open: {keep_alive_open})",
            half_sent.len(),
            flood_ended.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(mqtt_common::http_get(http, "/healthz").is_some());
    assert!(daemon.running());
}

/// Item 14: the daemon's stderr (a file here, not a terminal) has no ANSI
/// escape codes and no `Some("…")` field; a rejection is logged at warn
/// with its source and code, at most 10 lines per source per minute; and
/// `dosetrack rejected` lists the stored rejection.
#[test]
fn operators_can_read_the_log_and_list_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("log");
    let db = dir.path().join("dosetrack.db");
    let config = dir.path().join("dosetrack.toml");
    let http = mqtt_common::daemon::write_http_config(&config);
    // Every rejection stored (not sampled, item 7): this test is about the
    // log's rate limit and the listing, so all 16 must be rows.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[limits]\nrejection_samples_per_minute = 100000\n");
    std::fs::write(&config, text).unwrap();
    let client = PrefixClient::watching_outputs(BROKER, PORT, &unique("logc"), &prefix);
    let mut daemon = DaemonProcess::run(
        (BROKER, PORT),
        &db,
        &prefix,
        &unique("logd"),
        &["--config", config.to_str().unwrap()],
        dir.path(),
    );
    daemon.spawn();
    poll_until("status online", Duration::from_secs(20), || online(&client));
    assert!(mqtt_common::http_get(http, "/healthz").is_some());

    // 15 rejections from one source, one from another.
    for i in 0..15 {
        client.publish("patients/P-7/doses", format!("not json {i}"));
    }
    client.publish(
        "devices/pump-3/events",
        json!({"id": "e-1", "time": minutes_ago(1), "kind": "teleport"}).to_string(),
    );
    let reader = Reader::open(&db).unwrap();
    poll_until("16 rejections stored", Duration::from_secs(20), || {
        reader.counts().unwrap().rejected >= 16
    });
    let log = daemon.log_text();
    let escapes = log.matches('\u{1b}').count();
    assert_eq!(escapes, 0, "ANSI escape codes in the log:\n{log}");
    assert!(
        !log.contains("Some("),
        "an Option logged with Debug:\n{log}"
    );
    daemon.wait_log("source=devices/pump-3", Duration::from_secs(10));
    let log = daemon.log_text();
    let lines_for = |source: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("input rejected"))
            .filter(|l| l.contains(&format!("source={source}")))
            .collect::<Vec<_>>()
    };
    let p7 = lines_for("patients/P-7");
    assert_eq!(p7.len(), 10, "rate limit per source:\n{log}");
    assert!(
        p7.iter().all(|l| l.contains("code=invalid_json")),
        "{p7:#?}"
    );
    assert!(p7[9].contains("counted, not logged"), "{}", p7[9]);
    let pump = lines_for("devices/pump-3");
    assert_eq!(pump.len(), 1, "{log}");
    assert!(
        pump[0].contains("code=unknown_kind") && pump[0].contains("field=kind"),
        "{}",
        pump[0]
    );

    // `dosetrack rejected` lists them, oldest first; --limit and --since.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dosetrack"))
            .arg("rejected")
            .arg("--database")
            .arg(&db)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let all = run(&[]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines[0], "received_at,source,topic,code,field,message");
    assert_eq!(lines.len(), 17, "{all}");
    assert!(
        lines[1].contains(&format!(
            ",patients/P-7,{prefix}/v1/patients/P-7/doses,invalid_json,"
        )),
        "{all}"
    );
    assert!(
        lines[16].contains(&format!(
            ",devices/pump-3,{prefix}/v1/devices/pump-3/events,unknown_kind,kind,"
        )),
        "{all}"
    );
    let last = run(&["--limit", "1", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(last.trim()).unwrap();
    assert_eq!(v["source"], "devices/pump-3");
    assert_eq!(v["code"], "unknown_kind");
    assert_eq!(v["field"], "kind");
    let future = format_rfc3339(chrono::Utc::now().timestamp_millis() + 3_600_000);
    assert_eq!(run(&["--since", &future]).lines().count(), 1);
}
