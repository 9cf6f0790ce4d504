//! The `.amos` model file codec: round trips, determinism, layout, and rejection of damaged
//! files (ARCHITECTURE.md §4).

use amos_proto::model as pb;
use amos_snn::Graph;
use amos_snn::Tensor;
use amos_snn::amos::AmosUnit;
use amos_snn::amos::closed_form::{self, Rounding};
use amos_snn::model::{
    ConversionSettings, ConvertedModel, FORMAT_MAJOR, FORMAT_MINOR, Recipe, UnitParams,
    UnitPlacement,
};
use amos_snn::model_file::{self, HEADER_LEN, ModelFileError};
use amos_snn::ops::binary::BinaryConstant;
use amos_snn::ops::pool::PoolWindow;
use amos_snn::ops::{
    Activation, AvgPool2d, Binary, BinaryKind, ChannelAffine, Concat, Conv2d, GateKind, Linear,
    MaxPool2d, Op, Pad, ReduceMean, Reshape, Softmax,
};
use prost::Message;

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn tensor(shape: Vec<usize>, seed: u32) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, values(n, seed)).unwrap()
}

/// A unit with arbitrary (finite) parameters, as a fitted one would have.
fn fitted(gate: GateKind, k: usize, two_inputs: bool, seed: u32) -> UnitParams {
    let mut u = AmosUnit::zeros(k, two_inputs);
    u.c = values(k, seed);
    if let Some(c2) = &mut u.c2 {
        *c2 = values(k, seed + 1);
    }
    u.d = values(k, seed + 2);
    u.t = values(k, seed + 3);
    u.h = values(u.h.len(), seed + 4);
    u.o = 0.25;
    UnitParams {
        unit: u,
        gate,
        range: [-4.0, 4.0],
        range2: two_inputs.then_some([0.0, 1.0]),
        mse: 1e-3,
        method: "fitted".into(),
    }
}

fn closed(gate: GateKind, unit: AmosUnit, range: [f32; 2], method: &str) -> UnitParams {
    UnitParams {
        unit,
        gate,
        range,
        range2: None,
        mse: 2e-5,
        method: method.into(),
    }
}

fn window(kernel: usize, stride: usize, pads: [usize; 4]) -> PoolWindow {
    PoolWindow {
        kernel: [kernel; 2],
        stride: [stride; 2],
        pads,
        dilation: [1, 1],
        ceil_mode: false,
    }
}

