//! `amos-converter`: ONNX import and the commands of `amos-convert`.
//!
//! - [`onnx`]: ONNX → [`amos_snn::Graph`], operators by family, constants folded.
//! - [`eval`]: single-process evaluation of a model on a dataset.

pub mod onnx;
