#!/usr/bin/env bash
# The project's test command (README "Test"; .ci/run runs exactly this).
# Installs the pinned Python packages the tests use as independent references (ONNX Runtime
# to generate operator fixtures), then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/requirements.txt
cargo test --workspace --locked
