//! The simulated ward's publisher: puts a [`Ward`]'s messages on the wire
//! in simulated time, through the project's MQTT layer ([`crate::mqtt`]).
//!
//! [`publish_ward`] walks the ward in windows of simulated time, sleeps
//! until each message is due in real time (a message whose occurrence time
//! is `start_ms + x` is published `x / speedup` after the start, later if
//! the rate limit holds it back: simulated time is a sped-up
//! [`Clock::scaled`] from the ward's start; [`publish_ward_on`] takes that
//! clock from the caller, the demo's clock shared with its daemon), publishes it at QoS 1, and at the end
//! waits for every PUBACK. It refuses a spec whose simulated time would run
//! more than [`MAX_FUTURE_SKEW_MS`] ahead of the wall clock
//! ([`DevsimError::AheadOfWallClock`]; start the ward at
//! [`catch_up_start_ms`](super::ward::catch_up_start_ms)).
//!
//! # Delivery
//!
//! One plain publisher connection ([`mqtt::spawn_plain_publisher`]: clean
//! session, no status, no will). The MQTT layer keeps every message until
//! its PUBACK arrives and publishes it again after a reconnect (at least
//! once; the ids make a redelivery a duplicate the daemon absorbs). The
//! first connection must come up within [`CONNECT_TIMEOUT`], and a refused
//! first attempt fails at once; later outages are ridden out. Cancelling the
//! `shutdown` token stops publishing new messages; what was sent is still
//! awaited.

use super::clock::{wall_clock_ms, ClockError};
use super::ward::{Ward, MAX_FUTURE_SKEW_MS, MS_PER_H};
use crate::clock::Clock;
use crate::mqtt::{self, BrokerConfig, Confirmation, MqttError, Publisher};
use crate::vocab::{format_rfc3339, TimeMs};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How to publish a ward.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishSpec {
    pub host: String,
    pub port: u16,
    /// MQTT client id (non-empty).
    pub client_id: String,
    /// Simulated seconds per real second; 1.0 = real time.
    pub speedup: f64,
    /// Simulated time to publish, from the ward's `start_ms`.
    pub duration_ms: i64,
    /// At most this many messages per real second, if set.
    pub rate_limit_per_s: Option<f64>,
}

/// What a publish run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishStats {
    /// Messages handed to the MQTT client.
    pub sent: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Real time from connecting to the last PUBACK.
    pub elapsed: Duration,
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum DevsimError {
    #[error("invalid publish spec: {field} {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    #[error(
        "simulated time would run {ahead_ms} ms ahead of the wall clock; the contract rejects \
         inputs dated more than {max_ms} ms ahead (clock_skew): start the ward in the past, \
         at catch_up_start_ms(now, duration, speedup)"
    )]
    AheadOfWallClock { ahead_ms: i64, max_ms: i64 },
    #[error("the system clock is not usable (before 1970 or out of range)")]
    Clock,
    #[error("cannot connect to the MQTT broker at {host}:{port}: {message}")]
    Connect {
        host: String,
        port: u16,
        /// Why the first connection attempt failed.
        message: String,
    },
    #[error(
        "the MQTT broker at {host}:{port} did not accept the connection within {waited_ms} ms"
    )]
    ConnectTimeout {
        host: String,
        port: u16,
        waited_ms: u64,
    },
    #[error("the MQTT client stopped before all messages were handed over: {0}")]
    Client(#[source] MqttError),
    #[error("only {acked} of {sent} messages were acknowledged after waiting {waited_ms} ms")]
    AckTimeout {
        sent: u64,
        acked: u64,
        waited_ms: u64,
    },
}

impl From<ClockError> for DevsimError {
    fn from(_: ClockError) -> Self {
        DevsimError::Clock
    }
}

/// How long to wait for the first connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for outstanding PUBACKs after the last message.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Unacknowledged QoS 1 messages in flight.
const INFLIGHT: u16 = 100;
/// Largest packet: the contract's 64 KiB payload plus topic and header.
const MAX_PACKET_BYTES: usize = 64 * 1024 + 4 * 1024;
/// How often to look whether the first connection is up.
const CONNECT_POLL: Duration = Duration::from_millis(10);
/// How long the connection may take to close at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

