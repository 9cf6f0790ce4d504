//! ONNX import: a `ModelProto` becomes an [`amos_snn::Graph`].
//!
//! Nodes are visited in file order (ONNX graphs are topologically sorted). Every value is
//! either a constant known at import time ([`Const`]) or a runtime tensor of the IR. A node
//! whose inputs are all constant is evaluated on the spot, which is how exporters'
//! shape arithmetic (`Shape → Gather → Concat → Reshape`, "same" padding computed with
//! `ConstantOfShape`, `Slice`, `Transpose`, `Cast`) folds away. Operators are imported by
//! family in [`ops`]. Anything unsupported is an error naming the node, its op type and the
//! opset: never a silent skip.

mod attrs;
pub mod error;
mod ops;
pub mod tensor;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use amos_proto::onnx::{ModelProto, NodeProto, tensor_shape_proto::dimension, type_proto};
use amos_snn::{Graph, ValueId};
use prost::Message;

pub use error::ImportError;
pub use tensor::{BATCH_DIM, Const, ConstData};

/// Opsets of the default domain this importer implements.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// An imported model.
#[derive(Clone, Debug)]
pub struct ImportedModel {
    /// The IR after folding and pattern fusion.
    pub graph: Graph,
    /// Node counts by ONNX op type, as in the file.
    pub onnx_ops: BTreeMap<String, usize>,
    /// The default-domain opset.
    pub opset: i64,
}

/// A value during import.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Const(Const),
    Runtime(ValueId),
}

/// Reads and imports an ONNX file; external data is resolved next to it.
pub fn import_file(path: &Path) -> Result<ImportedModel, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    import_bytes(&bytes, path)
}

