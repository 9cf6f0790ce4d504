//! `amos-worker`: one pipeline stage as a gRPC server; the coordinator configures it.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;

/// One stage of an amos evaluation chain, served over gRPC.
///
/// It waits to be configured by `amos-coordinator` as stage i of N of a chain, then loads
/// only that stage's part of the model and runs the shards the chain is given.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to serve gRPC on (the `Stage` service and `grpc.health.v1`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Address to serve Prometheus metrics on, at /metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Largest gRPC message accepted or sent, in MiB.
    #[arg(long, default_value_t = 512)]
    max_message_mib: usize,
    /// Serve only grpc.health.v1, in plaintext, on this address too (probes of a TLS worker).
    #[arg(long)]
    health: Option<SocketAddr>,
    #[command(flatten)]
    security: amos_worker::security::SecurityArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let security = amos_worker::security::Security::from_args(&args.security)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(amos_worker::serve(amos_worker::WorkerOptions {
        listen: args.listen,
        metrics: args.metrics,
        health: args.health,
        max_message_bytes: args.max_message_mib << 20,
        security,
    }))
}
