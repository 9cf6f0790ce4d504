//! WebDataset and Parquet shards built from the shared ImageNet sample: listed, labelled
//! and read exactly as the ImageFolder they were made from, locally and from bytes in
//! memory (as a pipeline's first stage reads them from a store); bad shards give errors
//! naming the file, bad samples give per-image errors.

#[path = "support/variants.rs"]
mod variants;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use amos_io::data::containers::{read_samples, sample_id};
use amos_io::data::remote::{self, Listing};
use amos_io::data::{DataError, Dataset, Layout, Preprocess, Source};
use amos_io::store::Location;
use bytes::Bytes;
use variants::{PackedImage, images_of, write_parquet, write_webdataset};

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"))
}

fn sample() -> Vec<PackedImage> {
    images_of(&shared().join("data/imagenet-sample"), usize::MAX)
}

/// Checks that `ds` holds exactly `images` (ids `CONTAINER#KEY`, written `per_shard` to a
/// container), with their labels and bytes, in sorted id order.
fn assert_same_images(
    ds: &Dataset,
    images: &[PackedImage],
    containers: &[String],
    per_shard: usize,
) {
    assert_eq!(ds.len(), images.len());
    let by_key: HashMap<&str, &PackedImage> = images.iter().map(|i| (i.key.as_str(), i)).collect();
    let mut ids: Vec<&str> = ds.entries.iter().map(|e| e.image_id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ds.entries
            .iter()
            .map(|e| e.image_id.as_str())
            .collect::<Vec<_>>()
    );
    for e in &ds.entries {
        let (container, key) = e.image_id.split_once('#').expect("CONTAINER#KEY");
        assert!(containers.iter().any(|c| c == container), "{}", e.image_id);
        let expected = match ds.layout {
            // Parquet keys are row numbers within the file.
            Layout::Parquet => {
                let row: usize = key.parse().expect("a row number");
                let shard = containers.iter().position(|c| c == container).unwrap();
                &images[shard * per_shard + row]
            }
            _ => by_key[key],
        };
        assert_eq!(e.label, expected.label, "{}", e.image_id);
        assert_eq!(
            ds.read(e).unwrap().as_ref(),
            expected.bytes.as_slice(),
            "{}",
            e.image_id
        );
    }
}

#[test]
fn webdataset_shards_hold_the_imagefolder_images() {
    let images = sample();
    let dir = tempfile::tempdir().unwrap();
    let tars = write_webdataset(&images, dir.path(), 400);
    assert_eq!(tars.len(), 3);
    let ds = Dataset::open(dir.path(), None).unwrap();
    assert_eq!(ds.layout, Layout::WebDataset);
    assert_same_images(&ds, &images, &tars, 400);
    assert!(matches!(ds.entries[0].source, Source::TarMember(Ok(_))));
    // Same pixels as the ImageFolder entry.
    let folder = Dataset::open(&shared().join("data/imagenet-sample"), None).unwrap();
    let pre = Preprocess::preset("efficientnet-lite", (224, 224)).unwrap();
    let i = ds
        .entries
        .iter()
        .position(|e| e.image_id == sample_id("shard-00000.tar", "n01440764/n01440764_tench"))
        .unwrap();
    assert_eq!(
        ds.load_u8(&ds.entries[i], &pre).unwrap(),
        folder.load_u8(&folder.entries[0], &pre).unwrap()
    );
}

#[test]
fn parquet_shards_hold_the_imagefolder_images() {
    let images = sample();
    let dir = tempfile::tempdir().unwrap();
    let files = write_parquet(&images, dir.path(), 300, 64);
    assert_eq!(files.len(), 4);
    let ds = Dataset::open(dir.path(), None).unwrap();
    assert_eq!(ds.layout, Layout::Parquet);
    assert_same_images(&ds, &images, &files, 300);
    // Rows past the first row group are found in theirs.
    assert!(ds.entries.iter().any(|e| matches!(
        e.source,
        Source::ParquetRow {
            group: 4,
            row: 43,
            ..
        }
    )));
}

