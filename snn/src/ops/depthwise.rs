//! Depthwise convolution (one input channel per group) by direct accumulation.
//!
//! The definition, per output element: start from the bias, then add `w·x` for every kernel
//! tap that lands inside the image, ky then kx ascending. The fast path computes exactly that
//! on a zero-padded copy of each input plane, so that every tap is one contiguous, unmasked
//! vector load, whatever the position:
//!
//! - the padded plane is stored by *column phase* (column `j·stride + r` at phase `r`, index
//!   `j`), so that even a strided tap reads consecutive values;
//! - output rows are computed in tiles of [`LANES`] columns (of [`WIDE_LANES`] with
//!   AVX-512, [`wide_tiles`]), [`TILES`] tiles at a time, each accumulator in a register
//!   from the bias to the last tap (independent chains hide the latency of the additions).
//!
//! Small output planes (14×14 and less) go eight channels at a time instead
//! ([`by_channel_blocks`]): the block's planes interleaved into one zero-padded copy, one
//! output pixel of eight channels per vector, so no lane idles past a short row. With AVX2
//! the interleaving and its inverse (which also applies the clamp) are 8 × 8 transposes in
//! registers; with AVX-512 the blocks load each kernel row's pixels once for all its taps
//! and store their outputs into the planes themselves (`reuse`). The blocks' weights are
//! arranged once per layer ([`BlockWeights`]).
//!
//! A tap in the padding adds `w·0 = ±0`, which leaves every sum unchanged except the sign of
//! an exact zero. So an output that comes out as ±0 is recomputed by the definition; a
//! channel with a non-finite weight (where `w·0` is NaN) is computed by the definition
//! throughout. The result is bit-identical to the definition (tests below).

use std::sync::{Arc, OnceLock};

use super::activation::Clamp;

/// Output columns per tile: one AVX2 vector of f32.
const LANES: usize = 8;

/// Tiles computed together: independent accumulation chains, enough to keep both adders busy
/// through an addition's latency.
const TILES: usize = 8;

/// The shape of one depthwise convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Top and left zero padding (bottom and right follow from the output size).
    pub pads: [usize; 2],
    pub input: [usize; 2],
    pub output: [usize; 2],
}

impl Geometry {
    /// Rows of the padded plane: every row a tap of an output row reads.
    fn padded_rows(&self) -> usize {
        (self.output[0] - 1) * self.stride[0] + (self.kernel[0] - 1) * self.dilation[0] + 1
    }

    /// Values per phase of a padded row: every column a tap of an output row in tiles of
    /// `lanes` reads.
    fn phase_len(&self, lanes: usize) -> usize {
        let tiled_width = self.output[1].div_ceil(lanes) * lanes;
        let width =
            (tiled_width - 1) * self.stride[1] + (self.kernel[1] - 1) * self.dilation[1] + 1;
        width.div_ceil(self.stride[1])
    }

    /// Per kernel tap (ky, kx ascending), where it reads in a padded plane with phases of
    /// `phase_len`, from where the output pixel's first tap reads.
    fn tap_offsets(&self, phase_len: usize) -> Vec<usize> {
        let [kh, kw] = self.kernel;
        let [dh, dw] = self.dilation;
        let sw = self.stride[1];
        let row_len = sw * phase_len;
        (0..kh)
            .flat_map(|ky| (0..kw).map(move |kx| (ky * dh, kx * dw)))
            .map(|(row, a)| row * row_len + (a % sw) * phase_len + a / sw)
            .collect()
    }
}

/// A convolution's input planes zero-padded and stored by column phase ([`pad_by_phase`]),
/// every tap of every output read where it lies: the operand of a product that is not
/// written out ([`super::matmul::matmul_bias_gathered`]).
pub(crate) struct PhaseLayout {
    /// The planes, one after another.
    pub padded: Vec<f32>,
    /// Per input channel and kernel tap (the weights' order), where the tap of the first
    /// output pixel reads.
    pub taps: Vec<usize>,
    /// From one output row's reads to the next's.
    pub row_step: usize,
}

impl PhaseLayout {
    /// `channels` planes of `planes` (each `g.input`), for tiles that read exactly their
    /// outputs' columns.
    pub(crate) fn new(g: &Geometry, planes: &[f32], channels: usize) -> PhaseLayout {
        let phase_len = g.phase_len(1);
        let row_len = g.stride[1] * phase_len;
        let plane_len = g.padded_rows() * row_len;
        let [h, w] = g.input;
        let mut padded = vec![0.0f32; channels * plane_len];
        for (plane, dst) in planes
            .chunks_exact(h * w)
            .zip(padded.chunks_exact_mut(plane_len))
        {
            pad_by_phase(g, plane, dst, phase_len);
        }
        let offsets = g.tap_offsets(phase_len);
        let taps = (0..channels)
            .flat_map(|c| offsets.iter().map(move |&o| c * plane_len + o))
            .collect();
        PhaseLayout {
            padded,
            taps,
            row_step: g.stride[0] * row_len,
        }
    }
}

