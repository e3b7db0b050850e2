//! The spec reduced to what is drawn ([`Prepared`]): validated, sorted,
//! split at non-finite values, clamped, with the window and the ticks
//! chosen. Every odd value is skipped or clamped here, never a panic.

use super::axes::{hours_between, time_ticks, time_window, value_ticks, y_top, MS_PER_HOUR};
use super::{PlotError, PlotSpec};
use crate::vocab::TimeMs;

/// The spec reduced to what is drawn: a time window `[t0, t1]`, x in hours
/// since `t0`, line segments split at non-finite values, and axis ticks.
pub(super) struct Prepared {
    pub(super) t0: i128,
    pub(super) t1: i128,
    pub(super) x_max: f64,
    pub(super) y_top: f64,
    pub(super) cp: Vec<Vec<(f64, f64)>>,
    pub(super) ce: Vec<Vec<(f64, f64)>>,
    pub(super) x_ticks: Vec<f64>,
    pub(super) x_minor: Vec<f64>,
    pub(super) x_step_ms: i128,
    pub(super) y_ticks: Vec<f64>,
    pub(super) y_step: f64,
    /// Cp's peak when it is above the axis: (x, value, time). Said on the
    /// chart, never hidden.
    pub(super) cp_off_scale: Option<(f64, f64, i128)>,
}

impl Prepared {
    pub(super) fn new(spec: &PlotSpec) -> Result<Self, PlotError> {
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

    pub(super) fn x_of(&self, t: TimeMs) -> f64 {
        hours_between(self.t0, i128::from(t))
    }

    /// Absolute time of an x value (hours since `t0`), for tick labels.
    pub(super) fn time_of(&self, x: f64) -> i128 {
        let offset = (x * MS_PER_HOUR).round();
        // `as` saturates for out-of-range floats; the window is far smaller.
        self.t0 + offset as i128
    }
}