fn validate(ward: &Ward, spec: &PublishSpec) -> Result<(), DevsimError> {
    let invalid = |field, reason: &str| {
        Err(DevsimError::InvalidSpec {
            field,
            reason: reason.to_owned(),
        })
    };
    if !(spec.speedup.is_finite() && spec.speedup > 0.0) {
        return invalid("speedup", "must be a finite number greater than 0");
    }
    if spec.duration_ms < 0 {
        return invalid("duration_ms", "must not be negative");
    }
    if spec.client_id.is_empty() || spec.client_id.len() > 65_535 {
        return invalid("client_id", "must be 1 to 65535 bytes");
    }
    if spec.host.is_empty() {
        return invalid("host", "must not be empty");
    }
    if let Some(r) = spec.rate_limit_per_s {
        if !(r.is_finite() && r > 0.0) {
            return invalid("rate_limit_per_s", "must be a finite number greater than 0");
        }
    }
    let prefix = &ward.spec().prefix;
    if prefix.is_empty() || prefix.contains(['+', '#', '\0']) {
        return invalid(
            "prefix (of the ward)",
            "must be non-empty and contain no MQTT wildcard or NUL",
        );
    }
    Ok(())
}

/// How far simulated time runs ahead of the wall clock at worst, when the
/// run starts at `wall_now_ms`: the difference is linear in time, so the
/// worst is at one of the ends.
fn worst_lead_ms(sim_start: TimeMs, duration_ms: i64, speedup: f64, wall_now_ms: TimeMs) -> i64 {
    let at_start = sim_start.saturating_sub(wall_now_ms);
    let real_ms = (duration_ms as f64 / speedup).floor() as i64;
    let at_end = sim_start
        .saturating_add(duration_ms)
        .saturating_sub(wall_now_ms.saturating_add(real_ms));
    at_start.max(at_end)
}

/// The MQTT layer's settings for `spec`.
fn broker_config(spec: &PublishSpec) -> BrokerConfig {
    let mut cfg = BrokerConfig::new(spec.host.clone(), spec.port, spec.client_id.clone());
    cfg.keep_alive = Duration::from_secs(30);
    cfg.inflight = INFLIGHT;
    cfg.max_packet_bytes = MAX_PACKET_BYTES;
    cfg
}

/// Publish `ward` from its `start_ms` for `spec.duration_ms` of simulated
/// time: each message at QoS 1 when it is due (`(at_ms − start_ms) /
/// speedup` after the start, later if the rate limit holds it back), then
/// wait for every PUBACK.
///
/// Cancelling `shutdown` stops publishing new messages; PUBACKs of those
/// already sent are still awaited and the stats returned. Fails before
/// connecting when the spec is invalid or simulated time would run more than
/// [`MAX_FUTURE_SKEW_MS`] ahead of the wall clock (see the module docs and
/// [`catch_up_start_ms`](super::ward::catch_up_start_ms)).
pub async fn publish_ward(
    ward: &mut Ward,
    spec: &PublishSpec,
    shutdown: CancellationToken,
) -> Result<PublishStats, DevsimError> {
    publish(ward, spec, None, shutdown).await
}