/// Convolves `planes` (`[C, H, W]`) with `m = out_channels / C` output channels per input
/// channel into `dst` (`[C·m, OH, OW]`): `weight` is `[C·m, kH, kW]`. Then `clamp`, plane by
/// plane while each is in cache. `blocks` keeps the weights as the blocks of channels of
/// small planes read them, arranged on first use: the same for every call with `weight`.
pub(crate) fn depthwise(
    g: &Geometry,
    planes: &[f32],
    weight: &[f32],
    bias: &[f32],
    blocks: &OnceLock<Arc<BlockWeights>>,
    dst: &mut [f32],
    clamp: Option<Clamp>,
) {
    let [h, w] = g.input;
    let [oh, ow] = g.output;
    let [kh, kw] = g.kernel;
    let taps = kh * kw;
    let channels = bias.len();
    if oh == 0 || ow == 0 || channels == 0 {
        return;
    }
    if h * w == 0 {
        // No tap inside an empty image: the bias alone.
        for (out, &b) in dst.chunks_mut(oh * ow).zip(bias) {
            out.fill(clamp.map_or(b, |c| c.apply(b)));
        }
        return;
    }
    let c = planes.len() / (h * w);
    let m = channels / c.max(1);
    // Small planes: eight channels at a time, as far as whole blocks go.
    let blocked = if m == 1 && oh * ow <= BLOCKED_MAX_PLANE {
        channels / BLOCK * BLOCK
    } else {
        0
    };
    if blocked > 0 {
        let blocks = blocks.get_or_init(|| Arc::new(BlockWeights::new(weight, taps, blocked)));
        by_channel_blocks(
            g,
            planes,
            weight,
            blocks,
            bias,
            &mut dst[..blocked * oh * ow],
            clamp,
        );
    }
    let wide = wide_tiles(g.output[1]);
    let plan = Plan::new(g, if wide { WIDE_LANES } else { LANES });
    let mut padded = vec![0.0f32; g.padded_rows() * g.stride[1] * plan.phase_len];
    // The input plane now in `padded`.
    let mut padded_plane = None;
    for (oc, (out, (wk, &b))) in dst
        .chunks_mut(oh * ow)
        .zip(weight.chunks(taps).zip(bias))
        .enumerate()
        .skip(blocked)
    {
        let plane = &planes[(oc / m) * h * w..(oc / m + 1) * h * w];
        if !wk.iter().all(|v| v.is_finite()) {
            channel_by_definition(g, plane, wk, b, out);
            if let Some(clamp) = clamp {
                clamp.apply_all(out);
            }
            continue;
        }
        if padded_plane != Some(oc / m) {
            pad_by_phase(g, plane, &mut padded, plan.phase_len);
            padded_plane = Some(oc / m);
        }
        // Wide tiles clamp as they store.
        let (some_zero, clamped) = if wide {
            // SAFETY: `wide_tiles` checked for AVX-512F.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                (
                    channel_avx512(&plan, &padded, wk, b, out, clamp),
                    clamp.is_some(),
                )
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("wide tiles are for AVX-512")
        } else {
            (channel(&plan, &padded, wk, b, out), false)
        };
        if some_zero {
            if clamped {
                // The sums again, unclamped, to tell which are ±0.
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    channel_avx512(&plan, &padded, wk, b, out, None)
                };
            }
            // An exact zero may have the other sign than the definition's: recompute it.
            for (i, v) in out.iter_mut().enumerate() {
                if *v == 0.0 {
                    *v = pixel_by_definition(g, plane, wk, b, [i / ow, i % ow]);
                }
            }
        }
        if let Some(clamp) = clamp.filter(|_| some_zero || !clamped) {
            clamp.apply_all(out);
        }
    }
}

/// Writes `plane` into `padded`: padded row `y + pad_top`, column `x + pad_left`, stored at
/// phase `column % stride`, index `column / stride`. Every plane of a convolution fills the
/// same positions, so the padding around them stays as allocated: zero.
fn pad_by_phase(g: &Geometry, plane: &[f32], padded: &mut [f32], phase_len: usize) {
    let [h, w] = g.input;
    let [pt, pl] = g.pads;
    let sw = g.stride[1];
    let row_len = sw * phase_len;
    for (y, src) in plane.chunks(w).enumerate().take(h) {
        let Some(row) = padded.get_mut((y + pt) * row_len..(y + pt + 1) * row_len) else {
            break;
        };
        if sw == 1 {
            let n = w.min(phase_len.saturating_sub(pl));
            row[pl..pl + n].copy_from_slice(&src[..n]);
            continue;
        }
        if sw == 2 {
            deinterleave_pairs(src, pl, row, phase_len);
            continue;
        }
        for (r, phase) in row.chunks_mut(phase_len).enumerate() {
            // The first input column at this phase, then every stride-th (a plain loop: the
            // iterator adaptors cost a division per element).
            let mut col = (r + sw - pl % sw) % sw;
            let mut slot = (col + pl) / sw;
            while col < src.len() && slot < phase.len() {
                phase[slot] = src[col];
                col += sw;
                slot += 1;
            }
        }
    }
}

/// [`pad_by_phase`]'s row for stride 2: input column x goes to padded column x + pl, at
/// phase (x + pl) mod 2, index (x + pl) / 2. Pairs of columns split into the two phases in a
/// loop that vectorises (compiled for AVX2 too, chosen at run time); columns past a phase's
/// end are not read by any tap and are dropped.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn deinterleave_pairs(src: &[f32], pl: usize, row: &mut [f32], phase_len: usize) {
    let (phase0, phase1) = row.split_at_mut(phase_len);
    // Even input columns land at phase pl mod 2 from index pl / 2, odd ones at the other
    // phase from (pl + 1) / 2.
    let (even, odd) = if pl.is_multiple_of(2) {
        (&mut phase0[pl / 2..], &mut phase1[pl / 2..])
    } else {
        (&mut phase1[pl / 2..], &mut phase0[pl.div_ceil(2)..])
    };
    let n = (src.len() / 2).min(even.len()).min(odd.len());
    for ((e, o), pair) in even[..n]
        .iter_mut()
        .zip(&mut odd[..n])
        .zip(src.chunks_exact(2))
    {
        *e = pair[0];
        *o = pair[1];
    }
    for (x, &v) in src.iter().enumerate().skip(2 * n) {
        let column = x + pl;
        if column / 2 < phase_len {
            row[(column % 2) * phase_len + column / 2] = v;
        }
    }
}

/// Where a channel's tiles read and write, the same for every channel of a convolution.
struct Plan {
    /// Values per phase of a padded row ([`Geometry::phase_len`]).
    phase_len: usize,
    /// Per kernel tap (ky, kx ascending), where it reads relative to a tile's start.
    offsets: Vec<usize>,
    /// Tiles in row-major order, [`TILES`] at a time (the last group repeats its last tile).
    groups: Vec<[Tile; TILES]>,
    /// One past the last padded value any tap of any tile reads.
    reach: usize,
    /// The output's rows and columns where the kernel is 3 × 3 at stride and dilation 1
    /// ([`three_by_three`]).
    three_by_three: Option<[usize; 2]>,
}

/// One tile: where it starts in the padded plane, and its output position and width.
#[derive(Clone, Copy)]
struct Tile {
    start: usize,
    out: usize,
    width: usize,
}

