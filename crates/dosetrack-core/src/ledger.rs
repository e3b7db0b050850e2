//! The per-patient dose ledger: from contract inputs to engine dosing.
//!
//! The ledger owns the meaning of delivery events: which manual doses,
//! pump segments and patches a patient has had, when each started and ended,
//! and which are still running. It is a fold over the patient's inputs in
//! occurrence order (ties keep arrival order): [`Ledger::build`] folds them
//! all; [`LedgerLog`] keeps how to undo each step, so an input later than
//! the rest is one more step and a late one rewinds to just before it and
//! replays from there — the same fold, so the same ledger, never a patch.
//!
//! Rules, per device:
//!
//! * `infusion_started` opens a segment; `infusion_rate_changed` closes the
//!   open segment and opens one at the new rate; `infusion_stopped` closes
//!   it. A rate change with no open segment opens one (and notes it); a start
//!   while a segment is open replaces it (and notes it).
//! * `bolus_delivered` is an IV bolus.
//! * `patch_applied` opens a patch that ends after `wear_h` unless
//!   `patch_removed` or `patch_detached` ends it earlier; a new patch on the
//!   same device replaces the old one (noted).
//! * Heartbeats and alarms do not change delivery: a pump that stops on an
//!   alarm says so with `infusion_stopped`. Alarms are kept as
//!   [`DeviceAlarm`] intervals (`alarm` opens one per code, `alarm_cleared`
//!   closes it); `patch_detached` also opens one (code `patch_detached`),
//!   closed by the next `patch_applied` on that device.
//!
//! An open segment has no end: the forecast assumes a running pump keeps
//! running, as the contract's state message says.

use crate::contract::{DeviceEvent, DeviceEventKind, Dose, DoseKind};
use crate::pk::Dosing;
use crate::vocab::{format_rfc3339, Route, TimeMs};
use serde::Serialize;
use std::collections::BTreeMap;

/// One input to a patient's ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerInput {
    /// A manually given dose (the medication record).
    Dose(Dose),
    /// An event from a device delivering to this patient.
    Device {
        device_id: String,
        event: DeviceEvent,
    },
    /// The device was associated with another patient from `time_ms` on
    /// (an `infusion_started` or `patch_applied` naming them): whatever it
    /// was still delivering to this patient ends there, with a note.
    DeviceMoved {
        device_id: String,
        time_ms: TimeMs,
        to_patient_id: String,
    },
}

impl LedgerInput {
    /// Occurrence time.
    pub fn time_ms(&self) -> TimeMs {
        match self {
            LedgerInput::Dose(d) => d.time_ms,
            LedgerInput::Device { event, .. } => event.time_ms,
            LedgerInput::DeviceMoved { time_ms, .. } => *time_ms,
        }
    }

    /// Where the input came from: `manual` or `devices/{id}`.
    pub fn source(&self) -> String {
        match self {
            LedgerInput::Dose(_) => "manual".to_owned(),
            LedgerInput::Device { device_id, .. } | LedgerInput::DeviceMoved { device_id, .. } => {
                format!("devices/{device_id}")
            }
        }
    }

    /// The input's own id.
    pub fn id(&self) -> &str {
        match self {
            LedgerInput::Dose(d) => &d.id,
            LedgerInput::Device { event, .. } => &event.id,
            // Not an input of this patient's: the move is the other's.
            LedgerInput::DeviceMoved { .. } => "",
        }
    }
}

/// A delivery the ledger derived, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// `manual` or `devices/{id}`.
    pub source: String,
    /// Id of the input that started it.
    pub input_id: String,
    pub route: Route,
    /// Start (or the instant, for a single amount).
    pub start_ms: TimeMs,
    /// End, where known: an infusion's end, a patch's removal or planned
    /// end. `None` for a running pump segment and for single amounts.
    pub end_ms: Option<TimeMs>,
    /// For single amounts.
    pub amount_mg: Option<f64>,
    /// For infusions (mg/h) and patches (release mg/h).
    pub rate_mg_per_h: Option<f64>,
    /// A patch's planned end (application + `wear_h`); `end_ms` is earlier
    /// when it was removed, detached or replaced before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_end_ms: Option<TimeMs>,
}

