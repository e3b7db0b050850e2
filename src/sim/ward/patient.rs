//! One simulated patient: admission, devices (a pump, a patch), the
//! regimen archetype drawn at admission, and the messages they emit. The
//! regimens' state machine (what each scheduled action does) is in
//! [`regimens`]; this module owns the patient's state, the action queue,
//! the random draws and the payloads.

mod regimens;

use super::{SimMessage, WardSpec, MIN_HEARTBEAT_INTERVAL_MS, MS_PER_H, MS_PER_MIN};
use crate::contract::Topics;
use crate::vocab::{format_rfc3339, Route, TimeMs};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

/// Comedications drawn for admits: interaction keys of the drug file.
const COMEDICATIONS: [&str; 8] = [
    "midazolam",
    "morphine",
    "clarithromycin",
    "oxycodone",
    "lorazepam",
    "fentanyl",
    "hydromorphone",
    "diazepam",
];
/// Syringe concentrations of pumps that report mL/h.
const CONCENTRATIONS_MG_PER_ML: [f64; 4] = [1.0, 2.0, 5.0, 10.0];

/// Every patient of the ward, at admission.
pub(super) fn build_patients(spec: &WardSpec) -> Vec<PatientSim> {
    let tag = run_tag(spec.seed, spec.start_ms);
    (0..spec.patients)
        .map(|index| PatientSim::new(spec, &tag, index))
        .collect()
}

/// SplitMix64 finaliser: a well-mixed 64-bit value from two inputs.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Eight hex digits identifying the run (seed and start).
fn run_tag(seed: u64, start_ms: TimeMs) -> String {
    format!(
        "{:08x}",
        mix(seed, start_ms as u64 ^ 0x5151_d05e_7a4c_0001) >> 32
    )
}

/// Round up to a whole minute (manual records are kept to the minute).
fn minute_ceil(t: TimeMs) -> TimeMs {
    t.div_euclid(MS_PER_MIN) * MS_PER_MIN
        + if t.rem_euclid(MS_PER_MIN) == 0 {
            0
        } else {
            MS_PER_MIN
        }
}

