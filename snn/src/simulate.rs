//! SNN mode: the converted network with every gate replaced by its AMOS unit.
//!
//! Linear layers are computed exactly from what the units feed forward, `y = o + Σ d_i·z_i`,
//! which is the value a receiving neuron integrates; the spikes `z` are counted per unit and
//! per image. The input layer encodes every uint8 pixel channel by its 8 bits (8 neurons, one
//! spike per set bit); the first layer sees `(pixel − mean)/std` exactly as the ANN does.
//!
//! **Synaptic operations** count, for every spike, the synapses it reaches in the layers that
//! read its unit: each weight of a convolution or fully-connected layer that connects the
//! spiking element to an output (borders included, zero weights included, since they are
//! connections of the layer), one per window of a pooling layer, one per element of a
//! two-input unit it feeds. Shape-only and additive nodes (reshape, pad, concat, residual
//! add, products with constants) pass the spike on to their own readers.
//! Max-pooling is evaluated exactly on the decoded values (it selects one of its inputs,
//! which are already spike-coded).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::amos::{AmosUnit, PairMemo, SecondInput, UnitKernel};
use crate::engine::Engine;
use crate::error::{EngineError, GraphError};
use crate::graph::{Graph, ValueId};
use crate::model::ConvertedModel;
use crate::ops::{BinaryKind, Conv2d, Op, OpClass};
use crate::tensor::Tensor;

/// Bits per input pixel channel.
pub const INPUT_BITS: u64 = 8;

/// Values per image (floats) above which a layer's output counts as large: the group tail
/// ([`SpikingNetwork::group_tail`]) starts after the last one. EfficientNet's 7×7 stages
/// (at most 1280 × 49) are below it, its 14×14 ones (672 × 196) above.
const GROUP_TAIL_MIN_VALUE: usize = 64 * 1024;

/// Images per group of the group tail at most: enough to share each block of weights (the
/// kernels share it among as many images as fit their cache budget anyway); 2, 4, 8 and 16
/// gave the same pipeline throughput here.
const GROUP_IMAGES: usize = 8;

/// Parameters of the group tail at least (1 MB of f32): below, sharing them saves less than
/// grouping the values costs (measured on a pipeline stage whose tail was one depthwise
/// layer: 8.3 → 8.6 ms per image).
const GROUP_TAIL_MIN_WEIGHTS: usize = 256 * 1024;

/// Spike statistics of one image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageStats {
    /// Spikes of all units (the input layer is counted apart).
    pub spikes: u64,
    /// Synaptic operations of those spikes.
    pub synops: u64,
    /// Spikes per unit, indexed like [`ConvertedModel::units`].
    pub unit_spikes: Vec<u32>,
    /// Spikes of the input layer (set bits of the pixels).
    pub input_spikes: u64,
    /// Synaptic operations of the input spikes.
    pub input_synops: u64,
}

/// What a batch produced in SNN mode.
#[derive(Clone, Debug)]
pub struct SnnOutput {
    /// `[N, classes]` (or the model's output shape).
    pub logits: Tensor,
    pub stats: Vec<ImageStats>,
}

/// A converted model ready to run in SNN (and ANN) mode.
pub struct SpikingNetwork {
    engine: Engine,
    /// The unit placement index of each gate node.
    unit_of_node: Vec<Option<usize>>,
    /// Parameters of each placement.
    units: Vec<AmosUnit>,
    /// The same, prepared for evaluation.
    kernels: Vec<Arc<UnitKernel>>,
    /// Per placement, the pair memos of its two-input unit, one per thread at work, kept
    /// from image to image: an SE product's inputs are decoded unit outputs, a few hundred
    /// levels times a few dozen, so after the first images nearly every pair is known.
    memos: Vec<Mutex<Vec<PairMemo>>>,
    /// Synapses per output element of each placement run here (none for placements
    /// outside [`SpikingNetwork::for_nodes`]'s range: a pipeline stage holds only its own).
    fanout: Vec<Fanout>,
    /// Per placement, the one fanout of all its elements where they share one (the inputs
    /// of a 1×1 convolution, of a global pool): the kernels then count spikes alone.
    constant_fanout: Vec<Option<u32>>,
    /// Output elements per image of each placement.
    unit_elements: Vec<usize>,
    /// Synapses per input element, in the images' HWC byte order (empty when the range does
    /// not start at the input).
    input_fanout: Vec<u32>,
    /// Input elements per image.
    input_elements: usize,
    /// By node: for a convolution whose output only the next node reads, and that node a
    /// one-input gate, the gate's unit placement. The gate is fused into the convolution
    /// (its unit, or in ANN mode its activation, rewrites each image's output in place
    /// while it is in cache), and the gate node passes the result on.
    fused: Vec<Option<usize>>,
    /// By node: whether it is a convolution whose output only the next node reads, and that
    /// node the addition of a runtime tensor of the same shape (a residual connection). The
    /// addition is fused into the convolution in both modes (each image's sum made while its
    /// output is in cache, as ONNX Runtime fuses it), the adding node passing the result on.
    residual_add: Vec<bool>,
    mean: [f32; 3],
    std: [f32; 3],
}

impl SpikingNetwork {
    pub fn new(model: &ConvertedModel, threads: usize) -> Result<Self, EngineError> {
        Self::for_nodes(model, threads, 0..model.graph.nodes.len())
    }

