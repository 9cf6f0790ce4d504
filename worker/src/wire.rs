//! Conversions between the wire messages and the core's types, validating what arrives.

use amos_proto::pipeline as pb;
use amos_snn::Tensor;
use amos_snn::spike_codec::{Codec, PackedSpikes};
use tonic::Status;

/// Largest element count of a received f32 tensor.
const MAX_ELEMENTS: u64 = 1 << 32;

pub fn codec_to_wire(c: Codec) -> i32 {
    match c {
        Codec::None => pb::Codec::None as i32,
        Codec::Lz4 => pb::Codec::Lz4 as i32,
    }
}

pub fn codec_from_wire(c: i32) -> Result<Codec, Status> {
    match pb::Codec::try_from(c) {
        Ok(pb::Codec::None) => Ok(Codec::None),
        Ok(pb::Codec::Lz4) => Ok(Codec::Lz4),
        Err(_) => Err(Status::invalid_argument(format!("unknown spike codec {c}"))),
    }
}

pub fn spikes_to_wire(p: PackedSpikes) -> pb::SpikeTensor {
    pb::SpikeTensor {
        unit: p.unit,
        k: p.k as u32,
        shape: p.shape,
        codec: codec_to_wire(p.codec),
        payload: p.payload,
    }
}

/// A received spike tensor; its contents are validated when it is unpacked.
pub fn spikes_from_wire(t: pb::SpikeTensor) -> Result<PackedSpikes, Status> {
    let k = u8::try_from(t.k).map_err(|_| {
        Status::invalid_argument(format!("spike tensor K = {} is out of range", t.k))
    })?;
    Ok(PackedSpikes {
        unit: t.unit,
        k,
        shape: t.shape,
        codec: codec_from_wire(t.codec)?,
        payload: t.payload,
    })
}

pub fn f32_to_wire(t: &Tensor) -> pb::F32Tensor {
    let mut data = Vec::with_capacity(t.data().len() * 4);
    for v in t.data() {
        data.extend_from_slice(&v.to_le_bytes());
    }
    pb::F32Tensor {
        shape: t.shape().iter().map(|&d| d as u64).collect(),
        data,
    }
}

pub fn f32_from_wire(t: pb::F32Tensor) -> Result<Tensor, Status> {
    let elements = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            Status::invalid_argument(format!("tensor shape {:?} is too large", t.shape))
        })?;
    if t.data.len() as u64 != elements * 4 {
        return Err(Status::invalid_argument(format!(
            "tensor of shape {:?} needs {} bytes, got {}",
            t.shape,
            elements * 4,
            t.data.len()
        )));
    }
    let data = t
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let shape = t.shape.iter().map(|&d| d as usize).collect();
    Tensor::new(shape, data).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The tensors of a received batch of `images` decodable images, converted from the wire:
/// its spike tensors (their payloads are checked when unpacked) and, when the chain carries
/// the ANN reference, its f32 tensors. Every tensor's batch dimension must be `images`.
pub fn batch_from_wire(
    images: usize,
    spikes: Vec<pb::SpikeTensor>,
    ann: Vec<pb::F32Tensor>,
    reference_ann: bool,
) -> Result<(Vec<PackedSpikes>, Option<Vec<Tensor>>), Status> {
    let batch_mismatch = |what: &str, shape: &[u64]| {
        Status::invalid_argument(format!(
            "{what} tensor of shape {shape:?} in a batch of {images} images"
        ))
    };
    if images == 0 {
        return Ok((Vec::new(), reference_ann.then(Vec::new)));
    }
    let spikes = spikes
        .into_iter()
        .map(|t| {
            if t.shape.first().copied() != Some(images as u64) {
                return Err(batch_mismatch("spike", &t.shape));
            }
            spikes_from_wire(t)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ann = if reference_ann {
        Some(
            ann.into_iter()
                .map(|t| {
                    if t.shape.first().copied() != Some(images as u64) {
                        return Err(batch_mismatch("ANN", &t.shape));
                    }
                    f32_from_wire(t)
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    Ok((spikes, ann))
}
