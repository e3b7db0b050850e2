//! systemd integration of `dosetrack run` over the `sd_notify` protocol
//! (crate `sd-notify`): readiness, a status line, the watchdog, stopping.
//!
//! Every message is a no-op when `$NOTIFY_SOCKET` is unset (not started by
//! systemd), and the watchdog is off unless `$WATCHDOG_USEC` is set (for
//! this process, if `$WATCHDOG_PID` is set too). See `systemd/dosetrack.service`.
//!
//! * `READY=1` once the configuration is loaded, the database is open and
//!   migrated, the state rebuilt from it and the writer thread running —
//!   **not** gated on the broker: a broker outage at boot must not turn
//!   into a start timeout and a restart loop. The broker's state is in the
//!   status instead.
//! * `STATUS=` one line — the broker connections (with the reason when
//!   connecting fails for something the operator must fix: a TLS handshake
//!   or a login refused), inputs stored,
//!   duplicates, rejected, and why the watchdog is withheld if it is — sent
//!   when it changes (checked every second); `systemctl status` shows it.
//! * `WATCHDOG=1` every half `WATCHDOG_USEC`, and only while the daemon
//!   makes progress:
//!   - stage B's loop came round since the last ping (it ticks every
//!     quarter of the watchdog interval even when idle, see
//!     [`heartbeat_period`]; a write being retried, a hung alert write or a
//!     busy loop stop it), unless the publisher is disconnected: stage B
//!     may then wait for room in the publish queue, and a broker outage is
//!     no reason to restart;
//!   - the store's writer thread answered a [`Writer::ping`] within a
//!     quarter of the interval, or committed something since the last ping
//!     (a hung fsync or a lock held forever stop both).
//!
//!   What is watched (the heartbeat, the writer's liveness) is
//!   [`crate::service::progress`]'s; this module only speaks the protocol.
//!
//!   Otherwise the ping is withheld (logged once, and in the status):
//!   systemd aborts the process after `WatchdogSec=` and restarts it
//!   (`Restart=on-failure`). Nothing is lost: inputs not yet acknowledged
//!   are redelivered by the broker, and the state is rebuilt from the
//!   database.
//! * `RELOADING=1` … `READY=1` around a reload (SIGHUP; [`reloading`],
//!   [`reloaded`]).
//! * `STOPPING=1` at the start of a clean stop ([`stopping`], sent by the
//!   signal handler in `main`).

use crate::mqtt::{IngestHandle, Publisher};
use crate::service::health::Health;
use crate::service::progress::{writer_alive, Progress};
use crate::store::Writer;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

/// How often the status line is recomputed (sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// How often stage B must come round its loop even when idle: a quarter of
/// the watchdog interval (so two beats fall between two pings), 5 s without
/// a watchdog.
pub fn heartbeat_period() -> Duration {
    watchdog_interval().map_or(Duration::from_secs(5), |w| {
        (w / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    })
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify message not sent");
    }
}

/// `STOPPING=1`: a clean stop has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// `RELOADING=1` (with `MONOTONIC_USEC`, which `Type=notify-reload` needs):
/// a reload (SIGHUP) has begun; [`reloaded`] ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(t) = NotifyState::monotonic_usec_now() {
        states.push(t);
    }
    notify(&states);
}

/// `READY=1` again after a reload, applied or not (the status line is
/// refreshed by the supervisor within a second).
pub fn reloaded() {
    notify(&[NotifyState::Ready]);
}

/// What the supervisor watches.
pub struct Watch {
    pub writer: Writer,
    pub publisher: Publisher,
    pub ingest: IngestHandle,
    pub progress: Arc<Progress>,
    /// Technical problems, shown on the status line.
    pub health: Health,
}

