//! End-to-end tests of the `dosetrack` command: each test runs the real
//! binary (`CARGO_BIN_EXE_dosetrack`) and checks its exit code, stdout and
//! stderr — `simulate` (CSV, JSON, time windows, charts), bad input (exit
//! code 2, the line and field named, no panic), `model show` / `model list`,
//! `forecast` and `demo --offline` (the live demo: `tests/it/demo.rs`).
//!
//! Pinned numbers were measured on the built-in drug file and
//! `examples/ward-day.jsonl` (72 kg, no age: Domino 1984).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, FixedOffset};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dosetrack");
const HEADER: &str = "time,t_min,cp_ng_per_ml,ce_ng_per_ml";
const NOTICE: &str = "not a certified medical device";

/// Ce at 2026-11-27T09:00:00Z for the ward day, 72 kg, sex not given.
const CE_AT_0900: f64 = 135.1666;
/// The same for the offline demo's patient, a 72 kg woman: her clearance
/// is 1.2 × (Sigtermans 2009), so Ce is lower.
const CE_AT_0900_WOMAN: f64 = 123.4139;

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ward_day() -> String {
    manifest_dir()
        .join("examples/ward-day.jsonl")
        .display()
        .to_string()
}

fn builtin_drug_file() -> PathBuf {
    manifest_dir().join("config/drugs/ketamine.toml")
}

/// Run `dosetrack` with `args`, from the crate root.
fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .expect("the dosetrack binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn run_ok(args: &[&str]) -> Run {
    let r = run(args);
    assert_eq!(r.code, Some(0), "dosetrack {args:?} failed: {r:#?}");
    assert!(!r.stderr.contains("panicked"), "{r:#?}");
    r
}

/// Exit code 2, no panic, nothing on stdout, and stderr naming every needle.
fn assert_input_error(args: &[&str], needles: &[&str]) -> Run {
    let r = run(args);
    assert_eq!(
        r.code,
        Some(2),
        "dosetrack {args:?}: expected exit 2: {r:#?}"
    );
    assert!(!r.stderr.contains("panicked"), "{r:#?}");
    assert!(
        r.stdout.is_empty(),
        "nothing on stdout for bad input: {r:#?}"
    );
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "stderr of dosetrack {args:?} should mention {n:?}: {}",
            r.stderr
        );
    }
    r
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", r.stdout))
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn time(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("'{s}' is not RFC 3339: {e}"))
}

/// One CSV data row.
#[derive(Debug)]
struct Row {
    time: DateTime<FixedOffset>,
    t_min: f64,
    cp: f64,
    ce: f64,
}

/// Parse `simulate` CSV output: checks the exact header and four fields per
/// row.
fn csv_rows(stdout: &str) -> Vec<Row> {
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(HEADER), "CSV header");
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 4, "four fields in {line:?}");
            let n = |s: &str| -> f64 {
                s.parse()
                    .unwrap_or_else(|e| panic!("{s:?} in {line:?} is not a number: {e}"))
            };
            Row {
                time: time(f[0]),
                t_min: n(f[1]),
                cp: n(f[2]),
                ce: n(f[3]),
            }
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path.display().to_string()
}

// ---------------------------------------------------------------------------
// simulate

#[test]
fn simulate_csv_covers_the_ward_day_minute_by_minute() {
    let ev = ward_day();
    let r = run_ok(&[
        "simulate",
        "--events",
        &ev,
        "--weight-kg",
        "72",
        "--step",
        "60s",
        "--to",
        "24h",
    ]);
    assert_eq!(r.stdout.lines().next(), Some(HEADER));
    let rows = csv_rows(&r.stdout);
    assert_eq!(rows.len(), 1441, "24 h at 60 s, both ends included");

    let start = time("2026-11-27T08:00:00Z");
    assert_eq!(rows[0].time, start);
    assert_eq!(rows[0].t_min, 0.0);
    assert!(r.stdout.contains("\n2026-11-27T08:00:00Z,0,"));
    assert_eq!(rows[1440].time, time("2026-11-28T08:00:00Z"));
    assert_eq!(rows[1440].t_min, 1440.0);
    for (i, w) in rows.windows(2).enumerate() {
        assert_eq!(w[1].time - w[0].time, Duration::seconds(60), "row {i}");
        assert!((w[1].t_min - w[0].t_min - 1.0).abs() < 1e-9, "row {i}");
    }
    for row in &rows {
        for c in [row.cp, row.ce] {
            assert!(c.is_finite() && c >= 0.0, "{row:?}");
        }
    }
    // The 20 mg bolus at 08:00 puts everything in V1 at once: Cp jumps, Ce
    // starts at zero.
    // (kamp2020 at 72 kg: V1 25.7 L, so 777.8 ng/mL.)
    assert!(rows[0].cp > 700.0 && rows[0].ce == 0.0, "{:?}", rows[0]);

    let at_nine = rows
        .iter()
        .find(|r| r.time == time("2026-11-27T09:00:00Z"))
        .expect("a row at 09:00");
    assert_eq!(at_nine.t_min, 60.0);
    assert!((120.0..150.0).contains(&at_nine.ce), "{at_nine:?}");
    assert!(
        (at_nine.ce - CE_AT_0900).abs() < 0.01,
        "Ce at 09:00 was {}, pinned {CE_AT_0900}",
        at_nine.ce
    );
    assert!((at_nine.cp - 135.8808).abs() < 0.01, "{at_nine:?}");
    // No age given: the default model is used and the user is told so.
    assert!(r.stderr.contains("warning [age_unknown]"), "{}", r.stderr);
}

