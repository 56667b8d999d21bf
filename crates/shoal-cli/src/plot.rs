//! `shoal bench --plot`: a PNG chart of QPS (log scale) against recall@k, one series
//! per concurrency level and one point per `ef`, as ann-benchmarks draws them (up and
//! to the right is better).
//!
//! It must never need a system library: plotters runs with its bitmap backend only
//! and without any font feature (no fontconfig or freetype). Plotters panics when
//! asked to draw text without a font backend, so nothing here calls its text API
//! (captions, mesh labels, legends): every label is drawn pixel by pixel from
//! font8x8's glyphs by [`text`], and the PNG is encoded by the pure-Rust `png` crate.
//! No input — empty, zero, infinite or NaN figures — may panic it: points that cannot
//! be placed on a log axis are left out.

use std::path::Path;

use anyhow::Context;
use font8x8::UnicodeFonts;
use plotters::prelude::*;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 640;
const LEFT: u32 = 90;
const RIGHT: u32 = 230;
const TOP: u32 = 50;
const BOTTOM: u32 = 60;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
const GRID: RGBColor = RGBColor(225, 225, 225);
const INK: RGBColor = RGBColor(30, 30, 30);

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// `(recall, qps)` points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` under `title` and writes the PNG to `path`.
pub fn write_png(path: &Path, title: &str, x_label: &str, series: &[Series]) -> anyhow::Result<()> {
    let png = render(title, x_label, series)?;
    std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
}

fn plottable(p: &(f64, f64)) -> bool {
    p.0.is_finite() && p.1.is_finite() && p.1 > 0.0
}

/// The chart as PNG bytes.
pub fn render(title: &str, x_label: &str, series: &[Series]) -> anyhow::Result<Vec<u8>> {
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut rgb, title, x_label, series)
        .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(&rgb))
        .context("encoding the PNG")?;
    Ok(out)
}

/// Axis ranges: x (recall) padded and clamped to [0, 1]-ish, y (QPS) out to whole
/// 1-2-5 steps.
fn ranges(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let pts = || {
        series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|p| plottable(p))
    };
    let (mut x0, mut x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 1.0, 10.0);
    }
    let pad = ((x1 - x0) * 0.08).max(0.005);
    x0 = (x0 - pad).max(0.0);
    x1 = (x1 + pad).min(1.0 + pad);
    if x1 <= x0 {
        x1 = x0 + 0.01;
    }
    y0 = step_below(y0 / 1.15);
    y1 = step_above(y1 * 1.15);
    if y1 <= y0 {
        y1 = y0 * 10.0;
    }
    ((x0, x1), (y0, y1))
}

/// The 1-2-5 step at or below `v` (v > 0).
fn step_below(v: f64) -> f64 {
    let d = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * d)
        .find(|s| *s <= v)
        .unwrap_or(d)
}

/// The 1-2-5 step at or above `v` (v > 0).
fn step_above(v: f64) -> f64 {
    let d = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * d)
        .find(|s| *s >= v)
        .unwrap_or(10.0 * d)
}

/// 1-2-5 ticks of a log axis within `[lo, hi]`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut d = 10f64.powf(lo.log10().floor());
    for _ in 0..40 {
        for m in [1.0, 2.0, 5.0] {
            let t = m * d;
            if t >= lo * 0.999 && t <= hi * 1.001 {
                out.push(t);
            }
        }
        d *= 10.0;
        if d > hi {
            break;
        }
    }
    out
}

/// Evenly stepped ticks of a linear axis within `[lo, hi]`, at most about ten, and
/// the decimals their labels need.
fn linear_ticks(lo: f64, hi: f64) -> (Vec<f64>, usize) {
    let steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
    let step = steps
        .into_iter()
        .find(|s| (hi - lo) / s <= 10.0)
        .unwrap_or(1.0);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (
        (first..=last).take(20).map(|i| i as f64 * step).collect(),
        decimals,
    )
}

