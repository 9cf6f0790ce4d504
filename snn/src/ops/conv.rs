//! 2-D convolution: general (a GEMM reading a zero-padded copy of the input in place where
//! our AVX-512 or AVX2 kernel runs, im2col + GEMM elsewhere), pointwise (GEMM on the input
//! itself) and depthwise (direct loops).

use gemm_common::Parallelism;
use rayon::prelude::*;

use super::activation::Clamp;
use super::depthwise::{self, PhaseLayout};
use super::matmul::{self, WeightsByInput, matmul_bias, matmul_bias_by_channels};
use super::{batch_and_len, batched, make};
use crate::tensor::Tensor;
use std::sync::{Arc, OnceLock};

/// Work fused into a convolution ([`Conv2d::eval_fused`]): called with an image's index in
/// the batch and its freshly computed `[C_out, OH, OW]` output, which it rewrites in place.
pub type Epilogue<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// A 2-D convolution over a `[C, H, W]` image, with any batch norm already folded in.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// `[C_out, C_in / groups, kH, kW]`.
    pub weight: Tensor,
    /// One per output channel.
    pub bias: Vec<f32>,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Zero padding: top, left, bottom, right.
    pub pads: [usize; 4],
    pub groups: usize,
    /// What the kernels derive from the weights on first use; not part of the layer's value.
    /// `Default::default()` when building a layer, and again after changing `weight`.
    pub prepared: Prepared,
}

/// Data a convolution's kernels derive from its weights once, on first use: the weights laid
/// out by input for small planes ([`matmul::prefers_channels`]); a depthwise convolution's
/// weights by blocks of channels ([`depthwise::BlockWeights`]). A cache, not part of the
/// layer's value: any two compare equal, and it is never written to a model file.
#[derive(Clone, Default)]
pub struct Prepared {
    by_input: OnceLock<Arc<WeightsByInput>>,
    depthwise_blocks: OnceLock<Arc<depthwise::BlockWeights>>,
}

impl PartialEq for Prepared {
    fn eq(&self, _: &Prepared) -> bool {
        true
    }
}

/// Whether each is prepared, not the data (a copy of the weights).
impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("by_input", &self.by_input.get().is_some())
            .field("depthwise_blocks", &self.depthwise_blocks.get().is_some())
            .finish()
    }
}

