//! Property test (issue #16, incremental apply): a tracker that extends
//! each patient's model (inputs in occurrence order, and late ones) gives
//! exactly the state, ledger and solution of a tracker that rebuilds every
//! model from all of the patient's inputs (`Tracker::set_full_rebuild`),
//! after every input, for random histories of two patients sharing devices
//! (admissions and re-admissions, doses by every route, pump and patch
//! events, alarms, heartbeats, device moves, discharges) arriving partly
//! out of order.

use dosetrack_core::contract::{parse_payload, parse_topic};
use dosetrack_core::drug::DrugFile;
use dosetrack_core::patient::Formulary;
use dosetrack_core::tracker::{TrackedInput, Tracker, TrackerConfig};
use dosetrack_core::vocab::{format_rfc3339, TimeMs};
use proptest::prelude::*;
use std::sync::Arc;

const T0: TimeMs = 1_795_766_400_000; // 2026-11-27T08:00:00Z
const MIN: TimeMs = 60_000;
const PATIENTS: [&str; 2] = ["P-1", "P-2"];
const DEVICES: [&str; 3] = ["pump-1", "pump-2", "patch-1"];
const ROUTES: [&str; 7] = [
    "iv_bolus",
    "im",
    "sc",
    "intranasal",
    "oral",
    "sublingual",
    "rectal",
];

/// One generated input, before it is given a time, an id and a seq.
#[derive(Debug, Clone)]
enum Kind {
    Readmit {
        weight_kg: u32,
    },
    Discharge,
    Bolus {
        route: usize,
        amount_mg: u32,
    },
    InfusionDose {
        rate_mg_per_h: u32,
        duration_min: u32,
    },
    PatchDose {
        wear_h: u32,
    },
    PumpStart {
        names: bool,
        rate_mg_per_h: u32,
    },
    PumpRate {
        rate_mg_per_h: u32,
    },
    PumpStop,
    PumpBolus {
        amount_mg: u32,
    },
    Heartbeat,
    Alarm {
        cleared: bool,
    },
    PatchApplied {
        names: bool,
        wear_h: u32,
    },
    PatchOff {
        detached: bool,
    },
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        1 => (50u32..110).prop_map(|weight_kg| Kind::Readmit { weight_kg }),
        1 => Just(Kind::Discharge),
        4 => (0..ROUTES.len(), 1u32..60).prop_map(|(route, amount_mg)| Kind::Bolus { route, amount_mg }),
        2 => (1u32..40, 1u32..240).prop_map(|(rate_mg_per_h, duration_min)| Kind::InfusionDose { rate_mg_per_h, duration_min }),
        1 => (1u32..48).prop_map(|wear_h| Kind::PatchDose { wear_h }),
        3 => (any::<bool>(), 0u32..40).prop_map(|(names, rate_mg_per_h)| Kind::PumpStart { names, rate_mg_per_h }),
        4 => (0u32..40).prop_map(|rate_mg_per_h| Kind::PumpRate { rate_mg_per_h }),
        3 => Just(Kind::PumpStop),
        2 => (1u32..30).prop_map(|amount_mg| Kind::PumpBolus { amount_mg }),
        2 => Just(Kind::Heartbeat),
        1 => any::<bool>().prop_map(|cleared| Kind::Alarm { cleared }),
        2 => (any::<bool>(), 1u32..48).prop_map(|(names, wear_h)| Kind::PatchApplied { names, wear_h }),
        1 => any::<bool>().prop_map(|detached| Kind::PatchOff { detached }),
    ]
}

/// An input: its patient, its device (for device events), its time (s
/// after T0: often on a whole minute, so ties are common; often in the
/// first 20 minutes, so inputs are close together) and its kind; and
/// how many places it arrives late.
type Step = (usize, usize, u32, Kind, u32);

fn step() -> impl Strategy<Value = Step> {
    (
        0..PATIENTS.len(),
        0..DEVICES.len(),
        (
            prop_oneof![0u32..900, 0u32..20],
            prop_oneof![Just(0u32), 1u32..60],
        )
            .prop_map(|(m, s)| m * 60 + s),
        kind(),
        prop_oneof![3 => Just(0u32), 1 => 1u32..12],
    )
}

