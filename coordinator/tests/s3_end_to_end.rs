//! A real S3 round trip: a moto S3 server on loopback (pinned in tests/requirements.txt),
//! the model and images uploaded with boto3, `amos-coordinator run` against two
//! `amos-worker` processes with `s3://` URLs for model, data and output, credentials and
//! endpoint from the standard AWS environment variables; the Parquet results read back from
//! S3 by pyarrow and checked against `amos-convert eval` on the same images.

mod common;
#[path = "../../io/tests/support/variants.rs"]
mod variants;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Guard, free_port, shared, sibling, worker_command};
use std::time::{Duration, Instant};

fn aws_env<'a>(cmd: &'a mut Command, endpoint: &str) -> &'a mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start_worker(endpoint: &str, metrics: Option<u16>) -> (Guard, String) {
    let mut cmd = worker_command();
    aws_env(&mut cmd, endpoint).env("RUST_LOG", "warn");
    if let Some(port) = metrics {
        cmd.args(["--metrics", &format!("127.0.0.1:{port}")]);
    }
    common::start_worker(cmd)
}

/// The body of `GET path` on a loopback port.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

const UPLOAD: &str = r#"
import sys, boto3
endpoint, model, data, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
s3.create_bucket(Bucket="amos")
s3.upload_file(model, "amos", "models/swish-se.amos")
lines = open(data + "/labels.csv").read().splitlines()
rows = lines[1:1 + n]
s3.put_object(Bucket="amos", Key="data/labels.csv", Body=("\n".join([lines[0]] + rows) + "\n").encode())
for r in rows:
    f = r.split(",")[0]
    s3.upload_file(data + "/" + f, "amos", "data/" + f)
print(len(rows))
"#;

/// Uploads a local folder's files under a key prefix: `endpoint dir prefix`.
const UPLOAD_TREE: &str = r#"
import sys, os, boto3
endpoint, root, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
n = 0
for d, _, files in os.walk(root):
    for f in files:
        path = os.path.join(d, f)
        s3.upload_file(path, "amos", prefix + "/" + os.path.relpath(path, root))
        n += 1
print(n)
"#;

const CHECK: &str = r#"
import sys, csv, json
import pyarrow.parquet as pq, pyarrow.fs as pafs
endpoint, preds = sys.argv[1], sys.argv[2]
fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="testing",
                       secret_key="testing", region="us-east-1")
t = pq.read_table("amos/out/shards", filesystem=fs)
layers = pq.read_table("amos/out/layers.parquet", filesystem=fs)
manifest = json.loads(fs.open_input_stream("amos/out/_manifest.json").read())
ref = {r["image_id"]: r for r in csv.DictReader(open(preds))}
rows = t.to_pylist()
mismatch = [r["image_id"] for r in rows
            if [str(c) for c in r["snn_top5"]] != [ref[r["image_id"]][f"snn_top{i}"] for i in range(1, 6)]
            or str(r["spikes"]) != ref[r["image_id"]]["spikes"]
            or [str(c) for c in r["ann_top5"]] != [ref[r["image_id"]][f"ann_top{i}"] for i in range(1, 6)]]
print(json.dumps({
    "rows": t.num_rows,
    "unique": len({r["image_id"] for r in rows}),
    "mismatch": mismatch,
    "units": layers.num_rows,
    "manifest_shards": len(manifest["shards"]),
    "top1": sum(r["snn_top1_correct"] for r in rows) / len(rows),
}))
"#;

