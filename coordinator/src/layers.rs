//! The layer table (ARCHITECTURE.md §6): one row per unit, from the model's structure and
//! the run's stage plan.

use amos_io::results::LayerRow;
use amos_snn::model::ConvertedModel;
use amos_snn::planner::StagePlan;
use amos_snn::simulate::SpikingNetwork;

/// The rows of the layer table. `model` may hold the structure only (no weights).
///
/// A unit's `time_step` is the number of neuron steps before its first neuron can fire: the
/// largest sum of K over the units along any path from the input to it (its neurons then
/// fire in steps `time_step .. time_step + K`).
pub fn layer_table(model: &ConvertedModel, plan: &StagePlan) -> anyhow::Result<Vec<LayerRow>> {
    let net = SpikingNetwork::new(model, 1)?;
    let graph = &model.graph;
    let mut unit_of_node = vec![None; graph.nodes.len()];
    for (u, p) in model.units.iter().enumerate() {
        unit_of_node[p.node] = Some(u);
    }
    let mut ready = vec![0u64; graph.values.len()];
    let mut steps = vec![0u64; model.units.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let start = node.inputs.iter().map(|&v| ready[v]).max().unwrap_or(0);
        ready[node.output] = match unit_of_node[i] {
            Some(u) => {
                steps[u] = start;
                start + net.units()[u].k() as u64
            }
            None => start,
        };
    }
    let neurons = net.unit_neurons();
    let fanout = net.unit_fanout();
    Ok(model
        .units
        .iter()
        .enumerate()
        .map(|(u, p)| {
            let params = &model.unit_params[p.params];
            let k = params.unit.k() as u64;
            LayerRow {
                unit_id: u as u32,
                node: graph.nodes[p.node].name.clone(),
                gate: p.gate.name().to_string(),
                k: k as u32,
                elements: neurons[u] / k.max(1),
                neurons: neurons[u],
                stage: plan.stage_of_node(p.node).unwrap_or(0) as u32,
                time_step: steps[u].min(u32::MAX as u64) as u32,
                fanout: fanout[u],
                mse: params.mse,
            }
        })
        .collect())
}
