//! Rewrites that bring an imported graph to the form conversion expects: batch norms folded
//! into convolutions, zero padding folded into convolutions, and gates recognised from the
//! patterns exporters write (swish, hard-swish, GELU).
//!
//! Each pass marks nodes it absorbs as [`Op::Identity`] or leaves them unreferenced;
//! [`simplify`] then compacts the graph once.

use crate::graph::{Graph, ValueId};
use crate::ops::{Activation, Binary, BinaryKind, Op};

/// Runs every pass, then [`Graph::compact`].
pub fn simplify(graph: &mut Graph) {
    fold_channel_affine_into_conv(graph);
    fold_zero_pad_into_conv(graph);
    fuse_gated_products(graph);
    fuse_gelu(graph);
    graph.compact();
}

/// `Conv → ChannelAffine` (a batch norm after a convolution) becomes one convolution with
/// scaled weights and shifted bias, when the convolution feeds nothing else.
pub fn fold_channel_affine_into_conv(graph: &mut Graph) {
    let producers = graph.producers();
    let uses = graph.use_counts();
    for i in 0..graph.nodes.len() {
        let Op::ChannelAffine(affine) = &graph.nodes[i].op else {
            continue;
        };
        let src = graph.nodes[i].inputs[0];
        let Some(p) = producers[src] else { continue };
        if uses[src] != 1 || !matches!(graph.nodes[p].op, Op::Conv(_)) {
            continue;
        }
        let affine = affine.clone();
        if let Op::Conv(conv) = &mut graph.nodes[p].op {
            let per_out = conv.weight.len() / conv.out_channels().max(1);
            for (co, chunk) in conv
                .weight
                .data_mut()
                .chunks_mut(per_out.max(1))
                .enumerate()
            {
                chunk.iter_mut().for_each(|w| *w *= affine.scale[co]);
            }
            for (co, b) in conv.bias.iter_mut().enumerate() {
                *b = *b * affine.scale[co] + affine.shift[co];
            }
            // New weights: whatever the kernels derived from the old ones is stale.
            conv.prepared = Default::default();
        }
        graph.nodes[i].op = Op::Identity;
    }
}

/// `Pad(0) → Conv` (how "same" padding is exported) becomes a convolution with those pads,
/// when the padding pads only the spatial axes and feeds nothing else.
pub fn fold_zero_pad_into_conv(graph: &mut Graph) {
    let producers = graph.producers();
    let uses = graph.use_counts();
    for i in 0..graph.nodes.len() {
        if !matches!(graph.nodes[i].op, Op::Conv(_)) {
            continue;
        }
        let src = graph.nodes[i].inputs[0];
        let Some(p) = producers[src] else { continue };
        let Op::Pad(pad) = &graph.nodes[p].op else {
            continue;
        };
        let spatial_only = pad.begin.len() == 3 && pad.begin[0] == 0 && pad.end[0] == 0;
        if uses[src] != 1 || pad.value != 0.0 || !spatial_only {
            continue;
        }
        let (begin, end) = (pad.begin.clone(), pad.end.clone());
        let pad_input = graph.nodes[p].inputs[0];
        if let Op::Conv(conv) = &mut graph.nodes[i].op {
            conv.pads[0] += begin[1];
            conv.pads[1] += begin[2];
            conv.pads[2] += end[1];
            conv.pads[3] += end[2];
        }
        graph.nodes[i].inputs[0] = pad_input;
        graph.nodes[p].op = Op::Identity;
    }
}