impl Delivery {
    fn to_dosing(&self) -> Dosing {
        match (self.route, self.amount_mg, self.rate_mg_per_h) {
            (Route::Transdermal, _, rate) => Dosing::Patch {
                start_ms: self.start_ms,
                end_ms: self.end_ms.unwrap_or(self.start_ms),
                release_rate_mg_per_h: rate.unwrap_or(0.0),
            },
            (Route::IvInfusion, _, rate) => Dosing::Infusion {
                start_ms: self.start_ms,
                end_ms: self.end_ms,
                rate_mg_per_h: rate.unwrap_or(0.0),
            },
            (route, amount, _) => Dosing::Bolus {
                at_ms: self.start_ms,
                route,
                amount_mg: amount.unwrap_or(0.0),
            },
        }
    }

    /// True while a zero-order delivery runs at `t_ms`.
    pub fn is_running_at(&self, t_ms: TimeMs) -> bool {
        self.rate_mg_per_h.is_some()
            && self.start_ms <= t_ms
            && self.end_ms.is_none_or(|end| t_ms < end)
    }

    /// A short label for charts and logs: `IN 50 mg`, `IV 20 mg/h`.
    pub fn label(&self) -> String {
        let route = match self.route {
            Route::IvBolus => "IV bolus",
            Route::IvInfusion => "IV",
            Route::Im => "IM",
            Route::Sc => "SC",
            Route::Intranasal => "IN",
            Route::Oral => "PO",
            Route::Sublingual => "SL",
            Route::Rectal => "PR",
            Route::Transdermal => "patch",
        };
        match (self.amount_mg, self.rate_mg_per_h) {
            (Some(a), _) => format!("{route} {} mg", trim(a)),
            (_, Some(r)) => format!("{route} {} mg/h", trim(r)),
            _ => route.to_owned(),
        }
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Something the ledger had to interpret; shown to people, never silent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerNote {
    pub time_ms: TimeMs,
    pub source: String,
    pub input_id: String,
    pub message: String,
}

/// A device alarm (or a patch detachment) and how long it lasted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceAlarm {
    /// `devices/{id}`.
    pub source: String,
    pub device_id: String,
    /// The contract's alarm code, or `patch_detached`.
    pub code: String,
    pub message: Option<String>,
    /// Id of the input that started it.
    pub input_id: String,
    pub start_ms: TimeMs,
    /// When `alarm_cleared` (or, for a detachment, a new patch) ended it.
    pub end_ms: Option<TimeMs>,
}

impl DeviceAlarm {
    /// True while the alarm is on at `t_ms`.
    pub fn is_active_at(&self, t_ms: TimeMs) -> bool {
        self.start_ms <= t_ms && self.end_ms.is_none_or(|end| t_ms < end)
    }
}

/// A patient's deliveries, derived from their inputs.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Ledger {
    pub deliveries: Vec<Delivery>,
    pub notes: Vec<LedgerNote>,
    /// Device alarms, in occurrence order.
    pub alarms: Vec<DeviceAlarm>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct DeviceState {
    /// Index into `deliveries` of the open pump segment.
    open_infusion: Option<usize>,
    /// Index into `deliveries` of the patch on the skin.
    open_patch: Option<usize>,
}

impl Ledger {
    /// Build the ledger from a patient's inputs, in any order.
    pub fn build(inputs: &[LedgerInput]) -> Ledger {
        let mut order: Vec<&LedgerInput> = inputs.iter().collect();
        order.sort_by_key(|i| i.time_ms()); // stable: ties keep arrival order
        let mut ledger = Ledger::default();
        let mut devices = Devices::default();
        let mut journal = Vec::new();
        for input in order {
            ledger.step(input, &mut devices, &mut journal);
            journal.clear();
        }
        ledger
    }

