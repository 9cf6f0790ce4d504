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
//!
//! With AVX-512 (and VBMI), once there are at most 256 levels, they are also kept sorted as
//! a search in registers (the `tree` module), and each row's results by the levels' sorted
//! positions as register tables: 16 elements find their levels and results by register
//! permutations, with no hash probe or gather; a group with a level not in the tree (new,
//! NaN, or −0 beside +0) or a result not yet known goes the scalar way. With AVX2 alone, 16
//! elements find their levels at the first slot their hash probes, and their results, in
//! vector lanes (`settle_avx2`: the slots and results read whole, a load per lane); an input
//! further along the table (a collision) goes the scalar way too. On B0's structure that
//! made SNN mode 7% faster on the Zen 3 of session 20 (by gathers then), loads instead of
//! the gathers 3–6% more in session 22.

use rustc_hash::FxHashMap;

use super::tree::{self, Tree};
use super::unit::UnitKernel;
#[cfg(target_arch = "x86_64")]
use super::unit::{fields_avx2, synops_avx2, synops_avx512};

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
    /// Keyed by the second input's bits (a fast hash: one lookup per run).
    rows: FxHashMap<u32, Row>,
    /// The levels as a sorted table searched in registers, when the CPU has AVX-512 and
    /// there are at most 256, and `level_count` when it was built.
    tree: Option<LevelTree>,
    tree_levels: usize,
    /// Trees built so far: each row's register tables say for which they are laid out.
    trees_built: u64,
}

/// The remembered first inputs in ascending order, with their levels: an input's candidate
/// is the last value at or below it, and its level is that value's where the bits are equal
/// ([`Tree::walk_matching`]). Inputs not found (new, NaN, or −0 where +0 is a level: they
/// compare equal, so −0 is left out) go the scalar way.
struct LevelTree {
    tree: Tree,
    /// The least value (the tree's bounds are the others).
    least: f32,
    /// The level at each position (ascending by value), and the position of each level
    /// ([`NO_POSITION`] for a level left out).
    levels: Vec<u32>,
    positions: Box<[u16; PairMemo::MAX_LEVELS]>,
    count: usize,
    /// Which tree this is ([`PairMemo::trees_built`]), for the rows' register tables.
    id: u64,
}

/// A level not in the [`LevelTree`].
const NO_POSITION: u16 = u16::MAX;

