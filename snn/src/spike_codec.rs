//! Packed spike tensors: what flows between pipeline stages.
//!
//! A unit's output crosses a stage boundary as its spikes z, K bits per element
//! (ARCHITECTURE.md §3); the receiver decodes `y = o + Σ d_i·z_i` with the unit's own d and o.
//!
//! **Layout.** Elements in row-major order of the batched shape `[N, …]`; element e's bit i
//! (neuron i) is global bit `e·K + i`, stored little-endian: byte `b / 8`, bit `b % 8` of that
//! byte. The payload is `ceil(elements·K / 8)` bytes and its padding bits are zero, so every
//! spike tensor has exactly one encoding. With [`Codec::Lz4`] the payload is LZ4-compressed
//! (block format, uncompressed length prepended as u32 LE); spike maps are sparse (most
//! neurons stay silent), so this pays on slow links.
//!
//! Decoding validates everything it is given: K, the shape's element count, the payload
//! length before and after decompression, and the padding.
//!
//! ```
//! use amos_snn::spike_codec::{Codec, pack, unpack};
//!
//! let spikes = [0b101u64, 0, 0b111, 0b010];
//! let packed = pack(7, 3, &[2, 2], &spikes, Codec::None).unwrap();
//! assert_eq!(packed.payload, vec![0b1100_0101, 0b0000_0101]);
//! assert_eq!(unpack(&packed).unwrap(), spikes);
//! ```

use thiserror::Error;

use crate::amos::MAX_NEURONS;

/// Largest element count a spike tensor may declare (guards allocations on untrusted input).
pub const MAX_ELEMENTS: u64 = 1 << 34;

/// Compression of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None,
    Lz4,
}

/// A spike tensor ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedSpikes {
    /// The unit (placement index) whose spikes these are.
    pub unit: u32,
    /// Neurons per element.
    pub k: u8,
    /// Batched shape `[N, …]`.
    pub shape: Vec<u64>,
    pub codec: Codec,
    pub payload: Vec<u8>,
}

/// Why a spike tensor could not be packed or unpacked.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SpikeCodecError {
    #[error("spike tensor of unit {unit}: K = {k}, must be 1 to {MAX_NEURONS}")]
    BadK { unit: u32, k: usize },
    #[error("spike tensor of unit {unit}: shape {shape:?} has more than {MAX_ELEMENTS} elements")]
    TooLarge { unit: u32, shape: Vec<u64> },
    #[error(
        "spike tensor of unit {unit}: shape {shape:?} holds {expected} elements, got {got} spike words"
    )]
    CountMismatch {
        unit: u32,
        shape: Vec<u64>,
        expected: u64,
        got: usize,
    },
    #[error(
        "spike tensor of unit {unit}: payload is {got} bytes, shape {shape:?} at K = {k} needs {expected}"
    )]
    PayloadLength {
        unit: u32,
        shape: Vec<u64>,
        k: u8,
        expected: u64,
        got: u64,
    },
    #[error("spike tensor of unit {unit}: element {element} has spikes above neuron K = {k}")]
    SpikeOutOfRange { unit: u32, element: usize, k: u8 },
    #[error("spike tensor of unit {unit}: padding bits are not zero")]
    Padding { unit: u32 },
    #[error("spike tensor of unit {unit}: LZ4 payload is corrupt: {detail}")]
    Compression { unit: u32, detail: String },
}

/// Elements of a shape, refusing overflow and sizes past [`MAX_ELEMENTS`].
fn elements(unit: u32, shape: &[u64]) -> Result<u64, SpikeCodecError> {
    shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| SpikeCodecError::TooLarge {
            unit,
            shape: shape.to_vec(),
        })
}

fn check_k(unit: u32, k: usize) -> Result<u8, SpikeCodecError> {
    if (1..=MAX_NEURONS).contains(&k) {
        Ok(k as u8)
    } else {
        Err(SpikeCodecError::BadK { unit, k })
    }
}

