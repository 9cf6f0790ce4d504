//! Protocol buffer types of amos.
//!
//! - [`onnx`]: the ONNX model schema, generated from the vendored `proto/onnx.proto`
//!   (Apache-2.0, the ONNX project) by `protox` and `prost`.
//! - [`model`]: the metadata message of the `.amos` model file (`proto/amos_model.proto`,
//!   ARCHITECTURE.md §4); the codec is `amos_snn::model_file`.

/// Types of the ONNX model format (`onnx.proto`, proto2).
#[allow(clippy::all, missing_docs)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Metadata of the `.amos` model file (`amos_model.proto`, proto3, package `amos.model`).
#[allow(clippy::all, missing_docs)]
pub mod model {
    include!(concat!(env!("OUT_DIR"), "/amos.model.rs"));
}
