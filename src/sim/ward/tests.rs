//! The generator's tests: every message valid under the contract and the
//! ward's rules, determinism, windows, heartbeats.

use super::*;
use crate::contract::{parse_payload, parse_topic, DeviceEventKind, DoseKind, Input, InputTopic};
use crate::vocab::{parse_rfc3339_ms, Route};
use std::collections::{BTreeMap, HashMap, HashSet};

const PREFIX: &str = "dosetrack";
const DAY_MS: i64 = 24 * MS_PER_H;

fn t0() -> TimeMs {
    parse_rfc3339_ms("2026-11-27T08:00:00Z").unwrap()
}

fn spec(patients: usize, seed: u64) -> WardSpec {
    WardSpec::new(patients, seed, t0())
}

fn day(patients: usize, seed: u64) -> Vec<SimMessage> {
    Ward::new(spec(patients, seed)).messages_between(t0(), t0() + DAY_MS)
}

/// What a checked stream contained.
#[derive(Debug, Default)]
struct Summary {
    /// `admit`, `dose:<route>`, `<device kind>`, `alarm:<code>`.
    kinds: BTreeMap<String, usize>,
    rate_in_ml: usize,
    rate_in_mg: usize,
    with_comedications: usize,
    /// Largest 24 h total per patient, mg/kg (the stream is one day).
    max_total_mg_per_kg: f64,
}

#[derive(Default)]
struct PumpCheck {
    running: bool,
    rate_mg_per_h: f64,
    last_ms: TimeMs,
    last_total: f64,
    open_alarms: HashSet<&'static str>,
}

