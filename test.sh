#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (real `shoal` processes
# over gRPC, SIGKILL durability, the bad-input table, recall on ../shared/data/siftsmall),
# then the Python client's tests against real servers (clients/python/ci.sh: its own
# venv, pinned packages from PyPI).
# Release mode: the same build `shoal serve` uses, and HNSW builds are fast in it.
# Arguments go to `cargo test` only, and skip the Python tests.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -gt 0 ]; then
  exec cargo test --release --workspace "$@"
fi
cargo test --release --workspace
cargo build --release --bin shoal
exec clients/python/ci.sh
