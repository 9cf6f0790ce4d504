//! Reading a `.amos` model file through an object store by byte ranges (ARCHITECTURE.md §4):
//! the 32-byte header, then the metadata, then only the tensors a pipeline stage needs.

use std::collections::HashMap;
use std::ops::Range;

use amos_snn::model::ConvertedModel;
use amos_snn::model_file::{self, HEADER_LEN, Metadata, ModelFileError};
use object_store::path::Path as ObjectPath;

use crate::store::{Location, StoreError};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{url}: {source}")]
    Model {
        url: String,
        #[source]
        source: ModelFileError,
    },
}

/// A model read in part.
pub struct PartialModel {
    pub model: ConvertedModel,
    pub metadata: Metadata,
    /// Bytes of tensor data fetched.
    pub tensor_bytes: u64,
}

/// Reads the header and metadata of the model at `path`.
pub async fn read_metadata(loc: &Location, path: &ObjectPath) -> Result<Metadata, ModelLoadError> {
    let url = format!("{}/{}", loc.url.trim_end_matches('/'), loc.relative(path));
    let model_err = |source| ModelLoadError::Model {
        url: url.clone(),
        source,
    };
    let head = loc.get_range(path, 0..HEADER_LEN as u64).await?;
    let header = model_file::parse_header(&head).map_err(model_err)?;
    let meta = loc.get_range(path, header.metadata_range()).await?;
    model_file::parse_metadata(&header, &meta).map_err(model_err)
}

/// Loads the model at `path` with the weights of the nodes in `nodes` only (all nodes with
/// `None`); the other tensors are never fetched (see [`model_file::assemble_partial`]).
pub async fn load_partition(
    loc: &Location,
    path: &ObjectPath,
    nodes: Option<Range<usize>>,
) -> Result<PartialModel, ModelLoadError> {
    let url = format!("{}/{}", loc.url.trim_end_matches('/'), loc.relative(path));
    let metadata = read_metadata(loc, path).await?;
    let wanted: Vec<_> = match &nodes {
        None => metadata.tensors.iter().collect(),
        Some(r) => r.clone().flat_map(|i| metadata.node_tensors(i)).collect(),
    };
    let ranges: Vec<Range<u64>> = wanted.iter().map(|t| metadata.tensor_range(t)).collect();
    let fetched = if ranges.is_empty() {
        Vec::new()
    } else {
        loc.get_ranges(path, &ranges).await?
    };
    let tensor_bytes = fetched.iter().map(|b| b.len() as u64).sum();
    let by_name: HashMap<&str, &[u8]> = wanted
        .iter()
        .zip(&fetched)
        .map(|(t, b)| (t.name.as_str(), b.as_ref()))
        .collect();
    let model = model_file::assemble_partial(&metadata, |entry| {
        Ok(by_name.get(entry.name.as_str()).map(|b| b.to_vec()))
    })
    .map_err(|source| ModelLoadError::Model { url, source })?;
    Ok(PartialModel {
        model,
        metadata,
        tensor_bytes,
    })
}
