//! Two-input units on inputs that repeat.
//!
//! A unit's spikes are a function of its two inputs' bits, so a pair seen before needs no
//! evaluation, and the result is the same. Pairs repeat a lot where the unit multiplies
//! spike-coded values: the squeeze-and-excitation product takes a few hundred distinct decoded
//! activation levels of a channel times that channel's one gate value.
//!
//! [`UnitKernel::eval_counted_memo`] walks the elements in runs of one second-input value (a
//! channel, for an SE gate). Within a run a small table keyed by the first input's bits finds
//! the pair's result; a pair new to the run is looked up in a larger memo of pairs kept across
//! runs and calls, and only pairs new to both are evaluated, together, by the vectorised
//! kernel.

use super::unit::UnitKernel;

/// The second input of a two-input unit over the first input's elements.
#[derive(Clone, Copy, Debug)]
pub enum SecondInput<'a> {
    /// A value per element.
    Each(&'a [f32]),
    /// `values[i]` for elements `i·run .. (i + 1)·run`: a `[C, 1, 1]` gate against `[C, H, W]`.
    Runs { values: &'a [f32], run: usize },
}

/// What [`UnitKernel::eval_counted_memo`] remembers: the pairs of the current run by the
/// first input's bits, and recent pairs of any run. Direct-mapped by hashes, a newer entry
/// replacing an older one. Keep one per unit and image (or batch).
pub struct PairMemo {
    run: Vec<RunSlot>,
    /// The current run's tag: slots of other runs are stale.
    generation: u32,
    pairs: Vec<PairSlot>,
}

/// A first input's bits in the run tagged `generation`, and its pair's result index.
#[derive(Clone, Copy, Default)]
struct RunSlot {
    bits: u32,
    generation: u32,
    index: u32,
}

/// A pair's bits and its spikes and output (`key` None: empty).
#[derive(Clone, Copy, Default)]
struct PairSlot {
    key: Option<u64>,
    word: u64,
    y: f32,
}

/// A pair's result, as the elements of a call read it.
#[derive(Clone, Copy)]
struct Outcome {
    y: f32,
    spikes: u32,
    word: u64,
}

impl PairMemo {
    /// Run slots: 2^10 (12 KiB, in L1), more than a run's distinct activation levels.
    const RUN_BITS: u32 = 10;
    /// Pair slots: 2^16 (1.5 MiB), for pairs that recur across runs, calls and images:
    /// more than the distinct pairs of the SE products of the networks measured.
    const PAIR_BITS: u32 = 16;

    pub fn new() -> Self {
        PairMemo {
            run: vec![RunSlot::default(); 1 << Self::RUN_BITS],
            generation: 0,
            pairs: vec![PairSlot::default(); 1 << Self::PAIR_BITS],
        }
    }

    /// Starts a run: every run slot becomes stale.
    fn next_run(&mut self) {
        if self.generation == u32::MAX {
            self.run.fill(RunSlot::default());
            self.generation = 0;
        }
        self.generation += 1;
    }

    fn run_slot(bits: u32) -> usize {
        (bits.wrapping_mul(0x9E37_79B1) >> (32 - Self::RUN_BITS)) as usize
    }

    fn pair_key(x: f32, x2: f32) -> u64 {
        ((x.to_bits() as u64) << 32) | x2.to_bits() as u64
    }

    fn pair_slot(key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Self::PAIR_BITS)) as usize
    }
}

impl Default for PairMemo {
    fn default() -> Self {
        Self::new()
    }
}

