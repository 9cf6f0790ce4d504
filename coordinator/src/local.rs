//! Local mode: the workers of a run as separate processes on this machine, on loopback
//! ports of their own choosing, shut down when the run ends (also on Ctrl-C).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use amos_worker::LISTENING;
use amos_worker::security::Security;

/// Worker processes, killed when dropped.
pub struct LocalWorkers {
    children: Vec<Child>,
    pub addresses: Vec<String>,
    /// The token the workers require: a fresh random one per run, so nothing else on the
    /// machine can drive them.
    pub security: Security,
}

/// 128 random bits from the operating system, as hex.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the workers' token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The `amos-worker` binary: `$AMOS_WORKER_BIN`, else beside this executable.
pub fn worker_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("AMOS_WORKER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating amos-coordinator")?;
    let dir = exe
        .parent()
        .context("amos-coordinator has no parent folder")?;
    // Test binaries live in target/<profile>/deps, the workers one level up.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join(format!("amos-worker{}", std::env::consts::EXE_SUFFIX));
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "amos-worker not found beside {} (build it, or set AMOS_WORKER_BIN)",
        exe.display()
    )
}

impl LocalWorkers {
    /// Starts `count` workers on 127.0.0.1 with free ports and waits until each listens.
    pub async fn start(count: usize, log_level: &str) -> anyhow::Result<LocalWorkers> {
        let bin = worker_binary()?;
        let token = random_token()?;
        let mut workers = LocalWorkers {
            children: Vec::with_capacity(count),
            addresses: Vec::with_capacity(count),
            security: Security::with_token(token.clone()),
        };
        for i in 0..count {
            let mut child = Command::new(&bin)
                .args(["--listen", "127.0.0.1:0"])
                .env("RUST_LOG", log_level)
                .env(amos_worker::security::TOKEN_ENV, &token)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let stdout = child.stdout.take().context("worker stdout")?;
            workers.children.push(child);
            let mut lines = BufReader::new(stdout).lines();
            let addr = tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(line) = lines.next_line().await? {
                    if let Some(a) = line.strip_prefix(LISTENING) {
                        return Ok::<_, std::io::Error>(Some(a.trim().to_string()));
                    }
                }
                Ok(None)
            })
            .await
            .with_context(|| format!("worker {i} did not start listening within 30 s"))?
            .with_context(|| format!("reading worker {i}'s output"))?
            .with_context(|| format!("worker {i} exited before listening"))?;
            // Keep draining stdout so the worker never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            workers.addresses.push(format!("http://{addr}"));
        }
        Ok(workers)
    }

    /// Asks every worker to stop, waits a little, then kills what is left.
    pub async fn shutdown(mut self) {
        for addr in &self.addresses {
            let stopped = async {
                let channel = self.security.connect(addr, Duration::from_secs(2)).await?;
                let mut c = amos_proto::pipeline::stage_client::StageClient::new(channel);
                c.shutdown(amos_proto::pipeline::Empty {}).await?;
                Ok::<(), anyhow::Error>(())
            };
            if let Err(e) = stopped.await {
                tracing::warn!(worker = %addr, error = %format!("{e:#}"), "could not ask the worker to stop");
            }
        }
        for child in &mut self.children {
            match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill().await;
                }
            }
        }
    }

    /// Process ids of the workers (for fault-injection tests).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.children.iter().map(Child::id).collect()
    }
}
