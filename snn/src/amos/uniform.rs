//! Closed-form units as the uniform quantisers they are.
//!
//! A binary-expansion unit (ReLU, ReLU6, identity: [`super::closed_form`]) is an
//! analogue-to-digital converter: its spike pattern, read with neuron 0 as the most
//! significant bit, is the number of the input's interval, and its 2^K − 1 bounds lie on a
//! line to within a few rounding errors. So the interval of x is `⌊x·scale + shift⌋` except
//! close to an integer, which takes one fused multiply-add instead of K comparisons, and the
//! spike count is the interval's bit count.
//!
//! Exactness is proved at construction, not assumed: the bounds (found exactly from the
//! definition by [`Intervals`]) must follow the line to within μ, the kernel's `fma` rounds
//! by at most ε, and any input whose `x·scale + shift` comes within μ + ε of an integer is
//! evaluated by the definition instead. Outside that margin the interval can only be the one
//! the formula gives (see [`Uniform::new`]). The output is then summed from the spike bits
//! in the definition's order (`o + Σ d_i` over the fired neurons, ascending, the first five
//! neurons' partial sums read from a table), so results are bit-identical.

use super::intervals::Intervals;
use super::unit::AmosUnit;

/// Neurons whose partial sums of `d` are tabulated: 2^5 = 32 sums, the two registers one
/// AVX-512 permutation reads.
const TABLE_BITS: usize = 5;

/// A unit whose intervals are uniform, with what its kernel reads.
#[derive(Clone, Debug)]
pub struct Uniform {
    /// `t = x·scale + shift` (one fused multiply-add): bound j lies within μ of j on this
    /// line (see [`Uniform::new`]).
    scale: f32,
    shift: f32,
    /// The last interval plus one half: `t` is clamped to [0.5, top].
    top: f32,
    /// Fractions of `t` in `[near, far]` are decided; others go to the definition.
    near: f32,
    far: f32,
    k: usize,
    /// `Σ d_i` from +0 over the first `min(K, 5)` neurons fired in each pattern of them, in
    /// the definition's order (pattern read with neuron 0 as its top bit).
    prefix: [f32; 1 << TABLE_BITS],
    d: Vec<f32>,
    o: f32,
}