    /// A network that runs only the nodes in `nodes` in SNN mode (a pipeline stage): the
    /// synapse counts of units outside the range are not computed.
    pub fn for_nodes(
        model: &ConvertedModel,
        threads: usize,
        nodes: Range<usize>,
    ) -> Result<Self, EngineError> {
        let graph = &model.graph;
        let elements = |v: ValueId| graph.values[v].shape.iter().product::<usize>();
        let mut unit_of_node = vec![None; graph.nodes.len()];
        let mut units = Vec::with_capacity(model.units.len());
        let mut fanout = Vec::with_capacity(model.units.len());
        let mut unit_elements = Vec::with_capacity(model.units.len());
        let mut fanouts = Fanouts::new(graph);
        for (u, p) in model.units.iter().enumerate() {
            unit_of_node[p.node] = Some(u);
            units.push(model.unit_params[p.params].unit.clone());
            let output = graph.nodes[p.node].output;
            unit_elements.push(elements(output));
            fanout.push(if nodes.contains(&p.node) {
                let f = fanouts.of_value(output);
                let unit = &model.unit_params[p.params].unit;
                // The pair memo walks a two-input unit's elements its own way.
                if unit.is_two_input() {
                    Fanout::Each(f)
                } else {
                    Fanout::compress(f, &graph.values[output].shape)
                }
            } else {
                Fanout::Each(Vec::new())
            });
        }
        let input_fanout = if nodes.start == 0 {
            // The graph's input is CHW; the images come HWC.
            let chw = fanouts.of_value(graph.input);
            let plane = chw.len() / 3;
            (0..chw.len())
                .map(|i| chw[(i % 3) * plane + i / 3])
                .collect()
        } else {
            Vec::new()
        };
        let uses = graph.use_counts();
        let mut fused = vec![None; graph.nodes.len()];
        for (u, p) in model.units.iter().enumerate() {
            let gate = &graph.nodes[p.node];
            let Some(producer) = p.node.checked_sub(1) else {
                continue;
            };
            let conv = &graph.nodes[producer];
            if gate.inputs == [conv.output]
                && uses[conv.output] == 1
                && matches!(conv.op, Op::Conv(_))
                && matches!(gate.op, Op::Activation(_) | Op::Identity)
            {
                fused[producer] = Some(u);
            }
        }
        let residual_add = (0..graph.nodes.len())
            .map(|producer| {
                let (conv, Some(add)) = (&graph.nodes[producer], graph.nodes.get(producer + 1))
                else {
                    return false;
                };
                let &[a, b] = add.inputs.as_slice() else {
                    return false;
                };
                let is_add = matches!(&add.op,
                    Op::Binary(op) if op.kind == BinaryKind::Add && op.constant.is_none());
                let shape = |v: ValueId| &graph.values[v].shape;
                matches!(conv.op, Op::Conv(_))
                    && is_add
                    && uses[conv.output] == 1
                    && (a == conv.output) != (b == conv.output)
                    && shape(a) == shape(b)
                    && shape(add.output) == shape(a)
            })
            .collect();
        let constant_fanout = fanout
            .iter()
            .zip(&unit_elements)
            .map(|(f, &n)| f.constant(n))
            .collect();
        Ok(SpikingNetwork {
            engine: Engine::new(graph.clone(), threads)?,
            unit_of_node,
            kernels: shared_kernels(&units),
            memos: units.iter().map(|_| Mutex::new(Vec::new())).collect(),
            units,
            fanout,
            constant_fanout,
            unit_elements,
            input_fanout,
            input_elements: elements(graph.input),
            fused,
            residual_add,
            mean: model.preprocess.mean,
            std: model.preprocess.std,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Output values per image (the number of classes).
    pub fn classes(&self) -> usize {
        self.engine
            .graph()
            .output_shape()
            .iter()
            .product::<usize>()
            .max(1)
    }

    /// Parameters of each unit placement.
    pub fn units(&self) -> &[AmosUnit] {
        &self.units
    }

    /// Neurons per image over all units (K × elements), the input layer not included.
    pub fn neurons(&self) -> u64 {
        self.unit_neurons().iter().sum()
    }

    /// Neurons per unit placement.
    pub fn unit_neurons(&self) -> Vec<u64> {
        self.units
            .iter()
            .zip(&self.unit_elements)
            .map(|(u, &n)| (u.k() * n) as u64)
            .collect()
    }

    /// Mean synapses per spike of each unit placement (0 outside the range).
    pub fn unit_fanout(&self) -> Vec<f64> {
        self.fanout.iter().map(Fanout::mean).collect()
    }

    /// Neurons of the input layer: 8 per pixel channel.
    pub fn input_neurons(&self) -> u64 {
        INPUT_BITS * self.input_elements as u64
    }

    /// The normalised input batch `[N, C, H, W]` for HWC uint8 images.
    pub fn normalise(&self, images: &[&[u8]]) -> Result<Tensor, EngineError> {
        let shape = self.check_images(images)?;
        let per: usize = shape.iter().product();
        let mut data = vec![0.0f32; images.len() * per];
        // Image by image on the engine's threads.
        self.engine.install(|| {
            data.par_chunks_mut(per.max(1))
                .zip(images)
                .for_each(|(out, img)| self.normalise_image(img, out))
        });
        let mut full = vec![images.len()];
        full.extend_from_slice(&shape);
        Tensor::new(full, data).map_err(|_| EngineError::InputShape {
            got: vec![images.len()],
            expected: shape,
        })
    }

    /// Each image's normalised input `[1, C, H, W]`, in parallel: the parts of a batch run
    /// image by image, without a batch tensor to split (whose fresh pages cost more than
    /// the normalisation).
    fn normalise_each(&self, images: &[&[u8]]) -> Result<Vec<Tensor>, EngineError> {
        let shape = self.check_images(images)?;
        let per: usize = shape.iter().product();
        let mut one = vec![1];
        one.extend_from_slice(&shape);
        self.engine.install(|| {
            images
                .par_iter()
                .map(|img| {
                    let mut data = vec![0.0f32; per];
                    self.normalise_image(img, &mut data);
                    Tensor::new(one.clone(), data).map_err(|_| EngineError::InputShape {
                        got: vec![img.len()],
                        expected: shape.clone(),
                    })
                })
                .collect()
        })
    }

    /// The graph's input shape `[3, H, W]`, if every image has its `3·H·W` bytes.
    fn check_images(&self, images: &[&[u8]]) -> Result<Vec<usize>, EngineError> {
        let shape = self.engine.graph().input_shape().to_vec();
        let per: usize = shape.iter().product();
        match images
            .iter()
            .find(|img| img.len() != per || shape.len() != 3 || shape[0] != 3)
        {
            Some(img) => Err(EngineError::InputShape {
                got: vec![img.len()],
                expected: shape,
            }),
            None => Ok(shape),
        }
    }

    /// One HWC image into its normalised CHW input `out`.
    fn normalise_image(&self, img: &[u8], out: &mut [f32]) {
        let plane = out.len() / 3;
        for (i, px) in img.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (px[c] as f32 - self.mean[c]) / self.std[c];
            }
        }
    }

    /// ANN mode on HWC uint8 images.
    pub fn run_ann(&self, images: &[&[u8]]) -> Result<Tensor, EngineError> {
        let graph = self.engine.graph();
        let (nodes, keep) = (0..graph.nodes.len(), [graph.output]);
        let mut values = if images.len() >= 2 {
            let parts = self.normalise_each(images)?;
            let parts = parts.into_iter().map(|t| (vec![(graph.input, t)], None));
            self.run_ann_parts(nodes, parts.collect(), &keep)?
        } else {
            let input = self.normalise(images)?;
            self.run_ann_stage(nodes, vec![(graph.input, input)], &keep)?
        };
        Ok(values
            .pop()
            .unwrap_or_else(|| crate::ops::unreachable_shape()))
    }

    /// SNN mode on HWC uint8 images.
    pub fn run_snn(&self, images: &[&[u8]]) -> Result<SnnOutput, EngineError> {
        self.run_whole(images, None, &mut |_, _, _| {}, true)
    }

    /// SNN mode with only the unit placements marked in `enabled` in spikes; the other gates
    /// are computed exactly (ablation: what each gate type costs in fidelity).
    pub fn run_snn_partial(
        &self,
        images: &[&[u8]],
        enabled: &[bool],
    ) -> Result<SnnOutput, EngineError> {
        self.run_whole(images, Some(enabled), &mut |_, _, _| {}, false)
    }

    /// SNN mode, calling `observe(unit, inputs, output)` after each unit ran (for checks and
    /// debugging: the unit placement index, its batched inputs and decoded output). With
    /// `enabled`, only the marked placements run as units. Nothing is fused, so every unit
    /// runs apart from its producer: the same results as [`SpikingNetwork::run_snn`].
    pub fn run_snn_observed(
        &self,
        images: &[&[u8]],
        enabled: Option<&[bool]>,
        observe: &mut (dyn FnMut(usize, &[&Tensor], &Tensor) + Send),
    ) -> Result<SnnOutput, EngineError> {
        self.run_whole(images, enabled, observe, false)
    }

    fn run_whole(
        &self,
        images: &[&[u8]],
        enabled: Option<&[bool]>,
        observe: &mut (dyn FnMut(usize, &[&Tensor], &Tensor) + Send),
        fuse: bool,
    ) -> Result<SnnOutput, EngineError> {
        let graph = self.engine.graph();
        let (nodes, keep) = (0..graph.nodes.len(), [graph.output]);
        // Image by image, as `run_stage` would split the batch.
        let mut run = if fuse && enabled.is_none() && images.len() >= 2 {
            let parts = self.normalise_each(images)?.into_iter().enumerate();
            let parts = parts.map(|(b, t)| (vec![(graph.input, t)], Some(&images[b..b + 1])));
            self.run_stage_parts(parts.collect(), nodes, &keep, &[])?
        } else {
            let input = self.normalise(images)?;
            let spec = StageSpec {
                nodes,
                inputs: vec![(graph.input, input)],
                images: Some(images),
                keep: &keep,
                record: &[],
            };
            self.run_stage(spec, enabled, observe, fuse)?
        };
        let logits = run
            .values
            .pop()
            .unwrap_or_else(|| crate::ops::unreachable_shape());
        Ok(SnnOutput {
            logits,
            stats: run.stats,
        })
    }

    /// Runs the contiguous nodes of one pipeline stage in SNN mode (see [`StageSpec`]).
    ///
    /// The statistics count this stage's units only (and the input layer when the stage is
    /// given the images), so the stages' statistics add up to [`SpikingNetwork::run_snn`]'s.
    pub fn run_snn_stage(&self, spec: StageSpec<'_>) -> Result<StageResult, EngineError> {
        self.run_stage(spec, None, &mut |_, _, _| {}, true)
    }

    /// Runs the contiguous nodes of one pipeline stage in ANN mode: the values in `keep`.
    pub fn run_ann_stage(
        &self,
        nodes: Range<usize>,
        inputs: Vec<(ValueId, Tensor)>,
        keep: &[ValueId],
    ) -> Result<Vec<Tensor>, EngineError> {
        let Some(parts) = split_batch(&inputs, None) else {
            return self.run_ann_batch(nodes, inputs, keep, self.engine.threads());
        };
        self.run_ann_parts(nodes, parts, keep)
    }

    /// [`SpikingNetwork::run_ann_stage`] on a batch split image by image.
    fn run_ann_parts(
        &self,
        nodes: Range<usize>,
        parts: Vec<ImagePart<'_>>,
        keep: &[ValueId],
    ) -> Result<Vec<Tensor>, EngineError> {
        let tail = self.group_tail(&nodes, parts.len());
        let (head, head_keep) = self.head_of(&nodes, tail, keep);
        let runs = self.per_image(parts, |(inputs, _), threads| {
            self.run_ann_batch(head.clone(), inputs, &head_keep, threads)
        })?;
        let Some(split) = tail else {
            return Ok(join_values(runs));
        };
        let runs = self.per_image(self.groups(runs), |group, threads| {
            let inputs = join_group(group, &head_keep);
            self.run_ann_batch(split..nodes.end, inputs, keep, threads)
        })?;
        Ok(join_values(runs))
    }

    /// Where the group tail of a per-image run of `nodes` on `images` images starts: after
    /// the last node whose output is large ([`GROUP_TAIL_MIN_VALUE`]), if at least two images
    /// go to each thread and the tail's weights are large ([`GROUP_TAIL_MIN_WEIGHTS`]). The
    /// tail runs on groups of images (at most [`GROUP_IMAGES`]) instead of image by image: its
    /// outputs are small, and its weights, large, are then read once per group instead of
    /// once per image. The kernels compute each image the same way
    /// alone or in a group, so the results are the same.
    fn group_tail(&self, nodes: &Range<usize>, images: usize) -> Option<usize> {
        if images / self.engine.threads().max(1) < 2 {
            return None;
        }
        let graph = self.engine.graph();
        let large = |i: &usize| {
            let shape = &graph.values[graph.nodes[*i].output].shape;
            shape.iter().product::<usize>() > GROUP_TAIL_MIN_VALUE
        };
        let start = nodes
            .clone()
            .rev()
            .find(large)
            .map_or(nodes.start, |i| i + 1);
        // Grouping costs a copy of the values into groups: worth it for large weights only.
        let weights: usize = (start..nodes.end)
            .map(|i| graph.nodes[i].op.param_count())
            .sum();
        (start < nodes.end && weights >= GROUP_TAIL_MIN_WEIGHTS).then_some(start)
    }

    /// The nodes a per-image run goes through before the group tail starting at `tail`, and
    /// what it returns: the values of `keep` the tail does not compute, then every value the
    /// tail reads and does not compute.
    fn head_of(
        &self,
        nodes: &Range<usize>,
        tail: Option<usize>,
        keep: &[ValueId],
    ) -> (Range<usize>, Vec<ValueId>) {
        let Some(split) = tail else {
            return (nodes.clone(), keep.to_vec());
        };
        let graph = self.engine.graph();
        let computed_before =
            |v: ValueId, end: usize| (split..end).all(|j| graph.nodes[j].output != v);
        let mut head_keep: Vec<ValueId> = keep
            .iter()
            .copied()
            .filter(|&v| computed_before(v, nodes.end))
            .collect();
        for i in split..nodes.end {
            for &v in &graph.nodes[i].inputs {
                if computed_before(v, i) && !head_keep.contains(&v) {
                    head_keep.push(v);
                }
            }
        }
        (nodes.start..split, head_keep)
    }

    /// Per-image runs' values split into groups of consecutive images (one per thread, at
    /// most [`GROUP_IMAGES`] each): the group tail's inputs, once [`join_group`] has joined
    /// them (in the group's own task, so that the groups' copies run in parallel).
    fn groups(&self, runs: Vec<Vec<Tensor>>) -> Vec<Vec<Vec<Tensor>>> {
        let per_thread = runs.len().div_ceil(self.engine.threads().max(1));
        let per_group = per_thread.clamp(1, GROUP_IMAGES);
        let mut runs = runs.into_iter();
        let mut groups = Vec::new();
        loop {
            let group: Vec<Vec<Tensor>> = runs.by_ref().take(per_group).collect();
            if group.is_empty() {
                return groups;
            }
            groups.push(group);
        }
    }

    /// [`SpikingNetwork::run_ann_stage`] on a batch as a whole, each kernel on at most
    /// `threads` threads.
    fn run_ann_batch(
        &self,
        nodes: Range<usize>,
        inputs: Vec<(ValueId, Tensor)>,
        keep: &[ValueId],
        threads: usize,
    ) -> Result<Vec<Tensor>, EngineError> {
        let graph = self.engine.graph();
        let forwarded = self.forwarded(&nodes, keep);
        let mut replace = |node: usize, inputs: &[&Tensor]| -> Option<Tensor> {
            if let Some(out) = self.run_with_residual(node, inputs, &forwarded, threads) {
                return Some(out);
            }
            let (conv, shape) = self.fused_conv(node, &forwarded)?;
            let activation = match graph.nodes[node + 1].op {
                Op::Activation(a) => Some(a),
                _ => None,
            };
            // ReLU and ReLU6 in the convolution's own stores; other gates after it.
            let clamp = activation.and_then(|a| a.as_clamp());
            let epilogue = move |_: usize, y: &mut [f32]| {
                if let Some(a) = activation.filter(|_| clamp.is_none()) {
                    a.apply_in_place(y);
                }
            };
            Some(conv.eval_fused(inputs[0], shape, threads, clamp, Some(&epilogue)))
        };
        self.engine
            .run_nodes_fused(nodes, inputs, keep, &mut replace, &forwarded, threads)
    }

    /// Runs `run` on every image of a batch, in parallel, each image through the whole range
    /// on one thread (`run`'s second argument: the threads each kernel may use). One image's
    /// activations stay in the caches from layer to layer, where a batch's would not, and
    /// the kernels compute each image the same way either way, so the results are the same.
    fn per_image<P: Send, T: Send>(
        &self,
        parts: Vec<P>,
        run: impl Fn(P, usize) -> Result<T, EngineError> + Sync,
    ) -> Result<Vec<T>, EngineError> {
        let threads = self.engine.threads();
        if parts.len() <= 1 {
            // In the engine's pool too: called from a thread outside it (a worker's blocking
            // task), the kernels' parallel loops would run on the global pool, on every core.
            return self
                .engine
                .install(|| parts.into_iter().map(|p| run(p, threads)).collect());
        }
        let inner = (threads / parts.len()).max(1);
        self.engine.install(|| {
            // An image per task, so that a thread done early takes the next image
            // instead of idling while a slower one finishes a half of the batch.
            let parts = parts.into_par_iter().with_max_len(1);
            parts.map(|p| run(p, inner)).collect()
        })
    }

    /// The convolution at `node` and its per-image output shape, when the node after it (a
    /// gate or a residual addition) is fused into it in this run (`forwarded` from
    /// [`SpikingNetwork::forwarded`]).
    fn fused_conv(&self, node: usize, forwarded: &[bool]) -> Option<(&Conv2d, &[usize])> {
        if !forwarded.get(node + 1).copied().unwrap_or(false) {
            return None;
        }
        let graph = self.engine.graph();
        match &graph.nodes[node].op {
            Op::Conv(conv) => Some((conv, &graph.values[graph.nodes[node].output].shape)),
            _ => None,
        }
    }

    /// Convolution `node` with the residual addition after it fused in, when it is in this
    /// run (`inputs`: the convolution's, then the residual, as the engine passes them): each
    /// image's residual added to its output as it is computed, the addition's own sums.
    fn run_with_residual(
        &self,
        node: usize,
        inputs: &[&Tensor],
        forwarded: &[bool],
        threads: usize,
    ) -> Option<Tensor> {
        let residual = *inputs.get(1).filter(|_| self.residual_add[node])?;
        let (conv, shape) = self.fused_conv(node, forwarded)?;
        let per = residual.data().len() / residual.shape().first().copied()?.max(1);
        let add = |b: usize, y: &mut [f32]| {
            let other = residual
                .data()
                .get(b * per..(b + 1) * per)
                .unwrap_or_default();
            y.iter_mut().zip(other).for_each(|(y, &r)| *y += r);
        };
        Some(conv.eval_fused(inputs[0], shape, threads, None, Some(&add)))
    }

    /// By node, whether it is fused into its producer in a run of `nodes` that returns `keep`:
    /// both in the range, and the producer's output not returned.
    fn forwarded(&self, nodes: &Range<usize>, keep: &[ValueId]) -> Vec<bool> {
        let graph = self.engine.graph();
        let mut forwarded = vec![false; graph.nodes.len()];
        for producer in nodes.clone() {
            if (self.fused[producer].is_some() || self.residual_add[producer])
                && nodes.contains(&(producer + 1))
                && !keep.contains(&graph.nodes[producer].output)
            {
                forwarded[producer + 1] = true;
            }
        }
        forwarded
    }

    /// The decoded output of unit placement `unit` for its spike words (one per element of a
    /// `[N, …]` tensor of `shape`): `o + Σ d_i·z_i`, bit-identical to what the unit produced.
    pub fn decode_spikes(
        &self,
        unit: usize,
        shape: Vec<usize>,
        spikes: &[u64],
    ) -> Result<Tensor, EngineError> {
        let kernel = self.kernels.get(unit).ok_or_else(|| {
            EngineError::Stage(format!(
                "spikes for unit {unit}, but the model has {} units",
                self.kernels.len()
            ))
        })?;
        let placement_shape = self.unit_elements[unit];
        let per: usize = shape.iter().skip(1).product();
        if shape.is_empty() || per != placement_shape {
            return Err(EngineError::Stage(format!(
                "spikes for unit {unit} have shape {shape:?}; the unit has {placement_shape} elements per image"
            )));
        }
        let data = spikes.iter().map(|&z| kernel.decode(z)).collect();
        Tensor::new(shape, data).map_err(|e| EngineError::Stage(e.to_string()))
    }

    fn run_stage(
        &self,
        spec: StageSpec<'_>,
        enabled: Option<&[bool]>,
        observe: &mut (dyn FnMut(usize, &[&Tensor], &Tensor) + Send),
        fuse: bool,
    ) -> Result<StageResult, EngineError> {
        // Observed and partial runs see whole batches; the others go image by image.
        let parts = if fuse && enabled.is_none() {
            split_batch(&spec.inputs, spec.images)
        } else {
            None
        };
        let Some(parts) = parts else {
            return self.run_stage_batch(spec, enabled, observe, fuse, self.engine.threads());
        };
        self.run_stage_parts(parts, spec.nodes, spec.keep, spec.record)
    }

    /// [`SpikingNetwork::run_stage`] on a batch split image by image, fused.
    fn run_stage_parts(
        &self,
        parts: Vec<ImagePart<'_>>,
        nodes: Range<usize>,
        keep: &[ValueId],
        record: &[usize],
    ) -> Result<StageResult, EngineError> {
        let tail = self.group_tail(&nodes, parts.len());
        let (head, head_keep) = self.head_of(&nodes, tail, keep);
        let runs = self.per_image(parts, |(inputs, images), threads| {
            let spec = StageSpec {
                nodes: head.clone(),
                inputs,
                images,
                keep: &head_keep,
                record,
            };
            self.run_stage_batch(spec, None, &mut |_, _, _| {}, true, threads)
        })?;
        let Some(split) = tail else {
            return Ok(join_stage_results(runs));
        };
        let mut head_stats = Vec::with_capacity(runs.len());
        let mut head_spikes = Vec::with_capacity(runs.len());
        let mut values = Vec::with_capacity(runs.len());
        for run in runs {
            head_stats.extend(run.stats);
            head_spikes.push(run.spikes);
            values.push(run.values);
        }
        let groups = self.groups(values);
        let runs = self.per_image(groups, |group, threads| {
            let spec = StageSpec {
                nodes: split..nodes.end,
                inputs: join_group(group, &head_keep),
                images: None,
                keep,
                record,
            };
            self.run_stage_batch(spec, None, &mut |_, _, _| {}, true, threads)
        })?;
        // The head's and the tail's units are disjoint: their counts add up per image.
        let mut joined = join_stage_results(runs);
        for (tail, head) in joined.stats.iter_mut().zip(head_stats) {
            tail.spikes += head.spikes;
            tail.synops += head.synops;
            tail.input_spikes += head.input_spikes;
            tail.input_synops += head.input_synops;
            for (t, h) in tail.unit_spikes.iter_mut().zip(head.unit_spikes) {
                *t += h;
            }
        }
        let mut spikes = join_spikes(head_spikes);
        spikes.extend(joined.spikes);
        spikes.sort_by_key(|(u, _)| *u);
        joined.spikes = spikes;
        Ok(joined)
    }

    /// [`SpikingNetwork::run_stage`] on a batch as a whole, each kernel on at most `threads`
    /// threads.
    fn run_stage_batch(
        &self,
        mut spec: StageSpec<'_>,
        enabled: Option<&[bool]>,
        observe: &mut (dyn FnMut(usize, &[&Tensor], &Tensor) + Send),
        fuse: bool,
        threads: usize,
    ) -> Result<StageResult, EngineError> {
        let n = match (&spec.images, spec.inputs.first()) {
            (Some(images), _) => images.len(),
            (None, Some((_, t))) => t.shape().first().copied().unwrap_or(0),
            (None, None) => 0,
        };
        let mut stats: Vec<ImageStats> = (0..n)
            .map(|_| ImageStats {
                unit_spikes: vec![0; self.units.len()],
                ..Default::default()
            })
            .collect();
        if let Some(images) = spec.images {
            // Input layer: one spike per set bit of each byte.
            for (img, st) in images.iter().zip(stats.iter_mut()) {
                (st.input_spikes, st.input_synops) = input_counts(img, &self.input_fanout);
            }
        }
        let mut recorded = Vec::with_capacity(spec.record.len());
        let forwarded = if fuse {
            self.forwarded(&spec.nodes, spec.keep)
        } else {
            Vec::new()
        };
        let mut replace = |node: usize, inputs: &[&Tensor]| -> Option<Tensor> {
            if let Some(out) = self.run_with_residual(node, inputs, &forwarded, threads) {
                return Some(out);
            }
            let fused = self.fused[node].zip(self.fused_conv(node, &forwarded));
            let (u, (out, per_image, words)) = match fused {
                Some((u, (conv, shape))) => (
                    u,
                    self.run_fused(conv, shape, u, inputs[0], spec.record.contains(&u), threads),
                ),
                None => {
                    let u = self.unit_of_node[node]?;
                    if enabled.is_some_and(|e| !e.get(u).copied().unwrap_or(false)) {
                        return None;
                    }
                    let run = self.run_unit(u, inputs, spec.record.contains(&u));
                    observe(u, inputs, &run.0);
                    (u, run)
                }
            };
            for (st, (spikes, synops)) in stats.iter_mut().zip(per_image) {
                st.unit_spikes[u] = spikes as u32;
                st.spikes += spikes;
                st.synops += synops;
            }
            if let Some(words) = words {
                recorded.push((u, words));
            }
            Some(out)
        };
        let values = self.engine.run_nodes_fused(
            spec.nodes.clone(),
            std::mem::take(&mut spec.inputs),
            spec.keep,
            &mut replace,
            &forwarded,
            threads,
        )?;
        recorded.sort_by_key(|(u, _)| *u);
        Ok(StageResult {
            values,
            spikes: recorded,
            stats,
        })
    }

    /// Evaluates placement `u` on its gate's inputs: the decoded outputs, per image the
    /// spikes and synaptic operations, and with `record` every element's spike word.
    fn run_unit(&self, u: usize, inputs: &[&Tensor], record: bool) -> UnitRun {
        let x = inputs[0];
        let n = x.shape()[0];
        let per = self.unit_elements[u];
        let mut out = vec![0.0f32; n * per];
        let mut words = vec![0u64; if record { n * per } else { 0 }];
        // The second input of a two-input unit against the first's shape.
        let x2 = inputs.get(1).map(|t| Broadcast::new(t, &x.shape()[1..]));
        let eval = |b: usize, dst: &mut [f32], z: Option<&mut [u64]>| -> (u64, u64) {
            let src = &x.data()[b * per..(b + 1) * per];
            let src2 = x2.as_ref().map(|t| t.image(b));
            self.unit_image(u, Some(src), src2, dst, z)
        };
        let chunk = per.max(1);
        let per_image: Vec<(u64, u64)> = if record {
            out.par_chunks_mut(chunk)
                .zip(words.par_chunks_mut(chunk))
                .enumerate()
                .map(|(b, (dst, z))| eval(b, dst, Some(z)))
                .collect()
        } else {
            out.par_chunks_mut(chunk)
                .enumerate()
                .map(|(b, dst)| eval(b, dst, None))
                .collect()
        };
        (
            Tensor::new(x.shape().to_vec(), out)
                .unwrap_or_else(|_| crate::ops::unreachable_shape()),
            per_image,
            record.then_some(words),
        )
    }

    /// Runs convolution `conv` (output shape `shape` per image) with one-input placement `u`
    /// fused into it: each image's output goes through the unit in place as soon as it is
    /// computed. Returns what [`SpikingNetwork::run_unit`] returns for the unit.
    fn run_fused(
        &self,
        conv: &Conv2d,
        shape: &[usize],
        u: usize,
        x: &Tensor,
        record: bool,
        threads: usize,
    ) -> UnitRun {
        let n = x.shape().first().copied().unwrap_or(0);
        let per = self.unit_elements[u].max(1);
        let counts: Vec<Mutex<(u64, u64)>> = (0..n).map(|_| Mutex::new((0, 0))).collect();
        let mut words = vec![0u64; if record { n * per } else { 0 }];
        let slots: Vec<Mutex<&mut [u64]>> = words.chunks_mut(per).map(Mutex::new).collect();
        let epilogue = |b: usize, y: &mut [f32]| {
            let c = match slots.get(b) {
                Some(slot) => self.unit_image(u, None, None, y, Some(&mut lock(slot))),
                None => self.unit_image(u, None, None, y, None),
            };
            if let Some(m) = counts.get(b) {
                *lock(m) = c;
            }
        };
        let out = conv.eval_fused(x, shape, threads, None, Some(&epilogue));
        drop(slots);
        let per_image = counts
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        (out, per_image, record.then_some(words))
    }

    /// Placement `u` over one image's elements: `x` (with `None`, `y`'s own values, in
    /// place), with second input `x2` for a two-input unit, decoded into `y`, spike words
    /// into `z` when given. Returns the image's spikes and synaptic operations.
    fn unit_image(
        &self,
        u: usize,
        x: Option<&[f32]>,
        x2: Option<SecondInput<'_>>,
        y: &mut [f32],
        mut z: Option<&mut [u64]>,
    ) -> (u64, u64) {
        // Chunks small enough for the stack: a copy of the input when the unit rewrites its
        // input in place and keeps its spike words.
        const CHUNK: usize = 1024;
        let (unit, fanout) = (&self.kernels[u], &self.fanout[u]);
        if let (Some(x), Some(x2)) = (x, x2) {
            // Two inputs: most pairs repeat (see `eval_counted_memo`). A memo of this
            // placement's that no other thread is using, or a new one.
            let mut memo = lock(&self.memos[u]).pop().unwrap_or_default();
            let counts = unit.eval_counted_memo(x, x2, y, z, &fanout.each(y.len()), &mut memo);
            lock(&self.memos[u]).push(memo);
            return counts;
        }
        let (mut spikes, mut synops) = (0, 0);
        if let (None, None, Some(fan)) = (x, &z, self.constant_fanout[u]) {
            // In place, every element reaching `fan` synapses: spikes alone, then their
            // synapses.
            let (spikes, _) = unit.eval_counted_in_place(y, &[]);
            return (spikes, spikes * u64::from(fan));
        }
        if x.is_none() && z.is_none() {
            // In place, without a copy of the inputs where the kernel allows: a period of
            // the fanouts (or all of them) at a time.
            for (r, fan) in fanout.chunks(y.len(), y.len().max(1)) {
                let (s, o) = unit.eval_counted_in_place(&mut y[r], fan);
                spikes += s;
                synops += o;
            }
            return (spikes, synops);
        }
        let mut input = [0.0f32; CHUNK];
        for (r, fan) in fanout.chunks(y.len(), CHUNK) {
            let src: &[f32] = match x {
                Some(x) => &x[r.clone()],
                None => {
                    let buf = &mut input[..r.len()];
                    buf.copy_from_slice(&y[r.clone()]);
                    buf
                }
            };
            let words = z.as_deref_mut().map(|z| &mut z[r.clone()]);
            let (s, o) = unit.eval_counted(src, None, &mut y[r], words, fan);
            spikes += s;
            synops += o;
        }
        (spikes, synops)
    }
}

/// One kernel per distinct unit: the placements of one unit (every swish of a network, say)
/// share its tables, built once and kept in cache from one layer to the next.
fn shared_kernels(units: &[AmosUnit]) -> Vec<Arc<UnitKernel>> {
    let mut built: HashMap<Vec<u32>, Arc<UnitKernel>> = HashMap::new();
    units
        .iter()
        .map(|unit| {
            let entry = built.entry(unit_bits(unit));
            Arc::clone(entry.or_insert_with(|| Arc::new(UnitKernel::new(unit.clone()))))
        })
        .collect()
}

/// A unit's parameters, bit for bit (neuron counts first: they delimit the rest).
fn unit_bits(unit: &AmosUnit) -> Vec<u32> {
    let second = unit.c2.as_deref().unwrap_or_default();
    let counts = [unit.c.len(), second.len()].map(|n| n as u32);
    let params = [&unit.c[..], second, &unit.t, &unit.h, &unit.d, &[unit.o]];
    counts
        .into_iter()
        .chain(params.into_iter().flatten().map(|v| v.to_bits()))
        .collect()
}

/// Locks a mutex that a panicking thread may have poisoned (its data is still whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a unit produced for a batch: decoded outputs, per image (spikes, synaptic
/// operations), and the spike words when recorded.
type UnitRun = (Tensor, Vec<(u64, u64)>, Option<Vec<u64>>);

/// One pipeline stage's work on a batch: which nodes, what it receives, what it sends on.
pub struct StageSpec<'a> {
    /// Contiguous node indices of the stage.
    pub nodes: Range<usize>,
    /// The values the stage receives, `[N, …]` each (for stage 0, the normalised input).
    pub inputs: Vec<(ValueId, Tensor)>,
    /// The images (HWC uint8), for the stage that counts the input layer's spikes.
    pub images: Option<&'a [&'a [u8]]>,
    /// Values to return after the stage, in this order.
    pub keep: &'a [ValueId],
    /// Unit placements whose spike words to return (those whose outputs cross on).
    pub record: &'a [usize],
}