/// Packs one spike word per element (bit i = neuron i) of a tensor of `shape`.
pub fn pack(
    unit: u32,
    k: usize,
    shape: &[usize],
    spikes: &[u64],
    codec: Codec,
) -> Result<PackedSpikes, SpikeCodecError> {
    let k8 = check_k(unit, k)?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let n = elements(unit, &shape)?;
    if n != spikes.len() as u64 {
        return Err(SpikeCodecError::CountMismatch {
            unit,
            shape,
            expected: n,
            got: spikes.len(),
        });
    }
    let mask = if k == 64 { u64::MAX } else { (1u64 << k) - 1 };
    let mut raw = vec![0u8; (n * k as u64).div_ceil(8) as usize];
    let mut bit = 0usize;
    for (e, &z) in spikes.iter().enumerate() {
        if z & !mask != 0 {
            return Err(SpikeCodecError::SpikeOutOfRange {
                unit,
                element: e,
                k: k8,
            });
        }
        write_bits(&mut raw, bit, z, k);
        bit += k;
    }
    let payload = match codec {
        Codec::None => raw,
        Codec::Lz4 => lz4_flex::block::compress_prepend_size(&raw),
    };
    Ok(PackedSpikes {
        unit,
        k: k8,
        shape,
        codec,
        payload,
    })
}

/// The spike words of a packed tensor, after validating it.
pub fn unpack(p: &PackedSpikes) -> Result<Vec<u64>, SpikeCodecError> {
    let unit = p.unit;
    let k = check_k(unit, p.k as usize)? as usize;
    let n = elements(unit, &p.shape)?;
    let expected = (n * k as u64).div_ceil(8);
    let length_error = |got: u64| SpikeCodecError::PayloadLength {
        unit,
        shape: p.shape.clone(),
        k: p.k,
        expected,
        got,
    };
    let decompressed;
    let raw: &[u8] = match p.codec {
        Codec::None => &p.payload,
        Codec::Lz4 => {
            // Check the declared size before decompressing, so a hostile size allocates nothing.
            let declared = p
                .payload
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
            if declared != Some(expected) {
                return Err(length_error(declared.unwrap_or(0)));
            }
            decompressed = lz4_flex::block::decompress_size_prepended(&p.payload).map_err(|e| {
                SpikeCodecError::Compression {
                    unit,
                    detail: e.to_string(),
                }
            })?;
            &decompressed
        }
    };
    if raw.len() as u64 != expected {
        return Err(length_error(raw.len() as u64));
    }
    let used_bits = n as usize * k;
    if !used_bits.is_multiple_of(8) && raw.last().is_some_and(|&b| b >> (used_bits % 8) != 0) {
        return Err(SpikeCodecError::Padding { unit });
    }
    Ok((0..n as usize).map(|e| read_bits(raw, e * k, k)).collect())
}

/// Writes the low `k` bits of `z` at bit offset `bit`.
fn write_bits(buf: &mut [u8], bit: usize, z: u64, k: usize) {
    let (mut bit, mut z, mut left) = (bit, z, k);
    while left > 0 {
        let (byte, off) = (bit / 8, bit % 8);
        let take = (8 - off).min(left);
        buf[byte] |= ((z & ((1u64 << take) - 1)) as u8) << off;
        z >>= take;
        bit += take;
        left -= take;
    }
}

