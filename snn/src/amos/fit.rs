//! Fitting AMOS units to a gate function (ARCHITECTURE.md §3, "Fitted units").
//!
//! A one-input unit is a staircase: as x grows, the spike pattern changes at switching points
//! and y = o + Σ d_i·z_i is constant between them. With 3K + K(K−1)/2 numbers the unit must
//! place about a hundred steps (swish at K = 12) where the gate needs them. The fit, and why
//! each part is there:
//!
//! 1. **Starts laid out in output space** (`init_one`). A binary expansion of x cannot bend:
//!    descent from it stays near MSE 7e-2 for swish (FINDINGS.md). So f is split at its
//!    minimum into a falling and a rising part; the part with the smaller output span (swish's
//!    negative dip) gets a few neurons of its own, and the other gets coarse neurons that fire
//!    at equal output steps (a thermometer) and fine neurons that binary-code the output inside
//!    each coarse segment. A fine neuron's inhibition from the coarse neurons is a free offset
//!    per segment, so its switching points can follow f into every segment; its T and h are
//!    fitted by least squares to the inputs where f reaches its output levels. Several layouts
//!    are started (0–3 neurons for the minor part, 1–2 coarse neurons). The two-input
//!    multiplication starts from a constructed code instead (`init_two`): bits of x, and under
//!    each bit a binary code of x′ that runs only when that bit fired, i.e. the partial products.
//! 2. **d and o by least squares** (`solve_output`). Once the spikes are fixed, y is linear in
//!    d and o, so they are solved exactly and re-solved after every change of the other
//!    parameters; this beat descending on them (FINDINGS.md). The units use o as a free offset.
//! 3. **Exact coordinate descent** (`coordinate_sweep`). With everything else fixed, the
//!    exact loss as a function of one threshold, one inhibition weight or one input weight is
//!    piecewise constant, changing only where a sample's potential crosses zero. Computing each
//!    sample's error with the neuron firing and with it silent (later neurons re-run), then
//!    sorting the samples by where they switch, gives the exact minimiser in O(N log N). It
//!    never raises the exact loss and does most of the work: alone it takes the swish starts
//!    from about 2e-3 to 8e-4.
//! 4. **Gradient descent with a triangle pseudo-derivative** (`descend`): the forward pass is
//!    exact and Θ′ is replaced by a triangle whose half-width is a multiple of each neuron's
//!    switching distance (a few threshold spacings, so every neuron sees the samples around its
//!    own steps), narrowing over the run; Adam on T and h; d and o re-solved at each step.
//!    From these starts it did not lower the exact loss by itself (the surrogate gradient is
//!    too coarse for codes this fine), but as a move of the basin hopping below, followed by
//!    coordinate descent, it is the move most often accepted.
//! 5. **Basin hopping with successive halving** (`search`). Coordinate descent ends in a local
//!    optimum; perturb it (a kick to one neuron's threshold and inhibition, one neuron moved to
//!    a random place, or a gradient burst), descend again, keep the result only if it is
//!    better. The budget ([`FitConfig::steps`]) is spent in stages; after each, the worse half
//!    of the chains is dropped. Two-input units only descend from their start: a sweep at
//!    K = 40 costs about 80 ms, and hopping gained 15% for 25 times the time.
//! 6. **The best by the exact forward pass** (`Best`). Every candidate is converted to f32
//!    and measured with [`AmosUnit::eval`]; the best is kept as a copy. At the end d and o are
//!    solved once more on the f32 spikes of all samples, and [`Fitted::mse`] is measured the
//!    same way.
//!
//! Internally everything is f64. A fit is deterministic: a seeded SplitMix64 generator, no
//! hashing, no clocks; starts and chains run in parallel (rayon), each with its own generator
//! and budget, so the result does not depend on the number of threads.
//!
//! With the defaults (200 sweeps, 4096 of the samples), on 4096 stratified samples of the
//! default ranges, one thread, MSE: swish K = 12 ≈ 6e-4 in ≈ 1.4 s (FINDINGS: 2.2e-3; the
//! published K = 16 swish neuron: 3.4e-3), sigmoid K = 8 ≈ 3e-5, tanh K = 8 ≈ 1.1e-4,
//! erf K = 8 ≈ 8e-5, GELU K = 12 ≈ 2.5e-4, hard-swish K = 12 ≈ 6–9e-4, hard-sigmoid K = 8
//! ≈ 6e-7 (K = 8 gates ≈ 0.9 s), x·x′ on [0, 6] × [0, 1] with K = 40 ≈ 9e-5 (1.3e-4 on fresh
//! samples) in ≈ 0.6 s. The error on fresh inputs is within 5% of these for one input.

// Indices name neurons and samples across several arrays at once.
#![allow(clippy::needless_range_loop)]

use super::{AmosUnit, MAX_NEURONS};

/// What to fit.
pub enum Target<'a> {
    /// y = f(x) on samples of x.
    OneInput {
        f: &'a (dyn Fn(f32) -> f32 + Sync),
        samples: &'a [f32],
    },
    /// y = f(x, x′) on sample pairs (the two-input multiplication x·x′).
    TwoInput {
        f: &'a (dyn Fn(f32, f32) -> f32 + Sync),
        samples: &'a [(f32, f32)],
    },
}

impl Target<'_> {
    /// Whether the target takes two inputs.
    pub fn is_two_input(&self) -> bool {
        matches!(self, Target::TwoInput { .. })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Target::OneInput { samples, .. } => samples.len(),
            Target::TwoInput { samples, .. } => samples.len(),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample n as (x, x′, f): x′ = 0 for one-input targets.
    fn sample(&self, n: usize) -> (f32, f32, f32) {
        match self {
            Target::OneInput { f, samples } => (samples[n], 0.0, f(samples[n])),
            Target::TwoInput { f, samples } => {
                let (x, x2) = samples[n];
                (x, x2, f(x, x2))
            }
        }
    }
}

/// Settings of a fit.
#[derive(Clone, Debug, PartialEq)]
pub struct FitConfig {
    /// Neurons K.
    pub k: usize,
    /// Seed of every random choice: the same target, seed and settings give a bit-identical
    /// unit, whatever the number of threads.
    pub seed: u64,
    /// Budget of descent, over all starts together, in sweeps of coordinate descent (one exact
    /// line search on every parameter, about the cost of K forward passes); a burst of 8
    /// gradient steps counts as one sweep. The time of a fit is about proportional to it.
    pub steps: usize,
    /// At most this many samples are used for fitting (a deterministic subset spread over
    /// the samples); the reported MSE is over all samples.
    pub max_fit_samples: usize,
}

impl FitConfig {
    /// Defaults for K neurons and a seed.
    pub fn new(k: usize, seed: u64) -> Self {
        FitConfig {
            k,
            seed,
            ..Default::default()
        }
    }
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            k: 12,
            seed: 0,
            steps: 200,
            max_fit_samples: 4096,
        }
    }
}

/// A fitted unit and its error.
#[derive(Clone, Debug, PartialEq)]
pub struct Fitted {
    /// The unit.
    pub unit: AmosUnit,
    /// Mean squared error on all the target's samples, computed with [`AmosUnit::eval`].
    pub mse: f32,
}

/// Mean squared error of a unit on a target's samples, with the exact forward pass
/// ([`AmosUnit::eval`]); accumulated in f64.
pub fn mse(unit: &AmosUnit, target: &Target) -> f32 {
    let n = target.len();
    if n == 0 {
        return 0.0;
    }
    let mut acc = 0.0f64;
    for i in 0..n {
        let (x, x2, y) = target.sample(i);
        let e = (unit.eval(x, x2).1 - y) as f64;
        acc += e * e;
    }
    (acc / n as f64) as f32
}

