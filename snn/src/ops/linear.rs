//! Fully-connected layers and per-channel affine maps.

use super::matmul::rows_times_matrix;
use super::{batch_and_len, make};
use crate::tensor::Tensor;

/// `y = x·W + b` over the last axis (ONNX Gemm, or MatMul with a constant followed by a bias).
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// `[in, out]`.
    pub weight: Tensor,
    /// `out` values.
    pub bias: Vec<f32>,
}

impl Linear {
    pub fn in_features(&self) -> usize {
        self.weight.shape()[0]
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape()[1]
    }

    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        if self.weight.shape().len() != 2 || self.bias.len() != self.out_features() {
            return Err(format!(
                "weight {:?} and {} biases do not fit",
                self.weight.shape(),
                self.bias.len()
            ));
        }
        match x.last() {
            Some(&k) if k == self.in_features() => {
                let mut s = x.to_vec();
                if let Some(l) = s.last_mut() {
                    *l = self.out_features();
                }
                Ok(s)
            }
            _ => Err(format!(
                "input {x:?} does not end in the weight's {} input features",
                self.in_features()
            )),
        }
    }

    /// Every row of every image at once, each with the bits it has alone
    /// ([`rows_times_matrix`]): an image's result does not depend on the batch it came in.
    pub(crate) fn eval(&self, x: &Tensor) -> Tensor {
        let (k, n_out) = (self.in_features(), self.out_features());
        let rows = x.len().checked_div(k).unwrap_or(0);
        let mut out = vec![0.0f32; rows * n_out];
        rows_times_matrix(
            rows,
            n_out,
            k,
            x.data(),
            self.weight.data(),
            &self.bias,
            &mut out,
        );
        let mut shape = x.shape().to_vec();
        if let Some(l) = shape.last_mut() {
            *l = n_out;
        }
        make(shape, out)
    }
}

/// `y[c] = x[c]·scale[c] + shift[c]` over the first per-image axis (a standalone batch norm).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAffine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl ChannelAffine {
    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        match x.first() {
            Some(&c) if c == self.scale.len() && c == self.shift.len() => Ok(x.to_vec()),
            _ => Err(format!(
                "input {x:?} does not have {} channels first",
                self.scale.len()
            )),
        }
    }

    pub(crate) fn eval(&self, x: &Tensor) -> Tensor {
        let (_, per) = batch_and_len(x);
        let c = self.scale.len();
        let plane = per.checked_div(c).unwrap_or(0);
        let mut out = x.data().to_vec();
        if plane > 0 {
            for (i, chunk) in out.chunks_mut(plane).enumerate() {
                let (s, b) = (self.scale[i % c], self.shift[i % c]);
                chunk.iter_mut().for_each(|v| *v = *v * s + b);
            }
        }
        make(x.shape().to_vec(), out)
    }
}
