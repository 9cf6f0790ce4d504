//! Local mode end to end: real models and shared images through 1, 2 and 4 stages and 1 and
//! 2 chains of worker processes give identical per-image predictions and spike counts, the
//! same as single-process `amos-convert eval`; results read back with pyarrow; resume.

mod common;
#[path = "../../io/tests/support/variants.rs"]
mod variants;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{shared, sibling, tmp};

use amos_io::results::{ImageRow, decode_shard};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn coordinator() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amos-coordinator"));
    c.env("AMOS_WORKER_BIN", sibling("amos-worker"));
    c
}

fn convert(onnx: &Path, preset: &str, calibration: Option<&Path>, name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut cmd = Command::new(sibling("amos-convert"));
    cmd.arg("convert").arg(onnx).arg("-o").arg(&out);
    cmd.args(["--preset", preset]);
    // Fidelity is not what these tests check: the fitter's quick budget.
    cmd.args(["--fit-steps", "200", "--fit-samples", "4096"]);
    if let Some(c) = calibration {
        cmd.arg("--calibration").arg(c);
        cmd.args(["--calibration-images", "64"]);
    }
    run(&mut cmd);
    out
}

/// Every row of a run's output, by image id.
fn rows(out: &Path) -> BTreeMap<String, ImageRow> {
    let mut all = BTreeMap::new();
    for e in std::fs::read_dir(out.join("shards")).expect("shards folder") {
        let path = e.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read shard");
        for r in decode_shard(bytes.into()).expect("decode shard").rows {
            assert!(all.insert(r.image_id.clone(), r).is_none(), "duplicate row");
        }
    }
    all
}

fn local(model: &Path, data: &Path, out: &Path, stages: usize, chains: usize, extra: &[&str]) {
    let mut cmd = coordinator();
    cmd.arg("local")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args([
            "--stages",
            &stages.to_string(),
            "--chains",
            &chains.to_string(),
        ])
        .args(["--quiet", "--reference-ann", "--threads", "1"])
        .args(extra);
    run(&mut cmd);
}

/// One row of `amos-convert eval --predictions`.
struct EvalRow {
    /// SNN top-5 then ANN top-5.
    tops: Vec<i32>,
    spikes: u64,
    synops: u64,
}

/// `amos-convert eval --predictions` rows by image id.
fn eval_reference(model: &Path, data: &Path, limit: usize) -> BTreeMap<String, EvalRow> {
    let csv_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-eval.csv",
        model
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
    ));
    run(Command::new(sibling("amos-convert"))
        .arg("eval")
        .arg(model)
        .arg("--data")
        .arg(data)
        .args([
            "--limit",
            &limit.to_string(),
            "--mode",
            "both",
            "--predictions",
        ])
        .arg(&csv_path));
    let mut reader = csv::Reader::from_path(&csv_path).expect("predictions csv");
    let headers = reader.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect("column");
    let mut out = BTreeMap::new();
    for rec in reader.records() {
        let rec = rec.expect("row");
        let tops = ["snn", "ann"]
            .iter()
            .flat_map(|m| (1..=5).map(move |i| format!("{m}_top{i}")))
            .map(|n| rec[col(&n)].parse::<i32>().expect("class index"))
            .collect();
        let count = |n: &str| rec[col(n)].parse::<u64>().expect("count");
        let row = EvalRow {
            tops,
            spikes: count("spikes"),
            synops: count("synops"),
        };
        out.insert(rec[col("image_id")].to_string(), row);
    }
    out
}

fn check_same(
    reference: &BTreeMap<String, ImageRow>,
    got: &BTreeMap<String, ImageRow>,
    what: &str,
) {
    assert_eq!(reference.len(), got.len(), "{what}: row count");
    for (id, r) in reference {
        let g = &got[id];
        assert_eq!(
            (
                &g.snn_top5,
                &g.ann_top5,
                g.spikes,
                g.synops,
                &g.unit_spikes,
                g.neurons,
                &g.error
            ),
            (
                &r.snn_top5,
                &r.ann_top5,
                r.spikes,
                r.synops,
                &r.unit_spikes,
                r.neurons,
                &r.error
            ),
            "{what}: {id} differs"
        );
    }
}

fn check_against_eval(rows: &BTreeMap<String, ImageRow>, eval: &BTreeMap<String, EvalRow>) {
    assert_eq!(rows.len(), eval.len());
    for (id, r) in rows {
        let e = &eval[id];
        let ours: Vec<i32> = r
            .snn_top5
            .expect("snn top-5")
            .into_iter()
            .chain(r.ann_top5.expect("ann top-5"))
            .collect();
        assert_eq!(ours, e.tops, "{id}: top-5 differs from amos-convert eval");
        assert_eq!(
            (r.spikes, r.synops),
            (e.spikes, e.synops),
            "{id}: spikes/synops differ from amos-convert eval"
        );
    }
}

