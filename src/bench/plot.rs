//! The roofline chart of `dsnpu bench --plot`: a PNG, log-log, arithmetic intensity (FLOP per GM byte)
//! across and throughput (FLOP/s) up, one point per case, with the ceilings of one 910B2 die
//! (`dsnpu_kernels::roofline::ASCEND_910B2`): HBM bandwidth (blue diagonal), the cube's peak (red) and
//! the vector units' peak (green, f32 element operations counted one FLOP each). Grey lines mark every
//! decade: x from 10^-3 to 10^4 FLOP/B, y from 10^8 to 10^15 FLOP/s.
//!
//! Text (axis titles, decade tick labels, each ceiling's name and value, a number beside each point
//! and a legend of the numbered kernels right of the chart) is drawn with the 5×9 bitmap font of
//! `super::glyphs`, cell by cell at 2×2 pixels: plotters draws text only through system fonts or a
//! font file, and this must build and run on a machine with neither. The JSON report (`--json`) holds
//! each point's numbers.
//!
//! What a point is: on the simulator, the launch's counted work (2 FLOP per cube multiply-add plus its
//! vector element operations) over its counted GM bytes, against that work over the modelled time; on
//! a device (no counters), the operator's necessary FLOPs over its minimal bytes, against those FLOPs
//! over the median wall time. Points with no work or no bytes cannot stand on a log axis and are
//! left out (listed by [`points`]' caller).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::glyphs::{glyph, lit, GLYPH_H, GLYPH_W};
use super::measure::Figures;
use dsnpu_kernels::roofline::ASCEND_910B2;

/// The chart's extent (see the module docs).
pub const X_RANGE: (f64, f64) = (1e-3, 1e4);
pub const Y_RANGE: (f64, f64) = (1e8, 1e15);
const WIDTH: u32 = 1440;
const HEIGHT: u32 = 760;
// Room for the title (top), tick labels and the x title (bottom), tick labels and the y title (left),
// and the legend (right).
const MARGIN_TOP: i32 = 44;
const MARGIN_BOTTOM: i32 = 84;
const MARGIN_LEFT: i32 = 118;
const MARGIN_RIGHT: i32 = 500;

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

/// Draws `points` against the ceilings into the PNG at `path`; `modelled` says whether their
/// throughput is modelled (simulator) or attained (a device), which the y axis's title states.
pub fn draw(path: &Path, points: &[Point], modelled: bool) -> Result<(), PlotError> {
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| PlotError {
        path: path.display().to_string(),
        source: e,
    };
    // Opened here first so that an unwritable path fails with the OS's words; plotters reports it
    // only as a debug dump of its encoder's error.
    std::fs::File::create(path).map_err(|e| fail(e.into()))?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw_chart(&root, points, modelled).map_err(fail)?;
    root.present().map_err(|e| fail(e.into()))
}

/// One piece of text on the chart: its top-left pixel (for `vertical` text, read bottom to top, its
/// bottom-left pixel) and colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub text: String,
    pub x: i32,
    pub y: i32,
    pub vertical: bool,
    pub color: RGBColor,
}

/// Pixels per font cell.
pub const TEXT_SCALE: i32 = 2;
/// Horizontal advance of one character, pixels (a glyph and one blank cell).
pub const ADVANCE: i32 = (GLYPH_W as i32 + 1) * TEXT_SCALE;
/// Height of a line of text, pixels.
pub const TEXT_H: i32 = GLYPH_H as i32 * TEXT_SCALE;
const TEXT: RGBColor = RGBColor(20, 20, 20);
const HBM_COLOR: RGBColor = RGBColor(30, 90, 200);
const CUBE_COLOR: RGBColor = RGBColor(200, 40, 40);
const VECTOR_COLOR: RGBColor = RGBColor(40, 160, 60);
const POINT_COLOR: RGBColor = RGBColor(240, 130, 0);

/// Width of `text` in pixels.
pub fn text_width(text: &str) -> i32 {
    text.chars().count() as i32 * ADVANCE - TEXT_SCALE
}

/// The pixels `label` lights, in drawing-area coordinates.
pub fn label_pixels(label: &Label) -> Vec<(i32, i32)> {
    let mut px = Vec::new();
    for (i, c) in label.text.chars().enumerate() {
        let cell = |col: usize, row: usize| match glyph(c) {
            Some(rows) => lit(rows, col, row),
            // No glyph: a hollow box, so a missing character shows.
            None => col == 0 || row == 0 || col == GLYPH_W - 1 || row == GLYPH_H - 1,
        };
        for row in 0..GLYPH_H {
            for col in 0..GLYPH_W {
                if !cell(col, row) {
                    continue;
                }
                // Along the text and across it, in pixels from the anchor.
                let along = i as i32 * ADVANCE + col as i32 * TEXT_SCALE;
                let across = row as i32 * TEXT_SCALE;
                for dy in 0..TEXT_SCALE {
                    for dx in 0..TEXT_SCALE {
                        px.push(if label.vertical {
                            (label.x + across + dy, label.y - along - dx)
                        } else {
                            (label.x + along + dx, label.y + across + dy)
                        });
                    }
                }
            }
        }
    }
    px
}

