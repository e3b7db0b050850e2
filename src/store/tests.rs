//! Tests of the store against real SQLite files in temporary directories:
//! schema and PRAGMAs, duplicates and conflicts, group commit, projections,
//! patient attribution of device events, history/state upserts, readers
//! beside the writer, lock contention, durability across a restart, and a
//! throughput print-out.

use super::apply::canonical_json;
use super::*;
use crate::contract::ErrorCode;
use rusqlite::Connection;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const T0: i64 = 1_795_773_600_000; // 2026-11-27T08:00:00Z

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dosetrack.sqlite");
    (dir, path)
}

fn open(path: &Path) -> (Writer, WriterThread) {
    Writer::open(StoreConfig::new(path)).unwrap()
}

fn open_with(path: &Path, f: impl FnOnce(&mut StoreConfig)) -> (Writer, WriterThread) {
    let mut cfg = StoreConfig::new(path);
    f(&mut cfg);
    Writer::open(cfg).unwrap()
}

/// A plain connection for inspecting what the store wrote.
fn inspect(path: &Path) -> Connection {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn dose(patient: &str, id: &str, t: i64, amount_mg: f64) -> InputRecord {
    let payload = json!({"id": id, "time": crate::vocab::format_rfc3339(t),
                         "route": "iv_bolus", "amount_mg": amount_mg})
    .to_string();
    InputRecord {
        topic: format!("dosetrack/v1/patients/{patient}/doses"),
        source: Source::Patient(patient.to_owned()),
        input_id: id.to_owned(),
        kind: "dose".to_owned(),
        patient_id: Some(patient.to_owned()),
        device_id: None,
        occurred_at_ms: t,
        received_at_ms: t + 5,
        parsed_json: json!({"route": "iv_bolus", "amount_mg": amount_mg}).to_string(),
        payload,
        projection: Projection::None,
    }
}

fn admit(patient: &str, id: &str, t: i64, weight_kg: f64) -> InputRecord {
    let payload = json!({"id": id, "time": crate::vocab::format_rfc3339(t),
                         "weight_kg": weight_kg, "comedications": ["midazolam"]})
    .to_string();
    InputRecord {
        topic: format!("dosetrack/v1/patients/{patient}/admit"),
        source: Source::Patient(patient.to_owned()),
        input_id: id.to_owned(),
        kind: "admit".to_owned(),
        patient_id: Some(patient.to_owned()),
        device_id: None,
        occurred_at_ms: t,
        received_at_ms: t,
        parsed_json: json!({"weight_kg": weight_kg}).to_string(),
        payload,
        projection: Projection::Admit(AdmitProjection {
            weight_kg,
            age_years: Some(41.0),
            sex: Some("female".to_owned()),
            height_cm: None,
            model: None,
            setting: "ward".to_owned(),
            comedications: vec!["midazolam".to_owned()],
            targets_json: json!({"ceiling_ng_per_ml": 500}).to_string(),
        }),
    }
}

fn discharge(patient: &str, id: &str, t: i64) -> InputRecord {
    InputRecord {
        topic: format!("dosetrack/v1/patients/{patient}/discharge"),
        source: Source::Patient(patient.to_owned()),
        input_id: id.to_owned(),
        kind: "discharge".to_owned(),
        patient_id: Some(patient.to_owned()),
        device_id: None,
        occurred_at_ms: t,
        received_at_ms: t,
        payload: json!({"id": id, "time": crate::vocab::format_rfc3339(t)}).to_string(),
        parsed_json: "{}".to_owned(),
        projection: Projection::Discharge,
    }
}

fn device_event(device: &str, id: &str, kind: &str, t: i64, patient: Option<&str>) -> InputRecord {
    let mut payload = json!({"id": id, "time": crate::vocab::format_rfc3339(t), "kind": kind});
    if let Some(p) = patient {
        payload["patient_id"] = json!(p);
    }
    InputRecord {
        topic: format!("dosetrack/v1/devices/{device}/events"),
        source: Source::Device(device.to_owned()),
        input_id: id.to_owned(),
        kind: kind.to_owned(),
        patient_id: patient.map(str::to_owned),
        device_id: Some(device.to_owned()),
        occurred_at_ms: t,
        received_at_ms: t,
        payload: payload.to_string(),
        parsed_json: json!({"kind": kind}).to_string(),
        projection: Projection::DeviceEvent {
            patient_id: patient.map(str::to_owned),
        },
    }
}

async fn put(w: &Writer, rec: InputRecord) -> StoreOutcome {
    match w.write(WriteOp::Input(rec)).await.unwrap() {
        WriteResult::Input(outcome) => outcome,
        other => panic!("unexpected {other:?}"),
    }
}

fn inserted_seq(outcome: StoreOutcome) -> i64 {
    match outcome {
        StoreOutcome::Inserted { seq } => seq,
        other => panic!("expected Inserted, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Schema, migrations, PRAGMAs.
// ---------------------------------------------------------------------------

#[test]
fn migrations_validate() {
    migrations().unwrap().validate().unwrap();
}

const TABLES: [&str; 14] = [
    "inputs",
    "rejected",
    "patients",
    "patient_covariates",
    "devices",
    "device_associations",
    "concentration_history",
    "published_state",
    "outbox",
    "alert_state",
    "alert_events",
    "alert_commands",
    "outbox_dead_letter",
    "rejection_counts",
];

fn schema_text(path: &Path) -> Vec<(String, String)> {
    let conn = inspect(path);
    let mut stmt = conn
        .prepare(
            "SELECT name, coalesce(sql, '') FROM sqlite_master
             WHERE name NOT LIKE 'sqlite_stat%' ORDER BY name",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn fresh_database_gets_every_table_and_reopening_is_a_no_op() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    w.write_blocking(WriteOp::Input(dose("P-1", "d-1", T0, 5.0)))
        .unwrap();
    thread.shutdown().unwrap();

    let before = schema_text(&path);
    let names: HashSet<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    let wanted: HashSet<&str> = TABLES.into_iter().collect();
    assert_eq!(wanted.len(), 14);
    for table in &wanted {
        assert!(names.contains(table), "missing table {table}");
    }
    assert!(names.contains("outbox_unpublished"));
    // Five migrations: 01-init, 02-alerts, 03-outbox-dead-letter,
    // 04-rejection-counts, 05-start-indexes.
    assert_eq!(count(&inspect(&path), "PRAGMA user_version"), 5);

    // Reopen: nothing is migrated again, data and schema are unchanged.
    let (w, thread) = open(&path);
    let again = w.write_blocking(WriteOp::Input(dose("P-1", "d-1", T0, 5.0)));
    assert!(matches!(
        again,
        Ok(WriteResult::Input(StoreOutcome::Duplicate { seq: 1 }))
    ));
    thread.shutdown().unwrap();
    assert_eq!(schema_text(&path), before);
    assert_eq!(count(&inspect(&path), "PRAGMA user_version"), 5);
    assert_eq!(count(&inspect(&path), "SELECT count(*) FROM inputs"), 1);
}

/// A database written by the first release (schema version 1, no alert
/// tables) is migrated at start and keeps its inputs.
#[test]
fn a_version_1_database_is_migrated_and_keeps_its_inputs() {
    let (_dir, path) = temp_db();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../../migrations/01-init/up.sql"))
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO inputs (topic, source_kind, source_id, input_id, kind, patient_id,
                                 occurred_at_ms, received_at_ms, payload, canonical, parsed)
             VALUES ('dosetrack/v1/patients/P-0/doses', 'patient', 'P-0', 'old', 'dose', 'P-0',
                     0, 0, '{}', '{}', '{}')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO inputs (topic, source_kind, source_id, input_id, kind, patient_id,
                                 occurred_at_ms, received_at_ms, payload, canonical, parsed)
             VALUES ('dosetrack/v1/patients/P-0/admit', 'patient', 'P-0', 'old-admit', 'admit',
                     'P-0', 0, 0, '{}', '{}', '{}')",
            [],
        )
        .unwrap();
    }
    {
        let (w, thread) = open(&path);
        w.write_blocking(WriteOp::Input(dose("P-1", "d-1", T0, 5.0)))
            .unwrap();
        thread.shutdown().unwrap();
    }
    let conn = inspect(&path);
    assert_eq!(count(&conn, "PRAGMA user_version"), 5);
    assert_eq!(count(&conn, "SELECT count(*) FROM alert_state"), 0);
    // The version-1 rows and the new one.
    assert_eq!(count(&conn, "SELECT count(*) FROM inputs"), 3);
    // The lifecycle index, rebuilt by 05 with its covering columns, holds
    // the old admission; the device index of 05 is there.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM inputs INDEXED BY inputs_patient_lifecycle
             WHERE kind IN ('admit', 'discharge') AND source_kind = 'patient'"
        ),
        1
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'inputs_device_unnamed_events'"
        ),
        1
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM inputs WHERE input_id = 'old'"),
        1
    );
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let (_dir, path) = temp_db();
    let (_w, thread) = open(&path);
    thread.shutdown().unwrap();
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 7)
        .unwrap();
    assert!(matches!(
        Writer::open(StoreConfig::new(&path)),
        Err(StoreError::SchemaVersion(_))
    ));
    assert!(matches!(
        Reader::open(&path),
        Err(StoreError::SchemaVersion(_))
    ));
}

