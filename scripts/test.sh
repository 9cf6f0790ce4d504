#!/usr/bin/env bash
# The project's test command (README "Test"; .ci/run runs exactly this).
# Installs the pinned Python packages the tests use as independent references (ONNX Runtime
# to generate operator fixtures), then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/requirements.txt
# A from-scratch build gains nothing from incremental state (1.6 GB of it in a clean test build).
export CARGO_INCREMENTAL=0
# The end-to-end tests start the binaries of other packages (amos-worker, amos-convert):
# testing the whole workspace builds every package's binaries before any test runs, with the
# same dependency features as the tests (a separate `cargo build --bins` first would build
# some twenty dependencies twice, their features differing without the dev-dependencies).
cargo test --workspace --locked
