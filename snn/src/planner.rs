//! The partition planner: splits a converted model's node list (topological order) into N
//! contiguous stages, one per worker of a pipeline chain (ARCHITECTURE.md §1).
//!
//! # Cost model
//!
//! A stage's cost is the sum of its nodes' costs, in multiply-accumulates per image:
//!
//! - convolution: output elements × (C_in / groups) × kH × kW;
//! - linear layer: rows × in × out (= output elements × in);
//! - a gate node with a unit: elements × K × K / 2 (each of the K neurons sees on average
//!   K / 2 inhibition terms from the neurons before it), plus one per element for the second
//!   input of a two-input unit;
//! - every other node (additions, pooling, reshapes, a gate without a unit, softmax): its
//!   output elements.
//!
//! The estimate is not exact; it is deterministic, which is what the plan needs. That is
//! [`CostModel::MACS`], used by [`plan`]. The pipeline's [`plan_spike_cuts`] weighs the same
//! terms as this engine spends time on them ([`CostModel::MEASURED`]): depthwise MACs and
//! the elements every node reads and writes count extra, closed-form units cost O(K) per
//! element.
//!
//! # Boundaries
//!
//! The values crossing the cut after a stage are those produced in that stage or before it
//! (or the graph input) and read by a node after it (or being the graph output, when that is
//! produced before the last stage). Each is sent as spikes:
//!
//! - a unit's output: its K spikes per element ([`CrossingEncoding::UnitSpikes`]);
//! - any other value: it needs an identity unit of `identity_k` neurons
//!   ([`CrossingEncoding::NeedsIdentity`], see [`apply_identity_units`]);
//! - the graph input: 8 bits per pixel channel ([`CrossingEncoding::Input`]).
//!
//! Bits are packed per tensor: a crossing takes ⌈elements × bits / 8⌉ bytes per image.
//!
//! # Choice of cuts
//!
//! The N − 1 cuts minimise the largest stage cost. Among the plans whose largest stage cost
//! is within 2 % of that minimum, the one with the fewest bytes crossing all boundaries
//! together wins; remaining ties go to the smaller largest stage cost, then to the earliest
//! cuts. Both steps are exact dynamic programmes over cut positions (O(N × nodes²)).

use std::ops::Range;

use crate::amos::UnitKernel;
use crate::amos::closed_form::Rounding;
use crate::error::GraphError;
use crate::graph::ValueId;
use crate::model::ConvertedModel;
use crate::ops::Op;

/// Plans within this fraction of the best largest stage cost count as ties.
pub const NEAR_TIE: f64 = 0.02;

/// N contiguous stages covering every node once, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct StagePlan {
    pub stages: Vec<Stage>,
}

/// One pipeline stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Contiguous node indices.
    pub nodes: Range<usize>,
    /// Unit placement indices of this stage's gate nodes, ascending.
    pub units: Vec<usize>,
    /// Estimated cost (see the module documentation).
    pub cost: f64,
    /// Values crossing the boundary after this stage (empty for the last stage), with how
    /// each is sent; ascending by value id.
    pub outgoing: Vec<Crossing>,
    /// Σ over `outgoing` of ⌈elements × bits / 8⌉.
    pub boundary_bytes_per_image: u64,
}

/// One value crossing a stage boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossing {
    pub value: ValueId,
    /// Elements per image.
    pub elements: u64,
    pub bits_per_element: u32,
    pub encoding: CrossingEncoding,
}

impl Crossing {
    /// Bytes per image: the tensor's bits packed, rounded up to whole bytes.
    pub fn bytes_per_image(&self) -> u64 {
        (self.elements * self.bits_per_element as u64).div_ceil(8)
    }

    /// Bytes per image of the same tensor as f32.
    pub fn f32_bytes_per_image(&self) -> u64 {
        self.elements * 4
    }
}

