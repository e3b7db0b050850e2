//! The daemon (`dosetrack run`): the shell around the pure core.
//!
//! It owns the edges — the MQTT connections, the SQLite writer, the clock
//! and shutdown — and the order of things for each input:
//!
//! 1. **Stage A** (receive): take a message from the ingest connection,
//!    decide on it with [`intake`](crate::intake) (pure), and submit its
//!    write to the store at once, so that concurrent inputs share a commit.
//! 2. **Stage B** (apply, in arrival order, a batch at a time): take the
//!    next input and every input already queued behind it (up to
//!    [`BATCH_MAX`]); for each in arrival order wait for its write to
//!    commit, apply it to the [`Tracker`] if it was new, publish the
//!    rejection notice for a refused message; then publish ONE state per
//!    patient the batch touched and record those states and their history
//!    points in one write; and only then acknowledge the batch's inputs, in
//!    arrival order. A write that fails is retried (with back-off) and never
//!    acknowledged until it succeeds: the input is not lost, and inputs
//!    behind it wait.
//! 3. **Timer**: every tracked patient's state is republished once per
//!    `state.interval_s`, spread over the interval in up to 60 slots (a
//!    fixed slot per patient, [`crate::republish`]: no burst of every
//!    patient at once); every `state.history_interval_s` a history
//!    point is recorded per tracked patient (on a fixed grid, so a
//!    recompute after a late input overwrites the same points).
//!
//! At start, the tracker is rebuilt from every stored input before the
//! subscription resumes; the broker then redelivers what was not
//! acknowledged, and the store's duplicate detection makes that harmless.
//!
//! 4. **Reload** (SIGHUP, [`run_with`]): a reload task reads and validates
//!    the config file and its drug file again, classifies the differences
//!    ([`crate::reload`]), logs one warning per refused key, and sends the
//!    reloadable part into stage B's loop (so it is ordered with the input
//!    batches). Stage B resolves every patient again against the new drug
//!    file and settings (recomputed from their inputs; stored inputs never
//!    change), gives the alert book its new settings (its records are
//!    kept), re-evaluates every alert scope and republishes every state.
//!    Stage A then checks new inputs with the new drug file and limits.

use crate::alerts::{AlertBook, AlertEngine, Scope};
use crate::config::Config;
use crate::contract::ErrorCode;
use crate::contract::{AlertCommand, Input, InputTopic};
use crate::drug::DrugFile;
use crate::health::{self, Health};
use crate::intake::{self, Intake, RejectedNotice};
use crate::metrics::Metrics;
use crate::mqtt::{self, AckToken, BrokerConfig, IngestHandle, Publisher};
use crate::outbox::{spawn_outbox, Failpoint, OutboxHandle};
use crate::patient::Formulary;
use crate::republish::Spread;
use crate::service::{self, Progress, Supervisor};
use crate::store::{
    HistoryRow, Queued, Reader, RejectedRecord, StateRow, StoreConfig, StoreError, StoreOutcome,
    WriteOp, WriteResult, Writer,
};
use crate::tracker::{TrackedInput, Tracker, TrackerConfig};
use crate::vocab::{format_rfc3339, TimeMs};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The drug file cannot be used; the message names the file.
    #[error("{0}")]
    Drug(String),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Mqtt(#[from] mqtt::MqttError),
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Http(#[from] crate::http::HttpError),
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub replayed: usize,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// Milliseconds since the epoch, from the system clock (the one place the
/// daemon reads it).
pub fn now_ms() -> TimeMs {
    chrono::Utc::now().timestamp_millis()
}

/// Topic names under the configured prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Topics {
            prefix: prefix.to_owned(),
        }
    }
    pub fn state(&self, patient_id: &str) -> String {
        format!("{}/v1/patients/{patient_id}/state", self.prefix)
    }
    pub fn rejected(&self) -> String {
        format!("{}/v1/rejected", self.prefix)
    }
    pub fn status(&self) -> String {
        format!("{}/v1/status", self.prefix)
    }
}

/// A stored operator command to apply: (input seq, alert id, command).
type PendingCommand = (i64, String, AlertCommand);

/// One input on its way from stage A to stage B.
struct InFlight {
    ack: AckToken,
    kind: Pending,
}

/// Most in-flight inputs stage B handles as one batch.
pub const BATCH_MAX: usize = 512;

/// An input's write: queued in the writer (in arrival order), or not
/// queued because the writer has stopped.
type Write = Result<Queued, StoreError>;

enum Pending {
    Accept {
        op: WriteOp,
        write: Write,
        tracked: Box<TrackedInput>,
        topic: String,
        payload: Vec<u8>,
        received_at_ms: TimeMs,
    },
    Reject {
        op: WriteOp,
        write: Write,
        notice: RejectedNotice,
    },
}

/// Load the drug file named by the config (or the built-in one).
pub fn formulary(cfg: &Config) -> Result<Formulary, DaemonError> {
    formulary_and_table(cfg)
        .map(|(formulary, _)| formulary)
        .map_err(DaemonError::Drug)
}

/// The drug file named by the config, loaded and validated, with its parsed
/// TOML (for [`crate::reload::classify`]). Errors name the file.
fn formulary_and_table(cfg: &Config) -> Result<(Formulary, toml::Table), String> {
    let (text, path) = match &cfg.drug.file {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("drug file {}: {e}", p.display()))?,
            p.clone(),
        ),
        None => (
            crate::drug::BUILTIN_TOML.to_owned(),
            PathBuf::from(crate::drug::BUILTIN_PATH),
        ),
    };
    let named = |e: String| format!("drug file {}: {e}", path.display());
    // Its errors name the file already.
    let drug = DrugFile::from_toml_str(&text, &path).map_err(|e| e.to_string())?;
    let formulary = Formulary::new(drug).map_err(|e| named(e.to_string()))?;
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| named(e.to_string()))?;
    Ok((formulary, table))
}

