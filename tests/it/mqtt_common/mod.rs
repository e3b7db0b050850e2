//! Helpers for the MQTT integration tests: the shared broker's address, a
//! broker of the test's own (a `mosquitto` process on a free port, for
//! restarts, logs and outages), a plain rumqttc client to publish and
//! observe with, and a running ingest.
//!
//! The daemon binary as a process of its own (and a simulated systemd
//! notify socket): [`daemon`]; a blocking client for plain (non-async)
//! test functions: [`blocking`].
//!
//! The shared broker is `DOSETRACK_TEST_MQTT` (`host:port`), default
//! 127.0.0.1:1883. Every test uses its own client ids and topic prefix.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub(crate) mod blocking;
pub(crate) mod daemon;

use dosetrack::mqtt::{spawn_ingest, BrokerConfig, Incoming, IngestHandle, MqttError};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Log to the test output with `RUST_LOG=dosetrack=debug`.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// The shared broker.
pub(crate) fn shared_broker() -> (String, u16) {
    let addr = std::env::var("DOSETRACK_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    let (host, port) = addr
        .rsplit_once(':')
        .expect("DOSETRACK_TEST_MQTT is host:port");
    (host.to_string(), port.parse().expect("port"))
}

/// A name no other test (or earlier run) uses.
pub(crate) fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A broker config for tests: short drain so shutdowns with unacked inputs
/// stay quick.
pub(crate) fn config(host: &str, port: u16, client_id: &str) -> BrokerConfig {
    let mut c = BrokerConfig::new(host, port, client_id);
    c.drain_timeout = Duration::from_millis(500);
    c
}

/// A port nothing listens on (right now).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET to the daemon's `[http]` listener on loopback:
/// (status, content type, body); `None` when nothing answers.
pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    // The daemon's bodies are small: hyper sends them with a content-length.
    Some((status, content_type, body.to_owned()))
}

/// One HTTP/1.1 request with `headers` ("Name: value" lines) and `body`:
/// the status and the body, or `None` if the daemon did not answer.
pub(crate) fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    write!(s, "{head}\r\n{body}").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Poll `f` every 10 ms until it holds or `timeout` passes.
pub(crate) async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll `pred` every 50 ms until it holds; panic naming `what` once
/// `timeout` has passed (the blocking counterpart of [`wait_until`]).
pub(crate) fn poll_until(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A mosquitto process of the test's own, killed on drop.
pub(crate) struct OwnBroker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// How many times [`restart`](Self::restart) started it again.
    pub restarts: u32,
    child: Option<Child>,
}

fn mosquitto_bin() -> PathBuf {
    if let Ok(p) = std::env::var("DOSETRACK_MOSQUITTO") {
        return p.into();
    }
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.exists() {
        sbin
    } else {
        "mosquitto".into()
    }
}

impl OwnBroker {
    /// Start on a free port.
    pub(crate) fn start(persistence: bool) -> OwnBroker {
        OwnBroker::start_on(free_port(), persistence)
    }

    /// Start on `port`, logging everything to `mosquitto.log` in its dir.
    pub(crate) fn start_on(port: u16, persistence: bool) -> OwnBroker {
        OwnBroker::start_with_on(port, &format!("persistence {persistence}\nlog_type all\n"))
    }

    /// Start on a free port with `extra` config lines (limits, log types,
    /// persistence) after the common ones: anonymous access on loopback,
    /// persistence and the log (`mosquitto.log`) in its dir.
    pub(crate) fn start_with(extra: &str) -> OwnBroker {
        OwnBroker::start_with_on(free_port(), extra)
    }

