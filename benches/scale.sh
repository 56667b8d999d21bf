#!/usr/bin/env bash
# One node at scale: memory per vector and restart time against build time.
#
#   1. starts a node and runs `shoal bench` on a seeded clustered set of N 128-d points
#      (default 1,000,000) in SHARDS shards (default 2: one per core here), M=16,
#      ef_construction=200, every Upsert fsynced; its report gives the ingest time
#      (the index is built as the points arrive, so that is the build time) and
#      QPS / recall at a few ef values;
#   2. reads the node's VmRSS and data directory size: bytes per vector;
#   3. times how long the node takes to answer a search again after
#      a. kill -9 (index checkpoints on disk, reconciled with storage),
#      b. a graceful stop (final checkpoint),
#      c. kill -9 with the checkpoints deleted (full graph rebuild; skip with
#         REBUILD=0);
#      "answers" = a `shoal search` of the collection succeeds and `shoal count` is N.
#
# Usage: benches/scale.sh [N] [SHARDS]   (builds the release binary; needs ~3 GB of
# disk and memory at 1M; about 10 minutes at 1M on 2 cores). Honours CARGO_TARGET_DIR;
# SHOAL_BIN=path runs that binary instead of building one.
set -euo pipefail
N=${1:-1000000}
SHARDS=${2:-2}
REBUILD=${REBUILD:-1}
cd "$(dirname "$0")/.."
if [ -n "${SHOAL_BIN:-}" ]; then
  S=$SHOAL_BIN
else
  cargo build --release -q -p shoal-cli
  S=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
fi
W=$(mktemp -d)
PORT=7599
RAFT=7598
trap 'pkill -9 -f "serve --listen 127.0.0.1:$PORT" || true; rm -rf "$W"' EXIT
export SHOAL_ADDR=http://127.0.0.1:$PORT
Q=$(python3 -c "print(','.join(['0.1'] * 128))")

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
pid() { pgrep -f "serve --listen 127.0.0.1:$PORT"; }
start() {
  "$S" serve --listen 127.0.0.1:$PORT --raft-listen 127.0.0.1:$RAFT --data-dir "$W/node" \
    >> "$W/out" 2>> "$W/log" &
}
# Seconds from start until the collection answers a search and counts N points.
serve_time() {
  local t0; t0=$(now)
  start
  until "$S" search scale --vector "$Q" --top-k 10 > /dev/null 2>&1 \
        && [ "$("$S" count scale 2> /dev/null)" = "$N" ]; do
    sleep 0.1
  done
  since "$t0"
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$(pid)/status"; }

start
until grep -q "^listening on" "$W/out" 2> /dev/null; do sleep 0.05; done
echo "== ingest + search: $N clustered 128-d points, $SHARDS shards"
"$S" bench --collection scale --synthetic clustered --n "$N" --dim 128 --shards "$SHARDS" \
  --ef 32,64,128 --concurrency 1,16 --seconds 5 --keep --out "$W/bench.json"
BUILD=$(python3 -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['ingest_seconds']:.1f}\")" "$W/bench.json")
sleep 2
R=$(rss_kib)
echo "== memory after ingest: VmRSS $((R / 1024)) MiB = $((R * 1024 / N)) B per vector" \
     "(raw vector 512 B); data directory $(du -sm "$W/node" | cut -f1) MiB"
echo "== restart (build: ingest took $BUILD s)"
pkill -9 -f "serve --listen 127.0.0.1:$PORT"; sleep 0.5
echo "after kill -9 (checkpoints + reconcile): $(serve_time) s"
R=$(rss_kib)
echo "   VmRSS once serving: $((R / 1024)) MiB = $((R * 1024 / N)) B per vector"
pkill -TERM -f "serve --listen 127.0.0.1:$PORT"; while pid > /dev/null; do sleep 0.1; done
echo "after a graceful stop:                  $(serve_time) s"
if [ "$REBUILD" != 0 ]; then
  pkill -9 -f "serve --listen 127.0.0.1:$PORT"; sleep 0.5
  rm -rf "$W/node/index"
  echo "after kill -9 without checkpoints:      $(serve_time) s (full rebuild)"
fi
