//! The event strip under the concentration panel: doses (triangles) and
//! infusions/patches (bars) with their labels, packed into lanes so that no
//! two overlap ([`place_events`]), and drawn on the shared time axis
//! ([`draw_strip`]).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{time_axis_desc, time_tick_label, utc, TickedAxis};
use super::layout::{
    Scale, AXIS_FONT, DOSE_COLOR, EVENT_FONT, GRID_BOLD, GRID_LIGHT, INK, LANE_H, MARGIN_LEFT,
    MARGIN_RIGHT, MAX_LANES, MUTED, SPAN_COLOR, STRIP_PAD, TICK_FONT, X_LABEL_AREA, Y_LABEL_AREA,
};
use super::prepare::Prepared;
use super::{draw_err, PlotError, PlotSpec};

pub(super) enum EventGlyph {
    Dose { x: i32 },
    Span { x0: i32, x1: i32 },
}

pub(super) struct PlacedEvent {
    pub(super) glyph: EventGlyph,
    pub(super) label: String,
    /// Left edge of the label text.
    pub(super) label_x: i32,
    pub(super) lane: usize,
}

/// Pixel x of a time inside the plot (same mapping the charts use).
pub(super) fn px_of(p: &Prepared, k: Scale, t: i128) -> i32 {
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
pub(super) fn place_events<DB: DrawingBackend>(
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

pub(super) fn draw_strip<DB: DrawingBackend>(
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
