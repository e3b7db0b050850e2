//! The offline commands, as pure functions: `simulate`, `forecast` and
//! `model show` take text and a [`Formulary`] and return reports; the binary
//! only reads files, prints, and maps errors to exit codes.
//!
//! Events files are JSON Lines of the contract's dose and device-event
//! payloads (see `contract::parse_simulation_line`); blank lines and lines
//! starting with `#` are skipped. Every error names its line and field.

use crate::chart::{DoseMark, PlotSpec, SpanMark, TargetLines};
use crate::contract::{self, ErrorCode, SimulationInput};
use crate::ledger::{Ledger, LedgerInput, LedgerNote};
use crate::patient::{
    Assumption, Formulary, PatientError, PatientSpec, PatientWarning, ResolvedPatient,
};
use crate::pk::{Crossing, Direction, Output, Sample, Schedule, ScheduleError, Solution, System};
use crate::vocab::{format_rfc3339, parse_rfc3339_ms, Route, TimeMs, TimeParseError};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

mod csv;

/// The notice every report and chart carries.
pub const NOTICE: &str = "decision support and research software, not a certified medical device";

/// What the forecast assumes about inputs after "now" (the engine's).
pub use crate::pk::FORECAST_ASSUMPTIONS;

/// An input the commands cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulateError {
    #[error("line {line}: {code}{}: {message}", field.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
    Line {
        line: usize,
        code: ErrorCode,
        field: Option<String>,
        message: String,
    },
    #[error("the events file has no events")]
    NoEvents,
    #[error("{option}: {message}")]
    BadOption {
        option: &'static str,
        message: String,
    },
    /// `--to` is neither a time nor a duration.
    #[error("--to: {0}")]
    BadEnd(#[from] EndError),
    #[error(transparent)]
    Patient(#[from] PatientError),
    #[error("dosing: {0}")]
    Schedule(#[from] ScheduleError),
}

/// Parse an events file. Redeliveries (same source and id, same content)
/// are kept once; the same id with different content is an error.
pub fn parse_events(text: &str) -> Result<Vec<LedgerInput>, SimulateError> {
    let mut inputs = Vec::new();
    let mut seen: HashMap<(String, String), (usize, serde_json::Value)> = HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let parsed = contract::parse_simulation_line(trimmed).map_err(|r| SimulateError::Line {
            line,
            code: r.code,
            field: r.field,
            message: r.message,
        })?;
        let input = match parsed {
            SimulationInput::Dose(d) => LedgerInput::Dose(d),
            SimulationInput::DeviceEvent { device_id, event } => {
                LedgerInput::Device { device_id, event }
            }
        };
        // "Same content" is the same parsed input: number spelling (20 vs
        // 20.0) and unknown fields (ignored by the contract) do not count.
        let content = input_content(&input);
        let key = (input.source(), input.id().to_owned());
        if let Some((first_line, first)) = seen.get(&key) {
            if *first == content {
                continue;
            }
            return Err(SimulateError::Line {
                line,
                code: ErrorCode::DuplicateConflict,
                field: Some("id".to_owned()),
                message: format!(
                    "id '{}' from {} was already used on line {first_line} with different content",
                    key.1, key.0
                ),
            });
        }
        seen.insert(key, (line, content));
        inputs.push(input);
    }
    if inputs.is_empty() {
        return Err(SimulateError::NoEvents);
    }
    Ok(inputs)
}

fn input_content(input: &LedgerInput) -> serde_json::Value {
    match input {
        LedgerInput::Dose(d) => serde_json::to_value(d),
        LedgerInput::Device { event, .. } => serde_json::to_value(event),
        LedgerInput::DeviceMoved { .. } => Ok(serde_json::Value::Null),
    }
    .unwrap_or(serde_json::Value::Null)
}

/// A duration option that is not one (`--step`, `--horizon`, `--duration`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("'{text}' needs a unit: ms, s, min, h or d")]
    NoUnit { text: String },
    #[error("'{text}' is not a duration like 60s, 15min or 24h")]
    NotANumber { text: String },
    #[error("unknown unit '{unit}' in '{text}': use ms, s, min, h or d")]
    UnknownUnit { unit: String, text: String },
    #[error("'{text}' must be a positive duration")]
    NotPositive { text: String },
}

