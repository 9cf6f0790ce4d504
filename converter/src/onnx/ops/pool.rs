//! GlobalAveragePool, AveragePool, MaxPool, ReduceMean.

use amos_snn::Graph;
use amos_snn::ops::pool::PoolWindow;
use amos_snn::ops::{AvgPool2d, MaxPool2d, Op, ReduceMean};

use super::conv::resolve_pads;
use super::{add, image_axis, shape_of};
use crate::onnx::{ImportError, NodeCx, Val};

pub(crate) fn global_average_pool(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&[])?;
    let x = cx.runtime_input(0)?;
    add(cx, graph, Op::GlobalAvgPool, vec![x])
}

pub(crate) fn pool(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    let is_max = cx.op_type() == "MaxPool";
    let mut known = vec!["auto_pad", "ceil_mode", "kernel_shape", "pads", "strides"];
    known.push(if is_max {
        "dilations"
    } else {
        "count_include_pad"
    });
    if is_max {
        known.push("storage_order");
    } else if cx.opset >= 19 {
        known.push("dilations");
    }
    cx.allow_attrs(&known)?;
    if is_max && cx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(cx.err("the Indices output of MaxPool is not supported"));
    }
    let x = cx.runtime_input(0)?;
    let shape = shape_of(graph, x);
    if shape.len() != 3 {
        return Err(cx.err(format!(
            "only 2-D pooling over [N, C, H, W] is supported, got [N, {shape:?}]"
        )));
    }
    let two = |name: &str, default: Option<[usize; 2]>| -> Result<[usize; 2], ImportError> {
        match (cx.attr_usizes(name)?, default) {
            (Some(v), _) if v.len() == 2 && !v.contains(&0) => Ok([v[0], v[1]]),
            (None, Some(d)) => Ok(d),
            (v, _) => Err(cx.err(format!(
                "attribute '{name}' = {v:?}: expected two positive values"
            ))),
        }
    };
    let kernel = two("kernel_shape", None)?;
    let stride = two("strides", Some([1, 1]))?;
    let dilation = two("dilations", Some([1, 1]))?;
    let pads = resolve_pads(cx, [shape[1], shape[2]], kernel, stride, dilation)?;
    let ceil_mode = cx.attr_int("ceil_mode")?.unwrap_or(0) != 0;
    let window = PoolWindow {
        kernel,
        stride,
        pads,
        dilation,
        ceil_mode,
    };
    let op = if is_max {
        Op::MaxPool(MaxPool2d { window })
    } else {
        let count_include_pad = cx.attr_int("count_include_pad")?.unwrap_or(0) != 0;
        Op::AvgPool(AvgPool2d {
            window,
            count_include_pad,
        })
    };
    add(cx, graph, op, vec![x])
}

pub(crate) fn reduce_mean(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&["axes", "keepdims", "noop_with_empty_axes"])?;
    let x = cx.runtime_input(0)?;
    let rank = shape_of(graph, x).len();
    // Axes moved from an attribute to an optional input in opset 18.
    let axes = if cx.opset >= 18 {
        cx.opt_const_input(1)?
            .map(|c| c.to_i64().map_err(|e| cx.err(e)))
            .transpose()?
    } else {
        cx.attr_ints("axes")?
    };
    let axes = match axes {
        Some(a) if !a.is_empty() => a,
        _ if cx.attr_int("noop_with_empty_axes")?.unwrap_or(0) != 0 => return Ok(Val::Runtime(x)),
        _ => return Err(cx.err("reducing over all axes would mix the batch; give explicit axes")),
    };
    let mut axes = axes
        .iter()
        .map(|&a| image_axis(cx, a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    axes.dedup();
    let keepdims = cx.attr_int("keepdims")?.unwrap_or(1) != 0;
    let op = if keepdims && rank >= 2 && axes == (1..rank).collect::<Vec<_>>() {
        Op::GlobalAvgPool
    } else {
        Op::ReduceMean(ReduceMean { axes, keepdims })
    };
    add(cx, graph, op, vec![x])
}
