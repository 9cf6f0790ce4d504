//! Small sorted tables searched in AVX-512 registers instead of by gathers from memory.
//!
//! A binary search over at most 256 sorted bounds visits one bound per level, and at level l
//! it can be at one of only 2^l: so the bounds of each level fit in one to eight vector
//! registers, and a level's step for 16 inputs at once is a register permutation indexed by
//! the node reached so far, a comparison, and a masked add. A table of at most 256 entries
//! indexed by the result is read the same way ([`Table::lookup`]). Only comparisons and moves
//! of bits, so the results are exactly the scalar search's.
//!
//! Used by [`super::intervals`] (a fitted unit's interval of its input) and [`super::memo`]
//! (the level of an SE product's first input).

/// Most levels of a [`Tree`]: 256 positions, whose bounds fit in 16 AVX-512 registers.
pub(super) const MAX_LEVELS: u32 = 8;

/// Most entries of a [`Table`]: 16 vectors of 16.
pub(super) const MAX_ENTRIES: usize = 1 << MAX_LEVELS;

/// Where each level of a [`Tree`] starts: levels 0 to 4 (at most 16 bounds) one vector of 16
/// each, then 32, 64 and 128 bounds.
const LEVEL_START: [usize; MAX_LEVELS as usize] = [0, 16, 32, 48, 64, 80, 112, 176];

/// Whether this CPU runs the register searches: AVX-512F for the walk and table reads, VBMI
/// for the byte tables. Their callers' one test of the CPU.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Bounds of all levels, each level padded to whole vectors.
const TREE_LEN: usize = 304;

/// The bounds a binary search over a power-of-two list compares with, level by level: at
/// level l (half = size / 2^(l+1)) the search has chosen one of 2^l nodes n, all of whose
/// positions start at n·2·half, and compares with `bounds[n·2·half + half − 1]`; its next
/// node is 2n + 1 where that bound is at or below the input, else 2n. After the last level
/// the node is the number of bounds at or below the input, among all but the last: the search
/// never reads the last bound (padding, +∞, in every use here).
#[derive(Clone, Debug)]
pub(super) struct Tree {
    levels: u32,
    /// Level l's bounds from [`LEVEL_START`]`[l]`.
    bounds: Box<[f32; TREE_LEN]>,
}

impl Tree {
    /// The tree of ascending `bounds`, a power of two long (pad with +∞), if at most 256.
    pub(super) fn new(bounds: &[f32]) -> Option<Tree> {
        let size = bounds.len();
        if !size.is_power_of_two() || size > MAX_ENTRIES {
            return None;
        }
        let levels = size.ilog2();
        let mut bounds_by_level = Box::new([f32::INFINITY; TREE_LEN]);
        for l in 0..levels {
            let half = size >> (l + 1);
            for n in 0..1usize << l {
                bounds_by_level[LEVEL_START[l as usize] + n] = bounds[n * 2 * half + half - 1];
            }
        }
        Some(Tree {
            levels,
            bounds: bounds_by_level,
        })
    }

    /// The walk for one input, element by element: the number of bounds `≤ x` but the last
    /// (for ascending bounds).
    #[cfg(test)]
    pub(super) fn position(&self, x: f32) -> usize {
        let mut n = 0;
        for start in &LEVEL_START[..self.levels as usize] {
            n = 2 * n + (self.bounds[start + n] <= x) as usize;
        }
        n
    }

