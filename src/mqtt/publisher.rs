//! The output connection: QoS 1 publishes (patient state, alerts,
//! rejections) and the daemon's retained online/offline status.
//!
//! This module owns:
//!
//! * an in-memory outbox: every publish is kept until its PUBACK arrives and
//!   is published again, in order, after a reconnect (at least once; the
//!   contract's consumers dedupe on ids, retained topics are idempotent).
//!   The durable outbox for alerts lives with the store; this one only rides
//!   out broker outages while the process lives;
//! * publish confirmation: rumqttc does not say which packet id a publish got
//!   (rumqttc #349), so publishes are submitted one by one to a fresh event
//!   loop per connection and matched, in order, with rumqttc's
//!   `Outgoing::Publish(pkid)` (or `AwaitAck(pkid)` on a packet-id collision)
//!   notifications, then with `PubAck(pkid)`;
//! * the status: a retained QoS 1 last will with the offline payload, the
//!   online payload published retained after every (re)connect, the offline
//!   payload published retained on clean shutdown before DISCONNECT (none
//!   of this for a [`spawn_plain_publisher`], e.g. the simulated ward's);
//! * checks that would otherwise make a publish fail the connection on every
//!   attempt (wildcards or NUL in the topic, a packet over
//!   `max_packet_bytes`).
//!
//! The connection uses a clean session: nothing needs to be kept by the
//! broker for a publisher, and the outbox above does the resending.

use super::driver::{disconnect_and_wait, Driver, DriverMsg};
use super::{mqtt_options, BrokerConfig, ConnectionStats, MqttError, SharedStats};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, LastWill, Outgoing, Packet, Publish, QoS};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Sends publishes to the publisher task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Command>,
    stats: Arc<SharedStats>,
    max_packet_bytes: usize,
}

type Done = oneshot::Sender<Result<(), MqttError>>;

#[derive(Debug)]
struct Command {
    topic: String,
    payload: Bytes,
    retain: bool,
    done: Option<Done>,
    /// Replaces the online status (topic is the status topic; published
    /// retained now and after every reconnect).
    online: bool,
}

impl Publisher {
    /// Queue a QoS 1 publish; returns once it is queued (waiting while the
    /// queue is full, e.g. during a long broker outage). It is sent, and
    /// resent after reconnects, until the broker acknowledges it or the
    /// publisher shuts down.
    pub async fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), MqttError> {
        let command = self.command(topic, payload, retain, None)?;
        self.tx
            .send(command)
            .await
            .map_err(|_| MqttError::Stopped("publisher"))
    }

    /// Publish at QoS 1 and resolve when the broker's PUBACK for it arrived
    /// (across reconnects, if need be). Wrap it in a timeout to bound the
    /// wait during an outage. Fails with [`MqttError::Stopped`] if the
    /// publisher shuts down first.
    pub async fn publish_confirmed(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), MqttError> {
        self.publish_then_confirm(topic, payload, retain)
            .await?
            .await
    }

    /// Queue a QoS 1 publish like [`publish`](Self::publish) (returns once
    /// queued); the [`Confirmation`] resolves when its PUBACK arrived. For
    /// many publishes in flight at once, each confirmed.
    pub async fn publish_then_confirm(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<Confirmation, MqttError> {
        let (done, confirmed) = oneshot::channel();
        let command = self.command(topic, payload, retain, Some(done))?;
        self.tx
            .send(command)
            .await
            .map_err(|_| MqttError::Stopped("publisher"))?;
        Ok(Confirmation(confirmed))
    }

    /// Replace the retained online status payload (e.g. with the daemon's
    /// current technical problems): published now, and after every
    /// reconnect instead of the one given at start. Returns once queued.
    pub async fn set_online(&self, payload: Vec<u8>) -> Result<(), MqttError> {
        let mut command = self.command(String::new(), payload, true, None)?;
        command.online = true;
        self.tx
            .send(command)
            .await
            .map_err(|_| MqttError::Stopped("publisher"))
    }

    /// Whether the connection to the broker is up now.
    pub fn is_connected(&self) -> bool {
        self.stats.is_connected()
    }

    /// Connection counters.
    pub fn stats(&self) -> ConnectionStats {
        self.stats.snapshot()
    }

    /// While connecting fails for a reason the operator must fix (TLS
    /// handshake, login refused): that reason, in one sentence.
    pub fn problem(&self) -> Option<String> {
        self.stats.problem()
    }

    /// While no connection is up: why the last attempt failed, whatever
    /// the cause (refused, unreachable, TLS, login), as rumqttc said it.
    pub fn connect_error(&self) -> Option<String> {
        self.stats.last_error()
    }

    fn command(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        done: Option<Done>,
    ) -> Result<Command, MqttError> {
        let payload = Bytes::from(payload);
        // The status topic is the publisher's own (checked at start).
        if !topic.is_empty() {
            check_publish(&topic, &payload, self.max_packet_bytes)?;
        }
        Ok(Command {
            topic,
            payload,
            retain,
            done,
            online: false,
        })
    }
}

