//! Errors of the core library.

use thiserror::Error;

/// An invalid graph, operator or tensor.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GraphError {
    /// A node whose inputs do not fit its operator.
    #[error("node '{node}' ({op}): {detail}")]
    Node {
        node: String,
        op: &'static str,
        detail: String,
    },
    /// Tensor data that does not fit its shape.
    #[error("tensor: {0}")]
    Tensor(String),
    /// A graph that is not well formed (dangling value, cycle, missing output).
    #[error("graph: {0}")]
    Structure(String),
}

/// A failure while running a graph.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    /// The batch does not have the graph input's per-image shape.
    #[error(
        "input has shape {got:?}; the model expects [N, {}]",
        fmt_dims(expected)
    )]
    InputShape {
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// The thread pool could not be created.
    #[error("thread pool: {0}")]
    ThreadPool(String),
    /// A pipeline stage was given inputs or a node range that do not fit the graph.
    #[error("pipeline stage: {0}")]
    Stage(String),
}

fn fmt_dims(d: &[usize]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
