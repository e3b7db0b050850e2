//! What a concentration chart shows, as data: one patient's Cp/Ce samples,
//! the target levels, and the doses and infusions to mark. The offline
//! computations build it; the shell's `plot` draws it (SVG or PNG).

use crate::vocab::TimeMs;

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
