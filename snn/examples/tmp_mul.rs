use amos_snn::amos::{PairMemo, SecondInput, UnitKernel};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let model = amos_snn::model_file::read_file(path.as_ref()).unwrap();
    let p = model
        .unit_params
        .into_iter()
        .find(|p| p.unit.is_two_input())
        .unwrap();
    let [lo, hi] = p.range;
    let [lo2, hi2] = p.range2.unwrap();
    const N: usize = 1 << 20;
    let spread = |lo: f32, hi: f32, i: usize, n: usize| {
        let pad = (hi - lo) * 0.25;
        (lo - pad) + (hi - lo + 2.0 * pad) * ((i * 7919) % n) as f32 / n as f32
    };
    let x: Vec<f32> = (0..N).map(|i| spread(lo, hi, i, 250)).collect();
    let gates: Vec<f32> = (0..N / 196 + 1).map(|i| spread(lo2, hi2, i, 50)).collect();
    let fanout: Vec<u32> = (0..N as u32).map(|i| 9 + i % 3).collect();
    let kernel = UnitKernel::new(p.unit.clone());
    let mut y = vec![0.0f32; N];
    let mut memo = PairMemo::new();
    for _ in 0..40 {
        let t = std::time::Instant::now();
        std::hint::black_box(kernel.eval_counted_memo(
            &x,
            SecondInput::Runs {
                values: &gates,
                run: 196,
            },
            &mut y,
            None,
            &fanout,
            &mut memo,
        ));
        if std::env::var("V").is_ok() {
            eprintln!("{:.3}", t.elapsed().as_secs_f64() * 1e9 / N as f64);
        }
    }
}
