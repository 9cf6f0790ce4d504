//! Import errors: each names the file, the node (with its op type and the opset) or the field.

use std::path::PathBuf;

use thiserror::Error;

/// Why an ONNX model could not be imported.
#[derive(Debug, Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid ONNX model (protobuf decoding failed: {source}); is the file truncated?"
    )]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("{0}")]
    Opset(String),
    /// A node that cannot be imported: unsupported operator or attribute, bad shapes.
    #[error("node '{node}' ({op_type}, opset {opset}): {detail}")]
    Node {
        node: String,
        op_type: String,
        opset: i64,
        detail: String,
    },
    /// An initializer or constant tensor that cannot be read.
    #[error("tensor '{name}': {detail}")]
    Tensor { name: String, detail: String },
    /// A problem with the graph as a whole (inputs, outputs, dangling names).
    #[error("graph: {0}")]
    Graph(String),
}
