//! Matrix products of the convolutions and linear layers: `dst[m×n] += lhs[m×k] · rhs[k×n]`,
//! row-major, by the `gemm` crate, or on CPUs with AVX-512F or with AVX2 and FMA by kernels
//! of our own that do the very same floating-point operations in the same order, so the
//! same bits.
//!
//! The `gemm` crate (its AVX2 + FMA kernels; see the README on why not its AVX-512 ones)
//! computes every output as `dst + acc₁ + acc₂ + …`, added left to right, where `acc_b` is a
//! chain of fused multiply-adds from zero over the b-th block of k, ascending, and the block
//! length `kc` comes from its cache model ([`gemm_common::cache::kernel_params`]). Our kernel
//! asks the same model for `kc` and keeps one such chain per output in a register: an
//! output tile of 6 rows × 64 columns (24 of the 32 AVX-512 registers) over a block of k,
//! reading the operands where they lie, with no packing. On Lite0's pointwise shapes it runs
//! closer to the core's peak than the crate's AVX2 kernels (`--example gemm_shapes`). Without
//! AVX-512 the same kernel runs in AVX2 lanes (6 rows × 16 columns), by blocks of columns
//! and a band of rows at a time, so that it writes its output along the rows: about the
//! crate's speed alone, and no pass that writes the biases first or clamps afterwards.
//!
//! A convolution with a kernel larger than 1×1 (the stem) reads its right-hand operand where
//! it lies in a zero-padded copy of its input ([`matmul_bias_gathered`]) instead of writing
//! out one column per output pixel first: the same chains, so the same bits.
//!
//! Small planes (7×7: 49 columns) fill vectors along the columns badly, so there the kernels
//! of [`matmul_bias_by_channels`] vectorise along the output channels instead, on AVX-512
//! and on AVX2 machines alike, with the same chains and so the same bits.

use gemm_common::Parallelism;

use super::activation::Clamp;

/// The `gemm` crate's f32 micro-kernel on x86-64 with FMA: 16 rows (two AVX vectors) by 6
/// columns, after it transposes our row-major product to its column-major one.
const GEMM_MR: usize = 16;
const GEMM_NR: usize = 6;

/// `dst[m×n] += lhs[m×k] · rhs[k×n]`, all row-major, on the threads `par` allows.
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    rhs: &[f32],
    dst: &mut [f32],
    par: Parallelism,
) {
    // Both check the operands' lengths.
    if !ours(m, n, k, lhs, rhs, None, dst, par, None) {
        gemm_crate(m, n, k, lhs, rhs, dst, par);
    }
}

/// `dst[m×n] = bias[m] + lhs[m×k] · rhs[k×n]`, all row-major, each row's bias broadcast along
/// it: as [`matmul`] into a `dst` holding the biases, without writing them first; then
/// `clamp`, if given, on every output (in the kernel's last store where ours runs).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bias(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    rhs: &[f32],
    bias: &[f32],
    dst: &mut [f32],
    par: Parallelism,
    clamp: Option<Clamp>,
) {
    assert!(lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n && bias.len() >= m);
    if m == 0 || n == 0 || ours(m, n, k, lhs, rhs, Some(bias), dst, par, clamp) {
        return;
    }
    for (row, &b) in dst.chunks_exact_mut(n).zip(bias).take(m) {
        row.fill(b);
    }
    gemm_crate(m, n, k, lhs, rhs, dst, par);
    if let Some(clamp) = clamp {
        clamp.apply_all(&mut dst[..m * n]);
    }
}

/// Whether [`matmul_bias_gathered`] runs for an `m × n` product over `k`: where our kernel
/// runs (AVX-512, or AVX2 and FMA) and tiles the product.
pub fn gathers(m: usize, n: usize, k: usize) -> bool {
    column_kernel().is_some() && tiled_block(m, n, k).is_some()
}

/// `dst[m × oh·ow] = bias + lhs[m×k] · rhs` (then `clamp`) for a convolution whose
/// right-hand operand is not written out: its row `d` at output row `y`, column `x` is
/// `rhs[rows[d] + y·row_step + x]` (a zero-padded input stored by column phase,
/// [`super::depthwise::PhaseLayout`]). The same bits as [`matmul_bias`] on the operand written
/// out; one thread.
///
/// # Panics
/// Where [`gathers`] is false, or the operands are shorter than the product reads.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bias_gathered(
    m: usize,
    [oh, ow]: [usize; 2],
    k: usize,
    lhs: &[f32],
    rhs: &[f32],
    rows: &[usize],
    row_step: usize,
    bias: &[f32],
    dst: &mut [f32],
    clamp: Option<Clamp>,
) {
    let (Some(kernel), Some(kc)) = (column_kernel(), tiled_block(m, oh * ow, k)) else {
        panic!("matmul_bias_gathered called where `gathers` is false");
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel's features were detected (`column_kernel`); it asserts the
    // operands' lengths.
    unsafe {
        let shape = [oh, ow];
        match kernel {
            ColumnKernel::Avx512 => {
                avx512::matmul_gathered(m, shape, k, kc, lhs, rhs, rows, row_step, bias, dst, clamp)
            }
            ColumnKernel::Avx2 => {
                avx2::matmul_gathered(m, shape, k, kc, lhs, rhs, rows, row_step, bias, dst, clamp)
            }
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (kernel, kc, lhs, rhs, rows, row_step, bias, dst, clamp);
}

/// The blocks of k our kernels sum in, as the crate does: `(first, length)`, `kc` long but
/// the last.
#[inline(always)]
fn k_blocks(k: usize, kc: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k)
        .step_by(kc.max(1))
        .map(move |k0| (k0, kc.min(k - k0)))
}

/// Panics unless the `k` rows of a product read in place ([`matmul_bias_gathered`]) lie
/// inside `rhs` for an `oh × ow` output: the last value any tile reads is at its row's
/// furthest start, the last output row and column.
fn check_gathered(rhs: &[f32], rows: &[usize], k: usize, [oh, ow]: [usize; 2], step: usize) {
    assert!(rows.len() == k && oh * ow > 0);
    let reach = rows.iter().max().map_or(0, |&r| r + (oh - 1) * step + ow);
    assert!(reach <= rhs.len());
}

/// The product by our kernel, where it runs (see [`column_kernel`] and [`tiled_block`]);
/// whether it did.
#[allow(clippy::too_many_arguments)]
fn ours(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    rhs: &[f32],
    bias: Option<&[f32]>,
    dst: &mut [f32],
    par: Parallelism,
    clamp: Option<Clamp>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = column_kernel()
        && let Some(kc) = tiled_block(m, n, k)
    {
        let threads = match par {
            Parallelism::None => 1,
            Parallelism::Rayon(0) => rayon::current_num_threads(),
            Parallelism::Rayon(t) => t,
        };
        let run = |rows: usize, lhs: &[f32], bias: Option<&[f32]>, dst: &mut [f32]| {
            // SAFETY: the kernel's features were detected (`column_kernel`); it asserts the
            // operands' lengths.
            unsafe {
                match kernel {
                    ColumnKernel::Avx512 => {
                        avx512::matmul(rows, n, k, kc, lhs, rhs, bias, dst, clamp)
                    }
                    ColumnKernel::Avx2 => avx2::matmul(rows, n, k, kc, lhs, rhs, bias, dst, clamp),
                }
            }
        };
        // Bands of whole tiles of rows, one per thread: each output is the same chain
        // whichever band computes it (`kc` is the whole product's).
        let tile = match kernel {
            ColumnKernel::Avx512 => avx512::ROWS,
            ColumnKernel::Avx2 => avx2::ROWS,
        };
        let band = m.div_ceil(threads.max(1)).div_ceil(tile) * tile;
        if threads <= 1 || band >= m {
            run(m, lhs, bias, dst);
            return true;
        }
        use rayon::prelude::*;
        dst[..m * n]
            .par_chunks_mut(band * n)
            .zip(lhs[..m * k].par_chunks(band * k))
            .enumerate()
            .for_each(|(i, (dst, lhs))| {
                let rows = dst.len() / n;
                run(rows, lhs, bias.map(|b| &b[i * band..i * band + rows]), dst);
            });
        return true;
    }
    let _ = (m, n, k, lhs, rhs, bias, dst, par, clamp);
    false
}

/// Which of our kernels vectorised along the columns runs here, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColumnKernel {
    Avx512,
    Avx2,
}

/// [`ColumnKernel::Avx512`] where [`ours_available`], else [`ColumnKernel::Avx2`] where the
/// CPU has AVX2 and FMA (where the crate runs its FMA kernels, whose sums ours repeat);
/// `None` elsewhere.
fn column_kernel() -> Option<ColumnKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if ours_available() {
            return Some(ColumnKernel::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(ColumnKernel::Avx2);
        }
    }
    None
}

/// A weight matrix `[m × k]` laid out by input for products with few columns, which
/// [`matmul_bias_by_channels`] vectorises along the output channels instead of along the
/// columns (a 7×7 plane is 49 columns: four vectors of 16 with 15 lanes idle). The channels
/// are padded with zeros to whole tiles of the kernel that runs here, and stored in blocks
/// of `tile` channels, each block `[k × tile]`, so that a tile's weights are read in order.
#[derive(Clone, Debug, Default)]
pub struct WeightsByInput {
    data: Vec<f32>,
    rows: usize,
    depth: usize,
    /// `rows` rounded up to whole tiles.
    stride: usize,
    /// Channels of a block: `stride` for the AVX-512 kernel (one block, `[k × stride]`),
    /// [`by_channels::AVX2_CHANNELS`] for the AVX2 one.
    tile: usize,
    /// Every weight is finite, so an input of ±0 contributes a zero to every product it
    /// enters (see [`by_channels::matmul_avx2`]).
    finite: bool,
}

impl WeightsByInput {
    /// `lhs` (`[rows × depth]`, row-major) laid out for the kernel that runs on this CPU.
    pub fn new(lhs: &[f32], rows: usize, depth: usize) -> WeightsByInput {
        Self::for_kernel(channel_kernel(), lhs, rows, depth)
    }

    /// `lhs` laid out for `kernel` (the AVX-512 layout where none runs).
    fn for_kernel(
        kernel: Option<ChannelKernel>,
        lhs: &[f32],
        rows: usize,
        depth: usize,
    ) -> WeightsByInput {
        let (stride, tile) = match kernel {
            Some(ChannelKernel::Avx2) => {
                let stride = rows.div_ceil(by_channels::AVX2_CHANNELS) * by_channels::AVX2_CHANNELS;
                (stride, by_channels::AVX2_CHANNELS)
            }
            _ => {
                let stride = rows.div_ceil(by_channels::CHANNELS) * by_channels::CHANNELS;
                (stride, stride)
            }
        };
        let mut data = vec![0.0f32; stride * depth];
        for (r, row) in lhs.chunks_exact(depth.max(1)).take(rows).enumerate() {
            let block = r / tile * depth * tile + r % tile;
            for (d, &w) in row.iter().enumerate() {
                data[block + d * tile] = w;
            }
        }
        WeightsByInput {
            finite: data.iter().all(|w| w.is_finite()),
            data,
            rows,
            depth,
            stride,
            tile,
        }
    }
}

/// The kernels vectorised along the channels ([`matmul_bias_by_channels`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelKernel {
    /// Tiles of 48 channels × 7 columns, where the CPU has AVX-512F.
    Avx512,
    /// Tiles of 16 channels × 6 columns, where it has AVX2 and FMA.
    Avx2,
}

/// The kernel vectorised along the channels that runs on this CPU, if any.
fn channel_kernel() -> Option<ChannelKernel> {
    if ours_available() {
        return Some(ChannelKernel::Avx512);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return Some(ChannelKernel::Avx2);
    }
    None
}