impl Conv2d {
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }

    fn kernel(&self) -> [usize; 2] {
        [self.weight.shape()[2], self.weight.shape()[3]]
    }

    /// One input channel per group: each output channel sees a single input channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.weight.shape()[1] == 1
    }

    /// A 1×1 convolution with stride 1 and no padding: a GEMM on the input itself.
    pub fn is_pointwise(&self) -> bool {
        self.kernel() == [1, 1] && self.stride == [1, 1] && self.pads == [0; 4]
    }

    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        let w = self.weight.shape();
        if x.len() != 3 {
            return Err(format!("expects a [C, H, W] image, got {x:?}"));
        }
        if w.len() != 4 || self.bias.len() != w[0] {
            return Err(format!(
                "weight {w:?} and {} biases do not fit",
                self.bias.len()
            ));
        }
        let g = self.groups;
        if g == 0 || !x[0].is_multiple_of(g) || !w[0].is_multiple_of(g) || w[1] * g != x[0] {
            return Err(format!(
                "weight {w:?} with {g} groups does not fit an input of {} channels",
                x[0]
            ));
        }
        if self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err("stride and dilation must be positive".into());
        }
        let k = self.kernel();
        let dim = |i: usize| {
            let span = self.dilation[i] * (k[i] - 1) + 1;
            let padded = x[i + 1] + self.pads[i] + self.pads[i + 2];
            if padded < span {
                Err(format!(
                    "kernel {k:?} (dilation {:?}) larger than the padded input {x:?}",
                    self.dilation
                ))
            } else {
                Ok((padded - span) / self.stride[i] + 1)
            }
        };
        Ok(vec![w[0], dim(0)?, dim(1)?])
    }

    pub(crate) fn eval(&self, x: &Tensor, out_shape: &[usize], threads: usize) -> Tensor {
        self.eval_fused(x, out_shape, threads, None, None)
    }

    /// Convolves a batch like the engine does, running `epilogue` on each image's output as
    /// soon as it is computed, while it is still in cache: a gate fused into the
    /// convolution costs no extra trip through memory. A `clamp` (ReLU, ReLU6) is applied
    /// before the epilogue, by the kernels as they store their outputs where they can.
    pub fn eval_fused(
        &self,
        x: &Tensor,
        out_shape: &[usize],
        threads: usize,
        clamp: Option<Clamp>,
        epilogue: Option<Epilogue<'_>>,
    ) -> Tensor {
        let (n, in_len) = batch_and_len(x);
        let in_shape = [x.shape()[1], x.shape()[2], x.shape()[3]];
        let out_len: usize = out_shape.iter().product();
        // Every kernel writes every output (starting from the channel's bias) before reading
        // it, so a recycled buffer serves.
        let mut out = crate::recycle::overwritten(n * out_len);
        // Enough images to keep every thread busy: one image per task, GEMMs single-threaded.
        // Fewer: let each GEMM use the threads.
        let par = if n >= threads || threads <= 1 {
            Parallelism::None
        } else {
            Parallelism::Rayon(threads)
        };
        if n > 1 && threads <= 1 && self.shares_weights(in_shape, [out_shape[1], out_shape[2]]) {
            // All images in one product, each block of weights shared by a few of them; then
            // each image's epilogue. The same bits as image by image.
            let [c, h, w] = in_shape;
            let m = self.out_channels();
            matmul_bias_by_channels(
                m,
                h * w,
                c,
                n,
                self.weight.data(),
                self.by_input(),
                x.data(),
                &self.bias,
                &mut out,
                clamp,
            );
            if let Some(epilogue) = epilogue {
                for (b, dst) in out.chunks_mut(out_len).enumerate() {
                    epilogue(b, dst);
                }
            }
        } else if out_len > 0 {
            out.par_chunks_mut(out_len)
                .zip(x.data().par_chunks(in_len.max(1)))
                .enumerate()
                .for_each(|(b, (dst, src))| {
                    self.image(src, in_shape, dst, [out_shape[1], out_shape[2]], par, clamp);
                    if let Some(epilogue) = epilogue {
                        epilogue(b, dst);
                    }
                });
        }
        make(batched(n, out_shape), out)
    }

    /// Whether the images of a batch share the weights in one product
    /// ([`matmul_bias_by_channels`]): a pointwise convolution on a small plane, where its
    /// weights are large against one image's work.
    fn shares_weights(&self, [c, h, w]: [usize; 3], [oh, ow]: [usize; 2]) -> bool {
        self.groups == 1
            && self.is_pointwise()
            && [h, w] == [oh, ow]
            && matmul::prefers_channels(self.out_channels(), h * w, c)
    }

    /// The weights laid out by input, made on first use.
    fn by_input(&self) -> &WeightsByInput {
        let [c_out, c_in, kh, kw] = [
            self.weight.shape()[0],
            self.weight.shape()[1],
            self.weight.shape()[2],
            self.weight.shape()[3],
        ];
        self.prepared.by_input.get_or_init(|| {
            Arc::new(WeightsByInput::new(
                self.weight.data(),
                c_out,
                c_in * kh * kw,
            ))
        })
    }

    /// Convolves one image into `dst` (`[C_out, OH, OW]`), overwriting it; then `clamp`.
    fn image(
        &self,
        x: &[f32],
        [c, h, w]: [usize; 3],
        dst: &mut [f32],
        [oh, ow]: [usize; 2],
        par: Parallelism,
        clamp: Option<Clamp>,
    ) {
        if self.is_depthwise() {
            return self.depthwise(x, [c, h, w], dst, [oh, ow], clamp);
        }
        let plane = oh * ow;
        let [kh, kw] = self.kernel();
        let g = self.groups;
        let (cg, og) = (c / g, self.out_channels() / g);
        let k = cg * kh * kw;
        if !self.is_pointwise()
            && g == 1
            && h * w > 0
            && matches!(par, Parallelism::None)
            && !matmul::prefers_channels(og, plane, k)
            && matmul::gathers(og, plane, k)
        {
            // The product read from a padded copy of the input, not from columns written
            // out: the same operations, a third of the memory traffic for a 3×3 kernel.
            let input = PhaseLayout::new(&self.geometry([h, w], [oh, ow]), x, c);
            matmul::matmul_bias_gathered(
                og,
                [oh, ow],
                k,
                self.weight.data(),
                &input.padded,
                &input.taps,
                input.row_step,
                &self.bias,
                dst,
                clamp,
            );
            return;
        }
        let mut col = if self.is_pointwise() {
            Vec::new()
        } else {
            vec![0.0f32; k * plane]
        };
        for gi in 0..g {
            let src = &x[gi * cg * h * w..(gi + 1) * cg * h * w];
            let rhs: &[f32] = if self.is_pointwise() {
                src
            } else {
                self.im2col(src, [cg, h, w], &mut col, [oh, ow]);
                &col
            };
            let lhs = &self.weight.data()[gi * og * k..(gi + 1) * og * k];
            let out = &mut dst[gi * og * plane..(gi + 1) * og * plane];
            let bias = &self.bias[gi * og..(gi + 1) * og];
            if g == 1 && matches!(par, Parallelism::None) && matmul::prefers_channels(og, plane, k)
            {
                let by_input = self.by_input();
                matmul_bias_by_channels(og, plane, k, 1, lhs, by_input, rhs, bias, out, clamp);
            } else {
                matmul_bias(og, plane, k, lhs, rhs, bias, out, par, clamp);
            }
        }
    }

    /// Lays out every receptive field as a column: `col[(c·kH + ky)·kW + kx][oy·OW + ox]`.
    fn im2col(&self, x: &[f32], [c, h, w]: [usize; 3], col: &mut [f32], [oh, ow]: [usize; 2]) {
        let [kh, kw] = self.kernel();
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        let [pt, pl, _, _] = self.pads;
        let mut rows = col.chunks_mut(oh * ow);
        for ci in 0..c {
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let Some(row) = rows.next() else { return };
                    let (lo, hi) = valid_range(ow, sw, kx * dw, pl, w);
                    for oy in 0..oh {
                        let line = &mut row[oy * ow..(oy + 1) * ow];
                        let iy = (oy * sh + ky * dh) as isize - pt as isize;
                        if iy < 0 || iy >= h as isize {
                            line.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        line[..lo].fill(0.0);
                        line[hi.max(lo)..].fill(0.0);
                        if hi > lo {
                            copy_strided(&mut line[lo..hi], &src[lo * sw + kx * dw - pl..], sw);
                        }
                    }
                }
            }
        }
    }

    /// The convolution's shape on an input of `[h, w]`.
    fn geometry(&self, [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> depthwise::Geometry {
        depthwise::Geometry {
            kernel: self.kernel(),
            stride: self.stride,
            dilation: self.dilation,
            pads: [self.pads[0], self.pads[1]],
            input: [h, w],
            output: [oh, ow],
        }
    }

    /// Depthwise (channel multiplier m = C_out / C_in) by direct accumulation
    /// ([`super::depthwise`]).
    fn depthwise(
        &self,
        x: &[f32],
        [_, h, w]: [usize; 3],
        dst: &mut [f32],
        [oh, ow]: [usize; 2],
        clamp: Option<Clamp>,
    ) {
        depthwise::depthwise(
            &self.geometry([h, w], [oh, ow]),
            x,
            self.weight.data(),
            &self.bias,
            &self.prepared.depthwise_blocks,
            dst,
            clamp,
        );
    }
}

/// `dst[i] = src[i·stride]` for every `i` of `dst`, in loops that vectorise for the strides
/// of stems and downsampling layers (1 and 2; compiled for AVX2 too, chosen at run time).
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn copy_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    match stride {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => {
            // Pairs of `src` while whole pairs remain; the last element may have no partner.
            let pairs = dst.len().min(src.len() / 2);
            for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[0];
            }
            if let Some(d) = dst.get_mut(pairs) {
                *d = src[2 * pairs];
            }
        }
        _ => {
            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                *d = v;
            }
        }
    }
}

