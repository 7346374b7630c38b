//! PNG charts of the report, drawn with plotters' bitmap backend. Text needs a TrueType font:
//! DejaVu Sans from Debian's fonts-dejavu-core (installed by `cargo xtask setup`), read at run
//! time, so rendering works headless and the repository ships no font.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::bridge::{Bridge, Filter};
use super::datapath::Datapath;
use super::stats::{percentile, Summary};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 560);

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let path = FONT_PATHS
        .iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| {
            anyhow!("DejaVu Sans is missing: `cargo xtask setup` installs fonts-dejavu-core")
        })?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let mut result = Ok(());
    ONCE.call_once(|| {
        // Registered once per process; plotters keeps the bytes for good.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        result = plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| anyhow!("{path} is not a usable font"));
    });
    result
}

/// The label of the category at `v` on a categorical axis drawn as `0.0..n` (blank between).
fn category<S: ToString>(labels: &[S], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() < 0.01 && i >= 0.0 {
        labels
            .get(i as usize)
            .map(ToString::to_string)
            .unwrap_or_default()
    } else {
        String::new()
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn e<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow!("plotting: {error:?}")
}

pub fn draw(out: &Path, dp: &Datapath, br: &Bridge) -> Result<()> {
    register_font()?;
    per_packet(&out.join("datapath.png"), dp)?;
    scaling(&out.join("scaling.png"), dp)?;
    throughput(&out.join("bridge.png"), br)?;
    latency(&out.join("latency.png"), br)?;
    Ok(())
}

fn canvas(path: &Path) -> Result<Area<'_>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    Ok(root)
}

/// Bars with an interquartile whisker at `x` (category index), `offset` within the slot.
fn bar<DB: DrawingBackend>(
    chart: &mut ChartContext<
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x: f64,
    offset: f64,
    width: f64,
    s: &Summary,
    color: RGBColor,
) -> Result<()> {
    let (l, r) = (x + offset - width / 2.0, x + offset + width / 2.0);
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(l, 0.0), (r, s.median)],
            color.filled(),
        )))
        .map_err(e)?;
    let mid = x + offset;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(mid, s.p25), (mid, s.p75)],
            BLACK.stroke_width(2),
        )))
        .map_err(e)?;
    Ok(())
}

fn per_packet(path: &Path, dp: &Datapath) -> Result<()> {
    let root = canvas(path)?;
    let cases = &dp.raw.cases;
    let cells = &dp.cells[0];
    let top = cells
        .iter()
        .map(|c| c.otfw_ns.p75.max(c.otfw_ns.median))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Per-packet cost: otfw vs trivial XDP program (ns, median, IQR)",
            (FONT, 22),
        )
        .margin(15)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..cases.len() as f64 - 0.5, 0.0..top)
        .map_err(e)?;
    let labels: Vec<String> = cases
        .iter()
        .map(|c| {
            if c.inspected {
                c.id.clone()
            } else {
                format!("{}*", c.id)
            }
        })
        .collect();
    let note = if cases.iter().all(|c| c.inspected) {
        ""
    } else {
        "* not yet inspected: measured on a plain TCP/UDP rule"
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(cases.len())
        .x_label_formatter(&|v| category(&labels, *v))
        .x_desc(note)
        .y_desc("ns per packet")
        .label_style((FONT, 14))
        .draw()
        .map_err(e)?;
    for (i, cell) in cells.iter().enumerate() {
        bar(
            &mut chart,
            i as f64,
            -0.18,
            0.34,
            &cell.otfw_ns,
            RGBColor(31, 119, 180),
        )?;
        bar(
            &mut chart,
            i as f64,
            0.18,
            0.34,
            &cell.baseline_ns,
            RGBColor(180, 180, 180),
        )?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.1}x", cell.ratio.median),
                (
                    i as f64 - 0.3,
                    cell.otfw_ns.median.max(cell.otfw_ns.p75) + top * 0.02,
                ),
                (FONT, 14),
            )))
            .map_err(e)?;
    }
    legend(
        &root,
        &[
            ("otfw", RGBColor(31, 119, 180)),
            ("baseline", RGBColor(180, 180, 180)),
        ],
    )?;
    root.present().map_err(e)?;
    Ok(())
}

fn legend(root: &Area, items: &[(&str, RGBColor)]) -> Result<()> {
    for (i, (label, color)) in items.iter().enumerate() {
        let y = 50 + i as i32 * 22;
        let x = SIZE.0 as i32 - 210;
        root.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], color.filled()))
            .map_err(e)?;
        root.draw(&Text::new(label.to_string(), (x + 20, y), (FONT, 15)))
            .map_err(e)?;
    }
    Ok(())
}

