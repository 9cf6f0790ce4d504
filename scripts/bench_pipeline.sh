#!/usr/bin/env bash
# Pipeline efficiency: the same images through single-process `amos-convert eval` (SNN mode,
# 2 threads), local mode with 2 stages of 1 thread each, and local mode with 2 chains x 1
# stage of 1 thread each. Prints images/s of each and the ratios.
#
#   bash scripts/bench_pipeline.sh [MODEL.amos] [DATA] [IMAGES] [BATCH] [SHARD_SIZE]
#
# Defaults: EfficientNet-Lite0 converted from ../shared (K=10), the shared ImageNet photos,
# 512 images, batch 16, shards of 64 images.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p amos-converter -p amos-worker -p amos-coordinator
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=${1:-}
if [ -z "$model" ]; then
  model=$work/lite0.amos
  $bin/amos-convert convert ../shared/models/efficientnet_lite0.onnx -o "$model" \
    --preset efficientnet-lite > /dev/null
fi
data=${2:-../shared/data/imagenet-sample}
images=${3:-512}
batch=${4:-16}
shard=${5:-64}

# Warm the page cache.
$bin/amos-convert eval "$model" --data "$data" --limit "$batch" --mode snn > /dev/null

seconds() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

single_s=$($bin/amos-convert eval "$model" --data "$data" --limit "$images" --mode snn \
  --batch "$batch" --threads 2 --json | seconds seconds)
single=$(python3 -c "print($images / $single_s)")

run_local() {
  $bin/amos-coordinator local --model "$model" --data "$data" --out "$work/out-$1x$2" \
    --stages "$1" --chains "$2" --threads 1 --limit "$images" --batch "$batch" \
    --shard-size "$shard" --quiet --json | seconds images_per_second
}
stages2=$(run_local 2 1)
chains2=$(run_local 1 2)

python3 - "$single" "$stages2" "$chains2" "$images" "$batch" "$shard" <<'PY'
import sys
single, stages2, chains2 = map(float, sys.argv[1:4])
images, batch, shard = map(int, sys.argv[4:7])
batches = -(-shard // batch)
print(f"images {images}, batch {batch}, shards of {shard} images ({batches} batches), 2 shards per chain at once")
print(f"single process, 2 threads      {single:8.1f} images/s")
print(f"2 stages x 1 chain, 1 thread   {stages2:8.1f} images/s   {stages2 / single:.2f}x single")
print(f"1 stage x 2 chains, 1 thread   {chains2:8.1f} images/s   {chains2 / single:.2f}x single")
print(f"fill/drain bubble of a 2-stage chain: one batch time at the start and at the end of "
      f"the run ({100 / (images / batch + 1):.1f}% here); between shards none, since a chain "
      f"starts its next shard while the last one drains (one shard alone: 1/({batches}+1) = "
      f"{100 / (batches + 1):.1f}%)")
PY
