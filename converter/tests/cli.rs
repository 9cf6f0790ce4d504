//! The `amos-convert` binary: command names, JSON keys and errors scripts depend on.

mod common;
#[path = "../../io/tests/support/variants.rs"]
mod variants;

use std::collections::HashMap;
use std::process::Command;

use common::shared;
use serde_json::Value;

fn amos_convert(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amos-convert"))
        .args(args)
        .output()
        .expect("run amos-convert");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = amos_convert(args);
    assert!(ok, "amos-convert {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn inspect_lite0_lists_33_relu6_gates_and_folds_padding() {
    let model = shared().join("models/efficientnet_lite0.onnx");
    let v = json(&["inspect", model.to_str().expect("utf-8 path"), "--json"]);
    assert_eq!(v["gates"], serde_json::json!({"relu6": 33}));
    assert_eq!(v["onnx_ops"]["Pad"], 17);
    // Every exported "same" Pad is folded into its convolution, every BN was folded by torch.
    assert!(v["ops"].get("Pad").is_none(), "{}", v["ops"]);
    assert_eq!(
        v["ops"]["Conv"].as_u64().unwrap_or(0) + v["ops"]["DepthwiseConv"].as_u64().unwrap_or(0),
        49
    );
    // Parameters of the ONNX initializers feeding Conv and Gemm (weights + biases).
    assert_eq!(v["ann_params"], 4_631_000);
}

#[test]
fn inspect_swish_se_recognises_swish_and_the_se_gates() {
    let model = shared().join("models/cifar10_swish_se.onnx");
    let v = json(&["inspect", model.to_str().expect("utf-8 path"), "--json"]);
    // 26 Sigmoid+Mul pairs in the file: 20 are x·sigmoid(x) (swish, incl. the SE's hidden
    // layer), 6 are the SE gate sigmoid(e) whose product with the feature map is a mul gate.
    assert_eq!(
        v["gates"],
        serde_json::json!({"swish": 20, "sigmoid": 6, "mul": 6})
    );
    assert_eq!(v["gate_nodes"].as_array().map(Vec::len), Some(32));
}

#[test]
fn eval_on_shipped_cifar_examples_matches_reference_predictions() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("examples/cifar10/cifar10_swish_se.onnx");
    let data = root.join("examples/cifar10/images");
    let preds = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cifar-examples.csv");
    let v = json(&[
        "eval",
        model.to_str().expect("path"),
        "--data",
        data.to_str().expect("path"),
        "--preset",
        "cifar",
        "--predictions",
        preds.to_str().expect("path"),
        "--json",
    ]);
    // Independent expectation: ONNX Runtime's top-1 for the same files.
    let mut reference = csv::Reader::from_path(
        shared().join("reference/cifar10-test2000.swish_se.predictions.csv"),
    )
    .expect("csv");
    let reference: HashMap<String, (String, String)> = reference
        .records()
        .map(|r| r.expect("row"))
        .map(|r| (r[0].to_string(), (r[1].to_string(), r[2].to_string())))
        .collect();
    let mut ours = csv::Reader::from_path(&preds).expect("predictions");
    assert_eq!(
        ours.headers().expect("header").iter().collect::<Vec<_>>(),
        [
            "image_id", "label", "ann_top1", "ann_top2", "ann_top3", "ann_top4", "ann_top5",
            "error"
        ]
    );
    let (mut rows, mut correct) = (0, 0);
    for r in ours.records() {
        let r = r.expect("row");
        let (label, top1) = &reference[&r[0]];
        assert_eq!(&r[1], label, "{}", &r[0]);
        assert_eq!(&r[2], top1, "top-1 of {} differs from ONNX Runtime", &r[0]);
        rows += 1;
        correct += usize::from(label == top1);
    }
    assert_eq!(rows, 50);
    assert_eq!(v["images"], 50);
    let expected = 100.0 * correct as f64 / 50.0;
    assert!(
        (v["ann_top1"].as_f64().unwrap_or(-1.0) - expected).abs() < 1e-9,
        "{v}"
    );
    assert!(v["ann_top5"].as_f64().unwrap_or(-1.0) >= expected);
}