/// A small model with every operator variant and a unit on every gate but max pooling.
fn sample_model() -> ConvertedModel {
    let mut g = Graph::new("image", vec![3, 8, 8]);
    let mut add = |name: &str, op: Op, inputs: Vec<usize>| {
        g.add_node(name, op, inputs, &format!("{name}_out"))
            .unwrap()
    };
    let x = 0;
    let conv = add(
        "conv",
        Op::Conv(Conv2d {
            weight: tensor(vec![4, 3, 3, 3], 1),
            bias: values(4, 2),
            stride: [1, 1],
            dilation: [1, 1],
            pads: [1, 1, 1, 1],
            groups: 1,
            prepared: Default::default(),
        }),
        vec![x],
    );
    let relu = add("relu", Op::Activation(Activation::Relu), vec![conv]);
    let dw = add(
        "dw",
        Op::Conv(Conv2d {
            weight: tensor(vec![4, 1, 3, 3], 3),
            bias: values(4, 4),
            stride: [2, 2],
            dilation: [1, 1],
            pads: [1, 1, 1, 1],
            groups: 4,
            prepared: Default::default(),
        }),
        vec![relu],
    );
    let relu6 = add(
        "relu6",
        Op::Activation(Activation::Clip { lo: 0.0, hi: 6.0 }),
        vec![dw],
    );
    let affine = add(
        "bn",
        Op::ChannelAffine(ChannelAffine {
            scale: values(4, 5),
            shift: values(4, 6),
        }),
        vec![relu6],
    );
    let sig = add("sigmoid", Op::Activation(Activation::Sigmoid), vec![affine]);
    let mul = add(
        "se_mul",
        Op::Binary(Binary {
            kind: BinaryKind::Mul,
            constant: None,
        }),
        vec![affine, sig],
    );
    let add_c = add(
        "add_const",
        Op::Binary(Binary {
            kind: BinaryKind::Add,
            constant: Some(BinaryConstant {
                tensor: tensor(vec![4, 1, 1], 7),
                on_left: false,
            }),
        }),
        vec![mul],
    );
    let sub_c = add(
        "const_sub",
        Op::Binary(Binary {
            kind: BinaryKind::Sub,
            constant: Some(BinaryConstant {
                tensor: Tensor::scalar(0.5),
                on_left: true,
            }),
        }),
        vec![add_c],
    );
    let div_c = add(
        "div_const",
        Op::Binary(Binary {
            kind: BinaryKind::Div,
            constant: Some(BinaryConstant {
                tensor: tensor(vec![4], 8),
                on_left: false,
            }),
        }),
        vec![sub_c],
    );
    let mut v = div_c;
    for (name, act) in [
        ("swish", Activation::Swish),
        (
            "hsig",
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ),
        ("hswish", Activation::HardSwish),
        ("tanh", Activation::Tanh),
        ("gelu", Activation::Gelu),
        ("erf", Activation::Erf),
        ("clip", Activation::Clip { lo: -1.0, hi: 2.0 }),
    ] {
        v = add(name, Op::Activation(act), vec![v]);
    }
    let maxpool = add(
        "maxpool",
        Op::MaxPool(MaxPool2d {
            window: window(2, 2, [0; 4]),
        }),
        vec![v],
    );
    let avgpool = add(
        "avgpool",
        Op::AvgPool(AvgPool2d {
            window: window(2, 2, [0, 0, 1, 1]),
            count_include_pad: true,
        }),
        vec![v],
    );
    let cat = add(
        "concat",
        Op::Concat(Concat { axis: 0 }),
        vec![maxpool, avgpool],
    );
    let pad = add(
        "pad",
        Op::Pad(Pad {
            begin: vec![0, 1, 1],
            end: vec![0, 0, 1],
            value: -0.0,
        }),
        vec![cat],
    );
    let rm = add(
        "reduce_mean",
        Op::ReduceMean(ReduceMean {
            axes: vec![2],
            keepdims: true,
        }),
        vec![pad],
    );
    let gap = add("gap", Op::GlobalAvgPool, vec![rm]);
    let flat = add(
        "flatten",
        Op::Reshape(Reshape { shape: vec![8] }),
        vec![gap],
    );
    let fc = add(
        "fc",
        Op::Linear(Linear {
            weight: tensor(vec![8, 5], 9),
            bias: values(5, 10),
        }),
        vec![flat],
    );
    let id = add("identity", Op::Identity, vec![fc]);
    add("softmax", Op::Softmax(Softmax { axis: 0 }), vec![id]);
    g.validate().unwrap();

    let mut unit_params = vec![
        closed(
            GateKind::Relu,
            closed_form::relu(10, 4.0, Rounding::Truncate),
            [0.0, 4.0],
            "closed-form",
        ),
        closed(
            GateKind::Relu6,
            closed_form::relu6(8, Rounding::Nearest),
            [0.0, 6.0],
            "closed-form-rounding",
        ),
        closed(
            GateKind::Clip,
            closed_form::identity(6, -1.0, 2.0, Rounding::Nearest),
            [-1.0, 2.0],
            "closed-form-rounding",
        ),
        fitted(GateKind::Mul, 5, true, 20),
    ];
    let one_input = [
        GateKind::Sigmoid,
        GateKind::Swish,
        GateKind::HardSigmoid,
        GateKind::HardSwish,
        GateKind::Tanh,
        GateKind::Gelu,
        GateKind::Erf,
    ];
    for (i, &gate) in one_input.iter().enumerate() {
        unit_params.push(fitted(gate, 3 + i, false, 30 + 10 * i as u32));
    }
    let units = g
        .gates()
        .into_iter()
        .filter(|&(_, gate)| gate != GateKind::MaxPool)
        .map(|(node, gate)| UnitPlacement {
            node,
            gate,
            params: unit_params.iter().position(|p| p.gate == gate).unwrap(),
        })
        .collect();
    ConvertedModel {
        graph: g,
        units,
        unit_params,
        preprocess: Recipe {
            preset: "torchvision".into(),
            resize: "shorter-side".into(),
            resize_param: 256,
            crop: [224, 224],
            interp: "bilinear".into(),
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
        },
        classes: vec![
            "cat".into(),
            "dog".into(),
            "".into(),
            "π ≈ 3.14".into(),
            "bird".into(),
        ],
        settings: ConversionSettings {
            k: vec![("relu".into(), 10), ("sigmoid".into(), 8)],
            rounding: true,
            calibration_images: 64,
            seed: u64::MAX - 7,
            tool_version: "0.1.0".into(),
            fit_steps: 0,
            fit_samples: 0,
        },
        source_sha256: "ab".repeat(32),
    }
}

