//! The `Stage` gRPC service: one stage of a chain.
//!
//! Stage 0 serves `RunShard`: it reads the shard's images from the dataset, runs its layers
//! and streams batches of packed spikes down the chain (`Forward` on the next stage), holding
//! at most `max_in_flight` batches in the chain: a batch's slot is freed when the last stage
//! reports it done, so every stage has work while none is flooded. Later stages serve
//! `Forward`: they run each received batch and send it on, or, as the last stage, turn it
//! into result rows, and at the end of the shard write its Parquet file create-if-absent.
//! Events travel back up the response streams to the coordinator.
//!
//! Compute runs on blocking threads (the engine has its own thread pool); the async side
//! only moves bytes.

use std::sync::Arc;
use std::time::Instant;

use amos_io::data::Preprocess;
use amos_io::data::containers::{self, Sample};
use amos_io::data::recipe::from_recipe;
use amos_io::model_store;
use amos_io::results::{self, ImageRow, RunInfo};
use amos_io::store::{Created, Location};
use amos_proto::pipeline as pb;
use amos_proto::pipeline::stage_client::StageClient;
use amos_proto::pipeline::stage_server::Stage as StageRpc;
use amos_snn::Tensor;
use amos_snn::pipeline::{Stage, StageInput, StageLayout, StageOutput};
use amos_snn::simulate::top_k;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use rayon::prelude::*;
use tokio::sync::{Mutex, Notify, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span};

use crate::metrics::Metrics;
use crate::security::{AuthChannel, Security};
use crate::wire;

/// Images fetched from the dataset at once by stage 0.
const FETCH_CONCURRENCY: usize = 16;

/// A worker configured for a run.
struct Configured {
    config: pb::StageConfig,
    stage: Arc<Stage>,
    data: Option<Location>,
    out: Option<Location>,
    preprocess: Option<Preprocess>,
    info: RunInfo,
    /// Neurons per image of the whole network (every row's `neurons`).
    neurons: u64,
    units: usize,
    classes: usize,
    /// Tensor bytes fetched, units run by this stage.
    tensor_bytes: u64,
    stage_units: u64,
}

impl Configured {
    fn is_first(&self) -> bool {
        self.stage.layout().is_first()
    }

    fn is_last(&self) -> bool {
        self.stage.layout().is_last()
    }
}

/// The service; cheap to clone.
#[derive(Clone)]
pub struct StageService {
    state: Arc<Mutex<Option<Arc<Configured>>>>,
    metrics: Arc<Metrics>,
    health: tonic_health::server::HealthReporter,
    shutdown: Arc<Notify>,
    max_message_bytes: usize,
    security: Security,
}

type EventSender = mpsc::Sender<Result<pb::ShardEvent, Status>>;
type EventStream = ReceiverStream<Result<pb::ShardEvent, Status>>;

fn internal(context: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{context}: {e}"))
}

impl StageService {
    pub fn new(
        metrics: Arc<Metrics>,
        health: tonic_health::server::HealthReporter,
        shutdown: Arc<Notify>,
        max_message_bytes: usize,
        security: Security,
    ) -> Self {
        StageService {
            state: Arc::new(Mutex::new(None)),
            metrics,
            health,
            shutdown,
            max_message_bytes,
            security,
        }
    }

    async fn configured(&self) -> Result<Arc<Configured>, Status> {
        self.state
            .lock()
            .await
            .clone()
            .ok_or_else(|| Status::failed_precondition("this worker is not configured yet"))
    }

