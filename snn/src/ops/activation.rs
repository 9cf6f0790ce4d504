//! Elementwise nonlinearities: the one-input gates of a network.

use rayon::prelude::*;

use super::GateKind;
use super::exp::expf;
use crate::tensor::Tensor;

/// An elementwise nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// `min(max(x, lo), hi)` as [`Clamp`] computes it; ReLU6 is `Clip { lo: 0, hi: 6 }`.
    Clip {
        lo: f32,
        hi: f32,
    },
    Sigmoid,
    /// `x·sigmoid(x)`, recognised from the Sigmoid + Mul pattern.
    Swish,
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x·max(0, min(1, x/6 + 1/2))`.
    HardSwish,
    Tanh,
    /// `x/2·(1 + erf(x/√2))`, recognised from the Erf pattern.
    Gelu,
    Erf,
    /// `x`: marks a tensor that crosses a stage boundary, encoded by an identity unit in SNN
    /// mode (see [`crate::model::ConvertedModel::insert_identity_unit`]).
    Identity,
}

impl Activation {
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::Clip { .. } => "Clip",
            Activation::Sigmoid => "Sigmoid",
            Activation::Swish => "Swish",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::Tanh => "Tanh",
            Activation::Gelu => "Gelu",
            Activation::Erf => "Erf",
            Activation::Identity => "IdentityUnit",
        }
    }

    /// The gate type this activation is converted as.
    pub fn gate(&self) -> GateKind {
        match *self {
            Activation::Relu => GateKind::Relu,
            Activation::Clip { lo, hi } if lo == 0.0 && hi == f32::INFINITY => GateKind::Relu,
            Activation::Clip { lo, hi } if lo == 0.0 && hi == 6.0 => GateKind::Relu6,
            Activation::Clip { .. } => GateKind::Clip,
            Activation::Sigmoid => GateKind::Sigmoid,
            Activation::Swish => GateKind::Swish,
            Activation::HardSigmoid { .. } => GateKind::HardSigmoid,
            Activation::HardSwish => GateKind::HardSwish,
            Activation::Tanh => GateKind::Tanh,
            Activation::Gelu => GateKind::Gelu,
            Activation::Erf => GateKind::Erf,
            Activation::Identity => GateKind::Identity,
        }
    }

    /// The activation as a [`Clamp`] the convolution kernels apply as they store, where it is
    /// one: ReLU, and Clip with bounds that are not NaN. Those two are computed by the clamp
    /// everywhere, so fused or not they give the same bits.
    pub fn as_clamp(&self) -> Option<Clamp> {
        match *self {
            Activation::Relu => Some(Clamp::RELU),
            Activation::Clip { lo, hi } => Clamp::new(lo, hi),
            _ => None,
        }
    }

    /// The function itself, on one value.
    #[inline]
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Activation::Relu => Clamp::RELU.apply(x),
            Activation::Clip { lo, hi } => match Clamp::new(lo, hi) {
                Some(clamp) => clamp.apply(x),
                // A NaN bound: no bound, as `max` and `min` take it.
                None => x.max(lo).min(hi),
            },
            Activation::Sigmoid => sigmoid(x),
            Activation::Swish => x * sigmoid(x),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::Erf => libm::erff(x),
            Activation::Identity => x,
        }
    }

    /// The activation of every element, in one pass (read `x`, write the output).
    pub(crate) fn eval(&self, x: &Tensor) -> Tensor {
        let mut data = vec![0.0f32; x.len()];
        data.par_chunks_mut(1 << 14)
            .zip(x.data().par_chunks(1 << 14))
            .for_each(|(o, i)| {
                o.copy_from_slice(i);
                self.apply_in_place(o);
            });
        Tensor::new(x.shape().to_vec(), data).unwrap_or_else(|_| super::unreachable_shape())
    }

    /// The activation of every element of `values`, in place. The common gates get loops of
    /// their own, free of the per-element match of [`Activation::apply`], so that they
    /// vectorise (same expressions, so the same results).
    pub fn apply_in_place(&self, values: &mut [f32]) {
        apply_in_place(*self, values);
    }
}

/// [`Activation::apply_in_place`]: the sigmoid and swish in AVX-512 or AVX2 lanes where the
/// CPU has them ([`logistic_avx512`], [`logistic_avx2`]), everything else in
/// [`apply_in_place_loop`].
fn apply_in_place(activation: Activation, values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Activation::Sigmoid | Activation::Swish = activation {
        let swish = activation == Activation::Swish;
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected.
            return unsafe { logistic_avx512(values, swish) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA were detected.
            return unsafe { logistic_avx2(values, swish) };
        }
    }
    apply_in_place_loop(activation, values);
}

/// The lanes a vector logistic left to the scalar one (bit `l` of `deferred` for lane `l`),
/// from the chunk's `inputs` (which its outputs have replaced).
#[inline]
fn apply_deferred(activation: Activation, chunk: &mut [f32], inputs: &[f32], deferred: u32) {
    let mut left = deferred;
    while left != 0 {
        let l = left.trailing_zeros() as usize;
        chunk[l] = activation.apply(inputs[l]);
        left &= left - 1;
    }
}

/// [`logistic_avx512`] in AVX2 lanes, eight values at a time.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn logistic_avx2(values: &mut [f32], swish: bool) {
    use std::arch::x86_64::*;
    let activation = if swish {
        Activation::Swish
    } else {
        Activation::Sigmoid
    };
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: eight values.
        let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        let (e, deferred) = super::exp::avx2::exp(_mm256_or_ps(x, sign));
        let positive = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_setzero_ps());
        let y = _mm256_div_ps(_mm256_blendv_ps(e, one, positive), _mm256_add_ps(one, e));
        let y = if swish { _mm256_mul_ps(x, y) } else { y };
        if deferred == 0 {
            // SAFETY: eight values.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), y) };
            continue;
        }
        let inputs: [f32; 8] = std::array::from_fn(|l| chunk[l]);
        // SAFETY: eight values.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), y) };
        apply_deferred(activation, chunk, &inputs, u32::from(deferred));
    }
    for v in chunks.into_remainder() {
        *v = activation.apply(*v);
    }
}

/// [`sigmoid`] (`swish`: `x·sigmoid(x)`) of every value in place, sixteen at a time: `e^−|x|`
/// by [`super::exp::avx512::exp`], then `1/(1 + e)` for `x ≥ 0` and `e/(1 + e)` otherwise,
/// the scalar function's operations; lanes whose `exp` defers to the scalar one (`|x|` past
/// 85, NaN), and the values past the last sixteen, by [`Activation::apply`].
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn logistic_avx512(values: &mut [f32], swish: bool) {
    use std::arch::x86_64::*;
    let activation = if swish {
        Activation::Swish
    } else {
        Activation::Sigmoid
    };
    let one = _mm512_set1_ps(1.0);
    let sign = _mm512_set1_epi32(i32::MIN);
    let mut chunks = values.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // SAFETY: sixteen values.
        let x = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
        let minus_abs = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(x), sign));
        let (e, deferred) = super::exp::avx512::exp(minus_abs);
        let positive = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps());
        let y = _mm512_div_ps(
            _mm512_mask_blend_ps(positive, e, one),
            _mm512_add_ps(one, e),
        );
        let y = if swish { _mm512_mul_ps(x, y) } else { y };
        if deferred == 0 {
            // SAFETY: sixteen values.
            unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), y) };
            continue;
        }
        let inputs: [f32; 16] = std::array::from_fn(|l| chunk[l]);
        // SAFETY: sixteen values.
        unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), y) };
        apply_deferred(activation, chunk, &inputs, u32::from(deferred));
    }
    for v in chunks.into_remainder() {
        *v = activation.apply(*v);
    }
}

/// [`Activation::apply_in_place`] element by element, compiled for AVX2 too and chosen at
/// run time (the same operations, so the same bits).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn apply_in_place_loop(activation: Activation, values: &mut [f32]) {
    match activation {
        Activation::Relu => Clamp::RELU.apply_all(values),
        Activation::Clip { lo, hi } => match Clamp::new(lo, hi) {
            Some(clamp) => clamp.apply_all(values),
            None => values.iter_mut().for_each(|v| *v = activation.apply(*v)),
        },
        Activation::HardSigmoid { alpha, beta } => values
            .iter_mut()
            .for_each(|v| *v = (alpha * *v + beta).clamp(0.0, 1.0)),
        Activation::HardSwish => values
            .iter_mut()
            .for_each(|v| *v *= (*v / 6.0 + 0.5).clamp(0.0, 1.0)),
        Activation::Identity => {}
        a => values.iter_mut().for_each(|v| *v = a.apply(*v)),
    }
}

/// `min(max(v, lo), hi)`, ReLU (`hi` = +∞) and ReLU6, which the convolution kernels
/// also apply as they store their outputs in ANN mode (no pass of its own).
/// Spelled out rather than left to `f32::max`, whose sign of zero is unspecified: a value
/// inside `[lo, hi]` is kept (so `-0` stays `-0` under `lo = +0`, as x86's `max` gives it),
/// one outside becomes the bound it passed, and NaN becomes `lo`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clamp {
    lo: f32,
    hi: f32,
}

impl Clamp {
    /// ReLU: `[0, +∞]`.
    pub const RELU: Clamp = Clamp {
        lo: 0.0,
        hi: f32::INFINITY,
    };

    /// The clamp to `[lo, hi]`; none where a bound is NaN (no clamp, and the vector form
    /// would differ from the scalar one).
    pub fn new(lo: f32, hi: f32) -> Option<Clamp> {
        (!lo.is_nan() && !hi.is_nan()).then_some(Clamp { lo, hi })
    }

    /// `(lo, hi)`, neither NaN.
    pub fn bounds(self) -> (f32, f32) {
        (self.lo, self.hi)
    }

    /// The clamp of one value.
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        let v = if v >= self.lo { v } else { self.lo };
        if v <= self.hi { v } else { self.hi }
    }

    /// The clamp of every value, in place, vectorised (AVX2 chosen at run time where the
    /// CPU has it; the same operations, so the same bits).
    pub fn apply_all(self, values: &mut [f32]) {
        clamp_all(self, values);
    }
}

/// [`Clamp::apply_all`]'s loop.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn clamp_all(clamp: Clamp, values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = clamp.apply(*v));
}

/// The logistic function, written to stay finite for any input; `exp` is
/// [`super::exp::expf`], the same bits on every machine and in vector lanes.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + expf(-x))
    } else {
        let e = expf(x);
        e / (1.0 + e)
    }
}

/// Inputs that tell clamps apart: NaN, the infinities, zeros of both signs, subnormals, and
/// values at and beside the bounds of ReLU, ReLU6 and the tests' other clips.
#[cfg(test)]
pub(crate) const CLAMP_PROBES: [f32; 16] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1e-40,
    -1e-40,
    6.0,
    6.0f32.next_up(),
    6.0f32.next_down(),
    -0.5,
    (-0.5f32).next_down(),
    0.25,
    1.0,
    f32::MAX,
    -f32::MAX,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// ReLU and Clip are [`Clamp`]: a value inside the bounds is kept with its bits (a `-0`
    /// under a bound of `+0` too), one outside becomes the bound it passed, NaN becomes the
    /// lower bound; by value, by slice and as the clamp the convolutions fuse.
    #[test]
    fn relu_and_clip_are_the_clamp_by_its_definition() {
        let values = CLAMP_PROBES;
        for (a, lo, hi) in [
            (Activation::Relu, 0.0, f32::INFINITY),
            (Activation::Clip { lo: 0.0, hi: 6.0 }, 0.0, 6.0),
            (Activation::Clip { lo: -0.5, hi: 0.25 }, -0.5, 0.25),
            (Activation::Clip { lo: -0.0, hi: 1.0 }, -0.0, 1.0),
        ] {
            let expected = |v: f32| match v {
                v if v.is_nan() || v < lo => lo,
                v if v > hi => hi,
                v => v,
            };
            let Some(clamp) = a.as_clamp() else {
                panic!("{a:?} is a clamp");
            };
            let mut all = values.to_vec();
            clamp.apply_all(&mut all);
            let mut in_place = values.to_vec();
            a.apply_in_place(&mut in_place);
            for ((&v, c), s) in values.iter().zip(&all).zip(&in_place) {
                let bits = expected(v).to_bits();
                assert_eq!(a.apply(v).to_bits(), bits, "{a:?} of {v}");
                assert_eq!(c.to_bits(), bits, "{a:?} of {v}, as the clamp");
                assert_eq!(s.to_bits(), bits, "{a:?} of {v}, in place");
            }
        }
        assert!(Activation::Sigmoid.as_clamp().is_none());
        // A NaN bound is no bound, as `max` and `min` take it; not a clamp.
        let a = Activation::Clip {
            lo: f32::NAN,
            hi: 6.0,
        };
        assert!(a.as_clamp().is_none());
        assert_eq!(a.apply(-3.0), -3.0);
        assert_eq!(a.apply(7.0), 6.0);
    }

    /// The slice loops are the per-value definition, bit for bit, on ordinary values,
    /// signed zeros, infinities and NaN.
    #[test]
    fn in_place_loops_match_the_definition_bit_for_bit() {
        let mut values: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.00371).collect();
        values.extend([
            0.0,
            -0.0,
            6.0,
            -3.0,
            3.0,
            f32::INFINITY,
            -f32::INFINITY,
            f32::NAN,
        ]);
        // Where the vector sigmoid's `exp` defers lanes to the scalar one (|x| past 85,
        // overflow and underflow, NaN), among lanes it computes.
        values.extend([
            -85.5, 85.5, 88.5, -88.5, 89.0, -103.5, 104.0, -104.0, 1e30, -1e30, 1e-40, -1e-40,
            -0.25, 0.75, -1.0, 0.5, 2.0, -2.0,
        ]);
        values.push(f32::from_bits(0x7fc0_1234));
        let all = [
            Activation::Relu,
            Activation::Clip { lo: 0.0, hi: 6.0 },
            Activation::Clip { lo: -1.5, hi: 2.25 },
            Activation::Sigmoid,
            Activation::Swish,
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Activation::HardSwish,
            Activation::Tanh,
            Activation::Gelu,
            Activation::Erf,
            Activation::Identity,
        ];
        for a in all {
            let mut got = values.clone();
            a.apply_in_place(&mut got);
            for (x, y) in values.iter().zip(&got) {
                assert_eq!(a.apply(*x).to_bits(), y.to_bits(), "{a:?} at {x}");
            }
            // The AVX2 logistic on AVX-512 machines too, where `apply_in_place` takes the
            // AVX-512 one.
            #[cfg(target_arch = "x86_64")]
            if let Activation::Sigmoid | Activation::Swish = a
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let mut avx2 = values.clone();
                // SAFETY: AVX2 and FMA were detected.
                unsafe { logistic_avx2(&mut avx2, a == Activation::Swish) };
                for (x, y) in values.iter().zip(&avx2) {
                    assert_eq!(a.apply(*x).to_bits(), y.to_bits(), "AVX2 {a:?} at {x}");
                }
            }
            let tensor = Tensor::new(vec![values.len()], values.clone()).unwrap();
            let evaluated = a.eval(&tensor);
            assert!(
                evaluated
                    .data()
                    .iter()
                    .zip(&got)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
            );
        }
    }
}
