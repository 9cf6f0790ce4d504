//! Elementwise arithmetic with numpy broadcasting: Add, Sub, Mul, Div.
//!
//! Either both operands are runtime tensors (a residual sum, the squeeze-and-excitation
//! product) or one is a constant folded into the operator.

use rayon::prelude::*;

use super::{batched, make};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryKind {
    #[inline]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryKind::Add => a + b,
            BinaryKind::Sub => a - b,
            BinaryKind::Mul => a * b,
            BinaryKind::Div => a / b,
        }
    }
}

/// A constant operand, with a shape that broadcasts against one image.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryConstant {
    pub tensor: Tensor,
    /// The constant is the left operand (`c − x`, `c / x`).
    pub on_left: bool,
}

/// `a ∘ b` elementwise, broadcasting per image.
#[derive(Clone, Debug, PartialEq)]
pub struct Binary {
    pub kind: BinaryKind,
    /// `None`: both operands are runtime inputs.
    pub constant: Option<BinaryConstant>,
}

impl Binary {
    pub fn name(&self) -> &'static str {
        match self.kind {
            BinaryKind::Add => "Add",
            BinaryKind::Sub => "Sub",
            BinaryKind::Mul => "Mul",
            BinaryKind::Div => "Div",
        }
    }

    /// Operand shapes in order (left, right), constants included.
    fn operand_shapes<'a>(&'a self, inputs: &[&'a [usize]]) -> (&'a [usize], &'a [usize]) {
        match &self.constant {
            None => (inputs[0], inputs[1]),
            Some(c) if c.on_left => (c.tensor.shape(), inputs[0]),
            Some(c) => (inputs[0], c.tensor.shape()),
        }
    }

    pub(crate) fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (a, b) = self.operand_shapes(inputs);
        let out = broadcast_shape(a, b)?;
        if self.constant.is_some() && out != inputs[0] {
            // A constant that enlarges the runtime tensor would copy it per image: not a layer.
            return Err(format!(
                "constant of shape {:?} would broadcast the input {:?} to {out:?}",
                self.constant.as_ref().map(|c| c.tensor.shape()),
                inputs[0]
            ));
        }
        Ok(out)
    }

    pub(crate) fn eval(&self, inputs: &[&Tensor], out_shape: &[usize]) -> Tensor {
        let n = inputs[0].shape()[0];
        // (data, full shape with batch, batch stride is zero for constants)
        fn runtime(t: &Tensor) -> (&[f32], Vec<usize>, bool) {
            (t.data(), t.shape()[1..].to_vec(), true)
        }
        let (lhs, rhs) = match &self.constant {
            None => (runtime(inputs[0]), runtime(inputs[1])),
            Some(c) => {
                let k = (c.tensor.data(), c.tensor.shape().to_vec(), false);
                if c.on_left {
                    (k, runtime(inputs[0]))
                } else {
                    (runtime(inputs[0]), k)
                }
            }
        };
        let rank = out_shape.len();
        let strides = |shape: &[usize], per_batch: bool, len: usize| -> Vec<usize> {
            // Right-align `shape` to `out_shape`; broadcast dimensions get stride 0.
            let mut s = vec![0; rank + 1];
            let mut acc = 1;
            for (i, &d) in shape.iter().enumerate().rev() {
                let o = rank - (shape.len() - i);
                s[o + 1] = if d == 1 { 0 } else { acc };
                acc *= d;
            }
            s[0] = if per_batch { len } else { 0 };
            s
        };
        let sa = strides(&lhs.1, lhs.2, lhs.1.iter().product());
        let sb = strides(&rhs.1, rhs.2, rhs.1.iter().product());
        let full = batched(n, out_shape);
        let inner = *full.last().unwrap_or(&1);
        let total: usize = full.iter().product();
        let mut out = vec![0.0f32; total];
        let (a, b, kind) = (lhs.0, rhs.0, self.kind);
        if inner == 0 {
            return make(full, out);
        }
        let (ia, ib) = (sa[rank], sb[rank]);
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(row, dst)| {
                // Offsets of this row in each operand from its multi-index over the outer dims.
                let (mut oa, mut ob, mut r) = (0, 0, row);
                for d in (0..rank).rev() {
                    let extent = full[d];
                    let i = r % extent;
                    r /= extent;
                    oa += i * sa[d];
                    ob += i * sb[d];
                }
                match (ia, ib) {
                    (1, 1) => {
                        for ((o, &x), &y) in dst
                            .iter_mut()
                            .zip(&a[oa..oa + inner])
                            .zip(&b[ob..ob + inner])
                        {
                            *o = kind.apply(x, y);
                        }
                    }
                    _ => {
                        for (j, o) in dst.iter_mut().enumerate() {
                            *o = kind.apply(a[oa + j * ia], b[ob + j * ib]);
                        }
                    }
                }
            });
        make(full, out)
    }
}

/// The numpy broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}
