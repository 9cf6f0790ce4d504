//! Per-layer ranges: a ReLU6 layer whose calibrated inputs stay below 6 gets the code over
//! its own range; one that reaches 6 keeps the shared [0, 6] unit.

use amos_converter::calibrate::{Calibration, GateSamples};
use amos_converter::convert::{ConvertOptions, ModelInfo, convert};
use amos_snn::Graph;
use amos_snn::model::Recipe;
use amos_snn::ops::{Activation, GateKind, Op};

fn graph() -> Graph {
    let mut g = Graph::new("input", vec![3, 4, 4]);
    let relu6 = Op::Activation(Activation::Clip { lo: 0.0, hi: 6.0 });
    let a = g
        .add_node("a", relu6.clone(), vec![g.input], "a")
        .expect("a");
    g.add_node("b", relu6, vec![a], "b").expect("b");
    g
}

fn samples(node: usize, max: f32) -> GateSamples {
    let x: Vec<f32> = (0..1000)
        .map(|i| -2.0 + (max + 2.0) * i as f32 / 999.0)
        .collect();
    GateSamples {
        node,
        gate: Some(GateKind::Relu6),
        min: -2.0,
        max,
        x,
        x2: Vec::new(),
    }
}

fn info() -> ModelInfo {
    let recipe = Recipe {
        preset: "cifar".into(),
        resize: "none".into(),
        resize_param: 0,
        crop: [4, 4],
        interp: "bilinear".into(),
        mean: [0.0; 3],
        std: [255.0; 3],
    };
    ModelInfo {
        recipe,
        classes: Vec::new(),
        source_sha256: String::new(),
    }
}

#[test]
fn a_layer_below_the_bound_gets_its_own_range() {
    let calibration = Calibration {
        images: 1,
        gates: vec![samples(0, 3.0), samples(1, 6.0)],
    };
    let model = convert(
        graph(),
        Some(&calibration),
        &ConvertOptions::default(),
        info(),
        |_| {},
    )
    .expect("convert");
    assert_eq!(model.units.len(), 2);
    let (a, b) = (
        &model.unit_params[model.units[0].params],
        &model.unit_params[model.units[1].params],
    );
    assert_eq!(a.range, [0.0, 3.0]);
    assert!(a.method.contains("layer range"), "{}", a.method);
    assert_eq!(b.range, [0.0, 6.0]);
    // Node a's unit: 10 levels over [0, 3] (step 3/1023), exact at both ends.
    let step = 3.0 / 1023.0;
    for i in 0..=3000 {
        let x = i as f32 * 1e-3;
        assert!(
            (a.unit.eval(x, 0.0).1 - x).abs() <= step / 2.0 + 1e-5,
            "x {x}"
        );
    }
    assert_eq!(a.unit.eval(3.0, 0.0).1, 3.0);
    assert_eq!(a.unit.eval(-1.0, 0.0).1, 0.0);
    // With shared units both nodes use the one [0, 6] unit.
    let shared = ConvertOptions {
        per_layer: false,
        ..Default::default()
    };
    let model = convert(graph(), Some(&calibration), &shared, info(), |_| {}).expect("convert");
    assert_eq!(model.unit_params.len(), 1);
    assert_eq!(model.unit_params[0].range, [0.0, 6.0]);
}
