//! Shape and data-movement operators, and the constant arithmetic exporters write around them.
//!
//! On runtime tensors these become IR `Reshape`, `Concat` and `Pad` nodes over per-image
//! shapes. On constants they are evaluated at import; `Shape` of a runtime tensor yields its
//! static per-image dimensions behind [`BATCH_DIM`], so `x.view(x.size(0), -1)` folds to a
//! per-image reshape.

use amos_proto::onnx::tensor_proto::DataType;
use amos_snn::Graph;
use amos_snn::ops::{Concat, Op, Pad, Reshape};

use super::{add, image_axis, norm_axis, shape_of};
use crate::onnx::{BATCH_DIM, Const, ConstData, ImportError, NodeCx, Val};

/// Flatten, Reshape, Squeeze, Unsqueeze: a new shape over the same elements.
pub(crate) fn reshape_family(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    match cx.input(0)? {
        Val::Const(c) => {
            let shape = target_shape(cx, &c.shape, false)?;
            Ok(Val::Const(Const {
                shape,
                data: c.data.clone(),
            }))
        }
        Val::Runtime(x) => {
            let per_image = shape_of(graph, *x);
            let shape = target_shape(cx, &per_image, true)?;
            add(cx, graph, Op::Reshape(Reshape { shape }), vec![*x])
        }
    }
}

/// The output shape of a reshape-family node for input shape `shape`; with `batched` the
/// shape is per image (the node sees `[N, shape…]`) and so is the result.
fn target_shape(cx: &NodeCx, shape: &[usize], batched: bool) -> Result<Vec<usize>, ImportError> {
    let full_rank = shape.len() + usize::from(batched);
    let count: usize = shape.iter().product();
    let full_axes = |axes: Vec<i64>, rank: usize| -> Result<Vec<usize>, ImportError> {
        let mut a = axes
            .iter()
            .map(|&x| norm_axis(cx, x, rank))
            .collect::<Result<Vec<_>, _>>()?;
        a.sort_unstable();
        a.dedup();
        if batched && a.first() == Some(&0) {
            return Err(cx.err("axis 0 is the batch and cannot be squeezed or inserted"));
        }
        Ok(a)
    };
    // Axes as a per-image/full-rank agnostic offset: full axis k is per-image axis k-1.
    let off = usize::from(batched);
    match cx.op_type() {
        "Flatten" => {
            cx.allow_attrs(&["axis"])?;
            let axis = norm_axis_inclusive(cx, cx.attr_int("axis")?.unwrap_or(1), full_rank)?;
            if !batched {
                return Ok(vec![
                    shape[..axis].iter().product(),
                    shape[axis..].iter().product(),
                ]);
            }
            if axis == 0 || shape[..axis - 1].iter().product::<usize>() != 1 {
                return Err(cx.err(format!(
                    "flattening [N, {shape:?}] at axis {axis} would merge the batch"
                )));
            }
            Ok(vec![count])
        }
        "Reshape" => {
            cx.allow_attrs(&["allowzero"])?;
            let target = cx.const_input(1)?.to_i64().map_err(|e| cx.err(e))?;
            let allow_zero = cx.attr_int("allowzero")?.unwrap_or(0) != 0;
            if allow_zero && target.contains(&0) {
                return Err(cx.err("allowzero=1 with a zero in the shape is not supported"));
            }
            if !batched {
                return resolve_reshape(cx, &target, shape, shape, count);
            }
            let Some((&first, rest)) = target.split_first() else {
                return Err(cx.err("cannot reshape a batch to a scalar"));
            };
            match first {
                BATCH_DIM | 0 => resolve_reshape(cx, rest, shape, shape, count),
                -1 if !rest.contains(&-1) => {
                    let out = resolve_reshape(cx, rest, shape, shape, count)?;
                    if out.iter().product::<usize>() != count {
                        return Err(cx.err(format!("reshape {target:?} of [N, {shape:?}] would change the batch size")));
                    }
                    Ok(out)
                }
                _ => Err(cx.err(format!(
                    "reshape to {target:?} sets the batch dimension; only N (from Shape), 0 or -1 keep it"
                ))),
            }
        }
        "Squeeze" => {
            cx.allow_attrs(&["axes"])?;
            let axes = axes_operand(cx)?;
            match axes {
                None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
                Some(axes) => {
                    let axes = full_axes(axes, full_rank)?;
                    let mut out = Vec::new();
                    for (i, &d) in shape.iter().enumerate() {
                        if axes.contains(&(i + off)) {
                            if d != 1 {
                                return Err(
                                    cx.err(format!("cannot squeeze axis {} of size {d}", i + off))
                                );
                            }
                        } else {
                            out.push(d);
                        }
                    }
                    Ok(out)
                }
            }
        }
        _ => {
            cx.allow_attrs(&["axes"])?;
            let axes = axes_operand(cx)?.ok_or_else(|| cx.err("Unsqueeze needs axes"))?;
            let out_rank = full_rank + axes.len();
            let axes = full_axes(axes, out_rank)?;
            let mut dims = shape.iter();
            Ok((off..out_rank)
                .map(|k| {
                    if axes.contains(&k) {
                        1
                    } else {
                        dims.next().copied().unwrap_or(1)
                    }
                })
                .collect())
        }
    }
}

