//! Live patient state, derived from stored inputs in occurrence time.
//!
//! The tracker owns who is tracked and what each patient has received:
//! admissions (covariates that change "from their time on"), discharges,
//! manual doses, and device events attributed to a patient. It is pure: the
//! daemon feeds it inputs that are already durably stored, asks it for
//! state messages at a "now" it chooses, and publishes what it returns.
//!
//! # Attribution
//!
//! A device event belongs to the patient in its payload, or else to the
//! patient the device was associated with at the event's occurrence time.
//! Which events may change that association is [`association_decision`]'s
//! rule: a heartbeat or an alarm never does; `infusion_started` and
//! `patch_applied` naming another patient move the device (what it was
//! delivering to the first patient ends there, with a ledger note); any
//! other event naming another patient than the device's is refused
//! (`association_conflict`, decided by the store). An input that cannot be applied — a dose for a patient
//! never admitted, a device event from a device with no patient at that
//! time, or for a patient never admitted — is kept and listed by
//! [`Tracker::unassigned`]; it is applied as soon as the missing admission
//! or association arrives, because attribution is recomputed, not stored.
//!
//! # Stays
//!
//! A patient is tracked in *stays*: an admission opens a stay, a discharge
//! closes the stay its time falls in; an admission while a stay is open
//! updates the covariates from its time on. Stays are derived from every
//! admission and discharge in occurrence order (ties: arrival order), so a
//! discharge that arrives late closes only the stay it belongs to, and a
//! readmitted patient is tracked like any other ([`Tracker::stays`],
//! [`Tracker::in_stay`]). The body model is one for the patient across
//! stays: doses of an earlier stay still in the body count in a later one
//! (drug does not leave at discharge); tracking, history and alerts exist
//! only inside stays.
//!
//! # Releasing ended stays
//!
//! A patient whose last stay ended is dropped from memory on request
//! ([`Tracker::release`]: the daemon asks after a grace period). Their
//! inputs stay in the store; an input that concerns them later
//! ([`Tracker::needs_reload`]) is preceded by [`Tracker::reload`] with
//! their stored inputs, which gives exactly the tracker a full replay gives.
//!
//! # Extend, or recompute from the input's time
//!
//! A patient's model (ledger, schedule, solution, and the slow solution of
//! relief over weeks) is kept across inputs with what it is extended from
//! ([`LedgerLog`], the schedules). A dose, or a device event that moves no
//! device, is *pending* until the model is next read ([`Tracker::derived`]):
//! then the ledger is rewound to just before the earliest pending input
//! (nothing to undo when it is later than every other: the common case),
//! the pending inputs are inserted in occurrence order and the rest
//! replayed; the schedules' events from its time on are rebuilt
//! ([`Schedule::rebuild_from`]) and the solutions resumed from their last
//! checkpoint before it ([`Solution::resume_from`]). Nothing before that
//! time depends on the input, and everything after it is the same
//! computation a full replay does, so the model is bit for bit the one a
//! full replay gives (`tests/it/incremental.rs`). A discharge changes no
//! model (only stays). The daemon recomputes history points and alerts from
//! the input's time itself.
//!
//! These fall back to a rebuild from all of the patient's inputs in
//! occurrence order (what every input did before): an admission (new
//! parameters from its time on, orphan doses taken in), a device event
//! that changes an association (every patient the device served), a
//! drug-file reload ([`Tracker::reconfigure`]), a released patient's reload,
//! a model that could not be solved, and dosing the schedule refuses.
//! [`Tracker::set_full_rebuild`] makes every change a full rebuild: the
//! reference the tests and benchmarks compare with.

use crate::contract::{Admit, DeviceEvent, Dose, Input, InputTopic, Rejection};
use crate::ledger::{Ledger, LedgerInput, LedgerLog};
use crate::patient::{Formulary, PatientError, PatientSpec, PatientWarning, ResolvedPatient};
use crate::pk::params::InvalidParams;
use crate::pk::schedule::lag_ms;
use crate::pk::{Crossing, Direction, Output, Schedule, ScheduleError, Solution, System};
use crate::vocab::{format_rfc3339, round3, Route, TimeMs};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Tracker settings (from the daemon's config).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// How far ahead the state message's forecast looks.
    pub forecast_horizon_ms: TimeMs,
    /// A delivering device not heard from for this long makes the state
    /// `stale`.
    pub device_stale_after_ms: TimeMs,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            forecast_horizon_ms: 12 * 3_600_000,
            device_stale_after_ms: 10 * 60_000,
        }
    }
}

/// A stored input, as the tracker receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedInput {
    /// Store sequence number (arrival order).
    pub seq: i64,
    pub topic: InputTopic,
    pub input: Input,
}

/// Why an input is not applied (yet).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unassigned {
    pub seq: i64,
    pub reason: String,
}

/// What a device event's `patient_id` does to the device's association
/// ([`association_decision`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociationDecision {
    /// Nothing changes: no `patient_id`, the device's own patient, or an
    /// event that never changes an association naming a patient while the
    /// device has none (it belongs to that patient, alone).
    Keep,
    /// The device is associated with the payload's patient from the
    /// event's time on (`previous`: the patient it leaves, if any).
    Associate { previous: Option<String> },
    /// The payload names another patient than the device's (`associated`)
    /// and the event cannot move the device: refused.
    Conflict { associated: String },
}

