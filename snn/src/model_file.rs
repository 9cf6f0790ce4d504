//! The `.amos` model file codec (ARCHITECTURE.md §4).
//!
//! # Layout
//!
//! ```text
//! offset 0   magic  89 41 4D 4F 53 0D 0A 1A  ("\x89AMOS\r\n\x1a")
//!        8   u32 LE format major, u32 LE format minor     (model::FORMAT_MAJOR / FORMAT_MINOR)
//!       16   u64 LE metadata length M, u32 LE crc32c of the metadata, u32 reserved (0)
//!       32   metadata: M bytes, a protobuf `amos.model.ModelMetadata` (proto/amos_model.proto)
//!  32+M..    zero padding to a 64-byte boundary (the *data start*), then the tensor data:
//!            each tensor starts on a 64-byte boundary, zero padding in between
//! ```
//!
//! # Why this shape
//!
//! A worker holds one partition of the network and may read the model from object storage.
//! It reads the 32-byte header ([`parse_header`]), then the metadata, whose length the header
//! gives ([`parse_metadata`]), and then only the byte ranges of the tensors it needs, which
//! the metadata's tensor table gives ([`Metadata::tensor_range`], [`assemble`]). Small things
//! (the graph structure, unit parameters, the preprocessing recipe, class names, settings)
//! are inline in the metadata; large operator parameters (convolution and linear weights and
//! biases, binary constants, channel-affine scales and shifts) are tensors, referenced from
//! the operator messages by name: `node.{index}.weight`, `.bias`, `.constant`, `.scale`,
//! `.shift`.
//!
//! - Tensor offsets in the table are **relative to the data start** (which is
//!   `align64(32 + M)`), so the metadata does not depend on its own length.
//! - Tensors are little-endian `f32`, row-major, 64-byte aligned (for memory mapping and
//!   SIMD loads), each with its own CRC-32C so that a ranged read can be checked alone.
//! - Encoding is deterministic: the same model gives a byte-identical file (no protobuf maps;
//!   every list in a fixed order; floats stored bit-exactly).
//! - The reserved header word and the padding are written as zeros and not checked on
//!   reading. A newer minor version is read (it may only add fields this build ignores); an
//!   unknown major version is rejected.
//!
//! The reader never panics on any input: every length, index and dimension coming from the
//! file is checked before use, and allocations are bounded by the bytes actually present.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use amos_proto::model as pb;
use prost::Message;

use crate::amos::AmosUnit;
use crate::error::GraphError;
use crate::graph::{Graph, Node, Value};
use crate::model::{
    ConversionSettings, ConvertedModel, FORMAT_MAJOR, FORMAT_MINOR, Recipe, UnitParams,
    UnitPlacement,
};
use crate::ops::binary::BinaryConstant;
use crate::ops::pool::PoolWindow;
use crate::ops::{
    Activation, AvgPool2d, Binary, BinaryKind, ChannelAffine, Concat, Conv2d, GateKind, Linear,
    MaxPool2d, Op, OpClass, Pad, ReduceMean, Reshape, Softmax,
};
use crate::tensor::Tensor;

/// The first 8 bytes of every model file.
pub const MAGIC: [u8; 8] = *b"\x89AMOS\r\n\x1a";
/// Length of the fixed header in front of the metadata.
pub const HEADER_LEN: usize = 32;
/// Alignment of the data start and of every tensor, in bytes.
pub const ALIGN: u64 = 64;

/// Largest dimension, index, stride or padding a reader accepts (keeps shape arithmetic far
/// from overflow).
const MAX_DIM: u64 = u32::MAX as u64;
/// Largest number of elements in one value or tensor shape.
const MAX_ELEMENTS: u64 = 1 << 40;
/// Largest metadata length a header may announce (a larger one is a corrupted header).
const MAX_METADATA_LEN: u64 = 1 << 40;

