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
        let total: usize = full.iter().product();
        let mut out = vec![0.0f32; total];
        let (a, b, kind) = (lhs.0, rhs.0, self.kind);
        if total == 0 {
            return make(full, out);
        }
        // Rows as long as both operands allow: a dimension joins the one inside it where
        // each operand steps over it as over that many inner rows (contiguous, or both
        // broadcast). A squeeze-and-excitation product `[C, H, W] · [C, 1, 1]` is then C rows
        // of H·W against one value each, instead of C·H rows of W.
        let (full_dims, sa, sb) = coalesce(&full, &sa, &sb);
        let (full, rank) = (full_dims, sa.len() - 1);
        let inner = full[rank];
        let (ia, ib) = (sa[rank], sb[rank]);
        // Whole rows per task, about 16 Ki elements: a 7×7 plane's rows are 7 long.
        let rows_per_task = (1usize << 14).div_ceil(inner);
        out.par_chunks_mut(inner * rows_per_task)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (k, dst) in chunk.chunks_mut(inner).enumerate() {
                    // Offsets of this row in each operand from its multi-index over the outer
                    // dims.
                    let (mut oa, mut ob, mut r) = (0, 0, task * rows_per_task + k);
                    for d in (0..rank).rev() {
                        let extent = full[d];
                        let i = r % extent;
                        r /= extent;
                        oa += i * sa[d];
                        ob += i * sb[d];
                    }
                    match kind {
                        BinaryKind::Add => row(dst, a, b, [oa, ob], [ia, ib], |x, y| x + y),
                        BinaryKind::Sub => row(dst, a, b, [oa, ob], [ia, ib], |x, y| x - y),
                        BinaryKind::Mul => row(dst, a, b, [oa, ob], [ia, ib], |x, y| x * y),
                        BinaryKind::Div => row(dst, a, b, [oa, ob], [ia, ib], |x, y| x / y),
                    }
                }
            });
        make(batched(n, out_shape), out)
    }
}

/// `full`'s dimensions (the batch first) with the operands' strides `sa` and `sb`, each
/// dimension merged into the one inside it where both operands step over it as over that
/// many of the inner one's elements; dimensions of extent 1 dropped. The output, contiguous,
/// always allows the merge, so its row-major order is unchanged.
fn coalesce(full: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    // Innermost first.
    let mut merged: Vec<(usize, usize, usize)> = Vec::new();
    for ((&e, &a), &b) in full.iter().zip(sa).zip(sb).rev() {
        match merged.last_mut() {
            Some(_) if e == 1 => {}
            Some((inner, ia, ib)) if a == *ia * *inner && b == *ib * *inner => *inner *= e,
            _ => merged.push((e, a, b)),
        }
    }
    merged.reverse();
    let full = merged.iter().map(|m| m.0).collect();
    let sa = merged.iter().map(|m| m.1).collect();
    let sb = merged.iter().map(|m| m.2).collect();
    (full, sa, sb)
}

/// One output row: `dst[j] = f(a[oa + j·ia], b[ob + j·ib])`, with loops of their own for
/// the common strides (both contiguous, one operand a single value), which vectorise.
#[inline]
fn row(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    [oa, ob]: [usize; 2],
    [ia, ib]: [usize; 2],
    f: impl Fn(f32, f32) -> f32,
) {
    let n = dst.len();
    match (ia, ib) {
        (1, 1) => {
            for ((o, &x), &y) in dst.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                *o = f(x, y);
            }
        }
        (1, 0) => {
            let y = b[ob];
            for (o, &x) in dst.iter_mut().zip(&a[oa..oa + n]) {
                *o = f(x, y);
            }
        }
        (0, 1) => {
            let x = a[oa];
            for (o, &y) in dst.iter_mut().zip(&b[ob..ob + n]) {
                *o = f(x, y);
            }
        }
        _ => {
            for (j, o) in dst.iter_mut().enumerate() {
                *o = f(a[oa + j * ia], b[ob + j * ib]);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `a ∘ b` by numpy's rule per image, element by element: each operand's per-image
    /// shape right-aligned to the output's, a dimension of 1 read at index 0; an operand
    /// with one image (a constant) serves every image.
    fn naive(a: &Tensor, b: &Tensor, out: &[usize], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
        let index = |t: &Tensor, image: usize, at: &[usize]| {
            let shape = &t.shape()[1..];
            let skip = at.len() - shape.len();
            let within = shape
                .iter()
                .zip(&at[skip..])
                .fold(0, |i, (&d, &x)| i * d + if d == 1 { 0 } else { x });
            let image = if t.shape()[0] == 1 { 0 } else { image };
            image * shape.iter().product::<usize>() + within
        };
        let per_image: usize = out[1..].iter().product();
        (0..out[0] * per_image)
            .map(|flat| {
                let (image, mut rest) = (flat / per_image, flat % per_image);
                let mut at = vec![0; out.len() - 1];
                for (x, &d) in at.iter_mut().zip(&out[1..]).rev() {
                    *x = rest % d;
                    rest /= d;
                }
                f(
                    a.data()[index(a, image, &at)],
                    b.data()[index(b, image, &at)],
                )
            })
            .collect()
    }

    /// Runtime operands and constants, each shape against numpy's rule: merged rows
    /// (per-channel scalars, whole planes), rows that cannot merge (a broadcast in the
    /// middle), dimensions of 1 anywhere, and a batch of 3.
    #[test]
    fn broadcasts_are_numpys() {
        let mut seed = 5u32;
        let mut rand = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        // (per-image left shape, per-image right shape)
        let cases: [(&[usize], &[usize]); 7] = [
            (&[4, 5, 6], &[4, 1, 1]),
            (&[4, 1, 1], &[4, 5, 6]),
            (&[4, 5, 6], &[4, 5, 6]),
            (&[4, 5, 6], &[1, 5, 1]),
            (&[4, 1, 6], &[1, 5, 1]),
            (&[1, 5, 6], &[4, 1, 6]),
            (&[3, 1, 7], &[1]),
        ];
        for (left, right) in cases {
            let out = broadcast_shape(left, right).unwrap();
            let tensor = |shape: &[usize], rand: &mut dyn FnMut() -> f32| {
                let shape = batched(3, shape);
                let len = shape.iter().product();
                Tensor::new(shape, (0..len).map(|_| rand()).collect()).unwrap()
            };
            let (a, b) = (tensor(left, &mut rand), tensor(right, &mut rand));
            let mul = Binary {
                kind: BinaryKind::Sub,
                constant: None,
            };
            let got = mul.eval(&[&a, &b], &out);
            assert_eq!(got.shape(), batched(3, &out).as_slice());
            let want = naive(&a, &b, &batched(3, &out), |x, y| x - y);
            assert_eq!(got.data(), want.as_slice(), "{left:?} - {right:?}");
            // The right operand as a constant (shared by the batch), where it does not
            // enlarge the left one.
            if out == left {
                let c: Vec<f32> = (0..right.iter().product()).map(|_| rand()).collect();
                let constant = Tensor::new(right.to_vec(), c).unwrap();
                let div = Binary {
                    kind: BinaryKind::Div,
                    constant: Some(BinaryConstant {
                        tensor: constant.clone(),
                        on_left: false,
                    }),
                };
                let got = div.eval(&[&a], &out);
                let shared = Tensor::new(batched(1, right), constant.data().to_vec()).unwrap();
                let want = naive(&a, &shared, &batched(3, &out), |x, y| x / y);
                assert_eq!(got.data(), want.as_slice(), "{left:?} / constant {right:?}");
            }
        }
    }
}
