//! `dosetrack demo`: the live demo, with nothing installed but the binary.
//!
//! This module owns the demo's whole run, all in one process:
//!
//! * the **embedded broker** (rumqttd, behind the default cargo feature
//!   `embedded-broker`): an MQTT 3.1.1 listener on 127.0.0.1 at a port the
//!   OS chose, on a thread of its own, stopped at the end — or, with
//!   `--broker`, an external broker instead;
//! * the **daemon** ([`crate::daemon::run`]) against that broker, with a
//!   database in a temporary directory (removed at the end) or at
//!   `--database PATH` (kept);
//! * a **simulated ward** ([`crate::devsim`]) of a few patients with pumps,
//!   patches, intranasal and other doses, published at an accelerated speed;
//! * a **watcher**: a plain MQTT client subscribed to the patients' state
//!   (and to manual doses, to name the last one), and the terminal table it
//!   redraws every second.
//!
//! # Simulated time
//!
//! At speedup N the ward runs N× faster than the wall clock, but the
//! contract refuses inputs dated ahead of the receiver's clock. So the ward
//! starts in the past ([`devsim::catch_up_start_ms`]) and catches up with
//! the clock exactly at the end: at 60× for 60 s it replays the last hour.
//! The daemon computes every state at the wall clock's "now" from what it
//! has received so far, as it would for late inputs. Devices are heard on
//! simulated time, so the demo widens the daemon's staleness threshold by
//! the replay's head start (otherwise every pump would look quiet until the
//! ward caught up).
//!
//! # Topics and sessions
//!
//! Every run uses its own topic prefix and client ids
//! (`dosetrack-demo-XXXXXXXX`), so a demo pointed at a shared broker with
//! `--broker` never feeds a real service. Before the daemon starts, the demo
//! creates the daemon's persistent ingest session (its subscriptions) on the
//! broker, so nothing the ward publishes while the daemon connects is lost.
//! On an external broker the demo clears its retained messages and discards
//! that session at the end.
//!
//! **Decision support and research software, not a certified medical
//! device**: the demo's patients, doses and devices are simulated.

use crate::config::Config;
use crate::daemon::{self, DaemonError, RunSummary};
use crate::devsim::{self, DevsimError, PublishSpec, PublishStats, Ward, WardSpec};
use crate::store::{Counts, Reader};
use crate::vocab::{format_rfc3339, parse_rfc3339_ms, TimeMs};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The notice every frame starts with.
pub const NOTICE: &str = crate::simulate::NOTICE;

/// The default ward: with this seed a patch, injections, IV boluses, pumps
/// and an intranasal dose all start within the first simulated half hour
/// (the simulator starts regimens 10–30 min after admission).
pub const DEFAULT_SEED: u64 = 1283;

/// Largest ward the demo simulates.
pub const MAX_PATIENTS: usize = 200;
/// Largest speedup (one simulated hour per wall second).
pub const MAX_SPEEDUP: f64 = 3600.0;
/// Longest demo run.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Wall time to run (Ctrl-C stops earlier).
    pub duration: Duration,
    /// Simulated patients (`P-0001` …).
    pub patients: usize,
    /// Simulated seconds per wall second.
    pub speedup: f64,
    /// Seed of the simulated ward (same seed, same ward).
    pub seed: u64,
    /// Keep the database here (must not exist yet); `None`: a temporary
    /// database, removed at the end.
    pub database: Option<PathBuf>,
    /// An external broker `(host, port)`; `None`: the embedded one.
    pub broker: Option<(String, u16)>,
    /// The drug file; `None`: the built-in one.
    pub drug_file: Option<PathBuf>,
    /// Redraw in place with ANSI escapes (stdout is a terminal); otherwise
    /// append one plain block per second.
    pub ansi: bool,
}

impl DemoOptions {
    /// The defaults of `dosetrack demo`: 60 s, 6 patients, 60×, embedded
    /// broker, temporary database.
    pub fn new() -> DemoOptions {
        DemoOptions {
            duration: Duration::from_secs(60),
            patients: 6,
            speedup: 60.0,
            seed: DEFAULT_SEED,
            database: None,
            broker: None,
            drug_file: None,
            ansi: false,
        }
    }

    fn validate(&self) -> Result<(), DemoError> {
        let invalid = |m: String| Err(DemoError::Invalid(m));
        if self.duration < Duration::from_secs(1) || self.duration > MAX_DURATION {
            return invalid("--duration must be 1 s to 24 h".to_owned());
        }
        if !(1..=MAX_PATIENTS).contains(&self.patients) {
            return invalid(format!("--patients must be 1 to {MAX_PATIENTS}"));
        }
        if !(self.speedup.is_finite() && (1.0..=MAX_SPEEDUP).contains(&self.speedup)) {
            return invalid(format!(
                "--speedup must be a number from 1 to {MAX_SPEEDUP}"
            ));
        }
        if let Some(p) = &self.database {
            if p.exists() {
                return invalid(format!(
                    "--database: {} exists; the demo writes a new database (remove it or choose another path)",
                    p.display()
                ));
            }
        }
        Ok(())
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions::new()
    }
}

