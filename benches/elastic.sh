#!/usr/bin/env bash
# Elasticity on loopback: what moving one replica costs, and what a fourth node
# joining costs, while searches run.
#   1. Three nodes (--auto-rebalance false), one collection of N synthetic clustered
#      128-d points (default 200,000) in 1 shard × 2 replicas.
#   2. Searches (`shoal bench --existing`, 4 clients, ef 64, siftsmall's queries: QPS
#      and latency only, the recall column is meaningless here) through the shard's
#      leader, which keeps its replica, for 5 s, twice: before.
#   3. `shoal cluster move` of the follower replica to the third node; searches in 5 s
#      rounds while it runs; the time until the operation is gone from
#      `Cluster.Status` (polled every 0.5 s), and the bytes the target's data
#      directory grew by; searches right after and 30 s after.
#   4. Two more collections (N/2 points each, 2 shards × 2 replicas), auto-rebalance
#      on, a fourth node joins with --join: the time until the cluster is balanced
#      (no operation in flight, replica counts within ±1), and searches meanwhile.
#      With BALANCE_BY=points the four nodes run `--balance-by points` and balanced
#      means: the new node holds a replica and no operation was in flight for 5 s
#      (the time reported is that of the last operation's end); the points each node
#      holds are printed.
# All processes share this machine's cores. Usage: benches/elastic.sh [N]
#   BALANCE_BY=replicas|points (default replicas); SKIP_MOVE=1 skips steps 2-3.
# Results: stdout, and target/bench-elastic/*.csv.
set -euo pipefail
N=${1:-200000}
cd "$(dirname "$0")/.."
SIFT=../shared/data/siftsmall
cargo build --release -q -p shoal-cli
S=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
W=$(mktemp -d)
OUT=${CARGO_TARGET_DIR:-$PWD/target}/bench-elastic
mkdir -p "$OUT"
PIDS=()
stop_all() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap 'stop_all; rm -rf "$W"' EXIT
PEERS="1=127.0.0.1:17471,2=127.0.0.1:17481,3=127.0.0.1:17491"
A=http://127.0.0.1:17470
start_node() { # name, public port, raft port, extra args...
  local name=$1 port=$2 raft=$3; shift 3
  "$S" serve --listen 127.0.0.1:"$port" --raft-listen 127.0.0.1:"$raft" \
    --data-dir "$W/$name" "$@" > "$W/$name.out" 2>> "$W/$name.log" &
  PIDS+=($!)
  until grep -q "^listening on" "$W/$name.out" 2>/dev/null; do sleep 0.1; done
}
status() { "$S" --addr $A cluster status --json; }
ops() { status | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["operations"]))'; }
SA=$A   # the node searched through
searches() { # label
  "$S" --addr $SA bench --existing --collection "$COLL" --queries $SIFT/siftsmall_query.fvecs \
    --ground-truth $SIFT/siftsmall_groundtruth.ivecs --ef 64 --concurrency 4 --seconds 5 \
    --out "$OUT/$1.csv" 2>/dev/null | awk -v l="$1" '$1 == "64" { printf "[%s] QPS %s, p99 %s ms\n", l, $4, $7 }'
}
now() { date +%s.%N; }
# Search rounds in the background until $W/stop exists (at most $1 rounds).
search_rounds() { # label, most rounds
  for r in $(seq 1 "$2"); do
    [ -e "$W/stop" ] && break
    searches "$1-$r"
  done
}
start_searching() { rm -f "$W/stop"; search_rounds "$1" 60 & SEARCHER=$!; }
stop_searching() { touch "$W/stop"; wait "$SEARCHER" || true; }

PUB=(0 17470 17480 17490 17500)
RAFT=(0 17471 17481 17491 17501)
for i in 1 2 3; do
  start_node n$i ${PUB[$i]} ${RAFT[$i]} --node-id $i --peers "$PEERS" --auto-rebalance false
done

# 1-2. Ingest, then searches before the move.
COLL=moved
"$S" --addr $A bench --collection $COLL --synthetic clustered --n "$N" --dim 128 \
  --shards 1 --replication-factor 2 --ef 64 --concurrency 1 --seconds 1 --n-queries 50 \
  --keep 2>&1 >/dev/null | grep "^ingested" || true
sleep 60   # let index checkpoints and followers settle

