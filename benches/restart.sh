#!/usr/bin/env bash
# Restart-time benchmark: imports N synthetic 128-d points (default 200,000) into a
# 2-shard collection, then times how long a node takes to serve again after
#   1. kill -9 (index checkpoints on disk, reconciled with storage),
#   2. a graceful stop (final checkpoint),
#   3. kill -9 with the checkpoints deleted (full graph rebuild).
# Usage: benches/restart.sh [N]   (needs python3; builds the release binary)
set -euo pipefail
N=${1:-200000}
cd "$(dirname "$0")/.."
cargo build --release -q -p shoal-cli
S=$PWD/target/release/shoal
W=$(mktemp -d)
trap 'pkill -f "serve --listen 127.0.0.1:7599" || true; rm -rf "$W"' EXIT
export SHOAL_ADDR=http://127.0.0.1:7599
python3 - "$N" "$W/data.fvecs" <<'PY'
import array, random, struct, sys
n, path = int(sys.argv[1]), sys.argv[2]
random.seed(7)
with open(path, 'wb') as f:
    for i in range(n):
        c = i % 100
        v = array.array('f', [((c * 37 + j * 11) % 97) / 97.0 + random.gauss(0, 0.05) for j in range(128)])
        f.write(struct.pack('<i', 128)); f.write(v.tobytes())
PY
start() { # seconds until the node prints "listening on"
  local t0; t0=$(date +%s.%N)
  : > "$W/out"
  "$S" serve --listen 127.0.0.1:7599 --data-dir "$W/node" > "$W/out" 2>> "$W/log" &
  until grep -q "listening on" "$W/out"; do sleep 0.05; done
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)"
}
start > /dev/null
"$S" collection create syn --dim 128 --metric L2 --shards 2 > /dev/null
"$S" import syn "$W/data.fvecs" 2>/dev/null
sleep 2
pkill -9 -f "serve --listen 127.0.0.1:7599"; sleep 0.5
echo "restart after kill -9 (checkpoints + reconcile): $(start) s, $("$S" count syn) points"
pkill -TERM -f "serve --listen 127.0.0.1:7599"; while pgrep -f "serve --listen 127.0.0.1:7599" > /dev/null; do sleep 0.1; done
echo "restart after graceful stop:                     $(start) s, $("$S" count syn) points"
pkill -9 -f "serve --listen 127.0.0.1:7599"; sleep 0.5
rm -rf "$W/node/index"
echo "restart without checkpoints (full rebuild):      $(start) s, $("$S" count syn) points"
