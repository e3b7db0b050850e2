//! The axes: the drawn time window, the top of the concentration axis,
//! clock-aligned time ticks and "nice" concentration ticks, their labels,
//! and [`TickedAxis`], the plotters axis that uses them.

use chrono::{DateTime, TimeZone, Timelike, Utc};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;

use crate::vocab::TimeMs;

pub(super) const MS_PER_MIN: i128 = 60_000;
pub(super) const MS_PER_HOUR: f64 = 3_600_000.0;
pub(super) const MS_PER_DAY: i128 = 24 * 60 * MS_PER_MIN;
/// Shortest time window drawn; a single sample is centred in it.
pub(super) const MIN_WINDOW_MS: i128 = 60 * MS_PER_MIN;

/// A linear f64 axis whose tick positions are chosen here (clock-aligned
/// times, "nice" concentrations) rather than by plotters.
pub(super) struct TickedAxis {
    linear: RangedCoordf64,
    start: f64,
    end: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl TickedAxis {
    pub(super) fn new(end: f64, bold: &[f64], light: &[f64]) -> Self {
        Self {
            linear: (0.0..end).into(),
            start: 0.0,
            end,
            bold: bold.to_vec(),
            light: light.to_vec(),
        }
    }
}

impl Ranged for TickedAxis {
    // Labels always come from our formatters; Debug is only the fallback.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.start..self.end
    }
}

pub(super) fn hours_between(from: i128, to: i128) -> f64 {
    (to - from) as f64 / MS_PER_HOUR
}

/// The drawn time window: the data range, widened to at least
/// [`MIN_WINDOW_MS`] around its centre and kept inside the `TimeMs` range.
pub(super) fn time_window(first: i128, last: i128) -> (i128, i128) {
    let (lo, hi) = (i128::from(TimeMs::MIN), i128::from(TimeMs::MAX));
    if last - first >= MIN_WINDOW_MS {
        return (first, last);
    }
    let centre = first + (last - first) / 2;
    let mut t0 = (centre - MIN_WINDOW_MS / 2).max(lo);
    let mut t1 = (t0 + MIN_WINDOW_MS).min(hi);
    if t1 - t0 < MIN_WINDOW_MS {
        t0 = (t1 - MIN_WINDOW_MS).max(lo);
        t1 = (t0 + MIN_WINDOW_MS).min(hi);
    }
    (t0, t1)
}

/// `HH:MM` (UTC) of a time in ms.
pub(super) fn clock_hhmm(t_ms: i128) -> String {
    let minutes = t_ms.div_euclid(60_000);
    let minute_of_day = minutes.rem_euclid(24 * 60);
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

/// Top of the concentration axis: 10 % above the largest finite value
/// (data or target), at least something positive.
pub(super) fn y_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values
        .filter(|v| v.is_finite())
        .fold(0.0_f64, |acc, v| acc.max(v));
    if max <= 0.0 {
        return 1.0;
    }
    let top = max * 1.1;
    let top = if top.is_finite() { top } else { max };
    top.max(1e-9)
}

/// "Nice" tick spacing (1, 2, 2.5 or 5 × 10ⁿ) near `raw`.
pub(super) fn nice_step(raw: f64) -> Option<f64> {
    if !(raw.is_finite() && raw > 0.0) {
        return None;
    }
    let base = 10_f64.powf(raw.log10().floor());
    if !(base.is_finite() && base > 0.0) {
        return None;
    }
    let frac = raw / base;
    let m = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|&m| frac <= m)
        .unwrap_or(10.0);
    let step = m * base;
    (step.is_finite() && step > 0.0).then_some(step)
}

pub(super) fn value_ticks(top: f64) -> (f64, Vec<f64>) {
    let Some(step) = nice_step(top / 8.0) else {
        return (top, vec![0.0, top]);
    };
    let ticks = (0..=40)
        .map(|k| f64::from(k) * step)
        .take_while(|&v| v <= top * (1.0 + 1e-9))
        .collect();
    (step, ticks)
}

/// Clock-aligned time ticks (UTC): spacing from 1 min to days, at most
/// about 12 labelled ticks, with minor grid lines in between.
pub(super) fn time_ticks(t0: i128, t1: i128) -> (i128, Vec<i128>, Vec<i128>) {
    const MAX_TICKS: i128 = 12;
    const STEPS_MIN: [i128; 16] = [
        1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440, 2880, 10080, 20160,
    ];
    let span = (t1 - t0).max(1);
    let step = STEPS_MIN
        .iter()
        .map(|m| m * MS_PER_MIN)
        .find(|s| span / s <= MAX_TICKS)
        .unwrap_or_else(|| {
            let days = (span / MAX_TICKS / MS_PER_DAY).max(1) as f64;
            let nice = nice_step(days).unwrap_or(days).ceil() as i128;
            nice.max(1) * MS_PER_DAY
        });
    let ticks = |step: i128| -> Vec<i128> {
        let first = t0.div_euclid(step) * step + if t0.rem_euclid(step) == 0 { 0 } else { step };
        (0..200)
            .map(|k| first + k * step)
            .take_while(|&t| t <= t1)
            .collect()
    };
    let major = ticks(step);
    // Minor grid: whole clock units between the labelled ticks.
    let minor_step = match step / MS_PER_MIN {
        5 | 2 => MS_PER_MIN,
        15 | 10 => 5 * MS_PER_MIN,
        30 => 10 * MS_PER_MIN,
        60 => 15 * MS_PER_MIN,
        120 | 180 => 60 * MS_PER_MIN,
        _ => (step / 2).max(1),
    };
    let minor = ticks(minor_step)
        .into_iter()
        .filter(|t| t.rem_euclid(step) != 0)
        .collect();
    (step, major, minor)
}

pub(super) fn utc(t: i128) -> Option<DateTime<Utc>> {
    let ms = i64::try_from(t).ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

pub(super) fn time_tick_label(t: i128, step_ms: i128, multi_day: bool) -> String {
    let Some(dt) = utc(t) else {
        return String::new();
    };
    let midnight = dt.hour() == 0 && dt.minute() == 0;
    if step_ms >= MS_PER_DAY || (multi_day && midnight) {
        dt.format("%d %b").to_string()
    } else {
        dt.format("%H:%M").to_string()
    }
}

pub(super) fn time_axis_desc(t0: i128, t1: i128) -> String {
    match (utc(t0), utc(t1)) {
        (Some(a), Some(b)) if a.date_naive() == b.date_naive() => {
            format!("Time (UTC) · {}", a.format("%Y-%m-%d"))
        }
        (Some(a), Some(b)) => format!(
            "Time (UTC) · {} to {}",
            a.format("%Y-%m-%d"),
            b.format("%Y-%m-%d")
        ),
        _ => "Time (UTC)".to_owned(),
    }
}

/// A number as a reader expects it: "100", "2.5", "1.2e7".
pub(super) fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

pub(super) fn format_tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if step >= 1.0 && v.abs() < 1e6 {
        return format!("{v:.0}");
    }
    format_value(v)
}