    /// Apply one input (the next in occurrence order) to the ledger; every
    /// end changed on an entry that existed before is written to `journal`
    /// (old value first), and the device state the input changed is
    /// returned (index and state before), so the step can be undone.
    fn step(
        &mut self,
        input: &LedgerInput,
        devices: &mut Devices,
        journal: &mut Vec<Change>,
    ) -> Option<(usize, DeviceState)> {
        match input {
            LedgerInput::Dose(dose) => {
                self.manual(dose);
                None
            }
            LedgerInput::Device { device_id, event } => {
                let (k, state) = devices.get(device_id);
                let before = *state;
                self.device(input, state, event, journal);
                self.device_alarm(device_id, &input.source(), event, journal);
                Some((k, before))
            }
            LedgerInput::DeviceMoved {
                device_id,
                time_ms,
                to_patient_id,
            } => {
                let (k, state) = devices.get(device_id);
                let before = *state;
                self.moved(&input.source(), state, *time_ms, to_patient_id, journal);
                Some((k, before))
            }
        }
    }

    /// The engine's dosing for these deliveries.
    pub fn dosing(&self) -> Vec<Dosing> {
        self.deliveries.iter().map(Delivery::to_dosing).collect()
    }

    /// The engine's dosing of the deliveries that may reach `from_ms` or
    /// later when given with a lag of at most `max_lag_ms`, in order: the
    /// dosing [`crate::pk::Schedule::rebuild_from`] needs.
    pub fn dosing_reaching(&self, from_ms: TimeMs, max_lag_ms: TimeMs) -> Vec<Dosing> {
        let reaches = |t: TimeMs| t.saturating_add(max_lag_ms) >= from_ms;
        self.deliveries
            .iter()
            .filter(|d| match d.route {
                // As `to_dosing` reads them.
                Route::Transdermal => reaches(d.end_ms.unwrap_or(d.start_ms)),
                Route::IvInfusion => d.end_ms.is_none_or(reaches),
                _ => reaches(d.start_ms),
            })
            .map(Delivery::to_dosing)
            .collect()
    }

    /// The engine's dosing as if every delivery from `source` running at
    /// `stop_ms` had stopped then (what the model predicts if a stopped
    /// device does not resume).
    pub fn dosing_stopped(&self, source: &str, stop_ms: TimeMs) -> Vec<Dosing> {
        self.deliveries
            .iter()
            .filter(|d| !(d.source == source && d.start_ms >= stop_ms && d.rate_mg_per_h.is_some()))
            .map(|d| {
                if d.source == source && d.is_running_at(stop_ms) {
                    Delivery {
                        end_ms: Some(stop_ms),
                        ..d.clone()
                    }
                    .to_dosing()
                } else {
                    d.to_dosing()
                }
            })
            .collect()
    }

    /// Device alarms on at `t_ms`.
    pub fn alarms_at(&self, t_ms: TimeMs) -> impl Iterator<Item = &DeviceAlarm> {
        self.alarms.iter().filter(move |a| a.is_active_at(t_ms))
    }

    fn open_alarm(
        &mut self,
        device_id: &str,
        source: &str,
        event: &DeviceEvent,
        code: String,
        message: Option<String>,
    ) {
        let open = self
            .alarms
            .iter()
            .any(|a| a.device_id == device_id && a.code == code && a.end_ms.is_none());
        if !open {
            self.alarms.push(DeviceAlarm {
                source: source.to_owned(),
                device_id: device_id.to_owned(),
                code,
                message,
                input_id: event.id.clone(),
                start_ms: event.time_ms,
                end_ms: None,
            });
        }
    }