/// The day of `scripts/simulate_vs_opentiva.py` (the regimen of
/// `benches/engine.rs`: bolus, pump at 20/15/10/5 mg/h, IM, SC, IN, PO, SL,
/// a patch), and its IV part.
fn opentiva_day(full: bool) -> String {
    let mut lines = vec![
        r#"{"id":"b0","time":"2026-11-27T00:00:00Z","route":"iv_bolus","amount_mg":20.0}"#,
        r#"{"device_id":"pump-1","id":"p0","time":"2026-11-27T00:00:00Z","kind":"infusion_started","patient_id":"P-1","rate_mg_per_h":20.0}"#,
        r#"{"device_id":"pump-1","id":"p1","time":"2026-11-27T02:00:00Z","kind":"infusion_rate_changed","patient_id":"P-1","rate_mg_per_h":15.0}"#,
        r#"{"device_id":"pump-1","id":"p2","time":"2026-11-27T06:00:00Z","kind":"infusion_rate_changed","patient_id":"P-1","rate_mg_per_h":10.0}"#,
        r#"{"device_id":"pump-1","id":"p3","time":"2026-11-27T10:00:00Z","kind":"infusion_rate_changed","patient_id":"P-1","rate_mg_per_h":5.0}"#,
        r#"{"device_id":"pump-1","id":"p-stop","time":"2026-11-27T14:00:00Z","kind":"infusion_stopped"}"#,
    ];
    if full {
        lines.extend([
            r#"{"id":"d0","time":"2026-11-27T03:00:00Z","route":"im","amount_mg":25.0}"#,
            r#"{"id":"d1","time":"2026-11-27T07:13:00Z","route":"sc","amount_mg":20.0}"#,
            r#"{"id":"d2","time":"2026-11-27T11:00:00Z","route":"intranasal","amount_mg":50.0}"#,
            r#"{"id":"d3","time":"2026-11-27T15:30:00Z","route":"oral","amount_mg":50.0}"#,
            r#"{"id":"d4","time":"2026-11-27T19:00:00Z","route":"sublingual","amount_mg":25.0}"#,
            r#"{"id":"patch","time":"2026-11-27T12:00:00Z","route":"transdermal","release_rate_mg_per_h":1.04,"wear_h":24.0}"#,
        ]);
    }
    lines.join("\n") + "\n"
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A whole day at 1-s steps (86,401 rows), as the command writes it (rows
/// sampled and formatted as they are written): byte for byte the `format!`
/// rendering of the library's samples, and the very bytes the command
/// wrote at aa0031b, before rows were streamed and the sampling step left
/// out its zero terms (length and FNV-1a hash pinned from that binary's
/// output; a deliberate change of the model's numbers changes them).
#[test]
fn simulate_a_day_at_one_second_is_byte_for_byte_as_before() {
    use dosetrack::drug::DrugFile;
    use dosetrack::patient::{Formulary, PatientSpec};
    use dosetrack::simulate;
    use std::fmt::Write as _;
    let dir = tempfile::tempdir().unwrap();
    for (full, pinned_len, pinned_hash) in [
        (true, 3_994_083, 0x401a_e882_4908_8ffd_u64),
        (false, 3_927_981, 0x9044_2ec9_2f1a_94aa_u64),
    ] {
        let text = opentiva_day(full);
        let ev = write(dir.path(), "day.jsonl", &text);
        let r = run_ok(&[
            "simulate",
            "--events",
            &ev,
            "--weight-kg",
            "70",
            "--model",
            "domino",
            "--step",
            "1s",
        ]);
        let mut spec = PatientSpec::weight_only(70.0);
        spec.model = Some("domino".to_owned());
        let f = Formulary::on_demand(DrugFile::builtin().unwrap());
        let inputs = simulate::parse_events(&text).unwrap();
        let solved = simulate::solve(&f, &spec, &inputs, None).unwrap();
        let report = simulate::simulate(&solved, None, None, 1_000).unwrap();
        assert_eq!(report.samples.len(), 86_401);
        let mut expected = format!("{HEADER}\n");
        for s in &report.samples {
            let t_min = format!("{:.4}", (s.t_ms - report.from_ms) as f64 / 60_000.0);
            let t_min = t_min.trim_end_matches('0').trim_end_matches('.');
            let time = dosetrack::vocab::format_rfc3339(s.t_ms);
            let (cp, ce) = (s.cp_ng_per_ml, s.ce_ng_per_ml);
            writeln!(expected, "{time},{t_min},{cp:.4},{ce:.4}").unwrap();
        }
        assert!(
            r.stdout == expected,
            "full day {full}: not the format! rendering"
        );
        assert_eq!(
            (r.stdout.len(), fnv1a(r.stdout.as_bytes())),
            (pinned_len, pinned_hash),
            "full day {full}: not the bytes of aa0031b"
        );
    }
}

#[test]
fn simulate_json_has_model_notice_samples_and_assumptions() {
    let ev = ward_day();
    let args = [
        "simulate",
        "--events",
        &ev,
        "--weight-kg",
        "72",
        "--step",
        "60s",
        "--to",
        "24h",
    ];
    let csv = run_ok(&args);
    let csv_rows = csv_rows(&csv.stdout);

    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let r = run_ok(&json_args);
    let v = json(&r);
    assert_eq!(v["model"], "ketamine/kamp2020");
    assert!(
        v["notice"].as_str().unwrap().contains(NOTICE),
        "{}",
        v["notice"]
    );
    assert_eq!(v["from"], "2026-11-27T08:00:00Z");
    assert_eq!(v["to"], "2026-11-28T08:00:00Z");
    assert_eq!(v["step_ms"], 60_000);

    let samples = v["samples"].as_array().expect("samples array");
    assert_eq!(samples.len(), csv_rows.len());
    assert_eq!(samples.len(), 1441);
    for (s, row) in samples.iter().zip(&csv_rows) {
        assert_eq!(time(s["time"].as_str().expect("time string")), row.time);
        assert!((num(&s["t_min"]) - row.t_min).abs() < 1e-3, "{s}");
        let (cp, ce) = (num(&s["cp_ng_per_ml"]), num(&s["ce_ng_per_ml"]));
        assert!(cp.is_finite() && cp >= 0.0 && ce.is_finite() && ce >= 0.0);
        // CSV prints four decimals of the same numbers.
        assert!((cp - row.cp).abs() <= 5e-5 + 1e-9, "{s} vs {row:?}");
        assert!((ce - row.ce).abs() <= 5e-5 + 1e-9, "{s} vs {row:?}");
    }
    assert_eq!(samples[60]["time"], "2026-11-27T09:00:00Z");
    assert!((num(&samples[60]["ce_ng_per_ml"]) - CE_AT_0900).abs() < 0.01);

    let assumptions = v["assumptions"].as_array().expect("assumptions array");
    assert!(!assumptions.is_empty());
    for a in assumptions {
        assert!(!a["key"].as_str().expect("key").is_empty(), "{a}");
        assert!(!a["source"].as_str().expect("source").is_empty(), "{a}");
    }
    // The default model's ke0 is an assumption, and is listed as one.
    assert!(
        assumptions
            .iter()
            .any(|a| a["key"] == "models.kamp2020.effect_site.ke0_per_min"),
        "{assumptions:?}"
    );
    // Route assumptions only for routes the file uses (no rectal dose).
    assert!(
        !assumptions
            .iter()
            .any(|a| a["key"].as_str().unwrap().starts_with("routes.rectal.")),
        "{assumptions:?}"
    );
}

#[test]
fn simulate_window_from_rfc3339_to_time_or_duration() {
    let ev = ward_day();
    let base = ["simulate", "--events", &ev, "--weight-kg", "72"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        run_ok(&a)
    };
    let by_time = with(&[
        "--from",
        "2026-11-27T09:00:00Z",
        "--to",
        "2026-11-27T09:10:00Z",
        "--step",
        "1s",
    ]);
    let rows = csv_rows(&by_time.stdout);
    assert_eq!(rows.len(), 601, "10 min at 1 s, both ends included");
    assert_eq!(rows[0].time, time("2026-11-27T09:00:00Z"));
    assert_eq!(rows[0].t_min, 0.0, "t_min counts from --from");
    assert!((rows[0].ce - CE_AT_0900).abs() < 0.01, "{:?}", rows[0]);
    assert_eq!(rows[600].time, time("2026-11-27T09:10:00Z"));
    assert_eq!(rows[600].t_min, 10.0);
    for w in rows.windows(2) {
        assert_eq!(w[1].time - w[0].time, Duration::seconds(1));
    }

    // --to as a duration after --from, and --from with an offset: same
    // instant, same table.
    let by_duration = with(&[
        "--from",
        "2026-11-27T10:00:00+01:00",
        "--to",
        "10min",
        "--step",
        "1s",
    ]);
    assert_eq!(by_duration.stdout, by_time.stdout);

    // --to as a duration without --from counts from the first event.
    let rows = csv_rows(&with(&["--to", "2h", "--step", "15min"]).stdout);
    assert_eq!(rows.len(), 9);
    assert_eq!(rows[0].time, time("2026-11-27T08:00:00Z"));
    assert_eq!(rows[8].time, time("2026-11-27T10:00:00Z"));
    assert_eq!(rows[8].t_min, 120.0);

    // Without --to: 24 h.
    let rows = csv_rows(&with(&["--step", "1h"]).stdout);
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[24].time, time("2026-11-28T08:00:00Z"));
}

#[test]
fn simulate_plot_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("out.svg");
    let ev = ward_day();
    let r = run_ok(&[
        "simulate",
        "--events",
        &ev,
        "--weight-kg",
        "72",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(
        csv_rows(&r.stdout).len(),
        1441,
        "the table is still printed"
    );
    assert!(r.stderr.contains("chart written to"), "{}", r.stderr);
    let text = std::fs::read_to_string(&svg).expect("SVG written");
    assert!(text.contains("<svg"), "not an SVG document");
    assert!(text.contains("Concentration (ng/mL)"));
    assert!(text.contains("Cp (plasma)"));
    assert!(text.contains(NOTICE), "the chart carries the notice");
}

#[test]
fn simulate_plot_png() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("out.png");
    let ev = ward_day();
    let r = run_ok(&[
        "simulate",
        "--events",
        &ev,
        "--weight-kg",
        "72",
        "--to",
        "6h",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(r.stderr.contains("chart written to"), "{}", r.stderr);
    let bytes = std::fs::read(&png).expect("PNG written");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "PNG signature, got {:?}",
        &bytes[..bytes.len().min(8)]
    );
    assert!(bytes.len() > 1000, "a real image, {} bytes", bytes.len());
}

#[test]
fn simulate_plot_with_unknown_extension_fails() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("out.txt");
    let ev = ward_day();
    let r = run(&[
        "simulate",
        "--events",
        &ev,
        "--weight-kg",
        "72",
        "--plot",
        txt.to_str().unwrap(),
    ]);
    // Checked before any work: bad input, nothing printed.
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stdout.is_empty(), "{r:#?}");
    assert!(!r.stderr.contains("panicked"), "{r:#?}");
    assert!(r.stderr.contains("out.txt"), "{}", r.stderr);
    assert!(
        r.stderr.contains(".svg") && r.stderr.contains(".png"),
        "names the supported formats: {}",
        r.stderr
    );
    assert!(!txt.exists(), "no file is written");
}

