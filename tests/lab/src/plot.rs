//! The matrix as an SVG picture (plotters, SVG backend): for each added RTT, success rate and
//! p99 completion time against packet loss, one line per client.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::contender::Contender;
use crate::matrix::CellResult;

/// Draws the grid part of `results` (rows without stream faults) to `path`.
///
/// # Errors
///
/// The drawing error, as text.
pub fn matrix_svg(results: &[CellResult], title: &str, path: &Path) -> Result<(), String> {
    let grid: Vec<&CellResult> = results.iter().filter(|r| r.scenario.is_grid()).collect();
    let mut rtts: Vec<Duration> = grid.iter().map(|r| r.scenario.rtt).collect();
    rtts.sort();
    rtts.dedup();
    if rtts.is_empty() {
        return Err("no loss × latency cells to draw".into());
    }
    let max_loss = grid
        .iter()
        .map(|r| f64::from(r.scenario.loss_percent))
        .fold(1.0, f64::max);
    let max_p99 = grid
        .iter()
        .filter_map(|r| r.quantile(0.99))
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
        let cells: Vec<&&CellResult> = grid.iter().filter(|r| r.scenario.rtt == *rtt).collect();
        for (row, (what, y_max)) in [("success %", 100.0), ("p99 completion (s)", max_p99)]
            .into_iter()
            .enumerate()
        {
            let area = &panels[row * rtts.len() + col];
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("+{} ms RTT: {what}", rtt.as_millis()),
                    ("sans-serif", 14),
                )
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(44)
                .build_cartesian_2d(0.0..max_loss, 0.0..y_max)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("loss % (each direction)")
                .y_desc(what)
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, contender) in Contender::ALL.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let mut points: Vec<(f64, f64)> = cells
                    .iter()
                    .filter(|r| r.contender == *contender)
                    .filter_map(|r| {
                        let y = if row == 0 {
                            Some(r.success_percent())
                        } else {
                            r.quantile(0.99).map(|d| d.as_secs_f64())
                        };
                        y.map(|y| (f64::from(r.scenario.loss_percent), y))
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(contender.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
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