    fn close_alarm(
        &mut self,
        device_id: &str,
        code: &str,
        t_ms: TimeMs,
        journal: &mut Vec<Change>,
    ) {
        for (i, a) in self.alarms.iter_mut().enumerate() {
            if a.device_id == device_id && a.code == code && a.end_ms.is_none() {
                journal.push(Change::AlarmEnd(i, a.end_ms));
                a.end_ms = Some(t_ms);
            }
        }
    }

    /// Deliveries running at `t_ms` (infusions and patches).
    pub fn running_at(&self, t_ms: TimeMs) -> impl Iterator<Item = &Delivery> {
        self.deliveries
            .iter()
            .filter(move |d| d.is_running_at(t_ms))
    }

    fn device_alarm(
        &mut self,
        device_id: &str,
        source: &str,
        event: &DeviceEvent,
        journal: &mut Vec<Change>,
    ) {
        match &event.kind {
            DeviceEventKind::Alarm { code, message } => self.open_alarm(
                device_id,
                source,
                event,
                code.as_str().to_owned(),
                message.clone(),
            ),
            DeviceEventKind::AlarmCleared { code } => {
                self.close_alarm(device_id, code.as_str(), event.time_ms, journal)
            }
            DeviceEventKind::PatchDetached => {
                self.open_alarm(device_id, source, event, "patch_detached".to_owned(), None)
            }
            DeviceEventKind::PatchApplied { .. } => {
                self.close_alarm(device_id, "patch_detached", event.time_ms, journal)
            }
            _ => {}
        }
    }

    fn manual(&mut self, dose: &Dose) {
        let base = Delivery {
            source: "manual".to_owned(),
            input_id: dose.id.clone(),
            route: dose.kind.route(),
            start_ms: dose.time_ms,
            end_ms: None,
            amount_mg: None,
            rate_mg_per_h: None,
            planned_end_ms: None,
        };
        let delivery = match dose.kind {
            DoseKind::Amount { amount_mg, .. } => Delivery {
                amount_mg: Some(amount_mg),
                ..base
            },
            DoseKind::Infusion {
                rate_mg_per_h,
                duration_min,
            } => Delivery {
                end_ms: Some(dose.time_ms + minutes_ms(duration_min)),
                rate_mg_per_h: Some(rate_mg_per_h),
                ..base
            },
            DoseKind::Patch {
                release_rate_mg_per_h,
                wear_h,
            } => Delivery {
                end_ms: Some(dose.time_ms + minutes_ms(wear_h * 60.0)),
                planned_end_ms: Some(dose.time_ms + minutes_ms(wear_h * 60.0)),
                rate_mg_per_h: Some(release_rate_mg_per_h),
                ..base
            },
        };
        self.deliveries.push(delivery);
    }

