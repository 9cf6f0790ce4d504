//! The coordinator of an amos evaluation: shards a dataset over chains of `amos-worker`
//! stages and commits the results (ARCHITECTURE.md §1, §5).
//!
//! - [`dataset`]: the sorted listing and its stable shards;
//! - [`run`]: configuring chains, scheduling shards, retries, resume, the manifest;
//! - [`local`]: the workers as local processes;
//! - [`report`]: the figures of a finished (or partial) output;
//! - [`layers`]: the layer table;
//! - [`status`]: the control plane (`Status`, `Register`) and metrics.

pub mod dataset;
pub mod layers;
pub mod local;
pub mod report;
pub mod run;
pub mod status;
