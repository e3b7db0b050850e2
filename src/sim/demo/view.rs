//! The demo's terminal view: what it shows ([`Board`], fed by the
//! watcher: the patients' states, their last doses, the alerts), how each
//! cell reads, and the frame drawn every second (in place on a terminal,
//! as appended blocks otherwise), then the summary. Every line of a frame
//! fits [`WIDTH`] columns (longer cells are cut with `…`); times are shown
//! to the minute, on the demo's clock.

use super::watch::Watched;
use super::{DemoSummary, NOTICE};
use crate::store::Counts;
use crate::vocab::{format_rfc3339, parse_rfc3339_ms, TimeMs};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::time::Duration;

/// The terminal width every line of a frame fits.
pub(super) const WIDTH: usize = 80;
/// Most active alerts listed (the rest are counted).
const ALERT_ROWS: usize = 8;
/// Lifecycle messages remembered for the "last" and "cleared" lines.
const RECENT: usize = 2;

/// The last dose given by hand or by a pump's bolus.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LastDose {
    at_ms: TimeMs,
    pub(super) label: String,
}

/// How many alert lifecycle messages of each phase the watcher saw
/// (deduplicated on alert, phase and time: delivery is at least once).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct AlertCounts {
    pub(super) raised: u64,
    pub(super) escalated: u64,
    pub(super) cleared: u64,
}

/// What the table shows.
#[derive(Debug, Default)]
pub(super) struct Board {
    patients: BTreeMap<String, Value>,
    last_dose: BTreeMap<String, LastDose>,
    /// Each scope's (patient's or device's) retained active alert list.
    active: BTreeMap<String, Vec<Value>>,
    seen: BTreeSet<(String, String, String)>,
    counts: AlertCounts,
    /// The latest raised and escalated messages, newest first.
    recent: VecDeque<String>,
    /// The latest cleared messages, newest first.
    recent_cleared: VecDeque<String>,
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
            Watched::ActiveAlerts { scope, list } => {
                if list.is_empty() {
                    self.active.remove(&scope);
                } else {
                    self.active.insert(scope, list);
                }
            }
            Watched::AlertEvent { scope, payload } => self.alert_event(&scope, &payload),
        }
    }

    fn alert_event(&mut self, scope: &str, v: &Value) {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?");
        let key = (
            text("alert_id").to_owned(),
            text("phase").to_owned(),
            text("time").to_owned(),
        );
        if !self.seen.insert(key) {
            return;
        }
        match text("phase") {
            "raised" => self.counts.raised += 1,
            "escalated" => self.counts.escalated += 1,
            "cleared" => self.counts.cleared += 1,
            _ => return,
        }
        let at = minute(parse_rfc3339_ms(text("time")).ok());
        let (list, line) = if text("phase") == "cleared" {
            let line = format!("{at} {} {scope}", text("rule"));
            (&mut self.recent_cleared, line)
        } else {
            let line = format!("{at} {} {} {scope}", text("phase"), text("rule"));
            (&mut self.recent, line)
        };
        list.push_front(line);
        list.truncate(RECENT);
    }

    /// The patients whose state was seen, in order.
    pub(super) fn patients(&self) -> impl Iterator<Item = &str> {
        self.patients.keys().map(String::as_str)
    }

    /// How many patients' state was seen.
    pub(super) fn tracked(&self) -> usize {
        self.patients.len()
    }

    /// The alert lifecycle counts so far.
    pub(super) fn alert_counts(&self) -> AlertCounts {
        self.counts
    }

    /// Active alerts, most urgent first: (scope, entry).
    fn active_alerts(&self) -> Vec<(&str, &Value)> {
        let mut all: Vec<(&str, &Value)> = self
            .active
            .iter()
            .flat_map(|(scope, list)| list.iter().map(move |a| (scope.as_str(), a)))
            .collect();
        let rank = |a: &Value| match a.get("priority").and_then(Value::as_str) {
            Some("high") => 0,
            Some("medium") => 1,
            _ => 2,
        };
        all.sort_by_key(|(scope, a)| (rank(a), *scope));
        all
    }
}