impl LevelTree {
    fn new(slots: &[LevelSlot], id: u64) -> Option<LevelTree> {
        let mut found: Vec<(f32, u32)> = slots
            .iter()
            .filter(|s| s.level != NO_LEVEL)
            .map(|s| (f32::from_bits(s.bits), s.level))
            .filter(|(v, _)| !v.is_nan())
            .collect();
        if found.iter().any(|(v, _)| v.to_bits() == 0) {
            found.retain(|(v, _)| v.to_bits() != (-0.0f32).to_bits());
        }
        if found.is_empty() || found.len() > tree::MAX_ENTRIES {
            return None;
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut bounds: Vec<f32> = found[1..].iter().map(|&(v, _)| v).collect();
        bounds.resize(found.len().next_power_of_two(), f32::INFINITY);
        let levels: Vec<u32> = found.iter().map(|&(_, l)| l).collect();
        let mut positions = Box::new([NO_POSITION; PairMemo::MAX_LEVELS]);
        for (position, &level) in levels.iter().enumerate() {
            positions[level as usize] = position as u16;
        }
        Some(LevelTree {
            tree: Tree::new(&bounds)?,
            least: found[0].0,
            levels,
            positions,
            count: found.len(),
            id,
        })
    }

    /// Lays out `row`'s register tables by this tree's positions, if they are not yet.
    fn lay_out(&self, row: &mut Row) {
        if row.laid_out_for == self.id {
            return;
        }
        row.outputs.fill(0.0);
        row.counts.fill(NOT_KNOWN);
        for (position, &level) in self.levels.iter().enumerate() {
            let cell = row.cells[level as usize];
            if cell.state < PENDING {
                row.outputs[position] = cell.y;
                // At most MAX_NEURONS (64) spikes.
                row.counts[position] = cell.state as u8;
            }
        }
        row.laid_out_for = self.id;
    }

    /// The elements of `x` (in groups of 16) whose levels this tree finds and whose results
    /// in `row` are all known: their outputs into `y`, their spikes and synaptic operations
    /// (`fanout` as in [`UnitKernel::eval_counted`]) added to `counts`. Returns a bit per
    /// group, set where the group is done; the rest is left to the scalar way. Lays out the
    /// row's register tables first if they are not for this tree. Four groups walk the tree
    /// side by side (the walk is a chain of dependent steps).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vbmi")]
    unsafe fn settle(
        &self,
        row: &mut Row,
        x: &[f32],
        y: &mut [f32],
        fanout: &[u32],
        counts: &mut (u64, u64),
    ) -> u32 {
        use std::arch::x86_64::*;
        assert!(y.len() == x.len() && x.len() <= 32 * 16);
        self.lay_out(row);
        let groups = x.len() / 16;
        let mut lanes = Lanes {
            spikes: _mm512_setzero_si512(),
            synops: _mm512_setzero_si512(),
            done: 0,
        };
        let mut g = 0;
        // SAFETY: AVX-512F is enabled; the groups are inside `x` and `y`.
        unsafe {
            while g + 4 <= groups {
                self.settle_groups::<4>(row, g, x, y, fanout, &mut lanes);
                g += 4;
            }
            while g < groups {
                self.settle_groups::<1>(row, g, x, y, fanout, &mut lanes);
                g += 1;
            }
        }
        // At most 32 groups of 64 spikes per lane: no overflow.
        counts.0 += _mm512_reduce_add_epi32(lanes.spikes) as u32 as u64;
        counts.1 += _mm512_reduce_add_epi64(lanes.synops) as u64;
        lanes.done
    }

    /// [`LevelTree::settle`] for the `V` groups from group `first`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vbmi")]
    #[inline]
    unsafe fn settle_groups<const V: usize>(
        &self,
        row: &Row,
        first: usize,
        x: &[f32],
        y: &mut [f32],
        fanout: &[u32],
        lanes: &mut Lanes,
    ) {
        use std::arch::x86_64::*;
        let count = _mm512_set1_epi32(self.count as i32);
        let least = _mm512_castps_si512(_mm512_set1_ps(self.least));
        let not_known = _mm512_set1_epi32(NOT_KNOWN as i32);
        // Positions are below the count.
        let (vectors, upper_half) = (tree::vectors_for(self.count), self.count > 128);
        // SAFETY: AVX-512F and VBMI are enabled; loads and stores read and write 16 elements
        // of a group of `x`, `y` and `fanout` inside them (`get`).
        unsafe {
            let xv: [__m512; V] = std::array::from_fn(|v| {
                _mm512_loadu_ps(x[16 * (first + v)..16 * (first + v) + 16].as_ptr())
            });
            let (node, matched) = self.tree.walk_matching::<V, true>(&xv);
            for (v, ((&j, &matched), &xv)) in node.iter().zip(&matched).zip(&xv).enumerate() {
                let start = 16 * (first + v);
                let fan = fanout.get(start..start + 16);
                if fan.is_none() && start < fanout.len() {
                    continue;
                }
                // The input is the value at j: a bound it matched on the way (j > 0), or the
                // least value (j = 0); past the count, a padding bound.
                let found = (matched | _mm512_cmpeq_epi32_mask(_mm512_castps_si512(xv), least))
                    & _mm512_cmplt_epu32_mask(j, count);
                if found != 0xFFFF {
                    continue;
                }
                let state = tree::lookup_bytes(&row.counts, upper_half, j);
                if _mm512_cmpeq_epi32_mask(state, not_known) != 0 {
                    continue;
                }
                let out = tree::lookup(&row.outputs, vectors, j);
                _mm512_storeu_ps(y[start..start + 16].as_mut_ptr(), out);
                lanes.spikes = _mm512_add_epi32(lanes.spikes, state);
                if let Some(fan) = fan {
                    let f = _mm512_loadu_si512(fan.as_ptr().cast());
                    lanes.synops = _mm512_add_epi64(lanes.synops, synops_avx512(state, f));
                }
                lanes.done |= 1 << (first + v);
            }
        }
    }
}

/// [`LevelTree::settle`] without AVX-512, in AVX2 lanes: the groups of 16 elements of `x`
/// (at most 32 groups) whose every input sits in the first slot its hash probes in the level
/// table and whose results in `row` are all known. Their outputs go into `y`, their spikes
/// and synaptic operations (`fanout` as in [`UnitKernel::eval_counted`]) are added to
/// `counts`; returns a bit per group, set where the group is done. The rest (an input new,
/// or moved along the table by a collision, or a result not yet known) is left to the scalar
/// way. Only reads of what the scalar way reads, so the same results. The level slots and
/// the row's cells are read whole, one load per lane ([`fields_avx2`]): four gathers per 8
/// inputs took 16% of a B0-structure SNN run on a Zen 3 (session 22).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn settle_avx2(
    levels: &[LevelSlot],
    row: &Row,
    x: &[f32],
    y: &mut [f32],
    fanout: &[u32],
    counts: &mut (u64, u64),
) -> u32 {
    use std::arch::x86_64::*;
    const SHIFT: i32 = 32 - PairMemo::LEVEL_BITS as i32;
    assert!(y.len() == x.len() && x.len() <= 32 * 16);
    assert!(levels.len() == 1 << PairMemo::LEVEL_BITS && row.cells.len() == PairMemo::MAX_LEVELS);
    let (slots, cells) = (
        levels.as_ptr().cast::<u64>(),
        row.cells.as_ptr().cast::<u64>(),
    );
    let mut done = 0u32;
    // SAFETY: AVX2 is enabled; loads and stores stay inside a group of `x`, `y` and `fanout`
    // (`get`); slot indices are hashes below the table's length (asserted), and cells are
    // read only at levels checked below MAX_LEVELS, the row's length.
    unsafe {
        let golden = _mm256_set1_epi32(PairMemo::HASH as i32);
        let last_level = _mm256_set1_epi32(PairMemo::MAX_LEVELS as i32 - 1);
        let mut lane_spikes = _mm256_setzero_si256();
        let mut synops = _mm256_setzero_si256();
        'groups: for g in 0..x.len() / 16 {
            let start = 16 * g;
            let fan = fanout.get(start..start + 16);
            if fan.is_none() && start < fanout.len() {
                continue;
            }
            let mut outputs = [_mm256_setzero_ps(); 2];
            let mut states = [_mm256_setzero_si256(); 2];
            for v in 0..2 {
                let bits = _mm256_loadu_si256(x.as_ptr().add(start + 8 * v).cast());
                // `PairMemo::level`'s first probe.
                let slot = _mm256_srli_epi32::<SHIFT>(_mm256_mullo_epi32(bits, golden));
                let mut index = [0u32; 8];
                _mm256_storeu_si256(index.as_mut_ptr().cast(), slot);
                let (found, level) = fields_avx2(slots, &index);
                // The slot holds the input's bits and a level (an empty slot's bits may be
                // left from before the levels started over; its level is NO_LEVEL).
                let numbered = _mm256_cmpeq_epi32(_mm256_min_epu32(level, last_level), level);
                let matched = _mm256_and_si256(_mm256_cmpeq_epi32(found, bits), numbered);
                if _mm256_movemask_epi8(matched) != -1 {
                    continue 'groups;
                }
                _mm256_storeu_si256(index.as_mut_ptr().cast(), level);
                let (output, state) = fields_avx2(cells, &index);
                (outputs[v], states[v]) = (_mm256_castsi256_ps(output), state);
                // Known: a spike count, not UNKNOWN or PENDING plus an index (≥ 2^31).
                if _mm256_movemask_ps(_mm256_castsi256_ps(states[v])) != 0 {
                    continue 'groups;
                }
            }
            for (v, (&out, &state)) in outputs.iter().zip(&states).enumerate() {
                _mm256_storeu_ps(y.as_mut_ptr().add(start + 8 * v), out);
                lane_spikes = _mm256_add_epi32(lane_spikes, state);
                if let Some(fan) = fan {
                    let f = _mm256_loadu_si256(fan.as_ptr().add(8 * v).cast());
                    synops = _mm256_add_epi64(synops, synops_avx2(state, f));
                }
            }
            done |= 1 << g;
        }
        // At most 32 groups of 64 spikes per lane: no overflow.
        let (mut spikes, mut wide) = ([0u32; 8], [0u64; 4]);
        _mm256_storeu_si256(spikes.as_mut_ptr().cast(), lane_spikes);
        _mm256_storeu_si256(wide.as_mut_ptr().cast(), synops);
        counts.0 += spikes.iter().map(|&s| s as u64).sum::<u64>();
        counts.1 += wide.iter().sum::<u64>();
    }
    done
}

