#!/usr/bin/env bash
# Bounded fuzzing of the three parsers that take untrusted bytes (fuzz/README.md):
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets: onnx_import, model_file, spike_batch (default: all, 300 s each). Builds the
# targets with cargo fuzz (installed if missing), writes a seed corpus of valid inputs, runs
# each target for the given time, and exits non-zero if any crashed; crashing inputs land in
# fuzz/artifacts/<target>/. Fix the bug, then copy the input to fuzz/regressions/<target>/,
# where `cargo test` replays it (worker/tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(onnx_import model_file spike_batch)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
# cargo fuzz passes -Z flags to rustc; this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}

python3 -c 'import onnx' 2>/dev/null || pip install -q -r tests/requirements.txt
python3 tests/opmodels/gen_op_models.py fuzz/target/opmodels >/dev/null

cd fuzz
cargo fuzz build --sanitizer "$sanitizer" --release
bin=target/x86_64-unknown-linux-gnu/release
"$bin/seeds" target/opmodels corpus

failed=()
for t in "${targets[@]}"; do
    echo "== $t: ${secs}s"
    mkdir -p "artifacts/$t"
    if ! "$bin/$t" "corpus/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::peak_rss|==[0-9]+== ERROR|SUMMARY|thread .* panicked|.*panicked at)'; then
        :
    fi
    if [ "${PIPESTATUS[0]}" -ne 0 ] || compgen -G "artifacts/$t/crash-*" >/dev/null; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes in ${targets[*]} (${secs}s each)"
