//! Pooling: max (a gate), average, global average and mean reductions (linear).
//!
//! Window placement and divisors follow ONNX Runtime's CPU kernels, so `ceil_mode` and
//! `count_include_pad` give the same values as the reference.

use rayon::prelude::*;

use super::{batch_and_len, batched, make};
use crate::tensor::Tensor;

/// Geometry shared by max and average pooling over `[C, H, W]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolWindow {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

impl PoolWindow {
    fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        if x.len() != 3 {
            return Err(format!("expects a [C, H, W] image, got {x:?}"));
        }
        if self.stride.contains(&0) || self.dilation.contains(&0) || self.kernel.contains(&0) {
            return Err("kernel, stride and dilation must be positive".into());
        }
        let dim = |i: usize| {
            let span = self.dilation[i] * (self.kernel[i] - 1) + 1;
            let padded = x[i + 1] + self.pads[i] + self.pads[i + 2];
            if padded < span {
                return Err(format!(
                    "window {:?} larger than the padded input {x:?}",
                    self.kernel
                ));
            }
            let s = self.stride[i];
            let mut out = if self.ceil_mode {
                (padded - span).div_ceil(s) + 1
            } else {
                (padded - span) / s + 1
            };
            // The last window must start inside the image or its leading padding.
            if self.ceil_mode && (out - 1) * s >= x[i + 1] + self.pads[i] {
                out -= 1;
            }
            Ok(out)
        };
        Ok(vec![x[0], dim(0)?, dim(1)?])
    }

    /// Runs `window(plane, oy, ox) -> value` over every output pixel of every channel.
    fn map(
        &self,
        x: &Tensor,
        out_shape: &[usize],
        window: impl Fn(&[f32], usize, usize) -> f32 + Sync,
    ) -> Tensor {
        let (n, _) = batch_and_len(x);
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let (oh, ow) = (out_shape[1], out_shape[2]);
        let mut out = vec![0.0f32; n * out_shape.iter().product::<usize>()];
        if oh * ow > 0 && h * w > 0 {
            out.par_chunks_mut(oh * ow)
                .zip(x.data().par_chunks(h * w))
                .for_each(|(dst, plane)| {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            dst[oy * ow + ox] = window(plane, oy, ox);
                        }
                    }
                });
        }
        make(batched(n, out_shape), out)
    }
}

/// Max pooling; padded positions never win.
#[derive(Clone, Debug, PartialEq)]
pub struct MaxPool2d {
    pub window: PoolWindow,
}

impl MaxPool2d {
    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        self.window.output_shape(x)
    }

    pub(crate) fn eval(&self, x: &Tensor, out_shape: &[usize]) -> Tensor {
        let p = &self.window;
        let (h, w) = (x.shape()[2] as isize, x.shape()[3] as isize);
        self.window.map(x, out_shape, |plane, oy, ox| {
            let y0 = (oy * p.stride[0]) as isize - p.pads[0] as isize;
            let x0 = (ox * p.stride[1]) as isize - p.pads[1] as isize;
            let mut best = f32::NEG_INFINITY;
            for ky in 0..p.kernel[0] {
                let iy = y0 + (ky * p.dilation[0]) as isize;
                if iy < 0 || iy >= h {
                    continue;
                }
                for kx in 0..p.kernel[1] {
                    let ix = x0 + (kx * p.dilation[1]) as isize;
                    if ix >= 0 && ix < w {
                        best = best.max(plane[(iy * w + ix) as usize]);
                    }
                }
            }
            best
        })
    }
}

/// Average pooling.
#[derive(Clone, Debug, PartialEq)]
pub struct AvgPool2d {
    pub window: PoolWindow,
    /// Divide by the window size including padding (else by the pixels inside the image).
    pub count_include_pad: bool,
}

impl AvgPool2d {
    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        if self.window.dilation != [1, 1] {
            return Err("dilated average pooling is not supported".into());
        }
        self.window.output_shape(x)
    }

    pub(crate) fn eval(&self, x: &Tensor, out_shape: &[usize]) -> Tensor {
        let p = &self.window;
        let (h, w) = (x.shape()[2] as isize, x.shape()[3] as isize);
        self.window.map(x, out_shape, |plane, oy, ox| {
            let mut y0 = (oy * p.stride[0]) as isize - p.pads[0] as isize;
            let mut x0 = (ox * p.stride[1]) as isize - p.pads[1] as isize;
            let mut y1 = (y0 + p.kernel[0] as isize).min(h + p.pads[2] as isize);
            let mut x1 = (x0 + p.kernel[1] as isize).min(w + p.pads[3] as isize);
            let padded_size = (y1 - y0) * (x1 - x0);
            (y0, x0, y1, x1) = (y0.max(0), x0.max(0), y1.min(h), x1.min(w));
            let mut sum = 0.0f32;
            for iy in y0..y1 {
                for ix in x0..x1 {
                    sum += plane[(iy * w + ix) as usize];
                }
            }
            let count = if self.count_include_pad {
                padded_size
            } else {
                (y1 - y0) * (x1 - x0)
            };
            if count > 0 { sum / count as f32 } else { 0.0 }
        })
    }
}

pub(crate) fn global_output_shape(x: &[usize]) -> Result<Vec<usize>, String> {
    if x.len() < 2 {
        return Err(format!("expects [C, spatial…], got {x:?}"));
    }
    let mut s = vec![x[0]];
    s.resize(x.len(), 1);
    Ok(s)
}

