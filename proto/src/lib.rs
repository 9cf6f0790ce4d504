//! Protocol buffer types of amos.
//!
//! - [`onnx`]: the ONNX model schema, generated from the vendored `proto/onnx.proto`
//!   (Apache-2.0, the ONNX project) by `protox` and `prost`.

/// Types of the ONNX model format (`onnx.proto`, proto2).
#[allow(clippy::all, missing_docs)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
