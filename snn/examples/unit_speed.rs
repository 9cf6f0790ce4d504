use amos_snn::amos::{
    UnitKernel,
    closed_form::{self, Rounding},
};
use std::time::Instant;
fn main() {
    let unit = closed_form::relu6(10, Rounding::Nearest);
    let k = UnitKernel::new(unit);
    let n = 1 << 20;
    let mut s = 1u64;
    let x: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 10.0 - 4.0
        })
        .collect();
    let fan: Vec<u32> = (0..n as u32).map(|i| 9 + i % 3).collect();
    let mut y = vec![0f32; n];
    for (name, f) in [("no fanout", &[][..]), ("fanout", &fan[..])] {
        for _ in 0..3 {
            k.eval_counted(&x, None, &mut y, None, f);
        }
        let t = Instant::now();
        let reps = 20;
        for _ in 0..reps {
            std::hint::black_box(k.eval_counted(&x, None, &mut y, None, f));
        }
        let ns = t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9;
        println!("{name}: {ns:.3} ns/element");
    }
}
