//! `dosetrack demo`: the live demo, with nothing installed but the binary.
//!
//! This module owns the demo's whole run, all in one process:
//!
//! * the **embedded broker** (rumqttd, behind the default cargo feature
//!   `embedded-broker`): an MQTT 3.1.1 listener on 127.0.0.1 at a port the
//!   OS chose, on a thread of its own, stopped at the end — or, with
//!   `--broker`, an external broker instead;
//! * the **daemon** ([`crate::service::run`]) against that broker, with a
//!   database in a temporary directory (removed at the end) or at
//!   `--database PATH` (kept);
//! * a **simulated ward** ([`crate::sim::ward`]) of a few patients with pumps,
//!   patches, intranasal and other doses, and three scripted incidents (an
//!   IV bolus over the drug file's limit, a pump occlusion, a patch falling
//!   off: "Incidents" in [`crate::sim::ward`]), published at an accelerated
//!   speed;
//! * the **ward page**: the daemon's HTTP listener (`[http]`: the pages,
//!   the JSON API, `/healthz`, `/metrics`) on 127.0.0.1 at a port the OS
//!   chose, whose URL is printed before the first frame;
//! * a **watcher**: a plain MQTT subscriber to the patients' state, doses
//!   and alerts, and the terminal view (`view`: the patients, then the
//!   active alerts, within 80 columns) it redraws every second.
//!
//! Every connection goes through [`crate::mqtt`]. This module owns the
//! options, the orchestration (start, run, stop in order) and the summary;
//! its private submodules own one part each: `broker` the embedded broker,
//! `sessions` what the demo sets up and tidies on the broker, `watch` what
//! it subscribes to, `view` the table, `topics` every topic it names,
//! `database` the demo's database.
//!
//! # Simulated time: one demo clock
//!
//! The daemon, its ingest's receive stamp, the ward's pacing and its
//! payload times all read one sped-up clock ([`Clock::scaled`], in the
//! shell; the core is given "now" as always). At speedup N it runs N×
//! faster than the wall clock, so concentrations, forecasts and alert
//! timers (condition delays, escalation after N min, device silence) move
//! at the speedup: an alert escalated after 5 min unacknowledged escalates
//! 5 s into a 60× demo.
//!
//! The clock **starts in the past and catches up with the wall clock at
//! the end** ([`catch_up_start_ms`]): at 60× for 60 s it starts 59 min ago
//! and replays the last hour. We chose that over starting at "now" so that
//! nothing the demo stores or shows is dated in the future of the wall
//! clock (the ward page's charts draw up to the browser's "now"; a kept
//! database read afterwards by `dosetrack patients` is in the past), while
//! no input is ever in the future of the daemon's clock either: the ward
//! publishes each message once the shared clock reads its time. (The
//! clock runs on during the stop, a second or two of real time.) Devices
//! are heard on the same clock as the daemon judges staleness on, so no
//! threshold needs widening. The state republish (every real second, so the
//! view moves) and the view's tick stay on real time.
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

mod broker;
mod database;
mod sessions;
mod topics;
mod view;
mod watch;

use crate::clock::Clock;
use crate::service::settings::Config;
use crate::service::{self as daemon, DaemonError, RunSummary};
use crate::sim::clock::{wall_clock_ms, ClockError};
use crate::sim::publisher::{publish_ward_on, DevsimError, PublishSpec, PublishStats};
use crate::sim::ward::{catch_up_start_ms, Incidents, Ward, WardSpec};
use crate::store::{Counts, Reader};
use crate::vocab::Setting;
use crate::vocab::TimeMs;
use broker::BrokerHandle;
use database::DemoDatabase;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use topics::DemoTopics;
use tracing::debug;
use view::{Board, FrameInfo};
use watch::Watcher;

/// The notice every frame starts with.
pub const NOTICE: &str = crate::simulate::NOTICE;

/// The default ward: with this seed a patch, injections, IV boluses, pumps
/// and an intranasal dose all start within the first simulated half hour
/// (the simulator starts regimens 10–30 min after admission).
pub const DEFAULT_SEED: u64 = 1283;

/// How long before the demo's start its patients without an incident
/// were admitted.
const DEMO_LEAD_IN_MS: i64 = 3 * 3_600_000;

/// The incident's IV bolus is this many times the drug file's ward bolus
/// limit (a simulation input: clearly over it, within what a syringe mix-up
/// gives).
pub const INCIDENT_BOLUS_TIMES_LIMIT: f64 = 1.5;

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
    /// Alert lifecycle messages the watcher saw, by phase.
    pub alerts_raised: u64,
    pub alerts_escalated: u64,
    pub alerts_cleared: u64,
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
    #[error("ward page listener: {0}")]
    Listen(std::io::Error),
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