    /// The walk for `V` vectors of inputs at once (independent chains side by side): per lane,
    /// the number of bounds `≤ x` but the last. A NaN input compares false throughout: 0.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn walk<const V: usize>(
        &self,
        x: &[std::arch::x86_64::__m512; V],
    ) -> [std::arch::x86_64::__m512i; V] {
        // SAFETY: as the caller's.
        unsafe { self.walk_matching::<V, false>(x).0 }
    }

    /// [`Tree::walk`] that also tells, per lane, whether some bound compared on the way has
    /// the input's very bits. For distinct ascending bounds, none NaN and not both zeros, that
    /// is whether the input *is* the last bound at or below it, `bounds[position − 1]`: that
    /// bound is on every search's path, and a later, greater one cannot equal it.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn walk_matching<const V: usize, const MATCH: bool>(
        &self,
        x: &[std::arch::x86_64::__m512; V],
    ) -> (
        [std::arch::x86_64::__m512i; V],
        [std::arch::x86_64::__mmask16; V],
    ) {
        use std::arch::x86_64::*;
        let mut matched = [0; V];
        // Per lane, whether the first step went up.
        let mut first_step: [__mmask16; V] = [0; V];
        let (bit5, bit6) = (_mm512_set1_epi32(32), _mm512_set1_epi32(64));
        // The walk keeps the node's first position p = n·2·half rather than n: the step is
        // then one masked add of `half` (n = p >> (levels − l) for the table read), where
        // 2n + 1 compiles to three operations.
        let mut position = [_mm512_setzero_si512(); V];
        let levels = self.levels as usize;
        for (level, &start) in LEVEL_START[..levels].iter().enumerate() {
            let at = &self.bounds[start..];
            // Whole vectors inside the bounds: level l has 2^l ≤ 128 from `start`, padded.
            // SAFETY: each load reads 16 floats of a slice 16 long.
            let table = |i: usize| unsafe { _mm512_loadu_ps(at[16 * i..16 * i + 16].as_ptr()) };
            let half = _mm512_set1_epi32(1 << (levels - level - 1));
            let shift = _mm_cvtsi32_si128((levels - level) as i32);
            for (((p, &xv), m), above) in position
                .iter_mut()
                .zip(x)
                .zip(&mut matched)
                .zip(&mut first_step)
            {
                let n = _mm512_srl_epi32(*p, shift);
                let bound = match level {
                    0 => _mm512_set1_ps(at[0]),
                    // Node 0 or 1 is the first step's outcome: a blend, not a permutation
                    // (the shuffle units are the walk's bottleneck).
                    1 => _mm512_mask_blend_ps(*above, _mm512_set1_ps(at[0]), _mm512_set1_ps(at[1])),
                    2..=4 => _mm512_permutexvar_ps(n, table(0)),
                    5 => _mm512_permutex2var_ps(table(0), n, table(1)),
                    6 => {
                        let low = _mm512_permutex2var_ps(table(0), n, table(1));
                        let high = _mm512_permutex2var_ps(table(2), n, table(3));
                        _mm512_mask_blend_ps(_mm512_test_epi32_mask(n, bit5), low, high)
                    }
                    _ => {
                        let q: [__m512; 4] = std::array::from_fn(|i| {
                            _mm512_permutex2var_ps(table(2 * i), n, table(2 * i + 1))
                        });
                        let upper = _mm512_test_epi32_mask(n, bit5);
                        let low = _mm512_mask_blend_ps(upper, q[0], q[1]);
                        let high = _mm512_mask_blend_ps(upper, q[2], q[3]);
                        _mm512_mask_blend_ps(_mm512_test_epi32_mask(n, bit6), low, high)
                    }
                };
                // `bound ≤ x` (false for NaN, as the scalar comparison): node 2n + 1.
                let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(bound, xv);
                if level == 0 {
                    *above = le;
                }
                *p = _mm512_mask_add_epi32(*p, le, *p, half);
                if MATCH {
                    let (b, x) = (_mm512_castps_si512(bound), _mm512_castps_si512(xv));
                    *m |= _mm512_cmpeq_epi32_mask(b, x);
                }
            }
        }
        (position, matched)
    }
}

/// At most 256 32-bit entries read by register permutations ([`Table::lookup`]).
#[derive(Clone, Debug)]
pub(super) struct Table {
    entries: Box<[f32; MAX_ENTRIES]>,
    /// Vectors of 16 that hold the entries: 1, 2, 4, 8 or 16.
    vectors: usize,
}

impl Table {
    /// The table of `entries` (their bits), if at most 256; zero past them.
    pub(super) fn new(entries: &[f32]) -> Option<Table> {
        if entries.len() > MAX_ENTRIES {
            return None;
        }
        let mut table = Table {
            entries: Box::new([0.0; MAX_ENTRIES]),
            vectors: vectors_for(entries.len()),
        };
        table.entries[..entries.len()].copy_from_slice(entries);
        Some(table)
    }