/// The output columns `lo..hi` whose input column `ox·stride + offset − pad` lies in `0..len`.
fn valid_range(out: usize, stride: usize, offset: usize, pad: usize, len: usize) -> (usize, usize) {
    // ox·stride + offset ≥ pad  and  ox·stride + offset < pad + len
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    let hi = if pad + len > offset {
        (pad + len - offset).div_ceil(stride)
    } else {
        0
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::uniform;

    /// The definition, element by element: bias, then `w · x` over the taps inside the
    /// image, ky then kx ascending.
    fn naive_depthwise(conv: &Conv2d, x: &Tensor, [oh, ow]: [usize; 2]) -> Vec<f32> {
        let [n, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
        let [kh, kw] = conv.kernel();
        let m = conv.out_channels() / c;
        let mut out = Vec::new();
        for b in 0..n {
            for oc in 0..conv.out_channels() {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = conv.bias[oc];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * conv.stride[0] + ky * conv.dilation[0]) as isize
                                    - conv.pads[0] as isize;
                                let ix = (ox * conv.stride[1] + kx * conv.dilation[1]) as isize
                                    - conv.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let v = x.data()
                                    [((b * c + oc / m) * h + iy as usize) * w + ix as usize];
                                acc += conv.weight.data()[(oc * kh + ky) * kw + kx] * v;
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn depthwise_is_bit_identical_to_the_definition() {
        let mut rand = uniform(3);
        // (channels, multiplier, h, w, kernel, stride, dilation, pads t l b r)
        let cases = [
            (4, 1, 17, 29, 3, 1, 1, [1, 1, 1, 1]),
            (3, 1, 23, 23, 5, 2, 1, [2, 2, 2, 2]),
            (2, 2, 19, 40, 3, 1, 2, [2, 2, 2, 2]),
            (5, 1, 7, 7, 3, 2, 1, [0, 0, 1, 1]),
            (2, 1, 9, 64, 5, 1, 1, [0, 3, 0, 1]),
            (2, 2, 15, 21, 3, 2, 2, [1, 3, 1, 3]),
            (3, 1, 12, 12, 5, 2, 1, [1, 2, 2, 1]),
            // Narrow planes, eight channels at a time (and the channels left over).
            (19, 1, 7, 7, 5, 1, 1, [2, 2, 2, 2]),
            (16, 1, 14, 14, 3, 2, 1, [0, 0, 1, 1]),
            (8, 1, 9, 11, 3, 1, 2, [1, 3, 2, 0]),
        ];
        // The special cases: rectified inputs (half zeros) with biases of −0, where only the
        // sign of a zero output tells the padded fast paths from the definition (by rows,
        // then by blocks of channels on small planes); and a channel with infinite and NaN
        // weights (by rows, then in a block).
        let special = [
            (6, 1, 10, 12, 3, 1, 1, [1, 1, 1, 1]),
            (4, 2, 9, 9, 5, 2, 1, [2, 2, 2, 2]),
            (10, 1, 7, 7, 5, 1, 1, [2, 2, 2, 2]),
            (3, 1, 8, 8, 3, 1, 1, [1, 1, 1, 1]),
            (17, 1, 8, 8, 3, 1, 1, [1, 1, 1, 1]),
            (3, 2, 9, 9, 3, 1, 1, [1, 1, 1, 1]),
            // Plain again (last, so the cases above keep their values): rows of 8, in tiles
            // of 8 columns even where AVX-512 runs the other cases' rows in tiles of 16.
            (2, 2, 30, 8, 3, 1, 1, [1, 1, 1, 1]),
            // Zeros again, in three blocks of eight channels, every input 0: every channel
            // has corners of −0 (and 8 × 8 pixels, all of them in the transposes, none left
            // to the scalar tail).
            (24, 1, 8, 8, 5, 1, 1, [2, 2, 2, 2]),
            // Plain: a 5 × 5 kernel at stride 2 on a small plane (blocks of channels whose
            // pixels are loaded once per kernel row where the CPU has AVX-512).
            (9, 1, 13, 13, 5, 2, 1, [2, 2, 2, 2]),
            // Plain: 3 × 3 at stride 1 on rows of three wide tiles (AVX-512: two tiles and
            // four rows at a time, then an odd tile, then three rows).
            (3, 1, 7, 40, 3, 1, 1, [1, 1, 1, 1]),
        ];
        let (zero_cases, non_finite_cases) = ([0, 1, 2, 7], 3..6);
        let n_plain = cases.len();
        for (i, (c, m, h, w, k, s, d, pads)) in cases.into_iter().chain(special).enumerate() {
            let zeros = zero_cases.contains(&i.wrapping_sub(n_plain));
            // With zeros: positive weights on the first kernel row and column (the taps in
            // the top and left padding), negative elsewhere, so a corner output over zero
            // inputs is −0 by the definition and +0 with the padding's products.
            let mut weight: Vec<f32> = (0..c * m * k * k)
                .map(|i| match (zeros, (i % (k * k)) / k, i % k) {
                    (true, 0, _) | (true, _, 0) => rand().abs(),
                    (true, _, _) => -rand().abs(),
                    _ => rand(),
                })
                .collect();
            if non_finite_cases.contains(&i.wrapping_sub(n_plain)) {
                // Channels 0 and 1 of the first block; the next block is finite.
                weight[0] = f32::INFINITY;
                weight[k * k + 1] = f32::NAN;
                if m == 2 {
                    // Also the first of the two channels on input channel 1, not the second,
                    // which must still see that plane (the fast path pads it for the first).
                    weight[2 * k * k + 4] = f32::NEG_INFINITY;
                }
            }
            let conv = Conv2d {
                weight: Tensor::new(vec![c * m, 1, k, k], weight).unwrap(),
                bias: (0..c * m)
                    .map(|_| if zeros { -0.0 } else { rand() })
                    .collect(),
                stride: [s, s],
                dilation: [d, d],
                pads,
                groups: c,
                prepared: Default::default(),
            };
            let x = Tensor::new(
                vec![2, c, h, w],
                (0..2 * c * h * w)
                    .map(|_| rand() * 3.0)
                    .map(|v| match (zeros, i == n_plain + 7) {
                        (true, true) => 0.0,
                        (true, false) => (v - 2.0).max(0.0),
                        _ => v,
                    })
                    .collect(),
            )
            .unwrap();
            let out_shape = conv.output_shape(&[c, h, w]).unwrap();
            let got = conv.eval(&x, &out_shape, 2);
            let want = naive_depthwise(&conv, &x, [out_shape[1], out_shape[2]]);
            if zeros {
                let negative_zeros = want.iter().filter(|v| v.to_bits() == (-0.0f32).to_bits());
                assert!(
                    negative_zeros.count() > 0,
                    "case {i} has no −0 output to test"
                );
            }
            let got_bits: Vec<u32> = got.data().iter().map(|v| v.to_bits()).collect();
            let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                got_bits, want_bits,
                "case {c}x{m} {h}x{w} k{k} s{s} d{d} {pads:?}"
            );
            // A ReLU or ReLU6 in the stores: the definition, clamped (a −0 output kept).
            let clamp = if i % 2 == 0 {
                Clamp::RELU
            } else {
                Clamp::new(0.0, 0.5).unwrap()
            };
            let got = conv.eval_fused(&x, &out_shape, 2, Some(clamp), None);
            let got_bits: Vec<u32> = got.data().iter().map(|v| v.to_bits()).collect();
            let want_bits: Vec<u32> = want.iter().map(|&v| clamp.apply(v).to_bits()).collect();
            assert_eq!(
                got_bits, want_bits,
                "case {c}x{m} {h}x{w} k{k} s{s} d{d} {pads:?}, {clamp:?}"
            );
        }
    }

    /// A k×k convolution whose product reads the padded input in place (where our AVX-512 or
    /// AVX2 kernel runs) gives the bits of im2col's columns and `matmul_bias`, clamped or not.
    #[test]
    fn product_read_in_place_is_the_product_on_columns() {
        let mut rand = uniform(11);
        // (c_in, c_out, h, w, kernel, stride, dilation, pads t l b r): a stem (rows of 112,
        // two tiles of columns), strides 1 to 3, dilation, uneven pads, partial tiles of
        // rows and columns, and a depth longer than one block of the kernel's chains.
        let cases = [
            (3, 32, 224, 224, 3, 2, 1, [0, 0, 1, 1]),
            (3, 13, 23, 29, 3, 1, 1, [1, 1, 1, 1]),
            (5, 7, 31, 70, 5, 2, 1, [2, 1, 2, 3]),
            (2, 20, 19, 40, 3, 1, 2, [2, 2, 2, 2]),
            (4, 9, 25, 33, 7, 3, 1, [3, 0, 2, 3]),
            (64, 24, 12, 12, 3, 1, 1, [1, 1, 1, 1]),
        ];
        for (i, (ci, co, h, w, k, s, d, pads)) in cases.into_iter().enumerate() {
            let mut weight: Vec<f32> = (0..co * ci * k * k).map(|_| rand()).collect();
            if i == 1 {
                // A weight that is not finite: infinite and NaN products with the padding.
                weight[4] = f32::INFINITY;
                weight[ci * k * k + 2] = f32::NAN;
            }
            let conv = Conv2d {
                weight: Tensor::new(vec![co, ci, k, k], weight).unwrap(),
                bias: (0..co).map(|_| rand() * 0.5).collect(),
                stride: [s, s],
                dilation: [d, d],
                pads,
                groups: 1,
                prepared: Default::default(),
            };
            let shape = conv.output_shape(&[ci, h, w]).unwrap();
            let (oh, ow) = (shape[1], shape[2]);
            let x = Tensor::new(
                vec![1, ci, h, w],
                (0..ci * h * w).map(|_| rand() * 2.0).collect(),
            )
            .unwrap();
            for clamp in [None, Some(Clamp::new(0.0, 0.75).unwrap())] {
                // The columns written out, then the product (with the bias, then the clamp).
                let depth = ci * k * k;
                let mut col = vec![0.0; depth * oh * ow];
                conv.im2col(x.data(), [ci, h, w], &mut col, [oh, ow]);
                let mut want = vec![0.0; co * oh * ow];
                matmul_bias(
                    co,
                    oh * ow,
                    depth,
                    conv.weight.data(),
                    &col,
                    &conv.bias,
                    &mut want,
                    Parallelism::None,
                    clamp,
                );
                let got = conv.eval_fused(&x, &shape, 1, clamp, None);
                let same = got
                    .data()
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "case {i}: {ci}->{co} {h}x{w} k{k} s{s} d{d}, {clamp:?}"
                );
            }
        }
    }

    /// Dense convolutions (1×1 and 3×3, by rows and by channels, one image and a batch, one
    /// thread and two) with the clamp in their stores give the convolution's bits clamped.
    #[test]
    fn clamp_in_the_stores_is_the_convolution_clamped() {
        let mut rand = uniform(7);
        // (c_in, c_out, h, w, kernel, stride, pad); 7×7 with 96 channels by channels where
        // the CPU runs that kernel.
        let cases = [
            (32, 96, 14, 14, 1, 1, 0),
            (96, 96, 7, 7, 1, 1, 0),
            (16, 24, 28, 28, 1, 1, 0),
            (3, 32, 33, 33, 3, 2, 1),
            (24, 20, 9, 9, 3, 1, 1),
        ];
        for (i, (ci, co, h, w, k, s, p)) in cases.into_iter().enumerate() {
            let conv = Conv2d {
                weight: Tensor::new(
                    vec![co, ci, k, k],
                    (0..co * ci * k * k).map(|_| rand()).collect(),
                )
                .unwrap(),
                bias: (0..co).map(|_| rand() * 0.5).collect(),
                stride: [s, s],
                dilation: [1, 1],
                pads: [p; 4],
                groups: 1,
                prepared: Default::default(),
            };
            let clamp = if i % 2 == 0 {
                Clamp::new(0.0, 0.75).unwrap()
            } else {
                Clamp::RELU
            };
            for (batch, threads) in [(1, 1), (1, 2), (5, 1), (5, 2)] {
                let x = Tensor::new(
                    vec![batch, ci, h, w],
                    (0..batch * ci * h * w).map(|_| rand()).collect(),
                )
                .unwrap();
                let shape = conv.output_shape(&[ci, h, w]).unwrap();
                let mut want = conv.eval(&x, &shape, threads).data().to_vec();
                clamp.apply_all(&mut want);
                let got = conv.eval_fused(&x, &shape, threads, Some(clamp), None);
                let same = got
                    .data()
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{ci}->{co} {h}x{w} k{k}, {batch} images, {threads} threads"
                );
                assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0));
            }
        }
    }

    /// Every receptive field laid out as the definition says, element by element: zero where
    /// the tap falls in the padding, the input value elsewhere (strides 1 to 3, dilation,
    /// uneven padding, taps that miss a whole row or column).
    #[test]
    fn im2col_places_every_tap_by_the_definition() {
        // (c, h, w, kernel, stride, dilation, pads t l b r)
        let cases = [
            (3, 17, 19, 3, 2, 1, [1, 1, 1, 1]),
            (3, 16, 16, 3, 2, 1, [0, 0, 1, 1]),
            (2, 11, 23, 5, 1, 1, [2, 2, 2, 2]),
            (2, 13, 14, 3, 3, 2, [2, 4, 0, 1]),
            (1, 9, 8, 7, 2, 1, [3, 3, 3, 3]),
            (2, 5, 6, 3, 1, 3, [4, 4, 4, 4]),
        ];
        for (c, h, w, k, s, d, pads) in cases {
            let conv = Conv2d {
                weight: Tensor::new(vec![1, c, k, k], vec![0.0; c * k * k]).unwrap(),
                bias: vec![0.0],
                stride: [s, s],
                dilation: [d, d],
                pads,
                groups: 1,
                prepared: Default::default(),
            };
            let [_, oh, ow] = conv.output_shape(&[c, h, w]).unwrap()[..] else {
                unreachable!()
            };
            // Distinct nonzero values, so that a misplaced one shows.
            let x: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
            let mut col = vec![f32::NAN; c * k * k * oh * ow];
            conv.im2col(&x, [c, h, w], &mut col, [oh, ow]);
            for ci in 0..c {
                for ky in 0..k {
                    for kx in 0..k {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let iy = (oy * s + ky * d) as isize - pads[0] as isize;
                                let ix = (ox * s + kx * d) as isize - pads[1] as isize;
                                let want = if (0..h as isize).contains(&iy)
                                    && (0..w as isize).contains(&ix)
                                {
                                    x[(ci * h + iy as usize) * w + ix as usize]
                                } else {
                                    0.0
                                };
                                let row = (ci * k + ky) * k + kx;
                                let got = col[row * oh * ow + oy * ow + ox];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "c{c} {h}x{w} k{k} s{s} d{d} {pads:?}: tap ({ci}, {ky}, {kx}) at ({oy}, {ox})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
