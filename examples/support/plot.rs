//! Pictures drawn by `plotters`: loss curves (training loss per step and validation loss at each
//! evaluation) as SVG and PNG, and the study's heat maps, line charts and scatter plots as PNG. Text uses a
//! font shipped in `assets/` (DejaVu Sans, cut to ASCII), so no system font is needed.

// Each example includes this file and uses the charts it needs.
#![allow(dead_code)]

use image::ImageEncoder;
use lowrank::nn::write_atomic;
use plotters::prelude::*;
use std::path::Path;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-ascii.ttf");

const SIZE: (u32, u32) = (800, 480);

/// Writes `<stem>.svg` and `<stem>.png` (each atomically): `train` (one loss per step) and `val` ((step,
/// loss) pairs).
pub fn loss_curves(
    stem: &Path,
    title: &str,
    train: &[f64],
    val: &[(usize, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font could not be read")?;
    let mut svg = String::new();
    draw(
        &SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(),
        title,
        train,
        val,
    )?;
    write_atomic(&stem.with_extension("svg"), svg.as_bytes())?;
    write_png(&stem.with_extension("png"), |area| {
        draw(area, title, train, val)
    })
}

/// The file stem of a run's loss curves, inside its folder.
pub const LOSS_CURVE: &str = "loss_curve";

/// `loss_curves` into `dir/loss_curve.{svg,png}` from inside a folder save (`save_dir_atomic`), with the
/// error as the save's own type.
pub fn loss_curves_into(
    dir: &Path,
    title: &str,
    train: &[f64],
    val: &[(usize, f64)],
) -> Result<(), lowrank::nn::NnError> {
    let stem = dir.join(LOSS_CURVE);
    loss_curves(&stem, title, train, val)
        .map_err(|e| lowrank::nn::NnError::io(&stem, std::io::Error::other(e.to_string())))
}

type Bitmap<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws with `draw` into a bitmap and writes it to `path` as PNG, atomically.
fn write_png(
    path: &Path,
    draw: impl FnOnce(&Bitmap) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), Box<dyn std::error::Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font could not be read")?;
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(&BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area())?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        &rgb,
        SIZE.0,
        SIZE.1,
        image::ColorType::Rgb8,
    )?;
    write_atomic(path, &png)?;
    Ok(())
}

/// The heat maps' colour for a value in [0, 1]: white at 0 to dark blue at 1, the same for every panel
/// so that panels compare.
fn heat_color(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let shade = |full: f64| (255.0 - v * (255.0 - full)).round() as u8;
    RGBColor(shade(8.0), shade(48.0), shade(107.0))
}

/// The darkest colour of the heat maps (value 1).
pub const HEAT_MAX: RGBColor = RGBColor(8, 48, 107);

/// Pixels at the right of a heat map for its colour bar and the bar's labels.
pub const COLOUR_BAR_WIDTH: u32 = 110;