/// `x · sigmoid(x)` becomes swish and `x · hard_sigmoid(x)` (α = 1/6, β = 1/2) hard-swish,
/// when the sigmoid feeds only that product.
pub fn fuse_gated_products(graph: &mut Graph) {
    let producers = graph.producers();
    let uses = graph.use_counts();
    for i in 0..graph.nodes.len() {
        let Op::Binary(Binary {
            kind: BinaryKind::Mul,
            constant: None,
        }) = graph.nodes[i].op
        else {
            continue;
        };
        let (a, b) = (graph.nodes[i].inputs[0], graph.nodes[i].inputs[1]);
        for (x, gate) in [(a, b), (b, a)] {
            let Some(p) = producers[gate] else { continue };
            if graph.nodes[p].inputs[0] != x || uses[gate] != 1 {
                continue;
            }
            let fused = match graph.nodes[p].op {
                Op::Activation(Activation::Sigmoid) => Activation::Swish,
                Op::Activation(Activation::HardSigmoid { alpha, beta })
                    if (alpha - 1.0 / 6.0).abs() < 1e-6 && beta == 0.5 =>
                {
                    Activation::HardSwish
                }
                _ => continue,
            };
            graph.nodes[i].op = Op::Activation(fused);
            graph.nodes[i].inputs = vec![x];
            break;
        }
    }
}

/// The GELU exported as `x · ½ · (1 + erf(x / √2))`, in its usual orderings, becomes one gate.
pub fn fuse_gelu(graph: &mut Graph) {
    let producers = graph.producers();
    let uses = graph.use_counts();
    let readers = readers(graph);
    let scalar = |op: &Op, kind: BinaryKind| -> Option<f32> {
        match op {
            Op::Binary(Binary {
                kind: k,
                constant: Some(c),
            }) if *k == kind && !c.on_left && c.tensor.len() == 1 => Some(c.tensor.data()[0]),
            _ => None,
        }
    };
    let near = |v: Option<f32>, target: f32| v.is_some_and(|v| (v - target).abs() < 1e-4);
    for e in 0..graph.nodes.len() {
        if graph.nodes[e].op != Op::Activation(Activation::Erf) {
            continue;
        }
        // u = x / √2  (or x · 1/√2)
        let Some(u_node) = producers[graph.nodes[e].inputs[0]] else {
            continue;
        };
        let u_op = &graph.nodes[u_node].op;
        let scaled = near(scalar(u_op, BinaryKind::Div), std::f32::consts::SQRT_2)
            || near(
                scalar(u_op, BinaryKind::Mul),
                std::f32::consts::FRAC_1_SQRT_2,
            );
        if !scaled || uses[graph.nodes[u_node].output] != 1 {
            continue;
        }
        let x = graph.nodes[u_node].inputs[0];
        // a = erf(u) + 1
        let Some(&[add]) = readers[graph.nodes[e].output].as_deref() else {
            continue;
        };
        if !near(scalar(&graph.nodes[add].op, BinaryKind::Add), 1.0) {
            continue;
        }
        // m = a · x  then  · ½,   or   m = a · (x · ½)
        let Some(&[m]) = readers[graph.nodes[add].output].as_deref() else {
            continue;
        };
        if graph.nodes[m].op
            != Op::Binary(Binary {
                kind: BinaryKind::Mul,
                constant: None,
            })
        {
            continue;
        }
        let other = graph.nodes[m]
            .inputs
            .iter()
            .copied()
            .find(|&v| v != graph.nodes[add].output);
        let last = if other == Some(x) {
            match readers[graph.nodes[m].output].as_deref() {
                Some(&[h]) if near(scalar(&graph.nodes[h].op, BinaryKind::Mul), 0.5) => h,
                _ => continue,
            }
        } else {
            let half = other.and_then(|v| producers[v]);
            match half {
                Some(h)
                    if graph.nodes[h].inputs[0] == x
                        && uses[graph.nodes[h].output] == 1
                        && near(scalar(&graph.nodes[h].op, BinaryKind::Mul), 0.5) =>
                {
                    m
                }
                _ => continue,
            }
        };
        graph.nodes[last].op = Op::Activation(Activation::Gelu);
        graph.nodes[last].inputs = vec![x];
    }
}

/// The nodes reading each value.
fn readers(graph: &Graph) -> Vec<Option<Vec<usize>>> {
    let mut r: Vec<Option<Vec<usize>>> = vec![None; graph.values.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &v in &n.inputs {
            r[v].get_or_insert_with(Vec::new).push(i);
        }
    }
    // The graph output is read from outside: a pattern must not swallow it.
    let out: ValueId = graph.output;
    r[out].get_or_insert_with(Vec::new).push(usize::MAX);
    r
}
