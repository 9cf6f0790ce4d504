//! Single-process evaluation of a model on a labelled dataset.
//!
//! Batches are decoded in parallel, run through the engine, and reduced to top-5 predictions
//! per image. An image that cannot be decoded is reported with its error and left out of the
//! accuracy; it never stops the run.

use amos_io::data::{Dataset, Entry, Preprocess};
use amos_snn::simulate::SpikingNetwork;
use amos_snn::{Engine, Tensor};
use rayon::prelude::*;

/// What evaluation produced for one image.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Prediction {
    pub image_id: String,
    pub label: Option<i32>,
    /// ANN classes by decreasing score (ties: lower index first); empty when not run.
    pub top5: Vec<usize>,
    /// SNN classes, likewise; empty when not run.
    pub snn_top5: Vec<usize>,
    /// SNN spikes (units, the input layer not included) and synaptic operations.
    pub spikes: u64,
    pub synops: u64,
    /// With both networks run: Σ over classes of (SNN − ANN logit)², and the largest |SNN − ANN|.
    pub logit_sq_err: f64,
    pub logit_max_err: f32,
    pub error: Option<String>,
}

/// Which networks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Snn,
    Ann,
    Both,
}

/// Accuracy over the evaluated images.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Images evaluated (decoded and run).
    pub images: usize,
    /// Images that could not be evaluated.
    pub errors: usize,
    /// Percent of labelled images whose top-1 is the label.
    pub top1: f64,
    /// Percent of labelled images whose label is among the top 5.
    pub top5: f64,
}

/// Evaluation settings.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub batch: usize,
    pub limit: Option<usize>,
}

impl EvalOptions {
    /// The entries to evaluate: the first `limit` of the dataset.
    pub fn entries<'d>(&self, dataset: &'d Dataset) -> &'d [Entry] {
        let n = self.limit.unwrap_or(usize::MAX).min(dataset.entries.len());
        &dataset.entries[..n]
    }
}

