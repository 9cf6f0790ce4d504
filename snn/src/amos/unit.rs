//! The AMOS unit (ARCHITECTURE.md §3): K threshold neurons that each fire at most once.
//!
//! ```text
//! z_i = Θ(c_i·x + c′_i·x′ − H_i − T_i)      Θ(v) = 1 if v ≥ 0 else 0
//! H_i = Σ_{j<i} h_ij · z_j
//! y   = o + Σ_i d_i · z_i
//! ```
//!
//! Neuron i fires only after neurons 0..i−1 have had their turn, so a unit takes K time steps.
//! The floating-point evaluation order is part of the definition, so that every
//! implementation (this reference, fused engine kernels, workers) gives bit-identical spikes:
//! `v = c_i·x` (`+ c′_i·x′`), then `v −= h_ij` for each earlier neuron j that fired, in
//! increasing j, then `v −= T_i`; and `y = o + (d_0·z_0 + d_1·z_1 + …)` summed in increasing i
//! over the neurons that fired.

use super::intervals::Intervals;
use super::uniform::{self, Uniform};

/// Most neurons a unit may have: spikes are carried as the bits of a `u64`.
pub const MAX_NEURONS: usize = 64;

/// One AMOS unit's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AmosUnit {
    /// Input weights, one per neuron.
    pub c: Vec<f32>,
    /// Weights of the second input of a two-input gate (the multiplication), else `None`.
    pub c2: Option<Vec<f32>>,
    /// Output weights.
    pub d: Vec<f32>,
    /// Thresholds.
    pub t: Vec<f32>,
    /// Inhibition weights h_ij (j < i), row by row: `h[i·(i−1)/2 + j]`.
    pub h: Vec<f32>,
    /// Output offset (0 for units of the paper's form; identity units use it).
    pub o: f32,
}

impl AmosUnit {
    /// A unit of `k` neurons with every parameter zero.
    pub fn zeros(k: usize, two_inputs: bool) -> Self {
        AmosUnit {
            c: vec![0.0; k],
            c2: two_inputs.then(|| vec![0.0; k]),
            d: vec![0.0; k],
            t: vec![0.0; k],
            h: vec![0.0; k * k.saturating_sub(1) / 2],
            o: 0.0,
        }
    }

    /// Number of neurons K.
    pub fn k(&self) -> usize {
        self.c.len()
    }

    /// Whether the unit takes two inputs (x, x′).
    pub fn is_two_input(&self) -> bool {
        self.c2.is_some()
    }

    /// Parameter count as in the paper's Table 3: 3K + K(K−1)/2 for one input, 4K + K(K−1)/2
    /// for two; the offset o is not counted.
    pub fn param_count(&self) -> usize {
        let k = self.k();
        let per_neuron = if self.is_two_input() { 4 } else { 3 };
        per_neuron * k + k * k.saturating_sub(1) / 2
    }

    /// h_ij for j < i.
    #[inline]
    pub fn h(&self, i: usize, j: usize) -> f32 {
        self.h[i * (i - 1) / 2 + j]
    }

    /// Checks sizes and that every parameter is finite.
    pub fn validate(&self) -> Result<(), String> {
        let k = self.k();
        if k == 0 || k > MAX_NEURONS {
            return Err(format!("K = {k}; a unit has 1 to {MAX_NEURONS} neurons"));
        }
        let lens_ok = self.d.len() == k
            && self.t.len() == k
            && self.h.len() == k * (k - 1) / 2
            && self.c2.as_ref().is_none_or(|c2| c2.len() == k);
        if !lens_ok {
            return Err(format!("parameter lengths do not fit K = {k}"));
        }
        let all = self
            .c
            .iter()
            .chain(self.c2.iter().flatten())
            .chain(&self.d)
            .chain(&self.t)
            .chain(&self.h);
        if !all.chain(std::iter::once(&self.o)).all(|v| v.is_finite()) {
            return Err("non-finite parameter".into());
        }
        Ok(())
    }

    /// The spikes for input x (and x′ of a two-input unit): bit i is z_i.
    #[inline]
    pub fn spikes(&self, x: f32, x2: f32) -> u64 {
        let mut z = 0u64;
        let mut row = 0;
        for i in 0..self.c.len() {
            let mut v = self.c[i] * x;
            if let Some(c2) = &self.c2 {
                v += c2[i] * x2;
            }
            let mut fired = z;
            while fired != 0 {
                let j = fired.trailing_zeros() as usize;
                v -= self.h[row + j];
                fired &= fired - 1;
            }
            v -= self.t[i];
            if v >= 0.0 {
                z |= 1 << i;
            }
            row += i;
        }
        z
    }

    /// The output y for a spike pattern.
    #[inline]
    pub fn decode(&self, spikes: u64) -> f32 {
        let mut acc = 0.0f32;
        let mut s = spikes;
        while s != 0 {
            let i = s.trailing_zeros() as usize;
            acc += self.d[i];
            s &= s - 1;
        }
        self.o + acc
    }

    /// Spikes and output for one input.
    #[inline]
    pub fn eval(&self, x: f32, x2: f32) -> (u64, f32) {
        let z = self.spikes(x, x2);
        (z, self.decode(z))
    }
}

/// A unit prepared for evaluating many inputs, with a fast path for units whose inhibition
/// does not depend on the receiving neuron (h_ij = h_j, and one input weight c for all
/// neurons), as the closed forms are: their potential is one running residual
/// `r = c·x − Σ h_j` over the neurons fired so far, so a unit costs O(K) instead of O(K²).
/// The floating-point operations are the same, in the same order, as [`AmosUnit::spikes`],
/// so the spikes are bit-identical.
#[derive(Clone, Debug)]
pub struct UnitKernel {
    unit: AmosUnit,
    /// `h_j` when every row of h agrees on column j and all c_i are equal.
    residual: Option<(f32, Vec<f32>)>,
    /// A residual unit whose inhibition is what it decodes (every closed form): h_j = d_j
    /// bit for bit for every neuron but the last, whose inhibition nobody reads.
    decodes_as_inhibits: bool,
    /// The least threshold: a potential below it fires no neuron (nothing is subtracted
    /// before the first spike), so the unit is silent there.
    lowest_threshold: f32,
    /// For K ≤ [`DECODE_TABLE_MAX_K`]: the output of every spike pattern, computed by
    /// [`AmosUnit::decode`] itself, so a lookup replaces K conditional additions and gives
    /// the same bits. Always [`DECODE_TABLE_LEN`] long (patterns past 2^K never occur), so
    /// that a masked index needs no bounds check and vectorises into a gather.
    table: Option<Box<[f32; DECODE_TABLE_LEN]>>,
    /// Per neuron i, bit j set where h_ij ≠ 0: subtracting a zero inhibition can change only
    /// the sign of a zero potential, never whether `v − t_i ≥ 0`, so those columns are skipped.
    inhibited_by: Vec<u64>,
    /// A one-input unit off the residual path: its spikes by interval of the input.
    intervals: Option<Intervals>,
    /// A residual unit that is a uniform quantiser, where the CPU runs its kernel.
    uniform: Option<Uniform>,
}

/// Largest K whose decoded outputs are tabulated (2^12 entries, 16 KiB: stays in L1).
pub const DECODE_TABLE_MAX_K: usize = 12;

