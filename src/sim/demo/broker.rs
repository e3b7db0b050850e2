//! The demo's broker: the embedded one (rumqttd in-process, behind the
//! default cargo feature `embedded-broker`), or the external one given with
//! `--broker`.

use super::DemoError;

/// The broker the demo runs against.
pub(super) enum BrokerHandle {
    External {
        host: String,
        port: u16,
    },
    #[cfg(feature = "embedded-broker")]
    Embedded(embedded::EmbeddedBroker),
}

impl BrokerHandle {
    /// Where to connect.
    pub(super) fn address(&self) -> (String, u16) {
        match self {
            BrokerHandle::External { host, port } => (host.clone(), *port),
            #[cfg(feature = "embedded-broker")]
            BrokerHandle::Embedded(b) => ("127.0.0.1".to_owned(), b.port()),
        }
    }

    /// Stop the embedded broker (nothing for an external one).
    pub(super) fn stop(self) {
        match self {
            BrokerHandle::External { .. } => {}
            #[cfg(feature = "embedded-broker")]
            BrokerHandle::Embedded(b) => b.stop(),
        }
    }
}

/// Start the embedded broker.
#[cfg(feature = "embedded-broker")]
pub(super) fn start_embedded() -> Result<BrokerHandle, DemoError> {
    embedded::EmbeddedBroker::start().map(BrokerHandle::Embedded)
}

/// Built without the embedded broker: [`DemoError::NoBroker`].
#[cfg(not(feature = "embedded-broker"))]
pub(super) fn start_embedded() -> Result<BrokerHandle, DemoError> {
    Err(DemoError::NoBroker)
}

/// rumqttd in-process.
///
/// rumqttd's `Broker::start` blocks forever and has no stop. Instead the
/// demo uses its parts: a `Router` (its own thread; it holds a sender to
/// itself, so it idles until the process exits) and a v4 `Server` on a
/// current-thread tokio runtime on a thread of ours. Stopping drops that
/// runtime: the listener and every client connection close.
#[cfg(feature = "embedded-broker")]
pub(super) mod embedded {
    use super::DemoError;
    use std::collections::HashMap;
    use std::net::{SocketAddr, TcpListener};
    use std::thread::JoinHandle;
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// Listener attempts (a port chosen free can be taken before rumqttd
    /// binds it).
    const ATTEMPTS: usize = 3;

    /// A running embedded broker.
    pub(crate) struct EmbeddedBroker {
        port: u16,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
    }

    /// The broker's settings: MQTT 3.1.1 on 127.0.0.1:`port`, no TLS, no
    /// authentication (loopback only), payloads up to 1 MiB (the daemon's
    /// `max_packet_bytes`), any topic (`dynamic_filters`).
    pub(crate) fn config(port: u16) -> rumqttd::Config {
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let server = rumqttd::ServerSettings {
            name: "dosetrack-demo".to_owned(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 10_000,
                max_payload_size: 1024 * 1024,
                // Packets read from one connection per batch (the router's
                // own in-flight window towards each client is fixed at 100).
                max_inflight_count: 200,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: 64,
                max_outgoing_packet_count: 200,
                // In memory, per filter: far more than a demo publishes.
                max_segment_size: 16 * 1024 * 1024,
                max_segment_count: 8,
                ..rumqttd::RouterConfig::default()
            },
            v4: Some(HashMap::from([("1".to_owned(), server)])),
            ..rumqttd::Config::default()
        }
    }

    impl EmbeddedBroker {
        /// Start the broker on a free port of 127.0.0.1. It accepts
        /// connections shortly after (the caller's first connection
        /// retries).
        pub(crate) fn start() -> Result<EmbeddedBroker, DemoError> {
            let mut last = String::new();
            for _ in 0..ATTEMPTS {
                let port = free_port().map_err(|e| {
                    DemoError::EmbeddedBroker(format!("no free port on 127.0.0.1: {e}"))
                })?;
                let cfg = config(port);
                let Some(settings) = cfg.v4.as_ref().and_then(|v| v.values().next()).cloned()
                else {
                    return Err(DemoError::EmbeddedBroker("no listener configured".into()));
                };
                let router_tx = rumqttd::Router::new(cfg.id, cfg.router.clone()).spawn();
                let mut server =
                    rumqttd::Server::new(settings, router_tx, rumqttd::protocol::v4::V4);
                let (stop_tx, stop_rx) = oneshot::channel::<()>();
                // Only a failure is ever sent: why it could not listen.
                let (bound_tx, bound_rx) = std::sync::mpsc::channel::<String>();
                let thread = std::thread::Builder::new()
                    .name("dosetrack-demo-broker".to_owned())
                    .spawn(move || {
                        let runtime = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(r) => r,
                            Err(e) => {
                                let _ = bound_tx.send(format!("runtime: {e}"));
                                return;
                            }
                        };
                        runtime.block_on(async move {
                            tokio::select! {
                                r = server.start(rumqttd::LinkType::Remote) => {
                                    // It only returns when it cannot listen.
                                    let _ = bound_tx.send(match r {
                                        Ok(()) => "the listener stopped".to_owned(),
                                        Err(e) => e.to_string(),
                                    });
                                }
                                _ = stop_rx => {}
                            }
                        });
                        // Dropping the runtime closes the listener and every
                        // connection.
                    })
                    .map_err(|e| DemoError::EmbeddedBroker(format!("thread: {e}")))?;
                // A bind failure shows at once; otherwise it is listening.
                if let Ok(e) = bound_rx.recv_timeout(Duration::from_millis(200)) {
                    last = e;
                    let _ = thread.join();
                    continue;
                }
                return Ok(EmbeddedBroker {
                    port,
                    stop: Some(stop_tx),
                    thread: Some(thread),
                });
            }
            Err(DemoError::EmbeddedBroker(format!(
                "could not listen on 127.0.0.1 after {ATTEMPTS} attempts: {last}"
            )))
        }

        pub(crate) fn port(&self) -> u16 {
            self.port
        }

        /// Close the listener and every connection.
        pub(crate) fn stop(mut self) {
            self.shutdown();
        }

        fn shutdown(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    impl Drop for EmbeddedBroker {
        fn drop(&mut self) {
            self.shutdown();
        }
    }

    /// A port of 127.0.0.1 that was free a moment ago (the OS chose it).
    pub(crate) fn free_port() -> std::io::Result<u16> {
        let l = TcpListener::bind(("127.0.0.1", 0))?;
        Ok(l.local_addr()?.port())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    #[cfg(feature = "embedded-broker")]
    use super::*;
    #[cfg(feature = "embedded-broker")]
    use std::time::{Duration, Instant};

    #[cfg(feature = "embedded-broker")]
    #[test]
    fn the_embedded_broker_listens_until_stopped() {
        let b = embedded::EmbeddedBroker::start().unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], b.port()));
        let until = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < until, "the broker listens");
            std::thread::sleep(Duration::from_millis(20));
        }
        b.stop();
        assert!(std::net::TcpStream::connect(addr).is_err(), "stopped");
    }
}
