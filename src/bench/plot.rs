//! The roofline chart of `dsnpu bench --plot`: a PNG, log-log, arithmetic intensity (FLOP per GM byte)
//! across and throughput (FLOP/s) up, one point per case, with the ceilings of one 910B2 die
//! (`dsnpu_kernels::roofline::ASCEND_910B2`): HBM bandwidth (blue diagonal), the cube's peak (red) and
//! the vector units' peak (green, f32 element operations counted one FLOP each). Grey lines mark every
//! decade: x from 10^-3 to 10^4 FLOP/B, y from 10^8 to 10^15 FLOP/s.
//!
//! The chart has no text: plotters draws text only through system fonts or a font file, and this
//! must build and run on a machine with neither. The decade grid and the fixed ranges above stand in for
//! axis labels; the JSON report (`--json`) holds each point's numbers.
//!
//! What a point is: on the simulator, the launch's counted work (2 FLOP per cube multiply-add plus its
//! vector element operations) over its counted GM bytes, against that work over the modelled time; on
//! a device (no counters), the operator's necessary FLOPs over its minimal bytes, against those FLOPs
//! over the median wall time. Points with no work or no bytes cannot stand on a log axis and are
//! left out (listed by [`points`]' caller).

use std::path::Path;

use plotters::prelude::*;

use super::measure::Figures;
use dsnpu_kernels::roofline::ASCEND_910B2;

/// The chart's extent (see the module docs).
pub const X_RANGE: (f64, f64) = (1e-3, 1e4);
pub const Y_RANGE: (f64, f64) = (1e8, 1e15);
const WIDTH: u32 = 960;
const HEIGHT: u32 = 720;

/// Why the chart was not written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: drawing the roofline chart failed: {source}")]
pub struct PlotError {
    pub path: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// One point of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub kernel: String,
    /// FLOP per GM byte.
    pub intensity: f64,
    /// FLOP/s, attained or modelled.
    pub flops_per_s: f64,
}

/// The chart's point of each case, or `Err(kernel)` for a case that has none (no work or no bytes).
pub fn points(figures: &[Figures]) -> Vec<Result<Point, String>> {
    figures
        .iter()
        .map(|f| {
            let (kernel, flops, bytes, us) = match f {
                Figures::Modelled(c) => (
                    &c.kernel,
                    2.0 * c.cube_macs as f64 + c.vector_ops as f64,
                    (c.gm_read_bytes + c.gm_write_bytes) as f64,
                    c.model_us,
                ),
                Figures::Measured(t) => (
                    &t.kernel,
                    2.0 * t.minimal_macs as f64,
                    t.minimal_bytes as f64,
                    t.wall_us,
                ),
            };
            if flops > 0.0 && bytes > 0.0 && us > 0.0 {
                Ok(Point {
                    kernel: kernel.clone(),
                    intensity: flops / bytes,
                    flops_per_s: flops / (us * 1e-6),
                })
            } else {
                Err(kernel.clone())
            }
        })
        .collect()
}

/// Draws `points` against the ceilings into the PNG at `path`.
pub fn draw(path: &Path, points: &[Point]) -> Result<(), PlotError> {
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| PlotError {
        path: path.display().to_string(),
        source: e,
    };
    draw_chart(path, points).map_err(fail)
}

fn draw_chart(
    path: &Path,
    points: &[Point],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = X_RANGE;
    let (y0, y1) = Y_RANGE;
    let mut chart = ChartBuilder::on(&root)
        .margin(24)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    let grey = RGBColor(220, 220, 220);
    let decades = |lo: f64, hi: f64| {
        let (a, b) = (lo.log10().round() as i32, hi.log10().round() as i32);
        (a..=b).map(|p| 10f64.powi(p)).collect::<Vec<_>>()
    };
    for x in decades(x0, x1) {
        chart.draw_series(LineSeries::new([(x, y0), (x, y1)], &grey))?;
    }
    for y in decades(y0, y1) {
        chart.draw_series(LineSeries::new([(x0, y), (x1, y)], &grey))?;
    }
    // The frame.
    chart.draw_series(LineSeries::new(
        [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)],
        &BLACK,
    ))?;

    let m = ASCEND_910B2;
    let cube = 2.0 * m.cube_macs_per_s;
    let hbm = |x: f64| (m.hbm_bytes_per_s * x).min(cube).clamp(y0, y1);
    let xs: Vec<f64> = (0..=140)
        .map(|i| x0 * (x1 / x0).powf(i as f64 / 140.0))
        .collect();
    let thick = |c: RGBColor| ShapeStyle::from(&c).stroke_width(3);
    chart.draw_series(LineSeries::new(
        xs.iter().map(|&x| (x, hbm(x))),
        thick(RGBColor(30, 90, 200)),
    ))?;
    chart.draw_series(LineSeries::new(
        [(x0, cube), (x1, cube)],
        thick(RGBColor(200, 40, 40)),
    ))?;
    let vector = m.vector_elems_per_s;
    chart.draw_series(LineSeries::new(
        [(x0, vector), (x1, vector)],
        ShapeStyle::from(&RGBColor(40, 160, 60)).stroke_width(2),
    ))?;

    let inside =
        |p: &&Point| (x0..=x1).contains(&p.intensity) && (y0..=y1).contains(&p.flops_per_s);
    chart.draw_series(points.iter().filter(inside).map(|p| {
        Circle::new(
            (p.intensity, p.flops_per_s),
            6,
            ShapeStyle::from(&RGBColor(240, 130, 0)).filled(),
        )
    }))?;
    chart.draw_series(
        points
            .iter()
            .filter(inside)
            .map(|p| Circle::new((p.intensity, p.flops_per_s), 6, BLACK)),
    )?;
    root.present()?;
    Ok(())
}
