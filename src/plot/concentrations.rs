//! The concentration panel: Cp (solid) and Ce (thick, dashed) against
//! clock time, the analgesic band, the floor, caution and ceiling lines with
//! their labels in the right margin, dose times as faint verticals, and a
//! label for a Cp peak above the axis.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{clock_hhmm, format_tick, format_value, TickedAxis};
use super::layout::{
    Scale, AXIS_FONT, BAND_FILL, CAUTION_COLOR, CEILING_COLOR, CE_COLOR, CE_WIDTH, CP_COLOR,
    CP_WIDTH, DOSE_COLOR, FLOOR_COLOR, GRID_BOLD, GRID_LIGHT, INK, LEVEL_FONT, MARGIN_LEFT,
    MARGIN_RIGHT, MUTED, TICK_FONT, Y_LABEL_AREA,
};
use super::prepare::Prepared;
use super::{draw_err, PlotError, PlotSpec, TargetLines};

pub(super) fn valid_level(v: f64) -> Option<f64> {
    (v.is_finite() && v >= 0.0).then_some(v)
}

pub(super) fn band_limits(t: &TargetLines) -> Option<(f64, f64)> {
    let lo = valid_level(t.analgesic_floor_ng_per_ml)?;
    let hi = valid_level(t.caution_ng_per_ml)?;
    (lo != hi).then_some((lo.min(hi), lo.max(hi)))
}

pub(super) fn draw_concentrations<DB: DrawingBackend>(
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
pub(super) fn spread<T>(labels: &mut [(i32, String, T)], gap: i32, lo: i32, hi: i32) {
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