/// "14:05Z" (to the minute), "?" when unknown.
fn minute(at_ms: Option<TimeMs>) -> String {
    at_ms.map_or_else(
        || "?".to_owned(),
        |t| {
            let s = format_rfc3339(t);
            s.get(11..16).map_or(s.clone(), |hm| format!("{hm}Z"))
        },
    )
}

/// `s` cut to `width` characters, the last one `…` when cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
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
    /// The ward page, `http://127.0.0.1:PORT/`.
    pub(super) url: String,
}

/// Draw one frame: in place on a terminal, as an appended block otherwise.
/// `now` is the demo's clock.
pub(super) fn draw(
    out: &mut dyn Write,
    f: &FrameInfo,
    board: &Board,
    counts: &Counts,
    elapsed: Duration,
    now: TimeMs,
    last: bool,
) -> std::io::Result<()> {
    let text = frame_text(f, board, counts, elapsed, now, last);
    if f.ansi {
        // Home, then clear to the end of the screen: no flicker.
        write!(out, "\x1b[H\x1b[2J{text}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()
}

pub(super) fn frame_text(
    f: &FrameInfo,
    board: &Board,
    counts: &Counts,
    elapsed: Duration,
    now: TimeMs,
    last: bool,
) -> String {
    let mut lines: Vec<String> = vec![
        format!(
            "dosetrack demo · {} {} / {} · {} of {} patients tracked · Ctrl-C stops",
            if last { "final" } else { "live" },
            clock(elapsed),
            clock(f.duration),
            board.patients.len(),
            f.patients,
        ),
        NOTICE.to_owned(),
        format!("Ward page: {}", f.url),
        format!(
            "ward clock {} at {}× (from {}) · inputs stored {} · rejections {}",
            minute(Some(now)),
            number(f.speedup),
            minute(Some(f.sim_start)),
            counts.inputs,
            counts.rejected,
        ),
        format!("{} · topics {}/v1/…", f.broker, f.prefix),
        String::new(),
        format!(
            "{:<7} {:>8} {:>8} {:<7} {:<11} {}",
            "patient", "Cp ng/mL", "Ce ng/mL", "trend", "below floor", "inputs"
        ),
    ];
    if board.patients.is_empty() {
        lines.push("(waiting for the first patient state…)".to_owned());
    }
    let mut models = BTreeSet::new();
    for (id, st) in &board.patients {
        let num = |k: &str| {
            st.get(k)
                .and_then(Value::as_f64)
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
        };
        let text = |k: &str| st.get(k).and_then(Value::as_str).unwrap_or("-");
        if let Some(m) = st.get("model").and_then(Value::as_str) {
            models.insert(m.to_owned());
        }
        let mut inputs = active_inputs(st);
        if let Some(d) = board.last_dose.get(id) {
            inputs.push(format!("{} {}", d.label, ago(d.at_ms, now)));
        }
        let mut inputs = if inputs.is_empty() {
            "-".to_owned()
        } else {
            inputs.join(", ")
        };
        if st.get("stale").and_then(Value::as_bool) == Some(true) {
            inputs = format!("STALE {inputs}");
        }
        let below = when(
            st.get("forecast")
                .and_then(|f| f.get("below_floor_at"))
                .and_then(Value::as_str),
            now,
        );
        let row = format!(
            "{:<7} {:>8} {:>8} {:<7} {:<11} ",
            fit(id, 7),
            num("cp_ng_per_ml"),
            num("ce_ng_per_ml"),
            fit(text("trend"), 7),
            fit(&below, 11),
        );
        let room = WIDTH.saturating_sub(row.chars().count());
        lines.push(format!("{row}{}", fit(&inputs, room)));
    }
    if !models.is_empty() {
        let models: Vec<String> = models.into_iter().collect();
        lines.push(format!("model {}", models.join(", ")));
    }
    lines.push(String::new());
    let active = board.active_alerts();
    let c = board.counts;
    lines.push(format!(
        "alerts: {} active · raised {} · escalated {} · cleared {}",
        active.len(),
        c.raised,
        c.escalated,
        c.cleared
    ));
    for (scope, a) in active.iter().take(ALERT_ROWS) {
        let text = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("?");
        let acked = if a.get("acknowledged").is_some_and(|v| !v.is_null()) {
            "acked"
        } else {
            "not acked"
        };
        let row = format!(
            "{:<6} {:<10} {:<18} {:<9} {:<9} ",
            text("priority").to_uppercase(),
            fit(scope, 10),
            fit(text("rule"), 18),
            fit(text("phase"), 9),
            acked,
        );
        let room = WIDTH.saturating_sub(row.chars().count());
        lines.push(format!("{row}{}", fit(text("message"), room)));
    }
    if active.len() > ALERT_ROWS {
        lines.push(format!("… and {} more", active.len() - ALERT_ROWS));
    }
    for (label, list) in [("last", &board.recent), ("cleared", &board.recent_cleared)] {
        if !list.is_empty() {
            let recent: Vec<&str> = list.iter().map(String::as_str).collect();
            lines.push(format!("{label}: {}", recent.join(" · ")));
        }
    }
    let mut s = String::new();
    for l in lines {
        s.push_str(&fit(&l, WIDTH));
        s.push('\n');
    }
    s
}

/// The summary after the last frame (every line within [`WIDTH`] but a
/// long database path's).
pub(super) fn write_summary(out: &mut dyn Write, s: &DemoSummary) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "summary: inputs stored {}, rejections {}, patients tracked {}",
        s.inputs_stored, s.rejected, s.patients_tracked,
    )?;
    writeln!(
        out,
        "messages published by the simulated ward {}, in {:.1} s",
        s.published,
        s.elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "alerts raised {}, escalated {}, cleared {}",
        s.alerts_raised, s.alerts_escalated, s.alerts_cleared
    )?;
    match &s.database_kept {
        Some(p) => {
            writeln!(out, "database kept at {}", p.display())?;
            writeln!(out, "try: dosetrack patients --database {}", p.display())?;
        }
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

    fn frame_info() -> FrameInfo {
        FrameInfo {
            ansi: false,
            broker: "embedded broker 127.0.0.1:65535".to_owned(),
            prefix: "dosetrack-demo-0a1b2c3d".to_owned(),
            patients: 200,
            speedup: 3600.0,
            duration: Duration::from_secs(24 * 3600),
            sim_start: parse_rfc3339_ms("2026-11-27T09:00:00Z").unwrap(),
            url: "http://127.0.0.1:65535/".to_owned(),
        }
    }

    /// A board with long cells everywhere: every input, a stale state, a
    /// last dose, many alerts with long messages.
    fn crowded_board(now: TimeMs) -> Board {
        let mut b = Board::default();
        for i in 1..=12 {
            let id = format!("P-{i:04}");
            b.apply(Watched::State {
                patient_id: id.clone(),
                state: serde_json::json!({
                    "cp_ng_per_ml": 12345.678, "ce_ng_per_ml": 9876.5, "trend": "falling",
                    "stale": true, "model": "kamp2020",
                    "forecast": {"below_floor_at": "2026-11-27T23:59:00Z"},
                    "active_inputs": [
                        {"route": "iv_infusion", "rate_mg_per_h": 125.5},
                        {"route": "transdermal", "release_rate_mg_per_h": 1.04}
                    ]
                }),
            });
            b.apply(Watched::Dose {
                patient_id: id.clone(),
                payload: serde_json::json!({"time": "2026-11-27T08:00:00Z",
                    "route": "intranasal", "amount_mg": 105}),
            });
            b.apply(Watched::ActiveAlerts {
                scope: id.clone(),
                list: vec![serde_json::json!({
                    "alert_id": format!("a-{i}"), "rule": "association_conflict",
                    "priority": if i % 2 == 0 { "high" } else { "medium" },
                    "phase": "escalated", "acknowledged": null,
                    "message": "x".repeat(300),
                })],
            });
            b.apply(Watched::AlertEvent {
                scope: id,
                payload: serde_json::json!({"alert_id": format!("a-{i}"),
                    "rule": "association_conflict", "phase": "escalated",
                    "time": format_rfc3339(now)}),
            });
        }
        b
    }

    #[test]
    fn every_line_of_a_frame_fits_80_columns() {
        let now = parse_rfc3339_ms("2026-11-27T10:00:00Z").unwrap();
        let counts = Counts {
            inputs: 123_456_789,
            rejected: 987_654_321,
            ..Counts::default()
        };
        for board in [Board::default(), crowded_board(now)] {
            let text = frame_text(
                &frame_info(),
                &board,
                &counts,
                Duration::from_secs(23 * 3600 + 59 * 60),
                now,
                true,
            );
            for line in text.lines() {
                assert!(
                    line.chars().count() <= WIDTH,
                    "{} > 80: {line:?}",
                    line.chars().count()
                );
            }
            assert!(
                text.contains("Ward page: http://127.0.0.1:65535/"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_frame_lists_active_alerts_and_counts_their_lifecycle() {
        let now = parse_rfc3339_ms("2026-11-27T10:00:00Z").unwrap();
        let mut b = Board::default();
        let event = |phase: &str, minute: i64| Watched::AlertEvent {
            scope: "P-0003".to_owned(),
            payload: serde_json::json!({"alert_id": "a-1", "rule": "dose_limit",
                "phase": phase, "time": format_rfc3339(now + minute * 60_000)}),
        };
        b.apply(event("raised", 0));
        b.apply(event("raised", 0)); // a redelivery
        b.apply(event("escalated", 5));
        b.apply(event("escalated", 10));
        b.apply(event("cleared", 12));
        b.apply(Watched::ActiveAlerts {
            scope: "P-0003".to_owned(),
            list: vec![serde_json::json!({"alert_id": "a-1", "rule": "dose_limit",
                "priority": "high", "phase": "escalated", "acknowledged": null,
                "message": "IV bolus 36 mg over the ward limit"})],
        });
        b.apply(Watched::ActiveAlerts {
            scope: "pump-0001".to_owned(),
            list: vec![
                serde_json::json!({"alert_id": "a-2", "rule": "device_fault",
                "priority": "medium", "phase": "raised",
                "acknowledged": {"by": "rn-1"}, "message": "occlusion"}),
            ],
        });
        assert_eq!(
            b.alert_counts(),
            AlertCounts {
                raised: 1,
                escalated: 2,
                cleared: 1
            }
        );
        let text = frame_text(
            &frame_info(),
            &b,
            &Counts::default(),
            Duration::ZERO,
            now,
            false,
        );
        assert!(
            text.contains("alerts: 2 active · raised 1 · escalated 2 · cleared 1"),
            "{text}"
        );
        let high = text
            .lines()
            .position(|l| l.starts_with("HIGH   P-0003     dose_limit"))
            .unwrap();
        let medium = text
            .lines()
            .position(|l| l.starts_with("MEDIUM pump-0001  device_fault"))
            .unwrap();
        assert!(high < medium, "{text}");
        assert!(
            text.contains("escalated not acked IV bolus 36 mg"),
            "{text}"
        );
        assert!(text.contains("acked     occlusion"), "{text}");
        assert!(
            text.contains("last: 10:10Z escalated dose_limit P-0003 · 10:05Z escalated"),
            "{text}"
        );
        assert!(text.contains("cleared: 10:12Z dose_limit P-0003"), "{text}");
        // An empty list clears the scope.
        b.apply(Watched::ActiveAlerts {
            scope: "P-0003".to_owned(),
            list: Vec::new(),
        });
        let text = frame_text(
            &frame_info(),
            &b,
            &Counts::default(),
            Duration::ZERO,
            now,
            false,
        );
        assert!(text.contains("alerts: 1 active"), "{text}");
    }
}