/// How a running daemon is reloaded (SIGHUP): see [`run_with`].
pub struct Reloads {
    /// One message per reload request (a SIGHUP).
    pub requests: mpsc::Receiver<()>,
    /// The config file given at start (`--config`); `None`: built-in
    /// defaults, nothing to reload.
    pub file: Option<PathBuf>,
    /// The command line's overrides: they still win after a reload.
    pub overrides: crate::config::Overrides,
    /// Applies a new `[log] level`.
    pub log: Option<crate::logging::LogHandle>,
}

/// What stage A checks new inputs with (replaced by a reload).
#[derive(Clone)]
struct IntakeSettings {
    formulary: Arc<Formulary>,
    rules: intake::IntakeRules,
}

/// Stage A's checks beyond the contract, from the configuration: the clock
/// skew and past bounds (`[limits]`) and the device allow-list
/// (`[devices]`, whose `allow_file` is read here).
fn intake_rules(cfg: &Config) -> Result<intake::IntakeRules, crate::config::ConfigError> {
    Ok(intake::IntakeRules {
        max_future_skew_ms: (cfg.limits.max_future_skew_s * 1000) as i64,
        max_past_age_ms: Some((cfg.limits.max_past_age_h * 3_600_000) as i64),
        allowed_devices: cfg.devices.allowed()?.map(Arc::new),
    })
}

/// The reloadable part of a new configuration, for stage B.
struct ReloadRequest {
    cfg: Config,
    /// A changed drug file.
    formulary: Option<Arc<Formulary>>,
    done: oneshot::Sender<()>,
}

fn tracker_config(cfg: &Config) -> TrackerConfig {
    TrackerConfig {
        forecast_horizon_ms: (cfg.state.forecast_horizon_h * 3_600_000.0) as TimeMs,
        device_stale_after_ms: (cfg.state.device_stale_after_min * 60_000.0) as TimeMs,
    }
}

fn broker_config(cfg: &Config, client_id: String) -> BrokerConfig {
    let mut b = BrokerConfig::new(cfg.broker.host.clone(), cfg.broker.port, client_id);
    b.username = cfg.broker.username.clone();
    b.password = cfg.broker.password.clone();
    b.tls = cfg.broker.tls_client.clone();
    b.keep_alive = cfg.keep_alive();
    b.max_packet_bytes = cfg.broker.max_packet_bytes;
    b
}

/// Stored inputs read per page by [`rebuild`]: the replay holds one page
/// (a few MB) at a time, never the whole store (at 1,000,000 stored inputs
/// reading them all at once took ~750 MB at peak, and ~500 MB stayed with
/// the process after start).
pub const REBUILD_PAGE: usize = 5_000;

/// Rebuild the tracker from every stored input, a page at a time. Returns
/// how many were replayed, and the stored operator commands whose outcome
/// was never recorded (`unapplied`: their sequence numbers), to apply again.
pub fn rebuild(
    reader: &Reader,
    tracker: &mut Tracker,
    unapplied: &BTreeSet<i64>,
) -> Result<(usize, Vec<PendingCommand>), DaemonError> {
    let mut replayed = 0;
    let mut commands = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = reader.inputs_page(after_seq, REBUILD_PAGE)?;
        let Some(last) = page.last() else {
            break;
        };
        after_seq = last.seq;
        for s in page {
            match intake::replay(&s) {
                Ok(t) => {
                    if unapplied.contains(&t.seq) {
                        let mut scopes = BTreeSet::new();
                        alert_scopes_of(&t, &mut scopes, &mut commands);
                    }
                    tracker.apply(t);
                    replayed += 1;
                }
                Err(r) => {
                    warn!(seq = s.seq, topic = %s.topic, error = %r, "stored input no longer parses; not applied")
                }
            }
        }
    }
    Ok((replayed, commands))
}

/// Run until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<RunSummary, DaemonError> {
    run_with(cfg, shutdown, None).await
}

