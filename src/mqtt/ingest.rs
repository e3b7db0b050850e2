//! The input connection: every contract input reaches the service, and is
//! acknowledged to the broker only after the service says it is stored.
//!
//! This module owns:
//!
//! * the session: fixed client id, `clean_session = false`, QoS 1
//!   subscriptions to [`input_filters`], manual acks;
//! * the daemon's own outputs: the input filters cover the whole input
//!   space (`patients/+/+`, …), which also matches the daemon's
//!   `patients/{id}/state` and `…/alerts`. Those ([`Topics::is_own_output`])
//!   are acknowledged in their turn and never delivered, without a log line
//!   or a rejection: they are ours, and every other unknown leaf is
//!   delivered (and rejected `unknown_topic` by the service);
//! * delivery: each received PUBLISH becomes an [`Incoming`] on the caller's
//!   bounded channel, in arrival order, without ever blocking the event loop
//!   (keep-alives go on while the consumer is slow);
//! * acknowledgement: [`IngestHandle::ack`] marks an input done; PUBACKs go
//!   out in arrival order (MQTT-4.6.0-2), the front of the queue first, as
//!   soon as every earlier input is done too. A token from an earlier
//!   connection is discarded: the broker redelivers that input on the
//!   resumed session, and the store's duplicate detection absorbs it;
//! * shutdown: stop delivering, wait (bounded) for the outstanding acks, send
//!   them, then DISCONNECT (the broker keeps the session).
//!
//! Subscriptions are sent when the broker has no session for us
//! (`session_present == false`) and also on the first connection of each
//! process run, whatever the broker says: a run that died between CONNACK
//! and SUBACK of a new session would otherwise leave a session without
//! subscriptions that no later run would repair, and every input published
//! meanwhile would be dropped by the broker. (Resubscribing does not disturb
//! queued messages; MQTT 3.1.1 §3.8.4.)

use super::budget::{Budget, Held};
use super::driver::{disconnect_and_wait, Driver, DriverMsg};
use super::{input_filters, mqtt_options, BrokerConfig, ConnectionStats, MqttError, SharedStats};
use crate::clock::Clock;
use crate::contract::Topics;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS, SubscribeFilter, SubscribeReasonCode};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, trace, warn};

/// One input as received from the broker.
#[derive(Debug)]
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    /// System clock at receipt, ms since the Unix epoch.
    pub received_at_ms: i64,
    /// The broker's retain flag: set when this is the retained copy sent
    /// on (re)subscription, a redelivery of a message published earlier.
    pub retain: bool,
    /// Published at QoS 0 (the contract says QoS 1): it cannot be
    /// acknowledged, and the service refuses it.
    pub qos0: bool,
    /// Give back through [`IngestHandle::ack`] once the input is stored.
    pub ack: AckToken,
}

/// Identifies one received PUBLISH on its connection generation. Not
/// `Clone`: each input is acknowledged once.
#[derive(Debug)]
#[must_use = "an input is acknowledged to the broker only through IngestHandle::ack"]
pub struct AckToken {
    generation: u64,
    seq: u64,
    /// False for a QoS 0 publish (nothing to acknowledge).
    needs_ack: bool,
    /// The input's share of the byte budget, given back when the token is
    /// spent or dropped (the service is done with the input).
    _held: Option<Held>,
}

impl AckToken {
    /// The token of an input that did not come from the broker (an alert
    /// acknowledged on the ward page, put into the same intake): nothing to
    /// acknowledge, and no share of the byte budget.
    pub fn local() -> AckToken {
        AckToken {
            generation: 0,
            seq: 0,
            needs_ack: false,
            _held: None,
        }
    }
}

/// Sends [`AckToken`]s back to the ingest task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestHandle {
    tx: mpsc::UnboundedSender<AckToken>,
    stats: Arc<SharedStats>,
    budget: Arc<Budget>,
}

impl IngestHandle {
    /// Mark an input as durably stored; its PUBACK goes out as soon as every
    /// input received before it is stored too.
    pub async fn ack(&self, token: AckToken) -> Result<(), MqttError> {
        self.try_ack(token)
    }

    /// [`ack`](Self::ack) without `async`, for the store's writer thread.
    /// Never blocks.
    pub fn try_ack(&self, token: AckToken) -> Result<(), MqttError> {
        self.tx
            .send(token)
            .map_err(|_| MqttError::Stopped("ingest"))
    }

    /// Connection counters.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            held_input_bytes: self.budget.held() as u64,
            ..self.stats.snapshot()
        }
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
}

