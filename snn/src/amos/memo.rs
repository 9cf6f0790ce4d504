//! Two-input units on inputs that repeat.
//!
//! A unit's spikes are a function of its two inputs' bits, so a pair seen before needs no
//! evaluation, and the result is the same. Pairs repeat a lot where the unit multiplies
//! spike-coded values: the squeeze-and-excitation product takes a few hundred distinct decoded
//! activation levels of a channel times that channel's one gate value.
//!
//! [`UnitKernel::eval_counted_memo`] walks the elements in runs of one second-input value (a
//! channel, for an SE gate). First inputs are numbered as they appear (their *level*, found
//! by the bits in a small open-addressed table), and each second-input value has a row of
//! results indexed by level, kept across runs, calls and images. An SE product's activations
//! are a swish unit's few hundred decoded levels and its gates a sigmoid unit's few dozen, so
//! the rows are short, dense and recur across channels. Only pairs new to their row are
//! evaluated, together, by the vectorised kernel.

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

/// What [`UnitKernel::eval_counted_memo`] remembers: the levels of the first inputs seen (at
/// most [`PairMemo::MAX_LEVELS`]; once full, a call starts them over, and inputs past the
/// limit within a call are evaluated unremembered), and per second-input value a row of
/// results by level (at most [`PairMemo::MAX_ROWS`] rows, then they start over). Keep one per
/// unit and thread.
pub struct PairMemo {
    /// First-input bits → level, open addressed; `level == NO_LEVEL`: empty.
    levels: Box<[LevelSlot]>,
    level_count: usize,
    rows: HashMap<u32, Row>,
}

#[derive(Clone, Copy)]
struct LevelSlot {
    bits: u32,
    level: u32,
}

const NO_LEVEL: u32 = u32::MAX;

/// Results by level for one second-input value.
struct Row {
    cells: Box<[Cell]>,
    words: Box<[u64]>,
}

/// A pair's output and `state`: its spike count when known, [`UNKNOWN`], or [`PENDING`] plus
/// its index among the pairs being evaluated.
#[derive(Clone, Copy)]
struct Cell {
    y: f32,
    state: u32,
}

const UNKNOWN: u32 = u32::MAX;
const PENDING: u32 = 1 << 31;

impl PairMemo {
    /// Levels remembered: twice a swish unit's decoded outputs.
    const MAX_LEVELS: usize = 512;
    /// Level table slots (at most half full).
    const LEVEL_BITS: u32 = 10;
    /// Rows kept: a sigmoid unit decodes to a few dozen levels.
    const MAX_ROWS: usize = 256;

    pub fn new() -> Self {
        PairMemo {
            levels: vec![
                LevelSlot {
                    bits: 0,
                    level: NO_LEVEL
                };
                1 << Self::LEVEL_BITS
            ]
            .into_boxed_slice(),
            level_count: 0,
            rows: HashMap::new(),
        }
    }

    /// Forgets every level (and so every row).
    fn clear(&mut self) {
        self.levels.iter_mut().for_each(|s| s.level = NO_LEVEL);
        self.level_count = 0;
        self.rows.clear();
    }

    /// The level of first input `bits`, numbered now if new; None when the levels are full.
    #[inline(always)]
    fn level(levels: &mut [LevelSlot], count: &mut usize, bits: u32) -> Option<usize> {
        let mask = levels.len() - 1;
        let mut i = (bits.wrapping_mul(0x9E37_79B1) >> (32 - Self::LEVEL_BITS)) as usize;
        loop {
            let slot = &mut levels[i];
            if slot.level == NO_LEVEL {
                if *count == Self::MAX_LEVELS {
                    return None;
                }
                *slot = LevelSlot {
                    bits,
                    level: *count as u32,
                };
                *count += 1;
                return Some(*count - 1);
            }
            if slot.bits == bits {
                return Some(slot.level as usize);
            }
            // At most half the slots are taken, so an empty one comes.
            i = (i + 1) & mask;
        }
    }

    /// The row of second input `b`, all unknown if new.
    fn row(rows: &mut HashMap<u32, Row>, b: f32) -> &mut Row {
        if rows.len() >= Self::MAX_ROWS && !rows.contains_key(&b.to_bits()) {
            rows.clear();
        }
        rows.entry(b.to_bits()).or_insert_with(|| Row {
            cells: vec![
                Cell {
                    y: 0.0,
                    state: UNKNOWN
                };
                Self::MAX_LEVELS
            ]
            .into_boxed_slice(),
            words: vec![0; Self::MAX_LEVELS].into_boxed_slice(),
        })
    }
}