/// What a stage computed for a batch.
pub struct StageResult {
    /// The values of [`StageSpec::keep`], in its order.
    pub values: Vec<Tensor>,
    /// Spike words of the recorded units, ascending by unit: one word per element of the
    /// unit's `[N, …]` output, bit i = neuron i.
    pub spikes: Vec<(usize, Vec<u64>)>,
    /// Per image, the spikes of this stage's units.
    pub stats: Vec<ImageStats>,
}

/// Runs of consecutive parts of a batch (images or groups of images) joined in their order.
fn join_stage_results(runs: Vec<StageResult>) -> StageResult {
    let mut stats = Vec::new();
    let mut spikes = Vec::with_capacity(runs.len());
    let mut values = Vec::with_capacity(runs.len());
    for run in runs {
        stats.extend(run.stats);
        spikes.push(run.spikes);
        values.push(run.values);
    }
    StageResult {
        values: join_values(values),
        spikes: join_spikes(spikes),
        stats,
    }
}

/// Recorded spike words of consecutive parts of a batch (each ascending by unit, the same
/// units) joined unit by unit.
fn join_spikes(runs: Vec<Vec<(usize, Vec<u64>)>>) -> Vec<(usize, Vec<u64>)> {
    let mut joined: Vec<(usize, Vec<u64>)> = Vec::new();
    for run in runs {
        if joined.is_empty() {
            joined = run;
        } else {
            for ((_, all), (_, words)) in joined.iter_mut().zip(run) {
                all.extend(words);
            }
        }
    }
    joined
}

