//! The text face: the embedded DejaVu Sans (`assets/fonts/DejaVuSans.ttf`,
//! Bitstream Vera licence in `assets/fonts/LICENSE-DejaVu.txt`), registered
//! with plotters once per process, so PNG output needs no system fonts.

use std::sync::OnceLock;

use plotters::prelude::*;

use super::PlotError;

pub(super) const FONT_FAMILY: &str = "sans-serif";
pub(super) static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Register the embedded font once per process. Text layout needs it for
/// both backends (the SVG backend measures text to place labels).
pub(super) fn ensure_font() -> Result<(), PlotError> {
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

pub(super) fn text_style(size: f64, color: RGBColor) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&color)
}
