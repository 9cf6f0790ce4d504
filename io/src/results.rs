//! The results schema (ARCHITECTURE.md §6): one Parquet file per shard with a row per image,
//! and the layer table with a row per unit; their writers and readers.
//!
//! Parquet key-value metadata of both files: `amos.schema_version`, `amos.run_id`,
//! `amos.model_sha256`.
//!
//! ```
//! use amos_io::results::{ImageRow, RunInfo, decode_shard, encode_shard};
//!
//! let row = ImageRow {
//!     image_id: "a.png".into(),
//!     label: Some(3),
//!     snn_top5: Some([3, 1, 0, 2, 4]),
//!     spikes: 10,
//!     unit_spikes: vec![4, 6],
//!     ..Default::default()
//! };
//! let info = RunInfo { run_id: "r".into(), model_sha256: "00".into() };
//! let bytes = encode_shard(&[row.clone()], &info).unwrap();
//! let back = decode_shard(bytes.into()).unwrap();
//! assert_eq!(back.rows[0].snn_top1_correct, Some(true));
//! assert_eq!(back.rows[0].unit_spikes, vec![4, 6]);
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, FixedSizeListBuilder, Float32Builder, Float64Builder, Int32Builder,
    ListBuilder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

/// Version of the results schema written here.
pub const SCHEMA_VERSION: &str = "1";

/// Object path of shard `shard`'s file, relative to the output location.
pub fn shard_object(shard: u32) -> String {
    format!("shards/shard-{shard:06}.parquet")
}

/// The shard id of a shard file name (`shard-NNNNNN.parquet`), if it is one.
pub fn shard_id(name: &str) -> Option<u32> {
    name.strip_prefix("shard-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

/// Why a results file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A file that is Parquet but not in this schema.
    #[error("not an amos results file: {0}")]
    Schema(String),
}

/// Identifies the run a file belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunInfo {
    pub run_id: String,
    pub model_sha256: String,
}

/// One image's row of a shard file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageRow {
    pub image_id: String,
    pub shard: u32,
    pub label: Option<i32>,
    /// SNN classes, best first (null for an image with an error).
    pub snn_top5: Option<[i32; 5]>,
    /// Filled in by [`encode_shard`] from the label and the predictions when left `None`.
    pub snn_top1_correct: Option<bool>,
    pub snn_top5_correct: Option<bool>,
    pub ann_top5: Option<[i32; 5]>,
    pub ann_top1_correct: Option<bool>,
    pub ann_top5_correct: Option<bool>,
    pub spikes: u64,
    pub synops: u64,
    pub neurons: u64,
    pub unit_spikes: Vec<u32>,
    pub error: Option<String>,
    pub chain: u32,
    pub attempt: u32,
}

impl ImageRow {
    /// Fills the correctness flags from the label and the predictions.
    pub fn with_correctness(mut self) -> Self {
        let flags = |top: Option<[i32; 5]>| match (top, self.label) {
            (Some(t), Some(l)) => (Some(t[0] == l), Some(t.contains(&l))),
            _ => (None, None),
        };
        (self.snn_top1_correct, self.snn_top5_correct) = flags(self.snn_top5);
        (self.ann_top1_correct, self.ann_top5_correct) = flags(self.ann_top5);
        self
    }
}

/// A decoded shard file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rows: Vec<ImageRow>,
    pub info: RunInfo,
}

/// One unit's row of the layer table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerRow {
    pub unit_id: u32,
    /// Source ONNX node name.
    pub node: String,
    /// relu, relu6, sigmoid, swish, mul, identity, …
    pub gate: String,
    pub k: u32,
    /// Elements per image.
    pub elements: u64,
    /// k × elements.
    pub neurons: u64,
    pub stage: u32,
    /// First time step of the unit: the neurons along the longest path before it.
    pub time_step: u32,
    /// Synapses per spike, mean.
    pub fanout: f64,
    /// Approximation error on its calibration samples.
    pub mse: f32,
}

fn top5_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Int32, true)), 5),
        true,
    )
}