/// Why a model file could not be read or written.
#[derive(thiserror::Error, Debug)]
pub enum ModelFileError {
    /// The file does not start with [`MAGIC`].
    #[error(
        "not an amos model file: it starts with {found} instead of 89 41 4D 4F 53 0D 0A 1A (\"\\x89AMOS\\r\\n\\x1a\")"
    )]
    NotAmos {
        /// The first bytes found, in hex.
        found: String,
    },
    /// A major format version this build does not read.
    #[error(
        "unsupported model file format version {major}.{minor}: this build reads major version {supported}{}",
        if major > supported { " (a file from a newer amos needs a newer build)" } else { "" }
    )]
    UnsupportedVersion {
        major: u32,
        minor: u32,
        supported: u32,
    },
    /// The file ends before a part the header or the metadata announces.
    #[error(
        "truncated model file: the {what} needs bytes {start}..{end}, but only {len} bytes are present"
    )]
    Truncated {
        what: String,
        start: u64,
        end: u64,
        len: u64,
    },
    /// A header field that cannot be right.
    #[error("corrupted model file header: {0}")]
    Header(String),
    /// The metadata's CRC-32C differs from the header's.
    #[error(
        "corrupted model file: metadata crc32c is {actual:08x}, the header says {expected:08x}"
    )]
    MetadataChecksum { expected: u32, actual: u32 },
    /// The metadata is not a valid protobuf message.
    #[error("corrupted model file: the metadata is not a valid model message ({0})")]
    MetadataDecode(String),
    /// A tensor's byte range lies past the end of the file.
    #[error(
        "truncated model file: tensor '{name}' needs bytes {start}..{end}, but the file has {len} bytes"
    )]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        len: u64,
    },
    /// A tensor's CRC-32C differs from the tensor table's.
    #[error(
        "corrupted tensor '{name}': crc32c is {actual:08x}, the tensor table says {expected:08x}"
    )]
    TensorChecksum {
        name: String,
        expected: u32,
        actual: u32,
    },
    /// Two tensor table entries share bytes.
    #[error(
        "tensor table entries '{first}' (data bytes {first_range:?}) and '{second}' (data bytes {second_range:?}) overlap"
    )]
    TensorOverlap {
        first: String,
        first_range: Range<u64>,
        second: String,
        second_range: Range<u64>,
    },
    /// A tensor whose byte length is not its element size times its element count.
    #[error(
        "tensor '{name}': length {length} bytes disagrees with {dtype} × {shape:?} = {expected} bytes"
    )]
    TensorLength {
        name: String,
        dtype: &'static str,
        shape: Vec<u64>,
        length: u64,
        expected: u64,
    },
    /// Any other problem with one tensor (unknown dtype, misaligned, duplicate name, …).
    #[error("tensor '{name}': {detail}")]
    Tensor { name: String, detail: String },
    /// A metadata field that is missing or out of range.
    #[error("invalid model metadata: {field}: {detail}")]
    Invalid { field: String, detail: String },
    /// The graph fails [`Graph::validate`].
    #[error("invalid graph in model file: {0}")]
    Graph(GraphError),
    /// A unit parameter set fails [`AmosUnit::validate`] or does not fit its gate.
    #[error("invalid unit parameter set #{index}: {detail}")]
    Unit { index: usize, detail: String },
    /// A unit placement that points nowhere sensible.
    #[error("invalid unit placement #{index}: {detail}")]
    Placement { index: usize, detail: String },
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T, E = ModelFileError> = std::result::Result<T, E>;

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ModelFileError {
    ModelFileError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

// ------------------------------------------------------------------------------------ header

/// The fixed 32-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub major: u32,
    pub minor: u32,
    /// Length M of the metadata, which follows the header.
    pub metadata_len: u64,
    /// CRC-32C of the metadata.
    pub metadata_crc32c: u32,
}

impl Header {
    /// Byte range of the metadata in the file: `HEADER_LEN..HEADER_LEN + M`.
    pub fn metadata_range(&self) -> Range<u64> {
        HEADER_LEN as u64..HEADER_LEN as u64 + self.metadata_len
    }

    /// Offset of the tensor data region: the end of the metadata rounded up to [`ALIGN`].
    pub fn data_start(&self) -> u64 {
        align_up(HEADER_LEN as u64 + self.metadata_len)
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&self.major.to_le_bytes());
        h[12..16].copy_from_slice(&self.minor.to_le_bytes());
        h[16..24].copy_from_slice(&self.metadata_len.to_le_bytes());
        h[24..28].copy_from_slice(&self.metadata_crc32c.to_le_bytes());
        // 28..32: reserved, zero.
        h
    }
}

/// Parses and checks the header at the start of `bytes` (the file, or at least its first
/// [`HEADER_LEN`] bytes): the magic, a known major version and a plausible metadata length.
/// A newer minor version is accepted.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    let magic_len = bytes.len().min(MAGIC.len());
    let prefix = bytes.get(..magic_len).unwrap_or_default();
    if MAGIC.get(..magic_len) != Some(prefix) {
        return Err(ModelFileError::NotAmos { found: hex(prefix) });
    }
    let Some(h) = bytes.get(..HEADER_LEN) else {
        return Err(ModelFileError::Truncated {
            what: "header".into(),
            start: 0,
            end: HEADER_LEN as u64,
            len: bytes.len() as u64,
        });
    };
    let u32_at = |at: usize| {
        h.get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    let u64_at = |at: usize| {
        h.get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let header = Header {
        major: u32_at(8),
        minor: u32_at(12),
        metadata_len: u64_at(16),
        metadata_crc32c: u32_at(24),
    };
    if header.major != FORMAT_MAJOR {
        return Err(ModelFileError::UnsupportedVersion {
            major: header.major,
            minor: header.minor,
            supported: FORMAT_MAJOR,
        });
    }
    if header.metadata_len > MAX_METADATA_LEN {
        return Err(ModelFileError::Header(format!(
            "metadata length {} bytes is past any plausible file size",
            header.metadata_len
        )));
    }
    Ok(header)
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing (the file is empty)".into();
    }
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

// ------------------------------------------------------------------------------------ metadata

/// Element type of a tensor in the data region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// IEEE 754 binary32, little-endian.
    F32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte offset relative to [`Metadata::data_start`]; a multiple of [`ALIGN`].
    pub offset: u64,
    /// Byte length (element size × element count).
    pub length: u64,
    /// CRC-32C of the tensor's bytes.
    pub crc32c: u32,
}

/// The parsed, checksum-verified metadata of a model file.
///
/// Its tensor table is checked (known dtypes, lengths that fit the shapes, aligned and
/// non-overlapping ranges, unique names); the rest of the model is checked by [`assemble`].
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// The header the metadata was read with.
    pub header: Header,
    /// Absolute file offset of the tensor data region.
    pub data_start: u64,
    /// The tensor table, in file order.
    pub tensors: Vec<TensorEntry>,
    /// The raw metadata message (graph structure, units, recipe, settings, …).
    pub message: pb::ModelMetadata,
}

