//! The relief-over-weeks chart of `dosetrack relief --plot`: this module
//! owns drawing a regimen's predicted relief (a fraction of a responder's
//! maximal relief) day by day, with the line at half of the peak (when the
//! next series would be due) and the probability of response in the
//! header. It draws what the core's relief report gives; no pharmacology.

use std::fs;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::font::{ensure_font, text_style};
use super::{draw_err, PlotError, PlotFormat, PLOT_HEIGHT_PX, PLOT_WIDTH_PX};
use dosetrack_core::relief::ReliefReport;

/// Draw the relief over weeks of `report` to `path` (.svg or .png).
/// [`PlotError::EmptySeries`] when the report has no relief over weeks.
pub fn write_relief_plot(path: &Path, report: &ReliefReport, title: &str) -> Result<(), PlotError> {
    let io_err = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let format = PlotFormat::from_path(path)?;
    let chronic = report.chronic.as_ref().ok_or(PlotError::EmptySeries)?;
    if chronic.curve.is_empty() {
        return Err(PlotError::EmptySeries);
    }
    ensure_font()?;
    let size = (PLOT_WIDTH_PX, PLOT_HEIGHT_PX);
    match format {
        PlotFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw(&root, report, title)?;
                root.present().map_err(draw_err)?;
            }
            fs::write(path, svg).map_err(io_err)
        }
        PlotFormat::Png => {
            fs::File::create(path).map_err(io_err)?;
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw(&root, report, title)?;
            root.present().map_err(draw_err)
        }
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &ReliefReport,
    title: &str,
) -> Result<(), PlotError> {
    let Some(c) = report.chronic.as_ref() else {
        return Err(PlotError::EmptySeries);
    };
    root.fill(&WHITE).map_err(draw_err)?;
    let last_day = c.curve.iter().map(|d| d.day).max().unwrap_or(1).max(1);
    let subtitle = format!(
        "{} · relief as a fraction of a responder's maximum; probability of response {:.2} ({:.2} on placebo) · {}",
        report.model, c.response_probability, c.placebo_response_probability, report.notice
    );
    let mut chart = ChartBuilder::on(root)
        .caption(title, text_style(22.0, BLACK))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..f64::from(last_day), 0f64..1f64)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("days from the first dose")
        .y_desc("relief (fraction of maximum)")
        .label_style(text_style(14.0, BLACK))
        .axis_desc_style(text_style(15.0, BLACK))
        .draw()
        .map_err(draw_err)?;
    let half = c.peak_relief_fraction / 2.0;
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(
            [(0.0, half), (f64::from(last_day), half)],
            grey.stroke_width(2),
        ))
        .map_err(draw_err)?
        .label(format!(
            "half of the peak ({half:.2}): next series due below it"
        ))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    let blue = RGBColor(31, 100, 180);
    chart
        .draw_series(LineSeries::new(
            c.curve
                .iter()
                .map(|d| (f64::from(d.day), d.relief_fraction)),
            blue.stroke_width(3),
        ))
        .map_err(draw_err)?
        .label("predicted relief over weeks")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    if let Some(day) = c.below_half_of_peak_day {
        let red = RGBColor(190, 30, 30);
        chart
            .draw_series(LineSeries::new(
                [(f64::from(day), 0.0), (f64::from(day), 1.0)],
                red.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(format!(
                "day {day}: below half of the peak{}",
                c.next_series_due
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(text_style(14.0, BLACK))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.draw(&Text::new(
        subtitle,
        (20, PLOT_HEIGHT_PX as i32 - 18),
        text_style(12.0, grey),
    ))
    .map_err(draw_err)?;
    Ok(())
}