/// Checks a stream against the contract and the ward's rules; the
/// first violation is the error.
fn check_stream(msgs: &[SimMessage]) -> Result<Summary, String> {
    let mut summary = Summary::default();
    let mut ids: HashSet<(String, String)> = HashSet::new();
    let mut weights: HashMap<String, f64> = HashMap::new();
    let mut totals: HashMap<String, f64> = HashMap::new();
    let mut pumps: HashMap<String, PumpCheck> = HashMap::new();
    let mut patches: HashMap<String, Option<TimeMs>> = HashMap::new();
    let mut last_t = TimeMs::MIN;
    let count = |s: &mut Summary, k: String| *s.kinds.entry(k).or_default() += 1;
    for (i, m) in msgs.iter().enumerate() {
        let here = format!("message {i} at {}: {} {}", m.at_ms, m.topic, m.payload);
        if m.at_ms < last_t {
            return Err(format!("time goes backwards: {here}"));
        }
        last_t = m.at_ms;
        let topic = parse_topic(PREFIX, &m.topic).map_err(|e| format!("{e}: {here}"))?;
        let input =
            parse_payload(&topic, m.payload.as_bytes()).map_err(|e| format!("{e}: {here}"))?;
        let (source, id, time_ms) = match (&topic, &input) {
            (InputTopic::Admit { patient_id }, Input::Admit(a)) => {
                (format!("patients/{patient_id}"), &a.id, a.time_ms)
            }
            (InputTopic::Dose { patient_id }, Input::Dose(d)) => {
                (format!("patients/{patient_id}"), &d.id, d.time_ms)
            }
            (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e)) => {
                (format!("devices/{device_id}"), &e.id, e.time_ms)
            }
            _ => return Err(format!("unexpected topic: {here}")),
        };
        if time_ms != m.at_ms {
            return Err(format!("time {time_ms} differs from at_ms: {here}"));
        }
        if !ids.insert((source, id.clone())) {
            return Err(format!("duplicate (source, id): {here}"));
        }
        match (topic, input) {
            (InputTopic::Admit { patient_id }, Input::Admit(a)) => {
                if !(50.0..=110.0).contains(&a.weight_kg) {
                    return Err(format!("weight out of range: {here}"));
                }
                match a.age_years {
                    Some(age) if (18.0..=85.0).contains(&age) => {}
                    _ => return Err(format!("age missing or out of range: {here}")),
                }
                if a.sex.is_none() {
                    return Err(format!("sex missing: {here}"));
                }
                if !a.comedications.is_empty() {
                    summary.with_comedications += 1;
                }
                weights.insert(patient_id, a.weight_kg);
                count(&mut summary, "admit".into());
            }
            (InputTopic::Dose { patient_id }, Input::Dose(d)) => {
                let w = *weights
                    .get(&patient_id)
                    .ok_or(format!("dose before admit: {here}"))?;
                let DoseKind::Amount { route, amount_mg } = d.kind else {
                    return Err(format!("unexpected dose kind: {here}"));
                };
                if route == Route::IvBolus && amount_mg > WARD_MAX_BOLUS_MG_PER_KG * w {
                    return Err(format!("IV bolus over the ward limit: {here}"));
                }
                *totals.entry(patient_id).or_default() += amount_mg;
                count(&mut summary, format!("dose:{route}"));
            }
            (InputTopic::DeviceEvent { device_id }, Input::DeviceEvent(e)) => {
                let (device, number) = device_id
                    .split_once('-')
                    .ok_or(format!("device id: {here}"))?;
                let patient = format!("P-{number}");
                let w = *weights
                    .get(&patient)
                    .ok_or(format!("device event before admit: {here}"))?;
                let kind = e.kind.kind_name();
                let delivery = !matches!(
                    e.kind,
                    DeviceEventKind::Heartbeat { .. }
                        | DeviceEventKind::Alarm { .. }
                        | DeviceEventKind::AlarmCleared { .. }
                );
                let expected = delivery.then(|| patient.clone());
                if e.patient_id != expected {
                    return Err(format!("patient_id should be {expected:?}: {here}"));
                }
                let t = e.time_ms;
                let total = totals.entry(patient.clone()).or_default();
                match device {
                    "pump" => {
                        let pump = pumps.entry(device_id.clone()).or_default();
                        if pump.running {
                            *total +=
                                pump.rate_mg_per_h * (t - pump.last_ms) as f64 / MS_PER_H as f64;
                        }
                        pump.last_ms = t;
                        match &e.kind {
                            DeviceEventKind::InfusionStarted(r)
                            | DeviceEventKind::InfusionRateChanged(r) => {
                                let start = matches!(e.kind, DeviceEventKind::InfusionStarted(_));
                                if start == pump.running {
                                    return Err(format!(
                                        "{kind} while running={}: {here}",
                                        pump.running
                                    ));
                                }
                                if r.rate_mg_per_h > WARD_MAX_INFUSION_MG_PER_KG_PER_H * w
                                    || r.rate_mg_per_h <= 0.0
                                {
                                    return Err(format!("infusion rate out of limits: {here}"));
                                }
                                if r.rate_ml_per_h.is_some() {
                                    summary.rate_in_ml += 1;
                                } else {
                                    summary.rate_in_mg += 1;
                                }
                                pump.running = true;
                                pump.rate_mg_per_h = r.rate_mg_per_h;
                            }
                            DeviceEventKind::InfusionStopped { .. } => {
                                if !pump.running {
                                    return Err(format!("stop without a running infusion: {here}"));
                                }
                                pump.running = false;
                            }
                            DeviceEventKind::BolusDelivered { amount_mg, .. } => {
                                if *amount_mg > WARD_MAX_BOLUS_MG_PER_KG * w {
                                    return Err(format!("pump bolus over the ward limit: {here}"));
                                }
                                *total += amount_mg;
                            }
                            DeviceEventKind::Heartbeat {
                                delivered_total_mg, ..
                            } => {
                                if !pump.running {
                                    return Err(format!(
                                        "pump heartbeat while not delivering: {here}"
                                    ));
                                }
                                let d = delivered_total_mg
                                    .ok_or(format!("no delivered_total_mg: {here}"))?;
                                if d < pump.last_total {
                                    return Err(format!("delivered_total_mg decreased: {here}"));
                                }
                                pump.last_total = d;
                            }
                            DeviceEventKind::Alarm { code, .. } => {
                                if !pump.open_alarms.insert(code.as_str()) {
                                    return Err(format!("alarm raised twice: {here}"));
                                }
                                count(&mut summary, format!("alarm:{code}"));
                            }
                            DeviceEventKind::AlarmCleared { code } => {
                                if !pump.open_alarms.remove(code.as_str()) {
                                    return Err(format!("alarm cleared but not raised: {here}"));
                                }
                            }
                            _ => return Err(format!("not a pump event: {here}")),
                        }
                    }
                    "patch" => {
                        let applied_until = patches.entry(device_id.clone()).or_default();
                        match &e.kind {
                            DeviceEventKind::PatchApplied {
                                release_rate_mg_per_h,
                                wear_h,
                                ..
                            } => {
                                if applied_until.is_some() {
                                    return Err(format!("patch applied twice: {here}"));
                                }
                                if (*release_rate_mg_per_h, *wear_h) != (1.04, 24.0) {
                                    return Err(format!("not a 25 mg/24 h patch: {here}"));
                                }
                                *applied_until = Some(t + (wear_h * MS_PER_H as f64) as i64);
                                *total += release_rate_mg_per_h * wear_h;
                            }
                            DeviceEventKind::PatchRemoved | DeviceEventKind::PatchDetached => {
                                if applied_until.take().is_none() {
                                    return Err(format!("{kind} without a patch: {here}"));
                                }
                            }
                            DeviceEventKind::Heartbeat { skin_contact, .. } => {
                                if !applied_until.is_some_and(|end| t < end) {
                                    return Err(format!(
                                        "patch heartbeat while not applied: {here}"
                                    ));
                                }
                                if *skin_contact != Some(true) {
                                    return Err(format!("skin_contact not true: {here}"));
                                }
                            }
                            _ => return Err(format!("not a patch event: {here}")),
                        }
                    }
                    _ => return Err(format!("unknown device: {here}")),
                }
                count(&mut summary, kind.to_owned());
            }
            _ => return Err(format!("unexpected input: {here}")),
        }
    }
    // Running infusions up to the end of the stream.
    for (device_id, pump) in &pumps {
        if pump.running {
            let patient = format!("P-{}", &device_id["pump-".len()..]);
            *totals.entry(patient).or_default() +=
                pump.rate_mg_per_h * (last_t - pump.last_ms) as f64 / MS_PER_H as f64;
        }
    }
    for (patient, total) in &totals {
        let per_kg = total / weights[patient];
        summary.max_total_mg_per_kg = summary.max_total_mg_per_kg.max(per_kg);
    }
    Ok(summary)
}