/// Run until `shutdown` is cancelled, reloading the configuration on each
/// of `reloads`' requests (module doc, step 4).
pub async fn run_with(
    cfg: Config,
    shutdown: CancellationToken,
    reloads: Option<Reloads>,
) -> Result<RunSummary, DaemonError> {
    let (formulary, drug_table) = formulary_and_table(&cfg).map_err(DaemonError::Drug)?;
    let formulary = Arc::new(formulary);
    // The health and metrics port before the database: a port in use stops
    // the start.
    let http_listener = match cfg.http.listen_addr()? {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    // Validated at load (Config::validate reads allow_file); read again
    // here so the list in force is the file's content at start.
    let intake_rules = intake_rules(&cfg)?;
    if let Some(allowed) = &intake_rules.allowed_devices {
        info!(devices = allowed.len(), "device allow-list in force");
    }
    let topics = Topics::new(&cfg.topics.prefix);
    let mut store_cfg = StoreConfig::new(cfg.database.path.clone());
    store_cfg.batch_max = cfg.database.batch_max;
    store_cfg.batch_window = Duration::from_millis(cfg.database.batch_window_ms);
    let (writer, writer_thread) = Writer::open_with_metrics(store_cfg, Some(metrics.commit()))?;
    let reader = Reader::open(&cfg.database.path)?;

    let mut tracker = Tracker::new(formulary.clone(), tracker_config(&cfg));
    let unapplied: BTreeSet<i64> = reader.unapplied_commands()?.into_iter().collect();
    let (replayed, pending_commands) = rebuild(&reader, &mut tracker, &unapplied)?;
    let open_alerts = reader.open_alerts()?;
    let book = AlertBook::restore(
        cfg.alerts.clone(),
        open_alerts,
        reader.max_alert_number()? + 1,
    );
    let alerts = AlertEngine::new(book, &cfg.topics.prefix);
    let failpoint = Failpoint::from_env();
    info!(
        replayed,
        database = %cfg.database.path.display(),
        tracked = tracker.tracked(now_ms()).len(),
        "state rebuilt from the database"
    );

    let started_at = format_rfc3339(now_ms());
    let online = health::online_status(&started_at, &[]);
    let offline = serde_json::json!({"state": "offline"}).to_string();
    let publisher_stop = CancellationToken::new();
    let (publisher, publisher_task) = mqtt::spawn_publisher(
        broker_config(&cfg, format!("{}-pub", cfg.broker.client_id)),
        topics.status(),
        online,
        offline,
        publisher_stop.clone(),
    );

    // Technical problems: republished in the retained status as they change.
    let health = Health::new();
    let status_task = tokio::spawn(publish_problems(
        health.clone(),
        publisher.clone(),
        started_at.clone(),
        publisher_stop.clone(),
    ));

    // Alert messages go out from the outbox (committed with their cause).
    let outbox_stop = CancellationToken::new();
    let (outbox, outbox_task) = spawn_outbox(
        cfg.database.path.clone(),
        writer.clone(),
        publisher.clone(),
        outbox_stop.clone(),
        failpoint,
    );

    let (deliver_tx, mut deliver_rx) = mpsc::channel::<mqtt::Incoming>(256);
    let ingest_stop = CancellationToken::new();
    let (ingest, ingest_task) = mqtt::spawn_ingest(
        broker_config(&cfg, cfg.broker.client_id.clone()),
        cfg.topics.prefix.clone(),
        deliver_tx,
        ingest_stop.clone(),
    );

    // Stage B runs as its own task; stage A feeds it in arrival order.
    let (pipe_tx, pipe_rx) = mpsc::channel::<InFlight>(1024);
    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(1);
    let (intake_tx, intake_rx) = watch::channel(IntakeSettings {
        formulary: formulary.clone(),
        rules: intake_rules,
    });
    let progress = Arc::new(Progress::default());
    let stage_b = tokio::spawn(stage_b(StageB {
        rx: pipe_rx,
        reload_rx,
        tracker,
        writer: writer.clone(),
        health: health.clone(),
        publisher: publisher.clone(),
        ingest: ingest.clone(),
        topics: topics.clone(),
        state_interval: Duration::from_secs(cfg.state.interval_s),
        history_interval_ms: (cfg.state.history_interval_s * 1000) as TimeMs,
        alerts,
        outbox,
        failpoint,
        pending_commands,
        summary: RunSummary {
            replayed,
            ..RunSummary::default()
        },
        progress: progress.clone(),
        metrics: metrics.clone(),
    }));
    // Database care (history retention, WAL checkpoint, optimize): once the
    // state is rebuilt, then every maintenance_interval_h; through the
    // writer, beside ingest.
    let maintenance_stop = CancellationToken::new();
    let maintenance_task = tokio::spawn(crate::store::maintenance::run_periodic(
        writer.clone(),
        crate::store::MaintenanceConfig::new(
            cfg.database.history_retention_days,
            cfg.database.maintenance_interval_h,
        ),
        maintenance_stop.clone(),
        now_ms,
    ));
    // Database open, state rebuilt, writer running: ready (under systemd,
    // READY=1, then status and watchdog). Not gated on the broker.
    let supervisor = Supervisor::start(service::Watch {
        writer: writer.clone(),
        publisher: publisher.clone(),
        ingest: ingest.clone(),
        progress,
        health: health.clone(),
    });
    let http_stop = CancellationToken::new();
    let http_task = match http_listener {
        Some(listener) => Some(crate::http::spawn(
            listener,
            crate::http::Endpoints {
                metrics: metrics.clone(),
                writer: writer.clone(),
                publisher: publisher.clone(),
                ingest: ingest.clone(),
                reader: Reader::open(&cfg.database.path)?,
                health,
                max_unacked_age_s: cfg.http.max_unacked_age_s,
            },
            http_stop.clone(),
        )),
        None => None,
    };

    let reloader = reloads.map(|r| {
        tokio::spawn(reloader(
            r,
            Running {
                cfg: cfg.clone(),
                config_table: None,
                drug_table,
            },
            reload_tx,
            intake_tx,
            shutdown.clone(),
        ))
    });

    // Stage A.
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = deliver_rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
        };
        // Unacknowledged from here until stage B is done with it (lag).
        metrics.input_received(incoming.received_at_ms);
        let settings = intake_rx.borrow().clone();
        let decision = intake::intake_with(
            &cfg.topics.prefix,
            &incoming.topic,
            &incoming.payload,
            incoming.received_at_ms,
            &settings.rules,
            &settings.formulary,
        );
        let kind = match decision {
            Intake::Accept {
                record,
                topic,
                input,
            } => {
                let op = WriteOp::Input(*record);
                // Queued here, in arrival order; stage B waits for the commit.
                let write = writer.enqueue(op.clone()).await;
                Pending::Accept {
                    op,
                    write,
                    tracked: Box::new(TrackedInput {
                        seq: 0,
                        topic,
                        input: *input,
                    }),
                    topic: incoming.topic.clone(),
                    payload: incoming.payload.to_vec(),
                    received_at_ms: incoming.received_at_ms,
                }
            }
            Intake::Reject { record, notice } => {
                debug!(topic = %incoming.topic, code = record.code.as_str(), "rejected");
                let op = WriteOp::Rejected(record);
                let write = writer.enqueue(op.clone()).await;
                Pending::Reject { op, write, notice }
            }
        };
        if pipe_tx
            .send(InFlight {
                ack: incoming.ack,
                kind,
            })
            .await
            .is_err()
        {
            error!("the apply stage stopped; stopping intake");
            break;
        }
    }

    // Clean stop: no new inputs; finish and acknowledge those in hand.
    info!("stopping: finishing the inputs in hand");
    if let Some(r) = reloader {
        r.abort();
    }
    ingest_stop.cancel();
    drop(pipe_tx);
    // Keep draining deliveries that raced the stop so their tokens are
    // dropped (they were not acknowledged and will be redelivered).
    deliver_rx.close();
    // Bounded: if the database is failing, stop anyway; what was not stored
    // was not acknowledged and is redelivered to the next run.
    let summary = match tokio::time::timeout(Duration::from_secs(30), stage_b).await {
        Ok(joined) => joined?,
        Err(_) => {
            error!("inputs in hand could not be stored within 30 s; stopping without them (they are redelivered)");
            RunSummary {
                replayed,
                ..RunSummary::default()
            }
        }
    };
    supervisor.stop().await;
    http_stop.cancel();
    if let Some(task) = http_task {
        if let Err(e) = task.await {
            warn!(error = %e, "health and metrics listener task failed");
        }
    }
    match ingest_task.await {
        Ok(Ok(())) | Ok(Err(mqtt::MqttError::DeliverClosed)) => {}
        Ok(Err(e)) => warn!(error = %e, "ingest connection ended with an error"),
        Err(e) => warn!(error = %e, "ingest task failed"),
    }
    // Alert messages still in the outbox: one bounded last attempt (what is
    // left goes out at the next start).
    outbox_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(15), outbox_task).await {
        Ok(Ok(Ok(n))) => debug!(published = n, "outbox stopped"),
        Ok(Ok(Err(e))) => warn!(error = %e, "outbox ended with an error"),
        Ok(Err(e)) => warn!(error = %e, "outbox task failed"),
        Err(_) => warn!("outbox still publishing after 15 s; the rest goes out at the next start"),
    }
    publisher_stop.cancel();
    if let Err(e) = status_task.await {
        warn!(error = %e, "status task failed");
    }
    match publisher_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "publisher ended with an error"),
        Err(e) => warn!(error = %e, "publisher task failed"),
    }
    maintenance_stop.cancel();
    if let Err(e) = maintenance_task.await {
        warn!(error = %e, "maintenance task failed");
    }
    drop(writer);
    writer_thread.shutdown()?;
    info!(
        accepted = summary.accepted,
        duplicates = summary.duplicates,
        rejected = summary.rejected,
        "stopped cleanly"
    );
    Ok(summary)
}

