//! Closed-form units: a K-bit binary expansion of the input over a range.
//!
//! ReLU over [0, α): c_i = 1, T_i = d_i = α·2^−(i+1), h_ij = α·2^−(j+1) (0-based), so the
//! neurons fire greedily for the bits of x/α; the error is below α·2^−K. The rounding variant
//! lowers every threshold by half a level, α·2^−(K+1), which rounds to the nearest level
//! instead of truncating (error ≤ α·2^−(K+1)). Inputs ≥ α saturate at α·(1 − 2^−K).

use super::AmosUnit;

/// How a closed-form unit maps inputs between levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Down to the level below (the paper's form).
    Truncate,
    /// To the nearest level.
    Nearest,
}

/// ReLU over [0, α) with K neurons.
pub fn relu(k: usize, alpha: f32, rounding: Rounding) -> AmosUnit {
    binary_code(k, alpha, 0.0, rounding)
}

/// ReLU6: ReLU with α chosen so that all neurons firing gives exactly 6, so inputs ≥ 6 map
/// to 6 as ReLU6 does.
pub fn relu6(k: usize, rounding: Rounding) -> AmosUnit {
    let mut u = relu(k, relu6_alpha(k), rounding);
    make_top_exact(&mut u, 6.0);
    u
}

/// The α for which α·(1 − 2^−K) = 6.
pub fn relu6_alpha(k: usize) -> f32 {
    (6.0f64 / (1.0 - 0.5f64.powi(k as i32))) as f32
}

/// Identity over [lo, hi] (K-bit uniform code, o = lo): encodes a tensor that is not a unit's
/// output where it crosses a stage boundary. All neurons firing gives exactly `hi`.
pub fn identity(k: usize, lo: f32, hi: f32, rounding: Rounding) -> AmosUnit {
    let alpha = ((hi as f64 - lo as f64) / (1.0 - 0.5f64.powi(k as i32))) as f32;
    let mut u = binary_code(k, alpha, lo, rounding);
    make_top_exact(&mut u, hi);
    u
}

/// Makes the input `top` fire every neuron and all neurons firing decode to exactly `top`
/// in f32: the levels α·2^−i are not exactly representable, so the last threshold and output
/// weight are nudged by a few ulps.
fn make_top_exact(u: &mut AmosUnit, top: f32) {
    let all = if u.k() == 64 {
        u64::MAX
    } else {
        (1u64 << u.k()) - 1
    };
    let last = u.k() - 1;
    // The last neuron's potential at x = top with all earlier neurons fired, as `spikes` computes it.
    let mut v = u.c[last] * top;
    for j in 0..last {
        v -= u.h(last, j);
    }
    u.t[last] = u.t[last].min(v);
    // Σ d over the others, in decode's order; the difference is exact (Sterbenz) when the
    // partial sum is within a factor 2 of the target.
    let partial: f32 = u.d[..last].iter().fold(0.0, |a, d| a + d);
    u.d[last] = (top - u.o) - partial;
    for _ in 0..64 {
        let y = u.decode(all);
        if y == top {
            return;
        }
        u.d[last] = if y < top {
            u.d[last].next_up()
        } else {
            u.d[last].next_down()
        };
    }
}

/// Binary expansion of (x − lo) over [0, α), output offset lo.
fn binary_code(k: usize, alpha: f32, lo: f32, rounding: Rounding) -> AmosUnit {
    let mut u = AmosUnit::zeros(k, false);
    let level = |i: usize| (alpha as f64 * 0.5f64.powi(i as i32 + 1)) as f32;
    let shift = match rounding {
        Rounding::Truncate => 0.0,
        Rounding::Nearest => (alpha as f64 * 0.5f64.powi(k as i32 + 1)) as f32,
    };
    for i in 0..k {
        u.c[i] = 1.0;
        u.d[i] = level(i);
        u.t[i] = level(i) - shift + lo;
        for j in 0..i {
            u.h[i * (i - 1) / 2 + j] = level(j);
        }
    }
    u.o = lo;
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense sweep of inputs over [lo, hi].
    fn sweep(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        (0..=20_000).map(move |i| lo + (hi - lo) * i as f32 / 20_000.0)
    }

    #[test]
    fn relu_truncating_error_is_below_one_level() {
        let (k, alpha) = (10, 4.0f32);
        let u = relu(k, alpha, Rounding::Truncate);
        let step = alpha / 1024.0;
        for x in sweep(-2.0, alpha * 0.999) {
            let y = u.eval(x, 0.0).1;
            let e = x.max(0.0) - y;
            assert!((-1e-5..step + 1e-5).contains(&e), "x {x}: y {y}");
        }
    }

    #[test]
    fn relu_rounding_error_is_below_half_a_level() {
        let (k, alpha) = (8, 6.0f32);
        let u = relu(k, alpha, Rounding::Nearest);
        let step = alpha / 256.0;
        for x in sweep(0.0, alpha - step) {
            let y = u.eval(x, 0.0).1;
            assert!((x - y).abs() <= step / 2.0 + 1e-5, "x {x}: y {y}");
        }
    }

    #[test]
    fn relu6_saturates_exactly_at_six() {
        for k in [6, 8, 10, 12] {
            for rounding in [Rounding::Truncate, Rounding::Nearest] {
                let u = relu6(k, rounding);
                assert_eq!(u.eval(6.0, 0.0), ((1u64 << k) - 1, 6.0), "K={k}");
                assert_eq!(u.eval(100.0, 0.0).1, 6.0);
                assert_eq!(u.eval(-3.0, 0.0), (0, 0.0));
            }
        }
    }

    #[test]
    fn identity_covers_its_range() {
        let u = identity(12, -3.0, 5.0, Rounding::Nearest);
        let step = 8.0 / 4095.0;
        for x in sweep(-3.0, 5.0) {
            let y = u.eval(x, 0.0).1;
            assert!((x - y).abs() <= step / 2.0 + 1e-4, "x {x}: y {y}");
        }
        assert_eq!(u.eval(-10.0, 0.0).1, -3.0);
        assert!((u.eval(10.0, 0.0).1 - 5.0).abs() < 1e-5);
    }
}
