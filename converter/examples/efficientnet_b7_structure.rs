//! Builds EfficientNet-B7 as torchvision defines it (`torchvision.models.efficientnet_b7`:
//! width 2.0, depth 3.1, 600×600 input), with seeded random weights and batch norms folded
//! into the convolutions, converts it with the default K, and prints what the paper's
//! Table 1 reports: neurons per image and layers (time steps along the deepest path).
//!
//! Neurons and layers do not depend on the weights, only on the structure and K.
//!
//! ```sh
//! cargo run --release --example efficientnet_b7_structure [-- OUT.amos]
//! ```
//!
//! With a path, the converted model is also written there (for timing and cluster sizing:
//! its cost per image does not depend on the weights either).

use amos_converter::convert::{ConvertOptions, ModelInfo, convert};
use amos_converter::inspect::amos_report;
use amos_snn::model::Recipe;
use amos_snn::ops::{Activation, Binary, BinaryKind, Conv2d, Linear, Op, Reshape};
use amos_snn::simulate::SpikingNetwork;
use amos_snn::{Graph, Tensor, ValueId};

/// torchvision's `_make_divisible(v, 8)`.
fn make_divisible(v: f64) -> usize {
    let new_v = (8usize).max(((v + 4.0) as usize) / 8 * 8);
    if (new_v as f64) < 0.9 * v {
        new_v + 8
    } else {
        new_v
    }
}

struct Builder {
    g: Graph,
    seed: u64,
    n: usize,
}

impl Builder {
    fn weights(&mut self, len: usize, fan_in: usize) -> Vec<f32> {
        let scale = (2.0 / fan_in as f64).sqrt();
        (0..len)
            .map(|_| {
                // SplitMix64: deterministic, dependency-free noise for the weights.
                self.seed = self.seed.wrapping_add(0x9E3779B97F4A7C15);
                let mut z = self.seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
                z ^= z >> 31;
                (((z >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2.0 * scale) as f32
            })
            .collect()
    }

    fn node(&mut self, op: Op, inputs: Vec<ValueId>) -> ValueId {
        self.n += 1;
        let name = format!("n{}", self.n);
        self.g
            .add_node(&name, op, inputs, &name)
            .expect("valid B7 structure")
    }

    fn conv(&mut self, x: ValueId, cout: usize, k: usize, stride: usize, groups: usize) -> ValueId {
        let cin = self.g.values[x].shape[0];
        let w = self.weights(cout * cin / groups * k * k, cin / groups * k * k);
        let pad = (k - 1) / 2;
        let op = Op::Conv(Conv2d {
            weight: Tensor::new(vec![cout, cin / groups, k, k], w).expect("weight shape"),
            bias: vec![0.0; cout],
            stride: [stride, stride],
            dilation: [1, 1],
            pads: [pad; 4],
            groups,
            prepared: Default::default(),
        });
        self.node(op, vec![x])
    }

    fn swish(&mut self, x: ValueId) -> ValueId {
        self.node(Op::Activation(Activation::Swish), vec![x])
    }

    fn mbconv(
        &mut self,
        x: ValueId,
        expand: usize,
        k: usize,
        stride: usize,
        cout: usize,
    ) -> ValueId {
        let cin = self.g.values[x].shape[0];
        let expanded = make_divisible((cin * expand) as f64);
        let mut h = x;
        if expanded != cin {
            h = self.conv(h, expanded, 1, 1, 1);
            h = self.swish(h);
        }
        h = self.conv(h, expanded, k, stride, expanded);
        h = self.swish(h);
        // Squeeze-and-excitation.
        let squeeze = (cin / 4).max(1);
        let p = self.node(Op::GlobalAvgPool, vec![h]);
        let s = self.conv(p, squeeze, 1, 1, 1);
        let s = self.swish(s);
        let e = self.conv(s, expanded, 1, 1, 1);
        let e = self.node(Op::Activation(Activation::Sigmoid), vec![e]);
        h = self.node(
            Op::Binary(Binary {
                kind: BinaryKind::Mul,
                constant: None,
            }),
            vec![h, e],
        );
        h = self.conv(h, cout, 1, 1, 1);
        if stride == 1 && cin == cout {
            h = self.node(
                Op::Binary(Binary {
                    kind: BinaryKind::Add,
                    constant: None,
                }),
                vec![h, x],
            );
        }
        h
    }
}

fn main() -> anyhow::Result<()> {
    let (width, depth, resolution) = (2.0f64, 3.1f64, 600usize);
    let mut b = Builder {
        g: Graph::new("input", vec![3, resolution, resolution]),
        seed: 7,
        n: 0,
    };
    let ch = |c: usize| make_divisible(c as f64 * width);
    let mut x = b.g.input;
    x = b.conv(x, ch(32), 3, 2, 1);
    x = b.swish(x);
    // (expand ratio, kernel, stride, in, out, layers) of torchvision's EfficientNet-B0 table.
    let stages = [
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ];
    let mut blocks = 0;
    for (expand, k, stride, _cin, cout, layers) in stages {
        let layers = (layers as f64 * depth).ceil() as usize;
        for i in 0..layers {
            x = b.mbconv(x, expand, k, if i == 0 { stride } else { 1 }, ch(cout));
            blocks += 1;
        }
    }
    x = b.conv(x, 4 * ch(320), 1, 1, 1);
    x = b.swish(x);
    x = b.node(Op::GlobalAvgPool, vec![x]);
    let c = b.g.values[x].shape[0];
    x = b.node(Op::Reshape(Reshape { shape: vec![c] }), vec![x]);
    let w = b.weights(c * 1000, c);
    b.node(
        Op::Linear(Linear {
            weight: Tensor::new(vec![c, 1000], w)?,
            bias: vec![0.0; 1000],
        }),
        vec![x],
    );
    let graph = b.g;
    println!(
        "EfficientNet-B7 (torchvision structure, {resolution}x{resolution}): {blocks} MBConv blocks, {} ANN parameters",
        graph.param_count()
    );

    let recipe = Recipe {
        preset: "torchvision".into(),
        resize: "shorter-side".into(),
        resize_param: 600,
        crop: [600, 600],
        interp: "bicubic".into(),
        mean: [123.675, 116.28, 103.53],
        std: [58.395, 57.12, 57.375],
    };
    let info = ModelInfo {
        recipe,
        classes: Vec::new(),
        source_sha256: String::new(),
    };
    let model = convert(graph, None, &ConvertOptions::default(), info, |g| {
        eprintln!("fitting {g}")
    })?;
    if let Some(path) = std::env::args().nth(1) {
        amos_snn::model_file::write_file(std::path::Path::new(&path), &model)?;
        println!("wrote {path}");
    }
    let net = SpikingNetwork::new(&model, 0)?;
    let report = amos_report(&model, &net);
    print!("{report}");
    println!(
        "\npaper (Table 1): 3110M neurons, 4605 layers\nours:            {:.0}M neurons (+{:.1}M input), {} layers",
        report.neurons as f64 / 1e6,
        report.input_neurons as f64 / 1e6,
        report.layers
    );
    Ok(())
}