/// Start the ingest connection. Inputs arrive on `deliver`, stamped with
/// the system clock's time of arrival; the task ends
/// after `shutdown` is cancelled (clean DISCONNECT, session kept), or with
/// [`MqttError::DeliverClosed`] if `deliver`'s receiver is dropped (also
/// after a clean DISCONNECT), or [`MqttError::Config`] at once.
pub fn spawn_ingest(
    cfg: BrokerConfig,
    prefix: String,
    deliver: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) -> (IngestHandle, JoinHandle<Result<(), MqttError>>) {
    spawn_ingest_with_clock(cfg, prefix, deliver, shutdown, Clock::system())
}

/// [`spawn_ingest`], each input stamped with `clock`'s time of arrival
/// ([`Incoming::received_at_ms`]).
pub fn spawn_ingest_with_clock(
    cfg: BrokerConfig,
    prefix: String,
    deliver: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
    clock: Clock,
) -> (IngestHandle, JoinHandle<Result<(), MqttError>>) {
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let stats = Arc::new(SharedStats::default());
    let budget = Budget::new(cfg.held_input_bytes);
    let handle = IngestHandle {
        tx: ack_tx,
        stats: Arc::clone(&stats),
        budget: Arc::clone(&budget),
    };
    let task = tokio::spawn(run(
        cfg,
        prefix,
        deliver,
        shutdown,
        ack_rx,
        Accounting {
            stats,
            clock,
            budget,
        },
    ));
    (handle, task)
}

/// What the ingest's two halves count and time with.
struct Accounting {
    stats: Arc<SharedStats>,
    clock: Clock,
    /// The byte budget of received input in hand.
    budget: Arc<Budget>,
}

async fn run(
    cfg: BrokerConfig,
    prefix: String,
    deliver: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
    ack_rx: mpsc::UnboundedReceiver<AckToken>,
    accounting: Accounting,
) -> Result<(), MqttError> {
    let Accounting {
        stats,
        clock,
        budget,
    } = accounting;
    cfg.validate()?;
    let mut options = mqtt_options(&cfg, false);
    options.set_manual_acks(true);
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let driver = Driver {
        role: "ingest",
        options,
        tx,
        stop: stop.clone(),
        stats: Arc::clone(&stats),
        budget: Some(budget),
    };
    let logic = Logic {
        client_id: cfg.client_id.clone(),
        filters: input_filters(&prefix),
        topics: Topics::new(&prefix),
        drain_timeout: cfg.drain_timeout,
        stats,
        current: None,
        acks: AckQueue::default(),
        unsent: VecDeque::new(),
        undelivered: VecDeque::new(),
        next_seq: 0,
        subscribed_this_run: false,
        stopping: false,
        warned_qos0: false,
        clock,
    };
    // Both halves run in this one task: aborting it drops the event loop
    // (the TCP connection closes without DISCONNECT).
    let ((), result) = tokio::join!(driver.run(), logic.run(rx, ack_rx, deliver, shutdown, stop));
    result
}

/// The current connection.
struct Conn {
    generation: u64,
    client: AsyncClient,
}

struct Logic {
    client_id: String,
    filters: Vec<String>,
    /// Recognises the daemon's own outputs among what the filters match.
    topics: Topics,
    drain_timeout: Duration,
    stats: Arc<SharedStats>,
    current: Option<Conn>,
    /// Received QoS 1 inputs of the current connection, in arrival order.
    acks: AckQueue,
    /// PUBACKs due (in order) that rumqttc's request queue had no room for:
    /// sent first at the next chance. The logic never waits on that queue
    /// (the driver may not be reading while the byte budget is used up).
    unsent: VecDeque<(u16, QoS)>,
    /// Received, not yet handed to `deliver`.
    undelivered: VecDeque<Incoming>,
    next_seq: u64,
    /// A SUBACK granting every filter was received during this run.
    subscribed_this_run: bool,
    stopping: bool,
    warned_qos0: bool,
    /// Stamps each input's arrival.
    clock: Clock,
}

