//! Add, Sub, Mul, Div; the activations; Softmax.

use amos_snn::Graph;
use amos_snn::ops::binary::{BinaryConstant, broadcast_shape};
use amos_snn::ops::{Activation, Binary, BinaryKind, Op, Softmax};

use super::{add, image_axis, shape_of};
use crate::onnx::{Const, ConstData, ImportError, NodeCx, Val};

pub(crate) fn binary(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&[])?;
    let kind = match cx.op_type() {
        "Add" => BinaryKind::Add,
        "Sub" => BinaryKind::Sub,
        "Mul" => BinaryKind::Mul,
        _ => BinaryKind::Div,
    };
    match (cx.input(0)?, cx.input(1)?) {
        (Val::Const(a), Val::Const(b)) => fold_binary(cx, kind, a, b).map(Val::Const),
        (Val::Runtime(a), Val::Runtime(b)) => {
            let (sa, sb) = (shape_of(graph, *a), shape_of(graph, *b));
            if sa.len() != sb.len() {
                return Err(cx.err(format!(
                    "operands [N, {sa:?}] and [N, {sb:?}] have different ranks; their batch axes would not align"
                )));
            }
            add(
                cx,
                graph,
                Op::Binary(Binary {
                    kind,
                    constant: None,
                }),
                vec![*a, *b],
            )
        }
        (Val::Runtime(x), Val::Const(c)) | (Val::Const(c), Val::Runtime(x)) => {
            let on_left = matches!(cx.input(0)?, Val::Const(_));
            let rank = shape_of(graph, *x).len();
            let tensor = per_image_constant(cx, c, rank)?;
            let constant = Some(BinaryConstant { tensor, on_left });
            add(cx, graph, Op::Binary(Binary { kind, constant }), vec![*x])
        }
    }
}

/// A constant operand as a per-image tensor: a leading dimension that lines up with the
/// batch must be 1.
fn per_image_constant(
    cx: &NodeCx,
    c: &Const,
    rank: usize,
) -> Result<amos_snn::Tensor, ImportError> {
    let mut t = c.to_tensor();
    if c.shape.len() > rank {
        if c.shape.len() > rank + 1 || c.shape[0] != 1 {
            return Err(cx.err(format!(
                "constant of shape {:?} would broadcast over the batch of a rank-{} input",
                c.shape,
                rank + 1
            )));
        }
        t = t
            .reshaped(c.shape[1..].to_vec())
            .map_err(|e| cx.err(e.to_string()))?;
    }
    Ok(t)
}

/// Elementwise arithmetic on two constants with numpy broadcasting.
fn fold_binary(cx: &NodeCx, kind: BinaryKind, a: &Const, b: &Const) -> Result<Const, ImportError> {
    let shape = broadcast_shape(&a.shape, &b.shape).map_err(|e| cx.err(e))?;
    let idx = broadcast_indices(&shape, &a.shape, &b.shape);
    match (&a.data, &b.data) {
        (ConstData::I64(x), ConstData::I64(y)) => {
            let mut out = Vec::with_capacity(idx.len());
            for &(i, j) in &idx {
                out.push(match kind {
                    BinaryKind::Add => x[i].wrapping_add(y[j]),
                    BinaryKind::Sub => x[i].wrapping_sub(y[j]),
                    BinaryKind::Mul => x[i].wrapping_mul(y[j]),
                    BinaryKind::Div => x[i]
                        .checked_div(y[j])
                        .ok_or_else(|| cx.err("integer division by zero"))?,
                });
            }
            Ok(Const::i64(shape, out))
        }
        _ => {
            let (x, y) = (a.to_f32(), b.to_f32());
            let out = idx
                .iter()
                .map(|&(i, j)| match kind {
                    BinaryKind::Add => x[i] + y[j],
                    BinaryKind::Sub => x[i] - y[j],
                    BinaryKind::Mul => x[i] * y[j],
                    BinaryKind::Div => x[i] / y[j],
                })
                .collect();
            Ok(Const::f32(shape, out))
        }
    }
}

/// For each element of the broadcast `shape`, the flat indices into `a` and `b`.
fn broadcast_indices(shape: &[usize], a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    let strides = |s: &[usize]| -> Vec<usize> {
        let mut st = vec![0; shape.len()];
        let mut acc = 1;
        for (k, &d) in s.iter().enumerate().rev() {
            let o = shape.len() - (s.len() - k);
            st[o] = if d == 1 { 0 } else { acc };
            acc *= d;
        }
        st
    };
    let (sa, sb) = (strides(a), strides(b));
    let total: usize = shape.iter().product();
    (0..total)
        .map(|flat| {
            let (mut r, mut i, mut j) = (flat, 0, 0);
            for d in (0..shape.len()).rev() {
                let k = r % shape[d];
                r /= shape[d];
                i += k * sa[d];
                j += k * sb[d];
            }
            (i, j)
        })
        .collect()
}

pub(crate) fn activation(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    let act = match cx.op_type() {
        "Relu" => {
            cx.allow_attrs(&[])?;
            Activation::Relu
        }
        "Sigmoid" => {
            cx.allow_attrs(&[])?;
            Activation::Sigmoid
        }
        "Tanh" => {
            cx.allow_attrs(&[])?;
            Activation::Tanh
        }
        "Erf" => {
            cx.allow_attrs(&[])?;
            Activation::Erf
        }
        "HardSwish" => {
            cx.allow_attrs(&[])?;
            Activation::HardSwish
        }
        "HardSigmoid" => {
            cx.allow_attrs(&["alpha", "beta"])?;
            Activation::HardSigmoid {
                alpha: cx.attr_float("alpha")?.unwrap_or(0.2),
                beta: cx.attr_float("beta")?.unwrap_or(0.5),
            }
        }
        _ => {
            // Clip: bounds are optional constant inputs since opset 11.
            cx.allow_attrs(&[])?;
            let bound = |i: usize, default: f32| -> Result<f32, ImportError> {
                match cx.opt_const_input(i)? {
                    None => Ok(default),
                    Some(c) => c
                        .scalar_f32()
                        .ok_or_else(|| cx.err(format!("bound #{i} must be a scalar"))),
                }
            };
            let (lo, hi) = (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?);
            if lo == 0.0 && hi == f32::INFINITY {
                Activation::Relu
            } else {
                Activation::Clip { lo, hi }
            }
        }
    };
    match cx.input(0)? {
        Val::Const(c) => Ok(Val::Const(Const::f32(
            c.shape.clone(),
            c.to_f32().iter().map(|&v| act.apply(v)).collect(),
        ))),
        Val::Runtime(x) => add(cx, graph, Op::Activation(act), vec![*x]),
    }
}

pub(crate) fn softmax(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&["axis"])?;
    let x = cx.runtime_input(0)?;
    let rank = shape_of(graph, x).len();
    let default = if cx.opset >= 13 { -1 } else { 1 };
    let axis = cx.attr_int("axis")?.unwrap_or(default);
    let axis = image_axis(cx, axis, rank)?;
    // Before opset 13, softmax flattened the axes from `axis` on: the same thing only when
    // `axis` is the last one.
    if cx.opset < 13 && axis + 1 != rank {
        return Err(
            cx.err("softmax before opset 13 over a non-last axis (2-D coercion) is not supported")
        );
    }
    add(cx, graph, Op::Softmax(Softmax { axis }), vec![x])
}
