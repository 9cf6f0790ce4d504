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
        ops: g.op_histogram().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        onnx_ops: model.onnx_ops.clone(),
        gates,
        gate_nodes,
    }
}

impl std::fmt::Display for OnnxReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims = |d: &[usize]| d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
        writeln!(f, "opset          {}", self.opset)?;
        writeln!(f, "input          [N, {}]", dims(&self.input_shape))?;
        writeln!(f, "output         [N, {}]", dims(&self.output_shape))?;
        writeln!(f, "ANN parameters {}", self.ann_params)?;
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