impl Plan {
    /// The plan for tiles of `lanes` columns.
    fn new(g: &Geometry, lanes: usize) -> Plan {
        let [sh, sw] = g.stride;
        let [oh, ow] = g.output;
        let phase_len = g.phase_len(lanes);
        let row_len = sw * phase_len;
        let offsets = g.tap_offsets(phase_len);
        let tiles: Vec<Tile> = (0..oh)
            .flat_map(|oy| {
                (0..ow).step_by(lanes).map(move |ox| Tile {
                    start: oy * sh * row_len + ox,
                    out: oy * ow + ox,
                    width: lanes.min(ow - ox),
                })
            })
            .collect();
        let groups = tiles
            .chunks(TILES)
            .map(|group| std::array::from_fn(|i| group[i.min(group.len() - 1)]))
            .collect();
        let reach = tiles.iter().map(|t| t.start).max().unwrap_or(0)
            + offsets.iter().max().copied().unwrap_or(0)
            + lanes;
        let three_by_three =
            (g.kernel == [3, 3] && g.stride == [1, 1] && g.dilation == [1, 1]).then_some(g.output);
        Plan {
            phase_len,
            offsets,
            groups,
            reach,
            three_by_three,
        }
    }
}

/// One output channel from its padded input plane: tiles of [`LANES`] output columns,
/// [`TILES`] at a time, each accumulated in the definition's order (bias, then ky, kx).
/// Returns whether some output is ±0. Compiled for AVX2 too and chosen at run time; Rust
/// never fuses a multiply and an add, so every build gives the same bits.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn channel(plan: &Plan, padded: &[f32], wk: &[f32], bias: f32, out: &mut [f32]) -> bool {
    // Per lane, whether some sum there was ±0 (lanes past a partial tile's width included:
    // a false alarm only costs the caller a look at the outputs).
    let mut zero = [false; LANES];
    // Every read below ends at or before `reach`: one check instead of one per tap and tile.
    assert!(plan.reach <= padded.len() && wk.len() >= plan.offsets.len());
    for group in &plan.groups {
        let mut acc = [[bias; LANES]; TILES];
        // The tiles' starts in registers, not read from the plan at every tap.
        let starts: [usize; TILES] = std::array::from_fn(|i| group[i].start);
        for (&offset, &wv) in plan.offsets.iter().zip(wk) {
            for (a, &start) in acc.iter_mut().zip(&starts) {
                // SAFETY: start + offset + LANES ≤ plan.reach ≤ padded.len() (asserted above).
                let src = unsafe { padded.get_unchecked(start + offset..) };
                for (l, a) in a.iter_mut().enumerate() {
                    // SAFETY: as above, l < LANES.
                    *a += wv * unsafe { *src.get_unchecked(l) };
                }
            }
        }
        // The last group's repeated tile writes the same values twice.
        for (a, tile) in acc.iter().zip(group) {
            if tile.width == LANES {
                out[tile.out..tile.out + LANES].copy_from_slice(a);
            } else {
                for (o, &v) in out[tile.out..tile.out + tile.width].iter_mut().zip(a) {
                    *o = v;
                }
            }
            for (z, &v) in zero.iter_mut().zip(a) {
                *z |= v == 0.0;
            }
        }
    }
    zero.contains(&true)
}

/// Output columns per tile of [`channel_avx512`]: one AVX-512 vector.
const WIDE_LANES: usize = 16;

/// Whether rows of `width` outputs go in tiles of [`WIDE_LANES`]: where the CPU has
/// AVX-512F and a row takes at most three wide vectors for every four of [`LANES`]. Half
/// the instructions per output outweigh the idle lanes of a partial tile: on a Zen 4 core
/// (one thread, `--example depthwise_speed`) Lite0's layers with 112-wide rows ran 21–34%
/// faster, with 56-wide ones (a wide tile half idle per row) 11–16%, 28-wide 12–18%.
fn wide_tiles(width: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return 4 * width.div_ceil(WIDE_LANES) <= 3 * width.div_ceil(LANES)
        && std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`channel`] in tiles of [`WIDE_LANES`] columns (a plan made for them): the same
/// multiplications and additions, with the same operands first, so the same bits. The
/// outputs are stored with `clamp` applied, which is [`Clamp::apply`] wherever no sum is ±0
/// (where one is, the caller redoes the channel).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn channel_avx512(
    plan: &Plan,
    padded: &[f32],
    wk: &[f32],
    bias: f32,
    out: &mut [f32],
    clamp: Option<Clamp>,
) -> bool {
    use std::arch::x86_64::*;
    if let Some(output) = plan.three_by_three {
        // SAFETY: AVX-512F, as the caller's.
        return unsafe { three_by_three(plan, output, padded, wk, bias, out, clamp) };
    }
    let (lo, hi) = clamp.map_or((0.0, 0.0), Clamp::bounds);
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    // Every read below ends at or before `reach`: one check instead of one per tap and tile.
    assert!(plan.reach <= padded.len() && wk.len() >= plan.offsets.len());
    let mut zero: __mmask16 = 0;
    for group in &plan.groups {
        let mut acc = [_mm512_set1_ps(bias); TILES];
        let starts: [usize; TILES] = std::array::from_fn(|i| group[i].start);
        for (&offset, &wv) in plan.offsets.iter().zip(wk) {
            let w = _mm512_set1_ps(wv);
            for (a, &start) in acc.iter_mut().zip(&starts) {
                // SAFETY: start + offset + WIDE_LANES ≤ plan.reach ≤ padded.len().
                let x = unsafe { _mm512_loadu_ps(padded.as_ptr().add(start + offset)) };
                // `a + w·x` as the scalar loop compiles it: the product first.
                *a = _mm512_add_ps(_mm512_mul_ps(w, x), *a);
            }
        }
        // The last group's repeated tile writes the same values twice.
        for (&a, tile) in acc.iter().zip(group) {
            let lanes = (((1u32 << tile.width) - 1) & 0xFFFF) as __mmask16;
            assert!(tile.out + tile.width <= out.len());
            zero |= _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(lanes, a, _mm512_setzero_ps());
            // Given no ±0, Clamp::apply: `vmaxps` gives its second operand for a NaN and
            // `vminps` sees none; a tie gives the same bits either way.
            let a = if clamp.is_some() {
                _mm512_min_ps(_mm512_max_ps(a, lo), hi)
            } else {
                a
            };
            // SAFETY: the tile's `width` outputs lie inside `out` (asserted).
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(tile.out), lanes, a) };
        }
    }
    zero != 0
}

