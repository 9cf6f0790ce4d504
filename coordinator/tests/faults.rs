//! Faults in a real run (ARCHITECTURE.md §5): a worker SIGKILLed mid-run, the coordinator
//! SIGKILLed and restarted into the same output, a worker SIGSTOPped past the stall timeout.
//! Each run ends with exactly one row per image, with the same predictions and spike counts
//! as an undisturbed run.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use amos_io::results::{ImageRow, decode_shard};
use common::{Guard, free_port, shared, sibling, tmp, worker_command};

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Lite0 converted once (its SNN runs slowly enough to interrupt mid-run).
fn model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-lite0.amos");
        let status = Command::new(sibling("amos-convert"))
            .arg("convert")
            .arg(shared().join("models/efficientnet_lite0.onnx"))
            .arg("-o")
            .arg(&out)
            .args(["--preset", "efficientnet-lite"])
            .output()
            .expect("run amos-convert");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        out
    })
}

const IMAGES: usize = 48;

/// The tests run one at a time: their timing (stall timeouts) assumes the machine is theirs.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_worker() -> (Guard, String) {
    let mut cmd = worker_command();
    cmd.env("RUST_LOG", "error").stderr(Stdio::null());
    common::start_worker(cmd)
}

/// `count` workers and a coordinator over them (2 stages per chain) serving metrics on the
/// returned port.
fn start_run(count: usize, out: &Path, stall_s: u64) -> (Vec<(Guard, String)>, u16, Child) {
    let workers: Vec<(Guard, String)> = (0..count).map(|_| start_worker()).collect();
    let addrs: Vec<String> = workers.iter().map(|(_, a)| a.clone()).collect();
    let port = free_port();
    let child = coordinator(&addrs, out, port, stall_s)
        .spawn()
        .expect("start coordinator");
    (workers, port, child)
}

/// `amos-coordinator run` over 2 chains × 2 stages of `workers`, serving metrics on `port`.
fn coordinator(workers: &[String], out: &Path, metrics: u16, stall_s: u64) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amos-coordinator"));
    c.arg("run")
        .arg("--model")
        .arg(model())
        .arg("--data")
        .arg(shared().join("data/imagenet-sample"))
        .arg("--out")
        .arg(out)
        .args(["--workers", &workers.join(","), "--stages", "2"])
        .args([
            "--limit",
            &IMAGES.to_string(),
            "--shard-size",
            "4",
            "--batch",
            "2",
        ])
        .args(["--threads", "1", "--quiet", "--json", "--max-attempts", "6"])
        .args(["--stall-timeout-s", &stall_s.to_string()])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A coordinator metric, or None while it is not serving yet.
