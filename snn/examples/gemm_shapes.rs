use std::time::Instant;
fn main() {
    // (m = out channels, k = in channels, n = pixels)
    let shapes = [
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
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let reps = (2e8 as usize / (m * n * k)).max(3);
        for _ in 0..2 {
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
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
        let t = Instant::now();
        for _ in 0..reps {
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
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
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "m {m:5} k {k:5} n {n:6}: {:.3} ms  {:.1} GFLOP/s",
            s * 1e3,
            2.0 * (m * n * k) as f64 / s / 1e9
        );
    }
}
