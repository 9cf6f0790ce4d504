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

use super::tree::{self, Table, Tree};
use super::unit::AmosUnit;
#[cfg(target_arch = "x86_64")]
use super::unit::synops_avx512;

/// Most intervals a unit is tabulated with; a unit with more keeps the general kernel.
const MAX_INTERVALS: usize = 1024;

/// Most buckets of a [`Grid`] (u16 entries: 16 KiB, stays in L1).
const MAX_BUCKETS: usize = 8192;

/// A uniform grid over the input that finds an input's interval in a few steps instead of a
/// binary search: bucket `b(x) = ⌊clamp((x − lo)·scale, 0, n − 1)⌋`, computed in f32, is
/// monotone in x (every rounding is), so the inputs of a bucket are a run of consecutive
/// floats and their intervals the run `start[b] ..= start[b] + steps` at most. Starting
/// from `start[b]`, `steps` comparisons with the next bound land on the interval exactly.
#[derive(Clone, Debug)]
struct Grid {
    lo: f32,
    scale: f32,
    /// The last bucket, as a float (the clamp's upper end).
    top: f32,
    /// Per bucket, the interval of its least input; a power of two long, plus one entry
    /// repeated so that a 32-bit read at any bucket stays inside (the AVX2 gather).
    start: Vec<u16>,
    /// Buckets − 1.
    mask: usize,
    /// Most bounds inside one bucket.
    steps: u32,
}

impl Grid {
    /// The bucket of a finite input (any input gives an index in range).
    #[inline(always)]
    fn bucket(&self, x: f32) -> usize {
        let t = ((x - self.lo) * self.scale).max(0.0).min(self.top);
        (t as i32 as usize) & self.mask
    }

    /// The grid over `buckets` buckets spanning the finite `bounds`.
    fn new(bounds: &[f32], buckets: usize) -> Option<Grid> {
        let (&lo, &hi) = (bounds.first()?, bounds.last()?);
        Grid::over(lo, hi, bounds, buckets)
    }

    /// The grid over `buckets` buckets spanning [lo, hi], for the finite `bounds`.
    fn over(lo: f32, hi: f32, bounds: &[f32], buckets: usize) -> Option<Grid> {
        let scale = buckets as f32 / (hi - lo);
        if !(scale.is_finite() && scale > 0.0) || bounds.len() > u16::MAX as usize {
            return None;
        }
        let mut grid = Grid {
            lo,
            scale,
            top: (buckets - 1) as f32,
            start: vec![0; buckets + 1],
            mask: buckets - 1,
            steps: 0,
        };
        for (b, (first, last)) in grid.spans(bounds).into_iter().enumerate() {
            grid.start[b] = first as u16;
            grid.steps = grid.steps.max(last.saturating_sub(first));
        }
        grid.start[buckets] = grid.start[buckets - 1];
        Some(grid)
    }

    /// Per bucket, its first and last interval.
    fn spans(&self, bounds: &[f32]) -> Vec<(u32, u32)> {
        let buckets = self.mask + 1;
        // With `prev` the float just below: a bound β is at or below every input of bucket b
        // iff b(prev β) < b, and at or below some input of it iff b(β) ≤ b. So the bucket's
        // intervals run from #{β : b(prev β) < b} to #{β : b(β) ≤ b}.
        let mut below = vec![0u32; buckets + 1];
        let mut upto = vec![0u32; buckets + 1];
        for &b in bounds {
            below[self.bucket(b.next_down()) + 1] += 1;
            upto[self.bucket(b)] += 1;
        }
        let (mut first, mut last) = (0u32, 0u32);
        (0..buckets)
            .map(|b| {
                first += below[b];
                last += upto[b];
                (first, last)
            })
            .collect()
    }

    /// The grid with the fewest steps (the smaller on a tie) over the finite `bounds`.
    fn best(bounds: &[f32]) -> Option<Grid> {
        let mut buckets = bounds.len().next_power_of_two().max(64);
        let mut best: Option<Grid> = None;
        while buckets <= MAX_BUCKETS {
            if let Some(grid) = Grid::new(bounds, buckets)
                && best.as_ref().is_none_or(|b| grid.steps < b.steps)
            {
                best = Some(grid);
            }
            buckets *= 2;
        }
        best
    }
}

/// Buckets of a [`Cells`] grid: 8-byte cells, 128 KiB (L2).
const CELL_BUCKETS: usize = 16384;