/// `sqlite_stat1` rows of `inputs` as `PRAGMA optimize` left them on the
/// year of `benches/restart.rs` (10,166,533 inputs): sampled, so they
/// estimate 2,001 inputs per `source_kind` (there are three kinds).
const YEAR_STATISTICS: &str = "ANALYZE;
     DELETE FROM sqlite_stat1 WHERE tbl = 'inputs';
     INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
       ('inputs', 'sqlite_autoindex_inputs_1', '10166533 2001 32 1'),
       ('inputs', 'inputs_device_time', '9848728 2001 1 1'),
       ('inputs', 'inputs_patient_time', '513590 26 1 1'),
       ('inputs', 'inputs_patient_lifecycle', '40132 2 1 1 1 1'),
       ('inputs', 'inputs_device_unnamed_events', '20000 100 1 1');
     ANALYZE sqlite_schema;";

/// The lookups made for every input, the per-patient read and a start's
/// reads must use an index: a full scan of `inputs` would make each write
/// O(stored inputs), and a start O(history). Checked on a new store and
/// with the statistics a year's store had: with those the planner chose
/// the source index for the start's lifecycle read and visited every
/// patient input in the table (a 22-s start with a cold page cache,
/// docs/benchmarks.md), which the start's `INDEXED BY` now prevents.
#[test]
fn hot_queries_use_indexes() {
    let (_dir, path) = temp_db();
    let (_w, thread) = open(&path);
    thread.shutdown().unwrap();
    let cases = [
        (super::apply::SQL_FIND_INPUT, "sqlite_autoindex_inputs_1"),
        (
            super::apply::SQL_PATIENT_LIFECYCLE,
            "COVERING INDEX inputs_patient_lifecycle",
        ),
        (
            super::start::SQL_LIFECYCLE,
            "COVERING INDEX inputs_patient_lifecycle",
        ),
        (
            super::start::SQL_DEVICE_UNNAMED_SPAN,
            "INDEX inputs_device_unnamed_events",
        ),
        (super::apply::SQL_ASSOCIATION_AT, "PRIMARY KEY"),
        (super::read::SQL_INPUTS_FOR_PATIENT, "inputs_patient_time"),
        (super::read::SQL_INPUTS_FOR_PATIENT, "inputs_device_time"),
    ];
    for (statistics, rows) in [
        ("new store", None),
        ("a year's statistics", Some(YEAR_STATISTICS)),
    ] {
        let conn = Connection::open(&path).unwrap();
        if let Some(rows) = rows {
            conn.execute_batch(rows).unwrap();
        }
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let n = stmt.parameter_count();
            let args: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
            let rows: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.join(" | ")
        };
        for (sql, index) in cases {
            let p = plan(sql);
            println!("{statistics}: {p}");
            assert!(p.contains(index), "{statistics}: expected {index} in: {p}");
            for scan in ["SCAN inputs", "SCAN i ", "SCAN device_associations"] {
                assert!(
                    !format!("{p} ").contains(scan),
                    "{statistics}: full scan ({scan}) in: {p}"
                );
            }
        }
    }
}

#[tokio::test]
async fn writer_connection_is_wal_with_synchronous_full() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let p = w.pragmas().await.unwrap();
    assert_eq!(p.journal_mode.to_ascii_lowercase(), "wal");
    assert_eq!(p.synchronous, 2, "synchronous must be FULL");
    assert!(p.foreign_keys);
    assert_eq!(p.busy_timeout_ms, 5000);
    // journal_mode is persistent: a plain connection sees it too.
    assert_eq!(
        inspect(&path)
            .pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))
            .unwrap(),
        "wal"
    );
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// Duplicates and conflicts.
// ---------------------------------------------------------------------------

