//! The coordinator's control plane over gRPC: `Status` for operators, `Register` for
//! workers that announce themselves; and its Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use amos_proto::pipeline as pb;
use amos_proto::pipeline::coordinator_server::Coordinator;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::run::RunState;

/// Serves the run's state.
pub struct ControlPlane {
    pub state: Arc<RunState>,
    pub run_id: String,
    pub chains: u32,
    pub stages: u32,
    pub started: Instant,
    /// Addresses of workers that registered.
    pub registered: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Coordinator for ControlPlane {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let r = request.into_inner();
        if r.address.is_empty() {
            return Err(Status::invalid_argument(
                "a worker registers with its address",
            ));
        }
        let mut list = self.registered.lock().await;
        if !list.contains(&r.address) {
            tracing::info!(address = %r.address, name = %r.name, "worker registered");
            list.push(r.address);
        }
        Ok(Response::new(pb::RegisterReply {
            registered: list.len() as u32,
        }))
    }

    async fn status(&self, _: Request<pb::Empty>) -> Result<Response<pb::RunStatus>, Status> {
        let s = &self.state;
        let done = s.images_done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        Ok(Response::new(pb::RunStatus {
            run_id: self.run_id.clone(),
            images_total: s.images_total.load(Ordering::Relaxed),
            images_done: done,
            shards_total: s.shards_total.load(Ordering::Relaxed) as u32,
            shards_done: s.shards_done.load(Ordering::Relaxed) as u32,
            shards_failed: s.shards_failed.load(Ordering::Relaxed) as u32,
            chains: self.chains,
            stages: self.stages,
            images_per_second: if secs > 0.0 { done as f64 / secs } else { 0.0 },
        }))
    }
}

/// The run's counters in the Prometheus text format.
pub fn render_metrics(state: &RunState) -> String {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    let mut registry = Registry::with_prefix("amos_coordinator");
    let mut add = |name: &str, help: &str, v: u64| {
        let g: Gauge = Gauge::default();
        g.set(v as i64);
        registry.register(name, help, g);
    };
    add(
        "images_total",
        "Images to run",
        state.images_total.load(Ordering::Relaxed),
    );
    add(
        "images_done",
        "Images through the chains",
        state.images_done.load(Ordering::Relaxed),
    );
    add(
        "shards_total",
        "Shards of the dataset",
        state.shards_total.load(Ordering::Relaxed),
    );
    add(
        "shards_done",
        "Shards committed",
        state.shards_done.load(Ordering::Relaxed),
    );
    add(
        "shards_failed",
        "Shards given up",
        state.shards_failed.load(Ordering::Relaxed),
    );
    add(
        "shard_retries",
        "Shard attempts that failed and were retried",
        state.shard_retries.load(Ordering::Relaxed),
    );
    let mut out = String::new();
    let _ = encode(&mut out, &registry);
    out
}
