//! The simulated ward: a **pure, deterministic generator** of a ward's
//! contract inputs (`docs/mqtt-contract.md`, version 1) from simulated patients
//! whose infusion pumps, transdermal patches and medication record would
//! publish them. No clock, no I/O: [`super::publisher`] puts them on the
//! wire.
//!
//! Given a [`WardSpec`], [`Ward`] produces every message of the ward as a
//! [`SimMessage`] (occurrence time, topic, JSON payload). The same spec
//! always gives the same messages, and [`Ward::messages_between`] over
//! adjacent windows gives exactly what one call over their union gives: the
//! window only selects messages, it never changes them.
//!
//! This module owns the spec, the message type, the windowing and the
//! limits; `patient` owns one patient's admission, devices and regimen (its
//! state machine, in `patient::regimens`). Topics are named by the core's
//! one topic builder (`contract::Topics`).
//!
//! # The simulated ward
//!
//! Patients are `P-0001`, `P-0002`, … (four digits, more when needed), with
//! devices `pump-0001` and `patch-0001` and so on. Each is admitted near the
//! start (`admit`: weight 50–110 kg, age 18–85, sex, height, sometimes
//! comedications that are interaction keys of the drug file) and then
//! follows one regimen archetype, repeated for as long as the simulation
//! runs:
//!
//! * **IV infusion** (40 %): a loading bolus of 0.1–0.3 mg/kg, either given
//!   by hand (`doses`, route `iv_bolus`) or by the pump (`bolus_delivered`,
//!   source `loading`), then a pump infusion of 0.1–0.5 mg/kg/h for 4–16 h
//!   with 1–3 rate changes, sometimes a clinician bolus of 0.1–0.25 mg/kg,
//!   and a stop (`clinician`, or `completed` with an `infusion_complete`
//!   alarm); the next course follows 2–8 h later. About 40 % of the pumps
//!   report `rate_ml_per_h` + `concentration_mg_per_ml` instead of
//!   `rate_mg_per_h`. Rarely an `occlusion` alarm stops the infusion (reason
//!   `alarm`) until `alarm_cleared`, when the pump resumes at the programmed
//!   rate; rarely a `battery_low` alarm comes and clears while it runs.
//! * **Intranasal** (20 %): 0.5–1 mg/kg every 2–4 h.
//! * **Patch** (20 %): a 25 mg/24 h patch (`release_rate_mg_per_h` 1.04,
//!   `wear_h` 24) changed every 23–24 h, rarely detached early and replaced,
//!   plus occasional oral doses of 0.25–0.5 mg/kg.
//! * **Injections** (20 %): SC or IM doses of 0.1–0.3 mg/kg every 4–8 h.
//!
//! Every IV bolus (but an incident's) stays within the ward limit of 0.35 mg/kg and every
//! infusion within 1 mg/kg/h (`[limits.ward]` of the drug file) for the
//! patient's admitted weight, and no regimen comes near the ward's 24 h
//! cumulative limit (24 mg/kg; a 20-patient day peaks around 7 mg/kg).
//! (Intranasal doses are 0.5–1 mg/kg: the 0.35 mg/kg bolus limit is read
//! as an IV limit.) Pumps send a `heartbeat` (with the pump's integrated
//! `delivered_total_mg`) every `heartbeat_interval_ms` while they deliver,
//! and only then; patches send one (with `skin_contact: true`) while
//! applied, and only then. Delivery events carry `patient_id`; heartbeats and
//! alarms do not (they belong to the device's current patient). Manual doses
//! are recorded on whole minutes; device events carry milliseconds. Times are
//! RFC 3339 UTC ([`crate::vocab::format_rfc3339`]).
//!
//! # Incidents
//!
//! With [`WardSpec::incidents`] (the demo's ward), three things go wrong
//! early, so that alerts are raised, escalated and cleared within a
//! simulated hour (times after admission, which is within 2 min of the
//! start):
//!
//! * `P-0001` is on an IV infusion from about 2 min on (its archetype is
//!   forced); 4 min after the infusion starts its pump reports an
//!   `occlusion` alarm and stops (reason `alarm`), cleared 12 min later,
//!   when it resumes (`device_fault`, high; escalated after 10 min
//!   unacknowledged; cleared after the alarm is);
//! * `P-0002` wears a patch from about 1 min on (forced too); it falls off
//!   (`patch_detached`) 6 min after it was applied, and a new one is
//!   applied 12 min later (`device_fault`, medium, escalated, then cleared);
//! * `P-0003` (`P-0001` in a smaller ward) is given, 5 min after
//!   admission, an IV bolus by hand of [`Incidents::bolus_mg_per_kg`] of
//!   their weight, rounded down to whole mg (`dose_limit` when that is
//!   over the drug file's limit; latched, so it stays until acknowledged).
//!
//! Each patient draws from a random stream of its own, so the other
//! patients are exactly those of the same ward without incidents.
//!
//! Every `id` is unique per source (device or patient) and starts with a run
//! tag derived from the seed and the start time, so two runs against the same
//! daemon never reuse an id for different content (`duplicate_conflict`).
//!
//! # Simulated time and the wall clock
//!
//! The publisher maps simulated time onto real time: a message whose
//! occurrence time is `start_ms + x` is published `x / speedup` after the
//! start. At speedup 1, pass the wall clock as `start_ms`: each message is
//! dated "now" when it is published. At speedup N > 1 simulated time runs N×
//! faster than the wall clock, and the contract rejects inputs dated more
//! than 5 min ahead of the receiver's clock (`clock_skew`). So the simulation
//! must **start in the past**: [`catch_up_start_ms`] gives
//! `start_ms = now − duration·(1 − 1/N)` (≈ `now − duration` for large N),
//! so that simulated time catches up with the wall clock exactly at the end
//! and no message is ever dated ahead of it ([`MAX_FUTURE_SKEW_MS`]).