// ---------------------------------------------------------------------------
// bad input: exit code 2, the line and field named

const GOOD_DOSE: &str =
    r#"{"id":"m1","time":"2026-11-27T08:00:00Z","route":"iv_bolus","amount_mg":20}"#;

/// Run `simulate` on an events file with `text`; expect an input error.
fn events_error(text: &str, needles: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "events.jsonl", text);
    let mut all = vec!["events.jsonl"];
    all.extend_from_slice(needles);
    assert_input_error(&["simulate", "--events", &path, "--weight-kg", "72"], &all)
}

#[test]
fn events_unknown_route_names_the_line_and_field() {
    // Line 4: a comment and a blank line still count.
    let text = format!(
        "# comment\n{GOOD_DOSE}\n\n{}\n",
        r#"{"id":"m2","time":"2026-11-27T08:10:00Z","route":"nasal","amount_mg":20}"#
    );
    let r = events_error(&text, &["line 4:", "invalid_value", "(route)", "'nasal'"]);
    assert!(
        r.stderr.contains("intranasal"),
        "lists the routes: {}",
        r.stderr
    );
}

#[test]
fn events_missing_time() {
    let text = format!(
        "{GOOD_DOSE}\n{}\n",
        r#"{"id":"m2","route":"oral","amount_mg":5}"#
    );
    events_error(&text, &["line 2:", "missing_field", "(time)"]);
}