    fn start_with_on(port: u16, extra: &str) -> OwnBroker {
        let dir = tempfile::tempdir().unwrap();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n\
             persistence_location {dir}/\nlog_dest file {dir}/mosquitto.log\n{extra}",
            dir = dir.path().display()
        );
        OwnBroker::start_config(port, dir, &conf)
    }

    /// Start with the whole config `conf` (written to `mosquitto.conf` in
    /// `dir`), which listens on `port`; wait until it accepts connections.
    pub(crate) fn start_config(port: u16, dir: tempfile::TempDir, conf: &str) -> OwnBroker {
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut b = OwnBroker {
            port,
            dir,
            restarts: 0,
            child: None,
        };
        b.launch();
        b
    }

    fn launch(&mut self) {
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "mosquitto did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait for the exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            child.wait().unwrap();
        }
    }

    /// Start again on the same port with the same config and data.
    pub(crate) fn restart(&mut self) {
        self.restart_after(Duration::ZERO);
    }

    /// Stop, stay down for `down`, start again (same port, config, data).
    pub(crate) fn restart_after(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.launch();
        self.restarts += 1;
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain rumqttc client (clean session, automatic acks) that publishes and
/// observes.
pub(crate) struct TestClient {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Publish>,
    pubacks: Arc<AtomicUsize>,
    subacks: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestClient {
    pub(crate) async fn connect(host: &str, port: u16, id: &str) -> TestClient {
        let mut o = MqttOptions::new(id, host, port);
        o.set_max_packet_size(2 << 20, 2 << 20)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(o, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let pubacks = Arc::new(AtomicUsize::new(0));
        let subacks = Arc::new(AtomicUsize::new(0));
        let (p, s) = (Arc::clone(&pubacks), Arc::clone(&subacks));
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let mut up_tx = Some(up_tx);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(t) = up_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(m))) => {
                        let _ = tx.send(m);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        p.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), up_rx)
            .await
            .expect("test client connects")
            .unwrap();
        TestClient {
            client,
            rx,
            pubacks,
            subacks,
            task,
        }
    }

    /// Subscribe at QoS 1 and wait for the SUBACK.
    pub(crate) async fn subscribe(&self, filter: &str) {
        let before = self.subacks.load(Ordering::SeqCst);
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let s = Arc::clone(&self.subacks);
        assert!(
            wait_until(Duration::from_secs(5), || s.load(Ordering::SeqCst) > before).await,
            "SUBACK"
        );
    }

    /// Publish at QoS 1, in order, and wait for every PUBACK.
    pub(crate) async fn publish_all(&self, msgs: &[(String, Vec<u8>)]) {
        let before = self.pubacks.load(Ordering::SeqCst);
        for (topic, payload) in msgs {
            self.client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
        }
        let p = Arc::clone(&self.pubacks);
        let want = before + msgs.len();
        assert!(
            wait_until(Duration::from_secs(20), || p.load(Ordering::SeqCst) >= want).await,
            "PUBACKs for {} publishes",
            msgs.len()
        );
    }

    /// The next message, if one comes within `timeout`.
    pub(crate) async fn recv(&mut self, timeout: Duration) -> Option<Publish> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running ingest with its delivery channel.
pub(crate) struct RunningIngest {
    pub handle: IngestHandle,
    pub rx: mpsc::Receiver<Incoming>,
    pub task: JoinHandle<Result<(), MqttError>>,
    pub shutdown: CancellationToken,
}

impl RunningIngest {
    pub(crate) fn start(cfg: BrokerConfig, prefix: &str, capacity: usize) -> RunningIngest {
        let (tx, rx) = mpsc::channel(capacity);
        let shutdown = CancellationToken::new();
        let (handle, task) = spawn_ingest(cfg, prefix.to_string(), tx, shutdown.clone());
        RunningIngest {
            handle,
            rx,
            task,
            shutdown,
        }
    }

    /// Wait until `n` SUBACKs granted every input filter.
    pub(crate) async fn wait_subscribed(&self, n: u64) {
        let h = self.handle.clone();
        assert!(
            wait_until(Duration::from_secs(10), || h.stats().subscriptions >= n).await,
            "subscribed ({:?})",
            self.handle.stats()
        );
    }

    /// Wait until connected `n` times in all.
    pub(crate) async fn wait_connections(&self, n: u64, timeout: Duration) {
        let h = self.handle.clone();
        assert!(
            wait_until(timeout, || {
                let s = h.stats();
                s.connections >= n && s.connected
            })
            .await,
            "connected {n} times ({:?})",
            self.handle.stats()
        );
    }

    /// Exactly `n` inputs within `timeout` (fails on fewer).
    pub(crate) async fn recv_n(&mut self, n: usize, timeout: Duration) -> Vec<Incoming> {
        let end = tokio::time::Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout_at(end, self.rx.recv()).await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => panic!("ingest ended after {} of {n} inputs", got.len()),
                Err(_) => panic!("only {} of {n} inputs within {timeout:?}", got.len()),
            }
        }
        got
    }

    /// Fail if anything arrives within `wait`.
    pub(crate) async fn expect_nothing(&mut self, wait: Duration) {
        if let Ok(Some(m)) = tokio::time::timeout(wait, self.rx.recv()).await {
            panic!(
                "unexpected input on {}: {:?}",
                m.topic,
                String::from_utf8_lossy(&m.payload)
            );
        }
    }

    /// Ack every input, in the order given.
    pub(crate) async fn ack_all(&self, inputs: Vec<Incoming>) -> Vec<(String, Vec<u8>)> {
        let mut seen = Vec::with_capacity(inputs.len());
        for m in inputs {
            seen.push((m.topic, m.payload.to_vec()));
            self.handle.ack(m.ack).await.unwrap();
        }
        seen
    }

    /// Cancel and wait for the task's result.
    pub(crate) async fn stop(self) -> Result<(), MqttError> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("ingest stops within 10 s")
            .expect("ingest task did not panic")
    }
}

/// `n` messages over the five input kinds (two sources each), interleaved;
/// payload `{"id":"<topic-index>-<k>"}` where k counts per topic.
pub(crate) fn input_messages(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let topics = input_topics(prefix);
    let mut per_topic = vec![0usize; topics.len()];
    (0..n)
        .map(|i| {
            let t = i % topics.len();
            let k = per_topic[t];
            per_topic[t] += 1;
            (
                topics[t].clone(),
                format!("{{\"id\":\"{t}-{k}\"}}").into_bytes(),
            )
        })
        .collect()
}

/// Two topics of each input kind.
pub(crate) fn input_topics(prefix: &str) -> Vec<String> {
    let mut v = Vec::new();
    for who in ["a", "b"] {
        v.push(format!("{prefix}/v1/patients/P-{who}/admit"));
        v.push(format!("{prefix}/v1/patients/P-{who}/discharge"));
        v.push(format!("{prefix}/v1/patients/P-{who}/doses"));
        v.push(format!("{prefix}/v1/devices/pump-{who}/events"));
        v.push(format!("{prefix}/v1/alerts/al-{who}/commands"));
    }
    v
}
