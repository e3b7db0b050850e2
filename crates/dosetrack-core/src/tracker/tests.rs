//! The tracker's unit tests: states against the offline engine, replays
//! in any arrival order, admissions and their models, devices and
//! heartbeats, discharge.

use super::*;
use crate::contract::{self, InputTopic};
use crate::drug::DrugFile;
use crate::vocab::parse_rfc3339_ms;

fn tracker() -> Tracker {
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    Tracker::new(Arc::new(f), TrackerConfig::default())
}

fn input(seq: i64, topic: &str, payload: &str) -> TrackedInput {
    let topic = contract::parse_topic("dosetrack", topic).unwrap();
    let input = contract::parse_payload(&topic, payload.as_bytes()).unwrap();
    TrackedInput { seq, topic, input }
}

fn t(s: &str) -> TimeMs {
    parse_rfc3339_ms(s).unwrap()
}

const ADMIT: &str = r#"{"id":"adm-1","time":"2026-11-27T08:00:00Z","weight_kg":72,"age_years":41}"#;
const BOLUS: &str =
    r#"{"id":"mar-1","time":"2026-11-27T08:00:00Z","route":"iv_bolus","amount_mg":20}"#;
const PUMP_ON: &str = r#"{"id":"p-1","time":"2026-11-27T08:05:00Z","kind":"infusion_started","patient_id":"P-1","rate_mg_per_h":18}"#;
const BEAT: &str = r#"{"id":"p-2","time":"2026-11-27T09:00:00Z","kind":"heartbeat"}"#;
const PUMP_OFF: &str = r#"{"id":"p-3","time":"2026-11-27T10:00:00Z","kind":"infusion_stopped"}"#;

fn all() -> Vec<TrackedInput> {
    vec![
        input(1, "dosetrack/v1/patients/P-1/admit", ADMIT),
        input(2, "dosetrack/v1/patients/P-1/doses", BOLUS),
        input(3, "dosetrack/v1/devices/pump-7/events", PUMP_ON),
        input(4, "dosetrack/v1/devices/pump-7/events", BEAT),
        input(5, "dosetrack/v1/devices/pump-7/events", PUMP_OFF),
    ]
}

#[test]
fn state_matches_the_offline_engine() {
    let mut tr = tracker();
    for i in all() {
        tr.apply(i);
    }
    let now = t("2026-11-27T09:30:00Z");
    let s = tr.state("P-1", now).unwrap();
    assert_eq!(s.model, "ketamine/kamp2020");
    assert_eq!(s.active_inputs.len(), 1);
    assert_eq!(s.active_inputs[0].source, "devices/pump-7");
    assert!(!s.stale);
    // The same inputs through the offline path.
    let events = "{\"id\":\"mar-1\",\"time\":\"2026-11-27T08:00:00Z\",\"route\":\"iv_bolus\",\"amount_mg\":20}\n\
        {\"device_id\":\"pump-7\",\"id\":\"p-1\",\"time\":\"2026-11-27T08:05:00Z\",\"kind\":\"infusion_started\",\"patient_id\":\"P-1\",\"rate_mg_per_h\":18}\n\
        {\"device_id\":\"pump-7\",\"id\":\"p-3\",\"time\":\"2026-11-27T10:00:00Z\",\"kind\":\"infusion_stopped\"}\n";
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let mut spec = PatientSpec::weight_only(72.0);
    spec.covariates.age_years = Some(41.0);
    let solved = crate::simulate::solve(
        &f,
        &spec,
        &crate::simulate::parse_events(events).unwrap(),
        None,
    )
    .unwrap();
    let c = solved.solution.at(now);
    assert!((s.cp_ng_per_ml - c.cp_ng_per_ml).abs() < 1e-3);
    assert!((s.ce_ng_per_ml - c.ce_ng_per_ml).abs() < 1e-3);
    // The pump stop is known: Ce falls below the floor after 10:00.
    let below = s.forecast.below_floor_at.unwrap();
    assert!(below.as_str() > "2026-11-27T10:00:00Z", "{below}");
}