#[test]
fn a_ward_day_is_valid_under_the_contract_and_the_ward_rules() {
    let msgs = day(20, 42);
    let summary = check_stream(&msgs).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{} messages: {summary:#?}", msgs.len());
    let k = |name: &str| summary.kinds.get(name).copied().unwrap_or(0);
    assert_eq!(k("admit"), 20);
    // Every regimen and every delivery kind shows up in a day of 20.
    for name in [
        "infusion_started",
        "infusion_rate_changed",
        "infusion_stopped",
        "bolus_delivered",
        "heartbeat",
        "patch_applied",
        "dose:intranasal",
        "dose:oral",
    ] {
        assert!(k(name) > 0, "no {name}: {summary:?}");
    }
    assert!(k("dose:sc") + k("dose:im") > 0, "{summary:?}");
    assert!(
        summary.rate_in_ml > 0 && summary.rate_in_mg > 0,
        "{summary:?}"
    );
    assert!(summary.with_comedications > 0, "{summary:?}");
    // Pumps beat every minute while delivering: about an hour of
    // heartbeats per hour of infusion, so far more than events.
    assert!(k("heartbeat") > 10 * k("infusion_started"), "{summary:?}");
    assert!(summary.max_total_mg_per_kg <= 24.0, "{summary:?}");
    // Times carry milliseconds where the devices do.
    assert!(msgs.iter().any(|m| m.at_ms % 1000 != 0));
}

#[test]
fn alarms_are_rare_and_paired_over_a_larger_ward() {
    let msgs = Ward::new(spec(60, 9)).messages_between(t0(), t0() + 3 * DAY_MS);
    let summary = check_stream(&msgs).unwrap_or_else(|e| panic!("{e}"));
    let k = |name: &str| summary.kinds.get(name).copied().unwrap_or(0);
    assert!(k("alarm:occlusion") > 0, "{summary:?}");
    assert!(k("alarm:infusion_complete") > 0, "{summary:?}");
    assert!(k("alarm") < k("infusion_started"), "{summary:?}");
    assert!(k("alarm") * 100 < msgs.len(), "{summary:?}");
    // Each occlusion stops the infusion with reason alarm.
    let stops_for_alarm = msgs
        .iter()
        .filter(|m| m.payload.contains("\"reason\":\"alarm\""))
        .count();
    assert_eq!(stops_for_alarm, k("alarm:occlusion"));
}

#[test]
fn the_checker_catches_broken_streams() {
    let good = Ward::new(spec(20, 5)).messages_between(t0(), t0() + 6 * MS_PER_H);
    assert!(check_stream(&good).is_ok());
    let position = |needle: &str| {
        good.iter()
            .position(|m| m.payload.contains(needle))
            .unwrap_or_else(|| panic!("no {needle}"))
    };
    let broken = |f: &dyn Fn(&mut Vec<SimMessage>)| {
        let mut v = good.clone();
        f(&mut v);
        check_stream(&v).expect_err("a broken stream passed")
    };
    // An infusion that never started: its heartbeats, changes or stop fail.
    let e = broken(&|v| {
        v.remove(position("infusion_started"));
    });
    assert!(
        e.contains("while not delivering") || e.contains("running=false") || e.contains("without"),
        "{e}"
    );
    // A duplicate id.
    let e = broken(&|v| {
        let i = position("heartbeat");
        let m = v[i].clone();
        v.insert(i + 1, m);
    });
    assert!(e.contains("duplicate"), "{e}");
    // Time going backwards (the first two messages are admits).
    assert!(good[0].topic.ends_with("/admit") && good[1].topic.ends_with("/admit"));
    assert!(good[0].at_ms < good[1].at_ms);
    let e = broken(&|v| v.swap(0, 1));
    assert!(e.contains("backwards"), "{e}");
    // A bolus over 0.35 mg/kg.
    let e = broken(&|v| {
        let i = position("\"amount_mg\"");
        v[i].payload = v[i].payload.replace("\"amount_mg\":", "\"amount_mg\":1000");
    });
    assert!(
        e.contains("over the ward limit") || e.contains("invalid"),
        "{e}"
    );
    // An invalid payload.
    let e = broken(&|v| v[0].payload = v[0].payload.replace("weight_kg", "weight"));
    assert!(e.contains("missing_field"), "{e}");
}

#[test]
fn same_seed_same_messages_different_seed_different() {
    let a = day(20, 1);
    assert!(!a.is_empty());
    assert_eq!(a, day(20, 1));
    let b = day(20, 2);
    assert_ne!(a, b);
    // Patients are independent streams: adding patients keeps the others.
    let fewer = day(5, 1);
    let first_five: Vec<_> = a
        .iter()
        .filter(|m| fewer.iter().any(|f| f.topic == m.topic))
        .cloned()
        .collect();
    assert_eq!(first_five, fewer);
    // Another start time changes every id's run tag.
    let later = Ward::new(WardSpec::new(1, 1, t0() + 1)).messages_between(t0(), t0() + MS_PER_H);
    let id = |m: &SimMessage| {
        m.payload
            .split("\"id\":\"")
            .nth(1)
            .map(|s| s[..8].to_owned())
    };
    assert_ne!(id(&later[0]), id(&a[0]));
}

#[test]
fn adjacent_windows_equal_their_union() {
    let s = t0();
    let e = t0() + 12 * MS_PER_H;
    let full = Ward::new(spec(12, 3)).messages_between(s, e);
    assert!(full.len() > 1000);
    // Splits: the ends, arbitrary points, and exact message times
    // (including ties).
    let mut splits = vec![s, s + 1, s + 37 * MS_PER_MIN + 123, e - 1, e];
    splits.extend((0..full.len()).step_by(97).map(|i| full[i].at_ms));
    for split in splits {
        let mut ward = Ward::new(spec(12, 3));
        let mut joined = ward.messages_between(s, split);
        joined.extend(ward.messages_between(split, e));
        assert_eq!(joined.len(), full.len(), "split at {split}");
        assert_eq!(joined, full, "split at {split}");
        // A fresh ward asked for the second half only.
        let second = Ward::new(spec(12, 3)).messages_between(split, e);
        let expected: Vec<_> = full.iter().filter(|m| m.at_ms >= split).cloned().collect();
        assert_eq!(second, expected, "split at {split}");
    }
    // Windows inside what a ward has already generated.
    let mut ward = Ward::new(spec(12, 3));
    assert_eq!(ward.messages_between(s, e), full);
    let mut bounds: Vec<TimeMs> = (0..full.len()).step_by(89).map(|i| full[i].at_ms).collect();
    bounds.push(e);
    for pair in bounds.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let expected: Vec<_> = full
            .iter()
            .filter(|m| (a..b).contains(&m.at_ms))
            .cloned()
            .collect();
        assert_eq!(ward.messages_between(a, b), expected, "[{a}, {b})");
    }
    // Many small windows.
    let mut ward = Ward::new(spec(12, 3));
    let mut stepped = Vec::new();
    let mut t = s;
    while t < e {
        stepped.extend(ward.messages_between(t, t + 61_111));
        t += 61_111;
    }
    let within: Vec<_> = stepped.into_iter().filter(|m| m.at_ms < e).collect();
    assert_eq!(within, full);
    // Going back regenerates the same messages.
    let early: Vec<_> = full
        .iter()
        .filter(|m| m.at_ms < s + MS_PER_H)
        .cloned()
        .collect();
    assert_eq!(ward.messages_between(s, s + MS_PER_H), early);
    assert!(ward.messages_between(e, s).is_empty());
}

