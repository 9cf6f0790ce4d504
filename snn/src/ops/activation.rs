//! Elementwise nonlinearities: the one-input gates of a network.

use rayon::prelude::*;

use super::GateKind;
use crate::tensor::Tensor;

/// An elementwise nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// `min(max(x, lo), hi)`; ReLU6 is `Clip { lo: 0, hi: 6 }`.
    Clip {
        lo: f32,
        hi: f32,
    },
    Sigmoid,
    /// `x·sigmoid(x)`, recognised from the Sigmoid + Mul pattern.
    Swish,
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x·max(0, min(1, x/6 + 1/2))`.
    HardSwish,
    Tanh,
    /// `x/2·(1 + erf(x/√2))`, recognised from the Erf pattern.
    Gelu,
    Erf,
    /// `x`: marks a tensor that crosses a stage boundary, encoded by an identity unit in SNN
    /// mode (see [`crate::model::ConvertedModel::insert_identity_unit`]).
    Identity,
}

impl Activation {
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::Clip { .. } => "Clip",
            Activation::Sigmoid => "Sigmoid",
            Activation::Swish => "Swish",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::Tanh => "Tanh",
            Activation::Gelu => "Gelu",
            Activation::Erf => "Erf",
            Activation::Identity => "IdentityUnit",
        }
    }

    /// The gate type this activation is converted as.
    pub fn gate(&self) -> GateKind {
        match *self {
            Activation::Relu => GateKind::Relu,
            Activation::Clip { lo, hi } if lo == 0.0 && hi == f32::INFINITY => GateKind::Relu,
            Activation::Clip { lo, hi } if lo == 0.0 && hi == 6.0 => GateKind::Relu6,
            Activation::Clip { .. } => GateKind::Clip,
            Activation::Sigmoid => GateKind::Sigmoid,
            Activation::Swish => GateKind::Swish,
            Activation::HardSigmoid { .. } => GateKind::HardSigmoid,
            Activation::HardSwish => GateKind::HardSwish,
            Activation::Tanh => GateKind::Tanh,
            Activation::Gelu => GateKind::Gelu,
            Activation::Erf => GateKind::Erf,
            Activation::Identity => GateKind::Identity,
        }
    }

    /// The function itself, on one value.
    #[inline]
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Activation::Relu => x.max(0.0),
            Activation::Clip { lo, hi } => x.max(lo).min(hi),
            Activation::Sigmoid => sigmoid(x),
            Activation::Swish => x * sigmoid(x),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::Erf => libm::erff(x),
            Activation::Identity => x,
        }
    }

    /// The activation of every element, in one pass (read `x`, write the output). The
    /// common gates get loops of their own, free of the per-element match of
    /// [`Activation::apply`] (same expressions, so the same results).
    pub(crate) fn eval(&self, x: &Tensor) -> Tensor {
        let data = match *self {
            Activation::Relu => map(x.data(), |v| v.max(0.0)),
            Activation::Clip { lo, hi } => map(x.data(), move |v| v.max(lo).min(hi)),
            Activation::Identity => x.data().to_vec(),
            a => map(x.data(), move |v| a.apply(v)),
        };
        Tensor::new(x.shape().to_vec(), data).unwrap_or_else(|_| super::unreachable_shape())
    }
}

/// `f` of every element, in parallel over large chunks.
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, &v)| *o = f(v)));
    out
}

/// The logistic function, written to stay finite for any input.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