/// The Arrow schema of a shard file.
pub fn shard_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("shard", DataType::UInt32, false),
        Field::new("label", DataType::Int32, true),
        top5_field("snn_top5"),
        Field::new("snn_top1_correct", DataType::Boolean, true),
        Field::new("snn_top5_correct", DataType::Boolean, true),
        top5_field("ann_top5"),
        Field::new("ann_top1_correct", DataType::Boolean, true),
        Field::new("ann_top5_correct", DataType::Boolean, true),
        Field::new("spikes", DataType::UInt64, false),
        Field::new("synops", DataType::UInt64, false),
        Field::new("neurons", DataType::UInt64, false),
        Field::new(
            "unit_spikes",
            DataType::List(Arc::new(Field::new_list_field(DataType::UInt32, true))),
            false,
        ),
        Field::new("error", DataType::Utf8, true),
        Field::new("chain", DataType::UInt32, false),
        Field::new("attempt", DataType::UInt32, false),
    ]))
}

/// The Arrow schema of the layer table.
pub fn layers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("unit_id", DataType::UInt32, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("gate", DataType::Utf8, false),
        Field::new("k", DataType::UInt32, false),
        Field::new("elements", DataType::UInt64, false),
        Field::new("neurons", DataType::UInt64, false),
        Field::new("stage", DataType::UInt32, false),
        Field::new("time_step", DataType::UInt32, false),
        Field::new("fanout", DataType::Float64, false),
        Field::new("mse", DataType::Float32, false),
    ]))
}

fn top5_builder(rows: &[ImageRow], get: impl Fn(&ImageRow) -> Option<[i32; 5]>) -> ArrayRef {
    let mut b = FixedSizeListBuilder::new(Int32Builder::new(), 5)
        .with_field(Arc::new(Field::new_list_field(DataType::Int32, true)));
    for r in rows {
        match get(r) {
            Some(t) => {
                b.values().append_slice(&t);
                b.append(true);
            }
            None => {
                b.values().append_nulls(5);
                b.append(false);
            }
        }
    }
    Arc::new(b.finish())
}

fn bools(rows: &[ImageRow], get: impl Fn(&ImageRow) -> Option<bool>) -> ArrayRef {
    let mut b = BooleanBuilder::with_capacity(rows.len());
    for r in rows {
        b.append_option(get(r));
    }
    Arc::new(b.finish())
}

fn u32s<T>(rows: &[T], get: impl Fn(&T) -> u32) -> ArrayRef {
    let mut b = UInt32Builder::with_capacity(rows.len());
    for r in rows {
        b.append_value(get(r));
    }
    Arc::new(b.finish())
}

fn u64s<T>(rows: &[T], get: impl Fn(&T) -> u64) -> ArrayRef {
    let mut b = UInt64Builder::with_capacity(rows.len());
    for r in rows {
        b.append_value(get(r));
    }
    Arc::new(b.finish())
}

fn strings<T>(rows: &[T], get: impl Fn(&T) -> Option<&str>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for r in rows {
        b.append_option(get(r));
    }
    Arc::new(b.finish())
}

fn key_values(info: &RunInfo) -> Vec<KeyValue> {
    vec![
        KeyValue::new("amos.schema_version".into(), SCHEMA_VERSION.to_string()),
        KeyValue::new("amos.run_id".into(), info.run_id.clone()),
        KeyValue::new("amos.model_sha256".into(), info.model_sha256.clone()),
    ]
}

fn write_parquet(batch: RecordBatch, info: &RunInfo) -> Result<Vec<u8>, ResultsError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(key_values(info)))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}