/// A grid whose bucket is, for most inputs, the whole answer: per bucket its first
/// interval and the bounds inside it, and where there are none (most buckets), that
/// interval's output and spike count. One read instead of the grid's walk and the table
/// reads after it; inputs in a bucket with bounds inside take the walk. Plain loads, as
/// AVX2 gathers cost more than a load per lane on the machines measured (README, engine
/// performance).
#[derive(Clone, Debug)]
struct Cells {
    grid: Grid,
    cells: Vec<Cell>,
}

/// One bucket's answer, laid out so that [`cells_avx2`] reads it whole as two 32-bit fields:
/// the output, then `start`, `inside` and `spikes` (low byte first).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Cell {
    /// The output of interval `start` (meaningful where `inside` is 0).
    output: f32,
    /// The bucket's first interval.
    start: u16,
    /// Bounds inside the bucket: comparisons to find the interval from `start`.
    inside: u8,
    /// The spikes of interval `start` (meaningful where `inside` is 0).
    spikes: u8,
}

// Eight bytes and no padding: every byte of a cell is initialised, so reading one as a u64
// is sound.
const _: () = assert!(std::mem::size_of::<Cell>() == 8);

impl Cells {
    /// The cells of [`CELL_BUCKETS`] buckets over the finite `bounds`, if every bucket has
    /// at most 255 bounds inside and every interval at most 255 spikes.
    fn new(bounds: &[f32], outputs: &[f32], spikes: &[u32]) -> Option<Cells> {
        // Buckets to spare past each end, so that the inputs below the first bound and above
        // the last (clamped into the end buckets) find no bound inside.
        let (&first, &last) = (bounds.first()?, bounds.last()?);
        let width = (last - first) / (CELL_BUCKETS - 4) as f32;
        let lo = first - 1.5 * width;
        let grid = Grid::over(lo, lo + width * CELL_BUCKETS as f32, bounds, CELL_BUCKETS)?;
        let cells = grid
            .spans(bounds)
            .into_iter()
            .map(|(first, last)| {
                let start = first as usize;
                Some(Cell {
                    output: outputs[start],
                    start: first as u16,
                    inside: u8::try_from(last.saturating_sub(first)).ok()?,
                    spikes: u8::try_from(spikes[start]).ok()?,
                })
            })
            .collect::<Option<Vec<Cell>>>()?;
        Some(Cells { grid, cells })
    }

    /// The interval of a finite input, its output and its spikes (any input gives some
    /// interval): as [`Intervals::locate`], the walk from the bucket's first interval.
    #[inline(always)]
    fn find(&self, t: &Intervals, bucket: usize, x: f32) -> (u32, f32, u32) {
        let cell = self.cells[bucket];
        if cell.inside == 0 {
            return (cell.start as u32, cell.output, cell.spikes as u32);
        }
        let mut j = cell.start as usize;
        for _ in 0..cell.inside {
            j += (t.bounds[j] <= x) as usize;
        }
        (j as u32, t.outputs[j], t.spikes[j])
    }
}

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
    /// Finds an input's interval in [`Grid::steps`] comparisons, where the bounds allow.
    grid: Option<Grid>,
    /// Finds most inputs' results in one read.
    cells: Option<Cells>,
    /// The search in vector registers, for at most 256 intervals.
    tree: Option<IntervalTree>,
}

/// A unit's intervals for a search in AVX-512 registers ([`super::tree`]): the binary
/// search's bounds by level, and the outputs and spike counts of the intervals.
#[derive(Clone, Debug)]
struct IntervalTree {
    tree: Tree,
    outputs: Table,
    /// Spike counts as bytes (at most [`super::MAX_NEURONS`]), zero past the intervals.
    spike_counts: Box<[u8; tree::MAX_ENTRIES]>,
}

