//! `amos-coordinator`: runs a converted model over a dataset on chains of `amos-worker`
//! stages (`run`, or `local` with the workers as local processes) and reports the results.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amos_coordinator::local::LocalWorkers;
use amos_coordinator::report;
use amos_coordinator::run::{self, RunOptions, RunOutcome, RunState};
use amos_coordinator::status::{self, ControlPlane};
use amos_io::data::Layout;
use amos_io::store::Location;
use amos_worker::security::Security;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Evaluate a converted spiking network over a dataset on chains of amos-worker stages."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run on workers that are already serving (`amos-worker --listen ADDR`).
    Run {
        /// The converted model (.amos): a path or an object-store URL.
        #[arg(long)]
        model: String,
        /// Worker addresses (host:port or http://host:port), chain by chain: the first
        /// --stages form chain 0, the next chain 1, and so on.
        #[arg(long, value_delimiter = ',', required = true)]
        workers: Vec<String>,
        /// Stages per chain.
        #[arg(long, default_value_t = 1)]
        stages: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Start the workers as local processes on loopback ports, run, and stop them.
    Local {
        /// The converted model (.amos).
        #[arg(long)]
        model: String,
        /// Stages per chain.
        #[arg(long, default_value_t = 1)]
        stages: usize,
        /// Chains (each of --stages worker processes).
        #[arg(long, default_value_t = 1)]
        chains: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Summarise a run's output: accuracy, agreement, spikes, spike rate per unit.
    Report {
        /// The run's output location.
        out: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Units to list, by spike rate.
        #[arg(long, default_value_t = 10)]
        units: usize,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// The dataset: a folder or object-store URL (ImageFolder, labels.csv manifest,
    /// WebDataset .tar shards or Parquet shards).
    #[arg(long)]
    data: String,
    /// Dataset layout: imagefolder, csv, webdataset or parquet (default: detected).
    #[arg(long)]
    layout: Option<Layout>,
    /// Synset list (`<wnid> <name>` per line, a local file) numbering ImageFolder classes;
    /// default: the built-in ImageNet-1k list.
    #[arg(long)]
    synsets: Option<std::path::PathBuf>,
    /// Output location: shards/, layers.parquet and _manifest.json go here.
    #[arg(long)]
    out: String,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Also run the ANN alongside, for agreement figures.
    #[arg(long)]
    reference_ann: bool,
    /// Only the first N images of the sorted listing (WebDataset, Parquet: the first N
    /// shard files).
    #[arg(long)]
    limit: Option<usize>,
    /// Images per shard (the unit of scheduling, retry and commit); a WebDataset or Parquet
    /// shard file is always one shard.
    #[arg(long, default_value_t = 256)]
    shard_size: usize,
    /// Engine threads per worker (default: local mode shares the cores out, run uses all).
    #[arg(long)]
    threads: Option<usize>,
    /// Batches in flight per shard in a chain (default: stages + 1).
    #[arg(long, default_value_t = 0)]
    in_flight: usize,
    /// Shards a chain works on at once (one fills the stages while another drains).
    #[arg(long, default_value_t = 2)]
    shards_per_chain: usize,
    /// LZ4-compress spike tensors on the wire.
    #[arg(long)]
    lz4: bool,
    /// Tries per shard before it is reported as failed.
    #[arg(long, default_value_t = 4)]
    max_attempts: u32,
    /// A chain stops taking shards after this many failures in a row.
    #[arg(long, default_value_t = 3)]
    retire_after: u32,
    /// A shard attempt fails when its chain reports nothing for this many seconds.
    #[arg(long, default_value_t = 300)]
    stall_timeout_s: u64,
    /// How long to keep trying to reach each worker at the start, in seconds.
    #[arg(long, default_value_t = 60)]
    connect_timeout_s: u64,
    /// Run id written into the results (default: from the clock and process id).
    #[arg(long)]
    run_id: Option<String>,
    /// Serve the control plane (Status, Register) over gRPC on this address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve Prometheus metrics at /metrics on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    security: amos_worker::security::SecurityArgs,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(dispatch(cli)));
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn options(
    model: String,
    workers: Vec<String>,
    stages: usize,
    c: &Common,
    security: Security,
) -> RunOptions {
    let workers = workers.iter().map(|w| security.address(w)).collect();
    let mut o = RunOptions::new(model, c.data.clone(), c.out.clone(), workers, stages);
    o.security = security;
    o.batch = c.batch.max(1);
    o.reference_ann = c.reference_ann;
    o.limit = c.limit;
    o.layout = c.layout;
    o.synsets = c.synsets.clone();
    o.shard_size = c.shard_size.max(1);
    o.threads = c.threads.unwrap_or(0);
    o.max_in_flight = c.in_flight;
    o.shards_per_chain = c.shards_per_chain.max(1);
    o.lz4 = c.lz4;
    o.max_attempts = c.max_attempts.max(1);
    o.retire_after = c.retire_after.max(1);
    o.stall_timeout = Duration::from_secs(c.stall_timeout_s.max(1));
    o.progress = !c.quiet;
    o.connect_timeout = Duration::from_secs(c.connect_timeout_s.max(1));
    if let Some(id) = &c.run_id {
        o.run_id = id.clone();
    }
    o
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run {
            model,
            workers,
            stages,
            common,
        } => {
            let security = Security::from_args(&common.security)?;
            let opts = options(model, workers, stages, &common, security);
            run_with_services(opts, &common).await
        }
        Command::Local {
            model,
            stages,
            chains,
            common,
        } => {
            if stages == 0 || chains == 0 {
                bail!("--stages and --chains must be at least 1");
            }
            let count = stages * chains;
            let mut common = common;
            if common.threads.is_none() {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                common.threads = Some((cores / count).max(1));
            }
            let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
            let workers = LocalWorkers::start(count, &level).await?;
            let opts = options(
                model,
                workers.addresses.clone(),
                stages,
                &common,
                workers.security.clone(),
            );
            let result = tokio::select! {
                r = run_with_services(opts, &common) => r,
                _ = amos_worker::shutdown_signal() => {
                    eprintln!("interrupted: stopping the workers");
                    workers.shutdown().await;
                    return Ok(130);
                }
            };
            workers.shutdown().await;
            result
        }
        Command::Report { out, json, units } => {
            let loc = Location::parse(&out)?;
            let (rows, layers) = report::load(&loc).await?;
            if rows.is_empty() {
                bail!("{out}: no committed shards");
            }
            let summary = report::summarise(&rows, &layers);
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", report::render(&summary, units));
            }
            Ok(0)
        }
    }
}

/// Runs with the control plane and metrics served when asked for; prints the outcome.
async fn run_with_services(opts: RunOptions, common: &Common) -> anyhow::Result<i32> {
    let state = Arc::new(RunState::default());
    if let Some(addr) = common.listen {
        let plane = ControlPlane {
            state: state.clone(),
            run_id: opts.run_id.clone(),
            chains: (opts.workers.len() / opts.stages.max(1)) as u32,
            stages: opts.stages as u32,
            started: Instant::now(),
            registered: Default::default(),
        };
        let security = Security::from_args(&common.security)?;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = security.server_tls() {
            builder = builder.tls_config(tls)?;
        }
        let server = builder.add_service(tonic::service::interceptor::InterceptedService::new(
            amos_proto::pipeline::coordinator_server::CoordinatorServer::new(plane),
            security.check(),
        ));
        tokio::spawn(server.serve(addr));
    }
    if let Some(addr) = common.metrics {
        let s = state.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics address {addr}"))?;
        tokio::spawn(amos_worker::metrics::serve_on(
            listener,
            Arc::new(move || status::render_metrics(&s)),
        ));
    }
    let outcome = run::run(opts, state).await?;
    print_outcome(&outcome, common.json)?;
    Ok(if outcome.failed.is_empty() { 0 } else { 2 })
}

fn print_outcome(o: &RunOutcome, json: bool) -> anyhow::Result<()> {
    let ips = if o.shard_seconds > 0.0 {
        o.images_run as f64 / o.shard_seconds
    } else {
        0.0
    };
    if json {
        let v = serde_json::json!({
            "images_run": o.images_run,
            "seconds": o.seconds,
            "shard_seconds": o.shard_seconds,
            "images_per_second": ips,
            "resumed_shards": o.resumed,
            "chain_shards": o.chain_shards,
            "retries": o.retries,
            "failed": o.failed.iter().map(|(id, e)| serde_json::json!({"shard": id, "error": e})).collect::<Vec<_>>(),
            "manifest": o.manifest,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "ran {} images in {:.1} s ({ips:.1} images/s once set up, {:.1} s in all); {} shards kept from an earlier run",
        o.images_run, o.shard_seconds, o.seconds, o.resumed
    );
    if let Some(m) = &o.manifest {
        print!("{}", report::render(&m.totals, 0));
    }
    for (id, e) in &o.failed {
        eprintln!("shard {id} failed: {e}");
    }
    if !o.failed.is_empty() {
        eprintln!(
            "{} shards did not complete; rerun into the same output to resume",
            o.failed.len()
        );
    }
    Ok(())
}
