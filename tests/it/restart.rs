//! Restart from what the patients in care need (issue #16 item 2): the
//! tracker [`start_from_store`] builds from a store equals the one a full
//! replay of every stored input ([`rebuild`]) gives after releasing every
//! patient [`Tracker::releasable`] at the same cut-off — before and after
//! more inputs arrive (a released patient's late input or readmission
//! reloads them from the store in both).
//!
//! Random stores (proptest): five patients (one never admitted, one with
//! several stays), four devices (one never associated), admissions,
//! discharges, doses, pump events with and without `patient_id`, device
//! moves, heartbeats and alarms, in random arrival order (late events), and
//! a random cut-off. Everything the tracker shows is compared: released
//! patients, tracked patients, stays, state messages (Cp/Ce, forecast,
//! relief), model errors, unassigned inputs, devices heard and when,
//! unowned device events, orphan doses, inputs held.

use dosetrack::drug::DrugFile;
use dosetrack::intake::{self, Intake};
use dosetrack::patient::Formulary;
use dosetrack::service::{rebuild, start_from_store};
use dosetrack::store::{Reader, StoreConfig, StoreOutcome, WriteOp, WriteResult, Writer};
use dosetrack::tracker::{TrackedInput, Tracker, TrackerConfig};
use dosetrack::vocab::{format_rfc3339, TimeMs};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

const PREFIX: &str = "dosetrack";
const MIN: TimeMs = 60_000;
/// The store's "now": every input occurs in the three days before it.
const NOW: TimeMs = 1_796_000_000_000;
const SPAN: TimeMs = 3 * 24 * 60 * MIN;
const PATIENTS: [&str; 5] = ["P-0", "P-1", "P-2", "P-3", "P-never"];
const DEVICES: [&str; 4] = ["pump-0", "pump-1", "patch-2", "pump-idle"];

