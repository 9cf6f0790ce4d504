//! Helpers shared by the crate's tests.

/// Seeded values uniform in [−1, 1) (a linear congruential generator): the same sequence
/// for the same seed on every machine.
pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}
