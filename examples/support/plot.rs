//! Loss curves as pictures: training loss per step and validation loss at each evaluation, with labelled
//! axes, drawn by `plotters` as SVG and PNG. The PNG's text uses a font shipped in `assets/` (DejaVu Sans,
//! cut to ASCII), so no system font is needed.

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
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(
        &BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(),
        title,
        train,
        val,
    )?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        &rgb,
        SIZE.0,
        SIZE.1,
        image::ColorType::Rgb8,
    )?;
    write_atomic(&stem.with_extension("png"), &png)?;
    Ok(())
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
        .y_desc("loss (cross-entropy, nats per byte)")
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
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    area.present()?;
    Ok(())
}