#[test]
fn canonical_form_ignores_key_order_and_whitespace_only() {
    let a = canonical_json(r#"{"b":1,"a":{"y":[3,1],"x":null},"c":"é"}"#).unwrap();
    let b =
        canonical_json("{ \"c\" : \"\\u00e9\",\n \"a\": {\"x\": null, \"y\": [3, 1]}, \"b\": 1 }")
            .unwrap();
    assert_eq!(a, b);
    assert_eq!(a, r#"{"a":{"x":null,"y":[3,1]},"b":1,"c":"é"}"#);
    // Array order and values matter.
    assert_ne!(
        a,
        canonical_json(r#"{"b":1,"a":{"y":[1,3],"x":null},"c":"é"}"#).unwrap()
    );
    assert_ne!(
        a,
        canonical_json(r#"{"b":2,"a":{"y":[3,1],"x":null},"c":"é"}"#).unwrap()
    );
    assert!(canonical_json("{not json").is_err());
}

#[tokio::test]
async fn insert_then_redelivery_is_duplicate_and_other_content_is_conflict() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);

    let s1 = inserted_seq(put(&w, dose("P-1", "mar-1", T0, 5.0)).await);
    let s2 = inserted_seq(put(&w, dose("P-1", "mar-2", T0 + 1000, 5.0)).await);
    assert!(s2 > s1);

    // The same message again, keys reordered and whitespace added.
    let mut again = dose("P-1", "mar-1", T0, 5.0);
    again.payload = format!(
        "{{ \"amount_mg\": 5.0,\n  \"route\": \"iv_bolus\", \"time\": \"{}\", \"id\": \"mar-1\" }}",
        crate::vocab::format_rfc3339(T0)
    );
    assert_eq!(put(&w, again).await, StoreOutcome::Duplicate { seq: s1 });

    // Same (source, id), other content.
    assert_eq!(
        put(&w, dose("P-1", "mar-1", T0, 50.0)).await,
        StoreOutcome::Conflict { seq: s1 }
    );
    // Same id from another source is another input.
    let s3 = inserted_seq(put(&w, dose("P-2", "mar-1", T0, 5.0)).await);
    assert!(s3 > s2);

    let reader = Reader::open(&path).unwrap();
    assert_eq!(reader.counts().unwrap().inputs, 3);
    let stored = reader.inputs(0).unwrap();
    let first = stored.iter().find(|i| i.seq == s1).unwrap();
    assert!(
        first.record.payload.contains("5.0"),
        "the original payload is kept"
    );
    assert_eq!(first.record.source, Source::Patient("P-1".to_owned()));
    assert_eq!(
        reader
            .inputs(s1)
            .unwrap()
            .iter()
            .map(|i| i.seq)
            .collect::<Vec<_>>(),
        vec![s2, s3]
    );
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_detected_within_one_batch() {
    let (_dir, path) = temp_db();
    let (w, thread) = open_with(&path, |c| c.batch_window = Duration::from_millis(300));
    let (a, b, c) = tokio::join!(
        w.write(WriteOp::Input(dose("P-1", "x", T0, 5.0))),
        w.write(WriteOp::Input(dose("P-1", "x", T0, 5.0))),
        w.write(WriteOp::Input(dose("P-1", "x", T0, 6.0))),
    );
    let seq = match a.unwrap() {
        WriteResult::Input(StoreOutcome::Inserted { seq }) => seq,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        b.unwrap(),
        WriteResult::Input(StoreOutcome::Duplicate { seq })
    );
    assert_eq!(
        c.unwrap(),
        WriteResult::Input(StoreOutcome::Conflict { seq })
    );
    let stats = w.stats();
    assert_eq!(stats.batches, 1, "all three in one batch: {stats:?}");
    assert_eq!(stats.commits, 1);
    assert_eq!(Reader::open(&path).unwrap().counts().unwrap().inputs, 1);
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// Group commit.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_2000_concurrent_writes() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let rec = dose(&format!("P-{}", i % 37), &format!("d-{i}"), T0 + i, 1.0);
            w.write(WriteOp::Input(rec)).await
        }));
    }
    let mut seqs = HashSet::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            WriteResult::Input(StoreOutcome::Inserted { seq }) => assert!(seqs.insert(seq)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs.len(), 2000);
    let stats = w.stats();
    println!("group commit: {stats:?}");
    assert_eq!(stats.ops, 2000);
    assert_eq!(stats.failed_batches, 0);
    assert!(
        stats.commits < 200,
        "2000 writes took {} commits: no group commit",
        stats.commits
    );
    assert!(stats.largest_batch > 10);

    let reader = Reader::open(&path).unwrap();
    let all = reader.inputs(0).unwrap();
    assert_eq!(all.len(), 2000);
    let ids: HashSet<(String, String)> = all
        .iter()
        .map(|i| (i.record.source.id().to_owned(), i.record.input_id.clone()))
        .collect();
    assert_eq!(ids.len(), 2000, "every row exactly once");
    // Paged (the start-up replay): the same rows in the same order, no page
    // longer than asked, an empty page at the end.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = reader.inputs_page(after, 300).unwrap();
        assert!(page.len() <= 300);
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all, "paging gives every input once, in seq order");
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_op_fails_alone_and_the_rest_of_its_batch_commits() {
    let (_dir, path) = temp_db();
    let (w, thread) = open_with(&path, |c| c.batch_window = Duration::from_millis(300));

    let mut not_json = dose("P-1", "bad-json", T0, 1.0);
    not_json.payload = "{\"id\": ".to_owned();
    let mut wrong_projection = dose("P-1", "wrong", T0, 1.0);
    wrong_projection.projection = Projection::Discharge; // kind is "dose"
    let mut nan_weight = admit("P-1", "adm-nan", T0, 70.0);
    if let Projection::Admit(a) = &mut nan_weight.projection {
        a.weight_kg = f64::NAN;
    }
    let nan_history = vec![
        HistoryRow {
            patient_id: "P-1".to_owned(),
            t_ms: T0,
            cp_ng_per_ml: 1.0,
            ce_ng_per_ml: 1.0,
        },
        HistoryRow {
            patient_id: "P-1".to_owned(),
            t_ms: T0 + 1,
            cp_ng_per_ml: f64::INFINITY,
            ce_ng_per_ml: 1.0,
        },
    ];

    // An op that fails after its first write (the input row is in, the
    // covariates insert fails): its savepoint must take the input row back.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER test_fail_covariates BEFORE INSERT ON patient_covariates
             WHEN NEW.weight_kg = 13 BEGIN SELECT RAISE(ABORT, 'test failure'); END;",
        )
        .unwrap();
    let fails_late = admit("P-1", "adm-13", T0, 13.0);

    let (a, b, c, d, e, g, f) = tokio::join!(
        w.write(WriteOp::Input(dose("P-1", "ok-1", T0, 1.0))),
        w.write(WriteOp::Input(not_json)),
        w.write(WriteOp::Input(wrong_projection)),
        w.write(WriteOp::Input(nan_weight)),
        w.write(WriteOp::History(nan_history)),
        w.write(WriteOp::Input(fails_late)),
        w.write(WriteOp::Input(dose("P-1", "ok-2", T0, 1.0))),
    );
    assert!(matches!(
        a,
        Ok(WriteResult::Input(StoreOutcome::Inserted { .. }))
    ));
    for bad in [b, c, d, e, g] {
        match bad {
            Err(err @ StoreError::InvalidRecord(_)) => assert!(!err.is_retryable()),
            other => panic!("expected InvalidRecord, got {other:?}"),
        }
    }
    assert!(matches!(
        f,
        Ok(WriteResult::Input(StoreOutcome::Inserted { .. }))
    ));
    let stats = w.stats();
    assert_eq!((stats.batches, stats.commits), (1, 1), "{stats:?}");

    let counts = Reader::open(&path).unwrap().counts().unwrap();
    assert_eq!(counts.inputs, 2);
    assert_eq!(counts.patients, 0, "the failed admits left nothing behind");
    assert_eq!(counts.history_rows, 0, "a history op is all or nothing");
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// Projections.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn admit_discharge_projections() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let reader = Reader::open(&path).unwrap();

    let a1 = inserted_seq(put(&w, admit("P-1", "adm-1", T0, 70.0)).await);
    let p = reader.patients().unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].patient_id, "P-1");
    assert_eq!(p[0].first_admitted_at_ms, T0);
    assert_eq!(p[0].last_admit_seq, a1);
    assert_eq!(p[0].discharged_at_ms, None);
    let db = inspect(&path);
    assert_eq!(count(&db, "SELECT count(*) FROM patient_covariates"), 1);
    let (weight, comeds, targets, sex): (f64, String, String, String) = db
        .query_row(
            "SELECT weight_kg, comedications, targets, sex FROM patient_covariates",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(weight, 70.0);
    assert_eq!(comeds, r#"["midazolam"]"#);
    assert_eq!(targets, r#"{"ceiling_ng_per_ml":500}"#);
    assert_eq!(sex, "female");

    // A second admit (new weight) adds a covariate row.
    let a2 = inserted_seq(put(&w, admit("P-1", "adm-2", T0 + 3_600_000, 72.0)).await);
    assert_eq!(count(&db, "SELECT count(*) FROM patient_covariates"), 2);
    let valid_from: Vec<i64> = db
        .prepare("SELECT valid_from_ms FROM patient_covariates ORDER BY valid_from_ms")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(valid_from, vec![T0, T0 + 3_600_000]);
    let p = reader.patients().unwrap();
    assert_eq!(p[0].last_admit_seq, a2);
    assert_eq!(p[0].first_admitted_at_ms, T0);

    // A redelivered admit changes nothing.
    assert_eq!(
        put(&w, admit("P-1", "adm-1", T0, 70.0)).await,
        StoreOutcome::Duplicate { seq: a1 }
    );
    assert_eq!(count(&db, "SELECT count(*) FROM patient_covariates"), 2);

    // Discharge.
    let t_dis = T0 + 7_200_000;
    put(&w, discharge("P-1", "dis-1", t_dis)).await;
    assert_eq!(reader.patients().unwrap()[0].discharged_at_ms, Some(t_dis));

    // A late admit that happened before the discharge does not undo it.
    put(&w, admit("P-1", "adm-late", T0 + 60_000, 71.0)).await;
    assert_eq!(reader.patients().unwrap()[0].discharged_at_ms, Some(t_dis));
    // A re-admission after the discharge does.
    put(&w, admit("P-1", "adm-3", t_dis + 60_000, 71.0)).await;
    assert_eq!(reader.patients().unwrap()[0].discharged_at_ms, None);

    // A discharge for a patient never admitted is stored but projects nothing.
    put(&w, discharge("P-9", "dis-9", T0)).await;
    assert_eq!(reader.patients().unwrap().len(), 1);
    assert_eq!(reader.counts().unwrap().inputs, 6);
    // ... until its admit arrives (late, earlier in time): then it counts.
    put(&w, admit("P-9", "adm-9", T0 - 60_000, 80.0)).await;
    let p9 = reader
        .patients()
        .unwrap()
        .into_iter()
        .find(|p| p.patient_id == "P-9")
        .unwrap();
    assert_eq!(p9.discharged_at_ms, Some(T0));
    assert_eq!(p9.first_admitted_at_ms, T0 - 60_000);

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn device_associations_are_written_only_on_change() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let m = 60_000;
    put(
        &w,
        device_event("pump-7", "e1", "infusion_started", T0, Some("P-1")),
    )
    .await;
    put(
        &w,
        device_event("pump-7", "e2", "infusion_rate_changed", T0 + m, Some("P-1")),
    )
    .await;
    put(
        &w,
        device_event("pump-7", "e3", "heartbeat", T0 + 2 * m, None),
    )
    .await;
    put(
        &w,
        device_event("pump-7", "e4", "infusion_started", T0 + 3 * m, Some("P-2")),
    )
    .await;
    put(
        &w,
        device_event("pump-7", "e5", "heartbeat", T0 + 4 * m, Some("P-2")),
    )
    .await;
    put(
        &w,
        device_event("patch-2", "e1", "patch_applied", T0, Some("P-1")),
    )
    .await;

    let db = inspect(&path);
    let rows: Vec<(String, String, i64)> = db
        .prepare("SELECT device_id, patient_id, from_ms FROM device_associations ORDER BY device_id, from_ms")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            ("patch-2".to_owned(), "P-1".to_owned(), T0),
            ("pump-7".to_owned(), "P-1".to_owned(), T0),
            ("pump-7".to_owned(), "P-2".to_owned(), T0 + 3 * m),
        ]
    );
    let (first, last): (i64, i64) = db
        .query_row(
            "SELECT first_seen_ms, last_heard_ms FROM devices WHERE device_id = 'pump-7'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((first, last), (T0, T0 + 4 * m));
    assert_eq!(Reader::open(&path).unwrap().counts().unwrap().devices, 2);

    // A late event back on P-1 inside P-1's period: no change.
    put(
        &w,
        device_event(
            "pump-7",
            "e6",
            "bolus_delivered",
            T0 + 2 * m + 1,
            Some("P-1"),
        ),
    )
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM device_associations"), 3);
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn inputs_for_patient_attributes_device_events_by_association_at_their_time() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let m = 60_000;
    put(
        &w,
        device_event("pump-7", "e1", "infusion_started", T0 + 10 * m, Some("P-1")),
    )
    .await;
    put(&w, dose("P-1", "mar-1", T0 + 15 * m, 5.0)).await;
    put(
        &w,
        device_event("pump-7", "e2", "heartbeat", T0 + 20 * m, None),
    )
    .await;
    put(
        &w,
        device_event("pump-7", "e3", "infusion_started", T0 + 30 * m, Some("P-2")),
    )
    .await;
    put(&w, device_event("pump-7", "e4", "alarm", T0 + 40 * m, None)).await;
    // Arrives late; happened while the pump was still on P-1.
    put(
        &w,
        device_event("pump-7", "e5", "heartbeat", T0 + 25 * m, None),
    )
    .await;
    // Before the pump had any patient: nobody's.
    put(&w, device_event("pump-7", "e0", "heartbeat", T0, None)).await;
    put(&w, dose("P-2", "mar-1", T0 + 35 * m, 5.0)).await;

    let reader = Reader::open(&path).unwrap();
    let ids = |p: &str| -> Vec<(String, String)> {
        reader
            .inputs_for_patient(p)
            .unwrap()
            .into_iter()
            .map(|i| (i.record.source.id().to_owned(), i.record.input_id))
            .collect()
    };
    let pair = |s: &str, i: &str| (s.to_owned(), i.to_owned());
    assert_eq!(
        ids("P-1"),
        vec![
            pair("pump-7", "e1"),
            pair("P-1", "mar-1"),
            pair("pump-7", "e2"),
            pair("pump-7", "e5")
        ]
    );
    assert_eq!(
        ids("P-2"),
        vec![
            pair("pump-7", "e3"),
            pair("P-2", "mar-1"),
            pair("pump-7", "e4")
        ]
    );
    assert!(ids("P-3").is_empty());

    // The pump moves back to P-1 at 38 min: the 40 min alarm is P-1's now.
    put(
        &w,
        device_event("pump-7", "e6", "infusion_started", T0 + 38 * m, Some("P-1")),
    )
    .await;
    assert!(ids("P-1").contains(&pair("pump-7", "e4")));
    assert!(!ids("P-2").contains(&pair("pump-7", "e4")));

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// History, published state, rejected.
// ---------------------------------------------------------------------------

fn point(p: &str, t: i64, cp: f64) -> HistoryRow {
    HistoryRow {
        patient_id: p.to_owned(),
        t_ms: t,
        cp_ng_per_ml: cp,
        ce_ng_per_ml: cp / 2.0,
    }
}

#[tokio::test]
async fn history_and_state_upserts() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let reader = Reader::open(&path).unwrap();

    let first: Vec<HistoryRow> = (0..10)
        .map(|i| point("P-1", T0 + i * 1000, 100.0))
        .collect();
    w.write(WriteOp::History(first)).await.unwrap();
    w.write(WriteOp::History(vec![point("P-2", T0, 7.0)]))
        .await
        .unwrap();
    // A recompute overwrites points 5..=9 and adds 10..=12.
    let recomputed: Vec<HistoryRow> = (5..13)
        .map(|i| point("P-1", T0 + i * 1000, 200.0))
        .collect();
    assert_eq!(
        w.write(WriteOp::History(recomputed)).await.unwrap(),
        WriteResult::Written
    );

    let all = reader.history("P-1", None, None).unwrap();
    assert_eq!(all.len(), 13);
    assert!(all.windows(2).all(|p| p[0].t_ms < p[1].t_ms));
    assert_eq!(all[4].cp_ng_per_ml, 100.0);
    assert_eq!(all[5].cp_ng_per_ml, 200.0);
    assert_eq!(all[5].ce_ng_per_ml, 100.0);
    assert_eq!(reader.counts().unwrap().history_rows, 14);

    let window = reader
        .history("P-1", Some(T0 + 3000), Some(T0 + 6000))
        .unwrap();
    assert_eq!(
        window.iter().map(|r| r.t_ms - T0).collect::<Vec<_>>(),
        vec![3000, 4000, 5000, 6000]
    );
    assert_eq!(
        reader
            .history("P-1", Some(T0 + 11_000), None)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(reader.history("P-1", None, Some(T0)).unwrap().len(), 1);
    assert!(reader.history("P-3", None, None).unwrap().is_empty());

    // Published state: last one wins; patients() carries it.
    put(&w, admit("P-1", "adm-1", T0, 70.0)).await;
    put(&w, admit("P-2", "adm-1", T0, 70.0)).await;
    for (t, body) in [(T0 + 60_000, "s1"), (T0 + 120_000, "s2")] {
        w.write(WriteOp::State {
            patient_id: "P-1".to_owned(),
            time_ms: t,
            payload: json!({"state": body}).to_string(),
        })
        .await
        .unwrap();
    }
    let patients = reader.patients().unwrap();
    assert_eq!(patients.len(), 2);
    let p1 = &patients[0];
    assert_eq!(p1.patient_id, "P-1");
    assert_eq!(
        p1.last_state,
        Some(PublishedState {
            time_ms: T0 + 120_000,
            payload: r#"{"state":"s2"}"#.to_owned()
        })
    );
    assert_eq!(patients[1].last_state, None);
    assert_eq!(
        count(&inspect(&path), "SELECT count(*) FROM published_state"),
        1
    );

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn derived_records_states_and_history_in_one_op_all_or_nothing() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let reader = Reader::open(&path).unwrap();
    put(&w, admit("P-1", "adm-1", T0, 70.0)).await;
    put(&w, admit("P-2", "adm-1", T0, 70.0)).await;
    let state = |p: &str, t: i64, body: &str| StateRow {
        patient_id: p.to_owned(),
        time_ms: t,
        payload: json!({"state": body}).to_string(),
    };
    let op = WriteOp::Derived {
        states: vec![state("P-1", T0 + 1000, "a"), state("P-2", T0 + 1000, "b")],
        history: vec![
            point("P-1", T0 + 1000, 10.0),
            point("P-2", T0 + 1000, 20.0),
            point("P-2", T0, 5.0),
        ],
        replace_history_from: Vec::new(),
    };
    assert_eq!(w.write(op).await.unwrap(), WriteResult::Written);
    let patients = reader.patients().unwrap();
    assert_eq!(
        patients
            .iter()
            .map(|p| p.last_state.as_ref().map(|s| s.payload.clone()))
            .collect::<Vec<_>>(),
        vec![
            Some(r#"{"state":"a"}"#.to_owned()),
            Some(r#"{"state":"b"}"#.to_owned())
        ]
    );
    assert_eq!(reader.counts().unwrap().history_rows, 3);

    // A non-finite point refuses the whole op: no state of it is stored.
    let bad = WriteOp::Derived {
        states: vec![state("P-1", T0 + 2000, "c")],
        history: vec![point("P-1", T0 + 2000, f64::NAN)],
        replace_history_from: vec![("P-1".to_owned(), T0)],
    };
    assert!(matches!(
        w.write(bad).await,
        Err(StoreError::InvalidRecord(_))
    ));
    assert_eq!(
        reader.patients().unwrap()[0]
            .last_state
            .as_ref()
            .unwrap()
            .payload,
        r#"{"state":"a"}"#
    );
    assert_eq!(reader.counts().unwrap().history_rows, 3);

    // A recompute from a time replaces every stored point of that patient
    // from then on, in the same op (the refused op above deleted nothing).
    let replace = WriteOp::Derived {
        states: Vec::new(),
        history: vec![point("P-2", T0 + 3000, 30.0)],
        replace_history_from: vec![("P-2".to_owned(), T0 + 500)],
    };
    assert_eq!(w.write(replace).await.unwrap(), WriteResult::Written);
    let p2: Vec<(i64, f64)> = reader
        .history("P-2", None, None)
        .unwrap()
        .iter()
        .map(|r| (r.t_ms, r.ce_ng_per_ml))
        .collect();
    assert_eq!(
        p2.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![T0, T0 + 3000]
    );
    assert_eq!(reader.history("P-1", None, None).unwrap().len(), 1);

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn rejected_messages_keep_64_kib_of_any_bytes_and_the_full_length() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let huge: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8 | 0x80).collect();
    let records = [
        RejectedRecord {
            topic: "dosetrack/v1/devices/pump-7/events".to_owned(),
            received_at_ms: T0,
            code: ErrorCode::TooLarge,
            field: None,
            message: "payload over 64 KiB".to_owned(),
            payload: huge.clone(),
        },
        RejectedRecord {
            topic: "dosetrack/v1/patients/P-1/doses".to_owned(),
            received_at_ms: T0 + 1,
            code: ErrorCode::InvalidValue,
            field: Some("amount_mg".to_owned()),
            message: "amount_mg must be > 0".to_owned(),
            payload: b"{\"amount_mg\": -1}".to_vec(),
        },
        RejectedRecord {
            topic: "weird/\u{0}/topic".to_owned(),
            received_at_ms: T0 + 2,
            code: ErrorCode::BadTopic,
            field: None,
            message: String::new(),
            payload: Vec::new(),
        },
    ];
    for r in records {
        assert_eq!(
            w.write(WriteOp::Rejected(r)).await.unwrap(),
            WriteResult::Written
        );
    }
    let reader = Reader::open(&path).unwrap();
    let rows = reader.rejected(10).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].topic, "weird/\u{0}/topic", "newest first");
    assert_eq!(rows[1].error_code(), Some(ErrorCode::InvalidValue));
    assert_eq!(rows[1].field.as_deref(), Some("amount_mg"));
    let big = &rows[2];
    assert_eq!(big.code, "too_large");
    assert_eq!(big.payload_len, 1_048_576);
    assert_eq!(big.payload.len(), 64 * 1024);
    assert_eq!(big.payload[..], huge[..64 * 1024]);
    assert_eq!(reader.rejected(1).unwrap().len(), 1);
    assert_eq!(reader.counts().unwrap().rejected, 3);
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// Concurrency with readers and other connections.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_commits_and_never_block_the_writer() {
    let (_dir, path) = temp_db();
    // A short busy timeout: if a reader blocked the writer, writes would fail.
    let (w, thread) = open_with(&path, |c| c.busy_timeout = Duration::from_millis(100));

    // A reader holding a read transaction open for the whole test.
    let held = inspect(&path);
    held.execute_batch("BEGIN").unwrap();
    assert_eq!(count(&held, "SELECT count(*) FROM inputs"), 0);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stops the poller even when an assertion below fails (else the
    // runtime would wait for it forever).
    struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _guard = StopOnDrop(stop.clone());
    let poller = {
        let path = path.clone();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let reader = Reader::open(&path).unwrap();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(reader.counts().unwrap().inputs);
                std::thread::sleep(Duration::from_millis(1));
            }
            seen.push(reader.counts().unwrap().inputs);
            seen
        })
    };

    let mut tasks = Vec::new();
    for i in 0..1000 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.write(WriteOp::Input(dose("P-1", &format!("d-{i}"), T0 + i, 1.0)))
                .await
        }));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = poller.await.unwrap();
    assert!(
        seen.windows(2).all(|s| s[0] <= s[1]),
        "counts never go back"
    );
    assert_eq!(*seen.last().unwrap(), 1000);
    assert!(seen.len() > 2);
    assert_eq!(w.stats().failed_batches, 0);

    // The held snapshot still sees the state from its start.
    assert_eq!(count(&held, "SELECT count(*) FROM inputs"), 0);
    held.execute_batch("COMMIT").unwrap();
    assert_eq!(count(&held, "SELECT count(*) FROM inputs"), 1000);

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_lock_fails_the_batch_and_the_writer_recovers() {
    let (_dir, path) = temp_db();
    let (w, thread) = open_with(&path, |c| c.busy_timeout = Duration::from_millis(100));
    put(&w, dose("P-1", "before", T0, 1.0)).await;

    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let started = Instant::now();
    let (a, b) = tokio::join!(
        w.write(WriteOp::Input(dose("P-1", "during-1", T0, 1.0))),
        w.write(WriteOp::History(vec![point("P-1", T0, 1.0)])),
    );
    let elapsed = started.elapsed();
    for r in [a, b] {
        match r {
            Err(
                ref err @ StoreError::BatchFailed {
                    stage: "begin",
                    code: Some(rusqlite::ErrorCode::DatabaseBusy),
                    ..
                },
            ) => assert!(err.is_retryable()),
            other => panic!("expected a busy BatchFailed, got {other:?}"),
        }
    }
    assert!(elapsed < Duration::from_secs(3), "no hang: {elapsed:?}");
    assert!(w.stats().failed_batches >= 1);

    other.execute_batch("COMMIT").unwrap();
    // The same op again now succeeds: nothing of it had been stored.
    assert!(matches!(
        put(&w, dose("P-1", "during-1", T0, 1.0)).await,
        StoreOutcome::Inserted { .. }
    ));
    let counts = Reader::open(&path).unwrap().counts().unwrap();
    assert_eq!((counts.inputs, counts.history_rows), (2, 0));

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// Database care: retention, checkpoint, optimize.
// ---------------------------------------------------------------------------

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Rows of every table but `concentration_history`: what maintenance must
/// never touch.
fn record_counts(path: &Path) -> Vec<(String, i64)> {
    let conn = inspect(path);
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name != 'concentration_history' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let n = count(&conn, &format!("SELECT count(*) FROM \"{t}\""));
            (t, n)
        })
        .collect()
}

