//! The demo's terminal table: what it shows ([`Board`], fed by the
//! watcher), how each cell reads, and the frame drawn every second (in place
//! on a terminal, as appended blocks otherwise), then the summary.

use super::watch::Watched;
use super::{DemoSummary, NOTICE};
use crate::store::Counts;
use crate::vocab::{format_rfc3339, parse_rfc3339_ms, TimeMs};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// The last dose given by hand or by a pump's bolus.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LastDose {
    at_ms: TimeMs,
    pub(super) label: String,
}

/// What the table shows.
#[derive(Debug, Default)]
pub(super) struct Board {
    patients: BTreeMap<String, Value>,
    last_dose: BTreeMap<String, LastDose>,
}

impl Board {
    /// Take in one watched message.
    pub(super) fn apply(&mut self, w: Watched) {
        match w {
            Watched::State { patient_id, state } => {
                self.patients.insert(patient_id, state);
            }
            Watched::Dose {
                patient_id,
                payload,
            } => {
                let Some(dose) = dose_label(&payload) else {
                    return;
                };
                let newer = self
                    .last_dose
                    .get(&patient_id)
                    .is_none_or(|d| d.at_ms <= dose.at_ms);
                if newer {
                    self.last_dose.insert(patient_id, dose);
                }
            }
        }
    }

    /// The patients whose state was seen, in order.
    pub(super) fn patients(&self) -> impl Iterator<Item = &str> {
        self.patients.keys().map(String::as_str)
    }

    /// How many patients' state was seen.
    pub(super) fn tracked(&self) -> usize {
        self.patients.len()
    }
}

/// "intranasal 50 mg", "IV bolus 15 mg" (manual doses, pump boluses);
/// infusions and patches show as active inputs instead.
pub(super) fn dose_label(v: &Value) -> Option<LastDose> {
    let at_ms = parse_rfc3339_ms(v.get("time")?.as_str()?).ok()?;
    let amount = v.get("amount_mg")?.as_f64()?;
    let route = match v.get("kind").and_then(Value::as_str) {
        Some("bolus_delivered") => "pump bolus".to_owned(),
        _ => route_label(v.get("route")?.as_str()?).to_owned(),
    };
    Some(LastDose {
        at_ms,
        label: format!("{route} {} mg", number(amount)),
    })
}

fn route_label(route: &str) -> &str {
    match route {
        "iv_bolus" => "IV bolus",
        "iv_infusion" => "IV",
        "im" => "IM",
        "sc" => "SC",
        "transdermal" => "patch",
        other => other,
    }
}