    fn device(
        &mut self,
        input: &LedgerInput,
        state: &mut DeviceState,
        event: &DeviceEvent,
        journal: &mut Vec<Change>,
    ) {
        let t = event.time_ms;
        let source = input.source();
        let note = |message: String| LedgerNote {
            time_ms: t,
            source: source.clone(),
            input_id: event.id.clone(),
            message,
        };
        let start = |route: Route, rate: f64, end: Option<TimeMs>| Delivery {
            source: source.clone(),
            input_id: event.id.clone(),
            route,
            start_ms: t,
            end_ms: end,
            amount_mg: None,
            rate_mg_per_h: Some(rate),
            planned_end_ms: if route == Route::Transdermal {
                end
            } else {
                None
            },
        };
        match &event.kind {
            DeviceEventKind::InfusionStarted(rate) => {
                if let Some(i) = state.open_infusion.take() {
                    self.close(i, t, journal);
                    self.notes.push(note(format!(
                        "infusion_started while a segment was running since {}: that segment ends here",
                        format_rfc3339(self.deliveries[i].start_ms)
                    )));
                }
                self.deliveries
                    .push(start(Route::IvInfusion, rate.rate_mg_per_h, None));
                state.open_infusion = Some(self.deliveries.len() - 1);
            }
            DeviceEventKind::InfusionRateChanged(rate) => {
                match state.open_infusion.take() {
                    Some(i) => self.close(i, t, journal),
                    None => self.notes.push(note(
                        "infusion_rate_changed with no running segment: taken as a start"
                            .to_owned(),
                    )),
                }
                self.deliveries
                    .push(start(Route::IvInfusion, rate.rate_mg_per_h, None));
                state.open_infusion = Some(self.deliveries.len() - 1);
            }
            DeviceEventKind::InfusionStopped { .. } => match state.open_infusion.take() {
                Some(i) => self.close(i, t, journal),
                None => self.notes.push(note(
                    "infusion_stopped with no running segment: nothing to stop".to_owned(),
                )),
            },
            DeviceEventKind::BolusDelivered { amount_mg, .. } => {
                self.deliveries.push(Delivery {
                    source: source.clone(),
                    input_id: event.id.clone(),
                    route: Route::IvBolus,
                    start_ms: t,
                    end_ms: None,
                    amount_mg: Some(*amount_mg),
                    rate_mg_per_h: None,
                    planned_end_ms: None,
                });
            }
            DeviceEventKind::PatchApplied {
                release_rate_mg_per_h,
                wear_h,
                ..
            } => {
                if let Some(i) = state.open_patch.take() {
                    if self.deliveries[i].end_ms.is_none_or(|end| end > t) {
                        self.close(i, t, journal);
                        self.notes.push(note(
                            "patch_applied while a patch was on: the earlier patch ends here"
                                .to_owned(),
                        ));
                    }
                }
                let planned_end = t + minutes_ms(wear_h * 60.0);
                self.deliveries.push(start(
                    Route::Transdermal,
                    *release_rate_mg_per_h,
                    Some(planned_end),
                ));
                state.open_patch = Some(self.deliveries.len() - 1);
            }
            DeviceEventKind::PatchRemoved | DeviceEventKind::PatchDetached => {
                match state.open_patch.take() {
                    Some(i) if self.deliveries[i].end_ms.is_none_or(|end| end > t) => {
                        self.close(i, t, journal)
                    }
                    Some(_) => {}
                    None => self.notes.push(note(format!(
                        "{} with no patch on: nothing to stop",
                        event.kind.kind_name()
                    ))),
                }
            }
            DeviceEventKind::Heartbeat { .. }
            | DeviceEventKind::Alarm { .. }
            | DeviceEventKind::AlarmCleared { .. } => {}
        }
    }

    /// The device now delivers to another patient: its open segment and its
    /// patch (if still on) end at `t`, each with a note.
    fn moved(
        &mut self,
        source: &str,
        state: &mut DeviceState,
        t: TimeMs,
        to: &str,
        journal: &mut Vec<Change>,
    ) {
        let open = [state.open_infusion.take(), state.open_patch.take()];
        for i in open.into_iter().flatten() {
            let Some(d) = self.deliveries.get(i) else {
                continue;
            };
            if d.end_ms.is_some_and(|end| end <= t) {
                continue;
            }
            let message = format!(
                "the device was associated with patient {to} from here: its {} since {} ends here",
                d.label(),
                format_rfc3339(d.start_ms)
            );
            let input_id = d.input_id.clone();
            self.close(i, t, journal);
            self.notes.push(LedgerNote {
                time_ms: t,
                source: source.to_owned(),
                input_id,
                message,
            });
        }
    }

    fn close(&mut self, index: usize, t: TimeMs, journal: &mut Vec<Change>) {
        if let Some(d) = self.deliveries.get_mut(index) {
            journal.push(Change::DeliveryEnd(index, d.end_ms));
            d.end_ms = Some(match d.end_ms {
                Some(end) => end.min(t),
                None => t,
            });
        }
    }
}

/// A change a ledger step made to an entry that existed before it: the
/// index and the value before.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    DeliveryEnd(usize, Option<TimeMs>),
    AlarmEnd(usize, Option<TimeMs>),
}

