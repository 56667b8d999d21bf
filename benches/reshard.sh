#!/usr/bin/env bash
# Online resharding on loopback: the time to split one shard of N points into four
# (default 200,000 synthetic clustered 128-d points, replication factor 3 on three
# nodes), and what writes and searches see meanwhile.
#   1. Three nodes; `shoal bench` ingests the collection (1 shard x 3 replicas), then
#      waits 60 s for index checkpoints and followers to settle.
#   2. A writer (the Python client: one upsert of 10 new points at a time, 30 s
#      client timeout, no retries of its own) and searches (`shoal bench --existing`,
#      4 clients, ef 64, 5 s rounds) run before, during and after
#      `shoal collection reshard --shards 4 --wait`.
#   3. Reported: the reshard's duration, writes acknowledged and failed, the longest
#      write latency (the stall) before and during, and search QPS and p99 per round.
# All processes share this machine's cores. Usage: benches/reshard.sh [N]
#   RESHARD_LOGS=DIR keeps the nodes' logs there.
# Results: stdout, and target/bench-reshard/*.csv.
set -euo pipefail
N=${1:-200000}
cd "$(dirname "$0")/.."
SIFT=../shared/data/siftsmall
cargo build --release -q -p shoal-cli
S=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
OUT=${CARGO_TARGET_DIR:-$PWD/target}/bench-reshard
mkdir -p "$OUT"
# The writer uses the Python client (clients/python), in its own venv.
VENV=${SHOAL_PY_VENV:-$PWD/clients/python/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip -q install -c clients/python/constraints.txt ./clients/python
fi
W=$(mktemp -d)
PIDS=()
stop_all() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
keep_logs() { if [ -n "${RESHARD_LOGS:-}" ]; then mkdir -p "$RESHARD_LOGS"; cp "$W"/n*.log "$RESHARD_LOGS"/ 2>/dev/null || true; fi; }
trap 'stop_all; keep_logs; rm -rf "$W"' EXIT
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
COLL=resharded
"$S" --addr $A bench --collection $COLL --synthetic clustered --n "$N" --dim 128 \
  --shards 1 --replication-factor 3 --ef 64 --concurrency 1 --seconds 1 --n-queries 50 \
  --keep 2>&1 >/dev/null | grep "^ingested" || true
sleep 60
searches() { # label
  "$S" --addr $A bench --existing --collection $COLL --queries $SIFT/siftsmall_query.fvecs \
    --ground-truth $SIFT/siftsmall_groundtruth.ivecs --ef 64 --concurrency 4 --seconds 5 \
    --out "$OUT/$1.csv" 2>/dev/null | awk -v l="$1" '$1 == "64" { printf "[%s] QPS %s, p99 %s ms\n", l, $4, $7 }'
}
# The writer: until $W/stop exists (at most 20 min), one upsert of 10 new points at a
# time through node 2; one line per write: start time, latency, ok.
cat > "$W/writer.py" <<'PY'
import os, sys, time
import numpy as np
import shoal
stop, out = sys.argv[1], open(sys.argv[2], "w")
c = shoal.Client("127.0.0.1:17480", timeout=30, retry=0)
rng = np.random.default_rng(7)
next_id, t_end = 10_000_000, time.monotonic() + 1200
while not os.path.exists(stop) and time.monotonic() < t_end:
    ids = list(range(next_id, next_id + 10)); next_id += 10
    t0 = time.monotonic()
    try:
        c.upsert("resharded", ids=ids, vectors=rng.random((10, 128), dtype=np.float32))
        ok = 1
    except shoal.ShoalError as e:
        ok = 0
        print("write failed:", e, file=sys.stderr)
    out.write(f"{time.time():.3f} {time.monotonic() - t0:.4f} {ok}\n"); out.flush()
    time.sleep(0.01)
PY
summary() { # label, file: writes, failures, median and longest latency
  python3 - "$1" "$2" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
lat = sorted(float(r[1]) for r in rows)
fails = sum(1 for r in rows if r[2] == "0")
if lat:
    print(f"[{sys.argv[1]}] {len(rows)} writes, {fails} failed; latency median "
          f"{lat[len(lat)//2]*1000:.0f} ms, longest {lat[-1]*1000:.0f} ms")
PY
}
rm -f "$W/stop"
"$VENV/bin/python" "$W/writer.py" "$W/stop" "$W/writes-before.txt" & WRITER=$!
searches before-1
searches before-2
touch "$W/stop"; wait $WRITER; rm -f "$W/stop"
summary writes-before "$W/writes-before.txt"
"$VENV/bin/python" "$W/writer.py" "$W/stop" "$W/writes-during.txt" & WRITER=$!
( for r in $(seq 1 60); do [ -e "$W/stop" ] && break; searches during-$r; done ) & SEARCHER=$!
sleep 2
t0=$(date +%s.%N)
"$S" --addr $A collection reshard $COLL --shards 4 --wait
t1=$(date +%s.%N)
touch "$W/stop"; wait $WRITER; wait $SEARCHER || true
python3 -c "print(f'reshard 1 -> 4 shards of {$N} points: {$t1 - $t0:.1f} s (collection polled every 0.5 s)')"
summary writes-during "$W/writes-during.txt"
grep -h "opened a split's child" "$W"/n*.log | sed 's/\x1b\[[0-9;]*m//g' | awk '{for(i=1;i<=NF;i++) if ($i ~ /^(shard|points|ms)=/) printf "%s ", $i; print ""}' | sort | uniq -c | head -20
# Each split's seal and end (the metadata leader's operator), the graph rebuilds
# (compactions) and checkpoints, in seconds.
grep -h "sealed the shard\|into shards .*: done" "$W"/n*.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160 || true
grep -h "index rebuilt" "$W"/n*.log | sed 's/\x1b\[[0-9;]*m//g' | grep -o "points=[0-9]* secs=[0-9.]*" | sort | uniq -c || true
grep -h "index checkpoint saved" "$W"/n*.log | sed 's/\x1b\[[0-9;]*m//g' | grep -o "points=[0-9]* secs=[0-9.]*" | awk '{print}' | sort | uniq -c | sort -rn | head -12 || true
searches after
"$S" --addr $A count $COLL --consistency strong || true
echo "CSV reports in $OUT"
