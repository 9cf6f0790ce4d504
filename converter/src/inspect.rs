//! `inspect`: what a model is made of, and which of its nodes conversion will replace.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::onnx::ImportedModel;

/// The report of `amos-convert inspect MODEL.onnx`.
#[derive(Debug, Serialize)]
pub struct OnnxReport {
    pub opset: i64,
    /// Per-image input shape.
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// Trained parameters after batch-norm folding.
    pub ann_params: usize,
    /// IR operators after folding, by name.
    pub ops: BTreeMap<String, usize>,
    /// ONNX operators as in the file, by op type.
    pub onnx_ops: BTreeMap<String, usize>,
    /// Gates by type: how many nodes conversion replaces with AMOS units.
    pub gates: BTreeMap<String, usize>,
    /// Every gate in graph order.
    pub gate_nodes: Vec<GateNode>,
}

#[derive(Debug, Serialize)]
pub struct GateNode {
    pub node: String,
    pub gate: String,
    /// Elements of the gate's output per image (neurons per unit neuron index).
    pub elements: usize,
}

pub fn onnx_report(model: &ImportedModel) -> OnnxReport {
    let g = &model.graph;
    let mut gates = BTreeMap::new();
    let gate_nodes = g
        .gates()
        .into_iter()
        .map(|(i, kind)| {
            *gates.entry(kind.name().to_string()).or_insert(0) += 1;
            let node = &g.nodes[i];
            GateNode {
                node: node.name.clone(),
                gate: kind.name().to_string(),
                elements: g.values[node.output].shape.iter().product(),
            }
        })
        .collect();
    OnnxReport {
        opset: model.opset,
        input_shape: g.input_shape().to_vec(),
        output_shape: g.output_shape().to_vec(),
        ann_params: g.param_count(),
        ops: g
            .op_histogram()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        onnx_ops: model.onnx_ops.clone(),
        gates,
        gate_nodes,
    }
}

impl std::fmt::Display for OnnxReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "opset           {}", self.opset)?;
        writeln!(f, "input           [N, {}]", fmt_dims(&self.input_shape))?;
        writeln!(f, "output          [N, {}]", fmt_dims(&self.output_shape))?;
        writeln!(f, "ANN parameters  {}", self.ann_params)?;
        writeln!(f, "\noperators (after folding)")?;
        for (op, n) in &self.ops {
            writeln!(f, "  {op:<16} {n:>5}")?;
        }
        let total: usize = self.gates.values().sum();
        writeln!(f, "\ngates ({total}, replaced by AMOS units on conversion)")?;
        for (gate, n) in &self.gates {
            writeln!(f, "  {gate:<16} {n:>5}")?;
        }
        Ok(())
    }
}

/// The report of `amos-convert inspect MODEL.amos`.
#[derive(Debug, Serialize)]
pub struct AmosReport {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub ann_params: usize,
    /// Parameters of the distinct unit parameter sets (the paper's Table 3 count).
    pub amos_params: usize,
    /// Unit placements (gate nodes replaced).
    pub units: usize,
    /// Neurons per image over all units (K × elements); the input layer is `input_neurons`.
    pub neurons: u64,
    pub input_neurons: u64,
    /// Time steps along the deepest path: Σ K of the units on it.
    pub layers: u64,
    pub units_by_gate: BTreeMap<String, GateSummary>,
    /// Every distinct unit: gate, K, range, method, approximation error.
    pub unit_params: Vec<UnitSummary>,
    /// Every unit placement in graph order: the layer table (ARCHITECTURE.md §6).
    pub unit_table: Vec<LayerRow>,
    pub preprocess: String,
    pub source_sha256: String,
    pub settings: BTreeMap<String, String>,
    /// The pipeline partition (`inspect --stages N`), absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageRow>>,
}

/// One pipeline stage of `inspect --stages N` (the plan of `amos_snn::planner`).
#[derive(Debug, Serialize)]
pub struct StageRow {
    pub stage: usize,
    /// Node index range `[start, end)`.
    pub nodes: [usize; 2],
    /// Names of the first and last node.
    pub first_node: String,
    pub last_node: String,
    /// Unit ids (rows of `unit_table`) in this stage.
    pub units: Vec<usize>,
    /// Estimated cost: multiply-accumulates of linear layers plus elements × K × K/2 per
    /// unit (see `amos_snn::planner`).
    pub cost: f64,
    /// Bytes per image crossing the boundary after this stage, spike-coded and bit-packed
    /// per tensor (0 for the last stage).
    pub boundary_bytes_per_image: u64,
    /// The same tensors as f32.
    pub f32_bytes_per_image: u64,
    /// The crossing tensors.
    pub outgoing: Vec<CrossingRow>,
}

#[derive(Debug, Serialize)]
pub struct CrossingRow {
    pub value: String,
    pub elements: u64,
    pub bits: u32,
    /// "unit" (a unit's spikes), "identity" (needs an identity unit) or "input" (pixel bits).
    pub encoding: String,
    /// The unit whose spikes cross, for "unit".
    pub unit: Option<usize>,
    pub bytes: u64,
}