#[test]
fn events_negative_amount() {
    let text = format!(
        "{GOOD_DOSE}\n{}\n",
        r#"{"id":"m2","time":"2026-11-27T08:10:00Z","route":"oral","amount_mg":-5}"#
    );
    events_error(&text, &["line 2:", "invalid_value", "(amount_mg)"]);
}

#[test]
fn events_unparseable_time() {
    let text = r#"{"id":"m1","time":"27/11/2026 08:00","route":"oral","amount_mg":5}"#;
    events_error(
        text,
        &[
            "line 1:",
            "invalid_value",
            "(time)",
            "RFC 3339",
            "27/11/2026 08:00",
        ],
    );
}

#[test]
fn events_unknown_kind() {
    let text = format!(
        "{GOOD_DOSE}\n{}\n",
        r#"{"device_id":"pump-7","id":"e1","time":"2026-11-27T08:05:00Z","kind":"infusion_exploded","rate_mg_per_h":5}"#
    );
    let r = events_error(
        &text,
        &["line 2:", "unknown_kind", "(kind)", "infusion_exploded"],
    );
    assert!(r.stderr.contains("infusion_started"), "{}", r.stderr);
}

#[test]
fn events_device_event_without_device_id() {
    let text = format!(
        "{GOOD_DOSE}\n{}\n",
        r#"{"id":"e1","time":"2026-11-27T08:05:00Z","kind":"infusion_started","rate_mg_per_h":5}"#
    );
    events_error(&text, &["line 2:", "missing_field", "(device_id)"]);
}

#[test]
fn events_duplicate_id_with_different_content() {
    let changed = GOOD_DOSE.replace("\"amount_mg\":20", "\"amount_mg\":25");
    assert_ne!(changed, GOOD_DOSE);
    let text = format!("{GOOD_DOSE}\n{GOOD_DOSE}\n{changed}\n");
    events_error(
        &text,
        &["line 3:", "duplicate_conflict", "(id)", "'m1'", "line 1"],
    );
}

#[test]
fn events_identical_redelivery_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let once = write(dir.path(), "once.jsonl", &format!("{GOOD_DOSE}\n"));
    let twice = write(
        dir.path(),
        "twice.jsonl",
        &format!("{GOOD_DOSE}\n{GOOD_DOSE}\n"),
    );
    let sim = |p: &str| run_ok(&["simulate", "--events", p, "--weight-kg", "72", "--to", "1h"]);
    let (r1, r2) = (sim(&once), sim(&twice));
    assert_eq!(r1.stdout, r2.stdout, "the redelivered dose counts once");
}

#[test]
fn events_empty_file() {
    events_error("", &["has no events"]);
    events_error("\n# only a comment\n\n", &["has no events"]);
}

#[test]
fn events_file_that_does_not_exist() {
    assert_input_error(
        &[
            "simulate",
            "--events",
            "/nonexistent/events.jsonl",
            "--weight-kg",
            "72",
        ],
        &["cannot read events file", "/nonexistent/events.jsonl"],
    );
}

#[test]
fn unknown_model_lists_the_known_ones() {
    let ev = ward_day();
    let r = assert_input_error(
        &[
            "simulate",
            "--events",
            &ev,
            "--weight-kg",
            "72",
            "--model",
            "nope",
        ],
        &["unknown model 'nope'"],
    );
    for m in [
        "clements250",
        "domino",
        "herd",
        "hijazi",
        "hornik",
        "kamp2020",
    ] {
        assert!(r.stderr.contains(m), "lists {m}: {}", r.stderr);
    }
}

