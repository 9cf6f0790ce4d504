//! Listing a dataset held in an object store (`s3://…`, `gs://…`, `az://…`, `file://…`),
//! with the same layouts as a local folder ([`super::listing`]):
//!
//! - `labels.csv` at the root (`file,label`): a CSV manifest;
//! - `*.tar` or `*.parquet` files: WebDataset or Parquet shards, listed as the files alone
//!   (their samples are read by whoever reads the images, see [`super::containers`]);
//! - otherwise ImageFolder, `ROOT/<wnid>/…/<image>`, labelled by the synset list.
//!
//! The store's listing is paged by `object_store`. Entries are sorted by id, so shards are
//! stable across runs.

use std::collections::HashSet;

use crate::store::Location;

use super::DataError;
use super::containers::ContainerKind;
use super::listing::{Layout, SynsetList};

/// File name extensions (lower-cased) taken as images.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn is_image(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

fn store_error(loc: &Location, e: impl std::fmt::Display) -> DataError {
    DataError::config(loc.url.clone(), e.to_string())
}

/// What a dataset in a store holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listing {
    /// `(image_id, label)` of every image file, sorted by image id.
    Images(Vec<(String, Option<i32>)>),
    /// The container files (paths relative to the dataset), sorted.
    Containers(Layout, Vec<String>),
}

/// Lists the dataset at `loc`, in `layout` or the detected one.
pub async fn list(
    loc: &Location,
    synsets: Option<SynsetList>,
    layout: Option<Layout>,
) -> Result<Listing, DataError> {
    let objects = loc.list("").await.map_err(|e| store_error(loc, e))?;
    let mut ids: Vec<String> = objects.iter().map(|o| loc.relative(&o.location)).collect();
    ids.sort();
    let layout = match layout {
        Some(l) => l,
        None => Layout::detect(ids.iter().map(String::as_str)).ok_or_else(|| {
            store_error(
                loc,
                "holds both .tar and .parquet files: choose one with --layout",
            )
        })?,
    };
    let kind = match layout {
        Layout::WebDataset => Some(ContainerKind::Tar),
        Layout::Parquet => Some(ContainerKind::Parquet),
        Layout::ImageFolder | Layout::CsvManifest => None,
    };
    if let Some(kind) = kind {
        let files: Vec<String> = ids
            .into_iter()
            .filter(|i| ContainerKind::of(i) == Some(kind))
            .collect();
        if files.is_empty() {
            return Err(DataError::NoImages(loc.url.clone().into()));
        }
        return Ok(Listing::Containers(layout, files));
    }
    let mut entries = if layout == Layout::CsvManifest {
        let bytes = loc
            .get(&loc.child("labels.csv"))
            .await
            .map_err(|e| store_error(loc, e))?;
        let present: HashSet<&str> = ids.iter().map(String::as_str).collect();
        manifest(loc, &bytes, &present)?
    } else {
        let synsets = synsets.unwrap_or_else(SynsetList::imagenet);
        let mut out = Vec::new();
        for id in ids.iter().filter(|i| is_image(i)) {
            let Some((wnid, _)) = id.split_once('/') else {
                continue; // loose files at the root are not images of a class
            };
            let label = synsets
                .index_of(wnid)
                .ok_or_else(|| DataError::UnknownClass {
                    dir: format!("{}/{wnid}", loc.url.trim_end_matches('/')).into(),
                    wnid: wnid.to_string(),
                    synsets: synsets.source.clone(),
                })?;
            out.push((id.clone(), Some(label as i32)));
        }
        out
    };
    if entries.is_empty() {
        return Err(DataError::NoImages(loc.url.clone().into()));
    }
    entries.sort();
    Ok(Listing::Images(entries))
}

fn manifest(
    loc: &Location,
    bytes: &[u8],
    present: &HashSet<&str>,
) -> Result<Vec<(String, Option<i32>)>, DataError> {
    let path: std::path::PathBuf = format!("{}/labels.csv", loc.url.trim_end_matches('/')).into();
    let row_err = |line: u64, msg: String| DataError::Manifest {
        path: path.clone(),
        line,
        msg,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let headers = rdr
        .headers()
        .map_err(|e| row_err(1, e.to_string()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| row_err(1, format!("no '{name}' column")))
    };
    let (file_col, label_col) = (col("file")?, col("label")?);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let rec = rec.map_err(|e| row_err(line, e.to_string()))?;
        let file = rec.get(file_col).unwrap_or("").trim().to_string();
        if file.is_empty() || file.starts_with('/') || file.split('/').any(|p| p == "..") {
            return Err(row_err(line, format!("bad file name {file:?}")));
        }
        if !present.contains(file.as_str()) {
            return Err(row_err(line, format!("{file}: no such object")));
        }
        if !seen.insert(file.clone()) {
            return Err(row_err(line, format!("{file} is listed twice")));
        }
        let label = match rec.get(label_col).unwrap_or("").trim() {
            "" => None,
            l => Some(
                l.parse::<i32>()
                    .ok()
                    .filter(|&v| v >= 0)
                    .ok_or_else(|| row_err(line, format!("label {l:?} is not a class index")))?,
            ),
        };
        out.push((file, label));
    }
    Ok(out)
}