impl IntervalTree {
    /// The tree of a unit's padded bounds, if it has at most 256 intervals.
    fn new(bounds: &[f32], outputs: &[f32], spikes: &[u32]) -> Option<IntervalTree> {
        let mut spike_counts = Box::new([0; tree::MAX_ENTRIES]);
        for (byte, &n) in spike_counts.iter_mut().zip(spikes) {
            *byte = u8::try_from(n).ok()?;
        }
        Some(IntervalTree {
            tree: Tree::new(bounds)?,
            outputs: Table::new(outputs)?,
            spike_counts,
        })
    }
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
        // A grid is kept where it takes fewer steps than the binary search.
        let grid = Grid::best(&bounds).filter(|g| (g.steps as usize) < size.ilog2() as usize);
        bounds.resize(size, f32::INFINITY);
        let words: Vec<u64> = found.iter().map(|&(_, w)| w).collect();
        let spikes: Vec<u32> = words.iter().map(|w| w.count_ones()).collect();
        let outputs: Vec<f32> = words.iter().map(|&w| unit.decode(w)).collect();
        let cells = Cells::new(&bounds[..found.len() - 1], &outputs, &spikes);
        let table = Intervals {
            grid,
            cells,
            tree: IntervalTree::new(&bounds, &outputs, &spikes),
            bounds,
            spikes,
            outputs,
            words,
        };
        // Both sides of every bound, and the extremes, against the definition.
        let checks = found[1..]
            .iter()
            .flat_map(|&(k, _)| [k, k - 1])
            .chain([order(-f32::MAX), order(f32::MAX)]);
        for k in checks {
            let x = from_order(k);
            let j = table.interval(x);
            if table.words[j] != unit.spikes(x, 0.0) || table.locate(x) != j {
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

    /// The bounds, ascending: `bounds()[j]` is the least input of interval j + 1 (padded
    /// with +∞ past the last).
    pub(super) fn bounds(&self) -> &[f32] {
        &self.bounds
    }

    /// The spike word of interval j.
    pub(super) fn word(&self, j: usize) -> u64 {
        self.words[j]
    }

    /// Comparisons per input on the grid path, if the unit has a grid.
    pub fn grid_steps(&self) -> Option<u32> {
        self.grid.as_ref().map(|g| g.steps)
    }

    /// [`Intervals::interval`] as the grid finds it (the binary search without one).
    fn locate(&self, x: f32) -> usize {
        let Some(grid) = &self.grid else {
            return self.interval(x);
        };
        let mut j = grid.start[grid.bucket(x)] as usize;
        for _ in 0..grid.steps {
            j += (self.bounds[j & (self.bounds.len() - 1)] <= x) as usize;
        }
        j
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
        eval_by(self, Lookup::fastest(), unit, x, y, z, fanout)
    }
}

/// [`Intervals::eval_counted`] by a given lookup: whole blocks by the register tree or the
/// cells in AVX2 lanes where that is the lookup, the rest (and every lookup else) by
/// [`search`].
fn eval_by(
    t: &Intervals,
    lookup: Lookup,
    unit: &AmosUnit,
    x: &[f32],
    y: &mut [f32],
    z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    if lookup == Lookup::TreeAvx512
        && let Some(tree) = &t.tree
        && tree::available()
    {
        let kernel = |x: &[f32], y: &mut [f32], words: Option<&mut [u64]>| {
            // SAFETY: AVX-512F and VBMI were detected just above.
            unsafe { tree_avx512(t, tree, unit, x, y, words, fanout) }
        };
        return blocks_then_search(t, unit, x, y, z, fanout, TREE_BLOCK, kernel);
    }
    #[cfg(target_arch = "x86_64")]
    if lookup == Lookup::Cells
        && let Some(cells) = &t.cells
        && std::arch::is_x86_feature_detected!("avx2")
    {
        let kernel = |x: &[f32], y: &mut [f32], words: Option<&mut [u64]>| {
            // SAFETY: AVX2 was detected just above.
            unsafe { cells_avx2(t, cells, unit, x, y, words, fanout) }
        };
        return blocks_then_search(t, unit, x, y, z, fanout, BLOCK, kernel);
    }
    search(t, lookup, unit, x, y, z, fanout)
}

/// `kernel` over the front of the inputs, whole blocks of `block` elements, then the rest
/// by [`search`] (the cells, or the grid where the unit has none); the counts summed.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn blocks_then_search(
    t: &Intervals,
    unit: &AmosUnit,
    x: &[f32],
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
    block: usize,
    kernel: impl FnOnce(&[f32], &mut [f32], Option<&mut [u64]>) -> (u64, u64),
) -> (u64, u64) {
    let whole = x.len() / block * block;
    let words = z.as_deref_mut().map(|z| &mut z[..whole]);
    let (spikes, synops) = kernel(&x[..whole], &mut y[..whole], words);
    let (tail_spikes, tail_synops) = search(
        t,
        Lookup::Cells,
        unit,
        &x[whole..],
        &mut y[whole..],
        z.map(|z| &mut z[whole..]),
        fanout.get(whole..).unwrap_or_default(),
    );
    (spikes + tail_spikes, synops + tail_synops)
}

/// Whole blocks of inputs by their [`Cells`]: the buckets in vector lanes (the operations of
/// [`Grid::bucket`]); each input's cell read whole, one 8-byte load per input (the loads
/// independent, so many are in flight at once); then per vector of 8 the outputs and spike
/// counts taken out of the cells in lanes, and the spikes and synaptic operations summed
/// there. The few inputs whose bucket has bounds inside go to [`Cells::find`] one by one.
/// The reads and comparisons are [`Cells::find`]'s, so the results are the same. A block
/// with an input that is not finite, or that the fanout ends inside, goes to [`search`].
/// `x.len()` is a multiple of [`BLOCK`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn cells_avx2(
    t: &Intervals,
    cells: &Cells,
    unit: &AmosUnit,
    x: &[f32],
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    use super::unit::{fields_avx2, synops_avx2};
    use std::arch::x86_64::*;
    const V: usize = BLOCK / 8;
    assert!(x.len().is_multiple_of(BLOCK) && y.len() == x.len());
    assert!(z.as_ref().is_none_or(|z| z.len() == x.len()));
    let grid = &cells.grid;
    // Every bucket the mask lets through has a cell.
    assert!(cells.cells.len() > grid.mask);
    // Blocks between flushes of the spike counts' lanes: at most 4 · 255 spikes per lane and
    // block (a cell's count is a byte), so no lane wraps.
    const FLUSH: usize = 4096;
    let (mut spikes, mut synops_alone) = (0u64, 0u64);
    // SAFETY: AVX2 is enabled; every load and store is inside a block of `x`, `y`, `z` or
    // `fanout` (asserts above, `get` below), inside a local array, or a cell (the bucket is
    // masked, and the assert above holds).
    unsafe {
        let (lo, scale) = (_mm256_set1_ps(grid.lo), _mm256_set1_ps(grid.scale));
        let (top, zero) = (_mm256_set1_ps(grid.top), _mm256_setzero_ps());
        let bucket_mask = _mm256_set1_epi32(grid.mask as i32);
        let byte = _mm256_set1_epi32(0xFF);
        let mut lane_spikes = _mm256_setzero_si256();
        let mut synops = _mm256_setzero_si256();
        let flush = |lanes: __m256i| -> u64 {
            let mut each = [0u32; 8];
            _mm256_storeu_si256(each.as_mut_ptr().cast(), lanes);
            each.iter().map(|&l| l as u64).sum()
        };
        for (b, (xs, ys)) in x
            .chunks_exact(BLOCK)
            .zip(y.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let first = b * BLOCK;
            if b % FLUSH == FLUSH - 1 {
                spikes += flush(lane_spikes);
                lane_spikes = _mm256_setzero_si256();
            }
            let xv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(xs.as_ptr().add(8 * v)));
            // x − x is 0 exactly for finite x (NaN for ±∞ and NaN).
            let finite = xv.iter().fold(true, |all, &v| {
                let same = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_sub_ps(v, v), zero);
                all & (_mm256_movemask_ps(same) == 0xFF)
            });
            let fan = fanout.get(first..first + BLOCK);
            if !finite || (fan.is_none() && first < fanout.len()) {
                let words = z.as_deref_mut().map(|z| &mut z[first..first + BLOCK]);
                let fan = &fanout[first.min(fanout.len())..];
                let (s, o) = search(t, Lookup::Cells, unit, xs, ys, words, fan);
                spikes += s;
                synops_alone += o;
                continue;
            }
            let mut bucket = [[0u32; 8]; V];
            for (v, &xv) in xv.iter().enumerate() {
                let scaled = _mm256_mul_ps(_mm256_sub_ps(xv, lo), scale);
                let clamped = _mm256_min_ps(_mm256_max_ps(scaled, zero), top);
                let b = _mm256_and_si256(_mm256_cvttps_epi32(clamped), bucket_mask);
                _mm256_storeu_si256(bucket[v].as_mut_ptr().cast(), b);
            }
            for (v, bucket) in bucket.iter().enumerate() {
                let (outputs, rest) = fields_avx2(cells.cells.as_ptr().cast(), bucket);
                // No bound inside the bucket: the cell's output and count are the input's.
                let inside = _mm256_and_si256(_mm256_srli_epi32::<16>(rest), byte);
                let plain = _mm256_cmpeq_epi32(inside, _mm256_setzero_si256());
                let counts = _mm256_and_si256(_mm256_srli_epi32::<24>(rest), plain);
                _mm256_storeu_si256(ys.as_mut_ptr().add(8 * v).cast(), outputs);
                lane_spikes = _mm256_add_epi32(lane_spikes, counts);
                if let Some(fan) = fan {
                    let f = _mm256_loadu_si256(fan.as_ptr().add(8 * v).cast());
                    synops = _mm256_add_epi64(synops, synops_avx2(counts, f));
                }
                let mut found = !_mm256_movemask_ps(_mm256_castsi256_ps(plain)) & 0xFF;
                while found != 0 {
                    let lane = found.trailing_zeros() as usize;
                    let e = 8 * v + lane;
                    let (_, output, count) = cells.find(t, bucket[lane] as usize, xs[e]);
                    ys[e] = output;
                    spikes += count as u64;
                    synops_alone += count as u64 * fan.map_or(0, |f| f[e] as u64);
                    found &= found - 1;
                }
            }
            if let Some(z) = z.as_deref_mut() {
                for e in 0..BLOCK {
                    let (j, _, _) = cells.find(t, bucket[e / 8][e % 8] as usize, xs[e]);
                    z[first + e] = t.words[j as usize];
                }
            }
        }
        spikes += flush(lane_spikes);
        let mut wide = [0u64; 4];
        _mm256_storeu_si256(wide.as_mut_ptr().cast(), synops);
        (spikes, wide.iter().sum::<u64>() + synops_alone)
    }
}