/// The error message of a decode that must fail.
fn decode_err(bytes: &[u8]) -> String {
    match model_file::decode(bytes) {
        Ok(_) => panic!("a damaged file was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, words: &[&str]) {
    for w in words {
        assert!(
            message.contains(w),
            "error {message:?} does not mention {w:?}"
        );
    }
}

/// Decodes the metadata message of a file, lets `edit` change it, and writes the file back
/// with a consistent header (length and crc) and the original tensor data.
fn rewrite(bytes: &[u8], edit: impl FnOnce(&mut pb::ModelMetadata)) -> Vec<u8> {
    let meta = model_file::parse_metadata(
        &model_file::parse_header(bytes).unwrap(),
        &bytes[HEADER_LEN..],
    )
    .unwrap();
    let data = &bytes[meta.data_start as usize..];
    let mut message = meta.message;
    edit(&mut message);
    let encoded = message.encode_to_vec();
    let mut out = bytes[..16].to_vec();
    out.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&encoded).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&encoded);
    out.resize(out.len().div_ceil(64) * 64, 0);
    out.extend_from_slice(data);
    out
}

fn tensor_entry<'a>(m: &'a mut pb::ModelMetadata, name: &str) -> &'a mut pb::TensorEntry {
    m.tensors.iter_mut().find(|t| t.name == name).unwrap()
}

// ---------------------------------------------------------------------------- round trips

#[test]
fn the_sample_model_uses_every_operator_and_unit_kind() {
    let m = sample_model();
    let names: Vec<_> = m.graph.op_histogram().into_keys().collect();
    for op in [
        "Conv",
        "DepthwiseConv",
        "Linear",
        "ChannelAffine",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "Clip",
        "Sigmoid",
        "Swish",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Gelu",
        "Erf",
        "MaxPool",
        "AvgPool",
        "GlobalAvgPool",
        "ReduceMean",
        "Reshape",
        "Concat",
        "Pad",
        "Softmax",
        "Identity",
    ] {
        assert!(names.contains(&op), "{op} missing from {names:?}");
    }
    assert!(m.unit_params.iter().any(|p| p.unit.is_two_input()));
    assert!(
        m.unit_params
            .iter()
            .any(|p| p.method.starts_with("closed-form"))
    );
    assert_eq!(m.units.len(), m.graph.gates().len() - 1); // all but max pooling
}

#[test]
fn decode_inverts_encode() {
    let m = sample_model();
    let bytes = model_file::encode(&m);
    let back = model_file::decode(&bytes).unwrap();
    assert_eq!(back, m);
    // Bit-exact floats, including the sign of zero.
    let Op::Pad(p) = &back
        .graph
        .nodes
        .iter()
        .find(|n| n.name == "pad")
        .unwrap()
        .op
    else {
        panic!("pad node changed")
    };
    assert_eq!(p.value.to_bits(), (-0.0f32).to_bits());
}

#[test]
fn encoding_is_deterministic() {
    let m = sample_model();
    let a = model_file::encode(&m);
    let b = model_file::encode(&m.clone());
    assert_eq!(a, b);
    let again = model_file::encode(&model_file::decode(&a).unwrap());
    assert_eq!(again, a);
}