impl Uniform {
    /// The quantiser of a one-input unit, if its intervals are those of a K-bit uniform code
    /// (2 ≤ K ≤ 10): interval j's spike pattern is j read from neuron 0 down, and the bounds
    /// lie close enough to a line that the margin stays under a quarter.
    ///
    /// Why the formula is exact outside the margin: let `τ(x) = x·scale + shift` exactly
    /// (increasing in x), `|τ(b_j) − j| ≤ μ` for every bound b_j (interval j is
    /// `[b_j, b_{j+1})`), and `t = fma(x, scale, shift)` within ε of τ(x) wherever
    /// |τ(x)| < 2^e (the next power of two past N + 1, N = 2^K − 1). If `t` has integer
    /// part j and fraction in `[m, 1 − m]` with m > μ + ε, then `τ(x) ≥ j + m − ε > τ(b_j)`
    /// and `τ(x) ≤ j + 1 − m + ε < τ(b_{j+1})`, so x lies in interval j. A clamped `t`
    /// below 0.5 has `τ(x) < 0.5 + ε < τ(b_1)` (interval 0); above N + 0.5, `τ(x) > τ(b_N)`
    /// (interval N); where |τ| ≥ 2^e, so is |t| (rounding is monotone), past either end.
    /// NaN clamps to 0.5 and ±∞ to the ends; what the definition gives for those is checked
    /// here too.
    pub fn new(unit: &AmosUnit) -> Option<Uniform> {
        let k = unit.k();
        if !(2..=10).contains(&k) || unit.is_two_input() {
            return None;
        }
        let intervals = Intervals::new(unit)?;
        let last = (1usize << k) - 1;
        let bounds = intervals.bounds();
        let pattern = |j: usize| -> u64 {
            (0..k)
                .filter(|&i| j >> (k - 1 - i) & 1 == 1)
                .fold(0, |w, i| w | 1 << i)
        };
        if intervals.len() != last + 1
            || (0..=last).any(|j| intervals.word(j) != pattern(j))
            || bounds.len() < last
        {
            return None;
        }
        let (first, end) = (bounds[0] as f64, bounds[last - 1] as f64);
        let scale = ((last - 1) as f64 / (end - first)) as f32;
        let shift = (1.0 - scale as f64 * first) as f32;
        if !(scale.is_finite() && scale > 0.0 && shift.is_finite()) {
            return None;
        }
        // μ: products of two f32 are exact in f64; the sums' rounding (2^−53 relative) is
        // covered by the slack below.
        let mu = bounds[..last]
            .iter()
            .enumerate()
            .map(|(j, &b)| (b as f64 * scale as f64 + shift as f64 - (j + 1) as f64).abs())
            .fold(0.0f64, f64::max);
        let e = (last as f64 + 2.0).log2().ceil() as i32;
        let epsilon = 2f64.powi(e - 24);
        let near = ((mu + epsilon) * (1.0 + 1e-9) + 1e-12) as f32;
        let near = if (near as f64) <= mu + epsilon {
            near.next_up()
        } else {
            near
        };
        if near.is_nan() || near >= 0.25 {
            return None;
        }
        let far = (1.0 - near as f64) as f32;
        let far = if far as f64 > 1.0 - near as f64 {
            far.next_down()
        } else {
            far
        };
        let in_table = k.min(TABLE_BITS);
        let mut prefix = [0.0f32; 1 << TABLE_BITS];
        for (p, sum) in prefix.iter_mut().enumerate().take(1 << in_table) {
            let mut acc = 0.0f32;
            for i in 0..in_table {
                if p >> (in_table - 1 - i) & 1 == 1 {
                    acc += unit.d[i];
                }
            }
            *sum = acc;
        }
        let q = Uniform {
            scale,
            shift,
            top: last as f32 + 0.5,
            near,
            far,
            k,
            prefix,
            d: unit.d.clone(),
            o: unit.o,
        };
        // The clamps' answers for NaN and ±∞ must be the definition's.
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let (word, y) = unit.eval(x, 0.0);
            let j = q.interval(x)?;
            if word != pattern(j) || y.to_bits() != q.output(j).to_bits() {
                return None;
            }
        }
        Some(q)
    }

    /// Neurons of the unit.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The interval of x by the formula, or `None` within the margin of a bound (the
    /// kernel's computation, one element at a time).
    pub fn interval(&self, x: f32) -> Option<usize> {
        let t = x.mul_add(self.scale, self.shift);
        // `max` then `min` as the vector instructions order them: NaN becomes 0.5.
        let t = if t > 0.5 { t } else { 0.5 };
        let t = if t < self.top { t } else { self.top };
        let j = t as i32;
        let f = t - j as f32;
        (f >= self.near && f <= self.far).then_some(j as usize)
    }

    /// The output of interval j: `o + Σ d_i` over its fired neurons, as the kernel sums it.
    pub fn output(&self, j: usize) -> f32 {
        let rest = self.k - self.k.min(TABLE_BITS);
        let mut acc = self.prefix[j >> rest];
        for i in (self.k - rest)..self.k {
            if j >> (self.k - 1 - i) & 1 == 1 {
                acc += self.d[i];
            }
        }
        self.o + acc
    }
}

/// Elements per block of the AVX-512 kernel: four vectors.
const BLOCK: usize = 64;

/// Vectors per block.
const V: usize = BLOCK / 16;

/// Spikes and synaptic operations of the elements evaluated.
type Counts = (u64, u64);

