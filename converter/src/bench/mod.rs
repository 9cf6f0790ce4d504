//! `amos-convert bench`: our ANN and SNN modes against ONNX Runtime on the same batch, in
//! the same run.
//!
//! ONNX Runtime runs from its Python package (`pip install -r tests/requirements.txt`), as
//! a child process given the ONNX file and the normalised batch as `.npy`; it runs with
//! `intra_op_num_threads` = our thread count and sequential execution. Each side does one
//! warm-up run; then ONNX Runtime, our ANN mode and our SNN mode run the whole batch in turn,
//! `runs` times (the child times one run per request), so that a machine whose speed drifts
//! during the benchmark slows all three alike. Throughput is images over the median time.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
    /// With profiling: milliseconds per image of each convolution, in the network's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_convs: Option<Vec<ConvProfileRow>>,
}

/// Where the time of one image goes, for one layer type: ours in each mode (0 where we have
/// no such layer) and ONNX Runtime's (its own per-node profile; `None` where it has none).
#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    pub layer_type: String,
    pub ann_ms: f64,
    pub snn_ms: f64,
    pub ort_ms: Option<f64>,
}

/// Where the time of one image goes in one convolution: ours in each mode (in SNN mode with
/// the unit fused into it, if one is) and ONNX Runtime's for the convolution with the same
/// weights' shape at the same place in its order of nodes (`None` where none matches).
#[derive(Clone, Debug, Serialize)]
pub struct ConvProfileRow {
    /// The node's index in the converted graph.
    pub node: usize,
    pub layer_type: String,
    /// `[C_out, C_in / groups, kH, kW]`.
    pub weights: Vec<usize>,
    /// `[C_out, OH, OW]`.
    pub output: Vec<usize>,
    pub ann_ms: f64,
    pub snn_ms: f64,
    pub ort_ms: Option<f64>,
}

/// For each of our convolutions' weight shapes in order, the time of ONNX Runtime's
/// convolution that matches it: the next one in ONNX Runtime's order with the same shape
/// ([`same_weights`]), from after the last one matched. ONNX Runtime may run nodes we folded
/// away, or none for one we kept; those are skipped over, and ours then gets `None`.
fn match_in_order(ours: &[Vec<usize>], theirs: &[(Vec<usize>, f64)]) -> Vec<Option<f64>> {
    let mut next = 0;
    ours.iter()
        .map(|shape| {
            let found = theirs[next..]
                .iter()
                .position(|(s, _)| same_weights(shape, s))?;
            next += found + 1;
            Some(theirs[next - 1].1)
        })
        .collect()
}

/// Whether ONNX Runtime's weights of shape `theirs` are ours of shape `ours`: the same, or
/// with the output and input channels padded to its NCHWc block (8 channels where the CPU
/// has AVX2, 16 where it has AVX-512: its profile then shows a `[24, 32, 1, 1]` convolution
/// as `[32, 32, 1, 1]`).
fn same_weights(ours: &[usize], theirs: &[usize]) -> bool {
    let padded = |ours: usize, theirs: usize| {
        theirs == ours
            || [8, 16]
                .iter()
                .any(|&block| theirs == ours.next_multiple_of(block))
    };
    ours.len() == theirs.len()
        && ours.len() >= 2
        && padded(ours[0], theirs[0])
        && padded(ours[1], theirs[1])
        && ours[2..] == theirs[2..]
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
        (Op::Conv(_), _) => "k×k conv (GEMM)".into(),
        (Op::Linear(_), _) => "linear (GEMM)".into(),
        (Op::Binary(_), _) => "elementwise add/mul".into(),
        (Op::AvgPool(_) | Op::GlobalAvgPool | Op::ReduceMean(_), _) => "pooling".into(),
        _ => "other".into(),
    }
}

/// The layer type (as [`layer_type`] names ours) of ONNX Runtime's nodes of operator type
/// `op`; `conv_kind` is a convolution's kind as `ort_bench.py` tells it ("pointwise",
/// "depthwise", "kxk"), empty for other operators. ONNX Runtime fuses a ReLU or clip into its
/// convolution, and a swish into one `QuickGelu` node: its activations keep their own rows.
pub fn ort_layer_type(op: &str, conv_kind: &str) -> String {
    match (op, conv_kind) {
        (_, "pointwise") => "1×1 conv (GEMM)".into(),
        (_, "depthwise") => "depthwise conv".into(),
        (_, "kxk") => "k×k conv (GEMM)".into(),
        ("Gemm" | "MatMul" | "FusedGemm" | "FusedMatMul", _) => "linear (GEMM)".into(),
        ("GlobalAveragePool" | "AveragePool" | "ReduceMean", _) => "pooling".into(),
        ("MaxPool" | "GlobalMaxPool", _) => "gate (maxpool)".into(),
        ("Add" | "Sub" | "Mul" | "Div" | "Sum", _) => "elementwise add/mul".into(),
        (
            "Relu" | "Clip" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "QuickGelu" | "Tanh"
            | "LeakyRelu" | "Elu" | "Gelu" | "FastGelu" | "Softplus" | "Swish",
            _,
        ) => format!("ORT activation ({op})"),
        _ => "other".into(),
    }
}