/// Whether [`matmul_bias_by_channels`] runs a product of `m × k` by `k × n` on this CPU and
/// either fills a tenth more of its vector lanes than [`matmul_bias`] would (few columns, a
/// small plane, that fill vectors of 16 badly, and enough depth that writing the tiles
/// across is paid for) or, with AVX2, fills all of them on a plane of at most 14 × 14: its
/// 16-channel tiles whole (at least 64 channels). On Lite0's 14×14 products the AVX2 kernel
/// ran level with the crate to 27% faster (one thread, `--example gemm_shapes`, two
/// sittings); on 28×28 and 56×56 planes it won in one sitting and lost in the other, and in
/// the network those did better with the crate (docs/engine-performance-log.md, session 12).
pub fn prefers_channels(m: usize, n: usize, k: usize) -> bool {
    let (tile_rows, tile_columns) = match channel_kernel() {
        Some(ChannelKernel::Avx512) => (by_channels::CHANNELS, by_channels::COLUMNS),
        Some(ChannelKernel::Avx2) => (by_channels::AVX2_CHANNELS, by_channels::AVX2_COLUMNS),
        None => return false,
    };
    // The share of vector lanes that hold outputs, either way (the crate's tiles are 16
    // columns).
    let column_share = n as f64 / (16 * n.div_ceil(16)) as f64;
    let channel_share = (m as f64 / (tile_rows * m.div_ceil(tile_rows)) as f64)
        * (n as f64 / (tile_columns * n.div_ceil(tile_columns)) as f64);
    let fuller = k >= 64 && channel_share > column_share + 0.1;
    let whole_avx2_tiles = channel_kernel() == Some(ChannelKernel::Avx2)
        && m.is_multiple_of(by_channels::AVX2_CHANNELS)
        && m >= 64
        && n <= 14 * 14;
    tiled_block(m, n, k).is_some() && (fuller || whole_avx2_tiles)
}

/// [`matmul_bias`] vectorised along the output channels, with the weights laid out by input,
/// for `images` products with the same weights: `rhs` holds their `k × n` inputs one after
/// another and `dst` their `m × n` outputs. Each output is the same chain of fused
/// multiply-adds in the same blocks as one image alone by [`matmul_bias`], so the same bits;
/// the images share each block of weights while it is in cache. Whether that pays is the
/// caller's question ([`prefers_channels`]); where our kernels do not run, this is
/// [`matmul_bias`] image by image. `clamp` as in [`matmul_bias`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_bias_by_channels(
    m: usize,
    n: usize,
    k: usize,
    images: usize,
    lhs: &[f32],
    by_input: &WeightsByInput,
    rhs: &[f32],
    bias: &[f32],
    dst: &mut [f32],
    clamp: Option<Clamp>,
) {
    assert!(lhs.len() >= m * k && bias.len() >= m);
    assert!(rhs.len() >= images * k * n && dst.len() >= images * m * n);
    assert!(
        by_input.rows == m && by_input.depth == k,
        "weights laid out for another product"
    );
    #[cfg(target_arch = "x86_64")]
    if let (Some(kernel), Some(kc)) = (channel_kernel(), tiled_block(m, n, k)) {
        match kernel {
            // SAFETY: AVX-512F was detected; lengths asserted above.
            ChannelKernel::Avx512 => unsafe {
                by_channels::matmul(m, n, k, kc, images, by_input, rhs, bias, dst, clamp)
            },
            // SAFETY: AVX2 and FMA were detected; lengths asserted above.
            ChannelKernel::Avx2 => {
                unsafe {
                    by_channels::matmul_avx2(m, n, k, kc, images, by_input, rhs, bias, dst, clamp)
                };
            }
        }
        return;
    }
    if m * n > 0 {
        for (dst, rhs) in dst
            .chunks_exact_mut(m * n)
            .zip(rhs.chunks(k * n))
            .take(images)
        {
            matmul_bias(m, n, k, lhs, rhs, bias, dst, Parallelism::None, clamp);
        }
    }
}

/// `dst[r] = bias + x[r] · w` for each of the `rows` rows of `x` (`rows × k`), `w` being
/// `k × n`, with every row's bits those of the row alone: the `gemm` crate computes a single
/// row as a matrix-vector product, each output one chain of fused multiply-adds from its
/// bias over k ascending, and on CPUs with AVX-512F, or AVX2 and FMA, our kernel runs that
/// chain for several rows at once (each block of `w` then read once for six rows instead of
/// once per row). Elsewhere the crate runs row by row. A fully-connected layer's result for
/// an image thus does not depend on the batch it came in.
#[allow(clippy::too_many_arguments)]
pub fn rows_times_matrix(
    rows: usize,
    n: usize,
    k: usize,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    dst: &mut [f32],
) {
    assert!(x.len() >= rows * k && w.len() >= k * n && bias.len() >= n);
    assert!(dst.len() >= rows * n);
    if rows == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if k > 2 && n > 1 {
        match column_kernel() {
            Some(ColumnKernel::Avx512) => {
                // SAFETY: AVX-512F was detected; lengths asserted above.
                unsafe { avx512::rows_times_matrix(rows, n, k, x, w, bias, dst) };
                return;
            }
            Some(ColumnKernel::Avx2) => {
                // SAFETY: AVX2 and FMA were detected; lengths asserted above.
                unsafe { avx2::rows_times_matrix(rows, n, k, x, w, bias, dst) };
                return;
            }
            _ => {}
        }
    }
    for (x, dst) in x
        .chunks_exact(k.max(1))
        .zip(dst.chunks_exact_mut(n))
        .take(rows)
    {
        dst.copy_from_slice(&bias[..n]);
        gemm_crate(1, n, k, x, w, dst, Parallelism::None);
    }
}

/// [`matmul`] by the `gemm` crate's kernels, whatever the CPU (for comparisons).
pub fn gemm_crate(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    rhs: &[f32],
    dst: &mut [f32],
    par: Parallelism,
) {
    assert!(lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // The f32 kernels of the `gemm` crate, called as its generic `gemm::gemm` calls them
    // (depending on `gemm-f32` alone spares building its f16, f64 and complex kernels): the
    // micro-kernel prefers a column-major destination, so a row-major product of more than
    // one column runs transposed, `dstᵀ = rhsᵀ·lhsᵀ`.
    let gemm = gemm_f32::gemm::f32::get_gemm_fn();
    let (dst, lhs, rhs) = (dst.as_mut_ptr(), lhs.as_ptr(), rhs.as_ptr());
    let (ni, ki) = (n as isize, k as isize);
    // SAFETY: the asserts above keep every access of the row-major operands in bounds;
    // `dst` does not alias `lhs` or `rhs` (distinct borrows).
    unsafe {
        if n > 1 {
            gemm(
                n, m, k, dst, ni, 1, true, rhs, ni, 1, lhs, ki, 1, 1.0, 1.0, false, false, false,
                par,
            )
        } else {
            gemm(
                m, n, k, dst, 1, ni, true, lhs, 1, ki, rhs, 1, ni, 1.0, 1.0, false, false, false,
                par,
            )
        }
    }
}

/// The k-block length the `gemm` crate sums in, where it takes its blocked path with the
/// FMA micro-kernel for this product; `None` where it takes another (very small products,
/// matrix-vector products, k ≤ 2), which stays with the crate.
///
/// The crate transposes our row-major product (its rows are our n columns, its columns our
/// m rows). Products of at most 64 × 64 skip its cache model and sum in blocks of 512.
fn tiled_block(m: usize, n: usize, k: usize) -> Option<usize> {
    let (rows, cols) = (n, m);
    if k <= 2 || rows <= 1 || cols <= 1 || rows * cols <= 16 * 16 {
        return None;
    }
    let kc = if rows <= 64 && cols <= 64 {
        k.min(512)
    } else {
        gemm_common::cache::kernel_params(rows, cols, k, GEMM_MR, GEMM_NR, size_of::<f32>()).kc
    };
    (kc > 0).then_some(kc)
}

/// Whether our kernels run here: where the CPU has AVX-512F and FMA (as every AVX-512 CPU
/// does), so that the crate would run its FMA kernels; the crate runs everywhere else.
fn ours_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Rows of an output tile (the crate's "columns").
    pub(super) const ROWS: usize = 6;
    /// Vectors of 16 columns in an output tile.
    const VECTORS: usize = 4;
    const COLUMNS: usize = 16 * VECTORS;

    /// `dst += lhs · rhs` in blocks of `kc` along k, each block's products summed from zero
    /// by fused multiply-adds in ascending k and then added to `dst`; with `bias`, `dst` is
    /// taken to hold each row's bias, which is read from `bias` instead; `clamp` in the last
    /// block's stores.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `lhs`, `rhs`, `dst` and `bias` hold at least `m·k`, `k·n`, `m·n`
    /// and `m`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul(
        m: usize,
        n: usize,
        k: usize,
        kc: usize,
        lhs: &[f32],
        rhs: &[f32],
        bias: Option<&[f32]>,
        dst: &mut [f32],
        clamp: Option<super::Clamp>,
    ) {
        assert!(lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n && kc > 0);
        assert!(bias.is_none_or(|b| b.len() >= m));
        let (lhs, rhs, dst) = (lhs.as_ptr(), rhs.as_ptr(), dst.as_mut_ptr());
        let bias = bias.map(|b| b.as_ptr());
        for (k0, depth) in super::k_blocks(k, kc) {
            for_each_tile(m, n, |r0, rows, c0, vectors, last| {
                // SAFETY: the tile's rows r0..r0 + rows ≤ m, columns c0.. (the last vector
                // under `last`) ≤ n and depths k0..k0 + depth ≤ k lie inside the operands
                // (assert above).
                unsafe {
                    let t = Tile {
                        depth,
                        lhs: lhs.add(r0 * k + k0),
                        lhs_stride: k,
                        rhs: rhs.add(k0 * n + c0),
                        rhs_stride: n,
                        dst: dst.add(r0 * n + c0),
                        dst_stride: n,
                        bias: bias.filter(|_| k0 == 0).map(|b| b.add(r0)),
                        last,
                        chain_from_bias: false,
                        clamp: clamp.filter(|_| k0 + depth == k),
                        rhs_rows: None,
                    };
                    t.run(rows, vectors);
                }
            });
        }
    }

    /// [`matmul`] with `dst = bias + lhs · rhs` for a product whose right-hand operand is
    /// read where it lies in a convolution's padded input ([`super::matmul_bias_gathered`]):
    /// its row `d` at output row `y`, column `x` is `rhs[rows[d] + y·row_step + x]`. The same
    /// blocks of `kc`, chains and stores as [`matmul`], so the same bits as on the operand
    /// written out.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul_gathered(
        m: usize,
        [oh, ow]: [usize; 2],
        k: usize,
        kc: usize,
        lhs: &[f32],
        rhs: &[f32],
        rows: &[usize],
        row_step: usize,
        bias: &[f32],
        dst: &mut [f32],
        clamp: Option<super::Clamp>,
    ) {
        let n = oh * ow;
        assert!(lhs.len() >= m * k && dst.len() >= m * n && bias.len() >= m && kc > 0);
        super::check_gathered(rhs, rows, k, [oh, ow], row_step);
        let (lhs, rhs, dst, bias) = (lhs.as_ptr(), rhs.as_ptr(), dst.as_mut_ptr(), bias.as_ptr());
        for (k0, depth) in super::k_blocks(k, kc) {
            for y in 0..oh {
                for_each_tile(m, ow, |r0, tile_rows, c0, vectors, last| {
                    // SAFETY: rows r0..r0 + tile_rows ≤ m of `lhs` and `dst`, depths k0..k0 +
                    // depth ≤ k, columns c0.. (the last vector under `last`) < ow of output
                    // row y: every read inside `rhs` (`check_gathered`), every write inside
                    // `dst`.
                    unsafe {
                        let t = Tile {
                            depth,
                            lhs: lhs.add(r0 * k + k0),
                            lhs_stride: k,
                            rhs: rhs.add(y * row_step + c0),
                            rhs_stride: 0,
                            dst: dst.add(r0 * n + y * ow + c0),
                            dst_stride: n,
                            bias: Some(bias.add(r0)).filter(|_| k0 == 0),
                            last,
                            chain_from_bias: false,
                            clamp: clamp.filter(|_| k0 + depth == k),
                            rhs_rows: Some(rows.as_ptr().add(k0)),
                        };
                        t.run(tile_rows, vectors);
                    }
                });
            }
        }
    }

    /// Every output tile of an `m × n` product: `f(first row, rows, first column, vectors,
    /// mask of the last vector)`. A tile of columns at a time, over every row, so that its
    /// block of the right-hand operand stays in cache.
    #[inline(always)]
    fn for_each_tile(m: usize, n: usize, mut f: impl FnMut(usize, usize, usize, usize, u16)) {
        let mut c0 = 0;
        while c0 < n {
            let cols = COLUMNS.min(n - c0);
            let last = match cols % 16 {
                0 => 0xFFFF,
                r => (1u16 << r) - 1,
            };
            let mut r0 = 0;
            while r0 < m {
                let rows = ROWS.min(m - r0);
                f(r0, rows, c0, cols.div_ceil(16), last);
                r0 += rows;
            }
            c0 += cols;
        }
    }

    /// [`super::rows_times_matrix`]: tiles over all of k, each output's chain starting from
    /// its bias (the crate's matrix-vector order), written without a further addition.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x`, `w`, `bias` and `dst` hold at least `rows·k`, `k·n`, `n`
    /// and `rows·n`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_times_matrix(
        rows: usize,
        n: usize,
        k: usize,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        dst: &mut [f32],
    ) {
        assert!(x.len() >= rows * k && w.len() >= k * n && bias.len() >= n);
        assert!(dst.len() >= rows * n);
        let (x, w, dst, bias) = (x.as_ptr(), w.as_ptr(), dst.as_mut_ptr(), bias.as_ptr());
        for_each_tile(rows, n, |r0, tile_rows, c0, vectors, last| {
            // SAFETY: rows r0..r0 + tile_rows ≤ rows, columns c0.. (the last vector under
            // `last`) ≤ n, all of k: inside the operands (asserted).
            unsafe {
                let t = Tile {
                    depth: k,
                    lhs: x.add(r0 * k),
                    lhs_stride: k,
                    rhs: w.add(c0),
                    rhs_stride: n,
                    dst: dst.add(r0 * n + c0),
                    dst_stride: n,
                    bias: Some(bias.add(c0)),
                    last,
                    chain_from_bias: true,
                    clamp: None,
                    rhs_rows: None,
                };
                t.run(tile_rows, vectors);
            }
        });
    }

    /// [`super::Clamp::apply`] in vector lanes, with the same bits: `vminps` returns its
    /// second operand on a tie, and sees no NaN after the blend (the bounds are not NaN).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn clamp_avx512(v: __m512, clamp: Option<super::Clamp>) -> __m512 {
        match clamp {
            Some(c) => {
                // `v >= lo ? v : lo` (NaN fails the ordered compare), then `hi < v ? hi : v`.
                let (lo, hi) = c.bounds();
                let lo = _mm512_set1_ps(lo);
                let v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, lo), lo, v);
                _mm512_min_ps(_mm512_set1_ps(hi), v)
            }
            None => v,
        }
    }

    /// One output tile over one block of k.
    struct Tile {
        depth: usize,
        lhs: *const f32,
        lhs_stride: usize,
        rhs: *const f32,
        rhs_stride: usize,
        dst: *mut f32,
        dst_stride: usize,
        /// Where the tile's rows start from their biases rather than from `dst`.
        bias: Option<*const f32>,
        /// Lanes of the last vector inside the matrix.
        last: u16,
        /// Whether the chains start from a bias per column (at `bias`, the same for every
        /// row; `dst_stride` is then the row length) and are stored as they end, instead of
        /// starting from zero and being added to `dst` or a bias per row.
        chain_from_bias: bool,
        /// Applied to the sums as they are stored (the product's last block of k).
        clamp: Option<super::Clamp>,
        /// Where the tile's right-hand rows are, from `rhs`, one per depth of the block,
        /// instead of every `rhs_stride` values (a product read from a convolution's
        /// input, [`matmul_gathered`]).
        rhs_rows: Option<*const usize>,
    }

    impl Tile {
        /// # Safety
        /// The CPU has AVX-512F; the tile (`rows` ≤ [`ROWS`], `vectors` ≤ [`VECTORS`], the last
        /// under `last`) lies inside the operands.
        #[target_feature(enable = "avx512f")]
        unsafe fn run(&self, rows: usize, vectors: usize) {
            // SAFETY: as the caller's.
            unsafe {
                match (rows, self.rhs_rows.is_some()) {
                    (6, false) => self.rows::<6, false>(vectors),
                    (5, false) => self.rows::<5, false>(vectors),
                    (4, false) => self.rows::<4, false>(vectors),
                    (3, false) => self.rows::<3, false>(vectors),
                    (2, false) => self.rows::<2, false>(vectors),
                    (_, false) => self.rows::<1, false>(vectors),
                    (6, true) => self.rows::<6, true>(vectors),
                    (5, true) => self.rows::<5, true>(vectors),
                    (4, true) => self.rows::<4, true>(vectors),
                    (3, true) => self.rows::<3, true>(vectors),
                    (2, true) => self.rows::<2, true>(vectors),
                    (_, true) => self.rows::<1, true>(vectors),
                }
            }
        }

        /// [`Tile::run`] for `R` rows, gathered (`G`: `rhs_rows` is set) or not.
        ///
        /// # Safety
        /// As [`Tile::run`].
        #[target_feature(enable = "avx512f")]
        unsafe fn rows<const R: usize, const G: bool>(&self, vectors: usize) {
            // SAFETY: as the caller's.
            unsafe {
                match vectors {
                    4 => self.sum::<R, 4, G>(),
                    3 => self.sum::<R, 3, G>(),
                    2 => self.sum::<R, 2, G>(),
                    _ => self.sum::<R, 1, G>(),
                }
            }
        }

        /// `R × V` vectors of chains `acc = fma(rhs, lhs, acc)` from zero, then `dst + acc` (or
        /// `bias + acc`); with `chain_from_bias`, from the columns' biases and stored as is.
        ///
        /// # Safety
        /// As [`Tile::run`], with `R`, `V` the tile's rows and vectors.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn sum<const R: usize, const V: usize, const G: bool>(&self) {
            let mask = |v: usize| if v + 1 == V { self.last } else { 0xFFFF };
            // SAFETY: as the caller's; masked lanes are neither read nor written.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); V]; R];
                if let (true, Some(bias)) = (self.chain_from_bias, self.bias) {
                    let start: [__m512; V] =
                        std::array::from_fn(|v| _mm512_maskz_loadu_ps(mask(v), bias.add(16 * v)));
                    acc = [start; R];
                }
                for d in 0..self.depth {
                    let row = match self.rhs_rows {
                        Some(rows) if G => self.rhs.add(*rows.add(d)),
                        _ => self.rhs.add(d * self.rhs_stride),
                    };
                    let x: [__m512; V] =
                        std::array::from_fn(|v| _mm512_maskz_loadu_ps(mask(v), row.add(16 * v)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let w = _mm512_set1_ps(*self.lhs.add(r * self.lhs_stride + d));
                        for (acc, &x) in acc.iter_mut().zip(&x) {
                            *acc = _mm512_fmadd_ps(x, w, *acc);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let out = self.dst.add(r * self.dst_stride);
                    if self.chain_from_bias {
                        for (v, &acc) in acc.iter().enumerate() {
                            _mm512_mask_storeu_ps(out.add(16 * v), mask(v), acc);
                        }
                        continue;
                    }
                    let bias = self.bias.map(|b| _mm512_set1_ps(*b.add(r)));
                    for (v, &acc) in acc.iter().enumerate() {
                        let p = out.add(16 * v);
                        let old = bias.unwrap_or_else(|| _mm512_maskz_loadu_ps(mask(v), p));
                        let sum = _mm512_add_ps(old, acc);
                        _mm512_mask_storeu_ps(p, mask(v), clamp_avx512(sum, self.clamp));
                    }
                }
            }
        }
    }
}

