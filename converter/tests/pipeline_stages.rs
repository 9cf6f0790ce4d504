//! Pipeline stages in one process: a converted model split into 1 to 4 stages that pass
//! packed spikes gives bit-identical logits and spike counts to the whole network, for both
//! shared models, and the ANN reference travels alongside unchanged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use amos_io::data::{Dataset, Preprocess};
use amos_snn::model::ConvertedModel;
use amos_snn::model_file;
use amos_snn::pipeline::{Stage, StageInput, StageLayout};
use amos_snn::planner;
use amos_snn::simulate::{ImageStats, SpikingNetwork};
use amos_snn::spike_codec::Codec;
use common::shared;

fn convert(onnx: &Path, preset: &str, calibration: Option<&Path>, out: &str) -> ConvertedModel {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amos-convert"));
    cmd.arg("convert").arg(onnx).arg("-o").arg(&out);
    cmd.args(["--preset", preset]);
    // Fidelity is not what these tests check: the fitter's quick budget.
    cmd.args(["--fit-steps", "200", "--fit-samples", "4096"]);
    if let Some(c) = calibration {
        cmd.arg("--calibration").arg(c);
        cmd.args(["--calibration-images", "64"]);
    }
    let status = cmd.output().expect("run amos-convert");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    model_file::read_file(&out).expect("read the converted model")
}

fn images(root: &Path, preset: &str, model: &ConvertedModel, n: usize) -> Vec<Vec<u8>> {
    let dataset = Dataset::open(root, None).expect("open dataset");
    let shape = model.graph.input_shape();
    let pre = Preprocess::preset(preset, (shape[1] as u32, shape[2] as u32)).expect("preset");
    dataset.entries[..n]
        .iter()
        .map(|e| dataset.load_u8(e, &pre).expect("decode image"))
        .collect()
}

/// Runs `images` through `stages` stages of the spike-cut plan, returning the SNN logits
/// bits, the ANN logits bits and the summed statistics per image.
fn run_chain(
    model: &ConvertedModel,
    stages: usize,
    images: &[&[u8]],
) -> (Vec<u32>, Vec<u32>, Vec<ImageStats>) {
    let plan = planner::plan_spike_cuts(model, stages).expect("plan");
    let ends: Vec<usize> = plan.stages.iter().map(|s| s.nodes.end).collect();
    let mut stats: Vec<ImageStats> = vec![
        ImageStats {
            unit_spikes: vec![0; model.units.len()],
            ..Default::default()
        };
        images.len()
    ];
    let (mut spikes, mut ann) = (Vec::new(), Vec::new());
    for i in 0..stages {
        let layout = StageLayout::new(model, &ends, i).expect("layout");
        let stage = Stage::new(model, layout, 2, Codec::Lz4).expect("stage");
        let input = if i == 0 {
            StageInput::Images(images)
        } else {
            StageInput::Spikes(std::mem::take(&mut spikes))
        };
        let out = stage
            .run(input, Some(std::mem::take(&mut ann)))
            .expect("run");
        for (total, s) in stats.iter_mut().zip(&out.stats) {
            total.spikes += s.spikes;
            total.synops += s.synops;
            total.input_spikes += s.input_spikes;
            total.input_synops += s.input_synops;
            for (t, &u) in total.unit_spikes.iter_mut().zip(&s.unit_spikes) {
                *t += u;
            }
        }
        // Only spikes cross: K bits per element, at most K/32 of the tensor in f32.
        for (p, c) in out.spikes.iter().zip(&stage.layout().sends) {
            let elements: u64 = p.shape.iter().product();
            assert_eq!(elements, c.elements * images.len() as u64);
            assert!(p.payload.len() as u64 <= (elements * p.k as u64).div_ceil(8) + 4);
        }
        if stage.layout().is_last() {
            let bits = |t: Option<amos_snn::Tensor>| {
                t.expect("logits")
                    .data()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            return (bits(out.logits), bits(out.ann_logits), stats);
        }
        spikes = out.spikes;
        ann = out.ann;
    }
    unreachable!("the last stage returns")
}

fn check_model(model: &ConvertedModel, images: &[Vec<u8>]) {
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let net = SpikingNetwork::new(model, 2).expect("network");
    let whole = net.run_snn(&refs).expect("snn");
    let whole_ann = net.run_ann(&refs).expect("ann");
    let bits = |t: &amos_snn::Tensor| t.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(planner::spike_cuts(model).len() >= 3, "too few spike cuts");
    for stages in [1, 2, 4] {
        let (logits, ann, stats) = run_chain(model, stages, &refs);
        assert_eq!(
            logits,
            bits(&whole.logits),
            "{stages} stages: SNN logits differ"
        );
        assert_eq!(ann, bits(&whole_ann), "{stages} stages: ANN logits differ");
        assert_eq!(
            stats, whole.stats,
            "{stages} stages: spike statistics differ"
        );
    }
}

#[test]
fn swish_se_stages_give_identical_logits_and_spikes() {
    let root = shared().join("data/cifar10-test2000");
    let model = convert(
        &shared().join("models/cifar10_swish_se.onnx"),
        "cifar",
        Some(&root),
        "pipeline-swish-se.amos",
    );
    check_model(&model, &images(&root, "cifar", &model, 12));
}

#[test]
fn lite0_stages_give_identical_logits_and_spikes() {
    let root: PathBuf = shared().join("data/imagenet-sample");
    let model = convert(
        &shared().join("models/efficientnet_lite0.onnx"),
        "efficientnet-lite",
        None,
        "pipeline-lite0.amos",
    );
    check_model(&model, &images(&root, "efficientnet-lite", &model, 4));
}
