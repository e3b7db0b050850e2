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
//!
//! This module owns the API ([`render_svg`], [`write_plot`], [`PlotFormat`],
//! [`PlotError`]; the chart data, [`PlotSpec`] and its parts, are the
//! core's `chart`) and the rendering of the whole picture; its submodules own
//! one part each: `prepare` (the validated data), `axes` (window, ticks,
//! labels), `layout` (geometry, sizes, colours, pixel scale), `font`,
//! `header` (title, legend), `concentrations` (the panel) and `lanes` (the
//! event strip).

mod axes;
mod concentrations;
mod font;
mod header;
mod lanes;
mod layout;
mod prepare;
mod relief;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use concentrations::draw_concentrations;
use font::ensure_font;
use header::{draw_header, draw_legend};
use lanes::{draw_strip, place_events};
use layout::{Scale, HEADER_H, LANE_H, LEGEND_H, STRIP_PAD, SUPERSAMPLE, X_LABEL_AREA};
use prepare::Prepared;

/// Width of every rendered plot, in pixels.
pub const PLOT_WIDTH_PX: u32 = 1200;
/// Height of every rendered plot, in pixels.
pub const PLOT_HEIGHT_PX: u32 = 700;

pub use dosetrack_core::chart::{DoseMark, PlotSpec, SpanMark, TargetLines};
pub use relief::write_relief_plot;

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

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
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