/// An axis label for an integer position (cells are centred on integers), nothing between them.
fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// A heat map of `values[i][j]` in [0, 1] as PNG: cell (i + 1, j + 1) centred on its integer ticks (row
/// i + 1 on the y axis, column j + 1 on the x axis), white to dark blue, with a colour bar for [0, 1]
/// labelled `value_desc` on the right.
pub fn heatmap(
    path: &Path,
    title: &str,
    (x_desc, y_desc, value_desc): (&str, &str, &str),
    values: &[Vec<f64>],
) -> Result<(), Box<dyn std::error::Error>> {
    let (rows, cols) = (values.len(), values.first().map_or(0, Vec::len));
    write_png(path, |area| {
        area.fill(&WHITE)?;
        let (main, bar) = area.split_horizontally(SIZE.0 - COLOUR_BAR_WIDTH);
        let mut chart = ChartBuilder::on(&main)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(0.5..cols as f64 + 0.5, 0.5..rows as f64 + 0.5)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(cols.clamp(1, 16))
            .y_labels(rows.clamp(1, 16))
            .x_label_formatter(&integer_label)
            .y_label_formatter(&integer_label)
            .label_style(("sans-serif", 14))
            .draw()?;
        chart.draw_series(values.iter().enumerate().flat_map(|(i, row)| {
            row.iter().enumerate().map(move |(j, &v)| {
                let (x, y) = ((j + 1) as f64, (i + 1) as f64); // the cell's centre
                let corners = [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)];
                Rectangle::new(corners, heat_color(v).filled())
            })
        }))?;
        // the colour bar: the same map, 0 at the bottom to 1 at the top, with its labels
        let mut scale = ChartBuilder::on(&bar)
            .margin_top(44)
            .margin_bottom(52)
            .margin_right(50)
            .y_label_area_size(0)
            .right_y_label_area_size(40)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
        scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.1}"))
            .y_desc(value_desc)
            .label_style(("sans-serif", 14))
            .draw()?;
        const STEPS: usize = 100;
        scale.draw_series((0..STEPS).map(|k| {
            let (lo, hi) = (k as f64 / STEPS as f64, (k + 1) as f64 / STEPS as f64);
            Rectangle::new([(0.0, lo), (1.0, hi)], heat_color((lo + hi) / 2.0).filled())
        }))?;
        scale.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.stroke_width(1),
        )))?;
        area.present()?;
        Ok(())
    })
}

/// One named series of (x, y) points per line (`lines`) or point cloud (`scatter`), as PNG.
pub type Series = (String, Vec<(f64, f64)>);

const PALETTE: [RGBColor; 6] = [
    RGBColor(70, 130, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// How a chart's x values are labelled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// As they are.
    Linear,
    /// x is log2 of the quantity: ticks at whole x, labelled 2^x (1, 2, 4, ...), nothing between.
    Log2,
}

/// Lines through each series' points (with markers), or markers alone when `joined` is false. The
/// legend sits in the lower right corner.
pub fn chart(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    x_axis: XAxis,
    series: &[Series],
    joined: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let points = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let range = |pick: fn((f64, f64)) -> f64| {
        let (lo, hi) = points()
            .map(pick)
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let pad = ((hi - lo) * 0.05).max(1e-6);
        (lo - pad)..(hi + pad)
    };
    let (xs, ys) = (range(|p| p.0), range(|p| p.1));
    let xs_span = xs.clone();
    write_png(path, |area| {
        area.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(xs, ys)?;
        let powers = |v: &f64| match integer_label(v) {
            label if label.is_empty() => label,
            _ => format!("{}", 2f64.powi(v.round() as i32)),
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(("sans-serif", 14));
        if x_axis == XAxis::Log2 {
            let whole = (xs_span.end.floor() - xs_span.start.ceil()) as usize + 1;
            mesh.x_labels(whole.max(2)).x_label_formatter(&powers);
        }
        mesh.draw()?;
        for ((name, pts), &color) in series.iter().zip(PALETTE.iter().cycle()) {
            if joined {
                chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
            }
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
        legend_and_present(&mut chart, area, SeriesLabelPosition::LowerRight)
    })
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    train: &[f64],
    val: &[(usize, f64)],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let finite = train.iter().chain(val.iter().map(|(_, l)| l)).copied();
    let top = finite.fold(0.0f64, f64::max).max(1e-3) * 1.05;
    let steps = train.len().max(2);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1..steps, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (cross-entropy, nats per target token)")
        .label_style(("sans-serif", 14))
        .draw()?;
    let steelblue = RGBColor(70, 130, 180);
    chart
        .draw_series(LineSeries::new(
            train.iter().enumerate().map(|(i, &l)| (i + 1, l)),
            &steelblue,
        ))?
        .label("training (each step's batch)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], steelblue));
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    }
    // losses fall: the upper right corner is free
    legend_and_present(&mut chart, area, SeriesLabelPosition::UpperRight)
}

/// Draws the series' legend and finishes the picture.
fn legend_and_present<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    position: SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    area.present()?;
    Ok(())
}
