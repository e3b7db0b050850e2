//! Stage B (apply): inputs in arrival order, a batch at a time. It owns the
//! [`Tracker`] and the [`AlertEngine`].
//!
//! For each batch — the next input and every input already queued behind
//! it (up to [`BATCH_MAX`]) — in arrival order: wait for each input's write
//! to commit, apply it to the tracker if it was new, publish the rejection
//! notice for a refused message; then publish ONE state per patient the
//! batch touched and record those states and their history points in one
//! write; and only then acknowledge the batch's inputs, in arrival order. A
//! write that fails is retried (with back-off) and never acknowledged until
//! it succeeds ([`committed`]): the input is not lost, and inputs behind it
//! wait. Then the alert scopes the batch touched are evaluated; the alert
//! write (records, lifecycle messages, outbox rows with their topics named,
//! [`AlertCommit`]) is committed and the outbox woken. A heartbeat that
//! changes nothing but when its device was last heard
//! ([`Tracker::is_quiet_heartbeat`]: attributed, from a device that is not
//! stale) touches no patient and no alert scope: most of the stream, in a
//! ward of pumps, costs its write and its acknowledgement only.
//!
//! Between batches it also runs the timers: alert wake-ups (on the
//! daemon's [`Clock`]); each tracked patient's state republished once per
//! `state.interval_s`, spread over the interval ([`crate::republish`]); a
//! history point per tracked patient every `state.history_interval_s` of
//! the daemon's clock (on a fixed grid, so a recompute after a late input
//! overwrites the same points; on a sped-up clock the tick comes round
//! that much sooner); and a reload ([`ReloadRequest`], ordered with the batches).
//!
//! History exists only inside stays: the point at "now" and the periodic
//! point are recorded for a patient in a stay; after an input, the stored
//! points from its time on are deleted and recomputed inside the patient's
//! stays, in the same write ([`WriteOp::Derived`]'s `replace_history_from`).
//!
//! Patients whose last stay ended more than `state.release_after_discharge_min`
//! ago are released from the tracker's memory (checked at start, after a
//! batch at most once a second, and at every history tick); an input that
//! concerns one later reloads their stored inputs first
//! ([`reload_released`]).
//!
//! At start, [`start_from_store`] applies what the patients in care need
//! (the stored inputs a full replay, [`rebuild`], would still hold after
//! releasing the patients whose stays ended before the release cut-off).

use crate::alerts::{AlertEngine, Scope};
use crate::clock::Clock;
use crate::contract::{AlertCommand, ErrorCode, Input, InputTopic, Topics};
use crate::intake::{self, Intake, RejectedNotice};
use crate::mqtt::{IngestHandle, Publisher};
use crate::republish::Spread;
use crate::service::failpoint::{Failpoint, Failpoints};
use crate::service::health::Health;
use crate::service::metrics::Metrics;
use crate::service::outbox::OutboxHandle;
use crate::service::progress::{Progress, RunSummary};
use crate::service::reload::ReloadRequest;
use crate::service::settings::tracker_config;
use crate::service::stage_a::{InFlight, Pending, Write};
use crate::service::systemd;
use crate::store::{
    AlertCommit, HistoryRow, Reader, RejectedRecord, StateRow, StoreError, StoreOutcome,
    StoredInput, WriteOp, WriteResult, Writer,
};
use crate::tracker::{Stay, TrackedInput, Tracker};
use crate::vocab::TimeMs;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

mod alerts;
mod release;
pub(super) use alerts::alert_scopes_of;
use alerts::evaluate_alerts;
pub(super) use release::release_after_ms;
use release::{release_ended_stays, reload_released, RELEASE_CHECK_EVERY};

/// A stored operator command to apply: (input seq, alert id, command).
pub(super) type PendingCommand = (i64, String, AlertCommand);

/// Most in-flight inputs stage B handles as one batch.
pub const BATCH_MAX: usize = 512;

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
) -> Result<Rebuilt, StoreError> {
    let mut replay = Replay::default();
    let mut after_seq = 0;
    loop {
        let page = reader.inputs_page(after_seq, REBUILD_PAGE)?;
        let Some(last) = page.last() else {
            break;
        };
        after_seq = last.seq;
        for s in &page {
            replay.apply(tracker, unapplied, s);
        }
    }
    Ok(replay.done(0))
}