/// [`Uniform`]'s units over `x` by the AVX-512 quantiser, whole blocks of [`BLOCK`]
/// elements; the inputs it leaves undecided (within the margin of a bound), the block where
/// `fanout` ends, and whatever is past the last whole block go to `definition`, which
/// evaluates a run of elements with the fanouts given (of the same length or shorter, as
/// [`super::UnitKernel::eval_counted`]'s). With `x` `None`, the inputs are `y`'s own values,
/// rewritten in place (each block read before it is written; `definition` gets copies).
/// The CPU must have AVX-512F and VPOPCNTDQ.
#[cfg(target_arch = "x86_64")]
pub(super) fn eval_avx512(
    q: &Uniform,
    x: Option<&[f32]>,
    y: &mut [f32],
    fanout: &[u32],
    definition: impl Fn(&[f32], &mut [f32], &[u32]) -> Counts,
) -> Counts {
    assert!(
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
    );
    let len = y.len();
    assert!(x.is_none_or(|x| x.len() == len));
    // From here on `y` is only reached through `y_ptr` (and `x`, in place, through it too).
    let y_ptr = y.as_mut_ptr();
    let x_ptr = x.map_or(y_ptr.cast_const(), <[f32]>::as_ptr);
    let whole = len / BLOCK * BLOCK;
    // Blocks with a fanout for every element, the one where the fanouts end, the rest.
    let covered = (fanout.len() / BLOCK * BLOCK).min(whole);
    let straddling = if covered < whole && fanout.len() > covered {
        covered + BLOCK
    } else {
        covered
    };
    let mut counts = [
        (0, covered, Some(&fanout[..covered])),
        (straddling, whole, None),
    ]
    .into_iter()
    .map(|(from, to, fanout)| {
        let undecided = |e: usize, x: f32, y: &mut [f32]| {
            let fan = fanout.and_then(|f| f.get(e..e + 1)).unwrap_or_default();
            definition(&[x], y, fan)
        };
        // SAFETY: from..to lies inside both operands (len each); the features were checked.
        unsafe {
            blocks(
                q,
                x_ptr.add(from),
                y_ptr.add(from),
                to - from,
                fanout,
                undecided,
            )
        }
    })
    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    for (from, to) in [(covered, straddling), (whole, len)] {
        // At most a block: its inputs copied first, in case they are the outputs.
        let mut input = [0.0f32; BLOCK];
        let input = &mut input[..to - from];
        // SAFETY: from..to lies inside both operands; the copy is made before `y` is
        // written, and no reference to `y` is alive but the one made here.
        let y = unsafe {
            std::ptr::copy_nonoverlapping(x_ptr.add(from), input.as_mut_ptr(), to - from);
            std::slice::from_raw_parts_mut(y_ptr.add(from), to - from)
        };
        let fan = fanout.get(from.min(fanout.len())..).unwrap_or_default();
        let (s, o) = definition(input, y, fan);
        counts = (counts.0 + s, counts.1 + o);
    }
    counts
}

/// Whole blocks of `len` elements (a multiple of [`BLOCK`]) by the kernel, restarted after
/// each block that left inputs undecided, whose elements `undecided(e, x[e], &mut y[e..e +
/// 1])` evaluates.
///
/// # Safety
/// The CPU has AVX-512F and VPOPCNTDQ; `x` and `y` hold `len` values each (the same ones
/// where the units run in place) and `fanout`, if given, as many.
#[cfg(target_arch = "x86_64")]
unsafe fn blocks(
    q: &Uniform,
    x: *const f32,
    y: *mut f32,
    len: usize,
    fanout: Option<&[u32]>,
    undecided: impl Fn(usize, f32, &mut [f32]) -> Counts,
) -> Counts {
    let (mut spikes, mut synops, mut from) = (0, 0, 0);
    while from < len {
        let fan = fanout.map(|f| &f[from..]);
        // SAFETY: the caller's guarantees, for the elements from `from` on.
        let (s, o, stop) = unsafe {
            let (x, y, n) = (x.add(from), y.add(from), len - from);
            match q.k - q.k.min(TABLE_BITS) {
                0 => with_rest::<0>(q, x, y, n, fan),
                1 => with_rest::<1>(q, x, y, n, fan),
                2 => with_rest::<2>(q, x, y, n, fan),
                3 => with_rest::<3>(q, x, y, n, fan),
                4 => with_rest::<4>(q, x, y, n, fan),
                _ => with_rest::<5>(q, x, y, n, fan),
            }
        };
        spikes += s;
        synops += o;
        let Some(Stop {
            block,
            undecided: lanes,
            inputs,
        }) = stop
        else {
            break;
        };
        for (v, &lanes) in lanes.iter().enumerate() {
            let mut left = lanes;
            while left != 0 {
                let lane = 16 * v + left.trailing_zeros() as usize;
                let e = from + block + lane;
                // SAFETY: e < len; no other reference to `y` is alive.
                let y = unsafe { std::slice::from_raw_parts_mut(y.add(e), 1) };
                let (s, o) = undecided(e, inputs[lane], y);
                spikes += s;
                synops += o;
                left &= left - 1;
            }
        }
        from += block + BLOCK;
    }
    (spikes, synops)
}

/// Where [`quantise_avx512`] stopped: the block (its first element) with undecided lanes,
/// those lanes per vector, and the block's inputs (which its outputs may have replaced).
struct Stop {
    block: usize,
    undecided: [u16; V],
    inputs: [f32; BLOCK],
}

