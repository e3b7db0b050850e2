//! The daemon under a (simulated) systemd: the real binary with
//! `NOTIFY_SOCKET` pointing at a Unix datagram socket this test binds and a
//! 2 s `WATCHDOG_USEC`, against the Mosquitto at 127.0.0.1:1883 (a unique
//! topic prefix and client id per test), and a real SQLite file.
//!
//! Checked: `READY=1` and `STATUS=` arrive, `WATCHDOG=1` keeps coming at
//! half the interval, SIGHUP (no config file: nothing to reload) gives
//! `RELOADING=1` … `READY=1` and does not stop the daemon, SIGTERM gives
//! `STOPPING=1` and exit 0; READY also comes with the broker unreachable
//! (STATUS says so, pings go on); and the pings stop while a write cannot
//! commit (the database locked by another connection), then resume.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common;

use mqtt_common::daemon::{DaemonProcess, NotifySocket};
use mqtt_common::{free_port, unique};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::path::Path;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;
/// The watchdog interval given to the daemon.
const WATCHDOG: Duration = Duration::from_secs(2);

/// The daemon against the broker on `port`, under `notify` with a 2 s
/// watchdog.
fn start_daemon(dir: &Path, notify: &NotifySocket, port: u16, prefix: &str) -> DaemonProcess {
    let mut daemon = DaemonProcess::run(
        (BROKER, port),
        &dir.join("dosetrack.db"),
        prefix,
        &unique("sd"),
        &[],
        dir,
    )
    .env("NOTIFY_SOCKET", &notify.path)
    .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
    .env_remove("WATCHDOG_PID");
    daemon.spawn();
    daemon
}

/// Pings over `window` from now: at least `min`, none more than the
/// watchdog interval apart.
fn assert_pings(notify: &NotifySocket, daemon: &DaemonProcess, window: Duration, min: usize) {
    let since = Instant::now();
    std::thread::sleep(window);
    let pings = notify.pings_since(since);
    assert!(
        pings.len() >= min,
        "{} pings in {window:?}, expected ≥ {min}; log:\n{}",
        pings.len(),
        daemon.log_text()
    );
    for w in pings.windows(2) {
        assert!(
            w[1] - w[0] < WATCHDOG,
            "pings {:?} apart (watchdog {WATCHDOG:?})",
            w[1] - w[0]
        );
    }
}

#[test]
fn ready_status_watchdog_sighup_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let prefix = unique("sd");
    let started = Instant::now();
    let mut daemon = start_daemon(dir.path(), &notify, PORT, &prefix);

    notify.wait_for("READY=1", Duration::from_secs(30), |l| l == "READY=1");
    notify.wait_for(
        "STATUS= with the broker connected",
        Duration::from_secs(15),
        |l| l.starts_with("STATUS=broker connected;"),
    );
    eprintln!("ready and connected after {:?}", started.elapsed());
    // Half of 2 s: about 4 pings in 4.5 s.
    assert_pings(&notify, &daemon, Duration::from_millis(4500), 3);

    // SIGHUP (systemctl reload) without --config: RELOADING=1, "nothing
    // to reload", READY=1; the daemon carries on.
    daemon.signal("HUP");
    notify.wait_for("RELOADING=1", Duration::from_secs(5), |l| {
        l == "RELOADING=1"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.running(), "SIGHUP stopped the daemon");
    assert_pings(&notify, &daemon, Duration::from_millis(2500), 2);
    assert!(daemon.running());
    let texts = notify.texts();
    let reloading = texts.iter().position(|l| l == "RELOADING=1").unwrap();
    assert!(
        texts[reloading..].iter().any(|l| l == "READY=1"),
        "no READY=1 after RELOADING=1: {texts:#?}"
    );
    assert!(
        texts[reloading..]
            .iter()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{texts:#?}"
    );
    assert!(
        daemon.log_text().contains("there is nothing to reload"),
        "{}",
        daemon.log_text()
    );
    assert!(!notify.texts().iter().any(|l| l == "STOPPING=1"));

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal("TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(5), |l| l == "STOPPING=1");
    let status = daemon.wait_exit(Duration::from_secs(45));
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
    assert_eq!(
        notify.texts().iter().filter(|l| *l == "READY=1").count(),
        2,
        "READY=1 once at start, once after the reload"
    );
}

#[test]
fn ready_without_the_broker() {
    // A port nobody listens on.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let mut daemon = start_daemon(dir.path(), &notify, port, &unique("sd-nobroker"));

    notify.wait_for("READY=1", Duration::from_secs(30), |l| l == "READY=1");
    let status = notify.wait_for("STATUS=", Duration::from_secs(5), |l| {
        l.starts_with("STATUS=")
    });
    assert!(status.starts_with("STATUS=broker disconnected"), "{status}");
    // No broker is no reason for a restart: the pings go on.
    assert_pings(&notify, &daemon, Duration::from_millis(4500), 3);
    assert!(daemon.running());

    daemon.signal("TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(5), |l| l == "STOPPING=1");
    let status = daemon.wait_exit(Duration::from_secs(45));
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
}

#[test]
fn the_watchdog_stops_while_a_write_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let prefix = unique("sd-stuck");
    let mut daemon = start_daemon(dir.path(), &notify, PORT, &prefix);
    notify.wait_for("READY=1", Duration::from_secs(30), |l| l == "READY=1");
    notify.wait_for("broker connected", Duration::from_secs(15), |l| {
        l.starts_with("STATUS=broker connected;")
    });
    assert_pings(&notify, &daemon, Duration::from_millis(2500), 2);

    // Another connection holds the write lock: the daemon's next commit
    // waits for it (busy timeout), fails, is retried, and stage B waits.
    let lock = rusqlite::Connection::open(dir.path().join("dosetrack.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut opts = MqttOptions::new(unique("pub"), BROKER, PORT);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let now = chrono::Utc::now().timestamp_millis() - 60_000;
    let payload = serde_json::json!({
        "id": "adm-1",
        "time": dosetrack::vocab::format_rfc3339(now),
        "weight_kg": 72,
        "age_years": 41,
    })
    .to_string();
    rt.block_on(async {
        client
            .publish(
                format!("{prefix}/v1/patients/P-1/admit"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
        // Until the PUBACK: the input has reached the broker.
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
                eventloop.poll().await.unwrap()
            {
                break;
            }
        }
    });

    // Within a watchdog interval or two the pings stop, and the status says why.
    notify.wait_for(
        "watchdog withheld in STATUS",
        Duration::from_secs(10),
        |l| l.contains("watchdog withheld"),
    );
    let since = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        notify.pings_since(since).is_empty(),
        "pings while no write can commit; log:\n{}",
        daemon.log_text()
    );
    assert!(daemon.running());
    // The technical problem is on the status line (after the busy timeout).
    notify.wait_for(
        "PROBLEM: database_locked in STATUS",
        Duration::from_secs(15),
        |l| l.starts_with("STATUS=") && l.contains("PROBLEM: database_locked"),
    );

    // Lock released: the write commits and the pings resume.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let since = Instant::now();
    let deadline = since + Duration::from_secs(15);
    while notify.pings_since(since).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "pings did not resume; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(45));
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
    let n = dosetrack::store::Reader::open(&dir.path().join("dosetrack.db"))
        .unwrap()
        .inputs(0)
        .unwrap()
        .len();
    assert_eq!(n, 1, "the input was stored once the lock was gone");
}