/// How a crossing value is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossingEncoding {
    /// A unit's output: K bits per element (its spikes z).
    UnitSpikes { unit: usize },
    /// Not a unit's output: must be encoded by an identity unit, `identity_k` bits per element.
    NeedsIdentity,
    /// The graph input: 8 bits per pixel channel.
    Input,
}

impl StagePlan {
    /// Index of the stage holding `node`.
    pub fn stage_of_node(&self, node: usize) -> Option<usize> {
        self.stages.iter().position(|s| s.nodes.contains(&node))
    }

    /// The largest stage cost.
    pub fn max_cost(&self) -> f64 {
        self.stages.iter().map(|s| s.cost).fold(0.0, f64::max)
    }

    /// Bytes per image over all boundaries.
    pub fn total_boundary_bytes(&self) -> u64 {
        self.stages.iter().map(|s| s.boundary_bytes_per_image).sum()
    }
}

/// Weights of the cost model, in units of one multiply-accumulate of a dense convolution or
/// fully-connected layer (which run as GEMMs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Per multiply-accumulate of a depthwise convolution (one input channel per group).
    pub depthwise_mac: f64,
    /// Per element read or written by any node (memory traffic).
    pub traffic: f64,
    /// Per element and neuron of a unit whose inhibition is one running residual (closed
    /// forms: O(K) per element); `None` counts such units like any other.
    pub residual_unit_neuron: Option<f64>,
    /// Per element and neuron pair (K²/2) of any other unit.
    pub unit_pair: f64,
}

impl CostModel {
    /// Multiply-accumulates only, units at K²/2 per element: simple enough to work out by
    /// hand (the module documentation's model).
    pub const MACS: CostModel = CostModel {
        depthwise_mac: 1.0,
        traffic: 0.0,
        residual_unit_neuron: None,
        unit_pair: 1.0,
    };

    /// Weights measured on this engine (x86-64, AVX2 GEMM): milliseconds per image of each
    /// layer type in SNN mode (`amos-convert bench --profile`, EfficientNet-Lite0 and the
    /// swish/SE CIFAR network) over its multiply-accumulates, neurons or elements, relative
    /// to a GEMM's, rounded; checked with `scripts/bench_pipeline.sh`. Depthwise
    /// convolutions and closed-form units cost several GEMM MACs per MAC or neuron; fitted
    /// units, evaluated by interval search, much less than their K²/2 neuron pairs. The
    /// pipeline plans with it. (Refitted in session 5, when images started to run one by one
    /// and the unit kernels changed: the old weights planned Lite0's 2-stage chain at 0.70×
    /// a single process, those at 0.86×. Refitted in session 6, when closed-form units got
    /// twice as fast and depthwise convolutions a quarter faster: session 5's weights gave
    /// 0.77×, these 0.91–0.93×.)
    pub const MEASURED: CostModel = CostModel {
        depthwise_mac: 5.0,
        traffic: 10.0,
        residual_unit_neuron: Some(3.0),
        unit_pair: 0.5,
    };
}

/// Estimated cost of every node under [`CostModel::MACS`] (see the module documentation).
pub fn node_costs(model: &ConvertedModel) -> Vec<f64> {
    node_costs_with(model, &CostModel::MACS)
}