/// [`channel_avx512`] for a 3 × 3 kernel at stride and dilation 1: [`ROWS`] output rows by
/// two tiles of [`WIDE_LANES`] columns at a time, the nine weights in registers, each input
/// row's pixels loaded once for every output row and tap that reads them (about half the
/// loads of one tile at a time). Each output's sum is formed as in [`channel`] (bias, then
/// ky, kx ascending), so the same bits.
///
/// # Safety
/// The CPU has AVX-512F; `plan` was made for this geometry in tiles of [`WIDE_LANES`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn three_by_three(
    plan: &Plan,
    [oh, ow]: [usize; 2],
    padded: &[f32],
    wk: &[f32],
    bias: f32,
    out: &mut [f32],
    clamp: Option<Clamp>,
) -> bool {
    use std::arch::x86_64::*;
    // Stride 1: one phase, a padded row is `phase_len` long. Every read below is one of
    // some tile's taps' (the rows and columns a tile reads), before `reach`.
    let row_len = plan.phase_len;
    assert!(plan.reach <= padded.len() && wk.len() >= 9 && out.len() >= oh * ow);
    let w: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(wk[t]));
    let tiles: Vec<usize> = (0..ow).step_by(WIDE_LANES).collect();
    let mut zero: __mmask16 = 0;
    let mut oy = 0;
    while oy < oh {
        let rows = ROWS.min(oh - oy);
        for pair in tiles.chunks(2) {
            // An odd last tile goes twice (the same values, written twice).
            let columns = [pair[0], pair[pair.len() - 1]];
            // SAFETY: as the caller's; every read is one of the tiles' taps', every write
            // one of their outputs.
            zero |= unsafe {
                match rows {
                    ROWS => {
                        rows_3x3::<ROWS>(padded, row_len, [oy, ow], columns, &w, bias, out, clamp)
                    }
                    3 => rows_3x3::<3>(padded, row_len, [oy, ow], columns, &w, bias, out, clamp),
                    2 => rows_3x3::<2>(padded, row_len, [oy, ow], columns, &w, bias, out, clamp),
                    _ => rows_3x3::<1>(padded, row_len, [oy, ow], columns, &w, bias, out, clamp),
                }
            };
        }
        oy += rows;
    }
    zero != 0
}

/// Output rows computed together by [`three_by_three`].
const ROWS: usize = 4;

/// `R` output rows from `oy` of [`three_by_three`]'s two column tiles; the mask of lanes
/// whose sum was ±0.
///
/// # Safety
/// The CPU has AVX-512F; the tiles' reads lie in `padded` and their outputs in `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn rows_3x3<const R: usize>(
    padded: &[f32],
    row_len: usize,
    [oy, ow]: [usize; 2],
    columns: [usize; 2],
    w: &[std::arch::x86_64::__m512; 9],
    bias: f32,
    out: &mut [f32],
    clamp: Option<Clamp>,
) -> std::arch::x86_64::__mmask16 {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_set1_ps(bias); 2]; R];
    // Input row oy + i feeds output row oy + r through kernel row i − r.
    for i in 0..R + 2 {
        for kx in 0..3 {
            // SAFETY: input row oy + i ≤ oy + R + 1 and columns c + kx.. c + kx + 16 are
            // read by output row oy + min(i, R − 1)'s taps (the caller's word).
            let x: [__m512; 2] = std::array::from_fn(|t| unsafe {
                _mm512_loadu_ps(padded.as_ptr().add((oy + i) * row_len + columns[t] + kx))
            });
            for (r, acc) in acc.iter_mut().enumerate() {
                if i >= r && i - r < 3 {
                    let w = w[(i - r) * 3 + kx];
                    for (a, &x) in acc.iter_mut().zip(&x) {
                        // `a + w·x` as the scalar loop compiles it: the product first.
                        *a = _mm512_add_ps(_mm512_mul_ps(w, x), *a);
                    }
                }
            }
        }
    }
    let (lo, hi) = clamp.map_or((0.0, 0.0), Clamp::bounds);
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let mut zero: __mmask16 = 0;
    for (r, acc) in acc.iter().enumerate() {
        for (&a, &c) in acc.iter().zip(&columns) {
            let width = WIDE_LANES.min(ow - c);
            let lanes = (((1u32 << width) - 1) & 0xFFFF) as __mmask16;
            zero |= _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(lanes, a, _mm512_setzero_ps());
            // Given no ±0, Clamp::apply (as in `channel_avx512`).
            let a = if clamp.is_some() {
                _mm512_min_ps(_mm512_max_ps(a, lo), hi)
            } else {
                a
            };
            let at = (oy + r) * ow + c;
            assert!(at + width <= out.len());
            // SAFETY: the tile's `width` outputs of row oy + r lie inside `out` (asserted).
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), lanes, a) };
        }
    }
    zero
}

/// Channels computed together on small planes ([`by_channel_blocks`]): one AVX2 vector.
const BLOCK: usize = 8;

/// Output planes of at most this many pixels go by blocks of channels: per channel, a 14×14
/// or 7×7 plane is too few tiles of [`LANES`] columns to pay for its padded copy. In Lite0
/// (one thread, per image) its 14×14 and 7×7 depthwise layers took 1.55 ms by rows and 1.29
/// by blocks (stride 2 down to 7×7: 129 → 77 µs). Larger planes were no faster by blocks
/// (28×28: 214 → 229 and 264 → 269 µs; 56×56 3×3 alone: 308 → 445): eight planes' rows no
/// longer stay in the caches together.
const BLOCKED_MAX_PLANE: usize = 14 * 14;

/// Output pixels of a row accumulated together (independent chains, as [`TILES`]).
const PIXELS: usize = 7;