/// Mean over every spatial position of each channel, keeping `[C, 1, 1]`.
pub(crate) fn global_avg_pool(x: &Tensor) -> Tensor {
    let (n, per) = batch_and_len(x);
    let c = x.shape()[1];
    let plane = per.checked_div(c).unwrap_or(0);
    let mut out = vec![0.0f32; n * c];
    if plane > 0 {
        // Groups of channels per task: a task per channel of a 7×7 plane cost more than the sums.
        let groups = (CHANNEL_GROUP * 64usize.div_ceil(plane)).max(CHANNEL_GROUP);
        out.par_chunks_mut(groups)
            .zip(x.data().par_chunks(groups * plane))
            .for_each(|(means, planes)| {
                for (m, p) in means
                    .chunks_mut(CHANNEL_GROUP)
                    .zip(planes.chunks(CHANNEL_GROUP * plane))
                {
                    channel_means(p, plane, m);
                }
            });
    }
    let per_image = global_output_shape(&x.shape()[1..]).unwrap_or_default();
    make(batched(n, &per_image), out)
}

/// Channels summed side by side by [`channel_means`].
const CHANNEL_GROUP: usize = 8;

/// `means[c]` = the mean of plane c of `planes` (`plane` values each), summed as
/// `plane.iter().sum::<f32>()` sums, element by element in order, but with the channels'
/// additions interleaved: eight independent chains instead of one that waits on each add.
fn channel_means(planes: &[f32], plane: usize, means: &mut [f32]) {
    // The start of the standard library's float sum (−0.0), taken from it.
    let start = std::iter::empty::<f32>().sum::<f32>();
    let mut acc = [start; CHANNEL_GROUP];
    if means.len() == CHANNEL_GROUP && planes.len() == CHANNEL_GROUP * plane {
        for p in 0..plane {
            for (c, a) in acc.iter_mut().enumerate() {
                *a += planes[c * plane + p];
            }
        }
    } else {
        for (a, values) in acc.iter_mut().zip(planes.chunks(plane)) {
            *a = values.iter().fold(start, |s, &v| s + v);
        }
    }
    for (m, a) in means.iter_mut().zip(acc) {
        *m = a / plane as f32;
    }
}

/// Mean over a set of per-image axes.
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceMean {
    /// Sorted, distinct per-image axes.
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

impl ReduceMean {
    pub(crate) fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        if self.axes.iter().any(|&a| a >= x.len()) {
            return Err(format!("axes {:?} out of range for {x:?}", self.axes));
        }
        Ok(x.iter()
            .enumerate()
            .filter_map(|(i, &d)| match (self.axes.contains(&i), self.keepdims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect())
    }

    pub(crate) fn eval(&self, x: &Tensor, out_shape: &[usize]) -> Tensor {
        let (n, per) = batch_and_len(x);
        let dims = &x.shape()[1..];
        let out_len: usize = out_shape.iter().product();
        let mut out = vec![0.0f32; n * out_len];
        let count: usize = self.axes.iter().map(|&a| dims[a]).product();
        // Kept-dimension strides of the output, in input-axis order.
        let mut ostride = vec![0usize; dims.len()];
        let mut acc = 1;
        for i in (0..dims.len()).rev() {
            if !self.axes.contains(&i) {
                ostride[i] = acc;
                acc *= dims[i];
            }
        }
        if per > 0 {
            for (b, src) in x.data().chunks(per).enumerate() {
                let dst = &mut out[b * out_len..(b + 1) * out_len];
                for (flat, v) in src.iter().enumerate() {
                    let (mut r, mut o) = (flat, 0);
                    for i in (0..dims.len()).rev() {
                        o += (r % dims[i]) * ostride[i];
                        r /= dims[i];
                    }
                    dst[o] += v;
                }
                dst.iter_mut().for_each(|v| *v /= count.max(1) as f32);
            }
        }
        make(batched(n, out_shape), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The channels' sums interleaved give the sequential sums' bits: values whose sum
    /// depends on the order (magnitudes 1e-8 to 1e8), ±0 planes, infinities and NaN, channel
    /// counts around the group size, planes from 1 to 14×14, one image and three.
    #[test]
    fn global_average_is_the_sequential_sum_bit_for_bit() {
        let mut state = 5u64;
        let mut rand = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            unit * 10f32.powi(((state >> 20) % 17) as i32 - 8)
        };
        for n in [1, 3] {
            for c in [1, 5, 8, 9, 16, 23] {
                for plane in [1, 7, 49, 196] {
                    let mut data: Vec<f32> = (0..n * c * plane).map(|_| rand()).collect();
                    if c > 2 {
                        data[plane..2 * plane].fill(-0.0);
                        data[2 * plane] = f32::INFINITY;
                    }
                    if c > 4 {
                        data[4 * plane] = f32::NAN;
                    }
                    let shape = vec![n, c, plane, 1];
                    let x = Tensor::new(shape, data.clone()).unwrap();
                    let got = global_avg_pool(&x);
                    let want: Vec<u32> = data
                        .chunks(plane)
                        .map(|p| (p.iter().sum::<f32>() / plane as f32).to_bits())
                        .collect();
                    let got: Vec<u32> = got.data().iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "n {n}, c {c}, plane {plane}");
                }
            }
        }
    }
}