/// How often deferred PUBACKs ([`Logic::unsent`]) are tried again.
const ACK_RETRY_EVERY: Duration = Duration::from_millis(20);
/// How often to look for an input whose ack is overdue.
const STUCK_CHECK_EVERY: Duration = Duration::from_secs(30);
/// An input not acknowledged after this long is worth a warning.
const STUCK_AFTER: Duration = Duration::from_secs(60);
impl Logic {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<DriverMsg>,
        mut ack_rx: mpsc::UnboundedReceiver<AckToken>,
        deliver: mpsc::Sender<Incoming>,
        shutdown: CancellationToken,
        stop: CancellationToken,
    ) -> Result<(), MqttError> {
        // However this ends, the driver ends with it.
        let _stop_driver = stop.drop_guard();
        let mut stuck_check = tokio::time::interval(STUCK_CHECK_EVERY);
        stuck_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deliver_closed = false;
        // Deferred PUBACKs are tried again this often.
        let mut retry = tokio::time::interval(ACK_RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(m) => self.on_driver(m).await,
                    None => return Err(MqttError::DriverGone),
                },
                Some(token) = ack_rx.recv() => self.on_ack(token).await,
                permit = deliver.reserve(), if !self.undelivered.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(incoming) = self.undelivered.pop_front() {
                            permit.send(incoming);
                        }
                    }
                    Err(_) => {
                        error!(client_id = %self.client_id,
                            "the receiver of incoming MQTT messages was dropped; stopping ingest");
                        deliver_closed = true;
                        break;
                    }
                },
                _ = stuck_check.tick() => self.check_stuck(),
                _ = retry.tick(), if !self.unsent.is_empty() => self.send_ready_acks().await,
            }
        }

        self.shutdown(&mut rx, &mut ack_rx).await;
        if deliver_closed {
            Err(MqttError::DeliverClosed)
        } else {
            Ok(())
        }
    }

    async fn on_driver(&mut self, msg: DriverMsg) {
        match msg {
            DriverMsg::Connected {
                generation,
                client,
                session_present,
            } => {
                self.acks.clear();
                self.unsent.clear();
                if !session_present || !self.subscribed_this_run {
                    let filters = self
                        .filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.subscribe_many(filters).await {
                        // The connection is already gone; the next one retries.
                        debug!(client_id = %self.client_id, error = %e, "SUBSCRIBE not sent");
                    } else {
                        debug!(client_id = %self.client_id, session_present, "SUBSCRIBE sent");
                    }
                }
                self.current = Some(Conn { generation, client });
            }
            DriverMsg::Event {
                generation,
                event,
                held,
            } => {
                if self.current.as_ref().map(|c| c.generation) != Some(generation) {
                    return;
                }
                match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        let received = self.on_publish(generation, p, held);
                        if received == Received::OwnOutput {
                            self.send_ready_acks().await;
                        }
                    }
                    Event::Incoming(Packet::SubAck(s)) => {
                        let refused = s
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                            .count();
                        if refused == 0 {
                            self.subscribed_this_run = true;
                            self.stats.subscribed();
                            info!(client_id = %self.client_id, filters = ?self.filters,
                                "subscribed to the input topics");
                        } else {
                            error!(client_id = %self.client_id, refused, filters = ?self.filters,
                                "the broker refused input subscriptions (ACL?); those inputs are not received");
                        }
                    }
                    _ => {}
                }
            }
            DriverMsg::Lost { generation } => {
                if self.current.as_ref().map(|c| c.generation) == Some(generation) {
                    self.current = None;
                    let unacked = self.acks.len();
                    self.acks.clear();
                    self.unsent.clear();
                    if unacked > 0 {
                        info!(client_id = %self.client_id, unacked,
                            "connection lost with inputs not yet acknowledged; the broker will redeliver them");
                    }
                }
            }
        }
    }

    fn on_publish(&mut self, generation: u64, p: Publish, held: Option<Held>) -> Received {
        if self.stopping {
            debug!(client_id = %self.client_id, topic = %p.topic,
                "input received during shutdown; not delivered (the broker will redeliver it)");
            return Received::Input;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let needs_ack = p.qos != QoS::AtMostOnce;
        if self.topics.is_own_output(&p.topic) {
            // Ours: acknowledged in its turn, never delivered.
            if needs_ack {
                self.acks.push(seq, p.pkid, p.qos);
                self.acks.mark_done(seq);
            }
            return Received::OwnOutput;
        }
        trace!(client_id = %self.client_id, pkid = p.pkid, seq, "input received");
        if needs_ack {
            self.acks.push(seq, p.pkid, p.qos);
        } else if !self.warned_qos0 {
            self.warned_qos0 = true;
            warn!(client_id = %self.client_id, topic = %p.topic,
                "input published at QoS 0 (the contract says QoS 1): it cannot be acknowledged \
                 and may be lost by the broker; further QoS 0 inputs are not logged");
        }
        if p.dup {
            debug!(client_id = %self.client_id, topic = %p.topic, pkid = p.pkid, "redelivered input");
        }
        self.undelivered.push_back(Incoming {
            topic: p.topic,
            payload: p.payload,
            received_at_ms: self.clock.now_ms(),
            retain: p.retain,
            qos0: !needs_ack,
            ack: AckToken {
                generation,
                seq,
                needs_ack,
                _held: held,
            },
        });
        Received::Input
    }

    async fn on_ack(&mut self, token: AckToken) {
        if !token.needs_ack {
            return;
        }
        let Some(conn) = &self.current else {
            debug!(client_id = %self.client_id, token_generation = token.generation,
                "ack while disconnected discarded; the broker will redeliver that input");
            return;
        };
        if conn.generation != token.generation {
            debug!(client_id = %self.client_id, token_generation = token.generation,
                current_generation = conn.generation,
                "ack from an earlier connection discarded; the broker will redeliver that input");
            return;
        }
        match self.acks.mark_done(token.seq) {
            Mark::Done => {}
            Mark::Unknown => {
                debug!(client_id = %self.client_id, seq = token.seq, "ack for an unknown input ignored");
                return;
            }
        }
        self.send_ready_acks().await;
    }

    /// Send the PUBACKs of the done inputs at the front of the queue,
    /// without waiting: what rumqttc's request queue has no room for now
    /// stays in `unsent` (in order) for the next call.
    async fn send_ready_acks(&mut self) {
        let Some(conn) = &self.current else {
            self.unsent.clear();
            return;
        };
        self.unsent.extend(self.acks.pop_ready());
        while let Some(&(pkid, qos)) = self.unsent.front() {
            let mut p = Publish::new("", qos, Vec::new());
            p.pkid = pkid;
            if conn.client.try_ack(&p).is_err() {
                // Full (the driver is not reading just now) or closed (the
                // connection died: cleared with it, and the broker
                // redelivers): tried again at the next chance.
                trace!(client_id = %self.client_id, pkid, unsent = self.unsent.len(), "PUBACK deferred");
                break;
            }
            trace!(client_id = %self.client_id, pkid, "PUBACK");
            self.unsent.pop_front();
        }
    }

    fn check_stuck(&self) {
        if let Some(age) = self.acks.oldest_pending_age() {
            if age >= STUCK_AFTER {
                warn!(client_id = %self.client_id, pending = self.acks.len(),
                    oldest_age_s = age.as_secs(),
                    "an input has not been acknowledged for over a minute; later acks wait \
                     for it (arrival order) and the broker stops sending at its in-flight window");
            }
        }
    }

    /// Stop delivering, wait (bounded) for the outstanding acks, send them,
    /// then DISCONNECT.
    async fn shutdown(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<DriverMsg>,
        ack_rx: &mut mpsc::UnboundedReceiver<AckToken>,
    ) {
        self.stopping = true;
        // Inputs never handed over will not be acked: drop their slots so
        // they do not hold back the acks of those that were (they are the
        // newest, so arrival order is kept). The broker redelivers them.
        let current = self.current.as_ref().map(|c| c.generation);
        let not_delivered = self.undelivered.len();
        for incoming in self.undelivered.drain(..) {
            if incoming.ack.needs_ack && Some(incoming.ack.generation) == current {
                self.acks.remove(incoming.ack.seq);
            }
        }
        info!(client_id = %self.client_id, outstanding = self.acks.len(), not_delivered,
            "ingest shutting down; waiting for outstanding acks");

        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        while !self.acks.is_empty() {
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(client_id = %self.client_id, unacked = self.acks.len(),
                        "shutdown: inputs not acknowledged in time; the broker will redeliver them");
                    break;
                }
                msg = rx.recv() => match msg {
                    Some(m) => self.on_driver(m).await,
                    None => return,
                },
                Some(token) = ack_rx.recv() => self.on_ack(token).await,
            }
        }
        // The PUBACKs still deferred: waited for now (bounded), before the
        // DISCONNECT.
        if let Some(conn) = &self.current {
            while let Some((pkid, qos)) = self.unsent.pop_front() {
                let mut p = Publish::new("", qos, Vec::new());
                p.pkid = pkid;
                match tokio::time::timeout(Duration::from_secs(2), conn.client.ack(&p)).await {
                    Ok(Ok(())) => {}
                    _ => {
                        debug!(client_id = %self.client_id, "PUBACK not sent at shutdown; the broker will redeliver");
                        break;
                    }
                }
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
            Some(true) => info!(client_id = %self.client_id, "ingest disconnected cleanly"),
        }
    }
}