#[test]
fn eval_without_preset_and_with_missing_data_fail_clearly() {
    let model = shared().join("models/cifar10_swish_se.onnx");
    let model = model.to_str().expect("path");
    let (ok, _, err) = amos_convert(&[
        "eval",
        model,
        "--data",
        "/nonexistent/images",
        "--preset",
        "cifar",
    ]);
    assert!(!ok && err.contains("/nonexistent/images"), "{err}");
    let (ok, _, err) = amos_convert(&["eval", model, "--data", "/nonexistent/images"]);
    assert!(!ok && err.contains("--preset"), "{err}");
    let (ok, _, err) = amos_convert(&["eval", model, "--data", "/tmp", "--preset", "nope"]);
    assert!(!ok && err.contains("nope"), "{err}");
    let (ok, _, err) = amos_convert(&["inspect", "/nonexistent/model.onnx"]);
    assert!(!ok && err.contains("/nonexistent/model.onnx"), "{err}");
    // A fitting budget that would give a meaningless unit is refused, naming the flag.
    for (flag, value) in [("--fit-steps", "0"), ("--fit-samples", "10")] {
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("never.amos");
        let args = [
            "convert",
            model,
            "-o",
            out.to_str().expect("path"),
            flag,
            value,
        ];
        let (ok, _, err) = amos_convert(&[&args[..], &["--preset", "cifar"]].concat());
        assert!(!ok && err.contains(flag), "{flag} {value}: {err}");
    }
}

#[test]
fn a_corrupt_image_is_reported_and_the_run_goes_on() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("corrupt-dataset");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let src = shared().join("data/cifar10-test2000");
    std::fs::copy(src.join("00000.png"), dir.join("a.png")).expect("copy");
    std::fs::copy(src.join("00001.png"), dir.join("c.png")).expect("copy");
    std::fs::write(dir.join("b.png"), b"\x89PNG\r\n\x1a\nnot really a png").expect("write");
    std::fs::write(
        dir.join("labels.csv"),
        "file,label\na.png,0\nb.png,1\nc.png,0\n",
    )
    .expect("write");
    let model = shared().join("models/cifar10_swish_se.onnx");
    let preds = dir.join("preds.csv");
    let (ok, stdout, stderr) = amos_convert(&[
        "eval",
        model.to_str().expect("path"),
        "--data",
        dir.to_str().expect("path"),
        "--preset",
        "cifar",
        "--predictions",
        preds.to_str().expect("path"),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["images"], 2);
    assert_eq!(v["errors"], 1);
    let text = std::fs::read_to_string(&preds).expect("predictions");
    let bad = text
        .lines()
        .find(|l| l.starts_with("b.png"))
        .expect("a row for b.png");
    assert!(
        bad.contains("b.png") && bad.split(',').next_back().is_some_and(|e| !e.is_empty()),
        "{bad}"
    );
}