/// Estimated cost of every node under `cm`.
pub fn node_costs_with(model: &ConvertedModel, cm: &CostModel) -> Vec<f64> {
    let g = &model.graph;
    let mut unit_of_node = vec![None; g.nodes.len()];
    for p in &model.units {
        if p.node < g.nodes.len() {
            unit_of_node[p.node] = Some(p.params);
        }
    }
    let elements = |v: usize| g.values[v].shape.iter().product::<usize>() as f64;
    g.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let out = elements(n.output);
            let traffic = cm.traffic * (out + n.inputs.iter().map(|&v| elements(v)).sum::<f64>());
            if let Some(params) = unit_of_node[i] {
                let unit = &model.unit_params[params].unit;
                let k = unit.k() as f64;
                let second = if unit.is_two_input() { out } else { 0.0 };
                let neurons = match cm.residual_unit_neuron {
                    Some(w) if UnitKernel::has_residual_form(unit) => out * k * w,
                    _ => out * k * k / 2.0 * cm.unit_pair,
                };
                return neurons + second + traffic;
            }
            traffic
                + match &n.op {
                    Op::Conv(c) => {
                        let w = c.weight.shape();
                        let macs = out * w[1..].iter().product::<usize>() as f64;
                        if w.get(1) == Some(&1) {
                            macs * cm.depthwise_mac
                        } else {
                            macs
                        }
                    }
                    Op::Linear(l) => out * l.in_features() as f64,
                    _ => out,
                }
        })
        .collect()
}

/// For every value: the position of its producer (−1 for the graph input) and of its last
/// reader (`nodes` for the graph output, −1 when nothing reads it).
fn lifetimes(model: &ConvertedModel) -> (Vec<i64>, Vec<i64>) {
    let g = &model.graph;
    let mut produced = vec![-1i64; g.values.len()];
    let mut last_read = vec![-1i64; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        produced[n.output] = i as i64;
        for &v in &n.inputs {
            last_read[v] = last_read[v].max(i as i64);
        }
    }
    last_read[g.output] = g.nodes.len() as i64;
    (produced, last_read)
}

/// The values crossing the cut after node `cut` (between `cut` and `cut + 1`).
fn crossings(
    model: &ConvertedModel,
    produced: &[i64],
    last_read: &[i64],
    unit_of_node: &[Option<usize>],
    cut: usize,
    identity_k: u32,
) -> Vec<Crossing> {
    let g = &model.graph;
    let c = cut as i64;
    (0..g.values.len())
        .filter(|&v| produced[v] <= c && last_read[v] > c)
        .map(|v| {
            let elements = g.values[v].shape.iter().product::<usize>() as u64;
            let (bits, encoding) = if v == g.input {
                (8, CrossingEncoding::Input)
            } else {
                match unit_of_node[produced[v] as usize] {
                    Some(u) => (
                        model.unit_params[model.units[u].params].unit.k() as u32,
                        CrossingEncoding::UnitSpikes { unit: u },
                    ),
                    None => (identity_k, CrossingEncoding::NeedsIdentity),
                }
            };
            Crossing {
                value: v,
                elements,
                bits_per_element: bits,
                encoding,
            }
        })
        .collect()
}

fn unit_of_node(model: &ConvertedModel) -> Vec<Option<usize>> {
    let mut u = vec![None; model.graph.nodes.len()];
    for (i, p) in model.units.iter().enumerate() {
        if p.node < u.len() {
            u[p.node] = Some(i);
        }
    }
    u
}

/// Splits the model into `stages` contiguous stages (see the module documentation); a
/// crossing that is not a unit's output is costed as an identity unit of `identity_k` neurons.
pub fn plan(
    model: &ConvertedModel,
    stages: usize,
    identity_k: u32,
) -> Result<StagePlan, GraphError> {
    plan_with(model, stages, identity_k, false, &CostModel::MACS)
}

/// Splits the model into `stages` contiguous stages for the pipeline: cuts only where every
/// crossing value is a unit's output, so that only spikes cross and the network is exactly
/// the one a single process evaluates (no identity unit changes it). Fails with a message
/// naming how many such cuts exist when there are fewer than `stages − 1`.
///
/// Costs follow [`CostModel::MEASURED`], so that stages take about the same time.
pub fn plan_spike_cuts(model: &ConvertedModel, stages: usize) -> Result<StagePlan, GraphError> {
    plan_with(model, stages, 0, true, &CostModel::MEASURED)
}

