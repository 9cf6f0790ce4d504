//! The amos core: synchronous and I/O-free.
//!
//! - [`graph`]: the IR, independent of ONNX: per-image values, operators by family in
//!   [`ops`], each node classified as linear or as a gate ([`ops::OpClass`]).
//! - [`passes`]: rewrites from an imported graph to the conversion form (batch norm and
//!   padding folded into convolutions; swish, hard-swish and GELU recognised).
//! - [`engine`]: the batched, multi-threaded CPU engine (its freed buffers reused as
//!   convolution outputs by `recycle`).
//! - [`amos`]: AMOS units (exact semantics, closed forms, fitting).
//! - [`model`], [`model_file`]: the converted model and its `.amos` file codec.
//! - [`simulate`]: SNN mode with spike and synaptic-operation counts.
//! - [`spike_codec`]: packed spike tensors, as sent between pipeline stages.
//! - [`planner`]: splits a converted model into pipeline stages.
//! - [`pipeline`]: one pipeline stage, from received spikes to sent spikes (or logits).
//!
//! ```
//! use amos_snn::{Engine, Graph, Tensor};
//! use amos_snn::ops::{Activation, Op};
//!
//! let mut g = Graph::new("x", vec![3]);
//! g.add_node("relu", Op::Activation(Activation::Relu), vec![g.input], "y").unwrap();
//! let engine = Engine::new(g, 1).unwrap();
//! let y = engine.run(Tensor::new(vec![1, 3], vec![-1.0, 0.5, 2.0]).unwrap()).unwrap();
//! assert_eq!(y.data(), &[0.0, 0.5, 2.0]);
//! ```

pub mod amos;
pub mod engine;
pub mod error;
pub mod graph;
pub mod model;
pub mod model_file;
pub mod ops;
pub mod passes;
pub mod pipeline;
pub mod planner;
mod recycle;
pub mod simulate;
pub mod spike_codec;
pub mod tensor;
#[cfg(test)]
mod testing;

pub use engine::Engine;
pub use error::{EngineError, GraphError};
pub use graph::{Graph, Node, Value, ValueId};
pub use tensor::Tensor;
