//! Protocol buffer types of amos.
//!
//! - [`onnx`]: the ONNX model schema, generated from the vendored `proto/onnx.proto`
//!   (Apache-2.0, the ONNX project) by `protox` and `prost`.
//! - [`model`]: the metadata message of the `.amos` model file (`proto/amos_model.proto`,
//!   ARCHITECTURE.md §4); the codec is `amos_snn::model_file`.
//! - [`pipeline`]: the gRPC services of the evaluation pipeline (`proto/amos_pipeline.proto`):
//!   stages of a chain, the packed spike tensor, the coordinator's control plane.

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

/// The pipeline's gRPC services and messages (`amos_pipeline.proto`, package
/// `amos.pipeline.v1`), with tonic clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod pipeline {
    include!(concat!(env!("OUT_DIR"), "/amos.pipeline.v1.rs"));
}