/// Elements per block of [`tree_avx512`]: eight vectors (eight walks side by side).
const TREE_BLOCK: usize = 128;

/// The intervals of whole blocks of inputs by the [`Tree`] walk in AVX-512 registers (a
/// permutation of one to eight registers per level instead of a gather), then their outputs
/// by permutations too (by a gather past 128 intervals), spike counts by VBMI's byte
/// permutation, spike words by a gather, and the spikes and synaptic operations in vector
/// lanes.
/// Only comparisons `bound ≤ x` and table reads, as [`Intervals::interval`], so the same
/// results. A block with an input that is not finite, or that the fanout ends inside, goes
/// to [`search`]. `x.len()` is a multiple of [`TREE_BLOCK`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vbmi")]
unsafe fn tree_avx512(
    t: &Intervals,
    tree: &IntervalTree,
    unit: &AmosUnit,
    x: &[f32],
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    use std::arch::x86_64::*;
    const V: usize = TREE_BLOCK / 16;
    assert!(x.len().is_multiple_of(TREE_BLOCK) && y.len() == x.len());
    assert!(z.as_ref().is_none_or(|z| z.len() == x.len()));
    let (mut spikes, mut synops_tail) = (0u64, 0u64);
    // SAFETY: AVX-512F and VBMI are enabled; loads and stores stay inside a block of `x`,
    // `y`, `z` or `fanout` whose bounds were checked (asserts above, `get` below), or of the
    // 256 spike counts; the output and word gathers read at `min(node, intervals − 1)`.
    unsafe {
        let last = _mm512_set1_epi32(t.words.len() as i32 - 1);
        // More than 128 intervals: counts in both halves of the byte table, outputs gathered.
        let upper_half = t.words.len() > 128;
        let gather_outputs = upper_half;
        let zero = _mm512_setzero_ps();
        let mut lane_spikes = _mm512_setzero_si512();
        let mut synops = _mm512_setzero_si512();
        for (b, (xs, ys)) in x
            .chunks_exact(TREE_BLOCK)
            .zip(y.chunks_exact_mut(TREE_BLOCK))
            .enumerate()
        {
            let first = b * TREE_BLOCK;
            let xv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(xs.as_ptr().add(16 * v)));
            // x − x is 0 exactly for finite x (NaN for ±∞ and NaN).
            let finite = xv.iter().fold(true, |all, &v| {
                all & (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_sub_ps(v, v), zero) == 0xFFFF)
            });
            let fan = fanout.get(first..first + TREE_BLOCK);
            if !finite || (fan.is_none() && first < fanout.len()) {
                let words = z.as_deref_mut().map(|z| &mut z[first..first + TREE_BLOCK]);
                let fan = &fanout[first.min(fanout.len())..];
                let (s, o) = search(t, Lookup::GridAvx2, unit, xs, ys, words, fan);
                spikes += s;
                synops_tail += o;
                continue;
            }
            let node = tree.tree.walk(&xv);
            for (v, &n) in node.iter().enumerate() {
                let j = _mm512_min_epu32(n, last);
                // Sixteen vectors' permutations cost more than a gather, which also leaves the
                // shuffle units to the walk (docs/engine-performance-log.md).
                let out = if gather_outputs {
                    _mm512_i32gather_ps::<4>(j, t.outputs.as_ptr())
                } else {
                    tree.outputs.lookup(j)
                };
                _mm512_storeu_ps(ys.as_mut_ptr().add(16 * v), out);
                let counts = tree::lookup_bytes(&tree.spike_counts, upper_half, j);
                lane_spikes = _mm512_add_epi32(lane_spikes, counts);
                if let Some(fan) = fan {
                    let f = _mm512_loadu_si512(fan.as_ptr().add(16 * v).cast());
                    synops = _mm512_add_epi64(synops, synops_avx512(counts, f));
                }
                if let Some(z) = z.as_deref_mut() {
                    let words = z.as_mut_ptr().add(first + 16 * v).cast::<__m512i>();
                    let low = _mm512_castsi512_si256(j);
                    let high = _mm512_extracti64x4_epi64::<1>(j);
                    let table = t.words.as_ptr().cast();
                    _mm512_storeu_si512(words, _mm512_i32gather_epi64::<8>(low, table));
                    _mm512_storeu_si512(words.add(1), _mm512_i32gather_epi64::<8>(high, table));
                }
            }
            // At most 8 · 64 spikes per lane and block: flushed long before u32 overflows.
            if b % (1 << 20) == (1 << 20) - 1 {
                spikes += _mm512_reduce_add_epi32(lane_spikes) as u32 as u64;
                lane_spikes = _mm512_setzero_si512();
            }
        }
        spikes += _mm512_reduce_add_epi32(lane_spikes) as u32 as u64;
        (spikes, _mm512_reduce_add_epi64(synops) as u64 + synops_tail)
    }
}

