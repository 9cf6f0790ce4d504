//! What each fuzz target runs on its input, shared with the regression tests
//! (`worker/tests/fuzz_regressions.rs` includes this file), so that a crash found by the
//! fuzzer is replayed in CI through exactly the same code. Every function must return,
//! never panic, whatever the bytes.

use std::path::Path;
use std::sync::OnceLock;

use amos_converter::convert::{ConvertOptions, ModelInfo, convert};
use amos_converter::onnx;
use amos_proto::onnx::ModelProto;
use amos_proto::pipeline::{ImageState, StageBatch};
use amos_snn::model::{ConvertedModel, Recipe};
use amos_snn::model_file;
use amos_snn::pipeline::{Stage, StageInput, StageLayout};
use amos_snn::planner;
use amos_snn::spike_codec::Codec;
use amos_worker::wire;
use prost::Message;

/// The ONNX importer: protobuf decoding, then import with constant folding. No model
/// folder is given, so external data is refused rather than read. True when it imported.
pub fn onnx_import(data: &[u8]) -> bool {
    ModelProto::decode(data).is_ok_and(|model| onnx::import_model(&model, None).is_ok())
}

/// The `.amos` reader by both paths a reader takes: the whole file, and a worker's header,
/// metadata and partial assembly with the first node's tensors only. Fuzzing builds skip
/// checksums (`cfg(fuzzing)`), so mutations reach the parser behind them. True when both
/// read it.
pub fn model_file(data: &[u8]) -> bool {
    let whole = model_file::decode(data).is_ok();
    let Ok(header) = model_file::parse_header(data) else {
        return false;
    };
    let start = header.metadata_range().start as usize;
    let Ok(metadata) = model_file::parse_metadata(&header, data.get(start..).unwrap_or_default())
    else {
        return false;
    };
    let wanted: Vec<String> = metadata
        .node_tensors(0)
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let partial = model_file::assemble_partial(&metadata, |entry| {
        if !wanted.contains(&entry.name) {
            return Ok(None);
        }
        let range = metadata.tensor_range(entry);
        Ok(usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.end).ok())
            .and_then(|(s, e)| data.get(s..e))
            .map(<[u8]>::to_vec))
    });
    whole && partial.is_ok()
}

/// A received `StageBatch`, through what a later stage does with it: protobuf decoding, the
/// worker's wire conversion, then the stage run (unpacking and decoding the spikes, checking
/// them against the stage's layout, and the network itself). Batches above 4 images are
/// only converted, to keep each run short. True when the stage ran it.
pub fn spike_batch(data: &[u8]) -> bool {
    let Ok(batch) = StageBatch::decode(data) else {
        return false;
    };
    let images = batch.images.iter().filter(|s| s.error.is_none()).count();
    let Ok((spikes, ann)) = wire::batch_from_wire(images, batch.spikes, batch.ann, true) else {
        return false;
    };
    (1..=4).contains(&images)
        && example_stages()[1]
            .run(StageInput::Spikes(spikes), ann)
            .is_ok()
}

// ------------------------------------------------------------------------------ seeds

/// Converts an ONNX file without calibration (fixed default ranges); `None` when it does
/// not import or convert.
pub fn convert_without_calibration(onnx_path: &Path) -> Option<ConvertedModel> {
    let imported = onnx::import_file(onnx_path).ok()?;
    let info = ModelInfo {
        recipe: Recipe {
            preset: "cifar".into(),
            resize: "none".into(),
            resize_param: 0,
            crop: [32, 32],
            interp: "bilinear".into(),
            mean: [0.0; 3],
            std: [1.0; 3],
        },
        classes: Vec::new(),
        source_sha256: String::new(),
    };
    convert(
        imported.graph,
        None,
        // The fitter's quick budget: the harness needs a valid model, not a faithful one.
        &ConvertOptions {
            fit_steps: 200,
            fit_samples: 4096,
            ..ConvertOptions::default()
        },
        info,
        |_| {},
    )
    .ok()
}

/// The example model (shipped in the repo) as the two stages of its 2-stage plan.
pub fn example_stages() -> &'static [Stage; 2] {
    static STAGES: OnceLock<[Stage; 2]> = OnceLock::new();
    STAGES.get_or_init(|| {
        let model = convert_without_calibration(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/cifar10/cifar10_swish_se.onnx"),
        )
        .expect("convert the example model");
        let plan = planner::plan_spike_cuts(&model, 2).expect("plan 2 stages");
        let ends: Vec<usize> = plan.stages.iter().map(|s| s.nodes.end).collect();
        [0, 1].map(|i| {
            let layout = StageLayout::new(&model, &ends, i).expect("stage layout");
            Stage::new(&model, layout, 1, Codec::Lz4).expect("stage")
        })
    })
}

/// A valid batch for [`spike_batch`]: what stage 0 sends for two images, one of them also
/// marked with a decode error upstream.
pub fn seed_spike_batch() -> Vec<u8> {
    let images: Vec<Vec<u8>> = vec![
        vec![128; 32 * 32 * 3],
        (0..32 * 32 * 3).map(|i| i as u8).collect(),
    ];
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let out = example_stages()[0]
        .run(StageInput::Images(&refs), Some(Vec::new()))
        .expect("stage 0 runs");
    let state = |id: &str, error: Option<String>| ImageState {
        image_id: id.into(),
        error,
        ..Default::default()
    };
    StageBatch {
        header: None,
        batch_index: 0,
        images: vec![
            state("a", None),
            state("broken", Some("truncated JPEG".into())),
            state("b", None),
        ],
        spikes: out.spikes.into_iter().map(wire::spikes_to_wire).collect(),
        ann: out.ann.iter().map(wire::f32_to_wire).collect(),
    }
    .encode_to_vec()
}