    async fn connect(&self, cfg: &Configured) -> Result<StageClient<AuthChannel>, Status> {
        let addr = cfg.config.downstream.clone();
        let channel = self
            .security
            .connect(&addr, std::time::Duration::from_secs(10))
            .await
            .map_err(|e| Status::unavailable(format!("the next stage: {e:#}")))?;
        Ok(StageClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    async fn load(&self, config: pb::StageConfig) -> Result<Configured, Status> {
        let bad = |msg: String| Status::invalid_argument(msg);
        let ends: Vec<usize> = config.stage_ends.iter().map(|&e| e as usize).collect();
        let (index, count) = (config.stage as usize, config.stages as usize);
        if count == 0 || index >= count || ends.len() != count {
            return Err(bad(format!(
                "stage {index} of {count} with {} stage ends",
                ends.len()
            )));
        }
        let nodes = index.checked_sub(1).map_or(0, |p| ends[p])..ends[index];
        if nodes.start >= nodes.end {
            return Err(bad(format!("stage {index} holds no nodes ({nodes:?})")));
        }
        let (loc, path) = Location::parse_file(&config.model_url)
            .map_err(|e| Status::not_found(format!("model {}: {e}", config.model_url)))?;
        let part = model_store::load_partition(&loc, &path, Some(nodes.clone()))
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let model = part.model;
        if !config.model_sha256.is_empty() && config.model_sha256 != model.source_sha256 {
            return Err(Status::failed_precondition(format!(
                "{}: the model's source sha256 is {}, the coordinator expected {}",
                config.model_url, model.source_sha256, config.model_sha256
            )));
        }
        let layout = StageLayout::new(&model, &ends, index).map_err(|e| bad(e.to_string()))?;
        let codec = wire::codec_from_wire(config.codec)?;
        let threads = config.threads as usize;
        let preprocess = if layout.is_first() {
            Some(from_recipe(&model.preprocess).map_err(|e| bad(e.to_string()))?)
        } else {
            None
        };
        let data = if layout.is_first() {
            Some(Location::parse(&config.data_url).map_err(|e| Status::not_found(e.to_string()))?)
        } else {
            None
        };
        let out = if layout.is_last() {
            Some(
                Location::parse_output(&config.out_url)
                    .map_err(|e| Status::failed_precondition(e.to_string()))?,
            )
        } else {
            None
        };
        let info = RunInfo {
            run_id: config.run_id.clone(),
            model_sha256: model.source_sha256.clone(),
        };
        let units = model.units.len();
        let stage_units = model
            .units
            .iter()
            .filter(|u| nodes.contains(&u.node))
            .count() as u64;
        let stage = tokio::task::spawn_blocking(move || Stage::new(&model, layout, threads, codec))
            .await
            .map_err(|e| internal("setting up the stage", e))?
            .map_err(|e| bad(e.to_string()))?;
        info!(
            stage = index,
            stages = count,
            nodes = ?nodes,
            tensor_bytes = part.tensor_bytes,
            "configured"
        );
        Ok(Configured {
            neurons: stage.network().neurons(),
            classes: stage.network().classes(),
            units,
            tensor_bytes: part.tensor_bytes,
            stage_units,
            stage: Arc::new(stage),
            data,
            out,
            preprocess,
            info,
            config,
        })
    }

    /// Runs the stage on a batch on a blocking thread; `None` when no image of it is left.
    async fn compute(
        &self,
        cfg: &Arc<Configured>,
        input: OwnedInput,
        ann: Option<Vec<Tensor>>,
    ) -> Result<Option<StageOutput>, Status> {
        if input.is_empty() {
            return Ok(None);
        }
        let cfg = cfg.clone();
        let start = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            let result = match input {
                OwnedInput::Images(images) => {
                    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
                    cfg.stage.run(StageInput::Images(&refs), ann)
                }
                OwnedInput::Spikes(spikes) => cfg.stage.run(StageInput::Spikes(spikes), ann),
            };
            result.map_err(|e| internal("running the stage", e))
        })
        .await
        .map_err(|e| internal("stage task", e))??;
        self.metrics
            .busy_seconds
            .inc_by(start.elapsed().as_secs_f64());
        Ok(Some(out))
    }

    /// Stage 0: the image files of `images`, fetched from the dataset's store.
    async fn fetch_images(
        &self,
        cfg: &Arc<Configured>,
        images: &[pb::ImageRef],
    ) -> Result<Vec<Result<Bytes, String>>, Status> {
        let data = cfg
            .data
            .clone()
            .ok_or_else(|| Status::failed_precondition("stage 0 has no dataset"))?;
        let paths: Vec<_> = images.iter().map(|r| data.child(&r.image_id)).collect();
        Ok(futures::stream::iter(paths)
            .map(move |path| {
                let data = data.clone();
                async move { data.get(&path).await.map_err(|e| e.to_string()) }
            })
            .buffered(FETCH_CONCURRENCY)
            .collect()
            .await)
    }

