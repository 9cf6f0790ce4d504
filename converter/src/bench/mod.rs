//! `amos-convert bench`: our ANN and SNN modes against ONNX Runtime on the same batch, in
//! the same run.
//!
//! ONNX Runtime runs from its Python package (`pip install -r tests/requirements.txt`), as
//! a child process given the ONNX file and the normalised batch as `.npy`; it runs with
//! `intra_op_num_threads` = our thread count and sequential execution. Each side does one
//! warm-up run and then `runs` timed runs of the whole batch; throughput is images over the
//! median time.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use amos_snn::ops::{GateKind, Op, OpClass};
use amos_snn::simulate::SpikingNetwork;
use npyz::WriterBuilder;
use serde::Serialize;

use crate::error::ConvertError;

/// The ONNX Runtime side, run by `python3 -c`.
const ORT_SCRIPT: &str = include_str!("ort_bench.py");

/// What one benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub batch: usize,
    pub threads: usize,
    pub runs: usize,
    /// Images per second: ONNX Runtime on the ONNX file, our ANN mode, our SNN mode.
    pub ort_ips: f64,
    pub ann_ips: f64,
    pub snn_ips: f64,
    pub snn_over_ort: f64,
    pub ann_over_ort: f64,
    /// Seconds of each timed run.
    pub ort_seconds: Vec<f64>,
    pub ann_seconds: Vec<f64>,
    pub snn_seconds: Vec<f64>,
    pub ort_version: String,
    /// With profiling: milliseconds per image by layer type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<ProfileRow>>,
}

/// Where the time of one image goes, for one layer type.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    pub layer_type: String,
    pub ann_ms: f64,
    pub snn_ms: f64,
}

/// The layer type a node's time is counted under; in SNN mode a gate is its AMOS unit.
fn layer_type(op: &Op, snn: bool) -> String {
    match (op, op.class()) {
        (_, OpClass::Gate(g)) if snn && g != GateKind::MaxPool => {
            format!("AMOS unit ({})", g.name())
        }
        (_, OpClass::Gate(g)) => format!("gate ({})", g.name()),
        (Op::Conv(c), _) if c.is_depthwise() => "depthwise conv".into(),
        (Op::Conv(c), _) if c.is_pointwise() => "1×1 conv (GEMM)".into(),
        (Op::Conv(_), _) => "k×k conv (im2col + GEMM)".into(),
        (Op::Linear(_), _) => "linear (GEMM)".into(),
        (Op::Binary(_), _) => "elementwise add/mul".into(),
        (Op::AvgPool(_) | Op::GlobalAvgPool | Op::ReduceMean(_), _) => "pooling".into(),
        _ => "other".into(),
    }
}

/// Milliseconds per image by layer type, from one profiled ANN and one SNN run.
fn profile(net: &SpikingNetwork, images: &[&[u8]]) -> Result<Vec<ProfileRow>, ConvertError> {
    let engine = net.engine();
    let nodes = &engine.graph().nodes;
    let mut rows: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for snn in [false, true] {
        engine.start_profile();
        if snn {
            net.run_snn(images)?;
        } else {
            net.run_ann(images)?;
        }
        let seconds = engine.take_profile().unwrap_or_default();
        for (node, s) in nodes.iter().zip(seconds) {
            // Gates count under their unit in both modes, so the rows line up.
            let row = rows.entry(layer_type(&node.op, true)).or_default();
            // Images run in parallel, one per thread: the nodes' times add up over the
            // images running at once, which divides out to wall time.
            let at_once = engine.threads().min(images.len()).max(1) as f64;
            let ms = 1e3 * s / images.len() as f64 / at_once;
            if snn {
                row.1 += ms;
            } else {
                row.0 += ms;
            }
        }
    }
    let mut out: Vec<ProfileRow> = rows
        .into_iter()
        .map(|(layer_type, (ann_ms, snn_ms))| ProfileRow {
            layer_type,
            ann_ms,
            snn_ms,
        })
        .collect();
    out.sort_by(|a, b| b.snn_ms.total_cmp(&a.snn_ms));
    Ok(out)
}