    /// `entries[j]` for each lane's `j` (below the table's vectors·16; zero past the entries
    /// given): [`lookup`].
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn lookup(&self, j: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512 {
        // SAFETY: as the caller's.
        unsafe { lookup(&self.entries, self.vectors, j) }
    }
}

/// Vectors of 16 that hold `n` entries for [`lookup`]: 1, 2, 4, 8 or 16.
pub(super) fn vectors_for(n: usize) -> usize {
    n.div_ceil(16).next_power_of_two()
}

/// `entries[j]` for each lane's `j < 16·vectors` (`vectors` 1, 2, 4, 8 or 16): one
/// permutation picks within each pair of vectors by bits 0–4 of `j`, then blends by bits 5, 6
/// and 7 pick the pair. Bits move unchanged.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn lookup(
    entries: &[f32; MAX_ENTRIES],
    vectors: usize,
    j: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: each load reads 16 floats of a slice 16 long.
    let at = |i: usize| unsafe { _mm512_loadu_ps(entries[16 * i..16 * i + 16].as_ptr()) };
    let pair = |i: usize| _mm512_permutex2var_ps(at(2 * i), j, at(2 * i + 1));
    let bit = |b: i32| _mm512_test_epi32_mask(j, _mm512_set1_epi32(1 << b));
    let quad = |i: usize, upper| _mm512_mask_blend_ps(upper, pair(2 * i), pair(2 * i + 1));
    match vectors {
        1 => _mm512_permutexvar_ps(j, at(0)),
        2 => pair(0),
        4 => quad(0, bit(5)),
        8 => {
            let b5 = bit(5);
            _mm512_mask_blend_ps(bit(6), quad(0, b5), quad(1, b5))
        }
        _ => {
            let (b5, b6) = (bit(5), bit(6));
            let low = _mm512_mask_blend_ps(b6, quad(0, b5), quad(1, b5));
            let high = _mm512_mask_blend_ps(b6, quad(2, b5), quad(3, b5));
            _mm512_mask_blend_ps(bit(7), low, high)
        }
    }
}