    /// Stage 0: the samples of a WebDataset or Parquet shard file, fetched whole.
    async fn read_container(
        &self,
        cfg: &Arc<Configured>,
        container: &str,
    ) -> Result<Vec<Sample>, Status> {
        let data = cfg
            .data
            .clone()
            .ok_or_else(|| Status::failed_precondition("stage 0 has no dataset"))?;
        let bytes = data
            .get(&data.child(container))
            .await
            .map_err(|e| Status::unavailable(format!("reading {container}: {e}")))?;
        let name = container.to_string();
        let samples = tokio::task::spawn_blocking(move || containers::read_samples(&name, bytes))
            .await
            .map_err(|e| internal("reading a container", e))?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if samples.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{container}: holds no samples"
            )));
        }
        Ok(samples)
    }

    /// Stage 0: one batch's image states and pixels, from `prefetched` container samples
    /// or fetched file by file.
    async fn load_batch(
        &self,
        cfg: &Arc<Configured>,
        chunk: &[pb::ImageRef],
        prefetched: &mut Option<std::vec::IntoIter<Result<Bytes, String>>>,
    ) -> Result<(Vec<pb::ImageState>, Vec<Vec<u8>>), Status> {
        let fetched = match prefetched {
            Some(samples) => samples.by_ref().take(chunk.len()).collect(),
            None => self.fetch_images(cfg, chunk).await?,
        };
        self.decode_images(cfg, chunk, fetched).await
    }

    /// Stage 0: decodes and preprocesses fetched images, giving every image its state and
    /// the pixels of those that decoded.
    async fn decode_images(
        &self,
        cfg: &Arc<Configured>,
        images: &[pb::ImageRef],
        fetched: Vec<Result<Bytes, String>>,
    ) -> Result<(Vec<pb::ImageState>, Vec<Vec<u8>>), Status> {
        let cfg2 = cfg.clone();
        let ids: Vec<String> = images.iter().map(|r| r.image_id.clone()).collect();
        let decoded: Vec<Result<Vec<u8>, String>> = tokio::task::spawn_blocking(move || {
            let pre = cfg2.preprocess.as_ref();
            fetched
                .into_par_iter()
                .zip(ids)
                .map(|(bytes, id)| {
                    let pre = pre.ok_or("stage 0 has no preprocessing recipe")?;
                    pre.load_u8_from_bytes(&bytes?, &id)
                        .map_err(|e| e.to_string())
                })
                .collect()
        })
        .await
        .map_err(|e| internal("decoding images", e))?;
        let mut states = Vec::with_capacity(images.len());
        let mut ok = Vec::with_capacity(images.len());
        for (r, d) in images.iter().zip(decoded) {
            let mut state = pb::ImageState {
                image_id: r.image_id.clone(),
                label: r.label,
                unit_spikes: vec![0; cfg.units],
                ..Default::default()
            };
            match d {
                Ok(pixels) => ok.push(pixels),
                Err(e) => state.error = Some(e),
            }
            states.push(state);
        }
        Ok((states, ok))
    }

    /// The next stage's message for a computed batch; adds this stage's spike counts to the
    /// images' states.
    fn batch_message(
        &self,
        header: Option<pb::ShardHeader>,
        index: u32,
        mut states: Vec<pb::ImageState>,
        out: Option<StageOutput>,
    ) -> pb::StageBatch {
        let (mut spikes, mut ann) = (Vec::new(), Vec::new());
        if let Some(out) = out {
            add_stats(&mut states, &out);
            ann = out.ann.iter().map(wire::f32_to_wire).collect();
            spikes = out.spikes.into_iter().map(wire::spikes_to_wire).collect();
        }
        let msg = pb::StageBatch {
            header,
            batch_index: index,
            images: states,
            spikes,
            ann,
        };
        self.metrics.bytes_sent.inc_by(msg.encoded_len() as u64);
        self.metrics
            .spike_bytes_sent
            .inc_by(msg.spikes.iter().map(|s| s.payload.len() as u64).sum());
        msg
    }

    /// Last stage: the rows of a computed batch.
    fn rows(
        &self,
        cfg: &Configured,
        shard: &pb::ShardHeader,
        mut states: Vec<pb::ImageState>,
        out: Option<StageOutput>,
    ) -> Vec<ImageRow> {
        if let Some(out) = &out {
            add_stats(&mut states, out);
        }
        let top5 = |t: Option<&Tensor>, j: usize| -> Option<[i32; 5]> {
            let logits = t?.data().get(j * cfg.classes..(j + 1) * cfg.classes)?;
            let mut best = [-1i32; 5];
            for (b, c) in best.iter_mut().zip(top_k(logits, 5)) {
                *b = c as i32;
            }
            Some(best)
        };
        let mut j = 0;
        states
            .into_iter()
            .map(|s| {
                let mut row = ImageRow {
                    image_id: s.image_id,
                    shard: shard.shard,
                    label: s.label,
                    chain: cfg.config.chain,
                    attempt: shard.attempt,
                    ..Default::default()
                };
                if s.error.is_some() {
                    row.error = s.error;
                    return row;
                }
                let out = out.as_ref();
                row.snn_top5 = top5(out.and_then(|o| o.logits.as_ref()), j);
                row.ann_top5 = top5(out.and_then(|o| o.ann_logits.as_ref()), j);
                row.spikes = s.spikes;
                row.synops = s.synops;
                row.neurons = cfg.neurons;
                row.unit_spikes = s.unit_spikes;
                j += 1;
                row.with_correctness()
            })
            .collect()
    }

    /// Last stage: writes the shard's file, create-if-absent.
    async fn commit(
        &self,
        cfg: &Configured,
        shard: &pb::ShardHeader,
        rows: Vec<ImageRow>,
    ) -> Result<pb::ShardCommitted, Status> {
        if rows.len() != shard.images as usize {
            return Err(Status::data_loss(format!(
                "shard {} ended with {} of its {} images",
                shard.shard,
                rows.len(),
                shard.images
            )));
        }
        let out = cfg
            .out
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("the last stage has no output location"))?;
        let info = cfg.info.clone();
        let n = rows.len() as u64;
        let bytes = tokio::task::spawn_blocking(move || results::encode_shard(&rows, &info))
            .await
            .map_err(|e| internal("encoding the shard", e))?
            .map_err(|e| internal("encoding the shard", e))?;
        let object = results::shard_object(shard.shard);
        let created = out
            .put_if_absent(&out.child(&object), bytes)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.metrics.shards_committed.inc();
        info!(shard = shard.shard, rows = n, ?created, "committed");
        Ok(pb::ShardCommitted {
            shard: shard.shard,
            rows: n,
            path: object,
            already_present: created == Created::AlreadyPresent,
        })
    }

    /// Stage 0's part of a shard.
    async fn run_shard(&self, task: pb::ShardTask, events: EventSender) -> Result<(), Status> {
        let cfg = self.configured().await?;
        if !cfg.is_first() {
            return Err(Status::failed_precondition(
                "RunShard goes to stage 0; this worker is a later stage",
            ));
        }
        let batch = task.batch.max(1) as usize;
        // A container shard's images are its samples, read whole up front.
        let (images, mut prefetched) = if task.container.is_empty() {
            (task.images, None)
        } else {
            let samples = self.read_container(&cfg, &task.container).await?;
            let refs = samples
                .iter()
                .map(|s| pb::ImageRef {
                    image_id: s.image_id.clone(),
                    label: s.label,
                })
                .collect();
            let bytes: Vec<_> = samples.into_iter().map(|s| s.image).collect();
            (refs, Some(bytes.into_iter()))
        };
        let chunks: Vec<&[pb::ImageRef]> = images.chunks(batch).collect();
        let header = pb::ShardHeader {
            shard: task.shard,
            attempt: task.attempt,
            images: images.len() as u32,
            batches: chunks.len() as u32,
        };
        let reference = cfg.config.reference_ann;
        if cfg.is_last() {
            let mut rows = Vec::with_capacity(images.len());
            for (i, chunk) in chunks.iter().enumerate() {
                self.metrics.batches_in_flight.inc();
                let (states, pixels) = self.load_batch(&cfg, chunk, &mut prefetched).await?;
                let out = self
                    .compute(&cfg, OwnedInput::Images(pixels), reference.then(Vec::new))
                    .await?;
                rows.extend(self.rows(&cfg, &header, states, out));
                self.metrics.batches_in_flight.dec();
                self.metrics.images.inc_by(chunk.len() as u64);
                send(&events, batch_done(i as u32, chunk.len() as u32)).await?;
            }
            let committed = self.commit(&cfg, &header, rows).await?;
            return send(&events, committed_event(committed)).await;
        }
        let mut client = self.connect(&cfg).await?;
        let window = (cfg.config.max_in_flight.max(1)) as usize;
        let (tx, rx) = mpsc::channel(window);
        let mut inbound = client
            .forward(ReceiverStream::new(rx))
            .await
            .map_err(|e| chain_error("the next stage", e))?
            .into_inner();
        let slots = Arc::new(Semaphore::new(window));
        let producer = async {
            for (i, chunk) in chunks.iter().enumerate() {
                slots
                    .acquire()
                    .await
                    .map_err(|e| internal("in-flight window", e))?
                    .forget();
                self.metrics.batches_in_flight.inc();
                let (states, pixels) = self.load_batch(&cfg, chunk, &mut prefetched).await?;
                let out = self
                    .compute(&cfg, OwnedInput::Images(pixels), reference.then(Vec::new))
                    .await?;
                let msg = self.batch_message((i == 0).then_some(header), i as u32, states, out);
                self.metrics.images.inc_by(chunk.len() as u64);
                self.metrics.batches_in_flight.dec();
                tx.send(msg)
                    .await
                    .map_err(|_| Status::unavailable("the next stage closed the stream"))?;
            }
            drop(tx);
            Ok::<(), Status>(())
        };
        let consumer = async {
            let mut committed = false;
            while let Some(ev) = inbound
                .message()
                .await
                .map_err(|e| chain_error("the next stage", e))?
            {
                if matches!(ev.event, Some(pb::shard_event::Event::BatchDone(_))) {
                    slots.add_permits(1);
                }
                committed |= matches!(ev.event, Some(pb::shard_event::Event::Committed(_)));
                send(&events, ev).await?;
            }
            if committed {
                Ok(())
            } else {
                Err(Status::aborted(
                    "the chain ended the shard without committing it",
                ))
            }
        };
        tokio::try_join!(producer, consumer)?;
        Ok(())
    }

    async fn next_batch(
        &self,
        inbound: &mut Streaming<pb::StageBatch>,
    ) -> Result<Option<pb::StageBatch>, Status> {
        let msg = inbound
            .message()
            .await
            .map_err(|e| chain_error("the previous stage", e))?;
        if let Some(m) = &msg {
            self.metrics.bytes_received.inc_by(m.encoded_len() as u64);
        }
        Ok(msg)
    }

    /// A later stage on one received batch: its index, image states and output.
    async fn process_batch(
        &self,
        cfg: &Arc<Configured>,
        msg: pb::StageBatch,
    ) -> Result<(u32, Vec<pb::ImageState>, Option<StageOutput>), Status> {
        self.metrics.batches_in_flight.inc();
        let ok = msg.images.iter().filter(|s| s.error.is_none()).count();
        let (spikes, ann) =
            wire::batch_from_wire(ok, msg.spikes, msg.ann, cfg.config.reference_ann)?;
        if ok > 0 && spikes.is_empty() && !cfg.stage.layout().receives.is_empty() {
            return Err(Status::invalid_argument(format!(
                "batch {} has {ok} images but no spikes",
                msg.batch_index
            )));
        }
        let out = self.compute(cfg, OwnedInput::Spikes(spikes), ann).await?;
        self.metrics.images.inc_by(msg.images.len() as u64);
        self.metrics.batches_in_flight.dec();
        Ok((msg.batch_index, msg.images, out))
    }

    /// A later stage's part of a shard.
    async fn forward(
        &self,
        mut inbound: Streaming<pb::StageBatch>,
        events: EventSender,
    ) -> Result<(), Status> {
        let cfg = self.configured().await?;
        if cfg.is_first() {
            return Err(Status::failed_precondition(
                "Forward goes to a later stage; this worker is stage 0",
            ));
        }
        let Some(first) = self.next_batch(&mut inbound).await? else {
            return Err(Status::invalid_argument("empty batch stream"));
        };
        let header = first
            .header
            .ok_or_else(|| Status::invalid_argument("the first batch carries no shard header"))?;
        let span = info_span!("shard", shard = header.shard, attempt = header.attempt);
        if cfg.is_last() {
            let mut rows = Vec::with_capacity(header.images as usize);
            let mut msg = Some(first);
            let mut batches = 0u32;
            while let Some(m) = msg {
                let (index, states, out) =
                    self.process_batch(&cfg, m).instrument(span.clone()).await?;
                let n = states.len() as u32;
                rows.extend(self.rows(&cfg, &header, states, out));
                batches += 1;
                send(&events, batch_done(index, n)).await?;
                msg = self.next_batch(&mut inbound).await?;
            }
            if batches != header.batches {
                return Err(Status::data_loss(format!(
                    "shard {}: received {batches} of {} batches",
                    header.shard, header.batches
                )));
            }
            let committed = self.commit(&cfg, &header, rows).instrument(span).await?;
            return send(&events, committed_event(committed)).await;
        }
        let mut client = self.connect(&cfg).await?;
        let (tx, rx) = mpsc::channel(cfg.config.max_in_flight.max(1) as usize);
        let mut downstream = client
            .forward(ReceiverStream::new(rx))
            .await
            .map_err(|e| chain_error("the next stage", e))?
            .into_inner();
        let producer = async {
            let mut msg = Some(first);
            let mut head = Some(header);
            while let Some(m) = msg {
                let (index, states, out) =
                    self.process_batch(&cfg, m).instrument(span.clone()).await?;
                let out_msg = self.batch_message(head.take(), index, states, out);
                tx.send(out_msg)
                    .await
                    .map_err(|_| Status::unavailable("the next stage closed the stream"))?;
                msg = self.next_batch(&mut inbound).await?;
            }
            drop(tx);
            Ok::<(), Status>(())
        };
        let relay = async {
            while let Some(ev) = downstream
                .message()
                .await
                .map_err(|e| chain_error("the next stage", e))?
            {
                send(&events, ev).await?;
            }
            Ok::<(), Status>(())
        };
        tokio::try_join!(producer, relay)?;
        Ok(())
    }
}

