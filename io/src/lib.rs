//! Storage side of amos: everything that touches files or object stores.
//!
//! - [`data`]: dataset listing, image decoding and preprocessing into model inputs.
//! - [`store`]: local paths and `file://`, `s3://`, `gs://`, `az://` URLs as object stores.
//! - [`model_store`]: ranged reads of a `.amos` model file, one pipeline stage's part.
//! - [`results`]: the results schema (per-image rows, the layer table) in Parquet.

pub mod data;
pub mod model_store;
pub mod results;
pub mod store;
