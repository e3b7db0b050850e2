//! Concentration–time charts: this module owns turning a computed Cp/Ce
//! history, the drug's target levels and the administration record into one
//! static picture (SVG or PNG, 1200×700 px) that a clinician can read at a
//! glance.
//!
//! The picture has three parts, top to bottom:
//!
//! * a header with the caller's title and subtitle (the subtitle carries the
//!   model, its assumptions and the "not a medical device" phrase) and a
//!   legend row, so the legend never covers data;
//! * the concentration panel: clock time (UTC) against concentration in
//!   ng/mL from 0, Cp as a solid line, Ce as a thicker dashed line, the
//!   analgesic band (floor to caution) shaded pale green, and labelled
//!   horizontal lines for floor, caution and ceiling (ceiling in red);
//! * an event strip sharing the time axis: instantaneous doses as triangles
//!   and infusions/patches as bars, each with its label, packed into lanes
//!   so labels do not overlap.
//!
//! The module does no pharmacokinetics; it draws what it is given. Inputs
//! are validated ([`PlotError`]) and every odd value (NaN, infinities,
//! negative concentrations, unsorted or extreme times, reversed spans) is
//! either skipped or clamped, never a panic. Text is rendered with the
//! embedded DejaVu Sans font (`assets/fonts/DejaVuSans.ttf`, Bitstream Vera
//! licence in `assets/fonts/LICENSE-DejaVu.txt`), so PNG output needs no
//! system fonts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::vocab::TimeMs;

/// Width of every rendered plot, in pixels.
pub const PLOT_WIDTH_PX: u32 = 1200;
/// Height of every rendered plot, in pixels.
pub const PLOT_HEIGHT_PX: u32 = 700;

/// What to draw: one patient's concentration history and its context.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSpec {
    /// First header line, e.g. "Ketamine — patient P-1001 (72 kg)".
    pub title: String,
    /// Second header line: model and assumptions, including the
    /// "decision support, not a medical device" phrase.
    pub subtitle: String,
    /// Sample times; need not be sorted (they are sorted for drawing).
    pub times_ms: Vec<TimeMs>,
    /// Plasma concentration at each sample time, ng/mL.
    pub cp_ng_per_ml: Vec<f64>,
    /// Effect-site concentration at each sample time, ng/mL.
    pub ce_ng_per_ml: Vec<f64>,
    /// Target levels drawn as horizontal lines.
    pub targets: TargetLines,
    /// Instantaneous doses (bolus, intranasal, oral …).
    pub doses: Vec<DoseMark>,
    /// Infusions and patches, each over `[start, end)`.
    pub spans: Vec<SpanMark>,
}

/// Target levels, ng/mL. A level that is not finite or is negative is not
/// drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetLines {
    pub analgesic_floor_ng_per_ml: f64,
    pub caution_ng_per_ml: f64,
    pub ceiling_ng_per_ml: f64,
}

/// An instantaneous dose, e.g. `"IN 50 mg"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoseMark {
    pub time_ms: TimeMs,
    pub label: String,
}

/// A dose given over time, `[start, end)`, e.g. `"IV 20 mg/h"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanMark {
    pub start_ms: TimeMs,
    pub end_ms: TimeMs,
    pub label: String,
}

/// Output format, chosen from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    Svg,
    Png,
}

impl PlotFormat {
    /// `.svg` → [`PlotFormat::Svg`], `.png` → [`PlotFormat::Png`], case-insensitive.
    pub fn from_path(path: &Path) -> Result<Self, PlotError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(Self::Svg),
            Some("png") => Ok(Self::Png),
            _ => Err(PlotError::UnsupportedFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// Why a plot could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot plot to '{}': the file name must end in .svg or .png", .path.display())]
    UnsupportedFormat { path: PathBuf },
    #[error("nothing to plot: the concentration series is empty")]
    EmptySeries,
    #[error("concentration series lengths differ: {times} times, {cp} Cp values, {ce} Ce values")]
    LengthMismatch { times: usize, cp: usize, ce: usize },
    #[error("drawing the plot failed: {0}")]
    Draw(String),
    #[error("cannot write plot to '{}'", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Render the chart as an SVG document.
pub fn render_svg(spec: &PlotSpec) -> Result<String, PlotError> {
    let prepared = Prepared::new(spec)?;
    ensure_font()?;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
        draw_all(&root, spec, &prepared, Scale(1))?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Render the chart to `path`, as SVG or PNG according to its extension.
pub fn write_plot(path: &Path, spec: &PlotSpec) -> Result<(), PlotError> {
    let io_err = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    match PlotFormat::from_path(path)? {
        PlotFormat::Svg => fs::write(path, render_svg(spec)?).map_err(io_err),
        PlotFormat::Png => {
            let prepared = Prepared::new(spec)?;
            ensure_font()?;
            let pixels = render_rgb(spec, &prepared)?;
            // Surface an unwritable path as an I/O error; the bitmap backend
            // would only report it as an opaque image error.
            fs::File::create(path).map_err(io_err)?;
            let size = (PLOT_WIDTH_PX, PLOT_HEIGHT_PX);
            let image = BitMapElement::with_owned_buffer((0, 0), size, pixels)
                .ok_or_else(|| PlotError::Draw("bitmap buffer has the wrong size".to_owned()))?;
            let root = BitMapBackend::new(path, size).into_drawing_area();
            root.draw(&image).map_err(draw_err)?;
            root.present().map_err(draw_err)
        }
    }
}

// ---------------------------------------------------------------------------
// Font

const FONT_FAMILY: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Register the embedded font once per process. Text layout needs it for
/// both backends (the SVG backend measures text to place labels).
fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Draw(
            "the embedded DejaVu Sans font could not be loaded".to_owned(),
        ))
    }
}

fn text_style(size: f64, color: RGBColor) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&color)
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

// ---------------------------------------------------------------------------
// Layout and colours

const HEADER_H: i32 = 74;
const LEGEND_H: i32 = 30;
const MARGIN_LEFT: i32 = 14;
const Y_LABEL_AREA: i32 = 78;
const MARGIN_RIGHT: i32 = 142;
const LANE_H: i32 = 30;
const MAX_LANES: usize = 6;
const STRIP_PAD: i32 = 6;
const X_LABEL_AREA: i32 = 56;

/// The PNG is drawn this many times larger, then averaged down.
const SUPERSAMPLE: i32 = 2;

// Font sizes as plotters counts them (it renders about 0.8 of this in px).
// Titles are (size, smallest size before the text is shortened).
const TITLE_FONT: (f64, f64) = (27.0, 15.0);
const SUBTITLE_FONT: (f64, f64) = (17.0, 11.0);
const LEGEND_FONT: f64 = 16.0;
const TICK_FONT: f64 = 16.0;
const AXIS_FONT: f64 = 17.0;
const LEVEL_FONT: f64 = 16.0;
const EVENT_FONT: f64 = 15.0;
const CP_WIDTH: u32 = 2;
const CE_WIDTH: u32 = 4;