/// The association rule, for an event of kind `kind` (the contract's
/// name) naming `payload_patient`, from a device associated with
/// `associated` at the event's time. Heartbeats and alarms never change an
/// association; `infusion_started` and `patch_applied` are the explicit
/// moves; the other delivery events may start an association (a device
/// with no patient) but not change one.
pub fn association_decision(
    kind: &str,
    payload_patient: Option<&str>,
    associated: Option<&str>,
) -> AssociationDecision {
    let Some(named) = payload_patient else {
        return AssociationDecision::Keep;
    };
    if associated == Some(named) {
        return AssociationDecision::Keep;
    }
    let never_associates = matches!(kind, "heartbeat" | "alarm" | "alarm_cleared");
    let moves = matches!(kind, "infusion_started" | "patch_applied");
    match associated {
        None if never_associates => AssociationDecision::Keep,
        None => AssociationDecision::Associate { previous: None },
        Some(p) if moves => AssociationDecision::Associate {
            previous: Some(p.to_owned()),
        },
        Some(p) => AssociationDecision::Conflict {
            associated: p.to_owned(),
        },
    }
}

/// Device events refused (`association_conflict`) while a device was
/// associated with a patient: what the `association_conflict` alert says.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedEvents {
    pub device_id: String,
    /// The patient the latest refused event named.
    pub named_patient_id: String,
    /// How many were refused.
    pub count: u64,
    /// Ids of the latest (at most [`REFUSED_IDS_KEPT`]).
    pub input_ids: Vec<String>,
    /// Occurrence time of the latest.
    pub latest_ms: TimeMs,
}

/// How many refused event ids an `association_conflict` alert lists.
pub const REFUSED_IDS_KEPT: usize = 10;

#[derive(Debug, Clone)]
struct Association {
    from_ms: TimeMs,
    seq: i64,
    patient_id: String,
}

#[derive(Debug, Clone)]
struct DeviceTrack {
    /// Associations by (from_ms, seq).
    associations: Vec<Association>,
    /// Every event of the device, by arrival.
    events: Vec<(i64, DeviceEvent)>,
    /// Latest occurrence time heard.
    last_heard_ms: TimeMs,
}

/// A device not heard from yet (`last_heard_ms` `i64::MIN`: none).
impl Default for DeviceTrack {
    fn default() -> Self {
        DeviceTrack {
            associations: Vec::new(),
            events: Vec::new(),
            last_heard_ms: i64::MIN,
        }
    }
}

impl DeviceTrack {
    fn patient_at(&self, t_ms: TimeMs) -> Option<&str> {
        patient_at(&self.associations, t_ms)
    }

    /// The patient an event belongs to.
    fn owner<'a>(&'a self, event: &'a DeviceEvent) -> Option<&'a str> {
        owner_of(&self.associations, event)
    }
}

fn patient_at(associations: &[Association], t_ms: TimeMs) -> Option<&str> {
    associations
        .iter()
        .rev()
        .find(|a| a.from_ms <= t_ms)
        .map(|a| a.patient_id.as_str())
}

/// The patient an event belongs to: its payload's, else its device's at its
/// time.
fn owner_of<'a>(associations: &'a [Association], event: &'a DeviceEvent) -> Option<&'a str> {
    event
        .patient_id
        .as_deref()
        .or_else(|| patient_at(associations, event.time_ms))
}

fn is_heartbeat(event: &DeviceEvent) -> bool {
    matches!(
        event.kind,
        crate::contract::DeviceEventKind::Heartbeat { .. }
    )
}

/// A patient's derived model, rebuilt when their inputs change.
#[derive(Debug, Clone)]
pub struct Derived {
    /// The patient as resolved from the latest admission (resolved once,
    /// when the admission was applied).
    pub patient: Arc<ResolvedPatient>,
    pub ledger: Ledger,
    pub solution: Solution,
    /// The slow effect compartment of relief over weeks
    /// ([`crate::relief::slow_params`], the latest admission's parameters
    /// over the whole stay), for patients whose indication carries it.
    pub slow: Option<Solution>,
}

#[derive(Debug, Clone, Default)]
struct PatientTrack {
    /// Admissions by (time, seq), each resolved once when applied, and
    /// again when the drug file is reloaded ([`Tracker::reconfigure`]);
    /// an admission that does not resolve keeps its error, reported at
    /// rebuild. The admission itself is kept for that.
    admits: Vec<(TimeMs, i64, Resolved, Box<Admit>)>,
    /// Discharges by (time, seq).
    discharges: Vec<(TimeMs, i64)>,
    /// The stays the admissions and discharges give ([`stays_of`]).
    stays: Vec<Stay>,
    doses: Vec<(i64, Dose)>,
    derived: Option<Arc<Derived>>,
    /// What `derived` is extended from (`None`: only a full rebuild).
    inc: Option<Box<Incremental>>,
    /// Inputs applied since `derived` was brought up to date that can
    /// extend it (doses, and events of a device whose associations did not
    /// change), with their `seq`.
    pending: Vec<(i64, LedgerInput)>,
    /// Why the last rebuild failed, if it did.
    error: Option<ModelError>,
    /// The model must be rebuilt from all of the patient's inputs.
    dirty: bool,
}