#[test]
fn header_and_tensor_data_follow_the_layout() {
    let bytes = model_file::encode(&sample_model());
    assert_eq!(&bytes[..8], b"\x89AMOS\r\n\x1a");
    let h = model_file::parse_header(&bytes).unwrap();
    assert_eq!((h.major, h.minor), (FORMAT_MAJOR, FORMAT_MINOR));
    assert_eq!(&bytes[28..32], &[0; 4], "reserved word");
    let meta = model_file::parse_metadata(&h, &bytes[HEADER_LEN..]).unwrap();
    assert_eq!(meta.data_start % 64, 0);
    assert!(meta.data_start >= HEADER_LEN as u64 + h.metadata_len);
    assert!(meta.data_start < HEADER_LEN as u64 + h.metadata_len + 64);
    assert!(
        bytes[(HEADER_LEN + h.metadata_len as usize)..meta.data_start as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert!(!meta.tensors.is_empty());
    let mut end = meta.data_start;
    for t in &meta.tensors {
        let r = meta.tensor_range(t);
        assert_eq!(r.start % 64, 0, "tensor {} is not 64-byte aligned", t.name);
        assert!(
            bytes[end as usize..r.start as usize]
                .iter()
                .all(|&b| b == 0),
            "padding before {}",
            t.name
        );
        assert_eq!(t.length, 4 * t.shape.iter().product::<usize>() as u64);
        end = r.end;
    }
    assert_eq!(end, bytes.len() as u64);
    assert_eq!(meta.data_end(), bytes.len() as u64);
    // Parameters are referenced by node index.
    let conv = meta.tensor("node.0.weight").unwrap();
    assert_eq!(conv.shape, vec![4, 3, 3, 3]);
    let names: Vec<_> = meta
        .node_tensors(0)
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["node.0.weight", "node.0.bias"]);
}

#[test]
fn ranged_reads_assemble_the_same_model() {
    let m = sample_model();
    let file = model_file::encode(&m);
    // A worker: the header, then the metadata, then each tensor's byte range.
    let h = model_file::parse_header(&file[..HEADER_LEN]).unwrap();
    let r = h.metadata_range();
    let meta = model_file::parse_metadata(&h, &file[r.start as usize..r.end as usize]).unwrap();
    let fetched = std::cell::RefCell::new(Vec::new());
    let back = model_file::assemble(&meta, |t| {
        let r = meta.tensor_range(t);
        fetched.borrow_mut().push(t.name.clone());
        Ok(file[r.start as usize..r.end as usize].to_vec())
    })
    .unwrap();
    assert_eq!(back, m);
    let mut fetched = fetched.into_inner();
    fetched.sort();
    let mut all: Vec<_> = meta.tensors.iter().map(|t| t.name.clone()).collect();
    all.sort();
    assert_eq!(fetched, all, "every tensor fetched exactly once");
}

#[test]
fn files_are_written_atomically_and_read_back() {
    let dir = std::env::temp_dir().join(format!("amos-model-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.amos");
    let m = sample_model();
    model_file::write_file(&path, &m).unwrap();
    model_file::write_file(&path, &m).unwrap(); // replaces an existing file
    assert_eq!(model_file::read_file(&path).unwrap(), m);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["model.amos"], "no temporary file is left behind");
    let missing = model_file::read_file(&dir.join("missing.amos")).unwrap_err();
    assert!(matches!(missing, ModelFileError::Io { .. }));
    assert_mentions(&missing.to_string(), &["missing.amos"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------- rejections

#[test]
fn wrong_magic_is_not_an_amos_file() {
    let mut bytes = model_file::encode(&sample_model());
    bytes[1] = b'X';
    assert_mentions(&decode_err(&bytes), &["not an amos model file"]);
    assert_mentions(
        &decode_err(b"PK\x03\x04 a zip file, not a model"),
        &["not an amos model file"],
    );
    assert_mentions(&decode_err(b""), &["truncated"]);
}

#[test]
fn an_unknown_major_version_is_rejected_and_a_newer_minor_accepted() {
    let m = sample_model();
    let mut bytes = model_file::encode(&m);
    bytes[8..12].copy_from_slice(&(FORMAT_MAJOR + 1).to_le_bytes());
    let msg = decode_err(&bytes);
    assert_mentions(
        &msg,
        &[
            "unsupported",
            &format!("version {}.{FORMAT_MINOR}", FORMAT_MAJOR + 1),
            &format!("reads major version {FORMAT_MAJOR}"),
        ],
    );
    let mut bytes = model_file::encode(&m);
    bytes[12..16].copy_from_slice(&(FORMAT_MINOR + 3).to_le_bytes());
    assert_eq!(model_file::decode(&bytes).unwrap(), m);
}

#[test]
fn a_flipped_metadata_byte_is_a_checksum_mismatch() {
    let mut bytes = model_file::encode(&sample_model());
    bytes[HEADER_LEN + 40] ^= 0x10;
    assert_mentions(&decode_err(&bytes), &["corrupted", "metadata", "crc32c"]);
}

#[test]
fn a_flipped_tensor_byte_names_the_tensor() {
    let bytes = model_file::encode(&sample_model());
    let meta = model_file::parse_metadata(
        &model_file::parse_header(&bytes).unwrap(),
        &bytes[HEADER_LEN..],
    )
    .unwrap();
    for t in &meta.tensors {
        let mut damaged = bytes.clone();
        let r = meta.tensor_range(t);
        damaged[(r.start + r.end) as usize / 2] ^= 0x01;
        assert_mentions(
            &decode_err(&damaged),
            &["corrupted tensor", &format!("'{}'", t.name), "crc32c"],
        );
    }
}

#[test]
fn truncated_files_say_so() {
    let bytes = model_file::encode(&sample_model());
    let h = model_file::parse_header(&bytes).unwrap();
    let meta_end = HEADER_LEN + h.metadata_len as usize;
    assert_mentions(&decode_err(&bytes[..20]), &["truncated", "header"]);
    assert_mentions(
        &decode_err(&bytes[..HEADER_LEN]),
        &["truncated", "metadata"],
    );
    assert_mentions(
        &decode_err(&bytes[..meta_end - 1]),
        &["truncated", "metadata"],
    );
    let last = model_file::parse_metadata(&h, &bytes[HEADER_LEN..])
        .unwrap()
        .tensors
        .pop()
        .unwrap();
    assert_mentions(
        &decode_err(&bytes[..bytes.len() - 1]),
        &["truncated", &format!("tensor '{}'", last.name)],
    );
    assert_mentions(
        &decode_err(&bytes[..meta_end]),
        &["truncated", "tensor 'node.0.weight'"],
    );
}

#[test]
fn a_tensor_past_the_end_of_the_file_is_rejected() {
    let bytes = model_file::encode(&sample_model());
    let damaged = rewrite(&bytes, |m| tensor_entry(m, "node.0.bias").offset = 1 << 20);
    assert_mentions(
        &decode_err(&damaged),
        &["truncated", "tensor 'node.0.bias'", "the file has"],
    );
    let damaged = rewrite(&bytes, |m| {
        tensor_entry(m, "node.0.bias").offset = u64::MAX - 63
    });
    assert_mentions(
        &decode_err(&damaged),
        &["tensor 'node.0.bias'", "overflows"],
    );
}

#[test]
fn overlapping_tensor_entries_are_rejected() {
    let bytes = model_file::encode(&sample_model());
    let damaged = rewrite(&bytes, |m| {
        let weight = tensor_entry(m, "node.0.weight").offset;
        tensor_entry(m, "node.0.bias").offset = weight + 64;
    });
    assert_mentions(
        &decode_err(&damaged),
        &["overlap", "node.0.weight", "node.0.bias"],
    );
}

#[test]
fn a_length_that_disagrees_with_dtype_and_shape_is_rejected() {
    let bytes = model_file::encode(&sample_model());
    let damaged = rewrite(&bytes, |m| tensor_entry(m, "node.0.bias").length += 4);
    assert_mentions(
        &decode_err(&damaged),
        &["tensor 'node.0.bias'", "length 20", "disagrees", "f32"],
    );
    let damaged = rewrite(&bytes, |m| tensor_entry(m, "node.0.bias").shape = vec![5]);
    assert_mentions(
        &decode_err(&damaged),
        &["tensor 'node.0.bias'", "disagrees"],
    );
    let damaged = rewrite(&bytes, |m| tensor_entry(m, "node.0.bias").dtype = 7);
    assert_mentions(
        &decode_err(&damaged),
        &["tensor 'node.0.bias'", "unknown dtype 7"],
    );
}

#[test]
fn a_missing_tensor_reference_is_rejected() {
    let bytes = model_file::encode(&sample_model());
    let damaged = rewrite(&bytes, |m| {
        m.tensors.retain(|t| t.name != "node.0.bias");
    });
    assert_mentions(
        &decode_err(&damaged),
        &["node.0.bias", "not in the tensor table", "'conv'"],
    );
}

#[test]
fn a_graph_that_fails_validation_is_rejected() {
    let bytes = model_file::encode(&sample_model());
    let damaged = rewrite(&bytes, |m| {
        let g = m.graph.as_mut().unwrap();
        g.values[1].shape = vec![4, 8, 9];
    });
    assert_mentions(
        &decode_err(&damaged),
        &["invalid graph", "'conv'", "stored shape"],
    );
    let damaged = rewrite(&bytes, |m| {
        m.graph.as_mut().unwrap().nodes[3].inputs = vec![40]
    });
    assert_mentions(&decode_err(&damaged), &["invalid graph", "#40"]);
    let damaged = rewrite(&bytes, |m| {
        m.graph.as_mut().unwrap().values[0].shape = vec![3, 1 << 40, 8]
    });
    assert_mentions(&decode_err(&damaged), &["graph.values[0]", "limit"]);
}

#[test]
fn unit_parameters_that_fail_validation_are_rejected() {
    let bytes = model_file::encode(&sample_model());
    let damaged = rewrite(&bytes, |m| {
        m.unit_params[2].unit.as_mut().unwrap().d.pop();
    });
    assert_mentions(&decode_err(&damaged), &["unit parameter set #2", "lengths"]);
    let damaged = rewrite(&bytes, |m| {
        m.unit_params[0].unit.as_mut().unwrap().t[3] = f32::NAN
    });
    assert_mentions(
        &decode_err(&damaged),
        &["unit parameter set #0", "non-finite"],
    );
}

#[test]
fn misplaced_units_are_rejected() {
    let m = sample_model();
    let bytes = model_file::encode(&m);
    // Node 0 is the convolution.
    let damaged = rewrite(&bytes, |m| m.units[0].node = 0);
    assert_mentions(
        &decode_err(&damaged),
        &["unit placement #0", "'conv'", "not a gate"],
    );
    let damaged = rewrite(&bytes, |m| m.units[1].node = 1000);
    assert_mentions(
        &decode_err(&damaged),
        &["unit placement #1", "#1000", "out of range"],
    );
    let damaged = rewrite(&bytes, |m| m.units[1].params = 99);
    assert_mentions(
        &decode_err(&damaged),
        &["unit placement #1", "parameter set #99", "out of range"],
    );
    let damaged = rewrite(&bytes, |m| m.units[1].node = m.units[0].node);
    assert_mentions(&decode_err(&damaged), &["unit placement #1"]);
}

// ---------------------------------------------------------------------------- robustness

/// A tiny model, so that every offset can be tried.
fn tiny_model() -> ConvertedModel {
    let mut g = Graph::new("x", vec![2, 3, 3]);
    let conv = g
        .add_node(
            "conv",
            Op::Conv(Conv2d {
                weight: tensor(vec![2, 2, 1, 1], 1),
                bias: values(2, 2),
                stride: [1, 1],
                dilation: [1, 1],
                pads: [0; 4],
                groups: 1,
                prepared: Default::default(),
            }),
            vec![0],
            "c",
        )
        .unwrap();
    let relu = g
        .add_node("relu", Op::Activation(Activation::Relu), vec![conv], "r")
        .unwrap();
    g.add_node("gap", Op::GlobalAvgPool, vec![relu], "y")
        .unwrap();
    ConvertedModel {
        graph: g,
        units: vec![UnitPlacement {
            node: 1,
            gate: GateKind::Relu,
            params: 0,
        }],
        unit_params: vec![closed(
            GateKind::Relu,
            closed_form::relu(4, 2.0, Rounding::Truncate),
            [0.0, 2.0],
            "closed-form",
        )],
        preprocess: sample_model().preprocess,
        classes: vec!["a".into(), "b".into()],
        settings: sample_model().settings,
        source_sha256: "00".repeat(32),
    }
}

#[test]
fn truncation_at_any_offset_is_an_error() {
    let bytes = model_file::encode(&tiny_model());
    for len in 0..bytes.len() {
        assert!(
            model_file::decode(&bytes[..len]).is_err(),
            "truncated at {len} was accepted"
        );
    }
}

#[test]
fn flipping_any_byte_never_panics_and_only_spares_ignored_bytes() {
    let m = tiny_model();
    let bytes = model_file::encode(&m);
    let h = model_file::parse_header(&bytes).unwrap();
    let meta = model_file::parse_metadata(&h, &bytes[HEADER_LEN..]).unwrap();
    // Bytes a reader does not check: the minor version, the reserved word and the padding.
    let mut ignored = vec![false; bytes.len()];
    ignored[12..16].fill(true);
    ignored[28..32].fill(true);
    let mut end = HEADER_LEN + h.metadata_len as usize;
    for t in &meta.tensors {
        let r = meta.tensor_range(t);
        ignored[end..r.start as usize].fill(true);
        end = r.end as usize;
    }
    for at in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut damaged = bytes.clone();
            damaged[at] ^= mask;
            match model_file::decode(&damaged) {
                Ok(back) => {
                    assert!(
                        ignored[at],
                        "flipping byte {at} with {mask:#x} was not detected"
                    );
                    assert_eq!(back, m);
                }
                Err(e) => assert!(
                    !ignored[at],
                    "byte {at} is ignored but flipping it failed: {e}"
                ),
            }
        }
    }
}

#[test]
fn damaged_metadata_with_a_valid_checksum_never_panics() {
    // Corruption that the crc cannot catch (a buggy writer): the reader must still answer
    // with an error or a valid model, never a panic.
    let bytes = model_file::encode(&tiny_model());
    let h = model_file::parse_header(&bytes).unwrap();
    let meta_range = HEADER_LEN..HEADER_LEN + h.metadata_len as usize;
    for at in meta_range.clone() {
        for mask in [0x01u8, 0x02, 0x08, 0x40, 0x80, 0xFF] {
            let mut damaged = bytes.clone();
            damaged[at] ^= mask;
            let crc = crc32c::crc32c(&damaged[meta_range.clone()]);
            damaged[24..28].copy_from_slice(&crc.to_le_bytes());
            if let Ok(m) = model_file::decode(&damaged) {
                m.graph.validate().unwrap();
                m.unit_params
                    .iter()
                    .for_each(|p| p.unit.validate().unwrap());
            }
        }
    }
}

#[test]
fn huge_declared_sizes_do_not_allocate_or_panic() {
    let bytes = model_file::encode(&tiny_model());
    let mut damaged = bytes.clone();
    damaged[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_mentions(&decode_err(&damaged), &["corrupted", "metadata length"]);
    damaged[16..24].copy_from_slice(&(1u64 << 39).to_le_bytes());
    assert_mentions(&decode_err(&damaged), &["truncated", "metadata"]);
    // The bias is the last tensor.
    let damaged = rewrite(&bytes, |m| {
        let t = tensor_entry(m, "node.0.bias");
        t.shape = vec![1 << 21, 1 << 20];
        t.length = 4 << 41;
    });
    assert_mentions(&decode_err(&damaged), &["node.0.bias", "more than"]);
    let damaged = rewrite(&bytes, |m| {
        let t = tensor_entry(m, "node.0.bias");
        t.shape = vec![1 << 18, 1 << 18];
        t.length = 4 << 36;
    });
    assert_mentions(
        &decode_err(&damaged),
        &["truncated", "tensor 'node.0.bias'"],
    );
}
