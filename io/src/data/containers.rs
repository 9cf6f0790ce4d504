//! Datasets packed into container files: WebDataset tar shards and Parquet shards.
//!
//! * **WebDataset** ([`ContainerKind::Tar`]): `*.tar` files. A sample is the members that
//!   share a key, the member path up to the first `.` of its file name
//!   (`n01440764_10026.jpg` + `n01440764_10026.cls`): one image (`jpg`, `jpeg` or `png`) and
//!   optionally `cls`, the class index as decimal text. Other members (`json`, `txt`, …) are
//!   ignored.
//! * **Parquet** ([`ContainerKind::Parquet`]): `*.parquet` files with an image column and
//!   an integer `label` column (a negative label means unlabelled). The image column is a
//!   struct with a binary `bytes` field, as in the Hugging Face `imagenet-1k` export
//!   (`image.bytes`, `image.path`), or a binary column named `image`, `jpg`, `jpeg`, `png`,
//!   `img` or `bytes`.
//!
//! A container is one shard of a distributed run, so shards follow the data's own files and
//! stay stable across runs. An image's id is `CONTAINER#KEY`: the tar sample key, or for
//! Parquet the row index, zero-padded to 8 digits (row order is the file's). Samples are
//! sorted by id.
//!
//! Two ways in: [`index_tar`] and [`ParquetIndex`] list a local container without reading
//! image bytes (tar members are byte ranges of the file, Parquet rows are read by row
//! group), and [`read_samples`] takes a whole container already in memory, as a pipeline's
//! first stage fetches it from an object store.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BinaryArray, LargeBinaryArray, StructArray,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::ChunkReader;

use super::DataError;

/// File name extensions of tar members taken as the sample's image, in order of preference.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Names of a top-level binary column taken as the image (after a struct with `bytes`).
const IMAGE_COLUMNS: [&str; 6] = ["image", "jpg", "jpeg", "png", "img", "bytes"];

/// Largest `.cls` member read (a class index is a few digits).
const MAX_LABEL_BYTES: u64 = 64;

/// The kind of a container file, by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    Tar,
    Parquet,
}

impl ContainerKind {
    /// The kind of the container named `name`, if it is one (`.tar`, `.parquet`).
    pub fn of(name: &str) -> Option<ContainerKind> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "tar" => Some(ContainerKind::Tar),
            "parquet" => Some(ContainerKind::Parquet),
            _ => None,
        }
    }
}

/// The id of sample `key` of container `container`.
pub fn sample_id(container: &str, key: &str) -> String {
    format!("{container}#{key}")
}

/// The key of Parquet row `row` (zero-padded so that ids sort in row order).
pub fn row_key(row: usize) -> String {
    format!("{row:08}")
}

fn container_error(name: &str, msg: impl Into<String>) -> DataError {
    DataError::Container {
        name: name.to_string(),
        msg: msg.into(),
    }
}

// ---------------------------------------------------------------------------- WebDataset

/// One sample of a tar shard, located in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarSample {
    pub key: String,
    pub label: Option<i32>,
    /// Byte range of the image member in the tar file; `Err` names why the sample has none.
    pub image: Result<Range<u64>, String>,
}

/// Splits a member path into its sample key and extension (`a/b.c.jpg` → `a/b`, `c.jpg`).
fn split_key(path: &str) -> Option<(&str, &str)> {
    let base_start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[base_start..].find('.')? + base_start;
    Some((&path[..dot], &path[dot + 1..]))
}