fn wal_len(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).unwrap().len()
}

fn maintenance_cfg(retention_days: Option<i64>, batch: usize) -> MaintenanceConfig {
    MaintenanceConfig {
        history_retention: retention_days.map(|d| Duration::from_millis((d * DAY_MS) as u64)),
        interval: Duration::from_secs(3600),
        prune_batch_rows: batch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_old_history_and_the_checkpoint_truncates_the_wal() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let now = T0 + 100 * DAY_MS;
    // Hourly points: P-a entirely before the cutoff, P-b across it, P-c
    // after it; P-0 has a single point exactly at the cutoff (kept).
    let cutoff = now - 30 * DAY_MS;
    let mut all: Vec<HistoryRow> = Vec::new();
    for (p, from, to) in [
        ("P-a", T0, T0 + 20 * DAY_MS),
        ("P-b", T0 + 50 * DAY_MS, now),
        ("P-c", now - 10 * DAY_MS, now),
    ] {
        let mut t = from;
        while t <= to {
            all.push(point(p, t, 10.0));
            t += HOUR_MS;
        }
    }
    all.push(point("P-0", cutoff, 1.0));
    for chunk in all.chunks(500) {
        w.write(WriteOp::History(chunk.to_vec())).await.unwrap();
    }
    // The record, all of it older than the cutoff: an admit, a dose, a
    // rejected message, a published state, an alert with its lifecycle
    // message and outbox row. None of it may be deleted.
    put(&w, admit("P-a", "adm-1", T0, 70.0)).await;
    put(&w, dose("P-a", "dose-1", T0 + HOUR_MS, 20.0)).await;
    w.write(WriteOp::Rejected(RejectedRecord {
        topic: "dosetrack/v1/patients/P-a/doses".to_owned(),
        received_at_ms: T0,
        code: ErrorCode::InvalidValue,
        field: Some("amount_mg".to_owned()),
        message: "amount_mg must be > 0".to_owned(),
        payload: b"{}".to_vec(),
    }))
    .await
    .unwrap();
    w.write(WriteOp::State {
        patient_id: "P-a".to_owned(),
        time_ms: T0,
        payload: "{}".to_owned(),
    })
    .await
    .unwrap();
    {
        let raw = Connection::open(&path).unwrap();
        raw.busy_timeout(Duration::from_secs(5)).unwrap();
        raw.execute_batch(&format!(
            "INSERT INTO alert_state VALUES ('al-1-x', 1, 'patient', 'P-a', 'concentration_high',
                 'P-a', 0, {T0}, {T0}, '{{}}');
             INSERT INTO alert_events (alert_id, patient_id, rule, phase, priority, time_ms, payload)
                 VALUES ('al-1-x', 'P-a', 'concentration_high', 'raised', 'high', {T0}, '{{}}');
             INSERT INTO outbox (topic, payload, retained, qos, created_at_ms)
                 VALUES ('t', '{{}}', 1, 1, {T0});"
        ))
        .unwrap();
    }
    let records_before = record_counts(&path);
    assert_eq!(
        records_before
            .iter()
            .filter(|(t, n)| [
                "inputs",
                "rejected",
                "published_state",
                "alert_state",
                "alert_events",
                "outbox"
            ]
            .contains(&t.as_str())
                && *n > 0)
            .count(),
        6,
        "{records_before:?}"
    );
    let expected_deleted = all.iter().filter(|r| r.t_ms < cutoff).count() as u64;
    // P-a: 20 days + 1 hourly points; P-b: the 20 days before the cutoff.
    assert_eq!(expected_deleted, 481 + 480);
    let wal_before = wal_len(&path);
    assert!(wal_before > 0);

    let cfg = maintenance_cfg(Some(30), 300);
    let stop = tokio_util::sync::CancellationToken::new();
    let report = maintenance::run_once(&w, &cfg, now, &stop).await.unwrap();

    assert_eq!(report.history_cutoff_ms, Some(cutoff));
    assert_eq!(report.history_rows_deleted, expected_deleted);
    // Steps of at most 300 rows; the last one finds fewer.
    assert_eq!(report.prune_steps, expected_deleted / 300 + 1);
    assert!(!report.interrupted);
    let kept: Vec<(String, i64)> = inspect(&path)
        .prepare("SELECT patient_id, t_ms FROM concentration_history ORDER BY patient_id, t_ms")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut expected_kept: Vec<(String, i64)> = all
        .iter()
        .filter(|r| r.t_ms >= cutoff)
        .map(|r| (r.patient_id.clone(), r.t_ms))
        .collect();
    expected_kept.sort();
    assert_eq!(
        kept, expected_kept,
        "exactly the points from the cutoff on are kept"
    );
    assert!(kept.iter().any(|(p, _)| p == "P-0"));
    assert!(!kept.iter().any(|(p, _)| p == "P-a"));
    assert_eq!(
        record_counts(&path),
        records_before,
        "the record is untouched"
    );

    // The checkpoint emptied the WAL file (no reader held a snapshot).
    assert!(
        report.checkpoint.wal_bytes_before >= wal_before,
        "{report:?}"
    );
    assert!(!report.checkpoint.busy, "{report:?}");
    assert_eq!(report.checkpoint.wal_bytes_after, 0);
    assert_eq!(wal_len(&path), 0);

    // Nothing left to delete: one step, zero rows.
    let again = maintenance::run_once(&w, &cfg, now, &stop).await.unwrap();
    assert_eq!((again.history_rows_deleted, again.prune_steps), (0, 1));

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

/// The periodic task runs at once, then each time its clock has moved by
/// the interval, with that clock's cutoff: on a manual clock the test
/// moves time instead of waiting an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_run_follows_its_clock() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let hour_ms = 3_600_000;
    let start = T0 + 10 * DAY_MS;
    // Retention one day: the first run's cutoff is start - 1 day.
    let old = point("P-1", start - DAY_MS - hour_ms, 1.0);
    let kept_until_next_hour = point("P-1", start - DAY_MS + hour_ms / 2, 2.0);
    let recent = point("P-1", start - hour_ms, 3.0);
    w.write(WriteOp::History(vec![old, kept_until_next_hour, recent]))
        .await
        .unwrap();
    let history = || -> Vec<i64> {
        inspect(&path)
            .prepare("SELECT t_ms FROM concentration_history ORDER BY t_ms")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(waited.await.is_ok(), "{what}");
    }

    let manual = crate::clock::ManualClock::new(start);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(maintenance::run_periodic(
        w.clone(),
        maintenance_cfg(Some(1), 10),
        stop.clone(),
        manual.clock(),
    ));
    until("the first run pruned", || history().len() == 2).await;
    until("the task waits on the clock", || manual.waiting() == 1).await;
    assert_eq!(history().len(), 2, "no second run before the clock moves");
    // The next run comes when the clock has moved by the interval (1 h),
    // and prunes with the cutoff of that time.
    manual.advance(Duration::from_secs(3600));
    until("the second run pruned", || history().len() == 1).await;
    assert_eq!(history(), [start - hour_ms]);

    stop.cancel();
    task.await.unwrap();
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_zero_keeps_all_history_and_a_stopped_run_ends_early() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let rows: Vec<HistoryRow> = (0..50)
        .map(|i| point("P-1", T0 + i * DAY_MS, 1.0))
        .collect();
    w.write(WriteOp::History(rows)).await.unwrap();
    let now = T0 + 1000 * DAY_MS;
    let stop = tokio_util::sync::CancellationToken::new();

    let forever = maintenance_cfg(None, 10);
    let report = maintenance::run_once(&w, &forever, now, &stop)
        .await
        .unwrap();
    assert_eq!(report.history_cutoff_ms, None);
    assert_eq!((report.history_rows_deleted, report.prune_steps), (0, 0));
    assert_eq!(
        count(
            &inspect(&path),
            "SELECT count(*) FROM concentration_history"
        ),
        50
    );
    assert_eq!(
        MaintenanceConfig::new(0, 6).history_retention,
        None,
        "history_retention_days = 0 keeps forever"
    );
    assert_eq!(
        MaintenanceConfig::new(90, 6),
        MaintenanceConfig {
            history_retention: Some(Duration::from_secs(90 * 86_400)),
            interval: Duration::from_secs(6 * 3600),
            prune_batch_rows: maintenance::PRUNE_BATCH_ROWS,
        }
    );

    // Stopping (the daemon shutting down) ends the deletion between steps.
    stop.cancel();
    let report = maintenance::run_once(&w, &maintenance_cfg(Some(1), 10), now, &stop)
        .await
        .unwrap();
    assert!(report.interrupted);
    assert_eq!(report.history_rows_deleted, 0);
    assert_eq!(
        count(
            &inspect(&path),
            "SELECT count(*) FROM concentration_history"
        ),
        50
    );

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_an_old_snapshot_makes_the_checkpoint_busy_not_a_stall() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    put(&w, dose("P-1", "d-1", T0, 1.0)).await;
    // A reader inside a read transaction that sees the WAL ...
    let reader = inspect(&path);
    reader.execute_batch("BEGIN").unwrap();
    assert_eq!(count(&reader, "SELECT count(*) FROM inputs"), 1);
    // ... while more is written after its snapshot.
    put(&w, dose("P-1", "d-2", T0 + 1, 1.0)).await;

    let started = Instant::now();
    let c = w.checkpoint().await.unwrap();
    let elapsed = started.elapsed();
    assert!(c.busy, "{c:?}");
    assert!(c.wal_bytes_after > 0, "not truncated while read: {c:?}");
    // The short TRUNCATE wait, not the writer's 5 s busy timeout.
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(w.pragmas().await.unwrap().busy_timeout_ms, 5000, "restored");
    // The writer goes on at once.
    put(&w, dose("P-1", "d-3", T0 + 2, 1.0)).await;

    reader.execute_batch("COMMIT").unwrap();
    let c = w.checkpoint().await.unwrap();
    assert!(!c.busy, "{c:?}");
    assert_eq!((c.wal_bytes_after, wal_len(&path)), (0, 0));
    w.optimize().await.unwrap();

    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// Shutdown and durability.
// ---------------------------------------------------------------------------

#[test]
fn durability_smoke_1000_inputs_survive_shutdown_and_reopen() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in (k..1000).step_by(4) {
                    let r =
                        w.write_blocking(WriteOp::Input(dose("P-1", &format!("d-{i}"), T0, 1.0)));
                    assert!(matches!(
                        r,
                        Ok(WriteResult::Input(StoreOutcome::Inserted { .. }))
                    ));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    thread.shutdown().unwrap();
    assert!(matches!(
        w.write_blocking(WriteOp::Input(dose("P-1", "late", T0, 1.0))),
        Err(StoreError::WriterClosed)
    ));

    let (w2, thread2) = open(&path);
    assert_eq!(Reader::open(&path).unwrap().counts().unwrap().inputs, 1000);
    assert!(matches!(
        w2.write_blocking(WriteOp::Input(dose("P-1", "d-999", T0, 1.0))),
        Ok(WriteResult::Input(StoreOutcome::Duplicate { .. }))
    ));
    thread2.shutdown().unwrap();
    assert_eq!(count(&inspect(&path), "SELECT count(*) FROM inputs"), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_what_was_queued_and_refuses_the_rest() {
    let (_dir, path) = temp_db();
    let (w, thread) = open_with(&path, |c| c.batch_window = Duration::from_millis(50));
    let mut tasks = Vec::new();
    for i in 0..300 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.write(WriteOp::Input(dose("P-1", &format!("d-{i}"), T0, 1.0)))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::WriterClosed) => {}
            Err(other) => panic!("{other}"),
        }
    }
    // Every Ok is stored; nothing else is.
    assert_eq!(count(&inspect(&path), "SELECT count(*) FROM inputs"), ok);
    assert!(ok > 0);
    assert!(matches!(
        w.write(WriteOp::Input(dose("P-1", "after", T0, 1.0))).await,
        Err(StoreError::WriterClosed)
    ));
}