// ---------------------------------------------------------------------------------------------
// Gates, ranges, samples.

/// Default input ranges per gate name, for when no calibration data is given: the
/// pre-activation ranges the gates typically see in image classifiers. One range per input;
/// `"mul"` (the two-input multiplication of squeeze-and-excitation blocks) has two: x, the
/// output of a swish or ReLU6 layer, in [0, 6], and x′, the output of a sigmoid, in [0, 1].
///
/// | gate | range | why |
/// |---|---|---|
/// | `sigmoid` | [−8, 8] | saturated to within 3.4e-4 at both ends |
/// | `swish`, `silu` | [−8, 12] | as the FINDINGS fits; the dip and the kink lie in [−5, 3] |
/// | `hard_swish` | [−8, 12] | the same range as swish, which it replaces |
/// | `gelu` | [−8, 12] | the same range as swish |
/// | `tanh` | [−5, 5] | saturated to within 1e-4 at both ends |
/// | `erf` | [−4, 4] | saturated to within 2e-8 at both ends |
/// | `hard_sigmoid` | [−6, 6] | linear on [−3, 3], flat outside |
/// | `mul` | [0, 6] × [0, 1] | see above |
pub fn default_ranges(gate: &str) -> Option<&'static [[f32; 2]]> {
    Some(match gate {
        "sigmoid" => &[[-8.0, 8.0]],
        "swish" | "silu" | "hard_swish" | "gelu" => &[[-8.0, 12.0]],
        "tanh" => &[[-5.0, 5.0]],
        "erf" => &[[-4.0, 4.0]],
        "hard_sigmoid" => &[[-6.0, 6.0]],
        "mul" => &[[0.0, 6.0], [0.0, 1.0]],
        _ => return None,
    })
}

/// Default range of a gate's (first) input; see [`default_ranges`] for the table and the
/// second input of `"mul"`.
pub fn default_range(gate: &str) -> Option<[f32; 2]> {
    default_ranges(gate).map(|r| r[0])
}