BALANCE_BY=${BALANCE_BY:-replicas}
if [ -z "${SKIP_MOVE:-}" ]; then
# 3. Move the follower's replica to the node without one.
read -r FROM TO < <(status | python3 -c '
import json, sys
s = json.load(sys.stdin)
sh = next(c for c in s["collections"] if c["name"] == "moved")["shards"][0]
reps = [r["node"] for r in sh["replicas"]]
frm = next(n for n in reps if n != sh["leader"])
to = next(n["id"] for n in s["nodes"] if n["id"] not in reps)
print(frm, to)')
before=$(du -sb "$W/n$TO" | cut -f1)
# Search through the node that keeps its replica (the leader): its searches stay local
# before, during and after the move, so the ratio shows what the move costs them.
LEADER=$(status | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(next(c for c in s["collections"] if c["name"] == "moved")["shards"][0]["leader"])')
SA=http://127.0.0.1:${PUB[$LEADER]}
echo "moving the replica of $COLL/0 from node $FROM to node $TO; searching through node $LEADER"
searches before-1
searches before-2
start_searching during-move
t0=$(now)
"$S" --addr $A cluster move $COLL 0 --from "$FROM" --to "$TO"
polls=0
while [ "$(ops)" != 0 ]; do
  polls=$((polls + 1)); [ $polls -lt 1200 ] || { echo "the move did not finish in 10 min"; exit 1; }
  sleep 0.5
done
t1=$(now)
stop_searching
after=$(du -sb "$W/n$TO" | cut -f1)
python3 -c "print(f'move of {$N} points: {$t1 - $t0:.1f} s (status polled every 0.5 s), target data dir +{($after - $before) / 2**20:.0f} MiB')"
searches after-move
sleep 30
searches after-move-30s
fi

# 4. A fourth node joins a cluster of three collections; auto-rebalance on.
SA=$A
stop_all
for i in 1 2 3; do
  start_node n$i ${PUB[$i]} ${RAFT[$i]} --node-id $i --peers "$PEERS" --balance-by "$BALANCE_BY"
done
for c in extra1 extra2; do
  "$S" --addr $A bench --collection $c --synthetic clustered --n $((N / 2)) --dim 128 \
    --shards 2 --replication-factor 2 --ef 64 --concurrency 1 --seconds 1 --n-queries 50 \
    --keep 2>&1 >/dev/null | grep "^ingested" || true
done
sleep 60
searches before-join
start_searching during-join
t0=$(now)
start_node n4 ${PUB[4]} ${RAFT[4]} --join 127.0.0.1:${RAFT[1]} --balance-by "$BALANCE_BY"
# Prints "yes" once balanced by replica count, "quiet" when node 4 holds a replica
# and no operation is in flight (by points, balanced is a quiet spell), else "no".
balanced() { status | python3 -c '
import json, sys
s = json.load(sys.stdin)
counts = {n["id"]: 0 for n in s["nodes"]}
for c in s["collections"]:
    for sh in c["shards"]:
        for r in sh["replicas"]:
            counts[r["node"]] = counts.get(r["node"], 0) + 1
quiet = len(counts) == 4 and not s["operations"] and min(counts.values()) >= 1
ok = quiet and max(counts.values()) - min(counts.values()) <= 1
print("yes" if ok and sys.argv[1] == "replicas" else "quiet" if quiet else "no")' "$BALANCE_BY"; }
polls=0
quiet=0
while :; do
  b=$(balanced)
  [ "$b" = yes ] && { t1=$(now); break; }
  if [ "$b" = quiet ]; then
    [ $quiet -eq 0 ] && t1=$(now)
    quiet=$((quiet + 1)); [ $quiet -ge 10 ] && break
  else
    quiet=0
  fi
  polls=$((polls + 1)); [ $polls -lt 1200 ] || { echo "not balanced in 10 min"; exit 1; }
  sleep 0.5
done
stop_searching
python3 -c "print(f'join of a fourth node to a balanced cluster ($BALANCE_BY): {$t1 - $t0:.1f} s (status polled every 0.5 s)')"
searches after-join
status | python3 -c '
import json, sys
s = json.load(sys.stdin)
for n in s["nodes"]:
    l = n["load"] or {}
    print("node", n["id"], l.get("replicas"), "replicas,", l.get("points"), "points")'
echo "CSV reports in $OUT"