impl Metadata {
    /// Absolute byte range of a tensor in the file.
    pub fn tensor_range(&self, entry: &TensorEntry) -> Range<u64> {
        // Cannot overflow: parse_metadata checked data_start + offset + length.
        let start = self.data_start.saturating_add(entry.offset);
        start..start.saturating_add(entry.length)
    }

    /// The tensor table entry of that name.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensors node `index` of the graph reads its parameters from (`node.{index}.*`).
    pub fn node_tensors(&self, index: usize) -> Vec<&TensorEntry> {
        let prefix = format!("node.{index}.");
        self.tensors
            .iter()
            .filter(|t| t.name.starts_with(&prefix))
            .collect()
    }

    /// Absolute byte offset where the last tensor ends (the data start when there is none):
    /// a file shorter than this is truncated.
    pub fn data_end(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| self.tensor_range(t).end)
            .max()
            .unwrap_or(self.data_start)
    }
}

/// Parses the metadata that follows `header`.
///
/// `bytes` starts at the metadata (file offset [`HEADER_LEN`]) and holds at least
/// `header.metadata_len` bytes; anything after them is ignored. Checks the CRC-32C, decodes
/// the message and checks the tensor table.
pub fn parse_metadata(header: &Header, bytes: &[u8]) -> Result<Metadata> {
    let m = header.metadata_len;
    let meta =
        usize::try_from(m)
            .ok()
            .and_then(|m| bytes.get(..m))
            .ok_or(ModelFileError::Truncated {
                what: "metadata".into(),
                start: HEADER_LEN as u64,
                end: HEADER_LEN as u64 + m,
                len: HEADER_LEN as u64 + bytes.len() as u64,
            })?;
    let actual = crc32c::crc32c(meta);
    // Fuzzing builds skip checksums so that the fuzzer reaches the parser behind them.
    if actual != header.metadata_crc32c && !cfg!(fuzzing) {
        return Err(ModelFileError::MetadataChecksum {
            expected: header.metadata_crc32c,
            actual,
        });
    }
    let message = pb::ModelMetadata::decode(meta)
        .map_err(|e| ModelFileError::MetadataDecode(e.to_string()))?;
    let data_start = header.data_start();
    let tensors = parse_tensor_table(&message.tensors, data_start)?;
    Ok(Metadata {
        header: *header,
        data_start,
        tensors,
        message,
    })
}

fn parse_tensor_table(entries: &[pb::TensorEntry], data_start: u64) -> Result<Vec<TensorEntry>> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let err = |detail: String| ModelFileError::Tensor {
            name: e.name.clone(),
            detail,
        };
        if e.name.is_empty() {
            return Err(err("tensor table entry without a name".into()));
        }
        if !names.insert(e.name.as_str()) {
            return Err(err("appears twice in the tensor table".into()));
        }
        let dtype = match pb::Dtype::try_from(e.dtype) {
            Ok(pb::Dtype::F32) => DType::F32,
            _ => return Err(err(format!("unknown dtype {}", e.dtype))),
        };
        let shape = shape_dims(&e.shape, &format!("tensor '{}' shape", e.name))?;
        let expected = element_count(&shape).saturating_mul(dtype.size());
        if expected != e.length {
            return Err(ModelFileError::TensorLength {
                name: e.name.clone(),
                dtype: dtype.name(),
                shape: e.shape.clone(),
                length: e.length,
                expected,
            });
        }
        if e.offset % ALIGN != 0 {
            return Err(err(format!(
                "offset {} is not a multiple of {ALIGN}",
                e.offset
            )));
        }
        if data_start
            .checked_add(e.offset)
            .and_then(|s| s.checked_add(e.length))
            .is_none()
        {
            return Err(err(format!("range {}+{} overflows", e.offset, e.length)));
        }
        out.push(TensorEntry {
            name: e.name.clone(),
            dtype,
            shape,
            offset: e.offset,
            length: e.length,
            crc32c: e.crc32c,
        });
    }
    // Overlaps: sort the non-empty ranges by start; each must end before the next begins.
    let mut order: Vec<&TensorEntry> = out.iter().filter(|t| t.length > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        // Cannot overflow: parse_tensor_table checked data_start + offset + length.
        if let [a, b] = pair
            && a.offset + a.length > b.offset
        {
            return Err(ModelFileError::TensorOverlap {
                first: a.name.clone(),
                first_range: a.offset..a.offset + a.length,
                second: b.name.clone(),
                second_range: b.offset..b.offset + b.length,
            });
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------ reading

/// Reads a whole model file held in memory.
pub fn decode(bytes: &[u8]) -> Result<ConvertedModel> {
    let header = parse_header(bytes)?;
    let metadata = parse_metadata(&header, bytes.get(HEADER_LEN..).unwrap_or_default())?;
    let len = bytes.len() as u64;
    assemble(&metadata, |entry| {
        let range = metadata.tensor_range(entry);
        usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.end).ok())
            .and_then(|(s, e)| bytes.get(s..e))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| ModelFileError::TensorOutOfBounds {
                name: entry.name.clone(),
                start: range.start,
                end: range.end,
                len,
            })
    })
}

/// Reads a model file.
pub fn read_file(path: &Path) -> Result<ConvertedModel> {
    let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes)
}