/// The first `channels` channels (a multiple of [`BLOCK`], multiplier 1) vectorised across
/// channels instead of along rows: each block's planes are interleaved into a zero-padded
/// `[row][column][channel]` copy, so that one output pixel of eight channels is one vector
/// whose every tap is one load, whatever the stride. Sums are formed as in [`channel`] (the
/// bias, then `w·x` for every tap, padding included, ky then kx ascending), outputs of ±0
/// are recomputed by the definition, and a block with a non-finite weight goes by the
/// definition throughout: the same bits as the definition.
fn by_channel_blocks(
    g: &Geometry,
    planes: &[f32],
    weight: &[f32],
    blocks: &BlockWeights,
    bias: &[f32],
    dst: &mut [f32],
    clamp: Option<Clamp>,
) {
    let [h, w] = g.input;
    let [oh, ow] = g.output;
    let [kh, kw] = g.kernel;
    let [pt, pl] = g.pads;
    let taps = kh * kw;
    let geometry = BlockGeometry::new(g);
    let (rows, cols) = (geometry.rows, geometry.cols);
    // The padding around the image is never written: it stays zero for every block. Spare
    // pixels at the end for the tiles of rows narrower than a tile ([`block`]).
    let mut padded = AlignedPixels::new(rows * cols + PIXELS * g.stride[1]);
    let mut out = AlignedPixels::new(oh * ow);
    let (padded, out) = (padded.pixels_mut(), out.pixels_mut());
    for (block_index, c0) in (0..dst.len() / (oh * ow)).step_by(BLOCK).enumerate() {
        let wk = &weight[c0 * taps..(c0 + BLOCK) * taps];
        let dst = &mut dst[c0 * oh * ow..(c0 + BLOCK) * oh * ow];
        let Some(taps_by_channel) = blocks.block(block_index) else {
            for (l, out) in dst.chunks_mut(oh * ow).enumerate() {
                let plane = &planes[(c0 + l) * h * w..(c0 + l + 1) * h * w];
                let wk = &wk[l * taps..(l + 1) * taps];
                channel_by_definition(g, plane, wk, bias[c0 + l], out);
            }
            if let Some(clamp) = clamp {
                clamp.apply_all(dst);
            }
            continue;
        };
        let block_planes = &planes[c0 * h * w..(c0 + BLOCK) * h * w];
        interleave(block_planes, [h, w], [pt, pl], [rows, cols], padded);
        let b: [f32; BLOCK] = std::array::from_fn(|l| bias[c0 + l]);
        // With AVX-512: computed and stored in one pass, in the common case (no output ±0).
        #[cfg(target_arch = "x86_64")]
        if reuse::into_planes(&geometry, padded, taps_by_channel, b, dst, clamp) == Some(false) {
            continue;
        }
        block(&geometry, padded, taps_by_channel, b, out);
        // The common case in one pass: no output ±0, every output clamped as it is stored.
        if !deinterleave_clamped(out, dst, clamp) {
            continue;
        }
        deinterleave_scalar(out, dst);
        for (l, plane_out) in dst.chunks_mut(oh * ow).enumerate() {
            if plane_out.contains(&0.0) {
                let plane = &planes[(c0 + l) * h * w..(c0 + l + 1) * h * w];
                let wk = &wk[l * taps..(l + 1) * taps];
                for (i, v) in plane_out.iter_mut().enumerate() {
                    if *v == 0.0 {
                        *v = pixel_by_definition(g, plane, wk, bias[c0 + l], [i / ow, i % ow]);
                    }
                }
            }
        }
        if let Some(clamp) = clamp {
            clamp.apply_all(dst);
        }
    }
}

/// Zeroed pixels of a block's channels, each on a 32-byte boundary, so that no vector load
/// or store of a pixel straddles two cache lines (half of them would, at the 16-byte
/// alignment of an allocation of plain floats).
#[derive(Clone)]
struct AlignedPixels(Vec<AlignedPixel>);

#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct AlignedPixel([f32; BLOCK]);

// A pixel is its values and nothing more: a slice of them is a slice of `[f32; BLOCK]`.
const _: () = assert!(std::mem::size_of::<AlignedPixel>() == std::mem::size_of::<[f32; BLOCK]>());

impl AlignedPixels {
    fn new(n: usize) -> AlignedPixels {
        AlignedPixels(vec![AlignedPixel([0.0; BLOCK]); n])
    }

    fn pixels(&self) -> &[[f32; BLOCK]] {
        // SAFETY: `AlignedPixel` is `repr(C)` around a `[f32; BLOCK]`, of the same size
        // (asserted above), with a stricter alignment: the same values, read as arrays.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len()) }
    }

    fn pixels_mut(&mut self) -> &mut [[f32; BLOCK]] {
        // SAFETY: as in `pixels`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len()) }
    }
}

/// A depthwise convolution's weights as [`by_channel_blocks`] reads them, arranged once per
/// layer rather than once per image: per block of [`BLOCK`] channels, tap by tap, the
/// channels' weights side by side; a block with a weight that is not finite has none (it
/// goes by the definition).
#[derive(Clone)]
pub(crate) struct BlockWeights {
    taps: usize,
    /// `taps` pixels per block; those of a block without a place are zero.
    pixels: AlignedPixels,
    /// Per block, whether all its weights are finite.
    finite: Vec<bool>,
}

impl BlockWeights {
    /// The first `channels` (a multiple of [`BLOCK`]) of `weight`, `taps` per channel.
    fn new(weight: &[f32], taps: usize, channels: usize) -> BlockWeights {
        let blocks = channels / BLOCK;
        let mut pixels = AlignedPixels::new(blocks * taps);
        let finite = weight[..channels * taps]
            .chunks(BLOCK * taps)
            .zip(pixels.pixels_mut().chunks_mut(taps.max(1)))
            .map(|(wk, block)| {
                let finite = wk.iter().all(|v| v.is_finite());
                if finite {
                    // A transpose as of one row of `taps` pixels.
                    interleave(wk, [1, taps], [0, 0], [1, taps], block);
                }
                finite
            })
            .collect();
        BlockWeights {
            taps,
            pixels,
            finite,
        }
    }

    /// Block `b`'s weights tap by tap, if they are all finite.
    fn block(&self, b: usize) -> Option<&[[f32; BLOCK]]> {
        self.finite[b].then(|| &self.pixels.pixels()[b * self.taps..(b + 1) * self.taps])
    }
}

/// Writes [`BLOCK`] planes of `[h, w]` into `padded` (`rows` of `cols` pixels) from row `pt`
/// and column `pl` on, interleaved: pixel by pixel, the planes' values side by side. Values past
/// the copy's last row or column are not read by any tap and are dropped. By 8 × 8
/// transposes where the CPU has AVX2 ([`transposed`]), element by element elsewhere.
fn interleave(
    planes: &[f32],
    input: [usize; 2],
    pads: [usize; 2],
    size: [usize; 2],
    padded: &mut [[f32; BLOCK]],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected.
        return unsafe { transposed::interleave(planes, input, pads, size, padded) };
    }
    interleave_scalar(planes, input, pads, size, padded);
}

