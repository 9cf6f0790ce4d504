//! A converted model: the network, its AMOS units and everything needed to evaluate it.
//!
//! This is the in-memory form of the `.amos` model file (ARCHITECTURE.md §4); the codec is
//! in [`crate::model_file`].

use crate::amos::AmosUnit;
use crate::amos::closed_form::{self, Rounding};
use crate::error::GraphError;
use crate::graph::{Graph, Node, Value, ValueId};
use crate::ops::{Activation, GateKind, Op};

/// Version of the model format this library writes.
pub const FORMAT_MAJOR: u32 = 1;
pub const FORMAT_MINOR: u32 = 0;

/// A network converted to an AMOS spiking network.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertedModel {
    /// The network in ANN form (after folding and fusion). Gate nodes are evaluated exactly
    /// in ANN mode and by their unit in SNN mode.
    pub graph: Graph,
    /// One unit per gate node of `graph`, in graph order.
    pub units: Vec<UnitPlacement>,
    /// Unit parameter sets; several placements may share one (same gate type and range).
    pub unit_params: Vec<UnitParams>,
    /// How images become the input batch.
    pub preprocess: Recipe,
    /// Class names by index (may be empty).
    pub classes: Vec<String>,
    /// Settings the conversion ran with.
    pub settings: ConversionSettings,
    /// SHA-256 of the source ONNX file, lowercase hex.
    pub source_sha256: String,
}

/// Where a unit sits and which parameters it uses.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitPlacement {
    /// Index of the gate node in `graph.nodes`.
    pub node: usize,
    pub gate: GateKind,
    /// Index into [`ConvertedModel::unit_params`].
    pub params: usize,
}

/// One fitted or closed-form unit with the range it was made for.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitParams {
    pub unit: AmosUnit,
    pub gate: GateKind,
    /// Input range the unit was built or fitted for: `[lo, hi]` of x (and of x′ for two-input units).
    pub range: [f32; 2],
    pub range2: Option<[f32; 2]>,
    /// Mean squared error against the gate on its calibration samples.
    pub mse: f32,
    /// How the unit was made: "closed-form", "closed-form-rounding", "fitted".
    pub method: String,
}

/// Preprocessing recipe, as `amos-io` applies it (kept here as plain data so the core stays
/// free of image code).
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// Preset name it came from ("efficientnet-lite", "torchvision", "cifar", or "custom").
    pub preset: String,
    /// "none", "center-crop-padded" (with `resize_param` = pad) or "shorter-side" (with
    /// `resize_param` = size).
    pub resize: String,
    pub resize_param: u32,
    /// Output height and width.
    pub crop: [u32; 2],
    /// "bilinear", "bicubic" or "nearest".
    pub interp: String,
    /// Per channel, in 0..255 pixel units: input = (pixel − mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Settings a conversion ran with, recorded for reproducibility.
#[derive(Clone, Debug, PartialEq)]
pub struct ConversionSettings {
    /// Neurons per unit by gate name, sorted by gate name.
    pub k: Vec<(String, u32)>,
    /// Closed-form units round to the nearest level (else truncate).
    pub rounding: bool,
    /// Calibration images used (0: default ranges).
    pub calibration_images: u32,
    /// Seed of every random choice in fitting.
    pub seed: u64,
    /// Version of amos that converted.
    pub tool_version: String,
    /// Descent budget and sample count of one-input fitted units (0: not recorded, a file
    /// from before they were).
    pub fit_steps: u32,
    pub fit_samples: u32,
}

impl ConvertedModel {
    /// Encodes `value` with an identity unit of `k` neurons over `[lo, hi]` (uniform K-bit
    /// code, o = lo), so that it can cross a stage boundary as spikes.
    ///
    /// A value that already is a unit's output needs no identity unit: its placement index is
    /// returned unchanged. Otherwise an `Identity` gate node is inserted right after the
    /// value's producer, every reader (and the graph output) is rewired to it, and the new
    /// placement's index is returned. The graph input is spike-coded by its pixel bits and is
    /// refused. `range` should come from calibration (values outside it are clipped).
    pub fn insert_identity_unit(
        &mut self,
        value: ValueId,
        k: usize,
        range: [f32; 2],
        rounding: Rounding,
    ) -> Result<usize, GraphError> {
        if value >= self.graph.values.len() {
            return Err(GraphError::Structure(format!(
                "value #{value} does not exist"
            )));
        }
        let Some(producer) = self.graph.nodes.iter().position(|n| n.output == value) else {
            return Err(GraphError::Structure(
                "the graph input is encoded by its pixel bits; it needs no identity unit".into(),
            ));
        };
        if let Some(existing) = self.units.iter().position(|u| u.node == producer) {
            return Ok(existing);
        }
        if !(range[0].is_finite() && range[1].is_finite() && range[0] < range[1]) {
            return Err(GraphError::Structure(format!(
                "identity range {range:?} is not an interval"
            )));
        }
        let unit = closed_form::identity(k, range[0], range[1], rounding);
        unit.validate().map_err(GraphError::Structure)?;
        // Quantisation error of the code over its range.
        let n = 4096;
        let mse = (0..n)
            .map(|i| {
                let x = range[0] + (range[1] - range[0]) * i as f32 / (n - 1) as f32;
                (unit.eval(x, 0.0).1 - x).powi(2) as f64
            })
            .sum::<f64>()
            / n as f64;
        let new_value = self.graph.values.len();
        let source = &self.graph.values[value];
        let name = format!("{}/identity", source.name);
        self.graph.values.push(Value {
            name: name.clone(),
            shape: source.shape.clone(),
        });
        for node in &mut self.graph.nodes[producer + 1..] {
            node.inputs
                .iter_mut()
                .filter(|v| **v == value)
                .for_each(|v| *v = new_value);
        }
        if self.graph.output == value {
            self.graph.output = new_value;
        }
        let node_name = format!("{}/identity", self.graph.nodes[producer].name);
        self.graph.nodes.insert(
            producer + 1,
            Node {
                name: node_name,
                op: Op::Activation(Activation::Identity),
                inputs: vec![value],
                output: new_value,
            },
        );
        for u in &mut self.units {
            if u.node > producer {
                u.node += 1;
            }
        }
        self.unit_params.push(UnitParams {
            unit,
            gate: GateKind::Identity,
            range,
            range2: None,
            mse: mse as f32,
            method: match rounding {
                Rounding::Nearest => "closed-form-rounding".into(),
                Rounding::Truncate => "closed-form".into(),
            },
        });
        let placement = UnitPlacement {
            node: producer + 1,
            gate: GateKind::Identity,
            params: self.unit_params.len() - 1,
        };
        let index = self.units.partition_point(|u| u.node < placement.node);
        self.units.insert(index, placement);
        self.graph.validate()?;
        Ok(index)
    }
}