const PLOT_LEFT: i32 = MARGIN_LEFT + Y_LABEL_AREA;
const PLOT_RIGHT: i32 = PLOT_WIDTH_PX as i32 - MARGIN_RIGHT;

const INK: RGBColor = RGBColor(33, 33, 33);
const MUTED: RGBColor = RGBColor(90, 90, 90);
const GRID_BOLD: RGBColor = RGBColor(214, 214, 214);
const GRID_LIGHT: RGBColor = RGBColor(236, 236, 236);
const CP_COLOR: RGBColor = RGBColor(21, 101, 192);
const CE_COLOR: RGBColor = RGBColor(216, 67, 21);
/// The analgesic band: pale green, translucent so the grid shows through.
const BAND_FILL: RGBAColor = RGBAColor(76, 175, 80, 0.2);
const FLOOR_COLOR: RGBColor = RGBColor(46, 125, 50);
const CAUTION_COLOR: RGBColor = RGBColor(191, 120, 0);
const CEILING_COLOR: RGBColor = RGBColor(198, 40, 40);
const DOSE_COLOR: RGBColor = RGBColor(55, 71, 79);
const SPAN_COLOR: RGBColor = RGBColor(0, 121, 107);

const MS_PER_MIN: i128 = 60_000;
const MS_PER_HOUR: f64 = 3_600_000.0;
const MS_PER_DAY: i128 = 24 * 60 * MS_PER_MIN;
/// Shortest time window drawn; a single sample is centred in it.
const MIN_WINDOW_MS: i128 = 60 * MS_PER_MIN;

// ---------------------------------------------------------------------------
// Validated, drawing-ready data

/// The spec reduced to what is drawn: a time window `[t0, t1]`, x in hours
/// since `t0`, line segments split at non-finite values, and axis ticks.
struct Prepared {
    t0: i128,
    t1: i128,
    x_max: f64,
    y_top: f64,
    cp: Vec<Vec<(f64, f64)>>,
    ce: Vec<Vec<(f64, f64)>>,
    x_ticks: Vec<f64>,
    x_minor: Vec<f64>,
    x_step_ms: i128,
    y_ticks: Vec<f64>,
    y_step: f64,
    /// Cp's peak when it is above the axis: (x, value, time). Said on the
    /// chart, never hidden.
    cp_off_scale: Option<(f64, f64, i128)>,
}