/// The inverse of [`interleave`] for a block's outputs, with `clamp` applied to every value
/// stored; whether some value was ±0 before the clamp (the caller then redoes the block by
/// the definition's rules). By 8 × 8 transposes where the CPU has AVX2.
fn deinterleave_clamped(pixels: &[[f32; BLOCK]], planes: &mut [f32], clamp: Option<Clamp>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected.
        return unsafe { transposed::deinterleave_clamped(pixels, planes, clamp) };
    }
    deinterleave_scalar(pixels, planes);
    let some_zero = planes.contains(&0.0);
    if let Some(clamp) = clamp {
        clamp.apply_all(planes);
    }
    some_zero
}

/// [`interleave`] element by element.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn interleave_scalar(
    planes: &[f32],
    [h, w]: [usize; 2],
    [pt, pl]: [usize; 2],
    [rows, cols]: [usize; 2],
    padded: &mut [[f32; BLOCK]],
) {
    let width = w.min(cols.saturating_sub(pl));
    let lanes: [&[f32]; BLOCK] = std::array::from_fn(|l| &planes[l * h * w..(l + 1) * h * w]);
    for y in 0..h.min(rows.saturating_sub(pt)) {
        let line = &mut padded[(y + pt) * cols + pl..(y + pt) * cols + pl + width];
        let src: [&[f32]; BLOCK] = std::array::from_fn(|l| &lanes[l][y * w..y * w + width]);
        for (x, slot) in line.iter_mut().enumerate() {
            *slot = std::array::from_fn(|l| src[l][x]);
        }
    }
}

/// The inverse of [`interleave`] for a block's outputs, element by element: `pixels` (each
/// the [`BLOCK`] channels' values of one pixel) into the channels' planes, one after another
/// in `planes`.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn deinterleave_scalar(pixels: &[[f32; BLOCK]], planes: &mut [f32]) {
    for (l, plane) in planes
        .chunks_exact_mut(pixels.len().max(1))
        .enumerate()
        .take(BLOCK)
    {
        for (o, pixel) in plane.iter_mut().zip(pixels) {
            *o = pixel[l];
        }
    }
}

/// Where [`block`] reads: the padded copy's size and, per tap, its offset from an output
/// pixel's first tap.
struct BlockGeometry {
    /// Rows and columns of the padded copy: every position a tap of an output reads.
    rows: usize,
    cols: usize,
    output: [usize; 2],
    stride: [usize; 2],
    kernel: [usize; 2],
    dilation: [usize; 2],
    /// Per kernel tap (ky, kx ascending), its offset in pixels of the padded copy.
    offsets: Vec<usize>,
}

impl BlockGeometry {
    fn new(g: &Geometry) -> BlockGeometry {
        let [kh, kw] = g.kernel;
        let [dh, dw] = g.dilation;
        let [oh, ow] = g.output;
        let rows = (oh - 1) * g.stride[0] + (kh - 1) * dh + 1;
        let cols = (ow - 1) * g.stride[1] + (kw - 1) * dw + 1;
        let offsets = (0..kh)
            .flat_map(|ky| (0..kw).map(move |kx| ky * dh * cols + kx * dw))
            .collect();
        BlockGeometry {
            rows,
            cols,
            output: g.output,
            stride: g.stride,
            kernel: g.kernel,
            dilation: g.dilation,
            offsets,
        }
    }
}

/// One block of channels: per output row, [`PIXELS`] pixels at a time, each accumulated in
/// a vector from the bias through every tap (multiply, then add: the definition's
/// roundings). Compiled for AVX2 too and chosen at run time; strides 1 and 2 are constants in
/// their loops, so that a tap's pixels are loads at fixed offsets.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn block(
    g: &BlockGeometry,
    padded: &[[f32; BLOCK]],
    taps: &[[f32; BLOCK]],
    bias: [f32; BLOCK],
    out: &mut [[f32; BLOCK]],
) {
    match g.stride[1] {
        1 => block_rows::<1>(g, padded, taps, bias, out),
        2 => block_rows::<2>(g, padded, taps, bias, out),
        _ => block_rows::<0>(g, padded, taps, bias, out),
    }
}

/// [`block`] with column stride `SW` (0: the geometry's, read at run time).
#[inline(always)]
fn block_rows<const SW: usize>(
    g: &BlockGeometry,
    padded: &[[f32; BLOCK]],
    taps: &[[f32; BLOCK]],
    bias: [f32; BLOCK],
    out: &mut [[f32; BLOCK]],
) {
    let [oh, ow] = g.output;
    let sh = g.stride[0];
    let sw = if SW == 0 { g.stride[1] } else { SW };
    // Every read below is of a pixel at most (oh − 1)·sh rows and (max(ow, PIXELS) − 1)·sw
    // columns past the origin, plus a tap's offset: one check here instead of one per load.
    let last_pixel = (oh - 1) * sh * g.cols + (ow.max(PIXELS) - 1) * sw;
    assert!(g.offsets.iter().all(|&o| last_pixel + o < padded.len()));
    assert!(taps.len() >= g.offsets.len() && out.len() >= oh * ow);
    for oy in 0..oh {
        for ox0 in (0..ow).step_by(PIXELS) {
            let n = PIXELS.min(ow - ox0);
            // A partial tile starts further left, so that its pixels stay in the row: it
            // recomputes some of the previous tile's (the same values).
            let first = if n < PIXELS && ow >= PIXELS {
                ow - PIXELS
            } else {
                ox0
            };
            let start = oy * sh * g.cols + first * sw;
            let mut acc = [bias; PIXELS];
            for (&offset, wv) in g.offsets.iter().zip(taps) {
                let base = padded[start + offset..].as_ptr();
                for (p, a) in acc.iter_mut().enumerate() {
                    // SAFETY: first + p ≤ max(ow, PIXELS) − 1, checked above with every
                    // offset. (A row narrower than a tile reads past its end, into the next
                    // row or the copy's spare pixels: values that are never stored.)
                    let x = unsafe { &*base.add(p * sw) };
                    for l in 0..BLOCK {
                        a[l] += wv[l] * x[l];
                    }
                }
            }
            let at = oy * ow + ox0;
            if n == PIXELS {
                // A whole tile: a copy of known length, in registers rather than a call.
                out[at..at + PIXELS].copy_from_slice(&acc);
            } else {
                let skip = ox0 - first;
                out[at..at + n].copy_from_slice(&acc[skip..skip + n]);
            }
        }
    }
}

