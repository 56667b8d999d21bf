"""Real `shoal serve` processes for the tests.

The binary is $SHOAL_BIN, else target/release/shoal of this checkout. Every process
started here is killed at the end of the session (and, through PR_SET_PDEATHSIG set by `setpriv`, if
pytest itself dies); every wait is bounded.
"""

from __future__ import annotations

import atexit
import os

# grpcio must not act on fork: the tests start servers while grpc's threads run, and a
# child that re-creates grpc's pollers between fork and exec can hang (seen in CI).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("SHOAL_BIN") or ROOT / "target" / "release" / "shoal")

# Faster Raft timing than the defaults, as the Rust cluster tests use.
TIMING = ["--raft-heartbeat-ms", "200", "--raft-election-min-ms", "1000", "--raft-election-max-ms", "2000",
          "--request-timeout-ms", "15000"]

_ALL: List["Node"] = []


# A server dies with the test process: `setpriv --pdeathsig KILL` (util-linux) sets the
# parent-death signal and execs the server, so no Python code runs between fork and
# exec (subprocess can then use vfork, and no fork handler of grpc's runs).
_SETPRIV = shutil.which("setpriv")


def _command(argv: List[str]) -> List[str]:
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One `shoal serve` process on a free loopback port over `data_dir`."""

    def __init__(self, data_dir: Path, args: List[str]) -> None:
        self.data_dir = data_dir
        self.args = args
        self.log_path = data_dir.with_suffix(".log")
        self.proc: Optional[subprocess.Popen] = None
        self.address = ""
        _ALL.append(self)

    def start(self, timeout: float = 60.0) -> "Node":
        if not BINARY.exists():
            raise RuntimeError(f"no shoal binary at {BINARY}: build it (cargo build --release --bin shoal) "
                               "or set SHOAL_BIN")
        args = list(self.args)
        if "--raft-listen" not in args:
            args += ["--raft-listen", "127.0.0.1:0"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            _command([str(BINARY), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir), *args]),
            stdout=subprocess.PIPE, stderr=log, env=dict(os.environ, RUST_LOG="info"),
        )
        log.close()
        found = threading.Event()
        addr: Dict[str, str] = {}
        stdout = self.proc.stdout

        def read() -> None:
            assert stdout is not None
            for raw in stdout:
                line = raw.decode(errors="replace").strip()
                if line.startswith("listening on ") and not found.is_set():
                    addr["a"] = line[len("listening on "):]
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(timeout):
            self.kill()
            raise RuntimeError(f"shoal did not start listening within {timeout}s; log:\n{self.log()}")
        self.address = addr["a"]
        return self

    def kill(self) -> None:
        """SIGKILL and reap (bounded)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None

    def restart(self) -> "Node":
        self.kill()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""


def _kill_all() -> None:
    for n in _ALL:
        n.kill()


atexit.register(_kill_all)


class Cluster:
    """Three nodes on loopback forming one cluster."""

    def __init__(self, base: Path) -> None:
        ports = [free_port() for _ in range(3)]
        peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
        self.nodes = [
            Node(base / f"n{i + 1}", ["--node-id", str(i + 1), "--raft-listen", f"127.0.0.1:{ports[i]}",
                                      "--peers", peers, *TIMING])
            for i in range(3)
        ]

    def start(self) -> "Cluster":
        for n in self.nodes:
            n.start()
        return self

    @property
    def addresses(self) -> List[str]:
        return [n.address for n in self.nodes]

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One single-node server for the whole session."""
    n = Node(tmp_path_factory.mktemp("single") / "data", []).start()
    yield n
    n.kill()


@pytest.fixture(scope="session")
def url(node: Node) -> str:
    return node.address


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A three-node cluster (started once, by the first test that needs it)."""
    c = Cluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.kill()


def wait_until(cond, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Polls `cond` until it returns a truthy value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last_err: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_err = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last_err!r}" if last_err else ""))


@pytest.fixture
def name() -> str:
    """A fresh collection name."""
    return "t_" + uuid.uuid4().hex[:12]