mod patient;
#[cfg(test)]
mod tests;

use crate::vocab::TimeMs;
use patient::{build_patients, PatientSim};
use tracing::warn;

// ---------------------------------------------------------------------------
// Constants.
// ---------------------------------------------------------------------------

/// Default topic prefix (contract: "default `dosetrack`").
pub const DEFAULT_PREFIX: &str = "dosetrack";
/// Default interval between device heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: i64 = 60_000;
/// Shortest heartbeat interval the generator uses; shorter values are raised
/// to this.
pub const MIN_HEARTBEAT_INTERVAL_MS: i64 = 1_000;
/// The contract's default `max_future_skew`: inputs dated further ahead of
/// the daemon's clock are rejected (`clock_skew`).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60_000;
/// Ward limit on one IV bolus, mg/kg (`limits.ward.max_bolus_mg_per_kg`).
pub const WARD_MAX_BOLUS_MG_PER_KG: f64 = 0.35;
/// Ward limit on an infusion rate, mg/kg/h
/// (`limits.ward.max_infusion_mg_per_kg_per_h`).
pub const WARD_MAX_INFUSION_MG_PER_KG_PER_H: f64 = 1.0;

/// Milliseconds per minute and per hour.
pub(crate) const MS_PER_MIN: i64 = 60_000;
pub(crate) const MS_PER_H: i64 = 3_600_000;
// ---------------------------------------------------------------------------
// Public types of the generator.
// ---------------------------------------------------------------------------

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct WardSpec {
    /// Number of patients (`P-0001` …).
    pub patients: usize,
    /// Seed of every random choice; the same spec gives the same messages.
    pub seed: u64,
    /// Simulated start, ms since the epoch. For live publishing use
    /// [`catch_up_start_ms`] (the wall clock at speedup 1).
    pub start_ms: TimeMs,
    /// Topic prefix (`{prefix}/v1/...`).
    pub prefix: String,
    /// Interval between device heartbeats (default 60 s; at least 1 s).
    pub heartbeat_interval_ms: i64,
    /// The scripted incidents (see "Incidents" in the module doc); `None`
    /// (the default): none.
    pub incidents: Option<Incidents>,
    /// Patients without a scripted incident are admitted this long before
    /// `start_ms` (default 0): a ward already mid-course.
    pub lead_in_ms: i64,
}

/// The demo's scripted incidents, each early in the simulated hour (see
/// "Incidents" in the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incidents {
    /// The dose of the IV bolus given by mistake, mg/kg of the patient's
    /// weight: the caller chooses it over the drug file's bolus limit.
    pub bolus_mg_per_kg: f64,
}

