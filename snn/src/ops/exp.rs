//! `exp` on `f32`, one value at a time and sixteen at a time with the same bits.
//!
//! The sigmoid and swish gates of ANN mode ([`super::activation`]) need `exp` for every
//! element of large tensors. The platform's `expf` is one value per call, and nothing
//! guarantees its bits. So the gates use this one: the algorithm of glibc's x86-64 `expf`
//! (glibc 2.28 on, the variant it runs where the CPU has FMA), written out so that
//! [`expf`] and its vector forms ([`avx512::exp`], [`avx2::exp`]) perform the same IEEE
//! operations in the same order, and give the same result on every machine. Where glibc
//! runs that variant (x86-64 Linux), its `expf` gives the same bits too (checked over every
//! `f32` when this was written; a test checks a sweep).
//!
//! The method: `x·32/ln 2 = k + r` with `k` an integer (by adding and subtracting
//! 1.5·2⁵², which rounds to nearest), `|r| ≤ 1/2`; then `exp(x) = 2^(k/32)·2^(r/32)`, the
//! first factor from a table of 32 doubles whose exponents take `k/32`, the second a cubic
//! in `r`, all in double precision, rounded once to `f32` at the end. Errors are at most
//! 0.502 ULP.

/// `2^(i/32)` for `i` in `0..32`, as the bits of a double, less `i << 47` (which adding
/// `k << 47` for `k ≡ i` puts back, with `k`'s multiple of 32 in the exponent).
const TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// 32/ln 2.
const INV_LN2_32: f64 = f64::from_bits(0x40471547652b82fe);
/// 1.5·2⁵²: added to a double of magnitude below 2⁵¹, rounds it to an integer, held in the
/// low bits of the sum's representation.
const SHIFT: f64 = f64::from_bits(0x4338000000000000);
/// The cubic's coefficients for `2^(r/32) ≈ 1 + C2·r + C1·r² + C0·r³`.
const C0: f64 = f64::from_bits(0x3ebc6af84b912394);
const C1: f64 = f64::from_bits(0x3f2ebfce50fac4f3);
const C2: f64 = f64::from_bits(0x3f962e42ff0c52d6);

/// The top 12 bits of `|x|` above which the general path is not taken as is: `|x| ≥ 2^6·4/3`
/// (about 85.3), the infinities and NaN.
const SPECIAL_TOP: u32 = 0x42a;
/// Above it `exp(x)` overflows (`x > ln(2¹²⁸)`, about 88.72).
const OVERFLOW: f32 = f32::from_bits(0x42b17217);
/// Below it `exp(x)` rounds to zero (`x < ln(2⁻¹⁵⁰)`, about −103.97).
const UNDERFLOW: f32 = f32::from_bits(0xc2cff1b4);
/// Below it (and at or above [`UNDERFLOW`]) glibc returns the square of `0x1.4p-75`, the
/// smallest subnormal, rather than the general path's result.
const MAY_UNDERFLOW: f32 = f32::from_bits(0xc2ce8ecf);

/// Whether `x` is one the general path does not take as is ([`SPECIAL_TOP`]).
#[inline(always)]
fn special(x: f32) -> bool {
    (x.to_bits() >> 20) & 0x7ff > SPECIAL_TOP
}

/// `e^x` (see the module's documentation).
///
/// ```
/// use amos_snn::ops::exp::expf;
/// assert_eq!(expf(0.0), 1.0);
/// assert_eq!(expf(1.0), std::f32::consts::E);
/// assert_eq!(expf(f32::NEG_INFINITY), 0.0);
/// assert_eq!(expf(100.0), f32::INFINITY);
/// ```
pub fn expf(x: f32) -> f32 {
    if special(x) {
        if x == f32::NEG_INFINITY {
            return 0.0;
        }
        if (x.to_bits() >> 20) & 0x7ff > 0x7f7 {
            // +∞ stays, NaN stays NaN (quietened).
            return x + x;
        }
        if x > OVERFLOW {
            return f32::INFINITY;
        }
        if x < UNDERFLOW {
            return 0.0;
        }
        if x < MAY_UNDERFLOW {
            let tiny = f32::from_bits(0x1a20_0000);
            return tiny * tiny;
        }
    }
    general(x)
}

