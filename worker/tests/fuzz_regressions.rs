//! Replays what the fuzzers found, through the very code the fuzz targets run
//! (`fuzz/src/lib.rs` is included below): every input kept in `fuzz/regressions/<target>/`
//! must be refused without a panic. Valid inputs must get all the way through each harness
//! (else the fuzzers would only be exercising the first check), and damaged copies of them
//! (truncated, bytes flipped) must be refused cleanly.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};

use amos_snn::model_file;

fn example_onnx_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cifar10/cifar10_swish_se.onnx")
}

/// The inputs kept for `target`, sorted by name.
fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read a regression input");
            (p, bytes)
        })
        .collect()
}

/// Runs `harness` on about 100 truncations and 300 single-byte corruptions of `valid`
/// (none may panic): how many it tried and how many it refused.
fn damaged_copies(valid: &[u8], harness: fn(&[u8]) -> bool) -> (usize, usize) {
    let (mut tried, mut refused) = (0, 0);
    let step = (valid.len() / 97).max(1);
    for cut in (0..valid.len()).step_by(step) {
        tried += 1;
        refused += usize::from(!harness(&valid[..cut]));
    }
    for at in (0..valid.len()).step_by(step) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = valid.to_vec();
            bad[at] ^= flip;
            tried += 1;
            refused += usize::from(!harness(&bad));
        }
    }
    (tried, refused)
}

#[test]
fn onnx_import_regressions_and_damage_are_refused_without_panic() {
    let valid = std::fs::read(example_onnx_path()).expect("read the example model");
    assert!(harness::onnx_import(&valid), "the example model imports");
    for (path, bytes) in regressions("onnx_import") {
        eprintln!("replaying {}", path.display());
        harness::onnx_import(&bytes);
    }
    let (tried, refused) = damaged_copies(&valid, harness::onnx_import);
    // Weight bytes may change freely; truncations inside the graph may not.
    assert!(
        refused > 0 && refused < tried,
        "{refused} of {tried} refused"
    );
}

#[test]
fn model_file_regressions_and_damage_are_refused_without_panic() {
    let model = harness::convert_without_calibration(&example_onnx_path())
        .expect("convert the example model");
    let valid = model_file::encode(&model);
    assert!(harness::model_file(&valid), "a fresh model file reads");
    for (path, bytes) in regressions("model_file") {
        eprintln!("replaying {}", path.display());
        assert!(
            !harness::model_file(&bytes),
            "{} was accepted",
            path.display()
        );
    }
    // Outside fuzzing builds every byte but the zero padding and the reserved header word
    // is covered by a checksum or a length, so nearly every damaged copy is refused.
    let (tried, refused) = damaged_copies(&valid, harness::model_file);
    assert!(
        (tried - refused) * 20 < tried,
        "{} of {tried} damaged copies were accepted",
        tried - refused
    );
}

#[test]
fn spike_batch_regressions_and_damage_are_refused_without_panic() {
    let valid = harness::seed_spike_batch();
    assert!(
        harness::spike_batch(&valid),
        "stage 0's batch runs in stage 1"
    );
    for (path, bytes) in regressions("spike_batch") {
        eprintln!("replaying {}", path.display());
        harness::spike_batch(&bytes);
    }
    // Flipped payload bits are other valid spikes; broken lengths and shapes are refused.
    let (tried, refused) = damaged_copies(&valid, harness::spike_batch);
    assert!(
        refused > 0 && refused < tried,
        "{refused} of {tried} refused"
    );
}