struct StageB {
    rx: mpsc::Receiver<InFlight>,
    /// Reloads, ordered with the input batches.
    reload_rx: mpsc::Receiver<ReloadRequest>,
    tracker: Tracker,
    writer: Writer,
    /// Technical problems (a failing database write), for the status.
    health: Health,
    publisher: Publisher,
    ingest: IngestHandle,
    topics: Topics,
    state_interval: Duration,
    history_interval_ms: TimeMs,
    alerts: AlertEngine,
    outbox: OutboxHandle,
    failpoint: Option<Failpoint>,
    /// Stored commands never applied (a crash came in between): applied at
    /// start.
    pending_commands: Vec<PendingCommand>,
    summary: RunSummary,
    /// Heartbeat and counters for the service watchdog and status.
    progress: Arc<Progress>,
    /// Prometheus metrics (`/metrics`).
    metrics: Arc<Metrics>,
}

/// Republish the retained online status whenever the set of technical
/// problems changes, until `stop`.
async fn publish_problems(
    health: Health,
    publisher: Publisher,
    started_at: String,
    stop: CancellationToken,
) {
    let mut changes = health.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return; },
        }
        let problems = health.problems();
        let payload = health::online_status(&started_at, &problems);
        if let Err(e) = publisher.set_online(payload.into_bytes()).await {
            warn!(error = %e, "status with the technical problems not published");
        }
    }
}

/// Wait for a write. A failure a retry can mend (the batch could not be
/// committed: database locked, disk full, I/O) is retried with back-off
/// until it succeeds, the input staying unacknowledged meanwhile and a
/// technical problem raised in `health` until it does. Any other
/// failure is returned at once: the writer has stopped (the input is not
/// acknowledged and the broker redelivers it to the next run), or the
/// store refused the op itself (`InvalidRecord`: retrying fails the same
/// way, and retrying forever would stall every input behind it).
async fn committed(
    writer: &Writer,
    health: &Health,
    first: Write,
    op: &WriteOp,
) -> Result<WriteResult, StoreError> {
    let mut result = match first {
        Ok(queued) => queued.outcome().await,
        Err(e) => Err(e),
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match result {
            Ok(r) => {
                health.database_ok();
                return Ok(r);
            }
            Err(e @ (StoreError::WriterClosed | StoreError::WriterPanicked)) => {
                error!("the store writer has stopped; input not acknowledged");
                return Err(e);
            }
            Err(e) if e.is_retryable() => {
                health.database_failing(&e, now_ms());
                error!(error = %e, retry_in_ms = delay.as_millis() as u64, "write failed; the input is not acknowledged and will be retried");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                result = writer.write(op.clone()).await;
            }
            Err(e) => {
                error!(error = %e, "the store refused this write; retrying cannot help");
                return Err(e);
            }
        }
    }
}