/// What a demo run did.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSummary {
    /// Inputs in the database at the end.
    pub inputs_stored: u64,
    /// Rejected inputs in the database at the end.
    pub rejected: u64,
    /// Patients whose state the watcher saw.
    pub patients_tracked: usize,
    /// Messages the simulated ward published.
    pub published: u64,
    /// The daemon's own counters.
    pub daemon: RunSummary,
    /// Where the database is, if it was kept.
    pub database_kept: Option<PathBuf>,
    /// Wall time from the start to the end of the stop.
    pub elapsed: Duration,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A bad option (the user's input).
    #[error("{0}")]
    Invalid(String),
    /// Built without the embedded broker and no `--broker` given.
    #[error(
        "the live demo needs an MQTT broker: this dosetrack was built without the \
         `embedded-broker` feature, so give one with --broker mqtt://HOST:PORT \
         (or run `dosetrack demo --offline`)"
    )]
    NoBroker,
    #[error("embedded broker: {0}")]
    EmbeddedBroker(String),
    #[error("broker {host}:{port}: {message}")]
    Broker {
        host: String,
        port: u16,
        message: String,
    },
    // No `source` on these two: their text already carries it, once.
    #[error("daemon: {0}")]
    Daemon(DaemonError),
    #[error("simulated ward: {0}")]
    Devsim(DevsimError),
    #[error("temporary database directory: {0}")]
    TempDir(std::io::Error),
    #[error("writing the table: {0}")]
    Output(#[from] std::io::Error),
}

impl From<DaemonError> for DemoError {
    fn from(e: DaemonError) -> Self {
        DemoError::Daemon(e)
    }
}

impl From<DevsimError> for DemoError {
    fn from(e: DevsimError) -> Self {
        DemoError::Devsim(e)
    }
}

// ---------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------

/// Run the live demo until `opts.duration` has passed or `shutdown` is
/// cancelled, drawing the table on `out` every second, then stop everything
/// and print the summary.
pub async fn run(
    opts: DemoOptions,
    shutdown: CancellationToken,
    out: &mut dyn Write,
) -> Result<DemoSummary, DemoError> {
    opts.validate()?;
    let started = Instant::now();
    let now = devsim::wall_clock_ms()?;
    let tag = run_tag(now);
    let prefix = format!("dosetrack-demo-{tag}");
    let ids = ClientIds::new(&prefix);

    let db = DemoDatabase::new(opts.database.as_deref(), &tag)?;

    // 1. The broker.
    let broker = match &opts.broker {
        Some((host, port)) => BrokerHandle::External {
            host: host.clone(),
            port: *port,
        },
        None => start_embedded()?,
    };
    let (host, port) = broker.address();

    // Everything after this point must stop the broker on the way out.
    let result = run_with_broker(
        &opts, &shutdown, out, &host, port, &prefix, &ids, &db, started, &broker,
    )
    .await;
    if matches!(broker, BrokerHandle::External { .. }) {
        if let Ok(r) = &result {
            tidy_external(&host, port, &prefix, &ids, &r.1).await;
        }
    }
    broker.stop();
    let kept = db.finish();
    let (mut summary, _) = result?;
    summary.database_kept = kept;
    summary.elapsed = started.elapsed();
    write_summary(out, &summary)?;
    Ok(summary)
}

/// Client ids of one run.
#[derive(Debug, Clone)]
struct ClientIds {
    /// The daemon's ingest; its publisher is `{ingest}-pub`.
    ingest: String,
    ward: String,
    watcher: String,
}