/// The general path: reduction, table, cubic, one rounding.
#[inline(always)]
fn general(x: f32) -> f32 {
    let xd = f64::from(x);
    let kd = INV_LN2_32.mul_add(xd, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = INV_LN2_32.mul_add(xd, -kd);
    let s = f64::from_bits(TABLE[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = r.mul_add(C0, C1);
    let r2 = r * r;
    let y = r.mul_add(C2, 1.0);
    let y = z.mul_add(r2, y);
    (y * s) as f32
}

/// [`expf`] in AVX-512 lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{C0, C1, C2, INV_LN2_32, SHIFT, SPECIAL_TOP, TABLE};

    /// `e^x` for sixteen values, and the lanes where it is not [`super::expf`]'s
    /// ([`super::special`]: there [`super::expf`] must be called).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn exp(x: __m512) -> (__m512, __mmask16) {
        let top = _mm512_and_si512(
            _mm512_srli_epi32::<20>(_mm512_castps_si512(x)),
            _mm512_set1_epi32(0x7ff),
        );
        let special = _mm512_cmpgt_epi32_mask(top, _mm512_set1_epi32(SPECIAL_TOP as i32));
        let lo = general(_mm512_cvtps_pd(_mm512_castps512_ps256(x)));
        let hi = general(_mm512_cvtps_pd(_mm256_castpd_ps(
            _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)),
        )));
        let y = _mm512_insertf64x4::<1>(
            _mm512_castps_pd(_mm512_castps256_ps512(lo)),
            _mm256_castps_pd(hi),
        );
        (_mm512_castpd_ps(y), special)
    }

    /// [`super::general`] for eight values, as doubles.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn general(xd: __m512d) -> __m256 {
        // SAFETY: loads of the 32-entry table, four vectors of eight.
        let table: [__m512i; 4] = std::array::from_fn(|i| unsafe {
            _mm512_loadu_si512(TABLE.as_ptr().add(8 * i).cast())
        });
        let inv_ln2 = _mm512_set1_pd(INV_LN2_32);
        let shift = _mm512_set1_pd(SHIFT);
        let kd = _mm512_fmadd_pd(inv_ln2, xd, shift);
        let ki = _mm512_castpd_si512(kd);
        let kd = _mm512_sub_pd(kd, shift);
        let r = _mm512_fmsub_pd(inv_ln2, xd, kd);
        // TABLE[ki mod 32]: entries 0–15 or 16–31 by bit 4 of the index (the permutes use
        // the low four bits).
        let low = _mm512_permutex2var_epi64(table[0], ki, table[1]);
        let high = _mm512_permutex2var_epi64(table[2], ki, table[3]);
        let upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
        let t = _mm512_mask_blend_epi64(upper, low, high);
        let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
        let z = _mm512_fmadd_pd(r, _mm512_set1_pd(C0), _mm512_set1_pd(C1));
        let r2 = _mm512_mul_pd(r, r);
        let y = _mm512_fmadd_pd(r, _mm512_set1_pd(C2), _mm512_set1_pd(1.0));
        let y = _mm512_fmadd_pd(z, r2, y);
        _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
    }
}