/// Encodes a shard's rows as a Parquet file (one row group). Correctness flags left `None`
/// are filled from the labels and predictions.
pub fn encode_shard(rows: &[ImageRow], info: &RunInfo) -> Result<Vec<u8>, ResultsError> {
    let rows: Vec<ImageRow> = rows.iter().cloned().map(fill_flags).collect();
    let rows = &rows[..];
    let mut labels = Int32Builder::with_capacity(rows.len());
    let mut unit_spikes = ListBuilder::new(UInt32Builder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::UInt32, true)));
    for r in rows {
        labels.append_option(r.label);
        unit_spikes.values().append_slice(&r.unit_spikes);
        unit_spikes.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows, |r| Some(r.image_id.as_str())),
        u32s(rows, |r| r.shard),
        Arc::new(labels.finish()),
        top5_builder(rows, |r| r.snn_top5),
        bools(rows, |r| r.snn_top1_correct),
        bools(rows, |r| r.snn_top5_correct),
        top5_builder(rows, |r| r.ann_top5),
        bools(rows, |r| r.ann_top1_correct),
        bools(rows, |r| r.ann_top5_correct),
        u64s(rows, |r| r.spikes),
        u64s(rows, |r| r.synops),
        u64s(rows, |r| r.neurons),
        Arc::new(unit_spikes.finish()),
        strings(rows, |r| r.error.as_deref()),
        u32s(rows, |r| r.chain),
        u32s(rows, |r| r.attempt),
    ];
    write_parquet(RecordBatch::try_new(shard_schema(), columns)?, info)
}

fn fill_flags(r: ImageRow) -> ImageRow {
    if r.snn_top1_correct.is_some() || r.ann_top1_correct.is_some() {
        r
    } else {
        r.with_correctness()
    }
}

/// Encodes the layer table as a Parquet file.
pub fn encode_layers(rows: &[LayerRow], info: &RunInfo) -> Result<Vec<u8>, ResultsError> {
    let mut fanout = Float64Builder::with_capacity(rows.len());
    let mut mse = Float32Builder::with_capacity(rows.len());
    for r in rows {
        fanout.append_value(r.fanout);
        mse.append_value(r.mse);
    }
    let columns: Vec<ArrayRef> = vec![
        u32s(rows, |r| r.unit_id),
        strings(rows, |r| Some(r.node.as_str())),
        strings(rows, |r| Some(r.gate.as_str())),
        u32s(rows, |r| r.k),
        u64s(rows, |r| r.elements),
        u64s(rows, |r| r.neurons),
        u32s(rows, |r| r.stage),
        u32s(rows, |r| r.time_step),
        Arc::new(fanout.finish()),
        Arc::new(mse.finish()),
    ];
    write_parquet(RecordBatch::try_new(layers_schema(), columns)?, info)
}

