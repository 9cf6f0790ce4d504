//! Calibration: what each gate sees on real images.
//!
//! The ANN runs on calibration images while a hook records, for every gate node, the exact
//! minimum and maximum of its input and an evenly spaced, deterministic subsample of its
//! input values (pairs for two-input gates). Unit ranges and fitting samples come from these.

use amos_io::data::{Dataset, Preprocess};
use amos_snn::ops::{GateKind, OpClass};
use amos_snn::{Engine, Tensor};

use crate::error::ConvertError;
use rayon::prelude::*;

/// Samples kept per gate node and image.
const SAMPLES_PER_IMAGE: usize = 256;

/// Observed inputs of one gate node.
#[derive(Clone, Debug, Default)]
pub struct GateSamples {
    pub node: usize,
    pub gate: Option<GateKind>,
    pub min: f32,
    pub max: f32,
    /// Subsampled input values x.
    pub x: Vec<f32>,
    /// Subsampled second inputs x′ (two-input gates), aligned with `x`.
    pub x2: Vec<f32>,
}

/// Calibration of every gate node.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    pub images: usize,
    pub gates: Vec<GateSamples>,
}

/// Runs the ANN on the first `images` images of `dataset`, recording every gate's inputs.
pub fn calibrate(
    engine: &Engine,
    dataset: &Dataset,
    preprocess: &Preprocess,
    images: usize,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Calibration, ConvertError> {
    let graph = engine.graph();
    let mut gates: Vec<GateSamples> = graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n.op.class() {
            OpClass::Gate(g) => Some(GateSamples {
                node: i,
                gate: Some(g),
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
                ..Default::default()
            }),
            _ => None,
        })
        .collect();
    let slot: Vec<Option<usize>> = {
        let mut s = vec![None; graph.nodes.len()];
        gates
            .iter()
            .enumerate()
            .for_each(|(k, g)| s[g.node] = Some(k));
        s
    };
    let entries = &dataset.entries[..images.min(dataset.entries.len())];
    let input_shape = graph.input_shape().to_vec();
    let mut done = 0;
    for chunk in entries.chunks(batch.max(1)) {
        let decoded: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|e| dataset.load_chw(e, preprocess))
            .collect::<Result<_, _>>()?;
        let mut shape = vec![decoded.len()];
        shape.extend_from_slice(&input_shape);
        let input = Tensor::new(shape, decoded.concat())?;
        let mut record = |node: usize, inputs: &[&Tensor]| -> Option<Tensor> {
            let k = slot[node]?;
            record_gate(&mut gates[k], inputs);
            None
        };
        engine.run_with(input, &mut record)?;
        done += chunk.len();
        progress(done);
    }
    Ok(Calibration {
        images: done,
        gates,
    })
}

fn record_gate(g: &mut GateSamples, inputs: &[&Tensor]) {
    let x = inputs[0];
    let n = x.shape()[0];
    let per = x.len() / n.max(1);
    for &v in x.data() {
        g.min = g.min.min(v);
        g.max = g.max.max(v);
    }
    let stride = (per / SAMPLES_PER_IMAGE).max(1);
    let second = inputs.get(1).map(|t| (t, t.len() / n.max(1)));
    for b in 0..n {
        for e in (0..per).step_by(stride) {
            g.x.push(x.data()[b * per + e]);
            if let Some((t, per2)) = second {
                // Broadcast [C,1,1] against [C,H,W]: the channel of element e.
                let idx = if per2 == per {
                    e
                } else {
                    e / (per / per2.max(1)).max(1)
                };
                g.x2.push(t.data()[b * per2 + idx.min(per2.saturating_sub(1))]);
            }
        }
    }
}
