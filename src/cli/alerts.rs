//! The alert commands: `alerts report` (the alarm burden from the
//! database), `alerts list` (the stored lifecycle messages) and `alerts
//! ward-day` (a simulated ward day through the alert engine, offline).

use super::args::{AlertsListArgs, AlertsReportArgs, AlertsWardDayArgs, ReportFormat};
use super::{formulary, input_error, now_ms, time_arg};
use dosetrack::vocab::format_rfc3339;
use std::io::Write;
use std::path::Path;

/// `dosetrack alerts report`: the alarm-burden report from the database.
pub(crate) fn report(a: &AlertsReportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let from = a
        .from
        .as_deref()
        .map(|t| time_arg("--from", t))
        .transpose()?
        .unwrap_or(i64::MIN / 2);
    let to =
        a.to.as_deref()
            .map(|t| time_arg("--to", t))
            .transpose()?
            .unwrap_or_else(|| now_ms() + 1);
    if to <= from {
        return Err(input_error("--to must be after --from"));
    }
    let reader = a.db.reader()?;
    let events = reader.alert_events(from, to)?;
    let first = events.iter().map(|e| e.time_ms).min().unwrap_or(to);
    let from = from.max(first.min(to));
    let days = reader.patient_days(from, to)?;
    let mut report = dosetrack::alerts::report::build(&events, days, from, to);
    // Less than a day (of window, or of patients observed) is not
    // extrapolated to a daily rate: 1 alert in 2 min is not 720 a day.
    let withheld = withheld_rate(to - from, days);
    if withheld.is_some() {
        for r in &mut report.rules {
            r.per_patient_day = None;
        }
    }
    match a.format {
        ReportFormat::Json => {
            let mut v = serde_json::to_value(&report)?;
            if let (Some(why), Some(map)) = (&withheld, v.as_object_mut()) {
                map.insert("per_patient_day_withheld".to_owned(), why.clone().into());
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        ReportFormat::Text => {
            writeln!(
                out,
                "Alarm burden {} to {} ({:.2} patient-days)",
                format_rfc3339(from),
                format_rfc3339(to),
                days
            )?;
            writeln!(
                out,
                "{:<20} {:>7} {:>9} {:>6} {:>14} {:>8} {:>16} {:>6}",
                "rule",
                "raised",
                "per pt-d",
                "acked",
                "median ack min",
                "cleared",
                "quick clear (%)",
                "escal"
            )?;
            let opt =
                |v: Option<f64>, k: f64| v.map_or("-".to_owned(), |x| format!("{:.1}", x * k));
            for r in &report.rules {
                writeln!(
                    out,
                    "{:<20} {:>7} {:>9} {:>6} {:>14} {:>8} {:>16} {:>6}",
                    r.rule.as_str(),
                    r.raised,
                    opt(r.per_patient_day, 1.0),
                    r.acknowledged,
                    opt(r.median_time_to_ack_min, 1.0),
                    r.cleared,
                    opt(r.cleared_within_2_min_without_action, 100.0),
                    r.escalations
                )?;
            }
            if let Some(why) = &withheld {
                writeln!(
                    out,
                    "per pt-d not extrapolated: {why}; the raised column is the raw count"
                )?;
            }
        }
    }
    Ok(())
}

/// Why the alerts per patient-day are not shown for a window of
/// `window_ms` with `patient_days` observed, if they are not.
fn withheld_rate(window_ms: i64, patient_days: f64) -> Option<String> {
    const DAY_MS: i64 = 86_400_000;
    if window_ms < DAY_MS {
        let s = window_ms as f64 / 1000.0;
        let span = if s < 120.0 {
            format!("{s:.0} s")
        } else if s < 7200.0 {
            format!("{:.0} min", s / 60.0)
        } else {
            format!("{:.1} h", s / 3600.0)
        };
        Some(format!("the window is shorter than a day ({span})"))
    } else if patient_days < 1.0 {
        Some(format!(
            "fewer than one patient-day observed ({patient_days:.2})"
        ))
    } else {
        None
    }
}

/// `dosetrack alerts ward-day`: a simulated ward day replayed through the
/// alert engine on a virtual clock (offline, deterministic).
pub(crate) fn ward_day(
    a: &AlertsWardDayArgs,
    drug_file: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use dosetrack::sim::ward_day as wardday;
    if a.patients == 0 || a.hours == 0 {
        return Err(input_error("--patients and --hours must be at least 1"));
    }
    let formulary = std::sync::Arc::new(formulary(drug_file)?);
    let spec = wardday::WardDaySpec::new(a.patients, a.hours, a.seed);
    let started = std::time::Instant::now();
    let r = wardday::run(&spec, formulary);
    let run_time_s = started.elapsed().as_secs_f64();
    match a.format {
        ReportFormat::Json => {
            let mut v = serde_json::to_value(&r)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("run_time_s".into(), serde_json::json!(run_time_s));
                o.insert(
                    "violation_count".into(),
                    serde_json::json!(r.violations.len()),
                );
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        ReportFormat::Text => {
            writeln!(
                out,
                "Ward day: {} patients, {} h from {}, seed {} ({:.2} patient-days)",
                spec.patients,
                spec.hours,
                format_rfc3339(spec.start_ms),
                spec.seed,
                r.patient_days
            )?;
            writeln!(
                out,
                "Inputs: {} generated, {} accepted, {} rejected; {} evaluations after inputs, {} on timers",
                r.messages_generated,
                r.inputs_accepted,
                r.inputs_rejected,
                r.input_evaluations,
                r.timer_evaluations
            )?;
            writeln!(out, "Nurse: {}", r.nurse.describe())?;
            writeln!(
                out,
                "  {} acknowledgements sent ({} found the alert already cleared or acknowledged)",
                r.nurse_acks_sent, r.nurse_acks_void
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "{:<20} {:>7} {:>8} {:>9} {:>7} {:>8} {:>9} {:>10} {:>12}",
                "rule",
                "raised",
                "updated",
                "escalated",
                "acked",
                "cleared",
                "per pt-d",
                "median ack",
                "quick clear"
            )?;
            let opt = |v: Option<f64>, k: f64, unit: &str| {
                v.map_or("-".to_owned(), |x| format!("{:.1}{unit}", x * k))
            };
            let mut total = wardday::PhaseCounts::default();
            for b in &r.report.rules {
                let c = r.phase_counts.get(&b.rule).cloned().unwrap_or_default();
                total.raised += c.raised;
                total.updated += c.updated;
                total.escalated += c.escalated;
                total.acknowledged += c.acknowledged;
                total.cleared += c.cleared;
                writeln!(
                    out,
                    "{:<20} {:>7} {:>8} {:>9} {:>7} {:>8} {:>9} {:>10} {:>12}",
                    b.rule.as_str(),
                    c.raised,
                    c.updated,
                    c.escalated,
                    c.acknowledged,
                    c.cleared,
                    opt(b.per_patient_day, 1.0, ""),
                    opt(b.median_time_to_ack_min, 1.0, " min"),
                    opt(b.cleared_within_2_min_without_action, 100.0, " %")
                )?;
            }
            let per_day = (r.patient_days > 0.0).then(|| total.raised as f64 / r.patient_days);
            writeln!(
                out,
                "{:<20} {:>7} {:>8} {:>9} {:>7} {:>8} {:>9}",
                "all",
                total.raised,
                total.updated,
                total.escalated,
                total.acknowledged,
                total.cleared,
                opt(per_day, 1.0, "")
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "Independent check: {} raised alerts re-derived, {} violations",
                r.raised_checked,
                r.violations.len()
            )?;
            for v in &r.violations {
                writeln!(
                    out,
                    "  VIOLATION {} {} {} [{}] at {}: {}",
                    v.alert_id,
                    v.scope,
                    v.rule,
                    v.subject,
                    format_rfc3339(v.time_ms),
                    v.why
                )?;
            }
            writeln!(out, "Run time: {run_time_s:.2} s")?;
        }
    }
    Ok(())
}

/// `dosetrack alerts list`: the stored lifecycle messages, as stored (JSON
/// Lines).
pub(crate) fn list(a: &AlertsListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let reader = a.db.reader()?;
    for line in reader.alert_messages(a.patient.as_deref())? {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
