//! `dosetrack demo` end to end: the real binary with stdout redirected to a
//! file (not a terminal, so it appends plain blocks).
//!
//! The live demo (feature `embedded-broker`, the default) runs its own
//! broker on a free loopback port — never the Mosquitto at 1883 — and must
//! show the notice, every patient with numeric Cp and Ce, some drug on
//! board, and a final summary with the inputs stored; a kept database must
//! be readable by `dosetrack patients`. Bad options are refused (exit 2)
//! before anything starts. `demo --offline` still writes its chart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dosetrack");
const NOTICE: &str = "not a certified medical device";

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Run `dosetrack` with `args`, stdout and stderr to files in `dir`; kill
/// it and fail after `limit`.
fn run(dir: &Path, args: &[&str], limit: Duration) -> Run {
    let out_path = dir.join("stdout.txt");
    let err_path = dir.join("stderr.txt");
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("the dosetrack binary runs");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dosetrack {args:?} still running after {limit:?}; stdout so far:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
        took: started.elapsed(),
    }
}

/// The live demo needs the embedded broker (the default feature).
#[cfg(feature = "embedded-broker")]
mod live {
    use super::*;
    use std::collections::BTreeSet;

    /// Table rows `P-… Cp Ce …` with numeric Cp and Ce: (id, cp, ce).
    fn rows(stdout: &str) -> Vec<(String, f64, f64)> {
        stdout
            .lines()
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                let id = cols.next()?;
                if !id.starts_with("P-") {
                    return None;
                }
                let cp: f64 = cols.next()?.parse().ok()?;
                let ce: f64 = cols.next()?.parse().ok()?;
                Some((id.to_owned(), cp, ce))
            })
            .collect()
    }

    /// The number after `label` on the summary line.
    fn summary_number(stdout: &str, label: &str) -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("summary:"))
            .unwrap_or_else(|| panic!("a summary line: {stdout}"));
        let rest = line
            .split(label)
            .nth(1)
            .unwrap_or_else(|| panic!("{label:?} in {line:?}"));
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a number after {label:?} in {line:?}"))
    }

    #[test]
    fn live_demo_shows_the_ward_through_the_embedded_broker() {
        let dir = tempfile::tempdir().unwrap();
        let r = run(
            dir.path(),
            &[
                "demo",
                "--duration",
                "20s",
                "--patients",
                "3",
                "--speedup",
                "120",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(r.code, Some(0), "{r:#?}");
        assert!(!r.stderr.contains("panicked"), "{r:#?}");
        assert!(r.took < Duration::from_secs(60), "{r:#?}");
        assert!(r.stdout.contains(NOTICE), "{}", r.stdout);
        // Not a terminal: plain blocks, no escape sequences.
        assert!(!r.stdout.contains('\x1b'), "{}", r.stdout);
        // Its own broker, not the Mosquitto at 1883.
        let broker = r
            .stdout
            .lines()
            .find_map(|l| l.split("embedded broker 127.0.0.1:").nth(1))
            .unwrap_or_else(|| panic!("the embedded broker's address: {}", r.stdout));
        let port: u16 = broker
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(port, 1883);

        let rows = rows(&r.stdout);
        let ids: BTreeSet<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
        assert!(ids.len() >= 3, "three patients with Cp/Ce: {}", r.stdout);
        assert!(
            rows.iter()
                .all(|(_, cp, ce)| cp.is_finite() && ce.is_finite() && *cp >= 0.0 && *ce >= 0.0),
            "{}",
            r.stdout
        );
        assert!(
            rows.iter().any(|(_, _, ce)| *ce > 0.0),
            "some ketamine on board: {}",
            r.stdout
        );
        let stored = summary_number(&r.stdout, "inputs stored");
        assert!(stored > 0, "{}", r.stdout);
        assert_eq!(
            summary_number(&r.stdout, "patients tracked"),
            3,
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains("temporary database was removed"),
            "{}",
            r.stdout
        );
    }

    #[test]
    fn live_demo_keeps_the_database_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kept.db");
        let db_arg = db.to_str().unwrap();
        let r = run(
            dir.path(),
            &[
                "demo",
                "--duration",
                "5s",
                "--patients",
                "2",
                "--database",
                db_arg,
            ],
            Duration::from_secs(45),
        );
        assert_eq!(r.code, Some(0), "{r:#?}");
        assert!(r.stdout.contains("database kept at"), "{}", r.stdout);
        assert!(db.exists());
        assert!(
            summary_number(&r.stdout, "inputs stored") >= 2,
            "{}",
            r.stdout
        );
        // The ordinary commands read it.
        let out = Command::new(BIN)
            .args(["patients", "--database", db_arg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("P-0001") && text.contains("P-0002"), "{text}");
        // A second run refuses to write into it.
        let again = run(
            dir.path(),
            &["demo", "--duration", "5s", "--database", db_arg],
            Duration::from_secs(20),
        );
        assert_eq!(again.code, Some(2), "{again:#?}");
        assert!(again.stderr.contains("exists"), "{again:#?}");
    }
}

/// Without the embedded broker, the live demo asks for one.
#[cfg(not(feature = "embedded-broker"))]
#[test]
fn live_demo_without_the_embedded_broker_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        dir.path(),
        &["demo", "--duration", "5s"],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("--broker"), "{r:#?}");
}

