//! GFLOP/s of the `gemm` crate, one thread, on the 1×1 convolutions of EfficientNet-Lite0
//! (one image: out channels × in channels times in channels × pixels), called as
//! `ops::conv` calls it (row-major, accumulating into the output).
//!
//!     cargo run --release -p amos-snn --example gemm_shapes

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

/// `dst[m×n] += lhs[m×k] · rhs[k×n]`, row-major, one thread.
fn matmul(m: usize, n: usize, k: usize, lhs: &[f32], rhs: &[f32], dst: &mut [f32]) {
    assert!(lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n);
    // SAFETY: the assert keeps every access in bounds; the three buffers are distinct.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn main() {
    for (m, k, n) in SHAPES {
        let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut dst = vec![0.0f32; m * n];
        // About 0.2 G multiply-adds per shape, after a warm-up.
        let reps = (200_000_000 / (m * n * k)).max(3);
        matmul(m, n, k, &lhs, &rhs, &mut dst);
        let start = Instant::now();
        for _ in 0..reps {
            matmul(m, n, k, &lhs, &rhs, &mut dst);
        }
        let seconds = start.elapsed().as_secs_f64() / reps as f64;
        let gflops = 2.0 * (m * n * k) as f64 / seconds / 1e9;
        println!(
            "m {m:5} k {k:5} n {n:6}: {:.3} ms  {gflops:.1} GFLOP/s",
            seconds * 1e3
        );
    }
}
