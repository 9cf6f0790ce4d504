//! `amos-converter`: ONNX import, calibration, conversion, and the library behind
//! `amos-convert`.
//!
//! - [`onnx`]: ONNX → [`amos_snn::Graph`], operators by family, constants folded.
//! - [`bench`]: our ANN and SNN modes against ONNX Runtime.
//! - [`calibrate`]: what each gate sees on real images.
//! - [`convert`]: an AMOS unit for every gate.
//! - [`eval`]: single-process evaluation in ANN and SNN mode.
//! - [`inspect`]: what a model holds.
//! - [`sweep`]: neurons against fidelity over K.
//! - [`plot`]: pictures of units, spikes and sweeps.

pub mod bench;
pub mod calibrate;
pub mod convert;
pub mod error;
pub mod eval;
pub mod inspect;
pub mod onnx;
pub mod plot;
pub mod recipe;
pub mod sweep;

pub use error::ConvertError;

/// Whether `bytes` start like an `.amos` model file.
pub fn is_amos_file(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x89AMOS\r\n\x1a"
}