fn qps_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Draws `s` with its top-left corner at `(x, y)`, each glyph pixel `scale` pixels
/// wide; characters font8x8 lacks are left blank.
fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &str,
    (x, y): (i32, i32),
    scale: i32,
    color: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, ch) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        let gx = x + i as i32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                let (px, py) = (gx + col * scale, y + row as i32 * scale);
                for dy in 0..scale {
                    for dx in 0..scale {
                        area.draw_pixel((px + dx, py + dy), color)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn text_width(s: &str, scale: i32) -> i32 {
    s.chars().count() as i32 * 8 * scale
}

fn draw(
    rgb: &mut [u8],
    title: &str,
    x_label: &str,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let ((x0, x1), (y0, y1)) = ranges(series);
    let mut chart = ChartBuilder::on(&root)
        .margin_left(LEFT)
        .margin_right(RIGHT)
        .margin_top(TOP)
        .margin_bottom(BOTTOM)
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())?;

    // Grid and tick labels.
    let (xticks, decimals) = linear_ticks(x0, x1);
    for &x in &xticks {
        chart.draw_series(LineSeries::new([(x, y0), (x, y1)], GRID.stroke_width(1)))?;
        let (px, py) = chart.backend_coord(&(x, y0));
        let label = format!("{x:.decimals$}");
        text(
            &root,
            &label,
            (px - text_width(&label, 1) / 2, py + 8),
            1,
            &INK,
        )?;
    }
    for &y in &log_ticks(y0, y1) {
        chart.draw_series(LineSeries::new([(x0, y), (x1, y)], GRID.stroke_width(1)))?;
        let (px, py) = chart.backend_coord(&(x0, y));
        let label = qps_label(y);
        text(
            &root,
            &label,
            (px - 8 - text_width(&label, 1), py - 4),
            1,
            &INK,
        )?;
    }
    let (left, top) = chart.backend_coord(&(x0, y1));
    let (right, bottom) = chart.backend_coord(&(x1, y0));
    root.draw(&Rectangle::new(
        [(left, top), (right, bottom)],
        INK.stroke_width(1),
    ))?;

    // Titles.
    let scale = if text_width(title, 2) <= (WIDTH - LEFT) as i32 - 10 {
        2
    } else {
        1
    };
    text(&root, title, (LEFT as i32, 14), scale, &INK)?;
    text(&root, "QPS (log)", (8, top - 18), 1, &INK)?;
    text(
        &root,
        x_label,
        ((left + right) / 2 - text_width(x_label, 1) / 2, bottom + 30),
        1,
        &INK,
    )?;

    // Series and legend.
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(plottable).collect();
        chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        let ly = top + 10 + i as i32 * 20;
        let lx = right + 20;
        root.draw(&PathElement::new(
            [(lx, ly + 4), (lx + 24, ly + 4)],
            color.stroke_width(2),
        ))?;
        root.draw(&Circle::new((lx + 12, ly + 4), 4, color.filled()))?;
        text(&root, &s.label, (lx + 32, ly), 1, &INK)?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut reader = png::Decoder::new(png_bytes).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn a_chart_is_a_png_with_every_series_drawn() {
        let series = vec![
            Series {
                label: "1 client".into(),
                points: vec![(0.80, 1500.0), (0.90, 1100.0), (0.95, 780.0)],
            },
            Series {
                label: "16 clients".into(),
                points: vec![(0.80, 3300.0), (0.90, 2700.0), (0.95, 2000.0)],
            },
        ];
        let (info, pixels) = decode(&render("clustered 100k", "recall@10", &series).unwrap());
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        // Both series' colours appear (lines, markers, legend).
        for c in &PALETTE[..2] {
            let n = pixels.chunks(3).filter(|p| p == &[c.0, c.1, c.2]).count();
            assert!(n > 100, "colour {c:?}: {n} pixels");
        }
        // And text was drawn in ink.
        assert!(pixels.chunks(3).any(|p| p == [INK.0, INK.1, INK.2]));
    }

    #[test]
    fn degenerate_figures_still_make_a_chart() {
        for points in [
            vec![],
            vec![(1.0, 0.0)],
            vec![(f64::NAN, 5.0), (0.5, f64::INFINITY)],
            vec![(1.0, 1234.0)],
            vec![(0.0, 1e-9), (1.0, 1e12)],
        ] {
            let s = [Series {
                label: "x".into(),
                points,
            }];
            let (info, _) = decode(&render("t", "recall@10", &s).unwrap());
            assert_eq!(info.width, WIDTH);
        }
        assert!(render("no series", "recall@10", &[]).is_ok());
    }

    #[test]
    fn ticks_cover_the_ranges() {
        assert_eq!(
            log_ticks(500.0, 20_000.0),
            vec![500.0, 1e3, 2e3, 5e3, 1e4, 2e4]
        );
        let (t, d) = linear_ticks(0.78, 1.0);
        assert_eq!(d, 2);
        assert_eq!(t.first().map(|x| (x * 100.0).round()), Some(80.0));
        assert_eq!(qps_label(2500.0), "2.5k");
        assert_eq!(qps_label(20_000.0), "20k");
        assert_eq!((step_below(730.0), step_above(730.0)), (500.0, 1000.0));
    }
}