impl ClientIds {
    fn new(prefix: &str) -> ClientIds {
        ClientIds {
            ingest: prefix.to_owned(),
            ward: format!("{prefix}-ward"),
            watcher: format!("{prefix}-watch"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_with_broker(
    opts: &DemoOptions,
    shutdown: &CancellationToken,
    out: &mut dyn Write,
    host: &str,
    port: u16,
    prefix: &str,
    ids: &ClientIds,
    db: &DemoDatabase,
    started: Instant,
    broker: &BrokerHandle,
) -> Result<(DemoSummary, Vec<String>), DemoError> {
    // 2. The daemon's ingest session, so that nothing published while the
    //    daemon connects is lost (this also waits until the broker accepts
    //    MQTT connections).
    prepare_ingest_session(host, port, &ids.ingest, prefix).await?;

    // 3. The watcher.
    let (watch_tx, mut watch_rx) = mpsc::channel::<Watched>(1024);
    let watcher = Watcher::start(host, port, &ids.watcher, prefix, watch_tx).await?;

    // 4. The daemon.
    let sim_duration_ms = (opts.duration.as_millis() as f64 * opts.speedup).round() as i64;
    let head_start_ms = sim_duration_ms - opts.duration.as_millis() as i64;
    let mut cfg = Config::default();
    cfg.broker.host = host.to_owned();
    cfg.broker.port = port;
    cfg.broker.client_id = ids.ingest.clone();
    cfg.topics.prefix = prefix.to_owned();
    cfg.database.path = db.path.clone();
    cfg.drug.file = opts.drug_file.clone();
    // Republish every patient's state every second, so the table moves.
    cfg.state.interval_s = 1;
    // Devices are heard on simulated time, up to the head start behind.
    cfg.state.device_stale_after_min =
        (cfg.state.device_stale_after_min + head_start_ms.max(0) as f64 / 60_000.0).min(1440.0);
    cfg.validate()
        .map_err(|e| DemoError::Invalid(format!("demo configuration: {e}")))?;
    let ward_now = devsim::wall_clock_ms()?;
    let daemon_stop = CancellationToken::new();
    let mut daemon_task: JoinHandle<Result<RunSummary, DaemonError>> =
        tokio::spawn(daemon::run(cfg, daemon_stop.clone()));

    // 5. The simulated ward, over what is left of the run.
    let remaining = opts.duration.saturating_sub(started.elapsed());
    let sim_ms = (remaining.as_millis() as f64 * opts.speedup).round() as i64;
    let sim_start = devsim::catch_up_start_ms(ward_now, sim_ms, opts.speedup);
    let mut spec = WardSpec::new(opts.patients, opts.seed, sim_start);
    spec.prefix = prefix.to_owned();
    let publish = PublishSpec {
        host: host.to_owned(),
        port,
        client_id: ids.ward.clone(),
        speedup: opts.speedup,
        duration_ms: sim_ms,
        rate_limit_per_s: None,
    };
    let ward_stop = CancellationToken::new();
    let ward_started = Instant::now();
    let ward_token = ward_stop.clone();
    let mut ward_task: JoinHandle<Result<PublishStats, DevsimError>> = tokio::spawn(async move {
        let mut ward = Ward::new(spec);
        devsim::publish_ward(&mut ward, &publish, ward_token).await
    });

    // 6. The table, every second.
    let mut board = Board {
        patients: BTreeMap::new(),
        last_dose: BTreeMap::new(),
    };
    let frame = FrameInfo {
        ansi: opts.ansi,
        broker: match broker {
            BrokerHandle::External { .. } => format!("broker {host}:{port}"),
            #[cfg(feature = "embedded-broker")]
            BrokerHandle::Embedded(_) => format!("embedded broker {host}:{port}"),
        },
        prefix: prefix.to_owned(),
        patients: opts.patients,
        speedup: opts.speedup,
        duration: opts.duration,
        sim_start,
    };
    let mut reader: Option<Reader> = None;
    let mut counts = Counts::default();
    let deadline = tokio::time::Instant::from_std(started + opts.duration);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ward_result: Option<Result<PublishStats, DevsimError>> = None;
    let mut daemon_result: Option<Result<RunSummary, DaemonError>> = None;
    let mut output_error: Option<std::io::Error> = None;
    let mut watching = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => break,
            m = watch_rx.recv(), if watching => match m {
                Some(m) => board.apply(m),
                None => watching = false,
            },
            r = &mut daemon_task, if daemon_result.is_none() => {
                daemon_result = Some(r.unwrap_or_else(|e| Err(DaemonError::Join(e))));
                break;
            }
            r = &mut ward_task, if ward_result.is_none() => {
                let r = r.unwrap_or_else(|e| {
                    Err(DevsimError::InvalidSpec { field: "task", reason: e.to_string() })
                });
                if r.is_err() {
                    ward_result = Some(r);
                    break;
                }
                ward_result = Some(r);
            }
            _ = tick.tick() => {
                refresh_counts(&mut reader, &db.path, &mut counts);
                let sim_now = sim_clock(sim_start, ward_started, opts.speedup);
                if let Err(e) = draw(out, &frame, &board, &counts, started.elapsed(), sim_now, false) {
                    output_error = Some(e);
                    break;
                }
            }
        }
    }

    // 7. Stop: the ward first (it finishes on its own at the deadline; a
    //    Ctrl-C cuts it short), then let the daemon store what was sent.
    ward_stop.cancel();
    let ward_result = match ward_result {
        Some(r) => r,
        None => match tokio::time::timeout(Duration::from_secs(40), &mut ward_task).await {
            Ok(r) => r.unwrap_or_else(|e| {
                Err(DevsimError::InvalidSpec {
                    field: "task",
                    reason: e.to_string(),
                })
            }),
            Err(_) => {
                ward_task.abort();
                Err(DevsimError::InvalidSpec {
                    field: "task",
                    reason: "the ward publisher did not stop within 40 s".to_owned(),
                })
            }
        },
    };
    let published = ward_result.as_ref().map_or(0, |s| s.sent);
    if daemon_result.is_none() {
        // Bounded: wait until every published message is stored (accepted,
        // or rejected), so the summary counts them all.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            while let Ok(m) = watch_rx.try_recv() {
                board.apply(m);
            }
            refresh_counts(&mut reader, &db.path, &mut counts);
            if counts.inputs + counts.rejected >= published || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the last states arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(m) = watch_rx.try_recv() {
            board.apply(m);
        }
        refresh_counts(&mut reader, &db.path, &mut counts);
        let sim_now = sim_clock(sim_start, ward_started, opts.speedup);
        if output_error.is_none() {
            if let Err(e) = draw(
                out,
                &frame,
                &board,
                &counts,
                started.elapsed(),
                sim_now,
                true,
            ) {
                output_error = Some(e);
            }
        }
    }
    daemon_stop.cancel();
    let daemon_result = match daemon_result {
        Some(r) => r,
        None => daemon_task
            .await
            .unwrap_or_else(|e| Err(DaemonError::Join(e))),
    };
    watcher.stop().await;
    let daemon_summary = daemon_result?;
    if let Some(e) = output_error {
        return Err(DemoError::Output(e));
    }
    let stats = ward_result?;
    // The reader last: the daemon's writer has closed the database.
    refresh_counts(&mut reader, &db.path, &mut counts);
    // The alerts' retained active lists are the demo's too.
    let alert_topics = reader
        .as_ref()
        .and_then(|r| r.retained_alert_topics().ok())
        .unwrap_or_default();
    drop(reader);
    let topics: Vec<String> = board
        .patients
        .keys()
        .map(|p| format!("{prefix}/v1/patients/{p}/state"))
        .chain(alert_topics)
        .collect();
    Ok((
        DemoSummary {
            inputs_stored: counts.inputs,
            rejected: counts.rejected,
            patients_tracked: board.patients.len(),
            published: stats.sent,
            daemon: daemon_summary,
            database_kept: None,
            elapsed: Duration::ZERO,
        },
        topics,
    ))
}

/// Eight hex digits for this run's prefix and client ids.
fn run_tag(now_ms: TimeMs) -> String {
    let mut z = (now_ms as u64) ^ (u64::from(std::process::id()) << 40) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:08x}", (z ^ (z >> 31)) >> 32)
}

