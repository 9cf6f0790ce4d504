//! One stage of an amos evaluation chain, served over gRPC (ARCHITECTURE.md §1).
//!
//! A worker starts unconfigured; the coordinator tells it which stage of which chain it is
//! (`Stage.Configure`), and it loads only that stage's part of the model file by ranged
//! reads. See [`service`] for how shards flow through a chain.

pub mod metrics;
pub mod security;
pub mod service;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use amos_proto::pipeline::stage_server::StageServer;
use tokio::sync::Notify;

/// The line a worker prints on stdout, followed by its address, once it listens (so that
/// a parent that asked for port 0 learns the port).
pub const LISTENING: &str = "amos-worker listening on ";

/// Default cap on one gRPC message (a batch of spikes, or of reference ANN tensors).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 512 << 20;

/// How a worker serves.
pub struct WorkerOptions {
    pub listen: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// A plaintext port serving only `grpc.health.v1` (for probes when gRPC runs over TLS).
    pub health: Option<SocketAddr>,
    pub max_message_bytes: usize,
    pub security: security::Security,
}

/// Serves the `Stage` service (and `grpc.health.v1`) until `Shutdown` is called or the
/// process gets Ctrl-C / SIGTERM.
pub async fn serve(options: WorkerOptions) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::new();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<StageServer<service::StageService>>()
        .await;
    let shutdown = Arc::new(Notify::new());
    let service = service::StageService::new(
        metrics.clone(),
        health,
        shutdown.clone(),
        options.max_message_bytes,
        options.security.clone(),
    );
    if let Some(addr) = options.health {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let health_only = health_service.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_only)
                .serve_with_incoming(incoming),
        );
    }
    if let Some(addr) = options.metrics {
        let m = metrics.clone();
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tokio::spawn(metrics::serve_on(listener, Arc::new(move || m.render())));
    }
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{LISTENING}{addr}")?;
        stdout.flush()?;
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.security.server_tls() {
        builder = builder.tls_config(tls)?;
    }
    let stage = StageServer::new(service)
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    // On Shutdown or a signal, stop accepting work and give open connections a moment to
    // finish; peers that keep idle connections open must not hold the process.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut graceful_rx = stop_rx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.notified() => {}
            _ = shutdown_signal() => {}
        }
        let _ = stop_tx.send(true);
    });
    let server = builder
        .add_service(health_service)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            stage,
            options.security.check(),
        ))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = graceful_rx.wait_for(|&stop| stop).await;
        });
    tokio::select! {
        r = server => r?,
        _ = async {
            let _ = stop_rx.wait_for(|&stop| stop).await;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        } => {}
    }
    tracing::info!("amos-worker stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