/// What a batch gives a stage's engine.
enum OwnedInput {
    Images(Vec<Vec<u8>>),
    Spikes(Vec<amos_snn::spike_codec::PackedSpikes>),
}

impl OwnedInput {
    fn is_empty(&self) -> bool {
        match self {
            OwnedInput::Images(i) => i.is_empty(),
            OwnedInput::Spikes(s) => s.is_empty(),
        }
    }
}

/// Adds a stage's per-image spike counts to the states of the images it evaluated.
fn add_stats(states: &mut [pb::ImageState], out: &StageOutput) {
    let evaluated = states.iter_mut().filter(|s| s.error.is_none());
    for (state, st) in evaluated.zip(&out.stats) {
        state.spikes += st.spikes;
        state.synops += st.synops;
        for (total, &u) in state.unit_spikes.iter_mut().zip(&st.unit_spikes) {
            *total += u;
        }
    }
}

fn batch_done(index: u32, images: u32) -> pb::ShardEvent {
    pb::ShardEvent {
        event: Some(pb::shard_event::Event::BatchDone(pb::BatchDone {
            batch_index: index,
            images,
        })),
    }
}

fn committed_event(c: pb::ShardCommitted) -> pb::ShardEvent {
    pb::ShardEvent {
        event: Some(pb::shard_event::Event::Committed(c)),
    }
}