/// Lists the samples of a tar shard read from `reader`, seeking over image data; `name`
/// names the container in errors. Samples are sorted by key.
///
/// Errors: a malformed tar (truncated, bad header), a `.cls` member that is not a
/// non-negative integer, a sample with two images or two labels.
pub fn index_tar<R: Read + Seek>(reader: R, name: &str) -> Result<Vec<TarSample>, DataError> {
    let mut archive = tar::Archive::new(reader);
    // Per key: its label, and its image's extension rank and byte range.
    type Parts = (Option<i32>, Option<(usize, Range<u64>)>);
    let mut samples: BTreeMap<String, Parts> = BTreeMap::new();
    let entries = archive
        .entries_with_seek()
        .map_err(|e| container_error(name, format!("not a tar file: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| container_error(name, format!("bad tar entry: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| container_error(name, format!("bad member name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let Some((key, ext)) = split_key(&path) else {
            continue;
        };
        let ext = ext.to_ascii_lowercase();
        let sample = samples.entry(key.to_string()).or_default();
        if ext == "cls" {
            if entry.size() > MAX_LABEL_BYTES {
                return Err(container_error(name, format!("{path}: label is too long")));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| container_error(name, format!("{path}: {e}")))?;
            let label = text
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|&l| l >= 0)
                .ok_or_else(|| {
                    container_error(
                        name,
                        format!("{path}: label {:?} is not a class index", text.trim()),
                    )
                })?;
            if sample.0.replace(label).is_some() {
                return Err(container_error(name, format!("{key}: two labels")));
            }
        } else if let Some(rank) = IMAGE_EXTENSIONS.iter().position(|&e| e == ext) {
            let start = entry.raw_file_position();
            let range = start..start + entry.size();
            match &sample.1 {
                Some((r, _)) if *r == rank => {
                    return Err(container_error(name, format!("{key}: two .{ext} images")));
                }
                Some((r, _)) if *r < rank => {}
                _ => sample.1 = Some((rank, range)),
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|(key, (label, image))| TarSample {
            image: image
                .map(|(_, r)| r)
                .ok_or_else(|| format!("{name}#{key}: sample has no jpg, jpeg or png member")),
            key,
            label,
        })
        .collect())
}

// ------------------------------------------------------------------------------- Parquet

/// Where the image bytes and the label are in a Parquet shard's schema.
#[derive(Clone, Debug)]
struct ParquetColumns {
    /// Top-level column index of the image, and whether it is a struct with `bytes`.
    image: (usize, bool),
    label: Option<usize>,
}

fn is_binary(t: &DataType) -> bool {
    matches!(t, DataType::Binary | DataType::LargeBinary)
}

fn find_columns(schema: &Schema, name: &str) -> Result<ParquetColumns, DataError> {
    let fields = schema.fields();
    let struct_image = fields.iter().position(|f| match f.data_type() {
        DataType::Struct(children) => children
            .iter()
            .any(|c: &Arc<Field>| c.name() == "bytes" && is_binary(c.data_type())),
        _ => false,
    });
    let image = match struct_image {
        Some(i) => (i, true),
        None => IMAGE_COLUMNS
            .iter()
            .find_map(|&want| {
                fields
                    .iter()
                    .position(|f| f.name() == want && is_binary(f.data_type()))
            })
            .map(|i| (i, false))
            .ok_or_else(|| {
                container_error(
                    name,
                    format!(
                        "no image column (a struct with a binary 'bytes' field, or a binary column named one of {IMAGE_COLUMNS:?}); columns: {:?}",
                        fields.iter().map(|f| f.name()).collect::<Vec<_>>()
                    ),
                )
            })?,
    };
    let label = match fields.iter().position(|f| f.name() == "label") {
        None => None,
        Some(i) if fields[i].data_type().is_integer() => Some(i),
        Some(i) => {
            return Err(container_error(
                name,
                format!(
                    "column 'label' is {}, expected an integer type",
                    fields[i].data_type()
                ),
            ));
        }
    };
    Ok(ParquetColumns { image, label })
}

/// The labels of one record batch's label column (any integer type): negative or null means
/// unlabelled.
fn labels_of(column: &ArrayRef, name: &str) -> Result<Vec<Option<i32>>, DataError> {
    use arrow_array::types::{
        Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
    };
    /// The column's values widened to `i128`, which holds every Arrow integer.
    fn widened<T: ArrowPrimitiveType>(column: &ArrayRef) -> Vec<Option<i128>>
    where
        T::Native: Into<i128>,
    {
        column
            .as_primitive::<T>()
            .iter()
            .map(|v| v.map(Into::into))
            .collect()
    }
    let values = match column.data_type() {
        DataType::Int8 => widened::<Int8Type>(column),
        DataType::Int16 => widened::<Int16Type>(column),
        DataType::Int32 => widened::<Int32Type>(column),
        DataType::Int64 => widened::<Int64Type>(column),
        DataType::UInt8 => widened::<UInt8Type>(column),
        DataType::UInt16 => widened::<UInt16Type>(column),
        DataType::UInt32 => widened::<UInt32Type>(column),
        DataType::UInt64 => widened::<UInt64Type>(column),
        other => {
            return Err(container_error(
                name,
                format!("label column is {other}, expected an integer type"),
            ));
        }
    };
    values
        .into_iter()
        .map(|v| match v {
            None => Ok(None),
            Some(v) if v < 0 => Ok(None),
            Some(v) => i32::try_from(v)
                .map(Some)
                .map_err(|_| container_error(name, format!("label {v} is too large"))),
        })
        .collect()
}

/// The image bytes of one record batch's image column (`None` for a null image).
fn images_of(column: &ArrayRef, is_struct: bool) -> Vec<Option<Bytes>> {
    if !is_struct {
        return binary_values(column);
    }
    let s: &StructArray = column.as_struct();
    match s.column_by_name("bytes") {
        // A null struct is a null image even where its child holds a value.
        Some(b) => binary_values(b)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.filter(|_| !s.is_null(i)))
            .collect(),
        None => vec![None; s.len()],
    }
}

fn binary_values(a: &ArrayRef) -> Vec<Option<Bytes>> {
    let copy = |v: &[u8]| Bytes::copy_from_slice(v);
    if let Some(b) = a.as_any().downcast_ref::<BinaryArray>() {
        b.iter().map(|v| v.map(copy)).collect()
    } else if let Some(b) = a.as_any().downcast_ref::<LargeBinaryArray>() {
        b.iter().map(|v| v.map(copy)).collect()
    } else {
        vec![None; a.len()]
    }
}

/// A local Parquet shard's rows: labels read up front (the label column only), image bytes
/// read a row group at a time.
#[derive(Clone, Debug)]
pub struct ParquetIndex {
    columns: ParquetColumns,
    /// First row of each row group, and the total row count at the end.
    group_starts: Vec<usize>,
    pub labels: Vec<Option<i32>>,
}

impl ParquetIndex {
    /// Reads the footer and the label column of the shard in `file`.
    pub fn open<R: ChunkReader + 'static>(file: R, name: &str) -> Result<ParquetIndex, DataError> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| container_error(name, format!("not a Parquet file: {e}")))?;
        let columns = find_columns(builder.schema(), name)?;
        let mut group_starts = vec![0usize];
        for rg in builder.metadata().row_groups() {
            let last = *group_starts.last().unwrap_or(&0);
            group_starts.push(last + rg.num_rows().max(0) as usize);
        }
        let rows = *group_starts.last().unwrap_or(&0);
        let labels = match columns.label {
            None => vec![None; rows],
            Some(col) => {
                let mask = ProjectionMask::roots(builder.parquet_schema(), [col]);
                let reader = builder
                    .with_projection(mask)
                    .build()
                    .map_err(|e| container_error(name, e.to_string()))?;
                let mut labels = Vec::with_capacity(rows);
                for batch in reader {
                    let batch = batch.map_err(|e| container_error(name, e.to_string()))?;
                    labels.extend(labels_of(batch.column(0), name)?);
                }
                labels
            }
        };
        if labels.len() != rows {
            return Err(container_error(
                name,
                format!("{} labels for {rows} rows", labels.len()),
            ));
        }
        Ok(ParquetIndex {
            columns,
            group_starts,
            labels,
        })
    }

    /// Rows in the shard.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// The row group holding `row`, and the row's index within it.
    pub fn locate(&self, row: usize) -> Option<(usize, usize)> {
        let group = self
            .group_starts
            .partition_point(|&s| s <= row)
            .checked_sub(1)?;
        (row < self.rows()).then(|| (group, row - self.group_starts[group]))
    }

    /// The image bytes of every row of row group `group`.
    pub fn read_group<R: ChunkReader + 'static>(
        &self,
        file: R,
        group: usize,
        name: &str,
    ) -> Result<Vec<Option<Bytes>>, DataError> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| container_error(name, format!("not a Parquet file: {e}")))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [self.columns.image.0]);
        let reader = builder
            .with_row_groups(vec![group])
            .with_projection(mask)
            .build()
            .map_err(|e| container_error(name, e.to_string()))?;
        let mut images = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| container_error(name, e.to_string()))?;
            images.extend(images_of(batch.column(0), self.columns.image.1));
        }
        Ok(images)
    }
}

