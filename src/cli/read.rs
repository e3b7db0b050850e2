//! The read-only database commands: `patients`, `history` and `events`.
//! Each opens a [`dosetrack::store::Reader`] (safe while the service runs)
//! and prints what it reads as a table or JSON. Stored state messages are
//! read back as [`StoredState`], not as untyped JSON.

use super::args::{EventsArgs, HistoryArgs, PatientsArgs, ReportFormat, TableFormat};
use super::{check_plot_path, input_error, time_arg};
use anyhow::Context as _;
use dosetrack::patient::Formulary;
use dosetrack::simulate;
use dosetrack::store::PublishedState;
use dosetrack::vocab::format_rfc3339;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// What the read commands use of a stored state message (the payload of
/// `published_state`: the tracker's `StateMessage` as the daemon published
/// it; the other fields are ignored). Each field is optional: one missing
/// (or `null`) shows as `-` (`null` in JSON). A payload that is not such a
/// message (not JSON, or a field of another type) reads as no state.
#[derive(Debug, Default, Deserialize)]
struct StoredState {
    time: Option<String>,
    cp_ng_per_ml: Option<f64>,
    ce_ng_per_ml: Option<f64>,
    /// `rising`, `falling` or `steady`.
    trend: Option<String>,
    /// `ketamine/domino`, …
    model: Option<String>,
    stale: Option<bool>,
    targets: Option<StoredTargets>,
}

/// The patient's target levels in a stored state message.
#[derive(Debug, Deserialize)]
struct StoredTargets {
    analgesic_floor_ng_per_ml: Option<f64>,
    psychotomimetic_caution_ng_per_ml: Option<f64>,
    ceiling_ng_per_ml: Option<f64>,
}

impl StoredState {
    /// The last published state, if there is one and it reads as a state
    /// message.
    fn read(state: Option<&PublishedState>) -> Option<StoredState> {
        state.and_then(|s| serde_json::from_str(&s.payload).ok())
    }
}

/// One patient of `dosetrack patients` (the JSON object; the text table
/// shows the same). Fields in the order they are printed.
#[derive(Debug, Serialize)]
struct PatientLine {
    admitted_at: String,
    ce_ng_per_ml: Option<f64>,
    cp_ng_per_ml: Option<f64>,
    discharged_at: Option<String>,
    model: Option<String>,
    patient_id: String,
    stale: Option<bool>,
    state_time: Option<String>,
    trend: Option<String>,
}

/// `dosetrack patients`: every patient with their last published state.
pub(crate) fn patients(a: &PatientsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let rows = a.db.reader()?.patients()?;
    let lines: Vec<PatientLine> = rows
        .into_iter()
        .map(|r| {
            // No state, or one that does not read: every field `-`.
            let state = StoredState::read(r.last_state.as_ref()).unwrap_or_default();
            PatientLine {
                admitted_at: format_rfc3339(r.first_admitted_at_ms),
                ce_ng_per_ml: state.ce_ng_per_ml,
                cp_ng_per_ml: state.cp_ng_per_ml,
                discharged_at: r.discharged_at_ms.map(format_rfc3339),
                model: state.model,
                patient_id: r.patient_id,
                stale: state.stale,
                state_time: state.time,
                trend: state.trend,
            }
        })
        .collect();
    match a.format {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &lines)?;
            writeln!(out)?;
        }
        ReportFormat::Text => {
            writeln!(
                out,
                "{:<16} {:<22} {:<22} {:>10} {:>10}  {:<8} model",
                "patient", "admitted", "state at", "Cp ng/mL", "Ce ng/mL", "trend"
            )?;
            let s = |v: &Option<String>| v.as_deref().unwrap_or("-").to_owned();
            let n = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            for r in &lines {
                let discharged = if r.discharged_at.is_some() {
                    " (discharged)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "{:<16} {:<22} {:<22} {:>10} {:>10}  {:<8} {}{discharged}",
                    r.patient_id,
                    r.admitted_at,
                    s(&r.state_time),
                    n(r.cp_ng_per_ml),
                    n(r.ce_ng_per_ml),
                    s(&r.trend),
                    s(&r.model),
                )?;
            }
        }
    }
    Ok(())
}

/// One row of `dosetrack history --format json`.
#[derive(Debug, Serialize)]
struct HistoryLine {
    ce_ng_per_ml: f64,
    cp_ng_per_ml: f64,
    time: String,
}