async fn stage_b(mut b: StageB) -> RunSummary {
    // Publish the rebuilt state once at start.
    let now = now_ms();
    let tracked: BTreeSet<String> = b.tracker.tracked(now).into_iter().collect();
    b.metrics.set_tracked_patients(tracked.len());
    publish_states(&mut b, &tracked, &BTreeMap::new(), now).await;
    // And evaluate every alert scope once: restored alerts continue, what
    // changed while the daemon was down is raised or cleared now.
    let scopes = b.alerts.all_scopes(&b.tracker, now);
    let commands = std::mem::take(&mut b.pending_commands);
    evaluate_alerts(&mut b, &scopes, commands, now).await;
    // The periodic republish, spread over the interval (one slot a tick).
    let mut spread = Spread::new(b.state_interval);
    let mut state_tick = tokio::time::interval(spread.period());
    state_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut history_tick =
        tokio::time::interval(Duration::from_millis(b.history_interval_ms as u64));
    history_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Comes round even when idle, so the watchdog sees a live loop.
    let mut heartbeat = tokio::time::interval(service::heartbeat_period());
    let mut reload_open = true;
    loop {
        b.progress.beat(&b.summary);
        let wake_in = b
            .alerts
            .next_wake()
            .map(|t| Duration::from_millis((t - now_ms()).max(0) as u64));
        let alert_timer = async move {
            match wake_in {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = alert_timer => {
                let now = now_ms();
                let due = b.alerts.due(now);
                evaluate_alerts(&mut b, &due, Vec::new(), now).await;
            }
            item = b.rx.recv() => match item {
                Some(first) => {
                    // Whatever else is already in hand joins this batch.
                    let mut batch = vec![first];
                    while batch.len() < BATCH_MAX {
                        match b.rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    handle_batch(&mut b, batch).await;
                }
                None => break,
            },
            _ = state_tick.tick() => {
                let now = now_ms();
                let slot = spread.advance();
                // Every tick walks the patients without copying their ids
                // (at 10,000 patients, copying every id at each tick was most
                // of the idle CPU); only the slot's ids are copied.
                let mut tracked = 0usize;
                let due: BTreeSet<String> = b
                    .tracker
                    .tracked_ids(now)
                    .inspect(|_| tracked += 1)
                    .filter(|pid| spread.slot_of(pid) == slot)
                    .map(str::to_owned)
                    .collect();
                b.metrics.set_tracked_patients(tracked);
                b.metrics.set_core_sizes(b.tracker.retained_inputs(), b.alerts.book().entries());
                if !due.is_empty() {
                    publish_states(&mut b, &due, &BTreeMap::new(), now).await;
                }
            }
            _ = history_tick.tick() => {
                let now = now_ms();
                let grid = now - now.rem_euclid(b.history_interval_ms);
                let rows: Vec<HistoryRow> = b
                    .tracker
                    .tracked(now)
                    .into_iter()
                    .filter_map(|pid| {
                        let d = b.tracker.derived(&pid)?;
                        let c = d.solution.at(grid);
                        Some(HistoryRow { patient_id: pid, t_ms: grid, cp_ng_per_ml: c.cp_ng_per_ml, ce_ng_per_ml: c.ce_ng_per_ml })
                    })
                    .collect();
                if !rows.is_empty() {
                    if let Err(e) = b.writer.write(WriteOp::History(rows)).await {
                        b.health.database_failing(&e, now_ms());
                        warn!(error = %e, "history points not recorded");
                    }
                }
            }
            req = b.reload_rx.recv(), if reload_open => match req {
                Some(req) => {
                    let before = (b.state_interval, b.history_interval_ms);
                    apply_reload(&mut b, req).await;
                    if b.state_interval != before.0 {
                        spread = Spread::new(b.state_interval);
                        state_tick = tokio::time::interval(spread.period());
                        state_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    if b.history_interval_ms != before.1 {
                        history_tick = tokio::time::interval(Duration::from_millis(b.history_interval_ms as u64));
                        history_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                None => reload_open = false,
            },
            _ = heartbeat.tick() => {}
        }
    }
    b.progress.beat(&b.summary);
    b.summary
}

/// Apply a reload inside stage B (between two batches): the tracker
/// resolves every patient again (new drug file, new state settings), the
/// alert book takes its new settings (its records are kept), then every
/// alert scope is evaluated and every state republished.
async fn apply_reload(b: &mut StageB, req: ReloadRequest) {
    let formulary = req
        .formulary
        .unwrap_or_else(|| b.tracker.formulary().clone());
    b.tracker.reconfigure(formulary, tracker_config(&req.cfg));
    b.alerts.book_mut().set_config(req.cfg.alerts.clone());
    b.state_interval = Duration::from_secs(req.cfg.state.interval_s);
    b.history_interval_ms = (req.cfg.state.history_interval_s * 1000) as TimeMs;
    let now = now_ms();
    let tracked: BTreeSet<String> = b.tracker.tracked(now).into_iter().collect();
    publish_states(b, &tracked, &BTreeMap::new(), now).await;
    let scopes = b.alerts.all_scopes(&b.tracker, now);
    evaluate_alerts(b, &scopes, Vec::new(), now).await;
    let _ = req.done.send(());
}

/// What the daemon runs with, to compare a reload against.
struct Running {
    cfg: Config,
    /// The config file's TOML as last loaded (`None` until the first
    /// reload reads it: then the file as it was at start is not known
    /// exactly, see [`reloader`]).
    config_table: Option<toml::Table>,
    drug_table: toml::Table,
}

/// Read and validate the config file and its drug file.
fn load_files(
    file: &std::path::Path,
    overrides: &crate::config::Overrides,
) -> Result<(Config, toml::Table, Formulary, toml::Table), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read config file {}: {e}", file.display()))?;
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| format!("config file {}: {e}", file.display()))?;
    let cfg = Config::load(Some(file), |k| std::env::var(k).ok(), overrides)
        .map_err(|e| e.to_string())?;
    let (formulary, drug_table) = formulary_and_table(&cfg)?;
    Ok((cfg, table, formulary, drug_table))
}

/// The reload task: one reload per request, until the daemon stops.
async fn reloader(
    mut r: Reloads,
    mut running: Running,
    to_stage_b: mpsc::Sender<ReloadRequest>,
    intake: watch::Sender<IntakeSettings>,
    shutdown: CancellationToken,
) {
    // The config file as it was at start: read now (the daemon started a
    // moment ago; the same file).
    if let Some(file) = &r.file {
        running.config_table = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok());
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            req = r.requests.recv() => if req.is_none() { return },
        }
        service::reloading();
        let Some(file) = r.file.clone() else {
            warn!(signal = "SIGHUP", "reload: no config file was given at start (--config), so there is nothing to reload (built-in defaults and drug file); restart with --config to change settings");
            service::reloaded();
            continue;
        };
        let loaded = tokio::task::spawn_blocking({
            let overrides = r.overrides.clone();
            move || load_files(&file, &overrides)
        })
        .await;
        let (new_cfg, new_table, formulary, drug_table) = match loaded {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                error!(error = %e, "reload refused: the configuration is invalid; keeping the running configuration");
                service::reloaded();
                continue;
            }
            Err(e) => {
                error!(error = %e, "reload failed; keeping the running configuration");
                service::reloaded();
                continue;
            }
        };
        let old_table = running.config_table.clone().unwrap_or_default();
        let classified = crate::reload::classify(
            &old_table,
            &new_table,
            &crate::reload::overridden_keys(&r.overrides),
            &running.drug_table,
            &drug_table,
        );
        for c in &classified.refused {
            warn!(key = %c.key, "{}", c.refusal());
        }
        if classified.applied.is_empty() {
            info!(
                refused = classified.refused.len(),
                "reload: nothing to apply"
            );
            // The refused keys stay pending: the next reload compares with
            // what runs, not with this file.
            service::reloaded();
            continue;
        }
        let cfg = crate::reload::apply(&running.cfg, &new_cfg);
        let formulary = Arc::new(formulary);
        let (done_tx, done_rx) = oneshot::channel();
        let req = ReloadRequest {
            cfg: cfg.clone(),
            formulary: classified.drug_changed().then(|| formulary.clone()),
            done: done_tx,
        };
        if to_stage_b.send(req).await.is_err() || done_rx.await.is_err() {
            warn!("reload not applied: the daemon is stopping");
            return;
        }
        let intake_formulary = if classified.drug_changed() {
            formulary
        } else {
            intake.borrow().formulary.clone()
        };
        let rules = match intake_rules(&cfg) {
            Ok(rules) => rules,
            Err(e) => {
                warn!(error = %e, "intake limits and device allow-list not changed");
                intake.borrow().rules.clone()
            }
        };
        intake.send_replace(IntakeSettings {
            formulary: intake_formulary,
            rules,
        });
        if cfg.log.level != running.cfg.log.level {
            if let Some(log) = &r.log {
                if let Err(e) = log.set_level(&cfg.log.level) {
                    warn!(error = %e, "log level not changed");
                }
            }
        }
        info!(
            changes = %classified.applied_summary(),
            refused = classified.refused.len(),
            "reloaded: {}",
            classified.applied_summary()
        );
        // What runs now: the applied keys from the new file, the refused
        // ones as before (so they are refused again at the next reload).
        let mut table = new_table;
        for c in &classified.refused {
            restore_key(&mut table, &old_table, &c.key);
        }
        running = Running {
            cfg,
            config_table: Some(table),
            drug_table,
        };
        service::reloaded();
    }
}

