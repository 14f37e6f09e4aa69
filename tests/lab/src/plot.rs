//! The matrix as SVG pictures (plotters, SVG backend): for one [`Link`] and each added RTT,
//! pooled success rate and pooled p99 completion time against packet loss, one line per
//! client, with a bar from the lowest to the highest run when there were several runs.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::contender::{Contender, Link};
use crate::matrix::CellSummary;

/// Draws the loss × latency cells of `link` in `summaries` (rows without stream faults) to
/// `path`.
///
/// # Errors
///
/// No grid cell of `link` to draw, or the drawing error, as text.
pub fn matrix_svg(
    summaries: &[CellSummary],
    link: Link,
    title: &str,
    path: &Path,
) -> Result<(), String> {
    let grid: Vec<&CellSummary> = summaries
        .iter()
        .filter(|r| r.link == link && r.scenario.is_grid())
        .collect();
    let mut rtts: Vec<Duration> = grid.iter().map(|r| r.scenario.rtt).collect();
    rtts.sort();
    rtts.dedup();
    if rtts.is_empty() {
        return Err(format!("no {link} loss × latency cells to draw"));
    }
    let max_loss = grid
        .iter()
        .map(|r| f64::from(r.scenario.loss_percent))
        .fold(1.0, f64::max);
    let max_p99 = grid
        .iter()
        .filter_map(|r| r.p99_range().map(|(_, hi)| hi).or(r.quantile(0.99)))
        .map(|d| d.as_secs_f64())
        .fold(0.1, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (420 * rtts.len() as u32, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((2, rtts.len()));
    for (col, rtt) in rtts.iter().enumerate() {
        let cells: Vec<&CellSummary> = grid
            .iter()
            .copied()
            .filter(|r| r.scenario.rtt == *rtt)
            .collect();
        for (row, (what, y_max)) in [("success %", 100.0), ("p99 completion (s)", max_p99)]
            .into_iter()
            .enumerate()
        {
            let area = &panels[row * rtts.len() + col];
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{link}, +{} ms RTT: {what}", rtt.as_millis()),
                    ("sans-serif", 14),
                )
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(44)
                .build_cartesian_2d(-0.5..max_loss + 0.5, 0.0..y_max)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("loss % (each direction)")
                .y_desc(what)
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, contender) in Contender::ALL.iter().enumerate() {
                if !cells.iter().any(|r| r.contender == *contender) {
                    continue;
                }
                let color = Palette99::pick(i).to_rgba();
                // Points of the contenders sit side by side so their bars do not hide
                // each other.
                let offset = (i as f64 - 1.0) * 0.3;
                let mut points: Vec<(f64, f64, f64, f64)> = cells
                    .iter()
                    .filter(|r| r.contender == *contender)
                    .filter_map(|r| {
                        let x = f64::from(r.scenario.loss_percent) + offset;
                        if row == 0 {
                            let (lo, hi) = r.success_range();
                            Some((x, r.success_percent(), lo, hi))
                        } else {
                            let p = r.quantile(0.99)?.as_secs_f64();
                            let (lo, hi) = r
                                .p99_range()
                                .map_or((p, p), |(a, b)| (a.as_secs_f64(), b.as_secs_f64()));
                            Some((x, p, lo, hi))
                        }
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(
                        points.iter().map(|p| (p.0, p.1)),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(contender.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(
                        points
                            .iter()
                            .map(|p| Circle::new((p.0, p.1), 3, color.filled())),
                    )
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(points.iter().filter(|p| p.3 > p.2).map(|p| {
                        ErrorBar::new_vertical(p.0, p.2, p.1, p.3, color.stroke_width(1), 6)
                    }))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .position(if row == 0 {
                    SeriesLabelPosition::LowerLeft
                } else {
                    SeriesLabelPosition::UpperLeft
                })
                .draw()
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}
