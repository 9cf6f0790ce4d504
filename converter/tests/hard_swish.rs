//! A MobileNetV3-family model (hard-swish and hard-sigmoid gates, squeeze-and-excitation),
//! built by `tests/models/make_hardswish_model.py` from the shared swish/SE network: its ANN
//! matches ONNX Runtime, and its spiking network agrees with the ANN on images the
//! calibration never saw.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use amos_converter::onnx::import_file;
use amos_io::data::{Dataset, Preprocess};
use amos_snn::Engine;
use common::{argmax_rows, max_abs_diff, read_npy, shared};
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn cifar() -> PathBuf {
    shared().join("data/cifar10-test2000")
}

/// The hard-swish model and ONNX Runtime's logits for the 2000 CIFAR images, made once.
fn model() -> &'static (PathBuf, PathBuf) {
    static MODEL: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/models/make_hardswish_model.py");
        let (onnx, logits) = (tmp("hard-swish.onnx"), tmp("hard-swish-logits.npy"));
        let out = Command::new("python3")
            .arg(&script)
            .arg(shared().join("models/cifar10_swish_se.onnx"))
            .arg(&onnx)
            .args(["--images", s(&cifar()), "--logits", s(&logits)])
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (onnx, logits)
    })
}

fn amos_convert(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_amos-convert"))
        .args(args)
        .output()
        .expect("run amos-convert");
    assert!(
        out.status.success(),
        "amos-convert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn hard_swish_ann_matches_onnx_runtime_on_all_2000_images() {
    let (onnx, logits) = model();
    let imported = import_file(onnx).expect("import");
    let gates: Vec<&str> = imported
        .graph
        .gates()
        .iter()
        .map(|(_, g)| g.name())
        .collect();
    for (gate, n) in [("hard_swish", 20), ("hard_sigmoid", 6), ("mul", 6)] {
        assert_eq!(gates.iter().filter(|&&g| g == gate).count(), n, "{gates:?}");
    }
    let engine = Engine::new(imported.graph, 2).expect("engine");
    let dataset = Dataset::open(&cifar(), None).expect("dataset");
    let pre = Preprocess::preset("cifar", (32, 32)).expect("preset");
    let mut data = vec![0.0f32; dataset.entries.len() * pre.chw_len()];
    let paths: Vec<_> = dataset.entries.iter().map(|e| e.path.clone()).collect();
    pre.load_batch_chw(&paths, &mut data).expect("decode");
    let input = amos_snn::Tensor::new(vec![paths.len(), 3, 32, 32], data).expect("tensor");
    let got = engine.run(input).expect("run");
    let expected = read_npy(logits);
    let diff = max_abs_diff(&got, &expected);
    assert!(diff <= 1e-3, "max |logit diff| {diff} > 1e-3");
    assert_eq!(argmax_rows(&got), argmax_rows(&expected));
}

#[test]
fn hard_swish_snn_agrees_with_its_ann_on_held_out_images() {
    let (onnx, _) = model();
    let amos = tmp("hard-swish.amos");
    let preds = tmp("hard-swish-preds.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_amos-convert"))
        .args(["convert", s(onnx), "-o", s(&amos), "--preset", "cifar"])
        .args(["--calibration", s(&cifar()), "--calibration-images", "256"])
        .output()
        .expect("run amos-convert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = amos_convert(&["inspect", s(&amos), "--json"]);
    for (gate, k) in [("hard_swish", 12), ("hard_sigmoid", 8), ("mul", 40)] {
        assert_eq!(
            info["units_by_gate"][gate]["k"],
            serde_json::json!([k]),
            "{info}"
        );
    }
    let v = amos_convert(&[
        "eval",
        s(&amos),
        "--data",
        s(&cifar()),
        "--predictions",
        s(&preds),
        "--json",
    ]);
    eprintln!("hard-swish/SE on 2000 CIFAR images: {v}");
    // ONNX Runtime's top-1 on these images: 79.80%.
    assert!(
        (v["ann_top1"].as_f64().unwrap_or(0.0) - 79.8).abs() < 1e-9,
        "{v}"
    );
    // Measured: 97.2% agreement, logit RMSE 0.149 (the swish model: 98.05%, 0.101).
    let agreement = v["agreement_top1"].as_f64().unwrap_or(0.0);
    let rmse = v["logit_rmse"].as_f64().unwrap_or(f64::MAX);
    assert!(agreement >= 96.5 && rmse <= 0.16, "{v}");
    let mut rd = csv::Reader::from_path(&preds).expect("predictions");
    let header = rd.headers().expect("header").clone();
    let column = |name: &str| header.iter().position(|h| h == name).expect("column");
    let (ann, snn) = (column("ann_top1"), column("snn_top1"));
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.expect("row")).collect();
    let held_out = &rows[256..];
    let agreeing = held_out.iter().filter(|r| r[ann] == r[snn]).count();
    assert!(
        agreeing as f64 >= 0.965 * held_out.len() as f64,
        "{agreeing} of {} held-out images agree",
        held_out.len()
    );
}
