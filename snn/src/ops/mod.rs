//! Operators of the IR, one module per family (as in tract's `core/src/ops/`).
//!
//! Every operator works on per-image shapes: the batch dimension is implicit, never an axis an
//! operator can touch. Each family module holds the operator's parameters, its shape rule and
//! its batched CPU kernel.

pub mod activation;
pub mod binary;
pub mod conv;
mod depthwise;
pub mod exp;
pub mod linear;
pub mod matmul;
pub mod pool;
pub mod shape;
pub mod softmax;
#[cfg(target_arch = "x86_64")]
mod transpose;

use crate::tensor::Tensor;

pub use activation::Activation;
pub use binary::{Binary, BinaryKind};
pub use conv::Conv2d;
pub use linear::{ChannelAffine, Linear};
pub use pool::{AvgPool2d, MaxPool2d, ReduceMean};
pub use shape::{Concat, Pad, Reshape};
pub use softmax::Softmax;

/// One IR operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv(Conv2d),
    Linear(Linear),
    /// Per-channel `x·scale + shift` (a batch norm that follows no convolution).
    ChannelAffine(ChannelAffine),
    Binary(Binary),
    Activation(Activation),
    MaxPool(MaxPool2d),
    AvgPool(AvgPool2d),
    GlobalAvgPool,
    ReduceMean(ReduceMean),
    Reshape(Reshape),
    Concat(Concat),
    Pad(Pad),
    Softmax(Softmax),
    /// Passes its input through; left behind by rewrites and removed by [`crate::Graph::compact`].
    Identity,
}

/// The nonlinear gates that AMOS conversion replaces by spiking units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GateKind {
    Relu,
    Relu6,
    /// A clip to bounds other than ReLU's or ReLU6's.
    Clip,
    Sigmoid,
    Swish,
    HardSigmoid,
    HardSwish,
    Tanh,
    Gelu,
    /// An `erf` outside the GELU pattern.
    Erf,
    /// The product of two runtime tensors (squeeze-and-excitation).
    Mul,
    MaxPool,
    /// A tensor that is not a unit's output, encoded where it crosses a stage boundary.
    Identity,
}

impl GateKind {
    /// The gate's name in reports, CLI flags and the results schema.
    pub fn name(self) -> &'static str {
        match self {
            GateKind::Relu => "relu",
            GateKind::Relu6 => "relu6",
            GateKind::Clip => "clip",
            GateKind::Sigmoid => "sigmoid",
            GateKind::Swish => "swish",
            GateKind::HardSigmoid => "hard_sigmoid",
            GateKind::HardSwish => "hard_swish",
            GateKind::Tanh => "tanh",
            GateKind::Gelu => "gelu",
            GateKind::Erf => "erf",
            GateKind::Mul => "mul",
            GateKind::MaxPool => "max_pool",
            GateKind::Identity => "identity",
        }
    }
}

/// How conversion treats a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Affine in its runtime inputs: computed exactly from the incoming spikes' decoded values.
    Linear,
    /// A nonlinearity to be replaced by an AMOS unit.
    Gate(GateKind),
    /// The output normalisation (softmax): monotone, evaluated outside the spiking network.
    Output,
}

