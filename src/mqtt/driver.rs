//! The connection driver: the only code that polls a rumqttc `EventLoop`.
//!
//! It owns connecting, reconnecting with [`Backoff`], outage logging (the
//! first failure, then every 30 s, then the recovery: never one line per
//! attempt), and the connection counters. It forwards everything rumqttc
//! yields to the connection's logic over an unbounded channel, so it never
//! waits on the logic. What that channel holds is bounded in bytes by the
//! ingest's [`Budget`]: each received PUBLISH takes its share here, and while
//! the budget is used up the driver does not read the connection (it polls
//! only every keep-alive / 3, to send the queued PUBACKs and the ping).
//! (A QoS 1 flood is also bounded by the broker's in-flight window: the
//! logic withholds acks until the store has the input; a QoS 0 flood only
//! by the budget.)
//!
//! Every connection attempt gets a fresh `AsyncClient` + `EventLoop`, with a
//! new *generation* number once connected. A request made on a dead
//! generation's client goes nowhere: a PUBACK meant for one connection can
//! never be sent on the next (the broker redelivers instead), and no stale
//! in-flight or packet-id collision state survives a reconnect (rumqttc
//! #1014, #1056).
//!
//! `poll()` is never cancelled while a connection is up, except when the
//! logic stops the driver at the very end: rumqttc's `poll` is not
//! cancel-safe (a request taken from the channel can be lost mid-write).

use super::budget::{self, Budget, Held};
use super::{Backoff, SharedStats};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, StateError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Capacity of rumqttc's request channel (logic → event loop).
const REQUEST_CAPACITY: usize = 64;

/// While the broker stays unreachable, log again this often.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(30);

/// After our DISCONNECT, how long to wait for the broker to close the
/// connection.
pub(crate) const DISCONNECT_LINGER: Duration = Duration::from_secs(2);

/// How long sending the DISCONNECT may take.
pub(crate) const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Send DISCONNECT and wait (bounded) until the driver reports the
/// connection gone, i.e. until the broker has closed it after reading
/// everything written before the DISCONNECT (the last PUBACKs). `None`:
/// DISCONNECT could not be sent; `Some(confirmed)` otherwise.
pub(crate) async fn disconnect_and_wait(
    client: &AsyncClient,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<DriverMsg>,
) -> Option<bool> {
    match tokio::time::timeout(DISCONNECT_TIMEOUT, client.disconnect()).await {
        Ok(Ok(())) => {}
        _ => return None,
    }
    let lost = async {
        while let Some(msg) = rx.recv().await {
            if let DriverMsg::Lost { .. } = msg {
                break;
            }
        }
    };
    Some(
        tokio::time::timeout(DISCONNECT_TIMEOUT + DISCONNECT_LINGER, lost)
            .await
            .is_ok(),
    )
}

/// A connection that stayed up this long resets the back-off. A connection
/// that is accepted and dropped at once (another process taking the session
/// over with the same client id, a broker refusing a packet) keeps backing
/// off instead of reconnecting ten times a second forever.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// What the driver tells the connection's logic, in order.
pub(crate) enum DriverMsg {
    /// A CONNACK was received: a new generation starts.
    Connected {
        generation: u64,
        client: AsyncClient,
        session_present: bool,
    },
    /// Something rumqttc yielded on that generation's connection; a
    /// received PUBLISH comes with its share of the ingest's byte budget.
    Event {
        generation: u64,
        event: Event,
        held: Option<Held>,
    },
    /// That generation's connection failed; the driver is reconnecting.
    Lost { generation: u64 },
}

pub(crate) struct Driver {
    pub(crate) role: &'static str,
    pub(crate) options: MqttOptions,
    pub(crate) tx: UnboundedSender<DriverMsg>,
    /// Cancelled by the logic when it is done (after DISCONNECT, or when it
    /// gives up waiting for it).
    pub(crate) stop: CancellationToken,
    pub(crate) stats: Arc<SharedStats>,
    /// The ingest's byte budget: while it is used up, the connection is not
    /// read (see [`super::budget`]). `None` for the other connections.
    pub(crate) budget: Option<Arc<Budget>>,
}

