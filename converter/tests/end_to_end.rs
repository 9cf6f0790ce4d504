//! End to end with our own decoding and preprocessing: the 1000 ImageNet photographs through
//! EfficientNet-Lite0 must give ONNX Runtime's (PIL-preprocessed) top-1 on ≥ 99.5% of images (issue 5; measured 998/1000).
//! JPEG decoders and resamplers differ slightly, so exact agreement is not required here.

mod common;

use std::collections::HashMap;

use amos_converter::eval::{EvalOptions, evaluate, summarise};
use amos_converter::onnx::import_file;
use amos_io::data::{Dataset, Preprocess};
use amos_snn::Engine;
use common::shared;

#[test]
fn lite0_on_1000_photographs_agrees_with_onnx_runtime() {
    let model = import_file(&shared().join("models/efficientnet_lite0.onnx")).expect("import");
    let engine = Engine::new(model.graph, 2).expect("engine");
    let dataset = Dataset::open(&shared().join("data/imagenet-sample"), None).expect("dataset");
    let pre = Preprocess::preset("efficientnet-lite", (224, 224)).expect("preset");
    let options = EvalOptions {
        batch: 16,
        limit: None,
    };
    let predictions = evaluate(&engine, &dataset, &pre, &options, |_| {}).expect("evaluate");
    assert_eq!(predictions.len(), 1000);

    let mut reference =
        csv::Reader::from_path(shared().join("reference/imagenet-sample.lite0.predictions.csv"))
            .expect("csv");
    let reference: HashMap<String, usize> = reference
        .records()
        .map(|r| {
            let r = r.expect("row");
            (r[0].to_string(), r[2].parse().expect("top1"))
        })
        .collect();
    let agree = predictions
        .iter()
        .filter(|p| reference.get(&p.image_id) == p.top5.first())
        .count();
    let summary = summarise(&predictions);
    eprintln!(
        "lite0 end to end: top-1 {:.1}%, top-5 {:.1}%, agreement with ORT {agree}/1000",
        summary.top1, summary.top5
    );
    assert!(
        agree >= 995,
        "top-1 agrees with ONNX Runtime on only {agree}/1000 images"
    );
    assert!(
        (summary.top1 - 88.5).abs() <= 0.5,
        "top-1 {:.2}% is not within 0.5 points of ORT's 88.5%",
        summary.top1
    );
}
