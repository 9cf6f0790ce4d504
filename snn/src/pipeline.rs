//! One pipeline stage: a contiguous run of the network's nodes, fed by the spikes of the
//! stage before it and sending its own crossing spikes on (ARCHITECTURE.md §1).
//!
//! A stage plan comes from [`planner::plan_spike_cuts`]: every value crossing a boundary is
//! a unit's output, so it crosses as that unit's spikes, K bits per element
//! ([`spike_codec`]), and the receiver decodes `o + Σ d_i·z_i` exactly as the unit did. The
//! network is therefore the one a single process runs: any number of stages gives
//! bit-identical logits and spike counts.
//!
//! Stage 0 receives the images (HWC uint8) and counts the input layer's spikes; the last
//! stage returns the logits. With a reference run, the ANN's crossing values travel beside
//! the spikes as f32 and each stage also runs its nodes in ANN mode.
//!
//! Everything here is synchronous and I/O-free; the worker moves the bytes.

use std::ops::Range;

use crate::error::{EngineError, GraphError};
use crate::graph::ValueId;
use crate::model::ConvertedModel;
use crate::planner::{self, Crossing, CrossingEncoding};
use crate::simulate::{ImageStats, SpikingNetwork, StageSpec};
use crate::spike_codec::{self, Codec, PackedSpikes, SpikeCodecError};
use crate::tensor::Tensor;

/// Why a stage could not be set up or could not run a batch.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("stage plan: {0}")]
    Plan(#[from] GraphError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Spikes(#[from] SpikeCodecError),
    /// What the stage received does not fit its place in the plan.
    #[error("stage {stage}: {detail}")]
    Input { stage: usize, detail: String },
}

/// Where a stage sits in its chain and which values cross into and out of it.
#[derive(Clone, Debug, PartialEq)]
pub struct StageLayout {
    /// Stage index, 0-based, and the number of stages.
    pub index: usize,
    pub count: usize,
    /// The stage's nodes.
    pub nodes: Range<usize>,
    /// Values received from the previous stage (empty for stage 0), ascending by value id.
    pub receives: Vec<Crossing>,
    /// Values sent to the next stage (empty for the last stage), ascending by value id.
    pub sends: Vec<Crossing>,
}

impl StageLayout {
    /// The layout of stage `index` of the plan whose stages end at `ends` (see
    /// [`planner::evaluate`]); every crossing must be a unit's spikes.
    pub fn new(model: &ConvertedModel, ends: &[usize], index: usize) -> Result<Self, StageError> {
        let plan = planner::evaluate(model, ends, 0)?;
        let stage = plan.stages.get(index).ok_or_else(|| StageError::Input {
            stage: index,
            detail: format!("the plan has only {} stages", plan.stages.len()),
        })?;
        for s in &plan.stages {
            if let Some(c) = s
                .outgoing
                .iter()
                .find(|c| !matches!(c.encoding, CrossingEncoding::UnitSpikes { .. }))
            {
                return Err(StageError::Input {
                    stage: index,
                    detail: format!(
                        "value {} crosses the boundary after node {} without being a unit's \
                         output; pipeline cuts must carry spikes only",
                        c.value,
                        s.nodes.end - 1
                    ),
                });
            }
        }
        Ok(StageLayout {
            index,
            count: plan.stages.len(),
            nodes: stage.nodes.clone(),
            receives: index
                .checked_sub(1)
                .map(|p| plan.stages[p].outgoing.clone())
                .unwrap_or_default(),
            sends: stage.outgoing.clone(),
        })
    }

    pub fn is_first(&self) -> bool {
        self.index == 0
    }

    pub fn is_last(&self) -> bool {
        self.index + 1 == self.count
    }
}

/// The unit whose spikes a crossing carries.
fn crossing_unit(c: &Crossing) -> usize {
    match c.encoding {
        CrossingEncoding::UnitSpikes { unit } => unit,
        // StageLayout::new admits only spike crossings.
        _ => usize::MAX,
    }
}

/// What a stage receives for one batch.
pub enum StageInput<'a> {
    /// Stage 0: the preprocessed images, HWC uint8.
    Images(&'a [&'a [u8]]),
    /// Later stages: one packed spike tensor per received crossing, in
    /// [`StageLayout::receives`] order.
    Spikes(Vec<PackedSpikes>),
}

/// What a stage produced for one batch.
#[derive(Debug)]
pub struct StageOutput {
    /// Packed spikes per sent crossing, in [`StageLayout::sends`] order (empty for the last
    /// stage).
    pub spikes: Vec<PackedSpikes>,
    /// ANN values per sent crossing, in the same order, when a reference was asked for.
    pub ann: Vec<Tensor>,
    /// Per image, the spikes of this stage's units (plus the input layer's in stage 0).
    pub stats: Vec<ImageStats>,
    /// Last stage: SNN logits `[N, classes]`, and the ANN's with a reference.
    pub logits: Option<Tensor>,
    pub ann_logits: Option<Tensor>,
}

