//! Releasing ended stays from the tracker's memory, and bringing a released
//! patient back (their stored inputs replayed) when a late input or a
//! readmission concerns them.

use super::*;

impl Tracker {
    /// Patients whose last stay ended at or before `before_ms`, still held
    /// in memory: what [`Tracker::release`] may drop.
    pub fn releasable(&self, before_ms: TimeMs) -> Vec<String> {
        self.patients
            .iter()
            .filter(|(_, t)| last_stay_ended_by(&t.stays, before_ms))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Drop a patient from memory: their admissions, discharges, doses,
    /// model, refused events and the device events they own (devices keep
    /// their associations, which attribute later events). Their inputs
    /// stay in the store; [`Tracker::reload`] brings them back. Returns
    /// false if the patient was not held.
    pub fn release(&mut self, patient_id: &str) -> bool {
        if self.patients.remove(patient_id).is_none() {
            return false;
        }
        self.refused.remove(patient_id);
        self.drop_events_owned_by(|owner| owner == patient_id);
        self.released.insert(patient_id.to_owned());
        true
    }

    /// Drop the held device events whose owner `owned` picks, from every
    /// device: an alarm naming a patient may come from a device never
    /// associated with them (an alarm does not associate).
    fn drop_events_owned_by(&mut self, owned: impl Fn(&str) -> bool) {
        for device in self.devices.values_mut() {
            let DeviceTrack {
                associations,
                events,
                ..
            } = device;
            let held = events.len();
            events.retain(|(_, e)| owner_of(associations, e).is_none_or(|p| !owned(p)));
            if events.len() != held {
                events.shrink_to_fit();
            }
        }
    }

    /// How many patients are released (dropped from memory after their
    /// last stay ended).
    pub fn released_count(&self) -> usize {
        self.released.len()
    }

    /// Is the patient released (their inputs only in the store)?
    pub fn is_released(&self, patient_id: &str) -> bool {
        self.released.contains(patient_id)
    }

    /// The released patients `input` concerns, whose stored inputs must be
    /// given to [`Tracker::reload`] before it is applied: the patient an
    /// admission, discharge or dose names; for a device event (not a
    /// heartbeat, which changes no model), the patient it names and the
    /// patient its device is associated with at its time.
    pub fn needs_reload(&self, input: &TrackedInput) -> Vec<String> {
        if self.released.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        match (&input.topic, &input.input) {
            (
                InputTopic::Admit { patient_id }
                | InputTopic::Discharge { patient_id }
                | InputTopic::Dose { patient_id },
                _,
            ) => out.push(patient_id.clone()),
            // Heartbeats never bring a patient back.
            (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e))
                if !matches!(e.kind, crate::contract::DeviceEventKind::Heartbeat { .. }) =>
            {
                out.extend(e.patient_id.clone());
                if let Some(d) = self.devices.get(device_id) {
                    out.extend(d.patient_at(e.time_ms).map(str::to_owned));
                }
            }
            _ => {}
        }
        out.sort();
        out.dedup();
        out.retain(|p| self.released.contains(p));
        out
    }

    /// Bring a released patient back from their stored `inputs` (those
    /// [`Tracker::needs_reload`] asked for: every stored input of theirs
    /// applied before, any order). Admissions, discharges and doses are
    /// applied again; device events are put back with their device (whose
    /// associations were kept). The result equals a full replay.
    pub fn reload(&mut self, patient_id: &str, mut inputs: Vec<TrackedInput>) {
        self.released.remove(patient_id);
        inputs.sort_by_key(|i| i.seq);
        for i in inputs {
            match (&i.topic, &i.input) {
                (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e)) => {
                    if matches!(e.kind, crate::contract::DeviceEventKind::Heartbeat { .. }) {
                        continue;
                    }
                    let device = self.devices.entry(device_id.clone()).or_default();
                    if let Err(pos) = device.events.binary_search_by_key(&i.seq, |(s, _)| *s) {
                        device.events.insert(pos, (i.seq, e.clone()));
                    }
                }
                (
                    InputTopic::Admit { patient_id: p }
                    | InputTopic::Discharge { patient_id: p }
                    | InputTopic::Dose { patient_id: p },
                    _,
                ) if p == patient_id => {
                    self.apply(i);
                }
                _ => {}
            }
        }
        if let Some(track) = self.patients.get_mut(patient_id) {
            track.dirty = true;
        }
    }
}