#[test]
fn heartbeat_interval_is_respected() {
    let mut s = spec(10, 11);
    s.heartbeat_interval_ms = 15_000;
    let msgs = Ward::new(s).messages_between(t0(), t0() + 6 * MS_PER_H);
    check_stream(&msgs).unwrap_or_else(|e| panic!("{e}"));
    let mut last: HashMap<&str, TimeMs> = HashMap::new();
    let mut gaps = Vec::new();
    for m in msgs.iter().filter(|m| m.payload.contains("\"heartbeat\"")) {
        if let Some(prev) = last.insert(&m.topic, m.at_ms) {
            gaps.push(m.at_ms - prev);
        }
    }
    // Within a delivery run beats are 15 s apart (±1.5 s jitter).
    let regular = gaps
        .iter()
        .filter(|g| (13_500..=16_500).contains(*g))
        .count();
    assert!(regular * 10 > gaps.len() * 9, "{regular} of {}", gaps.len());
    assert!(gaps.iter().all(|g| *g >= 13_500));
}

/// The demo's incidents: an occlusion of P-0001's pump (cleared 12 min
/// later), P-0002's patch off (a new one 12 min later), an IV bolus over
/// the limit for P-0003, all within the first half hour; the other
/// patients as without incidents; deterministic.
#[test]
fn incidents_happen_early_and_leave_the_rest_of_the_ward_alone() {
    let hour = |spec: WardSpec| Ward::new(spec).messages_between(t0(), t0() + MS_PER_H);
    let mut with = spec(6, 1283);
    with.incidents = Some(Incidents {
        bolus_mg_per_kg: 0.525,
    });
    let msgs = hour(with.clone());
    assert_eq!(msgs, hour(with), "deterministic");
    let json = |m: &SimMessage| serde_json::from_str::<serde_json::Value>(&m.payload).unwrap();
    let find = |topic_part: &str, pred: &dyn Fn(&serde_json::Value) -> bool| -> Vec<TimeMs> {
        msgs.iter()
            .filter(|m| m.topic.contains(topic_part) && pred(&json(m)))
            .map(|m| m.at_ms)
            .collect()
    };
    let kind = |k: &'static str| move |v: &serde_json::Value| v["kind"] == k;
    let code = |k: &'static str, c: &'static str| {
        move |v: &serde_json::Value| v["kind"] == k && v["code"] == c
    };
    let min = |t: TimeMs| (t - t0()) as f64 / MS_PER_MIN as f64;

    // The occlusion: raised within 20 min, cleared 12 min later.
    let occluded = find("devices/pump-0001/", &code("alarm", "occlusion"));
    let cleared = find("devices/pump-0001/", &code("alarm_cleared", "occlusion"));
    assert_eq!(occluded.len(), 1, "{occluded:?}");
    assert!(min(occluded[0]) < 20.0, "{}", min(occluded[0]));
    assert_eq!(cleared, vec![occluded[0] + 12 * MS_PER_MIN]);

    // The patch: off 6 min after it was applied, a new one 12 min later.
    let applied = find("devices/patch-0002/", &kind("patch_applied"));
    let detached = find("devices/patch-0002/", &kind("patch_detached"));
    assert_eq!(detached.len(), 1);
    assert!(min(detached[0]) < 15.0, "{}", min(detached[0]));
    assert_eq!(detached[0], applied[0] + 6 * MS_PER_MIN);
    assert_eq!(applied[1], detached[0] + 12 * MS_PER_MIN);

    // The bolus: P-0003, over 0.35 mg/kg, within 10 min.
    let weight = msgs
        .iter()
        .find(|m| m.topic.ends_with("patients/P-0003/admit"))
        .map(|m| json(m)["weight_kg"].as_f64().unwrap())
        .unwrap();
    let boluses: Vec<(TimeMs, f64)> = msgs
        .iter()
        .filter(|m| m.topic.ends_with("patients/P-0003/doses"))
        .map(|m| (m.at_ms, json(m)))
        .filter(|(_, v)| v["route"] == "iv_bolus")
        .map(|(t, v)| (t, v["amount_mg"].as_f64().unwrap()))
        .collect();
    assert!(
        boluses
            .iter()
            .any(|(t, mg)| min(*t) <= 10.0 && mg / weight > WARD_MAX_BOLUS_MG_PER_KG),
        "{boluses:?} for {weight} kg"
    );

    // The others: as without incidents.
    let others = |msgs: &[SimMessage]| -> Vec<SimMessage> {
        msgs.iter()
            .filter(|m| {
                ["P-0004", "P-0005", "P-0006", "-0004/", "-0005/", "-0006/"]
                    .iter()
                    .any(|p| m.topic.contains(p))
            })
            .cloned()
            .collect()
    };
    let without = hour(spec(6, 1283));
    assert!(!others(&without).is_empty());
    assert_eq!(others(&msgs), others(&without));
    // And no incident without asking.
    assert!(without
        .iter()
        .all(|m| !m.payload.contains("patch_detached") || !m.topic.contains("patch-0002")));
}