/// Axes of Squeeze/Unsqueeze: an attribute before opset 13, an optional input since.
fn axes_operand(cx: &NodeCx) -> Result<Option<Vec<i64>>, ImportError> {
    if cx.opset >= 13 {
        cx.opt_const_input(1)?
            .map(|c| c.to_i64().map_err(|e| cx.err(e)))
            .transpose()
    } else {
        cx.attr_ints("axes")
    }
}

/// Normalises an axis that may equal `rank` (Flatten).
fn norm_axis_inclusive(cx: &NodeCx, axis: i64, rank: usize) -> Result<usize, ImportError> {
    if axis == rank as i64 {
        Ok(rank)
    } else {
        norm_axis(cx, axis, rank)
    }
}

/// Resolves 0 (copy from `copy_from`) and -1 (infer) in a reshape target.
fn resolve_reshape(
    cx: &NodeCx,
    target: &[i64],
    copy_from: &[usize],
    input: &[usize],
    count: usize,
) -> Result<Vec<usize>, ImportError> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 => out.push(*copy_from.get(i).ok_or_else(|| {
                cx.err(format!(
                    "shape entry {i} is 0 but the input has no axis {i}"
                ))
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            t if t > 0 => out.push(t as usize),
            t => return Err(cx.err(format!("invalid shape entry {t} in {target:?}"))),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !count.is_multiple_of(known) {
            return Err(cx.err(format!("cannot reshape {input:?} to {target:?}")));
        }
        out[i] = count / known;
    }
    if out.iter().product::<usize>() != count {
        return Err(cx.err(format!(
            "cannot reshape {input:?} ({count} values) to {target:?}"
        )));
    }
    Ok(out)
}

pub(crate) fn concat(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&["axis"])?;
    let axis = cx
        .attr_int("axis")?
        .ok_or_else(|| cx.err("missing attribute 'axis'"))?;
    if cx.all_const() {
        let parts: Vec<&Const> = (0..cx.inputs.len())
            .map(|i| cx.const_input(i))
            .collect::<Result<_, _>>()?;
        return concat_consts(cx, &parts, axis).map(Val::Const);
    }
    let inputs: Vec<_> = (0..cx.inputs.len())
        .map(|i| cx.runtime_input(i))
        .collect::<Result<_, _>>()?;
    let rank = shape_of(graph, inputs[0]).len();
    let axis = image_axis(cx, axis, rank)?;
    add(cx, graph, Op::Concat(Concat { axis }), inputs)
}