fn scaling(path: &Path, dp: &Datapath) -> Result<()> {
    let root = canvas(path)?;
    let sizes = &dp.raw.sizes;
    let (lo, hi) = dp
        .cells
        .iter()
        .flatten()
        .map(|c| c.scaling.median)
        .fold((0.85f64, 1.15f64), |(lo, hi), v| {
            (lo.min(v - 0.02), hi.max(v + 0.02))
        });
    let labels: Vec<String> = sizes
        .iter()
        .map(|s| format!("{} c / {} p", s.conduits, s.prefixes))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Cost vs policy size (ratio to the smallest policy)",
            (FONT, 22),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2..sizes.len() as f64 - 0.8, lo..hi)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(sizes.len())
        .x_label_formatter(&|v| category(&labels, *v))
        .y_desc("cost / cost with 1 conduit")
        .label_style((FONT, 14))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(-0.2, 0.9), (sizes.len() as f64 - 0.8, 1.1)],
            RGBColor(200, 240, 200).mix(0.5).filled(),
        )))
        .map_err(e)?
        .label("target: within 10%")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 14, y + 5)],
                RGBColor(200, 240, 200).filled(),
            )
        });
    for (c, case) in dp.raw.cases.iter().enumerate() {
        let color = Palette99::pick(c).to_rgba();
        let points: Vec<(f64, f64)> = (0..sizes.len())
            .map(|s| (s as f64, dp.cells[s][c].scaling.median))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(case.id.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

fn throughput(path: &Path, br: &Bridge) -> Result<()> {
    let root = canvas(path)?;
    let summaries: Vec<(Filter, Summary)> = Filter::ALL
        .iter()
        .map(|&f| {
            (
                f,
                Summary::of(
                    br.trials
                        .iter()
                        .filter(|t| t.filter == f)
                        .map(|t| t.pps() / 1e3),
                ),
            )
        })
        .collect();
    // The label over each bar: its throughput over the no-filter burst just before it, as in
    // the report's table (median of the pairs).
    let paired = |f: Filter| {
        if f == Filter::None {
            return 1.0;
        }
        Summary::of(
            br.trials
                .iter()
                .filter(|t| t.filter == f)
                .filter_map(|t| Some(t.pps() / t.reference_pps?.max(1.0))),
        )
        .median
    };
    let top = summaries.iter().map(|(_, s)| s.max).fold(1.0, f64::max) * 1.15;
    let labels: Vec<&str> = Filter::ALL.iter().map(|f| f.label()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Modbus requests through the bridge (kframes/s, median, IQR; label: vs no filter)",
            (FONT, 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..labels.len() as f64 - 0.5, 0.0..top)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&|v| category(&labels, *v))
        .y_desc("thousand frames per second")
        .label_style((FONT, 14))
        .draw()
        .map_err(e)?;
    for (i, (f, s)) in summaries.iter().enumerate() {
        let color = if f.otfw_mode().is_some() {
            RGBColor(31, 119, 180)
        } else if matches!(f, Filter::None | Filter::Trivial) {
            RGBColor(150, 150, 150)
        } else {
            RGBColor(255, 127, 14)
        };
        bar(&mut chart, i as f64, 0.0, 0.6, s, color)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.2}x", paired(*f)),
                (i as f64 - 0.12, s.p75.max(s.median) + top * 0.02),
                (FONT, 15),
            )))
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

fn latency(path: &Path, br: &Bridge) -> Result<()> {
    let root = canvas(path)?;
    let sets: Vec<(Filter, Vec<f64>)> = br
        .latency
        .iter()
        .filter(|l| !l.rtt_ns.is_empty())
        .map(|l| {
            let mut v: Vec<f64> = l.rtt_ns.iter().map(|&n| n as f64 / 1e3).collect();
            v.sort_by(f64::total_cmp);
            (l.filter, v)
        })
        .collect();
    let mut all: Vec<f64> = sets.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    if all.is_empty() {
        return Ok(());
    }
    // Up to the 95th percentile: the tail beyond is other users' work on the shared CPUs,
    // and would squeeze the distributions into a line.
    let (lo, hi) = (percentile(&all, 0.5), percentile(&all, 95.0));
    let bins = 60usize;
    let width = ((hi - lo) / bins as f64).max(1e-3);
    let histograms: Vec<(Filter, Vec<(f64, f64)>)> = sets
        .iter()
        .map(|(f, v)| {
            let mut counts = vec![0usize; bins];
            for &x in v {
                if x >= lo && x < hi {
                    counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
                }
            }
            let n = v.len().max(1) as f64;
            let points = counts
                .iter()
                .enumerate()
                .map(|(i, &c)| (lo + (i as f64 + 0.5) * width, c as f64 / n * 100.0))
                .collect();
            (*f, points)
        })
        .collect();
    let top = histograms
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Round-trip time through the bridge (Modbus request/response)",
            (FONT, 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi, 0.0..top)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("round trip, microseconds (up to the 95th percentile of all samples)")
        .y_desc("% of samples")
        .label_style((FONT, 14))
        .draw()
        .map_err(e)?;
    for (i, (f, points)) in histograms.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(e)?
            .label(f.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
