//! A one-input unit as the step function it is: the spikes of a unit with one input change
//! only at finitely many input values, so a sorted list of those values and the spikes
//! between them evaluate it by a binary search, whatever its K and however dense its
//! inhibition.
//!
//! The list is exact, found once from the definition ([`AmosUnit::spikes`]): given the
//! spikes of neurons 0..i−1 (constant on an input interval), neuron i's potential
//! `((c_i·x − h_ij…) − t_i)` is monotone in x, because rounding is monotone, so whether it
//! fires changes at most once on the interval, at an input found by bisection over the
//! ordered floats. Splitting interval by interval, neuron by neuron, gives every change of
//! the spike pattern. Inputs that are not finite are evaluated by the definition.

use super::unit::AmosUnit;

/// Most intervals a unit is tabulated with; a unit with more keeps the general kernel.
const MAX_INTERVALS: usize = 1024;

/// The spike pattern and output of a one-input unit on each interval of its input.
#[derive(Clone, Debug)]
pub struct Intervals {
    /// `bounds[j]`: the least input of interval j + 1 (interval 0 starts at −∞), ascending,
    /// padded with +∞ to a power of two.
    bounds: Vec<f32>,
    /// Per interval: the spike word, its spike count and the decoded output.
    words: Vec<u64>,
    spikes: Vec<u32>,
    outputs: Vec<f32>,
}

/// The position of a float in the order of the floats (−0 just below +0).
fn order(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
}

/// The float at a position of [`order`].
fn from_order(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7FFF_FFFF } else { !k })
}

/// Whether neuron `i` fires at input `x` when neurons 0..i−1 fired as in `prefix`, computed
/// as the definition computes it.
fn fires(unit: &AmosUnit, i: usize, prefix: u64, x: f32) -> bool {
    let mut v = unit.c[i] * x;
    let row = i * i.saturating_sub(1) / 2;
    let mut fired = prefix;
    while fired != 0 {
        let j = fired.trailing_zeros() as usize;
        v -= unit.h[row + j];
        fired &= fired - 1;
    }
    v - unit.t[i] >= 0.0
}

impl Intervals {
    /// The intervals of a valid one-input unit, or `None` for a two-input unit or one with
    /// more than [`MAX_INTERVALS`].
    pub fn new(unit: &AmosUnit) -> Option<Intervals> {
        if unit.is_two_input() || unit.validate().is_err() {
            return None;
        }
        // (first input position, spike word) per interval, ascending.
        let mut found: Vec<(u32, u64)> = Vec::new();
        // Depth first, lower half first: (lo, hi, neuron, spikes of the earlier neurons).
        let mut stack = vec![(order(-f32::MAX), order(f32::MAX), 0usize, 0u64)];
        while let Some((lo, hi, i, prefix)) = stack.pop() {
            if i == unit.k() {
                if found.len() == MAX_INTERVALS {
                    return None;
                }
                found.push((lo, prefix));
                continue;
            }
            let fire = |k: u32| fires(unit, i, prefix, from_order(k));
            let (at_lo, at_hi) = (fire(lo), fire(hi));
            if at_lo == at_hi {
                stack.push((lo, hi, i + 1, prefix | (at_lo as u64) << i));
                continue;
            }
            // The first position that decides as `hi` does.
            let (mut a, mut b) = (lo, hi);
            while b - a > 1 {
                let mid = a + (b - a) / 2;
                if fire(mid) == at_hi {
                    b = mid;
                } else {
                    a = mid;
                }
            }
            stack.push((b, hi, i + 1, prefix | (at_hi as u64) << i));
            stack.push((lo, a, i + 1, prefix | (at_lo as u64) << i));
        }
        let size = found.len().next_power_of_two();
        let mut bounds: Vec<f32> = found[1..].iter().map(|&(k, _)| from_order(k)).collect();
        // A bound at +0 would put −0 (its predecessor, with the same spikes) past it under
        // float comparison; the definition never separates them, but check.
        if bounds.iter().any(|b| b.to_bits() == 0) {
            return None;
        }
        bounds.resize(size, f32::INFINITY);
        let words: Vec<u64> = found.iter().map(|&(_, w)| w).collect();
        let table = Intervals {
            bounds,
            spikes: words.iter().map(|w| w.count_ones()).collect(),
            outputs: words.iter().map(|&w| unit.decode(w)).collect(),
            words,
        };
        // Both sides of every bound, and the extremes, against the definition.
        let checks = found[1..]
            .iter()
            .flat_map(|&(k, _)| [k, k - 1])
            .chain([order(-f32::MAX), order(f32::MAX)]);
        for k in checks {
            let x = from_order(k);
            if table.words[table.interval(x)] != unit.spikes(x, 0.0) {
                return None;
            }
        }
        Some(table)
    }

    /// Intervals of the input.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The interval of a finite input: the number of bounds at or below it.
    fn interval(&self, x: f32) -> usize {
        let mut j = 0;
        let mut half = self.bounds.len() / 2;
        while half > 0 {
            if self.bounds[j + half - 1] <= x {
                j += half;
            }
            half /= 2;
        }
        j
    }

    /// Like [`super::UnitKernel::eval_counted`]: outputs into `y`, spike words into `z` when
    /// given; returns the spikes and their synaptic operations.
    pub fn eval_counted(
        &self,
        unit: &AmosUnit,
        x: &[f32],
        y: &mut [f32],
        z: Option<&mut [u64]>,
        fanout: &[u32],
    ) -> (u64, u64) {
        search(self, unit, x, y, z, fanout)
    }
}

