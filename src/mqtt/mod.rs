//! The daemon's MQTT edge (MQTT 3.1.1 over rumqttc): broker settings, the
//! contract's input subscriptions, and the two connections the daemon keeps.
//!
//! This module owns:
//!
//! * [`BrokerConfig`] and the one place where rumqttc options, including the
//!   transport, are built from it ([`mqtt_options`]);
//! * the input topic filters of the contract ([`input_filters`]);
//! * the errors of this layer ([`MqttError`]) and connection counters
//!   ([`ConnectionStats`]).
//!
//! Its submodules own the rest:
//!
//! * [`ingest`]: the input connection (persistent session, QoS 1, manual
//!   acknowledgements sent in arrival order only when the store says so);
//! * [`publisher`]: the output connection (QoS 1 publishes, publish
//!   confirmation, retained online/offline status with a last will);
//! * [`subscriber`]: a plain watching connection (clean session, QoS 0
//!   subscriptions to any filters), for displays such as the demo's table;
//! * [`backoff`]: the reconnect delay (rumqttc has none of its own);
//! * [`tls`]: the rustls client configuration built from the CA and client
//!   certificate files, and the explanation of failures only the operator
//!   can fix (TLS handshake, login refused);
//! * `driver` (private): the task that drives one rumqttc event loop per
//!   connection, reconnects with back-off and logs outages.
//!
//! Each connection is one tokio task in which a *driver* (polls rumqttc's
//! event loop, never cancelled while connected) and a *logic* part (acks,
//! delivery, outbox) run concurrently. Every connection attempt gets a fresh
//! rumqttc `EventLoop`: an acknowledgement or publish requested on a
//! connection that has since died can never leak onto the next one.

mod backoff;
pub mod budget;
mod driver;
mod ingest;
mod publisher;
mod subscriber;
pub mod tls;

pub use backoff::Backoff;
pub use ingest::{spawn_ingest, spawn_ingest_with_clock, AckToken, Incoming, IngestHandle};
pub use publisher::{spawn_plain_publisher, spawn_publisher, Confirmation, Publisher};
pub use subscriber::{spawn_subscriber, Message, SubscriberHandle};
pub use tls::TlsClient;

use crate::contract::Topics;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Where and how to connect to the broker. One value per connection: the
/// ingest and the publisher need different `client_id`s (e.g. `dosetrack`
/// and `dosetrack-pub`). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    /// Fixed per deployment: the broker keeps the ingest's session (its
    /// subscriptions and unacknowledged inputs) under this id.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `Some`: TLS with this configuration (CA, optional client
    /// certificate); `None`: plain TCP.
    pub tls: Option<TlsClient>,
    /// MQTT keep-alive; 0 (off) or at least 1 s. Default 30 s.
    pub keep_alive: Duration,
    /// Largest packet accepted from or sent to the broker, in bytes. Default
    /// 1 MiB: larger than the contract's 64 KiB, so an over-size input still
    /// reaches the service (which rejects it as `too_large`, stores and acks
    /// it) instead of failing the connection and being redelivered forever.
    /// The broker's own `max_packet_size` should be at most this.
    pub max_packet_bytes: usize,
    /// Most outgoing QoS 1 publishes awaiting a PUBACK. Default 100.
    pub inflight: u16,
    /// On shutdown, how long to wait for outstanding acknowledgements
    /// (ingest) or unconfirmed publishes (publisher) before disconnecting.
    /// Default 5 s.
    pub drain_timeout: Duration,
    /// Ingest only: most bytes of received input held at once, from the
    /// socket to the acknowledgement ([`budget`]); while they are held the
    /// connection is not read. Default 16 MiB.
    pub held_input_bytes: usize,
}