/// Sends `READY=1`, then keeps the status and the watchdog going until
/// [`Supervisor::stop`].
pub struct Supervisor {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Tell systemd the service is ready and start the status/watchdog task.
    /// Call once the database is open, the state rebuilt and the writer
    /// running.
    pub fn start(watch: Watch) -> Supervisor {
        let status = status_line(&watch, None);
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
        let watchdog = watchdog_interval();
        info!(
            watchdog_ms = watchdog.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
            status = %status,
            "ready"
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(watch, watchdog, status, stop.clone()));
        Supervisor { stop, task }
    }

    /// Stop the status and watchdog task.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            error!(error = %e, "service supervisor task failed");
        }
    }
}

/// Why the watchdog is withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    StageB,
    Writer,
}

impl Stall {
    fn as_str(self) -> &'static str {
        match self {
            Stall::StageB => "the apply stage (stage B) has made no progress",
            Stall::Writer => "the store writer has not answered",
        }
    }
}

async fn supervise(
    watch: Watch,
    watchdog: Option<Duration>,
    mut last_status: String,
    stop: CancellationToken,
) {
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first check after half an interval: stage B has beaten by then.
    let period = watchdog.map_or(Duration::from_secs(3600), |w| w / 2);
    let mut ping_tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beats = watch.progress.beats();
    let mut last_commits = watch.writer.stats().commits;
    let mut stall: Option<Stall> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = status_tick.tick() => {}
            _ = ping_tick.tick(), if watchdog.is_some() => {
                let probe = period / 2;
                let now = check(&watch, probe, &mut last_beats, &mut last_commits).await;
                match (stall, now) {
                    (_, None) => {
                        notify(&[NotifyState::Watchdog]);
                        if stall.is_some() {
                            info!("progress again; watchdog pings resumed");
                        }
                    }
                    (None, Some(s)) => {
                        error!(reason = s.as_str(), "watchdog ping withheld; systemd restarts the service if this lasts");
                    }
                    (Some(_), Some(_)) => {}
                }
                stall = now;
            }
        }
        let status = status_line(&watch, stall);
        if status != last_status {
            notify(&[NotifyState::Status(&status)]);
            last_status = status;
        }
    }
}

/// `None` when everything watched made progress since the last check.
async fn check(
    watch: &Watch,
    probe: Duration,
    last_beats: &mut u64,
    last_commits: &mut u64,
) -> Option<Stall> {
    let beats = watch.progress.beats();
    let stage_b = beats != *last_beats || !watch.publisher.is_connected();
    *last_beats = beats;
    let writer = writer_alive(&watch.writer, probe, last_commits).await;
    if !writer {
        Some(Stall::Writer)
    } else if !stage_b {
        Some(Stall::StageB)
    } else {
        None
    }
}

fn status_line(watch: &Watch, stall: Option<Stall>) -> String {
    let ingest = watch.ingest.stats().connected;
    let publisher = watch.publisher.is_connected();
    let broker = match (ingest, publisher) {
        (true, true) => "broker connected",
        (false, false) => "broker disconnected (reconnecting)",
        (true, false) => "broker: ingest connected, publisher disconnected",
        (false, true) => "broker: ingest disconnected, publisher connected",
    };
    // A cause the operator must fix (TLS handshake, login refused), once.
    let problem = watch.ingest.problem().or_else(|| watch.publisher.problem());
    let broker = match problem {
        Some(p) => format!("{broker}: {p}"),
        None => broker.to_owned(),
    };
    let c = watch.progress.counters();
    let mut line = format!(
        "{broker}; inputs stored {}, duplicates {}, rejected {}",
        c.accepted, c.duplicates, c.rejected,
    );
    let problems = watch.health.problems();
    if !problems.is_empty() {
        line.push_str("; PROBLEM: ");
        let codes: Vec<&str> = problems.iter().map(|p| p.code.as_str()).collect();
        line.push_str(&codes.join(", "));
    }
    if let Some(s) = stall {
        line.push_str("; watchdog withheld: ");
        line.push_str(s.as_str());
    }
    line
}