/// Did the last of `stays` end at or before `before_ms`? The release rule,
/// for [`Tracker::releasable`] and [`released_at_start`] alike.
fn last_stay_ended_by(stays: &[Stay], before_ms: TimeMs) -> bool {
    stays
        .last()
        .and_then(|s| s.end_ms)
        .is_some_and(|e| e <= before_ms)
}

/// A patient's admission or discharge as a start reads it from the
/// store's lifecycle index ([`released_at_start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRow {
    pub patient_id: String,
    /// `true` for an admission, `false` for a discharge.
    pub admit: bool,
    pub time_ms: TimeMs,
    pub seq: i64,
}

/// The patients a full replay followed by [`Tracker::release`] of
/// everyone [`Tracker::releasable`] at `before_ms` would release: those
/// whose last stay ([`stays_of`], the same rule) ended at or before it.
/// A start does not read their inputs ([`Tracker::restore_released`]).
pub fn released_at_start(lifecycle: &[LifecycleRow], before_ms: TimeMs) -> BTreeSet<String> {
    type Events = (Vec<(TimeMs, i64)>, Vec<(TimeMs, i64)>);
    let mut by_patient: BTreeMap<&str, Events> = BTreeMap::new();
    for row in lifecycle {
        let (admits, discharges) = by_patient.entry(&row.patient_id).or_default();
        if row.admit {
            admits.push((row.time_ms, row.seq));
        } else {
            discharges.push((row.time_ms, row.seq));
        }
    }
    by_patient
        .into_iter()
        .filter(|(_, (admits, discharges))| {
            last_stay_ended_by(&stays_of(admits, discharges), before_ms)
        })
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// A device association as the store's projection holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationRow {
    pub patient_id: String,
    pub from_ms: TimeMs,
    /// The input that made it.
    pub seq: i64,
}

/// Which of one device's events without a patient in their payload a
/// start must read ([`device_spans`]); the events that name a patient
/// are read with that patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpans {
    /// Events before this time have no patient (held, heartbeats
    /// included); `None`: the device was never associated, every such
    /// event of it has none.
    pub unowned_before_ms: Option<TimeMs>,
    /// `[from, to)` (`to` `None`: open) where the device's patient is not
    /// released: its events there other than heartbeats (attributed
    /// heartbeats are not held).
    pub kept: Vec<(TimeMs, Option<TimeMs>)>,
}

/// [`DeviceSpans`] for a device with `associations` (any order) after the
/// patients in `released` are released.
pub fn device_spans(associations: &[AssociationRow], released: &BTreeSet<String>) -> DeviceSpans {
    let mut by_time: Vec<&AssociationRow> = associations.iter().collect();
    by_time.sort_by_key(|a| (a.from_ms, a.seq));
    let mut kept: Vec<(TimeMs, Option<TimeMs>)> = Vec::new();
    for (i, a) in by_time.iter().enumerate() {
        let to = by_time.get(i + 1).map(|b| b.from_ms);
        // Empty when the next association starts at the same time (it
        // wins the tie by arrival).
        if to == Some(a.from_ms) || released.contains(&a.patient_id) {
            continue;
        }
        match kept.last_mut() {
            Some((_, end)) if *end == Some(a.from_ms) => *end = to,
            _ => kept.push((a.from_ms, to)),
        }
    }
    DeviceSpans {
        unowned_before_ms: by_time.first().map(|a| a.from_ms),
        kept,
    }
}

impl Tracker {
    /// At start, after the inputs planned from [`released_at_start`] and
    /// [`device_spans`] were applied: `ids` are released as if they had
    /// been held and dropped ([`Tracker::release`]) — the events they own
    /// (read to put their devices' associations back) are dropped, and a
    /// later input concerning them reloads them.
    pub fn restore_released(&mut self, ids: BTreeSet<String>) {
        for id in &ids {
            self.patients.remove(id);
            self.refused.remove(id);
        }
        self.drop_events_owned_by(|owner| ids.contains(owner));
        self.released.extend(ids);
    }

    /// At start: the latest occurrence time heard from a device (the
    /// store's projection, heartbeats included, which a start does not
    /// read). Keeps a later time already known.
    pub fn restore_last_heard(&mut self, device_id: &str, last_heard_ms: TimeMs) {
        let device = self.devices.entry(device_id.to_owned()).or_default();
        device.last_heard_ms = device.last_heard_ms.max(last_heard_ms);
    }
}