/// Round to `decimals` decimal places; the result is the double nearest to
/// the decimal, so it prints without binary noise (`3.8`, not
/// `3.8000000000000003`).
fn round_dp(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// A JSON number, written as an integer when it is one.
fn num(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archetype {
    IvInfusion,
    Intranasal,
    PatchOral,
    Injections { route: Route },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    Pump,
    Patch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Clinician,
    Completed,
}

/// Something that happens at a time; processing it emits messages at that
/// time and schedules later actions.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Admit,
    CourseStart,
    InfusionStart {
        course: u64,
    },
    RateChange {
        course: u64,
    },
    ClinicianBolus {
        course: u64,
    },
    InfusionStop {
        course: u64,
        reason: StopReason,
    },
    Occlusion {
        course: u64,
    },
    OcclusionCleared,
    BatteryLow {
        course: u64,
    },
    BatteryCleared,
    InfusionCompleteCleared,
    PumpHeartbeat {
        run: u64,
        k: i64,
        anchor: TimeMs,
    },
    NasalDose,
    Injection,
    OralCheck,
    PatchApply,
    PatchRemove {
        wear: u64,
    },
    PatchDetach {
        wear: u64,
    },
    PatchHeartbeat {
        wear: u64,
        k: i64,
        anchor: TimeMs,
    },
    /// The incidents ([`super::Incidents`]).
    IncidentOcclusion {
        course: u64,
    },
    IncidentBolus {
        mg_per_kg: f64,
    },
}

#[derive(Debug, Clone)]
struct Scheduled {
    at_ms: TimeMs,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

#[derive(Debug, Clone)]
pub(super) struct Emitted {
    /// Generation order within the patient (ties at one time).
    pub(super) seq: u64,
    pub(super) msg: SimMessage,
}

/// A pump rate as programmed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    mg_per_h: f64,
    /// Set when the pump reports mL/h (with its syringe concentration).
    ml_per_h: Option<f64>,
}

#[derive(Debug, Clone)]
struct Pump {
    /// Syringe concentration when the pump reports mL/h.
    concentration_mg_per_ml: Option<f64>,
    course: u64,
    /// The clinician's plan says "infusing".
    course_active: bool,
    /// Stopped by an occlusion alarm, not yet cleared.
    occluded: bool,
    battery_alarm: bool,
    rate: Rate,
    /// Programmed rate in mg/kg/h (before rounding), for rate changes.
    mg_per_kg_per_h: f64,
    /// Totaliser, mg, integrated up to `last_ms`.
    total_mg: f64,
    last_ms: TimeMs,
    /// Changes whenever delivery starts or stops; heartbeats of an older run
    /// are dropped.
    run: u64,
}

impl Pump {
    fn running(&self) -> bool {
        self.course_active && !self.occluded
    }

    fn integrate(&mut self, t: TimeMs) {
        if self.running() && t > self.last_ms {
            self.total_mg += self.rate.mg_per_h * (t - self.last_ms) as f64 / MS_PER_H as f64;
        }
        self.last_ms = self.last_ms.max(t);
    }
}

#[derive(Debug, Clone)]
struct Patch {
    applied: bool,
    wear: u64,
}

/// One simulated patient and their devices.
#[derive(Debug, Clone)]
pub(super) struct PatientSim {
    patient_id: String,
    pump_id: String,
    patch_id: String,
    topics: Topics,
    tag: String,
    heartbeat_ms: i64,
    rng: Xoshiro256PlusPlus,
    weight_kg: f64,
    age_years: i64,
    female: bool,
    height_cm: f64,
    comedications: Vec<&'static str>,
    archetype: Archetype,
    queue: BinaryHeap<Reverse<Scheduled>>,
    next_action_seq: u64,
    /// Emitted, not yet dropped by a window, in time order.
    pub(super) out: VecDeque<Emitted>,
    next_msg_seq: u64,
    admit_count: u64,
    dose_count: u64,
    pump_events: u64,
    patch_events: u64,
    pump: Pump,
    patch: Patch,
    /// This patient's pump occludes in its first course (an incident).
    pub(super) incident_occlusion: bool,
    /// This patient's first patch falls off (an incident).
    pub(super) incident_detach: bool,
}

/// How long after the infusion starts the incident's pump occludes, and
/// how long the occlusion lasts.
const INCIDENT_OCCLUSION_AFTER_MS: i64 = 4 * MS_PER_MIN;
pub(super) const INCIDENT_OCCLUSION_LASTS_MS: i64 = 12 * MS_PER_MIN;
/// How long after it was applied the incident's patch falls off, and when
/// a new one is applied.
pub(super) const INCIDENT_DETACH_AFTER_MS: i64 = 6 * MS_PER_MIN;
pub(super) const INCIDENT_REAPPLY_AFTER_MS: i64 = 12 * MS_PER_MIN;
/// When after admission the incident's over-limit bolus is given.
const INCIDENT_BOLUS_AFTER_MS: i64 = 5 * MS_PER_MIN;

impl PatientSim {
    fn new(spec: &WardSpec, tag: &str, index: usize) -> PatientSim {
        let number = index + 1;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix(spec.seed, index as u64));
        let weight_kg = round_dp(rng.random_range(50.0..=110.0), 1);
        let age_years = rng.random_range(18..=85);
        let female = rng.random_bool(0.5);
        let height_cm = if female {
            rng.random_range(150..=180)
        } else {
            rng.random_range(160..=195)
        } as f64;
        let mut comedications = Vec::new();
        if rng.random_bool(0.35) {
            let n = rng.random_range(1..=2);
            while comedications.len() < n {
                let c = COMEDICATIONS[rng.random_range(0..COMEDICATIONS.len())];
                if !comedications.contains(&c) {
                    comedications.push(c);
                }
            }
        }
        let drawn = match rng.random_range(0..10) {
            0..=3 => Archetype::IvInfusion,
            4..=5 => Archetype::Intranasal,
            6..=7 => Archetype::PatchOral,
            _ => Archetype::Injections {
                route: if rng.random_bool(0.5) {
                    Route::Sc
                } else {
                    Route::Im
                },
            },
        };
        let concentration_mg_per_ml = if rng.random_bool(0.4) {
            Some(CONCENTRATIONS_MG_PER_ML[rng.random_range(0..CONCENTRATIONS_MG_PER_ML.len())])
        } else {
            None
        };
        // Patients without a scripted incident may have been admitted
        // `lead_in_ms` before the start (the demo's ward is mid-course, not
        // everyone at Ce 0): their past messages are published at once.
        let incident_patient = spec.incidents.is_some() && index <= 2;
        let lead_in = if incident_patient {
            0
        } else {
            spec.lead_in_ms.max(0)
        };
        let admit_at = spec
            .start_ms
            .saturating_sub(lead_in)
            .saturating_add(rng.random_range(0..120_000));
        let mut first_at =
            admit_at.saturating_add(rng.random_range(10 * MS_PER_MIN..45 * MS_PER_MIN));
        // The incidents (module doc of `ward`): forced archetypes, early
        // starts; every draw above is made as usual.
        let incidents = spec.incidents;
        let (archetype, incident_occlusion, incident_detach) = match (incidents, index) {
            (Some(_), 0) => {
                first_at = admit_at + 2 * MS_PER_MIN;
                (Archetype::IvInfusion, true, false)
            }
            (Some(_), 1) => {
                first_at = admit_at + MS_PER_MIN;
                (Archetype::PatchOral, false, true)
            }
            _ => (drawn, false, false),
        };
        let bolus_patient = if spec.patients > 2 { 2 } else { 0 };
        let mut sim = PatientSim {
            patient_id: format!("P-{number:04}"),
            pump_id: format!("pump-{number:04}"),
            patch_id: format!("patch-{number:04}"),
            topics: Topics::new(&spec.prefix),
            tag: tag.to_owned(),
            heartbeat_ms: spec.heartbeat_interval_ms.max(MIN_HEARTBEAT_INTERVAL_MS),
            rng,
            weight_kg,
            age_years,
            female,
            height_cm,
            comedications,
            archetype,
            queue: BinaryHeap::new(),
            next_action_seq: 0,
            out: VecDeque::new(),
            next_msg_seq: 0,
            admit_count: 0,
            dose_count: 0,
            pump_events: 0,
            patch_events: 0,
            pump: Pump {
                concentration_mg_per_ml,
                course: 0,
                course_active: false,
                occluded: false,
                battery_alarm: false,
                rate: Rate {
                    mg_per_h: 0.0,
                    ml_per_h: None,
                },
                mg_per_kg_per_h: 0.0,
                total_mg: 0.0,
                last_ms: admit_at,
                run: 0,
            },
            patch: Patch {
                applied: false,
                wear: 0,
            },
            incident_occlusion,
            incident_detach,
        };
        sim.schedule(admit_at, Action::Admit);
        if let Some(i) = incidents.filter(|_| index == bolus_patient) {
            sim.schedule(
                minute_ceil(admit_at + INCIDENT_BOLUS_AFTER_MS),
                Action::IncidentBolus {
                    mg_per_kg: i.bolus_mg_per_kg,
                },
            );
        }
        let first = match archetype {
            Archetype::IvInfusion => (minute_ceil(first_at), Action::CourseStart),
            Archetype::Intranasal => (minute_ceil(first_at), Action::NasalDose),
            Archetype::PatchOral => (first_at, Action::PatchApply),
            Archetype::Injections { .. } => (minute_ceil(first_at), Action::Injection),
        };
        sim.schedule(first.0, first.1);
        sim
    }

    fn schedule(&mut self, at_ms: TimeMs, action: Action) {
        let seq = self.next_action_seq;
        self.next_action_seq += 1;
        self.queue.push(Reverse(Scheduled { at_ms, seq, action }));
    }

    /// Process every action before `to_ms`. Each action emits only at its
    /// own time and schedules nothing earlier, so afterwards every message
    /// before `to_ms` is in `out`, whatever the windows asked so far.
    pub(super) fn advance_to(&mut self, to_ms: TimeMs) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at_ms >= to_ms {
                break;
            }
            let Some(Reverse(item)) = self.queue.pop() else {
                break;
            };
            self.process(item.at_ms, item.action);
        }
    }

    fn uniform(&mut self, range: (f64, f64)) -> f64 {
        self.rng.random_range(range.0..=range.1)
    }

    fn between(&mut self, from: TimeMs, to: TimeMs) -> TimeMs {
        if to <= from {
            from
        } else {
            self.rng.random_range(from..to)
        }
    }

    // ----- emitting -----

    fn push(&mut self, at_ms: TimeMs, topic: String, payload: Map<String, Value>) {
        let seq = self.next_msg_seq;
        self.next_msg_seq += 1;
        self.out.push_back(Emitted {
            seq,
            msg: SimMessage {
                at_ms,
                topic,
                payload: Value::Object(payload).to_string(),
            },
        });
    }

    fn base(id: String, at_ms: TimeMs) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(id));
        m.insert("time".into(), Value::String(format_rfc3339(at_ms)));
        m
    }

    fn emit_admit(&mut self, at_ms: TimeMs) {
        self.admit_count += 1;
        let mut m = Self::base(format!("{}-adm-{}", self.tag, self.admit_count), at_ms);
        m.insert("weight_kg".into(), num(self.weight_kg));
        m.insert("age_years".into(), Value::from(self.age_years));
        m.insert(
            "sex".into(),
            Value::from(if self.female { "female" } else { "male" }),
        );
        m.insert("height_cm".into(), num(self.height_cm));
        m.insert("setting".into(), Value::from("ward"));
        // Intranasal, oral and patch regimens are the pain clinic's
        // (chronic neuropathic pain); infusions and injections the ward's
        // acute pain. The indication sets the patient's floor.
        let indication = match self.archetype {
            Archetype::Intranasal | Archetype::PatchOral => "chronic_neuropathic",
            Archetype::IvInfusion | Archetype::Injections { .. } => "acute_pain",
        };
        m.insert("indication".into(), Value::from(indication));
        if !self.comedications.is_empty() {
            m.insert(
                "comedications".into(),
                Value::Array(self.comedications.iter().map(|c| Value::from(*c)).collect()),
            );
        }
        let topic = self.topics.admit(&self.patient_id);
        self.push(at_ms, topic, m);
    }

    fn emit_dose(&mut self, at_ms: TimeMs, route: Route, amount_mg: f64) {
        self.dose_count += 1;
        let mut m = Self::base(format!("{}-mar-{}", self.tag, self.dose_count), at_ms);
        m.insert("route".into(), Value::from(route.as_str()));
        m.insert("amount_mg".into(), num(amount_mg));
        let topic = self.topics.doses(&self.patient_id);
        self.push(at_ms, topic, m);
    }

    /// A device event. `delivery` events carry the patient's id.
    fn emit_device(
        &mut self,
        at_ms: TimeMs,
        device: Device,
        kind: &str,
        delivery: bool,
        fields: Vec<(&str, Value)>,
    ) {
        let (device_id, n) = match device {
            Device::Pump => {
                self.pump_events += 1;
                (self.pump_id.clone(), self.pump_events)
            }
            Device::Patch => {
                self.patch_events += 1;
                (self.patch_id.clone(), self.patch_events)
            }
        };
        let mut m = Self::base(format!("{}-{n}", self.tag), at_ms);
        m.insert("kind".into(), Value::from(kind));
        if delivery {
            m.insert("patient_id".into(), Value::String(self.patient_id.clone()));
        }
        for (k, v) in fields {
            m.insert(k.to_owned(), v);
        }
        let topic = self.topics.device_events(&device_id);
        self.push(at_ms, topic, m);
    }

    fn rate_fields(&self) -> Vec<(&'static str, Value)> {
        match (self.pump.rate.ml_per_h, self.pump.concentration_mg_per_ml) {
            (Some(ml), Some(c)) => vec![
                ("rate_ml_per_h", num(ml)),
                ("concentration_mg_per_ml", num(c)),
            ],
            _ => vec![("rate_mg_per_h", num(self.pump.rate.mg_per_h))],
        }
    }

    /// Program the pump to `mg_per_kg_per_h`, rounded as the pump does
    /// (0.1 mL/h or 0.1 mg/h).
    fn set_rate(&mut self, mg_per_kg_per_h: f64) {
        self.pump.mg_per_kg_per_h = mg_per_kg_per_h;
        let mg = mg_per_kg_per_h * self.weight_kg;
        self.pump.rate = match self.pump.concentration_mg_per_ml {
            Some(c) => {
                let ml = round_dp(mg / c, 1).max(0.1);
                Rate {
                    mg_per_h: ml * c,
                    ml_per_h: Some(ml),
                }
            }
            None => Rate {
                mg_per_h: round_dp(mg, 1).max(0.1),
                ml_per_h: None,
            },
        };
    }

    /// A bolus in mg for `range` mg/kg, rounded down to whole mg (so it
    /// never exceeds the drawn mg/kg), at least 1 mg.
    fn bolus_mg(&mut self, range: (f64, f64)) -> f64 {
        let per_kg = self.uniform(range);
        (self.weight_kg * per_kg).floor().max(1.0)
    }

    /// A dose rounded to 5 mg (sprays, tablets), at least 5 mg.
    fn dose_5mg(&mut self, range: (f64, f64)) -> f64 {
        let per_kg = self.uniform(range);
        ((self.weight_kg * per_kg / 5.0).round() * 5.0).max(5.0)
    }

    fn heartbeat_jitter(&mut self) -> TimeMs {
        let max = (self.heartbeat_ms / 10).clamp(1, 2_000);
        self.rng.random_range(0..max)
    }

    fn start_pump_heartbeats(&mut self, anchor: TimeMs) {
        let at = anchor + self.heartbeat_ms + self.heartbeat_jitter();
        let run = self.pump.run;
        self.schedule(at, Action::PumpHeartbeat { run, k: 1, anchor });
    }
}