/// What [`Logic::on_publish`] made of a PUBLISH.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    /// Delivered (or left for the broker to redeliver).
    Input,
    /// The daemon's own output: done at once, not delivered.
    OwnOutput,
}

/// Received QoS 1/2 inputs of one connection, in arrival order, each marked
/// done when the service acks it. PUBACKs leave from the front only.
#[derive(Debug, Default)]
struct AckQueue {
    slots: VecDeque<Slot>,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    pkid: u16,
    qos: QoS,
    done: bool,
    received: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum Mark {
    Done,
    Unknown,
}

impl AckQueue {
    /// Append an input (`seq` larger than every earlier one).
    fn push(&mut self, seq: u64, pkid: u16, qos: QoS) {
        self.slots.push_back(Slot {
            seq,
            pkid,
            qos,
            done: false,
            received: Instant::now(),
        });
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&seq, |s| s.seq).ok()
    }

    fn mark_done(&mut self, seq: u64) -> Mark {
        match self.position(seq) {
            Some(i) => {
                self.slots[i].done = true;
                Mark::Done
            }
            None => Mark::Unknown,
        }
    }

    /// Remove the done inputs at the front: their PUBACKs may go out now, in
    /// this order.
    fn pop_ready(&mut self) -> Vec<(u16, QoS)> {
        let mut ready = Vec::new();
        while self.slots.front().is_some_and(|s| s.done) {
            if let Some(s) = self.slots.pop_front() {
                ready.push((s.pkid, s.qos));
            }
        }
        ready
    }

