//! Two-input units on inputs that repeat.
//!
//! A unit's spikes are a function of its two inputs' bits, so a pair seen before needs no
//! evaluation, and the result is the same. Pairs repeat a lot where the unit multiplies
//! spike-coded values: the squeeze-and-excitation product takes a few hundred distinct decoded
//! activation levels of a channel times that channel's one gate value.
//!
//! [`UnitKernel::eval_counted_memo`] walks the elements in runs of one second-input value (a
//! channel, for an SE gate). Each second-input value has a row of its own, kept across runs,
//! calls and images: a small open-addressed table from the first input's bits to the pair's
//! spikes and output. A channel's row stays in L1 while its run is walked, and an SE gate
//! takes a few dozen decoded levels, so rows recur across channels. Only pairs new to their
//! row are evaluated, together, by the vectorised kernel.

use std::collections::HashMap;

use super::unit::UnitKernel;

/// The second input of a two-input unit over the first input's elements.
#[derive(Clone, Copy, Debug)]
pub enum SecondInput<'a> {
    /// A value per element.
    Each(&'a [f32]),
    /// `values[i]` for elements `i·run .. (i + 1)·run`: a `[C, 1, 1]` gate against `[C, H, W]`.
    Runs { values: &'a [f32], run: usize },
}

/// What [`UnitKernel::eval_counted_memo`] remembers: per second-input value (by its bits), a
/// row of first inputs and their results. At most [`PairMemo::MAX_ROWS`] rows: past that
/// (second inputs that are not a few levels) the rows start over. Keep one per unit and
/// thread.
pub struct PairMemo {
    rows: HashMap<u32, Box<[Entry]>>,
}

/// A first input's bits and its pair's result in a row: `state` [`EMPTY`], [`KNOWN`], or the
/// index of the pair among those being evaluated.
#[derive(Clone, Copy)]
struct Entry {
    bits: u32,
    state: u32,
    y: f32,
    spikes: u32,
    word: u64,
}

const EMPTY: u32 = u32::MAX;
const KNOWN: u32 = u32::MAX - 1;

impl Entry {
    const VACANT: Entry = Entry {
        bits: 0,
        state: EMPTY,
        y: 0.0,
        spikes: 0,
        word: 0,
    };
}

impl PairMemo {
    /// Entries per row: 2^9 (12 KiB), twice a swish unit's decoded levels.
    const ROW_BITS: u32 = 9;
    /// Slots probed for a first input before the first of them is replaced.
    const PROBES: usize = 8;
    /// Rows kept: a sigmoid unit decodes to a few dozen levels.
    const MAX_ROWS: usize = 256;

    pub fn new() -> Self {
        PairMemo {
            rows: HashMap::new(),
        }
    }

    /// The row of second input `b`, made empty if new.
    fn row(&mut self, b: f32) -> &mut [Entry] {
        if self.rows.len() >= Self::MAX_ROWS && !self.rows.contains_key(&b.to_bits()) {
            self.rows.clear();
        }
        self.rows
            .entry(b.to_bits())
            .or_insert_with(|| vec![Entry::VACANT; 1 << Self::ROW_BITS].into_boxed_slice())
    }

    /// Where first input `bits` is in `row`, or where it goes (an empty slot, else the first
    /// probed).
    #[inline(always)]
    fn find(row: &[Entry], bits: u32) -> (usize, bool) {
        let mask = row.len() - 1;
        let home = (bits.wrapping_mul(0x9E37_79B1) >> (32 - Self::ROW_BITS)) as usize;
        for p in 0..Self::PROBES {
            let i = (home + p) & mask;
            let entry = &row[i];
            if entry.state == EMPTY {
                return (i, false);
            }
            if entry.bits == bits {
                return (i, true);
            }
        }
        (home, false)
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
        mut z: Option<&mut [u64]>,
        fanout: &[u32],
        memo: &mut PairMemo,
    ) -> (u64, u64) {
        let (mut spikes, mut synops) = (0u64, 0u64);
        // Pairs to evaluate, and the elements waiting for each (by its index there).
        let (mut todo_x, mut todo_x2) = (Vec::new(), Vec::new());
        let mut waiting: Vec<(usize, u32)> = Vec::new();
        let mut run = |range: std::ops::Range<usize>, b: f32, memo: &mut PairMemo| {
            let row = memo.row(b);
            for e in range {
                let bits = x[e].to_bits();
                let (i, found) = PairMemo::find(row, bits);
                let entry = &mut row[i];
                if !found {
                    todo_x.push(x[e]);
                    todo_x2.push(b);
                    *entry = Entry {
                        bits,
                        state: todo_x.len() as u32 - 1,
                        ..Entry::VACANT
                    };
                }
                if entry.state != KNOWN {
                    waiting.push((e, entry.state));
                    continue;
                }
                y[e] = entry.y;
                if let Some(z) = z.as_deref_mut() {
                    z[e] = entry.word;
                }
                spikes += entry.spikes as u64;
                synops += entry.spikes as u64 * fanout.get(e).copied().unwrap_or(0) as u64;
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
        if todo_x.is_empty() {
            return (spikes, synops);
        }
        let (mut ys, mut words) = (vec![0.0f32; todo_x.len()], vec![0u64; todo_x.len()]);
        self.eval_pairs(&todo_x, &todo_x2, &mut ys, &mut words);
        for (e, index) in waiting {
            let i = index as usize;
            y[e] = ys[i];
            if let Some(z) = z.as_deref_mut() {
                z[e] = words[i];
            }
            let s = words[i].count_ones() as u64;
            spikes += s;
            synops += s * fanout.get(e).copied().unwrap_or(0) as u64;
        }
        // Remember the results (a pair whose slot was taken since is simply stored again).
        for (i, (&a, &b)) in todo_x.iter().zip(&todo_x2).enumerate() {
            let row = memo.row(b);
            let bits = a.to_bits();
            let (slot, _) = PairMemo::find(row, bits);
            row[slot] = Entry {
                bits,
                state: KNOWN,
                y: ys[i],
                spikes: words[i].count_ones(),
                word: words[i],
            };
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

    /// Inputs one ulp apart, on both sides of a threshold, in one run: each must be
    /// remembered by all its bits.
    #[test]
    fn neighbouring_inputs_are_remembered_apart() {
        let v = f32::from_bits(0x3F80_0001);
        let mut u = AmosUnit::zeros(2, true);
        u.c = vec![1.0, 1.0];
        u.c2 = Some(vec![0.0, 0.0]);
        u.t = vec![v, 2.0];
        u.d = vec![1.0, 1.0];
        let kernel = UnitKernel::new(u.clone());
        let x: Vec<f32> = (0..64)
            .map(|i| if i % 3 == 0 { v.next_down() } else { v })
            .collect();
        let mut memo = PairMemo::new();
        let mut y = vec![0.0; x.len()];
        let values = [0.5];
        let x2 = SecondInput::Runs {
            values: &values,
            run: x.len(),
        };
        for _ in 0..2 {
            kernel.eval_counted_memo(&x, x2, &mut y, None, &[], &mut memo);
            for (e, &xe) in x.iter().enumerate() {
                assert_eq!(y[e].to_bits(), u.eval(xe, 0.5).1.to_bits(), "element {e}");
            }
        }
        assert_ne!(u.eval(v, 0.5), u.eval(v.next_down(), 0.5));
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
