//! The daemon (`dosetrack run`): the shell around the pure core.
//!
//! It owns the edges — the MQTT connections, the SQLite writer, the clock
//! and shutdown — and the order of things for each input. This module
//! starts them in order and stops them in order ([`run_with`]); each part
//! is its own module:
//!
//! 1. **Stage A** (receive, `stage_a`): take a message from the ingest
//!    connection, decide on it with [`intake`](crate::intake) (pure), and
//!    submit its write to the store at once, so that concurrent inputs
//!    share a commit.
//! 2. **Stage B** (apply, `stage_b`), in arrival order, a batch at a
//!    time: wait for each input's commit, apply it to the tracker, publish
//!    one state per touched patient and record them, then acknowledge the
//!    batch's inputs, then evaluate the alerts it touched and commit them
//!    with their outbox rows. A write that fails is retried and never
//!    acknowledged until it succeeds: the input is not lost, and inputs
//!    behind it wait.
//! 3. **Timers** (in stage B): each tracked patient's state republished
//!    once per `state.interval_s`, spread over the interval; a history
//!    point per tracked patient every `state.history_interval_s`; alert
//!    wake-ups, on the daemon's [`Clock`].
//! 4. **Reload** (SIGHUP, `reload`, [`Reloads`]): the config and drug files read,
//!    validated and classified again; the reloadable part applied inside
//!    stage B's loop (ordered with the batches), then stage A's checks.
//!
//! Beside them: the **outbox** publisher ([`outbox`]: alert messages, at
//! least once), the **status** (retained, with the technical problems of
//! [`health`]), **database care** ([`crate::store::maintenance`]), the
//! **watchdog** and status line ([`systemd`], watching [`progress`]) and
//! the optional **health and metrics** listener ([`http`], [`metrics`]).
//! The configuration and what derives from it are [`settings`]; the test
//! crash points, [`failpoint`].
//!
//! Before anything else touches the database, the daemon takes its lock
//! ([`DatabaseLock`]: one daemon per database) and holds it until it
//! returns; a task checks every 2 s that the database path still names the
//! file the writer writes to ([`watch_database_file`]).
//!
//! At start, the tracker is rebuilt from every stored input before the
//! subscription resumes ([`rebuild`]); the broker then redelivers what was
//! not acknowledged, and the store's duplicate detection makes that
//! harmless.
//!
//! Imports between these modules point one way: this module uses them
//! all; `stage_b` uses `stage_a` (what an input in flight is) and `reload`
//! (what a reload request is); `reload` uses `stage_a` (the intake
//! settings it replaces); `systemd` and `http` use `progress`; nothing
//! uses this module.

mod acknowledge;
mod api;
mod failpoint;
mod forecast;
mod health;
mod http;
mod live;
pub mod logging;
mod memstats;
mod metrics;
mod outbox;
mod pages;
mod progress;
mod reload;
pub mod settings;
mod stage_a;
mod stage_b;
pub mod systemd;

pub use progress::RunSummary;
pub use reload::Reloads;
pub use settings::{formulary, DrugLoadError};
pub use stage_b::{rebuild, start_from_store, Rebuilt, BATCH_MAX, REBUILD_PAGE};

