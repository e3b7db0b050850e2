//! The simulated ward day at a small size: deterministic, every raised
//! alert's condition confirmed by the independent check, and every alert's
//! lifecycle well-formed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dosetrack::alerts::{Phase, Rule, Scope};
use dosetrack::drug::DrugFile;
use dosetrack::patient::Formulary;
use dosetrack::sim::ward_day::{run, WardDayResult, WardDaySpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

fn formulary() -> Arc<Formulary> {
    Arc::new(Formulary::new(DrugFile::builtin().unwrap()).unwrap())
}

fn small() -> WardDaySpec {
    WardDaySpec::new(6, 8, 1)
}

/// The small day, run once for the tests that only read it.
fn day() -> &'static WardDayResult {
    static DAY: OnceLock<WardDayResult> = OnceLock::new();
    DAY.get_or_init(|| run(&small(), formulary()))
}

#[test]
fn same_seed_same_messages() {
    let again = run(&small(), formulary());
    assert_eq!(day().messages, again.messages);
    assert!(!again.messages.is_empty());
    // Another seed is another day.
    let other = run(&WardDaySpec::new(6, 8, 2), formulary());
    assert_ne!(day().messages, other.messages);
}

#[test]
fn every_raise_is_confirmed_by_the_independent_check() {
    let d = day();
    assert_eq!(d.inputs_rejected, 0, "{:?}", d.rejections);
    assert!(d.raised_checked > 0);
    assert!(d.violations.is_empty(), "{:#?}", d.violations);
}

#[test]
fn the_common_rules_fire_and_the_nurse_acknowledges() {
    let d = day();
    let raised = |r: Rule| d.phase_counts.get(&r).map_or(0, |c| c.raised);
    assert!(raised(Rule::RedoseDue) > 0, "{:#?}", d.phase_counts);
    let acked: u64 = d.phase_counts.values().map(|c| c.acknowledged).sum();
    assert!(acked > 0);
    assert!(
        d.patient_days > 1.5 && d.patient_days <= 2.0,
        "{}",
        d.patient_days
    );
    // Heartbeats keep delivering devices from being reported silent on
    // a day without device gaps.
    assert!(
        raised(Rule::DeviceSilent) <= 1,
        "device_silent raised {} times",
        raised(Rule::DeviceSilent)
    );
}

#[test]
fn no_second_raise_while_the_first_is_open() {
    let mut open: BTreeMap<(Scope, Rule, String), String> = BTreeMap::new();
    for m in &day().messages {
        let key = (m.scope.clone().unwrap(), m.rule, m.subject.clone());
        match m.phase {
            Phase::Raised => {
                if let Some(first) = open.insert(key.clone(), m.alert_id.clone()) {
                    panic!("{key:?} raised as {} while {first} is open", m.alert_id);
                }
            }
            Phase::Cleared => {
                assert_eq!(open.remove(&key).as_deref(), Some(m.alert_id.as_str()));
            }
            _ => assert_eq!(open.get(&key), Some(&m.alert_id), "{key:?}"),
        }
    }
}

#[test]
fn lifecycles_are_well_formed() {
    let mut seen: BTreeMap<&str, Vec<Phase>> = BTreeMap::new();
    let mut last_time: BTreeMap<&str, i64> = BTreeMap::new();
    for m in &day().messages {
        let phases = seen.entry(m.alert_id.as_str()).or_default();
        if phases.is_empty() {
            assert_eq!(
                m.phase,
                Phase::Raised,
                "{} starts with {:?}",
                m.alert_id,
                m.phase
            );
        } else {
            assert_ne!(m.phase, Phase::Raised, "{} raised twice", m.alert_id);
            assert!(
                !phases.contains(&Phase::Cleared),
                "{} has {:?} after cleared",
                m.alert_id,
                m.phase
            );
        }
        let t = last_time.entry(m.alert_id.as_str()).or_insert(m.time_ms);
        assert!(m.time_ms >= *t, "{} goes back in time", m.alert_id);
        *t = m.time_ms;
        phases.push(m.phase);
    }
    // At most one acknowledgement per alert.
    for (id, phases) in &seen {
        let acks = phases.iter().filter(|p| **p == Phase::Acknowledged).count();
        assert!(acks <= 1, "{id} acknowledged {acks} times");
    }
    let ids: BTreeSet<&str> = seen.keys().copied().collect();
    assert_eq!(ids.len() as u64, day().raised_checked);
}
