//! Prometheus metrics of a worker, served as text at `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What a worker counts.
pub struct Metrics {
    registry: Registry,
    /// Images this stage ran (evaluated or passed on with an error).
    pub images: Counter,
    /// Batches this stage holds (received or read, not yet sent on or written).
    pub batches_in_flight: Gauge,
    /// Seconds spent computing batches.
    pub busy_seconds: Counter<f64, AtomicU64>,
    /// Bytes of packed spikes (and reference tensors) sent to and received from other stages.
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    /// Spike bytes sent per image per boundary, summed over images (divide by `images`).
    pub spike_bytes_sent: Counter,
    /// Shards this worker committed (last stage).
    pub shards_committed: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut m = Metrics {
            registry: Registry::with_prefix("amos_worker"),
            images: Counter::default(),
            batches_in_flight: Gauge::default(),
            busy_seconds: Counter::default(),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            spike_bytes_sent: Counter::default(),
            shards_committed: Counter::default(),
        };
        m.registry
            .register("images", "Images processed by this stage", m.images.clone());
        m.registry.register(
            "batches_in_flight",
            "Batches held by this stage",
            m.batches_in_flight.clone(),
        );
        m.registry.register(
            "stage_busy_seconds",
            "Seconds spent computing batches",
            m.busy_seconds.clone(),
        );
        m.registry.register(
            "bytes_sent",
            "Bytes sent to the next stage",
            m.bytes_sent.clone(),
        );
        m.registry.register(
            "bytes_received",
            "Bytes received from the previous stage",
            m.bytes_received.clone(),
        );
        m.registry.register(
            "spike_bytes_sent",
            "Bytes of packed spike tensors sent to the next stage",
            m.spike_bytes_sent.clone(),
        );
        m.registry.register(
            "shards_committed",
            "Shards written by this stage",
            m.shards_committed.clone(),
        );
        Arc::new(m)
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `render()` at `/metrics` on `listener` until the process ends.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(),
                )
            }
        }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}
