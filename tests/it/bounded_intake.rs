//! Issue #13 item 7, "bounded intake", through the real binary and a real
//! Mosquitto (the test's own, configured like `config/mosquitto/
//! dosetrack.conf`: in-flight 100, a queue that drops nothing): one client
//! floods over-size (100 KiB > 64 KiB) inputs, first at QoS 0, then at
//! QoS 1, while another patient's inputs go on. Checked:
//!
//! * the daemon's RSS stays bounded (`/proc/<pid>/status` VmRSS);
//! * the database grows by a bounded amount: per (source, code, minute) at
//!   most the samples are stored in full, the rest counted;
//! * the count is exact: every flood message the broker delivered is a
//!   stored rejection or counted (QoS 0 ones as `wrong_qos`, QoS 1 ones as
//!   `too_large`), nothing more and nothing less;
//! * the other patient's input → state latency stays under 1 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common::blocking::{output_filters, BlockingClient, PrefixClient};
use crate::mqtt_common::daemon::DaemonProcess;
use crate::mqtt_common::{poll_until, unique, OwnBroker};
use dosetrack::vocab::format_rfc3339;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flood payload: over the contract's 64 KiB.
const FLOOD_PAYLOAD_BYTES: usize = 100 * 1024;
/// Each flood phase lasts this long.
const FLOOD_FOR: Duration = Duration::from_secs(6);
/// Samples stored in full per (source, code, minute) (the daemon's
/// `REJECTION_SAMPLES_PER_MINUTE`).
const SAMPLES_PER_MINUTE: i64 = 10;

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn scalar(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
        .unwrap()
        .unwrap_or(0)
}

/// (rows stored in full, rows counted) for the flood's source and `code`.
fn flood_rejections(db: &Path, topic: &str, code: &str) -> (i64, i64) {
    let stored = scalar(
        db,
        &format!("SELECT count(*) FROM rejected WHERE topic = '{topic}' AND code = '{code}'"),
    );
    let counted = scalar(
        db,
        &format!(
            "SELECT sum(count) FROM rejection_counts WHERE last_topic = '{topic}' AND code = '{code}'"
        ),
    );
    (stored, counted)
}

/// Every file of the database (main, WAL), in bytes.
fn db_bytes(db: &Path) -> u64 {
    let mut n = 0;
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", db.display());
        n += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    }
    n
}

/// Publish 100 KiB payloads on `topic` at `qos` as fast as the broker takes
/// them, for `for_`, then DISCONNECT cleanly; returns how many PUBLISH
/// packets were written before the DISCONNECT (all of them reach the
/// broker: TCP keeps the order, and the DISCONNECT comes last).
fn flood(port: u16, topic: String, qos: QoS, for_: Duration) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut o = MqttOptions::new(unique("flooder"), "127.0.0.1", port);
        o.set_max_packet_size(2 * FLOOD_PAYLOAD_BYTES, 2 * FLOOD_PAYLOAD_BYTES)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let done = Arc::new(AtomicBool::new(false));
        let publisher = tokio::spawn({
            let done = Arc::clone(&done);
            let client = client.clone();
            async move {
                let payload = vec![b'x'; FLOOD_PAYLOAD_BYTES];
                let end = Instant::now() + for_;
                while Instant::now() < end {
                    if client
                        .publish(topic.clone(), qos, false, payload.clone())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                done.store(true, Ordering::SeqCst);
            }
        });
        let (mut written, mut acked) = (0u64, 0u64);
        let mut disconnecting = false;
        loop {
            match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
                Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => written += 1,
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(_)) if disconnecting => break,
                Ok(Err(e)) => panic!("flooder connection failed: {e}"),
                Err(_) => {}
            }
            let settled = qos == QoS::AtMostOnce || acked == written;
            if !disconnecting && done.load(Ordering::SeqCst) && publisher.is_finished() && settled {
                disconnecting = true;
                // Queued after every publish: written after them.
                let _ = client.try_disconnect();
            }
        }
        written
    })
}

/// What one flood phase measured.
#[derive(Debug)]
struct Phase {
    sent: u64,
    max_rss_mib: u64,
    max_latency: Duration,
    latencies: usize,
}