#[test]
fn reconfigure_with_a_new_drug_file_equals_a_replay_with_it() {
    let lowered = crate::drug::BUILTIN_TOML.replacen(
        "[targets.ceiling_ng_per_ml]\nvalue = 500.0",
        "[targets.ceiling_ng_per_ml]\nvalue = 400.0",
        1,
    );
    assert_ne!(lowered, crate::drug::BUILTIN_TOML);
    let new = Arc::new(
        Formulary::new(DrugFile::from_toml_str(&lowered, std::path::Path::new("x.toml")).unwrap())
            .unwrap(),
    );
    let cfg = TrackerConfig {
        forecast_horizon_ms: 3_600_000,
        device_stale_after_ms: 60_000,
    };
    let now = t("2026-11-27T08:30:00Z");
    let mut live = tracker();
    for i in all() {
        live.apply(i);
    }
    let before = live.state("P-1", now).unwrap();
    assert_eq!(before.targets.ceiling_ng_per_ml, 500.0);
    live.reconfigure(new.clone(), cfg.clone());
    let mut replay = Tracker::new(new, cfg);
    for i in all() {
        replay.apply(i);
    }
    let after = live.state("P-1", now).unwrap();
    assert_eq!(after.targets.ceiling_ng_per_ml, 400.0);
    assert_eq!(after, replay.state("P-1", now).unwrap());
    assert_eq!(after.ce_ng_per_ml, before.ce_ng_per_ml, "inputs unchanged");
}

#[test]
fn a_stop_without_patient_id_ends_the_pump_segment() {
    let mut tr = tracker();
    for i in all() {
        tr.apply(i);
    }
    let s = tr.state("P-1", t("2026-11-27T11:00:00Z")).unwrap();
    assert!(s.active_inputs.is_empty(), "{:?}", s.active_inputs);
}

#[test]
fn out_of_order_arrival_gives_the_clean_replay_state() {
    let now = t("2026-11-27T11:00:00Z");
    let mut clean = tracker();
    for i in all() {
        clean.apply(i);
    }
    let mut shuffled = tracker();
    let mut inputs = all();
    inputs.reverse();
    for i in inputs {
        shuffled.apply(i);
    }
    assert_eq!(clean.state("P-1", now), shuffled.state("P-1", now));
    assert!(shuffled.unassigned().is_empty());
}

#[test]
fn inputs_wait_for_admission_and_association() {
    let mut tr = tracker();
    let inputs = all();
    // Dose before admission, heartbeat from a device with no patient yet.
    tr.apply(inputs[1].clone());
    tr.apply(inputs[3].clone());
    let u = tr.unassigned();
    assert_eq!(u.len(), 2);
    assert!(u[0].reason.contains("not been admitted"));
    assert!(u[1].reason.contains("no patient"));
    assert!(tr.state("P-1", t("2026-11-27T09:00:00Z")).is_none());
    tr.apply(inputs[0].clone());
    tr.apply(inputs[2].clone());
    assert!(tr.unassigned().is_empty(), "{:?}", tr.unassigned());
    assert!(tr.state("P-1", t("2026-11-27T09:00:00Z")).is_some());
}

#[test]
fn a_later_admission_changes_the_model_from_its_time_on() {
    let mut tr = tracker();
    for i in all() {
        tr.apply(i);
    }
    let before = tr.state("P-1", t("2026-11-27T09:30:00Z")).unwrap();
    tr.apply(input(
        6,
        "dosetrack/v1/patients/P-1/admit",
        r#"{"id":"adm-2","time":"2026-11-27T09:00:00Z","weight_kg":144,"age_years":41}"#,
    ));
    let early = tr.state("P-1", t("2026-11-27T08:30:00Z")).unwrap();
    let after = tr.state("P-1", t("2026-11-27T09:30:00Z")).unwrap();
    assert!(
        after.cp_ng_per_ml < before.cp_ng_per_ml,
        "twice the volume after 09:00"
    );
    let mut fresh = tracker();
    for i in all() {
        fresh.apply(i);
    }
    assert_eq!(
        early.cp_ng_per_ml,
        fresh
            .state("P-1", t("2026-11-27T08:30:00Z"))
            .unwrap()
            .cp_ng_per_ml
    );
}

