//! `sweep`: the trade-off between neurons and fidelity. The model is calibrated once, then
//! converted at each K and evaluated against its ANN.

use amos_io::data::{Dataset, Preprocess};
use amos_snn::Graph;
use amos_snn::ops::GateKind;
use amos_snn::simulate::SpikingNetwork;

use crate::calibrate::Calibration;
use crate::convert::{ConvertOptions, GATES, ModelInfo, convert, default_k};
use crate::error::ConvertError;
use crate::eval::{self, EvalOptions, Mode};

/// One conversion of the sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepPoint {
    /// The swept K (ReLU-equivalent when all gates scale together).
    pub k: usize,
    /// K of every gate type in this conversion, `gate=K,…`.
    pub settings: String,
    pub neurons: u64,
    pub mean_spikes: f64,
    pub snn_top1: f64,
    pub ann_top1: f64,
    pub agreement_top1: f64,
    pub logit_rmse: f64,
    pub max_logit_error: f32,
}

/// K of every gate type for swept value `k`: only `gate` set to `k`, or, without a gate,
/// every type scaled with `k` relative to its default at K = 10 (so 10 gives the paper's
/// relu 10, sigmoid 8, swish 12, mul 40).
pub fn options_for(k: usize, gate: Option<GateKind>, base: &ConvertOptions) -> ConvertOptions {
    let mut o = base.clone();
    for g in GATES {
        let kg = match gate {
            Some(only) if only == g => k,
            Some(_) => default_k(g),
            None => ((default_k(g) * k) as f64 / 10.0).round() as usize,
        };
        o.k.insert(g, kg.clamp(1, amos_snn::amos::MAX_NEURONS));
    }
    o
}

/// Converts `graph` at each K and evaluates it on `dataset`.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    graph: &Graph,
    calibration: Option<&Calibration>,
    info: &ModelInfo,
    ks: &[usize],
    gate: Option<GateKind>,
    base: &ConvertOptions,
    dataset: &Dataset,
    preprocess: &Preprocess,
    eval_options: &EvalOptions,
    threads: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<SweepPoint>, ConvertError> {
    let mut points = Vec::new();
    for (i, &k) in ks.iter().enumerate() {
        let options = options_for(k, gate, base);
        let model = convert(graph.clone(), calibration, &options, info.clone(), |_| {})?;
        let net = SpikingNetwork::new(&model, threads)?;
        let predictions =
            eval::evaluate_converted(&net, dataset, preprocess, Mode::Both, eval_options, |_| {})?;
        let classes = graph.output_shape().iter().product();
        let (rmse, max) = eval::logit_rmse(&predictions, classes);
        let evaluated: Vec<_> = predictions.iter().filter(|p| p.error.is_none()).collect();
        let used: Vec<_> = model.units.iter().map(|u| u.gate).collect();
        let settings = options
            .k
            .iter()
            .filter(|(g, _)| used.contains(g))
            .map(|(g, k)| format!("{}={k}", g.name()))
            .collect::<Vec<_>>()
            .join(",");
        points.push(SweepPoint {
            k,
            settings,
            neurons: net.neurons(),
            mean_spikes: evaluated.iter().map(|p| p.spikes as f64).sum::<f64>()
                / evaluated.len().max(1) as f64,
            snn_top1: eval::summarise_by(&predictions, true).top1,
            ann_top1: eval::summarise_by(&predictions, false).top1,
            agreement_top1: eval::agreement_top1(&predictions),
            logit_rmse: rmse,
            max_logit_error: max,
        });
        progress(i + 1, ks.len());
    }
    Ok(points)
}

/// Writes the sweep as CSV.
pub fn write_csv(path: &std::path::Path, points: &[SweepPoint]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_path(path)?;
    for p in points {
        w.serialize(p)?;
    }
    w.flush()?;
    Ok(())
}
