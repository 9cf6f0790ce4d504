//! Fuzz target: see [`amos_fuzz::spike_batch`]. The stages are built once, before the first
//! input, so that their conversion does not count as a slow input.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        amos_fuzz::example_stages();
    },
    |data: &[u8]| {
        amos_fuzz::spike_batch(data);
    }
);