#[test]
fn heartbeats_refresh_staleness_without_rebuilding_or_piling_up() {
    let mut tr = tracker();
    let inputs = all();
    for i in &inputs[..3] {
        tr.apply(i.clone());
    }
    assert!(tr.state("P-1", t("2026-11-27T08:30:00Z")).unwrap().stale);
    let before = tr.derived("P-1").unwrap();
    let retained = tr.retained_inputs();
    let touched = tr.apply(input(
        9,
        "dosetrack/v1/devices/pump-7/events",
        r#"{"id":"hb-9","time":"2026-11-27T08:29:00Z","kind":"heartbeat"}"#,
    ));
    assert_eq!(
        touched.into_iter().collect::<Vec<_>>(),
        vec!["P-1".to_owned()]
    );
    let after = tr.derived("P-1").unwrap();
    assert!(
        Arc::ptr_eq(&before, &after),
        "a heartbeat must not rebuild the model"
    );
    assert!(!tr.state("P-1", t("2026-11-27T08:30:00Z")).unwrap().stale);
    assert_eq!(
        tr.devices["pump-7"].events.len(),
        1,
        "attributed heartbeats are not kept"
    );
    // A thousand more: nothing retained grows.
    for n in 0..1_000 {
        tr.apply(input(
            100 + n,
            "dosetrack/v1/devices/pump-7/events",
            &format!(r#"{{"id":"hb-x{n}","time":"2026-11-27T08:29:30Z","kind":"heartbeat"}}"#),
        ));
    }
    assert_eq!(tr.retained_inputs(), retained, "heartbeats do not pile up");
    // An unattributable heartbeat is kept, and listed.
    tr.apply(input(
        10,
        "dosetrack/v1/devices/pump-99/events",
        r#"{"id":"hb-1","time":"2026-11-27T08:29:00Z","kind":"heartbeat"}"#,
    ));
    assert_eq!(tr.unassigned().len(), 1);
    assert_eq!(tr.retained_inputs(), retained + 1);
}

#[test]
fn a_quiet_delivering_device_makes_the_state_stale() {
    let mut tr = tracker();
    let inputs = all();
    for i in &inputs[..3] {
        tr.apply(i.clone());
    }
    assert!(!tr.state("P-1", t("2026-11-27T08:10:00Z")).unwrap().stale);
    let s = tr.state("P-1", t("2026-11-27T08:30:00Z")).unwrap();
    assert!(s.stale);
    assert_eq!(s.stale_devices, vec!["pump-7".to_owned()]);
}

#[test]
fn adults_of_any_weight_share_one_dynamics_on_a_weight_linear_model() {
    let mut tr = tracker();
    for (i, w) in [55.5, 72.0, 93.25].iter().enumerate() {
        let pid = format!("P-{i}");
        tr.apply(input(
            i as i64 * 10 + 1,
            &format!("dosetrack/v1/patients/{pid}/admit"),
            &format!(
                r#"{{"id":"a","time":"2026-11-27T08:00:00Z","weight_kg":{w},"age_years":40,"model":"domino"}}"#
            ),
        ));
        tr.apply(input(
            i as i64 * 10 + 2,
            &format!("dosetrack/v1/patients/{pid}/doses"),
            BOLUS,
        ));
    }
    let states: Vec<f64> = (0..3)
        .map(|i| {
            tr.state(&format!("P-{i}"), t("2026-11-27T08:30:00Z"))
                .unwrap()
                .cp_ng_per_ml
        })
        .collect();
    assert_eq!(tr.dynamics_count(), 1);
    // Same dose, larger volume, lower concentration (V1 linear in weight).
    assert!(states[0] > states[1] && states[1] > states[2], "{states:?}");
    assert!((states[0] * 55.5 - states[2] * 93.25).abs() < 1e-2 * states[0] * 55.5);
}

#[test]
fn admissions_are_resolved_once_and_match_a_fresh_resolve() {
    let mut tr = tracker();
    for i in all() {
        tr.apply(i);
    }
    let admit = r#"{"id":"a2","time":"2026-11-27T08:00:00Z","weight_kg":60,"age_years":30,"targets":{"ceiling_ng_per_ml":900}}"#;
    tr.apply(input(6, "dosetrack/v1/patients/P-2/admit", admit));
    tr.apply(input(7, "dosetrack/v1/patients/P-2/doses", BOLUS));
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    for (pid, payload) in [("P-1", ADMIT), ("P-2", admit)] {
        let i = input(0, &format!("dosetrack/v1/patients/{pid}/admit"), payload);
        let Input::Admit(a) = i.input else {
            panic!("not an admit")
        };
        let fresh = f.resolve(&spec_of(&a)).unwrap();
        let d = tr.derived(pid).unwrap();
        assert_eq!(*d.patient, fresh, "{pid}");
    }
    // Another input rebuilds from the same resolution.
    let before = tr.derived("P-1").unwrap();
    tr.apply(input(
        8,
        "dosetrack/v1/patients/P-1/doses",
        r#"{"id":"mar-2","time":"2026-11-27T08:30:00Z","route":"iv_bolus","amount_mg":5}"#,
    ));
    let after = tr.derived("P-1").unwrap();
    assert!(!Arc::ptr_eq(&before, &after), "rebuilt");
    assert!(
        Arc::ptr_eq(&before.patient, &after.patient),
        "not resolved again"
    );
    // The state lists the same assumption keys as a fresh resolve.
    let ceiling = |pid: &str, tr: &mut Tracker| {
        let s = tr.state(pid, t("2026-11-27T09:00:00Z")).unwrap();
        s.assumptions
            .iter()
            .any(|k| k == "targets.ceiling_ng_per_ml")
    };
    assert!(ceiling("P-1", &mut tr) && !ceiling("P-2", &mut tr));
}

#[test]
fn an_admission_that_does_not_resolve_is_reported_at_rebuild() {
    let mut tr = tracker();
    tr.apply(input(
        1,
        "dosetrack/v1/patients/P-1/admit",
        r#"{"id":"a","time":"2026-11-27T08:00:00Z","weight_kg":72,"model":"nope"}"#,
    ));
    assert!(tr.state("P-1", t("2026-11-27T09:00:00Z")).is_none());
    assert!(
        tr.error("P-1")
            .is_some_and(|e| e.to_string().contains("nope")),
        "{:?}",
        tr.error("P-1")
    );
}

#[test]
fn discharge_ends_tracking() {
    let mut tr = tracker();
    for i in all() {
        tr.apply(i);
    }
    tr.apply(input(
        7,
        "dosetrack/v1/patients/P-1/discharge",
        r#"{"id":"dis-1","time":"2026-11-27T12:00:00Z"}"#,
    ));
    assert_eq!(
        tr.tracked(t("2026-11-27T11:00:00Z")),
        vec!["P-1".to_owned()]
    );
    assert!(tr.tracked(t("2026-11-27T12:00:00Z")).is_empty());
}

#[test]
fn admissions_with_unknown_models_are_refused() {
    let tr = tracker();
    let i = input(
        1,
        "dosetrack/v1/patients/P-1/admit",
        r#"{"id":"a","time":"2026-11-27T08:00:00Z","weight_kg":72,"model":"nope"}"#,
    );
    let r = tr.check(&i.input).unwrap_err();
    assert_eq!(r.field.as_deref(), Some("model"));
    assert!(matches!(i.topic, InputTopic::Admit { .. }));
}

#[test]
fn the_association_rule() {
    use AssociationDecision::*;
    let d = association_decision;
    // No patient named, or the device's own: nothing changes.
    assert_eq!(d("infusion_stopped", None, Some("A")), Keep);
    assert_eq!(d("heartbeat", Some("A"), Some("A")), Keep);
    // A heartbeat or an alarm never associates, never moves.
    for kind in ["heartbeat", "alarm", "alarm_cleared"] {
        assert_eq!(d(kind, Some("B"), None), Keep, "{kind}");
        assert_eq!(
            d(kind, Some("B"), Some("A")),
            Conflict {
                associated: "A".into()
            },
            "{kind}"
        );
    }
    // Starts move the device; other delivery events only start one.
    for kind in ["infusion_started", "patch_applied"] {
        assert_eq!(
            d(kind, Some("B"), Some("A")),
            Associate {
                previous: Some("A".into())
            }
        );
    }
    for kind in [
        "infusion_rate_changed",
        "infusion_stopped",
        "bolus_delivered",
        "patch_removed",
        "patch_detached",
    ] {
        assert_eq!(d(kind, Some("B"), None), Associate { previous: None });
        assert_eq!(
            d(kind, Some("B"), Some("A")),
            Conflict {
                associated: "A".into()
            },
            "{kind}"
        );
    }
}

#[test]
fn a_heartbeat_naming_another_patient_does_not_take_the_pump() {
    let mut tr = tracker();
    tr.apply(input(1, "dosetrack/v1/patients/P-1/admit", ADMIT));
    tr.apply(input(
        2,
        "dosetrack/v1/patients/P-2/admit",
        r#"{"id":"adm-2","time":"2026-11-27T08:00:00Z","weight_kg":60}"#,
    ));
    tr.apply(input(3, "dosetrack/v1/devices/pump-7/events", PUMP_ON));
    // (The store refuses it; an older store may hold one.)
    tr.apply(input(
        4,
        "dosetrack/v1/devices/pump-7/events",
        r#"{"id":"hb-b","time":"2026-11-27T09:00:00Z","kind":"heartbeat","patient_id":"P-2"}"#,
    ));
    tr.apply(input(5, "dosetrack/v1/devices/pump-7/events", PUMP_OFF));
    let now = t("2026-11-27T10:30:00Z");
    assert!(tr.state("P-1", now).unwrap().active_inputs.is_empty());
    assert_eq!(tr.state("P-2", now).unwrap().ce_ng_per_ml, 0.0);
}

#[test]
fn a_pump_moved_to_another_patient_ends_the_first_patients_segment_with_a_note() {
    let mut tr = tracker();
    tr.apply(input(1, "dosetrack/v1/patients/P-1/admit", ADMIT));
    tr.apply(input(
        2,
        "dosetrack/v1/patients/P-2/admit",
        r#"{"id":"adm-2","time":"2026-11-27T08:00:00Z","weight_kg":60}"#,
    ));
    tr.apply(input(3, "dosetrack/v1/devices/pump-7/events", PUMP_ON));
    tr.apply(input(
        4,
        "dosetrack/v1/devices/pump-7/events",
        r#"{"id":"p-b","time":"2026-11-27T09:00:00Z","kind":"infusion_started","patient_id":"P-2","rate_mg_per_h":10}"#,
    ));
    let now = t("2026-11-27T09:30:00Z");
    assert!(tr.state("P-1", now).unwrap().active_inputs.is_empty());
    assert_eq!(tr.state("P-2", now).unwrap().active_inputs.len(), 1);
    let d = tr.derived("P-1").unwrap();
    let seg = &d.ledger.deliveries[0];
    assert_eq!(seg.end_ms, Some(t("2026-11-27T09:00:00Z")));
    assert_eq!(d.ledger.notes.len(), 1, "{:?}", d.ledger.notes);
    assert!(d.ledger.notes[0].message.contains("P-2"));
}

// ---- Stays (issue #13: readmission, late discharge, release) ----

fn admit_at(seq: i64, id: &str, time: &str) -> TrackedInput {
    input(
        seq,
        "dosetrack/v1/patients/P-1/admit",
        &format!(r#"{{"id":"{id}","time":"{time}","weight_kg":72,"age_years":41}}"#),
    )
}

fn discharge_at(seq: i64, id: &str, time: &str) -> TrackedInput {
    input(
        seq,
        "dosetrack/v1/patients/P-1/discharge",
        &format!(r#"{{"id":"{id}","time":"{time}"}}"#),
    )
}

fn bolus_at(seq: i64, id: &str, time: &str, mg: f64) -> TrackedInput {
    input(
        seq,
        "dosetrack/v1/patients/P-1/doses",
        &format!(r#"{{"id":"{id}","time":"{time}","route":"iv_bolus","amount_mg":{mg}}}"#),
    )
}

#[test]
fn stays_follow_admissions_and_discharges_in_occurrence_order() {
    let a = |t| (t, t);
    // admit, admit (covariates), discharge, discharge (repeat), admit.
    let stays = stays_of(&[a(0), a(5), a(30)], &[a(10), a(20)]);
    assert_eq!(
        stays,
        vec![
            Stay {
                start_ms: 0,
                end_ms: Some(10)
            },
            Stay {
                start_ms: 30,
                end_ms: None
            },
        ]
    );
    assert!(stays[0].contains(0) && stays[0].contains(9) && !stays[0].contains(10));
    // A discharge before any admission closes nothing.
    assert_eq!(
        stays_of(&[a(5)], &[a(1)]),
        vec![Stay {
            start_ms: 5,
            end_ms: None
        }]
    );
}

#[test]
fn a_readmitted_patient_is_tracked_and_alertable_again() {
    let mut tr = tracker();
    tr.apply(admit_at(1, "a1", "2026-11-27T08:00:00Z"));
    tr.apply(discharge_at(2, "d1", "2026-11-27T09:00:00Z"));
    tr.apply(admit_at(3, "a2", "2026-11-27T10:00:00Z"));
    tr.apply(bolus_at(4, "b1", "2026-11-27T10:05:00Z", 100.0));
    let between = t("2026-11-27T09:30:00Z");
    let now = t("2026-11-27T10:10:00Z");
    assert!(tr.tracked(between).is_empty());
    assert!(tr.stay_ended("P-1", between));
    assert!(tr.state("P-1", between).unwrap().discharged);
    assert_eq!(tr.tracked(now), vec!["P-1".to_owned()]);
    assert!(!tr.stay_ended("P-1", now));
    let s = tr.state("P-1", now).unwrap();
    assert!(!s.discharged);
    assert!(s.ce_ng_per_ml > 100.0, "{}", s.ce_ng_per_ml);
    assert_eq!(tr.stays("P-1").len(), 2);
    assert_eq!(tr.discharged_at("P-1"), None);
}

#[test]
fn a_late_discharge_closes_only_the_stay_it_falls_in() {
    let now = t("2026-11-27T10:10:00Z");
    // Every arrival order of the same four inputs gives the same stays.
    let inputs = [
        admit_at(1, "a1", "2026-11-27T08:00:00Z"),
        discharge_at(2, "d1", "2026-11-27T09:00:00Z"),
        admit_at(3, "a2", "2026-11-27T10:00:00Z"),
        bolus_at(4, "b1", "2026-11-27T10:05:00Z", 20.0),
    ];
    for order in [[0, 1, 2, 3], [0, 2, 3, 1], [2, 3, 1, 0], [3, 2, 0, 1]] {
        let mut tr = tracker();
        for (seq, &i) in order.iter().enumerate() {
            let mut x = inputs[i].clone();
            x.seq = seq as i64 + 1;
            tr.apply(x);
        }
        assert_eq!(tr.tracked(now), vec!["P-1".to_owned()], "{order:?}");
        assert_eq!(
            tr.stays("P-1"),
            &[
                Stay {
                    start_ms: t("2026-11-27T08:00:00Z"),
                    end_ms: Some(t("2026-11-27T09:00:00Z"))
                },
                Stay {
                    start_ms: t("2026-11-27T10:00:00Z"),
                    end_ms: None
                },
            ],
            "{order:?}"
        );
        assert!(!tr.state("P-1", now).unwrap().discharged, "{order:?}");
    }
}

#[test]
fn the_body_model_carries_doses_of_an_earlier_stay() {
    let mut tr = tracker();
    tr.apply(admit_at(1, "a1", "2026-11-27T08:00:00Z"));
    tr.apply(bolus_at(2, "b1", "2026-11-27T08:00:00Z", 100.0));
    tr.apply(discharge_at(3, "d1", "2026-11-27T08:20:00Z"));
    tr.apply(admit_at(4, "a2", "2026-11-27T08:30:00Z"));
    let s = tr.state("P-1", t("2026-11-27T08:40:00Z")).unwrap();
    assert!(s.ce_ng_per_ml > 10.0, "{}", s.ce_ng_per_ml);
}

fn stay_with_pump() -> Vec<TrackedInput> {
    let mut v = all();
    v.push(discharge_at(6, "d1", "2026-11-27T11:00:00Z"));
    v
}

#[test]
fn a_released_patient_leaves_memory_and_a_reload_equals_a_replay() {
    let mut tr = tracker();
    for i in stay_with_pump() {
        tr.apply(i);
    }
    let held = tr.retained_inputs();
    assert!(tr.releasable(t("2026-11-27T10:59:00Z")).is_empty());
    assert_eq!(
        tr.releasable(t("2026-11-27T11:00:00Z")),
        vec!["P-1".to_owned()]
    );
    assert!(tr.release("P-1"));
    assert!(!tr.release("P-1"));
    assert!(tr.is_released("P-1"));
    // Admission, bolus and the two pump delivery events are gone (the
    // association stays with the device).
    assert_eq!(tr.retained_inputs(), held - 4, "{held}");
    assert!(tr.tracked(t("2026-11-27T12:00:00Z")).is_empty());
    assert!(tr.stay_ended("P-1", t("2026-11-27T12:00:00Z")));
    assert!(tr.state("P-1", t("2026-11-27T12:00:00Z")).is_none());
    assert!(tr.unassigned().is_empty(), "{:?}", tr.unassigned());

    // A late, back-dated dose for the released patient.
    let late = bolus_at(7, "late", "2026-11-27T09:30:00Z", 30.0);
    assert_eq!(tr.needs_reload(&late), vec!["P-1".to_owned()]);
    // A heartbeat never reloads.
    let beat = input(
        8,
        "dosetrack/v1/devices/pump-7/events",
        r#"{"id":"p-9","time":"2026-11-27T11:30:00Z","kind":"heartbeat"}"#,
    );
    assert!(tr.needs_reload(&beat).is_empty());
    // A pump event without patient_id, attributed through the kept association.
    let alarm = input(
        9,
        "dosetrack/v1/devices/pump-7/events",
        r#"{"id":"p-10","time":"2026-11-27T09:40:00Z","kind":"alarm","code":"occlusion"}"#,
    );
    assert_eq!(tr.needs_reload(&alarm), vec!["P-1".to_owned()]);

    tr.reload("P-1", stay_with_pump());
    assert!(!tr.is_released("P-1"));
    tr.apply(late.clone());
    let mut fresh = tracker();
    for i in stay_with_pump() {
        fresh.apply(i);
    }
    fresh.apply(late);
    for at in [
        "2026-11-27T09:00:00Z",
        "2026-11-27T09:45:00Z",
        "2026-11-27T10:30:00Z",
    ] {
        let a = tr.state("P-1", t(at)).unwrap();
        let b = fresh.state("P-1", t(at)).unwrap();
        assert_eq!(a, b, "{at}");
    }
    assert_eq!(tr.retained_inputs(), fresh.retained_inputs());
}

/// The state carries relief now and until when: graded for the patient's
/// indication (the default when the admission names none), and relief
/// over weeks for chronic neuropathic pain after an infusion series.
#[test]
fn the_state_carries_relief_now_and_until_when() {
    let mut tr = tracker();
    tr.apply(input(1, "dosetrack/v1/patients/P-1/admit", ADMIT));
    tr.apply(input(2, "dosetrack/v1/patients/P-1/doses", BOLUS));
    // 10 min after a 20 mg bolus Ce is near its peak (above 100 ng/mL?).
    let s = tr.state("P-1", t("2026-11-27T08:10:00Z")).unwrap();
    let r = s.relief.as_ref().unwrap();
    assert_eq!(r.indication, "acute_pain");
    assert_eq!(r.target_relief_fraction, 0.5);
    let expected = s.ce_ng_per_ml / (100.0 + s.ce_ng_per_ml);
    assert!(
        (r.relief_fraction - expected).abs() < 2e-3,
        "{r:?} at Ce {}",
        s.ce_ng_per_ml
    );
    assert!(
        r.over_weeks.is_none(),
        "acute pain carries no relief over weeks"
    );
    if s.ce_ng_per_ml >= 100.0 {
        assert_eq!(r.relief_until, s.forecast.below_floor_at);
        assert!(r.relief_from.is_none());
    } else {
        assert!(r.relief_until.is_none());
    }
    // Right at the dose Ce is 0: relief from when it reaches the floor.
    let s0 = tr.state("P-1", t("2026-11-27T08:00:00Z")).unwrap();
    let r0 = s0.relief.unwrap();
    assert_eq!(r0.relief_fraction, 0.0);
    assert!(r0.relief_until.is_none());
    let from = r0.relief_from.expect("a 20 mg bolus reaches 100 ng/mL");
    assert!(from.as_str() > "2026-11-27T08:00:00Z" && from.as_str() < "2026-11-27T08:10:00Z");

    // Chronic neuropathic pain, 5 days x 4 h at 0.35 mg/kg/h (72 kg).
    let admit = r#"{"id":"adm-2","time":"2026-11-02T07:00:00Z","weight_kg":72,"age_years":41,"indication":"chronic_neuropathic"}"#;
    tr.apply(input(10, "dosetrack/v1/patients/P-2/admit", admit));
    for day in 0..5 {
        let dose = format!(
            r#"{{"id":"inf-{day}","time":"2026-11-0{}T08:00:00Z","route":"iv_infusion","rate_mg_per_h":25.2,"duration_min":240}}"#,
            day + 2
        );
        tr.apply(input(11 + day, "dosetrack/v1/patients/P-2/doses", &dose));
    }
    let s = tr.state("P-2", t("2026-11-27T08:00:00Z")).unwrap();
    assert_eq!(s.targets.analgesic_floor_ng_per_ml, 21.0);
    let r = s.relief.unwrap();
    assert_eq!(r.indication, "chronic_neuropathic");
    let w = r
        .over_weeks
        .expect("relief over weeks for chronic neuropathic pain");
    // Day 25 after the first infusion: fading, below its peak.
    assert!(
        w.relief_fraction > 0.0 && w.relief_fraction < w.peak_relief_fraction,
        "{w:?}"
    );
    assert!((0.3..0.5).contains(&w.peak_relief_fraction), "{w:?}");
    let due = w
        .below_half_of_peak_on
        .clone()
        .expect("falls below half within 90 days");
    assert!(
        due.as_str() > "2026-11-10" && due.as_str() < "2026-12-31",
        "{due}"
    );
    assert_eq!(w.response_probability, 0.67);
    // Same as the offline command's curve on the same day.
    let f = Formulary::new(DrugFile::builtin().unwrap()).unwrap();
    let spec = &f.drug().relief().unwrap().chronic;
    let d = tr.derived("P-2").unwrap();
    let offline = crate::relief::chronic_on(
        d.slow.as_ref().unwrap(),
        spec,
        t("2026-11-02T08:00:00Z"),
        90,
        3_600_000,
    );
    let day25 = offline
        .curve
        .iter()
        .find(|x| x.day == 25)
        .unwrap()
        .relief_fraction;
    assert!((day25 - w.relief_fraction).abs() < 1e-3, "{day25} vs {w:?}");
}

#[test]
fn a_held_heartbeat_leaves_once_an_association_covers_its_time() {
    let mut tr = tracker();
    let pump = "dosetrack/v1/devices/pump-3/events";
    let beat = |seq: i64, id: &str, time: &str| {
        input(
            seq,
            pump,
            &format!(r#"{{"id":"{id}","time":"{time}","kind":"heartbeat"}}"#),
        )
    };
    tr.apply(input(1, "dosetrack/v1/patients/P-1/admit", ADMIT));
    // Two heartbeats before the pump has a patient: held, unassigned.
    tr.apply(beat(2, "hb-a", "2026-11-27T08:01:00Z"));
    tr.apply(beat(3, "hb-b", "2026-11-27T08:10:00Z"));
    assert_eq!(tr.unowned_seqs("pump-3"), vec![2, 3]);
    // A late start at 08:05 covers the second one only.
    tr.apply(input(
        4,
        pump,
        r#"{"id":"s-1","time":"2026-11-27T08:05:00Z","kind":"infusion_started","patient_id":"P-1","rate_mg_per_h":10}"#,
    ));
    assert_eq!(tr.unowned_seqs("pump-3"), vec![2]);
    let held = tr.retained_inputs();
    // The same inputs in another arrival order hold the same.
    let mut other = tracker();
    other.apply(input(1, "dosetrack/v1/patients/P-1/admit", ADMIT));
    other.apply(input(
        4,
        pump,
        r#"{"id":"s-1","time":"2026-11-27T08:05:00Z","kind":"infusion_started","patient_id":"P-1","rate_mg_per_h":10}"#,
    ));
    other.apply(beat(3, "hb-b", "2026-11-27T08:10:00Z"));
    other.apply(beat(2, "hb-a", "2026-11-27T08:01:00Z"));
    assert_eq!(other.unowned_seqs("pump-3"), vec![2]);
    assert_eq!(other.retained_inputs(), held);
}

#[test]
fn release_drops_an_alarm_naming_the_patient_from_a_device_never_theirs() {
    let mut tr = tracker();
    tr.apply(input(1, "dosetrack/v1/patients/P-1/admit", ADMIT));
    // An alarm naming P-1 from a pump never associated with them (an
    // alarm does not associate): theirs.
    tr.apply(input(
        2,
        "dosetrack/v1/devices/pump-8/events",
        r#"{"id":"al-1","time":"2026-11-27T08:30:00Z","kind":"alarm","code":"occlusion","patient_id":"P-1"}"#,
    ));
    tr.apply(input(
        3,
        "dosetrack/v1/patients/P-1/discharge",
        r#"{"id":"dis-1","time":"2026-11-27T09:00:00Z"}"#,
    ));
    assert!(tr.unowned_seqs("pump-8").is_empty());
    assert!(tr.release("P-1"));
    // Gone with them, not left behind as "not admitted".
    assert!(
        tr.unowned_seqs("pump-8").is_empty(),
        "{:?}",
        tr.unassigned()
    );
    assert!(tr.unassigned().is_empty(), "{:?}", tr.unassigned());
}

#[test]
fn a_heartbeat_is_quiet_only_when_attributed_and_its_device_is_fresh() {
    let mut tr = tracker();
    let pump = "dosetrack/v1/devices/pump-7/events";
    let beat = |seq: i64, time: &str| {
        input(
            seq,
            pump,
            &format!(r#"{{"id":"hb-{seq}","time":"{time}","kind":"heartbeat"}}"#),
        )
    };
    // Unknown device: not quiet (it is new, and the heartbeat is held).
    assert!(!tr.is_quiet_heartbeat(&beat(1, "2026-11-27T08:00:00Z"), t("2026-11-27T08:00:01Z")));
    tr.apply(beat(1, "2026-11-27T08:00:00Z"));
    // Heard a second ago but no patient: held (unassigned count changes).
    assert!(!tr.is_quiet_heartbeat(&beat(2, "2026-11-27T08:00:30Z"), t("2026-11-27T08:00:31Z")));
    tr.apply(input(3, "dosetrack/v1/patients/P-1/admit", ADMIT));
    tr.apply(input(4, pump, PUMP_ON));
    let now = t("2026-11-27T08:06:00Z");
    // Attributed, heard a minute ago (the start at 08:05): quiet.
    assert!(tr.is_quiet_heartbeat(&beat(5, "2026-11-27T08:06:00Z"), now));
    assert!(!tr.state("P-1", now).unwrap().stale);
    // Twenty minutes of silence: the pump is stale, a heartbeat is news.
    let later = t("2026-11-27T08:26:00Z");
    assert!(tr.state("P-1", later).unwrap().stale);
    assert!(!tr.is_quiet_heartbeat(&beat(6, "2026-11-27T08:26:00Z"), later));
    tr.apply(beat(6, "2026-11-27T08:26:00Z"));
    assert!(!tr.state("P-1", later).unwrap().stale);
    // Not a heartbeat: never quiet.
    assert!(!tr.is_quiet_heartbeat(
        &input(
            7,
            pump,
            r#"{"id":"a-7","time":"2026-11-27T08:26:30Z","kind":"alarm","code":"occlusion"}"#
        ),
        later
    ));
}