impl From<ClockError> for DemoError {
    fn from(e: ClockError) -> Self {
        DemoError::Devsim(e.into())
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
    let now = wall_clock_ms()?;
    let tag = run_tag(now);
    let topics = DemoTopics::new(&tag);
    let ids = ClientIds::new(topics.prefix());

    let db = DemoDatabase::new(opts.database.as_deref(), &tag)?;

    // 1. The broker.
    let broker = match &opts.broker {
        Some((host, port)) => BrokerHandle::External {
            host: host.clone(),
            port: *port,
        },
        None => broker::start_embedded()?,
    };
    let (host, port) = broker.address();

    // Everything after this point must stop the broker on the way out.
    let result = run_with_broker(
        &opts, &shutdown, out, &host, port, &topics, &ids, &db, started, &broker,
    )
    .await;
    if matches!(broker, BrokerHandle::External { .. }) {
        if let Ok(r) = &result {
            sessions::tidy_external(&host, port, &topics, &ids, &r.1).await;
        }
    }
    broker.stop();
    let kept = db.finish();
    let (mut summary, _) = result?;
    summary.database_kept = kept;
    summary.elapsed = started.elapsed();
    view::write_summary(out, &summary)?;
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
    topics: &DemoTopics,
    ids: &ClientIds,
    db: &DemoDatabase,
    started: Instant,
    broker: &BrokerHandle,
) -> Result<(DemoSummary, Vec<String>), DemoError> {
    // 2. The daemon's ingest session, so that nothing published while the
    //    daemon connects is lost (this also waits until the broker accepts
    //    MQTT connections).
    let prefix = topics.prefix();
    sessions::prepare_ingest_session(host, port, &ids.ingest, prefix).await?;

    // 3. The watcher.
    let mut watcher = Watcher::start(host, port, &ids.watcher, topics).await?;

    // 4. The demo clock (module doc), the ward page's port and the daemon.
    let remaining = opts.duration.saturating_sub(started.elapsed());
    let sim_ms = (remaining.as_millis() as f64 * opts.speedup).round() as i64;
    let sim_start = catch_up_start_ms(wall_clock_ms()?, sim_ms, opts.speedup);
    let clock = Clock::scaled(sim_start, opts.speedup)
        .map_err(|e| DemoError::Invalid(format!("--speedup: {e}")))?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(DemoError::Listen)?;
    let url = match listener.local_addr() {
        Ok(a) => format!("http://{a}/"),
        Err(e) => return Err(DemoError::Listen(e)),
    };
    let mut cfg = Config::default();
    cfg.broker.host = host.to_owned();
    cfg.broker.port = port;
    cfg.broker.client_id = ids.ingest.clone();
    cfg.topics.prefix = prefix.to_owned();
    cfg.database.path = db.path.clone();
    cfg.drug.file = opts.drug_file.clone();
    // Republish every patient's state every (real) second, so the view
    // and the page move.
    cfg.state.interval_s = 1;
    // A history point a simulated minute (a real second at 60×), but no
    // more than four a real second at a large speedup.
    cfg.state.history_interval_s = ((opts.speedup / 4.0).ceil() as u64).clamp(60, 3600);
    // An input unacknowledged for a minute of real time, on the demo clock.
    cfg.http.max_unacked_age_s = ((60.0 * opts.speedup) as u64).clamp(60, 86_400);
    cfg.validate()
        .map_err(|e| DemoError::Invalid(format!("demo configuration: {e}")))?;
    // The incident's bolus, over the drug file's ward limit.
    let limit_mg_per_kg = daemon::formulary(&cfg)
        .map_err(|e| DemoError::Daemon(DaemonError::Drug(e)))?
        .drug()
        .limits()
        .get(Setting::Ward)
        .max_bolus_mg_per_kg
        .value;
    writeln!(out, "Ward page: {url}")?;
    out.flush()?;
    let daemon_stop = CancellationToken::new();
    let mut daemon_task: JoinHandle<Result<RunSummary, DaemonError>> = tokio::spawn(
        daemon::run_with_listener(cfg, daemon_stop.clone(), clock.clone(), listener),
    );

    // 5. The simulated ward, on the demo clock, from its start.
    let mut spec = WardSpec::new(opts.patients, opts.seed, sim_start);
    spec.prefix = prefix.to_owned();
    spec.incidents = Some(Incidents {
        bolus_mg_per_kg: limit_mg_per_kg * INCIDENT_BOLUS_TIMES_LIMIT,
    });
    // The other patients are mid-course when the demo starts (admitted
    // 3 h before), so the ward shows a mix — in range, due soon, below —
    // not everyone rising from Ce 0.
    spec.lead_in_ms = DEMO_LEAD_IN_MS;
    let publish = PublishSpec {
        host: host.to_owned(),
        port,
        client_id: ids.ward.clone(),
        speedup: opts.speedup,
        duration_ms: sim_ms,
        rate_limit_per_s: None,
    };
    let ward_stop = CancellationToken::new();
    let ward_token = ward_stop.clone();
    let ward_clock = clock.clone();
    let mut ward_task: JoinHandle<Result<PublishStats, DevsimError>> = tokio::spawn(async move {
        let mut ward = Ward::new(spec);
        publish_ward_on(&mut ward, &publish, ward_clock, ward_token).await
    });

    // 6. The table, every second.
    let mut board = Board::default();
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
        url,
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
            m = watcher.recv(), if watching => match m {
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
                if let Err(e) = view::draw(out, &frame, &board, &counts, started.elapsed(), clock.now_ms(), false) {
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
            while let Some(m) = watcher.try_recv() {
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
        while let Some(m) = watcher.try_recv() {
            board.apply(m);
        }
        refresh_counts(&mut reader, &db.path, &mut counts);
        if output_error.is_none() {
            if let Err(e) = view::draw(
                out,
                &frame,
                &board,
                &counts,
                started.elapsed(),
                clock.now_ms(),
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
    let retained: Vec<String> = board
        .patients()
        .map(|p| topics.patient_state(p))
        .chain(alert_topics)
        .collect();
    let alerts = board.alert_counts();
    Ok((
        DemoSummary {
            inputs_stored: counts.inputs,
            rejected: counts.rejected,
            patients_tracked: board.tracked(),
            published: stats.sent,
            daemon: daemon_summary,
            database_kept: None,
            elapsed: Duration::ZERO,
            alerts_raised: alerts.raised,
            alerts_escalated: alerts.escalated,
            alerts_cleared: alerts.cleared,
        },
        retained,
    ))
}

/// Eight hex digits for this run's prefix and client ids.
fn run_tag(now_ms: TimeMs) -> String {
    let mut z = (now_ms as u64) ^ (u64::from(std::process::id()) << 40) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:08x}", (z ^ (z >> 31)) >> 32)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

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
