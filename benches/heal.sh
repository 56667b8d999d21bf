#!/usr/bin/env bash
# Time to serve after a network partition heals (issue 14, item 2).
#
# Three `shoal` nodes, each in its own network namespace, joined by veth pairs on a
# bridge; all of it inside a private network and mount namespace this script creates
# with `unshare`, so nothing on the host's network changes and everything (bridge,
# namespaces, rules) disappears when the script exits, however it exits.
#
# Collection `h`: 3 shards, replication factor 3. For each partition length, node 3's
# Raft port (7471) is cut off from its peers by nftables drop rules in node 3's
# namespace (packets dropped both ways, silently, as a real partition; its public port
# stays reachable from the script). Meanwhile a writer upserts 10 points every 0.2 s
# through node 1. The writer stops, the rules are removed ("heal") and the script
# measures, from the heal:
#   reached    node 1's Cluster.Status first lists node 3 reachable (a node-to-node
#              call over the internal port, on the channel the Raft groups share);
#   serve      the first STRONG count and the first one-point write through node 3 that
#              succeed (a new attempt of each every 100 ms, each given 3 s);
#   caught up  node 3's replica of every shard has applied as far as the shard's most
#              advanced replica had at the heal (Cluster.Status through node 1, a new
#              request every 100 ms, each timed by its answer).
# Every wait is bounded (60 s after a heal); a value of "-" means it was not reached.
# Also, 3 s into each partition: how long `shoal cluster status` (and with --digests)
# through node 1 takes while node 3 is cut off.
#
# Usage (as root): benches/heal.sh [--bin PATH] [--runs N] [SECONDS ...]
#   default: the release build of this tree, 1 run of each of 10 30 60 s.
#   HEAL_LOGS=DIR keeps the nodes' logs (RUST_LOG as usual; default warn).
# Output: one line per partition (also in $OUT/heal.csv).
set -euo pipefail

if [ -z "${HEAL_INNER:-}" ]; then
  cd "$(dirname "$0")/.."
  BIN=""
  ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --bin) BIN=$(readlink -f "$2"); shift 2 ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
  if [ -z "$BIN" ]; then
    cargo build --release -q -p shoal-cli
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
  fi
  OUT=${CARGO_TARGET_DIR:-$PWD/target}/bench-heal
  mkdir -p "$OUT"
  # A private network namespace (only its own loopback at first) and mount namespace
  # (for `ip netns`' bind mounts under a private /run). --fork: the script runs as
  # its own child, so the namespaces die with it.
  exec unshare --net --mount --fork env HEAL_INNER=1 HEAL_BIN="$BIN" HEAL_OUT="$OUT" \
    HEAL_LOGS="$( [ -n "${HEAL_LOGS:-}" ] && readlink -f "$HEAL_LOGS" )" \
    bash "$0" "${ARGS[@]}"
fi

S=$HEAL_BIN
OUT=$HEAL_OUT
RUNS=1
LENGTHS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    *) LENGTHS+=("$1"); shift ;;
  esac