#[test]
fn bytes_in_memory_read_as_the_local_index() {
    let images: Vec<PackedImage> = sample().into_iter().take(150).collect();
    for layout in [Layout::WebDataset, Layout::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        let files = match layout {
            Layout::WebDataset => write_webdataset(&images, dir.path(), 100),
            _ => write_parquet(&images, dir.path(), 100, 32),
        };
        let ds = Dataset::open_as(dir.path(), None, Some(layout)).unwrap();
        let mut from_memory = Vec::new();
        for f in &files {
            let bytes = Bytes::from(fs::read(dir.path().join(f)).unwrap());
            from_memory.extend(read_samples(f, bytes).unwrap());
        }
        assert_eq!(from_memory.len(), ds.len(), "{layout}");
        for (s, e) in from_memory.iter().zip(&ds.entries) {
            assert_eq!(s.image_id, e.image_id);
            assert_eq!(s.label, e.label);
            assert_eq!(s.image.as_ref().unwrap(), &ds.read(e).unwrap());
        }
    }
}

#[tokio::test]
async fn store_listing_gives_the_shard_files() {
    let images: Vec<PackedImage> = sample().into_iter().take(20).collect();
    let dir = tempfile::tempdir().unwrap();
    let tars = write_webdataset(&images, &dir.path().join("wds"), 8);
    let parts = write_parquet(&images, &dir.path().join("pq"), 8, 4);
    let url = |sub: &str| format!("file://{}", dir.path().join(sub).display());
    let wds = Location::parse(&url("wds")).unwrap();
    assert_eq!(
        remote::list(&wds, None, None).await.unwrap(),
        Listing::Containers(Layout::WebDataset, tars)
    );
    let pq = Location::parse(&url("pq")).unwrap();
    assert_eq!(
        remote::list(&pq, None, None).await.unwrap(),
        Listing::Containers(Layout::Parquet, parts)
    );
    // An explicit layout that finds nothing is an error naming the dataset.
    let e = remote::list(&wds, None, Some(Layout::Parquet))
        .await
        .unwrap_err();
    assert!(matches!(e, DataError::NoImages(_)), "{e}");
}

#[test]
fn layout_is_detected_and_can_be_forced() {
    let images: Vec<PackedImage> = sample().into_iter().take(4).collect();
    let dir = tempfile::tempdir().unwrap();
    write_webdataset(&images, dir.path(), 4);
    write_parquet(&images, dir.path(), 4, 4);
    let e = Dataset::open(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("--layout"), "{e}");
    let wds = Dataset::open_as(dir.path(), None, Some(Layout::WebDataset)).unwrap();
    let pq = Dataset::open_as(dir.path(), None, Some(Layout::Parquet)).unwrap();
    assert_eq!((wds.len(), pq.len()), (4, 4));
    assert_eq!("wds".parse::<Layout>().unwrap(), Layout::WebDataset);
    assert!(
        "zip"
            .parse::<Layout>()
            .unwrap_err()
            .to_string()
            .contains("webdataset")
    );
}

fn tar_with(dir: &Path, members: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("bad.tar");
    let mut tar = tar::Builder::new(fs::File::create(&path).unwrap());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, *data).unwrap();
    }
    tar.into_inner().unwrap();
    path
}