/// [`quantise_avx512`] for a unit with `REST` neurons past the table, with or without
/// fanouts.
///
/// # Safety
/// As [`quantise_avx512`]'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
unsafe fn with_rest<const REST: usize>(
    q: &Uniform,
    x: *const f32,
    y: *mut f32,
    len: usize,
    fanout: Option<&[u32]>,
) -> (u64, u64, Option<Stop>) {
    // SAFETY: the same features are enabled; the caller's guarantees.
    unsafe {
        match fanout {
            Some(f) => quantise_avx512::<REST, true>(q, x, y, len, f),
            None => quantise_avx512::<REST, false>(q, x, y, len, &[]),
        }
    }
}

/// The quantiser over whole blocks in AVX-512 lanes: `fma`, clamp, truncate, the fraction
/// checked against the margin; the first five neurons' sum by one permutation of the prefix
/// table, the `REST` others' `d_i` added under a bit test in neuron order, then `o +`;
/// spikes by VPOPCNTD, synaptic operations with `fanout` (at least `len` long) where
/// `FANOUT`. Stops after the first block with lanes within the margin, which are left out
/// of the counts (their outputs here are not the unit's) and returned with the block's
/// start and inputs. A block's inputs are all read before its outputs are written, so `x`
/// may be `y`. Nothing in the loop calls out, so its sums stay in registers.
///
/// # Safety
/// The CPU has AVX-512F and VPOPCNTDQ; `x` and `y` hold `len` values each (`len` a multiple
/// of [`BLOCK`]), the same ones or apart, and nothing else refers to `y`'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
unsafe fn quantise_avx512<const REST: usize, const FANOUT: bool>(
    q: &Uniform,
    x: *const f32,
    y: *mut f32,
    len: usize,
    fanout: &[u32],
) -> (u64, u64, Option<Stop>) {
    use super::unit::synops_avx512;
    use std::arch::x86_64::*;
    assert!(len.is_multiple_of(BLOCK));
    assert!(!FANOUT || fanout.len() >= len);
    assert!(len / BLOCK < 1 << 24 && q.k - q.k.min(TABLE_BITS) == REST);
    // SAFETY: AVX-512F and VPOPCNTDQ are enabled; loads and stores stay inside a block of
    // `x`, `y` (`len` each, the caller's word) or `fanout` (checked above), or of the
    // 32-entry table.
    unsafe {
        let (scale, shift) = (_mm512_set1_ps(q.scale), _mm512_set1_ps(q.shift));
        let (half, top) = (_mm512_set1_ps(0.5), _mm512_set1_ps(q.top));
        let (near, far) = (_mm512_set1_ps(q.near), _mm512_set1_ps(q.far));
        let o = _mm512_set1_ps(q.o);
        let table_lo = _mm512_loadu_ps(q.prefix.as_ptr());
        let table_hi = _mm512_loadu_ps(q.prefix.as_ptr().add(16));
        let rest = _mm_cvtsi32_si128(REST as i32);
        let d: [__m512; REST] = std::array::from_fn(|r| _mm512_set1_ps(q.d[q.k - REST + r]));
        // At most 10 spikes per lane and block, fewer than 2^24 blocks: no lane wraps.
        let mut lane_spikes = _mm512_setzero_si512();
        let mut synops = _mm512_setzero_si512();
        let mut stop = None;
        for first in (0..len).step_by(BLOCK) {
            let mut j = [_mm512_setzero_si512(); V];
            let mut acc = [_mm512_setzero_ps(); V];
            let mut decided = [0u16; V];
            let inputs: [__m512; V] =
                std::array::from_fn(|v| _mm512_loadu_ps(x.add(first + 16 * v)));
            for v in 0..V {
                let t = _mm512_fmadd_ps(inputs[v], scale, shift);
                // NaN → 0.5: `max` returns its second operand when either is NaN.
                let t = _mm512_min_ps(_mm512_max_ps(t, half), top);
                j[v] = _mm512_cvttps_epi32(t);
                let f = _mm512_sub_ps(t, _mm512_cvtepi32_ps(j[v]));
                let above = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(f, near);
                decided[v] = _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(above, f, far);
                let high = _mm512_srl_epi32(j[v], rest);
                acc[v] = _mm512_permutex2var_ps(table_lo, high, table_hi);
            }
            for (r, &d) in d.iter().enumerate() {
                let bit = _mm512_set1_epi32(1 << (REST - 1 - r));
                for v in 0..V {
                    let fired = _mm512_test_epi32_mask(j[v], bit);
                    acc[v] = _mm512_mask_add_ps(acc[v], fired, acc[v], d);
                }
            }
            let mut block_synops = _mm512_setzero_si512();
            for v in 0..V {
                _mm512_storeu_ps(y.add(first + 16 * v), _mm512_add_ps(o, acc[v]));
                let count = _mm512_maskz_popcnt_epi32(decided[v], j[v]);
                lane_spikes = _mm512_add_epi32(lane_spikes, count);
                if FANOUT {
                    let f = _mm512_loadu_si512(fanout.as_ptr().add(first + 16 * v).cast());
                    block_synops = _mm512_add_epi64(block_synops, synops_avx512(count, f));
                }
            }
            synops = _mm512_add_epi64(synops, block_synops);
            if decided.iter().any(|&m| m != u16::MAX) {
                let mut saved = [0.0f32; BLOCK];
                for (v, input) in inputs.iter().enumerate() {
                    _mm512_storeu_ps(saved.as_mut_ptr().add(16 * v), *input);
                }
                stop = Some(Stop {
                    block: first,
                    undecided: decided.map(|m| !m),
                    inputs: saved,
                });
                break;
            }
        }
        let spikes = _mm512_reduce_add_epi32(lane_spikes) as u32 as u64;
        (spikes, _mm512_reduce_add_epi64(synops) as u64, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amos::closed_form::{self, Rounding};

    /// The quantisers of closed forms against the definition: both sides of every bound and
    /// a dense sweep give the definition's interval or none (within the margin), which
    /// happens rarely; every interval's output is the definition's.
    #[test]
    fn closed_forms_are_quantisers_that_never_misplace_an_input() {
        for unit in [
            closed_form::relu6(10, Rounding::Nearest),
            closed_form::relu6(10, Rounding::Truncate),
            closed_form::relu6(8, Rounding::Nearest),
            closed_form::relu(2, 4.0, Rounding::Truncate),
            closed_form::identity(10, -3.3, 4.1, Rounding::Nearest),
        ] {
            let k = unit.k();
            let Some(q) = Uniform::new(&unit) else {
                panic!("K = {k} closed form is a uniform quantiser");
            };
            let intervals = Intervals::new(&unit).expect("a closed form has intervals");
            let word = |j: usize| -> u64 {
                (0..k)
                    .filter(|&i| j >> (k - 1 - i) & 1 == 1)
                    .fold(0, |w, i| w | 1 << i)
            };
            for j in 0..1 << k {
                assert_eq!(q.output(j).to_bits(), unit.decode(word(j)).to_bits());
            }
            let bounds = &intervals.bounds()[..intervals.len() - 1];
            let beside = bounds.iter().flat_map(|&b| [b, b.next_down(), b.next_up()]);
            let sweep = (0..200_000).map(|i| -8.0 + i as f32 * 8e-5);
            let mut undecided = 0;
            for x in beside.clone().chain(sweep.clone()) {
                match q.interval(x) {
                    Some(j) => assert_eq!(word(j), unit.spikes(x, 0.0), "K = {k}, x = {x}"),
                    None => undecided += 1,
                }
            }
            // Every bound is within the margin; a sweep's inputs almost never are.
            assert!(
                beside
                    .clone()
                    .all(|x| q.interval(x).is_none() || x.abs() > 1e30)
            );
            assert!(
                undecided < bounds.len() * 3 + 200_000 / 100,
                "K = {k}: {undecided}"
            );
        }
    }

    /// Units that are not uniform codes have no quantiser: a fitted one, K outside 2..=10,
    /// and a closed form whose levels were moved.
    #[test]
    fn other_units_have_none() {
        let mut bent = closed_form::relu6(8, Rounding::Nearest);
        bent.t[3] += 0.01;
        let mut fitted = AmosUnit::zeros(6, false);
        fitted.c = vec![1.0; 6];
        fitted.t = vec![0.5, 0.2, 0.9, 0.1, 0.3, 0.4];
        fitted.h = vec![0.1; 15];
        fitted.d = vec![0.5; 6];
        for unit in [
            closed_form::relu6(12, Rounding::Nearest),
            closed_form::relu(1, 4.0, Rounding::Nearest),
            bent,
            fitted,
        ] {
            assert!(Uniform::new(&unit).is_none(), "K = {}", unit.k());
        }
    }
}