#[test]
fn negative_weight() {
    let ev = ward_day();
    // `--weight-kg=-3` reaches the patient check, which names the field.
    // The patient check uses the contract's plausibility ranges.
    assert_input_error(
        &["simulate", "--events", &ev, "--weight-kg=-3"],
        &["weight_kg", "-3", "from 0.5 to 400"],
    );
    assert_input_error(
        &["model", "show", "--weight-kg=0"],
        &["weight_kg", "from 0.5 to 400"],
    );
    assert_input_error(
        &["model", "show", "--weight-kg", "1e9"],
        &["weight_kg", "from 0.5 to 400"],
    );
    // Without `=`, a negative number still reaches the check.
    assert_input_error(
        &["simulate", "--events", &ev, "--weight-kg", "-3"],
        &["weight_kg", "-3", "from 0.5 to 400"],
    );
    // Negative ages are refused; newborns (age 0) are not.
    assert_input_error(
        &["model", "show", "--weight-kg", "3.5", "--age-years", "-0.5"],
        &["age_years", "from 0 to 130"],
    );
    let r = run(&["model", "show", "--weight-kg", "3.5", "--age-years", "0"]);
    assert_eq!(r.code, Some(0), "{r:#?}");
}

#[test]
fn unknown_sex() {
    let ev = ward_day();
    assert_input_error(
        &[
            "simulate",
            "--events",
            &ev,
            "--weight-kg",
            "72",
            "--sex",
            "other",
        ],
        &["--sex", "'other'"],
    );
}

#[test]
fn step_without_unit() {
    let ev = ward_day();
    assert_input_error(
        &[
            "simulate",
            "--events",
            &ev,
            "--weight-kg",
            "72",
            "--step",
            "10",
        ],
        &["--step", "'10'", "needs a unit"],
    );
}

#[test]
fn to_before_from() {
    let ev = ward_day();
    assert_input_error(
        &[
            "simulate",
            "--events",
            &ev,
            "--weight-kg",
            "72",
            "--from",
            "2026-11-27T09:00:00Z",
            "--to",
            "2026-11-27T08:00:00Z",
        ],
        &["--to", "is before --from", "2026-11-27T08:00:00Z"],
    );
    assert_input_error(
        &[
            "simulate",
            "--events",
            &ev,
            "--weight-kg",
            "72",
            "--to",
            "soon",
        ],
        &["--to", "'soon'", "duration"],
    );
}

#[test]
fn drug_file_that_does_not_exist() {
    assert_input_error(
        &["--drug-file", "/nonexistent.toml", "model", "list"],
        &["cannot read drug file", "/nonexistent.toml"],
    );
    let ev = ward_day();
    assert_input_error(
        &[
            "simulate",
            "--drug-file",
            "/nonexistent.toml",
            "--events",
            &ev,
            "--weight-kg",
            "72",
        ],
        &["/nonexistent.toml"],
    );
}

#[test]
fn drug_file_copy_behaves_like_the_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ketamine.toml");
    std::fs::copy(builtin_drug_file(), &copy).unwrap();
    let builtin = run_ok(&["model", "show", "--weight-kg", "70"]);
    let from_file = run_ok(&[
        "--drug-file",
        copy.to_str().unwrap(),
        "model",
        "show",
        "--weight-kg",
        "70",
    ]);
    assert_eq!(from_file.stdout, builtin.stdout);
}

#[test]
fn drug_file_with_a_typo_names_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(builtin_drug_file()).unwrap();
    let first = text
        .find("k10_per_min")
        .expect("the drug file has k10_per_min");
    let mut typo = text.clone();
    typo.replace_range(first..first + "k10_per_min".len(), "k10_per_mn");
    assert_eq!(typo.matches("k10_per_mn]").count(), 1);
    let line = format!("line {}", text[..first].matches('\n').count() + 1);
    let path = write(dir.path(), "typo.toml", &typo);
    let ev = ward_day();
    assert_input_error(
        &[
            "--drug-file",
            &path,
            "simulate",
            "--events",
            &ev,
            "--weight-kg",
            "72",
        ],
        &[
            "typo.toml",
            "models.domino.disposition.k10_per_mn",
            "unknown field",
            "k10_per_min",
            &line,
        ],
    );
}

// ---------------------------------------------------------------------------
// model show / model list

fn model_show(extra: &[&str]) -> Value {
    let mut args = vec!["model", "show", "--format", "json"];
    args.extend_from_slice(extra);
    json(&run_ok(&args))
}