/// A stage ready to run batches.
pub struct Stage {
    net: SpikingNetwork,
    layout: StageLayout,
    codec: Codec,
    /// Values kept after the stage: the sent crossings, or the graph output.
    keep: Vec<ValueId>,
    /// Units whose spike words are sent on.
    record: Vec<usize>,
}

impl Stage {
    /// A stage over `model`, which needs the weights of the layout's nodes only (see
    /// [`crate::model_file::assemble_partial`]).
    pub fn new(
        model: &ConvertedModel,
        layout: StageLayout,
        threads: usize,
        codec: Codec,
    ) -> Result<Self, StageError> {
        let net = SpikingNetwork::for_nodes(model, threads, layout.nodes.clone())?;
        let keep = if layout.is_last() {
            vec![model.graph.output]
        } else {
            layout.sends.iter().map(|c| c.value).collect()
        };
        let record = layout.sends.iter().map(crossing_unit).collect();
        Ok(Stage {
            net,
            layout,
            codec,
            keep,
            record,
        })
    }

    pub fn layout(&self) -> &StageLayout {
        &self.layout
    }

    pub fn network(&self) -> &SpikingNetwork {
        &self.net
    }

    /// Runs one batch in SNN mode, and in ANN mode too when `ann` is given (stage 0: an
    /// empty vector; later stages: the ANN values of the received crossings, in order).
    pub fn run(
        &self,
        input: StageInput<'_>,
        ann: Option<Vec<Tensor>>,
    ) -> Result<StageOutput, StageError> {
        let graph = self.net.engine().graph();
        let stage = self.layout.index;
        let bad = |detail: String| StageError::Input { stage, detail };
        // Received spikes that only pass through this stage are forwarded as they came.
        let mut received: Vec<PackedSpikes> = Vec::new();
        let (snn_inputs, images) = match input {
            StageInput::Images(images) => {
                if !self.layout.is_first() {
                    return Err(bad("only stage 0 reads images".into()));
                }
                (
                    vec![(graph.input, self.net.normalise(images)?)],
                    Some(images),
                )
            }
            StageInput::Spikes(packed) => {
                if packed.len() != self.layout.receives.len() {
                    return Err(bad(format!(
                        "received {} spike tensors, expected {}",
                        packed.len(),
                        self.layout.receives.len()
                    )));
                }
                let mut inputs = Vec::with_capacity(packed.len());
                for (p, c) in packed.iter().zip(&self.layout.receives) {
                    let unit = crossing_unit(c);
                    if p.unit as usize != unit {
                        return Err(bad(format!(
                            "received spikes of unit {}, expected unit {unit} (value {})",
                            p.unit, c.value
                        )));
                    }
                    let words = spike_codec::unpack(p)?;
                    let shape = p.shape.iter().map(|&d| d as usize).collect();
                    inputs.push((c.value, self.net.decode_spikes(unit, shape, &words)?));
                }
                received = packed;
                (inputs, None)
            }
        };
        let batch = snn_inputs
            .first()
            .and_then(|(_, t)| t.shape().first().copied());
        let ann_out = match ann {
            None => None,
            Some(values) => {
                let inputs = if self.layout.is_first() {
                    vec![(graph.input, snn_inputs[0].1.clone())]
                } else {
                    if values.len() != self.layout.receives.len()
                        || values.iter().any(|t| t.shape().first().copied() != batch)
                    {
                        return Err(bad(format!(
                            "received {} ANN tensors, expected {} of batch {batch:?}",
                            values.len(),
                            self.layout.receives.len()
                        )));
                    }
                    self.layout
                        .receives
                        .iter()
                        .map(|c| c.value)
                        .zip(values)
                        .collect()
                };
                Some(
                    self.net
                        .run_ann_stage(self.layout.nodes.clone(), inputs, &self.keep)?,
                )
            }
        };
        let run = self.net.run_snn_stage(StageSpec {
            nodes: self.layout.nodes.clone(),
            inputs: snn_inputs,
            images,
            keep: &self.keep,
            record: &self.record,
        })?;
        let mut out = StageOutput {
            spikes: Vec::new(),
            ann: Vec::new(),
            stats: run.stats,
            logits: None,
            ann_logits: None,
        };
        if self.layout.is_last() {
            out.logits = run.values.into_iter().next();
            out.ann_logits = ann_out.and_then(|v| v.into_iter().next());
        } else {
            for (c, value) in self.layout.sends.iter().zip(&run.values) {
                let unit = crossing_unit(c);
                let Some((_, words)) = run.spikes.iter().find(|(u, _)| *u == unit) else {
                    let passed = received
                        .iter()
                        .find(|p| p.unit as usize == unit)
                        .ok_or_else(|| bad(format!("unit {unit} is neither run nor received")))?;
                    out.spikes.push(passed.clone());
                    continue;
                };
                out.spikes.push(spike_codec::pack(
                    unit as u32,
                    self.net.units()[unit].k(),
                    value.shape(),
                    words,
                    self.codec,
                )?);
            }
            out.ann = ann_out.unwrap_or_default();
        }
        Ok(out)
    }
}