/// Entries of a decode table.
const DECODE_TABLE_LEN: usize = 1 << DECODE_TABLE_MAX_K;

impl UnitKernel {
    pub fn new(unit: AmosUnit) -> Self {
        let k = unit.k();
        let residual = residual_form(&unit);
        let decodes_as_inhibits = residual.as_ref().is_some_and(|(_, h)| {
            let inhibiting = k.saturating_sub(1);
            (h[..inhibiting].iter().zip(&unit.d)).all(|(h, d)| h.to_bits() == d.to_bits())
        });
        let lowest_threshold = unit.t.iter().copied().fold(f32::INFINITY, f32::min);
        let table = (k <= DECODE_TABLE_MAX_K).then(|| {
            let mut table = Box::new([f32::NAN; DECODE_TABLE_LEN]);
            for (z, y) in table.iter_mut().enumerate().take(1 << k) {
                *y = unit.decode(z as u64);
            }
            table
        });
        let inhibited_by = (0..k)
            .map(|i| {
                (0..i)
                    .filter(|&j| unit.h(i, j) != 0.0)
                    .fold(0u64, |m, j| m | 1u64 << j)
            })
            .collect();
        // The residual form needs no table reads, which cost more on the machines measured
        // (docs/engine-performance-log.md) even where the interval grid takes a single step.
        let intervals = residual.is_none().then(|| Intervals::new(&unit)).flatten();
        let uniform = (residual.is_some() && ResidualPath::detect() == ResidualPath::Uniform)
            .then(|| Uniform::new(&unit))
            .flatten();
        UnitKernel {
            unit,
            residual,
            decodes_as_inhibits,
            lowest_threshold,
            table,
            inhibited_by,
            intervals,
            uniform,
        }
    }

    /// The output for a spike pattern, bit-identical to [`AmosUnit::decode`].
    #[inline]
    pub fn decode(&self, spikes: u64) -> f32 {
        match &self.table {
            Some(t) if spikes >> self.unit.k() == 0 => t[spikes as usize],
            _ => self.unit.decode(spikes),
        }
    }

    pub fn unit(&self) -> &AmosUnit {
        &self.unit
    }

    /// Whether the unit runs on the O(K) residual fast path.
    pub fn is_residual(&self) -> bool {
        self.residual.is_some()
    }

    /// Whether a kernel for `unit` would run on the residual fast path, without building
    /// the kernel (its decode table and interval table).
    pub fn has_residual_form(unit: &AmosUnit) -> bool {
        residual_form(unit).is_some()
    }

    /// [`UnitKernel::eval`] over many inputs: `y[e]`, `z[e]` for `x[e]` (and `x2[e]`).
    ///
    /// The residual form runs branch-free over blocks of elements (a select instead of a
    /// branch per neuron, which the compiler vectorises); selects keep every floating-point
    /// operation of the scalar definition, so results are bit-identical.
    pub fn eval_many(&self, x: &[f32], x2: Option<&[f32]>, y: &mut [f32], z: &mut [u64]) {
        self.eval_counted(x, x2, y, Some(z), &[]);
    }

    /// [`UnitKernel::eval_many`] that also counts: returns the spikes and their synaptic
    /// operations, `Σ popcount(z_e)·fanout_e` (elements past the end of `fanout` reach
    /// none). The spike words go to `z` when given.
    pub fn eval_counted(
        &self,
        x: &[f32],
        x2: Option<&[f32]>,
        y: &mut [f32],
        z: Option<&mut [u64]>,
        fanout: &[u32],
    ) -> (u64, u64) {
        if let (Some(intervals), None) = (&self.intervals, x2) {
            return intervals.eval_counted(&self.unit, x, y, z, fanout);
        }
        if let Some(unit) = self.residual_parts() {
            return residual_dispatch(unit, x, y, z, fanout);
        }
        let table = self.table.as_deref().map(|t| &t[..]);
        match z {
            Some(z) => {
                general_eval(&self.unit, table, &self.inhibited_by, x, x2, y, z);
                count_spikes(z, fanout)
            }
            None => {
                // Words nobody keeps, chunk by chunk on the stack.
                const CHUNK: usize = 1024;
                let mut words = [0u64; CHUNK];
                let (mut spikes, mut synops) = (0, 0);
                for start in (0..x.len()).step_by(CHUNK) {
                    let r = start..(start + CHUNK).min(x.len());
                    let z = &mut words[..r.len()];
                    let x2 = x2.map(|x2| &x2[r.clone()]);
                    general_eval(
                        &self.unit,
                        table,
                        &self.inhibited_by,
                        &x[r.clone()],
                        x2,
                        &mut y[r.clone()],
                        z,
                    );
                    let fan = fanout.get(r.start.min(fanout.len())..r.end.min(fanout.len()));
                    let (s, o) = count_spikes(z, fan.unwrap_or_default());
                    spikes += s;
                    synops += o;
                }
                (spikes, synops)
            }
        }
    }

    /// [`UnitKernel::eval_counted`] of a one-input unit on `y`'s own values, rewritten in
    /// place, without spike words. The quantiser of closed forms reads and writes the same
    /// memory; the other kernels read a copy, a chunk at a time on the stack.
    pub fn eval_counted_in_place(&self, y: &mut [f32], fanout: &[u32]) -> (u64, u64) {
        #[cfg(target_arch = "x86_64")]
        if self.intervals.is_none()
            && let Some(u) = self.residual_parts()
            && let Some(q) = u.uniform
            && ResidualPath::detect() == ResidualPath::Uniform
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
        {
            // As `residual_by` runs it, in place.
            return uniform::eval_avx512(q, None, y, fanout, |x, y, fanout| {
                residual_eval(u, x, y, None, fanout)
            });
        }
        let (mut spikes, mut synops, mut done) = (0, 0, 0);
        #[cfg(target_arch = "x86_64")]
        if self.intervals.is_none()
            && let Some(u) = self.residual_parts()
            && u.t.len() <= 32
            && ResidualPath::detect() == ResidualPath::Avx2
        {
            // Whole blocks in place, as `residual_by` runs them on a copy.
            done = y.len() / AVX2_BLOCK * AVX2_BLOCK;
            let whole = &mut y[..done];
            // SAFETY: AVX2 was detected (`detect`).
            (spikes, synops) = unsafe {
                if u.decodes_as_inhibits {
                    residual_avx2::<false, true>(u, None, whole, None, fanout)
                } else {
                    residual_avx2::<false, false>(u, None, whole, None, fanout)
                }
            };
        }
        const CHUNK: usize = 1024;
        let mut input = [0.0f32; CHUNK];
        for start in (done..y.len()).step_by(CHUNK) {
            let r = start..(start + CHUNK).min(y.len());
            let x = &mut input[..r.len()];
            x.copy_from_slice(&y[r.clone()]);
            let fan = fanout.get(r.start.min(fanout.len())..r.end.min(fanout.len()));
            let (s, o) = self.eval_counted(x, None, &mut y[r], None, fan.unwrap_or_default());
            spikes += s;
            synops += o;
        }
        (spikes, synops)
    }

    /// A two-input unit over pairs `(x[e], x2[e])`, every pair evaluated (see
    /// [`super::memo`] for the remembering caller).
    pub(super) fn eval_pairs(&self, x: &[f32], x2: &[f32], y: &mut [f32], z: &mut [u64]) {
        let table = self.table.as_deref().map(|t| &t[..]);
        general_eval(&self.unit, table, &self.inhibited_by, x, Some(x2), y, z);
    }