impl WardSpec {
    /// A spec with the default prefix and heartbeat interval.
    pub fn new(patients: usize, seed: u64, start_ms: TimeMs) -> WardSpec {
        WardSpec {
            patients,
            seed,
            start_ms,
            prefix: DEFAULT_PREFIX.to_owned(),
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            incidents: None,
            lead_in_ms: 0,
        }
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    /// Occurrence time (the payload's `time`), also when to publish it in
    /// simulated time.
    pub at_ms: TimeMs,
    pub topic: String,
    /// One JSON object.
    pub payload: String,
}

/// A simulated ward: the deterministic message generator.
#[derive(Debug, Clone)]
pub struct Ward {
    spec: WardSpec,
    patients: Vec<PatientSim>,
    /// Messages before this time have been dropped from the buffers; a
    /// window starting earlier regenerates the ward from the start.
    retained_from_ms: TimeMs,
}

impl Ward {
    /// Build the ward. A heartbeat interval under
    /// [`MIN_HEARTBEAT_INTERVAL_MS`] is raised to it.
    pub fn new(spec: WardSpec) -> Ward {
        let mut spec = spec;
        if spec.heartbeat_interval_ms < MIN_HEARTBEAT_INTERVAL_MS {
            warn!(
                heartbeat_interval_ms = spec.heartbeat_interval_ms,
                min_ms = MIN_HEARTBEAT_INTERVAL_MS,
                "heartbeat interval too short; raised to the minimum"
            );
            spec.heartbeat_interval_ms = MIN_HEARTBEAT_INTERVAL_MS;
        }
        let patients = build_patients(&spec);
        Ward {
            spec,
            patients,
            retained_from_ms: TimeMs::MIN,
        }
    }

    /// The spec in use (after normalisation).
    pub fn spec(&self) -> &WardSpec {
        &self.spec
    }

    /// Every message with occurrence time in `[from_ms, to_ms)`, in time
    /// order; ties are ordered by patient, then by generation order.
    ///
    /// Generation only moves forward and keeps messages from the latest
    /// `from_ms` on; a window that starts earlier than an earlier call's
    /// `from_ms` regenerates the ward from its start (same result, more
    /// work). Every message before `to_ms` is generated: the regimens never
    /// end, so `to_ms` must be a real time, not `i64::MAX`.
    pub fn messages_between(&mut self, from_ms: TimeMs, to_ms: TimeMs) -> Vec<SimMessage> {
        if to_ms <= from_ms {
            return Vec::new();
        }
        if from_ms < self.retained_from_ms {
            self.patients = build_patients(&self.spec);
            self.retained_from_ms = TimeMs::MIN;
        }
        let mut keyed: Vec<(TimeMs, usize, u64, SimMessage)> = Vec::new();
        for (index, patient) in self.patients.iter_mut().enumerate() {
            patient.advance_to(to_ms);
            while patient.out.front().is_some_and(|m| m.msg.at_ms < from_ms) {
                patient.out.pop_front();
            }
            keyed.extend(
                patient
                    .out
                    .iter()
                    .take_while(|m| m.msg.at_ms < to_ms)
                    .map(|m| (m.msg.at_ms, index, m.seq, m.msg.clone())),
            );
        }
        self.retained_from_ms = self.retained_from_ms.max(from_ms);
        keyed.sort_by_key(|(at, index, seq, _)| (*at, *index, *seq));
        keyed.into_iter().map(|(_, _, _, m)| m).collect()
    }
}

/// The start of a ward published over `duration_ms` at `speedup` so that
/// simulated time reaches the wall clock (`now_ms`) exactly at the end and
/// is never ahead of it: `now − duration·(1 − 1/speedup)`. At speedup 1 this
/// is `now`; for a large speedup it approaches `now − duration`. A speedup
/// below 1 (slow motion) or not finite gives `now`.
pub fn catch_up_start_ms(now_ms: TimeMs, duration_ms: i64, speedup: f64) -> TimeMs {
    if !speedup.is_finite() || speedup <= 1.0 || duration_ms <= 0 {
        return now_ms;
    }
    let behind = (duration_ms as f64 * (1.0 - 1.0 / speedup)).ceil() as i64;
    now_ms.saturating_sub(behind)
}
