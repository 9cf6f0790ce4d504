//! Errors of conversion and evaluation.

use thiserror::Error;

/// Why a conversion, calibration or evaluation failed.
#[derive(Debug, Error)]
pub enum ConvertError {
    #[error(transparent)]
    Import(#[from] crate::onnx::ImportError),
    #[error(transparent)]
    Data(#[from] amos_io::data::DataError),
    #[error(transparent)]
    Engine(#[from] amos_snn::EngineError),
    #[error(transparent)]
    Graph(#[from] amos_snn::GraphError),
    #[error(transparent)]
    ModelFile(#[from] amos_snn::model_file::ModelFileError),
    /// Settings that do not fit the model.
    #[error("{0}")]
    Settings(String),
    /// The ONNX Runtime side of `bench` failed.
    #[error("ONNX Runtime benchmark: {0}")]
    Bench(String),
}