fn concat_consts(cx: &NodeCx, parts: &[&Const], axis: i64) -> Result<Const, ImportError> {
    let first = parts.first().ok_or_else(|| cx.err("no inputs"))?;
    let axis = norm_axis(cx, axis, first.shape.len())?;
    let mut shape = first.shape.clone();
    shape[axis] = parts
        .iter()
        .map(|p| p.shape.get(axis).copied().unwrap_or(0))
        .sum();
    for p in parts {
        let same = p.shape.len() == first.shape.len()
            && p.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same {
            return Err(cx.err(format!(
                "constant shapes {:?} and {:?} do not concatenate",
                first.shape, p.shape
            )));
        }
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let ints = parts.iter().all(|p| matches!(p.data, ConstData::I64(_)));
    let mut f = Vec::new();
    let mut i = Vec::new();
    for o in 0..outer {
        for p in parts {
            let block = p.shape[axis] * inner;
            match &p.data {
                ConstData::I64(v) if ints => i.extend_from_slice(&v[o * block..(o + 1) * block]),
                _ => f.extend_from_slice(&p.to_f32()[o * block..(o + 1) * block]),
            }
        }
    }
    Ok(if ints {
        Const::i64(shape, i)
    } else {
        Const::f32(shape, f)
    })
}

pub(crate) fn pad(cx: &NodeCx, graph: &mut Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&["mode"])?;
    let mode = cx.attr_string("mode")?.unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        return Err(cx.err(format!(
            "pad mode '{mode}' is not supported (only 'constant')"
        )));
    }
    let x = cx.runtime_input(0)?;
    let shape = shape_of(graph, x);
    let full_rank = shape.len() + 1;
    let pads = cx.const_input(1)?.to_i64().map_err(|e| cx.err(e))?;
    let value = match cx.opt_const_input(2)? {
        None => 0.0,
        Some(c) => c
            .scalar_f32()
            .ok_or_else(|| cx.err("constant_value must be a scalar"))?,
    };
    let axes: Vec<usize> = match cx.opt_const_input(3)? {
        None => (0..full_rank).collect(),
        Some(a) => a
            .to_i64()
            .map_err(|e| cx.err(e))?
            .iter()
            .map(|&k| norm_axis(cx, k, full_rank))
            .collect::<Result<_, _>>()?,
    };
    if pads.len() != 2 * axes.len() {
        return Err(cx.err(format!("pads {pads:?} need {} values", 2 * axes.len())));
    }
    let (mut begin, mut end) = (vec![0usize; shape.len()], vec![0usize; shape.len()]);
    for (j, &axis) in axes.iter().enumerate() {
        let (b, e) = (pads[j], pads[j + axes.len()]);
        if b < 0 || e < 0 {
            return Err(cx.err(format!("negative pads {pads:?} are not supported")));
        }
        if axis == 0 {
            if b != 0 || e != 0 {
                return Err(cx.err(format!("pads {pads:?} would pad the batch axis")));
            }
            continue;
        }
        begin[axis - 1] = b as usize;
        end[axis - 1] = e as usize;
    }
    add(cx, graph, Op::Pad(Pad { begin, end, value }), vec![x])
}

pub(crate) fn identity(cx: &NodeCx) -> Result<Val, ImportError> {
    cx.allow_attrs(&["seed", "ratio"])?;
    if cx.op_type() == "Dropout"
        && let Some(t) = cx.opt_const_input(2)?
        && t.to_f32().first().copied().unwrap_or(0.0) != 0.0
    {
        return Err(cx.err("training_mode=true is not supported"));
    }
    cx.input(0).cloned()
}

pub(crate) fn constant(cx: &NodeCx) -> Result<Val, ImportError> {
    cx.allow_attrs(&[
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
    ])?;
    let c = if let Some(t) = cx.attr_tensor("value")? {
        t
    } else if let Some(f) = cx.attr_float("value_float")? {
        Const::f32(vec![], vec![f])
    } else if let Some(f) = cx.attr_floats("value_floats")? {
        Const::f32(vec![f.len()], f)
    } else if let Some(i) = cx.attr_int("value_int")? {
        Const::i64(vec![], vec![i])
    } else if let Some(i) = cx.attr_ints("value_ints")? {
        Const::i64(vec![i.len()], i)
    } else {
        return Err(cx.err("no supported value attribute (value, value_float(s), value_int(s))"));
    };
    Ok(Val::Const(c))
}

