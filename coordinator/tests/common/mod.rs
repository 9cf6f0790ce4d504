//! Helpers shared by the end-to-end tests: binaries, processes, ports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `../shared` beside the repository.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// A fresh, empty path under the test target folder.
pub fn tmp(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// A binary of another workspace package, built beside this one.
pub fn sibling(name: &str) -> PathBuf {
    let me = Path::new(env!("CARGO_BIN_EXE_amos-coordinator"));
    let p = me.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.is_file(),
        "{} is missing: build it first: `cargo build --workspace --bins` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `Command` for `amos-worker --listen 127.0.0.1:0`; add flags and environment, then
/// [`start_worker`].
pub fn worker_command() -> Command {
    let mut c = Command::new(sibling("amos-worker"));
    c.args(["--listen", "127.0.0.1:0"]);
    c
}

/// Starts a worker and returns it with the address it listens on.
pub fn start_worker(mut cmd: Command) -> (Guard, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start amos-worker");
    let stdout = child.stdout.take().expect("worker stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("worker prints its address");
    let addr = line
        .trim()
        .strip_prefix(amos_worker::LISTENING)
        .unwrap_or_else(|| panic!("unexpected worker output {line:?}"))
        .to_string();
    (Guard(child), addr)
}