/// The input layer's spikes and synaptic operations for one image: a spike per set bit of
/// each byte, each reaching that byte's `fanout` synapses (bytes past `fanout`'s end reach
/// none). Compiled for AVX-512 too, where the byte counts and sums vectorise.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vpopcntdq+avx512bitalg",
    "x86_64+avx2"
))]
fn input_counts(image: &[u8], fanout: &[u32]) -> (u64, u64) {
    let spikes = image.iter().map(|v| u64::from(v.count_ones())).sum();
    let synops = image
        .iter()
        .zip(fanout)
        .map(|(v, &f)| u64::from(v.count_ones()) * u64::from(f))
        .sum();
    (spikes, synops)
}

/// One image of a batch: its inputs `[1, …]` and its pixels.
type ImagePart<'a> = (Vec<(ValueId, Tensor)>, Option<&'a [&'a [u8]]>);

/// A batch's inputs (and its images, if given) split image by image, or `None` when there
/// is nothing to split or the inputs disagree on the batch size (the batch path reports it).
fn split_batch<'a>(
    inputs: &[(ValueId, Tensor)],
    images: Option<&'a [&'a [u8]]>,
) -> Option<Vec<ImagePart<'a>>> {
    let n = match (images, inputs.first()) {
        (Some(images), _) => images.len(),
        (None, Some((_, t))) => t.shape().first().copied()?,
        (None, None) => return None,
    };
    if n < 2 || inputs.iter().any(|(_, t)| t.shape().first() != Some(&n)) {
        return None;
    }
    let per: Vec<usize> = inputs.iter().map(|(_, t)| t.len() / n).collect();
    (0..n)
        .map(|b| {
            let tensors = inputs
                .iter()
                .zip(&per)
                .map(|((v, t), &per)| {
                    let mut shape = t.shape().to_vec();
                    shape[0] = 1;
                    let data = t.data()[b * per..(b + 1) * per].to_vec();
                    Tensor::new(shape, data).ok().map(|t| (*v, t))
                })
                .collect::<Option<Vec<_>>>()?;
            Some((tensors, images.map(|i| &i[b..b + 1])))
        })
        .collect()
}

