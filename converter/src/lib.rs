//! `amos-converter`: ONNX import and the library behind `amos-convert`.
//!
//! - [`onnx`]: ONNX → [`amos_snn::Graph`], operators by family, constants folded.
//! - [`inspect`]: what a model holds and which nodes conversion replaces.
//! - [`eval`]: single-process evaluation of a model on a dataset.

pub mod eval;
pub mod inspect;
pub mod onnx;