#[test]
fn model_show_domino_at_70_kg() {
    let v = model_show(&["--weight-kg", "70", "--model", "domino"]);
    assert_eq!(v["model"], "ketamine/domino");
    assert!(v["notice"].as_str().unwrap().contains(NOTICE));
    assert_eq!(v["compartments"], 3);
    let vols = v["volumes_l"].as_array().unwrap();
    assert_eq!(vols.len(), 3);
    assert!((num(&vols[0]) - 4.41).abs() < 1e-9, "{vols:?}");
    assert!((num(&vols[1]) - 10.56972).abs() < 1e-4, "{vols:?}");
    assert!((num(&vols[2]) - 178.2123).abs() < 1e-3, "{vols:?}");
    assert!((num(&v["micro_constants_per_min"]["k10"]) - 0.438).abs() < 1e-12);
    assert!((num(&v["ke0_per_min"]) - 0.0587).abs() < 1e-12);
    // The relief parameters, each with its source.
    let chronic = &v["relief"]["chronic"];
    assert_eq!(num(&chronic["half_life_days"]["value"]), 10.9);
    assert!(chronic["c50_ng_per_ml"]["source"]
        .as_str()
        .unwrap()
        .contains("Dahan"));
    assert_eq!(chronic["s_fraction"]["assumption"], true);
    let text = run_ok(&["model", "show", "--weight-kg", "70", "--format", "text"]).stdout;
    assert!(
        text.contains("half-life (days)         10.9 — Dahan"),
        "{text}"
    );
    assert!(v["ke0_from_tpeak_min"].is_null());

    let routes = v["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 9);
    let names: Vec<&str> = routes
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    for name in [
        "iv_bolus",
        "iv_infusion",
        "im",
        "sc",
        "intranasal",
        "oral",
        "sublingual",
        "rectal",
        "transdermal",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for r in routes {
        let f = num(&r["f"]);
        if r["route"].as_str().unwrap().starts_with("iv_") {
            assert!(r["ka_per_min"].is_null(), "{r}");
            assert_eq!(f, 1.0, "{r}");
        } else {
            assert!(num(&r["ka_per_min"]) > 0.0, "{r}");
            assert!(f > 0.0 && f <= 1.0, "{r}");
        }
    }
}

#[test]
fn model_show_kamp2020_is_the_adult_default_with_the_analgesic_ke0() {
    let v = model_show(&["--weight-kg", "70", "--age-years", "40"]);
    assert_eq!(v["model"], "ketamine/kamp2020");
    assert_eq!(v["compartments"], 3);
    assert!(v["ke0_from_tpeak_min"].is_null());
    assert!((num(&v["ke0_per_min"]) - 0.0587).abs() < 1e-12);
    let cl = num(&v["clearances_l_per_min"][0]) * 60.0;
    assert!((cl - 84.0).abs() < 1e-9, "{cl}");
}

#[test]
fn model_show_picks_herd_for_a_child() {
    let v = model_show(&["--age-years", "6", "--weight-kg", "20"]);
    assert_eq!(v["model"], "ketamine/herd");
    assert_eq!(v["compartments"], 2);
    assert!(
        v["warnings"].as_array().unwrap().is_empty(),
        "6 y, 20 kg is inside herd's domain: {}",
        v["warnings"]
    );
}

#[test]
fn model_show_warns_outside_the_model_domain() {
    let v = model_show(&["--age-years", "16", "--weight-kg", "60"]);
    assert_eq!(v["model"], "ketamine/herd");
    let warnings = v["warnings"].as_array().unwrap();
    let domain = warnings
        .iter()
        .find(|w| w["code"] == "model_domain")
        .unwrap_or_else(|| panic!("a model_domain warning: {warnings:?}"));
    assert!(
        domain["message"].as_str().unwrap().contains("16"),
        "{domain}"
    );
}

#[test]
fn model_show_rifampicin_speeds_up_elimination() {
    let k10 = |v: &Value| num(&v["micro_constants_per_min"]["k10"]);
    let without = model_show(&["--weight-kg", "70", "--model", "domino"]);
    let with = model_show(&[
        "--weight-kg",
        "70",
        "--model",
        "domino",
        "--comedication",
        "rifampicin",
    ]);
    assert!(
        k10(&with) > k10(&without),
        "{} vs {}",
        k10(&with),
        k10(&without)
    );
    // Measured: 0.438 × 1.1628.
    assert!((k10(&with) - 0.509_306_4).abs() < 1e-9, "{}", k10(&with));
    let interactions = with["interactions"].as_array().unwrap();
    assert!(
        interactions
            .iter()
            .any(|i| i["comedication"] == "rifampicin"),
        "{interactions:?}"
    );
    assert!(without["interactions"].as_array().unwrap().is_empty());
}

#[test]
fn model_show_text() {
    let r = run_ok(&[
        "model",
        "show",
        "--weight-kg",
        "70",
        "--model",
        "domino",
        "--format",
        "text",
    ]);
    let first = r.stdout.lines().next().unwrap();
    assert!(first.starts_with("ketamine/domino"), "{first}");
    assert!(
        r.stdout
            .contains("volumes (L): V1 4.4100  V2 10.5697  V3 178.2123"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("k10 0.438000"), "{}", r.stdout);
    assert!(r.stdout.contains("ke0 0.058700"), "{}", r.stdout);
    assert!(r.stdout.contains("  intranasal "), "{}", r.stdout);
    assert!(r.stdout.contains("assumed values"), "{}", r.stdout);
}

#[test]
fn model_list_has_the_six_models() {
    let r = run_ok(&["model", "list"]);
    let keys: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "clements250",
            "domino",
            "herd",
            "hijazi",
            "hornik",
            "kamp2020"
        ]
    );
    let domino = r.stdout.lines().find(|l| l.starts_with("domino")).unwrap();
    assert!(domino.contains("3-compartment"), "{domino}");
    let herd = r.stdout.lines().find(|l| l.starts_with("herd")).unwrap();
    assert!(herd.contains("2-compartment"), "{herd}");
}

// ---------------------------------------------------------------------------
// forecast

fn forecast(extra: &[&str]) -> Run {
    let ev = ward_day();
    let mut args = vec!["forecast", "--events", ev.as_str(), "--weight-kg", "72"];
    args.extend_from_slice(extra);
    run_ok(&args)
}

fn line<'a>(v: &'a Value, output: &str, label: &str) -> &'a Value {
    v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["output"] == output && l["label"] == label)
        .unwrap_or_else(|| panic!("no {output} {label} line in {}", v["lines"]))
}