/// A group of per-image runs' values (`ids`, in that order) joined into one batch per value.
fn join_group(group: Vec<Vec<Tensor>>, ids: &[ValueId]) -> Vec<(ValueId, Tensor)> {
    ids.iter().copied().zip(join_values(group)).collect()
}

/// Joins runs' values (each a list of `[n, …]` tensors in one order, from consecutive images)
/// into batches, value by value.
fn join_values(runs: Vec<Vec<Tensor>>) -> Vec<Tensor> {
    let parts = runs.len();
    let mut columns: Vec<(Vec<usize>, Vec<f32>)> = Vec::new();
    for run in runs {
        if columns.is_empty() {
            columns = run
                .iter()
                .map(|t| {
                    let mut shape = t.shape().to_vec();
                    if let Some(b) = shape.first_mut() {
                        *b = 0;
                    }
                    (shape, Vec::with_capacity(parts * t.len()))
                })
                .collect();
        }
        for ((shape, data), t) in columns.iter_mut().zip(run) {
            if let (Some(b), Some(n)) = (shape.first_mut(), t.shape().first()) {
                *b += n;
            }
            data.extend_from_slice(t.data());
        }
    }
    columns
        .into_iter()
        .map(|(shape, data)| {
            Tensor::new(shape, data).unwrap_or_else(|_| crate::ops::unreachable_shape())
        })
        .collect()
}