/// Parse a duration: a number with a unit `ms`, `s`, `min`/`m`, `h` or `d`
/// (`60s`, `1.5h`, `24h`).
pub fn parse_duration_ms(text: &str) -> Result<TimeMs, DurationError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| DurationError::NoUnit {
            text: text.to_owned(),
        })?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| DurationError::NotANumber {
        text: text.to_owned(),
    })?;
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(DurationError::UnknownUnit {
                unit: other.to_owned(),
                text: text.to_owned(),
            })
        }
    };
    let ms = (value * scale).round();
    if !(ms.is_finite() && ms > 0.0 && ms < 1e15) {
        return Err(DurationError::NotPositive {
            text: text.to_owned(),
        });
    }
    Ok(ms as TimeMs)
}

/// An end (`--to`) that is neither a time nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{time}; nor is it a duration like 24h")]
pub struct EndError {
    /// Why it is not an RFC 3339 time.
    pub time: TimeParseError,
}

/// `--to`: an RFC 3339 time, or a duration after `from`.
pub fn parse_end(text: &str, from_ms: TimeMs) -> Result<TimeMs, EndError> {
    match parse_rfc3339_ms(text) {
        Ok(t) => Ok(t),
        Err(time) => parse_duration_ms(text)
            .map(|d| from_ms + d)
            .map_err(|_| EndError { time }),
    }
}

/// A patient's solved regimen: what every command starts from.
pub struct Solved {
    pub patient: ResolvedPatient,
    pub ledger: Ledger,
    pub solution: Solution,
    pub first_event_ms: TimeMs,
    pub last_event_ms: TimeMs,
    /// The drug file's norketamine model, if it has one (for `relief`).
    pub norketamine: Option<crate::drug::NorketamineSpec>,
}

/// Resolve the patient and solve the inputs that occurred at or before
/// `known_at_ms` (all of them when `None`).
pub fn solve(
    formulary: &Formulary,
    spec: &PatientSpec,
    inputs: &[LedgerInput],
    known_at_ms: Option<TimeMs>,
) -> Result<Solved, SimulateError> {
    let patient = formulary.resolve(spec)?;
    let known: Vec<LedgerInput> = inputs
        .iter()
        .filter(|i| known_at_ms.is_none_or(|t| i.time_ms() <= t))
        .cloned()
        .collect();
    let ledger = Ledger::build(&known);
    let schedule = Schedule::build(&patient.params, &ledger.dosing())?;
    let system = Arc::new(System::new(patient.params.clone()).map_err(PatientError::from)?);
    let solution = Solution::new(system, &schedule);
    let first_event_ms = inputs.iter().map(LedgerInput::time_ms).min().unwrap_or(0);
    let last_event_ms = inputs.iter().map(LedgerInput::time_ms).max().unwrap_or(0);
    Ok(Solved {
        patient,
        ledger,
        solution,
        first_event_ms,
        last_event_ms,
        norketamine: formulary.drug().norketamine().cloned(),
    })
}

/// Output of `simulate`.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationReport {
    pub notice: &'static str,
    pub model: String,
    pub model_title: String,
    pub from: String,
    pub to: String,
    pub step_ms: TimeMs,
    pub warnings: Vec<PatientWarning>,
    pub ledger_notes: Vec<LedgerNote>,
    pub assumptions: Vec<Assumption>,
    #[serde(skip)]
    pub from_ms: TimeMs,
    /// The end asked for (the last grid point is the last not after it).
    #[serde(skip)]
    pub to_ms: TimeMs,
    /// The samples; empty from [`simulate_table`], which leaves them to be
    /// computed as they are written ([`write_csv_streamed`]).
    #[serde(serialize_with = "serialize_samples")]
    pub samples: Vec<Sample>,
}

/// Sample a solved regimen on a grid.
pub fn simulate(
    solved: &Solved,
    from_ms: Option<TimeMs>,
    to: Option<&str>,
    step_ms: TimeMs,
) -> Result<SimulationReport, SimulateError> {
    let mut report = simulate_table(solved, from_ms, to, step_ms)?;
    report.samples = solved
        .solution
        .sample(report.from_ms, report.to_ms, report.step_ms);
    Ok(report)
}