/// [`avx512`]'s kernel in AVX2 lanes, for CPUs without AVX-512: the same blocks of `kc`, the
/// same chains from zero in ascending k and the same additions to `dst` or the biases, so
/// the same bits as the crate. Tiles of 6 rows × 16 columns: 12 accumulators of the 16
/// registers, two for a row of the right-hand operand and one for a weight.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Rows of an output tile.
    pub(super) const ROWS: usize = 6;
    /// Vectors of 8 columns in an output tile.
    const VECTORS: usize = 2;
    const COLUMNS: usize = 8 * VECTORS;
    /// Bytes of the right-hand operand's block of columns: a quarter of a Zen 3 core's L2.
    const BLOCK_BYTES: usize = 128 << 10;

    /// [`super::avx512`]'s `matmul` on AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `lhs`, `rhs`, `dst` and `bias` hold at least `m·k`, `k·n`,
    /// `m·n` and `m`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul(
        m: usize,
        n: usize,
        k: usize,
        kc: usize,
        lhs: &[f32],
        rhs: &[f32],
        bias: Option<&[f32]>,
        dst: &mut [f32],
        clamp: Option<super::Clamp>,
    ) {
        assert!(lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n && kc > 0);
        assert!(bias.is_none_or(|b| b.len() >= m));
        let (lhs, rhs, dst) = (lhs.as_ptr(), rhs.as_ptr(), dst.as_mut_ptr());
        let bias = bias.map(|b| b.as_ptr());
        for (k0, depth) in super::k_blocks(k, kc) {
            // Blocks of columns whose rows of the right-hand operand stay in L2.
            let block = (BLOCK_BYTES / (4 * depth)).max(1).div_ceil(COLUMNS) * COLUMNS;
            for b0 in (0..n).step_by(block) {
                for_each_tile_along(m, b0, n.min(b0 + block), |r0, rows, c0, cols| {
                    // SAFETY: the tile's rows r0..r0 + rows ≤ m, columns c0..c0 + cols ≤ n
                    // and depths k0..k0 + depth ≤ k lie inside the operands (assert above).
                    unsafe {
                        let t = Tile {
                            depth,
                            lhs: lhs.add(r0 * k + k0),
                            lhs_stride: k,
                            rhs: rhs.add(k0 * n + c0),
                            rhs_stride: n,
                            dst: dst.add(r0 * n + c0),
                            dst_stride: n,
                            bias: bias.filter(|_| k0 == 0).map(|b| b.add(r0)),
                            clamp: clamp.filter(|_| k0 + depth == k),
                            rhs_rows: None,
                            chain_from_bias: false,
                        };
                        t.run(rows, cols);
                    }
                });
            }
        }
    }

    /// [`super::rows_times_matrix`] on AVX2: tiles of six rows, each output's chain
    /// starting from its column's bias and running over k ascending, as the `gemm` crate's
    /// matrix-vector product of one row computes it; the weights' rows are read once per six
    /// rows of the batch instead of once per row. On Lite0's classifier (1280 → 1000, eight
    /// images a call) it took 0.10 ms per image against 0.11–0.21 row by row (`--profile`).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_times_matrix(
        rows: usize,
        n: usize,
        k: usize,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        dst: &mut [f32],
    ) {
        assert!(x.len() >= rows * k && w.len() >= k * n && bias.len() >= n);
        assert!(dst.len() >= rows * n);
        let (x, w, dst, bias) = (x.as_ptr(), w.as_ptr(), dst.as_mut_ptr(), bias.as_ptr());
        // Blocks of k whose rows of `w` stay in L2 while every band of rows reads them; the
        // chains go on from one block to the next through `dst` (an f32 stored and loaded
        // back is the same value), so each is still one chain over k ascending.
        let depth = (BLOCK_BYTES / (4 * n)).max(1);
        for k0 in (0..k).step_by(depth) {
            let depth = depth.min(k - k0);
            for_each_tile_along(rows, 0, n, |r0, tile_rows, c0, cols| {
                // SAFETY: rows r0..r0 + tile_rows ≤ rows, columns c0..c0 + cols ≤ n, depths
                // k0..k0 + depth ≤ k: inside the operands (asserted).
                unsafe {
                    let t = Tile {
                        depth,
                        lhs: x.add(r0 * k + k0),
                        lhs_stride: k,
                        rhs: w.add(k0 * n + c0),
                        rhs_stride: n,
                        dst: dst.add(r0 * n + c0),
                        dst_stride: n,
                        bias: (k0 == 0).then(|| bias.add(c0)),
                        clamp: None,
                        rhs_rows: None,
                        chain_from_bias: true,
                    };
                    t.run(tile_rows, cols);
                }
            });
        }
    }

    /// The tiles of the columns `from..to` of an `m`-row product: a band of [`ROWS`] rows at
    /// a time along all of them, so that the output is written along its rows (six streams,
    /// not one per row of the product): `f(first row, rows, first column, columns)`.
    #[inline(always)]
    fn for_each_tile_along(
        m: usize,
        from: usize,
        to: usize,
        mut f: impl FnMut(usize, usize, usize, usize),
    ) {
        for r0 in (0..m).step_by(ROWS) {
            for c0 in (from..to).step_by(COLUMNS) {
                f(r0, ROWS.min(m - r0), c0, COLUMNS.min(to - c0));
            }
        }
    }

    /// [`super::avx512`]'s `matmul_gathered` on AVX2: `dst = bias + lhs · rhs` with the
    /// right-hand operand read where it lies in a convolution's padded input, its row `d` at
    /// output row `y`, column `x` at `rhs[rows[d] + y·row_step + x]`. Per output row, a band
    /// of six rows of the product at a time along it; the same blocks, chains and stores as
    /// [`matmul`], so the same bits as on the operand written out.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul_gathered(
        m: usize,
        [oh, ow]: [usize; 2],
        k: usize,
        kc: usize,
        lhs: &[f32],
        rhs: &[f32],
        rows: &[usize],
        row_step: usize,
        bias: &[f32],
        dst: &mut [f32],
        clamp: Option<super::Clamp>,
    ) {
        let n = oh * ow;
        assert!(lhs.len() >= m * k && dst.len() >= m * n && bias.len() >= m && kc > 0);
        super::check_gathered(rhs, rows, k, [oh, ow], row_step);
        let (lhs, rhs, dst, bias) = (lhs.as_ptr(), rhs.as_ptr(), dst.as_mut_ptr(), bias.as_ptr());
        for (k0, depth) in super::k_blocks(k, kc) {
            for y in 0..oh {
                for_each_tile_along(m, 0, ow, |r0, tile_rows, c0, cols| {
                    // SAFETY: rows r0..r0 + tile_rows ≤ m of `lhs` and `dst`, depths k0..k0 +
                    // depth ≤ k, columns c0..c0 + cols ≤ ow of output row y: every read
                    // inside `rhs` (`check_gathered`), every write inside `dst`.
                    unsafe {
                        let t = Tile {
                            depth,
                            lhs: lhs.add(r0 * k + k0),
                            lhs_stride: k,
                            rhs: rhs.add(y * row_step + c0),
                            rhs_stride: 0,
                            dst: dst.add(r0 * n + y * ow + c0),
                            dst_stride: n,
                            bias: Some(bias.add(r0)).filter(|_| k0 == 0),
                            clamp: clamp.filter(|_| k0 + depth == k),
                            rhs_rows: Some(rows.as_ptr().add(k0)),
                            chain_from_bias: false,
                        };
                        t.run(tile_rows, cols);
                    }
                });
            }
        }
    }

    /// [`super::Clamp::apply`] in vector lanes, with the same bits (see the AVX-512 one).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn clamp_avx2(v: __m256, clamp: Option<super::Clamp>) -> __m256 {
        match clamp {
            Some(c) => {
                let (lo, hi) = c.bounds();
                let lo = _mm256_set1_ps(lo);
                let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(v, lo);
                _mm256_min_ps(_mm256_set1_ps(hi), _mm256_blendv_ps(lo, v, keep))
            }
            None => v,
        }
    }

    /// One output tile over one block of k.
    struct Tile {
        depth: usize,
        lhs: *const f32,
        lhs_stride: usize,
        rhs: *const f32,
        rhs_stride: usize,
        dst: *mut f32,
        dst_stride: usize,
        /// Where the tile's rows start from their biases rather than from `dst`.
        bias: Option<*const f32>,
        /// Applied to the sums as they are stored (the product's last block of k).
        clamp: Option<super::Clamp>,
        /// Where the tile's right-hand rows are, from `rhs`, one per depth of the block,
        /// instead of every `rhs_stride` values ([`matmul_gathered`]).
        rhs_rows: Option<*const usize>,
        /// Whether each chain starts from its column's bias (`bias` then points at the
        /// tile's first column's), or without `bias` goes on from the value in `dst`, and is
        /// stored as it ends ([`rows_times_matrix`]).
        chain_from_bias: bool,
    }

    impl Tile {
        /// # Safety
        /// The CPU has AVX2 and FMA; the tile (`rows` ≤ [`ROWS`], `cols` ≤ [`COLUMNS`]) lies
        /// inside the operands.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run(&self, rows: usize, cols: usize) {
            // SAFETY: as the caller's.
            unsafe {
                match (rows, self.rhs_rows.is_some()) {
                    (6, false) => self.rows::<6, false>(cols),
                    (5, false) => self.rows::<5, false>(cols),
                    (4, false) => self.rows::<4, false>(cols),
                    (3, false) => self.rows::<3, false>(cols),
                    (2, false) => self.rows::<2, false>(cols),
                    (_, false) => self.rows::<1, false>(cols),
                    (6, true) => self.rows::<6, true>(cols),
                    (5, true) => self.rows::<5, true>(cols),
                    (4, true) => self.rows::<4, true>(cols),
                    (3, true) => self.rows::<3, true>(cols),
                    (2, true) => self.rows::<2, true>(cols),
                    (_, true) => self.rows::<1, true>(cols),
                }
            }
        }

        /// [`Tile::run`] for `R` rows, gathered (`G`: `rhs_rows` is set) or not: whole
        /// vectors, or a last one in part under a mask.
        ///
        /// # Safety
        /// As [`Tile::run`].
        #[target_feature(enable = "avx2,fma")]
        unsafe fn rows<const R: usize, const G: bool>(&self, cols: usize) {
            // Lanes below `cols % 8` of the last vector: `lane < left`.
            let left = _mm256_set1_epi32((cols % 8) as i32);
            let mask = _mm256_cmpgt_epi32(left, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            // SAFETY: as the caller's.
            unsafe {
                match (cols.div_ceil(8), cols.is_multiple_of(8)) {
                    (2, true) => self.sum::<R, 2, false, G>(mask),
                    (2, false) => self.sum::<R, 2, true, G>(mask),
                    (_, true) => self.sum::<R, 1, false, G>(mask),
                    (_, false) => self.sum::<R, 1, true, G>(mask),
                }
            }
        }

        /// `R × V` vectors of chains `acc = fma(rhs, lhs, acc)` from zero, then `dst + acc`
        /// (or `bias + acc`); with `chain_from_bias`, from the columns' biases and stored as
        /// is. With `PART`, the last vector's lanes outside `mask` are neither read nor
        /// written.
        ///
        /// # Safety
        /// As [`Tile::run`], with `R`, `V` the tile's rows and vectors.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn sum<const R: usize, const V: usize, const PART: bool, const G: bool>(
            &self,
            mask: __m256i,
        ) {
            let load = |p: *const f32, v: usize| {
                // SAFETY: a whole vector inside the operand, or its lanes under the mask.
                unsafe {
                    if PART && v + 1 == V {
                        _mm256_maskload_ps(p, mask)
                    } else {
                        _mm256_loadu_ps(p)
                    }
                }
            };
            // SAFETY: as the caller's; masked lanes are neither read nor written.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); V]; R];
                if self.chain_from_bias {
                    acc = std::array::from_fn(|r| {
                        let start = match self.bias {
                            Some(bias) => bias,
                            None => self.dst.add(r * self.dst_stride).cast_const(),
                        };
                        std::array::from_fn(|v| load(start.add(8 * v), v))
                    });
                }
                for d in 0..self.depth {
                    let row = match self.rhs_rows {
                        Some(rows) if G => self.rhs.add(*rows.add(d)),
                        _ => self.rhs.add(d * self.rhs_stride),
                    };
                    let x: [__m256; V] = std::array::from_fn(|v| load(row.add(8 * v), v));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let w = _mm256_broadcast_ss(&*self.lhs.add(r * self.lhs_stride + d));
                        for (acc, &x) in acc.iter_mut().zip(&x) {
                            *acc = _mm256_fmadd_ps(x, w, *acc);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let out = self.dst.add(r * self.dst_stride);
                    if self.chain_from_bias {
                        for (v, &acc) in acc.iter().enumerate() {
                            if PART && v + 1 == V {
                                _mm256_maskstore_ps(out.add(8 * v), mask, acc);
                            } else {
                                _mm256_storeu_ps(out.add(8 * v), acc);
                            }
                        }
                        continue;
                    }
                    let bias = self.bias.map(|b| _mm256_broadcast_ss(&*b.add(r)));
                    for (v, &acc) in acc.iter().enumerate() {
                        let p = out.add(8 * v);
                        let old = bias.unwrap_or_else(|| load(p, v));
                        let sum = clamp_avx2(_mm256_add_ps(old, acc), self.clamp);
                        if PART && v + 1 == V {
                            _mm256_maskstore_ps(p, mask, sum);
                        } else {
                            _mm256_storeu_ps(p, sum);
                        }
                    }
                }
            }
        }
    }
}