/// The stage rows of a plan of `model` into `stages` stages. Without `identity_k`, the plan
/// `amos-coordinator` runs: cuts only where spikes alone cross. With it, any cut, counting a
/// crossing that is not a unit's output at `identity_k` bits per element (it would need an
/// identity unit, which changes the network).
pub fn stage_rows(
    model: &amos_snn::model::ConvertedModel,
    stages: usize,
    identity_k: Option<u32>,
) -> Result<Vec<StageRow>, amos_snn::GraphError> {
    use amos_snn::planner::CrossingEncoding;
    let g = &model.graph;
    let plan = match identity_k {
        None => amos_snn::planner::plan_spike_cuts(model, stages)?,
        Some(k) => amos_snn::planner::plan(model, stages, k)?,
    };
    Ok(plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| StageRow {
            stage: i,
            nodes: [s.nodes.start, s.nodes.end],
            first_node: g.nodes[s.nodes.start].name.clone(),
            last_node: g.nodes[s.nodes.end - 1].name.clone(),
            units: s.units.clone(),
            cost: s.cost,
            boundary_bytes_per_image: s.boundary_bytes_per_image,
            f32_bytes_per_image: s.outgoing.iter().map(|c| c.f32_bytes_per_image()).sum(),
            outgoing: s
                .outgoing
                .iter()
                .map(|c| {
                    let (encoding, unit) = match c.encoding {
                        CrossingEncoding::UnitSpikes { unit } => ("unit", Some(unit)),
                        CrossingEncoding::NeedsIdentity => ("identity", None),
                        CrossingEncoding::Input => ("input", None),
                    };
                    CrossingRow {
                        value: g.values[c.value].name.clone(),
                        elements: c.elements,
                        bits: c.bits_per_element,
                        encoding: encoding.into(),
                        unit,
                        bytes: c.bytes_per_image(),
                    }
                })
                .collect(),
        })
        .collect())
}

#[derive(Debug, Serialize)]
pub struct GateSummary {
    pub units: usize,
    pub k: Vec<usize>,
    pub neurons: u64,
}

/// One unit placement: where it sits, what it costs.
#[derive(Debug, Serialize)]
pub struct LayerRow {
    pub unit_id: usize,
    /// Source node name.
    pub node: String,
    pub gate: String,
    pub k: usize,
    /// Index into `unit_params`.
    pub params: usize,
    /// Elements per image.
    pub elements: u64,
    /// K × elements.
    pub neurons: u64,
    /// First time step of the unit along the deepest path to it.
    pub time_step: u64,
    /// Synapses per spike, mean over the unit's elements.
    pub fanout: f64,
    pub mse: f32,
}

#[derive(Debug, Serialize)]
pub struct UnitSummary {
    pub gate: String,
    pub k: usize,
    pub params: usize,
    pub range: [f32; 2],
    pub range2: Option<[f32; 2]>,
    pub method: String,
    pub mse: f32,
    pub placements: usize,
}