impl Row {
    /// Outputs (and spike words, when given) of elements whose cells at `levels` are all
    /// known; returns their spikes and synaptic operations (`fanout` as in
    /// [`UnitKernel::eval_counted`]).
    fn known(
        &self,
        levels: &[u32],
        y: &mut [f32],
        z: Option<&mut [u64]>,
        fanout: &[u32],
    ) -> (u64, u64) {
        let (mut spikes, mut synops) = (0u64, 0u64);
        for (i, (&l, y)) in levels.iter().zip(y.iter_mut()).enumerate() {
            let cell = self.cells[l as usize];
            *y = cell.y;
            spikes += cell.state as u64;
            synops += cell.state as u64 * fanout.get(i).copied().unwrap_or(0) as u64;
        }
        if let Some(z) = z {
            for (z, &l) in z.iter_mut().zip(levels) {
                *z = self.words[l as usize];
            }
        }
        (spikes, synops)
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
        if memo.level_count == PairMemo::MAX_LEVELS {
            memo.clear();
        }
        // Elements whose levels are found before their cells are read.
        const CHUNK: usize = 256;
        let (mut spikes, mut synops) = (0u64, 0u64);
        // Pairs to evaluate (with their level, if remembered), and the elements waiting for
        // each (by its index there).
        let (mut todo_x, mut todo_x2) = (Vec::new(), Vec::new());
        let mut todo_level: Vec<Option<usize>> = Vec::new();
        let mut waiting: Vec<(usize, u32)> = Vec::new();
        let mut run = |range: std::ops::Range<usize>, b: f32, memo: &mut PairMemo| {
            let PairMemo {
                levels,
                level_count,
                rows,
            } = memo;
            let row = PairMemo::row(rows, b);
            for start in range.clone().step_by(CHUNK) {
                let chunk = start..(start + CHUNK).min(range.end);
                // First every element's level (no chain from one element to the next), then
                // the cells: all known, the common case, in a tight loop.
                let mut found = [NO_LEVEL; CHUNK];
                let mut all_known = true;
                for (f, e) in found.iter_mut().zip(chunk.clone()) {
                    let level = PairMemo::level(levels, level_count, x[e].to_bits());
                    *f = level.map_or(NO_LEVEL, |l| l as u32);
                    all_known &= level.is_some_and(|l| row.cells[l].state < PENDING);
                }
                let found = &found[..chunk.len()];
                if all_known {
                    let fan =
                        fanout.get(chunk.start.min(fanout.len())..chunk.end.min(fanout.len()));
                    let words = z.as_deref_mut().map(|z| &mut z[chunk.clone()]);
                    let (s, o) =
                        row.known(found, &mut y[chunk.clone()], words, fan.unwrap_or_default());
                    spikes += s;
                    synops += o;
                    continue;
                }
                for (&f, e) in found.iter().zip(chunk) {
                    let level = (f != NO_LEVEL).then_some(f as usize);
                    let state = level.map_or(UNKNOWN, |l| row.cells[l].state);
                    if state < PENDING {
                        let l = level.unwrap_or_default();
                        y[e] = row.cells[l].y;
                        if let Some(z) = z.as_deref_mut() {
                            z[e] = row.words[l];
                        }
                        spikes += state as u64;
                        synops += state as u64 * fanout.get(e).copied().unwrap_or(0) as u64;
                        continue;
                    }
                    let index = if state == UNKNOWN {
                        todo_x.push(x[e]);
                        todo_x2.push(b);
                        todo_level.push(level);
                        let index = todo_x.len() as u32 - 1;
                        if let Some(l) = level {
                            row.cells[l].state = PENDING + index;
                        }
                        index
                    } else {
                        state - PENDING
                    };
                    waiting.push((e, index));
                }
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
        // Remember the results. Every cell marked pending above is written here: its row (or
        // the row that replaced it, if the rows started over) gets the result.
        for (i, (&b, level)) in todo_x2.iter().zip(todo_level).enumerate() {
            if let Some(l) = level {
                let row = PairMemo::row(&mut memo.rows, b);
                row.cells[l] = Cell {
                    y: ys[i],
                    state: words[i].count_ones(),
                };
                row.words[l] = words[i];
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