/// [`simulate`] without the samples: the grid, the model, the warnings and
/// assumptions, checked as [`simulate`] checks them. The samples are
/// computed as they are written by [`write_csv_streamed`] (a day at 1-s
/// steps is 86,400 of them: not held).
pub fn simulate_table(
    solved: &Solved,
    from_ms: Option<TimeMs>,
    to: Option<&str>,
    step_ms: TimeMs,
) -> Result<SimulationReport, SimulateError> {
    let from_ms = from_ms.unwrap_or(solved.first_event_ms);
    let to_ms = match to {
        Some(text) => parse_end(text, from_ms)?,
        None => from_ms + 24 * 3_600_000,
    };
    if to_ms < from_ms {
        return Err(SimulateError::BadOption {
            option: "--to",
            message: format!(
                "{} is before --from {}",
                format_rfc3339(to_ms),
                format_rfc3339(from_ms)
            ),
        });
    }
    if step_ms <= 0 {
        return Err(SimulateError::BadOption {
            option: "--step",
            message: "must be positive".to_owned(),
        });
    }
    let points = (to_ms - from_ms) / step_ms + 1;
    if points > 10_000_000 {
        return Err(SimulateError::BadOption {
            option: "--step",
            message: format!("{points} points is more than 10,000,000; use a longer step"),
        });
    }
    let routes_used = used_routes(&solved.ledger);
    // The last grid point, which is `to` unless the step does not divide it.
    let last_ms = from_ms + (points - 1) * step_ms;
    Ok(SimulationReport {
        notice: NOTICE,
        model: solved.patient.model_label.clone(),
        model_title: solved.patient.model_title.clone(),
        from: format_rfc3339(from_ms),
        to: format_rfc3339(last_ms),
        step_ms,
        warnings: solved.patient.warnings.clone(),
        ledger_notes: solved.ledger.notes.clone(),
        assumptions: relevant_assumptions(&solved.patient, &routes_used),
        from_ms,
        to_ms,
        samples: Vec::new(),
    })
}

fn used_routes(ledger: &Ledger) -> Vec<Route> {
    let mut routes: Vec<Route> = ledger.deliveries.iter().map(|d| d.route).collect();
    routes.sort();
    routes.dedup();
    routes
}

/// The patient's assumptions, keeping route values (and the liver's
/// per-route swallowed shares) only for routes used.
fn relevant_assumptions(patient: &ResolvedPatient, routes: &[Route]) -> Vec<Assumption> {
    patient
        .assumptions
        .iter()
        .filter(|a| {
            if let Some(rest) = a.key.strip_prefix("routes.") {
                routes.iter().any(|r| rest.starts_with(&format!("{r}.")))
            } else if let Some(route) = a.key.strip_prefix("liver.swallowed_share_of_f.") {
                routes.iter().any(|r| r.as_str() == route)
            } else {
                true
            }
        })
        .cloned()
        .collect()
}

fn serialize_samples<S: serde::Serializer>(samples: &[Sample], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let from = samples.first().map_or(0, |x| x.t_ms);
    let mut seq = s.serialize_seq(Some(samples.len()))?;
    for x in samples {
        seq.serialize_element(&serde_json::json!({
            "time": format_rfc3339(x.t_ms),
            "t_min": (x.t_ms - from) as f64 / 60_000.0,
            "cp_ng_per_ml": x.cp_ng_per_ml,
            "ce_ng_per_ml": x.ce_ng_per_ml,
        }))?;
    }
    seq.end()
}

