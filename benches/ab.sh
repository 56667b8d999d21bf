#!/usr/bin/env bash
# Two builds of the server side by side on one node: siftsmall ingested, then searches
# at ef 16 and 64 with 1 and 4 clients for 5 s each, through the same `shoal bench`
# client ($NEW's), rounds interleaved (old, new, old, new, ...) so the machine's drift
# falls on both alike.
#   OLD=/path/to/old/shoal NEW=target/release/shoal benches/ab.sh [ROUNDS]
# e.g. OLD built with `git worktree add ../old f9cda46 && cd ../old && cargo build
# --release --bin shoal`. Needs ../shared/data/siftsmall beside the checkout.
set -euo pipefail
ROUNDS=${1:-2}
cd "$(dirname "$0")/.."
: "${OLD:?set OLD to the shoal binary of the old build}"
NEW=${NEW:-${CARGO_TARGET_DIR:-$PWD/target}/release/shoal}
SIFT=$PWD/../shared/data/siftsmall
W=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$W"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    bin=$OLD; [ $which = new ] && bin=$NEW
    "$bin" serve --listen 127.0.0.1:17600 --raft-listen 127.0.0.1:17601 \
      --data-dir "$W/$which-$round" > "$W/out" 2> "$W/log" &
    PID=$!
    until grep -q "^listening on" "$W/out" 2>/dev/null; do sleep 0.1; done
    "$NEW" --addr http://127.0.0.1:17600 bench --data "$SIFT/siftsmall_base.fvecs" \
      --queries "$SIFT/siftsmall_query.fvecs" --ground-truth "$SIFT/siftsmall_groundtruth.ivecs" \
      --ef 16,64 --concurrency 1,4 --seconds 5 2>&1 | grep -E "ingested|^ +[0-9]" | sed "s/^/[$which $round] /"
    kill $PID; wait $PID 2>/dev/null || true; PID=
  done
done