/// `bytes[j]` (zero-extended) for each lane's `j < 256` by VBMI's byte permutation: bits 0–6
/// of `j` pick among 128 bytes, bit 7 between the two halves (read only where
/// `upper_half`: `j < 128` in every lane otherwise), and the other bytes of each lane are
/// dropped.
///
/// # Safety
/// The CPU has AVX-512F and VBMI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vbmi")]
#[inline]
pub(super) unsafe fn lookup_bytes(
    bytes: &[u8; MAX_ENTRIES],
    upper_half: bool,
    j: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: each load reads 64 bytes of a slice 64 long.
    let at = |i: usize| unsafe { _mm512_loadu_si512(bytes[64 * i..64 * i + 64].as_ptr().cast()) };
    let picked = _mm512_permutex2var_epi8(at(0), j, at(1));
    let picked = if upper_half {
        let upper = _mm512_permutex2var_epi8(at(2), j, at(3));
        let in_upper = _mm512_test_epi32_mask(j, _mm512_set1_epi32(128));
        _mm512_mask_blend_epi32(in_upper, picked, upper)
    } else {
        picked
    };
    _mm512_and_si512(picked, _mm512_set1_epi32(0xFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ascending bounds of every power-of-two length up to 256, with repeats and +∞ padding;
    /// inputs at, just below and just above every bound, beyond both ends, ±0, ±∞ and NaN.
    fn cases() -> Vec<(Vec<f32>, Vec<f32>)> {
        (0..=MAX_LEVELS)
            .map(|levels| {
                let size = 1usize << levels;
                let mut bounds: Vec<f32> = (0..size).map(|i| (i / 2) as f32 * 0.75 - 9.0).collect();
                if size > 2 {
                    bounds[size - 1] = f32::INFINITY;
                }
                let mut xs: Vec<f32> = bounds
                    .iter()
                    .flat_map(|&b| [b, b.next_down(), b.next_up()])
                    .collect();
                xs.extend([
                    -1e30,
                    1e30,
                    0.0,
                    -0.0,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::NAN,
                ]);
                (bounds, xs)
            })
            .collect()
    }

    /// The number of bounds but the last at or below x, by counting.
    fn count_below(bounds: &[f32], x: f32) -> usize {
        bounds[..bounds.len() - 1]
            .iter()
            .filter(|&&b| b <= x)
            .count()
    }

    #[test]
    fn walk_counts_the_bounds_at_or_below() {
        for (bounds, xs) in cases() {
            let tree = Tree::new(&bounds).expect("a power of two up to 256");
            for &x in &xs {
                // A NaN input compares false throughout: position 0.
                assert_eq!(
                    tree.position(x),
                    count_below(&bounds, x),
                    "{} bounds, {x:e}",
                    bounds.len()
                );
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                use std::arch::x86_64::*;
                for chunk in xs.chunks(32) {
                    let mut lanes = [0.0f32; 32];
                    lanes[..chunk.len()].copy_from_slice(chunk);
                    // SAFETY: AVX-512F was detected.
                    let got: [u32; 32] = unsafe {
                        let x = [
                            _mm512_loadu_ps(lanes[..16].as_ptr()),
                            _mm512_loadu_ps(lanes[16..].as_ptr()),
                        ];
                        std::mem::transmute(tree.walk(&x))
                    };
                    for (&x, &n) in lanes.iter().zip(&got) {
                        assert_eq!(
                            n as usize,
                            count_below(&bounds, x),
                            "{} bounds, {x:e}",
                            bounds.len()
                        );
                    }
                }
            }
        }
        assert!(Tree::new(&[0.0; 3]).is_none() && Tree::new(&[0.0; 512]).is_none());
    }

    /// Distinct bounds (one of them +0, none −0): an input matches exactly when it has the
    /// bits of the last bound at or below it.
    #[test]
    fn walk_matches_the_bound_it_lands_on() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            use std::arch::x86_64::*;
            for levels in 0..=MAX_LEVELS {
                let size = 1usize << levels;
                let mut bounds: Vec<f32> = (0..size).map(|i| i as f32 * 0.5 - 7.0).collect();
                bounds[size - 1] = f32::INFINITY;
                let mut xs: Vec<f32> = bounds
                    .iter()
                    .flat_map(|&b| [b, b.next_down(), b.next_up()])
                    .collect();
                xs.extend([-0.0, f32::NEG_INFINITY, f32::NAN, -1e30, 1e30]);
                let tree = Tree::new(&bounds).expect("a power of two up to 256");
                for chunk in xs.chunks(16) {
                    let mut lanes = [f32::NAN; 16];
                    lanes[..chunk.len()].copy_from_slice(chunk);
                    // SAFETY: AVX-512F was detected.
                    let (position, matched) = unsafe {
                        let x = [_mm512_loadu_ps(lanes.as_ptr())];
                        let (p, m) = tree.walk_matching::<1, true>(&x);
                        (std::mem::transmute::<__m512i, [u32; 16]>(p[0]), m[0])
                    };
                    for (i, (&x, &n)) in lanes.iter().zip(&position).enumerate() {
                        let n = n as usize;
                        assert_eq!(n, count_below(&bounds, x), "{size} bounds, {x:e}");
                        let expect = n > 0 && bounds[n - 1].to_bits() == x.to_bits();
                        assert_eq!((matched >> i) & 1 == 1, expect, "{size} bounds, {x:e}");
                    }
                }
            }
        }
    }

    #[test]
    fn lookup_reads_each_entry() {
        for len in [1, 5, 16, 17, 32, 40, 64, 65, 128, 200, 256] {
            let entries: Vec<f32> = (0..len)
                .map(|i| f32::from_bits(0x4000_0000 + i as u32 * 7919))
                .collect();
            let table = Table::new(&entries).expect("at most 256");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                use std::arch::x86_64::*;
                for start in (0..len).step_by(16) {
                    let j: [u32; 16] = std::array::from_fn(|i| ((start + i) % len) as u32);
                    // SAFETY: AVX-512F was detected.
                    let got: [u32; 16] = unsafe {
                        std::mem::transmute(table.lookup(_mm512_loadu_si512(j.as_ptr().cast())))
                    };
                    for (&j, &bits) in j.iter().zip(&got) {
                        assert_eq!(
                            bits,
                            entries[j as usize].to_bits(),
                            "{len} entries, entry {j}"
                        );
                    }
                }
            }
        }
        assert!(Table::new(&[0.0; 257]).is_none());
    }

    #[test]
    fn byte_lookup_reads_each_byte() {
        let bytes: [u8; MAX_ENTRIES] = std::array::from_fn(|i| (i * 37 % 251) as u8);
        #[cfg(target_arch = "x86_64")]
        if available() {
            use std::arch::x86_64::*;
            for (start, upper_half) in [
                (0, false),
                (112, false),
                (0, true),
                (120, true),
                (240, true),
            ] {
                let len = if upper_half { 256 } else { 128 };
                let j: [u32; 16] = std::array::from_fn(|i| ((start + 3 * i) % len) as u32);
                // SAFETY: AVX-512F and VBMI were detected.
                let got: [u32; 16] = unsafe {
                    std::mem::transmute(lookup_bytes(
                        &bytes,
                        upper_half,
                        _mm512_loadu_si512(j.as_ptr().cast()),
                    ))
                };
                for (&j, &b) in j.iter().zip(&got) {
                    assert_eq!(b, bytes[j as usize] as u32, "byte {j}");
                }
            }
        }
    }
}