/// The binary search over blocks of elements, branch-free. Compiled for AVX2 too (gathers),
/// chosen at run time; only comparisons and table reads, so the same results everywhere.
#[multiversion::multiversion(targets("x86_64+avx2+fma+popcnt"))]
fn search(
    t: &Intervals,
    unit: &AmosUnit,
    x: &[f32],
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    const BLOCK: usize = 32;
    let size = t.bounds.len();
    let mask = size - 1;
    let last = t.words.len() - 1;
    let (mut spikes, mut synops) = (0u64, 0u64);
    for (b, (xs, ys)) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)).enumerate() {
        let n = xs.len();
        let first = b * BLOCK;
        let mut xin = [0.0f32; BLOCK];
        xin[..n].copy_from_slice(xs);
        // 32-bit positions: twice as many per vector as `usize`.
        let mut j = [0u32; BLOCK];
        let mut half = size / 2;
        while half > 0 {
            for e in 0..BLOCK {
                let bound = t.bounds[(j[e] as usize + half - 1) & mask];
                j[e] += if bound <= xin[e] { half as u32 } else { 0 };
            }
            half /= 2;
        }
        let mut counts = [0u32; BLOCK];
        for e in 0..n {
            let k = (j[e] as usize).min(last);
            ys[e] = t.outputs[k];
            counts[e] = t.spikes[k];
        }
        let finite = xs.iter().fold(true, |all, v| all & v.is_finite());
        if let Some(z) = z.as_deref_mut() {
            for e in 0..n {
                z[first + e] = t.words[(j[e] as usize).min(last)];
            }
        }
        if !finite {
            // Inputs that are not finite: by the definition.
            for e in (0..n).filter(|&e| !xs[e].is_finite()) {
                let (word, out) = unit.eval(xs[e], 0.0);
                (ys[e], counts[e]) = (out, word.count_ones());
                if let Some(z) = z.as_deref_mut() {
                    z[first + e] = word;
                }
            }
        }
        spikes += counts[..n].iter().map(|&c| c as u64).sum::<u64>();
        let fan = fanout.get(first.min(fanout.len())..(first + n).min(fanout.len()));
        for (&c, &f) in counts.iter().zip(fan.unwrap_or_default()) {
            synops += c as u64 * f as u64;
        }
    }
    (spikes, synops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_unit(k: usize, seed: u64, inhibition: f32) -> AmosUnit {
        let mut state = seed;
        let mut rand = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let mut u = AmosUnit::zeros(k, false);
        u.c = (0..k).map(|_| rand() * 2.0).collect();
        u.c[1] = 0.0; // a neuron blind to its input
        u.t = (0..k).map(|_| rand() * 3.0).collect();
        u.h = (0..k * (k - 1) / 2).map(|_| rand() * inhibition).collect();
        u.d = (0..k).map(|_| rand()).collect();
        u.o = rand();
        u
    }

    /// Every kind of input: a dense sweep, random bit patterns across all exponents, zeros
    /// of both signs, subnormals, the extremes, infinities, NaN, and both sides of every bound.
    #[test]
    fn intervals_give_the_definition_bit_for_bit() {
        let mut tabulated = 0;
        for (k, seed, inhibition) in [(8, 1, 0.5), (12, 2, 0.3), (12, 3, 2.0), (6, 4, 0.0)] {
            let unit = random_unit(k, seed, inhibition);
            let Some(table) = Intervals::new(&unit) else {
                continue;
            };
            tabulated += 1;
            let mut xs: Vec<f32> = (0..40_000).map(|i| -20.0 + i as f32 * 0.001).collect();
            let mut bits = seed;
            xs.extend((0..40_000).map(|_| {
                bits = bits.wrapping_mul(6364136223846793005).wrapping_add(1);
                f32::from_bits((bits >> 32) as u32)
            }));
            xs.extend([
                0.0,
                -0.0,
                f32::MIN_POSITIVE,
                -f32::MIN_POSITIVE,
                f32::from_bits(1),
                -f32::from_bits(1),
                f32::MAX,
                -f32::MAX,
                f32::INFINITY,
                -f32::INFINITY,
                f32::NAN,
            ]);
            for b in table.bounds.iter().filter(|b| b.is_finite()) {
                xs.extend([*b, b.next_down(), b.next_up()]);
            }
            let fanout: Vec<u32> = (0..xs.len() as u32 / 2).map(|i| i % 5).collect();
            let (mut y, mut z) = (vec![0.0; xs.len()], vec![0; xs.len()]);
            let counts = table.eval_counted(&unit, &xs, &mut y, Some(&mut z), &fanout);
            let (mut spikes, mut synops) = (0, 0);
            for (e, &x) in xs.iter().enumerate() {
                let (word, out) = unit.eval(x, 0.0);
                assert_eq!(
                    (z[e], y[e].to_bits()),
                    (word, out.to_bits()),
                    "K {k} at {x:e}"
                );
                spikes += word.count_ones() as u64;
                synops += word.count_ones() as u64 * *fanout.get(e).unwrap_or(&0) as u64;
            }
            assert_eq!(counts, (spikes, synops));
        }
        assert!(tabulated >= 3, "only {tabulated} units tabulated");
    }
}