/// Run `flood` in a thread; meanwhile publish a dose for `P-V` every
/// 300 ms and time it to P-V's next state, and sample the daemon's RSS.
fn flood_phase(
    broker: &OwnBroker,
    victim: &PrefixClient,
    pid: u32,
    flood_topic: String,
    qos: QoS,
    label: &str,
) -> Phase {
    let port = broker.port;
    let flooder = std::thread::spawn(move || flood(port, flood_topic, qos, FLOOD_FOR));
    let started = Instant::now();
    let mut max_rss = 0;
    let mut latencies = Vec::new();
    let mut n = 0;
    while !flooder.is_finished() || started.elapsed() < FLOOD_FOR {
        n += 1;
        let states_before = victim.on("patients/P-V/state").len();
        let now = chrono::Utc::now().timestamp_millis();
        victim.publish(
            "patients/P-V/doses",
            json!({"id": format!("{label}-{n}"), "time": format_rfc3339(now - 1_000),
                   "route": "oral", "amount_mg": 1})
            .to_string(),
        );
        let published = Instant::now();
        let mut seen = None;
        while published.elapsed() < Duration::from_secs(15) {
            max_rss = max_rss.max(vm_rss_kib(pid));
            if victim.on("patients/P-V/state").len() > states_before {
                seen = Some(published.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies.push(seen.unwrap_or(Duration::from_secs(15)));
        std::thread::sleep(Duration::from_millis(300));
        max_rss = max_rss.max(vm_rss_kib(pid));
    }
    let sent = flooder.join().unwrap();
    Phase {
        sent,
        max_rss_mib: max_rss / 1024,
        max_latency: latencies.iter().copied().max().unwrap_or_default(),
        latencies: latencies.len(),
    }
}

#[test]
fn a_flood_from_one_publisher_is_bounded_counted_exactly_and_does_not_delay_others() {
    // The broker as config/mosquitto/dosetrack.conf recommends: a larger
    // in-flight window, a queue that drops nothing (so that every flood
    // message reaches the daemon and the count can be checked exactly).
    let broker = OwnBroker::start_with(
        "persistence false\nmax_inflight_messages 100\nmax_queued_messages 0\n\
         max_queued_bytes 0\nmax_packet_size 1048576\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("flood");
    let db = dir.path().join("dosetrack.db");
    let config = dir.path().join("dosetrack.toml");
    std::fs::write(&config, "[state]\ninterval_s = 3600\n").unwrap();
    let mut filters = output_filters(&prefix);
    filters.push(format!("{prefix}/v1/patients/+/alerts"));
    let victim = PrefixClient {
        inner: BlockingClient::connect("127.0.0.1", broker.port, &unique("victim"), &filters),
        prefix: prefix.clone(),
    };
    let mut daemon = DaemonProcess::run(
        ("127.0.0.1", broker.port),
        &db,
        &prefix,
        &unique("floodd"),
        &["--config", config.to_str().unwrap()],
        dir.path(),
    );
    daemon.spawn();
    let pid = daemon.pid();
    poll_until("status online", Duration::from_secs(20), || {
        victim.on("status").iter().any(|v| v["state"] == "online")
    });
    victim.publish(
        "patients/P-V/admit",
        json!({"id": "adm-v", "time": format_rfc3339(chrono::Utc::now().timestamp_millis() - 60_000),
               "weight_kg": 70})
        .to_string(),
    );
    poll_until("P-V's first state", Duration::from_secs(20), || {
        !victim.on("patients/P-V/state").is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let rss_before_mib = vm_rss_kib(pid) / 1024;
    let db_before = db_bytes(&db);

    let flood_topic = victim.topic("devices/flood-1/events");
    let qos0 = flood_phase(
        &broker,
        &victim,
        pid,
        flood_topic.clone(),
        QoS::AtMostOnce,
        "q0",
    );
    let qos1 = flood_phase(
        &broker,
        &victim,
        pid,
        flood_topic.clone(),
        QoS::AtLeastOnce,
        "q1",
    );

    // Every flood message the broker took is accounted for, exactly.
    let settle = Instant::now();
    let (mut q0, mut q1);
    loop {
        q0 = flood_rejections(&db, &flood_topic, "wrong_qos");
        q1 = flood_rejections(&db, &flood_topic, "too_large");
        let done = (q0.0 + q0.1) as u64 >= qos0.sent && (q1.0 + q1.1) as u64 >= qos1.sent;
        if done || settle.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_after_mib = vm_rss_kib(pid) / 1024;
    let db_after = db_bytes(&db);
    let report = format!(
        "RSS before {rss_before_mib} MiB, max during QoS 0 flood {} MiB, max during QoS 1 flood {} MiB, \
         after {rss_after_mib} MiB; database {} -> {} KiB; QoS 0: {} sent, {} stored + {} counted, \
         victim max latency {:?} over {} inputs; QoS 1: {} sent, {} stored + {} counted, victim max \
         latency {:?} over {} inputs",
        qos0.max_rss_mib,
        qos1.max_rss_mib,
        db_before / 1024,
        db_after / 1024,
        qos0.sent,
        q0.0,
        q0.1,
        qos0.max_latency,
        qos0.latencies,
        qos1.sent,
        q1.0,
        q1.1,
        qos1.max_latency,
        qos1.latencies,
    );
    eprintln!("bounded intake: {report}");
    assert!(
        qos0.sent >= 500 && qos1.sent >= 500,
        "not a flood: {report}"
    );
    assert_eq!((q0.0 + q0.1) as u64, qos0.sent, "QoS 0 count: {report}");
    assert_eq!((q1.0 + q1.1) as u64, qos1.sent, "QoS 1 count: {report}");
    // The database: the samples in full (per minute the flood spanned), the
    // rest as a handful of count rows.
    let minutes = 1 + (2 * FLOOD_FOR.as_secs() as i64 + 30) / 60 + 1;
    assert!(
        q0.0 <= SAMPLES_PER_MINUTE * minutes && q1.0 <= SAMPLES_PER_MINUTE * minutes,
        "too many stored in full: {report}"
    );
    assert!(
        db_after.saturating_sub(db_before) < 16 * 1024 * 1024,
        "database growth: {report}"
    );
    // Memory: bounded by the 16 MiB budget (and its copies), not by the
    // flood.
    assert!(
        qos0.max_rss_mib < rss_before_mib + 150 && qos1.max_rss_mib < rss_before_mib + 150,
        "RSS: {report}"
    );
    // The other patient.
    assert!(
        qos0.max_latency < Duration::from_secs(1) && qos1.max_latency < Duration::from_secs(1),
        "latency: {report}"
    );
    // Rejections published on `rejected`: the samples only.
    let notices = victim.on("rejected").len() as i64;
    assert!(notices <= q0.0 + q1.0, "{notices} notices: {report}");
    assert!(daemon.running());
}