/// How [`search`] finds an input's interval. Each gives the same intervals; tests run all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup {
    /// The [`Tree`] walk in AVX-512 registers (where the unit has a tree and the CPU
    /// AVX-512F and VBMI); otherwise as `GridAvx2`.
    TreeAvx512,
    /// The [`Cells`], whole blocks in AVX2 lanes where the CPU has it (where the unit has
    /// cells; otherwise as `GridAvx2`).
    Cells,
    /// The grid with AVX2 gathers (where the unit has a grid and the CPU AVX2).
    GridAvx2,
    /// The grid, element by element.
    Grid,
    /// A binary search over the bounds.
    Binary,
}

impl Lookup {
    fn fastest() -> Lookup {
        if tree::available() {
            return Lookup::TreeAvx512;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Lookup::Cells;
        }
        Lookup::Grid
    }
}

/// Elements per block of [`search`].
const BLOCK: usize = 32;

/// The grid lookup of [`search`] on 8 lanes at a time with AVX2 gathers: the interval `j`,
/// its output and its spike count for each of a block's inputs. The same operations as
/// [`Grid::bucket`] and [`Intervals::locate`] (subtract, multiply, clamp, truncate; `≤`), so
/// the same intervals. Lanes with inputs that are not finite get some interval in range.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn grid_avx2(
    t: &Intervals,
    grid: &Grid,
    x: &[f32; BLOCK],
    j: &mut [u32; BLOCK],
    y: &mut [f32; BLOCK],
    counts: &mut [u32; BLOCK],
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller checked AVX2; every load and store is inside its fixed-size array,
    // and every gather index is masked or clamped into its table (see the comments).
    unsafe {
        const V: usize = BLOCK / 8;
        let lo = _mm256_set1_ps(grid.lo);
        let scale = _mm256_set1_ps(grid.scale);
        let top = _mm256_set1_ps(grid.top);
        let zero = _mm256_setzero_ps();
        let bucket_mask = _mm256_set1_epi32(grid.mask as i32);
        let low16 = _mm256_set1_epi32(0xFFFF);
        let last_bound = _mm256_set1_epi32(t.bounds.len() as i32 - 1);
        let last = _mm256_set1_epi32(t.words.len() as i32 - 1);
        // The block's vectors side by side, so that their gathers overlap.
        let xv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(x.as_ptr().add(8 * v)));
        let start: [__m256i; V] = std::array::from_fn(|v| {
            let scaled = _mm256_mul_ps(_mm256_sub_ps(xv[v], lo), scale);
            // `max(NaN, 0)` is 0: the second operand.
            let clamped = _mm256_min_ps(_mm256_max_ps(scaled, zero), top);
            let bucket = _mm256_and_si256(_mm256_cvttps_epi32(clamped), bucket_mask);
            // A 32-bit read at byte 2·bucket; the table's extra entry keeps it inside.
            let entry = _mm256_i32gather_epi32::<2>(grid.start.as_ptr().cast(), bucket);
            _mm256_and_si256(entry, low16)
        });
        // The bounds are ascending, so the steps the scalar walk takes from `start` are the
        // bounds among the next `steps` that are at or below the input: read at once, not
        // one after the other. Past the end the last bound (+∞, always padding) is read.
        let mut jv = start;
        for s in 0..grid.steps as i32 {
            for v in 0..V {
                let at =
                    _mm256_min_epu32(_mm256_add_epi32(start[v], _mm256_set1_epi32(s)), last_bound);
                let bound = _mm256_i32gather_ps::<4>(t.bounds.as_ptr(), at);
                // All ones (−1) where the bound is at or below the input.
                let le = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(bound, xv[v]));
                jv[v] = _mm256_sub_epi32(jv[v], le);
            }
        }
        for (v, &jv) in jv.iter().enumerate() {
            let k = _mm256_min_epu32(jv, last);
            _mm256_storeu_si256(j.as_mut_ptr().add(8 * v).cast(), jv);
            let out = _mm256_i32gather_ps::<4>(t.outputs.as_ptr(), k);
            _mm256_storeu_ps(y.as_mut_ptr().add(8 * v), out);
            let count = _mm256_i32gather_epi32::<4>(t.spikes.as_ptr().cast(), k);
            _mm256_storeu_si256(counts.as_mut_ptr().add(8 * v).cast(), count);
        }
    }
}