/// The PUBACK of one publish queued with [`Publisher::publish_then_confirm`]:
/// resolves to `Ok` when it arrived, to [`MqttError::Stopped`] if the
/// publisher shut down first.
#[derive(Debug)]
#[must_use = "a Confirmation does nothing unless awaited or checked"]
pub struct Confirmation(oneshot::Receiver<Result<(), MqttError>>);

impl Confirmation {
    /// Without waiting: `None` while the PUBACK is still awaited.
    pub fn try_result(&mut self) -> Option<Result<(), MqttError>> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(MqttError::Stopped("publisher"))),
        }
    }
}

impl Future for Confirmation {
    type Output = Result<(), MqttError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(MqttError::Stopped("publisher"))))
    }
}

/// Refuse a publish that the broker or rumqttc would answer by failing the
/// connection (and so fail it again after every reconnect).
fn check_publish(topic: &str, payload: &Bytes, max_packet_bytes: usize) -> Result<(), MqttError> {
    let reason = if topic.is_empty() {
        Some("empty topic")
    } else if topic.contains(['+', '#']) {
        Some("wildcards are not allowed in a published topic")
    } else if topic.contains('\0') {
        Some("NUL character")
    } else if topic.len() > usize::from(u16::MAX) {
        Some("longer than 65535 bytes")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(MqttError::InvalidTopic {
            topic: topic.to_string(),
            reason,
        });
    }
    let mut packet = Publish::from_bytes(topic, QoS::AtLeastOnce, payload.clone());
    packet.pkid = 1;
    let size = packet.size();
    if size > max_packet_bytes {
        return Err(MqttError::TooLarge {
            topic: topic.to_string(),
            size,
            max: max_packet_bytes,
        });
    }
    Ok(())
}

/// Start the publisher connection. `cfg.client_id` must differ from the
/// ingest's (e.g. `"{client_id}-pub"`). The task ends after `shutdown` is
/// cancelled: queued publishes are given `cfg.drain_timeout` to be
/// confirmed, then the offline status is published and DISCONNECT sent.
pub fn spawn_publisher(
    cfg: BrokerConfig,
    status_topic: String,
    online_payload: String,
    offline_payload: String,
    shutdown: CancellationToken,
) -> (Publisher, JoinHandle<Result<(), MqttError>>) {
    let status = Status {
        topic: status_topic,
        online: Bytes::from(online_payload),
        offline: Bytes::from(offline_payload),
    };
    spawn(cfg, Some(status), shutdown)
}

/// Start a publisher connection without a status: no last will, no
/// online/offline publishes ([`Publisher::set_online`] is ignored). For a
/// connection that only publishes what it is given, such as the simulated
/// ward's. Otherwise as [`spawn_publisher`].
pub fn spawn_plain_publisher(
    cfg: BrokerConfig,
    shutdown: CancellationToken,
) -> (Publisher, JoinHandle<Result<(), MqttError>>) {
    spawn(cfg, None, shutdown)
}

