//! Conversion of the shared models end to end: the spiking network against its ANN, the model
//! file's determinism, and the `convert` / `inspect` / `eval` commands.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::shared;
use serde_json::Value;

fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_amos-convert"))
        .args(args)
        .output()
        .expect("run amos-convert");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "amos-convert {args:?} failed: {stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or(Value::Null)
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn lite0_relu6_snn_agrees_with_its_ann() {
    let model = shared().join("models/efficientnet_lite0.onnx");
    let out = tmp("lite0.amos");
    run(&[
        "convert",
        s(&model),
        "-o",
        s(&out),
        "--preset",
        "efficientnet-lite",
    ]);
    let info = run(&["inspect", s(&out), "--json"]);
    assert_eq!(info["units"], 33);
    assert_eq!(info["units_by_gate"]["relu6"]["k"], serde_json::json!([10]));
    assert_eq!(info["ann_params"], 4_631_000);
    // 33 ReLU6 units of 10 neurons: the paper's relu6 parameter count, one shared unit.
    assert_eq!(info["amos_params"], 75);
    let data = shared().join("data/imagenet-sample");
    let v = run(&[
        "eval",
        s(&out),
        "--data",
        s(&data),
        "--limit",
        "64",
        "--json",
    ]);
    assert_eq!(v["images"], 64);
    let agreement = v["agreement_top1"].as_f64().unwrap_or(0.0);
    eprintln!("lite0 K=10 on 64 images: {v}");
    assert!(
        agreement >= 98.4,
        "SNN/ANN top-1 agreement {agreement}% on 64 images"
    );
    assert!(v["mean_spikes"].as_f64().unwrap_or(0.0) > 1e6);
    assert_eq!(v["neurons"], info["neurons"]);
}

#[test]
fn conversion_is_deterministic_and_the_model_file_is_complete() {
    let model = shared().join("models/cifar10_swish_se.onnx");
    let cal = shared().join("data/cifar10-test2000");
    let (a, b) = (tmp("swish-a.amos"), tmp("swish-b.amos"));
    for out in [&a, &b] {
        run(&[
            "convert",
            s(&model),
            "-o",
            s(out),
            "--preset",
            "cifar",
            "--calibration",
            s(&cal),
            "--calibration-images",
            "64",
            "--threads",
            "1",
        ]);
    }
    let (x, y) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    assert!(x == y, "two conversions with the same inputs differ");
    let info = run(&["inspect", s(&a), "--json"]);
    for key in [
        "ann_params",
        "amos_params",
        "units",
        "neurons",
        "layers",
        "units_by_gate",
    ] {
        assert!(!info[key].is_null(), "inspect --json lacks '{key}': {info}");
    }
    assert_eq!(info["units"], 32);
    // The sha256 of the source file, recorded for provenance (computed here independently
    // with the `sha256sum` tool).
    let sum = Command::new("sha256sum")
        .arg(&model)
        .output()
        .expect("sha256sum");
    let expected = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    assert_eq!(info["source_sha256"], expected);
}