#[test]
fn swish_se_every_configuration_gives_the_same_rows_as_eval() {
    let data = shared().join("data/cifar10-test2000");
    let model = convert(
        &shared().join("models/cifar10_swish_se.onnx"),
        "cifar",
        Some(&data),
        "local-swish-se.amos",
    );
    let limit = 40;
    let eval = eval_reference(&model, &data, limit);
    let common = ["--limit", "40", "--shard-size", "12", "--batch", "5"];
    let base_out = tmp("local-1x1");
    local(&model, &data, &base_out, 1, 1, &common);
    let base = rows(&base_out);
    check_against_eval(&base, &eval);
    for (stages, chains) in [(2, 1), (4, 1), (1, 2), (2, 2)] {
        let out = tmp(&format!("local-{stages}x{chains}"));
        let mut extra = common.to_vec();
        if stages == 4 {
            extra.push("--lz4");
        }
        local(&model, &data, &out, stages, chains, &extra);
        check_same(
            &base,
            &rows(&out),
            &format!("{stages} stages x {chains} chains"),
        );
    }

    // An independent Arrow reader (pyarrow) sees one row per image and the same accuracy
    // as `report --json`.
    let report: serde_json::Value = serde_json::from_str(&run(coordinator()
        .arg("report")
        .arg(&base_out)
        .arg("--json")))
    .expect("report json");
    for key in [
        "images",
        "snn_top1",
        "snn_top5",
        "ann_top1",
        "ann_top5",
        "agreement_top1",
        "mean_spikes",
        "mean_neurons",
        "errors",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}");
    }
    let script = r#"
import sys, json, pyarrow.parquet as pq, pyarrow.compute as pc
t = pq.read_table(sys.argv[1] + "/shards")
layers = pq.read_table(sys.argv[1] + "/layers.parquet")
ok = t.filter(pc.is_null(t["error"]))
print(json.dumps({
  "rows": t.num_rows,
  "unique": len(set(t["image_id"].to_pylist())),
  "snn_top1": 100.0 * pc.sum(ok["snn_top1_correct"]).as_py() / ok.num_rows,
  "units": layers.num_rows,
  "unit_spikes_len": len(t["unit_spikes"][0].as_py()),
  "sha": pq.read_metadata(sys.argv[1] + "/layers.parquet").metadata[b"amos.model_sha256"].decode(),
}))
"#;
    let py: serde_json::Value = serde_json::from_str(&run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&base_out)))
    .expect("pyarrow output");
    assert_eq!(py["rows"], limit);
    assert_eq!(py["unique"], limit);
    assert_eq!(py["units"], py["unit_spikes_len"]);
    let diff =
        py["snn_top1"].as_f64().unwrap_or(-1.0) - report["snn_top1"].as_f64().unwrap_or(-2.0);
    assert!(
        diff.abs() < 1e-9,
        "pyarrow top-1 {} vs report {}",
        py["snn_top1"],
        report["snn_top1"]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base_out.join("_manifest.json")).expect("manifest"))
            .expect("manifest json");
    assert_eq!(manifest["model_sha256"], py["sha"]);
    assert_eq!(manifest["shards"].as_array().map(Vec::len), Some(4));

    // Resume: a shard removed from the output is rerun; the others are kept.
    std::fs::remove_file(base_out.join("shards/shard-000001.parquet")).expect("remove a shard");
    let again: serde_json::Value = serde_json::from_str(&run(coordinator()
        .arg("local")
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&base_out)
        .args(["--quiet", "--json", "--reference-ann"])
        .args(common)))
    .expect("outcome json");
    assert_eq!(again["resumed_shards"], 3);
    assert_eq!(again["images_run"], 12);
    check_same(&base, &rows(&base_out), "resumed");
}

/// The rows of `got` in id order, against `reference`'s in id order: the same images
/// repacked, whose ids differ.
fn check_same_in_order(
    reference: &BTreeMap<String, ImageRow>,
    got: &BTreeMap<String, ImageRow>,
    what: &str,
) {
    assert_eq!(reference.len(), got.len(), "{what}: row count");
    for ((rid, r), (gid, g)) in reference.iter().zip(got) {
        assert_eq!(
            (
                g.label,
                &g.snn_top5,
                &g.ann_top5,
                g.spikes,
                g.synops,
                &g.unit_spikes
            ),
            (
                r.label,
                &r.snn_top5,
                &r.ann_top5,
                r.spikes,
                r.synops,
                &r.unit_spikes
            ),
            "{what}: {gid} differs from {rid}"
        );
    }
}