#[test]
fn forecast_at_nine_knows_only_the_running_pump() {
    let v = json(&forecast(&[
        "--at",
        "2026-11-27T09:00:00Z",
        "--output",
        "ce",
        "--format",
        "json",
    ]));
    assert_eq!(v["at"], "2026-11-27T09:00:00Z");
    assert!(v["notice"].as_str().unwrap().contains(NOTICE));
    assert!((num(&v["ce_ng_per_ml"]) - CE_AT_0900).abs() < 0.01, "{v}");
    let lines = v["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "floor, caution, ceiling");
    assert!(lines.iter().all(|l| l["output"] == "ce"));
    let floor = line(&v, "ce", "floor");
    assert_eq!(num(&floor["level_ng_per_ml"]), 100.0);
    assert_eq!(floor["now"], "above");
    assert!(
        floor["crossing"].is_null(),
        "the pump keeps running, Ce stays above 100: {floor}"
    );
    assert!(v["assumes"].as_str().unwrap().contains("continue"));
}

#[test]
fn forecast_after_the_pump_stops_falls_below_the_floor() {
    let v = json(&forecast(&[
        "--at",
        "2026-11-27T16:00:00Z",
        "--output",
        "ce",
        "--format",
        "json",
    ]));
    let floor = line(&v, "ce", "floor");
    assert_eq!(floor["now"], "above");
    let c = &floor["crossing"];
    assert_eq!(c["direction"], "falling", "{floor}");
    let at = time("2026-11-27T16:00:00Z");
    let when = time(c["time"].as_str().unwrap());
    assert!(when > at && when - at <= Duration::minutes(60), "{c}");
    let in_min = num(&c["in_min"]);
    assert!(in_min > 0.0 && in_min <= 60.0, "{c}");
    let from_time = (when - at).num_milliseconds() as f64 / 60_000.0;
    assert!((in_min - from_time).abs() < 1e-6, "{c}");
    // Measured (kamp2020, analgesic ke0): in 46.66 min.
    assert!((in_min - 46.6633).abs() < 0.1, "{c}");
}

#[test]
fn forecast_with_levels_watches_exactly_those() {
    let v = json(&forecast(&[
        "--at",
        "2026-11-27T16:00:00Z",
        "--level",
        "160",
        "--level",
        "90",
        "--format",
        "json",
    ]));
    let lines = v["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4, "two levels × Ce and Cp: {lines:?}");
    for output in ["ce", "cp"] {
        let levels: Vec<f64> = lines
            .iter()
            .filter(|l| l["output"] == output)
            .map(|l| num(&l["level_ng_per_ml"]))
            .collect();
        assert_eq!(levels, [160.0, 90.0], "{output}");
    }
    assert!(lines.iter().all(|l| l["label"] == "level"));
    // Ce is 151.5 at 16:00: below 160 with no crossing, above 90 and falling.
    let ce = |level: f64| {
        lines
            .iter()
            .find(|l| l["output"] == "ce" && num(&l["level_ng_per_ml"]) == level)
            .unwrap()
    };
    assert_eq!(ce(160.0)["now"], "below");
    assert!(ce(160.0)["crossing"].is_null());
    assert_eq!(ce(90.0)["crossing"]["direction"], "falling");
}

#[test]
fn forecast_text() {
    let after = forecast(&["--at", "2026-11-27T16:00:00Z"]).stdout;
    assert!(after.contains("falls below"), "{after}");
    assert!(after.contains("assumes"), "{after}");
    assert!(after.contains(NOTICE), "{after}");
    let running = forecast(&["--at", "2026-11-27T09:00:00Z"]).stdout;
    assert!(running.contains("no crossing"), "{running}");
    assert!(!running.contains("falls below"), "{running}");
    assert!(running.contains("assumes"), "{running}");
}

#[test]
fn forecast_bad_options() {
    let ev = ward_day();
    for (extra, needles) in [
        (["--at", "tomorrow"], ["--at", "'tomorrow'"]),
        (["--horizon", "10"], ["--horizon", "needs a unit"]),
        (["--level", "0"], ["--level", "positive"]),
    ] {
        let mut args = vec!["forecast", "--events", ev.as_str(), "--weight-kg", "72"];
        args.extend_from_slice(&extra);
        assert_input_error(&args, &needles);
    }
}

// ---------------------------------------------------------------------------
// demo

#[test]
fn demo_prints_the_ward_day_and_writes_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("demo.svg");
    let r = run_ok(&["demo", "--offline", "--plot", svg.to_str().unwrap()]);
    assert!(r.stdout.contains(NOTICE), "{}", r.stdout);
    assert!(r.stdout.contains("ketamine/kamp2020"), "{}", r.stdout);
    let row = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("2026-11-27T09:00:00Z"))
        .unwrap_or_else(|| panic!("a table row at 09:00: {}", r.stdout));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.len(), 3, "{row}");
    let ce: f64 = cols[2].parse().unwrap();
    assert!((ce - CE_AT_0900_WOMAN).abs() < 0.06, "{row}");
    assert!(r.stdout.contains("chart written"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&svg.display().to_string()),
        "{}",
        r.stdout
    );
    let text = std::fs::read_to_string(&svg).expect("the chart exists");
    assert!(text.contains("<svg") && text.contains("Concentration (ng/mL)"));
}

// ---------------------------------------------------------------------------
// relief