#[tokio::test]
async fn write_blocking_inside_a_runtime_is_an_error_not_a_panic() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    assert!(matches!(
        w.write_blocking(WriteOp::Input(dose("P-1", "x", T0, 1.0))),
        Err(StoreError::BlockingInAsyncContext)
    ));
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// Throughput (printed, not asserted).
// ---------------------------------------------------------------------------

/// 20,000 inputs through `write`, from `writers` concurrent tasks that each
/// wait for their answer before sending the next (like an MQTT window of
/// `writers` unacknowledged messages). Device events (with the `devices` and
/// `device_associations` projections) or manual doses (no projection).
async fn measure(writers: usize, window: Duration, devices: bool) -> (f64, WriterStats) {
    const N: usize = 20_000;
    let (_dir, path) = temp_db();
    let (w, thread) = open_with(&path, |c| c.batch_window = window);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..writers {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for i in (k..N).step_by(writers) {
                let patient = format!("P-{}", i % 50);
                let t = T0 + i64::try_from(i).unwrap_or_default() * 1000;
                let rec = if devices {
                    let device = format!("pump-{}", i % 50);
                    device_event(&device, &format!("e-{i}"), "heartbeat", t, Some(&patient))
                } else {
                    dose(&patient, &format!("d-{i}"), t, 1.0)
                };
                w.write(WriteOp::Input(rec)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = w.stats();
    assert_eq!(
        Reader::open(&path).unwrap().counts().unwrap().inputs,
        20_000
    );
    drop(w);
    tokio::task::spawn_blocking(move || thread.shutdown())
        .await
        .unwrap()
        .unwrap();
    (N as f64 / secs, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_20000_inputs() {
    for (writers, window_ms, devices) in [
        (20, 2, true),
        (20, 0, true),
        (1000, 2, true),
        (1000, 2, false),
    ] {
        let (rate, stats) = measure(writers, Duration::from_millis(window_ms), devices).await;
        println!(
            "throughput: {} inputs, {writers:>4} concurrent writers, batch_window {window_ms} ms: \
             {rate:>8.0} inputs/s ({} commits, largest batch {})",
            if devices { "device" } else { "dose  " },
            stats.commits,
            stats.largest_batch
        );
    }
}

fn outbox_rows(rows: &[(&str, &str)]) -> WriteOp {
    WriteOp::Alerts(Box::new(AlertCommit {
        outbox: rows
            .iter()
            .map(|(scope, payload)| OutboxMessage {
                topic: format!("{scope}/alerts"),
                scope_key: format!("{scope}/alerts"),
                payload: (*payload).to_owned(),
                retained: false,
            })
            .collect(),
        created_at_ms: T0,
        ..AlertCommit::default()
    }))
}

/// One scope's backlog never hides another scope's rows: every scope's
/// oldest rows come first, at most `per_scope` each, in id order.
#[test]
fn unpublished_rows_serve_every_scope_before_any_scopes_backlog() {
    let (_dir, path) = temp_db();
    let (w, thread) = open(&path);
    let a: Vec<(&str, &str)> = (0..100).map(|_| ("p/A", "{}")).collect();
    w.write_blocking(outbox_rows(&a)).unwrap();
    w.write_blocking(outbox_rows(&[("p/B", "{\"b\":1}"), ("p/B", "{\"b\":2}")]))
        .unwrap();
    let reader = Reader::open(&path).unwrap();
    let rows = reader.unpublished(10, 4).unwrap();
    let scopes: Vec<&str> = rows.iter().map(|r| r.scope_key.as_str()).collect();
    assert_eq!(
        scopes,
        ["p/A/alerts"; 4]
            .into_iter()
            .chain(["p/B/alerts"; 2])
            .collect::<Vec<_>>()
    );
    assert!(rows.windows(2).all(|p| p[0].id < p[1].id));
    // A limit below the number of scopes still takes each scope's oldest.
    let rows = reader.unpublished(2, 4).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].payload, "{\"b\":1}");

    // A dead letter leaves the outbox, whole, and is never served again.
    let first_a = rows[0].id;
    w.write_blocking(WriteOp::OutboxDeadLetter {
        rows: vec![DeadLetter {
            id: first_a,
            reason: "too large".to_owned(),
        }],
        at_ms: T0 + 1,
    })
    .unwrap();
    assert!(reader
        .unpublished(1_000, 1_000)
        .unwrap()
        .iter()
        .all(|r| r.id != first_a));
    assert_eq!(reader.outbox_pending().unwrap(), 101);
    assert_eq!(reader.outbox_dead_letters().unwrap(), 1);
    let conn = inspect(&path);
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT count(*) FROM outbox_dead_letter WHERE outbox_id = {first_a}
                 AND topic = 'p/A/alerts' AND payload = '{{}}' AND payload_bytes = 2
                 AND reason = 'too large' AND moved_at_ms = {}",
                T0 + 1
            )
        ),
        1
    );
    thread.shutdown().unwrap();
}
