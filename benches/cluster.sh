#!/usr/bin/env bash
# Replicated ingest and search through a cluster, beside a single node, on loopback:
#   1. one node, 3 shards (replication factor 1);
#   2. three nodes, 3 shards, replication factor 1 (each shard on one node);
#   3. three nodes, 3 shards, replication factor 3 (every node holds every shard).
# Each run is `shoal bench` against node 1: durable ingest (points/s) of N synthetic
# clustered 128-d points (default 50,000), then searches at ef 64 with 1 and 16
# clients for 5 s each. All nodes and the client share this machine's cores.
# Usage: benches/cluster.sh [N]     Results: target/bench-cluster/*.csv and stdout.
set -euo pipefail
N=${1:-50000}
cd "$(dirname "$0")/.."
cargo build --release -q -p shoal-cli
S=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
W=$(mktemp -d)
OUT=${CARGO_TARGET_DIR:-$PWD/target}/bench-cluster
mkdir -p "$OUT"
PIDS=()
stop_all() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap 'stop_all; rm -rf "$W"' EXIT
PEERS="1=127.0.0.1:17471,2=127.0.0.1:17481,3=127.0.0.1:17491"
start_node() { # id, public port, raft port, extra args...
  local id=$1 port=$2 raft=$3; shift 3
  "$S" serve --node-id "$id" --listen 127.0.0.1:"$port" --raft-listen 127.0.0.1:"$raft" \
    --data-dir "$W/$RUN/n$id" "$@" > "$W/$RUN-n$id.out" 2>> "$W/$RUN-n$id.log" &
  PIDS+=($!)
}
wait_up() { until grep -q "^listening on" "$W/$RUN-n$1.out" 2>/dev/null; do sleep 0.1; done; }
bench() { # label, replication factor
  "$S" --addr http://127.0.0.1:17470 bench --synthetic clustered --n "$N" --dim 128 \
    --shards 3 --replication-factor "$2" --ef 64 --concurrency 1,16 --seconds 5 \
    --n-queries 200 --out "$OUT/$1.csv" 2> "$W/$1.bench.log" \
    | sed "s/^/[$1] /"
}
RUN=single
start_node 1 17470 17471
wait_up 1
bench single-rf1 1
stop_all
for RF in 1 3; do
  RUN=cluster-rf$RF
  start_node 1 17470 17471 --peers "$PEERS"
  start_node 2 17480 17481 --peers "$PEERS"
  start_node 3 17490 17491 --peers "$PEERS"
  wait_up 1; wait_up 2; wait_up 3
  bench "cluster-rf$RF" "$RF"
  stop_all
done
echo "CSV reports in $OUT"
