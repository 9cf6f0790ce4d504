#!/usr/bin/env bash
# Soak test: 2 chains × 2 stages over the 2000 shared CIFAR-10 images (swish/SE model),
# with a random worker SIGKILLed every few seconds and restarted on its port. Prints
# images/s and asserts that no image is lost or duplicated.
#
#   bash scripts/soak.sh [KILL_EVERY_SECONDS=4] [IMAGES=2000]
set -euo pipefail
cd "$(dirname "$0")/.."
every=${1:-4}
images=${2:-2000}
cargo build --release --quiet -p amos-converter -p amos-worker -p amos-coordinator
bin=$PWD/target/release
work=$(mktemp -d)
ports=()
data=../shared/data/cifar10-test2000
cleanup() {
  kill "$killer" 2>/dev/null || true
  for p in "${ports[@]}"; do pkill -9 -f "amos-worker --listen 127.0.0.1:$p" 2>/dev/null || true; done
  rm -rf "$work"
}
killer=
trap cleanup EXIT

$bin/amos-convert convert ../shared/models/cifar10_swish_se.onnx -o "$work/model.amos" \
  --preset cifar --calibration "$data" --calibration-images 256 > /dev/null

for i in 0 1 2 3; do
  ports+=($(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'))
done
start_worker() { # index
  $bin/amos-worker --listen "127.0.0.1:${ports[$1]}" > /dev/null 2>&1 &
  disown
}
for i in 0 1 2 3; do start_worker $i; done
workers=$(printf '127.0.0.1:%s,' "${ports[@]}"); workers=${workers%,}

# The killer: every few seconds a random worker dies and comes back.
(
  kills=0
  while sleep "$every"; do
    i=$((RANDOM % 4))
    pid=$(pgrep -f "amos-worker --listen 127.0.0.1:${ports[$i]}" || true)
    [ -n "$pid" ] && kill -9 $pid && kills=$((kills + 1))
    $bin/amos-worker --listen "127.0.0.1:${ports[$i]}" > /dev/null 2>&1 &
    echo "$kills" > "$work/kills"
  done
) &
killer=$!

start=$(date +%s.%N)
$bin/amos-coordinator run --model "$work/model.amos" --data "$data" --out "$work/out" \
  --workers "$workers" --stages 2 --limit "$images" --shard-size 50 --batch 10 \
  --threads 1 --max-attempts 50 --retire-after 1000 --stall-timeout-s 20 \
  --connect-timeout-s 30 --quiet --json > "$work/outcome.json"
end=$(date +%s.%N)
kill "$killer" 2>/dev/null || true

python3 - "$work" "$images" "$start" "$end" <<'PY'
import json, sys, pyarrow.parquet as pq
work, images, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
outcome = json.load(open(f"{work}/outcome.json"))
t = pq.read_table(f"{work}/out/shards")
ids = t["image_id"].to_pylist()
kills = open(f"{work}/kills").read().strip() if __import__("os").path.exists(f"{work}/kills") else "0"
lost, dup = images - len(set(ids)), len(ids) - len(set(ids))
print(f"images {len(set(ids))}/{images}, workers killed {kills}, shard retries {outcome['retries']}, "
      f"{images / (end - start):.1f} images/s over {end - start:.0f} s")
print(f"lost rows {lost}, duplicated rows {dup}, failed shards {len(outcome['failed'])}")
assert lost == 0 and dup == 0 and not outcome["failed"], "soak failed"
print("soak passed")
PY
