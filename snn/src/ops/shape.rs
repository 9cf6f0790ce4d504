//! Data movement: reshape, concatenation, constant padding.

use super::{batch_and_len, batched, make};
use crate::tensor::Tensor;

/// A new per-image shape with the same number of elements (Reshape, Flatten, Squeeze, Unsqueeze).
#[derive(Clone, Debug, PartialEq)]
pub struct Reshape {
    pub shape: Vec<usize>,
}

impl Reshape {
    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        let (a, b) = (
            x.iter().product::<usize>(),
            self.shape.iter().product::<usize>(),
        );
        if a != b {
            return Err(format!(
                "cannot reshape {x:?} ({a} values) to {:?} ({b} values)",
                self.shape
            ));
        }
        Ok(self.shape.clone())
    }
}

/// Concatenation along a per-image axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Concat {
    pub axis: usize,
}

impl Concat {
    pub(crate) fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let first = inputs[0];
        if self.axis >= first.len() {
            return Err(format!("axis {} out of range for {first:?}", self.axis));
        }
        let mut out = first.to_vec();
        out[self.axis] = 0;
        for s in inputs {
            let same_rest = s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (a, b))| i == self.axis || a == b);
            if !same_rest {
                return Err(format!(
                    "inputs {inputs:?} differ outside axis {}",
                    self.axis
                ));
            }
            out[self.axis] += s[self.axis];
        }
        Ok(out)
    }

    pub(crate) fn eval(&self, inputs: &[&Tensor], out_shape: &[usize]) -> Tensor {
        let n = inputs[0].shape()[0];
        let inner: usize = out_shape[self.axis + 1..].iter().product();
        let outer: usize = out_shape[..self.axis].iter().product();
        let mut out = Vec::with_capacity(n * out_shape.iter().product::<usize>());
        for o in 0..n * outer {
            for t in inputs {
                let block = t.shape()[self.axis + 1] * inner;
                out.extend_from_slice(&t.data()[o * block..(o + 1) * block]);
            }
        }
        make(batched(n, out_shape), out)
    }
}

/// Constant padding of every per-image axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Pad {
    pub begin: Vec<usize>,
    pub end: Vec<usize>,
    pub value: f32,
}

impl Pad {
    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        if self.begin.len() != x.len() || self.end.len() != x.len() {
            return Err(format!(
                "pads {:?}/{:?} do not match rank of {x:?}",
                self.begin, self.end
            ));
        }
        Ok(x.iter()
            .zip(self.begin.iter().zip(&self.end))
            .map(|(d, (b, e))| d + b + e)
            .collect())
    }

    pub(crate) fn eval(&self, x: &Tensor, out_shape: &[usize]) -> Tensor {
        let (n, per) = batch_and_len(x);
        let dims = &x.shape()[1..];
        let rank = dims.len();
        if rank == 0 {
            return x.clone();
        }
        let out_len: usize = out_shape.iter().product();
        let mut out = vec![self.value; n * out_len];
        let mut ostrides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            ostrides[i] = ostrides[i + 1] * out_shape[i + 1];
        }
        let inner = dims.last().copied().unwrap_or(1);
        if per > 0 && inner > 0 {
            for b in 0..n {
                let src = &x.data()[b * per..(b + 1) * per];
                let dst = &mut out[b * out_len..(b + 1) * out_len];
                for (row, line) in src.chunks(inner).enumerate() {
                    // Multi-index of this row over all axes but the last.
                    let (mut r, mut o) = (row, 0);
                    for i in (0..rank - 1).rev() {
                        o += (r % dims[i] + self.begin[i]) * ostrides[i];
                        r /= dims[i];
                    }
                    o += self.begin[rank - 1];
                    dst[o..o + inner].copy_from_slice(line);
                }
            }
        }
        make(batched(n, out_shape), out)
    }
}