/// Imports an ONNX file held in memory; `path` names it in errors, and external data is
/// resolved in its folder.
pub fn import_bytes(bytes: &[u8], path: &Path) -> Result<ImportedModel, ImportError> {
    let model = ModelProto::decode(bytes).map_err(|source| ImportError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    import_model(&model, path.parent())
}

/// Imports a decoded model; `base_dir` is where external tensor data lives.
pub fn import_model(
    model: &ModelProto,
    base_dir: Option<&Path>,
) -> Result<ImportedModel, ImportError> {
    let opset = default_opset(model)?;
    let graph_proto = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Graph("the model has no graph".into()))?;
    let mut env: HashMap<String, Val> = HashMap::new();
    for init in &graph_proto.initializer {
        let name = init.name.clone().unwrap_or_default();
        env.insert(name, Val::Const(tensor::read_tensor(init, base_dir)?));
    }
    // The one runtime input: graph inputs that are not initializers.
    let runtime_inputs: Vec<_> = graph_proto
        .input
        .iter()
        .filter(|i| !env.contains_key(i.name.as_deref().unwrap_or_default()))
        .collect();
    let [input] = runtime_inputs.as_slice() else {
        return Err(ImportError::Graph(format!(
            "expected exactly one runtime input (the image batch), found {}: {:?}",
            runtime_inputs.len(),
            runtime_inputs
                .iter()
                .map(|i| i.name.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        )));
    };
    let input_name = input.name.clone().unwrap_or_default();
    let shape =
        input_shape(input).map_err(|e| ImportError::Graph(format!("input '{input_name}': {e}")))?;
    let mut graph = Graph::new(&input_name, shape);
    env.insert(input_name, Val::Runtime(graph.input));

    let mut onnx_ops = BTreeMap::new();
    for node in &graph_proto.node {
        *onnx_ops
            .entry(node.op_type.clone().unwrap_or_default())
            .or_insert(0) += 1;
        let cx = NodeCx::new(node, opset, &env)?;
        let out = ops::import_node(&cx, &mut graph)?;
        let outputs: Vec<&String> = node.output.iter().filter(|o| !o.is_empty()).collect();
        if let Some(first) = outputs.first() {
            env.insert((*first).clone(), out);
        }
        // Secondary outputs (Dropout's mask, BatchNormalization's running stats) are not
        // computed; reading one is reported by `NodeCx::new` of the reader as undefined.
    }

    let [output] = graph_proto.output.as_slice() else {
        return Err(ImportError::Graph(format!(
            "expected exactly one output, found {}",
            graph_proto.output.len()
        )));
    };
    let out_name = output.name.clone().unwrap_or_default();
    match env.get(&out_name) {
        Some(Val::Runtime(v)) => graph
            .set_output(*v)
            .map_err(|e| ImportError::Graph(e.to_string()))?,
        Some(Val::Const(_)) => {
            return Err(ImportError::Graph(format!(
                "output '{out_name}' is a constant"
            )));
        }
        None => {
            return Err(ImportError::Graph(format!(
                "output '{out_name}' is produced by no node"
            )));
        }
    }
    amos_snn::passes::simplify(&mut graph);
    graph
        .validate()
        .map_err(|e| ImportError::Graph(e.to_string()))?;
    Ok(ImportedModel {
        graph,
        onnx_ops,
        opset,
    })
}

fn default_opset(model: &ModelProto) -> Result<i64, ImportError> {
    let version = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| {
            ImportError::Opset("the model imports no default-domain (ai.onnx) opset".into())
        })?;
    if !OPSETS.contains(&version) {
        return Err(ImportError::Opset(format!(
            "the model uses ai.onnx opset {version}; supported opsets are {} to {}",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    Ok(version)
}

/// The per-image shape of the graph input `[N, …]`: every dimension but the batch must be known.
fn input_shape(input: &amos_proto::onnx::ValueInfoProto) -> Result<Vec<usize>, String> {
    let Some(type_proto::Value::TensorType(tt)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err("not a tensor".into());
    };
    if tt.elem_type != Some(amos_proto::onnx::tensor_proto::DataType::Float as i32) {
        return Err(format!("element type {:?} is not float32", tt.elem_type));
    }
    let dims = tt
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    if dims.len() < 2 {
        return Err(format!(
            "expected [N, …] with at least 2 dimensions, found rank {}",
            dims.len()
        ));
    }
    dims[1..]
        .iter()
        .enumerate()
        .map(|(i, d)| match d.value {
            Some(dimension::Value::DimValue(v)) if v > 0 => Ok(v as usize),
            _ => Err(format!("dimension {} must be a fixed positive size", i + 1)),
        })
        .collect()
}

/// One node being imported, with its resolved inputs.
pub(crate) struct NodeCx<'a> {
    pub node: &'a NodeProto,
    pub opset: i64,
    /// Inputs in order; `None` for an omitted optional input (empty name).
    pub inputs: Vec<Option<Val>>,
}

impl<'a> NodeCx<'a> {
    fn new(
        node: &'a NodeProto,
        opset: i64,
        env: &HashMap<String, Val>,
    ) -> Result<Self, ImportError> {
        let mut cx = NodeCx {
            node,
            opset,
            inputs: Vec::new(),
        };
        if let Some(domain) = node
            .domain
            .as_deref()
            .filter(|d| !d.is_empty() && *d != "ai.onnx")
        {
            return Err(cx.err(format!("operator domain '{domain}' is not supported")));
        }
        for name in &node.input {
            if name.is_empty() {
                cx.inputs.push(None);
                continue;
            }
            match env.get(name) {
                Some(v) => cx.inputs.push(Some(v.clone())),
                None => {
                    return Err(cx.err(format!(
                        "input '{name}' is neither an initializer, a graph input nor an earlier node's output"
                    )));
                }
            }
        }
        Ok(cx)
    }

    pub fn name(&self) -> &str {
        self.node
            .name
            .as_deref()
            .unwrap_or_else(|| self.node.output.first().map(String::as_str).unwrap_or(""))
    }

    pub fn op_type(&self) -> &str {
        self.node.op_type.as_deref().unwrap_or("")
    }

    pub fn output_name(&self) -> &str {
        self.node.output.first().map(String::as_str).unwrap_or("")
    }

    pub fn err(&self, detail: impl Into<String>) -> ImportError {
        ImportError::Node {
            node: self.name().to_string(),
            op_type: self.op_type().to_string(),
            opset: self.opset,
            detail: detail.into(),
        }
    }

    /// Input `i`, which must be present.
    pub fn input(&self, i: usize) -> Result<&Val, ImportError> {
        self.inputs
            .get(i)
            .and_then(|v| v.as_ref())
            .ok_or_else(|| self.err(format!("missing input #{i}")))
    }

    /// Input `i` if given.
    pub fn opt_input(&self, i: usize) -> Option<&Val> {
        self.inputs.get(i).and_then(|v| v.as_ref())
    }

    pub fn const_input(&self, i: usize) -> Result<&Const, ImportError> {
        match self.input(i)? {
            Val::Const(c) => Ok(c),
            Val::Runtime(_) => Err(self.err(format!(
                "input #{i} ('{}') must be a constant (initializer or folded), but depends on the model input",
                self.node.input[i]
            ))),
        }
    }

    pub fn opt_const_input(&self, i: usize) -> Result<Option<&Const>, ImportError> {
        match self.opt_input(i) {
            None => Ok(None),
            Some(_) => self.const_input(i).map(Some),
        }
    }

    pub fn runtime_input(&self, i: usize) -> Result<ValueId, ImportError> {
        match self.input(i)? {
            Val::Runtime(v) => Ok(*v),
            Val::Const(_) => Err(self.err(format!(
                "input #{i} must depend on the model input, found a constant"
            ))),
        }
    }

    /// Whether every given input is a constant (the node can be folded).
    pub fn all_const(&self) -> bool {
        self.inputs
            .iter()
            .flatten()
            .all(|v| matches!(v, Val::Const(_)))
    }
}