/// What [`LevelTree::settle`] accumulates in vector lanes.
#[cfg(target_arch = "x86_64")]
struct Lanes {
    spikes: std::arch::x86_64::__m512i,
    synops: std::arch::x86_64::__m512i,
    done: u32,
}

/// `repr(C)`: [`settle_avx2`] reads a slot whole, as its two fields in order.
#[derive(Clone, Copy)]
#[repr(C)]
struct LevelSlot {
    bits: u32,
    level: u32,
}

const NO_LEVEL: u32 = u32::MAX;

/// Results by level for one second-input value.
struct Row {
    cells: Box<[Cell]>,
    words: Box<[u64]>,
    /// Known outputs and spike counts ([`NOT_KNOWN`] where not yet) by position in the
    /// [`LevelTree`] with id `laid_out_for` (0: none), for [`LevelTree::settle`].
    outputs: Box<[f32; tree::MAX_ENTRIES]>,
    counts: Box<[u8; tree::MAX_ENTRIES]>,
    laid_out_for: u64,
}

/// A count byte of a cell not yet known (spike counts are at most 64).
const NOT_KNOWN: u8 = u8::MAX;

/// A pair's output and `state`: its spike count when known, [`UNKNOWN`], or [`PENDING`] plus
/// its index among the pairs being evaluated.
#[derive(Clone, Copy)]
#[repr(C)]
struct Cell {
    y: f32,
    state: u32,
}

