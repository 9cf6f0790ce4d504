//! Builds WebDataset and Parquet copies of an image dataset for tests (shared by the io,
//! converter and coordinator tests through `#[path]`): the same image files and labels,
//! repacked as users keep ImageNet.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// One image to pack: its key, label and file bytes, and the file's extension.
pub struct PackedImage {
    pub key: String,
    pub label: Option<i32>,
    pub ext: String,
    pub bytes: Vec<u8>,
}

/// The images of a dataset folder, in `amos_io` listing order, keyed by image id without
/// its extension.
pub fn images_of(root: &Path, limit: usize) -> Vec<PackedImage> {
    let ds = amos_io::data::Dataset::open(root, None).expect("open the dataset");
    ds.entries
        .iter()
        .take(limit)
        .map(|e| {
            let (key, ext) = e.image_id.rsplit_once('.').expect("an extension");
            PackedImage {
                key: key.to_string(),
                label: e.label,
                ext: ext.to_string(),
                bytes: std::fs::read(&e.path).expect("read an image"),
            }
        })
        .collect()
}

/// Writes `images` as WebDataset tar shards `dir/shard-NNNNN.tar`, `per_shard` samples
/// each: `KEY.EXT`, `KEY.cls` (when labelled) and an ignored `KEY.json`. Returns the shard
/// file names.
pub fn write_webdataset(images: &[PackedImage], dir: &Path, per_shard: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("create the WebDataset folder");
    let mut names = Vec::new();
    for (i, chunk) in images.chunks(per_shard).enumerate() {
        let name = format!("shard-{i:05}.tar");
        let file = std::fs::File::create(dir.join(&name)).expect("create a tar");
        let mut tar = tar::Builder::new(file);
        let mut add = |path: String, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, data).expect("append");
        };
        for img in chunk {
            if let Some(l) = img.label {
                add(format!("{}.cls", img.key), l.to_string().as_bytes());
            }
            add(format!("{}.{}", img.key, img.ext), &img.bytes);
            add(format!("{}.json", img.key), b"{}");
        }
        tar.into_inner().expect("finish the tar");
        names.push(name);
    }
    names
}

/// Writes `images` as Parquet shards in the Hugging Face `imagenet-1k` layout
/// (`image: struct<bytes: binary, path: string>`, `label: int64`, −1 unlabelled):
/// `dir/data/part-NNNNN.parquet`, `per_shard` rows each in row groups of `per_group`.
/// Returns the shard paths relative to `dir`.
pub fn write_parquet(
    images: &[PackedImage],
    dir: &Path,
    per_shard: usize,
    per_group: usize,
) -> Vec<String> {
    std::fs::create_dir_all(dir.join("data")).expect("create the Parquet folder");
    let image_fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("image", DataType::Struct(image_fields.clone()), true),
        Field::new("label", DataType::Int64, false),
    ]));
    let mut names = Vec::new();
    for (i, chunk) in images.chunks(per_shard).enumerate() {
        let name = format!("data/part-{i:05}.parquet");
        let file = std::fs::File::create(dir.join(&name)).expect("create a parquet file");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(per_group))
            .build();
        let mut writer =
            ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("parquet writer");
        for group in chunk.chunks(per_group) {
            let bytes: ArrayRef = Arc::new(BinaryArray::from_iter_values(
                group.iter().map(|g| g.bytes.as_slice()),
            ));
            let paths: ArrayRef = Arc::new(StringArray::from_iter_values(
                group.iter().map(|g| format!("{}.{}", g.key, g.ext)),
            ));
            let image = StructArray::new(image_fields.clone(), vec![bytes, paths], None);
            let labels =
                Int64Array::from_iter_values(group.iter().map(|g| g.label.map_or(-1, i64::from)));
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(image), Arc::new(labels)])
                    .expect("record batch");
            writer.write(&batch).expect("write rows");
            writer.flush().expect("end the row group");
        }
        writer.close().expect("close the parquet file");
        names.push(name);
    }
    names
}
