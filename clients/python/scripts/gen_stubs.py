#!/usr/bin/env python3
"""Generates the gRPC stubs in src/shoal/v1/ from ../../proto/shoal/v1/shoal.proto.

    python scripts/gen_stubs.py           # write them
    python scripts/gen_stubs.py --check   # exit 1 if regenerating would change them

The generated code embeds grpcio-tools' version, so the check needs the pinned
grpcio-tools (constraints.txt); a different version fails with a clear message.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = PROTO_ROOT / "shoal" / "v1" / "shoal.proto"
OUT = HERE / "src"
FILES = ["shoal/v1/shoal_pb2.py", "shoal/v1/shoal_pb2.pyi", "shoal/v1/shoal_pb2_grpc.py"]
PINNED_TOOLS = "1.85.4"


def generate(out: Path) -> None:
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", str(PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    a = ap.parse_args()
    import grpc_tools

    version = getattr(grpc_tools, "__version__", None)
    if version is None:
        from importlib.metadata import version as v
        version = v("grpcio-tools")
    if version != PINNED_TOOLS:
        print(f"grpcio-tools {version} is installed; the stubs are generated with {PINNED_TOOLS} "
              f"(pip install grpcio-tools=={PINNED_TOOLS})", file=sys.stderr)
        return 2
    if not a.check:
        generate(OUT)
        print(f"wrote {', '.join(FILES)} under {OUT}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        differ = []
        for f in FILES:
            new = (Path(tmp) / f).read_text()
            old_path = OUT / f
            old = old_path.read_text() if old_path.exists() else ""
            if new != old:
                differ.append(f)
                sys.stderr.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                           f"committed/{f}", f"regenerated/{f}", n=1))
        if differ:
            print(f"stubs out of date: {', '.join(differ)}; run python scripts/gen_stubs.py", file=sys.stderr)
            return 1
    print(f"stubs up to date with {PROTO.relative_to(HERE.parent.parent)} (grpcio-tools {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