pub fn amos_report(
    model: &amos_snn::model::ConvertedModel,
    net: &amos_snn::simulate::SpikingNetwork,
) -> AmosReport {
    let g = &model.graph;
    let neurons_per_unit = net.unit_neurons();
    let mut by_gate: BTreeMap<String, GateSummary> = BTreeMap::new();
    for (p, n) in model.units.iter().zip(&neurons_per_unit) {
        let k = model.unit_params[p.params].unit.k();
        let e = by_gate
            .entry(p.gate.name().to_string())
            .or_insert(GateSummary {
                units: 0,
                k: Vec::new(),
                neurons: 0,
            });
        e.units += 1;
        e.neurons += n;
        if !e.k.contains(&k) {
            e.k.push(k);
        }
    }
    let unit_params = model
        .unit_params
        .iter()
        .enumerate()
        .map(|(i, u)| UnitSummary {
            gate: u.gate.name().to_string(),
            k: u.unit.k(),
            params: u.unit.param_count(),
            range: u.range,
            range2: u.range2,
            method: u.method.clone(),
            mse: u.mse,
            placements: model.units.iter().filter(|p| p.params == i).count(),
        })
        .collect();
    let r = &model.preprocess;
    let s = &model.settings;
    let mut settings = BTreeMap::new();
    settings.insert(
        "k".into(),
        s.k.iter()
            .map(|(g, k)| format!("{g}={k}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    settings.insert("rounding".into(), s.rounding.to_string());
    settings.insert(
        "calibration_images".into(),
        s.calibration_images.to_string(),
    );
    settings.insert("seed".into(), s.seed.to_string());
    if s.fit_steps > 0 {
        settings.insert("fit_steps".into(), s.fit_steps.to_string());
        settings.insert("fit_samples".into(), s.fit_samples.to_string());
    }
    settings.insert("tool_version".into(), s.tool_version.clone());
    let (_, start) = time_steps(model);
    let fanout = net.unit_fanout();
    let unit_table = model
        .units
        .iter()
        .enumerate()
        .map(|(u, p)| {
            let params = &model.unit_params[p.params];
            let k = params.unit.k();
            LayerRow {
                unit_id: u,
                node: g.nodes[p.node].name.clone(),
                gate: p.gate.name().to_string(),
                k,
                params: p.params,
                elements: neurons_per_unit[u] / k.max(1) as u64,
                neurons: neurons_per_unit[u],
                time_step: start[p.node],
                fanout: fanout[u],
                mse: params.mse,
            }
        })
        .collect();
    AmosReport {
        unit_table,
        input_shape: g.input_shape().to_vec(),
        output_shape: g.output_shape().to_vec(),
        ann_params: g.param_count(),
        amos_params: model.unit_params.iter().map(|u| u.unit.param_count()).sum(),
        units: model.units.len(),
        neurons: net.neurons(),
        input_neurons: net.input_neurons(),
        layers: layers(model),
        units_by_gate: by_gate,
        unit_params,
        preprocess: format!(
            "{} (resize {} {}, crop {}x{}, {}, mean {:?}, std {:?})",
            r.preset, r.resize, r.resize_param, r.crop[0], r.crop[1], r.interp, r.mean, r.std
        ),
        source_sha256: model.source_sha256.clone(),
        settings,
        stages: None,
    }
}

/// Time steps along the deepest path of the converted network: each unit takes K steps
/// (its neurons fire in turn); linear layers add none.
pub fn layers(model: &amos_snn::model::ConvertedModel) -> u64 {
    let (depth, _) = time_steps(model);
    depth[model.graph.output]
}

/// Time steps after each value, and the first time step of each node (0-based), along the
/// deepest path.
fn time_steps(model: &amos_snn::model::ConvertedModel) -> (Vec<u64>, Vec<u64>) {
    let g = &model.graph;
    let mut k_of_node = vec![0u64; g.nodes.len()];
    for p in &model.units {
        k_of_node[p.node] = model.unit_params[p.params].unit.k() as u64;
    }
    let mut depth = vec![0u64; g.values.len()];
    let mut start = vec![0u64; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        start[i] = n.inputs.iter().map(|&v| depth[v]).max().unwrap_or(0);
        depth[n.output] = start[i] + k_of_node[i];
    }
    (depth, start)
}

impl std::fmt::Display for AmosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "input           [N, {}]   output [N, {}]",
            fmt_dims(&self.input_shape),
            fmt_dims(&self.output_shape)
        )?;
        writeln!(f, "preprocessing   {}", self.preprocess)?;
        writeln!(f, "source sha256   {}", self.source_sha256)?;
        writeln!(f, "ANN parameters  {}", self.ann_params)?;
        writeln!(f, "AMOS parameters {}", self.amos_params)?;
        writeln!(f, "units           {}", self.units)?;
        writeln!(
            f,
            "neurons/image   {} (+ {} input neurons)",
            self.neurons, self.input_neurons
        )?;
        writeln!(
            f,
            "layers          {} time steps on the deepest path",
            self.layers
        )?;
        writeln!(
            f,
            "\n{:<14} {:>6} {:>6} {:>14}",
            "gate", "units", "K", "neurons/image"
        )?;
        for (gate, s) in &self.units_by_gate {
            let ks =
                s.k.iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
            writeln!(f, "{gate:<14} {:>6} {ks:>6} {:>14}", s.units, s.neurons)?;
        }
        writeln!(
            f,
            "\n{:<14} {:>4} {:>7} {:>24} {:<22} {:>10} {:>6}",
            "unit", "K", "params", "range", "method", "mse", "used"
        )?;
        for u in &self.unit_params {
            let range = format!("[{:.3}, {:.3}]", u.range[0], u.range[1]);
            writeln!(
                f,
                "{:<14} {:>4} {:>7} {range:>24} {:<22} {:>10.3e} {:>6}",
                u.gate, u.k, u.params, u.method, u.mse, u.placements
            )?;
        }
        if let Some(stages) = &self.stages {
            writeln!(
                f,
                "\n{:<6} {:>11} {:>6} {:>16} {:>14} {:>14}",
                "stage", "nodes", "units", "cost", "bytes/image", "f32 bytes"
            )?;
            for s in stages {
                let nodes = format!("{}..{}", s.nodes[0], s.nodes[1]);
                writeln!(
                    f,
                    "{:<6} {nodes:>11} {:>6} {:>16.0} {:>14} {:>14}   {} .. {}",
                    s.stage,
                    s.units.len(),
                    s.cost,
                    s.boundary_bytes_per_image,
                    s.f32_bytes_per_image,
                    s.first_node,
                    s.last_node
                )?;
            }
        }
        Ok(())
    }
}

/// `a, b, c` for a shape.
fn fmt_dims(d: &[usize]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