done
[ ${#LENGTHS[@]} -gt 0 ] || LENGTHS=(10 30 60)

W=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${HEAL_LOGS:-}" ]; then mkdir -p "$HEAL_LOGS" && cp "$W"/*.log "$HEAL_LOGS"/ 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

mount -t tmpfs tmpfs /run
ip link set lo up
ip link add br0 type bridge
ip addr add 10.98.0.254/24 dev br0
ip link set br0 up
for i in 1 2 3; do
  ip netns add "n$i"
  ip link add "v$i" type veth peer name eth0 netns "n$i"
  ip link set "v$i" master br0 up
  ip -n "n$i" addr add "10.98.0.$i/24" dev eth0
  ip -n "n$i" link set eth0 up
  ip -n "n$i" link set lo up
done

PEERS="1=10.98.0.1:7471,2=10.98.0.2:7471,3=10.98.0.3:7471"
for i in 1 2 3; do
  RUST_LOG=${RUST_LOG:-warn} ip netns exec "n$i" "$S" serve --node-id "$i" \
    --listen "10.98.0.$i:7470" --raft-listen "10.98.0.$i:7471" --peers "$PEERS" \
    --cluster-secret heal-bench-secret-0123456789abcdef \
    --data-dir "$W/n$i" > "$W/n$i.out" 2> "$W/n$i.log" &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 300); do grep -q "^listening on" "$W/n$i.out" 2>/dev/null && break; sleep 0.1; done
done

cli() { # node, seconds allowed, command...
  local n=$1 t=$2; shift 2
  timeout "$t" "$S" --addr "http://10.98.0.$n:7470" "$@"
}
now() { date +%s.%N; }
points() { # first id, count
  local i
  for ((i = $1; i < $1 + $2; i++)); do
    echo "{\"id\": $i, \"vector\": [$((i % 97)), 1, 2, 3]}"
  done
}

for _ in $(seq 100); do
  cli 1 5 collection create h --dim 4 --metric L2 --shards 3 --replication-factor 3 \
    > /dev/null 2>&1 && break
  cli 1 5 collection get h > /dev/null 2>&1 && break
  sleep 0.3
done
points 0 100 > "$W/seed.jsonl"
for _ in $(seq 100); do cli 1 5 import h "$W/seed.jsonl" > /dev/null 2>&1 && break; sleep 0.3; done
for n in 1 2 3; do
  for _ in $(seq 100); do cli "$n" 3 count h --consistency strong > /dev/null 2>&1 && break; sleep 0.3; done
done

# Per shard, the highest applied index of any replica, and node 3's, from node 1.
applied() { # "max" | "node3"
  cli 1 3 cluster status --json 2>/dev/null |
    python3 -c '
import json, sys
s = json.load(sys.stdin)
which = sys.argv[1]
out = []
for c in s["collections"]:
    for sh in c["shards"]:
        reps = sh["replicas"]
        if which == "max":
            out.append(max(r["applied_index"] or 0 for r in reps))
        else:
            r3 = [r for r in reps if r["node"] == 3 and r["state"] != "unreachable"]
            out.append(r3[0]["applied_index"] if r3 else -1)
if which != "max":
    # Whether node 1 reaches node 3 (over the internal port), first.
    out.insert(0, int(any(n["id"] == 3 and n["reachable"] for n in s["nodes"])))
print(" ".join(map(str, out)))' "$1"
}

NEXT_ID=1000000
echo "partition_s,run,reached_s,serve_read_s,serve_write_s,caught_up_s,status_s,status_digests_s" > "$OUT/heal.csv"
for len in "${LENGTHS[@]}"; do
  for run in $(seq "$RUNS"); do
    # Writer through node 1, while the partition lasts.
    rm -f "$W/stop"
    (
      id=$NEXT_ID
      while [ ! -e "$W/stop" ]; do
        points "$id" 10 > "$W/w.jsonl"
        cli 1 5 import h "$W/w.jsonl" > /dev/null 2>&1 || true
        id=$((id + 10))
        sleep 0.2
      done
    ) &
    WRITER=$!
    NEXT_ID=$((NEXT_ID + 1000000))
    ip netns exec n3 nft -f - <<'EOF'
table inet heal {
  chain in { type filter hook input priority 0; tcp dport 7471 drop; tcp sport 7471 drop; }
  chain out { type filter hook output priority 0; tcp dport 7471 drop; tcp sport 7471 drop; }
}
EOF
    # Cluster.Status through node 1 while node 3 is cut off (issue 14, item 6).
    sleep 3
    st0=$(now); cli 1 30 cluster status > /dev/null 2>&1 || true; st1=$(now)
    cli 1 30 cluster status --digests > /dev/null 2>&1 || true; st2=$(now)
    status_s=$(python3 -c "print(f'{$st1 - $st0:.2f}')")
    digests_s=$(python3 -c "print(f'{$st2 - $st1:.2f}')")
    sleep "$(python3 -c "print(max(0, $len - 3 - ($st2 - $st0)))")"
    touch "$W/stop"
    wait "$WRITER" || true
    target=$(applied max)
    rm -f "$W"/ok-*
    ip netns exec n3 nft delete table inet heal
    t0=$(now)
    # Node 1's view of node 3, each answer with the time it came: "<time> <node 3
    # reachable 0|1> <node 3's applied index per shard>".
    statusprobe() {
      local out
      out=$(applied node3) && echo "$(now) $out" >> "$W/status"
    }
    # The first times node 3 was reachable, and caught up ("" if not yet).
    firsts() {
      touch "$W/status"
      python3 - "$W/status" "$target" <<'PY'
import sys
target = [int(x) for x in sys.argv[2].split()]
reached = caught = ""
for line in sorted(open(sys.argv[1]), key=lambda l: float(l.split()[0])):
    f = line.split()
    t, r, applied = f[0], f[1], [int(x) for x in f[2:]]
    if r == "1" and not reached:
        reached = t
    if target and len(applied) == len(target) and all(a >= b for a, b in zip(applied, target)):
        caught = t
        break
print(reached or "-", caught or "-")
PY
    }
    probe() { # kind, command...
      local kind=$1; shift
      if "$@" > /dev/null 2>&1; then now >> "$W/ok-$kind"; fi
    }
    caught=""
    reached=""
    rm -f "$W/status"
    probes=()
    k=0
    while :; do
      t=$(now)
      if python3 -c "import sys; sys.exit(0 if float('$t') - float('$t0') < 60 else 1)"; then :; else break; fi
      if [ ! -e "$W/ok-read" ]; then
        probe read cli 3 3 count h --consistency strong &
        probes+=($!)
      fi
      if [ ! -e "$W/ok-write" ]; then
        points $((NEXT_ID + k)) 1 > "$W/p$k.jsonl"
        probe write cli 3 3 import h "$W/p$k.jsonl" &
        probes+=($!)
        k=$((k + 1))
      fi
      if [ -z "$caught" ]; then
        statusprobe &
        probes+=($!)
        read -r reached caught < <(firsts)
      fi
      [ "$caught" = "-" ] && caught=""
      [ "$reached" = "-" ] && reached=""
      if [ -e "$W/ok-read" ] && [ -e "$W/ok-write" ] && [ -n "$caught" ]; then break; fi
      sleep 0.1
    done
    for p in "${probes[@]}"; do wait "$p" 2>/dev/null || true; done
    read -r reached caught < <(firsts)
    [ "$caught" = "-" ] && caught=""
    [ "$reached" = "-" ] && reached=""
    NEXT_ID=$((NEXT_ID + 1000000))
    since() { # file or timestamp
      local t=""
      if [ -f "$1" ]; then t=$(sort -n "$1" | head -1); else t=$1; fi
      if [ -z "$t" ]; then echo "-"; else python3 -c "print(f'{float(\"$t\") - float(\"$t0\"):.2f}')"; fi
    }
    r=$(since "$W/ok-read"); w=$(since "$W/ok-write"); c=$(since "$caught"); a=$(since "$reached")
    echo "heal at $(date -u -d "@$t0" +%H:%M:%S.%N)" >> "$W/heal.log"
    echo "partition ${len} s (run $run): node 1 reaches node 3 after ${a} s; node 3 serves STRONG reads after ${r} s, writes after ${w} s; its replicas caught up after ${c} s; during the partition Cluster.Status took ${status_s} s, with digests ${digests_s} s"
    echo "$len,$run,$a,$r,$w,$c,$status_s,$digests_s" >> "$OUT/heal.csv"
    # Let the cluster settle before the next partition.
    sleep 5
  done
done
echo "CSV in $OUT/heal.csv"
