//! The examples' charts (examples/support/plot.rs), rendered: each PNG has the size it is drawn at; a
//! heat map puts its cells between the axes and a colour bar for [0, 1] at its right edge, running from
//! white at the bottom to the darkest cell colour at the top; the loss curves' SVG carries its labels.
//! How they look is judged in docs/study.md, which shows them.

#[path = "../examples/support/plot.rs"]
mod plot;

use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowrank-plots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn read_png(path: &std::path::Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

#[test]
fn a_heat_map_has_its_colour_bar() {
    // 8 x 64 values, as the study's r = 8 vs r = 64 panel, with both ends of the range present
    let values: Vec<Vec<f64>> = (0..8)
        .map(|i| (0..64).map(|j| ((i * 64 + j) % 97) as f64 / 96.0).collect())
        .collect();
    let path = scratch("heat.png");
    plot::heatmap(&path, "q_proj: r = 8 vs r = 64", ("j", "i", "phi"), &values).unwrap();
    let img = read_png(&path);
    assert_eq!(img.dimensions(), (800, 480));
    // the bar: a column inside the right-hand strip, from its top to its bottom
    let x = 800 - plot::COLOUR_BAR_WIDTH + 10;
    let column: Vec<[u8; 3]> = (0..480).map(|y| img.get_pixel(x, y).0).collect();
    let dark = plot::HEAT_MAX;
    let near = |p: [u8; 3], q: [u8; 3]| p.iter().zip(q).all(|(a, b)| a.abs_diff(b) <= 6);
    let top = column
        .iter()
        .position(|&p| near(p, [dark.0, dark.1, dark.2]))
        .expect("the bar reaches the darkest colour");
    assert!(top < 120, "the bar's dark end is at the top (row {top})");
    // along the bar, the colour lightens from top to bottom: blue channel rises
    let inside: Vec<[u8; 3]> = column[top..]
        .iter()
        .copied()
        .take_while(|p| p[2] >= dark.2 && p != &[0, 0, 0])
        .collect();
    assert!(inside.len() > 200, "a bar of {} rows", inside.len());
    assert!(
        inside.windows(2).all(|w| w[1][0] >= w[0][0]),
        "the bar lightens downwards"
    );
    assert!(
        inside.last().unwrap()[0] > 240,
        "the bar reaches white at the bottom"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn line_charts_and_loss_curves_render() {
    let path = scratch("chart.png");
    let series = vec![
        (
            "r = 1".to_string(),
            vec![(1.0, 0.5), (2.0, 0.4), (4.0, 0.3)],
        ),
        (
            "r = 8".to_string(),
            vec![(1.0, 0.6), (2.0, 0.35), (4.0, 0.2)],
        ),
    ];
    plot::chart(
        &path,
        "rank",
        ("r", "loss"),
        plot::XAxis::Log2,
        &series,
        true,
    )
    .unwrap();
    assert_eq!(read_png(&path).dimensions(), (800, 480));
    let stem = scratch("loss_curve");
    let train: Vec<f64> = (0..50).map(|i| 3.0 / (1.0 + i as f64)).collect();
    plot::loss_curves(&stem, "fine-tuning", &train, &[(10, 0.9), (50, 0.2)]).unwrap();
    assert_eq!(
        read_png(&stem.with_extension("png")).dimensions(),
        (800, 480)
    );
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
    for label in ["fine-tuning", "step", "nats per target token", "validation"] {
        assert!(svg.contains(label), "the SVG has no {label:?}");
    }
}