    /// The parameters the residual kernels read, for a unit of the residual form.
    fn residual_parts(&self) -> Option<Residual<'_>> {
        let (c, h) = self.residual.as_ref()?;
        Some(Residual {
            c: *c,
            t: &self.unit.t,
            h,
            d: &self.unit.d,
            o: self.unit.o,
            table: self.table.as_deref(),
            decodes_as_inhibits: self.decodes_as_inhibits,
            lowest_threshold: self.lowest_threshold,
            uniform: self.uniform.as_ref(),
        })
    }

    /// Same as [`AmosUnit::eval`].
    #[inline]
    pub fn eval(&self, x: f32, x2: f32) -> (u64, f32) {
        match &self.residual {
            Some((c, h)) => {
                let mut r = c * x;
                let mut z = 0u64;
                for (i, (t, hj)) in self.unit.t.iter().zip(h).enumerate() {
                    if r - t >= 0.0 {
                        z |= 1 << i;
                        r -= hj;
                    }
                }
                (z, self.unit.decode(z))
            }
            None => self.unit.eval(x, x2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(k: usize, two: bool) -> usize {
        AmosUnit::zeros(k, two).param_count()
    }

    #[test]
    fn parameter_counts_match_the_paper_table_3() {
        assert_eq!(count(8, false), 52); // sigmoid
        assert_eq!(count(10, false), 75); // ReLU
        assert_eq!(count(12, false), 102); // swish
        assert_eq!(count(40, true), 940); // two-input multiplication
    }

    #[test]
    fn kernel_fast_path_is_bit_identical() {
        use crate::amos::closed_form::{self, Rounding};
        for unit in [
            closed_form::relu6(10, Rounding::Nearest),
            closed_form::relu6(7, Rounding::Truncate),
            closed_form::identity(12, -3.3, 4.1, Rounding::Nearest),
            // Past 32 bits and past the decode table: the 64-bit path and the decode loop.
            closed_form::identity(40, -3.3, 4.1, Rounding::Nearest),
        ] {
            let kernel = UnitKernel::new(unit.clone());
            assert!(kernel.residual.is_some());
            let mut xs: Vec<f32> = (0..200_003)
                .map(|i| -8.0 + i as f32 * 1e-4 * 0.77)
                .collect();
            // Inputs that are not ordinary, in the blocks of the vectorised kernels too.
            let special = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::MAX,
                -f32::MAX,
                -0.0,
                0.0,
                f32::from_bits(1),
                -f32::MIN_POSITIVE,
            ];
            for (i, v) in special.into_iter().enumerate() {
                xs[1000 + 37 * i] = v;
            }
            let (mut ys, mut zs) = (vec![0.0; xs.len()], vec![0; xs.len()]);
            kernel.eval_many(&xs, None, &mut ys, &mut zs);
            for (e, &x) in xs.iter().enumerate() {
                let (a, b) = (kernel.eval(x, 0.0), unit.eval(x, 0.0));
                assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "x = {x}");
                assert_eq!((zs[e], ys[e].to_bits()), (b.0, b.1.to_bits()), "x = {x}");
            }
        }
    }

    #[test]
    fn kernel_general_path_is_bit_identical() {
        // Seeded random fitted-style units: one and two inputs, K past the decode table.
        let mut rand = crate::testing::uniform(7);
        for (k, two) in [(8, false), (12, false), (40, true), (20, true)] {
            let mut u = AmosUnit::zeros(k, two);
            u.c = (0..k).map(|_| rand() * 3.0).collect();
            if two {
                u.c2 = Some((0..k).map(|_| rand() * 3.0).collect());
            }
            u.t = (0..k).map(|_| rand()).collect();
            // Zero inhibitions, of both signs, are skipped by the kernel.
            u.h = (0..k * (k - 1) / 2)
                .map(|i| match i % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => rand() * 2.0,
                })
                .collect();
            u.d = (0..k).map(|_| rand()).collect();
            u.o = rand();
            let kernel = UnitKernel::new(u.clone());
            assert!(!kernel.is_residual());
            let n = 50_001;
            let xs: Vec<f32> = (0..n).map(|_| rand() * 4.0).collect();
            let x2: Vec<f32> = (0..n).map(|_| rand() * 4.0).collect();
            let (mut ys, mut zs) = (vec![0.0; n], vec![0; n]);
            kernel.eval_many(&xs, two.then_some(&x2[..]), &mut ys, &mut zs);
            for e in 0..n {
                let (z, y) = u.eval(xs[e], if two { x2[e] } else { 0.0 });
                assert_eq!(
                    (zs[e], ys[e].to_bits()),
                    (z, y.to_bits()),
                    "K {k}, element {e}"
                );
            }
        }
    }

    #[test]
    fn counted_evaluation_counts_every_spike_and_synapse() {
        use crate::amos::closed_form::{self, Rounding};
        let mut fitted = AmosUnit::zeros(9, false);
        fitted.c = (0..9).map(|i| 1.0 + i as f32 * 0.1).collect();
        fitted.t = (0..9).map(|i| i as f32 * 0.3 - 1.0).collect();
        fitted.h = (0..36).map(|i| (i % 7) as f32 * 0.05).collect();
        fitted.d = vec![0.5; 9];
        for unit in [
            closed_form::relu6(10, Rounding::Nearest),
            closed_form::identity(40, -3.3, 4.1, Rounding::Nearest),
            fitted,
        ] {
            let kernel = UnitKernel::new(unit.clone());
            let n = 3001;
            let xs: Vec<f32> = (0..n).map(|i| -4.0 + i as f32 * 0.0041).collect();
            // Fanouts for the first elements only (the others reach none), and none at all.
            let partial: Vec<u32> = (0..1234).map(|i| i % 17 + 1).collect();
            // Every element, some with fanouts whose products pass 32 bits.
            let full: Vec<u32> = (0..n as u32)
                .map(|i| if i % 5 == 0 { u32::MAX - i } else { i % 13 })
                .collect();
            for fanout in [&partial[..], &[], &full[..]] {
                let (mut y, mut z) = (vec![0.0; n], vec![0; n]);
                let counted = kernel.eval_counted(&xs, None, &mut y, Some(&mut z), fanout);
                let mut y_alone = vec![0.0; n];
                let unkept = kernel.eval_counted(&xs, None, &mut y_alone, None, fanout);
                let (mut spikes, mut synops) = (0u64, 0u64);
                for (e, &x) in xs.iter().enumerate() {
                    let (word, _) = unit.eval(x, 0.0);
                    assert_eq!(z[e], word);
                    spikes += word.count_ones() as u64;
                    synops += word.count_ones() as u64 * *fanout.get(e).unwrap_or(&0) as u64;
                }
                assert_eq!(counted, (spikes, synops));
                assert_eq!(unkept, (spikes, synops));
                assert!(
                    y.iter()
                        .zip(&y_alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                );
            }
        }
    }

    /// Every residual kernel the CPU runs (AVX-512, AVX2, portable) against the definition:
    /// outputs, spike words, spikes and synaptic operations, with special inputs, lengths
    /// that leave partial blocks, and fanouts that are full (with products past 32 bits),
    /// partial and empty.
    #[test]
    fn every_residual_path_gives_the_definition() {
        use crate::amos::closed_form::{self, Rounding};
        let paths = [
            ResidualPath::Uniform,
            ResidualPath::Avx512,
            ResidualPath::Avx2,
            ResidualPath::Portable,
        ];
        // K past the decode table (12): the vector kernels sum the output themselves, the
        // portable one decodes without the table.
        // A residual-form unit that decodes other than it inhibits (h_j ≠ d_j).
        let mut decoding_apart = closed_form::relu6(10, Rounding::Nearest);
        decoding_apart.d.iter_mut().for_each(|d| *d *= 1.5);
        for unit in [
            closed_form::relu6(10, Rounding::Nearest),
            decoding_apart,
            closed_form::identity(10, -3.3, 4.1, Rounding::Nearest),
            closed_form::relu(6, 2.5, Rounding::Truncate),
            closed_form::identity(12, -3.3, 4.1, Rounding::Truncate),
            closed_form::relu6(20, Rounding::Nearest),
            closed_form::identity(32, -3.3, 4.1, Rounding::Nearest),
        ] {
            let kernel = UnitKernel::new(unit.clone());
            let Some(parts) = kernel.residual_parts() else {
                panic!("closed-form units have the residual form");
            };
            let n = 5003;
            let mut xs: Vec<f32> = (0..n).map(|i| -7.0 + i as f32 * 0.0029).collect();
            for (i, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MAX]
                .into_iter()
                .enumerate()
            {
                xs[100 + 71 * i] = v;
            }
            // A block below the least threshold but for one input at it: the one neuron
            // with that threshold fires, so the block is not silent.
            let lowest = unit.t.iter().copied().fold(f32::INFINITY, f32::min);
            xs[64..96].fill(-1.0);
            xs[70] = lowest;
            // Inputs exactly at thresholds (the first neuron compares x itself), and next to
            // them, where `≥` and `>` differ.
            for (i, &t) in unit.t.iter().enumerate() {
                for (j, v) in [t, t.next_up(), t.next_down()].into_iter().enumerate() {
                    xs[900 + 37 * i + j] = v;
                }
            }
            // Every bound of the unit's intervals and the float below it: where the uniform
            // quantiser is within its margin and leaves the input to the definition.
            if let Some(intervals) = Intervals::new(&unit) {
                let bounds = &intervals.bounds()[..intervals.len() - 1];
                for (e, &b) in bounds.iter().enumerate() {
                    xs[2200 + 2 * e] = b;
                    xs[2201 + 2 * e] = b.next_down();
                }
            }
            // Every closed form of at most 10 neurons is a quantiser here (the kernel is
            // built where the CPU runs it).
            let quantiser_runs = ResidualPath::detect() == ResidualPath::Uniform;
            assert_eq!(kernel.uniform.is_some(), quantiser_runs && unit.k() <= 10);
            if let Some(q) = &kernel.uniform {
                assert!(
                    xs.iter().any(|&x| q.interval(x).is_none()),
                    "inputs the quantiser leaves to the definition"
                );
            }
            let partial: Vec<u32> = (0..1999).map(|i| i % 17 + 1).collect();
            let full: Vec<u32> = (0..n as u32)
                .map(|i| if i % 7 == 0 { u32::MAX - i } else { i % 13 })
                .collect();
            for path in paths.into_iter().filter(|p| p.available()) {
                for fanout in [&full[..], &partial[..], &[]] {
                    let (mut y, mut z) = (vec![0.0; n], vec![0; n]);
                    let counts = residual_by(path, parts, &xs, &mut y, Some(&mut z), fanout);
                    let mut y_alone = vec![0.0; n];
                    let unkept = residual_by(path, parts, &xs, &mut y_alone, None, fanout);
                    let (mut spikes, mut synops) = (0u64, 0u64);
                    for (e, &x) in xs.iter().enumerate() {
                        let (word, out) = unit.eval(x, 0.0);
                        assert_eq!(
                            (z[e], y[e].to_bits()),
                            (word, out.to_bits()),
                            "{path:?} x = {x}"
                        );
                        assert_eq!(y_alone[e].to_bits(), out.to_bits(), "{path:?} x = {x}");
                        spikes += word.count_ones() as u64;
                        synops += word.count_ones() as u64 * *fanout.get(e).unwrap_or(&0) as u64;
                    }
                    assert_eq!(counts, (spikes, synops), "{path:?}");
                    assert_eq!(unkept, (spikes, synops), "{path:?}");
                }
            }
            // In place (the quantiser where it runs, a copy elsewhere): the same outputs
            // and counts, on the whole run and on a run that ends mid-block.
            for fanout in [&full[..], &partial[..], &[]] {
                for len in [n, 1000] {
                    let mut y = xs[..len].to_vec();
                    let counts = kernel.eval_counted_in_place(&mut y, fanout);
                    let (mut spikes, mut synops) = (0u64, 0u64);
                    for (e, &x) in xs[..len].iter().enumerate() {
                        let (word, out) = unit.eval(x, 0.0);
                        assert_eq!(y[e].to_bits(), out.to_bits(), "in place, x = {x}");
                        spikes += word.count_ones() as u64;
                        synops += word.count_ones() as u64 * *fanout.get(e).unwrap_or(&0) as u64;
                    }
                    assert_eq!(counts, (spikes, synops), "in place, {len} elements");
                }
            }
        }
    }

    #[test]
    fn inhibition_follows_the_definition() {
        // Two neurons: the first fires at x ≥ 1 and inhibits the second by 5.
        let mut u = AmosUnit::zeros(2, false);
        u.c = vec![1.0, 1.0];
        u.t = vec![1.0, 0.0];
        u.h = vec![5.0];
        u.d = vec![10.0, 1.0];
        assert_eq!(u.eval(0.5, 0.0), (0b10, 1.0)); // only the second fires
        assert_eq!(u.eval(2.0, 0.0), (0b01, 10.0)); // the first fires and silences the second
        assert_eq!(u.eval(6.0, 0.0), (0b11, 11.0)); // 6 − 5 ≥ 0: both
        assert_eq!(u.eval(-1.0, 0.0), (0b00, 0.0));
    }
}