impl Op {
    /// A short name for histograms and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(c) if c.is_depthwise() => "DepthwiseConv",
            Op::Conv(_) => "Conv",
            Op::Linear(_) => "Linear",
            Op::ChannelAffine(_) => "ChannelAffine",
            Op::Binary(b) => b.name(),
            Op::Activation(a) => a.name(),
            Op::MaxPool(_) => "MaxPool",
            Op::AvgPool(_) => "AvgPool",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::ReduceMean(_) => "ReduceMean",
            Op::Reshape(_) => "Reshape",
            Op::Concat(_) => "Concat",
            Op::Pad(_) => "Pad",
            Op::Softmax(_) => "Softmax",
            Op::Identity => "Identity",
        }
    }

    /// Whether conversion keeps this node exact or replaces it by a unit.
    pub fn class(&self) -> OpClass {
        match self {
            Op::Activation(a) => OpClass::Gate(a.gate()),
            Op::Binary(b) if b.kind == BinaryKind::Mul && b.constant.is_none() => {
                OpClass::Gate(GateKind::Mul)
            }
            Op::MaxPool(_) => OpClass::Gate(GateKind::MaxPool),
            Op::Softmax(_) => OpClass::Output,
            _ => OpClass::Linear,
        }
    }

    /// Number of trained parameters (weights, biases, constants) the operator holds.
    pub fn param_count(&self) -> usize {
        match self {
            Op::Conv(c) => c.weight.len() + c.bias.len(),
            Op::Linear(l) => l.weight.len() + l.bias.len(),
            Op::ChannelAffine(a) => a.scale.len() + a.shift.len(),
            Op::Binary(b) => b.constant.as_ref().map_or(0, |c| c.tensor.len()),
            _ => 0,
        }
    }

    /// Number of runtime inputs the operator takes (`None`: any number ≥ 1).
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Binary(b) if b.constant.is_none() => Some(2),
            Op::Concat(_) => None,
            _ => Some(1),
        }
    }

    /// The per-image output shape for per-image input shapes, or why they do not fit.
    pub fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        if let Some(n) = self.arity() {
            if inputs.len() != n {
                return Err(format!("expects {n} runtime inputs, got {}", inputs.len()));
            }
        } else if inputs.is_empty() {
            return Err("expects at least one input".into());
        }
        let x = inputs[0];
        match self {
            Op::Conv(c) => c.output_shape(x),
            Op::Linear(l) => l.output_shape(x),
            Op::ChannelAffine(a) => a.output_shape(x),
            Op::Binary(b) => b.output_shape(inputs),
            Op::Activation(_) | Op::Identity => Ok(x.to_vec()),
            Op::MaxPool(p) => p.output_shape(x),
            Op::AvgPool(p) => p.output_shape(x),
            Op::GlobalAvgPool => pool::global_output_shape(x),
            Op::ReduceMean(r) => r.output_shape(x),
            Op::Reshape(r) => r.output_shape(x),
            Op::Concat(c) => c.output_shape(inputs),
            Op::Pad(p) => p.output_shape(x),
            Op::Softmax(s) => s.output_shape(x),
        }
    }

    /// Runs the operator on batched inputs (`[N, per-image shape…]`) whose shapes were
    /// validated by [`Op::output_shape`]; `out_shape` is the per-image output shape.
    pub fn eval(&self, inputs: &[&Tensor], out_shape: &[usize], threads: usize) -> Tensor {
        let x = inputs[0];
        match self {
            Op::Conv(c) => c.eval(x, out_shape, threads),
            Op::Linear(l) => l.eval(x),
            Op::ChannelAffine(a) => a.eval(x),
            Op::Binary(b) => b.eval(inputs, out_shape),
            Op::Activation(a) => a.eval(x),
            Op::MaxPool(p) => p.eval(x, out_shape),
            Op::AvgPool(p) => p.eval(x, out_shape),
            Op::GlobalAvgPool => pool::global_avg_pool(x),
            Op::ReduceMean(r) => r.eval(x, out_shape),
            Op::Reshape(_) | Op::Identity => {
                let mut shape = vec![x.shape()[0]];
                shape.extend_from_slice(out_shape);
                Tensor::new(shape, x.data().to_vec()).unwrap_or_else(|_| unreachable_shape())
            }
            Op::Concat(c) => c.eval(inputs, out_shape),
            Op::Pad(p) => p.eval(x, out_shape),
            Op::Softmax(s) => s.eval(x),
        }
    }
}

/// Shapes are validated when a node is added to a graph and when a batch enters the engine,
/// so a kernel never sees a tensor whose length disagrees with its shape.
#[cold]
pub(crate) fn unreachable_shape() -> ! {
    unreachable!("tensor shapes are validated before kernels run")
}

/// The batch size and per-image element count of a batched tensor.
pub(crate) fn batch_and_len(x: &Tensor) -> (usize, usize) {
    let n = x.shape().first().copied().unwrap_or(1);
    let per = x.len().checked_div(n).unwrap_or(0);
    (n, per)
}

/// Prepends the batch dimension `n` to a per-image shape.
pub(crate) fn batched(n: usize, shape: &[usize]) -> Vec<usize> {
    let mut s = Vec::with_capacity(shape.len() + 1);
    s.push(n);
    s.extend_from_slice(shape);
    s
}

/// A tensor built by a kernel from data it sized itself.
pub(crate) fn make(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
    Tensor::new(shape, data).unwrap_or_else(|_| unreachable_shape())
}
