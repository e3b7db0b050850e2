//! A blocking MQTT client for the tests that drive the daemon from plain
//! (non-async) test functions: a rumqttc client on a runtime of its own that
//! publishes at QoS 1, records every message its subscriptions deliver (with
//! the payload parsed as JSON) and counts PUBACKs.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One message delivered to the client.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The payload as JSON (`Null` when it is not).
    pub json: Value,
    pub retain: bool,
}

pub(crate) struct BlockingClient {
    rt: tokio::runtime::Runtime,
    client: AsyncClient,
    received: Arc<Mutex<Vec<Received>>>,
    pubacks: Arc<AtomicUsize>,
}

/// Options for `id` at `host:port`: keep-alive 30 s, packets up to 4 MiB.
pub(crate) fn options(host: &str, port: u16, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    opts
}

/// The daemon's outputs under `prefix` a test watches: every patient's
/// state, the rejections and the status.
pub(crate) fn output_filters(prefix: &str) -> Vec<String> {
    vec![
        format!("{prefix}/v1/patients/+/state"),
        format!("{prefix}/v1/rejected"),
        format!("{prefix}/v1/status"),
    ]
}

impl BlockingClient {
    /// Connect with [`options`] and subscribe to `filters` at QoS 1.
    pub(crate) fn connect(host: &str, port: u16, id: &str, filters: &[String]) -> BlockingClient {
        BlockingClient::connect_with(options(host, port, id), 1000, filters)
    }

    /// Connect with `opts` (a request queue of `capacity`), subscribe to
    /// `filters` at QoS 1 and wait (10 s at most) for a SUBACK each.
    pub(crate) fn connect_with(
        opts: MqttOptions,
        capacity: usize,
        filters: &[String],
    ) -> BlockingClient {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (client, mut eventloop) = AsyncClient::new(opts, capacity);
        let received = Arc::new(Mutex::new(Vec::new()));
        let pubacks = Arc::new(AtomicUsize::new(0));
        let (sink, acks) = (received.clone(), pubacks.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let n = filters.len();
        rt.spawn(async move {
            let mut subacks = 0;
            let mut ready = Some(ready_tx);
            if n == 0 {
                let _ = ready.take().map(|r| r.send(()));
            }
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == n {
                            let _ = ready.take().map(|r| r.send(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        sink.lock().unwrap().push(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            json,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let c = client.clone();
        let filters = filters.to_vec();
        rt.block_on(async move {
            for f in filters {
                c.subscribe(f, QoS::AtLeastOnce).await.unwrap();
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        BlockingClient {
            rt,
            client,
            received,
            pubacks,
        }
    }

    /// Queue a QoS 1 publish (not retained).
    pub(crate) fn publish(&self, topic: String, payload: impl Into<Vec<u8>>) {
        let c = self.client.clone();
        let payload = payload.into();
        self.rt
            .block_on(async move { c.publish(topic, QoS::AtLeastOnce, false, payload).await })
            .unwrap();
    }

    /// Queue a QoS 1 publish with the retain flag set.
    pub(crate) fn publish_retained(&self, topic: String, payload: impl Into<Vec<u8>>) {
        let c = self.client.clone();
        let payload = payload.into();
        self.rt
            .block_on(async move { c.publish(topic, QoS::AtLeastOnce, true, payload).await })
            .unwrap();
    }

    /// Everything delivered so far, in order.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The JSON payloads delivered on `topic`, in order.
    pub(crate) fn json_on(&self, topic: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .map(|m| m.json.clone())
            .collect()
    }

    /// PUBACKs received so far.
    pub(crate) fn pubacks(&self) -> usize {
        self.pubacks.load(Ordering::SeqCst)
    }
}

/// A [`BlockingClient`] for one topic prefix: publishes to and reads
/// `{prefix}/v1/{suffix}`.
pub(crate) struct PrefixClient {
    pub inner: BlockingClient,
    pub prefix: String,
}

impl PrefixClient {
    /// Connected as `id` and watching the daemon's outputs under `prefix`
    /// ([`output_filters`]).
    pub(crate) fn watching_outputs(host: &str, port: u16, id: &str, prefix: &str) -> PrefixClient {
        PrefixClient {
            inner: BlockingClient::connect(host, port, id, &output_filters(prefix)),
            prefix: prefix.to_owned(),
        }
    }

    /// `{prefix}/v1/{suffix}`.
    pub(crate) fn topic(&self, suffix: &str) -> String {
        format!("{}/v1/{suffix}", self.prefix)
    }

    /// Publish to `{prefix}/v1/{suffix}` at QoS 1.
    pub(crate) fn publish(&self, suffix: &str, payload: impl Into<Vec<u8>>) {
        self.inner.publish(self.topic(suffix), payload);
    }

    /// The JSON payloads delivered on `{prefix}/v1/{suffix}`, in order.
    pub(crate) fn on(&self, suffix: &str) -> Vec<Value> {
        self.inner.json_on(&self.topic(suffix))
    }
}