/// Per-device state while building, by device id (indices are stable: a
/// device, once seen, keeps its slot; an unused slot is the default state,
/// which is what an unseen device has).
#[derive(Debug, Clone, Default)]
struct Devices {
    index: BTreeMap<String, usize>,
    states: Vec<DeviceState>,
}

impl Devices {
    fn get(&mut self, device_id: &str) -> (usize, &mut DeviceState) {
        let k = match self.index.get(device_id) {
            Some(&k) => k,
            None => {
                self.index.insert(device_id.to_owned(), self.states.len());
                self.states.push(DeviceState::default());
                self.states.len() - 1
            }
        };
        (k, &mut self.states[k])
    }
}

/// How to undo one ledger step.
#[derive(Debug, Clone)]
struct Undo {
    deliveries: usize,
    notes: usize,
    alarms: usize,
    device: Option<(usize, DeviceState)>,
    /// Ends changed on earlier entries, in the order changed.
    changes: Vec<Change>,
}

/// A ledger that can be extended and rewound: the patient's inputs in
/// occurrence order (ties: arrival order, `seq`), and how to undo each
/// one's step. Appending an input later than every other is one step;
/// an input that falls earlier rewinds the ledger to just before it,
/// inserts it and replays those after it. Either way the ledger equals
/// [`Ledger::build`] of the same inputs, exactly: it is the same fold,
/// resumed from the same intermediate state.
#[derive(Debug, Clone, Default)]
pub struct LedgerLog {
    /// `(time, seq)` of each input, increasing.
    keys: Vec<(TimeMs, i64)>,
    inputs: Vec<LedgerInput>,
    undo: Vec<Undo>,
    devices: Devices,
}

impl LedgerLog {
    /// The log and ledger of `inputs`, given as `(seq, input)` in any order.
    pub fn build(mut inputs: Vec<(i64, LedgerInput)>) -> (LedgerLog, Ledger) {
        // As `Ledger::build` orders them: arrival order, then (stably)
        // occurrence time.
        inputs.sort_by_key(|(seq, _)| *seq);
        inputs.sort_by_key(|(_, i)| i.time_ms());
        let mut log = LedgerLog {
            keys: inputs.iter().map(|(s, i)| (i.time_ms(), *s)).collect(),
            inputs: inputs.into_iter().map(|(_, i)| i).collect(),
            undo: Vec::new(),
            devices: Devices::default(),
        };
        let mut ledger = Ledger::default();
        log.replay(&mut ledger, 0);
        (log, ledger)
    }

    /// How many inputs the log holds.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// True when the log holds no input.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Occurrence time of the latest input.
    pub fn last_time_ms(&self) -> Option<TimeMs> {
        self.keys.last().map(|k| k.0)
    }

    /// Add `inputs` (`(seq, input)`, any order) to `ledger`, which must be
    /// the ledger this log built. Returns the earliest occurrence time
    /// among them: the ledger is unchanged before it (an entry that
    /// started before it may have a new end, at or after it). `None`: no
    /// input given.
    pub fn insert(
        &mut self,
        ledger: &mut Ledger,
        mut inputs: Vec<(i64, LedgerInput)>,
    ) -> Option<TimeMs> {
        inputs.sort_by_key(|(s, i)| (i.time_ms(), *s));
        let first = inputs.first().map(|(s, i)| (i.time_ms(), *s))?;
        let pos = self.keys.partition_point(|k| *k < first);
        self.rewind(ledger, pos);
        for (seq, input) in inputs {
            let key = (input.time_ms(), seq);
            let at = pos + self.keys[pos..].partition_point(|k| *k <= key);
            self.keys.insert(at, key);
            self.inputs.insert(at, input);
        }
        self.replay(ledger, pos);
        Some(first.0)
    }