/// Profiled runs of each mode whose median [`profile`] reports, and of ONNX Runtime's.
const PROFILED_RUNS: usize = 3;

/// Milliseconds per image by layer type and per convolution, the median of
/// [`PROFILED_RUNS`] profiled runs of each mode, beside ONNX Runtime's (its profile: per
/// operator type and convolution kind, and per convolution, seconds for the batch).
fn profile(
    net: &SpikingNetwork,
    images: &[&[u8]],
    ort_profile: &OrtProfile,
) -> Result<(Vec<ProfileRow>, Vec<ConvProfileRow>), ConvertError> {
    let OrtProfile {
        nodes: ort_nodes,
        convs: ort_convs,
    } = ort_profile;
    let engine = net.engine();
    let nodes = &engine.graph().nodes;
    let mut ort: BTreeMap<String, f64> = BTreeMap::new();
    for (op, kind, seconds) in ort_nodes {
        *ort.entry(ort_layer_type(op, kind)).or_default() +=
            1e3 * seconds / images.len().max(1) as f64;
    }
    // Per node, each profiled run's milliseconds per image: ANN runs, then SNN runs.
    let mut node_runs = vec![[[0.0; PROFILED_RUNS]; 2]; nodes.len()];
    for snn in [false, true] {
        for run in 0..PROFILED_RUNS {
            engine.start_profile();
            if snn {
                net.run_snn(images)?;
            } else {
                net.run_ann(images)?;
            }
            let seconds = engine.take_profile().unwrap_or_default();
            for (times, s) in node_runs.iter_mut().zip(seconds) {
                // Images run in parallel, one per thread: the nodes' times add up over the
                // images running at once, which divides out to wall time.
                let at_once = engine.threads().min(images.len()).max(1) as f64;
                times[snn as usize][run] = 1e3 * s / images.len() as f64 / at_once;
            }
        }
    }
    // Per layer type, each run's sum over its nodes (gates under their unit in both modes,
    // so that the rows line up), and a row for each of ONNX Runtime's layer types.
    let mut runs: BTreeMap<String, [[f64; PROFILED_RUNS]; 2]> = BTreeMap::new();
    for layer_type in ort.keys() {
        runs.entry(layer_type.clone()).or_default();
    }
    for (node, times) in nodes.iter().zip(&node_runs) {
        let sums = runs.entry(layer_type(&node.op, true)).or_default();
        for (sums, times) in sums.iter_mut().zip(times) {
            sums.iter_mut().zip(times).for_each(|(sum, ms)| *sum += ms);
        }
    }
    let median = |mut v: [f64; PROFILED_RUNS]| {
        v.sort_by(f64::total_cmp);
        v[PROFILED_RUNS / 2]
    };
    let mut out: Vec<ProfileRow> = runs
        .into_iter()
        .map(|(layer_type, [ann, snn])| (layer_type, (median(ann), median(snn))))
        .map(|(layer_type, (ann_ms, snn_ms))| ProfileRow {
            ort_ms: ort.get(&layer_type).copied(),
            layer_type,
            ann_ms,
            snn_ms,
        })
        .collect();
    out.sort_by(|a, b| {
        let most = |r: &ProfileRow| r.snn_ms.max(r.ort_ms.unwrap_or(0.0));
        most(b).total_cmp(&most(a))
    });
    // Each convolution's node and weights' shape, in the network's order.
    let (conv_nodes, shapes): (Vec<usize>, Vec<Vec<usize>>) = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| match &node.op {
            Op::Conv(conv) => Some((i, conv.weight.shape().to_vec())),
            _ => None,
        })
        .unzip();
    let ort_ms = match_in_order(&shapes, ort_convs);
    let per_image = 1e3 / images.len().max(1) as f64;
    let values = &engine.graph().values;
    let conv_rows = conv_nodes
        .into_iter()
        .zip(shapes)
        .zip(ort_ms)
        .map(|((i, weights), ort)| {
            let [ann, snn] = node_runs[i];
            ConvProfileRow {
                node: i,
                layer_type: layer_type(&nodes[i].op, false),
                weights,
                output: values[nodes[i].output].shape.clone(),
                ann_ms: median(ann),
                snn_ms: median(snn),
                ort_ms: ort.map(|s| s * per_image),
            }
        })
        .collect();
    Ok((out, conv_rows))
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

