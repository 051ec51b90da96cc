//! The neighbour benchmark's plot: three panels over the run's seconds (the neighbour's p99,
//! the worker's stored/s, its concurrency limit and writes in progress), each mode a colour,
//! the slowdown shaded.

use std::path::Path;

use e2e_tests::plotting::{draw_legend, plot_error, register_fonts};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::figures::{mean_writes, neighbour_stats, stored_rate};
use super::{Args, ModeRun};

/// One line: its legend, colour, width and points.
type Series = (String, RGBAColor, u32, Vec<(f64, f64)>);

/// Draws the runs to `path` (PNG).
pub(crate) fn draw(path: &Path, runs: &[ModeRun], args: &Args) -> anyhow::Result<()> {
    register_fonts()?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(path, (1200, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let panels = root.split_evenly((3, 1));
    let end = args.seconds as f64;
    // The first mode drawn wider, so it shows around the second where they coincide.
    let styles = [(RED.to_rgba(), 4), (BLUE.to_rgba(), 2)];
    let seconds = || (0..args.seconds).map(|s| s as f64);

    let mut p99 = Vec::new();
    let mut rates = Vec::new();
    let mut limits = Vec::new();
    for (run, (colour, width)) in runs.iter().zip(styles) {
        let points = seconds()
            .filter_map(|s| {
                let (latencies, _) = neighbour_stats(&run.ops, s, s + 1.0);
                (latencies.count() > 0).then(|| (s + 0.5, latencies.percentile_ms(99.0)))
            })
            .collect();
        p99.push((run.label.to_owned(), colour, width, points));
        let points = seconds()
            .map(|s| (s + 0.5, stored_rate(&run.samples, s, s + 1.0)))
            .collect();
        rates.push((run.label.to_owned(), colour, width, points));
        let limit = run.samples[1..].iter().map(|s| (s.at, s.limit)).collect();
        limits.push((format!("{}: limit", run.label), colour, width, limit));
        let writes = seconds()
            .map(|s| (s + 0.5, mean_writes(&run.samples, s, s + 1.0)))
            .collect();
        let faint = colour.mix(0.45);
        let label = format!("{}: writes in progress, mean per second", run.label);
        limits.push((label, faint, 2, writes));
    }
    let shade = (args.slow_from as f64, args.slow_until as f64);
    let title = format!(
        "neighbour p99 per second ({} clients, {} ms think time); shaded: {} CPU-bound queries in PostgreSQL",
        args.clients, args.think_ms, args.hogs
    );
    panel(&panels[0], &title, "neighbour p99 (ms)", end, shade, &p99)?;
    let title = format!(
        "worker: messages stored per second ({} messages preloaded)",
        args.messages
    );
    panel(&panels[1], &title, "stored/s", end, shade, &rates)?;
    let title = format!(
        "worker: concurrency limit and writes in progress (ceiling and pool {})",
        args.concurrency
    );
    panel(&panels[2], &title, "transactions", end, shade, &limits)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One panel: `series` over `0..end` seconds, with `shade` (from, until) shaded.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    end: f64,
    shade: (f64, f64),
    series: &[Series],
) -> anyhow::Result<()> {
    let top = series
        .iter()
        .flat_map(|(_, _, _, points)| points.iter().map(|&(_, y)| y))
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max);
    // Headroom for the legend above the lines.
    let top = (top * 1.45).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the worker started")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(shade.0, 0.0), (shade.1, top)],
            BLACK.mix(0.08).filled(),
        )))
        .map_err(plot_error)?;
    for (label, colour, width, points) in series {
        let style = colour.stroke_width(*width);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    draw_legend(&mut chart, 14)?;
    Ok(())
}
