#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (real `shoal` processes
# over gRPC, SIGKILL durability, the bad-input table, recall on ../shared/data/siftsmall).
# Release mode: the same build `shoal serve` uses, and HNSW builds are fast in it.
set -euo pipefail
cd "$(dirname "$0")"
exec cargo test --release --workspace "$@"