/// `(c, h_j)` when `unit` has the residual form: one input weight c for all neurons and
/// every row of h agreeing on each column j.
fn residual_form(unit: &AmosUnit) -> Option<(f32, Vec<f32>)> {
    let k = unit.k();
    let same_c = unit.c2.is_none() && unit.c.iter().all(|&c| c.to_bits() == unit.c[0].to_bits());
    let column =
        |j: usize| ((j + 1)..k).all(|i| unit.h(i, j).to_bits() == unit.h(j + 1, j).to_bits());
    // Finite thresholds make `r − t ≥ 0` the same test as `r ≥ t` (a difference of finite
    // floats is never rounded to zero: subnormals are exact), which the residual kernel uses.
    let finite_t = unit.t.iter().all(|t| t.is_finite());
    (same_c && finite_t && k > 0 && (0..k.saturating_sub(1)).all(column)).then(|| {
        let h = (0..k)
            .map(|j| if j + 1 < k { unit.h(j + 1, j) } else { 0.0 })
            .collect();
        (unit.c[0], h)
    })
}

/// A residual-form unit's parameters, borrowed for [`residual_eval`].
#[derive(Clone, Copy)]
struct Residual<'a> {
    c: f32,
    t: &'a [f32],
    h: &'a [f32],
    d: &'a [f32],
    o: f32,
    table: Option<&'a [f32; DECODE_TABLE_LEN]>,
    /// See [`UnitKernel`]'s fields of the names.
    decodes_as_inhibits: bool,
    lowest_threshold: f32,
    uniform: Option<&'a Uniform>,
}