#[test]
fn relief_answers_with_the_acute_window_and_the_weeks_after() {
    let dir = tempfile::tempdir().unwrap();
    // Five 4-h infusions at 0.35 mg/kg/h (70 kg).
    let mut text = String::new();
    for d in 0..5 {
        text.push_str(&format!(
            "{{\"device_id\":\"pump-1\",\"id\":\"s{d}\",\"time\":\"2026-01-{:02}T08:00:00Z\",\"kind\":\"infusion_started\",\"patient_id\":\"P\",\"rate_mg_per_h\":24.5}}\n\
             {{\"device_id\":\"pump-1\",\"id\":\"e{d}\",\"time\":\"2026-01-{:02}T12:00:00Z\",\"kind\":\"infusion_stopped\",\"patient_id\":\"P\"}}\n",
            5 + d,
            5 + d
        ));
    }
    let ev = write(dir.path(), "series.jsonl", &text);
    let base = [
        "relief",
        "--events",
        ev.as_str(),
        "--weight-kg",
        "70",
        "--age-years",
        "45",
    ];
    let mut args = base.to_vec();
    args.extend(["--format", "json"]);
    let v = json(&run_ok(&args));
    // The keys the issue names, exactly these (more allowed).
    for k in [
        "peak_ce_ng_per_ml",
        "peak_at",
        "relief_from",
        "relief_until",
        "duration_min",
    ] {
        assert!(v["acute"].get(k).is_some(), "acute.{k}: {v}");
    }
    for k in [
        "curve",
        "peak_relief_fraction",
        "below_half_of_peak_day",
        "next_series_due",
        "response_probability",
    ] {
        assert!(v["chronic"].get(k).is_some(), "chronic.{k}");
    }
    for k in ["peak_ng_per_ml", "auc_ng_h_per_ml"] {
        assert!(v["norketamine"].get(k).is_some(), "norketamine.{k}");
    }
    assert_eq!(v["model"], "ketamine/kamp2020");
    assert!(v["notice"].as_str().unwrap().contains(NOTICE));
    let curve = v["chronic"]["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 91, "daily for 90 days from the first dose");
    assert!(curve
        .iter()
        .enumerate()
        .all(|(i, d)| d["day"] == i as u64 && (0.0..=1.0).contains(&num(&d["relief_fraction"]))));
    assert!((num(&v["chronic"]["peak_relief_fraction"]) - 0.39).abs() <= 0.05);
    assert_eq!(num(&v["chronic"]["response_probability"]), 0.67);
    let due = v["chronic"]["next_series_due"].as_str().unwrap();
    assert!(
        due.starts_with("2026-01-") || due.starts_with("2026-02-"),
        "{due}"
    );
    assert!(v["assumptions"].as_array().unwrap().len() >= 3);
    // The text answers in sentences a clinician can read.
    let t = run_ok(&base).stdout;
    assert!(
        t.contains("for acute postoperative or emergency pain: at least 50 % of the maximal relief, Ce at or above 100 ng/mL) expected from 2026-01-05"),
        "{t}"
    );
    assert!(t.contains(&format!("until {due}")), "{t}");
    assert!(t.contains("probability of response 0.67"), "{t}");
    // Bad input: exit 2, named.
    let mut bad = base.to_vec();
    bad.extend(["--days", "0"]);
    assert_input_error(&bad, &["--days"]);
    let mut bad = base.to_vec();
    bad.extend(["--indication", "migraine"]);
    assert_input_error(&bad, &["migraine", "chronic_neuropathic"]);
    let mut bad = base.to_vec();
    bad.extend(["--cyp2b6", "*9/*9"]);
    assert_input_error(&bad, &["*9/*9"]);
    let mut bad = base.to_vec();
    bad.extend(["--plot", "relief.gif"]);
    assert_input_error(&bad, &["--plot"]);

    // The indication moves the acute answer: chronic neuropathic pain's
    // floor is 21 ng/mL, so the same series relieves for longer each day.
    let mut args = base.to_vec();
    args.extend(["--format", "json", "--indication", "chronic_neuropathic"]);
    let c = json(&run_ok(&args));
    assert_eq!(c["acute"]["indication"], "chronic_neuropathic");
    assert_eq!(num(&c["acute"]["floor_ng_per_ml"]), 21.0);
    assert!(num(&c["acute"]["duration_min"]) > num(&v["acute"]["duration_min"]));
    // The genotype moves it too: a CYP2B6 *6/*6 patient clears less, so
    // Ce peaks higher on the same series.
    let mut args = base.to_vec();
    args.extend(["--format", "json", "--cyp2b6", "*6/*6"]);
    let g = json(&run_ok(&args));
    assert!(num(&g["acute"]["peak_ce_ng_per_ml"]) > 1.2 * num(&v["acute"]["peak_ce_ng_per_ml"]));
    // Norketamine exposure is reported.
    assert!(num(&v["norketamine"]["peak_ng_per_ml"]) > 0.0);
    assert!(num(&v["norketamine"]["auc_ng_h_per_ml"]) > 0.0);

    // --plot draws relief over days with the target.
    let svg = dir.path().join("relief.svg");
    let mut args = base.to_vec();
    let svg_arg = svg.to_str().unwrap().to_owned();
    args.extend(["--plot", svg_arg.as_str()]);
    run_ok(&args);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg"), "not an SVG");
    for label in [
        "days from the first dose",
        "half of the peak",
        "below half of the peak",
        "probability of response 0.67",
    ] {
        assert!(drawn.contains(label), "the plot lacks '{label}'");
    }
    let png = dir.path().join("relief.png");
    let png_arg = png.to_str().unwrap().to_owned();
    let mut args = base.to_vec();
    args.extend(["--plot", png_arg.as_str()]);
    run_ok(&args);
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
}
