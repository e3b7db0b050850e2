//! The header: the caller's title and subtitle (shrunk, then shortened, to
//! fit) and the legend row, so the legend never covers data.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::concentrations::band_limits;
use super::layout::{
    Scale, BAND_FILL, CE_COLOR, CE_WIDTH, CP_COLOR, CP_WIDTH, DOSE_COLOR, FLOOR_COLOR, HEADER_H,
    INK, LEGEND_FONT, LEGEND_H, MARGIN_LEFT, MUTED, SPAN_COLOR, SUBTITLE_FONT, TITLE_FONT,
};
use super::prepare::Prepared;
use super::{draw_err, PlotError, PlotSpec, PLOT_WIDTH_PX};

/// Largest font size (down to `min`) at which `text` fits `max_w`; text that
/// still does not fit is shortened with an ellipsis.
pub(super) fn fit_text<DB: DrawingBackend>(
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

pub(super) fn draw_header<DB: DrawingBackend>(
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
pub(super) enum LegendKey {
    Cp,
    Ce,
    Band,
    Dose,
    Span,
}

pub(super) fn draw_legend<DB: DrawingBackend>(
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