/// Builds the model from parsed metadata and the bytes of its tensors.
///
/// `tensor` fetches one tensor's bytes (exactly [`Metadata::tensor_range`] of the file); it is
/// called once per referenced tensor, in graph order. Each tensor's length and CRC-32C are
/// checked, then the graph (with [`Graph::validate`]), the unit parameters (with
/// [`AmosUnit::validate`]) and the unit placements.
pub fn assemble(
    metadata: &Metadata,
    tensor: impl Fn(&TensorEntry) -> Result<Vec<u8>>,
) -> Result<ConvertedModel> {
    assemble_partial(metadata, |entry| tensor(entry).map(Some))
}

/// [`assemble`] for a pipeline stage that holds only part of the network: where `tensor`
/// returns `None`, the tensor is left as zeros of its shape, neither read nor checked. Such a
/// model has the whole graph's structure (shapes, units, fan-outs) but the weights of only
/// the nodes it fetched, so it must only run those nodes. Zeroed memory is allocated lazily
/// by the operating system, so the tensors it never fetched cost next to no memory.
pub fn assemble_partial(
    metadata: &Metadata,
    tensor: impl Fn(&TensorEntry) -> Result<Option<Vec<u8>>>,
) -> Result<ConvertedModel> {
    let msg = &metadata.message;
    let table: BTreeMap<&str, &TensorEntry> = metadata
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let load = |name: &str, field: &str| -> Result<Tensor> {
        let entry = table
            .get(name)
            .ok_or_else(|| invalid(field, format!("tensor '{name}' is not in the tensor table")))?;
        let Some(bytes) = tensor(entry)? else {
            let elements = (entry.length / entry.dtype.size()) as usize;
            return Tensor::new(entry.shape.clone(), vec![0.0; elements]).map_err(|e| {
                ModelFileError::Tensor {
                    name: name.into(),
                    detail: e.to_string(),
                }
            });
        };
        if bytes.len() as u64 != entry.length {
            return Err(ModelFileError::Tensor {
                name: name.into(),
                detail: format!(
                    "got {} bytes, the tensor table says {}",
                    bytes.len(),
                    entry.length
                ),
            });
        }
        let actual = crc32c::crc32c(&bytes);
        if actual != entry.crc32c && !cfg!(fuzzing) {
            return Err(ModelFileError::TensorChecksum {
                name: name.into(),
                expected: entry.crc32c,
                actual,
            });
        }
        let data = match entry.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        Tensor::new(entry.shape.clone(), data).map_err(|e| ModelFileError::Tensor {
            name: name.into(),
            detail: e.to_string(),
        })
    };

    let graph = msg
        .graph
        .as_ref()
        .ok_or_else(|| invalid("graph", "missing"))?;
    let graph = read_graph(graph, &load)?;
    graph.validate().map_err(ModelFileError::Graph)?;

    let unit_params = msg
        .unit_params
        .iter()
        .enumerate()
        .map(|(i, p)| read_unit_params(i, p))
        .collect::<Result<Vec<_>>>()?;
    let units = read_placements(&msg.units, &graph, &unit_params)?;
    let preprocess = read_recipe(
        msg.preprocess
            .as_ref()
            .ok_or_else(|| invalid("preprocess", "missing"))?,
    )?;
    let s = msg
        .settings
        .as_ref()
        .ok_or_else(|| invalid("settings", "missing"))?;
    let settings = ConversionSettings {
        k: s.k.iter().map(|g| (g.gate.clone(), g.k)).collect(),
        rounding: s.rounding,
        calibration_images: s.calibration_images,
        seed: s.seed,
        tool_version: s.tool_version.clone(),
        fit_steps: s.fit_steps,
        fit_samples: s.fit_samples,
    };
    Ok(ConvertedModel {
        graph,
        units,
        unit_params,
        preprocess,
        classes: msg.classes.clone(),
        settings,
        source_sha256: msg.source_sha256.clone(),
    })
}

/// One index, dimension or size from the file, checked against [`MAX_DIM`].
fn dim(v: u64, field: &str) -> Result<usize> {
    if v > MAX_DIM {
        return Err(invalid(
            field,
            format!("{v} is larger than the limit {MAX_DIM}"),
        ));
    }
    usize::try_from(v).map_err(|_| invalid(field, format!("{v} does not fit this machine")))
}

fn dims(v: &[u64], field: &str) -> Result<Vec<usize>> {
    v.iter()
        .enumerate()
        .map(|(i, &d)| dim(d, &format!("{field}[{i}]")))
        .collect()
}

/// A shape: every dimension and the element count within limits.
fn shape_dims(v: &[u64], field: &str) -> Result<Vec<usize>> {
    let shape = dims(v, field)?;
    let mut n: u64 = 1;
    for &d in v {
        n = n.saturating_mul(d);
    }
    if n > MAX_ELEMENTS {
        return Err(invalid(
            field,
            format!("{v:?} has more than {MAX_ELEMENTS} elements"),
        ));
    }
    Ok(shape)
}

fn element_count(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
}

/// Exactly `N` values.
fn array<const N: usize>(v: &[u64], field: &str) -> Result<[usize; N]> {
    let d = dims(v, field)?;
    d.try_into()
        .map_err(|_| invalid(field, format!("expected {N} values, got {}", v.len())))
}

fn float_array<const N: usize>(v: &[f32], field: &str) -> Result<[f32; N]> {
    v.try_into()
        .map_err(|_| invalid(field, format!("expected {N} values, got {}", v.len())))
}

