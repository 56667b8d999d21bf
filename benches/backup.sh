#!/usr/bin/env bash
# Backup and restore on loopback: time and size of a backup of N points (default
# 200,000 synthetic clustered 128-d points, 3 shards x 2 replicas on three nodes),
# search QPS while it runs as a ratio of before, and restore times.
#   1. Three nodes; `shoal bench` ingests the collection, then 30 s to settle.
#   2. Searches (`shoal bench --existing`, 4 clients, ef 64, 3 s rounds) before, and
#      during `shoal backup create` (rounds repeat until the backup is written).
#   3. `shoal backup download` (the tar archive), then `shoal backup restore` of it
#      by name into the same cluster under a new name, and into a fresh single node.
# All processes share this machine's cores. Usage: benches/backup.sh [N]
set -euo pipefail
N=${1:-200000}
cd "$(dirname "$0")/.."
SIFT=../shared/data/siftsmall
cargo build --release -q -p shoal-cli
S=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
OUT=${CARGO_TARGET_DIR:-$PWD/target}/bench-backup
mkdir -p "$OUT"
W=$(mktemp -d)
PIDS=()
stop_all() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap 'stop_all; rm -rf "$W"' EXIT
PEERS="1=127.0.0.1:17471,2=127.0.0.1:17481,3=127.0.0.1:17491"
A=http://127.0.0.1:17470
PUB=(0 17470 17480 17490)
RAFT=(0 17471 17481 17491)
for i in 1 2 3; do
  "$S" serve --node-id $i --listen 127.0.0.1:${PUB[$i]} --raft-listen 127.0.0.1:${RAFT[$i]} \
    --peers "$PEERS" --data-dir "$W/n$i" > "$W/n$i.out" 2>> "$W/n$i.log" &
  PIDS+=($!)
done
for i in 1 2 3; do until grep -q "^listening on" "$W/n$i.out" 2>/dev/null; do sleep 0.1; done; done
COLL=backedup
"$S" --addr $A bench --collection $COLL --synthetic clustered --n "$N" --dim 128 \
  --shards 3 --replication-factor 2 --ef 64 --concurrency 1 --seconds 1 --n-queries 50 \
  --keep 2>&1 >/dev/null | grep "^ingested" || true
sleep 30
searches() { # label
  "$S" --addr $A bench --existing --collection $COLL --queries $SIFT/siftsmall_query.fvecs \
    --ground-truth $SIFT/siftsmall_groundtruth.ivecs --ef 64 --concurrency 4 --seconds 3 \
    --out "$OUT/$1.csv" 2>/dev/null \
    | awk -v l="$1" '$1 == "64" { printf "[%s] QPS %s, p99 %s ms\n", l, $4, $7 }'
}
searches before-1
searches before-2
( for r in $(seq 1 40); do [ -e "$W/done" ] && break; searches during-$r; done ) & SEARCHER=$!
sleep 1
t0=$(date +%s.%N)
"$S" --addr $A backup create $COLL --name b1
t1=$(date +%s.%N)
touch "$W/done"; wait $SEARCHER || true
python3 -c "print(f'backup of {$N} points: {$t1 - $t0:.1f} s')"
du -sh "$W/n1/backups/b1"
searches after
t0=$(date +%s.%N)
"$S" --addr $A backup download b1 --out "$W/b1.tar" 2>/dev/null
t1=$(date +%s.%N)
python3 -c "print(f'download: {$t1 - $t0:.1f} s, $(stat -c %s "$W/b1.tar") bytes')"
t0=$(date +%s.%N)
"$S" --addr $A backup restore --name b1 --as restored 2>/dev/null
t1=$(date +%s.%N)
python3 -c "print(f'restore by name into the same three nodes, as a new collection: {$t1 - $t0:.1f} s')"
stop_all
"$S" serve --listen 127.0.0.1:17500 --raft-listen 127.0.0.1:17501 --data-dir "$W/single" \
  > "$W/single.out" 2>> "$W/single.log" &
PIDS+=($!)
until grep -q "^listening on" "$W/single.out" 2>/dev/null; do sleep 0.1; done
t0=$(date +%s.%N)
"$S" --addr http://127.0.0.1:17500 backup restore "$W/b1.tar" 2>/dev/null
t1=$(date +%s.%N)
python3 -c "print(f'restore into a fresh single node (upload included): {$t1 - $t0:.1f} s')"
"$S" --addr http://127.0.0.1:17500 count $COLL --consistency strong
echo "CSV reports in $OUT"
