//! Fuzz target: see [`amos_fuzz::onnx_import`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amos_fuzz::onnx_import(data);
});