/// The ward's clock now (never ahead of the wall clock).
fn sim_clock(sim_start: TimeMs, ward_started: Instant, speedup: f64) -> TimeMs {
    let sim = sim_start + (ward_started.elapsed().as_secs_f64() * speedup * 1000.0) as TimeMs;
    devsim::wall_clock_ms().map_or(sim, |now| sim.min(now))
}

fn refresh_counts(reader: &mut Option<Reader>, path: &Path, counts: &mut Counts) {
    if reader.is_none() && path.exists() {
        *reader = Reader::open(path).ok();
    }
    if let Some(r) = reader {
        match r.counts() {
            Ok(c) => *counts = c,
            Err(e) => debug!(error = %e, "demo: counts not read"),
        }
    }
}

// ---------------------------------------------------------------------------
// The database.
// ---------------------------------------------------------------------------

/// The demo's database: at `--database PATH` (kept), or in a temporary
/// directory removed at the end (also when the demo fails).
struct DemoDatabase {
    path: PathBuf,
    temp_dir: Option<PathBuf>,
}

impl DemoDatabase {
    fn new(keep_at: Option<&Path>, tag: &str) -> Result<DemoDatabase, DemoError> {
        if let Some(p) = keep_at {
            return Ok(DemoDatabase {
                path: p.to_owned(),
                temp_dir: None,
            });
        }
        let dir = std::env::temp_dir().join(format!("dosetrack-demo-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(DemoError::TempDir)?;
        Ok(DemoDatabase {
            path: dir.join("demo.db"),
            temp_dir: Some(dir),
        })
    }

    /// Remove the temporary directory; the kept path, if any.
    fn finish(mut self) -> Option<PathBuf> {
        match self.temp_dir.take() {
            Some(dir) => {
                remove_dir(&dir);
                None
            }
            None => Some(self.path.clone()),
        }
    }
}

impl Drop for DemoDatabase {
    fn drop(&mut self) {
        if let Some(dir) = self.temp_dir.take() {
            remove_dir(&dir);
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        warn!(dir = %dir.display(), error = %e, "demo: temporary database not removed");
    }
}

// ---------------------------------------------------------------------------
// The broker.
// ---------------------------------------------------------------------------

enum BrokerHandle {
    External {
        host: String,
        port: u16,
    },
    #[cfg(feature = "embedded-broker")]
    Embedded(embedded::EmbeddedBroker),
}

impl BrokerHandle {
    fn address(&self) -> (String, u16) {
        match self {
            BrokerHandle::External { host, port } => (host.clone(), *port),
            #[cfg(feature = "embedded-broker")]
            BrokerHandle::Embedded(b) => ("127.0.0.1".to_owned(), b.port()),
        }
    }

    fn stop(self) {
        match self {
            BrokerHandle::External { .. } => {}
            #[cfg(feature = "embedded-broker")]
            BrokerHandle::Embedded(b) => b.stop(),
        }
    }
}

#[cfg(feature = "embedded-broker")]
fn start_embedded() -> Result<BrokerHandle, DemoError> {
    embedded::EmbeddedBroker::start().map(BrokerHandle::Embedded)
}

#[cfg(not(feature = "embedded-broker"))]
fn start_embedded() -> Result<BrokerHandle, DemoError> {
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
pub mod embedded {
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
    pub struct EmbeddedBroker {
        port: u16,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
    }

    /// The broker's settings: MQTT 3.1.1 on 127.0.0.1:`port`, no TLS, no
    /// authentication (loopback only), payloads up to 1 MiB (the daemon's
    /// `max_packet_bytes`), any topic (`dynamic_filters`).
    pub fn config(port: u16) -> rumqttd::Config {
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
        pub fn start() -> Result<EmbeddedBroker, DemoError> {
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

        pub fn port(&self) -> u16 {
            self.port
        }

        /// Close the listener and every connection.
        pub fn stop(mut self) {
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
    pub fn free_port() -> std::io::Result<u16> {
        let l = TcpListener::bind(("127.0.0.1", 0))?;
        Ok(l.local_addr()?.port())
    }
}

// ---------------------------------------------------------------------------
// MQTT helpers.
// ---------------------------------------------------------------------------

/// How long the first connection to the broker may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

fn broker_error(host: &str, port: u16, message: impl Into<String>) -> DemoError {
    DemoError::Broker {
        host: host.to_owned(),
        port,
        message: message.into(),
    }
}

/// Connect `options`, retrying until `CONNECT_WAIT` passes (the embedded
/// broker may still be starting); the event loop after its CONNACK.
async fn connect(
    host: &str,
    port: u16,
    options: MqttOptions,
) -> Result<(AsyncClient, rumqttc::EventLoop), DemoError> {
    let until = Instant::now() + CONNECT_WAIT;
    loop {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), 64);
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, eventloop)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break e.to_string(),
                Err(_) => break "no CONNACK within 5 s".to_owned(),
            }
        };
        if Instant::now() >= until {
            return Err(broker_error(host, port, format!("cannot connect: {err}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Poll `eventloop` until `done` says so (or 5 s pass).
async fn poll_until(
    eventloop: &mut rumqttc::EventLoop,
    mut done: impl FnMut(&Event) -> bool,
) -> Result<(), String> {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(until, eventloop.poll()).await {
            Ok(Ok(ev)) => {
                if done(&ev) {
                    return Ok(());
                }
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".to_owned()),
        }
    }
}

/// Create the daemon's persistent session with its input subscriptions, so
/// the broker queues every input from now on, also while the daemon
/// connects.
async fn prepare_ingest_session(
    host: &str,
    port: u16,
    client_id: &str,
    prefix: &str,
) -> Result<(), DemoError> {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = connect(host, port, o).await?;
    let filters = crate::mqtt::input_filters(prefix)
        .into_iter()
        .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
    client
        .subscribe_many(filters)
        .await
        .map_err(|e| broker_error(host, port, format!("subscribe: {e}")))?;
    poll_until(&mut eventloop, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    })
    .await
    .map_err(|e| broker_error(host, port, format!("no SUBACK for the inputs: {e}")))?;
    let _ = client.disconnect().await;
    let _ = poll_until(&mut eventloop, |e| {
        matches!(e, Event::Outgoing(rumqttc::Outgoing::Disconnect))
    })
    .await;
    Ok(())
}

/// On an external broker: clear the demo's retained messages and discard
/// the daemon's session.
async fn tidy_external(host: &str, port: u16, prefix: &str, ids: &ClientIds, topics: &[String]) {
    let mut o = MqttOptions::new(ids.ingest.clone(), host, port);
    o.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30));
    let Ok((client, mut eventloop)) = connect(host, port, o).await else {
        warn!("demo: could not tidy up the external broker");
        return;
    };
    let status = format!("{prefix}/v1/status");
    let mut n = 0usize;
    for t in topics.iter().chain(std::iter::once(&status)) {
        if client
            .publish(t.clone(), QoS::AtLeastOnce, true, Vec::<u8>::new())
            .await
            .is_ok()
        {
            n += 1;
        }
    }
    let mut acked = 0usize;
    let _ = poll_until(&mut eventloop, |e| {
        if matches!(e, Event::Incoming(Packet::PubAck(_))) {
            acked += 1;
        }
        acked >= n
    })
    .await;
    let _ = client.disconnect().await;
    let _ = poll_until(&mut eventloop, |e| {
        matches!(e, Event::Outgoing(rumqttc::Outgoing::Disconnect))
    })
    .await;
}

// ---------------------------------------------------------------------------
// The watcher.
// ---------------------------------------------------------------------------

/// One message the watcher saw.
#[derive(Debug)]
enum Watched {
    State { patient_id: String, state: Value },
    Dose { patient_id: String, payload: Value },
}

struct Watcher {
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Subscribe to the patients' state and their manual and pump doses.
    async fn start(
        host: &str,
        port: u16,
        client_id: &str,
        prefix: &str,
        tx: mpsc::Sender<Watched>,
    ) -> Result<Watcher, DemoError> {
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop) = connect(host, port, o).await?;
        let filters = [
            format!("{prefix}/v1/patients/+/state"),
            format!("{prefix}/v1/patients/+/doses"),
            format!("{prefix}/v1/devices/+/events"),
        ];
        client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtMostOnce)),
            )
            .await
            .map_err(|e| broker_error(host, port, format!("subscribe: {e}")))?;
        let prefix = format!("{prefix}/v1/");
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(w) = watched(&prefix, &p.topic, &p.payload) {
                            if tx.send(w).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        debug!(error = %e, "demo: watcher connection ended");
                        break;
                    }
                }
            }
        });
        Ok(Watcher { client, task })
    }

    async fn stop(self) {
        let _ = self.client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            debug!("demo: watcher did not stop in time");
        }
    }
}