/// Which code runs a residual unit's whole blocks (the rest, and units with more than 32
/// neurons, always run [`residual_eval`]).
/// Each gives the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResidualPath {
    /// [`uniform_avx512`] for a unit that is a uniform quantiser and whose spike words are
    /// not kept, [`ResidualPath::Avx512`] else.
    Uniform,
    /// [`residual_avx512`]: 128 elements a block, spike decisions in mask registers. What
    /// [`ResidualPath::Uniform`] runs where it does not apply; chosen by itself in tests.
    #[cfg_attr(not(test), allow(dead_code))]
    Avx512,
    /// [`residual_avx2`].
    Avx2,
    /// [`residual_eval`] throughout.
    Portable,
}

impl ResidualPath {
    /// The fastest the CPU runs.
    fn detect() -> ResidualPath {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
            {
                return ResidualPath::Uniform;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return ResidualPath::Avx2;
            }
        }
        ResidualPath::Portable
    }

    /// Whether the CPU runs this path.
    #[cfg(test)]
    fn available(self) -> bool {
        matches!(
            (self, ResidualPath::detect()),
            (ResidualPath::Portable, _)
                | (_, ResidualPath::Uniform)
                | (ResidualPath::Avx2, ResidualPath::Avx2)
        )
    }
}

/// [`residual_eval`], with whole blocks by the fastest kernel the CPU runs.
fn residual_dispatch(
    u: Residual<'_>,
    x: &[f32],
    y: &mut [f32],
    z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    residual_by(ResidualPath::detect(), u, x, y, z, fanout)
}

/// [`residual_dispatch`] by a given path, which the CPU must run.
fn residual_by(
    path: ResidualPath,
    u: Residual<'_>,
    x: &[f32],
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    let (mut spikes, mut synops, mut done) = (0, 0, 0);
    #[cfg(target_arch = "x86_64")]
    if path == ResidualPath::Uniform
        && z.is_none()
        && let Some(q) = u.uniform
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
    {
        (spikes, synops) = uniform::eval_avx512(q, Some(x), y, fanout, |x, y, fanout| {
            residual_eval(u, x, y, None, fanout)
        });
        done = x.len();
    }
    #[cfg(target_arch = "x86_64")]
    if u.t.len() <= 32 && done < x.len() {
        let block = match path {
            ResidualPath::Avx512 | ResidualPath::Uniform => AVX512_BLOCK,
            _ => AVX2_BLOCK,
        };
        let whole = x.len() / block * block;
        let words = z.as_deref_mut().map(|z| &mut z[..whole]);
        let (x, y) = (&x[..whole], &mut y[..whole]);
        (spikes, synops, done) = match path {
            ResidualPath::Avx512 | ResidualPath::Uniform
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vpopcntdq") =>
            {
                // SAFETY: AVX-512F and VPOPCNTDQ were detected.
                let (s, o) = unsafe { residual_avx512(u, x, y, words, fanout) };
                (s, o, whole)
            }
            ResidualPath::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
                // SAFETY: AVX2 was detected.
                let (s, o) = unsafe {
                    match (words.is_some(), u.decodes_as_inhibits) {
                        (true, _) => residual_avx2::<true, false>(u, Some(x), y, words, fanout),
                        (false, true) => residual_avx2::<false, true>(u, Some(x), y, None, fanout),
                        (false, false) => {
                            residual_avx2::<false, false>(u, Some(x), y, None, fanout)
                        }
                    }
                };
                (s, o, whole)
            }
            _ => (0, 0, 0),
        };
    }
    if done < x.len() {
        let fan = fanout.get(done.min(fanout.len())..).unwrap_or_default();
        let words = z.map(|z| &mut z[done..]);
        let (s, o) = residual_eval(u, &x[done..], &mut y[done..], words, fan);
        spikes += s;
        synops += o;
    }
    (spikes, synops)
}

/// Synaptic operations of the block where `fanout` ends (the vectorised kernels' last
/// partial block): spikes of the elements before its end times their fanouts.
fn partial_synops(counts: &[u32], fanout: &[u32]) -> u64 {
    counts
        .iter()
        .zip(fanout)
        .map(|(&n, &f)| n as u64 * f as u64)
        .sum()
}

/// `Σ counts·fanout` of 16 lanes of 32-bit counts and fanouts, as eight 64-bit sums (the
/// even lanes' products plus the odd lanes'), so that no product wraps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn synops_avx512(
    counts: std::arch::x86_64::__m512i,
    fanout: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let even = _mm512_mul_epu32(counts, fanout);
    let odd = _mm512_mul_epu32(
        _mm512_srli_epi64::<32>(counts),
        _mm512_srli_epi64::<32>(fanout),
    );
    _mm512_add_epi64(even, odd)
}

/// [`synops_avx512`] in AVX2 lanes: `Σ counts·fanout` of 8 lanes as four 64-bit sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn synops_avx2(
    counts: std::arch::x86_64::__m256i,
    fanout: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let even = _mm256_mul_epu32(counts, fanout);
    let odd = _mm256_mul_epu32(
        _mm256_srli_epi64::<32>(counts),
        _mm256_srli_epi64::<32>(fanout),
    );
    _mm256_add_epi64(even, odd)
}

/// Eight 8-byte records (two 32-bit fields each, as the units' lookup tables hold them),
/// read with one load per record at `index[0..8]` of `table` (AVX2 gathers cost more than a
/// load per lane on the machines measured), then split into their first fields and their
/// second fields, each in lane order.
///
/// # Safety
/// The CPU has AVX2; `table` points to records of 8 bytes, all initialised, at least one
/// past every `index`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn fields_avx2(
    table: *const u64,
    index: &[u32; 8],
) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    let mut records = [0u64; 8];
    for (record, &i) in records.iter_mut().zip(index) {
        // SAFETY: the caller's.
        *record = unsafe { table.add(i as usize).read_unaligned() };
    }
    // SAFETY: AVX2 is enabled; both loads are inside `records`.
    unsafe {
        let low = _mm256_loadu_ps(records.as_ptr().cast());
        let high = _mm256_loadu_ps(records.as_ptr().add(4).cast());
        // Within 128-bit lanes, then the lanes' halves back in order.
        let in_order = |h: __m256| _mm256_permute4x64_epi64::<0xD8>(_mm256_castps_si256(h));
        (
            in_order(_mm256_shuffle_ps::<0x88>(low, high)),
            in_order(_mm256_shuffle_ps::<0xDD>(low, high)),
        )
    }
}

/// Elements per block of [`residual_avx512`]: eight vectors (eight dependency chains through
/// the neurons side by side; more spill registers).
const AVX512_BLOCK: usize = 128;

