//! The latency benchmark's plot: request to commit over the run (p50 and p99 per second, by
//! due time, log scale), pipeline and floor, LocalStack's stalls shaded, above the depth of
//! both queues.

use std::collections::BTreeSet;
use std::path::Path;

use e2e_tests::plotting::{draw_legend, plot_error, register_fonts};
use plotters::prelude::*;

use crate::figures::{Depth, Kind, Phase};

/// Draws the plot to `path`.
pub(crate) fn draw(
    path: &Path,
    phases: &[Phase],
    depths: &[Depth],
    stalled: &BTreeSet<u64>,
) -> anyhow::Result<()> {
    register_fonts()?;
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (top, bottom) = root.split_vertically(560);
    let last = depths.last().map_or(1.0, |depth| depth.second).ceil();
    let highest = phases
        .iter()
        .flat_map(|phase| phase.seconds.iter().map(|second| second.p99_ms))
        .fold(1.0, f64::max);

    let mut chart = ChartBuilder::on(&top)
        .caption(
            "request to commit by due second (log scale): pipeline and floor",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..last, (0.5..highest * 2.0).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run started")
        .y_desc("ms")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    // LocalStack's stalls, shaded.
    chart
        .draw_series(stalled.iter().map(|&second| {
            Rectangle::new(
                [(second as f64, 0.5), (second as f64 + 1.0, highest * 2.0)],
                BLACK.mix(0.12).filled(),
            )
        }))
        .map_err(plot_error)?
        .label("LocalStack stall (probe > 250 ms)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLACK.mix(0.12).filled()));
    let styles = [
        (Kind::Pipeline, "pipeline", BLUE, RED),
        (Kind::Floor, "floor", GREEN, MAGENTA),
    ];
    for (kind, label, p50_colour, p99_colour) in styles {
        for (i, phase) in phases.iter().filter(|phase| phase.kind == kind).enumerate() {
            for (quantile, colour) in [("p50", p50_colour), ("p99", p99_colour)] {
                let value = |s: &crate::figures::Second| {
                    if quantile == "p50" {
                        s.p50_ms
                    } else {
                        s.p99_ms
                    }
                };
                let series = chart
                    .draw_series(LineSeries::new(
                        phase.seconds.iter().map(|s| (s.second, value(s).max(0.5))),
                        colour.stroke_width(2),
                    ))
                    .map_err(plot_error)?;
                if i == 0 {
                    series
                        .label(format!("{label} {quantile}"))
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                        });
                }
            }
        }
    }
    for phase in phases {
        if let Some(first) = phase.seconds.first() {
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{} {:.0}/s", phase.name, phase.rate),
                    (first.second, highest * 1.6),
                    ("sans-serif", 14),
                )))
                .map_err(plot_error)?;
        }
    }
    draw_legend(&mut chart, 15)?;

    let deepest = depths
        .iter()
        .map(|depth| depth.pipeline.max(depth.floor))
        .max()
        .unwrap_or(0) as f64;
    let mut queues = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..last, 0.0..(deepest * 1.1).max(1.0))
        .map_err(plot_error)?;
    queues
        .configure_mesh()
        .x_desc("seconds since the run started")
        .y_desc("queue depth (visible + in flight)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    for (label, colour, depth) in [
        (
            "pipeline's queue",
            BLUE,
            (|d: &Depth| d.pipeline) as fn(&Depth) -> u64,
        ),
        ("floor's queue", GREEN, |d: &Depth| d.floor),
    ] {
        queues
            .draw_series(LineSeries::new(
                depths.iter().map(|d| (d.second, depth(d) as f64)),
                colour.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    draw_legend(&mut queues, 15)?;
    root.present().map_err(plot_error)?;
    Ok(())
}
