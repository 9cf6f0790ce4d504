//! Conv and BatchNormalization.

use amos_snn::Graph;
use amos_snn::ops::{ChannelAffine, Conv2d, Op};

use super::{add, shape_of};
use crate::onnx::{ImportError, NodeCx, Val};

pub(crate) fn conv(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&[
        "auto_pad",
        "dilations",
        "group",
        "kernel_shape",
        "pads",
        "strides",
    ])?;
    let x = cx.runtime_input(0)?;
    let w = cx.const_input(1)?;
    let in_shape = shape_of(graph, x);
    if w.shape.len() != 4 || in_shape.len() != 3 {
        return Err(cx.err(format!(
            "only 2-D convolutions are supported (input [N, {in_shape:?}], weight {:?})",
            w.shape
        )));
    }
    let kernel = [w.shape[2], w.shape[3]];
    if let Some(ks) = cx.attr_usizes("kernel_shape")?
        && ks != kernel
    {
        return Err(cx.err(format!(
            "kernel_shape {ks:?} disagrees with the weight {:?}",
            w.shape
        )));
    }
    let bias = match cx.opt_const_input(2)? {
        Some(b) if b.len() == w.shape[0] => b.to_f32(),
        Some(b) => {
            return Err(cx.err(format!(
                "bias has {} values for {} output channels",
                b.len(),
                w.shape[0]
            )));
        }
        None => vec![0.0; w.shape[0]],
    };
    let pair = |name: &str| -> Result<[usize; 2], ImportError> {
        match cx.attr_usizes(name)? {
            None => Ok([1, 1]),
            Some(v) if v.len() == 2 && !v.contains(&0) => Ok([v[0], v[1]]),
            Some(v) => Err(cx.err(format!(
                "attribute '{name}' = {v:?}: expected two positive values"
            ))),
        }
    };
    let stride = pair("strides")?;
    let dilation = pair("dilations")?;
    let groups = cx.attr_int("group")?.unwrap_or(1);
    let groups = usize::try_from(groups)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| cx.err(format!("group {groups} must be positive")))?;
    let pads = resolve_pads(cx, [in_shape[1], in_shape[2]], kernel, stride, dilation)?;
    let op = Op::Conv(Conv2d {
        weight: w.to_tensor(),
        bias,
        stride,
        dilation,
        pads,
        groups,
        prepared: Default::default(),
    });
    add(cx, graph, op, vec![x])
}

/// Explicit `[top, left, bottom, right]` pads from `pads` or `auto_pad` (shared with pooling).
pub(crate) fn resolve_pads(
    cx: &NodeCx,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<[usize; 4], ImportError> {
    let auto = cx
        .attr_string("auto_pad")?
        .unwrap_or_else(|| "NOTSET".into());
    let explicit = cx.attr_usizes("pads")?;
    match auto.as_str() {
        "NOTSET" => match explicit {
            None => Ok([0; 4]),
            Some(p) if p.len() == 4 => Ok([p[0], p[1], p[2], p[3]]),
            Some(p) => Err(cx.err(format!("pads {p:?}: expected 4 values for a 2-D window"))),
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = [0; 4];
            for i in 0..2 {
                let out = input[i].div_ceil(stride[i]);
                let span = dilation[i] * (kernel[i] - 1) + 1;
                let total = ((out - 1) * stride[i] + span).saturating_sub(input[i]);
                let small = total / 2;
                let (begin, end) = if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                pads[i] = begin;
                pads[i + 2] = end;
            }
            Ok(pads)
        }
        other => Err(cx.err(format!(
            "auto_pad '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"
        ))),
    }
}

pub(crate) fn batch_norm(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&["epsilon", "momentum", "training_mode", "spatial"])?;
    if cx.attr_int("training_mode")?.unwrap_or(0) != 0 {
        return Err(cx.err("training_mode=1 is not supported (export the model in eval mode)"));
    }
    let x = cx.runtime_input(0)?;
    let eps = cx.attr_float("epsilon")?.unwrap_or(1e-5);
    let params: Vec<Vec<f32>> = (1..5)
        .map(|i| cx.const_input(i).map(|c| c.to_f32()))
        .collect::<Result<_, _>>()?;
    let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let c = gamma.len();
    if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != c) {
        return Err(cx.err("scale, B, mean and var must have one value per channel"));
    }
    let scale: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
    add(
        cx,
        graph,
        Op::ChannelAffine(ChannelAffine { scale, shift }),
        vec![x],
    )
}
