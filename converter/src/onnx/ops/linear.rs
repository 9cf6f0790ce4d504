//! Gemm and MatMul with a constant weight.

use amos_snn::ops::{Linear, Op};
use amos_snn::{Graph, Tensor};

use super::{add, shape_of};
use crate::onnx::{Const, ImportError, NodeCx, Val};

/// `Y = alpha·A·op(B) + beta·C` with A the runtime `[N, K]` and B, C constant.
pub(crate) fn gemm(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&["alpha", "beta", "transA", "transB"])?;
    if cx.attr_int("transA")?.unwrap_or(0) != 0 {
        return Err(cx.err("transA=1 would transpose the batch into the features; not supported"));
    }
    let a = cx.runtime_input(0)?;
    let a_shape = shape_of(graph, a);
    if a_shape.len() != 1 {
        return Err(cx.err(format!("A must be [N, K], got [N, {a_shape:?}]")));
    }
    let b = cx.const_input(1)?;
    if b.shape.len() != 2 {
        return Err(cx.err(format!("B must be 2-D, got {:?}", b.shape)));
    }
    let trans_b = cx.attr_int("transB")?.unwrap_or(0) != 0;
    let alpha = cx.attr_float("alpha")?.unwrap_or(1.0);
    let beta = cx.attr_float("beta")?.unwrap_or(1.0);
    let (k, m) = if trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    let bv = b.to_f32();
    // Weight as [K, M], scaled by alpha.
    let mut weight = vec![0.0f32; k * m];
    for r in 0..k {
        for c in 0..m {
            let v = if trans_b {
                bv[c * k + r]
            } else {
                bv[r * m + c]
            };
            weight[r * m + c] = alpha * v;
        }
    }
    let bias = match cx.opt_const_input(2)? {
        None => vec![0.0; m],
        Some(c) => bias_vector(cx, c, m)?.iter().map(|v| beta * v).collect(),
    };
    let weight = Tensor::new(vec![k, m], weight).map_err(|e| cx.err(e.to_string()))?;
    add(cx, graph, Op::Linear(Linear { weight, bias }), vec![a])
}

/// C broadcast to `M` values: a scalar, `[M]`, `[1, M]` (a bias that varies by row would
/// vary by image, which no layer does).
fn bias_vector(cx: &NodeCx, c: &Const, m: usize) -> Result<Vec<f32>, ImportError> {
    let v = c.to_f32();
    match (c.shape.as_slice(), v.len()) {
        (_, 1) => Ok(vec![v[0]; m]),
        ([n], _) | ([1, n], _) if *n == m => Ok(v),
        (s, _) => Err(cx.err(format!(
            "C of shape {s:?} does not broadcast to [N, {m}] per row"
        ))),
    }
}

/// `A·B` with A runtime `[N, …, K]` and B a constant `[K, M]`.
pub(crate) fn matmul(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&[])?;
    let a = cx.runtime_input(0)?;
    let b = cx.const_input(1)?;
    if b.shape.len() != 2 {
        return Err(cx.err(format!(
            "only a constant 2-D right operand is supported, got {:?}",
            b.shape
        )));
    }
    let weight = b.to_tensor();
    let bias = vec![0.0; b.shape[1]];
    add(cx, graph, Op::Linear(Linear { weight, bias }), vec![a])
}