/// Set dotted `key` in `table` to its value in `from` (removed if absent
/// there).
fn restore_key(table: &mut toml::Table, from: &toml::Table, key: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, path)) = parts.split_last() else {
        return;
    };
    let mut source = Some(from);
    let mut target = table;
    for p in path {
        source = source.and_then(|s| s.get(*p)).and_then(|v| v.as_table());
        let entry = target
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(t) = entry.as_table_mut() else {
            return;
        };
        target = t;
    }
    match source.and_then(|s| s.get(*last)) {
        Some(v) => {
            target.insert((*last).to_owned(), v.clone());
        }
        None => {
            target.remove(*last);
        }
    }
}

/// What the inputs of one batch changed, gathered while they are applied.
#[derive(Debug, Default)]
struct BatchEffects {
    /// Patients whose state may have changed: each gets one state for the
    /// whole batch. (The place for per-batch work on touched patients.)
    touched: BTreeSet<String>,
    /// Per touched patient, the earliest occurrence time among the batch's
    /// inputs: the history is recomputed once from there (if it is older
    /// than the history step).
    earliest_ms: BTreeMap<String, TimeMs>,
    /// Alert scopes to evaluate after the batch: touched patients, the
    /// patient or device an input names.
    scopes: BTreeSet<Scope>,
    /// Operator commands stored in this batch: (seq, alert id, command).
    commands: Vec<PendingCommand>,
}

/// One batch, in arrival order: wait for each input's commit and apply the
/// new ones to the tracker (rejections are published as they come); then
/// publish and record one state per touched patient; then acknowledge every
/// stored input, in arrival order. An input that could not be stored is not
/// acknowledged (the broker redelivers it).
async fn handle_batch(b: &mut StageB, batch: Vec<InFlight>) {
    let mut effects = BatchEffects::default();
    let batch_len = batch.len();
    let mut acks = Vec::with_capacity(batch.len());
    for item in batch {
        if store_and_apply(b, item.kind, &mut effects).await {
            acks.push(item.ack);
        } else {
            // Not durably stored: no acknowledgement, the broker redelivers.
            drop(item.ack);
        }
    }
    let now = now_ms();
    if !effects.touched.is_empty() {
        b.metrics
            .set_tracked_patients(b.tracker.tracked_ids(now).count());
        publish_states(b, &effects.touched, &effects.earliest_ms, now).await;
    }

    for ack in acks {
        if let Err(e) = b.ingest.ack(ack).await {
            warn!(error = %e, "could not acknowledge (the ingest connection is gone); the broker will redeliver");
        }
    }
    b.metrics.inputs_finished(batch_len);
    // Alerts after the acknowledgements: their causes are committed, and
    // a crash before the alert write only means they are derived again.
    if !effects.scopes.is_empty() || !effects.commands.is_empty() || !effects.touched.is_empty() {
        let mut scopes = effects.scopes;
        scopes.extend(effects.touched.iter().cloned().map(Scope::Patient));
        evaluate_alerts(b, &scopes, effects.commands, now).await;
    }
}