fn spawn(
    cfg: BrokerConfig,
    status: Option<Status>,
    shutdown: CancellationToken,
) -> (Publisher, JoinHandle<Result<(), MqttError>>) {
    let (tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let stats = Arc::new(SharedStats::default());
    let publisher = Publisher {
        tx,
        stats: Arc::clone(&stats),
        max_packet_bytes: cfg.max_packet_bytes,
    };
    let task = tokio::spawn(run(cfg, status, shutdown, cmd_rx, stats));
    (publisher, task)
}

/// The retained status of a publisher connection: its topic, the payload
/// published after every connect, and the one at shutdown (also the will).
#[derive(Debug, Clone)]
struct Status {
    topic: String,
    online: Bytes,
    offline: Bytes,
}

/// Commands waiting to enter the outbox.
const COMMAND_CAPACITY: usize = 64;
/// Publishes held in memory (queued or awaiting their PUBACK).
const OUTBOX_MAX: usize = 1024;
/// At shutdown, how long to wait for the offline status's PUBACK.
const OFFLINE_TIMEOUT: Duration = Duration::from_secs(2);
async fn run(
    cfg: BrokerConfig,
    status: Option<Status>,
    shutdown: CancellationToken,
    cmd_rx: mpsc::Receiver<Command>,
    stats: Arc<SharedStats>,
) -> Result<(), MqttError> {
    cfg.validate()?;
    let mut options = mqtt_options(&cfg, true);
    if let Some(status) = &status {
        for payload in [&status.online, &status.offline] {
            check_publish(&status.topic, payload, cfg.max_packet_bytes).map_err(|e| {
                MqttError::Config(format!("status topic or payload cannot be published: {e}"))
            })?;
        }
        options.set_last_will(LastWill {
            topic: status.topic.clone(),
            message: status.offline.clone(),
            qos: QoS::AtLeastOnce,
            retain: true,
        });
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let driver = Driver {
        role: "publisher",
        options,
        tx,
        stop: stop.clone(),
        stats,
        budget: None,
    };
    let logic = Logic {
        client_id: cfg.client_id.clone(),
        inflight: usize::from(cfg.inflight),
        drain_timeout: cfg.drain_timeout,
        status,
        current: None,
        outbox: VecDeque::new(),
        submitted: VecDeque::new(),
        next_id: 0,
        stopping: false,
    };
    // Both halves run in this one task: aborting it drops the event loop
    // (the TCP connection closes without DISCONNECT and the broker publishes
    // the will).
    let ((), result) = tokio::join!(driver.run(), logic.run(rx, cmd_rx, shutdown, stop));
    result
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A caller's publish.
    Caller,
    /// The online status of the current connection (not resent on the next:
    /// that one publishes its own).
    Online,
    /// The offline status at shutdown.
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to be handed to rumqttc (not connected, or the in-flight
    /// window is full).
    Queued,
    /// Handed to rumqttc; its packet id is not known yet.
    Submitted,
    /// Sent with this packet id; waiting for the PUBACK.
    InFlight(u16),
    /// Packet id collision: rumqttc sends it when that id's PUBACK arrives.
    Collided(u16),
}

#[derive(Debug)]
struct Item {
    id: u64,
    kind: Kind,
    topic: String,
    payload: Bytes,
    retain: bool,
    done: Option<Done>,
    state: State,
}

struct Conn {
    generation: u64,
    client: AsyncClient,
}

struct Logic {
    client_id: String,
    inflight: usize,
    drain_timeout: Duration,
    /// `None`: a plain publisher (no status publishes, no will).
    status: Option<Status>,
    current: Option<Conn>,
    /// Every publish not yet acknowledged, in publish order.
    outbox: VecDeque<Item>,
    /// Ids of `Submitted` items, in submission order (= rumqttc's order).
    submitted: VecDeque<u64>,
    next_id: u64,
    stopping: bool,
}

impl Logic {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<DriverMsg>,
        mut cmd_rx: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        stop: CancellationToken,
    ) -> Result<(), MqttError> {
        let _stop_driver = stop.drop_guard();
        // Every Publisher handle dropped: nothing more will come, but the
        // status stays online until shutdown.
        let mut handles_gone = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(m) => self.on_driver(m).await,
                    None => {
                        self.fail_all();
                        return Err(MqttError::DriverGone);
                    }
                },
                cmd = cmd_rx.recv(), if !handles_gone && self.outbox.len() < OUTBOX_MAX => match cmd {
                    Some(c) => self.on_command(c).await,
                    None => handles_gone = true,
                },
            }
        }
        self.shutdown(&mut rx, &mut cmd_rx).await;
        Ok(())
    }

    async fn on_command(&mut self, c: Command) {
        if c.online {
            let Some(status) = &mut self.status else {
                debug!(client_id = %self.client_id, "no status on this connection; set_online ignored");
                return;
            };
            status.online = c.payload;
            let (topic, online) = (status.topic.clone(), status.online.clone());
            // A newer status supersedes one not yet handed over; without a
            // connection the next one publishes it.
            self.outbox
                .retain(|i| !(i.kind == Kind::Online && i.state == State::Queued));
            if self.current.is_some() && !self.stopping {
                self.push(Kind::Online, topic, online, true, None);
                self.submit().await;
            }
            return;
        }
        self.push(Kind::Caller, c.topic, c.payload, c.retain, c.done);
        self.submit().await;
    }

    fn push(
        &mut self,
        kind: Kind,
        topic: String,
        payload: Bytes,
        retain: bool,
        done: Option<Done>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let item = Item {
            id,
            kind,
            topic,
            payload,
            retain,
            done,
            state: State::Queued,
        };
        if kind == Kind::Online {
            self.outbox.push_front(item);
        } else {
            self.outbox.push_back(item);
        }
    }

    /// Hand queued items to rumqttc, in order, while the window allows.
    async fn submit(&mut self) {
        let Some(conn) = &self.current else {
            return;
        };
        let mut outstanding = self
            .outbox
            .iter()
            .filter(|i| i.state != State::Queued)
            .count();
        for item in self.outbox.iter_mut() {
            if outstanding >= self.inflight {
                break;
            }
            if item.state != State::Queued {
                continue;
            }
            let sent = conn
                .client
                .publish_bytes(
                    item.topic.clone(),
                    QoS::AtLeastOnce,
                    item.retain,
                    item.payload.clone(),
                )
                .await;
            if let Err(e) = sent {
                // The connection is gone; the next one resends.
                debug!(client_id = %self.client_id, error = %e, "publish not handed over");
                break;
            }
            item.state = State::Submitted;
            self.submitted.push_back(item.id);
            outstanding += 1;
        }
    }

    async fn on_driver(&mut self, msg: DriverMsg) {
        match msg {
            DriverMsg::Connected {
                generation, client, ..
            } => {
                self.current = Some(Conn { generation, client });
                if let (false, Some(status)) = (self.stopping, &self.status) {
                    let (topic, online) = (status.topic.clone(), status.online.clone());
                    self.push(Kind::Online, topic, online, true, None);
                }
                self.submit().await;
            }
            DriverMsg::Event {
                generation, event, ..
            } => {
                if self.current.as_ref().map(|c| c.generation) != Some(generation) {
                    return;
                }
                match event {
                    Event::Outgoing(Outgoing::Publish(pkid)) => self.on_sent(pkid),
                    Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                        if let Some(item) = self.next_submitted() {
                            item.state = State::Collided(pkid);
                        }
                    }
                    Event::Incoming(Packet::PubAck(ack)) => {
                        self.on_puback(ack.pkid);
                        self.submit().await;
                    }
                    _ => {}
                }
            }
            DriverMsg::Lost { generation } => {
                if self.current.as_ref().map(|c| c.generation) != Some(generation) {
                    return;
                }
                self.current = None;
                self.submitted.clear();
                // The next connection publishes its own online status.
                self.outbox.retain(|i| i.kind != Kind::Online);
                let mut resend = 0;
                for item in self.outbox.iter_mut() {
                    if item.state != State::Queued {
                        item.state = State::Queued;
                        resend += 1;
                    }
                }
                if resend > 0 {
                    info!(client_id = %self.client_id, resend,
                        "connection lost with publishes not yet acknowledged; resending after reconnect");
                }
            }
        }
    }

    /// The item rumqttc just took from its request channel.
    fn next_submitted(&mut self) -> Option<&mut Item> {
        let id = self.submitted.pop_front()?;
        self.outbox.iter_mut().find(|i| i.id == id)
    }

    fn on_sent(&mut self, pkid: u16) {
        // A collided publish going out now that its packet id was acked.
        let in_flight = self.outbox.iter().any(|i| i.state == State::InFlight(pkid));
        if !in_flight {
            if let Some(item) = self
                .outbox
                .iter_mut()
                .find(|i| i.state == State::Collided(pkid))
            {
                item.state = State::InFlight(pkid);
                return;
            }
        }
        match self.next_submitted() {
            Some(item) => item.state = State::InFlight(pkid),
            None => warn!(client_id = %self.client_id, pkid,
                "rumqttc sent a publish this outbox did not submit"),
        }
    }

    fn on_puback(&mut self, pkid: u16) {
        let Some(pos) = self
            .outbox
            .iter()
            .position(|i| i.state == State::InFlight(pkid))
        else {
            debug!(client_id = %self.client_id, pkid, "PUBACK for no known publish");
            return;
        };
        if let Some(item) = self.outbox.remove(pos) {
            debug!(client_id = %self.client_id, pkid, topic = %item.topic, kind = ?item.kind,
                "publish acknowledged");
            if let Some(done) = item.done {
                let _ = done.send(Ok(()));
            }
        }
    }

    /// Fail every waiting `publish_confirmed`.
    fn fail_all(&mut self) {
        for item in self.outbox.drain(..) {
            if let Some(done) = item.done {
                let _ = done.send(Err(MqttError::Stopped("publisher")));
            }
        }
    }

    /// At shutdown, once the drain time is up: fail the callers still
    /// waiting, and drop their publishes not yet handed to rumqttc. Those
    /// already handed over stay (their `Outgoing::Publish` notifications
    /// still come, in order, before the offline status's).
    fn abandon_caller_publishes(&mut self) {
        for item in self.outbox.iter_mut().filter(|i| i.kind == Kind::Caller) {
            if let Some(done) = item.done.take() {
                let _ = done.send(Err(MqttError::Stopped("publisher")));
            }
        }
        self.outbox
            .retain(|i| !(i.kind == Kind::Caller && i.state == State::Queued));
    }

    /// Drain (bounded), publish the offline status, DISCONNECT.
    async fn shutdown(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<DriverMsg>,
        cmd_rx: &mut mpsc::Receiver<Command>,
    ) {
        self.stopping = true;
        // New publishes fail from now on; those already queued still go.
        cmd_rx.close();
        let mut commands_done = false;
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        loop {
            let pending = self
                .outbox
                .iter()
                .filter(|i| i.kind == Kind::Caller)
                .count();
            if commands_done && pending == 0 {
                break;
            }
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(client_id = %self.client_id, unconfirmed = pending,
                        "shutdown: publishes not acknowledged in time; dropping them");
                    break;
                }
                msg = rx.recv() => match msg {
                    Some(m) => self.on_driver(m).await,
                    None => {
                        self.fail_all();
                        return;
                    }
                },
                cmd = cmd_rx.recv(), if !commands_done && self.outbox.len() < OUTBOX_MAX => match cmd {
                    Some(c) => self.on_command(c).await,
                    None => commands_done = true,
                },
            }
        }
        self.abandon_caller_publishes();

        if self.current.is_none() {
            // The broker publishes the will (or already has).
            info!(client_id = %self.client_id, "publisher stopped while disconnected");
            return;
        }
        if let Some(status) = &self.status {
            let offline_id = self.next_id;
            let (topic, offline) = (status.topic.clone(), status.offline.clone());
            self.push(Kind::Offline, topic, offline, true, None);
            self.submit().await;
            let wait_offline = async {
                while self.outbox.iter().any(|i| i.id == offline_id) {
                    match rx.recv().await {
                        Some(m) => self.on_driver(m).await,
                        None => return,
                    }
                }
            };
            if tokio::time::timeout(OFFLINE_TIMEOUT, wait_offline)
                .await
                .is_err()
            {
                warn!(client_id = %self.client_id, "offline status not acknowledged in time");
            }
        }
        let Some(conn) = self.current.take() else {
            return;
        };
        match disconnect_and_wait(&conn.client, rx).await {
            None => {}
            Some(false) => {
                warn!(client_id = %self.client_id, "DISCONNECT not confirmed in time; closing the connection")
            }
            Some(true) if self.status.is_some() => {
                info!(client_id = %self.client_id, "publisher disconnected cleanly (status offline)")
            }
            Some(true) => info!(client_id = %self.client_id, "publisher disconnected cleanly"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_that_would_break_the_connection_are_refused() {
        let p = Bytes::from_static(b"{}");
        for bad in ["", "a/+/b", "a/#", "a\0b"] {
            assert!(
                matches!(
                    check_publish(bad, &p, 1 << 20),
                    Err(MqttError::InvalidTopic { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(check_publish("dosetrack/v1/status", &p, 1 << 20).is_ok());
    }

    #[test]
    fn the_size_limit_counts_the_whole_packet() {
        // 1 (type) + 2 (remaining length) + 2 + 1 (topic) + 2 (pkid) + payload.
        let payload = Bytes::from(vec![0u8; 1000]);
        assert!(check_publish("t", &payload, 1008).is_ok());
        assert!(matches!(
            check_publish("t", &payload, 1007),
            Err(MqttError::TooLarge {
                size: 1008,
                max: 1007,
                ..
            })
        ));
    }
}