/// The pause after each timed run: a thread pool spins a while for more work after a run
/// (ONNX Runtime's took about a sixth off our ANN run that followed it at once on a 2-core
/// machine), and the next run must not share the cores with it.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Seconds of one call of `f`.
fn time_once<E>(f: impl FnOnce() -> Result<(), E>) -> Result<f64, E> {
    let start = Instant::now();
    f().map(|()| start.elapsed().as_secs_f64())
}

/// ONNX Runtime on a model and a batch, in a Python process that times one run of the batch
/// per request (`ort_bench.py`), after its own warm-up.
struct OrtRunner {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version: String,
    /// The batch's file, removed on drop.
    npy: PathBuf,
}

impl OrtRunner {
    /// Starts ONNX Runtime on `onnx` with the batch `input` (NCHW, normalised) and waits for
    /// its warm-up.
    fn start(onnx: &Path, input: &amos_snn::Tensor, threads: usize) -> Result<Self, ConvertError> {
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
        let child = Command::new("python3")
            .arg("-c")
            .arg(ORT_SCRIPT)
            .arg(onnx)
            .arg(&npy)
            .arg(threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_file(&npy);
                return Err(bench_err(format!("cannot run python3: {e}")));
            }
        };
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = std::fs::remove_file(&npy);
            return Err(bench_err("python3's pipes were not opened".into()));
        };
        let mut runner = OrtRunner {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            version: String::new(),
            npy,
        };
        let ready = runner.line()?;
        let v: serde_json::Value = serde_json::from_str(&ready)
            .map_err(|e| bench_err(format!("unexpected output {ready:?} ({e})")))?;
        runner.version = v["version"].as_str().unwrap_or("?").to_string();
        Ok(runner)
    }

    /// The next line ONNX Runtime's process prints; at its end, an error with what it wrote
    /// to stderr.
    fn line(&mut self) -> Result<String, ConvertError> {
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line);
        if matches!(read, Ok(n) if n > 0) {
            return Ok(line.trim().to_string());
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        Err(ConvertError::Bench(format!(
            "python3 failed (is onnxruntime installed? pip install -r tests/requirements.txt): {}",
            stderr.trim()
        )))
    }

    /// Seconds of one run of the batch.
    fn run(&mut self) -> Result<f64, ConvertError> {
        let line = self.request("run")?;
        line.parse()
            .map_err(|e| ConvertError::Bench(format!("unexpected timing {line:?} ({e})")))
    }

    /// Sends `request` (a line of `ort_bench.py`'s protocol); its answer's line.
    fn request(&mut self, request: &str) -> Result<String, ConvertError> {
        writeln!(self.stdin, "{request}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| ConvertError::Bench(format!("writing to python3: {e}")))?;
        self.line()
    }

    /// ONNX Runtime's own profile of the batch (`ort_bench.py`'s "profile"), the median of
    /// [`PROFILED_RUNS`] runs, as ours.
    fn profile(&mut self) -> Result<OrtProfile, ConvertError> {
        let line = self.request(&format!("profile {PROFILED_RUNS}"))?;
        let unexpected =
            |why: &str| ConvertError::Bench(format!("unexpected profile {line:?} ({why})"));
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| unexpected(&e.to_string()))?;
        let nodes = v["nodes"]
            .as_array()
            .ok_or_else(|| unexpected("no nodes"))?;
        let nodes = nodes
            .iter()
            .map(|n| match (n[0].as_str(), n[1].as_str(), n[2].as_f64()) {
                (Some(op), Some(kind), Some(seconds)) => {
                    Ok((op.to_string(), kind.to_string(), seconds))
                }
                _ => Err(unexpected("a node is not [op, kind, seconds]")),
            })
            .collect::<Result<_, _>>()?;
        let convs = v["convs"]
            .as_array()
            .ok_or_else(|| unexpected("no convs"))?;
        let convs = convs
            .iter()
            .map(|c| {
                let shape: Option<Vec<usize>> = c[0].as_array().and_then(|dims| {
                    dims.iter()
                        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                        .collect()
                });
                match (shape, c[1].as_f64()) {
                    (Some(shape), Some(seconds)) => Ok((shape, seconds)),
                    _ => Err(unexpected("a convolution is not [weight shape, seconds]")),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(OrtProfile { nodes, convs })
    }
}

/// ONNX Runtime's profile of a batch ([`OrtRunner::profile`]).
struct OrtProfile {
    /// Operator type, convolution kind ("pointwise", "depthwise", "kxk"; "" for other
    /// operators), seconds of its nodes.
    nodes: Vec<(String, String, f64)>,
    /// Each convolution's weight shape and seconds, in the order its nodes ran.
    convs: Vec<(Vec<usize>, f64)>,
}

impl Drop for OrtRunner {
    fn drop(&mut self) {
        // Between runs the script only waits on stdin: stopping it loses nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.npy);
    }
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
    let mut ort_runner = OrtRunner::start(onnx, &input, threads)?;
    // Warm-ups (ONNX Runtime's ran at its start), then the three in turn, run by run.
    net.run_ann(&refs)?;
    net.run_snn(&refs)?;
    let (mut ort, mut ann, mut snn) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        ort.push(ort_runner.run()?);
        std::thread::sleep(SETTLE);
        ann.push(time_once(|| net.run_ann(&refs).map(drop))?);
        std::thread::sleep(SETTLE);
        snn.push(time_once(|| net.run_snn(&refs).map(drop))?);
        std::thread::sleep(SETTLE);
    }
    let ort_profile = if with_profile {
        Some(ort_runner.profile()?)
    } else {
        None
    };
    let ort_version = ort_runner.version.clone();
    drop(ort_runner);
    let ips = |s: &[f64]| images.len() as f64 / median(s);
    let (ort_ips, ann_ips, snn_ips) = (ips(&ort), ips(&ann), ips(&snn));
    let (profile, profile_convs) = match ort_profile {
        Some(ort_profile) => {
            let (rows, convs) = profile(net, &refs, &ort_profile)?;
            (Some(rows), Some(convs))
        }
        None => (None, None),
    };
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
        profile,
        profile_convs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONNX Runtime's nodes land in the rows our own layer types use: convolutions by kind
    /// whatever ONNX Runtime's operator is called (its NCHWc and fused forms included).
    #[test]
    fn ort_nodes_share_our_layer_types() {
        for (op, kind, ours) in [
            ("Conv", "pointwise", "1×1 conv (GEMM)"),
            ("FusedConv", "pointwise", "1×1 conv (GEMM)"),
            ("Conv", "depthwise", "depthwise conv"),
            ("Conv", "kxk", "k×k conv (GEMM)"),
            ("Gemm", "", "linear (GEMM)"),
            ("MatMul", "", "linear (GEMM)"),
            ("GlobalAveragePool", "", "pooling"),
            ("MaxPool", "", "gate (maxpool)"),
            ("Add", "", "elementwise add/mul"),
            ("Mul", "", "elementwise add/mul"),
            ("QuickGelu", "", "ORT activation (QuickGelu)"),
            ("Sigmoid", "", "ORT activation (Sigmoid)"),
            ("ReorderOutput", "", "other"),
            ("Reshape", "", "other"),
        ] {
            assert_eq!(ort_layer_type(op, kind), ours, "{op} {kind}");
        }
    }

    /// Our convolutions find ONNX Runtime's in order by their weights' shape: a node only
    /// ONNX Runtime runs is passed over, one it does not run gets nothing, and of two with
    /// the same shape each gets its own.
    #[test]
    fn convolutions_match_onnx_runtimes_in_order() {
        let shape = |c: usize, k: usize| vec![c, c, k, k];
        let ours = [
            shape(8, 3),
            shape(16, 1),
            shape(16, 1),
            shape(4, 5),
            shape(32, 1),
        ];
        let theirs = [
            (shape(8, 3), 1.0),
            (shape(99, 1), 2.0),
            (shape(16, 1), 3.0),
            (shape(16, 1), 4.0),
            (shape(32, 1), 5.0),
        ];
        assert_eq!(
            match_in_order(&ours, &theirs),
            [Some(1.0), Some(3.0), Some(4.0), None, Some(5.0)]
        );
        // One we have but ONNX Runtime does not, between two that match: the later still
        // matches.
        assert_eq!(
            match_in_order(&[shape(16, 1), shape(16, 7), shape(32, 1)], &theirs),
            [Some(3.0), None, Some(5.0)]
        );
        // With AVX-512, ONNX Runtime's NCHWc convolutions pad their channels to 16 (with
        // AVX2 to 8): 24 × 32 shows as 32 × 32, a depthwise 72 as 80; 24 never as 40.
        let nchwc = [
            (vec![32, 32, 1, 1], 1.0),
            (vec![80, 1, 3, 3], 2.0),
            (vec![40, 40, 1, 1], 3.0),
            (vec![24, 16, 1, 1], 4.0),
        ];
        let ours = [
            vec![24, 32, 1, 1],
            vec![72, 1, 3, 3],
            vec![24, 24, 1, 1],
            vec![20, 12, 1, 1],
        ];
        assert_eq!(
            match_in_order(&ours, &nchwc),
            [Some(1.0), Some(2.0), None, Some(4.0)]
        );
    }
}
