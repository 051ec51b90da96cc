//! What every benchmark plot shares: the bundled font, the legend's look, and plotters'
//! errors as `anyhow` errors.

use plotters::chart::{ChartContext, SeriesLabelPosition};
use plotters::coord::CoordTranslate;
use plotters::prelude::*;

/// Registers the bundled DejaVu Sans as `sans-serif` (text needs a font; the bundled one keeps
/// the plots independent of the system's fonts).
pub fn register_fonts() -> anyhow::Result<()> {
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font("sans-serif", style, dejavu::sans::regular())
            .map_err(|_| anyhow::anyhow!("registering the bundled font"))?;
    }
    Ok(())
}

/// Draws the legend of `chart`'s labelled series in its upper right corner, on a light box,
/// in text of `size` points.
pub fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    size: u32,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", size))
        .draw()
        .map_err(plot_error)
}

/// A plotters error as an `anyhow` error.
pub fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {error:?}")
}