/// The one-input gate functions that units are fitted to, by name (f32 in, f32 out, computed
/// in f64 with `libm`, the same on every platform): `sigmoid`, `swish`/`silu`, `hard_swish`,
/// `hard_sigmoid` (ONNX's default α = 1/6, β = 1/2), `tanh`, `gelu` (the exact erf form), `erf`.
pub fn gate_fn(gate: &str) -> Option<fn(f32) -> f32> {
    fn sigmoid(x: f32) -> f32 {
        (1.0 / (1.0 + libm::exp(-(x as f64)))) as f32
    }
    fn swish(x: f32) -> f32 {
        (x as f64 / (1.0 + libm::exp(-(x as f64)))) as f32
    }
    fn hard_sigmoid(x: f32) -> f32 {
        ((x as f64 + 3.0).clamp(0.0, 6.0) / 6.0) as f32
    }
    fn hard_swish(x: f32) -> f32 {
        (x as f64 * (x as f64 + 3.0).clamp(0.0, 6.0) / 6.0) as f32
    }
    fn tanh(x: f32) -> f32 {
        libm::tanh(x as f64) as f32
    }
    fn erf(x: f32) -> f32 {
        libm::erf(x as f64) as f32
    }
    fn gelu(x: f32) -> f32 {
        let x = x as f64;
        (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
    }
    Some(match gate {
        "sigmoid" => sigmoid,
        "swish" | "silu" => swish,
        "hard_swish" => hard_swish,
        "hard_sigmoid" => hard_sigmoid,
        "tanh" => tanh,
        "gelu" => gelu,
        "erf" => erf,
        _ => return None,
    })
}

/// n samples spread evenly over [lo, hi]: one in each of n equal cells, at a seeded random
/// place inside its cell (stratified sampling), in increasing order.
pub fn uniform_samples(lo: f32, hi: f32, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let (lo64, w) = (lo as f64, (hi as f64 - lo as f64) / n.max(1) as f64);
    (0..n)
        .map(|i| ((lo64 + w * (i as f64 + rng.uniform())) as f32).clamp(lo, hi))
        .collect()
}

/// n sample pairs over [lo, hi] × [lo′, hi′]: stratified over a ⌈√n⌉ × ⌈√n⌉ grid of cells,
/// cells visited in a seeded random order, one seeded random place inside each cell.
pub fn uniform_pairs(r: [f32; 2], r2: [f32; 2], n: usize, seed: u64) -> Vec<(f32, f32)> {
    let mut rng = Rng::new(seed);
    let side = (n as f64).sqrt().ceil().max(1.0) as usize;
    let mut cells: Vec<usize> = (0..side * side).collect();
    for i in (1..cells.len()).rev() {
        cells.swap(i, rng.below(i + 1));
    }
    let at = |lo: f32, hi: f32, cell: usize, u: f64| {
        let v = lo as f64 + (hi as f64 - lo as f64) * (cell as f64 + u) / side as f64;
        (v as f32).clamp(lo, hi)
    };
    cells[..n]
        .iter()
        .map(|&cell| {
            let (a, b) = (cell / side, cell % side);
            (
                at(r[0], r[1], a, rng.uniform()),
                at(r2[0], r2[1], b, rng.uniform()),
            )
        })
        .collect()
}

/// SplitMix64: a small, portable, seeded generator (the same numbers on every platform).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// The unit in f64, the data, and exact evaluation.

/// Bits 0..i set.
#[inline]
fn mask(i: usize) -> u64 {
    if i >= 64 { u64::MAX } else { (1u64 << i) - 1 }
}

/// 2^−n, exactly.
fn half_pow(n: usize) -> f64 {
    libm::scalbn(1.0, -(n.min(2000) as i32))
}

/// Start of row i of the packed strictly lower-triangular h.
#[inline]
fn row(i: usize) -> usize {
    i * i.saturating_sub(1) / 2
}

/// A unit's parameters in f64, the working copy of the optimisers.
#[derive(Clone, Debug)]
struct Net {
    k: usize,
    two: bool,
    c: Vec<f64>,
    c2: Vec<f64>,
    t: Vec<f64>,
    h: Vec<f64>,
    d: Vec<f64>,
    o: f64,
}

impl Net {
    fn zeros(k: usize, two: bool) -> Self {
        Net {
            k,
            two,
            c: vec![0.0; k],
            c2: vec![0.0; k],
            t: vec![0.0; k],
            h: vec![0.0; row(k)],
            d: vec![0.0; k],
            o: 0.0,
        }
    }

    /// Input part of neuron i's potential, c_i·x + c′_i·x′.
    #[inline]
    fn drive(&self, i: usize, x: f64, x2: f64) -> f64 {
        if self.two {
            self.c[i] * x + self.c2[i] * x2
        } else {
            self.c[i] * x
        }
    }

    /// Inhibition H_i for the spikes z of the earlier neurons.
    #[inline]
    fn inhibition(&self, i: usize, z: u64) -> f64 {
        let h = &self.h[row(i)..row(i) + i];
        let mut s = 0.0;
        let mut f = z & mask(i);
        while f != 0 {
            s += h[f.trailing_zeros() as usize];
            f &= f - 1;
        }
        s
    }

    #[inline]
    fn decode(&self, z: u64) -> f64 {
        let mut acc = 0.0;
        let mut s = z;
        while s != 0 {
            acc += self.d[s.trailing_zeros() as usize];
            s &= s - 1;
        }
        self.o + acc
    }

    fn to_unit(&self) -> AmosUnit {
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        AmosUnit {
            c: f(&self.c),
            c2: self.two.then(|| f(&self.c2)),
            d: f(&self.d),
            t: f(&self.t),
            h: f(&self.h),
            o: self.o as f32,
        }
    }
}

/// The fitting samples in f64 (one-input: sorted by x).
struct Data {
    x: Vec<f64>,
    x2: Vec<f64>,
    y: Vec<f64>,
    /// The same samples in f32, for the exact forward pass of candidate units.
    x32: Vec<f32>,
    x232: Vec<f32>,
    y32: Vec<f32>,
}

impl Data {
    fn len(&self) -> usize {
        self.x.len()
    }

    /// A deterministic subset of at most `max` samples: one-input samples sorted by x and taken
    /// at evenly spaced ranks (keeping the distribution's shape); two-input samples at evenly
    /// spaced indices after a seeded shuffle. Samples with a non-finite input or output are
    /// left out.
    fn from_target(target: &Target, max: usize, seed: u64) -> Data {
        let n = target.len();
        let mut idx: Vec<usize> = (0..n).collect();
        match target {
            Target::OneInput { samples, .. } => {
                idx.sort_by(|&a, &b| samples[a].total_cmp(&samples[b]).then(a.cmp(&b)));
            }
            Target::TwoInput { .. } => {
                let mut rng = Rng::new(seed ^ 0xA5A5);
                for i in (1..n).rev() {
                    idx.swap(i, rng.below(i + 1));
                }
            }
        }
        let m = n.min(max.max(1));
        let pick: Vec<usize> = if m == n {
            idx
        } else {
            (0..m).map(|i| idx[((2 * i + 1) * n) / (2 * m)]).collect()
        };
        let mut d = Data {
            x: vec![],
            x2: vec![],
            y: vec![],
            x32: vec![],
            x232: vec![],
            y32: vec![],
        };
        for &i in &pick {
            let (x, x2, y) = target.sample(i);
            if !(x.is_finite() && x2.is_finite() && y.is_finite()) {
                continue;
            }
            d.x.push(x as f64);
            d.x2.push(x2 as f64);
            d.y.push(y as f64);
            d.x32.push(x);
            d.x232.push(x2);
            d.y32.push(y);
        }
        d
    }

    /// Exact MSE of a unit on these samples (f32 forward pass, f64 accumulation).
    fn mse32(&self, u: &AmosUnit) -> f64 {
        let mut acc = 0.0f64;
        for n in 0..self.len() {
            let e = (u.eval(self.x32[n], self.x232[n]).1 - self.y32[n]) as f64;
            acc += e * e;
        }
        acc / self.len().max(1) as f64
    }
}

/// Current spikes, outputs and potentials of a net on the data.
struct State {
    k: usize,
    z: Vec<u64>,
    y: Vec<f64>,
    /// Potentials v_i = c_i·x − H_i − T_i, K per sample.
    v: Vec<f64>,
}

impl State {
    fn new(net: &Net, data: &Data) -> State {
        let (n, k) = (data.len(), net.k);
        let mut st = State {
            k,
            z: vec![0; n],
            y: vec![0.0; n],
            v: vec![0.0; n * k],
        };
        for s in 0..n {
            st.rerun(net, data, s, 0);
        }
        st
    }
    /// Re-runs sample s from neuron `from` on (spikes below `from` kept).
    fn rerun(&mut self, net: &Net, data: &Data, s: usize, from: usize) {
        let (x, x2) = (data.x[s], data.x2[s]);
        let mut z = self.z[s] & mask(from);
        let v = &mut self.v[s * self.k..(s + 1) * self.k];
        for i in from..net.k {
            v[i] = net.drive(i, x, x2) - net.inhibition(i, z) - net.t[i];
            if v[i] >= 0.0 {
                z |= 1 << i;
            }
        }
        self.z[s] = z;
        self.y[s] = net.decode(z);
    }
    fn redecode(&mut self, net: &Net) {
        for (y, &z) in self.y.iter_mut().zip(&self.z) {
            *y = net.decode(z);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output weights by least squares.

/// Sets d and o to the least-squares solution for the spike patterns z (y is linear in d and o
/// once the spikes are fixed). A small ridge keeps d of neurons that never fire (or fire
/// exactly together) at sensible values.
fn solve_output(net: &mut Net, z: &[u64], y: &[f64]) {
    let k = net.k;
    let m = k + 1;
    let mut g = vec![0.0f64; m * m];
    let mut b = vec![0.0f64; m];
    // Consecutive samples often share a pattern (one-input data is sorted): accumulate runs.
    let mut n = 0;
    let mut bits = [0usize; MAX_NEURONS];
    while n < z.len() {
        let p = z[n];
        let mut cnt = 0.0;
        let mut sy = 0.0;
        while n < z.len() && z[n] == p {
            cnt += 1.0;
            sy += y[n];
            n += 1;
        }
        let mut nb = 0;
        let mut s = p;
        while s != 0 {
            bits[nb] = s.trailing_zeros() as usize;
            nb += 1;
            s &= s - 1;
        }
        g[k * m + k] += cnt;
        b[k] += sy;
        for a in 0..nb {
            let ia = bits[a];
            b[ia] += sy;
            g[ia * m + k] += cnt;
            for &ib in &bits[a..nb] {
                g[ia * m + ib] += cnt;
            }
        }
    }
    for i in 0..m {
        for j in 0..i {
            g[i * m + j] = g[j * m + i];
        }
    }
    let ridge = 1e-7 * z.len().max(1) as f64;
    for i in 0..k {
        g[i * m + i] += ridge;
    }
    if let Some(sol) = cholesky_solve(&mut g, &b, m)
        && sol.iter().all(|v| v.is_finite())
    {
        net.d.copy_from_slice(&sol[..k]);
        net.o = sol[k];
    }
}

/// Solves A·x = b for symmetric positive definite A (m × m, overwritten).
fn cholesky_solve(a: &mut [f64], b: &[f64], m: usize) -> Option<Vec<f64>> {
    for j in 0..m {
        let mut s = a[j * m + j];
        for p in 0..j {
            s -= a[j * m + p] * a[j * m + p];
        }
        if s <= 0.0 {
            return None;
        }
        let l = s.sqrt();
        a[j * m + j] = l;
        for i in j + 1..m {
            let mut s = a[i * m + j];
            for p in 0..j {
                s -= a[i * m + p] * a[j * m + p];
            }
            a[i * m + j] = s / l;
        }
    }
    let mut x = b.to_vec();
    for i in 0..m {
        let mut s = x[i];
        for p in 0..i {
            s -= a[i * m + p] * x[p];
        }
        x[i] = s / a[i * m + i];
    }
    for i in (0..m).rev() {
        let mut s = x[i];
        for p in i + 1..m {
            s -= a[p * m + i] * x[p];
        }
        x[i] = s / a[i * m + i];
    }
    Some(x)
}

/// Least squares for a small dense system (rows × cols, row-major) by the normal equations.
fn lstsq(rows: &[f64], rhs: &[f64], cols: usize) -> Vec<f64> {
    let mut g = vec![0.0; cols * cols];
    let mut b = vec![0.0; cols];
    for (r, &y) in rows.chunks(cols).zip(rhs) {
        for i in 0..cols {
            b[i] += r[i] * y;
            for j in 0..cols {
                g[i * cols + j] += r[i] * r[j];
            }
        }
    }
    for i in 0..cols {
        g[i * cols + i] += 1e-9 * (1.0 + g[i * cols + i]);
    }
    cholesky_solve(&mut g, &b, cols).unwrap_or_else(|| vec![0.0; cols])
}

// ---------------------------------------------------------------------------------------------
// Exact coordinate descent.

/// One sample's entry in a threshold search: the parameter p makes it fire iff `key ≥ p`
/// (`up`) or iff `p ≥ key` (`!up`); its squared error is `e1` when it fires and `e0` when not.
#[derive(Clone, Copy)]
struct Item {
    key: f64,
    e1: f64,
    e0: f64,
    up: bool,
}

/// Exact line search over one parameter, items sorted by key: the value minimising the summed
/// error, placed halfway between neighbouring keys (or a margin beyond the extreme ones).
/// Returns `None` unless it beats the current value by more than rounding noise.
fn best_split(items: &[Item], current: f64) -> Option<f64> {
    let (first, last) = (items.first()?, items.last()?);
    let (lo, hi) = (first.key, last.key);
    let margin = 0.05 * (hi - lo) + 1e-6 * (1.0 + lo.abs().max(hi.abs()));
    // p below every key.
    let mut loss = 0.0;
    let mut scale = 0.0;
    for it in items {
        loss += if it.up { it.e1 } else { it.e0 };
        scale += it.e1.max(it.e0);
    }
    let mut best = (loss, lo - margin);
    let mut cur_loss = if current < lo { loss } else { f64::INFINITY };
    let mut i = 0;
    while i < items.len() {
        let key = items[i].key;
        while i < items.len() && items[i].key == key {
            let it = &items[i];
            loss += if it.up { it.e0 - it.e1 } else { it.e1 - it.e0 };
            i += 1;
        }
        let next = items.get(i).map_or(f64::INFINITY, |it| it.key);
        if current > key && current < next {
            cur_loss = loss;
        }
        if loss < best.0 {
            best = (
                loss,
                if next.is_finite() {
                    0.5 * (key + next)
                } else {
                    hi + margin
                },
            );
        }
    }
    (best.0 < cur_loss - 1e-12 * scale).then_some(best.1)
}

/// Buffers of a coordinate sweep, reused between neurons and sweeps.
#[derive(Default)]
struct Scratch {
    e1: Vec<f64>,
    e0: Vec<f64>,
    key: Vec<f64>,
    order: Vec<u32>,
    pairs: Vec<(f64, u32)>,
    buckets: Vec<Vec<u32>>,
    items: Vec<Item>,
}

/// Sample indices in increasing order of key (ties by index, so the order is unique).
fn sort_order(key: &[f64], order: &mut Vec<u32>, pairs: &mut Vec<(f64, u32)>) {
    pairs.clear();
    pairs.extend(key.iter().enumerate().map(|(s, &k)| (k, s as u32)));
    // Stable (ties keep index order) and fast on the long sorted runs of one-input data.
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    order.clear();
    order.extend(pairs.iter().map(|p| p.1));
}

/// Coordinate descent on the exact loss: for each neuron in turn, every sample's error with
/// the neuron firing and with it silent is computed once (the rest of the unit held fixed,
/// later neurons re-run); then its threshold, each inhibition weight and its input weights are
/// set in turn to their exact optimum (an exact line search over a piecewise-constant
/// function: sort the samples by where they switch); then d and o are re-solved. Every step
/// lowers the exact loss or leaves it. Returns whether anything changed.
fn coordinate_sweep(net: &mut Net, data: &Data, st: &mut State, sc: &mut Scratch) -> bool {
    let n = data.len();
    let k = net.k;
    let mut changed = false;
    sc.e1.resize(n, 0.0);
    sc.e0.resize(n, 0.0);
    sc.key.resize(n, 0.0);
    for i in 0..k {
        let mut flips = [(0usize, 0.0f64); MAX_NEURONS];
        for s in 0..n {
            let z = st.z[s];
            let bit = z >> i & 1 == 1;
            // The later neurons with neuron i flipped: their cached potentials, corrected by the
            // inhibition of each neuron that flips (+h when it falls silent, −h when it fires).
            let v = &st.v[s * k..(s + 1) * k];
            let mut az = z ^ (1 << i);
            flips[0] = (i, if bit { 1.0 } else { -1.0 });
            let mut nf = 1;
            for q in i + 1..k {
                let hq = &net.h[row(q)..];
                let mut vq = v[q];
                for &(j, sign) in &flips[..nf] {
                    vq += sign * hq[j];
                }
                let was = az >> q & 1 == 1;
                if (vq >= 0.0) != was {
                    az ^= 1 << q;
                    flips[nf] = (q, if was { 1.0 } else { -1.0 });
                    nf += 1;
                }
            }
            let ay = net.decode(az);
            let (ec, ea) = (st.y[s] - data.y[s], ay - data.y[s]);
            let (ec, ea) = (ec * ec, ea * ea);
            (sc.e1[s], sc.e0[s]) = if bit { (ec, ea) } else { (ea, ec) };
        }
        // Potential before the threshold; the neuron fires iff key ≥ T.
        let fill_keys = |net: &Net, key: &mut [f64]| {
            for s in 0..n {
                key[s] = net.drive(i, data.x[s], data.x2[s]) - net.inhibition(i, st.z[s]);
            }
        };
        fill_keys(net, &mut sc.key);
        sort_order(&sc.key, &mut sc.order, &mut sc.pairs);
        let mut touched = false;
        for _round in 0..2 {
            let mut any = false;
            sc.items.clear();
            sc.items.extend(sc.order.iter().map(|&s| {
                let s = s as usize;
                Item {
                    key: sc.key[s],
                    e1: sc.e1[s],
                    e0: sc.e0[s],
                    up: true,
                }
            }));
            if let Some(p) = best_split(&sc.items, net.t[i]) {
                net.t[i] = p;
                any = true;
            }
            // Inhibition weights, on the samples where neuron j fired: fires iff
            // key + h_ij − T ≥ h_ij, in the same order as the keys.
            let mut fresh = false;
            for j in 0..i {
                if !fresh {
                    // The samples in key order, split by which earlier neurons fired.
                    sc.buckets.resize_with(k, Vec::new);
                    sc.buckets[..i].iter_mut().for_each(Vec::clear);
                    for &s in &sc.order {
                        let mut f = st.z[s as usize] & mask(i);
                        while f != 0 {
                            sc.buckets[f.trailing_zeros() as usize].push(s);
                            f &= f - 1;
                        }
                    }
                    fresh = true;
                }
                let hij = net.h[row(i) + j];
                let shift = hij - net.t[i];
                sc.items.clear();
                sc.items.extend(sc.buckets[j].iter().map(|&s| {
                    let s = s as usize;
                    Item {
                        key: sc.key[s] + shift,
                        e1: sc.e1[s],
                        e0: sc.e0[s],
                        up: true,
                    }
                }));
                if let Some(p) = best_split(&sc.items, hij) {
                    net.h[row(i) + j] = p;
                    any = true;
                    for &s in &sc.buckets[j] {
                        sc.key[s as usize] -= p - hij;
                    }
                    sort_order(&sc.key, &mut sc.order, &mut sc.pairs);
                    fresh = false;
                }
            }
            // Input weights: with rest = the potential without w·x_in, fires iff w·x_in ≥ −rest.
            for second in [false, net.two] {
                let w = if second { net.c2[i] } else { net.c[i] };
                sc.items.clear();
                for s in 0..n {
                    let xin = if second { data.x2[s] } else { data.x[s] };
                    if xin != 0.0 {
                        let rest = sc.key[s] - w * xin - net.t[i];
                        sc.items.push(Item {
                            key: -rest / xin,
                            e1: sc.e1[s],
                            e0: sc.e0[s],
                            up: xin < 0.0,
                        });
                    }
                }
                sc.items.sort_by(|a, b| a.key.total_cmp(&b.key));
                if let Some(p) = best_split(&sc.items, w) {
                    if second {
                        net.c2[i] = p;
                    } else {
                        net.c[i] = p;
                    }
                    any = true;
                    fill_keys(net, &mut sc.key);
                    sort_order(&sc.key, &mut sc.order, &mut sc.pairs);
                }
                if !net.two {
                    break;
                }
            }
            if !any {
                break;
            }
            touched = true;
        }
        if touched {
            changed = true;
            for s in 0..n {
                let vi = sc.key[s] - net.t[i];
                st.v[s * k + i] = vi;
                if (vi >= 0.0) != (st.z[s] >> i & 1 == 1) {
                    st.z[s] ^= 1 << i;
                    st.rerun(net, data, s, i + 1);
                }
            }
            solve_output(net, &st.z, &data.y);
            st.redecode(net);
        }
    }
    changed
}

// ---------------------------------------------------------------------------------------------
// Gradient descent with a pseudo-derivative.

/// Tracks the best unit seen, judged by the exact f32 forward pass ([`AmosUnit::eval`]); it
/// keeps a copy of the parameters, never a view of the live ones.
#[derive(Clone)]
struct Best {
    net: Net,
    unit: AmosUnit,
    mse: f64,
}

impl Best {
    fn new(net: &Net, data: &Data) -> Best {
        let mut b = Best {
            net: net.clone(),
            unit: net.to_unit(),
            mse: f64::INFINITY,
        };
        b.offer(net, data);
        b
    }
    /// Keeps `net` if its f32 unit is valid and has a lower exact MSE. Returns whether it did.
    fn offer(&mut self, net: &Net, data: &Data) -> bool {
        let unit = net.to_unit();
        if unit.validate().is_err() {
            return false;
        }
        let mse = data.mse32(&unit);
        let better = mse < self.mse;
        if better {
            *self = Best {
                net: net.clone(),
                unit,
                mse,
            };
        }
        better
    }
}

/// Per-neuron scale of the potential. One input: the input distance between the neuron's
/// switching points along the samples (sorted by x), times |c|. Two inputs: twice the median
/// distance of the potential from the threshold.
fn neuron_spacing(net: &Net, data: &Data, st: &State) -> Vec<f64> {
    let n = data.len();
    let k = net.k;
    let (lo, hi) = data
        .x
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let sx = (hi - lo).max(1e-9);
    let mut dist = vec![0.0; n];
    (0..k)
        .map(|i| {
            let scale = if net.two {
                dist.iter_mut()
                    .enumerate()
                    .for_each(|(s, d)| *d = st.v[s * k + i].abs());
                2.0 * *dist.select_nth_unstable_by(n / 2, f64::total_cmp).1
            } else {
                let flips = (1..n)
                    .filter(|&s| (st.z[s] ^ st.z[s - 1]) >> i & 1 == 1)
                    .count();
                net.c[i].abs() * sx / flips.max(1) as f64
            };
            scale.max(1e-9 * (1.0 + net.c[i].abs() * sx))
        })
        .collect()
}

/// Gradient descent on the squared error, forward pass exact, the derivative of Θ replaced by
/// a triangle of half-width w_i around the threshold: w_i is `w0` (shrinking geometrically to
/// `w1`) times the neuron's switching distance, so each neuron sees the samples near its own
/// switching points. Adam on T and h, step sizes in units of the same distance, cosine decay
/// from `lr`; d and o re-solved by least squares at every step; every step's exact loss is
/// offered to `best`.
fn descend(net: &mut Net, data: &Data, steps: usize, best: &mut Best, w0: f64, w1: f64, lr: f64) {
    let n = data.len();
    let k = net.k;
    let np = k + row(k);
    let mut st = State::new(net, data);
    let spacing = neuron_spacing(net, data, &st);
    let owner: Vec<usize> = (0..np)
        .map(|p| {
            if p < k {
                p
            } else {
                (1..k).find(|&i| row(i + 1) > p - k).unwrap_or(k - 1)
            }
        })
        .collect();
    let (mut m1, mut m2, mut grad) = (vec![0.0; np], vec![0.0; np], vec![0.0; np]);
    let (b1, b2) = (0.9f64, 0.999f64);
    let (mut v, mut gv) = (vec![0.0; k], vec![0.0; k]);
    for step in 0..steps {
        let frac = step as f64 / steps as f64;
        let wmul = w0 * libm::pow(w1 / w0, frac);
        let rate = lr * 0.5 * (1.0 + libm::cos(std::f64::consts::PI * frac));
        grad.iter_mut().for_each(|g| *g = 0.0);
        for s in 0..n {
            let (x, x2) = (data.x[s], data.x2[s]);
            let mut z = 0u64;
            for i in 0..k {
                v[i] = net.drive(i, x, x2) - net.inhibition(i, z) - net.t[i];
                if v[i] >= 0.0 {
                    z |= 1 << i;
                }
            }
            st.z[s] = z;
            let r = 2.0 * (net.decode(z) - data.y[s]) / n as f64;
            // Backwards through the neurons: ∂L/∂z_i = r·d_i − Σ_{q>i} ∂L/∂v_q · h_qi.
            for i in (0..k).rev() {
                let mut g = r * net.d[i];
                for q in i + 1..k {
                    g -= gv[q] * net.h[row(q) + i];
                }
                let w = wmul * spacing[i];
                let a = v[i].abs();
                gv[i] = if a < w { g * (1.0 - a / w) / w } else { 0.0 };
                if gv[i] != 0.0 {
                    grad[i] -= gv[i];
                    let mut f = z & mask(i);
                    while f != 0 {
                        grad[k + row(i) + f.trailing_zeros() as usize] -= gv[i];
                        f &= f - 1;
                    }
                }
            }
        }
        solve_output(net, &st.z, &data.y);
        best.offer(net, data);
        let t = (step + 1) as f64;
        let (c1, c2) = (1.0 - libm::pow(b1, t), 1.0 - libm::pow(b2, t));
        for p in 0..np {
            m1[p] = b1 * m1[p] + (1.0 - b1) * grad[p];
            m2[p] = b2 * m2[p] + (1.0 - b2) * grad[p] * grad[p];
            let upd = rate * spacing[owner[p]] * (m1[p] / c1) / ((m2[p] / c2).sqrt() + 1e-300);
            if p < k {
                net.t[p] -= upd;
            } else {
                net.h[p - k] -= upd;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Starting points.

/// The target on a dense grid over the samples' range (one-input).
struct Curve {
    xs: Vec<f64>,
    ys: Vec<f64>,
}

impl Curve {
    fn new(f: &dyn Fn(f32) -> f32, lo: f64, hi: f64) -> Curve {
        let g = 4096;
        let xs: Vec<f64> = (0..=g)
            .map(|i| lo + (hi - lo) * i as f64 / g as f64)
            .collect();
        let ys = xs.iter().map(|&x| f(x as f32) as f64).collect();
        Curve { xs, ys }
    }
    /// Index of the lowest point (the leftmost of equals).
    fn argmin(&self) -> usize {
        let mut b = 0;
        for i in 1..self.ys.len() {
            if self.ys[i] < self.ys[b] {
                b = i;
            }
        }
        b
    }
    /// Moving from grid index `from` in direction `dir` (±1), the first x where the running
    /// maximum of f reaches y (linearly interpolated); the end of the grid if never.
    fn reach(&self, from: usize, dir: isize, y: f64) -> f64 {
        let mut i = from as isize;
        let mut prev = self.ys[from];
        if prev >= y {
            return self.xs[from];
        }
        loop {
            let next = i + dir;
            if next < 0 || next as usize >= self.ys.len() {
                return self.xs[i as usize];
            }
            let yn = self.ys[next as usize];
            if yn >= y {
                let fr = ((y - prev) / (yn - prev)).clamp(0.0, 1.0);
                let (a, b) = (self.xs[i as usize], self.xs[next as usize]);
                return a + fr * (b - a);
            }
            prev = prev.max(yn);
            i = next;
        }
    }
}

/// Output-space code for one monotone piece of the target, appended to `net` from neuron
/// `first`: `nc` coarse neurons (a thermometer code: each fires past one of nc equal output
/// steps, no inhibition among them) and `nf` fine neurons, a binary code of the output inside
/// each coarse segment; each fine neuron's threshold per segment and per pattern of the
/// earlier fine neurons is the input where f reaches that output level, fitted by least squares
/// with T, the inhibition from the coarse neurons (a free offset per segment) and the
/// inhibition from the earlier fine neurons.
fn piece_code(
    net: &mut Net,
    curve: &Curve,
    from: usize,
    dir: isize,
    first: usize,
    nc: usize,
    nf: usize,
) {
    let y0 = curve.ys[from];
    let y1 = if dir > 0 {
        curve.ys[from..]
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
    } else {
        curve.ys[..=from]
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let s = dir as f64; // c of every neuron of the piece; potential = s·x.
    let seg = (y1 - y0) / (nc + 1) as f64;
    let at = |y: f64| s * curve.reach(from, dir, y);
    for q in 0..nc {
        let i = first + q;
        net.c[i] = s;
        net.t[i] = at(y0 + seg * (q + 1) as f64);
    }
    for j in 0..nf {
        let i = first + nc + j;
        net.c[i] = s;
        let cols = 1 + nc + j;
        let mut rows = vec![];
        let mut rhs = vec![];
        // The patterns of the earlier fine neurons: all of them, or 256 spread evenly over them.
        let patterns = 1u64 << j.min(63);
        let take = patterns.min(256);
        for q in 0..=nc {
            for t in 0..take {
                let b = if take == patterns {
                    t
                } else {
                    ((t as u128 * (patterns as u128 - 1)) / (take as u128 - 1)) as u64
                };
                let mut lvl = y0 + seg * q as f64;
                let mut r = vec![0.0; cols];
                r[0] = 1.0;
                for p in 0..q {
                    r[1 + p] = 1.0;
                }
                for jj in 0..j {
                    // Bit jj of the fine prefix, most significant first.
                    if b >> (j - 1 - jj) & 1 == 1 {
                        lvl += seg * half_pow(jj + 1);
                        r[1 + nc + jj] = 1.0;
                    }
                }
                lvl += seg * half_pow(j + 1);
                rows.extend_from_slice(&r);
                rhs.push(at(lvl));
            }
        }
        let sol = lstsq(&rows, &rhs, cols);
        net.t[i] = sol[0];
        for p in 0..nc {
            net.h[row(i) + first + p] = sol[1 + p];
        }
        for jj in 0..j {
            net.h[row(i) + first + nc + jj] = sol[1 + nc + jj];
        }
    }
}

/// One-input start. The samples' range splits at the minimum of f into a falling part (left
/// of it) and a rising part (right of it). The part with the smaller output span (swish's
/// negative dip, say) gets `nm` neurons, a thermometer code; the other gets the rest, `nc`
/// coarse and the others fine (see [`piece_code`]). Returns the start and the (nm, nc) used.
fn init_one(k: usize, curve: &Curve, nm: usize, nc: usize) -> (Net, (usize, usize)) {
    let m = curve.argmin();
    let top = |ys: &[f64]| ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - curve.ys[m];
    let (left, right) = (top(&curve.ys[..=m]), top(&curve.ys[m..]));
    let (minor, major) = if left <= right { (-1, 1) } else { (1, -1) };
    let nm = if left.min(right) > 0.0 {
        nm.min(k.saturating_sub(2))
    } else {
        0
    };
    let nc = nc.min(k - nm);
    let mut net = Net::zeros(k, false);
    if nm > 0 {
        piece_code(&mut net, curve, m, minor, 0, nm, 0);
    }
    piece_code(&mut net, curve, m, major, nm, nc, k - nm - nc);
    (net, (nm, nc))
}

/// Two-input start for a product: a rounding binary code of one input a (its "bits"), and
/// for each bit a binary code of the other input b that runs only while that bit has fired
/// (excited through a negative inhibition weight −G that exactly offsets a threshold raised by
/// G), so the unit holds the partial products bit·b; least squares on d then weighs them. The
/// bits per code are allotted greedily by the error each neuron removes, assuming uniform
/// inputs: a-quantisation error (Δa)²/12·E[b²], the code under bit i w_i²·(Δb)²/12·P(bit).
/// When a's range does not start at 0, an ungated code of b carries a_lo·b.
fn init_two(data: &Data, k: usize, swap: bool) -> (Net, f64) {
    let (xa, xb) = if swap {
        (&data.x2, &data.x)
    } else {
        (&data.x, &data.x2)
    };
    let range = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (lo, (hi - lo).max(1e-9))
    };
    let ((alo, ra), (blo, rb)) = (range(xa), range(xb));
    let eb2 = xb.iter().map(|v| v * v).sum::<f64>() / xb.len().max(1) as f64;
    let sq = |v: f64| v * v;
    let e_a = |bits: usize| sq(ra * half_pow(bits)) / 12.0 * eb2;
    let e_sub = |a: usize, bits: usize| 0.5 * sq(ra * half_pow(a + 1) * rb * half_pow(bits)) / 12.0;
    let e_u = |bits: usize| sq(alo * rb * half_pow(bits)) / 12.0;
    let mut na = 1;
    let mut sub = vec![0usize];
    let mut nu = 0;
    let ungated = alo.abs() > 1e-6 * ra;
    while na + sub.iter().sum::<usize>() + nu < k {
        let mut best = (e_a(na) - e_a(na + 1) - e_sub(na, 0), usize::MAX);
        for (a, &b) in sub.iter().enumerate() {
            let g = e_sub(a, b) - e_sub(a, b + 1);
            if g > best.0 {
                best = (g, a);
            }
        }
        if ungated && e_u(nu) - e_u(nu + 1) > best.0 {
            nu += 1;
        } else if best.1 == usize::MAX {
            na += 1;
            sub.push(0);
        } else {
            sub[best.1] += 1;
        }
    }
    let predicted = e_a(na)
        + sub
            .iter()
            .enumerate()
            .map(|(a, &b)| e_sub(a, b))
            .sum::<f64>()
        + if ungated { e_u(nu) } else { 0.0 };
    let mut net = Net::zeros(k, true);
    // Input weights: (weight on a, weight on b) into (c, c2).
    let set_c = |net: &mut Net, i: usize, wa: f64, wb: f64| {
        (net.c[i], net.c2[i]) = if swap { (wb, wa) } else { (wa, wb) };
    };
    let lvl = |r: f64, b: usize| r * half_pow(b + 1);
    let big = 2.0 * rb + 1.0;
    for a in 0..na {
        set_c(&mut net, a, 1.0, 0.0);
        net.t[a] = alo + lvl(ra, a) - lvl(ra, na);
        for p in 0..a {
            net.h[row(a) + p] = lvl(ra, p);
        }
    }
    let mut i = na;
    for (a, &nb) in sub
        .iter()
        .enumerate()
        .map(|(a, b)| (Some(a), b))
        .chain(std::iter::once((None, &nu)))
    {
        let first = i;
        for b in 0..nb {
            set_c(&mut net, i, 0.0, 1.0);
            net.t[i] = blo + lvl(rb, b) - lvl(rb, nb);
            if let Some(a) = a {
                net.t[i] += big;
                net.h[row(i) + a] = -big;
            }
            for p in 0..b {
                net.h[row(i) + first + p] = lvl(rb, p);
            }
            i += 1;
        }
    }
    (net, predicted)
}

// ---------------------------------------------------------------------------------------------
// The fit.

/// Fits a unit of `cfg.k` neurons to the target. Deterministic for a given target and
/// configuration, whatever the number of threads (the starts and hopping chains run in
/// parallel, each on its own seeded generator and budget; no hashing, no clocks).
pub fn fit(target: &Target, cfg: &FitConfig) -> Fitted {
    assert!(
        (1..=MAX_NEURONS).contains(&cfg.k),
        "K = {} is not in 1..={MAX_NEURONS}",
        cfg.k
    );
    let k = cfg.k;
    let two = target.is_two_input();
    let data = Data::from_target(target, cfg.max_fit_samples, cfg.seed);
    if data.len() == 0 {
        let unit = AmosUnit::zeros(k, two);
        return Fitted {
            mse: mse(&unit, target),
            unit,
        };
    }
    let best = match target {
        Target::OneInput { f, .. } => {
            let curve = Curve::new(*f, data.x[0], data.x[data.len() - 1]);
            search(&data, one_input_starts(k, &curve), cfg, true)
        }
        Target::TwoInput { .. } => {
            // The orientation with the clearly lower predicted error (else x carries the bits).
            let (a, b) = (init_two(&data, k, false), init_two(&data, k, true));
            let start = if b.1 < 0.9 * a.1 { b.0 } else { a.0 };
            search(&data, vec![start], cfg, false)
        }
    };
    // Last, d and o once more by least squares, on the exact f32 spikes of all samples.
    let mut unit = best.unit;
    let mut err = mse(&unit, target);
    let mut net = best.net;
    let (z, y): (Vec<u64>, Vec<f64>) = (0..target.len())
        .map(|n| {
            let (x, x2, y) = target.sample(n);
            (unit.spikes(x, x2), y as f64)
        })
        .filter(|&(_, y)| y.is_finite())
        .unzip();
    solve_output(&mut net, &z, &y);
    let cand = net.to_unit();
    if cand.validate().is_ok() {
        let e = mse(&cand, target);
        if e < err {
            (unit, err) = (cand, e);
        }
    }
    Fitted { unit, mse: err }
}

/// Sweeps of coordinate descent from a start, at most.
const SWEEPS_PER_DESCENT: usize = 30;
/// Sweeps of coordinate descent after a perturbation, at most.
const SWEEPS_AFTER_HOP: usize = 8;
/// Steps of a gradient-descent burst; 8 steps count as one sweep of the budget.
const GD_STEPS: usize = 30;

/// Coordinate sweeps until nothing changes or `limit` sweeps; returns the sweeps run.
fn descend_cd(net: &mut Net, data: &Data, limit: usize, sc: &mut Scratch) -> usize {
    let mut st = State::new(net, data);
    solve_output(net, &st.z, &data.y);
    st.redecode(net);
    for n in 1..=limit {
        if !coordinate_sweep(net, data, &mut st, sc) {
            return n;
        }
    }
    limit
}

/// One chain of basin hopping: its best unit and its own generator.
struct Chain {
    best: Best,
    rng: Rng,
    round: usize,
}

impl Chain {
    /// Hops until `budget` sweeps are spent: perturb the best unit, descend, keep the result
    /// if its exact MSE is lower. The perturbations take turns: a kick to one neuron's
    /// threshold and inhibition (up to its switching distance), one neuron moved to switch
    /// once at a random sample, and a burst of pseudo-derivative gradient descent.
    fn hop(&mut self, data: &Data, budget: usize) -> usize {
        let mut sc = Scratch::default();
        let mut used = 0;
        while used < budget {
            let mut net = self.best.net.clone();
            let k = net.k;
            let spacing = neuron_spacing(&net, data, &State::new(&net, data));
            let rng = &mut self.rng;
            match self.round % 3 {
                0 => {
                    let i = rng.below(k);
                    net.t[i] += spacing[i] * (2.0 * rng.uniform() - 1.0);
                    for j in 0..i {
                        net.h[row(i) + j] += spacing[i] * (2.0 * rng.uniform() - 1.0);
                    }
                }
                1 => {
                    let i = rng.below(k);
                    let s = rng.below(data.len());
                    let w = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
                    let second = net.two && rng.uniform() < 0.5;
                    (net.c[i], net.c2[i]) = if second { (0.0, w) } else { (w, 0.0) };
                    net.t[i] = w * if second { data.x2[s] } else { data.x[s] };
                    net.h[row(i)..row(i) + i].iter_mut().for_each(|h| *h = 0.0);
                }
                _ => {
                    let mut burst = self.best.clone();
                    descend(&mut net, data, GD_STEPS, &mut burst, 0.5, 0.2, 0.01);
                    used += GD_STEPS.div_ceil(8);
                    if burst.mse < self.best.mse {
                        net = burst.net;
                    }
                }
            }
            self.round += 1;
            used += descend_cd(&mut net, data, SWEEPS_AFTER_HOP, &mut sc);
            self.best.offer(&net, data);
        }
        used
    }
}

/// Descends from every start to a local optimum of the exact loss; then, if `hops`, improves
/// them by basin hopping under successive halving: the rest of the budget is spent in
/// ⌊log2(starts)⌋ + 1 stages, and after each stage the worse half of the chains is dropped.
fn search(data: &Data, starts: Vec<Net>, cfg: &FitConfig, hops: bool) -> Best {
    use rayon::prelude::*;
    let budget = cfg.steps.max(1);
    let limit = SWEEPS_PER_DESCENT.min(budget);
    let (mut pool, spent): (Vec<Chain>, Vec<usize>) = starts
        .into_par_iter()
        .enumerate()
        .map(|(i, mut net)| {
            let used = descend_cd(&mut net, data, limit, &mut Scratch::default());
            let seed = cfg
                .seed
                .wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            (
                Chain {
                    best: Best::new(&net, data),
                    rng: Rng::new(seed),
                    round: 0,
                },
                used,
            )
        })
        .unzip();
    let mut used: usize = spent.iter().sum();
    if hops {
        let stages = (usize::BITS - pool.len().leading_zeros()) as usize;
        for stage in 0..stages {
            // Best first; a stable sort, so ties keep the order of the starts.
            pool.sort_by(|a, b| a.best.mse.total_cmp(&b.best.mse));
            if stage > 0 {
                pool.truncate(pool.len().div_ceil(2));
            }
            let share = budget.saturating_sub(used) / (stages - stage) / pool.len();
            if share > 0 {
                used += pool
                    .par_iter_mut()
                    .map(|c| c.hop(data, share))
                    .sum::<usize>();
            }
        }
    }
    pool.into_iter()
        .map(|c| c.best)
        .reduce(|a, b| if b.mse < a.mse { b } else { a })
        .unwrap()
}

/// The one-input starts: 0–3 neurons for the minor part and 1–2 coarse neurons for the major
/// part (see [`init_one`]), without duplicates.
fn one_input_starts(k: usize, curve: &Curve) -> Vec<Net> {
    let mut out = vec![];
    let mut seen = vec![];
    for nm in 0..=3 {
        for nc in 1..=2 {
            let (net, used) = init_one(k, curve, nm, nc);
            if !seen.contains(&used) {
                seen.push(used);
                out.push(net);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fits a one-input gate on n stratified samples of its default range, checks the unit's
    /// shape, and reports.
    fn fit_gate(gate: &str, k: usize, seed: u64) -> Fitted {
        let [lo, hi] = default_range(gate).unwrap();
        let f = gate_fn(gate).unwrap();
        let xs = uniform_samples(lo, hi, 4096, seed);
        let t = Target::OneInput {
            f: &f,
            samples: &xs,
        };
        let now = std::time::Instant::now();
        let r = fit(&t, &FitConfig::new(k, seed));
        let el = now.elapsed();
        assert_eq!(r.unit.validate(), Ok(()));
        assert_eq!(r.unit.k(), k);
        assert!(r.unit.c2.is_none());
        assert_eq!(r.unit.param_count(), 3 * k + k * (k - 1) / 2);
        assert_eq!(r.mse, mse(&r.unit, &t));
        // The error on fresh inputs of the same range stays close to the fitted one.
        let fresh = uniform_samples(lo, hi, 50_000, seed + 1000);
        let fresh_mse = mse(
            &r.unit,
            &Target::OneInput {
                f: &f,
                samples: &fresh,
            },
        );
        eprintln!(
            "{gate} K={k}: mse {:.3e} (fresh samples {fresh_mse:.3e}) in {el:.2?}",
            r.mse
        );
        assert!(
            fresh_mse < 1.5 * r.mse + 1e-6,
            "{gate}: {fresh_mse} on fresh samples"
        );
        r
    }

    #[test]
    fn fit_swish_k12_beats_the_published_k16_neuron() {
        let r = fit_gate("swish", 12, 1);
        assert_eq!(r.unit.param_count(), 102);
        assert!(r.mse <= 1.5e-3, "swish mse {}", r.mse);
    }

    #[test]
    fn fit_sigmoid_k8() {
        let r = fit_gate("sigmoid", 8, 1);
        assert_eq!(r.unit.param_count(), 52);
        assert!(r.mse <= 1e-4, "sigmoid mse {}", r.mse);
    }

    #[test]
    fn fit_other_gates() {
        for (gate, k, bound) in [
            ("tanh", 8, 4e-4),
            ("gelu", 12, 6e-4),
            ("hard_swish", 12, 1.5e-3),
            ("hard_sigmoid", 8, 5e-6),
            ("erf", 8, 3e-4),
        ] {
            let r = fit_gate(gate, k, 1);
            assert!(r.mse <= bound, "{gate} mse {}", r.mse);
        }
    }

    #[test]
    fn fit_two_input_multiplication_k40() {
        let [r0, r1] = [
            default_ranges("mul").unwrap()[0],
            default_ranges("mul").unwrap()[1],
        ];
        let xs = uniform_pairs(r0, r1, 4096, 1);
        let f = |a: f32, b: f32| a * b;
        let t = Target::TwoInput {
            f: &f,
            samples: &xs,
        };
        let now = std::time::Instant::now();
        let r = fit(&t, &FitConfig::new(40, 1));
        let el = now.elapsed();
        assert_eq!(r.unit.validate(), Ok(()));
        assert_eq!(r.unit.k(), 40);
        assert!(r.unit.c2.is_some());
        assert_eq!(r.unit.param_count(), 940);
        assert_eq!(r.mse, mse(&r.unit, &t));
        let fresh = uniform_pairs(r0, r1, 50_000, 99);
        let fresh_mse = mse(
            &r.unit,
            &Target::TwoInput {
                f: &f,
                samples: &fresh,
            },
        );
        eprintln!(
            "mul K=40: mse {:.3e} (fresh samples {fresh_mse:.3e}) in {el:.2?}",
            r.mse
        );
        assert!(
            r.mse <= 3e-4 && fresh_mse <= 3e-4,
            "mul mse {} / {fresh_mse}",
            r.mse
        );
    }

    #[test]
    fn fit_is_deterministic() {
        let f = gate_fn("swish").unwrap();
        let xs = uniform_samples(-8.0, 12.0, 1000, 7);
        let t = Target::OneInput {
            f: &f,
            samples: &xs,
        };
        let cfg = FitConfig {
            steps: 60,
            ..FitConfig::new(10, 7)
        };
        let threads = |n: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let a = threads(1).install(|| fit(&t, &cfg));
        let b = threads(3).install(|| fit(&t, &cfg));
        assert_eq!(a, b);
        let bits = |u: &AmosUnit| {
            [&u.c, &u.d, &u.t, &u.h].map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(bits(&a.unit), bits(&b.unit));
        let g = |a: f32, b: f32| a * b;
        let ps = uniform_pairs([0.0, 6.0], [0.0, 1.0], 500, 7);
        let t2 = Target::TwoInput {
            f: &g,
            samples: &ps,
        };
        let cfg2 = FitConfig {
            steps: 3,
            ..FitConfig::new(12, 7)
        };
        assert_eq!(fit(&t2, &cfg2), fit(&t2, &cfg2));
    }

    #[test]
    fn fit_small_and_large_k() {
        let f = gate_fn("sigmoid").unwrap();
        let xs = uniform_samples(-8.0, 8.0, 1000, 3);
        let t = Target::OneInput {
            f: &f,
            samples: &xs,
        };
        let mut last = f32::INFINITY;
        for k in [1, 2, 3, 5, 24] {
            let r = fit(
                &t,
                &FitConfig {
                    steps: 20,
                    ..FitConfig::new(k, 3)
                },
            );
            assert_eq!(r.unit.validate(), Ok(()));
            assert_eq!(r.unit.k(), k);
            assert!(r.mse < last, "K={k}: {} after {last}", r.mse);
            last = r.mse;
        }
        // A falling gate (the mirror image of the usual ones) is laid out from its right end.
        let g = |x: f32| -f(x);
        let r = fit(
            &Target::OneInput {
                f: &g,
                samples: &xs,
            },
            &FitConfig {
                steps: 20,
                ..FitConfig::new(6, 3)
            },
        );
        assert!(r.mse < 1e-3, "falling sigmoid: {}", r.mse);
    }

    #[test]
    fn fit_handles_degenerate_targets() {
        let f = |_: f32| 0.5f32;
        let xs = [1.0f32; 10];
        let r = fit(
            &Target::OneInput {
                f: &f,
                samples: &xs,
            },
            &FitConfig {
                steps: 5,
                ..FitConfig::new(3, 0)
            },
        );
        assert_eq!(r.unit.validate(), Ok(()));
        assert!(r.mse < 1e-10);
        let r = fit(
            &Target::OneInput {
                f: &f,
                samples: &[],
            },
            &FitConfig::new(4, 0),
        );
        assert_eq!((r.unit.k(), r.mse), (4, 0.0));
        let g = |x: f32| x;
        let xs = uniform_samples(-1.0, 1.0, 100, 0);
        let r = fit(
            &Target::OneInput {
                f: &g,
                samples: &xs,
            },
            &FitConfig {
                steps: 5,
                ..FitConfig::new(1, 0)
            },
        );
        assert_eq!(r.unit.validate(), Ok(()));
        assert!(r.mse < 0.1);
    }

    #[test]
    fn ranges_and_samples() {
        assert_eq!(default_range("swish"), Some([-8.0, 12.0]));
        assert_eq!(default_range("mul"), Some([0.0, 6.0]));
        assert_eq!(default_ranges("mul").unwrap().len(), 2);
        assert_eq!(default_range("relu"), None);
        for gate in [
            "sigmoid",
            "swish",
            "hard_swish",
            "hard_sigmoid",
            "tanh",
            "gelu",
            "erf",
        ] {
            assert!(
                gate_fn(gate).is_some() && default_range(gate).is_some(),
                "{gate}"
            );
        }
        let xs = uniform_samples(-2.0, 3.0, 1000, 5);
        assert_eq!(xs, uniform_samples(-2.0, 3.0, 1000, 5));
        assert!(xs.windows(2).all(|w| w[0] <= w[1]) && xs[0] >= -2.0 && xs[999] <= 3.0);
        assert!((xs[500] - 0.5).abs() < 0.01);
        let ps = uniform_pairs([0.0, 6.0], [0.0, 1.0], 1000, 5);
        assert_eq!(ps.len(), 1000);
        assert!(
            ps.iter()
                .all(|&(a, b)| (0.0..=6.0).contains(&a) && (0.0..=1.0).contains(&b))
        );
    }
}