/// The kernel vectorised along the output channels ([`matmul_bias_by_channels`]).
mod by_channels {
    /// Output channels of a tile: three vectors.
    pub(super) const CHANNELS: usize = 48;
    /// Columns of a tile: a 7×7 plane is seven tiles, 14×14 twenty-eight.
    pub(super) const COLUMNS: usize = 7;
    /// Inputs of the images that share each block of weights: at most this many bytes (a
    /// quarter of a Zen 4 core's L2), so that they stay in cache from block to block.
    const SHARED_INPUTS: usize = 256 << 10;
    /// Output channels of an AVX2 tile: two vectors of 8.
    pub(super) const AVX2_CHANNELS: usize = 16;
    /// Columns of an AVX2 tile: 12 accumulators of the 16 registers, two for the weights,
    /// one for the input and one to spare (with 24 × 4, one accumulator spilled).
    pub(super) const AVX2_COLUMNS: usize = 6;

    /// `dst = bias + lhs · rhs` with `lhs` laid out by input, for `images` products one after
    /// another in `rhs` and `dst`: per tile of 48 channels × 7 columns, 21 vectors of chains
    /// `acc = fma(w, x, acc)` from zero over each block of `kc`, added to the running result
    /// after each block, which is then written across. A few images at a time go through
    /// each slab of 48 channels' weights. A tile skips the depths whose seven inputs are all
    /// ±0, as [`matmul_avx2`]'s do (and with the same bits, for the same reasons); the lists
    /// of depths are made once per image, before its slabs.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `rhs`, `dst` and `bias` hold at least `images·k·n`,
    /// `images·m·n` and `m`, and `w` is laid out for `m × k`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul(
        m: usize,
        n: usize,
        k: usize,
        kc: usize,
        images: usize,
        w: &super::WeightsByInput,
        rhs: &[f32],
        bias: &[f32],
        dst: &mut [f32],
        clamp: Option<super::Clamp>,
    ) {
        use std::arch::x86_64::*;
        const V: usize = CHANNELS / 16;
        assert!(rhs.len() >= images * k * n && dst.len() >= images * m * n);
        assert!(bias.len() >= m && n > 0);
        assert!(w.rows == m && w.depth == k && w.data.len() >= w.stride * k && kc > 0);
        assert!(w.tile == w.stride, "weights laid out for another kernel");
        let tiles = n.div_ceil(COLUMNS);
        let together = (SHARED_INPUTS / (4 * k * n).max(1)).max(1);
        // Per image and tile, the depths that are not all ±0, as in `matmul_avx2`.
        let mut lists = TileLists::new(images, tiles, k);
        for image in 0..images {
            let x = rhs[image * k * n..][..k * n].as_ptr();
            lists.make(image, w.finite, |tile, d| {
                let p0 = tile * COLUMNS;
                // SAFETY: AVX-512F is enabled; columns p0.. of row d of the image's inputs.
                unsafe { has_nonzero_avx512(x.add(d * n + p0), n - p0) }
            });
        }
        // SAFETY: loads of `w` stay in its padded rows (c0 + 48 ≤ stride); of `rhs` at column
        // min(p, n − 1) of rows < k of an image < images; of `bias` under the mask of
        // channels < m; stores only at channels < m and columns < n of an image < images.
        unsafe {
            for first in (0..images).step_by(together) {
                for c0 in (0..m).step_by(CHANNELS) {
                    // The lanes of real channels.
                    let real: [__mmask16; V] = std::array::from_fn(|v| {
                        let left = m.saturating_sub(c0 + 16 * v).min(16);
                        ((1u32 << left) - 1) as __mmask16
                    });
                    let b: [__m512; V] = std::array::from_fn(|v| {
                        _mm512_maskz_loadu_ps(real[v], bias.as_ptr().add(c0 + 16 * v))
                    });
                    for image in first..images.min(first + together) {
                        let rhs = rhs.as_ptr().add(image * k * n);
                        let dst = dst.as_mut_ptr().add(image * m * n);
                        let bias = (b, real);
                        slab(m, n, k, kc, c0, w, rhs, lists.of(image), bias, dst, clamp);
                    }
                }
            }
        }
    }

    /// Whether any of the (at most seven) inputs of a tile's depth from `inputs`, `left`
    /// columns to the row's end, is other than ±0 (NaN counts).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `min(left, 7)` floats from `inputs` are readable.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn has_nonzero_avx512(inputs: *const f32, left: usize) -> bool {
        use std::arch::x86_64::*;
        let keep = ((1u32 << left.min(COLUMNS)) - 1) as __mmask16;
        // SAFETY: as the caller's; lanes outside `keep` are not read.
        unsafe {
            let v = _mm512_maskz_loadu_ps(keep, inputs);
            _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(keep, v, _mm512_setzero_ps()) != 0
        }
    }

    /// One slab of 48 channels (from `c0`) of one image: [`matmul`]'s tiles along the row,
    /// each over the depths `reads` gives it, from the biases `b` (`real` the lanes of real
    /// channels, where an output of ±0 sends a tile that skipped depths to be computed
    /// again in full).
    ///
    /// # Safety
    /// As [`matmul`], for one image's `rhs` (`k·n`) and `dst` (`m·n`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn slab(
        m: usize,
        n: usize,
        k: usize,
        kc: usize,
        c0: usize,
        w: &super::WeightsByInput,
        rhs: *const f32,
        reads: Depths<'_>,
        (b, real): (
            [std::arch::x86_64::__m512; CHANNELS / 16],
            [std::arch::x86_64::__mmask16; CHANNELS / 16],
        ),
        dst: *mut f32,
        clamp: Option<super::Clamp>,
    ) {
        use std::arch::x86_64::*;
        const V: usize = CHANNELS / 16;
        const P: usize = COLUMNS;
        // SAFETY: as the caller's.
        unsafe {
            for (tile, p0) in (0..n).step_by(P).enumerate() {
                let column: [usize; P] = std::array::from_fn(|p| (p0 + p).min(n - 1));
                let live = reads.live[tile];
                let read = (live < k).then(|| &reads.lists[tile * k..][..live]);
                let mut out = tile_avx512(k, kc, read, w, c0, rhs, n, &column, b);
                if read.is_some() {
                    let zero = _mm512_setzero_ps();
                    let zeros = out.iter().any(|out| {
                        out.iter().zip(&real).any(|(&o, &real)| {
                            _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(real, o, zero) != 0
                        })
                    });
                    if zeros {
                        out = tile_avx512(k, kc, None, w, c0, rhs, n, &column, b);
                    }
                }
                // Written across: per vector of 16 channels, its halves' 8 × 8 transposes
                // (the tile's 7 columns and a spare) give each channel's run of columns,
                // stored under a mask of the tile's columns.
                let columns = P.min(n - p0);
                let channels = CHANNELS.min(m - c0);
                let keep: __mmask16 = (1 << columns) - 1;
                // The tile by vector of channels: `out` is by column.
                let by_vector: [[__m512; P]; V] = std::array::from_fn(|v| {
                    std::array::from_fn(|p| super::avx512::clamp_avx512(out[p][v], clamp))
                });
                for (v, clamped) in by_vector.iter().enumerate() {
                    for half in 0..2 {
                        let rows: [__m256; 8] = std::array::from_fn(|p| {
                            let o = _mm512_castps_pd(clamped[p.min(P - 1)]);
                            _mm256_castpd_ps(if half == 0 {
                                _mm512_castpd512_pd256(o)
                            } else {
                                _mm512_extractf64x4_pd::<1>(o)
                            })
                        });
                        for (l, run) in crate::ops::transpose::transpose8(rows).iter().enumerate() {
                            let c = 16 * v + 8 * half + l;
                            if c < channels {
                                let at = dst.add((c0 + c) * n + p0);
                                _mm512_mask_storeu_ps(at, keep, _mm512_castps256_ps512(*run));
                            }
                        }
                    }
                }
            }
        }
    }

    /// One tile of [`slab`]: `bias + Σ w·x` for 48 channels × 7 columns (`column`, of rows
    /// `n` apart in `rhs`) over `depths` (ascending; every depth, in order, where `None`),
    /// chains from zero by blocks of `kc` as the full product's.
    ///
    /// # Safety
    /// As [`slab`]'s, with every depth below `k`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile_avx512(
        k: usize,
        kc: usize,
        depths: Option<&[u32]>,
        w: &super::WeightsByInput,
        c0: usize,
        rhs: *const f32,
        n: usize,
        column: &[usize; COLUMNS],
        b: [std::arch::x86_64::__m512; CHANNELS / 16],
    ) -> [[std::arch::x86_64::__m512; CHANNELS / 16]; COLUMNS] {
        use std::arch::x86_64::*;
        const V: usize = CHANNELS / 16;
        let mut out = [b; COLUMNS];
        let mut rest = depths.unwrap_or_default();
        for (k0, depth) in super::k_blocks(k, kc) {
            let mut acc = [[_mm512_setzero_ps(); V]; COLUMNS];
            // SAFETY: d < k: inside the padded weights and the image's inputs.
            let add = |d: usize| unsafe {
                let row = w.data.as_ptr().add(d * w.stride + c0);
                let wv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(row.add(16 * v)));
                let x = rhs.add(d * n);
                for (acc, &col) in acc.iter_mut().zip(column) {
                    let xb = _mm512_set1_ps(*x.add(col));
                    for (acc, &wv) in acc.iter_mut().zip(&wv) {
                        *acc = _mm512_fmadd_ps(wv, xb, *acc);
                    }
                }
            };
            each_depth(depths.is_some(), &mut rest, k0..k0 + depth, add);
            for (out, acc) in out.iter_mut().zip(&acc) {
                for (out, &acc) in out.iter_mut().zip(acc) {
                    *out = _mm512_add_ps(*out, acc);
                }
            }
        }
        out
    }

    /// [`matmul`] on AVX2: tiles of 16 channels × 6 columns, 12 vectors of chains
    /// `acc = fma(w, x, acc)` from zero over each block of `kc`, added to the running result
    /// (from the bias) after each block, which is then clamped and written across. A few
    /// images at a time go through each block of 16 channels' weights, their inputs packed
    /// beforehand tile by tile (`[tile][k][6]`), so that both operands are read in order.
    ///
    /// A tile skips the depths whose six inputs are all ±0 (after a ReLU or a spiking unit:
    /// 46% of the multiply-adds of Lite0's 14×14 and 7×7 projections): with finite weights such
    /// a term is a zero, and adding a zero leaves a chain as it was, or a zero of either
    /// sign. So a chain that skips them ends equal to the full one, or both end as zeros, and
    /// a tile with an output of ±0 is computed again in full; the bits are the full
    /// product's. A tile with fewer than an eighth of its depths to skip reads them all in
    /// order (the list costs about as much), and so does every tile of an image whose first
    /// tile has so few (dense inputs, after a swish or of an expansion, are not tested
    /// further).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `rhs`, `dst` and `bias` hold at least `images·k·n`,
    /// `images·m·n` and `m`, and `w` is laid out for `m × k`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul_avx2(
        m: usize,
        n: usize,
        k: usize,
        kc: usize,
        images: usize,
        w: &super::WeightsByInput,
        rhs: &[f32],
        bias: &[f32],
        dst: &mut [f32],
        clamp: Option<super::Clamp>,
    ) {
        use std::arch::x86_64::*;
        const P: usize = AVX2_COLUMNS;
        assert!(rhs.len() >= images * k * n && dst.len() >= images * m * n);
        assert!(bias.len() >= m && n > 0);
        assert!(w.rows == m && w.depth == k && w.data.len() >= w.stride * k && kc > 0);
        assert!(
            w.tile == AVX2_CHANNELS,
            "weights laid out for another kernel"
        );
        let tiles = n.div_ceil(P);
        let per_image = tiles * k * P;
        let together = (SHARED_INPUTS / (4 * per_image).max(1)).clamp(1, images.max(1));
        // Two floats past the last tile: the test of a depth's six inputs reads eight.
        let mut packed = vec![0.0f32; together * per_image + 2];
        // Per image of a group and tile, the depths whose inputs are not all ±0.
        let mut lists = TileLists::new(together, tiles, k);
        for first in (0..images).step_by(together) {
            let group = together.min(images - first);
            for (image, packed) in packed.chunks_exact_mut(per_image).take(group).enumerate() {
                let x = &rhs[(first + image) * k * n..][..k * n];
                for (tile, packed) in packed.chunks_exact_mut(k * P).enumerate() {
                    let p0 = tile * P;
                    let rows = packed.chunks_exact_mut(P).zip(x.chunks_exact(n));
                    if p0 + P <= n {
                        rows.for_each(|(row, x)| row.copy_from_slice(&x[p0..p0 + P]));
                    } else {
                        // The last tile, partial: its last column repeated.
                        for (row, x) in rows {
                            for (p, y) in row.iter_mut().enumerate() {
                                *y = x[(p0 + p).min(n - 1)];
                            }
                        }
                    }
                }
            }
            for image in 0..group {
                let x = packed[image * per_image..].as_ptr();
                lists.make(image, w.finite, |tile, d| {
                    // SAFETY: AVX2 is enabled; the tile's depths lie in `packed`.
                    unsafe { has_nonzero(x.add((tile * k + d) * P)) }
                });
            }
            // SAFETY: a block of weights is `k × 16` from `c0·k` (c0 + 16 ≤ stride); the
            // packed inputs are `group` images of `tiles` tiles of `k × 6`; stores only at
            // channels < m and columns < n of an image < images.
            unsafe {
                for c0 in (0..m).step_by(AVX2_CHANNELS) {
                    let mut padded = [0.0f32; AVX2_CHANNELS];
                    let channels = AVX2_CHANNELS.min(m - c0);
                    padded[..channels].copy_from_slice(&bias[c0..c0 + channels]);
                    let b: [__m256; AVX2_CHANNELS / 8] =
                        std::array::from_fn(|v| _mm256_loadu_ps(padded.as_ptr().add(8 * v)));
                    let block = w.data.as_ptr().add(c0 * k);
                    for image in 0..group {
                        let x = packed.as_ptr().add(image * per_image);
                        let dst = dst.as_mut_ptr().add((first + image) * m * n + c0 * n);
                        let reads = lists.of(image);
                        slab_avx2(n, k, kc, channels, block, x, reads, b, dst, clamp);
                    }
                }
            }
        }
    }

    /// Runs `add` on a tile's depths in the block `block` of k, ascending: every one where
    /// the tile reads them all, else those of its list at the front of `rest` (which then
    /// moves past them).
    #[inline(always)]
    fn each_depth(
        listed: bool,
        rest: &mut &[u32],
        block: std::ops::Range<usize>,
        mut add: impl FnMut(usize),
    ) {
        if listed {
            let end = block.end as u32;
            let (these, more) = rest.split_at(rest.partition_point(|&d| d < end));
            *rest = more;
            these.iter().for_each(|&d| add(d as usize));
        } else {
            block.for_each(add);
        }
    }

    /// Per image and tile, the depths a tile of the channel products reads: those whose
    /// inputs are not all ±0 (ascending, `k` slots a tile; made only once an image has
    /// zeros enough), and how many; `k` where the tile reads every depth in order (too few
    /// zeros to pay for the list, an image whose first tile has too few, or weights that are
    /// not all finite).
    struct TileLists {
        lists: Vec<u32>,
        live: Vec<usize>,
        tiles: usize,
        k: usize,
    }

    impl TileLists {
        /// Room for `images` images of `tiles` tiles over `k` depths, every tile reading
        /// every depth.
        fn new(images: usize, tiles: usize, k: usize) -> TileLists {
            TileLists {
                lists: Vec::new(),
                live: vec![k; images * tiles],
                tiles,
                k,
            }
        }

        /// Makes image `image`'s lists, `nonzero(tile, depth)` telling whether a tile's
        /// inputs at a depth are not all ±0. The image's first tile decides whether its
        /// inputs have zeros enough: dense ones (after a swish, or an expansion's) then cost
        /// one tile's test, not every tile's.
        #[inline(always)]
        fn make(&mut self, image: usize, finite: bool, nonzero: impl Fn(usize, usize) -> bool) {
            let (k, tiles, slots) = (self.k, self.tiles, self.live.len() * self.k);
            let live = &mut self.live[image * tiles..(image + 1) * tiles];
            live.fill(k);
            let dense = |count: usize| reads_every_depth(count, k);
            if !finite || k == 0 || dense((0..k).filter(|&d| nonzero(0, d)).count()) {
                return;
            }
            if self.lists.is_empty() {
                self.lists = vec![0; slots];
            }
            let lists = &mut self.lists[image * tiles * k..(image + 1) * tiles * k];
            for (tile, (list, live)) in lists.chunks_exact_mut(k).zip(live).enumerate() {
                let mut len = 0;
                for d in 0..k {
                    // Written at every depth, kept where nonzero (len ≤ d).
                    list[len] = d as u32;
                    len += usize::from(nonzero(tile, d));
                }
                *live = if dense(len) { k } else { len };
            }
        }

        /// Image `image`'s depths, as its slabs read them.
        fn of(&self, image: usize) -> Depths<'_> {
            let (k, tiles) = (self.k, self.tiles);
            Depths {
                lists: self
                    .lists
                    .get(image * tiles * k..(image + 1) * tiles * k)
                    .unwrap_or_default(),
                live: &self.live[image * tiles..(image + 1) * tiles],
            }
        }
    }

    /// Whether a tile (or an image, judged on its first tile) with `live` of its `k` depths
    /// not all ±0 reads every depth in order: with fewer than an eighth to skip, the list of
    /// depths costs about as much as it saves.
    fn reads_every_depth(live: usize, k: usize) -> bool {
        live > k - k / 8
    }

    /// Whether any of the six packed inputs at `inputs` is other than ±0 (NaN counts):
    /// branch-free, by one 8-lane load, compare and mask.
    ///
    /// # Safety
    /// The CPU has AVX2; eight floats from `inputs` are readable (a packed buffer has two
    /// spare ones after its last tile).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn has_nonzero(inputs: *const f32) -> bool {
        use std::arch::x86_64::*;
        // SAFETY: as the caller's.
        unsafe {
            let v = _mm256_loadu_ps(inputs);
            let ne = _mm256_cmp_ps::<_CMP_NEQ_UQ>(v, _mm256_setzero_ps());
            _mm256_movemask_ps(ne) & 0x3f != 0
        }
    }

    /// The depths each tile of one image reads ([`TileLists::of`]): tile t's are the first
    /// `live[t]` of `lists[t·k..(t + 1)·k]`, or every depth in order where `live[t]` is k.
    #[derive(Clone, Copy)]
    struct Depths<'a> {
        lists: &'a [u32],
        live: &'a [usize],
    }

    /// One block of 16 channels (`channels` of them real) of one image: [`matmul_avx2`]'s
    /// tiles along the row. `block` is the block's weights (`k × 16`), `x` the image's
    /// packed inputs, `reads` the depths of its tiles, `dst` the block's first channel's
    /// output row.
    ///
    /// # Safety
    /// As [`matmul_avx2`], for one image's packed inputs and the block's `channels` rows of
    /// `dst`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn slab_avx2(
        n: usize,
        k: usize,
        kc: usize,
        channels: usize,
        block: *const f32,
        x: *const f32,
        reads: Depths<'_>,
        b: [std::arch::x86_64::__m256; AVX2_CHANNELS / 8],
        dst: *mut f32,
        clamp: Option<super::Clamp>,
    ) {
        use std::arch::x86_64::*;
        const V: usize = AVX2_CHANNELS / 8;
        const P: usize = AVX2_COLUMNS;
        // SAFETY: as the caller's.
        unsafe {
            // The lanes of real channels, where an output of ±0 sends a tile to be computed
            // again in full (the padding's are zeros).
            let real: [__m256; V] = std::array::from_fn(|v| {
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let left = _mm256_set1_epi32(channels.saturating_sub(8 * v) as i32);
                _mm256_castsi256_ps(_mm256_cmpgt_epi32(left, lane))
            });
            for (tile, p0) in (0..n).step_by(P).enumerate() {
                let x = x.add(tile * k * P);
                let live = reads.live[tile];
                let read = (live < k).then(|| &reads.lists[tile * k..][..live]);
                let mut out = tile_avx2(k, kc, read, block, x, b);
                if read.is_some() {
                    let zero = _mm256_setzero_ps();
                    let zeros = out.iter().fold(zero, |any, out| {
                        out.iter().zip(&real).fold(any, |any, (&o, &real)| {
                            let z = _mm256_cmp_ps::<_CMP_EQ_OQ>(o, zero);
                            _mm256_or_ps(any, _mm256_and_ps(z, real))
                        })
                    });
                    if _mm256_movemask_ps(zeros) != 0 {
                        out = tile_avx2(k, kc, None, block, x, b);
                    }
                }
                for out in out.iter_mut().flatten() {
                    *out = super::avx2::clamp_avx2(*out, clamp);
                }
                let columns = P.min(n - p0);
                if columns == P && channels == AVX2_CHANNELS {
                    store_transposed(&out, dst.add(p0), n);
                    continue;
                }
                let mut tile = [[0.0f32; AVX2_CHANNELS]; P];
                for (t, out) in tile.iter_mut().zip(&out) {
                    for (v, &o) in out.iter().enumerate() {
                        _mm256_storeu_ps(t.as_mut_ptr().add(8 * v), o);
                    }
                }
                for c in 0..channels {
                    let row = dst.add(c * n + p0);
                    for (p, t) in tile.iter().take(columns).enumerate() {
                        *row.add(p) = t[c];
                    }
                }
            }
        }
    }

    /// One tile of [`slab_avx2`]: `bias + Σ w·x` for 16 channels × 6 columns over `depths`
    /// (ascending; every depth, in order, where `None`), chains from zero by blocks of `kc`
    /// as the full product's.
    ///
    /// # Safety
    /// As [`slab_avx2`]'s, with every depth below `k`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_avx2(
        k: usize,
        kc: usize,
        depths: Option<&[u32]>,
        block: *const f32,
        x: *const f32,
        b: [std::arch::x86_64::__m256; AVX2_CHANNELS / 8],
    ) -> [[std::arch::x86_64::__m256; AVX2_CHANNELS / 8]; AVX2_COLUMNS] {
        use std::arch::x86_64::*;
        const V: usize = AVX2_CHANNELS / 8;
        const P: usize = AVX2_COLUMNS;
        let mut out = [b; P];
        let mut rest = depths.unwrap_or_default();
        for (k0, depth) in super::k_blocks(k, kc) {
            let mut acc = [[_mm256_setzero_ps(); V]; P];
            // SAFETY: d < k, inside the block's weights and the tile's packed inputs.
            let add = |d: usize| unsafe {
                let row = block.add(d * AVX2_CHANNELS);
                let wv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(row.add(8 * v)));
                let x = x.add(d * P);
                for (p, acc) in acc.iter_mut().enumerate() {
                    let xb = _mm256_broadcast_ss(&*x.add(p));
                    for (acc, &wv) in acc.iter_mut().zip(&wv) {
                        *acc = _mm256_fmadd_ps(wv, xb, *acc);
                    }
                }
            };
            each_depth(depths.is_some(), &mut rest, k0..k0 + depth, add);
            for (out, acc) in out.iter_mut().zip(&acc) {
                for (out, &acc) in out.iter_mut().zip(acc) {
                    *out = _mm256_add_ps(*out, acc);
                }
            }
        }
        out
    }

    /// Writes a whole tile, `out[p][v]` holding channels 8v..8v+8 of column p, as 16 rows of
    /// 6 columns from `dst` (rows `n` apart): per vector of channels, columns 0..4 as a 4 × 8
    /// block transposed in registers, columns 4 and 5 as pairs.
    ///
    /// # Safety
    /// The CPU has AVX2; `dst` has 16 rows of 6 columns at `n` apart.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store_transposed(
        out: &[[std::arch::x86_64::__m256; AVX2_CHANNELS / 8]; AVX2_COLUMNS],
        dst: *mut f32,
        n: usize,
    ) {
        use std::arch::x86_64::*;
        // SAFETY: as the caller's.
        unsafe {
            for v in 0..AVX2_CHANNELS / 8 {
                let row = |c: usize| dst.add((8 * v + c) * n);
                let [a0, a1, a2, a3, a4, a5] = out.map(|column| column[v]);
                // Per 128-bit half: t0 = (a0₀ a1₀ a0₁ a1₁), t1 = (a0₂ a1₂ a0₃ a1₃), …
                let t0 = _mm256_unpacklo_ps(a0, a1);
                let t1 = _mm256_unpackhi_ps(a0, a1);
                let t2 = _mm256_unpacklo_ps(a2, a3);
                let t3 = _mm256_unpackhi_ps(a2, a3);
                // Channel c (and c + 4 in the upper half): its columns 0..4.
                let quads = [
                    _mm256_shuffle_ps::<0x44>(t0, t2),
                    _mm256_shuffle_ps::<0xEE>(t0, t2),
                    _mm256_shuffle_ps::<0x44>(t1, t3),
                    _mm256_shuffle_ps::<0xEE>(t1, t3),
                ];
                // Channels (c, c + 1) and (c + 4, c + 5): their columns 4 and 5.
                let pairs = [_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5)];
                for (c, q) in quads.into_iter().enumerate() {
                    _mm_storeu_ps(row(c), _mm256_castps256_ps128(q));
                    _mm_storeu_ps(row(c + 4), _mm256_extractf128_ps::<1>(q));
                }
                for (i, pair) in pairs.into_iter().enumerate() {
                    // As 64-bit lanes: each a channel's two columns.
                    let low = _mm_castps_pd(_mm256_castps256_ps128(pair));
                    let high = _mm_castps_pd(_mm256_extractf128_ps::<1>(pair));
                    _mm_storel_pd(row(2 * i).add(4).cast(), low);
                    _mm_storeh_pd(row(2 * i + 1).add(4).cast(), low);
                    _mm_storel_pd(row(2 * i + 4).add(4).cast(), high);
                    _mm_storeh_pd(row(2 * i + 5).add(4).cast(), high);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test values from `seed`: magnitudes over 2^±12, so that sums round differently in
    /// another order, and with `special` some ±0, infinities and NaN.
    fn values(seed: u64) -> impl FnMut(bool) -> f32 {
        let mut state = seed;
        let mut rand = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        move |special| {
            let r = rand();
            if special {
                match r % 16 {
                    0 => return 0.0,
                    1 => return -0.0,
                    2 if r % 64 == 2 => return f32::INFINITY,
                    3 if r % 256 == 3 => return f32::NAN,
                    _ => {}
                }
            }
            let exp = (r >> 8) % 24;
            let mant = (rand() % (1 << 20)) as f32 / (1 << 20) as f32 + 1.0;
            let v = mant * 2f32.powi(exp as i32 - 12);
            if r & 1 == 1 { -v } else { v }
        }
    }

    /// Whether the AVX2 kernels run here (AVX2 and FMA); says so where they do not, for the
    /// tests that then check nothing of them.
    #[cfg(target_arch = "x86_64")]
    fn avx2_and_fma() -> bool {
        let yes = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if !yes {
            eprintln!("no AVX2 and FMA: only the gemm crate runs here");
        }
        yes
    }

    /// The same bits, any NaN matching any NaN (payloads may differ).
    fn same(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
    }

    /// `bias + lhs · image` by the `gemm` crate for each `k × n` image of `rhs`, one after
    /// another: what the kernels vectorised along the channels must give.
    fn crate_image_by_image(
        m: usize,
        n: usize,
        k: usize,
        lhs: &[f32],
        rhs: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let mut theirs = Vec::new();
        for image in rhs.chunks(k * n) {
            let mut alone: Vec<f32> = bias.iter().flat_map(|&b| vec![b; n]).collect();
            gemm_crate(m, n, k, lhs, image, &mut alone, Parallelism::None);
            theirs.extend(alone);
        }
        theirs
    }

    /// Our kernel against the `gemm` crate, bit for bit, on shapes with every edge (partial
    /// tiles of rows and of columns, k in one block and in several) and values whose sums
    /// depend on their order, signed zeros, infinities and NaN; accumulating into `dst` and
    /// starting from biases.
    #[test]
    fn avx512_kernel_gives_the_gemm_crates_bits() {
        if !ours_available() {
            eprintln!("no AVX-512F: only the gemm crate runs here");
            return;
        }
        let mut value = values(11);
        let shapes = [
            (6, 64, 3),
            (7, 65, 17),
            (16, 49, 32),
            (24, 196, 96),
            (5, 60, 600),
            (40, 784, 144),
            (13, 100, 1153),
            (2, 200, 700),
            // Stays with the crate (its small-product path), for both.
            (70, 3, 80),
            (96, 300, 16),
            (64, 64, 1300),
            (33, 47, 520),
            // Small planes, vectorised along the channels: 7×7 with k in three blocks,
            // channels and columns past whole tiles.
            (100, 49, 1100),
            (50, 33, 70),
            (192, 49, 96),
        ];
        let mut by_channels_chosen = false;
        for (case, &(m, n, k)) in shapes.iter().enumerate() {
            assert_eq!(tiled_block(m, n, k).is_some(), n != 3, "m {m} n {n} k {k}");
            let special = case % 2 == 1;
            let lhs: Vec<f32> = (0..m * k).map(|_| value(special)).collect();
            let rhs: Vec<f32> = (0..k * n).map(|_| value(special)).collect();
            let start: Vec<f32> = (0..m * n).map(|_| value(special)).collect();
            let bias: Vec<f32> = (0..m).map(|_| value(special)).collect();
            let mut ours = start.clone();
            let mut theirs = start.clone();
            matmul(m, n, k, &lhs, &rhs, &mut ours, Parallelism::None);
            gemm_crate(m, n, k, &lhs, &rhs, &mut theirs, Parallelism::None);
            assert!(
                same(&ours, &theirs),
                "m {m} n {n} k {k}: not the gemm crate's bits"
            );
            // From the biases: as the crate into rows filled with them (`ours` starts dirty).
            let mut theirs: Vec<f32> = bias.iter().flat_map(|&b| vec![b; n]).collect();
            gemm_crate(m, n, k, &lhs, &rhs, &mut theirs, Parallelism::None);
            matmul_bias(
                m,
                n,
                k,
                &lhs,
                &rhs,
                &bias,
                &mut ours,
                Parallelism::None,
                None,
            );
            assert!(
                same(&ours, &theirs),
                "m {m} n {n} k {k}: with biases, not the crate's bits"
            );
            // A clamp in the last stores: the crate's bits, clamped.
            let clamp = match case % 3 {
                0 => Clamp::new(0.0, 6.0).unwrap(),
                1 => Clamp::RELU,
                _ => Clamp::new(-0.5, 0.25).unwrap(),
            };
            let mut clamped = theirs.clone();
            clamp.apply_all(&mut clamped);
            let mut ours_clamped = vec![f32::NAN; m * n];
            let par = Parallelism::None;
            matmul_bias(
                m,
                n,
                k,
                &lhs,
                &rhs,
                &bias,
                &mut ours_clamped,
                par,
                Some(clamp),
            );
            assert!(
                same(&ours_clamped, &clamped),
                "m {m} n {n} k {k}: clamped, not the crate's bits clamped"
            );
            // Vectorised along the channels: where it would run, and on every shape.
            let by_input = WeightsByInput::new(&lhs, m, k);
            ours.fill(f32::NAN);
            matmul_bias_by_channels(m, n, k, 1, &lhs, &by_input, &rhs, &bias, &mut ours, None);
            assert!(
                same(&ours, &theirs),
                "m {m} n {n} k {k}: by channels, not the crate's bits"
            );
            ours.fill(f32::NAN);
            let (w, b) = (&by_input, &bias);
            matmul_bias_by_channels(m, n, k, 1, &lhs, w, &rhs, b, &mut ours, Some(clamp));
            assert!(
                same(&ours, &clamped),
                "m {m} n {n} k {k}: by channels, clamped, not the crate's bits clamped"
            );
            // Several images through the same weights: each as alone (the second image's
            // inputs are the first's reversed, the third's the first's again).
            let rhs3: Vec<f32> = [
                rhs.clone(),
                rhs.iter().rev().copied().collect(),
                rhs.clone(),
            ]
            .concat();
            let theirs3 = crate_image_by_image(m, n, k, &lhs, &rhs3, &bias);
            let mut ours3 = vec![f32::NAN; 3 * m * n];
            matmul_bias_by_channels(m, n, k, 3, &lhs, &by_input, &rhs3, &bias, &mut ours3, None);
            assert!(
                same(&ours3, &theirs3),
                "m {m} n {n} k {k}: three images by channels, not the crate's bits"
            );
            by_channels_chosen |= prefers_channels(m, n, k);
        }
        assert!(by_channels_chosen);
    }

    /// The AVX-512 kernel vectorised along the channels against the `gemm` crate, bit for bit,
    /// natively or on an emulated CPU ([`avx512_by_channels`]): the shapes of the test above
    /// that the kernels tile, with signed zeros, infinities and NaN in every other one, from
    /// biases and clamped.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_channel_kernel_gives_the_gemm_crates_bits() {
        let mut value = values(13);
        for (case, (m, n, k)) in [(16, 49, 32), (24, 196, 96), (100, 49, 1100), (50, 33, 70)]
            .into_iter()
            .enumerate()
        {
            let Some(kc) = tiled_block(m, n, k) else {
                panic!("m {m} n {n} k {k}: tiled by the kernels");
            };
            let special = case % 2 == 1;
            let lhs: Vec<f32> = (0..m * k).map(|_| value(special)).collect();
            let rhs: Vec<f32> = (0..k * n).map(|_| value(special)).collect();
            let bias: Vec<f32> = (0..m).map(|_| value(special)).collect();
            let theirs = crate_image_by_image(m, n, k, &lhs, &rhs, &bias);
            let clamp = Clamp::new(-0.5, 0.25).unwrap();
            let mut clamped = theirs.clone();
            clamp.apply_all(&mut clamped);
            let w = WeightsByInput::for_kernel(Some(ChannelKernel::Avx512), &lhs, m, k);
            for (clamp, expected) in [(None, &theirs), (Some(clamp), &clamped)] {
                let mut ours = vec![f32::NAN; m * n];
                if !avx512_by_channels(m, n, k, kc, 1, &w, &rhs, &bias, &mut ours, clamp) {
                    eprintln!("no AVX-512F and no emulator: the AVX-512 kernel is not tested");
                    return;
                }
                assert!(
                    same(&ours, expected),
                    "m {m} n {n} k {k}, clamp {clamp:?}: not the crate's bits"
                );
            }
        }
    }

    /// The AVX2 kernel against the `gemm` crate, bit for bit, wherever the CPU has AVX2 and
    /// FMA (with or without AVX-512): every shape of the AVX-512 kernel's test that the
    /// kernels tile, accumulating into `dst`, from biases and clamped; whole products and
    /// bands of rows on three threads through [`matmul_bias`] where it is the kernel here.
    /// The AVX-512 kernel too, accumulating and clamped, where it runs ([`on_avx512`]).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_kernel_gives_the_gemm_crates_bits() {
        if !avx2_and_fma() {
            return;
        }
        let mut value = values(23);
        let shapes = [
            (6, 48, 3),
            (7, 41, 17),
            (16, 49, 32),
            (24, 196, 96),
            (5, 60, 600),
            (40, 784, 144),
            (13, 100, 1153),
            (2, 200, 700),
            (96, 300, 16),
            (64, 64, 1300),
            (33, 47, 520),
            (11, 25, 5),
            (100, 49, 1100),
        ];
        for (case, &(m, n, k)) in shapes.iter().enumerate() {
            let Some(kc) = tiled_block(m, n, k) else {
                panic!("m {m} n {n} k {k}: tiled by the kernels");
            };
            let special = case % 2 == 1;
            let lhs: Vec<f32> = (0..m * k).map(|_| value(special)).collect();
            let rhs: Vec<f32> = (0..k * n).map(|_| value(special)).collect();
            let start: Vec<f32> = (0..m * n).map(|_| value(special)).collect();
            let bias: Vec<f32> = (0..m).map(|_| value(special)).collect();
            let (mut ours, mut theirs) = (start.clone(), start.clone());
            // SAFETY: AVX2 and FMA were detected; the operands have the product's sizes.
            unsafe { avx2::matmul(m, n, k, kc, &lhs, &rhs, None, &mut ours, None) };
            gemm_crate(m, n, k, &lhs, &rhs, &mut theirs, Parallelism::None);
            assert!(
                same(&ours, &theirs),
                "m {m} n {n} k {k}: not the crate's bits"
            );
            let mut ours512 = start.clone();
            let avx512 = on_avx512(&mut ours512, |out| {
                // SAFETY: AVX-512F (`on_avx512`); the operands have the product's sizes.
                unsafe { avx512::matmul(m, n, k, kc, &lhs, &rhs, None, out, None) }
            });
            assert!(
                !avx512 || same(&ours512, &theirs),
                "m {m} n {n} k {k}: AVX-512, not the crate's bits"
            );
            let mut theirs: Vec<f32> = bias.iter().flat_map(|&b| vec![b; n]).collect();
            gemm_crate(m, n, k, &lhs, &rhs, &mut theirs, Parallelism::None);
            let b = Some(&bias[..]);
            // SAFETY: as above.
            unsafe { avx2::matmul(m, n, k, kc, &lhs, &rhs, b, &mut ours, None) };
            assert!(same(&ours, &theirs), "m {m} n {n} k {k}: from biases");
            let clamp = match case % 3 {
                0 => Clamp::new(0.0, 6.0).unwrap(),
                1 => Clamp::RELU,
                _ => Clamp::new(-0.5, 0.25).unwrap(),
            };
            let mut clamped = theirs.clone();
            clamp.apply_all(&mut clamped);
            ours.fill(f32::NAN);
            // SAFETY: as above.
            unsafe { avx2::matmul(m, n, k, kc, &lhs, &rhs, b, &mut ours, Some(clamp)) };
            assert!(same(&ours, &clamped), "m {m} n {n} k {k}: clamped");
            let avx512 = on_avx512(&mut ours512, |out| {
                // SAFETY: as above.
                unsafe { avx512::matmul(m, n, k, kc, &lhs, &rhs, b, out, Some(clamp)) }
            });
            assert!(
                !avx512 || same(&ours512, &clamped),
                "m {m} n {n} k {k}: AVX-512, clamped"
            );
            // Through the dispatch, in bands of rows on three threads.
            ours.fill(f32::NAN);
            let par = Parallelism::Rayon(3);
            matmul_bias(m, n, k, &lhs, &rhs, &bias, &mut ours, par, Some(clamp));
            assert!(same(&ours, &clamped), "m {m} n {n} k {k}: on three threads");
        }
    }

    /// The products that read their right-hand operand in place (row `d` at output row `y`,
    /// column `x` from `rhs[rows[d] + y·row_step + x]`), AVX-512 and AVX2 where the CPU has
    /// them, give the bits of the crate's product on that operand written out: partial tiles
    /// of rows and columns, k in one block and in several, rows of the operand out of order,
    /// ±0, ∞ and NaN, with and without a clamp.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn products_read_in_place_give_the_crates_bits() {
        let mut value = values(31);
        let avx512 = ours_available();
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        // (m, oh, ow, k)
        for (case, (m, oh, ow, k)) in [(32, 5, 112, 27), (7, 3, 23, 9), (5, 2, 30, 600)]
            .into_iter()
            .enumerate()
        {
            let Some(kc) = tiled_block(m, oh * ow, k) else {
                panic!("m {m} {oh}×{ow} k {k}: tiled");
            };
            let row_step = ow + 5;
            // Each row of the operand somewhere in a buffer, in a shuffled order.
            let rows: Vec<usize> = (0..k)
                .map(|d| ((d * 7) % k) * (oh * row_step + 3))
                .collect();
            let len = k * (oh * row_step + 3);
            let special = case % 2 == 0;
            let rhs: Vec<f32> = (0..len).map(|_| value(special)).collect();
            let lhs: Vec<f32> = (0..m * k).map(|_| value(special)).collect();
            let bias: Vec<f32> = (0..m).map(|_| value(special)).collect();
            let n = oh * ow;
            let mut written = vec![0.0f32; k * n];
            for (d, out) in written.chunks_exact_mut(n).enumerate() {
                for y in 0..oh {
                    for x in 0..ow {
                        out[y * ow + x] = rhs[rows[d] + y * row_step + x];
                    }
                }
            }
            let clamp = Clamp::new(-0.5, 0.25).unwrap();
            for clamp in [None, Some(clamp)] {
                let mut want: Vec<f32> = bias.iter().flat_map(|&b| vec![b; n]).collect();
                gemm_crate(m, n, k, &lhs, &written, &mut want, Parallelism::None);
                if let Some(clamp) = clamp {
                    clamp.apply_all(&mut want);
                }
                let args = (&lhs[..], &rhs[..], &rows[..], &bias[..]);
                if avx512 {
                    let mut got = vec![f32::NAN; m * n];
                    let (l, r, rs, b) = args;
                    // SAFETY: AVX-512F was detected.
                    unsafe {
                        avx512::matmul_gathered(
                            m,
                            [oh, ow],
                            k,
                            kc,
                            l,
                            r,
                            rs,
                            row_step,
                            b,
                            &mut got,
                            clamp,
                        )
                    };
                    assert!(same(&got, &want), "AVX-512, case {case}, {clamp:?}");
                }
                if avx2 {
                    let mut got = vec![f32::NAN; m * n];
                    let (l, r, rs, b) = args;
                    // SAFETY: AVX2 and FMA were detected.
                    unsafe {
                        avx2::matmul_gathered(
                            m,
                            [oh, ow],
                            k,
                            kc,
                            l,
                            r,
                            rs,
                            row_step,
                            b,
                            &mut got,
                            clamp,
                        )
                    };
                    assert!(same(&got, &want), "AVX2, case {case}, {clamp:?}");
                }
            }
        }
    }

    /// The clamps in AVX-512 and AVX2 lanes are the scalar clamp, bit for bit, on NaN,
    /// infinities, zeros of both signs and values at and beside the bounds, for bounds of
    /// either zero sign.
    #[test]
    fn vector_clamp_is_the_scalar_clamp() {
        #[cfg(target_arch = "x86_64")]
        {
            let v = crate::ops::activation::CLAMP_PROBES;
            for clamp in [
                Clamp::RELU,
                Clamp::new(0.0, 6.0).unwrap(),
                Clamp::new(-0.0, 0.0).unwrap(),
                Clamp::new(-0.5, -0.0).unwrap(),
            ] {
                let mut lanes = [0.0f32; 16];
                if ours_available() {
                    // SAFETY: AVX-512F was detected; both arrays hold 16 values.
                    unsafe {
                        use std::arch::x86_64::*;
                        let x = _mm512_loadu_ps(v.as_ptr());
                        _mm512_storeu_ps(lanes.as_mut_ptr(), avx512::clamp_avx512(x, Some(clamp)));
                    }
                    for (&x, y) in v.iter().zip(lanes) {
                        let scalar = clamp.apply(x);
                        assert_eq!(y.to_bits(), scalar.to_bits(), "{clamp:?} of {x}");
                    }
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 was detected; both arrays hold 16 values.
                    unsafe {
                        use std::arch::x86_64::*;
                        for half in 0..2 {
                            let x = _mm256_loadu_ps(v.as_ptr().add(8 * half));
                            let y = avx2::clamp_avx2(x, Some(clamp));
                            _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * half), y);
                        }
                    }
                    for (&x, y) in v.iter().zip(lanes) {
                        let scalar = clamp.apply(x);
                        assert_eq!(y.to_bits(), scalar.to_bits(), "AVX2: {clamp:?} of {x}");
                    }
                }
            }
        }
    }

    /// The AVX2 kernel vectorised along the channels against the `gemm` crate, bit for bit
    /// (one image and three sharing the weights; clamped and not), on shapes with partial
    /// tiles of channels and columns, k in one block and in several, values whose sums
    /// depend on their order, signed zeros, infinities and NaN. Runs wherever the CPU has
    /// AVX2 and FMA, AVX-512 or not.
    #[test]
    fn avx2_channel_kernel_gives_the_gemm_crates_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            if !avx2_and_fma() {
                return;
            }
            let mut value = values(23);
            // (m, n, k): 7×7 with k in three blocks; 7×7; whole tiles; channels and columns
            // past whole tiles; 14×14; fewer columns than a tile.
            let shapes = [
                (100, 49, 1100),
                (192, 49, 96),
                (32, 48, 64),
                (50, 33, 70),
                (17, 196, 300),
                (40, 7, 130),
            ];
            for (case, &(m, n, k)) in shapes.iter().enumerate() {
                let Some(kc) = tiled_block(m, n, k) else {
                    panic!("m {m} n {n} k {k}: the crate takes another path");
                };
                let special = case % 2 == 1;
                let lhs: Vec<f32> = (0..m * k).map(|_| value(special)).collect();
                let bias: Vec<f32> = (0..m).map(|_| value(special)).collect();
                let rhs: Vec<f32> = (0..3 * k * n).map(|_| value(special)).collect();
                let theirs = crate_image_by_image(m, n, k, &lhs, &rhs, &bias);
                let w = WeightsByInput::for_kernel(Some(ChannelKernel::Avx2), &lhs, m, k);
                let clamp = match case % 3 {
                    0 => Clamp::new(0.0, 6.0).unwrap(),
                    1 => Clamp::RELU,
                    _ => Clamp::new(-0.5, 0.25).unwrap(),
                };
                let mut clamped = theirs.clone();
                clamp.apply_all(&mut clamped);
                for (images, clamp) in [(1, None), (3, None), (1, Some(clamp)), (3, Some(clamp))] {
                    let mut ours = vec![f32::NAN; images * m * n];
                    let (w, b) = (&w, &bias);
                    // SAFETY: AVX2 and FMA were detected above; the operands have the
                    // product's sizes.
                    unsafe {
                        by_channels::matmul_avx2(m, n, k, kc, images, w, &rhs, b, &mut ours, clamp)
                    };
                    let want = if clamp.is_some() { &clamped } else { &theirs };
                    assert!(
                        same(&ours, &want[..images * m * n]),
                        "m {m} n {n} k {k}, {images} images, {clamp:?}: not the crate's bits"
                    );
                }
            }
        }
    }

    /// The AVX2 kernel vectorised along the channels skips the depths whose inputs are all
    /// ±0 and still gives the `gemm` crate's bits: on inputs mostly zeros of either sign
    /// (whole planes and runs of them, as after a ReLU or a spiking unit), with k in one block
    /// and in three; a chain that underflows to −0 before a skipped depth, on a bias of −0
    /// (skipped, the output would stay −0 where the full product gives +0); and weights with
    /// an infinity, where `0·∞` is NaN and nothing may be skipped.
    #[test]
    fn avx2_channel_kernel_skips_zero_inputs_with_the_crates_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            if !avx2_and_fma() {
                return;
            }
            let mut value = values(41);
            let mut coin = values(43);
            // (m, n, k, infinite weight): a 7×7 projection with k in three blocks, a 14×14
            // one with partial tiles of channels, one with an infinite weight.
            for (m, n, k, infinite) in [
                (40, 49, 1100, false),
                (53, 196, 120, false),
                (32, 49, 96, true),
            ] {
                let Some(kc) = tiled_block(m, n, k) else {
                    panic!("m {m} n {n} k {k}: the crate takes another path");
                };
                let mut lhs: Vec<f32> = (0..m * k).map(|_| value(false)).collect();
                let mut bias: Vec<f32> = (0..m).map(|_| value(false)).collect();
                // Inputs: a third of the planes zero, the rest three quarters zeros.
                let mut rhs: Vec<f32> = Vec::with_capacity(2 * k * n);
                for _ in 0..2 * k {
                    let dead = coin(false).abs().to_bits().is_multiple_of(3);
                    for _ in 0..n {
                        let zero = dead || !coin(false).abs().to_bits().is_multiple_of(4);
                        let sign = if coin(false) < 0.0 { -0.0 } else { 0.0 };
                        rhs.push(if zero { sign } else { value(false) });
                    }
                }
                // The first tile of the first image (6 columns with AVX2, 7 with AVX-512)
                // reads depth 0 only: channel 0, column 0 is −1e−30 · 1e−30, which
                // underflows to −0, then depth 1 (skipped) adds +0 in the full product.
                for x in rhs[..k * n].chunks_exact_mut(n) {
                    x[..7].fill(0.0);
                }
                rhs[0] = 1e-30;
                lhs[0] = -1e-30;
                lhs[1] = 1.0;
                bias[0] = -0.0;
                if infinite {
                    // Against a plane of zeros, which every tile would skip.
                    lhs[5 * k + 7] = f32::INFINITY;
                    rhs[7 * n..8 * n].fill(0.0);
                }
                let theirs = crate_image_by_image(m, n, k, &lhs, &rhs, &bias);
                assert_eq!(theirs[0].to_bits(), 0.0f32.to_bits(), "the crate's product");
                assert_eq!(
                    theirs.iter().any(|v| v.is_nan()),
                    infinite,
                    "0·∞ in the crate's product"
                );
                let w = WeightsByInput::for_kernel(Some(ChannelKernel::Avx2), &lhs, m, k);
                let w512 = WeightsByInput::for_kernel(Some(ChannelKernel::Avx512), &lhs, m, k);
                for images in [1, 2] {
                    let mut ours = vec![f32::NAN; images * m * n];
                    // SAFETY: AVX2 and FMA were detected above; the operands have the
                    // product's sizes.
                    unsafe {
                        by_channels::matmul_avx2(
                            m, n, k, kc, images, &w, &rhs, &bias, &mut ours, None,
                        )
                    };
                    assert!(
                        same(&ours, &theirs[..images * m * n]),
                        "m {m} n {n} k {k}, {images} images: not the crate's bits"
                    );
                    ours.fill(f32::NAN);
                    let (w, b) = (&w512, &bias);
                    if avx512_by_channels(m, n, k, kc, images, w, &rhs, b, &mut ours, None) {
                        assert!(
                            same(&ours, &theirs[..images * m * n]),
                            "m {m} n {n} k {k}, {images} images: AVX-512, not the crate's bits"
                        );
                    }
                }
            }
        }
    }

    /// The AVX-512 kernel vectorised along the channels on `images` products ([`on_avx512`]);
    /// whether it ran.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn avx512_by_channels(
        m: usize,
        n: usize,
        k: usize,
        kc: usize,
        images: usize,
        w: &WeightsByInput,
        rhs: &[f32],
        bias: &[f32],
        out: &mut [f32],
        clamp: Option<Clamp>,
    ) -> bool {
        on_avx512(out, |out| {
            // SAFETY: on a CPU with AVX-512F (`on_avx512`); the operands have the product's
            // sizes.
            unsafe { by_channels::matmul(m, n, k, kc, images, w, rhs, bias, out, clamp) }
        })
    }

    /// Runs `f` on `out` on a CPU with AVX-512F: this one where it has it, else an emulated
    /// one where an emulator is named ([`crate::testing::emulated`]); whether it ran.
    #[cfg(target_arch = "x86_64")]
    fn on_avx512(out: &mut [f32], f: impl Fn(&mut [f32])) -> bool {
        if ours_available() {
            f(out);
            return true;
        }
        #[cfg(not(target_os = "linux"))]
        return false;
        let (at, len) = (out.as_mut_ptr(), out.len());
        // SAFETY: `at` is `out`'s, which nothing else uses while the emulated CPU runs `f`.
        let mut run = || f(unsafe { std::slice::from_raw_parts_mut(at, len) });
        crate::testing::emulated(&mut run, out)
    }

    /// Several rows at once by our kernel, each with the bits of the `gemm` crate's product
    /// of that row alone (its matrix-vector path), on shapes with partial tiles of rows and
    /// columns and values whose sums depend on their order, ±0, infinities and NaN.
    #[test]
    fn rows_at_once_give_each_rows_bits_alone() {
        let mut value = values(5);
        // (rows, n, k)
        for (case, (rows, n, k)) in [(16, 1000, 1280), (7, 37, 50), (1, 64, 3), (13, 129, 700)]
            .into_iter()
            .enumerate()
        {
            let special = case % 2 == 1;
            let x: Vec<f32> = (0..rows * k).map(|_| value(special)).collect();
            let w: Vec<f32> = (0..k * n).map(|_| value(special)).collect();
            let bias: Vec<f32> = (0..n).map(|_| value(special)).collect();
            let mut theirs = Vec::new();
            for row in x.chunks(k) {
                let mut alone = bias.clone();
                gemm_crate(1, n, k, row, &w, &mut alone, Parallelism::None);
                theirs.extend(alone);
            }
            let mut ours = vec![f32::NAN; rows * n];
            rows_times_matrix(rows, n, k, &x, &w, &bias, &mut ours);
            assert!(
                same(&ours, &theirs),
                "rows {rows} n {n} k {k}: not each row's bits alone"
            );
        }
    }
}
