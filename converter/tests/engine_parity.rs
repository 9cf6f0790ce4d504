//! Engine parity with ONNX Runtime on identical inputs for the shared real models.

mod common;

use amos_converter::onnx::import_file;
use amos_snn::Engine;
use common::{argmax_rows, max_abs_diff, read_npy, shared};

#[test]
fn lite0_logits_match_onnx_runtime_on_identical_input() {
    let model =
        import_file(&shared().join("models/efficientnet_lite0.onnx")).expect("import lite0");
    let engine = Engine::new(model.graph, 2).expect("engine");
    let input = read_npy(&shared().join("reference/lite0-sample8/input.npy"));
    let expected = read_npy(&shared().join("reference/lite0-sample8/logits.npy"));
    let got = engine.run(input).expect("run");
    let diff = max_abs_diff(&got, &expected);
    eprintln!("lite0 sample8: max |logit diff| = {diff:e}");
    assert!(diff <= 1e-3, "max |logit diff| {diff} > 1e-3");
    assert_eq!(argmax_rows(&got), argmax_rows(&expected));
}

/// All 2000 CIFAR-10 PNGs through our decoder (lossless, so the input equals ORT's input)
/// and the swish/SE model: logits within 1e-3 and the same top-1 on every image.
#[test]
fn cifar_swish_se_logits_match_onnx_runtime_on_all_2000_images() {
    use amos_io::data::{Dataset, Preprocess};

    let model = import_file(&shared().join("models/cifar10_swish_se.onnx")).expect("import");
    let engine = Engine::new(model.graph, 2).expect("engine");
    let dataset = Dataset::open(&shared().join("data/cifar10-test2000"), None).expect("dataset");
    assert_eq!(dataset.entries.len(), 2000);
    let pre = Preprocess::preset("cifar", (32, 32)).expect("preset");
    let expected = read_npy(&shared().join("reference/cifar10-test2000.swish_se.logits.npy"));
    let mut data = vec![0.0f32; 2000 * pre.chw_len()];
    let paths: Vec<_> = dataset.entries.iter().map(|e| e.path.clone()).collect();
    pre.load_batch_chw(&paths, &mut data).expect("decode");
    let input = amos_snn::Tensor::new(vec![2000, 3, 32, 32], data).expect("tensor");
    let got = engine.run(input).expect("run");
    let diff = max_abs_diff(&got, &expected);
    eprintln!("cifar 2000: max |logit diff| = {diff:e}");
    assert!(diff <= 1e-3, "max |logit diff| {diff} > 1e-3");
    assert_eq!(argmax_rows(&got), argmax_rows(&expected));
}