/// Three significant digits, no trailing zeros: 18, 17.5, 1.04.
fn number(x: f64) -> String {
    let s = if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// "IV 18 mg/h, patch 1.04 mg/h" from a state's `active_inputs`.
fn active_inputs(state: &Value) -> Vec<String> {
    state
        .get("active_inputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    let route = i.get("route")?.as_str()?;
                    let rate = i
                        .get("rate_mg_per_h")
                        .or_else(|| i.get("release_rate_mg_per_h"))?
                        .as_f64()?;
                    Some(format!("{} {} mg/h", route_label(route), number(rate)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// "in 23 min", "now", "at 14:05Z", "–" (not within the horizon).
fn when(at: Option<&str>, now_ms: TimeMs) -> String {
    let Some(at_ms) = at.and_then(|t| parse_rfc3339_ms(t).ok()) else {
        return "-".to_owned();
    };
    let ahead = at_ms - now_ms;
    if ahead <= 30_000 {
        "now".to_owned()
    } else if ahead < 2 * 3_600_000 {
        format!("in {} min", (ahead + 30_000) / 60_000)
    } else {
        let t = format_rfc3339(at_ms);
        // "2026-11-27T14:05:00Z" → "at 14:05Z"
        t.get(11..16)
            .map_or_else(|| format!("at {t}"), |hm| format!("at {hm}Z"))
    }
}

/// "12 min ago", "2 h 05 min ago".
fn ago(at_ms: TimeMs, now_ms: TimeMs) -> String {
    let min = ((now_ms - at_ms).max(0) + 30_000) / 60_000;
    if min < 60 {
        format!("{min} min ago")
    } else {
        format!("{} h {:02} min ago", min / 60, min % 60)
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// What every frame says besides the rows.
pub(super) struct FrameInfo {
    pub(super) ansi: bool,
    pub(super) broker: String,
    pub(super) prefix: String,
    pub(super) patients: usize,
    pub(super) speedup: f64,
    pub(super) duration: Duration,
    pub(super) sim_start: TimeMs,
}

/// Draw one frame: in place on a terminal, as an appended block otherwise.
/// `sim_now` is the ward's clock, `now` the wall clock.
#[allow(clippy::too_many_arguments)]
pub(super) fn draw(
    out: &mut dyn Write,
    f: &FrameInfo,
    board: &Board,
    counts: &Counts,
    elapsed: Duration,
    sim_now: TimeMs,
    now: TimeMs,
    last: bool,
) -> std::io::Result<()> {
    let text = frame_text(f, board, counts, elapsed, sim_now, now, last);
    if f.ansi {
        // Home, then clear to the end of the screen: no flicker.
        write!(out, "\x1b[H\x1b[2J{text}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()
}

fn frame_text(
    f: &FrameInfo,
    board: &Board,
    counts: &Counts,
    elapsed: Duration,
    sim_now: TimeMs,
    now: TimeMs,
    last: bool,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "dosetrack demo — {NOTICE}");
    let _ = writeln!(
        s,
        "{} {} / {} · inputs stored {} · rejections {} · {} of {} patients tracked",
        if last { "final" } else { "live" },
        clock(elapsed),
        clock(f.duration),
        counts.inputs,
        counts.rejected,
        board.patients.len(),
        f.patients,
    );
    let sim = format_rfc3339(sim_now);
    let _ = writeln!(
        s,
        "simulated ward at {}×, started {}Z · ward clock {}Z, catching up with the wall clock",
        number(f.speedup),
        format_rfc3339(f.sim_start).get(11..16).unwrap_or("?"),
        sim.get(11..19).unwrap_or(&sim),
    );
    let _ = writeln!(s, "{} · topics {}/v1/… · Ctrl-C stops", f.broker, f.prefix);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<8} {:>9} {:>9}  {:<8} {:<42} {:<13} {:<5}  model",
        "patient", "Cp ng/mL", "Ce ng/mL", "trend", "inputs", "below floor", "stale"
    );
    if board.patients.is_empty() {
        let _ = writeln!(s, "(waiting for the first patient state…)");
    }
    for (id, st) in &board.patients {
        let num = |k: &str| {
            st.get(k)
                .and_then(Value::as_f64)
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
        };
        let text = |k: &str| st.get(k).and_then(Value::as_str).unwrap_or("-");
        let mut inputs = active_inputs(st);
        if let Some(d) = board.last_dose.get(id) {
            inputs.push(format!("{} {}", d.label, ago(d.at_ms, now)));
        }
        let inputs = if inputs.is_empty() {
            "-".to_owned()
        } else {
            inputs.join(", ")
        };
        let below = when(
            st.get("forecast")
                .and_then(|f| f.get("below_floor_at"))
                .and_then(Value::as_str),
            now,
        );
        let stale = match st.get("stale").and_then(Value::as_bool) {
            Some(true) => "STALE",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(
            s,
            "{:<8} {:>9} {:>9}  {:<8} {:<42} {:<13} {:<5}  {}",
            id,
            num("cp_ng_per_ml"),
            num("ce_ng_per_ml"),
            text("trend"),
            inputs,
            below,
            stale,
            text("model"),
        );
    }
    s
}

/// The summary after the last frame.
pub(super) fn write_summary(out: &mut dyn Write, s: &DemoSummary) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "summary: inputs stored {}, rejections {}, patients tracked {}, messages published by the simulated ward {}, in {:.1} s",
        s.inputs_stored,
        s.rejected,
        s.patients_tracked,
        s.published,
        s.elapsed.as_secs_f64()
    )?;
    match &s.database_kept {
        Some(p) => writeln!(
            out,
            "database kept at {} (try: dosetrack patients --database {})",
            p.display(),
            p.display()
        )?,
        None => writeln!(
            out,
            "the temporary database was removed (keep one with --database PATH)"
        )?,
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn numbers_have_three_significant_digits() {
        assert_eq!(number(18.0), "18");
        assert_eq!(number(17.53), "17.5");
        assert_eq!(number(1.04), "1.04");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(120.4), "120");
    }

    #[test]
    fn active_inputs_read_like_a_chart() {
        let st: Value = serde_json::json!({"active_inputs": [
            {"source": "devices/pump-0001", "route": "iv_infusion", "rate_mg_per_h": 18.0},
            {"source": "devices/patch-0002", "route": "transdermal", "release_rate_mg_per_h": 1.04}
        ]});
        assert_eq!(active_inputs(&st), vec!["IV 18 mg/h", "patch 1.04 mg/h"]);
    }

    #[test]
    fn crossing_times_read_relative_to_now() {
        let now = parse_rfc3339_ms("2026-11-27T10:00:00Z").unwrap();
        assert_eq!(when(None, now), "-");
        assert_eq!(when(Some("2026-11-27T10:00:00Z"), now), "now");
        assert_eq!(when(Some("2026-11-27T10:23:10Z"), now), "in 23 min");
        assert_eq!(when(Some("2026-11-27T14:05:00Z"), now), "at 14:05Z");
        assert_eq!(ago(now - 12 * 60_000, now), "12 min ago");
        assert_eq!(ago(now - 125 * 60_000, now), "2 h 05 min ago");
    }
}