/// `v` as a short decimal: 0.001, 0.1, 10, 1000.
fn decimal(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let digits = (-v.log10()).round() as usize;
        format!("{v:.digits$}")
    }
}

/// Draws the chart on `root` and returns the text it drew (for tests).
pub fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[Point],
    modelled: bool,
) -> Result<Vec<Label>, Box<dyn std::error::Error + Send + Sync>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (x0, x1) = X_RANGE;
    let (y0, y1) = Y_RANGE;
    let mut chart = ChartBuilder::on(root)
        .margin_top(MARGIN_TOP)
        .margin_bottom(MARGIN_BOTTOM)
        .margin_left(MARGIN_LEFT)
        .margin_right(MARGIN_RIGHT)
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
        thick(HBM_COLOR),
    ))?;
    chart.draw_series(LineSeries::new([(x0, cube), (x1, cube)], thick(CUBE_COLOR)))?;
    let vector = m.vector_elems_per_s;
    chart.draw_series(LineSeries::new(
        [(x0, vector), (x1, vector)],
        ShapeStyle::from(&VECTOR_COLOR).stroke_width(2),
    ))?;

    let inside = |p: &Point| (x0..=x1).contains(&p.intensity) && (y0..=y1).contains(&p.flops_per_s);
    chart.draw_series(points.iter().filter(|p| inside(p)).map(|p| {
        Circle::new(
            (p.intensity, p.flops_per_s),
            6,
            ShapeStyle::from(&POINT_COLOR).filled(),
        )
    }))?;
    chart.draw_series(
        points
            .iter()
            .filter(|p| inside(p))
            .map(|p| Circle::new((p.intensity, p.flops_per_s), 6, BLACK)),
    )?;

    // The text, placed from the chart's pixel coordinates.
    let at = |x: f64, y: f64| chart.backend_coord(&(x, y));
    let (left, top) = at(x0, y1);
    let (right, bottom) = at(x1, y0);
    let mut labels = Vec::new();
    let mut text = |text: String, x: i32, y: i32, vertical: bool, color: RGBColor| {
        labels.push(Label {
            text,
            x,
            y,
            vertical,
            color,
        })
    };
    let timing = if modelled { "modelled" } else { "attained" };
    text(
        format!("roofline of one 910B2 die, {timing} throughput"),
        left,
        (top - TEXT_H) / 2,
        false,
        TEXT,
    );
    for x in decades(x0, x1) {
        let s = decimal(x);
        let (px, _) = at(x, y0);
        text(s.clone(), px - text_width(&s) / 2, bottom + 8, false, TEXT);
    }
    for y in decades(y0, y1) {
        let s = decimal(y / 1e12);
        let (_, py) = at(x0, y);
        text(
            s.clone(),
            left - 8 - text_width(&s),
            py - TEXT_H / 2,
            false,
            TEXT,
        );
    }
    let x_title = "arithmetic intensity (FLOP/byte)".to_string();
    text(
        x_title.clone(),
        (left + right - text_width(&x_title)) / 2,
        bottom + 8 + TEXT_H + 14,
        false,
        TEXT,
    );
    let y_title = format!("TFLOP/s, {timing}");
    text(
        y_title.clone(),
        12,
        (top + bottom + text_width(&y_title)) / 2,
        true,
        TEXT,
    );
    // Ceiling names: HBM below its diagonal (which rises to the right, away from the text), the
    // horizontal ceilings above their lines at the right end.
    let (hx, hy) = at(2e-2, hbm(2e-2));
    text(
        format!("HBM {:.1} TB/s", m.hbm_bytes_per_s / 1e12),
        hx + 10,
        hy + 12,
        false,
        HBM_COLOR,
    );
    for (value, name, color) in [(cube, "cube", CUBE_COLOR), (vector, "vector", VECTOR_COLOR)] {
        let s = format!("{name} {} TFLOP/s", tflops(value));
        let (_, py) = at(x1, value);
        text(
            s.clone(),
            right - 8 - text_width(&s),
            py - TEXT_H - 6,
            false,
            color,
        );
    }
    // A number beside each point and the legend of numbers.
    // A number's place: the first of a few spots around its marker that no earlier number covers.
    let legend_x = right + 28;
    text("points".into(), legend_x, top, false, TEXT);
    let mut taken: Vec<(i32, i32, i32, i32)> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let n = (i + 1).to_string();
        if inside(p) {
            let (px, py) = at(p.intensity, p.flops_per_s);
            let w = text_width(&n);
            let spots = [
                (px + 9, py - TEXT_H + 2),
                (px + 9, py + 2),
                (px - 9 - w, py - TEXT_H + 2),
                (px - 9 - w, py + 2),
                (px + 9 + w + ADVANCE, py - TEXT_H + 2),
                (px + 9 + w + ADVANCE, py + 2),
            ];
            let free = |&(x, y): &(i32, i32)| {
                taken
                    .iter()
                    .all(|&(a, b, c, d)| x + w < a || x > c || y + TEXT_H < b || y > d)
            };
            let (x, y) = spots.iter().copied().find(free).unwrap_or(spots[0]);
            taken.push((x, y, x + w, y + TEXT_H));
            text(n.clone(), x, y, false, TEXT);
        }
        let off = if inside(p) { "" } else { " (off chart)" };
        text(
            format!("{n:>2} {}{off}", p.kernel),
            legend_x,
            top + (i as i32 + 2) * (TEXT_H + 6),
            false,
            TEXT,
        );
    }
    for label in &labels {
        let color = label.color;
        for (x, y) in label_pixels(label) {
            root.draw_pixel((x, y), &color)?;
        }
    }
    Ok(labels)
}

