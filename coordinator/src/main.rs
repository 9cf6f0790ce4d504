//! `amos-coordinator`: schedules dataset shards over chains of workers (ARCHITECTURE.md §1, §5).
//!
//! Scheduling and the commit protocol arrive with the distributed-pipeline issue; until then the
//! binary only identifies itself. Single-process evaluation is `amos-convert eval`.

use clap::Parser;

/// Shards a dataset over chains of amos workers and commits per-image results.
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!(
        "amos-coordinator {}: distributed runs are not built yet; use `amos-convert eval` for single-process evaluation",
        env!("CARGO_PKG_VERSION")
    )
}
