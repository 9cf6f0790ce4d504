//! SNN mode on a small hand-built network: unit outputs equal the reference unit evaluation
//! bit for bit, and spikes and synaptic operations equal a brute-force count over every
//! weight of the consuming layers.

use amos_snn::amos::closed_form::{self, Rounding};
use amos_snn::model::{ConversionSettings, ConvertedModel, Recipe, UnitParams, UnitPlacement};
use amos_snn::ops::{Activation, Binary, BinaryKind, Conv2d, GateKind, Linear, Op};
use amos_snn::simulate::{SpikingNetwork, StageSpec};
use amos_snn::{Graph, Tensor};

fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, seed: u32) -> Conv2d {
    let n = cout * cin * k * k;
    let weight: Vec<f32> = (0..n)
        .map(|i| ((((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0) * 0.3)
        .collect();
    Conv2d {
        weight: Tensor::new(vec![cout, cin, k, k], weight).unwrap(),
        bias: (0..cout).map(|i| 0.1 * i as f32).collect(),
        stride: [stride, stride],
        dilation: [1, 1],
        pads: [pad; 4],
        groups: 1,
        prepared: Default::default(),
    }
}

/// input [3,5,5] → conv1 3x3 → relu (unit 0) ─┬→ conv2 3x3/2 ─┐
///                                           └→ conv3 1x1/2 ─┴→ add → relu (unit 1) → GAP → linear
fn model() -> ConvertedModel {
    model_sized(5, 3, 5)
}

/// [`model`] on `side × side` images with `wide` channels out of conv1 and `classes` outputs.
fn model_sized(side: usize, wide: usize, classes: usize) -> ConvertedModel {
    let mut g = Graph::new("input", vec![3, side, side]);
    let c1 = g
        .add_node(
            "conv1",
            Op::Conv(conv(3, wide, 3, 1, 1, 1)),
            vec![g.input],
            "c1",
        )
        .unwrap();
    let r1 = g
        .add_node("relu1", Op::Activation(Activation::Relu), vec![c1], "r1")
        .unwrap();
    let c2 = g
        .add_node("conv2", Op::Conv(conv(wide, 4, 3, 2, 1, 2)), vec![r1], "c2")
        .unwrap();
    let c3 = g
        .add_node("conv3", Op::Conv(conv(wide, 4, 1, 2, 0, 3)), vec![r1], "c3")
        .unwrap();
    let add = Op::Binary(Binary {
        kind: BinaryKind::Add,
        constant: None,
    });
    let s = g.add_node("add", add, vec![c2, c3], "s").unwrap();
    let r2 = g
        .add_node("relu2", Op::Activation(Activation::Relu), vec![s], "r2")
        .unwrap();
    let p = g.add_node("gap", Op::GlobalAvgPool, vec![r2], "p").unwrap();
    let f = g
        .add_node(
            "flat",
            Op::Reshape(amos_snn::ops::Reshape { shape: vec![4] }),
            vec![p],
            "f",
        )
        .unwrap();
    let w = (0..4 * classes)
        .map(|i| (i % 20) as f32 / 10.0 - 1.0)
        .collect();
    g.add_node(
        "fc",
        Op::Linear(Linear {
            weight: Tensor::new(vec![4, classes], w).unwrap(),
            bias: vec![0.0; classes],
        }),
        vec![f],
        "out",
    )
    .unwrap();
    let relu = |alpha| UnitParams {
        unit: closed_form::relu(6, alpha, Rounding::Nearest),
        gate: GateKind::Relu,
        range: [0.0, alpha],
        range2: None,
        mse: 0.0,
        method: "closed-form-rounding".into(),
    };
    ConvertedModel {
        units: vec![
            UnitPlacement {
                node: 1,
                gate: GateKind::Relu,
                params: 0,
            },
            UnitPlacement {
                node: 5,
                gate: GateKind::Relu,
                params: 1,
            },
        ],
        unit_params: vec![relu(4.0), relu(3.0)],
        graph: g,
        preprocess: Recipe {
            preset: "custom".into(),
            resize: "none".into(),
            resize_param: 0,
            crop: [side as u32, side as u32],
            interp: "bilinear".into(),
            mean: [100.0, 120.0, 140.0],
            std: [60.0, 50.0, 40.0],
        },
        classes: vec![],
        settings: ConversionSettings {
            k: vec![],
            rounding: true,
            calibration_images: 0,
            seed: 0,
            tool_version: "test".into(),
            fit_steps: 0,
            fit_samples: 0,
        },
        source_sha256: String::new(),
    }
}

fn images() -> Vec<Vec<u8>> {
    images_sized(5)
}

/// Three `side × side` RGB images.
fn images_sized(side: u32) -> Vec<Vec<u8>> {
    (0..3u32)
        .map(|b| {
            (0..3 * side * side)
                .map(|i| ((i * 37 + b * 101) % 256) as u8)
                .collect()
        })
        .collect()
}

/// Brute force: Σ over every weight (oc, oy, ox, ic, ky, kx) of `c` of the spikes of the input
/// element it reads.
fn conv_synops(c: &Conv2d, spikes: &[u32], [cin, h, w]: [usize; 3]) -> u64 {
    let k = c.weight.shape()[2];
    let (s, p) = (c.stride[0] as isize, c.pads[0] as isize);
    let oh = (h as isize + 2 * p - k as isize) / s + 1;
    let ow = (w as isize + 2 * p - k as isize) / s + 1;
    let mut total = 0u64;
    for _oc in 0..c.out_channels() {
        for oy in 0..oh {
            for ox in 0..ow {
                for ic in 0..cin {
                    for ky in 0..k as isize {
                        for kx in 0..k as isize {
                            let (iy, ix) = (oy * s - p + ky, ox * s - p + kx);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                total += spikes[ic * h * w + iy as usize * w + ix as usize] as u64;
                            }
                        }
                    }
                }
            }
        }
    }
    total
}

#[test]
fn units_match_reference_evaluation_and_synops_match_brute_force() {
    check_units_and_synops(5, 3);
}

/// Planes whose fanouts repeat channel after channel: kept for one period (32 planes of 7 × 7
/// elements, then 1024 + 544 elements a chunk; one plane of 40 × 40; one of 75 × 75, not a
/// multiple of the kernels' blocks) and still counted element by element.
#[test]
fn synops_of_periodic_fanouts_match_brute_force() {
    for (side, wide) in [(7, 40), (40, 8), (75, 2)] {
        check_units_and_synops(side, wide);
    }
}

/// [`model_sized`] on `side × side` images with `wide` channels: every unit output equals
/// the unit's own evaluation, and spikes and synaptic operations the brute-force counts.
fn check_units_and_synops(side: usize, wide: usize) {
    let m = model_sized(side, wide, 5);
    let net = SpikingNetwork::new(&m, 2).unwrap();
    let imgs = images_sized(side as u32);
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    // Per unit and image: spikes per element, recomputed from the unit's inputs.
    let mut recorded: Vec<Vec<Vec<u32>>> = vec![Vec::new(); 2];
    let out = net
        .run_snn_observed(&refs, None, &mut |u, inputs, output| {
            let unit = &m.unit_params[m.units[u].params].unit;
            let per = output.len() / 3;
            for b in 0..3 {
                let mut z = Vec::new();
                for e in 0..per {
                    let x = inputs[0].data()[b * per + e];
                    let (spikes, y) = unit.eval(x, 0.0);
                    assert_eq!(
                        y.to_bits(),
                        output.data()[b * per + e].to_bits(),
                        "unit {u} element {e}"
                    );
                    z.push(spikes.count_ones());
                }
                recorded[u].push(z);
            }
        })
        .unwrap();
    let Op::Conv(c1) = &m.graph.nodes[0].op else {
        unreachable!()
    };
    let Op::Conv(c2) = &m.graph.nodes[2].op else {
        unreachable!()
    };
    let Op::Conv(c3) = &m.graph.nodes[3].op else {
        unreachable!()
    };
    for b in 0..3 {
        let st = &out.stats[b];
        let s0: u64 = recorded[0][b].iter().map(|&s| s as u64).sum();
        let s1: u64 = recorded[1][b].iter().map(|&s| s as u64).sum();
        assert_eq!(st.unit_spikes, vec![s0 as u32, s1 as u32]);
        assert_eq!(st.spikes, s0 + s1);
        // Unit 0 feeds conv2 and conv3; unit 1 feeds the global average (one synapse each).
        let expected = conv_synops(c2, &recorded[0][b], [wide, side, side])
            + conv_synops(c3, &recorded[0][b], [wide, side, side])
            + s1;
        assert_eq!(st.synops, expected, "side {side}, image {b}");
        // Input layer: the set bits of every pixel channel, into conv1.
        let img = &imgs[b];
        let plane = side * side;
        let mut bits = vec![0u32; 3 * plane];
        for (i, px) in img.chunks(3).enumerate() {
            for c in 0..3 {
                bits[c * plane + i] = px[c].count_ones();
            }
        }
        assert_eq!(st.input_spikes, bits.iter().map(|&x| x as u64).sum::<u64>());
        assert_eq!(st.input_synops, conv_synops(c1, &bits, [3, side, side]));
    }
    let out_side = side.div_ceil(2);
    assert_eq!(
        net.neurons(),
        (6 * wide * side * side + 6 * 4 * out_side * out_side) as u64
    );
    assert_eq!(net.input_neurons(), 8 * 3 * (side * side) as u64);
}

#[test]
fn snn_with_fine_units_approaches_the_ann() {
    // With many neurons per unit the spiking network must reproduce the ANN closely.
    let mut m = model();
    for p in &mut m.unit_params {
        p.unit = closed_form::relu(20, p.range[1] * 4.0, Rounding::Nearest);
    }
    let net = SpikingNetwork::new(&m, 1).unwrap();
    let imgs = images();
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    let ann = net.run_ann(&refs).unwrap();
    let snn = net.run_snn(&refs).unwrap();
    for (a, s) in ann.data().iter().zip(snn.logits.data()) {
        assert!((a - s).abs() < 1e-3, "ann {a} snn {s}");
    }
}

#[test]
fn identity_unit_encodes_a_residual_sum_at_a_boundary() {
    let mut m = model();
    let sum = m.graph.nodes[4].output; // the residual add: not a unit's output
    let ann_before = SpikingNetwork::new(&m, 1).unwrap();
    let imgs = images();
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    let ann = ann_before.run_ann(&refs).unwrap();
    let snn_before = ann_before.run_snn(&refs).unwrap();

    let placement = m
        .insert_identity_unit(sum, 16, [-20.0, 20.0], Rounding::Nearest)
        .unwrap();
    assert_eq!(m.units.len(), 3);
    assert_eq!(m.units[placement].gate, GateKind::Identity);
    assert_eq!(m.graph.nodes[m.units[placement].node].inputs, vec![sum]);
    // Every placement still points at a gate node; placing it again changes nothing.
    amos_snn::simulate::check_placements(&m).unwrap();
    let again = m.graph.nodes[m.units[placement].node].output;
    assert_eq!(
        m.insert_identity_unit(again, 16, [-20.0, 20.0], Rounding::Nearest)
            .unwrap(),
        placement
    );
    assert!(
        m.insert_identity_unit(m.graph.input, 8, [0.0, 1.0], Rounding::Nearest)
            .is_err()
    );

    let net = SpikingNetwork::new(&m, 1).unwrap();
    // ANN mode is unchanged by an identity node.
    assert_eq!(net.run_ann(&refs).unwrap(), ann);
    let snn = net.run_snn(&refs).unwrap();
    for b in 0..3 {
        // The identity unit's spikes are counted, and it adds K × elements neurons.
        assert!(snn.stats[b].unit_spikes[placement] > 0);
    }
    assert_eq!(
        net.neurons(),
        SpikingNetwork::new(&model(), 1).unwrap().neurons() + 16 * 36
    );
    // A 16-bit code over [−20, 20] changes the logits by at most a few code steps.
    for (a, s) in snn_before.logits.data().iter().zip(snn.logits.data()) {
        assert!((a - s).abs() < 0.05, "{a} vs {s}");
    }
}

#[test]
fn a_unit_fused_into_its_convolution_gives_bit_identical_results() {
    // conv1 → relu1 is fused (conv1's output has no other reader).
    let imgs = images();
    fused_runs_give_the_unfused_bits(&model(), &imgs, 2, &[0]);
}

#[test]
fn a_residual_addition_fused_into_its_convolution_gives_bit_identical_results() {
    // conv3 → add (conv3's output its second operand, then its first) is fused; the stage
    // that ends at conv3 sends conv3's output on, which keeps the addition apart.
    let imgs = images();
    let mut m = model();
    assert_eq!(
        m.graph.nodes[4].inputs,
        [2, 3].map(|n| m.graph.nodes[n].output)
    );
    for _ in 0..2 {
        fused_runs_give_the_unfused_bits(&m, &imgs, 4, &[0]);
        fused_runs_give_the_unfused_bits(&m, &imgs, 5, &[0]);
        m.graph.nodes[4].inputs.reverse();
    }
}

/// Fused runs of `m` on `imgs` against an observed run (which never fuses): SNN logits and
/// statistics bit for bit; the spike words of the units in `recorded`, recorded by a stage
/// of nodes `0..stage_end` that sends node `stage_end − 1`'s output on, against each unit's
/// definition on its observed inputs; ANN mode (activations fused) against the engine
/// alone. Returns those units' words.
fn fused_runs_give_the_unfused_bits(
    m: &ConvertedModel,
    imgs: &[Vec<u8>],
    stage_end: usize,
    recorded: &[usize],
) -> Vec<(usize, Vec<u64>)> {
    let net = SpikingNetwork::new(m, 2).unwrap();
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    let mut words: Vec<(usize, Vec<u64>)> = Vec::new();
    let unfused = net
        .run_snn_observed(&refs, None, &mut |u, inputs, _| {
            if recorded.contains(&u) {
                let unit = &m.unit_params[m.units[u].params].unit;
                let w = inputs[0].data().iter().map(|&x| unit.eval(x, 0.0).0);
                words.push((u, w.collect()));
            }
        })
        .unwrap();
    words.sort_by_key(|(u, _)| *u);
    let fused = net.run_snn(&refs).unwrap();
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&fused.logits), bits(&unfused.logits));
    assert_eq!(fused.stats, unfused.stats);
    // A stage that sends the units' spikes on records them through the fused path too.
    let sent = m.graph.nodes[stage_end - 1].output;
    let stage = net
        .run_snn_stage(StageSpec {
            nodes: 0..stage_end,
            inputs: vec![(m.graph.input, net.normalise(&refs).unwrap())],
            images: Some(&refs),
            keep: &[sent],
            record: recorded,
        })
        .unwrap();
    // (Not `assert_eq!`: a failure would print every word.)
    assert!(stage.spikes == words, "recorded spike words differ");
    let ann = net.run_ann(&refs).unwrap();
    let plain = net.engine().run(net.normalise(&refs).unwrap()).unwrap();
    assert_eq!(bits(&ann), bits(&plain));
    words
}