/// [`publish_ward`] paced by `clock` instead of by the wall clock: each
/// message is published once `clock` reads its occurrence time (the demo's
/// sped-up clock, shared with the daemon, so no message is ever dated
/// ahead of the receiver's clock and there is no wall-clock check).
/// `spec.speedup` only sizes the generation windows.
pub async fn publish_ward_on(
    ward: &mut Ward,
    spec: &PublishSpec,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<PublishStats, DevsimError> {
    publish(ward, spec, Some(clock), shutdown).await
}

async fn publish(
    ward: &mut Ward,
    spec: &PublishSpec,
    clock: Option<Clock>,
    shutdown: CancellationToken,
) -> Result<PublishStats, DevsimError> {
    validate(ward, spec)?;
    let cfg = broker_config(spec);
    cfg.validate().map_err(|e| DevsimError::InvalidSpec {
        field: "broker",
        reason: e.to_string(),
    })?;
    let sim_start = ward.spec().start_ms;
    let sim_end = sim_start.saturating_add(spec.duration_ms);
    if clock.is_none() {
        let lead = worst_lead_ms(sim_start, spec.duration_ms, spec.speedup, wall_clock_ms()?);
        if lead > MAX_FUTURE_SKEW_MS {
            return Err(DevsimError::AheadOfWallClock {
                ahead_ms: lead,
                max_ms: MAX_FUTURE_SKEW_MS,
            });
        }
    }

    info!(
        host = %spec.host,
        port = spec.port,
        client_id = %spec.client_id,
        patients = ward.spec().patients,
        speedup = spec.speedup,
        duration_ms = spec.duration_ms,
        sim_start = %format_rfc3339(sim_start),
        rate_limit_per_s = spec.rate_limit_per_s,
        "devsim: connecting"
    );
    let close = CancellationToken::new();
    let (publisher, task) = mqtt::spawn_plain_publisher(cfg, close.clone());
    let connection = Connection { close, task };
    match wait_connected(&publisher, &connection.task, &shutdown).await {
        FirstConnection::Up => {}
        FirstConnection::Cancelled => {
            connection.close().await;
            info!("devsim: shutdown requested while connecting");
            return Ok(PublishStats {
                sent: 0,
                acked: 0,
                elapsed: Duration::ZERO,
            });
        }
        FirstConnection::Failed(message) => {
            connection.close().await;
            return Err(DevsimError::Connect {
                host: spec.host.clone(),
                port: spec.port,
                message,
            });
        }
        FirstConnection::TimedOut => {
            connection.close().await;
            return Err(DevsimError::ConnectTimeout {
                host: spec.host.clone(),
                port: spec.port,
                waited_ms: CONNECT_TIMEOUT.as_millis() as u64,
            });
        }
    }

    let started = Instant::now();
    // Without a clock given: simulated time from the ward's start, from
    // now, at the speedup.
    let clock = match clock {
        Some(c) => c,
        None => Clock::scaled(sim_start, spec.speedup).map_err(|e| DevsimError::InvalidSpec {
            field: "speedup",
            reason: e.to_string(),
        })?,
    };
    let gap = spec
        .rate_limit_per_s
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_allowed = started;
    let mut sent: u64 = 0;
    let mut acks = Acks::default();
    // About one real second of simulated time per window, at least 1 s.
    let window_ms = ((spec.speedup * 1000.0).min(MS_PER_H as f64) as i64).max(1_000);
    // A ward admitted before its start (`lead_in_ms`, the demo's): those
    // messages are past on the clock and go out at once, in time order.
    let mut window_start = sim_start.saturating_sub(ward.spec().lead_in_ms.max(0));
    let mut cancelled = false;
    let mut client_error = None;
    'windows: while window_start < sim_end {
        let window_end = window_start.saturating_add(window_ms).min(sim_end);
        let batch = ward.messages_between(window_start, window_end);
        debug!(
            window_start = %format_rfc3339(window_start),
            messages = batch.len(),
            sent,
            "devsim: window"
        );
        for msg in batch {
            let due = async {
                clock.sleep_until_ms(msg.at_ms).await;
                tokio::time::sleep_until(next_allowed).await;
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => { cancelled = true; break 'windows; }
                () = due => {}
            }
            let (topic, payload) = (msg.topic, msg.payload.into_bytes());
            tokio::select! {
                biased;
                () = shutdown.cancelled() => { cancelled = true; break 'windows; }
                result = publisher.publish_then_confirm(topic, payload, false) => match result {
                    Ok(confirmation) => acks.push(confirmation),
                    Err(e) => {
                        client_error = Some(e);
                        break 'windows;
                    }
                }
            }
            sent += 1;
            if let Some(gap) = gap {
                next_allowed = next_allowed.max(Instant::now()) + gap;
            }
        }
        window_start = window_end;
    }
    if cancelled {
        info!(
            sent,
            "devsim: shutdown requested; waiting for outstanding acknowledgements"
        );
    }

    // Wait for every PUBACK.
    let acked = acks.wait_all(Instant::now() + ACK_TIMEOUT).await;
    let elapsed = started.elapsed();
    connection.close().await;

    let rate = if elapsed.as_secs_f64() > 0.0 {
        sent as f64 / elapsed.as_secs_f64()
    } else {
        0.0
    };
    info!(
        sent,
        acked,
        elapsed_ms = elapsed.as_millis() as u64,
        messages_per_s = rate,
        cancelled,
        "devsim: done"
    );
    if let Some(e) = client_error {
        return Err(DevsimError::Client(e));
    }
    if acked < sent {
        return Err(DevsimError::AckTimeout {
            sent,
            acked,
            waited_ms: ACK_TIMEOUT.as_millis() as u64,
        });
    }
    Ok(PublishStats {
        sent,
        acked,
        elapsed,
    })
}

/// The publisher connection's task and its own stop (the caller's
/// `shutdown` only stops publishing: what was sent is still awaited).
struct Connection {
    close: CancellationToken,
    task: JoinHandle<Result<(), MqttError>>,
}

impl Connection {
    /// Stop the connection: DISCONNECT once nothing is left to confirm.
    async fn close(self) {
        self.close.cancel();
        let mut task = self.task;
        match tokio::time::timeout(CLOSE_TIMEOUT, &mut task).await {
            Ok(Ok(Ok(()))) => debug!("devsim: disconnected"),
            Ok(Ok(Err(error))) => debug!(error = %error, "devsim: MQTT publisher ended"),
            Ok(Err(error)) => warn!(error = %error, "devsim: MQTT publisher task failed"),
            Err(_) => {
                warn!("devsim: MQTT publisher did not finish after disconnect; stopping it");
                task.abort();
            }
        }
    }
}

/// How the first connection went.
enum FirstConnection {
    Up,
    Cancelled,
    /// The first attempt failed: why.
    Failed(String),
    TimedOut,
}

/// Wait (at most [`CONNECT_TIMEOUT`]) until the first connection is up; a
/// failed first attempt ends the wait at once.
async fn wait_connected(
    publisher: &Publisher,
    task: &JoinHandle<Result<(), MqttError>>,
    shutdown: &CancellationToken,
) -> FirstConnection {
    let until = Instant::now() + CONNECT_TIMEOUT;
    loop {
        if publisher.is_connected() {
            return FirstConnection::Up;
        }
        if let Some(error) = publisher.connect_error() {
            return FirstConnection::Failed(error);
        }
        if task.is_finished() {
            return FirstConnection::Failed("the MQTT publisher stopped".to_owned());
        }
        if Instant::now() >= until {
            return FirstConnection::TimedOut;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return FirstConnection::Cancelled,
            () = tokio::time::sleep(CONNECT_POLL) => {}
        }
    }
}

/// The PUBACKs awaited, in publish order, and how many arrived.
#[derive(Default)]
struct Acks {
    pending: VecDeque<Confirmation>,
    acked: u64,
}

impl Acks {
    fn push(&mut self, confirmation: Confirmation) {
        self.pending.push_back(confirmation);
        // Count those already in, to keep the queue short.
        while let Some(front) = self.pending.front_mut() {
            match front.try_result() {
                Some(result) => {
                    self.acked += u64::from(result.is_ok());
                    self.pending.pop_front();
                }
                None => break,
            }
        }
    }

    /// Wait until `deadline` for the PUBACKs still pending; the number
    /// received in all.
    async fn wait_all(mut self, deadline: Instant) -> u64 {
        while let Some(front) = self.pending.front_mut() {
            match tokio::time::timeout_at(deadline, front).await {
                Ok(result) => {
                    self.acked += u64::from(result.is_ok());
                    self.pending.pop_front();
                }
                Err(_) => break,
            }
        }
        // Out of time: those that arrived behind one still missing count too.
        for mut c in self.pending {
            if let Some(Ok(())) = c.try_result() {
                self.acked += 1;
            }
        }
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::ward::{catch_up_start_ms, WardSpec, MS_PER_H};
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use std::time::{SystemTime, UNIX_EPOCH};

    const DAY_MS: i64 = 24 * MS_PER_H;

    #[test]
    fn catch_up_start_keeps_simulated_time_behind_the_wall_clock() {
        let now = 1_800_000_000_000;
        assert_eq!(catch_up_start_ms(now, 7_200_000, 1.0), now);
        let start = catch_up_start_ms(now, 7_200_000, 3600.0);
        assert_eq!(start, now - 7_198_000);
        assert!(worst_lead_ms(start, 7_200_000, 3600.0, now) <= 0);
        assert!(worst_lead_ms(now, 7_200_000, 3600.0, now) > MAX_FUTURE_SKEW_MS);
        assert_eq!(worst_lead_ms(now, 7_200_000, 1.0, now), 0);
    }

    // ----- against the real Mosquitto on 127.0.0.1:1883 -----

    const HOST: &str = "127.0.0.1";
    const PORT: u16 = 1883;

    fn unique() -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    }

    fn publish_spec(client_id: String, speedup: f64, duration_ms: i64) -> PublishSpec {
        PublishSpec {
            host: HOST.into(),
            port: PORT,
            client_id,
            speedup,
            duration_ms,
            rate_limit_per_s: None,
        }
    }

    /// A plain subscriber on `{prefix}/v1/#`, subscribed when this returns.
    async fn subscriber(
        prefix: &str,
        id: &str,
    ) -> (
        AsyncClient,
        tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
        tokio::task::JoinHandle<()>,
    ) {
        let mut options = MqttOptions::new(format!("dt-devsim-sub-{id}"), HOST, PORT);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        client
            .subscribe(format!("{prefix}/v1/#"), QoS::AtLeastOnce)
            .await
            .unwrap();
        let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("subscriber: is Mosquitto running on {HOST}:{PORT}? {e}"),
                }
            }
        })
        .await;
        assert!(subscribed.is_ok(), "no SUBACK");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                    if tx.send((p.topic, payload)).is_err() {
                        break;
                    }
                }
            }
        });
        (client, rx, task)
    }

    async fn receive(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
        n: usize,
    ) -> Vec<(String, String)> {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            while got.len() < n {
                match rx.recv().await {
                    Some(m) => got.push(m),
                    None => break,
                }
            }
        })
        .await;
        // Anything beyond n would be a duplicate or a stray: wait briefly.
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            got.push(m);
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_a_ward_to_mosquitto_and_a_subscriber_gets_all_of_it() {
        let id = unique();
        let prefix = format!("dt-devsim-test-{id}");
        let (sub, mut rx, task) = subscriber(&prefix, &id).await;

        let duration = 2 * MS_PER_H;
        let speedup = 3600.0;
        let start = catch_up_start_ms(wall_clock_ms().unwrap(), duration, speedup);
        let ward_spec = WardSpec {
            prefix: prefix.clone(),
            ..WardSpec::new(5, 77, start)
        };
        let expected = Ward::new(ward_spec.clone()).messages_between(start, start + duration);
        assert!(expected.len() > 100, "{}", expected.len());

        let spec = publish_spec(format!("dt-devsim-pub-{id}"), speedup, duration);
        let mut ward = Ward::new(ward_spec);
        let stats = publish_ward(&mut ward, &spec, CancellationToken::new())
            .await
            .unwrap();
        let received_at = wall_clock_ms().unwrap();
        assert_eq!(stats.sent, expected.len() as u64);
        assert_eq!(stats.acked, stats.sent);
        // 2 h at 3600× is 2 s of pacing.
        assert!(stats.elapsed >= Duration::from_millis(1_900), "{stats:?}");
        assert!(stats.elapsed < Duration::from_secs(10), "{stats:?}");

        let got = receive(&mut rx, expected.len()).await;
        assert_eq!(got.len(), expected.len());
        let mut want: Vec<_> = expected
            .iter()
            .map(|m| (m.topic.clone(), m.payload.clone()))
            .collect();
        let mut got_sorted = got.clone();
        want.sort();
        got_sorted.sort();
        assert_eq!(got_sorted, want);
        // None is dated ahead of the wall clock (clock_skew).
        assert!(expected.iter().all(|m| m.at_ms <= received_at));
        sub.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_limit_and_shutdown_are_honoured() {
        let id = unique();
        let prefix = format!("dt-devsim-test-{id}");
        let (sub, mut rx, task) = subscriber(&prefix, &id).await;

        // Rate limit: 200 messages per second at most.
        let duration = 2 * MS_PER_H;
        let start = catch_up_start_ms(wall_clock_ms().unwrap(), duration, 1e6);
        let ward_spec = WardSpec {
            prefix: prefix.clone(),
            ..WardSpec::new(8, 5, start)
        };
        let n = Ward::new(ward_spec.clone())
            .messages_between(start, start + duration)
            .len();
        assert!(n >= 50, "{n}");
        let mut spec = publish_spec(format!("dt-devsim-pub-{id}"), 1e6, duration);
        spec.rate_limit_per_s = Some(200.0);
        let stats = publish_ward(&mut Ward::new(ward_spec), &spec, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!((stats.sent, stats.acked), (n as u64, n as u64));
        let min = Duration::from_secs_f64((n - 1) as f64 / 200.0);
        assert!(stats.elapsed >= min, "{stats:?} < {min:?}");
        assert_eq!(receive(&mut rx, n).await.len(), n);

        // Shutdown: 1 h at 600× takes 6 s; cancel after 1.5 s.
        let duration = MS_PER_H;
        let start = catch_up_start_ms(wall_clock_ms().unwrap(), duration, 600.0);
        let ward_spec = WardSpec {
            prefix: prefix.clone(),
            ..WardSpec::new(5, 6, start)
        };
        let total = Ward::new(ward_spec.clone())
            .messages_between(start, start + duration)
            .len() as u64;
        let token = CancellationToken::new();
        let canceller = {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                token.cancel();
            })
        };
        let spec = publish_spec(format!("dt-devsim-pub2-{id}"), 600.0, duration);
        let stats = publish_ward(&mut Ward::new(ward_spec), &spec, token)
            .await
            .unwrap();
        canceller.await.unwrap();
        assert!(
            stats.sent >= 5 && stats.sent < total,
            "{stats:?} of {total}"
        );
        assert_eq!(stats.acked, stats.sent);
        assert!(stats.elapsed < Duration::from_secs(4), "{stats:?}");
        assert_eq!(
            receive(&mut rx, stats.sent as usize).await.len() as u64,
            stats.sent
        );
        sub.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    #[tokio::test]
    async fn refuses_specs_that_would_run_ahead_of_the_wall_clock_or_are_invalid() {
        let now = wall_clock_ms().unwrap();
        // Nothing listens on port 1: reaching the connection proves the
        // checks passed.
        let spec = |speedup| PublishSpec {
            port: 1,
            ..publish_spec("dt-devsim-never".into(), speedup, 2 * MS_PER_H)
        };
        let run = |start, speedup: f64| async move {
            publish_ward(
                &mut Ward::new(WardSpec::new(2, 1, start)),
                &spec(speedup),
                CancellationToken::new(),
            )
            .await
        };
        assert!(matches!(
            run(now, 3600.0).await,
            Err(DevsimError::AheadOfWallClock { .. })
        ));
        assert!(matches!(
            run(now + MS_PER_H, 1.0).await,
            Err(DevsimError::AheadOfWallClock { .. })
        ));
        assert!(matches!(
            run(now, 0.0).await,
            Err(DevsimError::InvalidSpec {
                field: "speedup",
                ..
            })
        ));
        let caught_up = catch_up_start_ms(now, 2 * MS_PER_H, 3600.0);
        assert!(matches!(
            run(caught_up, 3600.0).await,
            Err(DevsimError::Connect { .. } | DevsimError::ConnectTimeout { .. })
        ));
    }

    /// Throughput against the local Mosquitto: a 20-patient day, unpaced.
    /// `cargo test devsim::tests::throughput -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement; run by hand"]
    async fn throughput() {
        let id = unique();
        let prefix = format!("dt-devsim-test-{id}");
        let (sub, mut rx, task) = subscriber(&prefix, &id).await;
        let start = catch_up_start_ms(wall_clock_ms().unwrap(), DAY_MS, 1e9);
        let ward_spec = WardSpec {
            prefix,
            ..WardSpec::new(20, 42, start)
        };
        let spec = publish_spec(format!("dt-devsim-pub-{id}"), 1e9, DAY_MS);
        let stats = publish_ward(&mut Ward::new(ward_spec), &spec, CancellationToken::new())
            .await
            .unwrap();
        let got = receive(&mut rx, stats.sent as usize).await.len();
        eprintln!(
            "sent {} acked {} received {got} in {:?}: {:.0} messages/s",
            stats.sent,
            stats.acked,
            stats.elapsed,
            stats.sent as f64 / stats.elapsed.as_secs_f64()
        );
        assert_eq!(stats.acked, stats.sent);
        assert_eq!(got as u64, stats.sent);
        sub.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}
