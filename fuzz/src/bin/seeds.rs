//! Writes the starting corpus of each fuzz target: `seeds OPMODELS CORPUS`, where OPMODELS
//! is the output of `tests/opmodels/gen_op_models.py`. Valid inputs let the fuzzer start
//! deep inside each parser instead of at its first check.

// Fuzzing builds instrument every crate; linking libFuzzer provides the coverage hooks.
use libfuzzer_sys as _;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus folder");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [opmodels, corpus] = args.as_slice() else {
        eprintln!("usage: seeds OPMODELS CORPUS");
        std::process::exit(2);
    };
    let cases = std::fs::read_to_string(opmodels.join("cases.txt")).expect("read cases.txt");
    let (mut onnx, mut amos) = (0, 0);
    for case in cases.lines().map(str::trim).filter(|c| !c.is_empty()) {
        let path = opmodels.join(case).join("model.onnx");
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        write(&corpus.join("onnx_import"), &format!("{case}.onnx"), &bytes);
        onnx += 1;
        if let Some(model) = amos_fuzz::convert_without_calibration(&path) {
            let file = amos_snn::model_file::encode(&model);
            write(&corpus.join("model_file"), &format!("{case}.amos"), &file);
            amos += 1;
        }
    }
    write(
        &corpus.join("spike_batch"),
        "stage1_valid.pb",
        &amos_fuzz::seed_spike_batch(),
    );
    println!("seeds: {onnx} ONNX models, {amos} model files, 1 spike batch");
}
