//! The publisher connection against a real Mosquitto of the test's own (its
//! log shows what the publisher sent): confirmed and retained publishes,
//! the online status, the last will on an abrupt drop, the offline status on
//! clean shutdown, and confirmation across an outage.

use crate::mqtt_common;

use dosetrack::mqtt::{spawn_publisher, BrokerConfig, MqttError, Publisher};
use mqtt_common::*;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const ONLINE: &str = r#"{"state":"online","version":"test"}"#;
const OFFLINE: &str = r#"{"state":"offline"}"#;

struct Running {
    publisher: Publisher,
    task: JoinHandle<Result<(), MqttError>>,
    shutdown: CancellationToken,
}

fn start(cfg: BrokerConfig, status_topic: &str) -> Running {
    let shutdown = CancellationToken::new();
    let (publisher, task) = spawn_publisher(
        cfg,
        status_topic.to_string(),
        ONLINE.to_string(),
        OFFLINE.to_string(),
        shutdown.clone(),
    );
    Running {
        publisher,
        task,
        shutdown,
    }
}

/// The next message on `topic` (others are skipped), as text, and its
/// retain flag.
async fn next_on(observer: &mut TestClient, topic: &str) -> (String, bool) {
    loop {
        let m = observer
            .recv(SECS(5))
            .await
            .unwrap_or_else(|| panic!("nothing on {topic} within 5 s"));
        if m.topic == topic {
            return (String::from_utf8_lossy(&m.payload).into_owned(), m.retain);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_confirmed_and_retained_publishes_will_and_clean_shutdown() {
    init_tracing();
    let broker = OwnBroker::start(false);
    let (host, port) = ("127.0.0.1", broker.port);
    let prefix = unique("dt-pub");
    let status = format!("{prefix}/v1/status");
    let id = unique("dosetrack-pub");
    let mut observer = TestClient::connect(host, port, &unique("observer")).await;
    observer.subscribe(&format!("{prefix}/#")).await;

    // Online after connecting, retained.
    let run = start(config(host, port, &id), &status);
    assert_eq!(next_on(&mut observer, &status).await.0, ONLINE);
    assert!(wait_until(SECS(2), || run.publisher.is_connected()).await);

    // publish_confirmed returns after the PUBACK: the broker has it.
    let retained = format!("{prefix}/v1/patients/P-1/state");
    run.publisher
        .publish_confirmed(retained.clone(), b"state-1".to_vec(), true)
        .await
        .unwrap();
    assert_eq!(next_on(&mut observer, &retained).await.0, "state-1");
    // ... and a subscriber that comes later gets it as retained.
    let mut late = TestClient::connect(host, port, &unique("late")).await;
    late.subscribe(&retained).await;
    assert_eq!(
        next_on(&mut late, &retained).await,
        ("state-1".into(), true)
    );
    let mut late_status = TestClient::connect(host, port, &unique("late-status")).await;
    late_status.subscribe(&status).await;
    assert_eq!(
        next_on(&mut late_status, &status).await,
        (ONLINE.into(), true)
    );

    // Plain publishes keep their order; a confirmed one after them means all
    // of them were acknowledged (one connection, in order).
    let alerts = format!("{prefix}/v1/patients/P-1/alerts");
    for i in 0..200 {
        run.publisher
            .publish(alerts.clone(), format!("a-{i}").into_bytes(), false)
            .await
            .unwrap();
    }
    run.publisher
        .publish_confirmed(alerts.clone(), b"a-last".to_vec(), false)
        .await
        .unwrap();
    for i in 0..200 {
        assert_eq!(next_on(&mut observer, &alerts).await.0, format!("a-{i}"));
    }
    assert_eq!(next_on(&mut observer, &alerts).await.0, "a-last");

    // Publishes that would break the connection are refused up front.
    let bad = run
        .publisher
        .publish("a/+/b".into(), b"x".to_vec(), false)
        .await;
    assert!(
        matches!(bad, Err(MqttError::InvalidTopic { .. })),
        "{bad:?}"
    );
    let big = run
        .publisher
        .publish(alerts.clone(), vec![0; 2 << 20], false)
        .await;
    assert!(matches!(big, Err(MqttError::TooLarge { .. })), "{big:?}");

    // Abrupt drop (no DISCONNECT): the broker publishes the will.
    run.task.abort();
    assert_eq!(
        next_on(&mut observer, &status).await,
        (OFFLINE.into(), false)
    );
    assert!(run
        .publisher
        .publish("x".into(), vec![], false)
        .await
        .is_err());

    // Back online with the same client id.
    let run = start(config(host, port, &id), &status);
    assert_eq!(next_on(&mut observer, &status).await.0, ONLINE);
    assert!(wait_until(SECS(2), || run.publisher.is_connected()).await);

    // Clean shutdown right after queuing publishes: they go out first, then
    // the offline status (published by the publisher), then DISCONNECT.
    for i in 0..50 {
        run.publisher
            .publish(alerts.clone(), format!("b-{i}").into_bytes(), false)
            .await
            .unwrap();
    }
    run.shutdown.cancel();
    run.task.await.unwrap().unwrap();
    for i in 0..50 {
        assert_eq!(next_on(&mut observer, &alerts).await.0, format!("b-{i}"));
    }
    assert_eq!(next_on(&mut observer, &status).await.0, OFFLINE);
    assert!(!run.publisher.is_connected());
    let after = run
        .publisher
        .publish(alerts.clone(), b"late".to_vec(), false)
        .await;
    assert!(matches!(after, Err(MqttError::Stopped(_))), "{after:?}");

    let mut late_status = TestClient::connect(host, port, &unique("late-status-2")).await;
    late_status.subscribe(&status).await;
    assert_eq!(
        next_on(&mut late_status, &status).await,
        (OFFLINE.into(), true)
    );
    assert!(observer.recv(Duration::from_millis(300)).await.is_none());

    // What the publisher sent, from the broker's log (buffered by mosquitto:
    // read once it has exited). The abort sent no DISCONNECT; the clean
    // shutdown sent the retained offline status, then DISCONNECT.
    let mut broker = broker;
    broker.stop();
    let log = broker.log();
    let lines: Vec<&str> = log.lines().collect();
    let disconnects: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(&format!("Received DISCONNECT from {id}")))
        .collect();
    assert_eq!(disconnects.len(), 1, "only the clean shutdown disconnects");
    let publish_from = format!("Received PUBLISH from {id} ");
    let last_publish = lines[..disconnects[0]]
        .iter()
        .rev()
        .find(|l| l.contains(&publish_from))
        .copied()
        .unwrap_or("");
    assert!(
        last_publish.contains(", q1, r1, ") && last_publish.contains(&format!("'{status}'")),
        "the last publish before DISCONNECT is the retained status: {last_publish}"
    );
    assert!(log.contains(&format!(
        "Will message specified ({} bytes) (r1, q1).",
        OFFLINE.len()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_confirmed_waits_for_the_broker_across_an_outage() {
    init_tracing();
    let port = free_port();
    let prefix = unique("dt-pub-down");
    let status = format!("{prefix}/v1/status");
    let id = unique("dosetrack-pub-down");
    let run = start(config("127.0.0.1", port, &id), &status);
    let topic = format!("{prefix}/v1/patients/P-2/state");

    // No broker: not confirmed.
    let p = run.publisher.clone();
    let t = topic.clone();
    let confirm = tokio::spawn(async move { p.publish_confirmed(t, b"kept".to_vec(), true).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!confirm.is_finished(), "no PUBACK without a broker");
    assert!(!run.publisher.is_connected());

    // The broker comes: the outbox delivers it and the PUBACK confirms it.
    let broker = OwnBroker::start_on(port, false);
    tokio::time::timeout(SECS(10), confirm)
        .await
        .expect("confirmed once the broker is up")
        .unwrap()
        .unwrap();
    assert!(run.publisher.is_connected());
    let mut late = TestClient::connect("127.0.0.1", broker.port, &unique("late")).await;
    late.subscribe(&format!("{prefix}/#")).await;
    let mut got = vec![next_on_any(&mut late).await, next_on_any(&mut late).await];
    got.sort();
    let mut want = vec![
        (status.clone(), ONLINE.to_string()),
        (topic.clone(), "kept".to_string()),
    ];
    want.sort();
    assert_eq!(got, want);

    run.shutdown.cancel();
    run.task.await.unwrap().unwrap();
}

#[allow(clippy::expect_used)] // a test helper: a panic is a failure
async fn next_on_any(c: &mut TestClient) -> (String, String) {
    let m = c.recv(SECS(5)).await.expect("a message within 5 s");
    (m.topic, String::from_utf8_lossy(&m.payload).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_publishes_are_resent_after_a_broker_restart() {
    init_tracing();
    let mut broker = OwnBroker::start(false);
    let prefix = unique("dt-pub-restart");
    let status = format!("{prefix}/v1/status");
    let id = unique("dosetrack-pub-restart");
    let run = start(config("127.0.0.1", broker.port, &id), &status);
    assert!(wait_until(SECS(5), || run.publisher.is_connected()).await);

    broker.stop();
    assert!(wait_until(SECS(5), || !run.publisher.is_connected()).await);
    let topic = format!("{prefix}/v1/patients/P-3/state");
    let p = run.publisher.clone();
    let t = topic.clone();
    let confirm = tokio::spawn(async move {
        p.publish_confirmed(t, b"during-outage".to_vec(), true)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    tokio::time::timeout(SECS(10), confirm)
        .await
        .expect("confirmed after the restart")
        .unwrap()
        .unwrap();
    let s = run.publisher.stats();
    assert_eq!(s.connections, 2, "{s:?}");

    let mut late = TestClient::connect("127.0.0.1", broker.port, &unique("late")).await;
    late.subscribe(&topic).await;
    assert_eq!(
        next_on(&mut late, &topic).await,
        ("during-outage".into(), true)
    );
    run.shutdown.cancel();
    run.task.await.unwrap().unwrap();
}
