#!/usr/bin/env bash
# STRONG against EVENTUAL searches on three nodes (issue 20, item 3).
#
# Three `shoal` nodes on loopback, one collection of N synthetic clustered 128-d
# points (default 50,000) in 3 shards × replication factor 3 (every node holds every
# shard; each leads about one). Searches through node 1 (`shoal bench --existing`,
# siftsmall's queries, ef 64, top 10: QPS and latency only, the recall column is
# meaningless here) with 1 and 16 clients, 5 s each, at EVENTUAL and then STRONG.
# All nodes and the client share this machine's cores.
#
# Usage: benches/strong.sh [--server-bin PATH] [N]
#   --server-bin: the nodes run this binary (e.g. an older build, for a before/after
#   in one run); the client is always this tree's release build.
# Results: stdout, and target/bench-strong/*.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER=""
if [ "${1:-}" = "--server-bin" ]; then SERVER=$(readlink -f "$2"); shift 2; fi
N=${1:-50000}
SIFT=../shared/data/siftsmall
cargo build --release -q -p shoal-cli
S=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
SERVER=${SERVER:-$S}
OUT=${CARGO_TARGET_DIR:-$PWD/target}/bench-strong
mkdir -p "$OUT"
W=$(mktemp -d)
PIDS=()
stop_all() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap 'stop_all; rm -rf "$W"' EXIT
PEERS="1=127.0.0.1:17671,2=127.0.0.1:17681,3=127.0.0.1:17691"
A=http://127.0.0.1:17670
PUB=(0 17670 17680 17690)
RAFT=(0 17671 17681 17691)
for i in 1 2 3; do
  "$SERVER" serve --node-id $i --listen 127.0.0.1:${PUB[$i]} --raft-listen 127.0.0.1:${RAFT[$i]} \
    --peers "$PEERS" --data-dir "$W/n$i" > "$W/n$i.out" 2>> "$W/n$i.log" &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 600); do grep -q "^listening on" "$W/n$i.out" 2>/dev/null && break; sleep 0.1; done
done
"$S" --addr $A bench --collection s --synthetic clustered --n "$N" --dim 128 \
  --shards 3 --replication-factor 3 --ef 64 --concurrency 1 --seconds 1 --n-queries 50 \
  --keep 2>&1 >/dev/null | grep "^ingested" || true
sleep 20   # followers apply, leaders settle
for consistency in eventual strong; do
  for clients in 1 16; do
    "$S" --addr $A bench --existing --collection s --queries $SIFT/siftsmall_query.fvecs \
      --ground-truth $SIFT/siftsmall_groundtruth.ivecs --ef 64 --concurrency $clients \
      --seconds 5 --consistency $consistency --out "$OUT/$consistency-$clients.csv" 2>/dev/null |
      awk -v l="$consistency, $clients clients" '$1 == "64" { printf "[%s] QPS %s, p50 %s ms, p99 %s ms\n", l, $4, $5, $7 }'
  done
done
