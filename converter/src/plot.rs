//! `plot`: each unit against the gate it replaces (as the paper's Figs 3–6), and the spikes
//! of every unit for one image. PNG files, drawn with `plotters`; the DejaVu Sans font is
//! embedded so that plots render the same on any machine.

use std::path::{Path, PathBuf};

use amos_snn::model::ConvertedModel;
use amos_snn::ops::{Activation, Op};
use plotters::prelude::*;

use crate::error::ConvertError;

type PlotResult<T> = Result<T, ConvertError>;

/// A labelled, coloured line.
type Curve = (String, RGBColor, Vec<(f32, f32)>);

fn plot_err(e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Settings(format!("plot: {e}"))
}

fn register_font() -> PlotResult<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| plot_err("cannot load the embedded font"))
}

/// The gate function a unit replaces, from one of its nodes.
fn target(model: &ConvertedModel, params: usize) -> Option<Activation> {
    let p = model.units.iter().find(|u| u.params == params)?;
    match model.graph.nodes[p.node].op {
        Op::Activation(a) => Some(a),
        _ => None,
    }
}

/// Writes `unit-<i>-<gate>.png` for every unit parameter set; returns the files written.
pub fn plot_units(model: &ConvertedModel, dir: &Path) -> PlotResult<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(dir)
        .map_err(|e| plot_err(format!("cannot create {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for (i, p) in model.unit_params.iter().enumerate() {
        let path = dir.join(format!("unit-{i}-{}.png", p.gate.name()));
        let (lo, hi) = (p.range[0], p.range[1]);
        let pad = ((hi - lo) * 0.1).max(0.5);
        let (x0, x1) = (lo - pad, hi + pad);
        let xs: Vec<f32> = (0..=1000)
            .map(|k| x0 + (x1 - x0) * k as f32 / 1000.0)
            .collect();
        // Curves: (label, colour, points).
        let mut curves: Vec<Curve> = Vec::new();
        match (p.range2, target(model, i)) {
            (Some([a, b]), _) => {
                for (j, x2) in [a, (a + b) / 2.0, b].into_iter().enumerate() {
                    let colour = [BLUE, GREEN, MAGENTA][j];
                    let light =
                        RGBColor(colour.0 / 2 + 127, colour.1 / 2 + 127, colour.2 / 2 + 127);
                    curves.push((
                        format!("x·{x2:.2}"),
                        light,
                        xs.iter().map(|&x| (x, x * x2)).collect(),
                    ));
                    curves.push((
                        format!("AMOS, x′ = {x2:.2}"),
                        colour,
                        xs.iter().map(|&x| (x, p.unit.eval(x, x2).1)).collect(),
                    ));
                }
            }
            (None, act) => {
                let f = |x: f32| act.map_or(x, |a| a.apply(x));
                curves.push((
                    "target".into(),
                    BLUE,
                    xs.iter().map(|&x| (x, f(x))).collect(),
                ));
                curves.push((
                    format!("AMOS K={}", p.unit.k()),
                    RED,
                    xs.iter().map(|&x| (x, p.unit.eval(x, 0.0).1)).collect(),
                ));
            }
        }
        let (y0, y1) = curves
            .iter()
            .flat_map(|c| c.2.iter().map(|q| q.1))
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), y| {
                (a.min(y), b.max(y))
            });
        let ypad = ((y1 - y0) * 0.05).max(0.05);
        let root = BitMapBackend::new(&path, (800, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let caption = format!(
            "{} — K={}, mse {:.2e} ({})",
            p.gate.name(),
            p.unit.k(),
            p.mse,
            p.method
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, (y0 - ypad)..(y1 + ypad))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("x")
            .y_desc("y")
            .draw()
            .map_err(plot_err)?;
        for (label, colour, points) in curves {
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
        drop(chart);
        drop(root);
        files.push(path);
    }
    Ok(files)
}

/// Writes a bar chart of the spikes of every unit (graph order) for one image.
pub fn plot_spikes(
    model: &ConvertedModel,
    unit_spikes: &[u32],
    image: &str,
    path: &Path,
) -> PlotResult<()> {
    register_font()?;
    let max = unit_spikes.iter().copied().max().unwrap_or(1).max(1);
    let n = unit_spikes.len().max(1);
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let total: u64 = unit_spikes.iter().map(|&s| s as u64).sum();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("spikes per unit — {image} ({total} in all)"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, 0f64..max as f64 * 1.05)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("unit (graph order)")
        .y_desc("spikes")
        .draw()
        .map_err(plot_err)?;
    let colour = |u: usize| match model.units.get(u).map(|p| p.gate.name()) {
        Some("swish") | Some("relu6") | Some("relu") => BLUE,
        Some("sigmoid") => GREEN,
        Some("mul") => RED,
        _ => MAGENTA,
    };
    chart
        .draw_series(unit_spikes.iter().enumerate().map(|(u, &s)| {
            Rectangle::new(
                [(u as f64 + 0.1, 0.0), (u as f64 + 0.9, s as f64)],
                colour(u).filled(),
            )
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Writes the sweep's trade-off: neurons per image against top-1 agreement with the ANN.
pub fn plot_tradeoff(
    points: &[crate::sweep::SweepPoint],
    title: &str,
    path: &Path,
) -> PlotResult<()> {
    register_font()?;
    let xs: Vec<f64> = points.iter().map(|p| p.neurons as f64 / 1e6).collect();
    let (x0, x1) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let y0 = points
        .iter()
        .map(|p| p.agreement_top1)
        .fold(100.0f64, f64::min);
    let pad = ((x1 - x0) * 0.08).max(0.1);
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), (y0 - 1.0).max(0.0)..100.5)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("neurons per image (millions)")
        .y_desc("top-1 agreement with the ANN (%)")
        .draw()
        .map_err(plot_err)?;
    let line: Vec<(f64, f64)> = points
        .iter()
        .zip(&xs)
        .map(|(p, &x)| (x, p.agreement_top1))
        .collect();
    chart
        .draw_series(LineSeries::new(line.clone(), BLUE.stroke_width(2)))
        .map_err(plot_err)?;
    chart
        .draw_series(line.iter().zip(points).map(|(&(x, y), p)| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 4, BLUE.filled())
                + Text::new(format!("K={}", p.k), (6, -16), ("sans-serif", 14))
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