/// `n` images of `per_image` seeded pseudo-random bytes (SplitMix64): the same pixels on
/// every run and machine, for benchmarks without a dataset.
pub fn noise_images(n: usize, per_image: usize) -> Vec<Vec<u8>> {
    let mut state = 0x5EEDu64;
    (0..n)
        .map(|_| {
            (0..per_image)
                .map(|_| {
                    state = state.wrapping_add(0x9E3779B97F4A7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
                    (z ^ (z >> 31)) as u8
                })
                .collect()
        })
        .collect()
}

fn median(seconds: &[f64]) -> f64 {
    let mut s = seconds.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Seconds of one warm-up and then `runs` timed calls of `f`.
fn time_runs<E>(runs: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Vec<f64>, E> {
    f()?;
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f().map(|()| start.elapsed().as_secs_f64())
        })
        .collect()
}

/// Times ONNX Runtime on `onnx` with the batch `input` (NCHW, normalised).
fn ort_seconds(
    onnx: &Path,
    input: &amos_snn::Tensor,
    threads: usize,
    runs: usize,
) -> Result<(Vec<f64>, String), ConvertError> {
    let bench_err = ConvertError::Bench;
    let npy = std::env::temp_dir().join(format!("amos-bench-{}.npy", std::process::id()));
    let shape: Vec<u64> = input.shape().iter().map(|&d| d as u64).collect();
    let write = || -> std::io::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(&npy)?);
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(file)
            .begin_nd()?;
        w.extend(input.data().iter().copied())?;
        w.finish()
    };
    write().map_err(|e| bench_err(format!("writing {}: {e}", npy.display())))?;
    let out = Command::new("python3")
        .arg("-c")
        .arg(ORT_SCRIPT)
        .arg(onnx)
        .arg(&npy)
        .arg(threads.to_string())
        .arg(runs.to_string())
        .output();
    let _ = std::fs::remove_file(&npy);
    let out = out.map_err(|e| bench_err(format!("cannot run python3: {e}")))?;
    if !out.status.success() {
        return Err(bench_err(format!(
            "python3 failed (is onnxruntime installed? pip install -r tests/requirements.txt): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| bench_err(format!("unexpected output ({e})")))?;
    let seconds = v["seconds"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_f64()).collect::<Vec<_>>())
        .filter(|s| s.len() == runs)
        .ok_or_else(|| bench_err("no timings in its output".into()))?;
    Ok((seconds, v["version"].as_str().unwrap_or("?").to_string()))
}

/// Benchmarks `net` (with `threads` engine threads) on `images` (HWC u8 at the model's input
/// size, one batch) against ONNX Runtime on `onnx`.
pub fn bench(
    net: &SpikingNetwork,
    onnx: &Path,
    images: &[Vec<u8>],
    runs: usize,
    with_profile: bool,
) -> Result<BenchReport, ConvertError> {
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let runs = runs.max(1);
    let threads = net.engine().threads();
    let input = net.normalise(&refs)?;
    let (ort, ort_version) = ort_seconds(onnx, &input, threads, runs)?;
    let ann = time_runs(runs, || net.run_ann(&refs).map(drop))?;
    let snn = time_runs(runs, || net.run_snn(&refs).map(drop))?;
    let ips = |s: &[f64]| images.len() as f64 / median(s);
    let (ort_ips, ann_ips, snn_ips) = (ips(&ort), ips(&ann), ips(&snn));
    Ok(BenchReport {
        batch: images.len(),
        threads,
        runs,
        ort_ips,
        ann_ips,
        snn_ips,
        snn_over_ort: snn_ips / ort_ips,
        ann_over_ort: ann_ips / ort_ips,
        ort_seconds: ort,
        ann_seconds: ann,
        snn_seconds: snn,
        ort_version,
        profile: if with_profile {
            Some(profile(net, &refs)?)
        } else {
            None
        },
    })
}
