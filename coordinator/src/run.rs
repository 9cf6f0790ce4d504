//! A run: configure R chains × N stages, hand shards to free chains, retry failures on
//! another chain, and commit (ARCHITECTURE.md §5).
//!
//! - Shards are consecutive images of the sorted listing, so the same dataset always gives
//!   the same shards.
//! - The last stage of a chain writes `OUT/shards/shard-NNNNNN.parquet` in one
//!   create-if-absent put: only complete shards are ever visible, and a late duplicate never
//!   replaces a committed one.
//! - Resume: shards already in `OUT/shards/` whose row count matches are kept; the rest run.
//! - A failed shard (an error anywhere in the chain, or no progress within the stall
//!   timeout) is retried, preferably on another chain, with backoff, up to a limit; a chain
//!   that fails several shards in a row is retired. What never completes is listed in the
//!   outcome.
//! - `OUT/layers.parquet` is written at the start, `OUT/_manifest.json` last.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amos_io::data::Layout;
use amos_io::model_store;
use amos_io::results::{self, RunInfo};
use amos_io::store::Location;
use amos_proto::pipeline as pb;
use amos_proto::pipeline::stage_client::StageClient;
use amos_snn::planner;
use amos_worker::security::{AuthChannel, Security};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::dataset::{self, Shard};
use crate::report::{self, Summary};

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Model, dataset and output: local paths or object-store URLs.
    pub model: String,
    pub data: String,
    pub out: String,
    /// The dataset's layout; `None`: detected from its files.
    pub layout: Option<Layout>,
    /// Synset list numbering ImageFolder classes (default: built-in ImageNet-1k).
    pub synsets: Option<std::path::PathBuf>,
    /// Worker addresses, chain by chain: the first `stages` form chain 0, and so on.
    pub workers: Vec<String>,
    pub stages: usize,
    pub batch: usize,
    pub reference_ann: bool,
    /// Only the first N images (image files) or the first N shard files (containers).
    pub limit: Option<usize>,
    /// Images per shard, for image files (a container file is always one shard).
    pub shard_size: usize,
    /// Engine threads per worker (0: one per core).
    pub threads: usize,
    /// Batches in flight per shard in a chain (0: stages + 1).
    pub max_in_flight: usize,
    /// Shards a chain works on at once.
    pub shards_per_chain: usize,
    /// LZ4-compress spike payloads.
    pub lz4: bool,
    /// Tries per shard.
    pub max_attempts: u32,
    /// Consecutive failures after which a chain (one of its shard slots) stops taking shards.
    pub retire_after: u32,
    /// A shard attempt fails when no event arrives for this long.
    pub stall_timeout: Duration,
    /// How long to wait for workers to accept connections.
    pub connect_timeout: Duration,
    pub progress: bool,
    pub run_id: String,
    pub max_message_bytes: usize,
    /// TLS and token for the connections to the workers.
    pub security: Security,
}

impl RunOptions {
    /// Defaults for everything but the locations, workers and stages.
    pub fn new(
        model: String,
        data: String,
        out: String,
        workers: Vec<String>,
        stages: usize,
    ) -> Self {
        RunOptions {
            model,
            data,
            out,
            layout: None,
            synsets: None,
            workers,
            stages,
            batch: 16,
            reference_ann: false,
            limit: None,
            shard_size: 256,
            threads: 0,
            max_in_flight: 0,
            shards_per_chain: 2,
            lz4: false,
            max_attempts: 4,
            retire_after: 3,
            stall_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(60),
            progress: true,
            run_id: default_run_id(),
            max_message_bytes: amos_worker::DEFAULT_MAX_MESSAGE_BYTES,
            security: Security::default(),
        }
    }
}

/// A run id from the clock and the process id.
pub fn default_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("run-{secs}-{}", std::process::id())
}

