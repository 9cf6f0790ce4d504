//! Fuzz target: see [`amos_fuzz::model_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amos_fuzz::model_file(data);
});