pub(crate) fn constant_of_shape(cx: &NodeCx) -> Result<Val, ImportError> {
    cx.allow_attrs(&["value"])?;
    let dims = cx.const_input(0)?.to_i64().map_err(|e| cx.err(e))?;
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| cx.err(format!("invalid dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let count: usize = shape.iter().product();
    if count > 1 << 24 {
        return Err(cx.err(format!("constant of shape {shape:?} is too large to fold")));
    }
    let value = cx
        .attr_tensor("value")?
        .unwrap_or_else(|| Const::f32(vec![1], vec![0.0]));
    Ok(Val::Const(match value.data {
        ConstData::I64(v) => Const::i64(shape, vec![v.first().copied().unwrap_or(0); count]),
        ConstData::F32(v) => Const::f32(shape, vec![v.first().copied().unwrap_or(0.0); count]),
    }))
}

pub(crate) fn shape(cx: &NodeCx, graph: &Graph) -> Result<Val, ImportError> {
    cx.allow_attrs(&["start", "end"])?;
    let dims: Vec<i64> = match cx.input(0)? {
        Val::Const(c) => c.shape.iter().map(|&d| d as i64).collect(),
        Val::Runtime(x) => std::iter::once(BATCH_DIM)
            .chain(shape_of(graph, *x).iter().map(|&d| d as i64))
            .collect(),
    };
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(cx.attr_int("start")?.unwrap_or(0));
    let end = clamp(cx.attr_int("end")?.unwrap_or(r));
    let dims = dims[start..end.max(start)].to_vec();
    Ok(Val::Const(Const::i64(vec![dims.len()], dims)))
}

/// A constant whose elements are `c`'s elements at `indices` (Gather, Slice, Transpose).
fn select(c: &Const, shape: Vec<usize>, indices: &[usize]) -> Const {
    match &c.data {
        ConstData::I64(v) => Const::i64(shape, indices.iter().map(|&i| v[i]).collect()),
        ConstData::F32(v) => Const::f32(shape, indices.iter().map(|&i| v[i]).collect()),
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Flat indices into a tensor of `shape` for every multi-index of `out_shape`, where
/// `map(axis, out_index)` gives the source index on each axis.
fn gather_indices(
    shape: &[usize],
    out_shape: &[usize],
    map: impl Fn(usize, usize) -> usize,
) -> Vec<usize> {
    let st = strides(shape);
    let total: usize = out_shape.iter().product();
    (0..total)
        .map(|flat| {
            let (mut r, mut src) = (flat, 0);
            for a in (0..out_shape.len()).rev() {
                src += map(a, r % out_shape[a]) * st[a];
                r /= out_shape[a];
            }
            src
        })
        .collect()
}

pub(crate) fn gather(cx: &NodeCx) -> Result<Val, ImportError> {
    cx.allow_attrs(&["axis"])?;
    let data = cx.const_input(0)?;
    let indices = cx.const_input(1)?;
    let axis = norm_axis(cx, cx.attr_int("axis")?.unwrap_or(0), data.shape.len())?;
    let dim = data.shape[axis] as i64;
    let idx = indices
        .to_i64()
        .map_err(|e| cx.err(e))?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| (j as i64) < dim)
                .ok_or_else(|| cx.err(format!("index {i} out of range for size {dim}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let mut flat = Vec::new();
    for o in 0..outer {
        for &i in &idx {
            flat.extend((0..inner).map(|k| (o * data.shape[axis] + i) * inner + k));
        }
    }
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    Ok(Val::Const(select(data, shape, &flat)))
}

pub(crate) fn slice(cx: &NodeCx) -> Result<Val, ImportError> {
    cx.allow_attrs(&[])?;
    let data = cx.const_input(0)?;
    let ints = |i: usize| -> Result<Option<Vec<i64>>, ImportError> {
        cx.opt_const_input(i)?
            .map(|c| c.to_i64().map_err(|e| cx.err(e)))
            .transpose()
    };
    let starts = ints(1)?.ok_or_else(|| cx.err("missing starts"))?;
    let ends = ints(2)?.ok_or_else(|| cx.err("missing ends"))?;
    let rank = data.shape.len();
    let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(cx.err("starts, ends, axes and steps must have the same length"));
    }
    // (start, step, count) per axis.
    let mut plan: Vec<(i64, i64, usize)> = data.shape.iter().map(|&d| (0, 1, d)).collect();
    for k in 0..starts.len() {
        let axis = norm_axis(cx, axes[k], rank)?;
        let dim = data.shape[axis] as i64;
        let step = steps[k];
        if step == 0 {
            return Err(cx.err("slice step 0"));
        }
        let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (start, end) = if step > 0 {
            (fix(starts[k]).clamp(0, dim), fix(ends[k]).clamp(0, dim))
        } else {
            (
                fix(starts[k]).clamp(-1, dim - 1),
                fix(ends[k]).clamp(-1, dim - 1),
            )
        };
        let count = if step > 0 {
            ((end - start).max(0) + step - 1) / step
        } else {
            ((start - end).max(0) + (-step) - 1) / (-step)
        };
        plan[axis] = (start, step, count as usize);
    }
    let out_shape: Vec<usize> = plan.iter().map(|p| p.2).collect();
    let idx = gather_indices(&data.shape, &out_shape, |a, i| {
        (plan[a].0 + plan[a].1 * i as i64) as usize
    });
    Ok(Val::Const(select(data, out_shape, &idx)))
}

pub(crate) fn transpose(cx: &NodeCx) -> Result<Val, ImportError> {
    cx.allow_attrs(&["perm"])?;
    let data = cx.const_input(0)?;
    let rank = data.shape.len();
    let perm: Vec<usize> = match cx.attr_ints("perm")? {
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(cx, a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(cx.err(format!("perm {perm:?} is not a permutation of {rank} axes")));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| data.shape[p]).collect();
    // Output axis a reads source axis perm[a]; gather over the source strides.
    let st = strides(&data.shape);
    let total: usize = out_shape.iter().product();
    let idx: Vec<usize> = (0..total)
        .map(|flat| {
            let (mut r, mut src) = (flat, 0);
            for a in (0..rank).rev() {
                src += (r % out_shape[a]) * st[perm[a]];
                r /= out_shape[a];
            }
            src
        })
        .collect();
    Ok(Val::Const(select(data, out_shape, &idx)))
}

pub(crate) fn cast(cx: &NodeCx) -> Result<Val, ImportError> {
    cx.allow_attrs(&["to", "saturate", "round_mode"])?;
    let to = cx
        .attr_int("to")?
        .ok_or_else(|| cx.err("missing attribute 'to'"))?;
    let to = i32::try_from(to)
        .ok()
        .and_then(|t| DataType::try_from(t).ok())
        .ok_or_else(|| cx.err(format!("unknown type {to}")))?;
    let float = matches!(
        to,
        DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16
    );
    match cx.input(0)? {
        Val::Runtime(x) if float => Ok(Val::Runtime(*x)),
        Val::Runtime(_) => Err(cx.err(format!(
            "casting the model's activations to {} is not supported",
            to.as_str_name()
        ))),
        Val::Const(c) if float => Ok(Val::Const(Const::f32(c.shape.clone(), c.to_f32()))),
        Val::Const(c) => {
            let v = match &c.data {
                ConstData::I64(v) => v.clone(),
                ConstData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            };
            let v = if to == DataType::Bool {
                v.iter().map(|&x| i64::from(x != 0)).collect()
            } else {
                v
            };
            Ok(Val::Const(Const::i64(c.shape.clone(), v)))
        }
    }
}