/// Indices of the `k` largest scores, best first; ties go to the lower index.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// A second unit input (`[N, …]`) against the first input's per-image shape.
enum Broadcast<'a> {
    /// The same shape, or a value per leading index repeated over trailing axes of size 1
    /// (an SE gate of [C, 1, 1] against [C, H, W]): each value `run` times in a row.
    Runs {
        data: &'a [f32],
        per: usize,
        run: usize,
    },
    /// Any other broadcast, spelled out: `per` values per image.
    Full { data: Vec<f32>, per: usize },
}

impl<'a> Broadcast<'a> {
    fn new(t: &'a Tensor, shape: &[usize]) -> Self {
        let n = t.shape()[0];
        let src = &t.shape()[1..];
        let per: usize = shape.iter().product();
        let src_per: usize = src.iter().product();
        let ones = src.iter().rev().take_while(|&&d| d == 1).count();
        let lead = src.len() - ones;
        let aligned =
            src.len() <= shape.len() && src[..lead] == shape[shape.len() - src.len()..][..lead];
        if aligned && shape.len() == src.len() && src_per > 0 {
            return Broadcast::Runs {
                data: t.data(),
                per: src_per,
                run: per / src_per,
            };
        }
        let map = broadcast_map(src, shape);
        let mut data = Vec::with_capacity(n * per);
        for b in 0..n {
            data.extend(map.iter().map(|&i| t.data()[b * src_per + i]));
        }
        Broadcast::Full { data, per }
    }

    /// Image `b`'s second input.
    fn image(&self, b: usize) -> SecondInput<'_> {
        match self {
            Broadcast::Runs { data, per, run } => SecondInput::Runs {
                values: &data[b * per..(b + 1) * per],
                run: *run,
            },
            Broadcast::Full { data, per } => SecondInput::Each(&data[b * per..(b + 1) * per]),
        }
    }

    /// Image `b`'s second input spelled out per element.
    #[cfg(test)]
    fn spelled_out(&self, b: usize) -> Vec<f32> {
        match self.image(b) {
            SecondInput::Each(v) => v.to_vec(),
            SecondInput::Runs { values, run } => values
                .iter()
                .flat_map(|&v| std::iter::repeat_n(v, run))
                .collect(),
        }
    }
}

/// For each element of `to`, the index of the element of `from` it broadcasts from.
fn broadcast_map(from: &[usize], to: &[usize]) -> Vec<usize> {
    let rank = to.len();
    let mut strides = vec![0usize; rank];
    let mut acc = 1;
    for (k, &d) in from.iter().enumerate().rev() {
        let o = rank - (from.len() - k);
        strides[o] = if d == 1 { 0 } else { acc };
        acc *= d;
    }
    let total: usize = to.iter().product();
    (0..total)
        .map(|flat| {
            let (mut r, mut i) = (flat, 0);
            for d in (0..rank).rev() {
                i += (r % to[d]) * strides[d];
                r /= to[d];
            }
            i
        })
        .collect()
}

