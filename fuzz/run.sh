#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that takes bytes from outside a node, with
# cargo-fuzz (libFuzzer, AddressSanitizer; needs a nightly toolchain). The targets'
# bodies and what each checks: crates/shoal-fuzz/src/lib.rs.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     SECONDS per target (default 1800); all
#                                         targets unless named
#   JOBS=2 fuzz/run.sh ...                two targets at once (a core each)
#
# Seeds the corpora (crates/shoal-fuzz/examples/seed.rs), fuzzes each target with
# memory limits (RSS 2 GiB, any single allocation 1 GiB), then minimises its corpus
# (`cargo fuzz cmin`). A crash stops that target and leaves its input under
# fuzz/artifacts/<target>/; once the bug is fixed, copy the input into
# fuzz/corpus/<target>/ so that `cargo test -p shoal-fuzz` (on stable, in CI) replays
# it for good. Logs: target/fuzz-logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-1800}
[ $# -gt 0 ] && shift
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(request peer_message snapshot_frames index_dump backup filter_json)
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz/run.sh needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo run -q --release -p shoal-fuzz --example seed
LOGS=$PWD/target/fuzz-logs
mkdir -p "$LOGS"
cd fuzz
cargo +nightly fuzz build
fuzz_one() {
  local t=$1
  echo "fuzzing $t for $SECS s"
  if cargo +nightly fuzz run "$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -max_len=65536 -timeout=10 -print_final_stats=1 \
      > "$LOGS/$t.log" 2>&1; then
    cargo +nightly fuzz cmin "$t" >> "$LOGS/$t.log" 2>&1
    echo "$t: clean; $(grep -E '^stat::number_of_executed_units' "$LOGS/$t.log" | tail -1 | awk '{print $2}') runs, corpus $(ls "corpus/$t" | wc -l) inputs"
  else
    echo "$t: FAILED (see $LOGS/$t.log and fuzz/artifacts/$t/)"
    return 1
  fi
}
export -f fuzz_one
export SECS LOGS
printf '%s\n' "${TARGETS[@]}" | xargs -P "${JOBS:-1}" -I{} bash -c 'fuzz_one {}'