use crate::alerts::{AlertBook, AlertEngine};
use crate::clock::Clock;
use crate::contract::Topics;
use crate::mqtt::{self, spawn_ingest_with_clock};
use crate::service::failpoint::Failpoints;
use crate::service::health::Health;
use crate::service::metrics::Metrics;
use crate::service::outbox::spawn_outbox;
use crate::service::progress::Progress;
use crate::service::reload::{reloader, ReloadRequest, Running};
use crate::service::settings::{
    broker_config, formulary_and_table, intake_rules, tracker_config, Config,
};
use crate::service::stage_a::{InFlight, IntakeSettings, StageA};
use crate::service::stage_b::StageB;
use crate::service::systemd::Supervisor;
use crate::store::{DatabaseLock, Reader, StoreConfig, StoreError, Writer};
use crate::tracker::Tracker;
use crate::vocab::{format_rfc3339, TimeMs};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The drug file cannot be used; the message names the file.
    #[error("{0}")]
    Drug(#[from] DrugLoadError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Mqtt(#[from] mqtt::MqttError),
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Http(#[from] http::HttpError),
    #[error("config: {0}")]
    Config(#[from] settings::ConfigError),
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
    run_with_clock(cfg, shutdown, reloads, Clock::system()).await
}

/// [`run_with`] on `clock`: every "now" of the daemon is read from it (the
/// system clock in production; a manual or sped-up one in tests and the
/// demo).
pub async fn run_with_clock(
    cfg: Config,
    shutdown: CancellationToken,
    reloads: Option<Reloads>,
    clock: Clock,
) -> Result<RunSummary, DaemonError> {
    run_inner(cfg, shutdown, reloads, clock, None).await
}

/// [`run_with_clock`] serving the HTTP listener (`[http]`) on `listener`,
/// bound by the caller (the demo binds port 0 and prints the address
/// before the daemon starts), instead of binding `http.listen`.
pub async fn run_with_listener(
    cfg: Config,
    shutdown: CancellationToken,
    clock: Clock,
    listener: std::net::TcpListener,
) -> Result<RunSummary, DaemonError> {
    let listener = http::from_std(listener)?;
    run_inner(cfg, shutdown, None, clock, Some(listener)).await
}

async fn run_inner(
    cfg: Config,
    shutdown: CancellationToken,
    reloads: Option<Reloads>,
    clock: Clock,
    bound: Option<tokio::net::TcpListener>,
) -> Result<RunSummary, DaemonError> {
    let (formulary, drug_table) = formulary_and_table(&cfg)?;
    let formulary = Arc::new(formulary);
    // One daemon per database: held until this function returns (and by
    // the kernel until the process ends).
    let db_lock = DatabaseLock::acquire(&cfg.database.path)?;
    debug!(lock = %db_lock.lock_path().display(), "database lock taken");
    // The health and metrics port before the database: a port in use stops
    // the start.
    let http_listener = match (bound, cfg.http.listen_addr()?) {
        (Some(listener), _) => Some(listener),
        (None, Some(addr)) => Some(http::bind(addr).await?),
        (None, None) => None,
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
    let (writer, writer_thread) =
        Writer::open_with_metrics(store_cfg, Some(metrics.commit_observer(clock.clone())))?;
    let reader = Reader::open(&cfg.database.path)?;

    let mut tracker = Tracker::new(formulary.clone(), tracker_config(&cfg));
    let unapplied: BTreeSet<i64> = reader.unapplied_commands()?.into_iter().collect();
    let started = std::time::Instant::now();
    let Rebuilt {
        replayed,
        released,
        pending_commands,
        unreadable,
    } = start_from_store(
        &reader,
        &mut tracker,
        &unapplied,
        clock
            .now_ms()
            .saturating_sub(stage_b::release_after_ms(&cfg)),
    )?;
    let open_alerts = reader.open_alerts()?;
    let book = AlertBook::restore(
        cfg.alerts.clone(),
        open_alerts,
        reader.max_alert_number()? + 1,
    );
    let alerts = AlertEngine::new(book);
    let failpoints = Failpoints::from_env();
    info!(
        replayed,
        released,
        elapsed_ms = started.elapsed().as_millis() as u64,
        database = %cfg.database.path.display(),
        tracked = tracker.tracked(clock.now_ms()).len(),
        "state rebuilt from the database"
    );

    let started_at = format_rfc3339(clock.now_ms());
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
    if let (Some(first), Some(last)) = (unreadable.first(), unreadable.last()) {
        health.raise(
            health::ProblemCode::StoredInputsUnreadable,
            format!(
                "{} stored input(s) no longer parse (seq {first} to {last}) and were not applied: the patients they concern are not tracked as recorded; was topics.prefix or the drug file changed?",
                unreadable.len()
            ),
            clock.now_ms(),
        );
    }
    // A database file deleted or replaced under the daemon: noticed at the
    // next write, and here within DATABASE_CHECK even with no writes.
    let file_check_stop = CancellationToken::new();
    let file_check_task = tokio::spawn(watch_database_file(
        writer.clone(),
        health.clone(),
        clock.clone(),
        file_check_stop.clone(),
    ));
    let status_task = tokio::spawn(health::publish_problems(
        health.clone(),
        publisher.clone(),
        started_at.clone(),
        publisher_stop.clone(),
    ));

    // Alert messages go out from the outbox (committed with their cause).
    let outbox_stop = CancellationToken::new();
    let (outbox, outbox_task) = spawn_outbox(outbox::OutboxTask {
        database: cfg.database.path.clone(),
        writer: writer.clone(),
        publisher: publisher.clone(),
        stop: outbox_stop.clone(),
        failpoints,
        clock: clock.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
    });

    let (deliver_tx, deliver_rx) = mpsc::channel::<mqtt::Incoming>(256);
    // The ward page's acknowledgements enter stage A beside the broker's
    // inputs (the sender lives in the HTTP listener, when there is one).
    let (local_tx, local_rx) = mpsc::channel::<mqtt::Incoming>(16);
    let ingest_stop = CancellationToken::new();
    let (ingest, ingest_task) = spawn_ingest_with_clock(
        broker_config(&cfg, cfg.broker.client_id.clone()),
        cfg.topics.prefix.clone(),
        deliver_tx,
        ingest_stop.clone(),
        clock.clone(),
    );

    // Stage B runs as its own task; stage A feeds it in arrival order.
    let (pipe_tx, pipe_rx) = mpsc::channel::<InFlight>(1024);
    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(1);
    let (intake_tx, intake_rx) = watch::channel(IntakeSettings {
        formulary: formulary.clone(),
        rules: intake_rules,
        rejection_samples_per_minute: cfg.limits.rejection_samples_per_minute,
    });
    let progress = Arc::new(Progress::default());
    // Each tracked patient's model, for the page's forecast.
    let models = Arc::new(forecast::Models::default());
    let stage_b = tokio::spawn(stage_b::run(StageB {
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
        release_after_ms: stage_b::release_after_ms(&cfg),
        release_checked: tokio::time::Instant::now(),
        reader: std::sync::Mutex::new(Reader::open(&cfg.database.path)?),
        alerts,
        outbox,
        failpoints,
        clock: clock.clone(),
        pending_commands,
        summary: RunSummary {
            replayed,
            ..RunSummary::default()
        },
        progress: progress.clone(),
        metrics: metrics.clone(),
        models: models.clone(),
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
        clock.clone(),
    ));
    // Database open, state rebuilt, writer running: ready (under systemd,
    // READY=1, then status and watchdog). Not gated on the broker.
    let supervisor = Supervisor::start(systemd::Watch {
        writer: writer.clone(),
        publisher: publisher.clone(),
        ingest: ingest.clone(),
        progress,
        health: health.clone(),
    });
    let http_stop = CancellationToken::new();
    let http_task = match http_listener {
        Some(listener) => Some(http::spawn(
            listener,
            http::Endpoints {
                metrics: metrics.clone(),
                writer: writer.clone(),
                publisher: publisher.clone(),
                ingest: ingest.clone(),
                reader: Reader::open(&cfg.database.path)?,
                health,
                max_unacked_age_s: cfg.http.max_unacked_age_s,
                clock: clock.clone(),
                api_reader: Reader::open(&cfg.database.path)?,
                live_reader: Reader::open(&cfg.database.path)?,
                time_zone: cfg.http.time_zone.clone(),
                models,
                acknowledge: crate::service::acknowledge::Acknowledge::new(
                    cfg.http.acknowledge.clone(),
                    cfg.topics.prefix.clone(),
                    local_tx,
                ),
                // The republish period is real time (`tokio::time`): on a
                // sped-up clock it spans more of the clock.
                state_stale_after_ms: clock.span_of_real(Duration::from_millis(
                    2 * cfg.state.interval_s * 1000 + 30_000,
                )),
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
    let mut stage_a = StageA {
        deliveries: deliver_rx,
        local: local_rx,
        intake: intake_rx,
        writer: writer.clone(),
        metrics: metrics.clone(),
        prefix: cfg.topics.prefix.clone(),
        to_stage_b: pipe_tx,
    };
    stage_a::run(&mut stage_a, &shutdown).await;
    let StageA {
        deliveries: mut deliver_rx,
        local: mut local_rx,
        to_stage_b: pipe_tx,
        ..
    } = stage_a;
    local_rx.close();

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
    file_check_stop.cancel();
    if let Err(e) = file_check_task.await {
        warn!(error = %e, "database file check task failed");
    }
    maintenance_stop.cancel();
    if let Err(e) = maintenance_task.await {
        warn!(error = %e, "maintenance task failed");
    }
    drop(writer);
    writer_thread.shutdown()?;
    drop(db_lock);
    info!(
        accepted = summary.accepted,
        duplicates = summary.duplicates,
        rejected = summary.rejected,
        "stopped cleanly"
    );
    Ok(summary)
}

/// How often the daemon checks that the database path still names the file
/// it writes to, besides the check before every write batch.
const DATABASE_CHECK: Duration = Duration::from_secs(2);

/// Every [`DATABASE_CHECK`] until `stop`: a database file deleted or
/// replaced raises the `database_replaced` technical problem (and every
/// write fails from then on, so no input is acknowledged).
async fn watch_database_file(
    writer: Writer,
    health: Health,
    clock: Clock,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(DATABASE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match writer.check_file().await {
            Ok(()) => {}
            Err(StoreError::WriterClosed) => return,
            Err(e) => health.database_failing(&e, clock.now_ms()),
        }
    }
}