    fn remove(&mut self, seq: u64) {
        if let Some(i) = self.position(seq) {
            self.slots.remove(i);
        }
    }

    fn oldest_pending_age(&self) -> Option<Duration> {
        self.slots
            .iter()
            .find(|s| !s.done)
            .map(|s| s.received.elapsed())
    }

    fn clear(&mut self) {
        self.slots.clear();
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(n: u16) -> AckQueue {
        let mut q = AckQueue::default();
        for i in 0..n {
            // seq and pkid differ on purpose; seqs have gaps (QoS 0 inputs).
            q.push(u64::from(i) * 2 + 10, i + 1, QoS::AtLeastOnce);
        }
        q
    }

    fn pkids(v: Vec<(u16, QoS)>) -> Vec<u16> {
        v.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn in_order_acks_release_one_by_one() {
        let mut q = queue(3);
        assert_eq!(q.mark_done(10), Mark::Done);
        assert_eq!(pkids(q.pop_ready()), vec![1]);
        assert_eq!(q.mark_done(12), Mark::Done);
        assert_eq!(pkids(q.pop_ready()), vec![2]);
        assert_eq!(q.mark_done(14), Mark::Done);
        assert_eq!(pkids(q.pop_ready()), vec![3]);
        assert!(q.is_empty());
    }

    #[test]
    fn reverse_acks_release_everything_in_arrival_order_at_the_end() {
        let mut q = queue(5);
        for seq in [18, 16, 14, 12] {
            assert_eq!(q.mark_done(seq), Mark::Done);
            assert!(q.pop_ready().is_empty(), "nothing before the front is done");
        }
        assert_eq!(q.mark_done(10), Mark::Done);
        assert_eq!(pkids(q.pop_ready()), vec![1, 2, 3, 4, 5]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_gap_holds_back_later_acks() {
        let mut q = queue(4);
        q.mark_done(10);
        q.mark_done(14);
        q.mark_done(16);
        assert_eq!(pkids(q.pop_ready()), vec![1]);
        assert_eq!(q.len(), 3);
        assert!(q.oldest_pending_age().is_some());
        q.mark_done(12);
        assert_eq!(pkids(q.pop_ready()), vec![2, 3, 4]);
        assert_eq!(q.oldest_pending_age(), None);
    }

    #[test]
    fn unknown_and_removed_inputs() {
        let mut q = queue(3);
        assert_eq!(q.mark_done(11), Mark::Unknown);
        assert_eq!(q.mark_done(99), Mark::Unknown);
        q.remove(14);
        assert_eq!(q.mark_done(14), Mark::Unknown);
        q.mark_done(10);
        q.mark_done(12);
        assert_eq!(pkids(q.pop_ready()), vec![1, 2]);
        assert!(q.is_empty());
    }
}