/// A watched message, if it is one the table uses.
fn watched(prefix: &str, topic: &str, payload: &[u8]) -> Option<Watched> {
    let rest = topic.strip_prefix(prefix)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let value = || serde_json::from_slice::<Value>(payload).ok();
    match parts.as_slice() {
        ["patients", id, "state"] => Some(Watched::State {
            patient_id: (*id).to_owned(),
            state: value()?,
        }),
        ["patients", id, "doses"] => Some(Watched::Dose {
            patient_id: (*id).to_owned(),
            payload: value()?,
        }),
        ["devices", _, "events"] => {
            let v = value()?;
            if v.get("kind")?.as_str()? != "bolus_delivered" {
                return None;
            }
            let patient_id = v.get("patient_id")?.as_str()?.to_owned();
            Some(Watched::Dose {
                patient_id,
                payload: v,
            })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------

/// The last dose given by hand or by a pump's bolus.
#[derive(Debug, Clone, PartialEq)]
struct LastDose {
    at_ms: TimeMs,
    label: String,
}

/// What the table shows.
#[derive(Debug, Default)]
struct Board {
    patients: BTreeMap<String, Value>,
    last_dose: BTreeMap<String, LastDose>,
}

impl Board {
    fn apply(&mut self, w: Watched) {
        match w {
            Watched::State { patient_id, state } => {
                self.patients.insert(patient_id, state);
            }
            Watched::Dose {
                patient_id,
                payload,
            } => {
                let Some(dose) = dose_label(&payload) else {
                    return;
                };
                let newer = self
                    .last_dose
                    .get(&patient_id)
                    .is_none_or(|d| d.at_ms <= dose.at_ms);
                if newer {
                    self.last_dose.insert(patient_id, dose);
                }
            }
        }
    }
}

/// "intranasal 50 mg", "IV bolus 15 mg" (manual doses, pump boluses);
/// infusions and patches show as active inputs instead.
fn dose_label(v: &Value) -> Option<LastDose> {
    let at_ms = parse_rfc3339_ms(v.get("time")?.as_str()?).ok()?;
    let amount = v.get("amount_mg")?.as_f64()?;
    let route = match v.get("kind").and_then(Value::as_str) {
        Some("bolus_delivered") => "pump bolus".to_owned(),
        _ => route_label(v.get("route")?.as_str()?).to_owned(),
    };
    Some(LastDose {
        at_ms,
        label: format!("{route} {} mg", number(amount)),
    })
}

fn route_label(route: &str) -> &str {
    match route {
        "iv_bolus" => "IV bolus",
        "iv_infusion" => "IV",
        "im" => "IM",
        "sc" => "SC",
        "transdermal" => "patch",
        other => other,
    }
}

/// Three significant digits, no trailing zeros: 18, 17.5, 1.04.
fn number(x: f64) -> String {
    let s = if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// "IV 18 mg/h, patch 1.04 mg/h" from a state's `active_inputs`.
fn active_inputs(state: &Value) -> Vec<String> {
    state
        .get("active_inputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    let route = i.get("route")?.as_str()?;
                    let rate = i
                        .get("rate_mg_per_h")
                        .or_else(|| i.get("release_rate_mg_per_h"))?
                        .as_f64()?;
                    Some(format!("{} {} mg/h", route_label(route), number(rate)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// "in 23 min", "now", "at 14:05Z", "–" (not within the horizon).
fn when(at: Option<&str>, now_ms: TimeMs) -> String {
    let Some(at_ms) = at.and_then(|t| parse_rfc3339_ms(t).ok()) else {
        return "-".to_owned();
    };
    let ahead = at_ms - now_ms;
    if ahead <= 30_000 {
        "now".to_owned()
    } else if ahead < 2 * 3_600_000 {
        format!("in {} min", (ahead + 30_000) / 60_000)
    } else {
        let t = format_rfc3339(at_ms);
        // "2026-11-27T14:05:00Z" → "at 14:05Z"
        t.get(11..16)
            .map_or_else(|| format!("at {t}"), |hm| format!("at {hm}Z"))
    }
}

/// "12 min ago", "2 h 05 min ago".
fn ago(at_ms: TimeMs, now_ms: TimeMs) -> String {
    let min = ((now_ms - at_ms).max(0) + 30_000) / 60_000;
    if min < 60 {
        format!("{min} min ago")
    } else {
        format!("{} h {:02} min ago", min / 60, min % 60)
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// What every frame says besides the rows.
struct FrameInfo {
    ansi: bool,
    broker: String,
    prefix: String,
    patients: usize,
    speedup: f64,
    duration: Duration,
    sim_start: TimeMs,
}

/// Draw one frame: in place on a terminal, as an appended block otherwise.
fn draw(
    out: &mut dyn Write,
    f: &FrameInfo,
    board: &Board,
    counts: &Counts,
    elapsed: Duration,
    sim_now: TimeMs,
    last: bool,
) -> std::io::Result<()> {
    let now = devsim::wall_clock_ms().unwrap_or(sim_now);
    let text = frame_text(f, board, counts, elapsed, sim_now, now, last);
    if f.ansi {
        // Home, then clear to the end of the screen: no flicker.
        write!(out, "\x1b[H\x1b[2J{text}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()
}

fn frame_text(
    f: &FrameInfo,
    board: &Board,
    counts: &Counts,
    elapsed: Duration,
    sim_now: TimeMs,
    now: TimeMs,
    last: bool,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "dosetrack demo — {NOTICE}");
    let _ = writeln!(
        s,
        "{} {} / {} · inputs stored {} · rejections {} · {} of {} patients tracked",
        if last { "final" } else { "live" },
        clock(elapsed),
        clock(f.duration),
        counts.inputs,
        counts.rejected,
        board.patients.len(),
        f.patients,
    );
    let sim = format_rfc3339(sim_now);
    let _ = writeln!(
        s,
        "simulated ward at {}×, started {}Z · ward clock {}Z, catching up with the wall clock",
        number(f.speedup),
        format_rfc3339(f.sim_start).get(11..16).unwrap_or("?"),
        sim.get(11..19).unwrap_or(&sim),
    );
    let _ = writeln!(s, "{} · topics {}/v1/… · Ctrl-C stops", f.broker, f.prefix);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<8} {:>9} {:>9}  {:<8} {:<42} {:<13} {:<5}  model",
        "patient", "Cp ng/mL", "Ce ng/mL", "trend", "inputs", "below floor", "stale"
    );
    if board.patients.is_empty() {
        let _ = writeln!(s, "(waiting for the first patient state…)");
    }
    for (id, st) in &board.patients {
        let num = |k: &str| {
            st.get(k)
                .and_then(Value::as_f64)
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
        };
        let text = |k: &str| st.get(k).and_then(Value::as_str).unwrap_or("-");
        let mut inputs = active_inputs(st);
        if let Some(d) = board.last_dose.get(id) {
            inputs.push(format!("{} {}", d.label, ago(d.at_ms, now)));
        }
        let inputs = if inputs.is_empty() {
            "-".to_owned()
        } else {
            inputs.join(", ")
        };
        let below = when(
            st.get("forecast")
                .and_then(|f| f.get("below_floor_at"))
                .and_then(Value::as_str),
            now,
        );
        let stale = match st.get("stale").and_then(Value::as_bool) {
            Some(true) => "STALE",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(
            s,
            "{:<8} {:>9} {:>9}  {:<8} {:<42} {:<13} {:<5}  {}",
            id,
            num("cp_ng_per_ml"),
            num("ce_ng_per_ml"),
            text("trend"),
            inputs,
            below,
            stale,
            text("model"),
        );
    }
    s
}

fn write_summary(out: &mut dyn Write, s: &DemoSummary) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "summary: inputs stored {}, rejections {}, patients tracked {}, messages published by the simulated ward {}, in {:.1} s",
        s.inputs_stored,
        s.rejected,
        s.patients_tracked,
        s.published,
        s.elapsed.as_secs_f64()
    )?;
    match &s.database_kept {
        Some(p) => writeln!(
            out,
            "database kept at {} (try: dosetrack patients --database {})",
            p.display(),
            p.display()
        )?,
        None => writeln!(
            out,
            "the temporary database was removed (keep one with --database PATH)"
        )?,
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn numbers_have_three_significant_digits() {
        assert_eq!(number(18.0), "18");
        assert_eq!(number(17.53), "17.5");
        assert_eq!(number(1.04), "1.04");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(120.4), "120");
    }

    #[test]
    fn active_inputs_read_like_a_chart() {
        let st: Value = serde_json::json!({"active_inputs": [
            {"source": "devices/pump-0001", "route": "iv_infusion", "rate_mg_per_h": 18.0},
            {"source": "devices/patch-0002", "route": "transdermal", "release_rate_mg_per_h": 1.04}
        ]});
        assert_eq!(active_inputs(&st), vec!["IV 18 mg/h", "patch 1.04 mg/h"]);
    }

    #[test]
    fn crossing_times_read_relative_to_now() {
        let now = parse_rfc3339_ms("2026-11-27T10:00:00Z").unwrap();
        assert_eq!(when(None, now), "-");
        assert_eq!(when(Some("2026-11-27T10:00:00Z"), now), "now");
        assert_eq!(when(Some("2026-11-27T10:23:10Z"), now), "in 23 min");
        assert_eq!(when(Some("2026-11-27T14:05:00Z"), now), "at 14:05Z");
        assert_eq!(ago(now - 12 * 60_000, now), "12 min ago");
        assert_eq!(ago(now - 125 * 60_000, now), "2 h 05 min ago");
    }

    #[test]
    fn watched_messages_are_recognised() {
        let p = "x/v1/";
        assert!(matches!(
            watched(p, "x/v1/patients/P-1/state", br#"{"cp_ng_per_ml":1}"#),
            Some(Watched::State { .. })
        ));
        let dose =
            br#"{"id":"a","time":"2026-11-27T10:00:00Z","route":"intranasal","amount_mg":50}"#;
        let Some(Watched::Dose {
            patient_id,
            payload,
        }) = watched(p, "x/v1/patients/P-1/doses", dose)
        else {
            panic!("a dose");
        };
        assert_eq!(patient_id, "P-1");
        assert_eq!(dose_label(&payload).unwrap().label, "intranasal 50 mg");
        let hb = br#"{"id":"h","time":"2026-11-27T10:00:00Z","kind":"heartbeat"}"#;
        assert!(watched(p, "x/v1/devices/pump-1/events", hb).is_none());
        let bolus = br#"{"id":"b","time":"2026-11-27T10:00:00Z","kind":"bolus_delivered","amount_mg":7.5,"patient_id":"P-2"}"#;
        assert!(matches!(
            watched(p, "x/v1/devices/pump-1/events", bolus),
            Some(Watched::Dose { .. })
        ));
        assert!(watched(p, "y/v1/patients/P-1/state", b"{}").is_none());
    }

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

    #[test]
    fn options_are_checked() {
        let mut o = DemoOptions::new();
        assert!(o.validate().is_ok());
        o.speedup = 0.5;
        assert!(matches!(o.validate(), Err(DemoError::Invalid(_))));
        o.speedup = 60.0;
        o.patients = 0;
        assert!(matches!(o.validate(), Err(DemoError::Invalid(_))));
    }
}
