//! `Dataset::open`: both layouts on the shared data, and the error cases on
//! small trees built in temporary folders.

use std::fs;
use std::path::{Path, PathBuf};

use amos_io::data::{DataError, Dataset, Layout};

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"))
}

/// Any small valid PNG, for trees that need a real image.
fn write_png(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]))
        .save(path)
        .unwrap();
}

#[test]
fn imagenet_sample_is_one_image_per_class_in_index_order() {
    let root = shared().join("data/imagenet-sample");
    let ds = Dataset::open(&root, None).unwrap();
    assert_eq!(ds.layout, Layout::ImageFolder);
    assert_eq!(ds.len(), 1000);
    assert_eq!(ds.classes.len(), 1000);
    assert_eq!(ds.classes[0], "tench");
    for (i, e) in ds.entries.iter().enumerate() {
        assert_eq!(e.label, Some(i as i32), "{}", e.image_id);
        assert!(e.path.is_file());
        assert!(e.path.ends_with(&e.image_id));
    }
    assert_eq!(ds.entries[0].image_id, "n01440764/n01440764_tench.JPEG");
    // Same order as the reference predictions file.
    let preds =
        fs::read_to_string(shared().join("reference/imagenet-sample.lite0.predictions.csv"))
            .unwrap();
    for (line, e) in preds.lines().skip(1).zip(&ds.entries) {
        let mut f = line.split(',');
        assert_eq!(f.next(), Some(e.image_id.as_str()));
        assert_eq!(f.next().and_then(|l| l.parse().ok()), e.label);
    }
}

#[test]
fn explicit_synset_file_overrides_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write_png(&root.join("cat/a.png"));
    write_png(&root.join("dog/x/b.PNG")); // nested: still class "dog"
    fs::write(root.join("dog/c.jpg.txt"), "not an image: skipped").unwrap();
    fs::write(root.join("README"), "loose files at the root are ignored").unwrap();
    let syn = dir.path().join("syn.txt");
    fs::write(&syn, "dog Canis familiaris\ncat Felis catus\n").unwrap();
    let ds = Dataset::open(&root, Some(&syn)).unwrap();
    let got: Vec<_> = ds
        .entries
        .iter()
        .map(|e| (e.image_id.as_str(), e.label))
        .collect();
    assert_eq!(got, [("cat/a.png", Some(1)), ("dog/x/b.PNG", Some(0))]);
    assert_eq!(ds.classes, ["Canis familiaris", "Felis catus"]);
}

#[test]
fn missing_root_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("no-such-dataset");
    let e = Dataset::open(&root, None).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-dataset"), "{e}");
}

#[test]
fn unknown_wnid_folder_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("n01440764/a.png"));
    write_png(&dir.path().join("n99999999/b.png"));
    let e = Dataset::open(dir.path(), None).unwrap_err();
    assert!(matches!(e, DataError::UnknownClass { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("n99999999"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn empty_tree_has_no_images() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("n01440764")).unwrap();
    let e = Dataset::open(dir.path(), None).unwrap_err();
    assert!(matches!(e, DataError::NoImages(_)), "{e:?}");
}

/// Builds `ROOT/labels.csv` (+ optional classes.txt) with two real images.
fn manifest_tree(csv: &str, classes: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("a.png"));
    write_png(&dir.path().join("sub/b.png"));
    fs::write(dir.path().join("labels.csv"), csv).unwrap();
    if let Some(c) = classes {
        fs::write(dir.path().join("classes.txt"), c).unwrap();
    }
    dir
}

#[test]
fn manifest_rows_are_sorted_and_may_be_unlabelled() {
    let dir = manifest_tree("file,label\nsub/b.png,1\na.png,\n", Some("zero\none\n\n"));
    let ds = Dataset::open(dir.path(), None).unwrap();
    assert_eq!(ds.layout, Layout::CsvManifest);
    let got: Vec<_> = ds
        .entries
        .iter()
        .map(|e| (e.image_id.as_str(), e.label))
        .collect();
    assert_eq!(got, [("a.png", None), ("sub/b.png", Some(1))]);
    assert_eq!(ds.classes, ["zero", "one"]);
    assert_eq!(ds.num_classes(), 2);
}

fn manifest_error(csv: &str, classes: Option<&str>) -> String {
    let dir = manifest_tree(csv, classes);
    let e = Dataset::open(dir.path(), None).unwrap_err();
    assert!(matches!(e, DataError::Manifest { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("labels.csv"), "{msg}");
    msg
}

#[test]
fn bad_manifest_label_is_an_error_naming_the_row() {
    let msg = manifest_error("file,label\na.png,0\nsub/b.png,cat\n", None);
    assert!(
        msg.contains("labels.csv:3") && msg.contains("\"cat\""),
        "{msg}"
    );
    let msg = manifest_error("file,label\na.png,-1\n", None);
    assert!(msg.contains("labels.csv:2"), "{msg}");
    let msg = manifest_error("file,label\na.png,2\n", Some("x\ny\n"));
    assert!(msg.contains("out of range"), "{msg}");
}

#[test]
fn manifest_naming_a_missing_file_is_an_error() {
    let msg = manifest_error("file,label\na.png,0\nnope.png,1\n", None);
    assert!(
        msg.contains("labels.csv:3") && msg.contains("nope.png"),
        "{msg}"
    );
}

#[test]
fn manifest_paths_must_stay_inside_the_root() {
    let msg = manifest_error("file,label\n../a.png,0\n", None);
    assert!(msg.contains("relative path"), "{msg}");
    let msg = manifest_error("file,label\n/etc/passwd,0\n", None);
    assert!(msg.contains("relative path"), "{msg}");
}

#[test]
fn manifest_header_and_duplicates_are_checked() {
    let msg = manifest_error("path,label\na.png,0\n", None);
    assert!(msg.contains("`file`"), "{msg}");
    let msg = manifest_error("file,label\na.png,0\na.png,0\n", None);
    assert!(msg.contains("duplicate"), "{msg}");
    let msg = manifest_error("file,label\na.png,0,extra\n", None);
    assert!(msg.contains("labels.csv"), "{msg}");
}
