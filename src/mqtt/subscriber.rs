//! A watching connection: what a display subscribes to.
//!
//! This module owns a plain subscriber: a clean session, QoS 0
//! subscriptions to the caller's topic filters (sent again on every
//! connection, since a clean session keeps none), and every PUBLISH received
//! handed to the caller in arrival order. At most once and nothing kept on
//! the broker: right for a view such as the demo's table, which only shows
//! the latest of each. The contract's inputs go through [`super::ingest`]
//! instead (persistent session, QoS 1, acknowledged once stored).
//!
//! Connecting, reconnecting with back-off and outage logging are the
//! driver's, as for the other connections.

use super::driver::{disconnect_and_wait, Driver, DriverMsg};
use super::{mqtt_options, BrokerConfig, ConnectionStats, MqttError, SharedStats};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// One message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
}

/// Observes the subscriber task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SubscriberHandle {
    stats: Arc<SharedStats>,
}

impl SubscriberHandle {
    /// Connection counters; `subscriptions` counts the SUBACKs that granted
    /// every filter (so `>= 1`: messages are being received).
    pub fn stats(&self) -> ConnectionStats {
        self.stats.snapshot()
    }

    /// While no connection is up: why the last attempt failed.
    pub fn connect_error(&self) -> Option<String> {
        self.stats.last_error()
    }
}

/// Start a subscriber on `filters` (QoS 0, clean session). Messages arrive
/// on `deliver`; the task ends after `shutdown` is cancelled (DISCONNECT),
/// with [`MqttError::DeliverClosed`] if `deliver`'s receiver is dropped, or
/// with [`MqttError::Config`] at once.
pub fn spawn_subscriber(
    cfg: BrokerConfig,
    filters: Vec<String>,
    deliver: mpsc::Sender<Message>,
    shutdown: CancellationToken,
) -> (SubscriberHandle, JoinHandle<Result<(), MqttError>>) {
    let stats = Arc::new(SharedStats::default());
    let handle = SubscriberHandle {
        stats: Arc::clone(&stats),
    };
    let task = tokio::spawn(run(cfg, filters, deliver, shutdown, stats));
    (handle, task)
}

async fn run(
    cfg: BrokerConfig,
    filters: Vec<String>,
    deliver: mpsc::Sender<Message>,
    shutdown: CancellationToken,
    stats: Arc<SharedStats>,
) -> Result<(), MqttError> {
    cfg.validate()?;
    if filters.is_empty() {
        return Err(MqttError::Config(
            "a subscriber needs at least one topic filter".into(),
        ));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let driver = Driver {
        role: "subscriber",
        options: mqtt_options(&cfg, true),
        tx,
        stop: stop.clone(),
        stats: Arc::clone(&stats),
        budget: None,
    };
    let logic = async move {
        // However this ends, the driver ends with it.
        let _stop_driver = stop.drop_guard();
        let mut current: Option<(u64, AsyncClient)> = None;
        let mut result = Ok(());
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => msg,
            };
            let Some(msg) = msg else {
                return Err(MqttError::DriverGone);
            };
            match msg {
                DriverMsg::Connected {
                    generation, client, ..
                } => {
                    let subscribe = filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtMostOnce));
                    if let Err(e) = client.subscribe_many(subscribe).await {
                        // The connection is already gone; the next one retries.
                        debug!(client_id = %cfg.client_id, error = %e, "SUBSCRIBE not sent");
                    }
                    current = Some((generation, client));
                }
                DriverMsg::Event {
                    generation, event, ..
                } => {
                    if current.as_ref().map(|(g, _)| *g) != Some(generation) {
                        continue;
                    }
                    match event {
                        Event::Incoming(Packet::Publish(p)) => {
                            let m = Message {
                                topic: p.topic,
                                payload: p.payload,
                            };
                            if deliver.send(m).await.is_err() {
                                result = Err(MqttError::DeliverClosed);
                                break;
                            }
                        }
                        Event::Incoming(Packet::SubAck(s)) => {
                            let refused = s
                                .return_codes
                                .iter()
                                .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                                .count();
                            if refused == 0 {
                                stats.subscribed();
                            } else {
                                warn!(client_id = %cfg.client_id, refused, filters = ?filters,
                                    "the broker refused subscriptions (ACL?)");
                            }
                        }
                        _ => {}
                    }
                }
                DriverMsg::Lost { generation } => {
                    if current.as_ref().map(|(g, _)| *g) == Some(generation) {
                        current = None;
                    }
                }
            }
        }
        if let Some((_, client)) = current {
            if disconnect_and_wait(&client, &mut rx).await == Some(false) {
                debug!(client_id = %cfg.client_id, "DISCONNECT not confirmed in time");
            }
        }
        result
    };
    // Both halves run in this one task, as for the other connections.
    let ((), result) = tokio::join!(driver.run(), logic);
    result
}
