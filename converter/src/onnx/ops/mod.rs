//! ONNX operators by family; each function imports one node into the IR or folds it.

mod conv;
mod elementwise;
mod linear;
mod pool;
mod shape;

use amos_snn::ops::Op;
use amos_snn::{Graph, ValueId};

use super::{ImportError, NodeCx, Val};

/// Imports one node, returning its (first) output.
pub(crate) fn import_node(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    match cx.op_type() {
        "Conv" => conv::conv(cx, graph),
        "BatchNormalization" => conv::batch_norm(cx, graph),
        "Gemm" => linear::gemm(cx, graph),
        "MatMul" => linear::matmul(cx, graph),
        "Add" | "Sub" | "Mul" | "Div" => elementwise::binary(cx, graph),
        "Relu" | "Clip" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "Tanh" | "Erf" => elementwise::activation(cx, graph),
        "Softmax" => elementwise::softmax(cx, graph),
        "GlobalAveragePool" => pool::global_average_pool(cx, graph),
        "AveragePool" | "MaxPool" => pool::pool(cx, graph),
        "ReduceMean" => pool::reduce_mean(cx, graph),
        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => shape::reshape_family(cx, graph),
        "Concat" => shape::concat(cx, graph),
        "Pad" => shape::pad(cx, graph),
        "Identity" | "Dropout" => shape::identity(cx),
        "Constant" => shape::constant(cx),
        "ConstantOfShape" => shape::constant_of_shape(cx),
        "Shape" => shape::shape(cx, graph),
        "Gather" => shape::gather(cx),
        "Slice" => shape::slice(cx),
        "Transpose" => shape::transpose(cx),
        "Cast" => shape::cast(cx),
        other => Err(cx.err(format!(
            "operator '{other}' is not supported (supported: Conv, BatchNormalization, Gemm, MatMul, Add, Sub, \
             Mul, Div, Relu, Clip, Sigmoid, HardSigmoid, HardSwish, Tanh, Erf, Softmax, GlobalAveragePool, \
             AveragePool, MaxPool, ReduceMean, Flatten, Reshape, Squeeze, Unsqueeze, Concat, Pad, Identity, \
             Dropout, Constant, ConstantOfShape, Shape, Gather, Slice, Transpose, Cast)"
        ))),
    }
}

/// Adds an IR node for `cx`, turning shape errors into errors naming the ONNX node.
fn add(cx: &NodeCx, graph: &mut Graph, op: Op, inputs: Vec<ValueId>) -> Result<Val, ImportError> {
    graph
        .add_node(cx.name(), op, inputs, cx.output_name())
        .map(Val::Runtime)
        .map_err(|e| match e {
            amos_snn::GraphError::Node { detail, .. } => cx.err(detail),
            other => cx.err(other.to_string()),
        })
}

/// Normalises a possibly negative `axis` of a tensor of rank `rank`.
fn norm_axis(cx: &NodeCx, axis: i64, rank: usize) -> Result<usize, ImportError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(cx.err(format!("axis {axis} is out of range for rank {rank}")))
    }
}

/// Maps an axis of the full runtime tensor `[N, …]` (per-image rank `rank`) to a per-image
/// axis; axis 0, the batch, cannot be touched by a layer.
fn image_axis(cx: &NodeCx, axis: i64, rank: usize) -> Result<usize, ImportError> {
    match norm_axis(cx, axis, rank + 1)? {
        0 => Err(cx.err("operating on axis 0 (the batch) is not supported")),
        a => Ok(a - 1),
    }
}

/// The per-image shape of a runtime value.
fn shape_of(graph: &Graph, v: ValueId) -> Vec<usize> {
    graph.values[v].shape.clone()
}