async fn send(events: &EventSender, ev: pb::ShardEvent) -> Result<(), Status> {
    events
        .send(Ok(ev))
        .await
        .map_err(|_| Status::cancelled("the caller went away"))
}

/// A failure further down (or up) the chain, keeping its code.
fn chain_error(peer: &str, e: Status) -> Status {
    Status::new(e.code(), format!("{peer}: {}", e.message()))
}

#[tonic::async_trait]
impl StageRpc for StageService {
    async fn configure(
        &self,
        request: Request<pb::StageConfig>,
    ) -> Result<Response<pb::StageReady>, Status> {
        let config = request.into_inner();
        let cfg = self.load(config).await?;
        let ready = pb::StageReady {
            tensor_bytes: cfg.tensor_bytes,
            nodes: cfg.stage.layout().nodes.len() as u64,
            units: cfg.stage_units,
        };
        *self.state.lock().await = Some(Arc::new(cfg));
        self.health
            .set_serving::<pb::stage_server::StageServer<StageService>>()
            .await;
        Ok(Response::new(ready))
    }

    type RunShardStream = EventStream;

    async fn run_shard(
        &self,
        request: Request<pb::ShardTask>,
    ) -> Result<Response<Self::RunShardStream>, Status> {
        let task = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        let span = info_span!(
            "shard",
            shard = task.shard,
            attempt = task.attempt,
            stage = 0
        );
        tokio::spawn(
            async move {
                if let Err(status) = this.run_shard(task, tx.clone()).await {
                    tracing::warn!(%status, "shard failed");
                    let _ = tx.send(Err(status)).await;
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ForwardStream = EventStream;

    async fn forward(
        &self,
        request: Request<Streaming<pb::StageBatch>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(status) = this.forward(inbound, tx.clone()).await {
                tracing::warn!(%status, "shard failed");
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn shutdown(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        info!("shutdown requested");
        self.shutdown.notify_one();
        Ok(Response::new(pb::Empty {}))
    }
}