#[test]
fn an_image_gives_the_same_bits_alone_in_any_batch_and_on_any_thread_count() {
    // Batches run image by image in parallel, the layers after the last large value on a
    // group of images per thread when each thread gets two images or more (five images: on
    // 1 and 2 threads, not on 3) and the tail's weights are large; a lone image runs its
    // kernels multi-threaded. The small model has no such tail. The wide one's first layer
    // and unit 0 (32 × 48 × 48 values) run image by image, the rest (unit 1 and a classifier
    // of 60 000 outputs) in groups.
    let reversed = images().into_iter().map(|v| v.into_iter().rev().collect());
    let imgs: Vec<Vec<u8>> = images().into_iter().chain(reversed).take(5).collect();
    same_bits_alone_and_in_batches(&model(), &imgs);
    let wide: Vec<Vec<u8>> = (0..5u32)
        .map(|b| {
            (0..3 * 48 * 48u32)
                .map(|i| ((i * 37 + b * 101 + i / 97) % 256) as u8)
                .collect()
        })
        .collect();
    same_bits_alone_and_in_batches(&model_sized(48, 32, 60_000), &wide);
}

/// SNN and ANN results, statistics and a stage's recorded spikes, bit for bit: a batch on
/// 1, 2 and 3 threads, and each image alone.
fn same_bits_alone_and_in_batches(m: &ConvertedModel, imgs: &[Vec<u8>]) {
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let r1 = m.graph.nodes[1].output;
    let run = |threads: usize, batch: &[&[u8]]| {
        let net = SpikingNetwork::new(m, threads).unwrap();
        let snn = net.run_snn(batch).unwrap();
        let ann = net.run_ann(batch).unwrap();
        // A stage over the whole network that sends on relu1's output and the logits and
        // records both units' spikes (one in the head, one in the tail of the wide model).
        let stage = net
            .run_snn_stage(StageSpec {
                nodes: 0..m.graph.nodes.len(),
                inputs: vec![(m.graph.input, net.normalise(batch).unwrap())],
                images: Some(batch),
                keep: &[r1, m.graph.output],
                record: &[0, 1],
            })
            .unwrap();
        (
            bits(&snn.logits),
            snn.stats,
            bits(&ann),
            stage.spikes,
            [bits(&stage.values[0]), bits(&stage.values[1])],
            stage.stats,
        )
    };
    let whole = run(2, &refs);
    assert_eq!(whole, run(1, &refs));
    assert_eq!(whole, run(3, &refs));
    // Image by image, joined in batch order.
    let mut joined = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        vec![(0, Vec::new()), (1, Vec::new())],
        [Vec::new(), Vec::new()],
        Vec::new(),
    );
    for image in &refs {
        let one = run(2, std::slice::from_ref(image));
        joined.0.extend(one.0);
        joined.1.extend(one.1);
        joined.2.extend(one.2);
        for (all, (_, words)) in joined.3.iter_mut().zip(one.3) {
            all.1.extend(words);
        }
        joined.4[0].extend(&one.4[0]);
        joined.4[1].extend(&one.4[1]);
        joined.5.extend(one.5);
    }
    assert_eq!(whole, joined);
    // The batch path (observed runs never split) agrees too.
    let net = SpikingNetwork::new(m, 2).unwrap();
    let observed = net
        .run_snn_observed(&refs, None, &mut |_, _, _| {})
        .unwrap();
    assert_eq!(whole.0, bits(&observed.logits));
    assert_eq!(whole.1, observed.stats);
}