/// The intervals of blocks of elements, branch-free, by `lookup`; then their outputs, spike
/// words and counts. Compiled for AVX2 too, chosen at run time; only comparisons and table
/// reads, so the same results everywhere.
#[multiversion::multiversion(targets("x86_64+avx2+fma+popcnt"))]
fn search(
    t: &Intervals,
    lookup: Lookup,
    unit: &AmosUnit,
    x: &[f32],
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    let size = t.bounds.len();
    let mask = size - 1;
    let last = t.words.len() - 1;
    let (mut spikes, mut synops) = (0u64, 0u64);
    let cells = t.cells.as_ref().filter(|_| lookup == Lookup::Cells);
    let grid = t.grid.as_ref().filter(|_| lookup != Lookup::Binary);
    #[cfg(target_arch = "x86_64")]
    let avx2 = cells.is_none()
        && grid.is_some()
        && matches!(
            lookup,
            Lookup::GridAvx2 | Lookup::TreeAvx512 | Lookup::Cells
        )
        && std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    for (b, (xs, ys)) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)).enumerate() {
        let n = xs.len();
        let first = b * BLOCK;
        let mut xin = [0.0f32; BLOCK];
        xin[..n].copy_from_slice(xs);
        // 32-bit positions: twice as many per vector as `usize`.
        let mut j = [0u32; BLOCK];
        let mut counts = [0u32; BLOCK];
        if let Some(cells) = cells {
            // Buckets first, in a loop that vectorises; then one read each.
            let mut bucket = [0u32; BLOCK];
            for e in 0..BLOCK {
                bucket[e] = cells.grid.bucket(xin[e]) as u32;
            }
            for e in 0..n {
                (j[e], ys[e], counts[e]) = cells.find(t, bucket[e] as usize, xin[e]);
            }
        } else {
            match grid {
                #[cfg(target_arch = "x86_64")]
                Some(grid) if avx2 => {
                    let mut out = [0.0f32; BLOCK];
                    // SAFETY: AVX2 was detected just above.
                    unsafe { grid_avx2(t, grid, &xin, &mut j, &mut out, &mut counts) };
                    ys.copy_from_slice(&out[..n]);
                }
                Some(grid) => {
                    for e in 0..BLOCK {
                        j[e] = grid.start[grid.bucket(xin[e])] as u32;
                    }
                    for _ in 0..grid.steps {
                        for e in 0..BLOCK {
                            let bound = t.bounds[j[e] as usize & mask];
                            j[e] += (bound <= xin[e]) as u32;
                        }
                    }
                }
                None => {
                    let mut half = size / 2;
                    while half > 0 {
                        for e in 0..BLOCK {
                            let bound = t.bounds[(j[e] as usize + half - 1) & mask];
                            j[e] += if bound <= xin[e] { half as u32 } else { 0 };
                        }
                        half /= 2;
                    }
                }
            }
        }
        if !avx2 && cells.is_none() {
            for e in 0..n {
                let k = (j[e] as usize).min(last);
                ys[e] = t.outputs[k];
                counts[e] = t.spikes[k];
            }
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
        let mut rand = crate::testing::uniform(seed);
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
    /// of both signs, subnormals, the extremes, infinities, NaN, both sides of every bound and
    /// of every grid bucket's edge; by each way of finding the interval.
    #[test]
    fn intervals_give_the_definition_bit_for_bit() {
        use crate::amos::closed_form::{self, Rounding};
        let mut units: Vec<AmosUnit> = [(8, 1, 0.5), (12, 2, 0.3), (12, 3, 2.0), (6, 4, 0.0)]
            .into_iter()
            .map(|(k, seed, inhibition)| random_unit(k, seed, inhibition))
            .collect();
        // 1024 and 64 intervals of nearly equal width (grids of one step).
        units.push(closed_form::relu6(10, Rounding::Nearest));
        units.push(closed_form::identity(6, -3.0, 5.0, Rounding::Truncate));
        // 32, 128 and 256 intervals: trees of every depth, tables of every size up to 16
        // vectors (with the 8, 12 and 64 intervals above).
        for k in [5, 7, 8] {
            units.push(closed_form::identity(k, -2.0, 7.0, Rounding::Nearest));
        }
        let mut lookups = vec![Lookup::Grid, Lookup::Binary, Lookup::Cells];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            lookups.push(Lookup::GridAvx2);
        }
        #[cfg(target_arch = "x86_64")]
        if tree::available() {
            lookups.push(Lookup::TreeAvx512);
        }
        let (mut tabulated, mut gridded, mut treed, mut most) = (0, 0, 0, 0);
        let mut celled = 0;
        for (seed, unit) in units.iter().enumerate() {
            let Some(table) = Intervals::new(unit) else {
                continue;
            };
            tabulated += 1;
            let k = unit.k();
            let mut xs: Vec<f32> = (0..40_000).map(|i| -20.0 + i as f32 * 0.001).collect();
            let mut bits = seed as u64;
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
            if let Some(grid) = &table.grid {
                gridded += 1;
                for b in 0..=grid.mask {
                    let edge = grid.lo + b as f32 / grid.scale;
                    xs.extend([edge, edge.next_down(), edge.next_up()]);
                }
            }
            if let Some(cells) = &table.cells {
                celled += 1;
                let grid = &cells.grid;
                for b in 0..=grid.mask {
                    let edge = grid.lo + b as f32 / grid.scale;
                    xs.extend([edge, edge.next_down(), edge.next_up()]);
                }
            }
            if let Some(tree) = &table.tree {
                treed += 1;
                most = most.max(table.len());
                for &x in xs.iter().filter(|x| x.is_finite()) {
                    assert_eq!(tree.tree.position(x), table.interval(x), "K {k} at {x:e}");
                }
            }
            // Past the first half no fanout: blocks with a fanout, without, and one across.
            let fanout: Vec<u32> = (0..xs.len() as u32 / 2 + 7).map(|i| i % 5).collect();
            // Each lookup as the units run it, and the portable cell lookup throughout.
            let runs = lookups
                .iter()
                .map(|&l| (l, false))
                .chain([(Lookup::Cells, true)]);
            for (lookup, portable) in runs {
                let (mut y, mut z) = (vec![0.0; xs.len()], vec![0; xs.len()]);
                let counts = if portable {
                    search(&table, lookup, unit, &xs, &mut y, Some(&mut z), &fanout)
                } else {
                    eval_by(&table, lookup, unit, &xs, &mut y, Some(&mut z), &fanout)
                };
                let (mut spikes, mut synops) = (0, 0);
                for (e, &x) in xs.iter().enumerate() {
                    let (word, out) = unit.eval(x, 0.0);
                    assert_eq!(
                        (z[e], y[e].to_bits()),
                        (word, out.to_bits()),
                        "K {k} at {x:e}, {lookup:?} (portable: {portable})"
                    );
                    spikes += word.count_ones() as u64;
                    synops += word.count_ones() as u64 * *fanout.get(e).unwrap_or(&0) as u64;
                }
                assert_eq!(
                    counts,
                    (spikes, synops),
                    "{lookup:?} (portable: {portable})"
                );
                // Without spike words (the kernels' own way to the counts).
                let mut alone = vec![0.0; xs.len()];
                let counts = if portable {
                    search(&table, lookup, unit, &xs, &mut alone, None, &fanout)
                } else {
                    eval_by(&table, lookup, unit, &xs, &mut alone, None, &fanout)
                };
                let same = alone
                    .iter()
                    .zip(&y)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "K {k}, {lookup:?} without words (portable: {portable})"
                );
                assert_eq!(counts, (spikes, synops), "{lookup:?} without words");
            }
        }
        assert!(tabulated >= 5, "only {tabulated} units tabulated");
        assert!(gridded >= 4, "only {gridded} units with a grid");
        assert_eq!(celled, tabulated, "units without cells");
        assert!(treed >= 2, "only {treed} units with a tree");
        assert_eq!(most, tree::MAX_ENTRIES, "no tree of every level");
    }
}