/// [`residual_avx2`] for AVX-512: whether each neuron fires is a mask register, and the
/// subtraction of its inhibition, the setting of its spike bit and the addition of its `d_i`
/// to the output are masked operations (four per neuron and 16 elements). The output is
/// summed as the neurons fire rather than gathered from the decode table: the gathers took
/// about 40% of the kernel. Spikes are counted by VPOPCNTD. The same floating-point operations
/// as the definition (`c·x`, `r − h` where `r ≥ t`; `o + Σ d_i` over the fired neurons,
/// ascending, as [`AmosUnit::decode`]), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
unsafe fn residual_avx512(
    u: Residual<'_>,
    x: &[f32],
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    use std::arch::x86_64::*;
    const V: usize = AVX512_BLOCK / 16;
    assert!(x.len().is_multiple_of(AVX512_BLOCK) && y.len() == x.len() && u.t.len() <= 32);
    assert!(u.h.len() >= u.t.len() && z.as_ref().is_none_or(|z| z.len() == x.len()));
    // SAFETY: AVX-512F and VPOPCNTDQ are enabled; every load and store is inside a block of
    // `x`, `y`, `z` or `fanout` whose bounds were checked (asserts above, `get` below).
    unsafe {
        let (c, o) = (_mm512_set1_ps(u.c), _mm512_set1_ps(u.o));
        let mut lane_spikes = _mm512_setzero_si512();
        let mut spikes = 0u64;
        let mut synops = _mm512_setzero_si512();
        let mut synops_tail = 0u64;
        for (b, (xs, ys)) in x
            .chunks_exact(AVX512_BLOCK)
            .zip(y.chunks_exact_mut(AVX512_BLOCK))
            .enumerate()
        {
            let first = b * AVX512_BLOCK;
            let mut r: [__m512; V] =
                std::array::from_fn(|v| _mm512_mul_ps(c, _mm512_loadu_ps(xs.as_ptr().add(16 * v))));
            let mut bits = [_mm512_setzero_si512(); V];
            // The decode's sum `Σ d_i` over the fired neurons, ascending, as it runs.
            let mut acc = [_mm512_setzero_ps(); V];
            for (i, ((&ti, &hi), &di)) in u.t.iter().zip(u.h).zip(u.d).enumerate() {
                let (t, h, d) = (_mm512_set1_ps(ti), _mm512_set1_ps(hi), _mm512_set1_ps(di));
                let bit = _mm512_set1_epi32((1u32 << i) as i32);
                for v in 0..V {
                    // `r ≥ t` (false for NaN, as the scalar comparison).
                    let fired = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(r[v], t);
                    r[v] = _mm512_mask_sub_ps(r[v], fired, r[v], h);
                    bits[v] = _mm512_mask_or_epi32(bits[v], fired, bits[v], bit);
                    acc[v] = _mm512_mask_add_ps(acc[v], fired, acc[v], d);
                }
            }
            let fan = fanout.get(first..first + AVX512_BLOCK);
            let mut counts = [_mm512_setzero_si512(); V];
            for v in 0..V {
                let out = _mm512_add_ps(o, acc[v]);
                _mm512_storeu_ps(ys.as_mut_ptr().add(16 * v), out);
                counts[v] = _mm512_popcnt_epi32(bits[v]);
                lane_spikes = _mm512_add_epi32(lane_spikes, counts[v]);
                if let Some(fan) = fan {
                    let f = _mm512_loadu_si512(fan.as_ptr().add(16 * v).cast());
                    synops = _mm512_add_epi64(synops, synops_avx512(counts[v], f));
                }
                if let Some(z) = z.as_deref_mut() {
                    let words = z.as_mut_ptr().add(first + 16 * v).cast::<__m512i>();
                    let low = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(bits[v]));
                    let high = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64::<1>(bits[v]));
                    _mm512_storeu_si512(words, low);
                    _mm512_storeu_si512(words.add(1), high);
                }
            }
            if fan.is_none() && first < fanout.len() {
                let mut lanes = [0u32; AVX512_BLOCK];
                for (v, &count) in counts.iter().enumerate() {
                    _mm512_storeu_si512(lanes.as_mut_ptr().add(16 * v).cast(), count);
                }
                synops_tail += partial_synops(&lanes, &fanout[first..]);
            }
            if b % (1 << 20) == (1 << 20) - 1 {
                spikes += _mm512_reduce_add_epi32(lane_spikes) as u32 as u64;
                lane_spikes = _mm512_setzero_si512();
            }
        }
        spikes += _mm512_reduce_add_epi32(lane_spikes) as u32 as u64;
        (spikes, _mm512_reduce_add_epi64(synops) as u64 + synops_tail)
    }
}

/// Elements per block of [`residual_avx2`]: four vectors.
const AVX2_BLOCK: usize = 32;