#[test]
fn bad_samples_become_image_errors_and_the_rest_reads() {
    let good = &sample()[0].bytes;
    let dir = tempfile::tempdir().unwrap();
    tar_with(
        dir.path(),
        &[
            ("a.jpg", good),
            ("a.cls", b"0"),
            ("b.jpg", b"not a jpeg at all"),
            ("b.cls", b"1"),
            ("c.cls", b"2"),
            ("d.jpg", &good[..200]),
        ],
    );
    let ds = Dataset::open(dir.path(), None).unwrap();
    let pre = Preprocess::preset("efficientnet-lite", (224, 224)).unwrap();
    let results: Vec<Result<Vec<u8>, String>> = ds
        .entries
        .iter()
        .map(|e| ds.load_u8(e, &pre).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(ds.len(), 4);
    assert!(results[0].is_ok());
    assert!(
        results[1].as_ref().unwrap_err().contains("bad.tar#b"),
        "{:?}",
        results[1]
    );
    assert!(
        results[2].as_ref().unwrap_err().contains("no jpg"),
        "{:?}",
        results[2]
    );
    assert!(results[3].is_err(), "a JPEG cut in its headers is an error");
    assert_eq!(ds.entries[3].label, None);
}

#[test]
fn malformed_shards_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    tar_with(dir.path(), &[("a.jpg", b"x"), ("a.cls", b"tench")]);
    let e = Dataset::open(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("bad.tar") && e.contains("a.cls") && e.contains("tench"),
        "{e}"
    );

    // A tar cut inside the second member's header (512-byte blocks: a's header, a's data,
    // b's header).
    let path = tar_with(dir.path(), &[("a.jpg", b"x"), ("b.jpg", b"y")]);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..1100]).unwrap();
    let e = Dataset::open(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("bad.tar"), "{e}");
    assert!(read_samples("bad.tar", Bytes::from(bytes[..1100].to_vec())).is_err());
    // Cut inside b's data: listed, and reading it is an error for that image only.
    let cut = &bytes[..1536];
    let samples = read_samples("bad.tar", Bytes::from(cut.to_vec())).unwrap();
    assert!(samples[0].image.is_ok());
    assert!(samples[1].image.as_ref().unwrap_err().contains("truncated"));
    fs::write(&path, cut).unwrap();
    let ds = Dataset::open(dir.path(), None).unwrap();
    assert!(
        ds.read(&ds.entries[1])
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
    fs::remove_file(&path).unwrap();

    // Parquet without an image column.
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "label",
        arrow_schema::DataType::Int64,
        false,
    )]));
    let file = fs::File::create(dir.path().join("x.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
    let batch = arrow_array::RecordBatch::try_new(
        schema,
        vec![std::sync::Arc::new(arrow_array::Int64Array::from(vec![
            1, 2,
        ]))],
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let e = Dataset::open(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("x.parquet") && e.contains("no image column"),
        "{e}"
    );

    // Not Parquet at all.
    fs::write(dir.path().join("x.parquet"), b"PAR1 nothing").unwrap();
    let e = Dataset::open(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("x.parquet") && e.contains("not a Parquet file"),
        "{e}"
    );
}

/// Writes one Parquet shard `x.parquet` in `dir` with a binary image column and a label
/// column `labels` of its own Arrow type.
fn parquet_with_labels(dir: &Path, labels: arrow_array::ArrayRef) {
    use std::sync::Arc;
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("image", arrow_schema::DataType::Binary, true),
        arrow_schema::Field::new("label", labels.data_type().clone(), true),
    ]));
    let images = arrow_array::BinaryArray::from_iter_values((0..labels.len()).map(|_| b"x"));
    let file = fs::File::create(dir.join("x.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
    let batch = arrow_array::RecordBatch::try_new(schema, vec![Arc::new(images), labels]).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn labels_of_every_integer_type_read_and_others_are_errors() {
    use arrow_array::{Float32Array, Int8Array, Int32Array, UInt8Array, UInt64Array};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let labels = |ds: &Dataset| ds.entries.iter().map(|e| e.label).collect::<Vec<_>>();
    parquet_with_labels(dir.path(), Arc::new(UInt8Array::from(vec![3, 200])));
    assert_eq!(
        labels(&Dataset::open(dir.path(), None).unwrap()),
        [Some(3), Some(200)]
    );
    parquet_with_labels(dir.path(), Arc::new(Int8Array::from(vec![-1, 7])));
    assert_eq!(
        labels(&Dataset::open(dir.path(), None).unwrap()),
        [None, Some(7)]
    );
    let with_null = Int32Array::from(vec![Some(999), None, Some(i32::MAX)]);
    parquet_with_labels(dir.path(), Arc::new(with_null));
    assert_eq!(
        labels(&Dataset::open(dir.path(), None).unwrap()),
        [Some(999), None, Some(i32::MAX)]
    );
    let huge = UInt64Array::from(vec![1, u64::MAX]);
    parquet_with_labels(dir.path(), Arc::new(huge));
    let e = Dataset::open(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("x.parquet") && e.contains("too large"), "{e}");
    parquet_with_labels(dir.path(), Arc::new(Float32Array::from(vec![1.0])));
    let e = Dataset::open(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("x.parquet") && e.contains("integer"), "{e}");
}
