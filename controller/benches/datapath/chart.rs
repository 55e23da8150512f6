//! BENCHMARKS.svg: each throughput row as a share of bare macvtap, for
//! macvswitch and for the Linux bridge, with the spread of the paired
//! rounds, the 100 % line (bare macvtap) and each row's target.

use std::path::Path;

use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::throughput::{Case, Kind};

const MSW_COLOR: RGBColor = RGBColor(31, 119, 180);
const BRIDGE_COLOR: RGBColor = RGBColor(255, 127, 14);
const TARGET_COLOR: RGBColor = RGBColor(214, 39, 40);
const WIDTH: u32 = 1000;
const ROW_HEIGHT: u32 = 56;
/// Empty rows under the bars, where the legend goes.
const LEGEND_ROWS: f64 = 2.0;

/// The label of a row, as in the tables.
pub fn row_label(c: &Case) -> String {
    format!("{} {} B", c.scenario.name(), c.size)
}

/// Writes the chart of `cases` to `path` (SVG).
pub fn write(path: &Path, cases: &[Case]) {
    draw(path, cases).unwrap_or_else(|e| panic!("drawing {}: {e}", path.display()));
}

fn draw(path: &Path, cases: &[Case]) -> Result<(), Box<dyn std::error::Error>> {
    let n = cases.len();
    assert!(n > 0, "no rows to chart");
    let height = 150 + ROW_HEIGHT * (n as u32 + LEGEND_ROWS as u32);
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    // The axis follows the medians, up to 300 %; a bar or whisker reaching
    // further (a noisy round) is cut at `clip` and its label gives the true
    // figure.
    let widest = cases
        .iter()
        .flat_map(|c| [c.paired(Kind::Msw).median, c.paired(Kind::Bridge).median])
        .fold(1.0, f64::max);
    let x_max = (widest * 100.0 + 40.0).clamp(140.0, 300.0);
    let clip = x_max - 30.0;
    // Row i is centred on y = n-1-i: the first row on top.
    let centre = |i: usize| (n - 1 - i) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput as % of bare macvtap (median of paired rounds, min–max)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(250)
        .build_cartesian_2d(0f64..x_max, (-0.5 - LEGEND_ROWS)..(n as f64 - 0.5))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("% of bare macvtap")
        .x_label_formatter(&|x| format!("{x:.0} %"))
        .draw()?;

    for (kind, color, offset) in [
        (Kind::Msw, MSW_COLOR, 0.2),
        (Kind::Bridge, BRIDGE_COLOR, -0.2),
    ] {
        let bars = cases.iter().enumerate().map(move |(i, c)| {
            let y = centre(i) + offset;
            let v = (c.paired(kind).median * 100.0).min(clip);
            Rectangle::new([(0.0, y - 0.16), (v, y + 0.16)], color.filled())
        });
        chart
            .draw_series(bars)?
            .label(kind.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        let whiskers = cases.iter().enumerate().flat_map(move |(i, c)| {
            let y = centre(i) + offset;
            let s = c.paired(kind);
            let (lo, hi) = ((s.min * 100.0).min(clip), (s.max * 100.0).min(clip));
            [
                PathElement::new(vec![(lo, y), (hi, y)], BLACK.stroke_width(1)),
                PathElement::new(vec![(lo, y - 0.08), (lo, y + 0.08)], BLACK.stroke_width(1)),
                PathElement::new(vec![(hi, y - 0.08), (hi, y + 0.08)], BLACK.stroke_width(1)),
            ]
        });
        chart.draw_series(whiskers)?;
        let values = cases.iter().enumerate().map(move |(i, c)| {
            let s = c.paired(kind);
            let hi = s.max * 100.0;
            let text = if hi > clip {
                format!("{:.1} % (max {hi:.0} %)", s.median * 100.0)
            } else {
                format!("{:.1} %", s.median * 100.0)
            };
            Text::new(
                text,
                (hi.min(clip) + 1.0, centre(i) + offset),
                ("sans-serif", 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        });
        chart.draw_series(values)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(100.0, -0.5), (100.0, n as f64 - 0.5)],
            BLACK.stroke_width(2),
        )))?
        .label("100 % = bare macvtap")
        .legend(|(x, y)| {
            PathElement::new(vec![(x + 7, y - 6), (x + 7, y + 6)], BLACK.stroke_width(2))
        });
    let targets = cases.iter().enumerate().map(|(i, c)| {
        let t = c.scenario.target() * 100.0;
        PathElement::new(
            vec![(t, centre(i) - 0.45), (t, centre(i) + 0.45)],
            TARGET_COLOR.stroke_width(2),
        )
    });
    chart
        .draw_series(targets)?
        .label("target for macvswitch (97 %; VEPA + relay 90 %)")
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x + 7, y - 6), (x + 7, y + 6)],
                TARGET_COLOR.stroke_width(2),
            )
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;

    // Row labels left of the plot, at each row's centre.
    for (i, c) in cases.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, centre(i)));
        root.draw(&Text::new(
            row_label(c),
            (x - 10, y),
            ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
    }
    root.present()?;
    Ok(())
}