/// With `--broker` (here the Mosquitto at 127.0.0.1:1883 that the daemon's
/// tests use) no broker is embedded, and the demo leaves nothing retained
/// under its own prefix.
#[test]
fn live_demo_on_an_external_broker_tidies_up() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        dir.path(),
        &[
            "demo",
            "--duration",
            "5s",
            "--patients",
            "2",
            "--broker",
            "mqtt://127.0.0.1:1883",
        ],
        Duration::from_secs(45),
    );
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(r.stdout.contains("broker 127.0.0.1:1883"), "{}", r.stdout);
    assert!(!r.stdout.contains("embedded broker"), "{}", r.stdout);
    let prefix = r
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("dosetrack-demo-"))
        .and_then(|w| w.split('/').next())
        .unwrap_or_else(|| panic!("the demo's prefix: {}", r.stdout))
        .to_owned();
    // Nothing retained is left under the prefix.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let retained = runtime.block_on(async move {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut o = MqttOptions::new(format!("{prefix}-check"), "127.0.0.1", 1883);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(o, 10);
        client
            .subscribe(format!("{prefix}/#"), QoS::AtMostOnce)
            .await
            .unwrap();
        let mut topics = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(ev) = tokio::time::timeout_at(until, eventloop.poll()).await {
            if let Event::Incoming(Packet::Publish(p)) = ev.unwrap() {
                topics.push(p.topic);
            }
        }
        topics
    });
    assert!(retained.is_empty(), "left retained: {retained:?}");
}

#[test]
fn bad_demo_options_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (&["demo", "--plot", "x.svg"][..], "--offline"),
        (&["demo", "--offline", "--patients", "3"][..], "--patients"),
        (&["demo", "--speedup", "0.5"][..], "--speedup"),
        (&["demo", "--patients", "0"][..], "--patients"),
        (&["demo", "--duration", "10"][..], "needs a unit"),
        (&["demo", "--broker", "http://x"][..], "mqtt"),
    ] {
        let r = run(dir.path(), args, Duration::from_secs(20));
        assert_eq!(r.code, Some(2), "dosetrack {args:?}: {r:#?}");
        assert!(r.stderr.contains(needle), "dosetrack {args:?}: {r:#?}");
        assert!(!r.stderr.contains("panicked"), "{r:#?}");
        assert!(
            r.took < Duration::from_secs(5),
            "{args:?} refused at once: {r:#?}"
        );
    }
}

#[test]
fn offline_demo_still_writes_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("offline.svg");
    let r = run(
        dir.path(),
        &["demo", "--offline", "--plot", svg.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(r.stdout.contains(NOTICE), "{}", r.stdout);
    assert!(r.stdout.contains("chart written"), "{}", r.stdout);
    let text = std::fs::read_to_string(&svg).expect("the chart exists");
    assert!(text.contains("<svg"));
}