fn input(seq: i64, topic: String, payload: String) -> TrackedInput {
    let topic = parse_topic("dosetrack", &topic).unwrap();
    let input =
        parse_payload(&topic, payload.as_bytes()).unwrap_or_else(|e| panic!("{payload}: {e:?}"));
    TrackedInput { seq, topic, input }
}

fn admit(seq: i64, p: usize, time: TimeMs, weight_kg: u32) -> TrackedInput {
    let indication = if p == 1 {
        r#","indication":"chronic_neuropathic""#
    } else {
        ""
    };
    input(
        seq,
        format!("dosetrack/v1/patients/{}/admit", PATIENTS[p]),
        format!(
            r#"{{"id":"adm-{seq}","time":"{}","weight_kg":{weight_kg},"age_years":41{indication}}}"#,
            format_rfc3339(time)
        ),
    )
}

fn to_input(seq: i64, (p, d, second, kind, _): &Step) -> TrackedInput {
    let pid = PATIENTS[*p];
    let at = T0 + TimeMs::from(*second) * 1000;
    let time = format_rfc3339(at);
    let id = format!("i-{seq}");
    let device_topic = format!("dosetrack/v1/devices/{}/events", DEVICES[*d]);
    let dose_topic = format!("dosetrack/v1/patients/{pid}/doses");
    let named = |names: bool| {
        if names {
            format!(r#","patient_id":"{pid}""#)
        } else {
            String::new()
        }
    };
    let device = |body: String| {
        input(
            seq,
            device_topic.clone(),
            format!(r#"{{"id":"{id}","time":"{time}",{body}}}"#),
        )
    };
    match kind {
        Kind::Readmit { weight_kg } => admit(seq, *p, at, *weight_kg),
        Kind::Discharge => input(
            seq,
            format!("dosetrack/v1/patients/{pid}/discharge"),
            format!(r#"{{"id":"{id}","time":"{time}"}}"#),
        ),
        Kind::Bolus { route, amount_mg } => input(
            seq,
            dose_topic,
            format!(
                r#"{{"id":"{id}","time":"{time}","route":"{}","amount_mg":{amount_mg}}}"#,
                ROUTES[*route]
            ),
        ),
        Kind::InfusionDose {
            rate_mg_per_h,
            duration_min,
        } => input(
            seq,
            dose_topic,
            format!(
                r#"{{"id":"{id}","time":"{time}","route":"iv_infusion","rate_mg_per_h":{rate_mg_per_h},"duration_min":{duration_min}}}"#
            ),
        ),
        Kind::PatchDose { wear_h } => input(
            seq,
            dose_topic,
            format!(
                r#"{{"id":"{id}","time":"{time}","route":"transdermal","release_rate_mg_per_h":1.04,"wear_h":{wear_h}}}"#
            ),
        ),
        Kind::PumpStart {
            names,
            rate_mg_per_h,
        } => device(format!(
            r#""kind":"infusion_started","rate_mg_per_h":{rate_mg_per_h}{}"#,
            named(*names)
        )),
        Kind::PumpRate { rate_mg_per_h } => device(format!(
            r#""kind":"infusion_rate_changed","rate_mg_per_h":{rate_mg_per_h}"#
        )),
        Kind::PumpStop => device(r#""kind":"infusion_stopped""#.to_owned()),
        Kind::PumpBolus { amount_mg } => device(format!(
            r#""kind":"bolus_delivered","amount_mg":{amount_mg}"#
        )),
        Kind::Heartbeat => device(r#""kind":"heartbeat""#.to_owned()),
        Kind::Alarm { cleared } => device(format!(
            r#""kind":"{}","code":"occlusion""#,
            if *cleared { "alarm_cleared" } else { "alarm" }
        )),
        Kind::PatchApplied { names, wear_h } => device(format!(
            r#""kind":"patch_applied","release_rate_mg_per_h":1.04,"wear_h":{wear_h}{}"#,
            named(*names)
        )),
        Kind::PatchOff { detached } => device(format!(
            r#""kind":"{}""#,
            if *detached {
                "patch_detached"
            } else {
                "patch_removed"
            }
        )),
    }
}

/// The inputs in arrival order: both admissions first (one of them
/// sometimes after the first few inputs, so those are applied when it
/// arrives), then the steps by time, each moved back by its lateness.
fn arrivals(steps: &[Step], late_admission: bool) -> Vec<TrackedInput> {
    let mut by_time: Vec<&Step> = steps.iter().collect();
    by_time.sort_by_key(|s| s.2);
    let mut order: Vec<(usize, &Step)> = by_time
        .iter()
        .enumerate()
        .map(|(i, s)| (i + s.4 as usize, *s))
        .collect();
    order.sort_by_key(|(k, _)| *k); // stable: ties keep time order
    let mut out = vec![admit(1, 0, T0, 72)];
    let mut seq = 2;
    let second_at = if late_admission {
        3.min(order.len())
    } else {
        0
    };
    for (i, (_, s)) in order.iter().enumerate() {
        if i == second_at {
            out.push(admit(seq, 1, T0 + 30 * MIN, 64));
            seq += 1;
        }
        out.push(to_input(seq, s));
        seq += 1;
    }
    if second_at == order.len() {
        out.push(admit(seq, 1, T0 + 30 * MIN, 64));
    }
    out
}

fn formulary() -> Arc<Formulary> {
    Arc::new(Formulary::new(DrugFile::builtin().unwrap()).unwrap())
}

/// Cp, Ce and the full state vector at `t`, as bits.
fn bits(s: &dosetrack_core::pk::Solution, t: TimeMs) -> Vec<u64> {
    let c = s.at(t);
    let mut v = vec![c.cp_ng_per_ml.to_bits(), c.ce_ng_per_ml.to_bits()];
    v.extend(s.state_at(t).iter().map(|x| x.to_bits()));
    v
}

/// Incremental and full trackers agree on everything a patient's model
/// gives, for both patients, at `times`.
fn same(inc: &mut Tracker, full: &mut Tracker, times: &[TimeMs]) -> Result<(), TestCaseError> {
    for pid in PATIENTS {
        let (a, b) = (inc.derived(pid), full.derived(pid));
        prop_assert_eq!(inc.error(pid), full.error(pid));
        prop_assert_eq!(a.is_some(), b.is_some());
        let (Some(a), Some(b)) = (a, b) else { continue };
        prop_assert_eq!(&a.ledger, &b.ledger);
        prop_assert_eq!(a.solution.event_times(), b.solution.event_times());
        for i in 0..a.solution.event_times().len() {
            let xa = a.solution.checkpoint(i).map(|x| x.map(f64::to_bits));
            let xb = b.solution.checkpoint(i).map(|x| x.map(f64::to_bits));
            prop_assert_eq!(xa, xb, "checkpoint {}", i);
        }
        for &t in times {
            prop_assert_eq!(
                bits(&a.solution, t),
                bits(&b.solution, t),
                "{} at {}",
                pid,
                t
            );
        }
        prop_assert_eq!(a.slow.is_some(), b.slow.is_some());
        if let (Some(sa), Some(sb)) = (&a.slow, &b.slow) {
            prop_assert_eq!(sa.event_times(), sb.event_times());
            for &t in times {
                prop_assert_eq!(bits(sa, t), bits(sb, t), "slow {} at {}", pid, t);
            }
        }
        for &t in times {
            prop_assert_eq!(inc.state(pid, t), full.state(pid, t));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn incremental_apply_equals_a_full_replay(
        steps in prop::collection::vec(step(), 1..40),
        late_admission in any::<bool>(),
        check_every in 1usize..4,
    ) {
        let f = formulary();
        let mut inc = Tracker::new(f.clone(), TrackerConfig::default());
        let mut full = Tracker::new(f, TrackerConfig::default());
        full.set_full_rebuild(true);
        let times: Vec<TimeMs> = (-2..=34).map(|k| T0 + k * 29 * MIN + 7_919).collect();
        let inputs = arrivals(&steps, late_admission);
        let n = inputs.len();
        for (k, i) in inputs.into_iter().enumerate() {
            let a = inc.apply(i.clone());
            let b = full.apply(i);
            prop_assert_eq!(a, b);
            // Several inputs between reads too (stage B's batches).
            if k % check_every == 0 || k + 1 == n {
                same(&mut inc, &mut full, &times)?;
            }
        }
    }
}
