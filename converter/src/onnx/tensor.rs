//! Constant tensors of an ONNX graph: initializers, `Constant` nodes and folded subgraphs.

use std::path::Path;

use amos_proto::onnx::{TensorProto, tensor_proto::DataLocation, tensor_proto::DataType};
use amos_snn::Tensor;

use super::error::ImportError;

/// Marks the batch dimension in shapes computed at import (`Shape` of a runtime tensor):
/// the batch size is unknown until run time, so it is carried as this sentinel and must end
/// up as the first dimension of a `Reshape` target, where it means "keep the batch".
pub const BATCH_DIM: i64 = -(1 << 40);

/// Typed element storage of a constant.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    /// Integer and boolean tensors (shape arithmetic).
    I64(Vec<i64>),
}

/// A constant tensor known at import time.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub shape: Vec<usize>,
    pub data: ConstData,
}

impl Const {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Const {
        Const {
            shape,
            data: ConstData::F32(data),
        }
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Const {
        Const {
            shape,
            data: ConstData::I64(data),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    /// Values as `f32` (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as `i64`; floats must be integral.
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        match &self.data {
            ConstData::I64(v) => Ok(v.clone()),
            ConstData::F32(v) => v
                .iter()
                .map(|&x| {
                    if x.fract() == 0.0 && x.is_finite() {
                        Ok(x as i64)
                    } else {
                        Err(format!("expected integers, found {x}"))
                    }
                })
                .collect(),
        }
    }

    pub fn to_tensor(&self) -> Tensor {
        Tensor::new(self.shape.clone(), self.to_f32())
            .unwrap_or_else(|_| Tensor::zeros(self.shape.clone()))
    }

    /// The single value of a scalar or one-element tensor.
    pub fn scalar_f32(&self) -> Option<f32> {
        (self.len() == 1).then(|| self.to_f32()[0])
    }
}

/// Reads a `TensorProto`, resolving external data relative to `base_dir`.
pub fn read_tensor(t: &TensorProto, base_dir: Option<&Path>) -> Result<Const, ImportError> {
    let err = |detail: String| ImportError::Tensor {
        name: t.name.clone().unwrap_or_default(),
        detail,
    };
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err("shape overflows".into()))?;
    let external = t.data_location == Some(DataLocation::External as i32);
    let raw: Option<Vec<u8>> = if external {
        Some(read_external(t, base_dir).map_err(err)?)
    } else {
        t.raw_data.clone()
    };
    let dtype = t.data_type.unwrap_or(0);
    let data_type =
        DataType::try_from(dtype).map_err(|_| err(format!("unknown data type {dtype}")))?;
    let le_chunks = |raw: &[u8], size: usize| -> Result<Vec<Vec<u8>>, ImportError> {
        if raw.len() != count * size {
            return Err(err(format!(
                "raw data of {} bytes, expected {} for shape {shape:?}",
                raw.len(),
                count * size
            )));
        }
        Ok(raw.chunks_exact(size).map(|c| c.to_vec()).collect())
    };
    let data = match (data_type, raw) {
        (DataType::Float, Some(raw)) => ConstData::F32(
            le_chunks(&raw, 4)?
                .iter()
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (DataType::Float, None) => ConstData::F32(t.float_data.clone()),
        (DataType::Double, Some(raw)) => ConstData::F32(
            le_chunks(&raw, 8)?
                .iter()
                .map(|c| f64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8])) as f32)
                .collect(),
        ),
        (DataType::Double, None) => {
            ConstData::F32(t.double_data.iter().map(|&x| x as f32).collect())
        }
        (DataType::Int64, Some(raw)) => ConstData::I64(
            le_chunks(&raw, 8)?
                .iter()
                .map(|c| i64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        (DataType::Int64, None) => ConstData::I64(t.int64_data.clone()),
        (DataType::Int32, Some(raw)) => ConstData::I64(
            le_chunks(&raw, 4)?
                .iter()
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
        ),
        (
            DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Bool,
            None,
        ) => ConstData::I64(t.int32_data.iter().map(|&x| x as i64).collect()),
        (DataType::Int8, Some(raw)) => {
            ConstData::I64(raw.iter().map(|&b| b as i8 as i64).collect())
        }
        (DataType::Uint8 | DataType::Bool, Some(raw)) => {
            ConstData::I64(raw.iter().map(|&b| b as i64).collect())
        }
        (other, _) => {
            return Err(err(format!(
                "data type {} is not supported",
                other.as_str_name()
            )));
        }
    };
    let c = Const { shape, data };
    if c.len() != count {
        return Err(err(format!(
            "shape {:?} needs {count} values, found {}",
            c.shape,
            c.len()
        )));
    }
    Ok(c)
}

/// Reads the bytes of an externally stored tensor, refusing locations outside `base_dir`.
fn read_external(t: &TensorProto, base_dir: Option<&Path>) -> Result<Vec<u8>, String> {
    let field = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location = field("location").ok_or("external data without a 'location'")?;
    let base =
        base_dir.ok_or("external data needs the model's folder (load the model from a file)")?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "external data location '{location}' must stay inside the model's folder"
        ));
    }
    let path = base.join(rel);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read external data {}: {e}", path.display()))?;
    let parse = |key: &str| -> Result<Option<usize>, String> {
        field(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| format!("bad external data {key} '{v}'"))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?.unwrap_or(bytes.len().saturating_sub(offset));
    let end = offset
        .checked_add(length)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "external data range {offset}+{length} is past the end of {} ({} bytes)",
                path.display(),
                bytes.len()
            )
        })?;
    Ok(bytes[offset..end].to_vec())
}