/// `OUT/_manifest.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    pub schema_version: String,
    pub run_id: String,
    pub model: String,
    pub model_sha256: String,
    pub data: String,
    /// SHA-256 of the listing (see [`dataset::digest`]).
    pub dataset_digest: String,
    pub settings: ManifestSettings,
    pub shards: Vec<ManifestShard>,
    pub totals: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct ManifestSettings {
    pub stages: usize,
    pub chains: usize,
    pub batch: usize,
    pub shard_size: usize,
    pub reference_ann: bool,
    pub limit: Option<usize>,
    pub stage_ends: Vec<usize>,
    /// Packed spike bytes per image crossing each boundary.
    pub boundary_bytes_per_image: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ManifestShard {
    pub id: u32,
    pub rows: u64,
    pub path: String,
}

/// What a run did.
#[derive(Debug)]
pub struct RunOutcome {
    /// Written when every shard completed.
    pub manifest: Option<Manifest>,
    /// Shards that never completed, with the last error.
    pub failed: Vec<(u32, String)>,
    /// Shards kept from an earlier run into the same output.
    pub resumed: usize,
    pub images_run: u64,
    /// The whole run, and the shard phase alone (after set-up, until the last commit).
    pub seconds: f64,
    pub shard_seconds: f64,
    /// Per chain: shards completed.
    pub chain_shards: Vec<u32>,
    /// Shard attempts that failed and were retried.
    pub retries: u64,
}

/// Shared counters (for the status service and metrics).
#[derive(Default)]
pub struct RunState {
    pub images_total: AtomicU64,
    pub images_done: AtomicU64,
    pub shards_total: AtomicU64,
    pub shards_done: AtomicU64,
    pub shards_failed: AtomicU64,
    pub shard_retries: AtomicU64,
}

struct Pending {
    shard: usize,
    attempt: u32,
    last_chain: Option<usize>,
    last_error: String,
}

struct Queue {
    pending: VecDeque<Pending>,
    /// Shards neither committed nor given up.
    remaining: usize,
    live_chains: usize,
    /// Shards each chain is running now.
    active: Vec<usize>,
    failed: Vec<(u32, String)>,
    committed: BTreeMap<u32, u64>,
}

/// Runs `opts`; `state` is updated as it goes.
pub async fn run(opts: RunOptions, state: Arc<RunState>) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    if opts.stages == 0 {
        bail!("--stages must be at least 1");
    }
    if opts.workers.is_empty() || !opts.workers.len().is_multiple_of(opts.stages) {
        bail!(
            "{} workers cannot form chains of {} stages (the count must be a positive multiple)",
            opts.workers.len(),
            opts.stages
        );
    }
    let chains = opts.workers.len() / opts.stages;

    // The model's structure only: the coordinator fetches no weights.
    let (model_loc, model_path) = Location::parse_file(&opts.model)
        .with_context(|| format!("opening model {}", opts.model))?;
    let model = model_store::load_partition(&model_loc, &model_path, Some(0..0))
        .await
        .with_context(|| format!("reading model {}", opts.model))?
        .model;
    let plan = planner::plan_spike_cuts(&model, opts.stages)
        .with_context(|| format!("planning {} stages", opts.stages))?;
    let ends: Vec<usize> = plan.stages.iter().map(|s| s.nodes.end).collect();

    let mut listing = dataset::list(&opts.data, opts.layout, opts.synsets.as_deref()).await?;
    if let Some(limit) = opts.limit {
        listing.truncate(limit);
    }
    let shards = dataset::shards(&listing, opts.shard_size);
    let out = Location::parse_output(&opts.out)?;
    let info = RunInfo {
        run_id: opts.run_id.clone(),
        model_sha256: model.source_sha256.clone(),
    };

    let committed = committed_shards(&out, &shards, &info).await?;
    let resumed = committed.len();
    let to_run: Vec<usize> = (0..shards.len())
        .filter(|&i| !committed.contains_key(&shards[i].id))
        .collect();
    // Unknown for containers until stage 0 reads them: the bar then counts without a total.
    let images_to_run: u64 = to_run.iter().map(|&i| shards[i].images.len() as u64).sum();
    state.images_total.store(images_to_run, Ordering::Relaxed);
    state
        .shards_total
        .store(shards.len() as u64, Ordering::Relaxed);
    state.shards_done.store(resumed as u64, Ordering::Relaxed);
    info!(
        images = listing.images(),
        shards = shards.len(),
        resumed,
        chains,
        stages = opts.stages,
        "run"
    );

    // Configure every worker of every chain.
    let mut clients = Vec::with_capacity(opts.workers.len());
    for w in &opts.workers {
        clients.push(
            connect(
                w,
                &opts.security,
                opts.connect_timeout,
                opts.max_message_bytes,
            )
            .await?,
        );
    }
    let stage_configs: Vec<pb::StageConfig> = (0..opts.workers.len())
        .map(|w| {
            let (chain, stage) = (w / opts.stages, w % opts.stages);
            pb::StageConfig {
                run_id: opts.run_id.clone(),
                model_url: opts.model.clone(),
                stage: stage as u32,
                stages: opts.stages as u32,
                stage_ends: ends.iter().map(|&e| e as u64).collect(),
                downstream: opts
                    .workers
                    .get(w + 1)
                    .filter(|_| stage + 1 < opts.stages)
                    .cloned()
                    .unwrap_or_default(),
                data_url: opts.data.clone(),
                out_url: opts.out.clone(),
                chain: chain as u32,
                threads: opts.threads as u32,
                codec: if opts.lz4 {
                    pb::Codec::Lz4
                } else {
                    pb::Codec::None
                } as i32,
                reference_ann: opts.reference_ann,
                max_in_flight: if opts.max_in_flight == 0 {
                    opts.stages as u32 + 1
                } else {
                    opts.max_in_flight as u32
                },
                max_image_pixels: 0,
                model_sha256: model.source_sha256.clone(),
            }
        })
        .collect();
    let configs = stage_configs.iter().enumerate().map(|(w, config)| {
        let mut client = clients[w].clone();
        let addr = opts.workers[w].clone();
        let config = config.clone();
        let limit = opts.stall_timeout;
        async move {
            tokio::time::timeout(limit, client.configure(config))
                .await
                .map_err(|_| anyhow::anyhow!("worker {addr} did not answer within {limit:?}"))?
                .map_err(|e| anyhow::anyhow!("configuring worker {addr}: {}", e.message()))
        }
    });
    futures::future::try_join_all(configs).await?;
    let stage_configs = Arc::new(stage_configs);

    let layers = crate::layers::layer_table(&model, &plan)?;
    out.put(
        &out.child("layers.parquet"),
        results::encode_layers(&layers, &info)?,
    )
    .await?;

    let progress = if opts.progress {
        let containers = listing.images().is_none();
        let bar = if containers {
            ProgressBar::no_length()
        } else {
            ProgressBar::new(images_to_run)
        };
        bar.set_style(
            ProgressStyle::with_template(if containers {
                "{elapsed_precise} {pos} images  {per_sec}  {msg}"
            } else {
                "{elapsed_precise} [{bar:30}] {pos}/{len} images  {per_sec}  ETA {eta}  {msg}"
            })
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let queue = Arc::new(Mutex::new(Queue {
        pending: to_run
            .iter()
            .map(|&shard| Pending {
                shard,
                attempt: 0,
                last_chain: None,
                last_error: String::new(),
            })
            .collect(),
        remaining: to_run.len(),
        live_chains: chains * opts.shards_per_chain.max(1),
        active: vec![0; chains],
        failed: Vec::new(),
        committed,
    }));
    let shards = Arc::new(shards);
    let shards_started = Instant::now();
    let mut tasks = Vec::with_capacity(chains);
    // Each chain works on `shards_per_chain` shards at once, so that one shard fills the
    // stages while another drains: no pipeline bubble between shards.
    for chain in 0..chains {
        for _ in 0..opts.shards_per_chain.max(1) {
            let ctx = ChainContext {
                chain,
                client: clients[chain * opts.stages].clone(),
                configs: stage_configs.clone(),
                reconfigure: false,
                queue: queue.clone(),
                shards: shards.clone(),
                state: state.clone(),
                progress: progress.clone(),
                opts: opts.clone(),
            };
            tasks.push((chain, tokio::spawn(ctx.run())));
        }
    }
    let mut chain_shards = vec![0; chains];
    for (chain, t) in tasks {
        chain_shards[chain] += t.await.context("chain task")?;
    }
    progress.finish_and_clear();
    let shard_seconds = shards_started.elapsed().as_secs_f64();

    let mut q = queue.lock().await;
    while let Some(p) = q.pending.pop_front() {
        let id = shards[p.shard].id;
        let why = format!("no chain left to run it; last error: {}", p.last_error);
        q.failed.push((id, why));
    }
    q.failed.sort();
    let failed = q.failed.clone();
    let committed = q.committed.clone();
    drop(q);
    let images_run = state.images_done.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    if !failed.is_empty() {
        return Ok(RunOutcome {
            manifest: None,
            failed,
            resumed,
            images_run,
            seconds,
            shard_seconds,
            chain_shards,
            retries: state.shard_retries.load(Ordering::Relaxed),
        });
    }

    let (rows, layers) = report::load(&out).await?;
    let manifest = Manifest {
        schema_version: results::SCHEMA_VERSION.to_string(),
        run_id: opts.run_id.clone(),
        model: opts.model.clone(),
        model_sha256: model.source_sha256.clone(),
        data: opts.data.clone(),
        dataset_digest: dataset::digest(&listing),
        settings: ManifestSettings {
            stages: opts.stages,
            chains,
            batch: opts.batch,
            shard_size: opts.shard_size,
            reference_ann: opts.reference_ann,
            limit: opts.limit,
            stage_ends: ends,
            boundary_bytes_per_image: plan
                .stages
                .iter()
                .take(plan.stages.len().saturating_sub(1))
                .map(|s| s.boundary_bytes_per_image)
                .collect(),
        },
        shards: committed
            .iter()
            .map(|(&id, &rows)| ManifestShard {
                id,
                rows,
                path: results::shard_object(id),
            })
            .collect(),
        totals: report::summarise(&rows, &layers),
    };
    out.put(
        &out.child("_manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )
    .await?;
    Ok(RunOutcome {
        manifest: Some(manifest),
        failed,
        resumed,
        images_run,
        seconds,
        shard_seconds,
        chain_shards,
        retries: state.shard_retries.load(Ordering::Relaxed),
    })
}

/// Shards already committed under `out` with the expected row count, by id. A shard file of
/// another model is an error: the output belongs to a different run.
async fn committed_shards(
    out: &Location,
    shards: &[Shard],
    info: &RunInfo,
) -> anyhow::Result<BTreeMap<u32, u64>> {
    let mut done = BTreeMap::new();
    for o in out.list("shards").await? {
        let Some(id) = o.location.filename().and_then(results::shard_id) else {
            continue;
        };
        let Some(shard) = shards.iter().find(|s| s.id == id) else {
            continue;
        };
        let bytes = out.get(&o.location).await?;
        let (rows, found) = match results::shard_footer(bytes) {
            Ok(f) => f,
            Err(e) => {
                warn!(shard = id, error = %e, "unreadable shard file; it will be rerun");
                continue;
            }
        };
        if found.model_sha256 != info.model_sha256 {
            bail!(
                "{}: shard {id} holds results of model {} but this run's model is {}; use another output",
                out.url,
                found.model_sha256,
                info.model_sha256
            );
        }
        match shard.expected_rows() {
            Some(expected) if rows != expected => bail!(
                "{}: shard {id} has {rows} rows but the dataset gives it {expected} images; the dataset changed since that run",
                out.url,
            ),
            _ => {
                done.insert(id, rows);
            }
        }
    }
    Ok(done)
}

/// Connects to a worker, retrying until `timeout` (workers may still be starting).
pub async fn connect(
    addr: &str,
    security: &Security,
    timeout: Duration,
    max_message_bytes: usize,
) -> anyhow::Result<StageClient<AuthChannel>> {
    let deadline = Instant::now() + timeout;
    loop {
        match security.connect(addr, Duration::from_secs(5)).await {
            Ok(channel) => {
                return Ok(StageClient::new(channel)
                    .max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes));
            }
            Err(e) if Instant::now() >= deadline => {
                bail!("worker {addr} did not accept a connection within {timeout:?}: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

struct ChainContext {
    chain: usize,
    client: StageClient<AuthChannel>,
    /// Every worker's configuration, chain by chain.
    configs: Arc<Vec<pb::StageConfig>>,
    /// After a failure: configure the chain's workers again before the next shard (a worker
    /// that was restarted comes back unconfigured).
    reconfigure: bool,
    queue: Arc<Mutex<Queue>>,
    shards: Arc<Vec<Shard>>,
    state: Arc<RunState>,
    progress: ProgressBar,
    opts: RunOptions,
}

enum Next {
    Run(Pending),
    Wait,
    Done,
}

impl ChainContext {
    /// Takes shards until none is left; returns how many this chain committed.
    async fn run(mut self) -> u32 {
        let mut done = 0;
        let mut failures = 0u32;
        loop {
            let next = {
                let mut q = self.queue.lock().await;
                let idle_chains = q.active.iter().filter(|&&a| a == 0).count();
                if q.remaining == 0 {
                    Next::Done
                } else if q.active[self.chain] > 0 && q.pending.len() <= idle_chains {
                    // Leave the pending shards to chains with nothing to do.
                    Next::Wait
                } else {
                    // Prefer a shard that did not just fail here, unless no other chain lives.
                    let pos = q
                        .pending
                        .iter()
                        .position(|p| p.last_chain != Some(self.chain) || q.live_chains == 1);
                    match pos.and_then(|i| q.pending.remove(i)) {
                        Some(p) => {
                            q.active[self.chain] += 1;
                            Next::Run(p)
                        }
                        None => Next::Wait,
                    }
                }
            };
            let mut p = match next {
                Next::Done => return done,
                Next::Wait => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Next::Run(p) => p,
            };
            let shards = self.shards.clone();
            let shard = &shards[p.shard];
            let mut counted = 0u64;
            // A stopped worker accepts connections but never answers: bound the set-up.
            let stall = self.opts.stall_timeout;
            let prepared = match tokio::time::timeout(stall, self.prepare()).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
                    "chain {} did not come back within {stall:?}",
                    self.chain
                )),
            };
            let result = match prepared {
                Ok(()) => self.run_shard(shard, p.attempt, &mut counted).await,
                Err(e) => Err(e),
            };
            let mut q = self.queue.lock().await;
            q.active[self.chain] -= 1;
            match result {
                Ok(rows) => {
                    failures = 0;
                    done += 1;
                    q.remaining -= 1;
                    q.committed.insert(shard.id, rows);
                    self.state.shards_done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    failures += 1;
                    self.reconfigure = true;
                    self.progress.dec(counted);
                    self.state.images_done.fetch_sub(counted, Ordering::Relaxed);
                    warn!(shard = shard.id, attempt = p.attempt, chain = self.chain, error = %e, "shard failed");
                    p.attempt += 1;
                    p.last_chain = Some(self.chain);
                    p.last_error = format!("{e:#}");
                    if p.attempt >= self.opts.max_attempts {
                        q.remaining -= 1;
                        q.failed.push((shard.id, p.last_error));
                        self.state.shards_failed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.state.shard_retries.fetch_add(1, Ordering::Relaxed);
                        q.pending.push_back(p);
                    }
                    if failures >= self.opts.retire_after {
                        q.live_chains -= 1;
                        warn!(
                            chain = self.chain,
                            "chain retired after {failures} failures in a row"
                        );
                        if q.live_chains == 0 {
                            // Nobody is left to run what is pending.
                            q.remaining -= q.pending.len();
                        }
                        return done;
                    }
                    drop(q);
                    let backoff = Duration::from_millis(200 << failures.min(6));
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Reconnects to and configures the chain's workers again when the last shard failed.
    async fn prepare(&mut self) -> anyhow::Result<()> {
        if !self.reconfigure {
            return Ok(());
        }
        let stages = self.opts.stages;
        let first = self.chain * stages;
        let mut clients = Vec::with_capacity(stages);
        for w in first..first + stages {
            let addr = &self.opts.workers[w];
            let mut client = connect(
                addr,
                &self.opts.security,
                Duration::from_secs(5),
                self.opts.max_message_bytes,
            )
            .await?;
            client
                .configure(self.configs[w].clone())
                .await
                .map_err(|e| anyhow::anyhow!("configuring worker {addr}: {}", e.message()))?;
            clients.push(client);
        }
        self.client = clients.swap_remove(0);
        self.reconfigure = false;
        Ok(())
    }

    /// One attempt at a shard: returns its committed row count.
    async fn run_shard(
        &mut self,
        shard: &Shard,
        attempt: u32,
        counted: &mut u64,
    ) -> anyhow::Result<u64> {
        let task = pb::ShardTask {
            shard: shard.id,
            attempt,
            images: shard
                .images
                .iter()
                .map(|i| pb::ImageRef {
                    image_id: i.image_id.clone(),
                    label: i.label,
                })
                .collect(),
            batch: self.opts.batch as u32,
            container: shard.container.clone().unwrap_or_default(),
        };
        let stall = self.opts.stall_timeout;
        let mut events = tokio::time::timeout(stall, self.client.run_shard(task))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "chain {} did not start the shard within {stall:?}",
                    self.chain
                )
            })?
            .map_err(|e| anyhow::anyhow!("chain {}: {}", self.chain, e.message()))?
            .into_inner();
        loop {
            let ev = tokio::time::timeout(stall, events.message())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("chain {} made no progress for {stall:?}", self.chain)
                })?
                .map_err(|e| anyhow::anyhow!("chain {}: {}", self.chain, e.message()))?;
            match ev.and_then(|e| e.event) {
                Some(pb::shard_event::Event::BatchDone(b)) => {
                    *counted += b.images as u64;
                    self.progress.inc(b.images as u64);
                    self.state
                        .images_done
                        .fetch_add(b.images as u64, Ordering::Relaxed);
                }
                Some(pb::shard_event::Event::Committed(c)) => {
                    if let Some(expected) = shard.expected_rows().filter(|&e| e != c.rows) {
                        bail!(
                            "shard {} committed with {} rows, expected {expected}",
                            shard.id,
                            c.rows,
                        );
                    }
                    info!(
                        shard = shard.id,
                        chain = self.chain,
                        attempt,
                        duplicate = c.already_present,
                        "shard committed"
                    );
                    return Ok(c.rows);
                }
                None => bail!("chain {} ended the shard without committing it", self.chain),
            }
        }
    }
}