    /// Undo the steps of inputs `pos..` (the latest first).
    fn rewind(&mut self, ledger: &mut Ledger, pos: usize) {
        while self.undo.len() > pos {
            let Some(u) = self.undo.pop() else { break };
            for change in u.changes.iter().rev() {
                match *change {
                    Change::DeliveryEnd(i, end) => {
                        if let Some(d) = ledger.deliveries.get_mut(i) {
                            d.end_ms = end;
                        }
                    }
                    Change::AlarmEnd(i, end) => {
                        if let Some(a) = ledger.alarms.get_mut(i) {
                            a.end_ms = end;
                        }
                    }
                }
            }
            ledger.deliveries.truncate(u.deliveries);
            ledger.notes.truncate(u.notes);
            ledger.alarms.truncate(u.alarms);
            if let Some((k, state)) = u.device {
                if let Some(s) = self.devices.states.get_mut(k) {
                    *s = state;
                }
            }
        }
    }

    /// Apply the steps of inputs `from..` (the ledger holds those before).
    fn replay(&mut self, ledger: &mut Ledger, from: usize) {
        for input in self.inputs.iter().skip(from) {
            let (deliveries, notes, alarms) = (
                ledger.deliveries.len(),
                ledger.notes.len(),
                ledger.alarms.len(),
            );
            let mut changes = Vec::new();
            let device = ledger.step(input, &mut self.devices, &mut changes);
            // Changes to entries this step added need no undo: truncating
            // removes them.
            changes.retain(|c| match *c {
                Change::DeliveryEnd(i, _) => i < deliveries,
                Change::AlarmEnd(i, _) => i < alarms,
            });
            self.undo.push(Undo {
                deliveries,
                notes,
                alarms,
                device,
                changes,
            });
        }
    }
}