/// Synapses per element of one image's unit output (`Σ popcount·fanout` counts its synaptic
/// operations). A convolution or pool reaches as many synapses from every channel at one
/// position, so most fanouts repeat plane after plane: they are kept for one period of whole
/// planes, which stays in cache while the unit kernels count, instead of a copy per channel
/// streamed from memory (4.8 MB for a 96 × 112 × 112 output).
enum Fanout {
    /// Element `e` reaches `period[e % period.len()]` synapses.
    Periodic(Vec<u32>),
    /// Per element (elements past the end reach none).
    Each(Vec<u32>),
}

impl Fanout {
    /// Elements per period at most when a period of whole planes is stretched to a multiple
    /// of [`Fanout::ALIGN`] elements.
    const MAX_STRETCHED: usize = 1 << 16;

    /// Periods are a multiple of this many elements where that keeps them under
    /// [`Fanout::MAX_STRETCHED`]: the closed forms' quantiser runs blocks of 64 elements
    /// (the other vectorised kernels 32 or fewer), and a period that cuts a block leaves its
    /// elements to the scalar code (Lite0 SNN A/B against 32: 0.976, 0.994, 0.981).
    const ALIGN: usize = 64;

    /// `f` for a tensor of `shape` (`[C, H, W]` and the like, one image): periodic when
    /// every plane `shape[1..]` repeats the first.
    fn compress(f: Vec<u32>, shape: &[usize]) -> Fanout {
        let plane: usize = shape.iter().skip(1).product();
        if shape.len() < 2 || plane == 0 || f.len() != plane * shape[0] {
            return Fanout::Each(f);
        }
        let first = &f[..plane];
        if !f.chunks_exact(plane).all(|p| p == first) {
            return Fanout::Each(f);
        }
        let stretched = plane / gcd(plane, Self::ALIGN) * Self::ALIGN;
        let len = if stretched <= Self::MAX_STRETCHED {
            stretched
        } else {
            plane
        };
        if len >= f.len() {
            return Fanout::Each(f);
        }
        Fanout::Periodic(first.iter().copied().cycle().take(len).collect())
    }

    /// The fanout of every one of `elements` elements, if they share one.
    fn constant(&self, elements: usize) -> Option<u32> {
        let f = match self {
            Fanout::Periodic(p) => p,
            Fanout::Each(f) if f.len() == elements => f,
            Fanout::Each(_) => return None,
        };
        let first = *f.first()?;
        f.iter().all(|&v| v == first).then_some(first)
    }

    /// Mean synapses per element.
    fn mean(&self) -> f64 {
        // Whole periods of exact integer sums: the same ratio as over every element.
        let f = match self {
            Fanout::Periodic(f) | Fanout::Each(f) => f,
        };
        f.iter().map(|&x| x as f64).sum::<f64>() / f.len().max(1) as f64
    }

    /// Per element of `len`, for callers that walk the elements their own way (the pair
    /// memo, whose units [`SpikingNetwork::for_nodes`] keeps per element).
    fn each(&self, len: usize) -> Cow<'_, [u32]> {
        match self {
            Fanout::Each(f) => Cow::Borrowed(f),
            Fanout::Periodic(p) => Cow::Owned(p.iter().copied().cycle().take(len).collect()),
        }
    }

    /// Elements `0..len` in ranges of at most `chunk` that do not straddle a period, each
    /// with its elements' fanouts.
    fn chunks(&self, len: usize, chunk: usize) -> impl Iterator<Item = (Range<usize>, &[u32])> {
        let period = match self {
            Fanout::Periodic(p) => p.len(),
            Fanout::Each(_) => len.max(1),
        };
        (0..len).step_by(period).flat_map(move |start| {
            let end = (start + period).min(len);
            (start..end).step_by(chunk.max(1)).map(move |s| {
                let r = s..(s + chunk).min(end);
                let fan = match self {
                    Fanout::Periodic(p) => &p[r.start - start..r.end - start],
                    Fanout::Each(f) => f.get(r.clone()).unwrap_or_default(),
                };
                (r, fan)
            })
        })
    }
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Synapses per element of each value, memoised.
struct Fanouts<'g> {
    graph: &'g Graph,
    readers: Vec<Vec<usize>>,
    memo: Vec<Option<Vec<u32>>>,
}

impl<'g> Fanouts<'g> {
    fn new(graph: &'g Graph) -> Self {
        let mut readers = vec![Vec::new(); graph.values.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            for &v in &n.inputs {
                if !readers[v].contains(&i) {
                    readers[v].push(i);
                }
            }
        }
        Fanouts {
            graph,
            readers,
            memo: vec![None; graph.values.len()],
        }
    }

    fn of_value(&mut self, v: ValueId) -> Vec<u32> {
        if let Some(f) = &self.memo[v] {
            return f.clone();
        }
        let len: usize = self.graph.values[v].shape.iter().product();
        let mut total = vec![0u32; len];
        for r in self.readers[v].clone() {
            let node = &self.graph.nodes[r];
            let per_input = self.through(r, v);
            // A node reading the same value twice (x·x) counts both connections.
            let times = node.inputs.iter().filter(|&&i| i == v).count() as u32;
            for (t, f) in total.iter_mut().zip(per_input) {
                *t = t.saturating_add(f.saturating_mul(times));
            }
        }
        self.memo[v] = Some(total.clone());
        total
    }

    /// Synapses per element of input `v` of node `r`.
    fn through(&mut self, r: usize, v: ValueId) -> Vec<u32> {
        let node = &self.graph.nodes[r];
        let in_shape = self.graph.values[v].shape.clone();
        let out_shape = self.graph.values[node.output].shape.clone();
        let len: usize = in_shape.iter().product();
        match &node.op {
            Op::Conv(c) => conv_fanout(c, &in_shape, &out_shape),
            Op::Linear(l) => vec![l.out_features() as u32; len],
            Op::GlobalAvgPool | Op::ReduceMean(_) => vec![1; len],
            Op::AvgPool(p) => window_fanout(&p.window, &in_shape, &out_shape),
            Op::MaxPool(p) => window_fanout(&p.window, &in_shape, &out_shape),
            Op::Softmax(_) => vec![0; len],
            _ if matches!(node.op.class(), OpClass::Gate(_)) => {
                // Another unit: one connection per element it reaches (broadcast included).
                let map = broadcast_map(&in_shape, &out_shape);
                let mut f = vec![0u32; len];
                map.iter().for_each(|&i| f[i] += 1);
                f
            }
            // Pass-through nodes hand each element's spikes to the readers of their output.
            _ => {
                let out_fan = self.of_value(node.output);
                let map = source_map(&node.op, node, v, self.graph);
                let mut f = vec![0u32; len];
                for (o, src) in map.into_iter().enumerate() {
                    if let Some(i) = src {
                        f[i] = f[i].saturating_add(out_fan[o]);
                    }
                }
                f
            }
        }
    }
}

/// For each output element of a pass-through node, the element of input `v` it carries.
fn source_map(op: &Op, node: &crate::graph::Node, v: ValueId, graph: &Graph) -> Vec<Option<usize>> {
    let in_shape = &graph.values[v].shape;
    let out_shape = &graph.values[node.output].shape;
    let out_len: usize = out_shape.iter().product();
    match op {
        Op::Pad(p) => {
            let mut map = vec![None; out_len];
            let in_len: usize = in_shape.iter().product();
            for i in 0..in_len {
                let (mut r, mut o, mut stride) = (i, 0, 1);
                for d in (0..in_shape.len()).rev() {
                    o += (r % in_shape[d] + p.begin[d]) * stride;
                    r /= in_shape[d];
                    stride *= out_shape[d];
                }
                map[o] = Some(i);
            }
            map
        }
        Op::Concat(c) => {
            let inner: usize = out_shape[c.axis + 1..].iter().product();
            let offset: usize = node
                .inputs
                .iter()
                .take_while(|&&i| i != v)
                .map(|&i| graph.values[i].shape[c.axis])
                .sum();
            (0..out_len)
                .map(|o| {
                    let a = (o / inner) % out_shape[c.axis];
                    let outer = o / (inner * out_shape[c.axis]);
                    (a >= offset && a < offset + in_shape[c.axis])
                        .then(|| (outer * in_shape[c.axis] + a - offset) * inner + o % inner)
                })
                .collect()
        }
        // Elementwise (possibly broadcasting) and reshapes keep element order.
        _ if in_shape.iter().product::<usize>() == out_len => (0..out_len).map(Some).collect(),
        _ => broadcast_map(in_shape, out_shape)
            .into_iter()
            .map(Some)
            .collect(),
    }
}