fn metric(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the coordinator's `name` reaches `at_least`.
fn wait_for(port: u16, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while metric(port, name).is_none_or(|v| v < at_least) {
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("coordinator output");
    assert!(
        out.status.success(),
        "coordinator failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("outcome json")
}

/// Every row by image id, asserting each image appears exactly once.
fn rows(out: &Path) -> BTreeMap<String, ImageRow> {
    let mut all = BTreeMap::new();
    for e in std::fs::read_dir(out.join("shards")).expect("shards folder") {
        let path = e.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read shard");
        for r in decode_shard(bytes.into()).expect("decode shard").rows {
            let id = r.image_id.clone();
            assert!(all.insert(id.clone(), r).is_none(), "{id} appears twice");
        }
    }
    assert_eq!(all.len(), IMAGES, "one row per image");
    all
}

/// The rows of an undisturbed run (computed once).
fn reference() -> &'static BTreeMap<String, ImageRow> {
    static ROWS: OnceLock<BTreeMap<String, ImageRow>> = OnceLock::new();
    ROWS.get_or_init(|| {
        let out = tmp("faults-reference");
        let (_workers, _, child) = start_run(4, &out, 300);
        finish(child);
        rows(&out)
    })
}

fn assert_same(got: &BTreeMap<String, ImageRow>) {
    for (id, r) in reference() {
        let g = &got[id];
        assert_eq!(
            (&g.snn_top5, g.spikes, g.synops, &g.unit_spikes, &g.error),
            (&r.snn_top5, r.spikes, r.synops, &r.unit_spikes, &r.error),
            "{id} differs from the undisturbed run"
        );
    }
}

#[test]
fn a_worker_killed_mid_run_loses_no_image() {
    let _serial = serial();
    reference();
    let out = tmp("faults-kill-worker");
    let (w, port, child) = start_run(4, &out, 300);
    wait_for(port, "amos_coordinator_images_done", 6.0);
    // Chain 1's second stage dies with shards in flight.
    signal(w[3].0.0.id(), "-KILL");
    let outcome = finish(child);
    assert_eq!(
        outcome["failed"].as_array().map(Vec::len),
        Some(0),
        "{outcome}"
    );
    assert!(outcome["retries"].as_u64().unwrap_or(0) >= 1, "{outcome}");
    assert_same(&rows(&out));
    drop(w);
}

#[test]
fn a_coordinator_killed_and_restarted_resumes_exactly_once() {
    let _serial = serial();
    reference();
    let out = tmp("faults-kill-coordinator");
    let (w, port, mut child) = start_run(4, &out, 300);
    wait_for(port, "amos_coordinator_shards_done", 2.0);
    signal(child.id(), "-KILL");
    let _ = child.wait();
    assert!(
        !out.join("_manifest.json").exists(),
        "an interrupted run has no manifest"
    );
    let addrs: Vec<String> = w.iter().map(|(_, a)| a.clone()).collect();
    let again = coordinator(&addrs, &out, free_port(), 300)
        .spawn()
        .expect("restart coordinator");
    let outcome = finish(again);
    assert!(
        outcome["resumed_shards"].as_u64().unwrap_or(0) >= 2,
        "{outcome}"
    );
    assert!(out.join("_manifest.json").exists());
    assert_same(&rows(&out));
}

#[test]
fn a_stopped_worker_times_out_and_its_shard_runs_elsewhere() {
    let _serial = serial();
    reference();
    let out = tmp("faults-stop-worker");
    let (w, port, child) = start_run(4, &out, 3);
    wait_for(port, "amos_coordinator_images_done", 6.0);
    let stopped = w[2].0.0.id();
    signal(stopped, "-STOP");
    wait_for(port, "amos_coordinator_shard_retries", 1.0);
    let outcome = finish(child);
    signal(stopped, "-CONT");
    assert_eq!(
        outcome["failed"].as_array().map(Vec::len),
        Some(0),
        "{outcome}"
    );
    assert!(outcome["retries"].as_u64().unwrap_or(0) >= 1, "{outcome}");
    assert_same(&rows(&out));
}

#[test]
fn shards_that_cannot_complete_are_named_and_fail_the_run() {
    let _serial = serial();
    let out = tmp("faults-no-chain-left");
    let (w, port, child) = start_run(2, &out, 300);
    wait_for(port, "amos_coordinator_images_done", 2.0);
    // The only chain loses its last stage.
    signal(w[1].0.0.id(), "-KILL");
    let result = child.wait_with_output().expect("coordinator output");
    assert_eq!(
        result.status.code(),
        Some(2),
        "exit code 2 when shards fail"
    );
    let outcome: serde_json::Value = serde_json::from_slice(&result.stdout).expect("outcome json");
    let failed = outcome["failed"].as_array().expect("failed list");
    assert!(!failed.is_empty(), "{outcome}");
    assert!(
        failed
            .iter()
            .all(|f| f["shard"].is_u64() && f["error"].is_string())
    );
    assert!(
        !out.join("_manifest.json").exists(),
        "an incomplete run has no manifest"
    );
    // What was committed is complete and never duplicated.
    if out.join("shards").exists() {
        for e in std::fs::read_dir(out.join("shards")).expect("shards") {
            let bytes = std::fs::read(e.expect("entry").path()).expect("read");
            assert_eq!(decode_shard(bytes.into()).expect("decode").rows.len(), 4);
        }
    }
}
