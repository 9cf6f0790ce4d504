//! Single-process evaluation of a model on a labelled dataset.
//!
//! Batches are decoded in parallel, run through the engine, and reduced to top-5 predictions
//! per image. An image that cannot be decoded is reported with its error and left out of the
//! accuracy; it never stops the run.

use amos_io::data::{Dataset, Entry, Preprocess};
use amos_snn::{Engine, Tensor};
use rayon::prelude::*;

/// What evaluation produced for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub image_id: String,
    pub label: Option<i32>,
    /// Classes by decreasing score (ties: lower index first); empty when `error` is set.
    pub top5: Vec<usize>,
    pub error: Option<String>,
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

/// Runs `engine` over the dataset's images (the first `limit`), calling `progress` with the
/// number of images done after each batch.
pub fn evaluate(
    engine: &Engine,
    dataset: &Dataset,
    preprocess: &Preprocess,
    options: &EvalOptions,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Prediction>, amos_snn::EngineError> {
    let entries = &dataset.entries[..options.limit.unwrap_or(usize::MAX).min(dataset.entries.len())];
    let per_image = preprocess.chw_len();
    let input_shape = engine.graph().input_shape().to_vec();
    let mut predictions = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(options.batch.max(1)) {
        let decoded: Vec<Result<Vec<f32>, String>> = chunk
            .par_iter()
            .map(|e: &Entry| preprocess.load_chw(&e.path).map_err(|err| err.to_string()))
            .collect();
        let ok: Vec<&Vec<f32>> = decoded.iter().filter_map(|d| d.as_ref().ok()).collect();
        let mut scores = Vec::new();
        if !ok.is_empty() {
            let mut data = Vec::with_capacity(ok.len() * per_image);
            ok.iter().for_each(|d| data.extend_from_slice(d));
            let mut shape = vec![ok.len()];
            shape.extend_from_slice(&input_shape);
            let batch = Tensor::new(shape, data).map_err(|_| amos_snn::EngineError::InputShape {
                got: vec![ok.len(), per_image],
                expected: input_shape.clone(),
            })?;
            scores = engine.run(batch)?.into_data();
        }
        let classes = if ok.is_empty() { 0 } else { scores.len() / ok.len() };
        let mut rows = scores.chunks(classes.max(1));
        for (entry, d) in chunk.iter().zip(&decoded) {
            let (top5, error) = match d {
                Ok(_) => (top_k(rows.next().unwrap_or(&[]), 5), None),
                Err(e) => (Vec::new(), Some(e.clone())),
            };
            predictions.push(Prediction { image_id: entry.image_id.clone(), label: entry.label, top5, error });
        }
        progress(predictions.len());
    }
    Ok(predictions)
}

/// Indices of the `k` largest scores, best first; ties go to the lower index.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Top-1 and top-5 accuracy over the labelled, evaluated images.
pub fn summarise(predictions: &[Prediction]) -> Summary {
    let evaluated: Vec<&Prediction> = predictions.iter().filter(|p| p.error.is_none()).collect();
    let labelled: Vec<(&Prediction, usize)> = evaluated
        .iter()
        .filter_map(|p| p.label.and_then(|l| usize::try_from(l).ok()).map(|l| (*p, l)))
        .collect();
    let pct = |hits: usize| if labelled.is_empty() { 0.0 } else { 100.0 * hits as f64 / labelled.len() as f64 };
    let top1 = labelled.iter().filter(|(p, l)| p.top5.first() == Some(l)).count();
    let top5 = labelled.iter().filter(|(p, l)| p.top5.contains(l)).count();
    Summary { images: evaluated.len(), errors: predictions.len() - evaluated.len(), top1: pct(top1), top5: pct(top5) }
}

/// Writes `image_id,label,ann_top1..ann_top5,error`, one row per image.
pub fn write_predictions(path: &std::path::Path, predictions: &[Prediction]) -> Result<(), csv::Error> {
    let mut out = csv::Writer::from_path(path)?;
    out.write_record(["image_id", "label", "ann_top1", "ann_top2", "ann_top3", "ann_top4", "ann_top5", "error"])?;
    for p in predictions {
        let mut row = vec![p.image_id.clone(), p.label.map(|l| l.to_string()).unwrap_or_default()];
        row.extend((0..5).map(|i| p.top5.get(i).map(|c| c.to_string()).unwrap_or_default()));
        row.push(p.error.clone().unwrap_or_default());
        out.write_record(&row)?;
    }
    out.flush()?;
    Ok(())
}
