//! GFLOP/s of the matrix products on the 1×1 convolutions of EfficientNet-Lite0, one thread
//! (one image: out channels × in channels times in channels × pixels): our kernel
//! ([`amos_snn::ops::matmul::matmul`], AVX-512 or AVX2 by what the CPU has; on small planes the
//! kernel vectorised along the channels, AVX-512 or AVX2) and the `gemm` crate's, called as
//! `ops::conv` calls them (row-major, accumulating into the output).
//!
//!     cargo run --release -p amos-snn --example gemm_shapes

use amos_snn::ops::matmul::{
    WeightsByInput, gemm_crate, matmul, matmul_bias_by_channels, prefers_channels,
};
use gemm_common::Parallelism;
use std::time::Instant;

/// (out channels m, in channels k, pixels n) of Lite0's pointwise convolutions at 224×224.
const SHAPES: [(usize, usize, usize); 19] = [
    (16, 32, 12544),
    (96, 16, 12544),
    (24, 96, 3136),
    (144, 24, 3136),
    (24, 144, 3136),
    (40, 144, 784),
    (240, 40, 784),
    (40, 240, 784),
    (80, 240, 196),
    (480, 80, 196),
    (80, 480, 196),
    (112, 480, 196),
    (672, 112, 196),
    (112, 672, 196),
    (192, 672, 49),
    (1152, 192, 49),
    (192, 1152, 49),
    (320, 1152, 49),
    (1280, 320, 49),
];

type Product = fn(usize, usize, usize, &[f32], &[f32], &mut [f32], Parallelism);

/// Seconds per product, after a warm-up, over about 0.2 G multiply-adds.
fn time(product: Product, (m, k, n): (usize, usize, usize)) -> f64 {
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut dst = vec![0.0f32; m * n];
    let reps = (200_000_000 / (m * n * k)).max(3);
    product(m, n, k, &lhs, &rhs, &mut dst, Parallelism::None);
    let start = Instant::now();
    for _ in 0..reps {
        product(m, n, k, &lhs, &rhs, &mut dst, Parallelism::None);
    }
    start.elapsed().as_secs_f64() / reps as f64
}

/// [`time`] for the kernel vectorised along the channels (weights laid out beforehand, as
/// a convolution keeps them).
fn by_channels((m, k, n): (usize, usize, usize)) -> f64 {
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let bias = vec![0.5f32; m];
    let by_input = WeightsByInput::new(&lhs, m, k);
    let mut dst = vec![0.0f32; m * n];
    let reps = (200_000_000 / (m * n * k)).max(3);
    let mut run =
        || matmul_bias_by_channels(m, n, k, 1, &lhs, &by_input, &rhs, &bias, &mut dst, None);
    run();
    let start = Instant::now();
    for _ in 0..reps {
        run();
    }
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let (mut ours_total, mut crate_total) = (0.0, 0.0);
    for (m, k, n) in SHAPES {
        let ours = if prefers_channels(m, n, k) {
            by_channels((m, k, n))
        } else {
            time(matmul, (m, k, n))
        };
        let theirs = time(gemm_crate, (m, k, n));
        let gflops = |s: f64| 2.0 * (m * n * k) as f64 / s / 1e9;
        println!(
            "m {m:5} k {k:5} n {n:6}: ours {:.3} ms {:6.1} GFLOP/s, gemm crate {:.3} ms {:6.1} GFLOP/s",
            ours * 1e3,
            gflops(ours),
            theirs * 1e3,
            gflops(theirs),
        );
        ours_total += ours;
        crate_total += theirs;
    }
    println!(
        "one of each shape: ours {:.2} ms, gemm crate {:.2} ms",
        ours_total * 1e3,
        crate_total * 1e3
    );
}
