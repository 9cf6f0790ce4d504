//! The dataset as the coordinator sees it: a sorted listing of image ids and labels, cut
//! into stable shards. The coordinator never reads image bytes; stage 0 does.

use amos_io::data::Dataset;
use amos_io::data::remote;
use amos_io::store::Location;
use anyhow::Context;
use sha2::{Digest, Sha256};

/// One image of the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub image_id: String,
    pub label: Option<i32>,
}

/// A shard: consecutive images of the sorted listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub id: u32,
    pub images: Vec<Image>,
}

/// Lists the dataset at `url` (a local folder or an object-store URL), sorted by image id.
pub async fn list(url: &str) -> anyhow::Result<Vec<Image>> {
    if !url.contains("://") {
        let path = std::path::PathBuf::from(url);
        let ds = tokio::task::spawn_blocking(move || Dataset::open(&path, None))
            .await
            .context("listing task")?
            .with_context(|| format!("listing dataset {url}"))?;
        return Ok(ds
            .entries
            .into_iter()
            .map(|e| Image {
                image_id: e.image_id,
                label: e.label,
            })
            .collect());
    }
    let loc = Location::parse(url)?;
    let entries = remote::list(&loc, None)
        .await
        .with_context(|| format!("listing dataset {url}"))?;
    Ok(entries
        .into_iter()
        .map(|(image_id, label)| Image { image_id, label })
        .collect())
}

/// Cuts the listing into shards of `size` images; the same listing always gives the same
/// shards.
pub fn shards(images: &[Image], size: usize) -> Vec<Shard> {
    images
        .chunks(size.max(1))
        .enumerate()
        .map(|(i, c)| Shard {
            id: i as u32,
            images: c.to_vec(),
        })
        .collect()
}

/// SHA-256 over the listing (`image_id`, tab, label, newline per image), lowercase hex.
pub fn digest(images: &[Image]) -> String {
    let mut h = Sha256::new();
    for i in images {
        h.update(i.image_id.as_bytes());
        h.update(b"\t");
        if let Some(l) = i.label {
            h.update(l.to_string().as_bytes());
        }
        h.update(b"\n");
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}