impl UnitKernel {
    /// [`UnitKernel::eval_counted`] for a two-input unit, with `x2` given per element or in
    /// runs, remembering pairs in `memo` (see the module documentation). Bit-identical to
    /// evaluating every pair.
    pub fn eval_counted_memo(
        &self,
        x: &[f32],
        x2: SecondInput<'_>,
        y: &mut [f32],
        z: Option<&mut [u64]>,
        fanout: &[u32],
        memo: &mut PairMemo,
    ) -> (u64, u64) {
        // Per element, the index of its pair's outcome; the pairs to evaluate.
        let mut index = vec![0u32; x.len()];
        let mut outcomes: Vec<Outcome> = Vec::new();
        let (mut todo, mut todo_x, mut todo_x2) = (Vec::new(), Vec::new(), Vec::new());
        let mut run = |range: std::ops::Range<usize>, b: f32, memo: &mut PairMemo| {
            memo.next_run();
            let generation = memo.generation;
            for e in range {
                let bits = x[e].to_bits();
                let slot = &mut memo.run[PairMemo::run_slot(bits)];
                if slot.generation == generation && slot.bits == bits {
                    index[e] = slot.index;
                    continue;
                }
                let i = outcomes.len() as u32;
                let key = PairMemo::pair_key(x[e], b);
                let known = memo.pairs[PairMemo::pair_slot(key)];
                if known.key == Some(key) {
                    outcomes.push(Outcome {
                        y: known.y,
                        spikes: known.word.count_ones(),
                        word: known.word,
                    });
                } else {
                    outcomes.push(Outcome {
                        y: 0.0,
                        spikes: 0,
                        word: 0,
                    });
                    todo.push(i);
                    todo_x.push(x[e]);
                    todo_x2.push(b);
                }
                *slot = RunSlot {
                    bits,
                    generation,
                    index: i,
                };
                index[e] = i;
            }
        };
        match x2 {
            SecondInput::Runs { values, run: len } => {
                let len = len.max(1);
                for (r, &b) in values.iter().enumerate() {
                    let start = (r * len).min(x.len());
                    run(start..(start + len).min(x.len()), b, memo);
                }
            }
            SecondInput::Each(values) => {
                let mut start = 0;
                while start < x.len() {
                    let b = values[start];
                    let end = values[start..x.len()]
                        .iter()
                        .position(|v| v.to_bits() != b.to_bits())
                        .map_or(x.len(), |n| start + n);
                    run(start..end, b, memo);
                    start = end;
                }
            }
        }
        if !todo.is_empty() {
            let (mut ys, mut words) = (vec![0.0f32; todo.len()], vec![0u64; todo.len()]);
            self.eval_pairs(&todo_x, &todo_x2, &mut ys, &mut words);
            for (t, &i) in todo.iter().enumerate() {
                outcomes[i as usize] = Outcome {
                    y: ys[t],
                    spikes: words[t].count_ones(),
                    word: words[t],
                };
                let key = PairMemo::pair_key(todo_x[t], todo_x2[t]);
                memo.pairs[PairMemo::pair_slot(key)] = PairSlot {
                    key: Some(key),
                    word: words[t],
                    y: ys[t],
                };
            }
        }
        let (mut spikes, mut synops) = (0u64, 0u64);
        for (e, &i) in index.iter().enumerate() {
            let o = outcomes[i as usize];
            y[e] = o.y;
            spikes += o.spikes as u64;
            synops += o.spikes as u64 * fanout.get(e).copied().unwrap_or(0) as u64;
        }
        if let Some(z) = z {
            for (w, &i) in z.iter_mut().zip(&index) {
                *w = outcomes[i as usize].word;
            }
        }
        (spikes, synops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amos::AmosUnit;

    fn random_unit(k: usize, rand: &mut impl FnMut() -> f32) -> AmosUnit {
        let mut u = AmosUnit::zeros(k, true);
        u.c = (0..k).map(|_| rand() * 3.0).collect();
        u.c2 = Some((0..k).map(|_| rand() * 3.0).collect());
        u.t = (0..k).map(|_| rand()).collect();
        u.h = (0..k * (k - 1) / 2).map(|_| rand()).collect();
        u.d = (0..k).map(|_| rand()).collect();
        u
    }

    /// An SE product in runs and per element, twice over one memo; runs with more distinct
    /// values than the run table holds; pairs shared across runs; random pairs.
    #[test]
    fn remembered_pairs_give_the_definition_bit_for_bit() {
        let mut state = 11u64;
        let mut rand = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let u = random_unit(40, &mut rand);
        let kernel = UnitKernel::new(u.clone());
        let levels: Vec<f32> = (0..300).map(|_| rand() * 5.0).collect();
        // 40 channels of 400 elements (a few hundred levels each); every fourth channel has
        // the gate of the one before (pairs known from another run); then one channel of
        // 3000 random values, more than the run table's slots.
        let run = 400;
        let mut gates: Vec<f32> = (0..41)
            .map(|c| 0.05 * (c / 4 * 4 + (c % 4).min(2)) as f32)
            .collect();
        gates[40] = 0.5;
        let mut x: Vec<f32> = (0..40 * run).map(|i| levels[(i * 7919) % 300]).collect();
        x.extend((0..run).map(|_| rand() * 5.0));
        let mut each: Vec<f32> = (0..x.len()).map(|e| gates[e / run]).collect();
        // Per element: the same, then 5000 random pairs.
        let mut x_each = x.clone();
        x_each.extend((0..5000).map(|_| rand() * 5.0));
        each.extend((0..5000).map(|_| rand()));
        let cases = [
            (
                &x,
                SecondInput::Runs {
                    values: &gates,
                    run,
                },
            ),
            (&x_each, SecondInput::Each(&each)),
        ];
        for (x, x2) in cases {
            let form = match x2 {
                SecondInput::Each(_) => "per element",
                SecondInput::Runs { .. } => "in runs",
            };
            let fanout: Vec<u32> = (0..x.len() as u32 / 2).map(|i| i % 9).collect();
            let mut memo = PairMemo::new();
            for pass in 0..2 {
                // The second pass finds the first pass's pairs remembered.
                let (mut y, mut z) = (vec![0.0; x.len()], vec![0; x.len()]);
                let counts =
                    kernel.eval_counted_memo(x, x2, &mut y, Some(&mut z), &fanout, &mut memo);
                let (mut spikes, mut synops) = (0u64, 0u64);
                for e in 0..x.len() {
                    let b = match x2 {
                        SecondInput::Each(v) => v[e],
                        SecondInput::Runs { values, run } => values[e / run],
                    };
                    let (word, out) = u.eval(x[e], b);
                    assert_eq!(
                        (z[e], y[e].to_bits()),
                        (word, out.to_bits()),
                        "element {e}, pass {pass}, {form}"
                    );
                    spikes += word.count_ones() as u64;
                    synops += word.count_ones() as u64 * *fanout.get(e).unwrap_or(&0) as u64;
                }
                assert_eq!(counts, (spikes, synops), "{form}");
            }
        }
    }
}