/// Build the tracker at start from what the patients in care need
/// ([`Reader::start_inputs`]): the stored inputs a full replay would still
/// hold after releasing everyone whose last stay ended at or before
/// `release_before_ms`, applied in arrival order; then the devices'
/// last-heard times and the released patients restored. The tracker equals
/// [`rebuild`] followed by [`Tracker::release`] of everyone
/// [`Tracker::releasable`] at `release_before_ms` (`tests/it/restart.rs`);
/// the cost grows with the patients in care, not with history.
/// `unapplied` are read whatever they are (operator commands whose outcome
/// was never recorded).
pub fn start_from_store(
    reader: &Reader,
    tracker: &mut Tracker,
    unapplied: &BTreeSet<i64>,
    release_before_ms: TimeMs,
) -> Result<Rebuilt, StoreError> {
    let start = reader.start_inputs(release_before_ms, unapplied)?;
    let mut replay = Replay::default();
    for s in &start.inputs {
        replay.apply(tracker, unapplied, s);
    }
    for (device_id, last_heard_ms) in &start.last_heard {
        tracker.restore_last_heard(device_id, *last_heard_ms);
    }
    let released = start.released.len();
    tracker.restore_released(start.released);
    Ok(replay.done(released))
}

/// Stored inputs applied to the tracker at start, one at a time ([`rebuild`]
/// and [`start_from_store`] alike).
#[derive(Default)]
struct Replay {
    replayed: usize,
    unreadable: Vec<i64>,
    commands: Vec<PendingCommand>,
}

impl Replay {
    /// Apply `s`, or note it as no longer parsing; an operator command
    /// among `unapplied` is kept to be applied again.
    fn apply(&mut self, tracker: &mut Tracker, unapplied: &BTreeSet<i64>, s: &StoredInput) {
        match intake::replay(s) {
            Ok(t) => {
                if unapplied.contains(&t.seq) {
                    let mut scopes = BTreeSet::new();
                    alert_scopes_of(&t, &mut scopes, &mut self.commands);
                }
                tracker.apply(t);
                self.replayed += 1;
            }
            Err(r) => {
                error!(seq = s.seq, topic = %s.record.topic, error = %r, "stored input no longer parses; not applied");
                self.unreadable.push(s.seq);
            }
        }
    }

    fn done(self, released: usize) -> Rebuilt {
        Rebuilt {
            replayed: self.replayed,
            released,
            pending_commands: self.commands,
            unreadable: self.unreadable,
        }
    }
}

/// What [`rebuild`] or [`start_from_store`] did.
#[derive(Debug)]
pub struct Rebuilt {
    /// Stored inputs applied to the tracker.
    pub replayed: usize,
    /// Patients restored as released ([`start_from_store`]; 0 for
    /// [`rebuild`]).
    pub released: usize,
    /// Stored operator commands whose outcome was never recorded.
    pub pending_commands: Vec<PendingCommand>,
    /// The sequence numbers of stored inputs that no longer parse (not
    /// applied; a technical problem for the daemon).
    pub unreadable: Vec<i64>,
}