/// What a patient's model is extended from: the ledger's inputs with how
/// to undo each step, and the schedules the solutions were solved with.
#[derive(Debug, Clone)]
struct Incremental {
    log: LedgerLog,
    schedule: Schedule,
    /// The slow compartment's parameters and schedule (relief over weeks),
    /// when the patient has one.
    slow: Option<(crate::pk::PkParams, Schedule)>,
}

/// One stay: from an admission that opened it to the discharge that closed
/// it (`None`: still open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stay {
    pub start_ms: TimeMs,
    pub end_ms: Option<TimeMs>,
}

impl Stay {
    /// Is `t_ms` inside the stay (`[start, end)`)?
    pub fn contains(&self, t_ms: TimeMs) -> bool {
        self.start_ms <= t_ms && self.end_ms.is_none_or(|e| t_ms < e)
    }
}

/// The stays that admissions and discharges (each by (time, seq)) give, in
/// occurrence order (ties: arrival order): an admission with no stay open
/// opens one; a discharge closes the open stay; an admission while a stay is
/// open (new covariates) and a discharge with none open (a repeat) change no
/// stay.
pub fn stays_of(admits: &[(TimeMs, i64)], discharges: &[(TimeMs, i64)]) -> Vec<Stay> {
    let mut events: Vec<(TimeMs, i64, bool)> = admits
        .iter()
        .map(|&(t, s)| (t, s, true))
        .chain(discharges.iter().map(|&(t, s)| (t, s, false)))
        .collect();
    events.sort_unstable();
    let mut stays: Vec<Stay> = Vec::new();
    let mut open = false;
    for (t, _, admit) in events {
        match (admit, open) {
            (true, false) => {
                stays.push(Stay {
                    start_ms: t,
                    end_ms: None,
                });
                open = true;
            }
            (false, true) => {
                if let Some(last) = stays.last_mut() {
                    last.end_ms = Some(t);
                }
                open = false;
            }
            _ => {}
        }
    }
    stays
}

impl PatientTrack {
    fn restay(&mut self) {
        let admits: Vec<(TimeMs, i64)> = self.admits.iter().map(|(t, s, _, _)| (*t, *s)).collect();
        self.stays = stays_of(&admits, &self.discharges);
    }

    /// The stay that decides whether the patient is in care at `now_ms`:
    /// the latest that started at or before it, or else the first (an
    /// admission dated a little ahead of "now" is tracked at once).
    fn current_stay(&self, now_ms: TimeMs) -> Option<&Stay> {
        let i = self.stays.partition_point(|s| s.start_ms <= now_ms);
        match i.checked_sub(1) {
            Some(j) => self.stays.get(j),
            None => self.stays.first(),
        }
    }

    fn in_stay(&self, now_ms: TimeMs) -> bool {
        self.current_stay(now_ms)
            .is_some_and(|s| s.end_ms.is_none_or(|e| e > now_ms))
    }
}

/// An admission resolved against the drug file, with the system its
/// parameters give, or why it does not resolve.
type Resolved = Result<(Arc<ResolvedPatient>, Arc<System>), ModelError>;

