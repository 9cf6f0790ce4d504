//! A converted model: the network, its AMOS units and everything needed to evaluate it.
//!
//! This is the in-memory form of the `.amos` model file (ARCHITECTURE.md §4); the codec is
//! in [`crate::model_file`].

use crate::amos::AmosUnit;
use crate::graph::Graph;
use crate::ops::GateKind;

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
}