/// Reads `k` bits at bit offset `bit`.
fn read_bits(buf: &[u8], bit: usize, k: usize) -> u64 {
    let (mut bit, mut got, mut z) = (bit, 0usize, 0u64);
    while got < k {
        let (byte, off) = (bit / 8, bit % 8);
        let take = (8 - off).min(k - got);
        let v = (buf[byte] >> off) as u64 & ((1u64 << take) - 1);
        z |= v << got;
        bit += take;
        got += take;
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic sparse spike words for K neurons.
    fn spikes(n: usize, k: usize, seed: u64) -> Vec<u64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mask = if k == 64 { u64::MAX } else { (1u64 << k) - 1 };
                (s >> 7) & (s >> 3) & mask
            })
            .collect()
    }

    #[test]
    fn round_trips_every_k_and_codec() {
        for k in [1, 3, 7, 8, 10, 12, 13, 40, 63, 64] {
            for n in [0, 1, 5, 64, 1000] {
                let z = spikes(n, k, k as u64 * 31 + n as u64);
                for codec in [Codec::None, Codec::Lz4] {
                    let p = pack(3, k, &[1, n], &z, codec).unwrap();
                    if codec == Codec::None {
                        assert_eq!(p.payload.len(), (n * k).div_ceil(8));
                    }
                    assert_eq!(unpack(&p).unwrap(), z, "K={k} n={n} {codec:?}");
                }
            }
        }
    }

    #[test]
    fn bits_are_little_endian_element_major() {
        // K=10: element 0 = bits 0..10, element 1 = bits 10..20.
        let p = pack(0, 10, &[2], &[0b11_0000_0001, 0b10_0000_0011], Codec::None).unwrap();
        assert_eq!(p.payload, vec![0b0000_0001, 0b0000_1111, 0b0000_1000]);
    }

    #[test]
    fn malformed_tensors_are_rejected_with_their_reason() {
        let z = spikes(100, 10, 1);
        let good = pack(9, 10, &[4, 25], &z, Codec::None).unwrap();
        let mut short = good.clone();
        short.payload.pop();
        assert!(matches!(
            unpack(&short),
            Err(SpikeCodecError::PayloadLength { unit: 9, .. })
        ));
        let mut shape = good.clone();
        shape.shape = vec![4, 26];
        assert!(matches!(
            unpack(&shape),
            Err(SpikeCodecError::PayloadLength { .. })
        ));
        let mut huge = good.clone();
        huge.shape = vec![u64::MAX, 2];
        assert!(matches!(
            unpack(&huge),
            Err(SpikeCodecError::TooLarge { .. })
        ));
        let mut k0 = good.clone();
        k0.k = 0;
        assert!(matches!(unpack(&k0), Err(SpikeCodecError::BadK { .. })));
        // 3 elements × 3 bits = 9 bits: the 7 padding bits of byte 2 must be zero.
        let mut pad = pack(1, 3, &[3], &[1, 2, 4], Codec::None).unwrap();
        pad.payload[1] |= 0b1000_0000;
        assert_eq!(unpack(&pad), Err(SpikeCodecError::Padding { unit: 1 }));
        assert!(matches!(
            pack(1, 3, &[2], &[8, 0], Codec::None),
            Err(SpikeCodecError::SpikeOutOfRange { element: 0, .. })
        ));
        assert!(matches!(
            pack(1, 3, &[3], &[0, 0], Codec::None),
            Err(SpikeCodecError::CountMismatch { .. })
        ));
        let msg = unpack(&short).unwrap_err().to_string();
        assert!(msg.contains("unit 9") && msg.contains("needs 125"), "{msg}");
    }

    #[test]
    fn hostile_lz4_payloads_fail_cleanly() {
        let z = spikes(1000, 12, 5);
        let good = pack(2, 12, &[1000], &z, Codec::Lz4).unwrap();
        // A declared size that disagrees with the shape is refused before decompressing.
        let mut bomb = good.clone();
        bomb.payload[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            unpack(&bomb),
            Err(SpikeCodecError::PayloadLength { .. })
        ));
        // Truncated or flipped compressed data never panics.
        for cut in 0..good.payload.len() {
            let mut t = good.clone();
            t.payload.truncate(cut);
            let _ = unpack(&t);
        }
        for i in 4..good.payload.len() {
            let mut f = good.clone();
            f.payload[i] ^= 0x5a;
            let _ = unpack(&f);
        }
    }

    #[test]
    fn sparse_spikes_compress() {
        let z: Vec<u64> = (0..10_000)
            .map(|e| if e % 37 == 0 { 1 } else { 0 })
            .collect();
        let plain = pack(0, 10, &[10_000], &z, Codec::None).unwrap();
        let lz4 = pack(0, 10, &[10_000], &z, Codec::Lz4).unwrap();
        assert!(
            lz4.payload.len() * 4 < plain.payload.len(),
            "{} vs {}",
            lz4.payload.len(),
            plain.payload.len()
        );
    }
}