/// Rows and run identity of a Parquet file, after checking its schema is `expected`.
fn read_parquet(
    bytes: Bytes,
    expected: &SchemaRef,
) -> Result<(Vec<RecordBatch>, RunInfo), ResultsError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let kv: HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|k| Some((k.key.clone(), k.value.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    let version = kv.get("amos.schema_version").map(String::as_str);
    if version != Some(SCHEMA_VERSION) {
        return Err(ResultsError::Schema(format!(
            "schema version {version:?}, expected {SCHEMA_VERSION:?}"
        )));
    }
    let found = builder.schema().clone();
    for field in expected.fields() {
        let ok = found
            .field_with_name(field.name())
            .is_ok_and(|f| f.data_type() == field.data_type());
        if !ok {
            return Err(ResultsError::Schema(format!(
                "column '{}' missing or not {}",
                field.name(),
                field.data_type()
            )));
        }
    }
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
    let info = RunInfo {
        run_id: kv.get("amos.run_id").cloned().unwrap_or_default(),
        model_sha256: kv.get("amos.model_sha256").cloned().unwrap_or_default(),
    };
    Ok((batches, info))
}

/// Row count and run identity from a shard file's footer, without decoding its rows.
pub fn shard_footer(bytes: Bytes) -> Result<(u64, RunInfo), ResultsError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let meta = builder.metadata().file_metadata();
    let kv: HashMap<String, String> = meta
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|k| Some((k.key.clone(), k.value.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok((
        meta.num_rows().max(0) as u64,
        RunInfo {
            run_id: kv.get("amos.run_id").cloned().unwrap_or_default(),
            model_sha256: kv.get("amos.model_sha256").cloned().unwrap_or_default(),
        },
    ))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    // read_parquet checked every expected column is present.
    batch
        .column_by_name(name)
        .unwrap_or_else(|| unreachable!("column {name} checked"))
}

fn top5_at(batch: &RecordBatch, name: &str, i: usize) -> Option<[i32; 5]> {
    let list = column(batch, name).as_fixed_size_list();
    if list.is_null(i) {
        return None;
    }
    let values = list.value(i);
    let values = values.as_primitive::<Int32Type>();
    let mut out = [0i32; 5];
    for (o, v) in out.iter_mut().zip(values.iter()) {
        *o = v.unwrap_or(-1);
    }
    Some(out)
}

fn opt_bool(batch: &RecordBatch, name: &str, i: usize) -> Option<bool> {
    let a = column(batch, name).as_boolean();
    (!a.is_null(i)).then(|| a.value(i))
}

/// Decodes a shard file.
pub fn decode_shard(bytes: Bytes) -> Result<Shard, ResultsError> {
    let (batches, info) = read_parquet(bytes, &shard_schema())?;
    let mut rows = Vec::new();
    for b in &batches {
        let ids = column(b, "image_id").as_string::<i32>();
        let errors = column(b, "error").as_string::<i32>();
        let labels = column(b, "label").as_primitive::<Int32Type>();
        let u32col = |n: &str| column(b, n).as_primitive::<UInt32Type>().clone();
        let u64col = |n: &str| column(b, n).as_primitive::<UInt64Type>().clone();
        let (shard, chain, attempt) = (u32col("shard"), u32col("chain"), u32col("attempt"));
        let (spikes, synops, neurons) = (u64col("spikes"), u64col("synops"), u64col("neurons"));
        let unit_spikes = column(b, "unit_spikes").as_list::<i32>();
        for i in 0..b.num_rows() {
            let us = unit_spikes.value(i);
            rows.push(ImageRow {
                image_id: ids.value(i).to_string(),
                shard: shard.value(i),
                label: (!labels.is_null(i)).then(|| labels.value(i)),
                snn_top5: top5_at(b, "snn_top5", i),
                snn_top1_correct: opt_bool(b, "snn_top1_correct", i),
                snn_top5_correct: opt_bool(b, "snn_top5_correct", i),
                ann_top5: top5_at(b, "ann_top5", i),
                ann_top1_correct: opt_bool(b, "ann_top1_correct", i),
                ann_top5_correct: opt_bool(b, "ann_top5_correct", i),
                spikes: spikes.value(i),
                synops: synops.value(i),
                neurons: neurons.value(i),
                unit_spikes: us
                    .as_primitive::<UInt32Type>()
                    .iter()
                    .map(|v| v.unwrap_or(0))
                    .collect(),
                error: (!errors.is_null(i)).then(|| errors.value(i).to_string()),
                chain: chain.value(i),
                attempt: attempt.value(i),
            });
        }
    }
    Ok(Shard { rows, info })
}

/// Decodes the layer table.
pub fn decode_layers(bytes: Bytes) -> Result<Vec<LayerRow>, ResultsError> {
    let (batches, _) = read_parquet(bytes, &layers_schema())?;
    let mut rows = Vec::new();
    for b in &batches {
        let u32col = |n: &str| column(b, n).as_primitive::<UInt32Type>().clone();
        let u64col = |n: &str| column(b, n).as_primitive::<UInt64Type>().clone();
        let (unit, k, stage, step) = (
            u32col("unit_id"),
            u32col("k"),
            u32col("stage"),
            u32col("time_step"),
        );
        let (elements, neurons) = (u64col("elements"), u64col("neurons"));
        let node = column(b, "node").as_string::<i32>();
        let gate = column(b, "gate").as_string::<i32>();
        let fanout = column(b, "fanout").as_primitive::<Float64Type>();
        let mse = column(b, "mse").as_primitive::<Float32Type>();
        for i in 0..b.num_rows() {
            rows.push(LayerRow {
                unit_id: unit.value(i),
                node: node.value(i).to_string(),
                gate: gate.value(i).to_string(),
                k: k.value(i),
                elements: elements.value(i),
                neurons: neurons.value(i),
                stage: stage.value(i),
                time_step: step.value(i),
                fanout: fanout.value(i),
                mse: mse.value(i),
            });
        }
    }
    Ok(rows)
}
