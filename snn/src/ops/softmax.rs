//! Softmax at the network's output.

use super::{batch_and_len, make};
use crate::tensor::Tensor;

/// Softmax over one per-image axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Softmax {
    pub axis: usize,
}

impl Softmax {
    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        if self.axis >= x.len() {
            return Err(format!("axis {} out of range for shape {x:?}", self.axis));
        }
        Ok(x.to_vec())
    }

    pub(crate) fn eval(&self, x: &Tensor) -> Tensor {
        let (n, per) = batch_and_len(x);
        let dims = &x.shape()[1..];
        let axis_len = dims[self.axis];
        let inner: usize = dims[self.axis + 1..].iter().product();
        let outer = n * per / (axis_len * inner).max(1);
        let mut out = x.data().to_vec();
        for o in 0..outer {
            for i in 0..inner {
                let base = o * axis_len * inner + i;
                let idx = |a: usize| base + a * inner;
                let max = (0..axis_len)
                    .map(|a| out[idx(a)])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for a in 0..axis_len {
                    let e = (out[idx(a)] - max).exp();
                    out[idx(a)] = e;
                    sum += e;
                }
                for a in 0..axis_len {
                    out[idx(a)] /= sum;
                }
            }
        }
        make(x.shape().to_vec(), out)
    }
}