/// A throughput in TFLOP/s, to three significant figures at most.
fn tflops(flops_per_s: f64) -> String {
    let t = flops_per_s / 1e12;
    if t >= 100.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(points: &[Point], modelled: bool) -> (Vec<u8>, Vec<Label>) {
        let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
        let labels = {
            let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
            let labels = draw_chart(&root, points, modelled).expect("draw");
            root.present().expect("present");
            labels
        };
        (buf, labels)
    }

    fn pixel(buf: &[u8], x: i32, y: i32) -> (u8, u8, u8) {
        let i = (y as usize * WIDTH as usize + x as usize) * 3;
        (buf[i], buf[i + 1], buf[i + 2])
    }

    fn label<'a>(labels: &'a [Label], text: &str) -> &'a Label {
        labels
            .iter()
            .find(|l| l.text == text)
            .unwrap_or_else(|| panic!("no label {text:?} in {labels:?}"))
    }

    fn example() -> Vec<Point> {
        vec![
            Point {
                kernel: "mla_prefill_bf16".into(),
                intensity: 50.0,
                flops_per_s: 2e13,
            },
            Point {
                kernel: "rms_norm_bf16".into(),
                intensity: 0.5,
                flops_per_s: 1e11,
            },
            Point {
                kernel: "off_the_chart".into(),
                intensity: 1e6,
                flops_per_s: 1e12,
            },
        ]
    }

    #[test]
    fn the_text_is_drawn_where_the_layout_puts_it() {
        let (buf, labels) = render(&example(), true);
        // Every lit cell of every label is the label's colour in the image, inside the image, and
        // every character has a glyph (no box placeholders).
        for l in &labels {
            assert!(l.text.chars().all(|c| glyph(c).is_some()), "{:?}", l.text);
            let RGBColor(r, g, b) = l.color;
            for (x, y) in label_pixels(l) {
                assert!((0..WIDTH as i32).contains(&x) && (0..HEIGHT as i32).contains(&y));
                assert_eq!(pixel(&buf, x, y), (r, g, b), "{:?} at ({x}, {y})", l.text);
            }
        }
        // The axis titles: x below the plot, centred under it; y left of it, vertical.
        let x_title = label(&labels, "arithmetic intensity (FLOP/byte)");
        let y_title = label(&labels, "TFLOP/s, modelled");
        let ticks = label(&labels, "0.001");
        assert!(x_title.y > ticks.y + TEXT_H && x_title.y + TEXT_H < HEIGHT as i32);
        let centre = x_title.x + text_width(&x_title.text) / 2;
        let plot_centre = (MARGIN_LEFT + WIDTH as i32 - MARGIN_RIGHT) / 2;
        assert!(
            (centre - plot_centre).abs() < 40,
            "{centre} vs {plot_centre}"
        );
        assert!(y_title.vertical && y_title.x + TEXT_H < MARGIN_LEFT);
        // Between the x title's letters, the background shows: it is text, not a filled bar.
        let (x, y) = (x_title.x + ADVANCE - 1, x_title.y + TEXT_H / 2);
        assert_eq!(pixel(&buf, x, y), (255, 255, 255));
        // The ceilings with the numbers the roofline model uses.
        label(&labels, "HBM 1.6 TB/s");
        label(&labels, "cube 354 TFLOP/s");
        label(&labels, "vector 5.5 TFLOP/s");
        // Each point numbered in the legend; the one outside the ranges is said to be.
        label(&labels, " 1 mla_prefill_bf16");
        label(&labels, " 3 off_the_chart (off chart)");
        // Point 2 is numbered beside its marker (no tick reads "2"); point 3 is not drawn.
        let two = label(&labels, "2");
        let (px, py) = (two.x - 9, two.y + TEXT_H - 2);
        assert_eq!(pixel(&buf, px, py), (240, 130, 0), "point 2's marker");
        assert!(labels.iter().all(|l| l.text != "3"));
    }

    #[test]
    fn the_y_title_says_whether_throughput_was_measured() {
        let (_, labels) = render(&example(), false);
        label(&labels, "TFLOP/s, attained");
        assert!(labels.iter().all(|l| !l.text.contains("modelled")));
    }
}