#[test]
fn s3_run_with_two_workers_matches_eval() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("s3-e2e");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("data")).expect("tmp dir");

    // The S3 server.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let _moto = Guard(
        Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto (pip install -r tests/requirements.txt)"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A converted model and 24 images, uploaded.
    let cifar = shared().join("data/cifar10-test2000");
    let model = tmp.join("swish-se.amos");
    ok(Command::new(sibling("amos-convert"))
        .arg("convert")
        .arg(shared().join("models/cifar10_swish_se.onnx"))
        .arg("-o")
        .arg(&model)
        .args(["--preset", "cifar", "--calibration"])
        .arg(&cifar)
        .args(["--calibration-images", "64"])
        .args(["--fit-steps", "200", "--fit-samples", "4096"]));
    let n = 24;
    let uploaded = ok(Command::new("python3")
        .args(["-c", UPLOAD, &endpoint])
        .arg(&model)
        .arg(&cifar)
        .arg(n.to_string()));
    assert_eq!(uploaded.trim(), n.to_string());

    // Two workers, one chain of two stages, everything in S3.
    let metrics_port = free_port();
    let (_w0, a0) = start_worker(&endpoint, Some(metrics_port));
    let (_w1, a1) = start_worker(&endpoint, None);
    let run = |data: &str, out: &str| -> serde_json::Value {
        let out = ok(aws_env(
            &mut Command::new(env!("CARGO_BIN_EXE_amos-coordinator")),
            &endpoint,
        )
        .args(["run", "--model", "s3://amos/models/swish-se.amos"])
        .args(["--data", data, "--out", out])
        .args(["--workers", &format!("{a0},{a1}"), "--stages", "2"])
        .args(["--reference-ann", "--shard-size", "10", "--batch", "4"])
        .args(["--quiet", "--json"]));
        serde_json::from_str(&out).expect("outcome json")
    };
    let outcome = run("s3://amos/data", "s3://amos/out");
    assert_eq!(outcome["images_run"], n, "{outcome}");
    assert_eq!(outcome["failed"].as_array().map(Vec::len), Some(0));

    // Stage 0's metrics: every image, and exactly the planned spike bytes per image.
    let metrics = http_get(metrics_port, "/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in:\n{metrics}"))
    };
    assert_eq!(value("amos_worker_images_total"), n as f64);
    let planned = outcome["manifest"]["settings"]["boundary_bytes_per_image"][0]
        .as_f64()
        .expect("boundary bytes");
    let per_image = value("amos_worker_spike_bytes_sent_total") / n as f64;
    assert!(
        (per_image - planned).abs() < 1.0,
        "{per_image} spike bytes per image sent, {planned} planned"
    );

    // The same images evaluated in one process from a local copy.
    let local = tmp.join("data");
    let mut manifest = String::from("file,label\n");
    let labels = std::fs::read_to_string(cifar.join("labels.csv")).expect("labels");
    for row in labels.lines().skip(1).take(n) {
        let file = row.split(',').next().expect("file column");
        std::fs::copy(cifar.join(file), local.join(file)).expect("copy image");
        manifest.push_str(row);
        manifest.push('\n');
    }
    std::fs::write(local.join("labels.csv"), manifest).expect("manifest");
    let preds = tmp.join("eval.csv");
    ok(Command::new(sibling("amos-convert"))
        .arg("eval")
        .arg(&model)
        .arg("--data")
        .arg(&local)
        .args(["--mode", "both", "--predictions"])
        .arg(&preds));

    // pyarrow reads the results from S3.
    let check: serde_json::Value = serde_json::from_str(&ok(Command::new("python3")
        .args(["-c", CHECK, &endpoint])
        .arg(&preds)))
    .expect("check json");
    assert_eq!(check["rows"], n, "{check}");
    assert_eq!(check["unique"], n, "{check}");
    assert_eq!(
        check["mismatch"].as_array().map(Vec::len),
        Some(0),
        "{check}"
    );
    assert_eq!(check["manifest_shards"], 3, "{check}");
    assert!(check["units"].as_u64().unwrap_or(0) > 0, "{check}");

    // Rerunning into the same output keeps every committed shard.
    let again = run("s3://amos/data", "s3://amos/out");
    assert_eq!(again["resumed_shards"], 3, "{again}");
    assert_eq!(again["images_run"], 0, "{again}");

    // The same images as WebDataset and Parquet shards in the bucket: one shard per file,
    // and the same figures as the manifest layout.
    let report = |out: &str| -> serde_json::Value {
        let text = ok(aws_env(
            &mut Command::new(env!("CARGO_BIN_EXE_amos-coordinator")),
            &endpoint,
        )
        .args(["report", out, "--json"]));
        serde_json::from_str(&text).expect("report json")
    };
    let reference = report("s3://amos/out");
    let images = variants::images_of(&cifar, n);
    variants::write_webdataset(&images, &tmp.join("wds"), 10);
    variants::write_parquet(&images, &tmp.join("pq"), 16, 5);
    for (dir, files) in [("wds", 3), ("pq", 2)] {
        let up = ok(Command::new("python3")
            .args(["-c", UPLOAD_TREE, &endpoint])
            .arg(tmp.join(dir))
            .arg(dir));
        assert_eq!(up.trim(), files.to_string());
        let out = format!("s3://amos/out-{dir}");
        let outcome = run(&format!("s3://amos/{dir}"), &out);
        assert_eq!(outcome["images_run"], n, "{dir}: {outcome}");
        assert_eq!(
            outcome["manifest"]["shards"].as_array().map(Vec::len),
            Some(files),
            "{dir}: {outcome}"
        );
        let got = report(&out);
        for key in [
            "images",
            "snn_top1",
            "ann_top1",
            "agreement_top1",
            "mean_spikes",
            "mean_synops",
        ] {
            assert_eq!(got[key], reference[key], "{dir}: {key}");
        }
    }
}
