//! The partition planner on small hand-built models whose costs and crossings can be worked
//! out by hand (cost model: see `amos_snn::planner`).

use amos_snn::amos::closed_form::{self, Rounding};
use amos_snn::model::{ConversionSettings, ConvertedModel, Recipe, UnitParams, UnitPlacement};
use amos_snn::ops::{Activation, Binary, BinaryKind, Conv2d, GateKind, Linear, Op, Reshape};
use amos_snn::planner::{self, Crossing, CrossingEncoding};
use amos_snn::{Graph, GraphError, Tensor, ValueId};

fn lin(inputs: usize, outputs: usize) -> Op {
    Op::Linear(Linear {
        weight: Tensor::new(vec![inputs, outputs], vec![0.1; inputs * outputs]).unwrap(),
        bias: vec![0.0; outputs],
    })
}

fn relu() -> Op {
    Op::Activation(Activation::Relu)
}

/// A model over `g` with a closed-form ReLU unit of K neurons on each listed node.
fn model(g: Graph, units: &[(usize, usize)]) -> ConvertedModel {
    ConvertedModel {
        units: units
            .iter()
            .enumerate()
            .map(|(i, &(node, _))| UnitPlacement {
                node,
                gate: GateKind::Relu,
                params: i,
            })
            .collect(),
        unit_params: units
            .iter()
            .map(|&(_, k)| UnitParams {
                unit: closed_form::relu(k, 4.0, Rounding::Nearest),
                gate: GateKind::Relu,
                range: [0.0, 4.0],
                range2: None,
                mse: 0.0,
                method: "closed-form-rounding".into(),
            })
            .collect(),
        graph: g,
        preprocess: Recipe {
            preset: "custom".into(),
            resize: "none".into(),
            resize_param: 0,
            crop: [1, 1],
            interp: "bilinear".into(),
            mean: [0.0; 3],
            std: [1.0; 3],
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

/// input [4] → linear 4×4 (16) → relu K=4 (4·4·4/2 = 32) → linear 4×8 (8·4 = 32)
/// → relu K=4 (8·4·4/2 = 64) → linear 8×2 (2·8 = 16); node costs in parentheses.
fn chain() -> (ConvertedModel, [ValueId; 5]) {
    let mut g = Graph::new("x", vec![4]);
    let a = g.add_node("fc1", lin(4, 4), vec![g.input], "a").unwrap();
    let b = g.add_node("relu1", relu(), vec![a], "b").unwrap();
    let c = g.add_node("fc2", lin(4, 8), vec![b], "c").unwrap();
    let d = g.add_node("relu2", relu(), vec![c], "d").unwrap();
    let e = g.add_node("fc3", lin(8, 2), vec![d], "e").unwrap();
    (model(g, &[(1, 4), (3, 4)]), [a, b, c, d, e])
}

/// input [4] → fc0 4×5 = s0 (20) → fc1 5×5 (25) → relu K=6 = r (5·36/2 = 90) → fc2 5×5 (25)
/// → add(s0, ·) (5) → fc3 5×21 (105). Total 270; the cut after the relu balances 135/135 and
/// carries the residual stream s0 (no unit: identity) and r (unit spikes).
fn residual() -> (ConvertedModel, ValueId, ValueId) {
    let mut g = Graph::new("x", vec![4]);
    let s0 = g.add_node("fc0", lin(4, 5), vec![g.input], "s0").unwrap();
    let h = g.add_node("fc1", lin(5, 5), vec![s0], "h").unwrap();
    let r = g.add_node("relu", relu(), vec![h], "r").unwrap();
    let t = g.add_node("fc2", lin(5, 5), vec![r], "t").unwrap();
    let add = Op::Binary(Binary {
        kind: BinaryKind::Add,
        constant: None,
    });
    let s1 = g.add_node("add", add, vec![s0, t], "s1").unwrap();
    g.add_node("fc3", lin(5, 21), vec![s1], "out").unwrap();
    (model(g, &[(2, 6)]), s0, r)
}

#[test]
fn one_stage_is_the_whole_graph_with_no_crossings() {
    let (m, _) = chain();
    let plan = planner::plan(&m, 1, 8).unwrap();
    assert_eq!(plan.stages.len(), 1);
    let s = &plan.stages[0];
    assert_eq!(s.nodes, 0..5);
    assert_eq!(s.units, vec![0, 1]);
    assert_eq!(s.cost, 16.0 + 32.0 + 32.0 + 64.0 + 16.0);
    assert!(s.outgoing.is_empty());
    assert_eq!(s.boundary_bytes_per_image, 0);
    assert_eq!(planner::node_costs(&m), vec![16.0, 32.0, 32.0, 64.0, 16.0]);
}

#[test]
fn a_chain_is_cut_where_the_costs_balance() {
    let (m, [_, _, c, _, _]) = chain();
    // Prefix costs 16, 48, 80, 144, 160: only the cut after fc2 gives 80/80.
    let plan = planner::plan(&m, 2, 5).unwrap();
    let [s0, s1] = &plan.stages[..] else {
        panic!("two stages: {plan:?}")
    };
    assert_eq!((s0.nodes.clone(), s1.nodes.clone()), (0..3, 3..5));
    assert_eq!((s0.cost, s1.cost), (80.0, 80.0));
    assert_eq!((s0.units.clone(), s1.units.clone()), (vec![0], vec![1]));
    // fc2's output is no unit's output: it crosses at identity_k = 5 bits per element.
    assert_eq!(
        s0.outgoing,
        vec![Crossing {
            value: c,
            elements: 8,
            bits_per_element: 5,
            encoding: CrossingEncoding::NeedsIdentity,
        }]
    );
    assert_eq!(s0.boundary_bytes_per_image, 5);
    assert!(s1.outgoing.is_empty());
    assert_eq!(s1.boundary_bytes_per_image, 0);
    assert_eq!(plan.max_cost(), 80.0);
    assert_eq!(plan.stage_of_node(3), Some(1));
}

#[test]
fn the_graph_input_crosses_at_8_bits_and_unit_outputs_at_k() {
    let (m, [a, b, ..]) = chain();
    // Cut after fc1 (a: identity) and after relu1 (b: unit 0 with K = 4).
    let plan = planner::evaluate(&m, &[1, 2, 5], 10).unwrap();
    assert_eq!(plan.stages[0].outgoing[0].value, a);
    assert_eq!(plan.stages[0].boundary_bytes_per_image, 5); // 4 × 10 bits
    assert_eq!(
        plan.stages[1].outgoing,
        vec![Crossing {
            value: b,
            elements: 4,
            bits_per_element: 4,
            encoding: CrossingEncoding::UnitSpikes { unit: 0 },
        }]
    );
    assert_eq!(plan.stages[1].boundary_bytes_per_image, 2);
    // A graph input read after a cut crosses as pixel bits.
    let mut g = Graph::new("x", vec![3]);
    let a = g.add_node("fc", lin(3, 3), vec![g.input], "a").unwrap();
    let add = Op::Binary(Binary {
        kind: BinaryKind::Add,
        constant: None,
    });
    g.add_node("add", add, vec![a, g.input], "y").unwrap();
    let m = model(g, &[]);
    let plan = planner::evaluate(&m, &[1, 2], 10).unwrap();
    let input = &plan.stages[0].outgoing[0];
    assert_eq!(input.encoding, CrossingEncoding::Input);
    assert_eq!((input.elements, input.bits_per_element), (3, 8));
    assert_eq!(plan.stages[0].boundary_bytes_per_image, 3 + 4); // 24 bits + 30 bits
}

#[test]
fn a_cut_through_a_residual_block_carries_the_stream_and_the_spikes() {
    let (m, s0, r) = residual();
    assert_eq!(
        planner::node_costs(&m),
        vec![20.0, 25.0, 90.0, 25.0, 5.0, 105.0]
    );
    let plan = planner::plan(&m, 2, 10).unwrap();
    let first = &plan.stages[0];
    assert_eq!(first.nodes, 0..3);
    assert_eq!((first.cost, plan.stages[1].cost), (135.0, 135.0));
    assert_eq!(
        first.outgoing,
        vec![
            Crossing {
                value: s0,
                elements: 5,
                bits_per_element: 10,
                encoding: CrossingEncoding::NeedsIdentity,
            },
            Crossing {
                value: r,
                elements: 5,
                bits_per_element: 6,
                encoding: CrossingEncoding::UnitSpikes { unit: 0 },
            },
        ]
    );
    // Packed per tensor: ⌈5·10/8⌉ + ⌈5·6/8⌉ = 7 + 4 (not ⌈80/8⌉ = 10).
    assert_eq!(first.boundary_bytes_per_image, 11);
    assert_eq!(
        first.boundary_bytes_per_image,
        first
            .outgoing
            .iter()
            .map(|c| (c.elements * c.bits_per_element as u64).div_ceil(8))
            .sum::<u64>()
    );
    assert_eq!(plan.total_boundary_bytes(), 11);
}

#[test]
fn identity_units_turn_the_stream_into_spikes() {
    let (mut m, s0, _) = residual();
    let plan = planner::plan(&m, 2, 10).unwrap();
    planner::apply_identity_units(&mut m, &plan, |v| (v == s0).then_some([-2.0, 2.0]), 10).unwrap();
    assert_eq!(m.units.len(), 2);
    assert_eq!(m.units[0].gate, GateKind::Identity);
    assert_eq!(m.units[0].node, 1);
    // One identity node was inserted before the cut: the same split is now [0, 4).
    let after = planner::evaluate(&m, &[4, 7], 10).unwrap();
    let enc: Vec<_> = after.stages[0]
        .outgoing
        .iter()
        .map(|c| (c.encoding, c.bits_per_element))
        .collect();
    assert_eq!(
        enc,
        vec![
            (CrossingEncoding::UnitSpikes { unit: 1 }, 6),
            (CrossingEncoding::UnitSpikes { unit: 0 }, 10),
        ]
    );
    assert_eq!(after.stages[0].boundary_bytes_per_image, 11);
    // Unknown ranges are left alone.
    let (mut m2, _, _) = residual();
    let plan = planner::plan(&m2, 2, 10).unwrap();
    planner::apply_identity_units(&mut m2, &plan, |_| None, 10).unwrap();
    assert_eq!(m2.units.len(), 1);
}

/// input [1,10,10] → conv 1×1 to 4 channels (400, 400 elements) → global average pool (4)
/// → reshape (4) → linear 4×98 (392). The cut after the conv balances exactly (400/400) but
/// carries 400 elements; the cut after the pool costs 404/396 (within 2 %) and carries 4.
#[test]
fn near_ties_go_to_the_fewest_bytes() {
    let mut g = Graph::new("x", vec![1, 10, 10]);
    let conv = Op::Conv(Conv2d {
        weight: Tensor::new(vec![4, 1, 1, 1], vec![1.0; 4]).unwrap(),
        bias: vec![0.0; 4],
        stride: [1, 1],
        dilation: [1, 1],
        pads: [0; 4],
        groups: 1,
        prepared: Default::default(),
    });
    let c = g.add_node("conv", conv, vec![g.input], "c").unwrap();
    let p = g.add_node("gap", Op::GlobalAvgPool, vec![c], "p").unwrap();
    let f = g
        .add_node(
            "flat",
            Op::Reshape(Reshape { shape: vec![4] }),
            vec![p],
            "f",
        )
        .unwrap();
    g.add_node("fc", lin(4, 98), vec![f], "y").unwrap();
    let m = model(g, &[]);
    assert_eq!(planner::node_costs(&m), vec![400.0, 4.0, 4.0, 392.0]);
    let balanced = planner::evaluate(&m, &[1, 4], 8).unwrap();
    assert_eq!(balanced.max_cost(), 400.0);
    assert_eq!(balanced.total_boundary_bytes(), 400);
    let plan = planner::plan(&m, 2, 8).unwrap();
    assert_eq!(plan.stages[0].nodes, 0..2);
    assert_eq!((plan.stages[0].cost, plan.stages[1].cost), (404.0, 396.0));
    assert_eq!(plan.stages[0].outgoing[0].value, p);
    assert_eq!(plan.total_boundary_bytes(), 4);
}

#[test]
fn plans_are_deterministic() {
    let (m, ..) = residual();
    for n in 1..=6 {
        let a = planner::plan(&m, n, 10).unwrap();
        let b = planner::plan(&m.clone(), n, 10).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.stages.len(), n);
        // Contiguous, covering, every unit once.
        assert_eq!(a.stages[0].nodes.start, 0);
        assert_eq!(a.stages[n - 1].nodes.end, 6);
        assert!(
            a.stages
                .windows(2)
                .all(|w| w[0].nodes.end == w[1].nodes.start)
        );
        let units: Vec<usize> = a.stages.iter().flat_map(|s| s.units.clone()).collect();
        assert_eq!(units, vec![0]);
        assert_eq!(a.stages[n - 1].boundary_bytes_per_image, 0);
    }
}

#[test]
fn zero_stages_and_more_stages_than_nodes_are_refused() {
    let (m, ..) = chain();
    let e = planner::plan(&m, 0, 8).unwrap_err();
    assert!(matches!(e, GraphError::Structure(_)), "{e}");
    assert!(e.to_string().contains('0'), "{e}");
    let e = planner::plan(&m, 6, 8).unwrap_err().to_string();
    assert!(e.contains('6') && e.contains('5'), "{e}");
    assert!(planner::plan(&m, 5, 8).is_ok());
    assert!(planner::evaluate(&m, &[2, 2, 5], 8).is_err());
    assert!(planner::evaluate(&m, &[2, 4], 8).is_err());
}
