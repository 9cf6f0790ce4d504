//! `amos-worker`: one stage of a pipeline chain (ARCHITECTURE.md §1).
//!
//! The gRPC stage server arrives with the distributed-pipeline issue; until then the binary
//! only identifies itself and refuses to start a stage.

use clap::Parser;

/// One pipeline stage of an amos chain, served over gRPC.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:50051.
    #[arg(long)]
    listen: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "amos-worker {}: the pipeline stage server is not built yet (requested --listen {:?})",
        env!("CARGO_PKG_VERSION"),
        args.listen
    )
}