/// The state of an outage, for logging it without spam.
struct Outage {
    since: Instant,
    failed_attempts: u64,
    last_logged: Instant,
}

impl Driver {
    /// Connect, forward, reconnect, until stopped, until the logic's receiver
    /// is gone, or until our DISCONNECT is sent and the broker has closed the
    /// connection (at most [`DISCONNECT_LINGER`] later).
    pub(crate) async fn run(self) {
        let (host, port) = self.options.broker_address();
        let broker = format!("{host}:{port}");
        let client_id = self.options.client_id();
        let role = self.role;
        let mut backoff = Backoff::new();
        let mut outage: Option<Outage> = None;
        let mut generation = 0u64;

        loop {
            let (client, mut eventloop) = AsyncClient::new(self.options.clone(), REQUEST_CAPACITY);
            self.stats.attempt();
            let first = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                r = eventloop.poll() => r,
            };
            let connack = match first {
                Ok(Event::Incoming(Packet::ConnAck(c))) => c,
                other => {
                    let (error, problem) = match other {
                        Err(e) => {
                            let user = self.options.credentials().map(|l| l.username);
                            let problem = super::tls::explain(&e, &broker, user.as_deref());
                            (e.to_string(), problem)
                        }
                        Ok(ev) => (format!("expected CONNACK first, got {ev:?}"), None),
                    };
                    let now = Instant::now();
                    // A cause the operator must fix (TLS, login): said once
                    // per outage in its own words, again when it changes,
                    // and in the service status until a connection holds.
                    if let Some(p) = &problem {
                        let changed = self.stats.problem().as_deref() != Some(p.as_str());
                        if outage.is_none() || changed {
                            error!(role, %client_id, %broker, %error, "{p}");
                        }
                    }
                    self.stats.set_problem(problem.clone());
                    self.stats.set_last_error(Some(error.clone()));
                    match &mut outage {
                        None if problem.is_some() => {
                            outage = Some(Outage {
                                since: now,
                                failed_attempts: 1,
                                last_logged: now,
                            });
                        }
                        None => {
                            warn!(role, %client_id, %broker, %error,
                                "cannot connect to the MQTT broker; retrying with back-off");
                            outage = Some(Outage {
                                since: now,
                                failed_attempts: 1,
                                last_logged: now,
                            });
                        }
                        Some(o) => {
                            o.failed_attempts += 1;
                            if now.duration_since(o.last_logged) >= OUTAGE_LOG_EVERY {
                                o.last_logged = now;
                                let cause = problem.as_deref().unwrap_or("retrying with back-off");
                                warn!(role, %client_id, %broker, %error,
                                    outage_s = now.duration_since(o.since).as_secs(),
                                    failed_attempts = o.failed_attempts,
                                    "still cannot connect to the MQTT broker: {cause}");
                            } else {
                                debug!(role, %client_id, %broker, %error,
                                    failed_attempts = o.failed_attempts,
                                    "MQTT connect attempt failed");
                            }
                        }
                    }
                    if !self.sleep(backoff.next_delay()).await {
                        return;
                    }
                    continue;
                }
            };

            let first_connection = generation == 0;
            generation += 1;
            self.stats.set_connected(true);
            let session_present = connack.session_present;
            match outage.take() {
                None => info!(role, %client_id, %broker, session_present,
                    "connected to the MQTT broker"),
                Some(o) => {
                    let outage_ms = o.since.elapsed().as_millis() as u64;
                    let failed_attempts = o.failed_attempts;
                    if first_connection {
                        info!(role, %client_id, %broker, session_present, outage_ms, failed_attempts,
                            "connected to the MQTT broker");
                    } else {
                        info!(role, %client_id, %broker, session_present, outage_ms, failed_attempts,
                            "reconnected to the MQTT broker");
                    }
                }
            }
            if self
                .tx
                .send(DriverMsg::Connected {
                    generation,
                    client,
                    session_present: connack.session_present,
                })
                .is_err()
            {
                self.stats.set_connected(false);
                return;
            }

            let up_since = Instant::now();
            // While the budget is used up, poll only this often: the PUBACKs
            // queued meanwhile go out and the keep-alive ping is sent, and
            // each such poll reads at most one bounded batch.
            let paused_poll_every = (self.options.keep_alive() / 3).max(Duration::from_millis(200));
            let error = loop {
                if let Some(budget) = &self.budget {
                    if budget.full() {
                        self.stats.paused();
                        tokio::select! {
                            biased;
                            _ = self.stop.cancelled() => {
                                self.stats.set_connected(false);
                                return;
                            }
                            _ = budget.room() => {}
                            _ = tokio::time::sleep(paused_poll_every) => {}
                        }
                    }
                }
                let polled = tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => {
                        self.stats.set_connected(false);
                        return;
                    }
                    r = eventloop.poll() => r,
                };
                match polled {
                    Ok(event) => {
                        let disconnected = matches!(event, Event::Outgoing(Outgoing::Disconnect));
                        let held = match (&self.budget, &event) {
                            (Some(b), Event::Incoming(Packet::Publish(p))) => Some(
                                b.take(p.payload.len() + p.topic.len() + budget::PER_MESSAGE_BYTES),
                            ),
                            _ => None,
                        };
                        if self
                            .tx
                            .send(DriverMsg::Event {
                                generation,
                                event,
                                held,
                            })
                            .is_err()
                        {
                            self.stats.set_connected(false);
                            return;
                        }
                        if disconnected {
                            // rumqttc has written and flushed our DISCONNECT.
                            // Wait for the broker to close the connection: it
                            // has then read everything sent before (the last
                            // PUBACKs). Closing first could leave them unread,
                            // and a new connection with our client id (a quick
                            // restart) makes mosquitto drop the old one with
                            // whatever it had not read yet.
                            let closed = tokio::time::timeout(DISCONNECT_LINGER, async {
                                while let Ok(event) = eventloop.poll().await {
                                    let _ = self.tx.send(DriverMsg::Event {
                                        generation,
                                        event,
                                        held: None,
                                    });
                                }
                            })
                            .await
                            .is_ok();
                            self.stats.set_connected(false);
                            debug!(role, %client_id, closed_by_broker = closed, "MQTT DISCONNECT sent");
                            return;
                        }
                    }
                    Err(e) => break e,
                }
            };

            self.stats.set_connected(false);
            drop(eventloop);
            if let ConnectionError::MqttState(StateError::Deserialization(
                rumqttc::Error::PayloadSizeLimitExceeded(size),
            )) = &error
            {
                error!(role, %client_id, size, max = self.options.max_packet_size(),
                    "the broker sent a packet larger than max_packet_bytes; it will be \
                     redelivered on every reconnect: raise max_packet_bytes or lower the \
                     broker's max_packet_size below it");
            }
            let now = Instant::now();
            warn!(role, %client_id, %broker, error = %error,
                up_ms = now.duration_since(up_since).as_millis() as u64,
                "MQTT connection lost; reconnecting");
            outage = Some(Outage {
                since: now,
                failed_attempts: 0,
                last_logged: now,
            });
            if self.tx.send(DriverMsg::Lost { generation }).is_err() {
                return;
            }
            if now.duration_since(up_since) >= STABLE_AFTER {
                backoff.reset();
            }
            if !self.sleep(backoff.next_delay()).await {
                return;
            }
        }
    }

    /// Sleep unless stopped or the logic is gone; false when the driver must end.
    async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => false,
            _ = self.tx.closed() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