fn read_graph(g: &pb::Graph, load: &dyn Fn(&str, &str) -> Result<Tensor>) -> Result<Graph> {
    let values = g
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Ok(Value {
                name: v.name.clone(),
                shape: shape_dims(&v.shape, &format!("graph.values[{i}] '{}'.shape", v.name))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let nodes = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let field = format!("graph.nodes[{i}] '{}'", n.name);
            let op =
                n.op.as_ref()
                    .ok_or_else(|| invalid(format!("{field}.op"), "missing"))?;
            Ok(Node {
                name: n.name.clone(),
                op: read_op(op, &field, load)?,
                inputs: dims(&n.inputs, &format!("{field}.inputs"))?,
                output: dim(n.output, &format!("{field}.output"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Graph {
        values,
        nodes,
        input: dim(g.input, "graph.input")?,
        output: dim(g.output, "graph.output")?,
    })
}

/// A one-dimensional parameter tensor as a vector.
fn vector(t: Tensor, field: &str) -> Result<Vec<f32>> {
    if t.shape().len() != 1 {
        return Err(invalid(
            field,
            format!("expected a 1-D tensor, got shape {:?}", t.shape()),
        ));
    }
    Ok(t.into_data())
}

fn read_op(op: &pb::Op, node: &str, load: &dyn Fn(&str, &str) -> Result<Tensor>) -> Result<Op> {
    use pb::op::Kind;
    let kind = op
        .kind
        .as_ref()
        .ok_or_else(|| invalid(format!("{node}.op"), "no operator set"))?;
    Ok(match kind {
        Kind::Conv(c) => {
            let f = |s: &str| format!("{node}.op.conv.{s}");
            let weight = load(&c.weight, &f("weight"))?;
            let ok = matches!(weight.shape(), [_, _, kh, kw] if *kh > 0 && *kw > 0);
            if !ok {
                return Err(invalid(
                    f("weight"),
                    format!(
                        "expected [C_out, C_in/groups, kH ≥ 1, kW ≥ 1], got {:?}",
                        weight.shape()
                    ),
                ));
            }
            Op::Conv(Conv2d {
                weight,
                bias: vector(load(&c.bias, &f("bias"))?, &f("bias"))?,
                stride: array(&c.stride, &f("stride"))?,
                dilation: array(&c.dilation, &f("dilation"))?,
                pads: array(&c.pads, &f("pads"))?,
                groups: dim(c.groups, &f("groups"))?,
                prepared: Default::default(),
            })
        }
        Kind::Linear(l) => {
            let f = |s: &str| format!("{node}.op.linear.{s}");
            let weight = load(&l.weight, &f("weight"))?;
            if weight.shape().len() != 2 {
                return Err(invalid(
                    f("weight"),
                    format!("expected [in, out], got {:?}", weight.shape()),
                ));
            }
            Op::Linear(Linear {
                weight,
                bias: vector(load(&l.bias, &f("bias"))?, &f("bias"))?,
            })
        }
        Kind::ChannelAffine(a) => {
            let f = |s: &str| format!("{node}.op.channel_affine.{s}");
            Op::ChannelAffine(ChannelAffine {
                scale: vector(load(&a.scale, &f("scale"))?, &f("scale"))?,
                shift: vector(load(&a.shift, &f("shift"))?, &f("shift"))?,
            })
        }
        Kind::Binary(b) => {
            let f = |s: &str| format!("{node}.op.binary.{s}");
            let kind = match pb::BinaryKind::try_from(b.kind) {
                Ok(pb::BinaryKind::Add) => BinaryKind::Add,
                Ok(pb::BinaryKind::Sub) => BinaryKind::Sub,
                Ok(pb::BinaryKind::Mul) => BinaryKind::Mul,
                Ok(pb::BinaryKind::Div) => BinaryKind::Div,
                _ => {
                    return Err(invalid(
                        f("kind"),
                        format!("unknown binary operator {}", b.kind),
                    ));
                }
            };
            let constant = match &b.constant {
                None => None,
                Some(c) => Some(BinaryConstant {
                    tensor: load(&c.tensor, &f("constant"))?,
                    on_left: c.on_left,
                }),
            };
            Op::Binary(Binary { kind, constant })
        }
        Kind::Activation(a) => {
            Op::Activation(read_activation(a, &format!("{node}.op.activation"))?)
        }
        Kind::MaxPool(p) => {
            let field = format!("{node}.op.max_pool.window");
            let w = p
                .window
                .as_ref()
                .ok_or_else(|| invalid(&field, "missing"))?;
            Op::MaxPool(MaxPool2d {
                window: read_window(w, &field)?,
            })
        }
        Kind::AvgPool(p) => {
            let field = format!("{node}.op.avg_pool.window");
            let w = p
                .window
                .as_ref()
                .ok_or_else(|| invalid(&field, "missing"))?;
            Op::AvgPool(AvgPool2d {
                window: read_window(w, &field)?,
                count_include_pad: p.count_include_pad,
            })
        }
        Kind::GlobalAvgPool(_) => Op::GlobalAvgPool,
        Kind::ReduceMean(r) => {
            let field = format!("{node}.op.reduce_mean.axes");
            let axes = dims(&r.axes, &field)?;
            if axes.windows(2).any(|w| w.first() >= w.get(1)) {
                return Err(invalid(
                    field,
                    format!("{axes:?} are not sorted and distinct"),
                ));
            }
            Op::ReduceMean(ReduceMean {
                axes,
                keepdims: r.keepdims,
            })
        }
        Kind::Reshape(r) => Op::Reshape(Reshape {
            shape: shape_dims(&r.shape, &format!("{node}.op.reshape.shape"))?,
        }),
        Kind::Concat(c) => Op::Concat(Concat {
            axis: dim(c.axis, &format!("{node}.op.concat.axis"))?,
        }),
        Kind::Pad(p) => Op::Pad(Pad {
            begin: dims(&p.begin, &format!("{node}.op.pad.begin"))?,
            end: dims(&p.end, &format!("{node}.op.pad.end"))?,
            value: p.value.unwrap_or(0.0),
        }),
        Kind::Softmax(s) => Op::Softmax(Softmax {
            axis: dim(s.axis, &format!("{node}.op.softmax.axis"))?,
        }),
        Kind::Identity(_) => Op::Identity,
    })
}

fn read_activation(a: &pb::Activation, field: &str) -> Result<Activation> {
    use pb::activation::Kind;
    let kind = a
        .kind
        .as_ref()
        .ok_or_else(|| invalid(field, "no activation set"))?;
    Ok(match kind {
        Kind::Relu(_) => Activation::Relu,
        Kind::Clip(c) => Activation::Clip {
            lo: c.lo.unwrap_or(0.0),
            hi: c.hi.unwrap_or(0.0),
        },
        Kind::Sigmoid(_) => Activation::Sigmoid,
        Kind::Swish(_) => Activation::Swish,
        Kind::HardSigmoid(h) => Activation::HardSigmoid {
            alpha: h.alpha.unwrap_or(0.0),
            beta: h.beta.unwrap_or(0.0),
        },
        Kind::HardSwish(_) => Activation::HardSwish,
        Kind::Tanh(_) => Activation::Tanh,
        Kind::Gelu(_) => Activation::Gelu,
        Kind::Erf(_) => Activation::Erf,
        Kind::Identity(_) => Activation::Identity,
    })
}

fn read_window(w: &pb::PoolWindow, field: &str) -> Result<PoolWindow> {
    Ok(PoolWindow {
        kernel: array(&w.kernel, &format!("{field}.kernel"))?,
        stride: array(&w.stride, &format!("{field}.stride"))?,
        pads: array(&w.pads, &format!("{field}.pads"))?,
        dilation: array(&w.dilation, &format!("{field}.dilation"))?,
        ceil_mode: w.ceil_mode,
    })
}

fn read_gate(v: i32, field: &str) -> Result<GateKind> {
    use pb::Gate as G;
    Ok(match G::try_from(v) {
        Ok(G::Relu) => GateKind::Relu,
        Ok(G::Relu6) => GateKind::Relu6,
        Ok(G::Clip) => GateKind::Clip,
        Ok(G::Sigmoid) => GateKind::Sigmoid,
        Ok(G::Swish) => GateKind::Swish,
        Ok(G::HardSigmoid) => GateKind::HardSigmoid,
        Ok(G::HardSwish) => GateKind::HardSwish,
        Ok(G::Tanh) => GateKind::Tanh,
        Ok(G::Gelu) => GateKind::Gelu,
        Ok(G::Erf) => GateKind::Erf,
        Ok(G::Mul) => GateKind::Mul,
        Ok(G::MaxPool) => GateKind::MaxPool,
        Ok(G::Identity) => GateKind::Identity,
        Ok(G::Unspecified) | Err(_) => return Err(invalid(field, format!("unknown gate {v}"))),
    })
}

fn read_unit_params(index: usize, p: &pb::UnitParams) -> Result<UnitParams> {
    let field = |s: &str| format!("unit_params[{index}].{s}");
    let u = p
        .unit
        .as_ref()
        .ok_or_else(|| invalid(field("unit"), "missing"))?;
    let unit = AmosUnit {
        c: u.c.clone(),
        c2: u.c2.as_ref().map(|c2| c2.values.clone()),
        d: u.d.clone(),
        t: u.t.clone(),
        h: u.h.clone(),
        o: u.o.unwrap_or(0.0),
    };
    unit.validate()
        .map_err(|detail| ModelFileError::Unit { index, detail })?;
    let range2 = match p.range2.as_slice() {
        [] => None,
        r => Some(float_array(r, &field("range2"))?),
    };
    Ok(UnitParams {
        unit,
        gate: read_gate(p.gate, &field("gate"))?,
        range: float_array(&p.range, &field("range"))?,
        range2,
        mse: p.mse.unwrap_or(0.0),
        method: p.method.clone(),
    })
}

fn read_placements(
    placements: &[pb::UnitPlacement],
    graph: &Graph,
    params: &[UnitParams],
) -> Result<Vec<UnitPlacement>> {
    let mut placed = BTreeSet::new();
    placements
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let err = |detail: String| ModelFileError::Placement { index, detail };
            let gate = read_gate(p.gate, &format!("units[{index}].gate"))?;
            let node = usize::try_from(p.node)
                .ok()
                .and_then(|i| graph.nodes.get(i).map(|n| (i, n)))
                .ok_or_else(|| {
                    err(format!(
                        "node #{} is out of range ({} nodes)",
                        p.node,
                        graph.nodes.len()
                    ))
                })?;
            let (node, n) = node;
            match n.op.class() {
                OpClass::Gate(g) if g == gate => {}
                OpClass::Gate(g) => {
                    return Err(err(format!(
                        "node #{node} '{}' is a {} gate, the placement says {}",
                        n.name,
                        g.name(),
                        gate.name()
                    )));
                }
                _ => {
                    return Err(err(format!(
                        "node #{node} '{}' ({}) is not a gate node",
                        n.name,
                        n.op.name()
                    )));
                }
            }
            if !placed.insert(node) {
                return Err(err(format!(
                    "node #{node} '{}' has more than one unit",
                    n.name
                )));
            }
            let pi = usize::try_from(p.params)
                .ok()
                .filter(|&i| i < params.len())
                .ok_or_else(|| {
                    err(format!(
                        "parameter set #{} is out of range ({} sets)",
                        p.params,
                        params.len()
                    ))
                })?;
            if params.get(pi).map(|u| u.gate) != Some(gate) {
                return Err(err(format!(
                    "parameter set #{pi} was not made for a {} gate",
                    gate.name()
                )));
            }
            Ok(UnitPlacement {
                node,
                gate,
                params: pi,
            })
        })
        .collect()
}

fn read_recipe(r: &pb::Recipe) -> Result<Recipe> {
    let crop: [u32; 2] = r.crop.as_slice().try_into().map_err(|_| {
        invalid(
            "preprocess.crop",
            format!("expected 2 values, got {}", r.crop.len()),
        )
    })?;
    Ok(Recipe {
        preset: r.preset.clone(),
        resize: r.resize.clone(),
        resize_param: r.resize_param,
        crop,
        interp: r.interp.clone(),
        mean: float_array(&r.mean, "preprocess.mean")?,
        std: float_array(&r.std, "preprocess.std")?,
    })
}

// ------------------------------------------------------------------------------------ writing

/// Collects the tensor data region while the metadata is built.
#[derive(Default)]
struct DataWriter {
    entries: Vec<pb::TensorEntry>,
    data: Vec<u8>,
}

impl DataWriter {
    /// Appends a tensor at the next aligned offset and returns its name.
    fn add(&mut self, name: String, shape: &[usize], values: &[f32]) -> String {
        self.data
            .resize(align_up(self.data.len() as u64) as usize, 0);
        let offset = self.data.len();
        self.data.reserve(values.len() * 4);
        for v in values {
            self.data.extend_from_slice(&v.to_le_bytes());
        }
        let bytes = self.data.get(offset..).unwrap_or_default();
        self.entries.push(pb::TensorEntry {
            name: name.clone(),
            dtype: pb::Dtype::F32 as i32,
            shape: shape.iter().map(|&d| d as u64).collect(),
            offset: offset as u64,
            length: bytes.len() as u64,
            crc32c: crc32c::crc32c(bytes),
        });
        name
    }

    fn tensor(&mut self, name: String, t: &Tensor) -> String {
        self.add(name, t.shape(), t.data())
    }

    fn vector(&mut self, name: String, v: &[f32]) -> String {
        self.add(name, &[v.len()], v)
    }
}

fn u64s(v: &[usize]) -> Vec<u64> {
    v.iter().map(|&d| d as u64).collect()
}

fn write_gate(g: GateKind) -> i32 {
    use pb::Gate as G;
    (match g {
        GateKind::Relu => G::Relu,
        GateKind::Relu6 => G::Relu6,
        GateKind::Clip => G::Clip,
        GateKind::Sigmoid => G::Sigmoid,
        GateKind::Swish => G::Swish,
        GateKind::HardSigmoid => G::HardSigmoid,
        GateKind::HardSwish => G::HardSwish,
        GateKind::Tanh => G::Tanh,
        GateKind::Gelu => G::Gelu,
        GateKind::Erf => G::Erf,
        GateKind::Identity => G::Identity,
        GateKind::Mul => G::Mul,
        GateKind::MaxPool => G::MaxPool,
    }) as i32
}

fn write_window(w: &PoolWindow) -> pb::PoolWindow {
    pb::PoolWindow {
        kernel: u64s(&w.kernel),
        stride: u64s(&w.stride),
        pads: u64s(&w.pads),
        dilation: u64s(&w.dilation),
        ceil_mode: w.ceil_mode,
    }
}

fn write_op(index: usize, op: &Op, data: &mut DataWriter) -> pb::Op {
    use pb::op::Kind;
    let name = |s: &str| format!("node.{index}.{s}");
    let kind = match op {
        Op::Conv(c) => Kind::Conv(pb::Conv {
            weight: data.tensor(name("weight"), &c.weight),
            bias: data.vector(name("bias"), &c.bias),
            stride: u64s(&c.stride),
            dilation: u64s(&c.dilation),
            pads: u64s(&c.pads),
            groups: c.groups as u64,
        }),
        Op::Linear(l) => Kind::Linear(pb::Linear {
            weight: data.tensor(name("weight"), &l.weight),
            bias: data.vector(name("bias"), &l.bias),
        }),
        Op::ChannelAffine(a) => Kind::ChannelAffine(pb::ChannelAffine {
            scale: data.vector(name("scale"), &a.scale),
            shift: data.vector(name("shift"), &a.shift),
        }),
        Op::Binary(b) => Kind::Binary(pb::Binary {
            kind: (match b.kind {
                BinaryKind::Add => pb::BinaryKind::Add,
                BinaryKind::Sub => pb::BinaryKind::Sub,
                BinaryKind::Mul => pb::BinaryKind::Mul,
                BinaryKind::Div => pb::BinaryKind::Div,
            }) as i32,
            constant: b.constant.as_ref().map(|c| pb::BinaryConstant {
                tensor: data.tensor(name("constant"), &c.tensor),
                on_left: c.on_left,
            }),
        }),
        Op::Activation(a) => {
            use pb::activation::Kind as A;
            let none = pb::NoParams {};
            Kind::Activation(pb::Activation {
                kind: Some(match *a {
                    Activation::Relu => A::Relu(none),
                    Activation::Clip { lo, hi } => A::Clip(pb::Clip {
                        lo: Some(lo),
                        hi: Some(hi),
                    }),
                    Activation::Sigmoid => A::Sigmoid(none),
                    Activation::Swish => A::Swish(none),
                    Activation::HardSigmoid { alpha, beta } => A::HardSigmoid(pb::HardSigmoid {
                        alpha: Some(alpha),
                        beta: Some(beta),
                    }),
                    Activation::HardSwish => A::HardSwish(none),
                    Activation::Tanh => A::Tanh(none),
                    Activation::Gelu => A::Gelu(none),
                    Activation::Erf => A::Erf(none),
                    Activation::Identity => A::Identity(none),
                }),
            })
        }
        Op::MaxPool(p) => Kind::MaxPool(pb::MaxPool {
            window: Some(write_window(&p.window)),
        }),
        Op::AvgPool(p) => Kind::AvgPool(pb::AvgPool {
            window: Some(write_window(&p.window)),
            count_include_pad: p.count_include_pad,
        }),
        Op::GlobalAvgPool => Kind::GlobalAvgPool(pb::GlobalAvgPool {}),
        Op::ReduceMean(r) => Kind::ReduceMean(pb::ReduceMean {
            axes: u64s(&r.axes),
            keepdims: r.keepdims,
        }),
        Op::Reshape(r) => Kind::Reshape(pb::Reshape {
            shape: u64s(&r.shape),
        }),
        Op::Concat(c) => Kind::Concat(pb::Concat {
            axis: c.axis as u64,
        }),
        Op::Pad(p) => Kind::Pad(pb::Pad {
            begin: u64s(&p.begin),
            end: u64s(&p.end),
            value: Some(p.value),
        }),
        Op::Softmax(s) => Kind::Softmax(pb::Softmax {
            axis: s.axis as u64,
        }),
        Op::Identity => Kind::Identity(pb::Identity {}),
    };
    pb::Op { kind: Some(kind) }
}

fn write_unit_params(p: &UnitParams) -> pb::UnitParams {
    let u = &p.unit;
    pb::UnitParams {
        unit: Some(pb::AmosUnit {
            c: u.c.clone(),
            c2: u.c2.as_ref().map(|c2| pb::FloatList { values: c2.clone() }),
            d: u.d.clone(),
            t: u.t.clone(),
            h: u.h.clone(),
            o: Some(u.o),
        }),
        gate: write_gate(p.gate),
        range: p.range.to_vec(),
        range2: p.range2.map_or_else(Vec::new, |r| r.to_vec()),
        mse: Some(p.mse),
        method: p.method.clone(),
    }
}

/// Encodes a model as the bytes of an `.amos` file.
///
/// Deterministic: the same model always gives the same bytes. The model is written as it is;
/// [`decode`] checks it.
pub fn encode(model: &ConvertedModel) -> Vec<u8> {
    let mut data = DataWriter::default();
    let g = &model.graph;
    let graph = pb::Graph {
        values: g
            .values
            .iter()
            .map(|v| pb::Value {
                name: v.name.clone(),
                shape: u64s(&v.shape),
            })
            .collect(),
        nodes: g
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| pb::Node {
                name: n.name.clone(),
                op: Some(write_op(i, &n.op, &mut data)),
                inputs: u64s(&n.inputs),
                output: n.output as u64,
            })
            .collect(),
        input: g.input as u64,
        output: g.output as u64,
    };
    let r = &model.preprocess;
    let s = &model.settings;
    let message = pb::ModelMetadata {
        graph: Some(graph),
        units: model
            .units
            .iter()
            .map(|u| pb::UnitPlacement {
                node: u.node as u64,
                gate: write_gate(u.gate),
                params: u.params as u64,
            })
            .collect(),
        unit_params: model.unit_params.iter().map(write_unit_params).collect(),
        preprocess: Some(pb::Recipe {
            preset: r.preset.clone(),
            resize: r.resize.clone(),
            resize_param: r.resize_param,
            crop: r.crop.to_vec(),
            interp: r.interp.clone(),
            mean: r.mean.to_vec(),
            std: r.std.to_vec(),
        }),
        classes: model.classes.clone(),
        settings: Some(pb::ConversionSettings {
            k: s.k
                .iter()
                .map(|(gate, k)| pb::GateK {
                    gate: gate.clone(),
                    k: *k,
                })
                .collect(),
            rounding: s.rounding,
            calibration_images: s.calibration_images,
            seed: s.seed,
            tool_version: s.tool_version.clone(),
            fit_steps: s.fit_steps,
            fit_samples: s.fit_samples,
        }),
        source_sha256: model.source_sha256.clone(),
        tensors: std::mem::take(&mut data.entries),
    };
    let meta = message.encode_to_vec();
    let header = Header {
        major: FORMAT_MAJOR,
        minor: FORMAT_MINOR,
        metadata_len: meta.len() as u64,
        metadata_crc32c: crc32c::crc32c(&meta),
    };
    let data_start = header.data_start() as usize;
    let mut out = Vec::with_capacity(data_start + data.data.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&meta);
    out.resize(data_start, 0);
    out.extend_from_slice(&data.data);
    out
}

/// Writes a model file atomically: to a temporary file in the same directory, then renamed
/// over `path`, so a reader never sees a partial file.
pub fn write_file(path: &Path, model: &ConvertedModel) -> Result<()> {
    let io_err = |source| ModelFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = encode(model);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e)
    })
}
