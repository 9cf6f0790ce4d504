//! Nanoseconds per element of the unit kernels, one thread: the closed-form ReLU6 unit
//! (K = 10) and every unit of a converted model if one is given.
//!
//!     cargo run --release -p amos-snn --example unit_speed [MODEL.amos]
//!
//! Inputs are spread evenly over each unit's input range (widened by a quarter on each side);
//! a two-input unit's inputs take 250 levels, its second input one of 50 levels per run of 196
//! elements, as an SE product's decoded inputs do.

use amos_snn::amos::closed_form::{self, Rounding};
use amos_snn::amos::{AmosUnit, PairMemo, SecondInput, UnitKernel};
use std::time::Instant;

const ELEMENTS: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut units = vec![(
        "relu6 K=10 (closed form)".to_string(),
        closed_form::relu6(10, Rounding::Nearest),
        [0.0, 6.0],
        None,
    )];
    if let Some(path) = std::env::args().nth(1) {
        let model = amos_snn::model_file::read_file(path.as_ref())?;
        for p in model.unit_params {
            let name = format!("{:?} K={} ({})", p.gate, p.unit.k(), p.method);
            units.push((name, p.unit, p.range, p.range2));
        }
    }
    for (name, unit, range, range2) in units {
        let ns = time(&unit, range, range2);
        println!("{name:40} {ns:6.3} ns per element");
    }
    Ok(())
}

/// Median of five timed passes over [`ELEMENTS`] inputs, after one warm-up pass.
fn time(unit: &AmosUnit, [lo, hi]: [f32; 2], range2: Option<[f32; 2]>) -> f64 {
    let spread = |lo: f32, hi: f32, i: usize, n: usize| {
        let pad = (hi - lo) * 0.25;
        (lo - pad) + (hi - lo + 2.0 * pad) * ((i * 7919) % n) as f32 / n as f32
    };
    // A two-input unit multiplies decoded outputs: a few hundred levels.
    let levels = if range2.is_some() { 250 } else { ELEMENTS };
    let x: Vec<f32> = (0..ELEMENTS).map(|i| spread(lo, hi, i, levels)).collect();
    let gates: Vec<f32> = match range2 {
        Some([lo2, hi2]) => (0..ELEMENTS / 196 + 1)
            .map(|i| spread(lo2, hi2, i, 50))
            .collect(),
        None => Vec::new(),
    };
    let fanout: Vec<u32> = (0..ELEMENTS as u32).map(|i| 9 + i % 3).collect();
    let kernel = UnitKernel::new(unit.clone());
    let mut y = vec![0.0f32; ELEMENTS];
    let mut memo = PairMemo::new();
    let mut pass = || {
        let start = Instant::now();
        if unit.is_two_input() {
            let x2 = SecondInput::Runs {
                values: &gates,
                run: 196,
            };
            std::hint::black_box(
                kernel.eval_counted_memo(&x, x2, &mut y, None, &fanout, &mut memo),
            );
        } else {
            std::hint::black_box(kernel.eval_counted(&x, None, &mut y, None, &fanout));
        }
        start.elapsed().as_secs_f64() * 1e9 / ELEMENTS as f64
    };
    pass();
    let mut times: Vec<f64> = (0..5).map(|_| pass()).collect();
    times.sort_by(f64::total_cmp);
    times[2]
}