/// input [3, 56, 56] → pointwise conv 3→32 → relu (unit 0) → depthwise 3×3 → relu (unit 1)
/// → GAP → linear: both kinds of convolution that the large layers of an EfficientNet are,
/// over planes larger than a core's L1, each with its unit fused into it.
fn model_with_large_planes() -> ConvertedModel {
    let side = 56;
    let mut m = model_sized(side, 32, 5);
    let mut g = Graph::new("input", vec![3, side, side]);
    let c1 = g
        .add_node("pw", Op::Conv(conv(3, 32, 1, 1, 0, 7)), vec![g.input], "c1")
        .unwrap();
    let r1 = g
        .add_node("relu1", Op::Activation(Activation::Relu), vec![c1], "r1")
        .unwrap();
    let mut dw = conv(1, 32, 3, 1, 1, 9);
    dw.groups = 32;
    let c2 = g.add_node("dw", Op::Conv(dw), vec![r1], "c2").unwrap();
    let r2 = g
        .add_node("relu2", Op::Activation(Activation::Relu), vec![c2], "r2")
        .unwrap();
    let p = g.add_node("gap", Op::GlobalAvgPool, vec![r2], "p").unwrap();
    let f = g
        .add_node(
            "flat",
            Op::Reshape(amos_snn::ops::Reshape { shape: vec![32] }),
            vec![p],
            "f",
        )
        .unwrap();
    let w = (0..32 * 5).map(|i| (i % 20) as f32 / 10.0 - 1.0).collect();
    g.add_node(
        "fc",
        Op::Linear(Linear {
            weight: Tensor::new(vec![32, 5], w).unwrap(),
            bias: vec![0.0; 5],
        }),
        vec![f],
        "out",
    )
    .unwrap();
    m.units[1].node = 3;
    m.graph = g;
    m
}

#[test]
fn units_fused_into_large_pointwise_and_depthwise_layers_give_bit_identical_results() {
    let imgs: Vec<Vec<u8>> = (0..3u32)
        .map(|b| {
            (0..3 * 56 * 56u32)
                .map(|i| ((i * 37 + b * 101 + i / 91) % 256) as u8)
                .collect()
        })
        .collect();
    let words = fused_runs_give_the_unfused_bits(&model_with_large_planes(), &imgs, 4, &[0, 1]);
    assert!(
        words.len() == 2 && words.iter().all(|(_, w)| w.iter().any(|&w| w != 0)),
        "units never fire"
    );
}
