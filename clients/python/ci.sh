#!/usr/bin/env bash
# CI for the Python client (clients/python): a venv with pinned dependencies, the
# generated-stubs check, then pytest against real `shoal serve` processes the tests
# start (one node, and a three-node cluster on loopback).
#
#   clients/python/ci.sh [pytest args]
#
# The shoal binary: $SHOAL_BIN if set, else target/release/shoal of this checkout
# (under $CARGO_TARGET_DIR if set), built with cargo only if it is missing.
# The venv: $SHOAL_PY_VENV, else clients/python/.venv (created if missing).
# SHOAL_PY_NATIVE=1 also builds and installs the optional compiled transport
# (clients/python/native: maturin + cargo, ~1 minute) so that tests/test_native.py runs;
# without it those tests are skipped.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SHOAL_PY_VENV:-$here/.venv}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# The package itself (not editable: this checks the packaging, py.typed and the stubs
# ship), its test extras and the stub generator, at the pinned versions.
"${pip[@]}" install -c "$here/constraints.txt" "$here[test]" grpcio-tools mypy types-protobuf grpc-stubs
"$venv/bin/python" "$here/scripts/gen_stubs.py" --check
# Type hints are part of the package (py.typed): check them (generated stubs aside).
(cd "$here" && "$venv/bin/python" -m mypy src/shoal --ignore-missing-imports --exclude 'src/shoal/v1/')
if [ "${SHOAL_PY_NATIVE:-0}" = 1 ]; then
  "${pip[@]}" install "$here/native"
fi

if [ -z "${SHOAL_BIN:-}" ]; then
  SHOAL_BIN="${CARGO_TARGET_DIR:-$root/target}/release/shoal"
  if [ ! -x "$SHOAL_BIN" ]; then
    echo "ci.sh: no $SHOAL_BIN; building it" >&2
    (cd "$root" && cargo build --release --bin shoal)
  fi
fi
export SHOAL_BIN
echo "ci.sh: testing against $SHOAL_BIN" >&2
# Run from the tests directory so that `import shoal` is the installed package.
cd "$here/tests"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" .