/// [`block`] and [`deinterleave_clamped`] in one, with AVX-512's 32 vector registers: per
/// output tile and kernel row, the `(PIXELS − 1)·SW + KW` pixels its taps read are loaded
/// once, then every tap of the row multiplies its weights by them and adds to the tile's
/// [`PIXELS`] accumulators, kx ascending (each output's operations are [`block_rows`]'s, in
/// its order, with about a third of the loads); the finished tile is transposed in registers
/// and stored, clamped, into the channels' planes.
#[cfg(target_arch = "x86_64")]
mod reuse {
    use std::arch::x86_64::*;

    use super::{BLOCK, BlockGeometry, Clamp, PIXELS};
    use crate::ops::transpose::transpose8 as transpose;

    // A tile's pixels and a pixel's channels fit one 8 × 8 transpose.
    const _: () = assert!(BLOCK == 8 && PIXELS < 8);

    /// The block's outputs into `planes` (its [`BLOCK`] planes of `oh·ow`), clamped, and
    /// whether some output was ±0 before the clamp (the caller then redoes the block by the
    /// definition's rules); `None`, having done nothing, where the CPU lacks AVX-512 or the
    /// geometry is not one compiled here (column stride 1 or 2, kernel width 3 or 5, column
    /// dilation 1).
    pub(super) fn into_planes(
        g: &BlockGeometry,
        padded: &[[f32; BLOCK]],
        taps: &[[f32; BLOCK]],
        bias: [f32; BLOCK],
        planes: &mut [f32],
        clamp: Option<Clamp>,
    ) -> Option<bool> {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl"))
            || g.dilation[1] != 1
        {
            return None;
        }
        // SAFETY: AVX-512F and VL were detected.
        unsafe {
            match (g.stride[1], g.kernel[1]) {
                (1, 3) => Some(rows::<1, 3>(g, padded, taps, bias, planes, clamp)),
                (1, 5) => Some(rows::<1, 5>(g, padded, taps, bias, planes, clamp)),
                (2, 3) => Some(rows::<2, 3>(g, padded, taps, bias, planes, clamp)),
                (2, 5) => Some(rows::<2, 5>(g, padded, taps, bias, planes, clamp)),
                _ => None,
            }
        }
    }

    /// [`into_planes`] for column stride `SW` and kernel width `KW`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512VL; the geometry's column stride is `SW`, its kernel
    /// width `KW`, its column dilation 1.
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    unsafe fn rows<const SW: usize, const KW: usize>(
        g: &BlockGeometry,
        padded: &[[f32; BLOCK]],
        taps: &[[f32; BLOCK]],
        bias: [f32; BLOCK],
        planes: &mut [f32],
        clamp: Option<Clamp>,
    ) -> bool {
        let [oh, ow] = g.output;
        let kh = g.kernel[0];
        let sh = g.stride[0];
        let row_step = g.dilation[0] * g.cols;
        // As in [`super::block_rows`]: every pixel read is at most (oh − 1)·sh rows and
        // (max(ow, PIXELS) − 1)·SW columns past the origin, plus a tap's offset (the last
        // tap's is the largest).
        let last_pixel = (oh - 1) * sh * g.cols + (ow.max(PIXELS) - 1) * SW;
        let last_offset = (kh - 1) * row_step + KW - 1;
        assert!(g.offsets.len() == kh * KW && g.offsets.last() == Some(&last_offset));
        assert!(last_pixel + last_offset < padded.len());
        assert!(taps.len() >= kh * KW && planes.len() >= BLOCK * oh * ow);
        let plane = oh * ow;
        // The tile's pixels inside the row: all of them but where the row is narrower.
        let keep: __mmask8 = (1 << PIXELS.min(ow)) - 1;
        let (lo, hi) = clamp.map_or((0.0, 0.0), Clamp::bounds);
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let mut zero: __mmask8 = 0;
        // SAFETY: eight floats.
        let bias = unsafe { _mm256_loadu_ps(bias.as_ptr()) };
        for oy in 0..oh {
            for ox0 in (0..ow).step_by(PIXELS) {
                // A partial tile starts further left, so that its pixels stay in the row: it
                // recomputes some of the previous tile's (the same values).
                let first = if ow - ox0 < PIXELS && ow >= PIXELS {
                    ow - PIXELS
                } else {
                    ox0
                };
                let start = oy * sh * g.cols + first * SW;
                let mut acc = [bias; PIXELS];
                for ky in 0..kh {
                    // SAFETY: pixel i < (PIXELS − 1)·SW + KW of this kernel row is one of
                    // the tile's taps' reads, inside `padded` (asserted above).
                    let x: [__m256; 32] = std::array::from_fn(|i| unsafe {
                        if i < (PIXELS - 1) * SW + KW {
                            _mm256_loadu_ps(padded.as_ptr().add(start + ky * row_step + i).cast())
                        } else {
                            _mm256_setzero_ps()
                        }
                    });
                    for kx in 0..KW {
                        // SAFETY: ky·KW + kx < taps.len() (asserted).
                        let w = unsafe { _mm256_loadu_ps(taps.as_ptr().add(ky * KW + kx).cast()) };
                        for (p, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_add_ps(*a, _mm256_mul_ps(w, x[p * SW + kx]));
                        }
                    }
                }
                // Channel l's run of the tile's pixels (lane 7 a copy of lane 6, not stored).
                let runs = transpose(std::array::from_fn(|p| acc[p.min(PIXELS - 1)]));
                for (l, &run) in runs.iter().enumerate() {
                    zero |= _mm256_mask_cmp_ps_mask::<_CMP_EQ_OQ>(keep, run, _mm256_setzero_ps());
                    // Clamp::apply, given no ±0: `vmaxps` gives its second operand for a NaN
                    // and `vminps` sees none; a tie gives the same bits either way.
                    let run = if clamp.is_some() {
                        _mm256_min_ps(_mm256_max_ps(run, lo), hi)
                    } else {
                        run
                    };
                    // SAFETY: channel l < BLOCK, pixels first.. under `keep` < ow of row oy.
                    unsafe {
                        let at = planes.as_mut_ptr().add(l * plane + oy * ow + first);
                        _mm256_mask_storeu_ps(at, keep, run);
                    }
                }
            }
        }
        zero != 0
    }
}