/// Wait for one input's commit; apply it if new. True when it is durably
/// stored (and so may be acknowledged).
async fn store_and_apply(b: &mut StageB, kind: Pending, effects: &mut BatchEffects) -> bool {
    match kind {
        Pending::Accept {
            op,
            write,
            mut tracked,
            topic,
            payload,
            received_at_ms,
        } => match committed(&b.writer, &b.health, write, &op).await {
            Err(StoreError::InvalidRecord(why)) => {
                // Valid by the contract, yet the store cannot keep it as an
                // input: keep it as a rejection (stored, published, acked)
                // rather than lose it or stall the inputs behind it.
                let r = intake::reject(
                    &topic,
                    &payload,
                    received_at_ms,
                    crate::contract::Rejection {
                        code: ErrorCode::InvalidValue,
                        field: None,
                        message: format!("the input could not be stored: {why}"),
                    },
                );
                match r {
                    Intake::Reject { record, notice } => store_rejection(b, record, notice).await,
                    Intake::Accept { .. } => false,
                }
            }
            Err(_) => false,
            Ok(WriteResult::Input(StoreOutcome::Inserted { seq })) => {
                b.summary.accepted += 1;
                b.metrics.input(&tracked.input);
                tracked.seq = seq;
                let occurred = intake::occurred_at(&tracked.input);
                alert_scopes_of(&tracked, &mut effects.scopes, &mut effects.commands);
                for pid in b.tracker.apply(*tracked) {
                    effects
                        .earliest_ms
                        .entry(pid.clone())
                        .and_modify(|t| *t = (*t).min(occurred))
                        .or_insert(occurred);
                    effects.touched.insert(pid);
                }
                true
            }
            Ok(WriteResult::Input(StoreOutcome::Duplicate { seq })) => {
                b.summary.duplicates += 1;
                b.metrics.duplicate();
                debug!(
                    seq,
                    "redelivery of a stored input; acknowledged, not applied again"
                );
                true
            }
            Ok(WriteResult::Input(StoreOutcome::Conflict { seq })) => {
                let r = intake::reject(
                    &topic,
                    &payload,
                    received_at_ms,
                    crate::contract::Rejection {
                        code: ErrorCode::DuplicateConflict,
                        field: Some("id".to_owned()),
                        message: format!(
                            "this id was already stored (input #{seq}) with different content"
                        ),
                    },
                );
                match r {
                    Intake::Reject { record, notice } => store_rejection(b, record, notice).await,
                    Intake::Accept { .. } => false,
                }
            }
            Ok(WriteResult::Written | WriteResult::Pruned { .. }) => true,
        },
        Pending::Reject { op, write, notice } => {
            let done = committed(&b.writer, &b.health, write, &op).await.is_ok();
            if done {
                b.summary.rejected += 1;
                if let WriteOp::Rejected(r) = &op {
                    b.metrics.rejected(r.code);
                }
                publish_rejected(b, &notice).await;
            }
            done
        }
    }
}

async fn store_rejection(b: &mut StageB, record: RejectedRecord, notice: RejectedNotice) -> bool {
    let code = record.code;
    let op = WriteOp::Rejected(record);
    let write = b.writer.enqueue(op.clone()).await;
    if committed(&b.writer, &b.health, write, &op).await.is_err() {
        return false;
    }
    b.summary.rejected += 1;
    b.metrics.rejected(code);
    publish_rejected(b, &notice).await;
    true
}

async fn publish_rejected(b: &StageB, notice: &RejectedNotice) {
    match serde_json::to_vec(notice) {
        Ok(payload) => {
            if let Err(e) = b
                .publisher
                .publish(b.topics.rejected(), payload, false)
                .await
            {
                warn!(error = %e, "rejection notice not published");
            }
        }
        Err(e) => warn!(error = %e, "rejection notice not serialised"),
    }
}

/// Publish (retained) the state of `patients` at `now`, and record those
/// states with their history points — the point at `now`, and for a patient
/// in `backfill_from` whose input is older than the history step, the grid
/// recomputed from that time — in ONE write (derived data: a failure is
/// logged, the inputs are safe).
async fn publish_states(
    b: &mut StageB,
    patients: &BTreeSet<String>,
    backfill_from: &BTreeMap<String, TimeMs>,
    now: TimeMs,
) {
    let mut states = Vec::with_capacity(patients.len());
    let mut history = Vec::with_capacity(patients.len());
    for pid in patients {
        let Some(state) = b.tracker.state(pid, now) else {
            if let Some(e) = b.tracker.error(pid) {
                warn!(patient_id = %pid, error = %e, "no state: the patient's inputs cannot be solved");
            }
            continue;
        };
        let payload = match serde_json::to_string(&state) {
            Ok(p) => p,
            Err(e) => {
                warn!(patient_id = %pid, error = %e, "state not serialised");
                continue;
            }
        };
        if let Err(e) = b
            .publisher
            .publish(b.topics.state(pid), payload.clone().into_bytes(), true)
            .await
        {
            warn!(patient_id = %pid, error = %e, "state not published");
        }
        history.push(HistoryRow {
            patient_id: pid.clone(),
            t_ms: now,
            cp_ng_per_ml: state.cp_ng_per_ml,
            ce_ng_per_ml: state.ce_ng_per_ml,
        });
        if let Some(occurred) = backfill_from.get(pid) {
            backfill_history(b, pid, *occurred, now, &mut history);
        }
        states.push(StateRow {
            patient_id: pid.clone(),
            time_ms: now,
            payload,
        });
    }
    // One bad point would refuse the whole op: leave it out, loudly.
    history.retain(|r| {
        let finite = r.cp_ng_per_ml.is_finite() && r.ce_ng_per_ml.is_finite();
        if !finite {
            warn!(patient_id = %r.patient_id, t_ms = r.t_ms, "history point not finite; not recorded");
        }
        finite
    });
    if states.is_empty() && history.is_empty() {
        return;
    }
    let (n_states, n_history) = (states.len(), history.len());
    match b.writer.enqueue(WriteOp::Derived { states, history }).await {
        Ok(queued) => {
            // Any failing write is a technical problem (the first failing
            // batch of a lock may hold no input); the next input write that
            // succeeds clears it.
            let health = b.health.clone();
            tokio::spawn(async move {
                if let Err(e) = queued.outcome().await {
                    health.database_failing(&e, now_ms());
                    warn!(error = %e, states = n_states, history_points = n_history, "derived state not recorded");
                }
            });
        }
        Err(e) => {
            warn!(error = %e, states = n_states, history_points = n_history, "derived state not recorded")
        }
    }
}