/// The CSV form: header `time,t_min,cp_ng_per_ml,ce_ng_per_ml`, one row per
/// sample, `t_min` in minutes since `from`.
pub fn to_csv(report: &SimulationReport) -> String {
    let mut out = Vec::with_capacity(report.samples.len() * 48 + 40);
    // Writing to a Vec cannot fail.
    let _ = write_csv(report, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`to_csv`], written to `out` in chunks of about 64 KiB (a day at 1-s
/// steps is 4 MB of text: not held whole).
pub fn write_csv(report: &SimulationReport, out: &mut impl std::io::Write) -> std::io::Result<()> {
    write_csv_rows(report.from_ms, report.samples.iter().copied(), out)
}

/// The CSV of a report from [`simulate_table`], its samples computed as
/// they are written: the same bytes as [`write_csv`] of [`simulate`]'s
/// report, without the samples held in memory.
pub fn write_csv_streamed(
    solved: &Solved,
    report: &SimulationReport,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let samples = solved
        .solution
        .samples(report.from_ms, report.to_ms, report.step_ms);
    write_csv_rows(report.from_ms, samples, out)
}

/// The header and one row per sample of `samples`, `t_min` counted from
/// `from_ms`, in chunks of about 64 KiB: each row written in place at the
/// end of the chunk (a row needing the exact path is written apart).
fn write_csv_rows(
    from_ms: TimeMs,
    samples: impl IntoIterator<Item = Sample>,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    const HEADER: &[u8] = b"time,t_min,cp_ng_per_ml,ce_ng_per_ml\n";
    // Below CHUNK bytes before every row, so a whole row fits after them.
    let mut buf = vec![0u8; CHUNK + csv::ROW_MAX];
    buf[..HEADER.len()].copy_from_slice(HEADER);
    let mut len = HEADER.len();
    let mut rows = csv::RowWriter::new(from_ms);
    let mut apart = Vec::new();
    for s in samples {
        let row = buf
            .get_mut(len..)
            .and_then(|b| b.first_chunk_mut::<{ csv::ROW_MAX }>());
        match row.and_then(|row| rows.put(row, &s)) {
            Some(n) => len += n,
            None => {
                apart.clear();
                rows.push(&mut apart, &s);
                out.write_all(&buf[..len])?;
                out.write_all(&apart)?;
                len = 0;
            }
        }
        if len >= CHUNK {
            out.write_all(&buf[..len])?;
            len = 0;
        }
    }
    out.write_all(&buf[..len])
}

fn trim_float(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// The chart of a simulation.
pub fn plot_spec(solved: &Solved, report: &SimulationReport, title: &str) -> PlotSpec {
    let p = &solved.patient;
    let ke0 = match p.ke0_from_tpeak_min {
        Some(tpeak) => format!(
            "ke0 {:.3}/min (from tpeak {tpeak} min)",
            p.params.ke0_per_min
        ),
        None => format!("ke0 {:.3}/min", p.params.ke0_per_min),
    };
    let assumed = if report.assumptions.is_empty() {
        String::new()
    } else {
        format!(
            " · {} assumed values (see --format json)",
            report.assumptions.len()
        )
    };
    let mut doses = Vec::new();
    let mut spans = Vec::new();
    for d in &solved.ledger.deliveries {
        if d.rate_mg_per_h.is_some() {
            spans.push(SpanMark {
                start_ms: d.start_ms,
                end_ms: d.end_ms.unwrap_or(i64::MAX),
                label: d.label(),
            });
        } else {
            doses.push(DoseMark {
                time_ms: d.start_ms,
                label: d.label(),
            });
        }
    }
    PlotSpec {
        title: title.to_owned(),
        subtitle: format!("model {} · {ke0}{assumed} · {NOTICE}", p.model_label),
        times_ms: report.samples.iter().map(|s| s.t_ms).collect(),
        cp_ng_per_ml: report.samples.iter().map(|s| s.cp_ng_per_ml).collect(),
        ce_ng_per_ml: report.samples.iter().map(|s| s.ce_ng_per_ml).collect(),
        targets: TargetLines {
            analgesic_floor_ng_per_ml: p.targets.analgesic_floor_ng_per_ml,
            caution_ng_per_ml: p.targets.psychotomimetic_caution_ng_per_ml,
            ceiling_ng_per_ml: p.targets.ceiling_ng_per_ml,
        },
        doses,
        spans,
    }
}

/// One level the forecast watches.
#[derive(Debug, Clone, Serialize)]
pub struct ForecastLine {
    pub output: Output,
    pub level_ng_per_ml: f64,
    /// `floor`, `caution`, `ceiling` or `level`.
    pub label: String,
    /// Side of the level now: `above`, `below`.
    pub now: &'static str,
    pub crossing: Option<CrossingReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrossingReport {
    pub time: String,
    pub direction: Direction,
    pub in_min: f64,
}

/// Output of `forecast`.
#[derive(Debug, Clone, Serialize)]
pub struct ForecastReport {
    pub notice: &'static str,
    pub model: String,
    pub at: String,
    pub horizon_h: f64,
    pub cp_ng_per_ml: f64,
    pub ce_ng_per_ml: f64,
    pub assumes: &'static str,
    pub lines: Vec<ForecastLine>,
    pub warnings: Vec<PatientWarning>,
    pub assumptions: Vec<Assumption>,
}

/// Next crossings of each level from `at_ms`, for Cp and/or Ce. With no
/// levels given, the patient's floor, caution level and ceiling.
pub fn forecast(
    solved: &Solved,
    at_ms: TimeMs,
    horizon_ms: TimeMs,
    outputs: &[Output],
    levels: &[f64],
) -> Result<ForecastReport, SimulateError> {
    let t = &solved.patient.targets;
    let named: Vec<(String, f64)> = if levels.is_empty() {
        vec![
            ("floor".to_owned(), t.analgesic_floor_ng_per_ml),
            ("caution".to_owned(), t.psychotomimetic_caution_ng_per_ml),
            ("ceiling".to_owned(), t.ceiling_ng_per_ml),
        ]
    } else {
        levels.iter().map(|l| ("level".to_owned(), *l)).collect()
    };
    if let Some(bad) = named.iter().find(|(_, l)| !(l.is_finite() && *l > 0.0)) {
        return Err(SimulateError::BadOption {
            option: "--level",
            message: format!("{} must be a positive number of ng/mL", bad.1),
        });
    }
    let now = solved.solution.at(at_ms);
    let mut lines = Vec::new();
    for output in outputs {
        let value = match output {
            Output::Cp => now.cp_ng_per_ml,
            Output::Ce => now.ce_ng_per_ml,
        };
        for (label, level) in &named {
            let crossing = solved
                .solution
                .next_crossing(*output, *level, at_ms, horizon_ms)
                .map(
                    |Crossing {
                         at_ms: c,
                         direction,
                     }| CrossingReport {
                        time: format_rfc3339(c),
                        direction,
                        in_min: (c - at_ms) as f64 / 60_000.0,
                    },
                );
            lines.push(ForecastLine {
                output: *output,
                level_ng_per_ml: *level,
                label: label.clone(),
                now: if value > *level { "above" } else { "below" },
                crossing,
            });
        }
    }
    let routes_used = used_routes(&solved.ledger);
    Ok(ForecastReport {
        notice: NOTICE,
        model: solved.patient.model_label.clone(),
        at: format_rfc3339(at_ms),
        horizon_h: horizon_ms as f64 / 3_600_000.0,
        cp_ng_per_ml: now.cp_ng_per_ml,
        ce_ng_per_ml: now.ce_ng_per_ml,
        assumes: FORECAST_ASSUMPTIONS,
        lines,
        warnings: solved.patient.warnings.clone(),
        assumptions: relevant_assumptions(&solved.patient, &routes_used),
    })
}

/// The forecast for people.
pub fn forecast_text(r: &ForecastReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "dosetrack forecast — {} ({NOTICE})", r.model);
    let _ = writeln!(
        out,
        "at {}: Cp {:.1} ng/mL, Ce {:.1} ng/mL; horizon {} h",
        r.at, r.cp_ng_per_ml, r.ce_ng_per_ml, r.horizon_h
    );
    let _ = writeln!(out, "assumes: {}", r.assumes);
    for l in &r.lines {
        let what = format!(
            "{:?} {} {}",
            l.output,
            l.label,
            trim_float(l.level_ng_per_ml, 2)
        );
        match &l.crossing {
            Some(c) => {
                let verb = match c.direction {
                    Direction::Rising => "rises above",
                    Direction::Falling => "falls below",
                };
                let _ = writeln!(
                    out,
                    "  {what:<22} now {:<5}  {verb} at {} (in {:.1} min)",
                    l.now, c.time, c.in_min
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  {what:<22} now {:<5}  no crossing within the horizon",
                    l.now
                );
            }
        }
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning [{}]: {}", w.code, w.message);
    }
    if !r.assumptions.is_empty() {
        let _ = writeln!(
            out,
            "rests on {} assumed values: {}",
            r.assumptions.len(),
            r.assumptions
                .iter()
                .map(|a| a.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

/// Output of `model show`: the resolved parameters, so any other engine can
/// be checked against ours.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub notice: &'static str,
    pub model: String,
    pub title: String,
    pub source: String,
    pub covariates: crate::patient::Covariates,
    pub compartments: u8,
    pub volumes_l: [f64; 3],
    pub clearances_l_per_min: [f64; 3],
    pub micro_constants_per_min: MicroReport,
    pub ke0_per_min: f64,
    pub ke0_from_tpeak_min: Option<f64>,
    pub routes: Vec<crate::patient::RouteResolution>,
    pub targets: crate::patient::PatientTargets,
    pub setting: crate::vocab::Setting,
    pub limits: crate::drug::DoseLimits,
    pub interactions: Vec<crate::patient::AppliedInteraction>,
    pub warnings: Vec<PatientWarning>,
    pub assumptions: Vec<Assumption>,
    /// The drug file's relief models (`dosetrack relief`), each value with
    /// its source; `None` when the file has none.
    pub relief: Option<crate::drug::ReliefSpec>,
    /// The drug file's norketamine model (reported by `relief`), each value
    /// with its source; `None` when the file has none.
    pub norketamine: Option<crate::drug::NorketamineSpec>,
    /// The patient's indication (graded acute relief, the floor).
    pub indication: Option<crate::patient::PatientIndication>,
    /// What sex, age and genotype did to clearance and F.
    pub effects: crate::patient::PatientEffects,
}

#[derive(Debug, Clone, Serialize)]
pub struct MicroReport {
    pub k10: f64,
    pub k12: f64,
    pub k21: f64,
    pub k13: f64,
    pub k31: f64,
}

/// Resolve a patient for `model show`.
pub fn model_report(
    formulary: &Formulary,
    spec: &PatientSpec,
) -> Result<ModelReport, SimulateError> {
    let p = formulary.resolve(spec)?;
    let v = p.volumes_l();
    let k = &p.params;
    Ok(ModelReport {
        notice: NOTICE,
        model: p.model_label.clone(),
        title: p.model_title.clone(),
        source: p.model_source.clone(),
        covariates: p.covariates.clone(),
        compartments: k.compartments(),
        volumes_l: v,
        clearances_l_per_min: [
            k.cl_l_per_min(),
            k.k12_per_min * k.v1_l,
            k.k13_per_min * k.v1_l,
        ],
        micro_constants_per_min: MicroReport {
            k10: k.k10_per_min,
            k12: k.k12_per_min,
            k21: k.k21_per_min,
            k13: k.k13_per_min,
            k31: k.k31_per_min,
        },
        ke0_per_min: k.ke0_per_min,
        ke0_from_tpeak_min: p.ke0_from_tpeak_min,
        routes: p.routes.clone(),
        targets: p.targets,
        setting: p.setting,
        limits: p.limits.clone(),
        interactions: p.interactions.clone(),
        warnings: p.warnings.clone(),
        assumptions: p.assumptions.to_vec(),
        relief: formulary.drug().relief().cloned(),
        norketamine: formulary.drug().norketamine().cloned(),
        indication: p.indication.clone(),
        effects: p.effects.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drug::DrugFile;

    const EVENTS: &str = r#"
# a short day
{"id":"m1","time":"2026-11-27T08:00:00Z","route":"iv_bolus","amount_mg":20}
{"device_id":"pump-7","id":"e1","time":"2026-11-27T08:05:00Z","kind":"infusion_started","patient_id":"P-1","rate_mg_per_h":20}
{"device_id":"pump-7","id":"e2","time":"2026-11-27T10:05:00Z","kind":"infusion_stopped"}
{"id":"m2","time":"2026-11-27T12:00:00Z","route":"intranasal","amount_mg":50}
"#;

    fn formulary() -> Formulary {
        Formulary::new(DrugFile::builtin().unwrap()).unwrap()
    }

    #[test]
    fn csv_has_the_exact_header_and_one_row_per_step() {
        let f = formulary();
        let inputs = parse_events(EVENTS).unwrap();
        let solved = solve(&f, &PatientSpec::weight_only(70.0), &inputs, None).unwrap();
        let report = simulate(&solved, None, Some("1h"), 60_000).unwrap();
        let csv = to_csv(&report);
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("time,t_min,cp_ng_per_ml,ce_ng_per_ml"));
        assert_eq!(csv.lines().count(), 62);
        assert!(csv.contains("\n2026-11-27T08:01:00Z,1,"));
    }

    /// The CSV as `format!` wrote it before the hand-written formatter
    /// (`simulate/csv.rs`): the new one must give the same bytes.
    fn to_csv_with_format(report: &SimulationReport) -> String {
        let mut out = String::new();
        out.push_str("time,t_min,cp_ng_per_ml,ce_ng_per_ml\n");
        for s in &report.samples {
            let t_min = (s.t_ms - report.from_ms) as f64 / 60_000.0;
            let _ = writeln!(
                out,
                "{},{},{:.4},{:.4}",
                format_rfc3339(s.t_ms),
                trim_float(t_min, 4),
                s.cp_ng_per_ml,
                s.ce_ng_per_ml
            );
        }
        out
    }

    #[test]
    fn csv_is_byte_for_byte_the_format_output() {
        let f = formulary();
        let inputs = parse_events(EVENTS).unwrap();
        let solved = solve(&f, &PatientSpec::weight_only(70.0), &inputs, None).unwrap();
        // A day at 1 s, and odd steps and starts (milliseconds in the
        // times, minutes with four decimals).
        for (from, to, step) in [
            (None, "24h", 1_000),
            (Some(1_795_766_400_123), "3h", 1_234),
            (Some(1_795_766_399_999), "30min", 7),
        ] {
            let report = simulate(&solved, from, Some(to), step).unwrap();
            let new = to_csv(&report);
            let old = to_csv_with_format(&report);
            let mut streamed = Vec::new();
            write_csv(&report, &mut streamed).unwrap();
            assert_eq!(streamed, old.as_bytes());
            // Sampled as written (the command line's path): the same bytes.
            let table = simulate_table(&solved, from, Some(to), step).unwrap();
            assert!(table.samples.is_empty());
            assert_eq!((table.from_ms, table.to_ms), (report.from_ms, report.to_ms));
            let mut computed_as_written = Vec::new();
            write_csv_streamed(&solved, &table, &mut computed_as_written).unwrap();
            assert_eq!(computed_as_written, old.as_bytes());
            assert!(report.samples.len() > 1_000);
            assert_eq!(new.len(), old.len());
            for (n, (a, b)) in new.lines().zip(old.lines()).enumerate() {
                assert_eq!(a, b, "line {n}");
            }
            assert_eq!(new, old);
        }
    }

    #[test]
    fn csv_rows_that_need_the_exact_path_are_written_in_order() {
        let from_ms = 1_795_766_400_000;
        let odd = [f64::NAN, f64::MAX, -0.0, 1e11, 0.00005, -1e300];
        let samples: Vec<Sample> = (0..20_000i64)
            .map(|i| Sample {
                t_ms: if i % 4_999 == 7 {
                    -62_135_596_800_000
                } else {
                    from_ms + i * 1_001
                },
                cp_ng_per_ml: if i % 97 == 3 {
                    odd[(i as usize / 97) % odd.len()]
                } else {
                    i as f64 / 7.0
                },
                ce_ng_per_ml: if i % 1_013 == 5 {
                    f64::INFINITY
                } else {
                    (i as f64).sqrt()
                },
            })
            .collect();
        let mut expected = String::from("time,t_min,cp_ng_per_ml,ce_ng_per_ml\n");
        for s in &samples {
            let t_min = (s.t_ms - from_ms) as f64 / 60_000.0;
            let _ = writeln!(
                expected,
                "{},{},{:.4},{:.4}",
                format_rfc3339(s.t_ms),
                trim_float(t_min, 4),
                s.cp_ng_per_ml,
                s.ce_ng_per_ml
            );
        }
        let mut out = Vec::new();
        write_csv_rows(from_ms, samples.iter().copied(), &mut out).unwrap();
        assert!(expected.len() > 3 * 64 * 1024);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let bad = "{\"id\":\"m1\",\"time\":\"2026-11-27T08:00:00Z\",\"route\":\"iv_bolus\",\"amount_mg\":20}\n\n{\"id\":\"m2\",\"time\":\"2026-11-27T08:00:00Z\",\"route\":\"nasal\",\"amount_mg\":20}\n";
        match parse_events(bad) {
            Err(SimulateError::Line {
                line, field, code, ..
            }) => {
                assert_eq!(
                    (line, field.as_deref(), code),
                    (3, Some("route"), ErrorCode::InvalidValue)
                );
            }
            other => panic!("{other:?}"),
        }
        let negative =
            "{\"id\":\"m1\",\"time\":\"2026-11-27T08:00:00Z\",\"route\":\"oral\",\"amount_mg\":-5}";
        assert!(matches!(
            parse_events(negative),
            Err(SimulateError::Line { line: 1, .. })
        ));
        let no_time = "{\"id\":\"m1\",\"route\":\"oral\",\"amount_mg\":5}";
        match parse_events(no_time) {
            Err(SimulateError::Line { field, code, .. }) => {
                assert_eq!(
                    (field.as_deref(), code),
                    (Some("time"), ErrorCode::MissingField)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_events("\n# nothing\n"), Err(SimulateError::NoEvents));
    }

    #[test]
    fn redelivery_is_kept_once_and_conflicts_are_errors() {
        let line =
            "{\"id\":\"m1\",\"time\":\"2026-11-27T08:00:00Z\",\"route\":\"oral\",\"amount_mg\":5}";
        assert_eq!(parse_events(&format!("{line}\n{line}\n")).unwrap().len(), 1);
        let respelled = line.replace("5}", "5.0, \"note\": \"unknown fields are ignored\"}");
        assert_eq!(
            parse_events(&format!("{line}\n{respelled}\n"))
                .unwrap()
                .len(),
            1
        );
        let other = line.replace("5}", "6}");
        assert!(matches!(
            parse_events(&format!("{line}\n{other}\n")),
            Err(SimulateError::Line {
                line: 2,
                code: ErrorCode::DuplicateConflict,
                ..
            })
        ));
    }

    #[test]
    fn durations_and_ends() {
        assert_eq!(parse_duration_ms("60s"), Ok(60_000));
        assert_eq!(parse_duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("15min"), Ok(900_000));
        assert!(parse_duration_ms("15").is_err());
        assert!(parse_duration_ms("-1h").is_err());
        assert!(parse_duration_ms("2 weeks").is_err());
        assert_eq!(parse_end("24h", 1000), Ok(1000 + 86_400_000));
        assert!(parse_end("2026-11-27T10:00:00Z", 0).is_ok());
        assert!(parse_end("tomorrow", 0).is_err());
    }

    #[test]
    fn forecast_uses_only_what_was_known_and_assumes_the_pump_runs() {
        let f = formulary();
        let inputs = parse_events(EVENTS).unwrap();
        let at = parse_rfc3339_ms("2026-11-27T09:00:00Z").unwrap();
        // Known at 09:00: the pump is running; its stop at 10:05 is not known.
        let solved = solve(&f, &PatientSpec::weight_only(70.0), &inputs, Some(at)).unwrap();
        let r = forecast(&solved, at, 6 * 3_600_000, &[Output::Ce], &[]).unwrap();
        let floor = &r.lines[0];
        assert_eq!(floor.label, "floor");
        assert!(
            floor.crossing.is_none(),
            "a running 20 mg/h pump keeps Ce above 100: {floor:?}"
        );
        // With everything known, Ce falls below the floor after the stop.
        let solved = solve(&f, &PatientSpec::weight_only(70.0), &inputs, None).unwrap();
        let r = forecast(&solved, at, 6 * 3_600_000, &[Output::Ce], &[]).unwrap();
        let c = r.lines[0].crossing.as_ref().unwrap();
        assert_eq!(c.direction, Direction::Falling);
        assert!(c.time.as_str() > "2026-11-27T10:05:00Z");
        assert!(forecast_text(&r).contains("falls below"));
    }

    #[test]
    fn model_report_has_the_domino_numbers() {
        let f = formulary();
        let mut spec = PatientSpec::weight_only(70.0);
        spec.model = Some("domino".into());
        let r = model_report(&f, &spec).unwrap();
        assert_eq!(r.compartments, 3);
        assert!((r.volumes_l[0] - 4.41).abs() < 1e-12);
        assert!((r.clearances_l_per_min[0] - 1.93158).abs() < 1e-9);
        assert!((r.clearances_l_per_min[1] - 2.61072).abs() < 1e-9);
        assert!((r.clearances_l_per_min[2] - 2.6019).abs() < 1e-9);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["micro_constants_per_min"]["k10"], 0.438);
        assert!(json["routes"].as_array().unwrap().len() == 9);
    }
}