/// The cut positions (cut after node c) where only unit outputs cross.
pub fn spike_cuts(model: &ConvertedModel) -> Vec<usize> {
    let n = model.graph.nodes.len();
    let (produced, last_read) = lifetimes(model);
    let unit_of = unit_of_node(model);
    (0..n.saturating_sub(1))
        .filter(|&c| {
            crossings(model, &produced, &last_read, &unit_of, c, 0)
                .iter()
                .all(|x| matches!(x.encoding, CrossingEncoding::UnitSpikes { .. }))
        })
        .collect()
}

#[allow(clippy::needless_range_loop)] // the dynamic programmes read best by index
fn plan_with(
    model: &ConvertedModel,
    stages: usize,
    identity_k: u32,
    spikes_only: bool,
    cost_model: &CostModel,
) -> Result<StagePlan, GraphError> {
    let n = model.graph.nodes.len();
    if stages == 0 {
        return Err(GraphError::Structure(
            "a plan needs at least 1 stage, got 0".into(),
        ));
    }
    if stages > n {
        return Err(GraphError::Structure(format!(
            "{stages} stages requested but the graph has only {n} nodes (each stage needs one)"
        )));
    }
    let cost = node_costs_with(model, cost_model);
    let mut prefix = vec![0.0f64; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + cost[i];
    }
    let seg = |a: usize, b: usize| prefix[b] - prefix[a];
    // Bytes crossing the cut after node c, for c in 0..n-1.
    let (produced, last_read) = lifetimes(model);
    let unit_of = unit_of_node(model);
    let mut cut_allowed = vec![true; n.saturating_sub(1)];
    let cut_bytes: Vec<u64> = (0..n.saturating_sub(1))
        .map(|c| {
            let cross = crossings(model, &produced, &last_read, &unit_of, c, identity_k);
            cut_allowed[c] = !spikes_only
                || cross
                    .iter()
                    .all(|x| matches!(x.encoding, CrossingEncoding::UnitSpikes { .. }));
            cross.iter().map(Crossing::bytes_per_image).sum()
        })
        .collect();
    if spikes_only {
        let available = cut_allowed.iter().filter(|&&a| a).count();
        if available + 1 < stages {
            return Err(GraphError::Structure(format!(
                "{stages} stages need {} cuts where only spikes cross, but this model has {available}",
                stages - 1
            )));
        }
    }

    // Step 1: the smallest achievable largest stage cost.
    // best[s][j]: stages s+1 over the first j nodes.
    let inf = f64::INFINITY;
    let mut best = vec![vec![inf; n + 1]; stages];
    for j in 1..=n {
        best[0][j] = seg(0, j);
    }
    for s in 1..stages {
        for j in (s + 1)..=n {
            let mut b = inf;
            for i in s..j {
                if !cut_allowed[i - 1] {
                    continue;
                }
                let v = best[s - 1][i].max(seg(i, j));
                if v < b {
                    b = v;
                }
            }
            best[s][j] = b;
        }
    }
    let optimum = best[stages - 1][n];
    let limit = optimum * (1.0 + NEAR_TIE) + 1e-9 * optimum.abs();

    // Step 2: fewest total bytes among plans whose stages all cost ≤ limit; ties to the
    // smaller largest cost, then to the earliest cut (strict comparisons, i ascending).
    #[derive(Clone, Copy)]
    struct Cell {
        bytes: u64,
        max: f64,
        from: usize,
    }
    let none = Cell {
        bytes: u64::MAX,
        max: inf,
        from: usize::MAX,
    };
    let mut dp = vec![vec![none; n + 1]; stages];
    for j in 1..=n {
        if seg(0, j) <= limit {
            dp[0][j] = Cell {
                bytes: 0,
                max: seg(0, j),
                from: 0,
            };
        }
    }
    for s in 1..stages {
        for j in (s + 1)..=n {
            let mut b = none;
            for i in s..j {
                let prev = dp[s - 1][i];
                if prev.bytes == u64::MAX || seg(i, j) > limit || !cut_allowed[i - 1] {
                    continue;
                }
                let cand = Cell {
                    bytes: prev.bytes + cut_bytes[i - 1],
                    max: prev.max.max(seg(i, j)),
                    from: i,
                };
                if cand.bytes < b.bytes || (cand.bytes == b.bytes && cand.max < b.max) {
                    b = cand;
                }
            }
            dp[s][j] = b;
        }
    }
    // Recover the stage starts.
    let mut ends = vec![n];
    let mut j = n;
    for s in (1..stages).rev() {
        let i = dp[s][j].from;
        if i == usize::MAX {
            return Err(GraphError::Structure(
                "the partition planner found no plan (non-finite node costs?)".into(),
            ));
        }
        ends.push(i);
        j = i;
    }
    ends.reverse();
    evaluate_with(model, &ends, identity_k, cost_model)
}