#[derive(Debug, Clone)]
enum Op {
    Admit {
        p: usize,
        t: TimeMs,
        kg: u32,
    },
    Discharge {
        p: usize,
        t: TimeMs,
    },
    Dose {
        p: usize,
        t: TimeMs,
        mg: u32,
    },
    Device {
        d: usize,
        t: TimeMs,
        kind: Kind,
        p: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Started(u32),
    RateChanged(u32),
    Stopped,
    Heartbeat,
    Alarm,
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..SPAN / MIN;
    let at = move |m: i64| NOW - SPAN + m * MIN;
    prop_oneof![
        2 => (0..4usize, t.clone(), 40..110u32).prop_map(move |(p, m, kg)| Op::Admit { p, t: at(m), kg }),
        2 => (0..4usize, t.clone()).prop_map(move |(p, m)| Op::Discharge { p, t: at(m) }),
        2 => (0..5usize, t.clone(), 5..40u32).prop_map(move |(p, m, mg)| Op::Dose { p, t: at(m), mg }),
        6 => (0..4usize, t, kind(), proptest::option::weighted(0.5, 0..5usize))
            .prop_map(move |(d, m, kind, p)| Op::Device { d, t: at(m), kind, p }),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => (5..30u32).prop_map(Kind::Started),
        1 => (5..30u32).prop_map(Kind::RateChanged),
        1 => Just(Kind::Stopped),
        3 => Just(Kind::Heartbeat),
        1 => Just(Kind::Alarm),
    ]
}

/// (topic, payload) of an op; `n` makes its id unique.
fn message(op: &Op, n: usize) -> (String, String) {
    let time = |t: TimeMs| format_rfc3339(t);
    match *op {
        Op::Admit { p, t, kg } => (
            format!("{PREFIX}/v1/patients/{}/admit", PATIENTS[p]),
            format!(
                r#"{{"id":"a{n}","time":"{}","weight_kg":{kg},"age_years":45}}"#,
                time(t)
            ),
        ),
        Op::Discharge { p, t } => (
            format!("{PREFIX}/v1/patients/{}/discharge", PATIENTS[p]),
            format!(r#"{{"id":"x{n}","time":"{}"}}"#, time(t)),
        ),
        Op::Dose { p, t, mg } => (
            format!("{PREFIX}/v1/patients/{}/doses", PATIENTS[p]),
            format!(
                r#"{{"id":"m{n}","time":"{}","route":"iv_bolus","amount_mg":{mg}}}"#,
                time(t)
            ),
        ),
        Op::Device { d, t, kind, p } => {
            let body = match kind {
                Kind::Started(r) => format!(r#""kind":"infusion_started","rate_mg_per_h":{r}"#),
                Kind::RateChanged(r) => format!(r#""kind":"rate_changed","rate_mg_per_h":{r}"#),
                Kind::Stopped => r#""kind":"infusion_stopped""#.to_owned(),
                Kind::Heartbeat => r#""kind":"heartbeat""#.to_owned(),
                Kind::Alarm => r#""kind":"alarm","code":"occlusion""#.to_owned(),
            };
            let patient = p
                .map(|p| format!(r#","patient_id":"{}""#, PATIENTS[p]))
                .unwrap_or_default();
            (
                format!("{PREFIX}/v1/devices/{}/events", DEVICES[d]),
                format!(r#"{{"id":"e{n}","time":"{}",{body}{patient}}}"#, time(t)),
            )
        }
    }
}

fn formulary() -> Arc<Formulary> {
    Arc::new(Formulary::new(DrugFile::builtin().unwrap()).unwrap())
}

/// Store `ops` (ids from `first`); returns how many were stored.
fn store(writer: &Writer, formulary: &Formulary, ops: &[Op], first: usize) -> usize {
    let mut stored = 0;
    for (i, op) in ops.iter().enumerate() {
        let (topic, payload) = message(op, first + i);
        if let Intake::Accept { record, .. } =
            intake::intake(PREFIX, &topic, payload.as_bytes(), NOW, 300_000, formulary)
        {
            if let Ok(WriteResult::Input(StoreOutcome::Inserted { .. })) =
                writer.write_blocking(WriteOp::Input(*record))
            {
                stored += 1;
            }
        }
    }
    stored
}

/// Everything the tracker shows, as text (Cp/Ce as their bits, through the
/// state messages' JSON).
fn view(tr: &mut Tracker, now: TimeMs) -> Vec<String> {
    let mut out = vec![format!("tracked {:?}", tr.tracked(now))];
    for p in PATIENTS {
        out.push(format!(
            "{p}: released {} stays {:?} error {:?} orphans {:?}",
            tr.is_released(p),
            tr.stays(p),
            tr.error(p),
            tr.orphan_seqs(p)
        ));
        let state = tr.state(p, now).map(|s| serde_json::to_string(&s).unwrap());
        out.push(format!("{p}: state {state:?}"));
        if let Some(d) = tr.derived(p) {
            for k in 0..48 {
                let c = d.solution.at(now - SPAN + k * SPAN / 40);
                out.push(format!(
                    "{p}: {} {:x} {:x}",
                    k,
                    c.cp_ng_per_ml.to_bits(),
                    c.ce_ng_per_ml.to_bits()
                ));
            }
        }
    }
    let devices: Vec<String> = tr.device_ids().map(str::to_owned).collect();
    out.push(format!("devices {devices:?}"));
    for d in &devices {
        out.push(format!(
            "{d}: heard {:?} unowned {:?}",
            tr.last_heard(d),
            tr.unowned_seqs(d)
        ));
    }
    out.push(format!("unassigned {:?}", tr.unassigned()));
    out.push(format!("held {}", tr.retained_inputs()));
    out.push(format!("released {}", tr.released_count()));
    out
}

/// Fails with the lines that differ (start, full replay).
fn same(start: Vec<String>, full: Vec<String>, when: &str) {
    let diff: Vec<(&String, &String)> = start.iter().zip(&full).filter(|(a, b)| a != b).collect();
    assert!(
        diff.is_empty() && start.len() == full.len(),
        "{when}: start vs full replay differ: {diff:#?}"
    );
}

fn new_tracker(formulary: &Arc<Formulary>) -> Tracker {
    Tracker::new(formulary.clone(), TrackerConfig::default())
}

/// Apply the stored inputs after `after_seq` as stage B does: a released
/// patient an input concerns is reloaded from the store first.
fn apply_later(tr: &mut Tracker, reader: &Reader, after_seq: i64) {
    for s in reader.inputs(after_seq).unwrap() {
        let input = intake::replay(&s).unwrap();
        for pid in tr.needs_reload(&input) {
            let inputs: Vec<TrackedInput> = reader
                .inputs_for_patient(&pid)
                .unwrap()
                .iter()
                .filter(|s| s.seq < input.seq)
                .filter_map(|s| intake::replay(s).ok())
                .collect();
            tr.reload(&pid, inputs);
        }
        tr.apply(input);
    }
}

fn last_seq(reader: &Reader) -> i64 {
    reader.inputs(0).unwrap().last().map_or(0, |s| s.seq)
}

/// Both ways from the store at `db`, compared; then `later` stored and
/// applied to both, compared again. Returns (stored, read at start).
fn check(db: &Path, ops: &[Op], cut: TimeMs, later: &[Op]) -> (usize, usize) {
    let formulary = formulary();
    let (writer, thread) = Writer::open(StoreConfig::new(db.to_path_buf())).unwrap();
    let stored = store(&writer, &formulary, ops, 0);
    let reader = Reader::open(db).unwrap();
    let none = BTreeSet::new();

    let mut full = new_tracker(&formulary);
    rebuild(&reader, &mut full, &none).unwrap();
    for p in full.releasable(cut) {
        full.release(&p);
    }
    let mut start = new_tracker(&formulary);
    let rebuilt = start_from_store(&reader, &mut start, &none, cut).unwrap();
    same(view(&mut start, NOW), view(&mut full, NOW), "at start");

    let before = last_seq(&reader);
    store(&writer, &formulary, later, ops.len());
    apply_later(&mut full, &reader, before);
    apply_later(&mut start, &reader, before);
    let after = NOW + 30 * MIN;
    same(
        view(&mut start, after),
        view(&mut full, after),
        "after later inputs",
    );
    drop(writer);
    thread.shutdown().unwrap();
    (stored, rebuilt.replayed)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_start_from_what_patients_in_care_need_equals_a_full_replay(
        ops in proptest::collection::vec(op(), 1..60),
        cut in 0..SPAN / MIN,
        later in proptest::collection::vec(op(), 0..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        check(&dir.path().join("restart.db"), &ops, NOW - SPAN + cut * MIN, &later);
    }
}

/// A fixed store: a stay that ended long ago (released: its inputs, its
/// pump's events and heartbeats are not read), a patient in care on the
/// same pump after it, an idle pump's heartbeats (held: unassigned), a
/// heartbeat before the pump's first association (held) and one after.
#[test]
fn a_start_reads_only_what_the_patients_in_care_need() {
    let h = |m: i64| NOW - SPAN + m * MIN;
    let ops = vec![
        Op::Device {
            d: 0,
            t: h(0),
            kind: Kind::Heartbeat,
            p: None,
        },
        Op::Admit {
            p: 0,
            t: h(10),
            kg: 70,
        },
        Op::Device {
            d: 0,
            t: h(20),
            kind: Kind::Started(20),
            p: Some(0),
        },
        Op::Device {
            d: 0,
            t: h(30),
            kind: Kind::Heartbeat,
            p: None,
        },
        Op::Device {
            d: 0,
            t: h(40),
            kind: Kind::Alarm,
            p: None,
        },
        Op::Dose {
            p: 0,
            t: h(50),
            mg: 10,
        },
        Op::Device {
            d: 0,
            t: h(60),
            kind: Kind::Stopped,
            p: None,
        },
        Op::Discharge { p: 0, t: h(70) },
        Op::Admit {
            p: 1,
            t: h(2000),
            kg: 80,
        },
        Op::Device {
            d: 0,
            t: h(2010),
            kind: Kind::Started(15),
            p: Some(1),
        },
        Op::Device {
            d: 0,
            t: h(2020),
            kind: Kind::Heartbeat,
            p: None,
        },
        Op::Device {
            d: 0,
            t: h(2030),
            kind: Kind::Alarm,
            p: None,
        },
        Op::Device {
            d: 3,
            t: h(2040),
            kind: Kind::Heartbeat,
            p: None,
        },
        Op::Device {
            d: 3,
            t: h(2050),
            kind: Kind::Heartbeat,
            p: None,
        },
        Op::Dose {
            p: 4,
            t: h(2060),
            mg: 5,
        },
    ];
    let later = vec![
        // A late dose for the released patient reloads them in both.
        Op::Dose {
            p: 0,
            t: h(65),
            mg: 5,
        },
        Op::Device {
            d: 0,
            t: h(2100),
            kind: Kind::RateChanged(10),
            p: None,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let (stored, read) = check(&dir.path().join("restart.db"), &ops, h(1000), &later);
    assert_eq!(stored, 15);
    // Not read: P-0's admission, start, dose, discharge (named), the pump's
    // heartbeat at 30 min and alarm and stop during P-0's association, and
    // the heartbeat at 2020 (attributed to P-1). Read: the heartbeat before
    // the first association, the association to P-0 (it attributes later
    // events), P-1's admission and start, the alarm at 2030, the idle
    // pump's two heartbeats and P-never's dose.
    assert_eq!(read, 8);
}