/// `dosetrack history`: a patient's concentration history, and a chart.
pub(crate) fn history(f: &Formulary, a: &HistoryArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if let Some(p) = &a.plot {
        check_plot_path(p)?;
    }
    let from = a
        .from
        .as_deref()
        .map(|t| time_arg("--from", t))
        .transpose()?;
    let to = a.to.as_deref().map(|t| time_arg("--to", t)).transpose()?;
    let reader = a.db.reader()?;
    let rows = reader.history(&a.patient_id, from, to)?;
    if rows.is_empty() {
        return Err(input_error(format!(
            "no history for patient '{}'",
            a.patient_id
        )));
    }
    let start = rows.first().map_or(0, |r| r.t_ms);
    match a.format {
        TableFormat::Csv => {
            writeln!(out, "time,t_min,cp_ng_per_ml,ce_ng_per_ml")?;
            for r in &rows {
                writeln!(
                    out,
                    "{},{},{:.4},{:.4}",
                    format_rfc3339(r.t_ms),
                    (r.t_ms - start) as f64 / 60_000.0,
                    r.cp_ng_per_ml,
                    r.ce_ng_per_ml
                )?;
            }
        }
        TableFormat::Json => {
            let v: Vec<HistoryLine> = rows
                .iter()
                .map(|r| HistoryLine {
                    ce_ng_per_ml: r.ce_ng_per_ml,
                    cp_ng_per_ml: r.cp_ng_per_ml,
                    time: format_rfc3339(r.t_ms),
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &v)?;
            writeln!(out)?;
        }
    }
    if let Some(path) = &a.plot {
        // Targets from the last published state, else the drug file's.
        let last = reader
            .patients()?
            .into_iter()
            .find(|p| p.patient_id == a.patient_id)
            .and_then(|p| StoredState::read(p.last_state.as_ref()));
        let stored = last.as_ref().and_then(|s| s.targets.as_ref());
        let t = f.drug().targets();
        let model = last
            .as_ref()
            .and_then(|s| s.model.as_deref())
            .unwrap_or("unknown")
            .to_owned();
        let mut spec = dosetrack::plot::PlotSpec {
            title: format!("Ketamine — patient {} (recorded history)", a.patient_id),
            subtitle: format!("model {model} · {}", simulate::NOTICE),
            times_ms: rows.iter().map(|r| r.t_ms).collect(),
            cp_ng_per_ml: rows.iter().map(|r| r.cp_ng_per_ml).collect(),
            ce_ng_per_ml: rows.iter().map(|r| r.ce_ng_per_ml).collect(),
            targets: dosetrack::plot::TargetLines {
                analgesic_floor_ng_per_ml: stored
                    .and_then(|s| s.analgesic_floor_ng_per_ml)
                    .unwrap_or(t.analgesic_floor_ng_per_ml.value),
                caution_ng_per_ml: stored
                    .and_then(|s| s.psychotomimetic_caution_ng_per_ml)
                    .unwrap_or(t.psychotomimetic_caution_ng_per_ml.value),
                ceiling_ng_per_ml: stored
                    .and_then(|s| s.ceiling_ng_per_ml)
                    .unwrap_or(t.ceiling_ng_per_ml.value),
            },
            doses: Vec::new(),
            spans: Vec::new(),
        };
        let (t0, t1) = (start, rows.last().map_or(start, |r| r.t_ms));
        (spec.doses, spec.spans) = dose_marks(f, &reader, &a.patient_id, t0, t1)?;
        dosetrack::plot::write_plot(path, &spec)
            .with_context(|| format!("writing the chart to {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// The doses and infusions of a patient's recorded history between `t0`
/// and `t1`, for the chart's dose lane: the patient's stored inputs
/// replayed through the tracker (as the daemon derived them).
fn dose_marks(
    f: &Formulary,
    reader: &dosetrack::store::Reader,
    patient_id: &str,
    t0: i64,
    t1: i64,
) -> anyhow::Result<(
    Vec<dosetrack::plot::DoseMark>,
    Vec<dosetrack::plot::SpanMark>,
)> {
    use dosetrack::tracker::{Tracker, TrackerConfig};
    let mut tracker = Tracker::new(std::sync::Arc::new(f.clone()), TrackerConfig::default());
    for s in reader.inputs_for_patient(patient_id)? {
        if let Ok(t) = dosetrack::intake::replay(&s) {
            tracker.apply(t);
        }
    }
    let (mut doses, mut spans) = (Vec::new(), Vec::new());
    let Some(d) = tracker.derived(patient_id) else {
        return Ok((doses, spans));
    };
    for del in &d.ledger.deliveries {
        let end = del.end_ms.unwrap_or(i64::MAX);
        if del.rate_mg_per_h.is_some() {
            if del.start_ms <= t1 && end >= t0 {
                spans.push(dosetrack::plot::SpanMark {
                    start_ms: del.start_ms,
                    end_ms: end,
                    label: del.label(),
                });
            }
        } else if (t0..=t1).contains(&del.start_ms) {
            doses.push(dosetrack::plot::DoseMark {
                time_ms: del.start_ms,
                label: del.label(),
            });
        }
    }
    Ok((doses, spans))
}

/// One stored input of `dosetrack events --format json` (a JSON Lines
/// line). `payload` is the input as it arrived: the document is echoed
/// (as JSON, or as a string if it is not JSON), not read into fields.
#[derive(Debug, Serialize)]
struct EventLine<'a> {
    id: &'a str,
    kind: &'a str,
    occurred_at: String,
    payload: serde_json::Value,
    received_at: String,
    seq: i64,
    source: String,
}

/// `dosetrack events`: every stored input of a patient.
pub(crate) fn events(a: &EventsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let rows = a.db.reader()?.inputs_for_patient(&a.patient_id)?;
    match a.format {
        TableFormat::Csv => {
            writeln!(out, "seq,occurred_at,received_at,source,kind,id,payload")?;
            for s in &rows {
                let r = &s.record;
                let payload = r.payload.replace('"', "\"\"");
                writeln!(
                    out,
                    "{},{},{},{}/{},{},{},\"{payload}\"",
                    s.seq,
                    format_rfc3339(r.occurred_at_ms),
                    format_rfc3339(r.received_at_ms),
                    r.source.kind(),
                    r.source.id(),
                    r.kind,
                    csv_field(&r.input_id),
                )?;
            }
        }
        TableFormat::Json => {
            for s in &rows {
                let r = &s.record;
                let line = EventLine {
                    id: &r.input_id,
                    kind: &r.kind,
                    occurred_at: format_rfc3339(r.occurred_at_ms),
                    payload: serde_json::from_str(&r.payload)
                        .unwrap_or_else(|_| serde_json::Value::String(r.payload.clone())),
                    received_at: format_rfc3339(r.received_at_ms),
                    seq: s.seq,
                    source: format!("{}/{}", r.source.kind(), r.source.id()),
                };
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            }
        }
    }
    Ok(())
}

/// Quote a CSV field when it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