/// Most history recomputed after one late input: 7 days.
const BACKFILL_MAX_MS: TimeMs = 7 * 24 * 3_600_000;

/// A late input changes the past: the history grid points of `patient_id`
/// from `occurred_ms` (the batch's earliest input for the patient) to `now`
/// are recomputed, into `rows`.
fn backfill_history(
    b: &mut StageB,
    patient_id: &str,
    occurred_ms: TimeMs,
    now: TimeMs,
    rows: &mut Vec<HistoryRow>,
) {
    let step = b.history_interval_ms;
    if now - occurred_ms <= step {
        return;
    }
    let from = occurred_ms.max(now - BACKFILL_MAX_MS);
    let from = from - from.rem_euclid(step) + step;
    let Some(d) = b.tracker.derived(patient_id) else {
        return;
    };
    rows.extend(
        d.solution
            .sample(from, now, step)
            .into_iter()
            .map(|s| HistoryRow {
                patient_id: patient_id.to_owned(),
                t_ms: s.t_ms,
                cp_ng_per_ml: s.cp_ng_per_ml,
                ce_ng_per_ml: s.ce_ng_per_ml,
            }),
    );
}

/// The alert scopes an input names, and the operator command it carries.
fn alert_scopes_of(
    input: &TrackedInput,
    scopes: &mut BTreeSet<Scope>,
    commands: &mut Vec<PendingCommand>,
) {
    match (&input.topic, &input.input) {
        (InputTopic::AlertCommand { alert_id }, Input::AlertCommand(c)) => {
            commands.push((input.seq, alert_id.clone(), c.clone()))
        }
        (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e)) => {
            scopes.insert(Scope::Device(device_id.clone()));
            if let Some(pid) = &e.patient_id {
                scopes.insert(Scope::Patient(pid.clone()));
            }
        }
        (
            InputTopic::Admit { patient_id }
            | InputTopic::Discharge { patient_id }
            | InputTopic::Dose { patient_id },
            _,
        ) => {
            scopes.insert(Scope::Patient(patient_id.clone()));
        }
        _ => {}
    }
}

/// Evaluate alert `scopes` and apply operator `commands` at `now`; commit
/// the resulting alert records, lifecycle messages and outbox rows in one
/// write, then wake the outbox publisher. The causes (inputs) are already
/// committed: if this write is lost in a crash, the next start derives the
/// same alerts again from them.
async fn evaluate_alerts(
    b: &mut StageB,
    scopes: &BTreeSet<Scope>,
    commands: Vec<PendingCommand>,
    now: TimeMs,
) {
    let mut w = b.alerts.evaluate(&mut b.tracker, scopes, now);
    for (seq, alert_id, cmd) in commands {
        let c = b.alerts.command(seq, &alert_id, &cmd, now);
        for o in &c.commands {
            if o.applied {
                info!(alert_id = %o.alert_id, action = %o.action, by = %o.by, outcome = %o.outcome, "alert command applied");
            } else {
                warn!(alert_id = %o.alert_id, action = %o.action, by = %o.by, reason = %o.outcome, "alert command not applied");
            }
        }
        w.extend(c);
    }
    if w.is_empty() {
        return;
    }
    for m in &w.messages {
        info!(alert_id = %m.alert_id, patient_id = ?m.patient_id, rule = %m.rule, phase = m.phase.as_str(), priority = m.priority.as_str(), "alert");
    }
    if !w.outbox.is_empty() {
        Failpoint::hit(b.failpoint, Failpoint::AlertsBeforeCommit);
    }
    let counted: Vec<(&'static str, &'static str)> = w
        .messages
        .iter()
        .map(|m| (m.rule.as_str(), m.phase.as_str()))
        .collect();
    let op = WriteOp::Alerts(Box::new(w));
    // Retried like an input: alert state must not silently go missing.
    let first = b.writer.enqueue(op.clone()).await;
    if committed(&b.writer, &b.health, first, &op).await.is_ok() {
        for (rule, phase) in counted {
            b.metrics.alert_message(rule, phase);
        }
        b.outbox.wake();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A write the store refuses as a record comes back at once: retrying it
    /// would fail the same way forever and stall every input behind it.
    #[tokio::test]
    async fn a_refused_record_is_not_retried_forever() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread) = Writer::open(StoreConfig::new(dir.path().join("t.db"))).unwrap();
        let health = Health::new();
        let op = WriteOp::History(vec![HistoryRow {
            patient_id: "P-1".to_owned(),
            t_ms: 0,
            cp_ng_per_ml: f64::NAN,
            ce_ng_per_ml: 1.0,
        }]);
        let first = writer.enqueue(op.clone()).await;
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            committed(&writer, &health, first, &op),
        )
        .await
        .expect("committed() kept retrying a write that cannot succeed");
        assert!(matches!(r, Err(StoreError::InvalidRecord(_))), "{r:?}");
        assert!(health.problems().is_empty(), "not a database problem");

        // A good write still goes through after it.
        let ok = WriteOp::History(vec![HistoryRow {
            patient_id: "P-1".to_owned(),
            t_ms: 0,
            cp_ng_per_ml: 1.0,
            ce_ng_per_ml: 1.0,
        }]);
        let first = writer.enqueue(ok.clone()).await;
        assert!(committed(&writer, &health, first, &ok).await.is_ok());
        drop(writer);
        thread.shutdown().unwrap();
    }
}