impl Prepared {
    fn new(spec: &PlotSpec) -> Result<Self, PlotError> {
        let n = spec.times_ms.len();
        let (cp_len, ce_len) = (spec.cp_ng_per_ml.len(), spec.ce_ng_per_ml.len());
        if n == 0 && cp_len == 0 && ce_len == 0 {
            return Err(PlotError::EmptySeries);
        }
        if cp_len != n || ce_len != n {
            return Err(PlotError::LengthMismatch {
                times: n,
                cp: cp_len,
                ce: ce_len,
            });
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| spec.times_ms[i]);
        let (Some(&first), Some(&last)) = (order.first(), order.last()) else {
            return Err(PlotError::EmptySeries);
        };
        let (t0, t1) = time_window(
            i128::from(spec.times_ms[first]),
            i128::from(spec.times_ms[last]),
        );
        let x_max = hours_between(t0, t1);

        // The axis is scaled to Ce and the targets: the effect site is what
        // the targets refer to, and Cp right after an IV bolus (complete
        // mixing in V1 is the model's assumption) would otherwise squash the
        // clinically relevant range. A Cp peak above the axis is labelled.
        let t = &spec.targets;
        let targets = [
            t.analgesic_floor_ng_per_ml,
            t.caution_ng_per_ml,
            t.ceiling_ng_per_ml,
        ];
        let ce_finite = spec.ce_ng_per_ml.iter().any(|v| v.is_finite());
        let y_top = if ce_finite {
            y_top(spec.ce_ng_per_ml.iter().chain(&targets).copied())
        } else {
            y_top(spec.cp_ng_per_ml.iter().chain(&targets).copied())
        };
        let cp_peak = order
            .iter()
            .filter(|&&i| spec.cp_ng_per_ml[i].is_finite())
            .max_by(|&&a, &&b| spec.cp_ng_per_ml[a].total_cmp(&spec.cp_ng_per_ml[b]));
        let cp_off_scale = cp_peak.and_then(|&i| {
            let v = spec.cp_ng_per_ml[i];
            let t = i128::from(spec.times_ms[i]);
            (v > y_top).then(|| (hours_between(t0, t), v, t))
        });
        let segments = |values: &[f64]| -> Vec<Vec<(f64, f64)>> {
            let mut out = Vec::new();
            let mut current = Vec::new();
            for &i in &order {
                let v = values[i];
                if v.is_finite() {
                    let x = hours_between(t0, i128::from(spec.times_ms[i]));
                    current.push((x, v.clamp(0.0, y_top)));
                } else if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            if !current.is_empty() {
                out.push(current);
            }
            out
        };
        let cp = segments(&spec.cp_ng_per_ml);
        let ce = segments(&spec.ce_ng_per_ml);

        let (x_step_ms, major, minor) = time_ticks(t0, t1);
        let (y_step, y_ticks) = value_ticks(y_top);
        Ok(Self {
            t0,
            t1,
            x_max,
            y_top,
            cp,
            ce,
            x_ticks: major.into_iter().map(|m| hours_between(t0, m)).collect(),
            x_minor: minor.into_iter().map(|m| hours_between(t0, m)).collect(),
            x_step_ms,
            y_ticks,
            y_step,
            cp_off_scale,
        })
    }

    fn x_of(&self, t: TimeMs) -> f64 {
        hours_between(self.t0, i128::from(t))
    }

    /// Absolute time of an x value (hours since `t0`), for tick labels.
    fn time_of(&self, x: f64) -> i128 {
        let offset = (x * MS_PER_HOUR).round();
        // `as` saturates for out-of-range floats; the window is far smaller.
        self.t0 + offset as i128
    }
}

/// A linear f64 axis whose tick positions are chosen here (clock-aligned
/// times, "nice" concentrations) rather than by plotters.
struct TickedAxis {
    linear: RangedCoordf64,
    start: f64,
    end: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl TickedAxis {
    fn new(end: f64, bold: &[f64], light: &[f64]) -> Self {
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

fn hours_between(from: i128, to: i128) -> f64 {
    (to - from) as f64 / MS_PER_HOUR
}

/// The drawn time window: the data range, widened to at least
/// [`MIN_WINDOW_MS`] around its centre and kept inside the `TimeMs` range.
fn time_window(first: i128, last: i128) -> (i128, i128) {
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
fn clock_hhmm(t_ms: i128) -> String {
    let minutes = t_ms.div_euclid(60_000);
    let minute_of_day = minutes.rem_euclid(24 * 60);
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

/// Top of the concentration axis: 10 % above the largest finite value
/// (data or target), at least something positive.
fn y_top(values: impl Iterator<Item = f64>) -> f64 {
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
fn nice_step(raw: f64) -> Option<f64> {
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

fn value_ticks(top: f64) -> (f64, Vec<f64>) {
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
fn time_ticks(t0: i128, t1: i128) -> (i128, Vec<i128>, Vec<i128>) {
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

fn utc(t: i128) -> Option<DateTime<Utc>> {
    let ms = i64::try_from(t).ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

fn time_tick_label(t: i128, step_ms: i128, multi_day: bool) -> String {
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

fn time_axis_desc(t0: i128, t1: i128) -> String {
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
fn format_value(v: f64) -> String {
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

fn format_tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if step >= 1.0 && v.abs() < 1e6 {
        return format!("{v:.0}");
    }
    format_value(v)
}

// ---------------------------------------------------------------------------
// Pixel scale

/// Pixel scale of one rendering. Layout constants are in output pixels; the
/// PNG is drawn at [`SUPERSAMPLE`]× and averaged down, which smooths lines and
/// evens out glyph spacing (plotters places bitmap glyphs on whole pixels).
#[derive(Clone, Copy)]
struct Scale(i32);

impl Scale {
    fn px(self, v: i32) -> i32 {
        v.saturating_mul(self.0)
    }
    fn stroke(self, w: u32) -> u32 {
        w.saturating_mul(self.0.unsigned_abs())
    }
    fn text(self, size: f64, color: RGBColor) -> TextStyle<'static> {
        text_style(size * f64::from(self.0), color)
    }
    fn plot_left(self) -> i32 {
        self.px(PLOT_LEFT)
    }
    fn plot_right(self) -> i32 {
        self.px(PLOT_RIGHT)
    }
}

/// Render `spec` at `SUPERSAMPLE`× and return the box-filtered RGB pixels
/// at the output size.
fn render_rgb(spec: &PlotSpec, prepared: &Prepared) -> Result<Vec<u8>, PlotError> {
    let k = SUPERSAMPLE;
    let (w, h) = (PLOT_WIDTH_PX as usize, PLOT_HEIGHT_PX as usize);
    let (big_w, big_h) = (w * k as usize, h * k as usize);
    let mut big = vec![255_u8; big_w * big_h * 3];
    {
        let root =
            BitMapBackend::with_buffer(&mut big, (big_w as u32, big_h as u32)).into_drawing_area();
        draw_all(&root, spec, prepared, Scale(k))?;
        root.present().map_err(draw_err)?;
    }
    let k = k as usize;
    let n = (k * k) as u32;
    let mut small = vec![0_u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut sum = 0_u32;
                for dy in 0..k {
                    let row = (y * k + dy) * big_w;
                    for dx in 0..k {
                        sum += u32::from(big[(row + x * k + dx) * 3 + c]);
                    }
                }
                small[(y * w + x) * 3 + c] = ((sum + n / 2) / n) as u8;
            }
        }
    }
    Ok(small)
}

// ---------------------------------------------------------------------------
// Event strip layout

enum EventGlyph {
    Dose { x: i32 },
    Span { x0: i32, x1: i32 },
}

struct PlacedEvent {
    glyph: EventGlyph,
    label: String,
    /// Left edge of the label text.
    label_x: i32,
    lane: usize,
}

/// Pixel x of a time inside the plot (same mapping the charts use).
fn px_of(p: &Prepared, k: Scale, t: i128) -> i32 {
    let frac = if p.t1 > p.t0 {
        (t - p.t0) as f64 / (p.t1 - p.t0) as f64
    } else {
        0.0
    };
    let w = f64::from(k.plot_right() - k.plot_left());
    k.plot_left() + (frac.clamp(0.0, 1.0) * w).round() as i32
}

/// Place doses and spans into lanes so that no two labels or bars overlap
/// (beyond [`MAX_LANES`] lanes, the least crowded lane is shared).
fn place_events<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    k: Scale,
    spec: &PlotSpec,
    p: &Prepared,
) -> Result<(Vec<PlacedEvent>, usize), PlotError> {
    let gap = k.px(12);
    let (left, right) = (k.plot_left() + k.px(3), k.plot_right() - k.px(3));
    let style = k.text(EVENT_FONT, INK);
    let mut items: Vec<(i128, EventGlyph, &str)> = Vec::new();
    for d in &spec.doses {
        let t = i128::from(d.time_ms);
        if t >= p.t0 && t <= p.t1 {
            items.push((t, EventGlyph::Dose { x: px_of(p, k, t) }, &d.label));
        }
    }
    for s in &spec.spans {
        let (a, b) = (i128::from(s.start_ms), i128::from(s.end_ms));
        let (a, b) = (a.min(b), a.max(b));
        if b < p.t0 || a > p.t1 {
            continue;
        }
        let x0 = px_of(p, k, a.max(p.t0));
        let x1 = px_of(p, k, b.min(p.t1)).max(x0 + k.px(3));
        items.push((a.max(p.t0), EventGlyph::Span { x0, x1 }, &s.label));
    }
    items.sort_by_key(|(t, _, _)| *t);

    let mut lane_ends: Vec<i32> = Vec::new();
    let mut placed = Vec::with_capacity(items.len());
    for (_, glyph, label) in items {
        let (w, _) = root.estimate_text_size(label, &style).map_err(draw_err)?;
        let w = i32::try_from(w).unwrap_or(i32::MAX / 4);
        let (start, end, label_x) = match glyph {
            // Label right of the dose tick, or left of it near the right edge.
            EventGlyph::Dose { x } => {
                let beside = x + k.px(6);
                let label_x = if beside + w <= right {
                    beside
                } else {
                    x - k.px(6) - w
                };
                (x - k.px(7), x + k.px(7), label_x.max(left))
            }
            // Label above the bar from its start, pulled left near the edge.
            EventGlyph::Span { x0, x1 } => (x0, x1, (x0 + k.px(5)).min(right - w).max(left)),
        };
        let occ_start = start.min(label_x);
        let occ_end = end.max(label_x.saturating_add(w));
        let lane = match lane_ends.iter().position(|&e| e + gap <= occ_start) {
            Some(l) => l,
            None if lane_ends.len() < MAX_LANES => {
                lane_ends.push(i32::MIN / 2);
                lane_ends.len() - 1
            }
            None => lane_ends
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| **e)
                .map_or(0, |(l, _)| l),
        };
        if let Some(e) = lane_ends.get_mut(lane) {
            *e = (*e).max(occ_end);
        }
        placed.push(PlacedEvent {
            glyph,
            label: label.to_owned(),
            label_x,
            lane,
        });
    }
    Ok((placed, lane_ends.len()))
}

// ---------------------------------------------------------------------------
// Drawing

fn draw_all<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &PlotSpec,
    p: &Prepared,
    k: Scale,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(draw_err)?;
    draw_header(root, k, spec)?;

    let (events, lanes) = place_events(root, k, spec, p)?;
    let lanes = i32::try_from(lanes.max(1)).unwrap_or(1);
    let strip_h = k.px(STRIP_PAD * 2 + LANE_H * lanes + X_LABEL_AREA);
    let body_top = k.px(HEADER_H + LEGEND_H);
    let upper_h = k.px(PLOT_HEIGHT_PX as i32) - body_top - strip_h;
    let (_, body) = root.split_vertically(body_top);
    let (upper, lower) = body.split_vertically(upper_h);

    draw_legend(root, k, spec, p, !events.is_empty())?;
    draw_concentrations(root, &upper, k, spec, p)?;
    draw_strip(root, &lower, k, p, &events)
}

/// Largest font size (down to `min`) at which `text` fits `max_w`; text that
/// still does not fit is shortened with an ellipsis.
fn fit_text<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    k: Scale,
    text: &str,
    (size, min): (f64, f64),
    max_w: i32,
    color: RGBColor,
) -> Result<(String, TextStyle<'static>), PlotError> {
    let max_w = u32::try_from(max_w).unwrap_or(0);
    let mut s = size;
    loop {
        let style = k.text(s, color);
        let (w, _) = root.estimate_text_size(text, &style).map_err(draw_err)?;
        if w <= max_w {
            return Ok((text.to_owned(), style));
        }
        if s - 1.0 < min {
            break;
        }
        s -= 1.0;
    }
    let style = k.text(min, color);
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let candidate: String = chars.iter().collect::<String>() + "…";
        let (w, _) = root
            .estimate_text_size(&candidate, &style)
            .map_err(draw_err)?;
        if w <= max_w {
            return Ok((candidate, style));
        }
    }
    Ok((String::new(), style))
}

fn draw_header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    k: Scale,
    spec: &PlotSpec,
) -> Result<(), PlotError> {
    let max_w = k.px(PLOT_WIDTH_PX as i32 - 2 * MARGIN_LEFT);
    let (title, style) = fit_text(root, k, &spec.title, TITLE_FONT, max_w, INK)?;
    root.draw_text(&title, &style, (k.px(MARGIN_LEFT), k.px(12)))
        .map_err(draw_err)?;
    let (subtitle, style) = fit_text(root, k, &spec.subtitle, SUBTITLE_FONT, max_w, MUTED)?;
    root.draw_text(&subtitle, &style, (k.px(MARGIN_LEFT), k.px(46)))
        .map_err(draw_err)?;
    Ok(())
}

#[derive(Clone, Copy)]
enum LegendKey {
    Cp,
    Ce,
    Band,
    Dose,
    Span,
}

fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    k: Scale,
    spec: &PlotSpec,
    p: &Prepared,
    has_events: bool,
) -> Result<(), PlotError> {
    let style = k
        .text(LEGEND_FONT, INK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let y = k.px(HEADER_H + LEGEND_H / 2 - 2);
    let mut x = k.plot_left();
    let has_doses = spec
        .doses
        .iter()
        .any(|d| (p.t0..=p.t1).contains(&i128::from(d.time_ms)));
    let has_spans = has_events
        && spec.spans.iter().any(|s| {
            let (a, b) = (i128::from(s.start_ms), i128::from(s.end_ms));
            a.min(b) <= p.t1 && a.max(b) >= p.t0
        });

    let mut entries = vec![
        (LegendKey::Cp, "Cp (plasma)"),
        (LegendKey::Ce, "Ce (effect site)"),
    ];
    if band_limits(&spec.targets).is_some() {
        entries.push((LegendKey::Band, "analgesic band"));
    }
    if has_doses {
        entries.push((LegendKey::Dose, "dose"));
    }
    if has_spans {
        entries.push((LegendKey::Span, "infusion / patch"));
    }
    let sample = k.px(34);
    for (key, label) in entries {
        match key {
            LegendKey::Cp => root
                .draw(&PathElement::new(
                    vec![(x, y), (x + sample, y)],
                    CP_COLOR.stroke_width(k.stroke(CP_WIDTH)),
                ))
                .map_err(draw_err)?,
            LegendKey::Ce => {
                for i in 0..3 {
                    let a = x + k.px(i * 13);
                    root.draw(&PathElement::new(
                        vec![(a, y), (a + k.px(8), y)],
                        CE_COLOR.stroke_width(k.stroke(CE_WIDTH)),
                    ))
                    .map_err(draw_err)?;
                }
            }
            LegendKey::Band => {
                let corners = [(x, y - k.px(7)), (x + sample, y + k.px(7))];
                root.draw(&Rectangle::new(corners, BAND_FILL.filled()))
                    .map_err(draw_err)?;
                root.draw(&Rectangle::new(
                    corners,
                    FLOOR_COLOR.stroke_width(k.stroke(1)),
                ))
                .map_err(draw_err)?;
            }
            LegendKey::Dose => root
                .draw(&TriangleMarker::new(
                    (x + sample / 2, y),
                    k.px(7),
                    DOSE_COLOR.filled(),
                ))
                .map_err(draw_err)?,
            LegendKey::Span => root
                .draw(&Rectangle::new(
                    [(x, y - k.px(3)), (x + sample, y + k.px(3))],
                    SPAN_COLOR.filled(),
                ))
                .map_err(draw_err)?,
        }
        let text_x = x + sample + k.px(8);
        root.draw_text(label, &style, (text_x, y))
            .map_err(draw_err)?;
        let (w, _) = root.estimate_text_size(label, &style).map_err(draw_err)?;
        x = text_x + i32::try_from(w).unwrap_or(0) + k.px(28);
    }
    Ok(())
}

fn valid_level(v: f64) -> Option<f64> {
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn band_limits(t: &TargetLines) -> Option<(f64, f64)> {
    let lo = valid_level(t.analgesic_floor_ng_per_ml)?;
    let hi = valid_level(t.caution_ng_per_ml)?;
    (lo != hi).then_some((lo.min(hi), lo.max(hi)))
}

fn draw_concentrations<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    k: Scale,
    spec: &PlotSpec,
    p: &Prepared,
) -> Result<(), PlotError> {
    let x_range = TickedAxis::new(p.x_max, &p.x_ticks, &p.x_minor);
    let y_range = TickedAxis::new(p.y_top, &p.y_ticks, &[]);
    let mut chart = ChartBuilder::on(area)
        .margin_left(k.px(MARGIN_LEFT))
        .margin_right(k.px(MARGIN_RIGHT))
        .margin_top(k.px(8))
        .y_label_area_size(k.px(Y_LABEL_AREA))
        .x_label_area_size(0)
        .build_cartesian_2d(x_range, y_range)
        .map_err(draw_err)?;
    let y_fmt = |v: &f64| format_tick(*v, p.y_step);
    chart
        .configure_mesh()
        .bold_line_style(GRID_BOLD.stroke_width(k.stroke(1)))
        .light_line_style(GRID_LIGHT.stroke_width(k.stroke(1)))
        .axis_style(MUTED.stroke_width(k.stroke(1)))
        .set_all_tick_mark_size(k.px(5))
        .label_style(k.text(TICK_FONT, INK))
        .axis_desc_style(k.text(AXIS_FONT, INK))
        .y_desc("Concentration (ng/mL)")
        .y_label_formatter(&y_fmt)
        .draw()
        .map_err(draw_err)?;

    let x_max = p.x_max;
    let t = &spec.targets;
    if let Some((lo, hi)) = band_limits(t) {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, lo), (x_max, hi)],
                BAND_FILL.filled(),
            )))
            .map_err(draw_err)?;
    }

    // Dose times as faint dotted verticals, to line the curve up with the strip.
    for d in &spec.doses {
        let x = p.x_of(d.time_ms);
        if (0.0..=x_max).contains(&x) {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x, 0.0), (x, p.y_top)],
                    k.px(3),
                    k.px(4),
                    DOSE_COLOR.mix(0.5).stroke_width(k.stroke(1)),
                ))
                .map_err(draw_err)?;
        }
    }

    let floor = valid_level(t.analgesic_floor_ng_per_ml);
    let caution = valid_level(t.caution_ng_per_ml);
    let ceiling = valid_level(t.ceiling_ng_per_ml);
    if let Some(v) = floor {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, v), (x_max, v)],
                FLOOR_COLOR.stroke_width(k.stroke(1)),
            ))
            .map_err(draw_err)?;
    }
    if let Some(v) = caution {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, v), (x_max, v)],
                k.px(10),
                k.px(6),
                CAUTION_COLOR.stroke_width(k.stroke(2)),
            ))
            .map_err(draw_err)?;
    }
    if let Some(v) = ceiling {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, v), (x_max, v)],
                CEILING_COLOR.stroke_width(k.stroke(2)),
            ))
            .map_err(draw_err)?;
    }

    // Ce (thick, dashed) under Cp (thin, solid): where the two coincide both
    // stay visible.
    for seg in &p.ce {
        chart
            .draw_series(DashedLineSeries::new(
                seg.iter().copied(),
                k.px(9),
                k.px(5),
                CE_COLOR.stroke_width(k.stroke(CE_WIDTH)),
            ))
            .map_err(draw_err)?;
    }
    for seg in &p.cp {
        chart
            .draw_series(LineSeries::new(
                seg.iter().copied(),
                CP_COLOR.stroke_width(k.stroke(CP_WIDTH)),
            ))
            .map_err(draw_err)?;
    }
    // A lone sample would otherwise be invisible.
    for (segs, color, r) in [(&p.ce, CE_COLOR, 5), (&p.cp, CP_COLOR, 3)] {
        for seg in segs.iter().filter(|s| s.len() == 1) {
            chart
                .draw_series(seg.iter().map(|&c| Circle::new(c, k.px(r), color.filled())))
                .map_err(draw_err)?;
        }
    }

    if let Some((x, value, t)) = p.cp_off_scale {
        let text = format!(
            "Cp off scale: peak {:.0} ng/mL at {} ▲",
            value,
            clock_hhmm(t)
        );
        let style = k.text(TICK_FONT, CP_COLOR);
        let (px, py) = chart.backend_coord(&(x, p.y_top));
        let width = root
            .estimate_text_size(&text, &style)
            .map_or(0, |(w, _)| w as i32);
        let (xr, _) = chart.plotting_area().get_pixel_range();
        let left = (px - width - k.px(4)).max(xr.start + k.px(4));
        root.draw_text(&text, &style, (left, py + k.px(4)))
            .map_err(draw_err)?;
    }

    // Frame and the level labels in the right margin.
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    root.draw(&Rectangle::new(
        [(xr.start, yr.start), (xr.end, yr.end)],
        MUTED.stroke_width(k.stroke(1)),
    ))
    .map_err(draw_err)?;

    let y_px = |v: f64| chart.backend_coord(&(0.0, v)).1;
    let mut labels: Vec<(i32, String, RGBColor)> = Vec::new();
    if let Some(v) = ceiling {
        labels.push((
            y_px(v),
            format!("ceiling {}", format_value(v)),
            CEILING_COLOR,
        ));
    }
    if let Some(v) = caution {
        labels.push((
            y_px(v),
            format!("caution {}", format_value(v)),
            CAUTION_COLOR,
        ));
    }
    if let Some(v) = floor {
        labels.push((y_px(v), format!("floor {}", format_value(v)), FLOOR_COLOR));
    }
    let label_gap = k.px(18);
    if let Some((lo, hi)) = band_limits(t) {
        let (a, b) = (y_px(hi), y_px(lo));
        if b - a >= 3 * label_gap {
            labels.push(((a + b) / 2, "analgesic band".to_owned(), FLOOR_COLOR));
        }
    }
    labels.sort_by_key(|l| l.0);
    spread(&mut labels, label_gap, yr.start + k.px(6), yr.end - k.px(6));
    let x = xr.end + k.px(8);
    for (y, text, color) in labels {
        let style = k
            .text(LEVEL_FONT, color)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw_text(&text, &style, (x, y)).map_err(draw_err)?;
    }
    Ok(())
}