// ------------------------------------------------------------------------------ in memory

/// One sample of a container held in memory.
#[derive(Clone, Debug)]
pub struct Sample {
    /// `CONTAINER#KEY`.
    pub image_id: String,
    pub label: Option<i32>,
    /// The image file's bytes, or why there are none.
    pub image: Result<Bytes, String>,
}

/// Every sample of the container `name` (a tar or Parquet file by its extension) whose
/// bytes are `bytes`, sorted by id.
pub fn read_samples(name: &str, bytes: Bytes) -> Result<Vec<Sample>, DataError> {
    match ContainerKind::of(name) {
        Some(ContainerKind::Tar) => {
            let index = index_tar(std::io::Cursor::new(bytes.as_ref()), name)?;
            Ok(index
                .into_iter()
                .map(|s| Sample {
                    image_id: sample_id(name, &s.key),
                    label: s.label,
                    image: s.image.and_then(|r| {
                        usize::try_from(r.start)
                            .ok()
                            .zip(usize::try_from(r.end).ok())
                            .filter(|&(a, b)| a <= b && b <= bytes.len())
                            .map(|(a, b)| bytes.slice(a..b))
                            .ok_or_else(|| format!("{name}#{}: member is truncated", s.key))
                    }),
                })
                .collect())
        }
        Some(ContainerKind::Parquet) => {
            let index = ParquetIndex::open(bytes.clone(), name)?;
            let mut samples = Vec::with_capacity(index.rows());
            for group in 0..index.group_starts.len().saturating_sub(1) {
                let images = index.read_group(bytes.clone(), group, name)?;
                for image in images {
                    let row = samples.len();
                    samples.push(Sample {
                        image_id: sample_id(name, &row_key(row)),
                        label: index.labels.get(row).copied().flatten(),
                        image: image.ok_or_else(|| format!("{name}#{}: no image", row_key(row))),
                    });
                }
            }
            if samples.len() != index.rows() {
                return Err(container_error(
                    name,
                    format!("{} images for {} rows", samples.len(), index.rows()),
                ));
            }
            Ok(samples)
        }
        None => Err(container_error(
            name,
            "not a container (expected a .tar or .parquet file)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_key("a/b.c/x.seg.jpg"), Some(("a/b.c/x", "seg.jpg")));
        assert_eq!(split_key("n01_1.JPEG"), Some(("n01_1", "JPEG")));
        assert_eq!(split_key("noext"), None);
    }

    #[test]
    fn container_kinds() {
        assert_eq!(
            ContainerKind::of("x/train-0001.TAR"),
            Some(ContainerKind::Tar)
        );
        assert_eq!(
            ContainerKind::of("val-00000-of-00014.parquet"),
            Some(ContainerKind::Parquet)
        );
        assert_eq!(ContainerKind::of("a.jpg"), None);
    }
}
