//! Microseconds per image of the depthwise convolutions of EfficientNet-Lite0 at 224×224, one
//! thread, each with a ReLU6 in its stores as the network runs it: the best of seven timings
//! of 100 runs, with the multiply-adds per second. For tuning `ops::depthwise`.
//!
//!     cargo run --release -p amos-snn --example depthwise_speed [PLANE]
//!
//! With `PLANE` (112, 56, 28, 14 or 7), only the layers whose input planes are that wide.

use amos_snn::Tensor;
use amos_snn::ops::Conv2d;
use amos_snn::ops::activation::Clamp;
use std::time::Instant;

/// (channels, input side, kernel, stride) of Lite0's depthwise convolutions.
const LAYERS: [(usize, usize, usize, usize); 16] = [
    (32, 112, 3, 1),
    (96, 112, 3, 2),
    (144, 56, 3, 1),
    (144, 56, 5, 2),
    (240, 28, 5, 1),
    (240, 28, 3, 2),
    (480, 14, 3, 1),
    (480, 14, 3, 1),
    (480, 14, 5, 1),
    (672, 14, 5, 1),
    (672, 14, 5, 1),
    (672, 14, 5, 2),
    (1152, 7, 5, 1),
    (1152, 7, 5, 1),
    (1152, 7, 5, 1),
    (1152, 7, 3, 1),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let only: Option<usize> = std::env::args().nth(1).map(|a| a.parse()).transpose()?;
    let relu6 = Clamp::new(0.0, 6.0);
    let mut total = 0.0;
    for (c, side, k, stride) in LAYERS {
        if only.is_some_and(|o| o != side) {
            continue;
        }
        // TensorFlow's "same" padding, as Lite0's exporter pads.
        let (before, after) = if stride == 1 {
            (k / 2, k / 2)
        } else {
            ((k - 2) / 2, k - 2 - (k - 2) / 2)
        };
        let weights = (0..c * k * k).map(|i| ((i * 7919) % 13) as f32 * 0.05 - 0.31);
        let conv = Conv2d {
            weight: Tensor::new(vec![c, 1, k, k], weights.collect())?,
            bias: (0..c).map(|i| (i % 5) as f32 * 0.1 + 0.05).collect(),
            stride: [stride, stride],
            dilation: [1, 1],
            pads: [before, before, after, after],
            groups: c,
            prepared: Default::default(),
        };
        let out = (side + before + after - k) / stride + 1;
        let pixels = (0..c * side * side).map(|i| ((i * 31) % 17) as f32 * 0.1);
        let x = Tensor::new(vec![1, c, side, side], pixels.collect())?;
        let shape = [c, out, out];
        let runs = 100;
        std::hint::black_box(conv.eval_fused(&x, &shape, 1, relu6, None));
        let mut best = f64::MAX;
        for _ in 0..7 {
            let start = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(conv.eval_fused(&x, &shape, 1, relu6, None));
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / runs as f64);
        }
        total += best;
        let macs = (c * out * out * k * k) as f64;
        println!(
            "{c:5} × {side:3}² k{k} s{stride}: {best:7.1} µs  {:5.2} GMAC/s",
            macs / best / 1e3
        );
    }
    println!("total {total:.1} µs");
    Ok(())
}