/// The plan with the given stage ends: stage s holds nodes `ends[s-1]..ends[s]` (the first
/// from 0); `ends` must be strictly increasing and end at the node count.
pub fn evaluate(
    model: &ConvertedModel,
    ends: &[usize],
    identity_k: u32,
) -> Result<StagePlan, GraphError> {
    evaluate_with(model, ends, identity_k, &CostModel::MACS)
}

/// [`evaluate`] with stage costs under `cost_model`.
pub fn evaluate_with(
    model: &ConvertedModel,
    ends: &[usize],
    identity_k: u32,
    cost_model: &CostModel,
) -> Result<StagePlan, GraphError> {
    let n = model.graph.nodes.len();
    if ends.is_empty()
        || ends.last() != Some(&n)
        || ends[0] == 0
        || ends.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(GraphError::Structure(format!(
            "stage ends {ends:?} do not split {n} nodes into non-empty stages"
        )));
    }
    let cost = node_costs_with(model, cost_model);
    let (produced, last_read) = lifetimes(model);
    let unit_of = unit_of_node(model);
    let mut stages = Vec::with_capacity(ends.len());
    let mut start = 0;
    for &end in ends {
        let outgoing = if end < n {
            crossings(model, &produced, &last_read, &unit_of, end - 1, identity_k)
        } else {
            Vec::new()
        };
        stages.push(Stage {
            nodes: start..end,
            units: (start..end).filter_map(|i| unit_of[i]).collect(),
            cost: cost[start..end].iter().sum(),
            boundary_bytes_per_image: outgoing.iter().map(Crossing::bytes_per_image).sum(),
            outgoing,
        });
        start = end;
    }
    Ok(StagePlan { stages })
}

/// Inserts an identity unit of `k` neurons (rounding to the nearest level) for every
/// [`CrossingEncoding::NeedsIdentity`] crossing of `plan` whose range `ranges` knows, so that
/// it crosses as spikes. Crossings without a known range are left as they are.
///
/// Each identity node is inserted right after its value's producer, so node indices after
/// it shift by one: the plan's node ranges are stale afterwards. Re-plan, or call
/// [`evaluate`] with every stage end moved by the identity nodes inserted before it; the
/// identity node then sits in its producer's stage and the crossing becomes
/// [`CrossingEncoding::UnitSpikes`].
pub fn apply_identity_units(
    model: &mut ConvertedModel,
    plan: &StagePlan,
    ranges: impl Fn(ValueId) -> Option<[f32; 2]>,
    k: usize,
) -> Result<(), GraphError> {
    let mut values: Vec<ValueId> = plan
        .stages
        .iter()
        .flat_map(|s| &s.outgoing)
        .filter(|c| c.encoding == CrossingEncoding::NeedsIdentity)
        .map(|c| c.value)
        .collect();
    values.sort_unstable();
    values.dedup();
    for v in values {
        if let Some(range) = ranges(v) {
            model.insert_identity_unit(v, k, range, Rounding::Nearest)?;
        }
    }
    Ok(())
}