/// [`residual_eval`] for units of at most 32 neurons, written for AVX2: the block's
/// potentials, outputs and spike counts stay in registers through the neuron loop. Where a
/// neuron fires, its inhibition is subtracted (`r − (+0)`, which is r exactly, elsewhere),
/// its `d_i` added to the output's sum and one added to the lane's count. The sum `Σ d_i`
/// runs from +0 over the fired neurons, ascending, as [`AmosUnit::decode`]'s: adding +0 where
/// a neuron is silent changes nothing, as the sum is never −0 (it starts at +0, and `a + b`
/// is −0 only when both are). Gathering outputs from a decode table and counting bits instead
/// cost 40% more on Zen 3 (docs/engine-performance-log.md). With `WORDS`, the spike bits are
/// kept too (for `z`) and counted by bit count. With `SAME_HD` (the unit's
/// `decodes_as_inhibits`) one masked value serves both. The floating-point operations are the
/// definition's, so the bits are the same. `y.len()` is a multiple of [`AVX2_BLOCK`]; with
/// `x` `None` the inputs are `y`'s own values, rewritten in place (each block read before it
/// is written); `fanout` as in [`UnitKernel::eval_counted`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn residual_avx2<const WORDS: bool, const SAME_HD: bool>(
    u: Residual<'_>,
    x: Option<&[f32]>,
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    use std::arch::x86_64::*;
    const V: usize = AVX2_BLOCK / 8;
    let len = y.len();
    assert!(len.is_multiple_of(AVX2_BLOCK) && x.is_none_or(|x| x.len() == len));
    assert!(u.t.len() <= 32 && u.h.len() >= u.t.len() && u.d.len() >= u.t.len());
    assert!(z.as_ref().is_none_or(|z| z.len() == len) && (WORDS || z.is_none()));
    // From here on `y` is only reached through `y_ptr` (and, in place, `x` through it too):
    // each block's inputs are all loaded before its outputs are stored.
    let y_ptr = y.as_mut_ptr();
    let x_ptr = x.map_or(y_ptr.cast_const(), <[f32]>::as_ptr);
    // SAFETY: AVX2 is enabled; every load and store below is inside a block of `x`, `y`, `z`
    // or `fanout` whose bounds were checked (asserts above, `get` below).
    unsafe {
        let (c, o) = (_mm256_set1_ps(u.c), _mm256_set1_ps(u.o));
        let lowest = _mm256_set1_ps(u.lowest_threshold);
        // Spikes per lane (at most 32 per block: flushed long before u32 overflows).
        let mut lane_spikes = _mm256_setzero_si256();
        let mut spikes = 0u64;
        let mut synops = _mm256_setzero_si256();
        let mut synops_tail = 0u64;
        let flush = |v: __m256i| -> u64 {
            let mut lanes = [0u32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v);
            lanes.iter().map(|&l| l as u64).sum()
        };
        for b in 0..len / AVX2_BLOCK {
            let first = b * AVX2_BLOCK;
            let (xs, ys) = (x_ptr.add(first), y_ptr.add(first));
            if b % (1 << 20) == (1 << 20) - 1 {
                spikes += flush(lane_spikes);
                lane_spikes = _mm256_setzero_si256();
            }
            let mut r: [__m256; V] =
                std::array::from_fn(|v| _mm256_mul_ps(c, _mm256_loadu_ps(xs.add(8 * v))));
            // A block whose every potential is below the least threshold (or NaN) fires no
            // neuron: each output is `o + (+0)`, as the neuron loop would leave it, and there
            // are no spikes (after a ReLU-like gate's negative inputs, a common case).
            let any = r.iter().fold(_mm256_setzero_ps(), |any, &r| {
                _mm256_or_ps(any, _mm256_cmp_ps::<_CMP_GE_OQ>(r, lowest))
            });
            if _mm256_movemask_ps(any) == 0 {
                let silent = _mm256_add_ps(o, _mm256_setzero_ps());
                for v in 0..V {
                    _mm256_storeu_ps(ys.add(8 * v), silent);
                }
                if let Some(z) = z.as_deref_mut() {
                    z[first..first + AVX2_BLOCK].fill(0);
                }
                continue;
            }
            let mut acc = [_mm256_setzero_ps(); V];
            // Without `WORDS`: minus the spikes per lane; with: the spike bits.
            let mut tally = [_mm256_setzero_si256(); V];
            for (i, ((&ti, &hi), &di)) in u.t.iter().zip(u.h).zip(u.d).enumerate() {
                let (t, h, d) = (_mm256_set1_ps(ti), _mm256_set1_ps(hi), _mm256_set1_ps(di));
                for v in 0..V {
                    // `r ≥ t` (false for NaN, as the scalar comparison).
                    let fired = _mm256_cmp_ps::<_CMP_GE_OQ>(r[v], t);
                    let decoded = _mm256_and_ps(d, fired);
                    let inhibition = if SAME_HD {
                        decoded
                    } else {
                        _mm256_and_ps(h, fired)
                    };
                    r[v] = _mm256_sub_ps(r[v], inhibition);
                    acc[v] = _mm256_add_ps(acc[v], decoded);
                    let fired = _mm256_castps_si256(fired);
                    tally[v] = if WORDS {
                        let bit = _mm256_set1_epi32((1u32 << i) as i32);
                        _mm256_or_si256(tally[v], _mm256_and_si256(bit, fired))
                    } else {
                        _mm256_sub_epi32(tally[v], fired)
                    };
                }
            }
            let fan = fanout.get(first..first + AVX2_BLOCK);
            let mut counts = [_mm256_setzero_si256(); V];
            for v in 0..V {
                _mm256_storeu_ps(ys.add(8 * v), _mm256_add_ps(o, acc[v]));
                counts[v] = if WORDS {
                    popcount_avx2(tally[v])
                } else {
                    tally[v]
                };
                lane_spikes = _mm256_add_epi32(lane_spikes, counts[v]);
                if let Some(fan) = fan {
                    let f = _mm256_loadu_si256(fan.as_ptr().add(8 * v).cast());
                    synops = _mm256_add_epi64(synops, synops_avx2(counts[v], f));
                }
                if let Some(z) = z.as_deref_mut() {
                    let words = z.as_mut_ptr().add(first + 8 * v).cast::<__m256i>();
                    let low = _mm256_cvtepu32_epi64(_mm256_castsi256_si128(tally[v]));
                    let high = _mm256_cvtepu32_epi64(_mm256_extracti128_si256::<1>(tally[v]));
                    _mm256_storeu_si256(words, low);
                    _mm256_storeu_si256(words.add(1), high);
                }
            }
            if fan.is_none() && first < fanout.len() {
                let mut lanes = [0u32; AVX2_BLOCK];
                for (v, &count) in counts.iter().enumerate() {
                    _mm256_storeu_si256(lanes.as_mut_ptr().add(8 * v).cast(), count);
                }
                synops_tail += partial_synops(&lanes, &fanout[first..]);
            }
        }
        spikes += flush(lane_spikes);
        let mut wide = [0u64; 4];
        _mm256_storeu_si256(wide.as_mut_ptr().cast(), synops);
        (spikes, wide.iter().sum::<u64>() + synops_tail)
    }
}

/// The set bits of each 32-bit lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn popcount_avx2(w: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let (m1, m2, m4) = (
        _mm256_set1_epi32(0x5555_5555),
        _mm256_set1_epi32(0x3333_3333),
        _mm256_set1_epi32(0x0F0F_0F0F),
    );
    let w = _mm256_sub_epi32(w, _mm256_and_si256(_mm256_srli_epi32::<1>(w), m1));
    let w = _mm256_add_epi32(
        _mm256_and_si256(w, m2),
        _mm256_and_si256(_mm256_srli_epi32::<2>(w), m2),
    );
    let w = _mm256_and_si256(_mm256_add_epi32(w, _mm256_srli_epi32::<4>(w)), m4);
    let w = _mm256_add_epi32(w, _mm256_srli_epi32::<8>(w));
    let w = _mm256_add_epi32(w, _mm256_srli_epi32::<16>(w));
    _mm256_and_si256(w, _mm256_set1_epi32(0x3F))
}

/// The residual form over blocks of elements, branch-free (a select instead of a branch per
/// neuron, which the compiler vectorises), counting spikes and synaptic operations as it
/// goes (see [`UnitKernel::eval_counted`]). Compiled for AVX2 too and chosen at run time:
/// wider vectors, the same operations (Rust never fuses a multiply and an add on its own), so
/// the same bits on every machine.
#[multiversion::multiversion(targets("x86_64+avx2+fma+popcnt"))]
fn residual_eval<'a>(
    u: Residual<'a>,
    x: &[f32],
    y: &mut [f32],
    mut z: Option<&mut [u64]>,
    fanout: &[u32],
) -> (u64, u64) {
    const BLOCK: usize = 32;
    let Residual {
        c,
        t,
        h,
        d,
        o,
        table,
        ..
    } = u;
    let (mut spikes, mut synops) = (0u64, 0u64);
    for (b, (xs, ys)) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)).enumerate() {
        let n = xs.len();
        let first = b * BLOCK;
        let mut r = [0.0f32; BLOCK];
        for e in 0..n {
            r[e] = c * xs[e];
        }
        if t.len() <= 32 {
            // 32-bit words: as wide as the potentials, so compares and bits share vectors.
            let mut bits32 = [0u32; BLOCK];
            // Spikes per element, counted as they fire (no popcount afterwards).
            let mut count = [0u32; BLOCK];
            for (i, (&ti, &hi)) in t.iter().zip(h).enumerate() {
                let (bit, hi) = (1u32 << i, hi.to_bits());
                for e in 0..BLOCK {
                    // `r − t ≥ 0` of the definition (thresholds are finite).
                    let fired = if r[e] >= ti { u32::MAX } else { 0 };
                    bits32[e] |= bit & fired;
                    count[e] = count[e].wrapping_sub(fired);
                    // `r − h` where it fired, `r − (+0)`, which is r exactly, elsewhere: no
                    // select, which the compiler may turn into slow masked stores.
                    r[e] -= f32::from_bits(hi & fired);
                }
            }
            if let Some(table) = table {
                for e in 0..n {
                    ys[e] = table[bits32[e] as usize & (DECODE_TABLE_LEN - 1)];
                }
            } else {
                decode_into(d, o, &bits32.map(|w| w as u64), &mut ys[..n]);
            }
            if let Some(z) = z.as_deref_mut() {
                for (w, &b) in z[first..first + n].iter_mut().zip(&bits32) {
                    *w = b as u64;
                }
            }
            spikes += count[..n].iter().map(|&c| c as u64).sum::<u64>();
            // Elements past the end of `fanout` reach none.
            let fan = fanout.get(first.min(fanout.len())..(first + n).min(fanout.len()));
            for (&c, &f) in count.iter().zip(fan.unwrap_or_default()) {
                synops += c as u64 * f as u64;
            }
        } else {
            let mut bits = [0u64; BLOCK];
            for (i, (&ti, &hi)) in t.iter().zip(h).enumerate() {
                for e in 0..BLOCK {
                    let fire = r[e] >= ti;
                    bits[e] |= (fire as u64) << i;
                    r[e] = if fire { r[e] - hi } else { r[e] };
                }
            }
            match table {
                Some(table) => {
                    for e in 0..n {
                        ys[e] = table[bits[e] as usize & (DECODE_TABLE_LEN - 1)];
                    }
                }
                None => decode_into(d, o, &bits, &mut ys[..n]),
            }
            if let Some(z) = z.as_deref_mut() {
                z[first..first + n].copy_from_slice(&bits[..n]);
            }
            let fan = fanout.get(first.min(fanout.len())..(first + n).min(fanout.len()));
            let (s, o) = count_spikes(&bits[..n], fan.unwrap_or_default());
            spikes += s;
            synops += o;
        }
    }
    (spikes, synops)
}

