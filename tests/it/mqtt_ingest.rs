//! The ingest connection against a real Mosquitto: delivery, acks in arrival
//! order, redelivery of what was not acknowledged, persistent sessions,
//! over-size payloads, outages and broker restarts.

use crate::mqtt_common;

use mqtt_common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn payloads(inputs: &[(String, Vec<u8>)]) -> Vec<String> {
    inputs
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_500_inputs_in_order_per_topic_then_nothing_more() {
    init_tracing();
    let (host, port) = shared_broker();
    let prefix = unique("dt-rt");
    let id = unique("ingest-rt");
    let mut ingest = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    ingest.wait_subscribed(1).await;

    let sent = input_messages(&prefix, 500);
    let publisher = TestClient::connect(&host, port, &unique("pub-rt")).await;
    let started = Instant::now();
    let (_, got) = tokio::join!(publisher.publish_all(&sent), async {
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let m = ingest.recv_n(1, SECS(20)).await.remove(0);
            got.push((m.topic.clone(), m.payload.to_vec()));
            ingest.handle.ack(m.ack).await.unwrap();
        }
        got
    });
    let elapsed = started.elapsed();
    eprintln!(
        "round trip: {} inputs in {:?} = {:.0} inputs/s (publish QoS 1 -> deliver -> ack)",
        got.len(),
        elapsed,
        got.len() as f64 / elapsed.as_secs_f64()
    );

    // Every input, in publish order within each topic.
    let by_topic = |v: &[(String, Vec<u8>)]| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, p) in v {
            m.entry(t.clone())
                .or_default()
                .push(String::from_utf8_lossy(p).into_owned());
        }
        m
    };
    assert_eq!(by_topic(&got), by_topic(&sent));
    assert_eq!(
        by_topic(&got).len(),
        10,
        "two topics of each of the five kinds"
    );
    let s = ingest.handle.stats();
    assert_eq!((s.connect_attempts, s.connections), (1, 1), "{s:?}");
    ingest.stop().await.unwrap();

    // Same client id again: every input was acknowledged, nothing comes back.
    let mut again = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    again.wait_subscribed(1).await;
    again.expect_nothing(Duration::from_millis(700)).await;
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_inputs_are_redelivered_acknowledged_ones_are_not() {
    init_tracing();
    let (host, port) = shared_broker();
    let prefix = unique("dt-redeliver");
    let id = unique("ingest-redeliver");
    let mut ingest = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    ingest.wait_subscribed(1).await;

    let topic = format!("{prefix}/v1/patients/P-1/doses");
    let sent: Vec<_> = (0..30)
        .map(|i| (topic.clone(), format!("m-{i}").into_bytes()))
        .collect();
    let publisher = TestClient::connect(&host, port, &unique("pub-redeliver")).await;
    publisher.publish_all(&sent).await;

    // Mosquitto's window is 20 unacknowledged messages: 20 come, and 10 more
    // only once the first 10 are acked.
    let mut first = ingest.recv_n(20, SECS(10)).await;
    ingest.expect_nothing(Duration::from_millis(300)).await;
    let rest_of_window = first.split_off(10);
    let acked = ingest.ack_all(first).await;
    let more = ingest.recv_n(10, SECS(10)).await;
    assert_eq!(payloads(&acked), payloads(&sent[..10]));
    let unacked: Vec<_> = rest_of_window
        .iter()
        .chain(&more)
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(unacked, payloads(&sent[10..]));
    // Shut down without acking those 20 (the drain waits 500 ms for them).
    ingest.stop().await.unwrap();
    drop((rest_of_window, more));

    // Same client id: exactly the 20 unacknowledged inputs, in order.
    let mut again = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    let redelivered = again.recv_n(20, SECS(10)).await;
    again.expect_nothing(Duration::from_millis(500)).await;
    let redelivered = again.ack_all(redelivered).await;
    assert_eq!(payloads(&redelivered), payloads(&sent[10..]));
    again.stop().await.unwrap();

    let mut third = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    third.wait_connections(1, SECS(5)).await;
    third.expect_nothing(Duration::from_millis(500)).await;
    third.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_redelivers_what_was_not_acknowledged() {
    init_tracing();
    let (host, port) = shared_broker();
    let prefix = unique("dt-crash");
    let id = unique("ingest-crash");
    let mut ingest = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    ingest.wait_subscribed(1).await;
    let topic = format!("{prefix}/v1/devices/pump-1/events");
    let sent: Vec<_> = (0..8)
        .map(|i| (topic.clone(), format!("e-{i}").into_bytes()))
        .collect();
    let publisher = TestClient::connect(&host, port, &unique("pub-crash")).await;
    publisher.publish_all(&sent).await;
    let mut got = ingest.recv_n(8, SECS(10)).await;
    let unacked = got.split_off(3);
    ingest.ack_all(got).await;
    // Let the three PUBACKs go out, then crash: no DISCONNECT, no drain.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ingest.task.abort();
    drop(unacked);

    let mut again = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    let redelivered = again.recv_n(5, SECS(10)).await;
    again.expect_nothing(Duration::from_millis(500)).await;
    let redelivered = again.ack_all(redelivered).await;
    assert_eq!(payloads(&redelivered), payloads(&sent[3..]));
    again.stop().await.unwrap();
}

/// `Sending PUBLISH to <id> (d0, q1, r0, m<N>, ...` and
/// `Received PUBACK from <id> (Mid: <N>, ...` in mosquitto's log.
#[allow(clippy::expect_used)] // a test helper: a panic is a failure
fn mids(log: &str, id: &str) -> (Vec<u16>, Vec<u16>) {
    let mut published = Vec::new();
    let mut acked = Vec::new();
    let send = format!("Sending PUBLISH to {id} (");
    let ack = format!("Received PUBACK from {id} (Mid: ");
    for line in log.lines() {
        if let Some(rest) = line.split_once(&send).map(|(_, r)| r) {
            let mid = rest.split(", ").find_map(|f| f.strip_prefix('m'));
            published.push(mid.and_then(|m| m.parse().ok()).expect(line));
        } else if let Some(rest) = line.split_once(&ack).map(|(_, r)| r) {
            let mid = rest.split(|c: char| !c.is_ascii_digit()).next();
            acked.push(mid.and_then(|m| m.parse().ok()).expect(line));
        }
    }
    (published, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_given_back_in_reverse_go_out_in_arrival_order() {
    init_tracing();
    // A broker of our own, for its log of PUBLISH and PUBACK packet ids.
    let broker = OwnBroker::start(false);
    let host = "127.0.0.1";
    let prefix = unique("dt-reverse");
    let id = unique("ingest-reverse");
    let mut ingest = RunningIngest::start(config(host, broker.port, &id), &prefix, 64);
    ingest.wait_subscribed(1).await;
    let topic = format!("{prefix}/v1/patients/P-9/admit");
    let sent: Vec<_> = (0..20)
        .map(|i| (topic.clone(), format!("r-{i}").into_bytes()))
        .collect();
    let publisher = TestClient::connect(host, broker.port, &unique("pub-reverse")).await;
    publisher.publish_all(&sent).await;

    let mut got = ingest.recv_n(20, SECS(10)).await;
    got.reverse();
    let acked = ingest.ack_all(got).await;
    assert_eq!(payloads(&acked).last().unwrap(), "r-0");

    // The window is free again: 20 more come without any further ack.
    let next: Vec<_> = (20..40)
        .map(|i| (topic.clone(), format!("r-{i}").into_bytes()))
        .collect();
    publisher.publish_all(&next).await;
    let got = ingest.recv_n(20, SECS(10)).await;
    assert_eq!(payloads(&ingest.ack_all(got).await), payloads(&next));
    ingest.stop().await.unwrap();

    let mut again = RunningIngest::start(config(host, broker.port, &id), &prefix, 64);
    again.wait_subscribed(1).await;
    again.expect_nothing(Duration::from_millis(500)).await;
    again.stop().await.unwrap();

    // On the wire: one PUBACK per PUBLISH, in the order the PUBLISHes came.
    // (Mosquitto buffers its log file: read it once the broker has exited.)
    let mut broker = broker;
    broker.stop();
    let (published, acked) = mids(&broker.log(), &id);
    assert_eq!(published.len(), 40, "{published:?}");
    assert_eq!(acked, published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_outstanding_acks_and_sends_them() {
    init_tracing();
    let (host, port) = shared_broker();
    let prefix = unique("dt-drain");
    let id = unique("ingest-drain");
    let mut cfg = config(&host, port, &id);
    cfg.drain_timeout = SECS(5);
    let mut ingest = RunningIngest::start(cfg.clone(), &prefix, 64);
    ingest.wait_subscribed(1).await;
    let topic = format!("{prefix}/v1/patients/P-2/discharge");
    let sent: Vec<_> = (0..5)
        .map(|i| (topic.clone(), format!("d-{i}").into_bytes()))
        .collect();
    let publisher = TestClient::connect(&host, port, &unique("pub-drain")).await;
    publisher.publish_all(&sent).await;
    let got = ingest.recv_n(5, SECS(10)).await;

    // Shutdown starts while all five are still being stored.
    ingest.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ingest.task.is_finished(), "waits for the outstanding acks");
    let started = Instant::now();
    ingest.ack_all(got).await;
    ingest.stop().await.unwrap();
    assert!(started.elapsed() < SECS(2), "ends once the acks are sent");

    let mut again = RunningIngest::start(cfg, &prefix, 64);
    again.wait_subscribed(1).await;
    again.expect_nothing(Duration::from_millis(500)).await;
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_published_while_down_arrive_when_it_comes_back() {
    init_tracing();
    let (host, port) = shared_broker();
    let prefix = unique("dt-session");
    let id = unique("ingest-session");
    let ingest = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    ingest.wait_subscribed(1).await;
    ingest.stop().await.unwrap();

    let sent = input_messages(&prefix, 15);
    let publisher = TestClient::connect(&host, port, &unique("pub-session")).await;
    publisher.publish_all(&sent).await;

    let mut again = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    let got = again.recv_n(15, SECS(10)).await;
    let got = again.ack_all(got).await;
    assert_eq!(got, sent);
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_size_payloads_are_delivered_once_without_reconnecting() {
    init_tracing();
    let (host, port) = shared_broker();
    let prefix = unique("dt-big");
    let id = unique("ingest-big");
    let mut ingest = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    ingest.wait_subscribed(1).await;

    let topic = format!("{prefix}/v1/patients/P-3/doses");
    let sent = vec![
        (topic.clone(), vec![b'x'; 70 * 1024]),
        (topic.clone(), vec![b'y'; 900 * 1024]),
        (topic.clone(), b"{\"id\":\"small\"}".to_vec()),
    ];
    let publisher = TestClient::connect(&host, port, &unique("pub-big")).await;
    publisher.publish_all(&sent).await;
    let got = ingest.recv_n(3, SECS(10)).await;
    let got = ingest.ack_all(got).await;
    assert_eq!(got, sent);
    ingest.expect_nothing(Duration::from_millis(300)).await;
    let s = ingest.handle.stats();
    assert_eq!(
        (s.connect_attempts, s.connections),
        (1, 1),
        "no reconnect: {s:?}"
    );
    ingest.stop().await.unwrap();

    let mut again = RunningIngest::start(config(&host, port, &id), &prefix, 64);
    again.wait_subscribed(1).await;
    again.expect_nothing(Duration::from_millis(500)).await;
    assert_eq!(again.handle.stats().connections, 1);
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_does_not_stall_keep_alives() {
    init_tracing();
    let (host, port) = shared_broker();
    let prefix = unique("dt-slow");
    let id = unique("ingest-slow");
    let mut cfg = config(&host, port, &id);
    // Mosquitto drops a client silent for 1.5 × keep-alive.
    cfg.keep_alive = SECS(1);
    let mut ingest = RunningIngest::start(cfg, &prefix, 1);
    ingest.wait_subscribed(1).await;
    let sent = input_messages(&prefix, 10);
    let publisher = TestClient::connect(&host, port, &unique("pub-slow")).await;
    publisher.publish_all(&sent).await;

    // Nobody reads the delivery channel (capacity 1) for 3.5 s.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let s = ingest.handle.stats();
    assert!(
        s.connected && s.connections == 1,
        "still the first connection: {s:?}"
    );
    let got = ingest.recv_n(10, SECS(5)).await;
    assert_eq!(ingest.ack_all(got).await, sent);
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_off_while_the_broker_is_down_then_connects_and_subscribes() {
    init_tracing();
    let port = free_port();
    let prefix = unique("dt-down");
    let id = unique("ingest-down");
    let mut ingest = RunningIngest::start(config("127.0.0.1", port, &id), &prefix, 64);

    tokio::time::sleep(SECS(3)).await;
    let s = ingest.handle.stats();
    assert!(
        (3..=6).contains(&s.connect_attempts),
        "a few attempts with growing delays, not a hot loop: {s:?}"
    );
    assert_eq!(s.connections, 0);

    let broker = OwnBroker::start_on(port, false);
    ingest.wait_connections(1, SECS(10)).await;
    ingest.wait_subscribed(1).await;
    let topic = format!("{prefix}/v1/alerts/al-1/commands");
    let publisher = TestClient::connect("127.0.0.1", broker.port, &unique("pub-down")).await;
    publisher
        .publish_all(&[(topic.clone(), b"late".to_vec())])
        .await;
    let got = ingest.recv_n(1, SECS(5)).await;
    assert_eq!(ingest.ack_all(got).await, vec![(topic, b"late".to_vec())]);
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_broker_restart_with_persistence() {
    init_tracing();
    let mut broker = OwnBroker::start(true);
    let prefix = unique("dt-restart");
    let id = unique("ingest-restart");
    let mut ingest = RunningIngest::start(config("127.0.0.1", broker.port, &id), &prefix, 64);
    ingest.wait_subscribed(1).await;

    broker.restart();
    // Published as soon as the broker is back, perhaps before the ingest
    // reconnected: the restored session queues it.
    let topic = format!("{prefix}/v1/devices/patch-1/events");
    let publisher = TestClient::connect("127.0.0.1", broker.port, &unique("pub-restart")).await;
    publisher
        .publish_all(&[(topic.clone(), b"after-restart".to_vec())])
        .await;
    let got = ingest.recv_n(1, SECS(10)).await;
    assert_eq!(
        ingest.ack_all(got).await,
        vec![(topic, b"after-restart".to_vec())]
    );
    let s = ingest.handle.stats();
    assert_eq!(s.connections, 2, "{s:?}");
    assert_eq!(
        s.subscriptions, 1,
        "session restored: no resubscribe: {s:?}"
    );
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_from_before_a_reconnect_is_discarded_and_the_input_redelivered() {
    init_tracing();
    let mut broker = OwnBroker::start(true);
    let prefix = unique("dt-stale");
    let id = unique("ingest-stale");
    let cfg = config("127.0.0.1", broker.port, &id);
    let mut ingest = RunningIngest::start(cfg.clone(), &prefix, 64);
    ingest.wait_subscribed(1).await;
    let topic = format!("{prefix}/v1/patients/P-5/doses");
    let sent: Vec<_> = (0..3)
        .map(|i| (topic.clone(), format!("s-{i}").into_bytes()))
        .collect();
    let publisher = TestClient::connect("127.0.0.1", broker.port, &unique("pub-stale")).await;
    publisher.publish_all(&sent).await;
    let before = ingest.recv_n(3, SECS(10)).await;

    // The connection drops before they are stored; the restored session
    // redelivers them on the next one.
    broker.restart();
    let after = ingest.recv_n(3, SECS(10)).await;
    assert_eq!(ingest.handle.stats().connections, 2);
    // Acks of the first delivery belong to a dead connection: discarded.
    assert_eq!(payloads(&ingest.ack_all(before).await), payloads(&sent));
    ingest.stop().await.unwrap();
    drop(after);

    // Had they been sent on the new connection, the broker would have
    // forgotten these inputs; it still has them.
    let mut again = RunningIngest::start(cfg, &prefix, 64);
    let got = again.recv_n(3, SECS(10)).await;
    assert_eq!(payloads(&again.ack_all(got).await), payloads(&sent));
    again.expect_nothing(Duration::from_millis(300)).await;
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribes_after_a_broker_restart_that_lost_the_session() {
    init_tracing();
    let mut broker = OwnBroker::start(false);
    let prefix = unique("dt-lost");
    let id = unique("ingest-lost");
    let mut ingest = RunningIngest::start(config("127.0.0.1", broker.port, &id), &prefix, 64);
    ingest.wait_subscribed(1).await;

    broker.restart();
    ingest.wait_connections(2, SECS(10)).await;
    ingest.wait_subscribed(2).await;
    let topic = format!("{prefix}/v1/patients/P-4/admit");
    let publisher = TestClient::connect("127.0.0.1", broker.port, &unique("pub-lost")).await;
    publisher
        .publish_all(&[(topic.clone(), b"new-session".to_vec())])
        .await;
    let got = ingest.recv_n(1, SECS(5)).await;
    assert_eq!(
        ingest.ack_all(got).await,
        vec![(topic, b"new-session".to_vec())]
    );
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_fails_at_once() {
    let (host, port) = shared_broker();
    let ingest = RunningIngest::start(config(&host, port, ""), "dt", 4);
    let r = tokio::time::timeout(SECS(2), ingest.task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(r, Err(dosetrack::mqtt::MqttError::Config(_))),
        "{r:?}"
    );
}

/// Throughput of the whole path (publish QoS 1 → broker → ingest → deliver →
/// ack → PUBACK), in batches of 500 (mosquitto drops messages queued beyond
/// `max_queued_messages`, default 1000). Run by hand:
/// `cargo test --release --test mqtt_ingest -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_round_trip() {
    let (host, port) = shared_broker();
    let prefix = unique("dt-tput");
    let id = unique("ingest-tput");
    let mut ingest = RunningIngest::start(config(&host, port, &id), &prefix, 256);
    ingest.wait_subscribed(1).await;
    let publisher = TestClient::connect(&host, port, &unique("pub-tput")).await;
    let batch = input_messages(&prefix, 500);
    let batches = 40;
    let started = Instant::now();
    for _ in 0..batches {
        let (_, ()) = tokio::join!(publisher.publish_all(&batch), async {
            // Ack as they come: the broker sends at most its in-flight
            // window (20) of unacknowledged inputs.
            for _ in 0..batch.len() {
                let m = ingest.recv_n(1, SECS(20)).await.remove(0);
                ingest.handle.ack(m.ack).await.unwrap();
            }
        });
    }
    let elapsed = started.elapsed();
    let n = batches * batch.len();
    eprintln!(
        "throughput: {n} inputs of ~20 B in {elapsed:?} = {:.0} inputs/s",
        n as f64 / elapsed.as_secs_f64()
    );
    ingest.stop().await.unwrap();
}