/// Minutes as whole milliseconds (nearest).
fn minutes_ms(minutes: f64) -> TimeMs {
    (minutes * 60_000.0).round() as TimeMs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AlarmCode, PumpRate, StopReason};

    fn dev(device: &str, id: &str, t: TimeMs, kind: DeviceEventKind) -> LedgerInput {
        LedgerInput::Device {
            device_id: device.to_owned(),
            event: DeviceEvent {
                id: id.to_owned(),
                time_ms: t,
                patient_id: Some("P-1".to_owned()),
                kind,
            },
        }
    }

    fn rate(mg_per_h: f64) -> PumpRate {
        PumpRate {
            rate_mg_per_h: mg_per_h,
            rate_ml_per_h: None,
            concentration_mg_per_ml: None,
        }
    }

    #[test]
    fn pump_segments_follow_start_change_stop() {
        let l = Ledger::build(&[
            dev(
                "pump-1",
                "a",
                0,
                DeviceEventKind::InfusionStarted(rate(20.0)),
            ),
            dev(
                "pump-1",
                "b",
                3_600_000,
                DeviceEventKind::InfusionRateChanged(rate(10.0)),
            ),
            dev(
                "pump-1",
                "c",
                7_200_000,
                DeviceEventKind::InfusionStopped {
                    reason: Some(StopReason::Clinician),
                },
            ),
        ]);
        assert_eq!(l.notes, vec![]);
        assert_eq!(
            l.dosing(),
            vec![
                Dosing::Infusion {
                    start_ms: 0,
                    end_ms: Some(3_600_000),
                    rate_mg_per_h: 20.0
                },
                Dosing::Infusion {
                    start_ms: 3_600_000,
                    end_ms: Some(7_200_000),
                    rate_mg_per_h: 10.0
                },
            ]
        );
    }

    #[test]
    fn out_of_order_arrival_gives_the_same_ledger() {
        let inputs = vec![
            dev(
                "pump-1",
                "a",
                0,
                DeviceEventKind::InfusionStarted(rate(20.0)),
            ),
            dev(
                "pump-1",
                "c",
                7_200_000,
                DeviceEventKind::InfusionStopped { reason: None },
            ),
            dev(
                "pump-1",
                "b",
                3_600_000,
                DeviceEventKind::InfusionRateChanged(rate(10.0)),
            ),
        ];
        let mut sorted = inputs.clone();
        sorted.sort_by_key(LedgerInput::time_ms);
        assert_eq!(Ledger::build(&inputs), Ledger::build(&sorted));
    }

    #[test]
    fn running_pump_has_no_end_and_is_running() {
        let l = Ledger::build(&[
            dev(
                "pump-1",
                "a",
                0,
                DeviceEventKind::InfusionStarted(rate(20.0)),
            ),
            dev(
                "pump-1",
                "h",
                60_000,
                DeviceEventKind::Alarm {
                    code: AlarmCode::BatteryLow,
                    message: None,
                },
            ),
        ]);
        assert_eq!(l.deliveries[0].end_ms, None);
        assert_eq!(l.running_at(10 * 3_600_000).count(), 1);
    }

    #[test]
    fn patches_end_at_removal_or_planned_end() {
        let applied = |id: &str, t| {
            dev(
                "patch-1",
                id,
                t,
                DeviceEventKind::PatchApplied {
                    release_rate_mg_per_h: 1.04,
                    wear_h: 24.0,
                    site: None,
                },
            )
        };
        let l = Ledger::build(&[
            applied("a", 0),
            dev("patch-1", "r", 3_600_000, DeviceEventKind::PatchDetached),
        ]);
        assert_eq!(l.deliveries[0].end_ms, Some(3_600_000));
        let l = Ledger::build(&[applied("a", 0)]);
        assert_eq!(l.deliveries[0].end_ms, Some(24 * 3_600_000));
        assert!(!l.deliveries[0].is_running_at(24 * 3_600_000));
        // Removal after the planned end changes nothing.
        let l = Ledger::build(&[
            applied("a", 0),
            dev(
                "patch-1",
                "r",
                30 * 3_600_000,
                DeviceEventKind::PatchRemoved,
            ),
        ]);
        assert_eq!(l.deliveries[0].end_ms, Some(24 * 3_600_000));
        // A second patch replaces the first.
        let l = Ledger::build(&[applied("a", 0), applied("b", 3_600_000)]);
        assert_eq!(l.deliveries[0].end_ms, Some(3_600_000));
        assert_eq!(l.notes.len(), 1);
    }

    #[test]
    fn odd_sequences_are_noted_not_dropped() {
        let l = Ledger::build(&[
            dev(
                "pump-1",
                "b",
                0,
                DeviceEventKind::InfusionRateChanged(rate(5.0)),
            ),
            dev(
                "pump-2",
                "x",
                0,
                DeviceEventKind::InfusionStopped { reason: None },
            ),
            dev("patch-1", "y", 0, DeviceEventKind::PatchRemoved),
        ]);
        assert_eq!(l.deliveries.len(), 1);
        assert_eq!(l.notes.len(), 3);
        assert!(l.notes[0].message.contains("taken as a start"));
    }

    #[test]
    fn manual_doses_map_to_their_routes() {
        let dose = |id: &str, kind| {
            LedgerInput::Dose(Dose {
                id: id.to_owned(),
                time_ms: 0,
                kind,
            })
        };
        let l = Ledger::build(&[
            dose(
                "m1",
                DoseKind::Amount {
                    route: Route::Intranasal,
                    amount_mg: 50.0,
                },
            ),
            dose(
                "m2",
                DoseKind::Infusion {
                    rate_mg_per_h: 20.0,
                    duration_min: 120.0,
                },
            ),
            dose(
                "m3",
                DoseKind::Patch {
                    release_rate_mg_per_h: 1.04,
                    wear_h: 24.0,
                },
            ),
        ]);
        assert_eq!(l.deliveries[0].label(), "IN 50 mg");
        assert_eq!(l.deliveries[1].end_ms, Some(7_200_000));
        assert_eq!(l.deliveries[2].end_ms, Some(86_400_000));
        assert_eq!(l.deliveries[2].label(), "patch 1.04 mg/h");
    }
}