#[test]
fn webdataset_and_parquet_shards_give_the_same_rows() {
    let data = shared().join("data/cifar10-test2000");
    let model = convert(
        &shared().join("models/cifar10_swish_se.onnx"),
        "cifar",
        None,
        "local-swish-se-layouts.amos",
    );
    let common = ["--limit", "40", "--shard-size", "16", "--batch", "5"];
    let base_out = tmp("layouts-csv");
    local(&model, &data, &base_out, 2, 1, &common);
    let base = rows(&base_out);

    let mut images = variants::images_of(&data, 40);
    let root = tmp("layouts-data");
    let tars = variants::write_webdataset(&images, &root.join("wds"), 16);
    variants::write_parquet(&images, &root.join("pq"), 20, 8);
    let shards = ["--batch", "5"];
    for (dir, expect_shards) in [("wds", tars.len()), ("pq", 2)] {
        let out = tmp(&format!("layouts-{dir}"));
        local(&model, &root.join(dir), &out, 2, 1, &shards);
        check_same_in_order(&base, &rows(&out), dir);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).expect("manifest"))
                .expect("manifest json");
        assert_eq!(
            manifest["shards"].as_array().map(Vec::len),
            Some(expect_shards),
            "{dir}: one shard per file"
        );
    }

    // A corrupt sample becomes a row with its error; the rest of its shard is evaluated.
    images.push(variants::PackedImage {
        key: "zz-corrupt".into(),
        label: Some(3),
        ext: "png".into(),
        bytes: b"\x89PNG but not really".to_vec(),
    });
    variants::write_webdataset(&images, &root.join("wds-bad"), 16);
    let out = tmp("layouts-wds-bad");
    local(
        &model,
        &root.join("wds-bad"),
        &out,
        2,
        1,
        &["--layout", "webdataset"],
    );
    let got = rows(&out);
    assert_eq!(got.len(), 41);
    let bad = &got["shard-00002.tar#zz-corrupt"];
    assert!(
        bad.error
            .as_deref()
            .is_some_and(|e| e.contains("zz-corrupt")),
        "{:?}",
        bad.error
    );
    let good: BTreeMap<String, ImageRow> =
        got.into_iter().filter(|(_, r)| r.error.is_none()).collect();
    check_same_in_order(&base, &good, "wds with a corrupt sample");

    // A tar with no samples at all fails its shard with a message naming it (exit code 2).
    let empty = root.join("wds-empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    tar::Builder::new(std::fs::File::create(empty.join("empty.tar")).expect("create tar"))
        .into_inner()
        .expect("finish tar");
    let o = coordinator()
        .arg("local")
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&empty)
        .arg("--out")
        .arg(tmp("layouts-wds-empty"))
        .args(["--quiet", "--max-attempts", "1"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("empty.tar: holds no samples"), "{err}");
}

#[test]
fn lite0_four_stages_match_one_stage_and_eval() {
    let data = shared().join("data/imagenet-sample");
    let model = convert(
        &shared().join("models/efficientnet_lite0.onnx"),
        "efficientnet-lite",
        None,
        "local-lite0.amos",
    );
    let eval = eval_reference(&model, &data, 6);
    let common = ["--limit", "6", "--shard-size", "3", "--batch", "2"];
    let one = tmp("lite0-1x1");
    local(&model, &data, &one, 1, 1, &common);
    let base = rows(&one);
    check_against_eval(&base, &eval);
    let four = tmp("lite0-4x1");
    local(&model, &data, &four, 4, 1, &common);
    check_same(&base, &rows(&four), "lite0 4 stages");
}

#[test]
fn clear_errors_for_bad_runs() {
    let data = shared().join("data/cifar10-test2000");
    let out = tmp("bad-run");
    // No such model.
    let o = coordinator()
        .args(["local", "--model", "/nonexistent/model.amos", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--quiet")
        .output()
        .expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("model.amos"), "{err}");
    // Workers that do not form chains.
    let o = coordinator()
        .args([
            "run",
            "--model",
            "m.amos",
            "--workers",
            "a:1,b:2,c:3",
            "--stages",
            "2",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 workers cannot form chains of 2"));
    // Report of an empty output.
    let o = coordinator().arg("report").arg(&out).output().expect("run");
    assert!(!o.status.success());
}