/// `y[e] = o + Σ d_i` over the neurons fired in `bits[e]`, summed in neuron order as
/// [`AmosUnit::decode`] does (for units whose K has no decode table).
#[inline(always)]
fn decode_into(d: &[f32], o: f32, bits: &[u64], y: &mut [f32]) {
    const BLOCK: usize = 32;
    let mut acc = [0.0f32; BLOCK];
    for (i, &di) in d.iter().enumerate() {
        for e in 0..BLOCK.min(bits.len()) {
            let fired = (bits[e] >> i) & 1 == 1;
            acc[e] = if fired { acc[e] + di } else { acc[e] };
        }
    }
    for (ye, a) in y.iter_mut().zip(acc) {
        *ye = o + a;
    }
}

/// Spikes in `words` and their synaptic operations, `Σ popcount(w_e)·fanout_e` (elements
/// past the end of `fanout`, a unit outside the stage's range, reach none). One pass, built
/// with the POPCNT instruction too and chosen at run time: without it, counting bits is a
/// dozen instructions per word.
#[multiversion::multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt"))]
fn count_spikes(words: &[u64], fanout: &[u32]) -> (u64, u64) {
    let (mut spikes, mut synops) = (0u64, 0u64);
    let (reached, rest) = words.split_at(fanout.len().min(words.len()));
    for (w, &f) in reached.iter().zip(fanout) {
        let s = w.count_ones() as u64;
        spikes += s;
        synops += s * f as u64;
    }
    spikes += rest.iter().map(|w| w.count_ones() as u64).sum::<u64>();
    (spikes, synops)
}

/// The general form (fitted units, two-input units) over blocks of elements: neuron by
/// neuron, each potential is built as [`AmosUnit::spikes`] builds it (`c·x`, `+ c′·x′`,
/// `− h_ij` for every fired j in ascending order, `− t_i`), with selects instead of
/// branches, so the spikes are bit-identical. An inhibition h_ij is applied only when it is
/// not zero and some element of the block fired neuron j: spikes are sparse, so most columns
/// are skipped.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn general_eval(
    unit: &AmosUnit,
    table: Option<&[f32]>,
    inhibited_by: &[u64],
    x: &[f32],
    x2: Option<&[f32]>,
    y: &mut [f32],
    z: &mut [u64],
) {
    const BLOCK: usize = 32;
    let k = unit.c.len();
    // Per neuron, per element of the block: all ones where it fired (row i is written before
    // any later neuron reads it). `v − (h_ij AND mask)` subtracts h_ij where j fired and +0
    // elsewhere, which leaves v exactly as it was: two vector operations, where testing a
    // bit of a 64-bit spike word per element takes several.
    let mut fired_mask = [[0u32; BLOCK]; MAX_NEURONS];
    for (b, ((xs, ys), zs)) in x
        .chunks(BLOCK)
        .zip(y.chunks_mut(BLOCK))
        .zip(z.chunks_mut(BLOCK))
        .enumerate()
    {
        let n = xs.len();
        let mut xin = [0.0f32; BLOCK];
        let mut xin2 = [0.0f32; BLOCK];
        xin[..n].copy_from_slice(xs);
        if let Some(x2) = x2 {
            xin2[..n].copy_from_slice(&x2[b * BLOCK..b * BLOCK + n]);
        }
        let mut bits = [0u64; BLOCK];
        // Neurons that fired in at least one element of the block.
        let mut fired_any = 0u64;
        let mut row = 0;
        for i in 0..k {
            let mut v = [0.0f32; BLOCK];
            let ci = unit.c[i];
            for e in 0..BLOCK {
                v[e] = ci * xin[e];
            }
            if let Some(c2) = &unit.c2 {
                let c2i = c2[i];
                for e in 0..BLOCK {
                    v[e] += c2i * xin2[e];
                }
            }
            let mut columns = fired_any & inhibited_by[i];
            while columns != 0 {
                let j = columns.trailing_zeros() as usize;
                let (hij, mask) = (unit.h[row + j].to_bits(), &fired_mask[j]);
                for e in 0..BLOCK {
                    v[e] -= f32::from_bits(hij & mask[e]);
                }
                columns &= columns - 1;
            }
            let ti = unit.t[i];
            let mut any = false;
            for e in 0..BLOCK {
                let fire = v[e] - ti >= 0.0;
                fired_mask[i][e] = if fire { u32::MAX } else { 0 };
                bits[e] |= (fire as u64) << i;
                any |= fire & (e < n);
            }
            if any {
                fired_any |= 1 << i;
            }
            row += i;
        }
        zs[..n].copy_from_slice(&bits[..n]);
        match table {
            Some(t) => {
                for e in 0..n {
                    ys[e] = t.get(bits[e] as usize).copied().unwrap_or(f32::NAN);
                }
            }
            None => {
                // `o + Σ d_i` over the fired neurons in ascending order, as
                // [`AmosUnit::decode`] sums, element-parallel (neurons that fired nowhere
                // in the block add nothing anywhere).
                let mut acc = [0.0f32; BLOCK];
                let mut fired = fired_any;
                while fired != 0 {
                    let i = fired.trailing_zeros() as usize;
                    let (di, mask) = (unit.d[i], &fired_mask[i]);
                    for e in 0..BLOCK {
                        acc[e] = if mask[e] != 0 { acc[e] + di } else { acc[e] };
                    }
                    fired &= fired - 1;
                }
                for e in 0..n {
                    ys[e] = unit.o + acc[e];
                }
            }
        }
    }
}
