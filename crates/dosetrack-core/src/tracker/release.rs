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
            .filter(|(_, t)| {
                t.stays
                    .last()
                    .and_then(|s| s.end_ms)
                    .is_some_and(|e| e <= before_ms)
            })
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
        for device_id in self.patient_devices.get(patient_id).into_iter().flatten() {
            if let Some(device) = self.devices.get_mut(device_id) {
                let DeviceTrack {
                    associations,
                    events,
                    ..
                } = device;
                events.retain(|(_, e)| owner_of(associations, e) != Some(patient_id));
                events.shrink_to_fit();
            }
        }
        self.released.insert(patient_id.to_owned());
        true
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
                    let device =
                        self.devices
                            .entry(device_id.clone())
                            .or_insert_with(|| DeviceTrack {
                                associations: Vec::new(),
                                events: Vec::new(),
                                last_heard_ms: i64::MIN,
                            });
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