/// Stage B's state and edges.
pub(super) struct StageB {
    /// Each tracked patient's model, shared with the page's forecast
    /// (updated at each state, removed at release).
    pub(super) models: Arc<crate::service::forecast::Models>,
    pub(super) rx: mpsc::Receiver<InFlight>,
    /// Reloads, ordered with the input batches.
    pub(super) reload_rx: mpsc::Receiver<ReloadRequest>,
    pub(super) tracker: Tracker,
    pub(super) writer: Writer,
    /// Technical problems (a failing database write), for the status.
    pub(super) health: Health,
    pub(super) publisher: Publisher,
    pub(super) ingest: IngestHandle,
    /// Names the topics of states, rejections and alert outbox rows.
    pub(super) topics: Topics,
    pub(super) state_interval: Duration,
    pub(super) history_interval_ms: TimeMs,
    /// How long after the end of their last stay a patient is released
    /// from memory.
    pub(super) release_after_ms: TimeMs,
    /// When ended stays were last looked for after a batch (monotonic): at
    /// most every [`RELEASE_CHECK_EVERY`], so that a burst of short stays
    /// leaves memory as it goes instead of piling up until the history tick.
    pub(super) release_checked: tokio::time::Instant,
    /// Reads a released patient's stored inputs back (in a mutex only to
    /// make stage B `Sync`: it alone uses it).
    pub(super) reader: std::sync::Mutex<Reader>,
    pub(super) alerts: AlertEngine,
    pub(super) outbox: OutboxHandle,
    pub(super) failpoints: Failpoints,
    /// "Now" for states, history, alert timers and technical problems.
    pub(super) clock: Clock,
    /// Stored commands never applied (a crash came in between): applied at
    /// start.
    pub(super) pending_commands: Vec<PendingCommand>,
    pub(super) summary: RunSummary,
    /// Heartbeat and counters for the service watchdog and status.
    pub(super) progress: Arc<Progress>,
    /// Prometheus metrics (`/metrics`).
    pub(super) metrics: Arc<Metrics>,
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
    clock: &Clock,
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
                health.database_failing(&e, clock.now_ms());
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

/// Run stage B until stage A's channel closes (after it has drained).
pub(super) async fn run(mut b: StageB) -> RunSummary {
    // Publish the rebuilt state once at start.
    let now = b.clock.now_ms();
    release_ended_stays(&mut b, now);
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
    // The history grid is on the clock: its tick lasts the interval's span
    // of the clock (the same in real time but on a sped-up clock).
    let mut history_tick = tokio::time::interval(
        b.clock
            .real_of_span(Duration::from_millis(b.history_interval_ms as u64)),
    );
    history_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Comes round even when idle, so the watchdog sees a live loop.
    let mut heartbeat = tokio::time::interval(systemd::heartbeat_period());
    let mut reload_open = true;
    loop {
        b.progress.beat(&b.summary);
        let wake_at = b.alerts.next_wake();
        let clock = b.clock.clone();
        let alert_timer = async move {
            match wake_at {
                Some(t) => clock.sleep_until_ms(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = alert_timer => {
                let now = b.clock.now_ms();
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
                let now = b.clock.now_ms();
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
                let now = b.clock.now_ms();
                release_ended_stays(&mut b, now);
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
                        b.health.database_failing(&e, b.clock.now_ms());
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
                        history_tick = tokio::time::interval(b.clock.real_of_span(Duration::from_millis(b.history_interval_ms as u64)));
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
    b.release_after_ms = release_after_ms(&req.cfg);
    let now = b.clock.now_ms();
    let tracked: BTreeSet<String> = b.tracker.tracked(now).into_iter().collect();
    publish_states(b, &tracked, &BTreeMap::new(), now).await;
    let scopes = b.alerts.all_scopes(&b.tracker, now);
    evaluate_alerts(b, &scopes, Vec::new(), now).await;
    let _ = req.done.send(());
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
    let now = b.clock.now_ms();
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
    if b.release_checked.elapsed() >= RELEASE_CHECK_EVERY {
        b.release_checked = tokio::time::Instant::now();
        release_ended_stays(b, now);
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
        } => match committed(&b.writer, &b.health, &b.clock, write, &op).await {
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
                // A heartbeat that changes nothing but when its device was
                // last heard: stored, applied and acknowledged, no state and
                // no alert evaluation (`Tracker::is_quiet_heartbeat`).
                if b.tracker.is_quiet_heartbeat(&tracked, b.clock.now_ms()) {
                    b.tracker.apply(*tracked);
                    return true;
                }
                alert_scopes_of(&tracked, &mut effects.scopes, &mut effects.commands);
                reload_released(b, &tracked);
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
            Ok(WriteResult::Input(StoreOutcome::AssociationConflict { associated })) => {
                let (device_id, named) = match (&tracked.topic, &tracked.input) {
                    (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e)) => {
                        (device_id.clone(), e.patient_id.clone().unwrap_or_default())
                    }
                    _ => (String::new(), String::new()),
                };
                warn!(
                    device_id = %device_id,
                    patient_id = %named,
                    associated = %associated,
                    "device event refused: it names another patient than the device's (association_conflict)"
                );
                let r = intake::reject(
                    &topic,
                    &payload,
                    received_at_ms,
                    crate::contract::Rejection {
                        code: ErrorCode::AssociationConflict,
                        field: Some("patient_id".to_owned()),
                        message: format!(
                            "device {device_id} is associated with another patient at this time; \
                             a {} cannot change its association (only infusion_started or \
                             patch_applied can)",
                            intake_kind(&tracked.input)
                        ),
                    },
                );
                let stored = match r {
                    Intake::Reject { record, notice } => store_rejection(b, record, notice).await,
                    Intake::Accept { .. } => false,
                };
                if stored {
                    if let Input::DeviceEvent(e) = &tracked.input {
                        b.tracker.refused_event(&device_id, &associated, e);
                        effects.scopes.insert(Scope::Patient(associated));
                    }
                }
                stored
            }
            Ok(WriteResult::Written | WriteResult::Pruned { .. } | WriteResult::AlreadyStored) => {
                true
            }
        },
        Pending::Reject { op, write, notice } => {
            match committed(&b.writer, &b.health, &b.clock, write, &op).await {
                Ok(WriteResult::AlreadyStored) => {
                    // The broker's retained copy, delivered again at a
                    // subscription: stored and announced the first time.
                    b.summary.duplicates += 1;
                    b.metrics.duplicate();
                    debug!(
                        "retained redelivery of a stored rejection; acknowledged, not stored again"
                    );
                    true
                }
                Ok(_) => {
                    b.summary.rejected += 1;
                    match &op {
                        WriteOp::Rejected(r) | WriteOp::RejectedRetained(r) => {
                            b.metrics.rejected(r.code)
                        }
                        WriteOp::RejectionCounted(c) => {
                            b.metrics.rejected(c.code);
                            b.metrics.rejection_counted();
                        }
                        _ => {}
                    }
                    // A counted repeat is not announced one by one.
                    if let Some(notice) = &notice {
                        publish_rejected(b, notice).await;
                    }
                    true
                }
                Err(_) => false,
            }
        }
    }
}

/// The kind of a device event, for messages.
fn intake_kind(input: &Input) -> &'static str {
    match input {
        Input::DeviceEvent(e) => e.kind.kind_name(),
        _ => "message",
    }
}

async fn store_rejection(b: &mut StageB, record: RejectedRecord, notice: RejectedNotice) -> bool {
    let code = record.code;
    let op = WriteOp::Rejected(record);
    let write = b.writer.enqueue(op.clone()).await;
    if committed(&b.writer, &b.health, &b.clock, write, &op)
        .await
        .is_err()
    {
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
/// states with their history points — the point at `now` for a patient in a
/// stay, and for a patient in `backfill_from` the stored points from that
/// time on replaced by the grid recomputed inside their stays — in ONE
/// write (derived data: a failure is logged, the inputs are safe).
async fn publish_states(
    b: &mut StageB,
    patients: &BTreeSet<String>,
    backfill_from: &BTreeMap<String, TimeMs>,
    now: TimeMs,
) {
    let mut states = Vec::with_capacity(patients.len());
    let mut history = Vec::with_capacity(patients.len());
    let mut replace_from = Vec::new();
    for pid in patients {
        let Some(state) = b.tracker.state(pid, now) else {
            b.models.remove(pid);
            if let Some(e) = b.tracker.error(pid) {
                warn!(patient_id = %pid, error = %e, "no state: the patient's inputs cannot be solved");
            }
            continue;
        };
        if let Some(model) = b.tracker.derived(pid) {
            b.models.set(pid, model);
        }
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
        if let Some(occurred) = backfill_from.get(pid) {
            let from = recompute_history(b, pid, *occurred, now, &mut history);
            replace_from.push((pid.clone(), from));
        }
        if b.tracker.in_stay(pid, now) {
            history.push(HistoryRow {
                patient_id: pid.clone(),
                t_ms: now,
                cp_ng_per_ml: state.cp_ng_per_ml,
                ce_ng_per_ml: state.ce_ng_per_ml,
            });
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
    if states.is_empty() && history.is_empty() && replace_from.is_empty() {
        return;
    }
    let (n_states, n_history) = (states.len(), history.len());
    let op = WriteOp::Derived {
        states,
        history,
        replace_history_from: replace_from,
    };
    match b.writer.enqueue(op).await {
        Ok(queued) => {
            // Any failing write is a technical problem (the first failing
            // batch of a lock may hold no input); the next input write that
            // succeeds clears it.
            let health = b.health.clone();
            let clock = b.clock.clone();
            tokio::spawn(async move {
                if let Err(e) = queued.outcome().await {
                    health.database_failing(&e, clock.now_ms());
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

/// An input changes the model from its time on: the history grid points of
/// `patient_id` from `occurred_ms` (the batch's earliest input for the
/// patient; at most [`BACKFILL_MAX_MS`] back) to `now` are recomputed, only
/// inside the patient's stays, into `rows`. Returns the time from which the
/// stored points are to be replaced by them.
fn recompute_history(
    b: &mut StageB,
    patient_id: &str,
    occurred_ms: TimeMs,
    now: TimeMs,
    rows: &mut Vec<HistoryRow>,
) -> TimeMs {
    let step = b.history_interval_ms.max(1);
    let from = occurred_ms.max(now - BACKFILL_MAX_MS);
    let stays: Vec<Stay> = b.tracker.stays(patient_id).to_vec();
    let Some(d) = b.tracker.derived(patient_id) else {
        return from;
    };
    for stay in stays {
        // The grid points in [from, now] inside [start, end).
        let lo = from.max(stay.start_ms);
        let hi = stay.end_ms.map_or(now, |e| now.min(e - 1));
        if hi < lo {
            continue;
        }
        let first = lo + (step - lo.rem_euclid(step)) % step;
        if first > hi {
            continue;
        }
        rows.extend(
            d.solution
                .sample(first, hi, step)
                .into_iter()
                .map(|s| HistoryRow {
                    patient_id: patient_id.to_owned(),
                    t_ms: s.t_ms,
                    cp_ng_per_ml: s.cp_ng_per_ml,
                    ce_ng_per_ml: s.ce_ng_per_ml,
                }),
        );
    }
    from
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::store::StoreConfig;

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
            committed(&writer, &health, &Clock::system(), first, &op),
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
        assert!(committed(&writer, &health, &Clock::system(), first, &ok)
            .await
            .is_ok());
        drop(writer);
        thread.shutdown().unwrap();
    }
}
