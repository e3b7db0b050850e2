//! The picture's geometry, font sizes and colours, in output pixels, and
//! the pixel [`Scale`] of one rendering (1 for SVG, [`SUPERSAMPLE`] for PNG).

use plotters::prelude::*;

use super::font::text_style;
use super::PLOT_WIDTH_PX;

pub(super) const HEADER_H: i32 = 74;
pub(super) const LEGEND_H: i32 = 30;
pub(super) const MARGIN_LEFT: i32 = 14;
pub(super) const Y_LABEL_AREA: i32 = 78;
pub(super) const MARGIN_RIGHT: i32 = 142;
pub(super) const LANE_H: i32 = 30;
pub(super) const MAX_LANES: usize = 6;
pub(super) const STRIP_PAD: i32 = 6;
pub(super) const X_LABEL_AREA: i32 = 56;

/// The PNG is drawn this many times larger, then averaged down.
pub(super) const SUPERSAMPLE: i32 = 2;

// Font sizes as plotters counts them (it renders about 0.8 of this in px).
// Titles are (size, smallest size before the text is shortened).
pub(super) const TITLE_FONT: (f64, f64) = (27.0, 15.0);
pub(super) const SUBTITLE_FONT: (f64, f64) = (17.0, 11.0);
pub(super) const LEGEND_FONT: f64 = 16.0;
pub(super) const TICK_FONT: f64 = 16.0;
pub(super) const AXIS_FONT: f64 = 17.0;
pub(super) const LEVEL_FONT: f64 = 16.0;
pub(super) const EVENT_FONT: f64 = 15.0;
pub(super) const CP_WIDTH: u32 = 2;
pub(super) const CE_WIDTH: u32 = 4;

pub(super) const PLOT_LEFT: i32 = MARGIN_LEFT + Y_LABEL_AREA;
pub(super) const PLOT_RIGHT: i32 = PLOT_WIDTH_PX as i32 - MARGIN_RIGHT;

pub(super) const INK: RGBColor = RGBColor(33, 33, 33);
pub(super) const MUTED: RGBColor = RGBColor(90, 90, 90);
pub(super) const GRID_BOLD: RGBColor = RGBColor(214, 214, 214);
pub(super) const GRID_LIGHT: RGBColor = RGBColor(236, 236, 236);
pub(super) const CP_COLOR: RGBColor = RGBColor(21, 101, 192);
pub(super) const CE_COLOR: RGBColor = RGBColor(216, 67, 21);
/// The analgesic band: pale green, translucent so the grid shows through.
pub(super) const BAND_FILL: RGBAColor = RGBAColor(76, 175, 80, 0.2);
pub(super) const FLOOR_COLOR: RGBColor = RGBColor(46, 125, 50);
pub(super) const CAUTION_COLOR: RGBColor = RGBColor(191, 120, 0);
pub(super) const CEILING_COLOR: RGBColor = RGBColor(198, 40, 40);
pub(super) const DOSE_COLOR: RGBColor = RGBColor(55, 71, 79);
pub(super) const SPAN_COLOR: RGBColor = RGBColor(0, 121, 107);

/// Pixel scale of one rendering. Layout constants are in output pixels; the
/// PNG is drawn at [`SUPERSAMPLE`]× and averaged down, which smooths lines and
/// evens out glyph spacing (plotters places bitmap glyphs on whole pixels).
#[derive(Clone, Copy)]
pub(super) struct Scale(pub(super) i32);

impl Scale {
    pub(super) fn px(self, v: i32) -> i32 {
        v.saturating_mul(self.0)
    }
    pub(super) fn stroke(self, w: u32) -> u32 {
        w.saturating_mul(self.0.unsigned_abs())
    }
    pub(super) fn text(self, size: f64, color: RGBColor) -> TextStyle<'static> {
        text_style(size * f64::from(self.0), color)
    }
    pub(super) fn plot_left(self) -> i32 {
        self.px(PLOT_LEFT)
    }
    pub(super) fn plot_right(self) -> i32 {
        self.px(PLOT_RIGHT)
    }
}