/// [`expf`] in AVX2 lanes, for CPUs without AVX-512 (the same operations as
/// [`avx512::exp`], the table read by a load per lane).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{C0, C1, C2, INV_LN2_32, SHIFT, SPECIAL_TOP, TABLE};

    /// `e^x` for eight values, and the lanes (bit `l` for lane `l`) where it is not
    /// [`super::expf`]'s ([`super::special`]: there [`super::expf`] must be called).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) fn exp(x: __m256) -> (__m256, u8) {
        let top = _mm256_and_si256(
            _mm256_srli_epi32::<20>(_mm256_castps_si256(x)),
            _mm256_set1_epi32(0x7ff),
        );
        let special = _mm256_cmpgt_epi32(top, _mm256_set1_epi32(SPECIAL_TOP as i32));
        let special = _mm256_movemask_ps(_mm256_castsi256_ps(special)) as u8;
        let lo = general(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        let hi = general(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)));
        (_mm256_set_m128(hi, lo), special)
    }

    /// [`super::general`] for four values, as doubles.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn general(xd: __m256d) -> __m128 {
        let inv_ln2 = _mm256_set1_pd(INV_LN2_32);
        let shift = _mm256_set1_pd(SHIFT);
        let kd = _mm256_fmadd_pd(inv_ln2, xd, shift);
        let ki = _mm256_castpd_si256(kd);
        let kd = _mm256_sub_pd(kd, shift);
        let r = _mm256_fmsub_pd(inv_ln2, xd, kd);
        let index = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
        // The table's entries by a load per lane: a 4-lane gather cost B0's ANN mode 4–6%
        // more on a Zen 3 (session 22).
        let mut at = [0u64; 4];
        // SAFETY: AVX2 is enabled; `at` holds four lanes.
        unsafe { _mm256_storeu_si256(at.as_mut_ptr().cast(), index) };
        let entry = |lane: usize| TABLE[at[lane] as usize & 31] as i64;
        let t = _mm256_set_epi64x(entry(3), entry(2), entry(1), entry(0));
        let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
        let z = _mm256_fmadd_pd(r, _mm256_set1_pd(C0), _mm256_set1_pd(C1));
        let r2 = _mm256_mul_pd(r, r);
        let y = _mm256_fmadd_pd(r, _mm256_set1_pd(C2), _mm256_set1_pd(1.0));
        let y = _mm256_fmadd_pd(z, r2, y);
        _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `stride`-th `f32` bit pattern from `start`, and every value near the special
    /// bounds.
    fn sweep(start: u32, stride: u32) -> impl Iterator<Item = f32> {
        let bounds = [
            OVERFLOW,
            UNDERFLOW,
            MAY_UNDERFLOW,
            85.0,
            -85.0,
            85.5,
            -85.5,
            0.0,
        ];
        let near = bounds.into_iter().flat_map(|b| {
            (-300i32..=300).map(move |d| f32::from_bits(b.to_bits().wrapping_add_signed(d)))
        });
        (start..=u32::MAX)
            .step_by(stride as usize)
            .map(f32::from_bits)
            .chain(near)
            .chain([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN])
    }

    /// Within 0.502 ULP of `e^x` computed in double precision (itself within 2⁻⁵² of it).
    #[test]
    fn expf_is_within_half_an_ulp_and_a_little() {
        for x in sweep(7, 4099) {
            let got = expf(x);
            let want = f64::from(x).exp();
            if x.is_nan() {
                assert!(got.is_nan());
                continue;
            }
            if want > f64::from(f32::MAX) * (1.0 + 2f64.powi(-25)) {
                assert_eq!(got, f32::INFINITY, "{x}");
                continue;
            }
            // One ULP at the result's magnitude (subnormals: the smallest).
            let ulp = f64::from(f32::from_bits(
                (got.abs().to_bits() & 0x7f80_0000).max(0x0080_0000),
            )) * 2f64.powi(-23);
            let ulp = if got.abs() < f32::MIN_POSITIVE {
                2f64.powi(-149)
            } else {
                ulp
            };
            let err = (f64::from(got) - want).abs() / ulp;
            // glibc's underflow value below MAY_UNDERFLOW is the smallest subnormal.
            let tolerance = if x < MAY_UNDERFLOW { 1.0 } else { 0.502 };
            assert!(
                err <= tolerance,
                "expf({x:e}) = {got:e}, e^x = {want:e}: {err} ULP"
            );
        }
    }

    /// The AVX-512 form gives [`expf`]'s bits wherever it does not defer to it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_scalar_exp() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let values: Vec<f32> = sweep(3, 257).collect();
        let mut deferred = 0;
        for chunk in values.chunks(16) {
            let mut lanes = [0.0f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: AVX-512F was detected.
            let (y, to_scalar) = unsafe {
                let (y, lanes) = avx512::exp(std::mem::transmute::<
                    [f32; 16],
                    std::arch::x86_64::__m512,
                >(lanes));
                (
                    std::mem::transmute::<std::arch::x86_64::__m512, [f32; 16]>(y),
                    lanes,
                )
            };
            for (l, &x) in chunk.iter().enumerate() {
                if to_scalar >> l & 1 == 1 {
                    assert!(special(x));
                    deferred += 1;
                    continue;
                }
                assert!(!special(x));
                assert_eq!(y[l].to_bits(), expf(x).to_bits(), "exp({x:e})");
            }
        }
        // Both kinds of lanes were tried (about half of all bit patterns are special).
        assert!(deferred > values.len() / 4 && deferred < values.len() * 3 / 4);
    }

    /// The AVX2 form gives [`expf`]'s bits wherever it does not defer to it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_exp_is_scalar_exp() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let values: Vec<f32> = sweep(5, 257).collect();
        let mut deferred = 0;
        for chunk in values.chunks(8) {
            let mut lanes = [0.0f32; 8];
            lanes[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: AVX2 and FMA were detected.
            let (y, to_scalar) = unsafe {
                use std::arch::x86_64::*;
                let (y, lanes) = avx2::exp(_mm256_loadu_ps(lanes.as_ptr()));
                let mut out = [0.0f32; 8];
                _mm256_storeu_ps(out.as_mut_ptr(), y);
                (out, lanes)
            };
            for (l, &x) in chunk.iter().enumerate() {
                if to_scalar >> l & 1 == 1 {
                    assert!(special(x));
                    deferred += 1;
                    continue;
                }
                assert!(!special(x));
                assert_eq!(y[l].to_bits(), expf(x).to_bits(), "exp({x:e})");
            }
        }
        assert!(deferred > values.len() / 4 && deferred < values.len() * 3 / 4);
    }

    /// Where glibc runs its FMA `expf` (x86-64 Linux, a CPU with FMA and AVX2), the
    /// platform's `exp` gives the same bits: the gates' values are those they had when
    /// they called it.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    #[test]
    fn expf_is_glibcs() {
        if !(std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("avx2"))
        {
            return;
        }
        for x in sweep(11, 1021) {
            let (got, want) = (expf(x), x.exp());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "expf({x:e}) = {got:e}, glibc {want:e}"
            );
        }
    }
}