#[test]
fn inspect_stages_partitions_lite0_into_balanced_spike_coded_stages() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspect-stages");
    std::fs::create_dir_all(&dir).expect("dir");
    let out = dir.join("lite0.amos");
    let onnx = shared().join("models/efficientnet_lite0.onnx");
    let (ok, _, stderr) = amos_convert(&[
        "convert",
        onnx.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
        "--preset",
        "efficientnet-lite",
    ]);
    assert!(ok, "{stderr}");
    let out = out.to_str().expect("path");
    let v = json(&["inspect", out, "--stages", "4", "--json"]);
    let stages = v["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 4, "{v}");
    let units = v["units"].as_u64().expect("units") as usize;
    let mut seen = vec![0usize; units];
    let mut next_node = 0;
    for s in stages {
        for u in s["units"].as_array().expect("units") {
            seen[u.as_u64().expect("unit id") as usize] += 1;
        }
        assert!(s["cost"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
        assert_eq!(s["nodes"][0], next_node, "stages are contiguous: {s}");
        next_node = s["nodes"][1].as_u64().expect("end");
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "every unit in one stage: {seen:?}"
    );
    assert_eq!(stages[3]["boundary_bytes_per_image"], 0);
    assert_eq!(stages[3]["f32_bytes_per_image"], 0);
    // The pipeline's plan cuts where only unit spikes cross.
    for s in &stages[..3] {
        for c in s["outgoing"].as_array().expect("outgoing") {
            assert_eq!(c["encoding"], "unit", "{c}");
        }
    }
    // Lite0's units are relu6 with K = 10.
    let k = v["unit_table"]
        .as_array()
        .expect("unit table")
        .iter()
        .map(|r| r["k"].as_u64().expect("k"))
        .max()
        .expect("units");
    assert_eq!(k, 10);
    for s in &stages[..3] {
        let bytes = s["boundary_bytes_per_image"].as_u64().expect("bytes");
        let f32_bytes = s["f32_bytes_per_image"].as_u64().expect("f32 bytes");
        assert!(bytes > 0, "a cut carries something: {s}");
        assert!(
            bytes * 32 <= k * f32_bytes,
            "{bytes} > {k}/32 × {f32_bytes}"
        );
    }
    // A plan is deterministic, and more stages than nodes is refused.
    assert_eq!(
        json(&["inspect", out, "--stages", "4", "--json"])["stages"],
        v["stages"]
    );
    let (ok, _, err) = amos_convert(&["inspect", out, "--stages", "100000"]);
    assert!(!ok && err.contains("100000"), "{err}");
}

/// `(image_id, label, ann top-5)` per row of a predictions file.
fn predictions(path: &std::path::Path) -> Vec<(String, String, Vec<String>)> {
    let mut reader = csv::Reader::from_path(path).expect("predictions");
    reader
        .records()
        .map(|r| r.expect("row"))
        .map(|r| {
            let tops = (2..7).map(|i| r[i].to_string()).collect();
            (r[0].to_string(), r[1].to_string(), tops)
        })
        .collect()
}

#[test]
fn eval_reads_webdataset_and_parquet_shards_like_the_image_folder() {
    let n = 24;
    let data = shared().join("data/imagenet-sample");
    let model = shared().join("models/efficientnet_lite0.onnx");
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval-layouts");
    let images = variants::images_of(&data, n);
    variants::write_webdataset(&images, &tmp.join("wds"), 10);
    variants::write_parquet(&images, &tmp.join("pq"), 10, 4);
    let run = |dir: &std::path::Path, extra: &[&str]| {
        let out = tmp.join(format!(
            "{}.csv",
            dir.file_name().and_then(|f| f.to_str()).unwrap_or("x")
        ));
        let mut args = vec![
            "eval",
            model.to_str().expect("path"),
            "--data",
            dir.to_str().expect("path"),
            "--preset",
            "efficientnet-lite",
            "--predictions",
            out.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        let (ok, _, stderr) = amos_convert(&args);
        assert!(ok, "{stderr}");
        predictions(&out)
    };
    let limit = n.to_string();
    let folder = run(&data, &["--limit", &limit]);
    assert_eq!(folder.len(), n);
    for (dir, layout) in [("wds", "webdataset"), ("pq", "parquet")] {
        for extra in [&[][..], &["--layout", layout][..]] {
            let got = run(&tmp.join(dir), extra);
            assert_eq!(got.len(), n, "{dir}");
            for (g, f) in got.iter().zip(&folder) {
                assert_eq!((&g.1, &g.2), (&f.1, &f.2), "{dir}: {} vs {}", g.0, f.0);
                assert!(
                    g.0.contains(".tar#") || g.0.contains(".parquet#"),
                    "{}",
                    g.0
                );
            }
        }
    }
    // Independent check: the top-1 agrees with ONNX Runtime's on PIL input.
    let mut reference =
        csv::Reader::from_path(shared().join("reference/imagenet-sample.lite0.predictions.csv"))
            .expect("csv");
    let agree = reference
        .records()
        .map(|r| r.expect("row"))
        .zip(&folder)
        .filter(|(r, f)| r[2] == f.2[0])
        .count();
    assert!(agree >= n - 1, "{agree}/{n} agree with ONNX Runtime");

    let (ok, _, stderr) = amos_convert(&[
        "eval",
        model.to_str().expect("path"),
        "--data",
        tmp.join("wds").to_str().expect("path"),
        "--preset",
        "efficientnet-lite",
        "--layout",
        "zip",
    ]);
    assert!(!ok && stderr.contains("webdataset"), "{stderr}");
}

#[test]
fn bench_and_decode_bench_report_their_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let onnx = root.join("examples/cifar10/cifar10_swish_se.onnx");
    let images = root.join("examples/cifar10/images");
    let model = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-swish.amos");
    let (ok, _, stderr) = amos_convert(&[
        "convert",
        onnx.to_str().expect("path"),
        "--preset",
        "cifar",
        "-o",
        model.to_str().expect("path"),
        "--fit-steps",
        "200",
    ]);
    assert!(ok, "{stderr}");
    let v = json(&[
        "bench",
        model.to_str().expect("path"),
        "--onnx",
        onnx.to_str().expect("path"),
        "--batch",
        "2",
        "--runs",
        "1",
        "--threads",
        "1",
        "--data",
        images.to_str().expect("path"),
        "--profile",
        "--json",
    ]);
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {v}"));
    for k in ["ort_ips", "ann_ips", "snn_ips"] {
        assert!(f(k) > 0.0, "{k}: {v}");
    }
    assert!((f("snn_over_ort") - f("snn_ips") / f("ort_ips")).abs() < 1e-9);
    assert!((f("ann_over_ort") - f("ann_ips") / f("ort_ips")).abs() < 1e-9);
    let rows = v["profile"].as_array().expect("profile");
    assert!(
        rows.iter().any(|r| r["layer_type"] == "AMOS unit (mul)"),
        "{v}"
    );
    // ONNX Runtime's own profile beside ours, in the same rows: the model's convolutions
    // ran on both sides.
    for layer_type in ["k×k conv (GEMM)", "1×1 conv (GEMM)", "depthwise conv"] {
        let row = rows
            .iter()
            .find(|r| r["layer_type"] == layer_type)
            .unwrap_or_else(|| panic!("no {layer_type} row: {v}"));
        for side in ["ann_ms", "snn_ms", "ort_ms"] {
            assert!(
                row[side].as_f64().is_some_and(|ms| ms > 0.0),
                "{side}: {row}"
            );
        }
    }
    // And convolution by convolution, in the network's order, matched to ONNX Runtime's by
    // their weights' shape: every one on a plane larger than 1×1 (ONNX Runtime runs the SE
    // blocks' 1×1 ones on 1×1 planes as other operators).
    let convs = v["profile_convs"].as_array().expect("profile_convs");
    let mut last = None;
    let mut matched = 0;
    for conv in convs {
        let node = conv["node"].as_u64().expect("node");
        assert!(last.is_none_or(|l| l < node), "not in order: {v}");
        last = Some(node);
        assert_eq!(conv["weights"].as_array().map(Vec::len), Some(4), "{conv}");
        let plane: u64 = conv["output"].as_array().expect("output")[1..]
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .product();
        let sides: &[&str] = if plane > 1 {
            matched += 1;
            &["ann_ms", "snn_ms", "ort_ms"]
        } else {
            &["ann_ms", "snn_ms"]
        };
        for side in sides {
            assert!(
                conv[side].as_f64().is_some_and(|ms| ms > 0.0),
                "{side}: {conv}"
            );
        }
    }
    assert!(matched >= 3, "{v}");
    let d = json(&[
        "decode-bench",
        images.to_str().expect("path"),
        "--preset",
        "cifar",
        "--size",
        "32",
        "--runs",
        "1",
        "--json",
    ]);
    assert_eq!(d["images"], 50);
    assert_eq!(d["errors"], 0);
    assert!(d["ips"].as_f64().unwrap_or(0.0) > 0.0, "{d}");
}