/// Synapses of each input element of a convolution: the output positions whose receptive
/// field holds it, times the output channels of its group.
fn conv_fanout(c: &crate::ops::Conv2d, in_shape: &[usize], out_shape: &[usize]) -> Vec<u32> {
    let (h, w) = (in_shape[1], in_shape[2]);
    let (kh, kw) = (c.weight.shape()[2], c.weight.shape()[3]);
    let per_group = (c.out_channels() / c.groups) as u32;
    let rows = taps(h, out_shape[1], kh, c.stride[0], c.dilation[0], c.pads[0]);
    let cols = taps(w, out_shape[2], kw, c.stride[1], c.dilation[1], c.pads[1]);
    let mut f = Vec::with_capacity(in_shape[0] * h * w);
    for _ in 0..in_shape[0] {
        for &r in &rows {
            for &col in &cols {
                f.push(per_group * r * col);
            }
        }
    }
    f
}

/// For each input position along one axis, how many (output, tap) pairs read it.
fn taps(len: usize, out: usize, k: usize, stride: usize, dilation: usize, pad: usize) -> Vec<u32> {
    let mut t = vec![0u32; len];
    for o in 0..out {
        for j in 0..k {
            let i = (o * stride + j * dilation) as isize - pad as isize;
            if i >= 0 && (i as usize) < len {
                t[i as usize] += 1;
            }
        }
    }
    t
}

fn window_fanout(
    p: &crate::ops::pool::PoolWindow,
    in_shape: &[usize],
    out_shape: &[usize],
) -> Vec<u32> {
    let rows = taps(
        in_shape[1],
        out_shape[1],
        p.kernel[0],
        p.stride[0],
        p.dilation[0],
        p.pads[0],
    );
    let cols = taps(
        in_shape[2],
        out_shape[2],
        p.kernel[1],
        p.stride[1],
        p.dilation[1],
        p.pads[1],
    );
    let mut f = Vec::new();
    for _ in 0..in_shape[0] {
        for &r in &rows {
            for &c in &cols {
                f.push(r * c);
            }
        }
    }
    f
}

/// Checks that every placement points at a gate node of the graph.
pub fn check_placements(model: &ConvertedModel) -> Result<(), GraphError> {
    for (i, p) in model.units.iter().enumerate() {
        let node = model.graph.nodes.get(p.node).ok_or_else(|| {
            GraphError::Structure(format!("unit {i} names node #{} out of range", p.node))
        })?;
        if !matches!(node.op.class(), OpClass::Gate(_)) || p.params >= model.unit_params.len() {
            return Err(GraphError::Structure(format!(
                "unit {i} is placed on node '{}', which is not a gate, or names missing parameters",
                node.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_of_one_unit_share_its_kernel() {
        use crate::amos::closed_form::{self, Rounding};
        let relu6 = closed_form::relu6(10, Rounding::Nearest);
        let mut signed_zero = relu6.clone();
        signed_zero.o = -0.0; // equal as a float, not as parameters
        let units = [
            relu6.clone(),
            closed_form::relu6(8, Rounding::Nearest),
            relu6.clone(),
            signed_zero,
            AmosUnit::zeros(3, true),
            AmosUnit::zeros(3, false),
        ];
        let kernels = shared_kernels(&units);
        let same = |a: usize, b: usize| Arc::ptr_eq(&kernels[a], &kernels[b]);
        assert!(same(0, 2));
        for (a, b) in [(0, 1), (0, 3), (4, 5), (1, 3)] {
            assert!(!same(a, b), "placements {a} and {b} share a kernel");
        }
        for (kernel, unit) in kernels.iter().zip(&units) {
            assert_eq!(kernel.unit(), unit);
        }
    }

    /// Kept periodic or per element, a fanout's chunks cover every element once, in order,
    /// none longer than asked, with the element's own fanout.
    #[test]
    fn a_fanout_shared_by_every_element_is_constant() {
        for (shape, f) in [
            (vec![8, 40, 40], vec![9; 12800]),
            (vec![3, 5, 5], vec![4; 75]),
        ] {
            assert_eq!(
                Fanout::compress(f.clone(), &shape).constant(f.len()),
                Some(f[0])
            );
        }
        // Kept per element and shorter than the elements: the last reach none.
        assert_eq!(Fanout::Each(vec![2; 10]).constant(11), None);
        assert_eq!(Fanout::Each(Vec::new()).constant(0), None);
    }

    #[test]
    fn fanout_chunks_give_every_elements_fanout() {
        let per_position = |shape: &[usize]| -> Vec<u32> {
            let plane: usize = shape[1..].iter().product();
            (0..shape[0] * plane)
                .map(|e| (e % plane * 7 % 11) as u32)
                .collect()
        };
        let mut channel_dependent = per_position(&[6, 40, 40]);
        channel_dependent[5 * 1600 + 3] += 1;
        let cases = [
            (vec![80, 7, 7], per_position(&[80, 7, 7]), true),
            (vec![8, 40, 40], per_position(&[8, 40, 40]), true),
            (vec![3, 75, 75], per_position(&[3, 75, 75]), true),
            (vec![3, 5, 5], per_position(&[3, 5, 5]), false),
            (vec![6, 40, 40], channel_dependent, false),
            (vec![1000], (0..1000).collect(), false),
        ];
        for (shape, f, periodic) in cases {
            let fanout = Fanout::compress(f.clone(), &shape);
            assert_eq!(matches!(fanout, Fanout::Periodic(_)), periodic, "{shape:?}");
            let mut next = 0;
            let mut seen = Vec::new();
            for (r, fan) in fanout.chunks(f.len(), 1024) {
                assert!(
                    r.start == next && r.len() <= 1024 && !r.is_empty(),
                    "{shape:?}"
                );
                assert_eq!(fan.len(), r.len(), "{shape:?}");
                next = r.end;
                seen.extend_from_slice(fan);
            }
            assert_eq!(seen, f, "{shape:?}");
            assert_eq!(&fanout.each(f.len())[..], &f[..], "{shape:?}");
            // None of these is one fanout for every element.
            assert_eq!(fanout.constant(f.len()), None, "{shape:?}");
            let mean = f.iter().map(|&x| x as f64).sum::<f64>() / f.len() as f64;
            assert_eq!(fanout.mean(), mean, "{shape:?}");
        }
    }

    /// The runs of `Broadcast` against the general index map.
    #[test]
    fn broadcasting_repeats_match_the_index_map() {
        let to = [3usize, 4, 5];
        for from in [[3usize, 1, 1], [3, 4, 1], [1, 1, 1], [1, 4, 1], [3, 1, 5]] {
            let per: usize = from.iter().product();
            let mut shape = vec![2];
            shape.extend(from);
            let t = Tensor::new(shape, (0..2 * per).map(|i| i as f32 * 0.5).collect()).unwrap();
            let map = broadcast_map(&from, &to);
            let want: Vec<f32> = (0..2)
                .flat_map(|b| map.iter().map(move |&i| (b * per + i) as f32 * 0.5))
                .collect();
            let b = Broadcast::new(&t, &to);
            let got: Vec<f32> = (0..2).flat_map(|i| b.spelled_out(i)).collect();
            assert_eq!(got, want, "from {from:?}");
        }
    }
}