/// Why a patient's inputs give no model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The admission does not resolve against the drug file.
    #[error(transparent)]
    Patient(#[from] PatientError),
    /// The resolved parameters give no system.
    #[error(transparent)]
    Params(#[from] InvalidParams),
    /// The engine cannot take the dosing.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// No admission to take parameters from.
    #[error("no admission")]
    NoAdmission,
}

/// Every patient's live state.
#[derive(Debug, Clone)]
pub struct Tracker {
    formulary: Arc<Formulary>,
    config: TrackerConfig,
    patients: BTreeMap<String, PatientTrack>,
    devices: BTreeMap<String, DeviceTrack>,
    /// Doses for patients never admitted: patient id → doses.
    orphan_doses: BTreeMap<String, Vec<(i64, Dose)>>,
    /// Devices ever associated with each patient: the only devices whose
    /// events can be the patient's (a rebuild scans just these).
    patient_devices: BTreeMap<String, BTreeSet<String>>,
    /// Device events refused as association conflicts, by the patient the
    /// device was associated with, then by device (kept while the device
    /// stays with that patient; bounded by [`REFUSED_IDS_KEPT`] ids each).
    refused: BTreeMap<String, BTreeMap<String, RefusedEvents>>,
    /// Dynamics already built, by the exact bits of their rate constants:
    /// every patient with the same rate constants (all adults on a
    /// weight-linear model, whatever their weight) shares one.
    dynamics: BTreeMap<Vec<u64>, Arc<crate::pk::system::Dynamics>>,
    /// Patients dropped from memory after their last stay ended
    /// ([`Tracker::release`]).
    released: BTreeSet<String>,
    /// Rebuild every changed model from all of its inputs (never extend):
    /// the reference the incremental path is tested and measured against.
    full_rebuild: bool,
}

impl Tracker {
    pub fn new(formulary: Arc<Formulary>, config: TrackerConfig) -> Self {
        Tracker {
            formulary,
            config,
            patients: BTreeMap::new(),
            devices: BTreeMap::new(),
            orphan_doses: BTreeMap::new(),
            patient_devices: BTreeMap::new(),
            refused: BTreeMap::new(),
            dynamics: BTreeMap::new(),
            released: BTreeSet::new(),
            full_rebuild: false,
        }
    }

    /// Rebuild every changed model from all of the patient's inputs
    /// instead of extending it (`true`): the reference the incremental
    /// path must equal, for tests and benchmarks. Takes effect for the
    /// next change.
    pub fn set_full_rebuild(&mut self, on: bool) {
        self.full_rebuild = on;
        for track in self.patients.values_mut() {
            if on && !track.pending.is_empty() {
                track.dirty = true;
            }
            if on {
                track.inc = None;
                track.pending.clear();
            }
        }
    }

    /// See [`check_input`].
    pub fn check(&self, input: &Input) -> Result<(), Rejection> {
        check_input(&self.formulary, input)
    }

    /// The drug file the tracker resolves patients with.
    pub fn formulary(&self) -> &Arc<Formulary> {
        &self.formulary
    }

    /// A reloaded drug file and settings: every admission is resolved again
    /// against `formulary` and every patient's model is rebuilt from their
    /// inputs (at the next read), exactly as a replay with the new drug
    /// file would give. The inputs themselves are kept as they are.
    pub fn reconfigure(&mut self, formulary: Arc<Formulary>, config: TrackerConfig) {
        self.formulary = formulary;
        self.config = config;
        self.dynamics.clear();
        let ids: Vec<String> = self.patients.keys().cloned().collect();
        for pid in ids {
            let admits = match self.patients.get_mut(&pid) {
                Some(track) => std::mem::take(&mut track.admits),
                None => continue,
            };
            let admits = admits
                .into_iter()
                .map(|(t, seq, _, admit)| (t, seq, self.resolve_admit(&admit), admit))
                .collect();
            if let Some(track) = self.patients.get_mut(&pid) {
                track.admits = admits;
                track.dirty = true;
            }
        }
    }

    /// Apply a stored input. Returns the patients whose state may have
    /// changed (their state should be republished).
    pub fn apply(&mut self, input: TrackedInput) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        match (input.topic, input.input) {
            (InputTopic::Admit { patient_id }, Input::Admit(admit)) => {
                let resolved = self.resolve_admit(&admit);
                let track = self.patients.entry(patient_id.clone()).or_default();
                let pos = track
                    .admits
                    .partition_point(|(t, s, _, _)| (*t, *s) <= (admit.time_ms, input.seq));
                track
                    .admits
                    .insert(pos, (admit.time_ms, input.seq, resolved, Box::new(admit)));
                if let Some(doses) = self.orphan_doses.remove(&patient_id) {
                    track.doses.extend(doses);
                }
                track.restay();
                track.dirty = true;
                touched.insert(patient_id);
            }
            (InputTopic::Discharge { patient_id }, Input::Discharge(d)) => {
                let track = self.patients.entry(patient_id.clone()).or_default();
                let pos = track
                    .discharges
                    .partition_point(|&(t, s)| (t, s) <= (d.time_ms, input.seq));
                track.discharges.insert(pos, (d.time_ms, input.seq));
                track.restay();
                // The model does not depend on stays: only the reference
                // path rebuilds it.
                if self.full_rebuild {
                    track.dirty = true;
                }
                touched.insert(patient_id);
            }
            (InputTopic::Dose { patient_id }, Input::Dose(dose)) => {
                match self.patients.get_mut(&patient_id) {
                    Some(track) if !track.admits.is_empty() => {
                        if self.full_rebuild {
                            track.dirty = true;
                        } else {
                            track
                                .pending
                                .push((input.seq, LedgerInput::Dose(dose.clone())));
                        }
                        track.doses.push((input.seq, dose));
                        touched.insert(patient_id);
                    }
                    _ => self
                        .orphan_doses
                        .entry(patient_id)
                        .or_default()
                        .push((input.seq, dose)),
                }
            }
            (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(event)) => {
                let mut quiet = BTreeSet::new();
                let mut moved = false;
                let device = self.devices.entry(device_id.clone()).or_default();
                device.last_heard_ms = device.last_heard_ms.max(event.time_ms);
                // Everyone the device ever delivered to may be affected by a
                // change of association; the event's owner certainly is.
                let before: BTreeSet<String> = device
                    .associations
                    .iter()
                    .map(|a| a.patient_id.clone())
                    .collect();
                if let Some(pid) = &event.patient_id {
                    // The store refused conflicts; one read back from an
                    // older store stays attributed to its payload's
                    // patient without moving the device.
                    let decision = association_decision(
                        event.kind.kind_name(),
                        Some(pid),
                        device.patient_at(event.time_ms),
                    );
                    if matches!(decision, AssociationDecision::Associate { .. }) {
                        let pos = device
                            .associations
                            .partition_point(|a| (a.from_ms, a.seq) <= (event.time_ms, input.seq));
                        device.associations.insert(
                            pos,
                            Association {
                                from_ms: event.time_ms,
                                seq: input.seq,
                                patient_id: pid.clone(),
                            },
                        );
                        self.patient_devices
                            .entry(pid.clone())
                            .or_default()
                            .insert(device_id.clone());
                        // Heartbeats held while unattributable and now
                        // covered by the association are attributed: no
                        // longer held (see below).
                        let DeviceTrack {
                            associations,
                            events,
                            ..
                        } = &mut *device;
                        events.retain(|(_, e)| {
                            !is_heartbeat(e) || owner_of(associations, e).is_none()
                        });
                        touched.extend(before);
                        moved = true;
                    }
                }
                let owner = device.owner(&event).map(str::to_owned);
                // A heartbeat carries no dosing: it only says the device is
                // alive (read by `stale`). It is kept only while it cannot be
                // attributed (no patient in its payload, no association at
                // its time), so that it is listed as unassigned; an
                // association covering its time later drops it (above). So
                // what is held depends on the inputs, not on their arrival
                // order, and a start can read exactly the held ones
                // ([`Tracker::restore_released`]). It never makes a
                // patient's model rebuild.
                let heartbeat = is_heartbeat(&event);
                // The event extends its owner's model when no association
                // changed and the owner's model reads this device's events
                // (a rebuild reads only devices ever associated with them).
                let extends = !moved
                    && !heartbeat
                    && !self.full_rebuild
                    && owner.as_ref().is_some_and(|pid| {
                        self.patient_devices
                            .get(pid)
                            .is_some_and(|d| d.contains(&device_id))
                    });
                let model_input = extends.then(|| LedgerInput::Device {
                    device_id: device_id.clone(),
                    event: event.clone(),
                });
                if !heartbeat || owner.is_none() {
                    device.events.push((input.seq, event));
                }
                if let Some(owner) = owner {
                    if !heartbeat {
                        touched.insert(owner.clone());
                    } else {
                        // Republish (staleness may change), no rebuild.
                        quiet.insert(owner);
                    }
                }
                match model_input {
                    Some(model_input) => {
                        if let Some(track) =
                            touched.first().and_then(|pid| self.patients.get_mut(pid))
                        {
                            track.pending.push((input.seq, model_input));
                        }
                    }
                    // An owner that cannot read the event (never associated
                    // with the device) gets no model change in either path.
                    None if !moved && !self.full_rebuild => {}
                    None => {
                        for pid in &touched {
                            if let Some(track) = self.patients.get_mut(pid) {
                                track.dirty = true;
                            }
                        }
                    }
                }
                touched.extend(quiet);
                touched.retain(|pid| self.patients.get(pid).is_some_and(|t| !t.admits.is_empty()));
            }
            // Operator commands belong to the alert lifecycle, not the model.
            (_, Input::AlertCommand(_)) => {}
            // The daemon pairs topics and payloads; a mismatch is a bug there.
            _ => {}
        }
        touched
    }

    /// A device event the store refused (`association_conflict`): the device
    /// is associated with `associated` at the event's time. Remembered for
    /// the `association_conflict` alert on that patient (never applied).
    pub fn refused_event(&mut self, device_id: &str, associated: &str, event: &DeviceEvent) {
        let entry = self
            .refused
            .entry(associated.to_owned())
            .or_default()
            .entry(device_id.to_owned())
            .or_insert_with(|| RefusedEvents {
                device_id: device_id.to_owned(),
                named_patient_id: String::new(),
                count: 0,
                input_ids: Vec::new(),
                latest_ms: event.time_ms,
            });
        entry.count += 1;
        entry.named_patient_id = event.patient_id.clone().unwrap_or_default();
        entry.latest_ms = entry.latest_ms.max(event.time_ms);
        entry.input_ids.push(event.id.clone());
        if entry.input_ids.len() > REFUSED_IDS_KEPT {
            entry.input_ids.remove(0);
        }
    }

    /// The refused events of devices still associated with `patient_id` at
    /// `now_ms` (those of a device that has moved on are forgotten).
    pub fn refused_events(&mut self, patient_id: &str, now_ms: TimeMs) -> Vec<RefusedEvents> {
        let Some(by_device) = self.refused.get_mut(patient_id) else {
            return Vec::new();
        };
        let devices = &self.devices;
        by_device.retain(|device_id, _| {
            devices
                .get(device_id)
                .is_some_and(|d| d.patient_at(now_ms) == Some(patient_id))
        });
        let out = by_device.values().cloned().collect();
        if by_device.is_empty() {
            self.refused.remove(patient_id);
        }
        out
    }

    /// Inputs stored but not applied, with the reason.
    pub fn unassigned(&self) -> Vec<Unassigned> {
        let mut out = Vec::new();
        for (pid, doses) in &self.orphan_doses {
            for (seq, _) in doses {
                out.push(Unassigned {
                    seq: *seq,
                    reason: format!("dose for patient {pid}, who has not been admitted"),
                });
            }
        }
        for (device_id, device) in &self.devices {
            for (seq, event) in &device.events {
                match device.owner(event) {
                    None => out.push(Unassigned {
                        seq: *seq,
                        reason: format!("event from device {device_id}, which has no patient at {}", format_rfc3339(event.time_ms)),
                    }),
                    Some(pid) if self.patients.get(pid).is_none_or(|t| t.admits.is_empty()) => {
                        out.push(Unassigned {
                            seq: *seq,
                            reason: format!("event from device {device_id} for patient {pid}, who has not been admitted"),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        out.sort_by_key(|u| u.seq);
        out
    }

    /// The tracker's settings.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Latest occurrence time heard from a device (any event).
    pub fn last_heard(&self, device_id: &str) -> Option<TimeMs> {
        self.devices
            .get(device_id)
            .map(|d| d.last_heard_ms)
            .filter(|&t| t != i64::MIN)
    }

    /// Would applying `input` at `now_ms` change nothing but the device's
    /// last-heard time? True for a heartbeat that is attributed (a patient
    /// in its payload, or its device's association at its time: so it is
    /// not held, and no unassigned count changes) from a device heard from
    /// within `device_stale_after_ms` of `now_ms` (so it is not stale now,
    /// and the heartbeat cannot make it fresh: no state's `stale` or
    /// `stale_devices` changes, and no `device_silent` alert can clear).
    /// The daemon then publishes no state and evaluates no alert for it:
    /// the contract publishes a state when it changes and at least every
    /// `state_interval`, and the alert timers wake at device deadlines.
    /// Call before [`Tracker::apply`].
    pub fn is_quiet_heartbeat(&self, input: &TrackedInput, now_ms: TimeMs) -> bool {
        let (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(event)) =
            (&input.topic, &input.input)
        else {
            return false;
        };
        if !is_heartbeat(event) {
            return false;
        }
        let Some(device) = self.devices.get(device_id) else {
            return false;
        };
        let attributed = event.patient_id.is_some() || device.owner(event).is_some();
        let fresh = device.last_heard_ms != i64::MIN
            && now_ms.saturating_sub(device.last_heard_ms) <= self.config.device_stale_after_ms;
        attributed && fresh
    }

    /// Stored doses for a patient who has not been admitted (their `seq`).
    pub fn orphan_seqs(&self, patient_id: &str) -> Vec<i64> {
        self.orphan_doses
            .get(patient_id)
            .map(|d| d.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default()
    }

    /// Stored events of a device that belong to no admitted patient.
    pub fn unowned_seqs(&self, device_id: &str) -> Vec<i64> {
        let Some(device) = self.devices.get(device_id) else {
            return Vec::new();
        };
        device
            .events
            .iter()
            .filter(|(_, e)| {
                device
                    .owner(e)
                    .is_none_or(|pid| self.patients.get(pid).is_none_or(|t| t.admits.is_empty()))
            })
            .map(|(s, _)| *s)
            .collect()
    }

    /// Every device with stored events.
    pub fn device_ids(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// Patients with stored doses but no admission.
    pub fn orphan_patients(&self) -> impl Iterator<Item = &str> {
        self.orphan_doses.keys().map(String::as_str)
    }

    /// Patients in a stay at `now_ms` (admitted, and that stay not closed
    /// by a discharge at or before `now_ms`).
    pub fn tracked(&self, now_ms: TimeMs) -> Vec<String> {
        self.tracked_ids(now_ms).map(str::to_owned).collect()
    }

    /// The ids of [`Tracker::tracked`], borrowed: for a periodic pass over
    /// every patient that needs only some of them (no copy of every id).
    pub fn tracked_ids(&self, now_ms: TimeMs) -> impl Iterator<Item = &str> + '_ {
        self.patients
            .iter()
            .filter(move |(_, t)| t.in_stay(now_ms))
            .map(|(id, _)| id.as_str())
    }

    /// When the patient's latest stay ended, if it has.
    pub fn discharged_at(&self, patient_id: &str) -> Option<TimeMs> {
        self.patients
            .get(patient_id)
            .and_then(|t| t.stays.last())
            .and_then(|s| s.end_ms)
    }

    /// The patient's stays, in time order (empty: never admitted, or
    /// released).
    pub fn stays(&self, patient_id: &str) -> &[Stay] {
        self.patients
            .get(patient_id)
            .map_or(&[], |t| t.stays.as_slice())
    }

    /// Is the patient in a stay at `now_ms`?
    pub fn in_stay(&self, patient_id: &str, now_ms: TimeMs) -> bool {
        self.patients
            .get(patient_id)
            .is_some_and(|t| t.in_stay(now_ms))
    }

    /// Was the patient admitted, and is out of care at `now_ms` (their stay
    /// ended, or they were released)? Such a patient gets no alert
    /// evaluation and no history; their last state says `discharged`.
    pub fn stay_ended(&self, patient_id: &str, now_ms: TimeMs) -> bool {
        if self.released.contains(patient_id) {
            return true;
        }
        self.patients
            .get(patient_id)
            .is_some_and(|t| !t.stays.is_empty() && !t.in_stay(now_ms))
    }

    /// The patient's derived model, rebuilt if their inputs changed. `None`
    /// for a patient never admitted, or whose inputs cannot be solved (see
    /// [`Tracker::error`]).
    pub fn derived(&mut self, patient_id: &str) -> Option<Arc<Derived>> {
        let (dirty, pending) = self
            .patients
            .get(patient_id)
            .map_or((false, false), |t| (t.dirty, !t.pending.is_empty()));
        if pending && !dirty && !self.extend(patient_id) {
            if let Some(track) = self.patients.get_mut(patient_id) {
                track.dirty = true;
            }
        }
        let dirty = self.patients.get(patient_id).is_some_and(|t| t.dirty);
        if dirty {
            let keep = !self.full_rebuild;
            let rebuilt = self.rebuild(patient_id, keep).and_then(|d| match d {
                Some((mut d, mut inc)) => {
                    let slow = self.slow_solution(&d)?;
                    if let Some(inc) = inc.as_mut() {
                        inc.slow = slow.as_ref().map(|(p, s, _)| (p.clone(), s.clone()));
                    }
                    d.slow = slow.map(|(_, _, s)| s);
                    Ok(Some((d, inc)))
                }
                None => Ok(None),
            });
            if let Some(track) = self.patients.get_mut(patient_id) {
                track.dirty = false;
                track.pending.clear();
                match rebuilt {
                    Ok(Some((d, inc))) => {
                        track.derived = Some(Arc::new(d));
                        track.inc = inc.map(Box::new);
                        track.error = None;
                    }
                    Ok(None) => {
                        track.derived = None;
                        track.inc = None;
                        track.error = None;
                    }
                    Err(e) => {
                        track.derived = None;
                        track.inc = None;
                        track.error = Some(e);
                    }
                }
            }
        }
        self.patients
            .get(patient_id)
            .and_then(|t| t.derived.clone())
    }

    /// Bring the patient's model up to date with their pending inputs by
    /// extending it (see the module doc): the ledger rewound to just before
    /// the earliest of them and replayed, the schedules rebuilt and the
    /// solutions resumed from its time. False when it cannot be (no model
    /// to extend, or the dosing is refused): rebuild it in full.
    fn extend(&mut self, patient_id: &str) -> bool {
        let Some(track) = self.patients.get_mut(patient_id) else {
            return false;
        };
        let pending = std::mem::take(&mut track.pending);
        let (Some(derived), Some(inc)) = (track.derived.as_mut(), track.inc.as_mut()) else {
            return false;
        };
        let mut params = Vec::with_capacity(track.admits.len());
        for (t, _, r, _) in &track.admits {
            match r {
                Ok((p, _)) => params.push((*t, &p.params)),
                Err(_) => return false,
            }
        }
        // Copies the model only if someone else still holds it.
        let d = Arc::make_mut(derived);
        let Some(from_ms) = inc.log.insert(&mut d.ledger, pending) else {
            return true;
        };
        // Only deliveries that reach `from_ms` (with the longest lag of any
        // route, in any parameters in force) matter from there on.
        let max_lag_ms = params
            .iter()
            .map(|(_, p)| *p)
            .chain(inc.slow.as_ref().map(|(p, _)| p))
            .flat_map(|p| Route::ALL.iter().map(|&r| lag_ms(p.route(r).lag_min)))
            .max()
            .unwrap_or(0);
        let dosing = d.ledger.dosing_reaching(from_ms, max_lag_ms);
        if inc
            .schedule
            .rebuild_from(&params, &dosing, from_ms)
            .is_err()
        {
            return false;
        }
        d.solution.resume_from(&inc.schedule, from_ms);
        match (inc.slow.as_mut(), d.slow.as_mut()) {
            (Some((slow_params, schedule)), Some(slow)) => {
                if schedule
                    .rebuild_from(&[(TimeMs::MIN, &*slow_params)], &dosing, from_ms)
                    .is_err()
                {
                    return false;
                }
                slow.resume_from(schedule, from_ms);
                true
            }
            (None, None) => true,
            _ => false,
        }
    }

    /// The slow compartment of relief over weeks, when the patient's
    /// indication asks for it and the drug file has `[relief.chronic]`:
    /// its parameters, schedule and solution.
    fn slow_solution(
        &mut self,
        d: &Derived,
    ) -> Result<Option<(crate::pk::PkParams, Schedule, Solution)>, ModelError> {
        let wanted = d
            .patient
            .indication
            .as_ref()
            .is_some_and(|i| i.relief_over_weeks);
        let Some(spec) = self.formulary.drug().relief().map(|r| r.chronic.clone()) else {
            return Ok(None);
        };
        if !wanted {
            return Ok(None);
        }
        let params = crate::relief::slow_params(&d.patient.params, &spec);
        let schedule = Schedule::build(&params, &d.ledger.dosing())?;
        let system = self.system_for(&params)?;
        let solution = Solution::new(system, &schedule);
        Ok(Some((params, schedule, solution)))
    }

    /// Why a patient's inputs could not be solved, if they could not.
    pub fn error(&self, patient_id: &str) -> Option<&ModelError> {
        self.patients.get(patient_id).and_then(|t| t.error.as_ref())
    }

    fn system_for(&mut self, params: &crate::pk::PkParams) -> Result<Arc<System>, ModelError> {
        use crate::pk::system::Dynamics;
        let key = Dynamics::key(params);
        let dynamics = match self.dynamics.get(&key) {
            Some(d) => d.clone(),
            None => {
                let d = Arc::new(Dynamics::new(params)?);
                self.dynamics.insert(key.clone(), d.clone());
                d
            }
        };
        Ok(Arc::new(System::with_dynamics(
            params.clone(),
            dynamics,
            &key,
        )?))
    }

    /// How many stored inputs the tracker holds in memory to rebuild models:
    /// admissions, doses (of admitted patients and not), device events kept
    /// (delivery events; heartbeats only while unattributed) and device
    /// associations. For memory accounting (`/metrics`, the soak harness):
    /// it grows with clinical activity only, never with attributed
    /// heartbeats or with time.
    pub fn retained_inputs(&self) -> usize {
        let patients: usize = self
            .patients
            .values()
            .map(|t| t.admits.len() + t.doses.len())
            .sum();
        let orphans: usize = self.orphan_doses.values().map(Vec::len).sum();
        let devices: usize = self
            .devices
            .values()
            .map(|d| d.events.len() + d.associations.len())
            .sum();
        patients + orphans + devices
    }

    /// How many distinct dynamics are held (for memory accounting).
    pub fn dynamics_count(&self) -> usize {
        self.dynamics.len()
    }

    /// Resolve an admission once, when it is applied: its patient (model,
    /// scaling, interactions, targets, assumptions) and its system.
    fn resolve_admit(&mut self, admit: &Admit) -> Resolved {
        let patient = self.formulary.resolve(&spec_of(admit))?;
        let system = self.system_for(&patient.params)?;
        Ok((Arc::new(patient), system))
    }

    /// The patient's model from all of their inputs; with `keep`, also what
    /// it can be extended from.
    fn rebuild(
        &self,
        patient_id: &str,
        keep: bool,
    ) -> Result<Option<(Derived, Option<Incremental>)>, ModelError> {
        let Some(track) = self.patients.get(patient_id) else {
            return Ok(None);
        };
        if track.admits.is_empty() {
            return Ok(None);
        }
        // Parameters from each admission on.
        let mut resolved: Vec<(TimeMs, &Arc<ResolvedPatient>, &Arc<System>)> =
            Vec::with_capacity(track.admits.len());
        for (t, _, r, _) in &track.admits {
            let (p, system) = r.as_ref().map_err(Clone::clone)?;
            resolved.push((*t, p, system));
        }
        // Inputs: doses, and device events this patient owns.
        let mut inputs: Vec<(i64, LedgerInput)> = track
            .doses
            .iter()
            .map(|(s, d)| (*s, LedgerInput::Dose(d.clone())))
            .collect();
        // Only devices ever associated with the patient can own its events.
        let devices = self.patient_devices.get(patient_id).into_iter().flatten();
        for (device_id, device) in devices.filter_map(|id| self.devices.get_key_value(id)) {
            for (seq, event) in &device.events {
                if device.owner(event) == Some(patient_id) {
                    inputs.push((
                        *seq,
                        LedgerInput::Device {
                            device_id: device_id.clone(),
                            event: event.clone(),
                        },
                    ));
                }
            }
            // The device moved on to another patient: what it was
            // delivering to this one ends there.
            for pair in device.associations.windows(2) {
                if let [from, to] = pair {
                    if from.patient_id == patient_id && to.patient_id != patient_id {
                        inputs.push((
                            to.seq,
                            LedgerInput::DeviceMoved {
                                device_id: device_id.clone(),
                                time_ms: to.from_ms,
                                to_patient_id: to.patient_id.clone(),
                            },
                        ));
                    }
                }
            }
        }
        // Arrival order for ties in occurrence time.
        inputs.sort_by_key(|(seq, _)| *seq);
        let (ledger, log) = if keep {
            let (log, ledger) = LedgerLog::build(inputs);
            (ledger, Some(log))
        } else {
            let inputs: Vec<LedgerInput> = inputs.into_iter().map(|(_, i)| i).collect();
            (Ledger::build(&inputs), None)
        };
        let param_segments: Vec<(TimeMs, &crate::pk::PkParams)> =
            resolved.iter().map(|(t, p, _)| (*t, &p.params)).collect();
        let schedule = Schedule::build_piecewise(&param_segments, &ledger.dosing())?;
        let systems = resolved
            .iter()
            .enumerate()
            .map(|(i, (t, _, system))| (if i == 0 { TimeMs::MIN } else { *t }, Arc::clone(system)))
            .collect();
        let solution = Solution::piecewise(systems, &schedule);
        let patient = resolved
            .last()
            .map(|(_, p, _)| Arc::clone(p))
            .ok_or(ModelError::NoAdmission)?;
        let inc = log.map(|log| Incremental {
            log,
            schedule,
            slow: None,
        });
        Ok(Some((
            Derived {
                patient,
                ledger,
                solution,
                slow: None,
            },
            inc,
        )))
    }
}

/// Checks that need the drug file (the contract parser cannot make them):
/// an admission's model must exist and its covariates and targets must
/// resolve. A failure is an `invalid_value` rejection naming the field.
pub fn check_input(formulary: &Formulary, input: &Input) -> Result<(), Rejection> {
    if let Input::Admit(admit) = input {
        if let Err(e) = formulary.resolve(&spec_of(admit)) {
            let field = match &e {
                crate::patient::PatientError::UnknownModel { .. } => "model",
                crate::patient::PatientError::UnknownIndication { .. } => "indication",
                crate::patient::PatientError::InvalidTargets { .. } => "targets",
                crate::patient::PatientError::InvalidCovariate { field, .. } => field,
                crate::patient::PatientError::InvalidParams(_)
                | crate::patient::PatientError::Derive(_) => "model",
                crate::patient::PatientError::UnknownGenotype { .. } => "cyp2b6_genotype",
            };
            return Err(Rejection {
                code: crate::contract::ErrorCode::InvalidValue,
                field: Some(field.to_owned()),
                message: e.to_string(),
            });
        }
    }
    Ok(())
}

/// The patient described by an admission.
pub fn spec_of(admit: &Admit) -> PatientSpec {
    PatientSpec {
        covariates: crate::patient::Covariates {
            weight_kg: admit.weight_kg,
            age_years: admit.age_years,
            sex: admit.sex,
            height_cm: admit.height_cm,
        },
        model: admit.model.clone(),
        setting: admit.setting,
        comedications: admit.comedications.clone(),
        targets: admit.targets.clone(),
        indication: admit.indication.clone(),
        cyp2b6_genotype: admit.cyp2b6_genotype.clone(),
    }
}

mod release;
pub use release::{device_spans, released_at_start, AssociationRow, DeviceSpans, LifecycleRow};
mod state;
pub use state::{ActiveInput, StateForecast, StateMessage, StateRelief, StateReliefOverWeeks};

#[cfg(test)]
mod tests;