/// Push sorted label positions apart to at least `gap`, within `[lo, hi]`
/// where there is room.
fn spread<T>(labels: &mut [(i32, String, T)], gap: i32, lo: i32, hi: i32) {
    let mut prev: Option<i32> = None;
    for l in labels.iter_mut() {
        if let Some(p) = prev {
            l.0 = l.0.max(p.saturating_add(gap));
        }
        prev = Some(l.0);
    }
    let mut next = hi;
    for l in labels.iter_mut().rev() {
        l.0 = l.0.min(next);
        next = l.0.saturating_sub(gap);
    }
    if let Some(first) = labels.first() {
        let shift = lo.saturating_sub(first.0);
        if shift > 0 {
            for l in labels.iter_mut() {
                l.0 = l.0.saturating_add(shift);
            }
        }
    }
}

fn draw_strip<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    k: Scale,
    p: &Prepared,
    events: &[PlacedEvent],
) -> Result<(), PlotError> {
    let x_range = TickedAxis::new(p.x_max, &p.x_ticks, &p.x_minor);
    let mut chart = ChartBuilder::on(area)
        .margin_left(k.px(MARGIN_LEFT))
        .margin_right(k.px(MARGIN_RIGHT))
        .margin_top(k.px(STRIP_PAD))
        .margin_bottom(k.px(STRIP_PAD))
        .y_label_area_size(k.px(Y_LABEL_AREA))
        .x_label_area_size(k.px(X_LABEL_AREA - STRIP_PAD))
        .build_cartesian_2d(x_range, 0.0..1.0)
        .map_err(draw_err)?;
    let multi_day = match (utc(p.t0), utc(p.t1)) {
        (Some(a), Some(b)) => a.date_naive() != b.date_naive(),
        _ => false,
    };
    let step = p.x_step_ms;
    let x_fmt = |x: &f64| time_tick_label(p.time_of(*x), step, multi_day);
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .bold_line_style(GRID_BOLD.stroke_width(k.stroke(1)))
        .light_line_style(GRID_LIGHT.stroke_width(k.stroke(1)))
        .axis_style(MUTED.stroke_width(k.stroke(1)))
        .set_all_tick_mark_size(k.px(5))
        .label_style(k.text(TICK_FONT, INK))
        .axis_desc_style(k.text(AXIS_FONT, INK))
        .x_desc(time_axis_desc(p.t0, p.t1))
        .x_label_formatter(&x_fmt)
        .draw()
        .map_err(draw_err)?;

    let (xr, yr) = chart.plotting_area().get_pixel_range();
    root.draw(&Rectangle::new(
        [(xr.start, yr.start), (xr.end, yr.end)],
        MUTED.stroke_width(k.stroke(1)),
    ))
    .map_err(draw_err)?;
    if events.is_empty() {
        let style = k
            .text(EVENT_FONT, MUTED)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw_text(
            "no doses in this period",
            &style,
            (xr.start + k.px(8), (yr.start + yr.end) / 2),
        )
        .map_err(draw_err)?;
    }
    let label_style = k.text(EVENT_FONT, INK).pos(Pos::new(HPos::Left, VPos::Top));
    for e in events {
        let lane = i32::try_from(e.lane).unwrap_or(0);
        let top = yr.start + k.px(LANE_H * lane);
        let glyph_y = top + k.px(LANE_H - 8);
        match e.glyph {
            EventGlyph::Dose { x } => {
                root.draw(&PathElement::new(
                    vec![(x, top + k.px(2)), (x, glyph_y)],
                    DOSE_COLOR.stroke_width(k.stroke(1)),
                ))
                .map_err(draw_err)?;
                root.draw(&TriangleMarker::new(
                    (x, glyph_y),
                    k.px(6),
                    DOSE_COLOR.filled(),
                ))
                .map_err(draw_err)?;
            }
            EventGlyph::Span { x0, x1 } => {
                root.draw(&Rectangle::new(
                    [(x0, glyph_y - k.px(3)), (x1, glyph_y + k.px(3))],
                    SPAN_COLOR.filled(),
                ))
                .map_err(draw_err)?;
            }
        }
        root.draw_text(&e.label, &label_style, (e.label_x, top + k.px(3)))
            .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::vocab::parse_rfc3339_ms;

    fn at(text: &str) -> TimeMs {
        parse_rfc3339_ms(text).unwrap()
    }

    /// 24 h of a plausible ketamine course, 1-minute samples: IV infusion
    /// 20 mg/h 08:00–12:00, patch 1.04 mg/h from 09:00, intranasal 50 mg at
    /// 14:00. One-compartment disposition (t½ 2.5 h, V 200 L), first-order
    /// absorption for the IN dose (F 0.45) and the patch depot, Ce by ke0
    /// 0.652/min. Not a validated model: only a realistic-looking picture.
    fn example_spec() -> PlotSpec {
        let start = at("2026-11-27T00:00:00Z");
        let minute = 60_000;
        let k = std::f64::consts::LN_2 / 150.0;
        let v_l = 200.0;
        let ke0: f64 = 0.652;
        let (mut amount_mg, mut in_depot, mut patch_depot, mut ce) = (0.0, 0.0, 0.0, 0.0);
        let (mut times, mut cp_v, mut ce_v) = (Vec::new(), Vec::new(), Vec::new());
        for m in 0..=(24 * 60) {
            let cp = amount_mg / v_l * 1000.0; // mg/L → ng/mL
            ce += (cp - ce) * (1.0 - (-ke0).exp());
            times.push(start + m * minute);
            cp_v.push(cp);
            ce_v.push(ce);
            let hour = m as f64 / 60.0;
            if (8.0..12.0).contains(&hour) {
                amount_mg += 20.0 / 60.0;
            }
            if hour >= 9.0 {
                patch_depot += 1.04 / 60.0;
            }
            if m == 14 * 60 {
                in_depot += 50.0 * 0.45;
            }
            let from_in = in_depot * 0.08;
            let from_patch = patch_depot * 0.004;
            in_depot -= from_in;
            patch_depot -= from_patch;
            amount_mg += from_in + from_patch - amount_mg * k;
        }
        PlotSpec {
            title: "Ketamine — patient P-1001 (72 kg)".to_owned(),
            subtitle: "model ketamine/domino · ke0 0.652/min (assumed) · \
                       decision support, not a medical device"
                .to_owned(),
            times_ms: times,
            cp_ng_per_ml: cp_v,
            ce_ng_per_ml: ce_v,
            targets: TargetLines {
                analgesic_floor_ng_per_ml: 100.0,
                caution_ng_per_ml: 250.0,
                ceiling_ng_per_ml: 500.0,
            },
            doses: vec![DoseMark {
                time_ms: at("2026-11-27T14:00:00Z"),
                label: "IN 50 mg".to_owned(),
            }],
            spans: vec![
                SpanMark {
                    start_ms: at("2026-11-27T08:00:00Z"),
                    end_ms: at("2026-11-27T12:00:00Z"),
                    label: "IV 20 mg/h".to_owned(),
                },
                SpanMark {
                    start_ms: at("2026-11-27T09:00:00Z"),
                    end_ms: at("2026-11-28T00:00:00Z"),
                    label: "patch 1.04 mg/h".to_owned(),
                },
            ],
        }
    }

    fn tiny_spec(times: Vec<TimeMs>, cp: Vec<f64>, ce: Vec<f64>) -> PlotSpec {
        PlotSpec {
            title: "t".to_owned(),
            subtitle: "s".to_owned(),
            times_ms: times,
            cp_ng_per_ml: cp,
            ce_ng_per_ml: ce,
            targets: TargetLines {
                analgesic_floor_ng_per_ml: 100.0,
                caution_ng_per_ml: 250.0,
                ceiling_ng_per_ml: 500.0,
            },
            doses: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        (w, h)
    }

    #[test]
    fn example_curve_is_plausible() {
        let spec = example_spec();
        let max = spec.cp_ng_per_ml.iter().copied().fold(0.0, f64::max);
        assert!((150.0..=300.0).contains(&max), "peak Cp {max}");
        assert_eq!(spec.cp_ng_per_ml[0], 0.0);
    }

    #[test]
    fn svg_has_axes_units_legend_targets_and_marks() {
        let svg = render_svg(&example_spec()).unwrap();
        for needle in [
            "Time (UTC) · 2026-11-27",
            "Concentration (ng/mL)",
            "Cp (plasma)",
            "Ce (effect site)",
            "analgesic band",
            "floor 100",
            "caution 250",
            "ceiling 500",
            "IN 50 mg",
            "IV 20 mg/h",
            "patch 1.04 mg/h",
            "Ketamine — patient P-1001 (72 kg)",
            "decision support, not a medical device",
            "\n08:00\n",
            "\n14:00\n",
            "\n300\n",
        ] {
            assert!(
                svg.contains(needle),
                "SVG lacks {needle:?}:\n{}",
                &svg[..svg.len().min(2000)]
            );
        }
        // The curves are drawn in their colours, the ceiling in red.
        for colour in [CP_COLOR, CE_COLOR, CEILING_COLOR] {
            let hex = format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2);
            assert!(svg.contains(&hex), "no element stroked {hex}");
        }
    }

    #[test]
    fn a_cp_spike_is_off_scale_and_labelled_not_hidden() {
        let mut spiky = example_spec();
        spiky.cp_ng_per_ml[10] = 4409.0;
        let p = Prepared::new(&spiky).unwrap();
        assert!(p.y_top < 1000.0, "axis follows Ce and targets: {}", p.y_top);
        let (_, value, t) = p.cp_off_scale.unwrap();
        assert_eq!(value, 4409.0);
        assert_eq!(t, i128::from(spiky.times_ms[10]));
        let svg = render_svg(&spiky).unwrap();
        assert!(
            svg.contains("Cp off scale: peak 4409 ng/mL"),
            "label missing"
        );
        assert!(Prepared::new(&example_spec())
            .unwrap()
            .cp_off_scale
            .is_none());
    }

    #[test]
    fn y_axis_reaches_ceiling_or_data_with_headroom() {
        let p = Prepared::new(&example_spec()).unwrap();
        assert!((p.y_top - 550.0).abs() < 1e-9, "{}", p.y_top);
        let mut high = example_spec();
        high.ce_ng_per_ml[100] = 1000.0;
        let p = Prepared::new(&high).unwrap();
        assert!((p.y_top - 1100.0).abs() < 1e-9, "{}", p.y_top);
        assert_eq!(p.y_ticks.first(), Some(&0.0));
    }

    #[test]
    fn time_ticks_are_whole_clock_hours_for_a_day() {
        let p = Prepared::new(&example_spec()).unwrap();
        assert_eq!(p.x_step_ms, 2 * 3_600_000);
        let labels: Vec<String> = p
            .x_ticks
            .iter()
            .map(|&x| time_tick_label(p.time_of(x), p.x_step_ms, true))
            .collect();
        assert_eq!(labels.first().map(String::as_str), Some("27 Nov"));
        assert_eq!(labels.get(1).map(String::as_str), Some("02:00"));
        assert_eq!(labels.last().map(String::as_str), Some("28 Nov"));
        assert_eq!(labels.len(), 13);
    }

    #[test]
    fn format_from_path() {
        assert_eq!(
            PlotFormat::from_path(Path::new("a/b.svg")).unwrap(),
            PlotFormat::Svg
        );
        assert_eq!(
            PlotFormat::from_path(Path::new("PLOT.PNG")).unwrap(),
            PlotFormat::Png
        );
        assert!(matches!(
            PlotFormat::from_path(Path::new("plot.txt")),
            Err(PlotError::UnsupportedFormat { path }) if path == Path::new("plot.txt")
        ));
        assert!(matches!(
            PlotFormat::from_path(Path::new("svg")),
            Err(PlotError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn empty_series_is_an_error() {
        let spec = tiny_spec(vec![], vec![], vec![]);
        assert!(matches!(render_svg(&spec), Err(PlotError::EmptySeries)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        assert!(matches!(
            write_plot(&path, &spec),
            Err(PlotError::EmptySeries)
        ));
        assert!(!path.exists(), "no file for an invalid spec");
    }

    #[test]
    fn mismatched_lengths_are_an_error() {
        let spec = tiny_spec(
            vec![0, 60_000, 120_000],
            vec![1.0, 2.0],
            vec![1.0, 2.0, 3.0],
        );
        assert!(matches!(
            render_svg(&spec),
            Err(PlotError::LengthMismatch {
                times: 3,
                cp: 2,
                ce: 3
            })
        ));
        let spec = tiny_spec(vec![], vec![1.0], vec![]);
        assert!(matches!(
            render_svg(&spec),
            Err(PlotError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn odd_values_do_not_panic() {
        let t = at("2026-11-27T10:00:00Z");
        let h = 3_600_000;
        let cases = vec![
            // NaN and infinities among good values.
            tiny_spec(
                vec![t, t + h, t + 2 * h, t + 3 * h],
                vec![f64::NAN, 50.0, f64::INFINITY, 20.0],
                vec![10.0, f64::NAN, f64::NEG_INFINITY, 30.0],
            ),
            // All NaN.
            tiny_spec(vec![t, t + h], vec![f64::NAN; 2], vec![f64::NAN; 2]),
            // One point.
            tiny_spec(vec![t], vec![120.0], vec![80.0]),
            // All zeros, all at one instant.
            tiny_spec(vec![t, t, t], vec![0.0; 3], vec![0.0; 3]),
            // Huge and negative values.
            tiny_spec(
                vec![t, t + h, t + 2 * h],
                vec![1e300, f64::MAX, -5.0],
                vec![f64::MAX, 1e-300, f64::MIN_POSITIVE],
            ),
            // Unsorted times, extreme times.
            tiny_spec(
                vec![t + 2 * h, t, t + h],
                vec![3.0, 1.0, 2.0],
                vec![3.0, 1.0, 2.0],
            ),
            tiny_spec(
                vec![TimeMs::MIN, TimeMs::MAX],
                vec![1.0, 2.0],
                vec![1.0, 2.0],
            ),
            tiny_spec(vec![TimeMs::MAX], vec![1.0], vec![1.0]),
            tiny_spec(vec![TimeMs::MIN], vec![1.0], vec![1.0]),
            // Years of data.
            tiny_spec(
                vec![t, t + 3 * 365 * 24 * h],
                vec![1.0, 2.0],
                vec![1.0, 2.0],
            ),
        ];
        for (i, mut spec) in cases.into_iter().enumerate() {
            // Bad targets and marks ride along with every case.
            if i % 2 == 1 {
                spec.targets = TargetLines {
                    analgesic_floor_ng_per_ml: f64::NAN,
                    caution_ng_per_ml: -1.0,
                    ceiling_ng_per_ml: f64::INFINITY,
                };
            }
            spec.doses = vec![
                DoseMark {
                    time_ms: t,
                    label: "bolus 10 mg".to_owned(),
                },
                DoseMark {
                    time_ms: TimeMs::MAX,
                    label: String::new(),
                },
            ];
            spec.spans = vec![SpanMark {
                start_ms: t + h,
                end_ms: t - h,
                label: "reversed".to_owned(),
            }];
            spec.title = "x".repeat(500);
            let svg = render_svg(&spec);
            assert!(svg.is_ok(), "case {i}: {:?}", svg.err());
        }
    }

    #[test]
    fn crowded_marks_get_separate_lanes() {
        let mut spec = example_spec();
        let t = at("2026-11-27T14:00:00Z");
        spec.doses = (0..5)
            .map(|i| DoseMark {
                time_ms: t + i * 60_000,
                label: format!("bolus {} mg", 10 + i),
            })
            .collect();
        let p = Prepared::new(&spec).unwrap();
        ensure_font().unwrap();
        let mut svg = String::new();
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
        let (placed, lanes) = place_events(&root, Scale(1), &spec, &p).unwrap();
        assert_eq!(placed.len(), 7);
        assert!(lanes >= 5, "{lanes} lanes for 5 adjacent doses");
        let dose_lanes: std::collections::BTreeSet<usize> = placed
            .iter()
            .filter(|e| matches!(e.glyph, EventGlyph::Dose { .. }))
            .map(|e| e.lane)
            .collect();
        assert_eq!(dose_lanes.len(), 5);
    }

    #[test]
    fn png_has_signature_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.PNG");
        write_plot(&path, &example_spec()).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(png_size(&bytes), (PLOT_WIDTH_PX, PLOT_HEIGHT_PX));
        assert!(bytes.len() > 10_000, "suspiciously small PNG");
    }

    #[test]
    fn svg_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        write_plot(&path, &example_spec()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<svg"));
        assert!(text.contains("Cp (plasma)"));
    }

    #[test]
    fn unwritable_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["missing/plot.png", "missing/plot.svg"] {
            let path = dir.path().join(name);
            match write_plot(&path, &example_spec()) {
                Err(PlotError::Io { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{name}: expected Io error, got {other:?}"),
            }
        }
        let path = dir.path().join("plot.txt");
        assert!(matches!(
            write_plot(&path, &example_spec()),
            Err(PlotError::UnsupportedFormat { .. })
        ));
        assert!(!path.exists());
    }

    #[test]
    fn number_formatting() {
        assert_eq!(format_value(100.0), "100");
        assert_eq!(format_value(1.04), "1.04");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(2.5e7), "2.50e7");
        assert_eq!(format_tick(550.0, 50.0), "550");
        assert_eq!(format_tick(0.25, 0.05), "0.25");
    }

    /// Renders the example to `$DOSETRACK_EXAMPLE_PLOT` (a .png or .svg path)
    /// when that variable is set, for looking at the picture.
    #[test]
    fn render_example_when_asked() {
        if let Some(path) = std::env::var_os("DOSETRACK_EXAMPLE_PLOT") {
            write_plot(Path::new(&path), &example_spec()).unwrap();
        }
    }

    /// Renders harder variants (crowded doses, data above the ceiling, a
    /// gap, three days, one short hour) as PNGs into
    /// `$DOSETRACK_EXAMPLE_DIR` when that variable is set.
    #[test]
    fn render_variants_when_asked() {
        let Some(dir) = std::env::var_os("DOSETRACK_EXAMPLE_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let h = 3_600_000;

        let mut crowded = example_spec();
        let t = at("2026-11-27T16:00:00Z");
        crowded.doses.extend((0..4).map(|i| DoseMark {
            time_ms: t + i * 10 * 60_000,
            label: format!("IV bolus {} mg", 5 * (i + 1)),
        }));
        crowded.doses.push(DoseMark {
            time_ms: at("2026-11-27T23:55:00Z"),
            label: "oral 25 mg".to_owned(),
        });
        for (i, v) in crowded.cp_ng_per_ml.iter_mut().enumerate() {
            if (600..640).contains(&i) {
                *v = f64::NAN;
            } else if (960..1000).contains(&i) {
                *v += 400.0 * ((i - 960) as f64 / 40.0 * std::f64::consts::PI).sin();
            }
        }
        write_plot(&dir.join("crowded.png"), &crowded).unwrap();

        let base = example_spec();
        let mut days = tiny_spec(vec![], vec![], vec![]);
        for rep in 0..3 {
            for (i, &t) in base.times_ms.iter().enumerate().take(1440) {
                days.times_ms.push(t + rep * 24 * h);
                days.cp_ng_per_ml.push(base.cp_ng_per_ml[i]);
                days.ce_ng_per_ml.push(base.ce_ng_per_ml[i]);
            }
        }
        days.title = base.title.clone();
        days.subtitle = base.subtitle.clone();
        days.spans = base.spans.clone();
        write_plot(&dir.join("three-days.png"), &days).unwrap();

        let mut hour = example_spec();
        hour.times_ms.truncate(14 * 60 + 50);
        hour.cp_ng_per_ml.truncate(14 * 60 + 50);
        hour.ce_ng_per_ml.truncate(14 * 60 + 50);
        hour.times_ms.drain(..14 * 60 - 10);
        hour.cp_ng_per_ml.drain(..14 * 60 - 10);
        hour.ce_ng_per_ml.drain(..14 * 60 - 10);
        hour.spans.clear();
        write_plot(&dir.join("one-hour.png"), &hour).unwrap();

        let mut empty_marks = tiny_spec(vec![at("2026-11-27T10:00:00Z")], vec![120.0], vec![90.0]);
        empty_marks.title = "Single sample, no doses".to_owned();
        write_plot(&dir.join("single.png"), &empty_marks).unwrap();
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn any_value() -> impl Strategy<Value = f64> {
            prop_oneof![
                0.0..600.0,
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(-1.0),
                any::<f64>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            #[test]
            fn rendering_never_panics(
                points in proptest::collection::vec(
                    (any::<i64>(), any_value(), any_value()), 0..12),
                near in proptest::collection::vec(
                    (0_i64..86_400_000, any_value(), any_value()), 0..12),
                marks in proptest::collection::vec((any::<i64>(), any::<i64>(), "[a-z ]{0,30}"), 0..6),
                floor in any_value(),
                caution in any_value(),
                ceiling in any_value(),
            ) {
                let base = 1_795_000_000_000_i64;
                let all: Vec<(i64, f64, f64)> = points
                    .into_iter()
                    .chain(near.into_iter().map(|(t, a, b)| (base + t, a, b)))
                    .collect();
                let spec = PlotSpec {
                    title: "t".to_owned(),
                    subtitle: "s".to_owned(),
                    times_ms: all.iter().map(|p| p.0).collect(),
                    cp_ng_per_ml: all.iter().map(|p| p.1).collect(),
                    ce_ng_per_ml: all.iter().map(|p| p.2).collect(),
                    targets: TargetLines {
                        analgesic_floor_ng_per_ml: floor,
                        caution_ng_per_ml: caution,
                        ceiling_ng_per_ml: ceiling,
                    },
                    doses: marks
                        .iter()
                        .map(|(t, _, l)| DoseMark { time_ms: *t, label: l.clone() })
                        .collect(),
                    spans: marks
                        .iter()
                        .map(|(a, b, l)| SpanMark { start_ms: *a, end_ms: *b, label: l.clone() })
                        .collect(),
                };
                match render_svg(&spec) {
                    Ok(svg) => prop_assert!(svg.contains("Time (UTC)")),
                    Err(e) => prop_assert!(matches!(e, PlotError::EmptySeries), "{e}"),
                }
            }
        }
    }
}
