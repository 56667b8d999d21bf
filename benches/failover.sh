#!/usr/bin/env bash
# Failover: how long a shard takes no write after its leader is killed -9 or paused
# (issue 14, item 3).
#
# Three `shoal` nodes on loopback; collection `f` (1 shard, replication factor 3) and,
# so that every node leads several Raft groups as in a real cluster, collection `g`
# (3 shards, RF 3). Each round writes through a node that does not lead `f`'s shard
# (a new one-point upsert every 0.1 s, each with a 10 s deadline and no client
# retries: a write sent while the shard has no leader waits in the node until one can
# commit it) and, 1 s in, applies a fault to the shard's leader:
#   kill   kill -9 the leader; restart it once a write succeeded again, or
#   pause  SIGSTOP the leader for 10 s, then SIGCONT.
# The stall of a round is the time from the fault to the first acknowledgement of a
# write sent after it (to within the 0.1 s between writes). Between rounds the victim catches up (a STRONG count through it)
# and the leader balancer has time to hand leaderships back (15 s).
#
# Usage: benches/failover.sh [--bin PATH] [--rounds N] [--faults kill,pause] [-- SERVE ARGS...]
#   default: the release build of this tree, 10 rounds of each fault, default timing.
#   Anything after `--` is passed to every `shoal serve` (e.g. --raft-election-min-ms 500).
# Output: one line per round and a summary per fault (also $OUT/failover.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$(readlink -f "$2"); shift 2 ;;
    --) shift; break ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ -z "$BIN" ]; then
  cargo build --release -q -p shoal-cli
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
fi
OUT=${CARGO_TARGET_DIR:-$PWD/target}/bench-failover
mkdir -p "$OUT"
VENV=${SHOAL_PY_VENV:-$PWD/clients/python/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip -q install -c clients/python/constraints.txt ./clients/python
fi
exec "$VENV/bin/python" benches/failover.py --bin "$BIN" --out "$OUT" "${ARGS[@]}" -- "$@"