// Records of two 32-bit fields and no padding, as [`fields_avx2`] reads them.
const _: () = assert!(std::mem::size_of::<LevelSlot>() == 8 && std::mem::size_of::<Cell>() == 8);

const UNKNOWN: u32 = u32::MAX;
const PENDING: u32 = 1 << 31;

impl PairMemo {
    /// Levels remembered: twice a swish unit's decoded outputs.
    const MAX_LEVELS: usize = 512;
    /// Level table slots (at most half full).
    const LEVEL_BITS: u32 = 10;
    /// An input's first slot is the top `LEVEL_BITS` of its bits times this (Fibonacci
    /// hashing), in [`PairMemo::level`] and in [`settle_avx2`]'s lanes alike.
    const HASH: u32 = 0x9E37_79B1;
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
            rows: FxHashMap::default(),
            tree: None,
            tree_levels: 0,
            trees_built: 0,
        }
    }

    /// Forgets every level (and so every row).
    fn clear(&mut self) {
        self.levels.iter_mut().for_each(|s| s.level = NO_LEVEL);
        self.level_count = 0;
        self.rows.clear();
        self.tree = None;
        self.tree_levels = 0;
    }

    /// Rebuilds the [`LevelTree`] if levels came since it was built (and the CPU can use it).
    fn refresh_tree(&mut self) {
        if self.tree_levels == self.level_count {
            return;
        }
        self.tree_levels = self.level_count;
        if tree::available() {
            self.trees_built += 1;
            self.tree = LevelTree::new(&self.levels, self.trees_built);
        }
    }

    /// The level of first input `bits`, numbered now if new; None when the levels are full.
    #[inline(always)]
    fn level(levels: &mut [LevelSlot], count: &mut usize, bits: u32) -> Option<usize> {
        let mask = levels.len() - 1;
        let mut i = (bits.wrapping_mul(Self::HASH) >> (32 - Self::LEVEL_BITS)) as usize;
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
    fn row(rows: &mut FxHashMap<u32, Row>, b: f32) -> &mut Row {
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
            outputs: Box::new([0.0; tree::MAX_ENTRIES]),
            counts: Box::new([NOT_KNOWN; tree::MAX_ENTRIES]),
            laid_out_for: 0,
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
        memo.refresh_tree();
        // Elements whose levels are found before their cells are read.
        const CHUNK: usize = 256;
        let (mut spikes, mut synops) = (0u64, 0u64);
        // Pairs to evaluate (with their level, if remembered), and the elements waiting for
        // each (by its index there).
        let (mut todo_x, mut todo_x2) = (Vec::new(), Vec::new());
        let mut todo_level: Vec<Option<usize>> = Vec::new();
        let mut waiting: Vec<(usize, u32)> = Vec::new();
        // The levels of a part of a chunk (every entry written before it is read).
        let mut found = [NO_LEVEL; CHUNK];
        // Without the register search, whether `settle_avx2` runs here.
        #[cfg(target_arch = "x86_64")]
        let gathers = std::arch::is_x86_feature_detected!("avx2");
        let mut run = |range: std::ops::Range<usize>, b: f32, memo: &mut PairMemo| {
            let PairMemo {
                levels,
                level_count,
                rows,
                tree,
                ..
            } = memo;
            let row = PairMemo::row(rows, b);
            for start in range.clone().step_by(CHUNK) {
                let chunk = start..(start + CHUNK).min(range.end);
                // Groups of 16 the register search settles (not while recording words).
                let done = match tree {
                    #[cfg(target_arch = "x86_64")]
                    Some(tree) if z.is_none() => {
                        let fan = &fanout[chunk.start.min(fanout.len())..];
                        let (xs, ys) = (&x[chunk.clone()], &mut y[chunk.clone()]);
                        let mut counts = (0, 0);
                        // SAFETY: the tree is built only where AVX-512F and VBMI were detected.
                        let done = unsafe { tree.settle(row, xs, ys, fan, &mut counts) };
                        spikes += counts.0;
                        synops += counts.1;
                        done
                    }
                    #[cfg(target_arch = "x86_64")]
                    None if z.is_none() && gathers => {
                        let fan = &fanout[chunk.start.min(fanout.len())..];
                        let (xs, ys) = (&x[chunk.clone()], &mut y[chunk.clone()]);
                        let mut counts = (0, 0);
                        // SAFETY: AVX2 was detected.
                        let done = unsafe { settle_avx2(levels, row, xs, ys, fan, &mut counts) };
                        spikes += counts.0;
                        synops += counts.1;
                        done
                    }
                    _ => 0,
                };
                // The rest the scalar way: groups not settled, and the tail.
                let groups = chunk.len() / 16;
                let rest = (0..groups)
                    .filter(|g| (done >> g) & 1 == 0)
                    .map(|g| chunk.start + 16 * g..chunk.start + 16 * g + 16)
                    .chain(std::iter::once(chunk.start + 16 * groups..chunk.end))
                    .filter(|r| !r.is_empty());
                for part in rest {
                    // First every element's level (no chain from one element to the next),
                    // then the cells: all known, the common case, in a tight loop.
                    let found = &mut found[..part.len()];
                    let mut all_known = true;
                    for (f, e) in found.iter_mut().zip(part.clone()) {
                        let level = PairMemo::level(levels, level_count, x[e].to_bits());
                        *f = level.map_or(NO_LEVEL, |l| l as u32);
                        all_known &= level.is_some_and(|l| row.cells[l].state < PENDING);
                    }
                    if all_known {
                        let fan =
                            fanout.get(part.start.min(fanout.len())..part.end.min(fanout.len()));
                        let words = z.as_deref_mut().map(|z| &mut z[part.clone()]);
                        let (s, o) =
                            row.known(found, &mut y[part.clone()], words, fan.unwrap_or_default());
                        spikes += s;
                        synops += o;
                        continue;
                    }
                    for (&f, e) in found.iter().zip(part) {
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
                let count = words[i].count_ones();
                row.cells[l] = Cell {
                    y: ys[i],
                    state: count,
                };
                row.words[l] = words[i];
                // Into the register tables too, where laid out for the current tree.
                if let Some(tree) = memo.tree.as_ref().filter(|t| t.id == row.laid_out_for) {
                    let position = tree.positions[l];
                    if position != NO_POSITION {
                        row.outputs[position as usize] = ys[i];
                        row.counts[position as usize] = count as u8;
                    }
                }
            }
        }
        (spikes, synops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amos::AmosUnit;
    use crate::testing::uniform;

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
        let mut rand = uniform(11);
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

    /// Few enough levels for the register search ([`LevelTree`]): runs of 196 and 49 and per
    /// element, a fanout that ends inside a group, ±0 side by side (equal as floats, apart by
    /// bits), known levels in new pairs, and new levels; every pass against the definition.
    /// Then the first run, all remembered, must be settled in registers.
    #[test]
    fn register_search_gives_the_definition_bit_for_bit() {
        let mut rand = uniform(5);
        let u = random_unit(40, &mut rand);
        let kernel = UnitKernel::new(u.clone());
        let mut levels: Vec<f32> = (0..200).map(|_| rand() * 5.0).collect();
        levels.extend([0.0, -0.0]);
        let gates: Vec<f32> = (0..6).map(|_| rand()).collect();
        let fresh: Vec<f32> = (0..16).map(|_| rand() * 5.0).collect();
        for run in [196, 49] {
            let mut x: Vec<f32> = (0..gates.len() * run)
                .map(|i| levels[(i * 7919) % 200])
                .collect();
            // ±0 only after the first run.
            for (k, e) in (run..x.len()).step_by(37).enumerate() {
                x[e] = levels[200 + k % 2];
            }
            // Uneven runs: the last is twice as long.
            let each: Vec<f32> = (0..x.len())
                .map(|e| gates[(e * 7 / x.len()).min(5)])
                .collect();
            let fanout: Vec<u32> = (0..x.len() as u32 - 37).map(|i| i % 9).collect();
            let runs = SecondInput::Runs {
                values: &gates,
                run,
            };
            for x2 in [runs, SecondInput::Each(&each)] {
                let mut memo = PairMemo::new();
                for pass in 0..5 {
                    let mut x = x.clone();
                    // Passes 2 and 3: known levels with new gates (cells not yet known, then
                    // known in the register tables laid out before); pass 4 also new levels
                    // (between known ones, and past them).
                    if pass >= 2 {
                        x.reverse();
                    }
                    if pass == 4 {
                        for (k, e) in (run..x.len()).step_by(23).enumerate() {
                            x[e] = fresh[k % fresh.len()];
                        }
                        x[run + 20] = 7.5;
                    }
                    let mut y = vec![0.0; x.len()];
                    let counts = kernel.eval_counted_memo(&x, x2, &mut y, None, &fanout, &mut memo);
                    let (mut spikes, mut synops) = (0u64, 0u64);
                    for e in 0..x.len() {
                        let b = match x2 {
                            SecondInput::Each(v) => v[e],
                            SecondInput::Runs { values, run } => values[e / run],
                        };
                        let (word, out) = u.eval(x[e], b);
                        assert_eq!(y[e].to_bits(), out.to_bits(), "element {e}, pass {pass}");
                        spikes += word.count_ones() as u64;
                        synops += word.count_ones() as u64 * *fanout.get(e).unwrap_or(&0) as u64;
                    }
                    assert_eq!(counts, (spikes, synops), "run {run}, pass {pass}");
                }
                #[cfg(target_arch = "x86_64")]
                if tree::available() {
                    memo.refresh_tree();
                    let tree = memo.tree.as_ref().expect("at most 256 levels: a tree");
                    // The first run's whole groups: pairs all remembered.
                    let (b, first_run) = match x2 {
                        SecondInput::Each(v) => {
                            (v[0], v.iter().take_while(|&&g| g == v[0]).count())
                        }
                        SecondInput::Runs { values, run } => (values[0], run),
                    };
                    let n = first_run / 16 * 16;
                    let row = memo
                        .rows
                        .get_mut(&b.to_bits())
                        .expect("the first run's row");
                    let mut y = vec![0.0; n];
                    // SAFETY: AVX-512F and VBMI were detected.
                    let done = unsafe { tree.settle(row, &x[..n], &mut y, &fanout, &mut (0, 0)) };
                    assert_eq!(done, (1 << (n / 16)) - 1, "run {run}");
                }
            }
        }
    }

    /// The AVX2 lanes settle the groups whose inputs and pairs are remembered, with the
    /// definition's outputs and counts, and leave a group with a new input, a group whose
    /// pair is not yet known and a group the fanout ends inside to the scalar way.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn lanes_settle_remembered_groups_as_the_definition() {
        assert!(
            std::arch::is_x86_feature_detected!("avx2"),
            "the CI machines have AVX2"
        );
        let mut rand = uniform(3);
        let u = random_unit(40, &mut rand);
        let kernel = UnitKernel::new(u.clone());
        let levels: Vec<f32> = (0..12).map(|_| rand() * 5.0).collect();
        let (gate, other_gate) = (0.37f32, -0.61f32);
        // Ten groups of 16 over the twelve levels.
        let mut x: Vec<f32> = (0..160).map(|i| levels[(i * 5) % 12]).collect();
        let fanout: Vec<u32> = (0..150).map(|i| i % 7 + 1).collect();
        let mut memo = PairMemo::new();
        let mut y = vec![0.0; x.len()];
        fn runs(values: &[f32]) -> SecondInput<'_> {
            SecondInput::Runs { values, run: 160 }
        }
        kernel.eval_counted_memo(&x, runs(&[gate]), &mut y, None, &fanout, &mut memo);
        // Group 2 gets an input never seen; group 4 one remembered only with another gate.
        x[2 * 16 + 3] = 9.25;
        let odd_one = 4 * 16 + 5;
        let lone = [rand() * 5.0];
        kernel.eval_counted_memo(&lone, runs(&[other_gate]), &mut [0.0], None, &[], &mut memo);
        x[odd_one] = lone[0];
        let row = memo.rows.get(&gate.to_bits()).expect("the gate's row");
        let mut y = vec![f32::NAN; x.len()];
        let mut counts = (0, 0);
        // SAFETY: AVX2 was detected.
        let done = unsafe { settle_avx2(&memo.levels, row, &x, &mut y, &fanout, &mut counts) };
        let (mut spikes, mut synops) = (0u64, 0u64);
        for g in (0..10).filter(|g| done >> g & 1 == 1) {
            for e in 16 * g..16 * g + 16 {
                let (word, out) = u.eval(x[e], gate);
                assert_eq!(y[e].to_bits(), out.to_bits(), "element {e}");
                spikes += word.count_ones() as u64;
                synops += word.count_ones() as u64 * *fanout.get(e).unwrap_or(&0) as u64;
            }
        }
        assert_eq!(counts, (spikes, synops));
        assert_eq!(done & (1 << 2 | 1 << 4 | 1 << 9), 0, "{done:b}");
        // The twelve levels sit in their first slots or not (a collision); most groups are
        // settled either way.
        assert!(done.count_ones() >= 4, "{done:b}");
    }
}