/// One output element by the definition: the bias, then `w·x` over the taps inside the
/// image, ky then kx ascending.
fn pixel_by_definition(
    g: &Geometry,
    plane: &[f32],
    wk: &[f32],
    bias: f32,
    [oy, ox]: [usize; 2],
) -> f32 {
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [dh, dw] = g.dilation;
    let [pt, pl] = g.pads;
    let [h, w] = g.input;
    let mut acc = bias;
    for ky in 0..kh {
        let Some(iy) = (oy * sh + ky * dh).checked_sub(pt).filter(|&y| y < h) else {
            continue;
        };
        for kx in 0..kw {
            let Some(ix) = (ox * sw + kx * dw).checked_sub(pl).filter(|&x| x < w) else {
                continue;
            };
            acc += wk[ky * kw + kx] * plane[iy * w + ix];
        }
    }
    acc
}

/// A whole output channel by the definition (weights that are not finite).
fn channel_by_definition(g: &Geometry, plane: &[f32], wk: &[f32], bias: f32, out: &mut [f32]) {
    let ow = g.output[1];
    for (i, v) in out.iter_mut().enumerate() {
        *v = pixel_by_definition(g, plane, wk, bias, [i / ow, i % ow]);
    }
}

/// [`interleave`] and [`deinterleave_clamped`] by 8 × 8 transposes in AVX2 registers: eight
/// values of each of the block's planes in, eight pixels out, and back. They move values
/// without computing on them, so the bits are those of the scalar loops.
#[cfg(target_arch = "x86_64")]
mod transposed {
    use std::arch::x86_64::*;

    use super::{BLOCK, Clamp};
    use crate::ops::transpose::transpose8 as transpose;

    // A block is one AVX2 vector: the transposes are 8 × 8.
    const _: () = assert!(BLOCK == 8);

    /// [`super::interleave`], row by row: eight values of each plane's row (or what is
    /// left of it) in, as many pixels out, stored side by side in the padded row.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn interleave(
        planes: &[f32],
        [h, w]: [usize; 2],
        [pt, pl]: [usize; 2],
        [rows, cols]: [usize; 2],
        padded: &mut [[f32; BLOCK]],
    ) {
        let plane = h * w;
        assert!(planes.len() >= BLOCK * plane);
        let width = w.min(cols.saturating_sub(pl));
        let height = h.min(rows.saturating_sub(pt));
        if width == 0 || height == 0 {
            return;
        }
        // The last pixel stored: row pt + height − 1, column pl + width − 1.
        assert!((pt + height - 1) * cols + pl + width <= padded.len());
        for y in 0..height {
            let row = &mut padded[(y + pt) * cols + pl..][..width];
            for (x0, pixels) in (0..width).step_by(8).zip(row.chunks_mut(8)) {
                let at = y * w + x0;
                // Eight values from every plane: past the row's end they are the next
                // row's (or plane's), transposed and dropped. Only the last plane's last
                // row may end too close to the slice's end for eight: a masked load there.
                let r: [__m256; 8] = std::array::from_fn(|l| {
                    let start = l * plane + at;
                    // SAFETY: start + 8 ≤ planes.len() for a whole load; else the mask keeps
                    // the lanes before planes.len(), and start < planes.len().
                    unsafe {
                        let src = planes.as_ptr().add(start);
                        if start + 8 <= planes.len() {
                            _mm256_loadu_ps(src)
                        } else {
                            let mask = _mm256_cmpgt_epi32(
                                _mm256_set1_epi32((planes.len() - start) as i32),
                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                            );
                            _mm256_maskload_ps(src, mask)
                        }
                    }
                });
                let t = transpose(r);
                for (pixel, v) in pixels.iter_mut().zip(t) {
                    // SAFETY: a pixel is 32 bytes, written whole.
                    unsafe { _mm256_storeu_ps(pixel.as_mut_ptr(), v) };
                }
            }
        }
    }

    /// [`super::deinterleave_clamped`].
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn deinterleave_clamped(
        pixels: &[[f32; BLOCK]],
        planes: &mut [f32],
        clamp: Option<Clamp>,
    ) -> bool {
        let n = pixels.len();
        assert!(planes.len() >= BLOCK * n);
        let (lo, hi) = clamp.map_or((0.0, 0.0), Clamp::bounds);
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let mut zero = _mm256_setzero_ps();
        let whole = n / 8 * 8;
        for p0 in (0..whole).step_by(8) {
            // SAFETY: p0 + 8 ≤ n pixels of BLOCK = 8 floats.
            let r: [__m256; 8] =
                std::array::from_fn(|j| unsafe { _mm256_loadu_ps(pixels[p0 + j].as_ptr()) });
            for (l, v) in transpose(r).into_iter().enumerate() {
                zero = _mm256_or_ps(zero, _mm256_cmp_ps::<_CMP_EQ_OQ>(v, _mm256_setzero_ps()));
                // Clamp::apply: v ≥ lo ? v : lo, then v ≤ hi ? v : hi (NaN → lo).
                let v = if clamp.is_some() {
                    let v = _mm256_blendv_ps(vlo, v, _mm256_cmp_ps::<_CMP_GE_OQ>(v, vlo));
                    _mm256_blendv_ps(vhi, v, _mm256_cmp_ps::<_CMP_LE_OQ>(v, vhi))
                } else {
                    v
                };
                // SAFETY: l·n + p0 + 8 ≤ BLOCK·n ≤ planes.len() (asserted).
                unsafe { _mm256_storeu_ps(planes.as_mut_ptr().add(l * n + p0), v) };
            }
        }
        let mut any_zero = _mm256_movemask_ps(zero) != 0;
        for (p, pixel) in pixels.iter().enumerate().skip(whole) {
            for (l, &v) in pixel.iter().enumerate() {
                any_zero |= v == 0.0;
                planes[l * n + p] = clamp.map_or(v, |c| c.apply(v));
            }
        }
        any_zero
    }
}