/// Runs `engine` over the dataset's images (the first `limit`), calling `progress` with the
/// number of images done after each batch.
pub fn evaluate(
    engine: &Engine,
    dataset: &Dataset,
    preprocess: &Preprocess,
    options: &EvalOptions,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Prediction>, amos_snn::EngineError> {
    let entries = options.entries(dataset);
    let per_image = preprocess.chw_len();
    let input_shape = engine.graph().input_shape().to_vec();
    let mut predictions = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(options.batch.max(1)) {
        let decoded: Vec<Result<Vec<f32>, String>> = chunk
            .par_iter()
            .map(|e: &Entry| {
                dataset
                    .load_chw(e, preprocess)
                    .map_err(|err| err.to_string())
            })
            .collect();
        let ok: Vec<&Vec<f32>> = decoded.iter().filter_map(|d| d.as_ref().ok()).collect();
        let mut scores = Vec::new();
        if !ok.is_empty() {
            let mut data = Vec::with_capacity(ok.len() * per_image);
            ok.iter().for_each(|d| data.extend_from_slice(d));
            let mut shape = vec![ok.len()];
            shape.extend_from_slice(&input_shape);
            let batch =
                Tensor::new(shape, data).map_err(|_| amos_snn::EngineError::InputShape {
                    got: vec![ok.len(), per_image],
                    expected: input_shape.clone(),
                })?;
            scores = engine.run(batch)?.into_data();
        }
        let classes = if ok.is_empty() {
            0
        } else {
            scores.len() / ok.len()
        };
        let mut rows = scores.chunks(classes.max(1));
        for (entry, d) in chunk.iter().zip(&decoded) {
            let (top5, error) = match d {
                Ok(_) => (top_k(rows.next().unwrap_or(&[]), 5), None),
                Err(e) => (Vec::new(), Some(e.clone())),
            };
            predictions.push(Prediction {
                image_id: entry.image_id.clone(),
                label: entry.label,
                top5,
                error,
                ..Default::default()
            });
        }
        progress(predictions.len());
    }
    Ok(predictions)
}

pub use amos_snn::simulate::top_k;

/// Runs a converted model in SNN and/or ANN mode on the dataset's images.
pub fn evaluate_converted(
    net: &SpikingNetwork,
    dataset: &Dataset,
    preprocess: &Preprocess,
    mode: Mode,
    options: &EvalOptions,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Prediction>, amos_snn::EngineError> {
    let entries = options.entries(dataset);
    let mut predictions = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(options.batch.max(1)) {
        let decoded: Vec<Result<Vec<u8>, String>> = chunk
            .par_iter()
            .map(|e| {
                dataset
                    .load_u8(e, preprocess)
                    .map_err(|err| err.to_string())
            })
            .collect();
        let ok: Vec<&[u8]> = decoded.iter().filter_map(|d| d.as_deref().ok()).collect();
        let (mut ann, mut snn) = (Vec::new(), None);
        if !ok.is_empty() {
            if mode != Mode::Snn {
                ann = net.run_ann(&ok)?.into_data();
            }
            if mode != Mode::Ann {
                snn = Some(net.run_snn(&ok)?);
            }
        }
        let classes = net.classes();
        let mut k = 0;
        for (entry, d) in chunk.iter().zip(&decoded) {
            let mut p = Prediction {
                image_id: entry.image_id.clone(),
                label: entry.label,
                ..Default::default()
            };
            match d {
                Err(e) => p.error = Some(e.clone()),
                Ok(_) => {
                    if !ann.is_empty() {
                        p.top5 = top_k(&ann[k * classes..(k + 1) * classes], 5);
                    }
                    if let Some(s) = &snn {
                        let logits = &s.logits.data()[k * classes..(k + 1) * classes];
                        if !ann.is_empty() {
                            let (sq, max) =
                                logit_errors(&ann[k * classes..(k + 1) * classes], logits);
                            p.logit_sq_err = sq;
                            p.logit_max_err = max;
                        }
                        p.snn_top5 = top_k(logits, 5);
                        p.spikes = s.stats[k].spikes;
                        p.synops = s.stats[k].synops;
                    }
                    k += 1;
                }
            }
            predictions.push(p);
        }
        progress(predictions.len());
    }
    Ok(predictions)
}

/// Top-1 and top-5 accuracy over the labelled, evaluated images, from `top5` (ANN) or
/// `snn_top5` (SNN).
pub fn summarise_by(predictions: &[Prediction], snn: bool) -> Summary {
    let pick = |p: &Prediction| {
        if snn {
            p.snn_top5.clone()
        } else {
            p.top5.clone()
        }
    };
    let evaluated: Vec<&Prediction> = predictions.iter().filter(|p| p.error.is_none()).collect();
    let labelled: Vec<(Vec<usize>, usize)> = evaluated
        .iter()
        .filter_map(|p| {
            p.label
                .and_then(|l| usize::try_from(l).ok())
                .map(|l| (pick(p), l))
        })
        .collect();
    let pct = |hits: usize| {
        if labelled.is_empty() {
            0.0
        } else {
            100.0 * hits as f64 / labelled.len() as f64
        }
    };
    let top1 = labelled
        .iter()
        .filter(|(t, l)| t.first() == Some(l))
        .count();
    let top5 = labelled.iter().filter(|(t, l)| t.contains(l)).count();
    Summary {
        images: evaluated.len(),
        errors: predictions.len() - evaluated.len(),
        top1: pct(top1),
        top5: pct(top5),
    }
}

/// ANN accuracy (see [`summarise_by`]).
pub fn summarise(predictions: &[Prediction]) -> Summary {
    summarise_by(predictions, false)
}

/// Σ (b − a)² and max |b − a| over two logit rows.
fn logit_errors(a: &[f32], b: &[f32]) -> (f64, f32) {
    a.iter().zip(b).fold((0.0, 0.0f32), |(sq, max), (&x, &y)| {
        let d = y - x;
        (sq + (d as f64) * (d as f64), max.max(d.abs()))
    })
}

/// Root mean square of SNN − ANN logits over images and classes, and the largest difference,
/// over images where both ran.
pub fn logit_rmse(predictions: &[Prediction], classes: usize) -> (f64, f32) {
    let both: Vec<_> = predictions
        .iter()
        .filter(|p| !p.top5.is_empty() && !p.snn_top5.is_empty())
        .collect();
    let sq: f64 = both.iter().map(|p| p.logit_sq_err).sum();
    let max = both.iter().map(|p| p.logit_max_err).fold(0.0f32, f32::max);
    ((sq / (both.len() * classes).max(1) as f64).sqrt(), max)
}

/// One row of an ablation: only one gate type in spikes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AblationRow {
    pub gate: String,
    /// Percent of images whose top-1 equals the ANN's.
    pub agreement_top1: f64,
    pub logit_rmse: f64,
    /// Neurons per image of this gate type's units.
    pub neurons: u64,
    /// Mean spikes per image of this gate type's units.
    pub spikes: f64,
}

/// Runs the ANN, then the SNN with one gate type at a time in spikes (all others exact).
pub fn ablate(
    net: &SpikingNetwork,
    model: &amos_snn::model::ConvertedModel,
    dataset: &Dataset,
    preprocess: &Preprocess,
    options: &EvalOptions,
    mut progress: impl FnMut(usize),
) -> Result<Vec<AblationRow>, amos_snn::EngineError> {
    let mut gates: Vec<amos_snn::ops::GateKind> = model.units.iter().map(|u| u.gate).collect();
    gates.sort_by_key(|g| g.name());
    gates.dedup();
    let masks: Vec<Vec<bool>> = gates
        .iter()
        .map(|g| model.units.iter().map(|u| u.gate == *g).collect())
        .collect();
    let classes = net.classes();
    // Per gate: (agreeing images, Σ squared logit error, Σ spikes).
    let mut acc = vec![(0usize, 0.0f64, 0u64); gates.len()];
    let mut images = 0;
    let mut done = 0;
    for chunk in options.entries(dataset).chunks(options.batch.max(1)) {
        let decoded: Vec<Vec<u8>> = chunk
            .par_iter()
            .filter_map(|e| dataset.load_u8(e, preprocess).ok())
            .collect();
        let ok: Vec<&[u8]> = decoded.iter().map(Vec::as_slice).collect();
        done += chunk.len();
        if ok.is_empty() {
            progress(done);
            continue;
        }
        let ann = net.run_ann(&ok)?.into_data();
        for (mask, a) in masks.iter().zip(acc.iter_mut()) {
            let snn = net.run_snn_partial(&ok, mask)?;
            for k in 0..ok.len() {
                let (x, y) = (
                    &ann[k * classes..(k + 1) * classes],
                    &snn.logits.data()[k * classes..(k + 1) * classes],
                );
                a.0 += usize::from(top_k(x, 1) == top_k(y, 1));
                a.1 += logit_errors(x, y).0;
                a.2 += snn.stats[k].spikes;
            }
        }
        images += ok.len();
        progress(done);
    }
    let neurons = net.unit_neurons();
    Ok(gates
        .iter()
        .zip(masks.iter().zip(acc))
        .map(|(g, (mask, (agree, sq, spikes)))| AblationRow {
            gate: g.name().to_string(),
            agreement_top1: 100.0 * agree as f64 / images.max(1) as f64,
            logit_rmse: (sq / (images * classes).max(1) as f64).sqrt(),
            neurons: neurons
                .iter()
                .zip(mask)
                .filter(|(_, m)| **m)
                .map(|(n, _)| n)
                .sum(),
            spikes: spikes as f64 / images.max(1) as f64,
        })
        .collect())
}

/// Percent of evaluated images whose SNN and ANN top-1 agree.
pub fn agreement_top1(predictions: &[Prediction]) -> f64 {
    let both: Vec<_> = predictions
        .iter()
        .filter(|p| !p.top5.is_empty() && !p.snn_top5.is_empty())
        .collect();
    if both.is_empty() {
        return 0.0;
    }
    100.0 * both.iter().filter(|p| p.top5[0] == p.snn_top5[0]).count() as f64 / both.len() as f64
}

/// Writes `image_id,label,ann_top1..ann_top5,error` one row per image, and with `snn` also
/// `snn_top1..snn_top5,spikes,synops` before `error`.
pub fn write_predictions(
    path: &std::path::Path,
    predictions: &[Prediction],
    snn: bool,
) -> Result<(), csv::Error> {
    let mut out = csv::Writer::from_path(path)?;
    let mut header: Vec<String> = vec!["image_id".into(), "label".into()];
    header.extend((1..=5).map(|i| format!("ann_top{i}")));
    if snn {
        header.extend((1..=5).map(|i| format!("snn_top{i}")));
        header.extend(["spikes".to_string(), "synops".to_string()]);
    }
    header.push("error".into());
    out.write_record(&header)?;
    let cols = |t: &[usize]| {
        (0..5)
            .map(|i| t.get(i).map(|c| c.to_string()).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    for p in predictions {
        let mut row = vec![
            p.image_id.clone(),
            p.label.map(|l| l.to_string()).unwrap_or_default(),
        ];
        row.extend(cols(&p.top5));
        if snn {
            row.extend(cols(&p.snn_top5));
            let ok = p.error.is_none();
            row.push(if ok {
                p.spikes.to_string()
            } else {
                String::new()
            });
            row.push(if ok {
                p.synops.to_string()
            } else {
                String::new()
            });
        }
        row.push(p.error.clone().unwrap_or_default());
        out.write_record(&row)?;
    }
    out.flush()?;
    Ok(())
}
