//! The dataset as the coordinator sees it: a sorted listing cut into stable shards. The
//! coordinator never reads image bytes; stage 0 does.
//!
//! Image files (ImageFolder, CSV manifest) are listed one by one and cut into shards of a
//! fixed number of images. WebDataset and Parquet datasets are listed as their container
//! files, and each file is one shard: its samples are read by stage 0, so listing reads no
//! data at all, and the shards are the data's own files.

use amos_io::data::containers::ContainerKind;
use amos_io::data::listing::{container_files, detect_layout};
use amos_io::data::remote::{self, Listing as RemoteListing};
use amos_io::data::{Dataset, Layout, SynsetList};
use amos_io::store::Location;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// One image of the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub image_id: String,
    pub label: Option<i32>,
}

/// What a dataset holds, in a deterministic order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Image files, sorted by image id.
    Images(Vec<Image>),
    /// Container files (paths relative to the dataset), sorted.
    Containers(Vec<String>),
}

impl Listing {
    /// Keeps the first `n` images, or the first `n` container files.
    pub fn truncate(&mut self, n: usize) {
        match self {
            Listing::Images(v) => v.truncate(n),
            Listing::Containers(v) => v.truncate(n),
        }
    }

    /// Images listed, when known before reading the data (not for containers).
    pub fn images(&self) -> Option<usize> {
        match self {
            Listing::Images(v) => Some(v.len()),
            Listing::Containers(_) => None,
        }
    }
}

/// A shard: consecutive images of the sorted listing, or one container file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub id: u32,
    pub images: Vec<Image>,
    /// The container file whose samples are this shard's images.
    pub container: Option<String>,
}

impl Shard {
    /// The rows its committed file must hold, when known in advance.
    pub fn expected_rows(&self) -> Option<u64> {
        self.container.is_none().then_some(self.images.len() as u64)
    }
}

/// Lists the dataset at `url` (a local folder or an object-store URL) in `layout`, or the
/// layout detected from its files; an ImageFolder's classes are numbered by `synsets` (a
/// local `<wnid> <name>` file; default: the built-in ImageNet-1k list).
pub async fn list(
    url: &str,
    layout: Option<Layout>,
    synsets: Option<&Path>,
) -> anyhow::Result<Listing> {
    if !url.contains("://") {
        let path = std::path::PathBuf::from(url);
        let synsets = synsets.map(Path::to_path_buf);
        let listing = tokio::task::spawn_blocking(move || -> anyhow::Result<Listing> {
            let layout = match layout {
                Some(l) => l,
                None => detect_layout(&path)?,
            };
            let kind = match layout {
                Layout::WebDataset => Some(ContainerKind::Tar),
                Layout::Parquet => Some(ContainerKind::Parquet),
                Layout::ImageFolder | Layout::CsvManifest => None,
            };
            if let Some(kind) = kind {
                let files = container_files(&path, kind)?;
                anyhow::ensure!(
                    !files.is_empty(),
                    "{}: no .{} files",
                    path.display(),
                    if kind == ContainerKind::Tar {
                        "tar"
                    } else {
                        "parquet"
                    }
                );
                return Ok(Listing::Containers(files));
            }
            let ds = Dataset::open_as(&path, synsets.as_deref(), Some(layout))?;
            Ok(Listing::Images(
                ds.entries
                    .into_iter()
                    .map(|e| Image {
                        image_id: e.image_id,
                        label: e.label,
                    })
                    .collect(),
            ))
        })
        .await
        .context("listing task")?
        .with_context(|| format!("listing dataset {url}"))?;
        return Ok(listing);
    }
    let loc = Location::parse(url)?;
    let synsets = synsets.map(SynsetList::from_file).transpose()?;
    let listing = remote::list(&loc, synsets, layout)
        .await
        .with_context(|| format!("listing dataset {url}"))?;
    Ok(match listing {
        RemoteListing::Images(entries) => Listing::Images(
            entries
                .into_iter()
                .map(|(image_id, label)| Image { image_id, label })
                .collect(),
        ),
        RemoteListing::Containers(_, files) => Listing::Containers(files),
    })
}

/// Cuts the listing into shards: `size` images each, or one per container file. The same
/// listing always gives the same shards.
pub fn shards(listing: &Listing, size: usize) -> Vec<Shard> {
    match listing {
        Listing::Images(images) => images
            .chunks(size.max(1))
            .enumerate()
            .map(|(i, c)| Shard {
                id: i as u32,
                images: c.to_vec(),
                container: None,
            })
            .collect(),
        Listing::Containers(files) => files
            .iter()
            .enumerate()
            .map(|(i, f)| Shard {
                id: i as u32,
                images: Vec::new(),
                container: Some(f.clone()),
            })
            .collect(),
    }
}

/// SHA-256 over the listing, lowercase hex: per image `image_id`, tab, label, newline; per
/// container file its path and a newline.
pub fn digest(listing: &Listing) -> String {
    let mut h = Sha256::new();
    match listing {
        Listing::Images(images) => {
            for i in images {
                h.update(i.image_id.as_bytes());
                h.update(b"\t");
                if let Some(l) = i.label {
                    h.update(l.to_string().as_bytes());
                }
                h.update(b"\n");
            }
        }
        Listing::Containers(files) => {
            for f in files {
                h.update(f.as_bytes());
                h.update(b"\n");
            }
        }
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        // A 1×1 grey PNG.
        let bytes: &[u8] = &[
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52,
            0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0x3a, 0x7e, 0x9b, 0x55, 0, 0, 0, 0x0a, 0x49,
            0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0, 0, 0, 2, 0, 1, 0xe5, 0x27, 0xde, 0xfc, 0,
            0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
        ];
        std::fs::write(path, bytes).expect("write png");
    }

    #[tokio::test]
    async fn synsets_number_image_folder_classes_locally_and_in_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        png(&data.join("cat/a.png"));
        png(&data.join("dog/b.png"));
        let syn = dir.path().join("syn.txt");
        std::fs::write(&syn, "dog a dog\ncat a cat\n").expect("synsets");
        let expected = Listing::Images(vec![
            Image {
                image_id: "cat/a.png".into(),
                label: Some(1),
            },
            Image {
                image_id: "dog/b.png".into(),
                label: Some(0),
            },
        ]);
        let local = data.to_str().expect("utf-8").to_string();
        let store = format!("file://{local}");
        for url in [&local, &store] {
            assert_eq!(list(url, None, Some(&syn)).await.expect("list"), expected);
            // The built-in ImageNet list does not know these folders.
            let e = list(url, None, None).await.expect_err("unknown wnid");
            assert!(format!("{e:#}").contains("cat"), "{e:#}");
        }
    }
}
