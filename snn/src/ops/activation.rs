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

    /// The activation of every element, in one pass (read `x`, write the output).
    pub(crate) fn eval(&self, x: &Tensor) -> Tensor {
        let mut data = vec![0.0f32; x.len()];
        data.par_chunks_mut(1 << 14)
            .zip(x.data().par_chunks(1 << 14))
            .for_each(|(o, i)| {
                o.copy_from_slice(i);
                self.apply_in_place(o);
            });
        Tensor::new(x.shape().to_vec(), data).unwrap_or_else(|_| super::unreachable_shape())
    }

    /// The activation of every element of `values`, in place. The common gates get loops of
    /// their own, free of the per-element match of [`Activation::apply`], so that they
    /// vectorise (same expressions, so the same results).
    pub fn apply_in_place(&self, values: &mut [f32]) {
        apply_in_place(*self, values);
    }
}

/// [`Activation::apply_in_place`], compiled for AVX2 too and chosen at run time (the same
/// operations, so the same bits).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn apply_in_place(activation: Activation, values: &mut [f32]) {
    match activation {
        Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Clip { lo, hi } => values.iter_mut().for_each(|v| *v = v.max(lo).min(hi)),
        Activation::HardSigmoid { alpha, beta } => values
            .iter_mut()
            .for_each(|v| *v = (alpha * *v + beta).clamp(0.0, 1.0)),
        Activation::HardSwish => values
            .iter_mut()
            .for_each(|v| *v *= (*v / 6.0 + 0.5).clamp(0.0, 1.0)),
        Activation::Identity => {}
        a => values.iter_mut().for_each(|v| *v = a.apply(*v)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice loops are the per-value definition, bit for bit, on ordinary values,
    /// signed zeros, infinities and NaN.
    #[test]
    fn in_place_loops_match_the_definition_bit_for_bit() {
        let mut values: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.00371).collect();
        values.extend([
            0.0,
            -0.0,
            6.0,
            -3.0,
            3.0,
            f32::INFINITY,
            -f32::INFINITY,
            f32::NAN,
        ]);
        let all = [
            Activation::Relu,
            Activation::Clip { lo: 0.0, hi: 6.0 },
            Activation::Clip { lo: -1.5, hi: 2.25 },
            Activation::Sigmoid,
            Activation::Swish,
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Activation::HardSwish,
            Activation::Tanh,
            Activation::Gelu,
            Activation::Erf,
            Activation::Identity,
        ];
        for a in all {
            let mut got = values.clone();
            a.apply_in_place(&mut got);
            for (x, y) in values.iter().zip(&got) {
                assert_eq!(a.apply(*x).to_bits(), y.to_bits(), "{a:?} at {x}");
            }
            let tensor = Tensor::new(vec![values.len()], values.clone()).unwrap();
            let evaluated = a.eval(&tensor);
            assert!(
                evaluated
                    .data()
                    .iter()
                    .zip(&got)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
            );
        }
    }
}