impl BrokerConfig {
    /// Defaults for everything but the address and the client id.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> BrokerConfig {
        BrokerConfig {
            host: host.into(),
            port,
            client_id: client_id.into(),
            username: None,
            password: None,
            tls: None,
            keep_alive: Duration::from_secs(30),
            max_packet_bytes: 1024 * 1024,
            inflight: 100,
            drain_timeout: Duration::from_secs(5),
            held_input_bytes: 16 * 1024 * 1024,
        }
    }

    /// Check what rumqttc would otherwise panic on (an empty client id with a
    /// persistent session, a sub-second keep-alive, zero in-flight) and what
    /// would make every connection fail.
    pub fn validate(&self) -> Result<(), MqttError> {
        if self.client_id.is_empty() {
            return Err(MqttError::Config("client_id must not be empty".into()));
        }
        if self.host.is_empty() {
            return Err(MqttError::Config("host must not be empty".into()));
        }
        if !self.keep_alive.is_zero() && self.keep_alive < Duration::from_secs(1) {
            return Err(MqttError::Config(
                "keep_alive must be 0 (off) or at least 1 s".into(),
            ));
        }
        if self.keep_alive.as_secs() > u64::from(u16::MAX) {
            return Err(MqttError::Config(format!(
                "keep_alive must be at most {} s",
                u16::MAX
            )));
        }
        if self.inflight == 0 {
            return Err(MqttError::Config("inflight must be at least 1".into()));
        }
        // A PUBACK, SUBSCRIBE or status publish must fit.
        if self.max_packet_bytes < 1024 {
            return Err(MqttError::Config(
                "max_packet_bytes must be at least 1024".into(),
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(MqttError::Config(
                "a password needs a username (MQTT 3.1.1)".into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("keep_alive", &self.keep_alive)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("inflight", &self.inflight)
            .field("drain_timeout", &self.drain_timeout)
            .field("held_input_bytes", &self.held_input_bytes)
            .finish()
    }
}

/// Errors of the MQTT layer. Connection failures are not errors here: they
/// are retried with back-off and logged.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The configuration cannot work (see [`BrokerConfig::validate`]).
    #[error("invalid MQTT configuration: {0}")]
    Config(String),
    /// The connection's task has ended (shut down, or failed).
    #[error("the MQTT {0} task has stopped")]
    Stopped(&'static str),
    /// The receiver of incoming messages was dropped while the ingest ran.
    #[error("the receiver of incoming MQTT messages was dropped")]
    DeliverClosed,
    /// A topic that cannot be published to (empty, wildcards, NUL, too long).
    #[error("cannot publish to topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    /// The publish would exceed `max_packet_bytes`.
    #[error("a publish of {size} bytes to {topic:?} exceeds max_packet_bytes ({max})")]
    TooLarge {
        topic: String,
        size: usize,
        max: usize,
    },
    /// The connection driver ended while the connection was still in use.
    #[error("the MQTT connection driver ended unexpectedly")]
    DriverGone,
}

/// The input space's topic filters under `prefix` (QoS 1 subscriptions of
/// the ingest connection; [`Topics::input_filters`]): wider than the five
/// inputs, so that an unknown leaf is rejected `unknown_topic` rather than
/// never seen. The daemon's own outputs they match are ignored by the
/// ingest ([`Topics::is_own_output`]).
pub fn input_filters(prefix: &str) -> Vec<String> {
    Topics::new(prefix).input_filters()
}

/// Counters of one connection, for health checks, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// TCP + CONNECT attempts so far.
    pub connect_attempts: u64,
    /// Successful CONNACKs so far (1 = never reconnected).
    pub connections: u64,
    /// Whether a connection is up now.
    pub connected: bool,
    /// Ingest only: SUBACKs that granted every input filter.
    pub subscriptions: u64,
    /// Ingest only: times the connection stopped being read because the
    /// byte budget of held input was used up.
    pub read_pauses: u64,
    /// Ingest only: bytes of received input held now (the budget's use).
    pub held_input_bytes: u64,
}

/// The shared, lock-free form of [`ConnectionStats`].
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    connect_attempts: AtomicU64,
    connections: AtomicU64,
    connected: AtomicBool,
    subscriptions: AtomicU64,
    read_pauses: AtomicU64,
    /// The current outage's cause, when the operator must fix it
    /// ([`tls::explain`]); cleared on connect.
    problem: Mutex<Option<String>>,
    /// Why the last connection attempt failed, whatever the cause; cleared
    /// on connect.
    last_error: Mutex<Option<String>>,
}

impl SharedStats {
    pub(crate) fn snapshot(&self) -> ConnectionStats {
        ConnectionStats {
            connect_attempts: self.connect_attempts.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            read_pauses: self.read_pauses.load(Ordering::Relaxed),
            held_input_bytes: 0,
        }
    }

    pub(crate) fn paused(&self) {
        self.read_pauses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Why connecting fails, if it is something the operator must fix.
    pub(crate) fn problem(&self) -> Option<String> {
        self.problem.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn set_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.problem.lock() {
            *p = problem;
        }
    }

    /// Why the last connection attempt failed, while none is up.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = error;
        }
    }

    fn attempt(&self) {
        self.connect_attempts.fetch_add(1, Ordering::Relaxed);
    }

    fn set_connected(&self, up: bool) {
        if up {
            self.connections.fetch_add(1, Ordering::Relaxed);
            self.set_problem(None);
            self.set_last_error(None);
        }
        self.connected.store(up, Ordering::Relaxed);
    }

    pub(crate) fn subscribed(&self) {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }
}

/// The transport: TLS with the loaded rustls configuration, or plain TCP.
fn transport(cfg: &BrokerConfig) -> Transport {
    match &cfg.tls {
        Some(tls) => Transport::tls_with_config(TlsConfiguration::Rustls(tls.config())),
        None => Transport::tcp(),
    }
}

/// rumqttc options for `cfg` (call [`BrokerConfig::validate`] first: rumqttc
/// panics on an empty client id with `clean_session = false`).
pub(crate) fn mqtt_options(cfg: &BrokerConfig, clean_session: bool) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_transport(transport(cfg))
        .set_keep_alive(cfg.keep_alive)
        .set_clean_session(clean_session)
        .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes)
        .set_inflight(cfg.inflight);
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cover_the_input_space() {
        assert_eq!(
            input_filters("dt"),
            vec![
                "dt/v1/patients/+/+",
                "dt/v1/devices/+/+",
                "dt/v1/alerts/+/+",
            ]
        );
    }

    #[test]
    fn filters_match_topics_the_contract_parser_accepts() {
        use crate::contract::parse_topic;
        let topics = [
            "dt/v1/patients/P-1/admit",
            "dt/v1/patients/P-1/discharge",
            "dt/v1/patients/P-1/doses",
            "dt/v1/devices/pump-7/events",
            "dt/v1/alerts/a-1/commands",
        ];
        let filters = input_filters("dt");
        for topic in topics {
            assert!(
                filters.iter().any(|f| rumqttc::matches(topic, f)),
                "{topic}"
            );
            assert!(parse_topic("dt", topic).is_ok(), "{topic}");
        }
    }

    #[test]
    fn validate_refuses_what_rumqttc_would_panic_on() {
        let ok = BrokerConfig::new("localhost", 1883, "dosetrack");
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.client_id.clear();
        assert!(matches!(c.validate(), Err(MqttError::Config(_))));
        let mut c = ok.clone();
        c.keep_alive = Duration::from_millis(500);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.keep_alive = Duration::ZERO;
        assert!(c.validate().is_ok());
        let mut c = ok.clone();
        c.inflight = 0;
        assert!(c.validate().is_err());
        let mut c = ok;
        c.password = Some("x".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn options_carry_the_config() {
        let mut cfg = BrokerConfig::new("broker", 1884, "dt-1");
        cfg.username = Some("u".into());
        cfg.password = Some("p".into());
        let o = mqtt_options(&cfg, false);
        assert_eq!(o.broker_address(), ("broker".to_string(), 1884));
        assert_eq!(o.client_id(), "dt-1");
        assert!(!o.clean_session());
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        assert_eq!(o.max_packet_size(), 1024 * 1024);
        assert_eq!(o.inflight(), 100);
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("u", "p")
        );
    }
}
