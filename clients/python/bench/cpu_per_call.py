#!/usr/bin/env python3
"""Client CPU per search: the shoal Python client against a raw grpcio stub (and
psycopg + pgvector when PostgreSQL with pgvector is installed), in one process, one run.

Data: N x DIM float32 vectors and --queries queries from 100 Gaussian blobs (centres
uniform in [-1,1)^DIM, sigma 0.1, --seed): the clustered recipe of benches/benchdata.py
(i.i.d. Gaussian vectors in 384-d have no meaningful neighbours: recall@10 at ef 20 was
0.08 for both systems). Compared by cosine; exact ground truth by numpy. Shoal: one `shoal serve`
(--shoal-bin, default target/release/shoal), one shard, HNSW m 16 / ef_construction
200, searched at ef --ef, top 10. pgvector: a private PostgreSQL 15 cluster (initdb in a
temp dir, free port, fsync on), HNSW m 16 / ef_construction 200 vector_cosine_ops,
hnsw.ef_search = --ef, one prepared statement, the vector bound in pgvector's binary
format (psycopg 3, binary). Every variant returns the 10 ids of each query.

Variants, one after the other inside each round, rounds interleaved so that the
machine's drift falls on all alike (median of --rounds is reported):
  grpcio stub        PointsStub.Search(SearchRequest(vector=q.tolist(), ...)), ids read
  grpcio stub bytes  the same call with the request pre-encoded by hand (vector as packed
                     bytes), the lower bound of anything over grpcio's sync stub
  shoal.Client       client.search(coll, q, top_k=10, ef=20) -> ScoredPoint list
                     (numpy in, typed objects out; consistency eventual, and session);
                     "native": the same client over the optional compiled transport
                     (shoal_native: tonic over pyo3), when installed
  search_batch       client.search_batch of 100 queries, per query
  8 threads          8 threads searching through one grpcio stub / one shoal.Client
                     (coalescing off and on), per query
  AsyncClient x16    16 concurrent client.search on one event loop (coalescing off and
                     on), per query
  psycopg            cursor.execute(prepared SELECT id ... ORDER BY v <=> %s LIMIT 10)
CPU is this process's user+system time (all its threads, grpcio's included) per call;
the server's is read from /proc/<pid>/stat of the shoal process (postmaster and its
children for PostgreSQL).

Usage: python bench/cpu_per_call.py [--n 30000] [--dim 384] [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(ROOT / "benches"))

import grpc  # noqa: E402

import shoal  # noqa: E402
from benchdata import clustered  # noqa: E402
from shoal import _wire  # noqa: E402
from shoal.v1 import shoal_pb2 as pb  # noqa: E402
from shoal.v1 import shoal_pb2_grpc as pbg  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
CLEANUP = []


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks(pids: list[int]) -> float:
    """CPU seconds (user+system) of these processes."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total / hz


def children(pid: int) -> list[int]:
    out = [pid]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
            except (OSError, IndexError):
                pass
    return out


def start_shoal(binary: str, data: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--raft-listen", "127.0.0.1:0",
                          "--data-dir", data], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    CLEANUP.append(lambda: (p.kill(), p.wait()))
    addr: dict[str, str] = {}
    ev = threading.Event()

    def read() -> None:
        for line in p.stdout:  # type: ignore[union-attr]
            s = line.decode().strip()
            if s.startswith("listening on "):
                addr["a"] = s[13:]
                ev.set()

    threading.Thread(target=read, daemon=True).start()
    if not ev.wait(60):
        raise SystemExit("shoal did not start")
    return p, addr["a"]


class Postgres:
    def __init__(self, data_vectors: np.ndarray, ef: int) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        self.dir = tempfile.mkdtemp(prefix="shoal-bench-pg-")
        CLEANUP.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        shutil.chown(self.dir, "postgres", "postgres")
        data = os.path.join(self.dir, "data")
        run = lambda cmd: subprocess.run(["runuser", "-u", "postgres", "--"] + cmd, check=True,  # noqa: E731
                                         stdout=subprocess.DEVNULL)
        run([f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        self.port = free_port()
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c shared_buffers=1GB "
                "-c maintenance_work_mem=1GB -c max_parallel_maintenance_workers=1 -c jit=off")
        run([f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(self.dir, "log"), "-o", opts, "-w", "start"])
        CLEANUP.append(lambda: subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", data,
                                               "-m", "immediate", "stop"], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
        self.postmaster = int(open(os.path.join(data, "postmaster.pid")).readline())
        c = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True)
        c.execute("CREATE EXTENSION vector")
        register_vector(c)
        n, dim = data_vectors.shape
        c.execute(f"CREATE TABLE items (id int4 PRIMARY KEY, v vector({dim}))")
        t = time.perf_counter()
        with c.cursor() as cur:
            with cur.copy("COPY items (id, v) FROM STDIN WITH (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "vector"])
                for i in range(n):
                    cp.write_row((i, data_vectors[i]))
        c.execute("CREATE INDEX ON items USING hnsw (v vector_cosine_ops) WITH (m = 16, ef_construction = 200)")
        c.execute("VACUUM ANALYZE items")
        log(f"pgvector: loaded and indexed {n} in {time.perf_counter() - t:.1f}s")
        c.execute(f"SET hnsw.ef_search = {ef}")
        self.conn = c
        self.version = c.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()[0]

    def search(self, q: np.ndarray) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM items ORDER BY v <=> %s LIMIT 10", (q,),
                                                prepare=True, binary=True).fetchall()]

    def pids(self) -> list[int]:
        return children(self.postmaster)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ef", type=int, default=20)
    ap.add_argument("--calls", type=int, default=2000, help="calls per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shoal-bin", default=os.environ.get("SHOAL_BIN", str(ROOT / "target/release/shoal")))
    ap.add_argument("--no-pg", action="store_true")
    a = ap.parse_args()

    base, queries = clustered(a.n, a.queries, a.dim, a.seed)
    nb = base / np.linalg.norm(base, axis=1, keepdims=True)
    nq = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(nq[:200] @ nb.T), axis=1)[:, :10]

    data_dir = tempfile.mkdtemp(prefix="shoal-bench-")
    CLEANUP.append(lambda: shutil.rmtree(data_dir, ignore_errors=True))
    server, addr = start_shoal(a.shoal_bin, data_dir)
    client = shoal.Client(addr)
    coll = "bench"
    client.create_collection(coll, dim=a.dim, metric="COSINE")
    up = client.upload(coll, base, ids=range(a.n), batch_size=500, parallel=2)
    log(f"shoal: uploaded {up.points} in {up.seconds:.1f}s ({up.points_per_second:,.0f} points/s)")
    # let idle checkpointing pass before measuring
    time.sleep(6)

    pg = None
    if not a.no_pg:
        if os.path.exists("/usr/share/postgresql/15/extension/vector.control"):
            try:
                pg = Postgres(base, a.ef)
            except ImportError:
                log("pgvector: psycopg / pgvector (Python) not installed: pip install 'psycopg[binary]' pgvector")
        else:
            log("pgvector: not installed (see ../shared/PEERS.md); skipped")

    channel = grpc.insecure_channel(addr)
    stub = pbg.PointsStub(channel)
    search_bytes = channel.unary_unary("/shoal.v1.Points/Search", request_serializer=None,
                                       response_deserializer=pb.SearchResponse.FromString)
    eventual = shoal.Client(addr, consistency="eventual")
    eventual_nc = shoal.Client(addr, consistency="eventual", coalesce=False)
    aclient = shoal.AsyncClient(addr, consistency="eventual")
    aclient_nc = shoal.AsyncClient(addr, consistency="eventual", coalesce=False)
    try:
        native = shoal.Client(addr, consistency="eventual", native=True)
        native_session = shoal.Client(addr, native=True)
        native_session.add_token(coll, client.token(coll))  # the session client's token
    except ImportError:
        native = native_session = None
        log("shoal_native not installed (pip install ./clients/python/native): native rows skipped")
    loop = asyncio.new_event_loop()

    def raw(q: np.ndarray) -> list[int]:
        r = stub.Search(pb.SearchRequest(collection=coll, vector=q.tolist(), top_k=10, ef=a.ef))
        return [p.id.num for p in r.results]

    def raw_bytes(q: np.ndarray) -> list[int]:
        body = (b"\x0a" + _wire.varint(len(coll)) + coll.encode() + b"\x18\x0a\x20" + _wire.varint(a.ef)
                + b"\x12" + _wire.varint(4 * a.dim) + q.tobytes())
        return [p.id.num for p in search_bytes(body).results]

    def client_eventual(q: np.ndarray) -> list:
        return [h.id for h in eventual.search(coll, q, top_k=10, ef=a.ef)]

    def client_session(q: np.ndarray) -> list:
        return [h.id for h in client.search(coll, q, top_k=10, ef=a.ef)]

    variants = [("grpcio stub", raw, 1), ("grpcio stub, bytes request", raw_bytes, 1),
                ("shoal.Client (eventual)", client_eventual, 1), ("shoal.Client (session)", client_session, 1)]

    def batch_runner(qs: np.ndarray) -> list:
        out = []
        for s in range(0, len(qs), 100):
            out.extend(eventual.search_batch(coll, qs[s:s + 100], top_k=10, ef=a.ef))
        return out

    def async_runner(ac: shoal.AsyncClient):  # type: ignore[no-untyped-def]
        async def run(qs: np.ndarray) -> list:
            sem = asyncio.Semaphore(16)

            async def one(q: np.ndarray) -> list:
                async with sem:
                    return await ac.search(coll, q, top_k=10, ef=a.ef)

            return await asyncio.gather(*(one(q) for q in qs))

        return lambda qs: loop.run_until_complete(run(list(qs)))

    def threaded(fn, threads: int = 8):  # type: ignore[no-untyped-def]
        def run(qs: np.ndarray) -> list:
            out: list = [None] * len(qs)

            def work(k: int) -> None:
                for i in range(k, len(qs), threads):
                    out[i] = fn(qs[i])

            ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return out

        return run

    def client_nc(q: np.ndarray) -> list:
        return [h.id for h in eventual_nc.search(coll, q, top_k=10, ef=a.ef)]

    variants.insert(2, ("shoal.Client (eventual, coalesce off)", client_nc, 1))
    if native is not None:
        variants.insert(5, ("shoal.Client native (eventual)",
                            lambda q: [h.id for h in native.search(coll, q, top_k=10, ef=a.ef)], 1))
        variants.insert(6, ("shoal.Client native (session)",
                            lambda q: [h.id for h in native_session.search(coll, q, top_k=10, ef=a.ef)], 1))
    concurrent = [
        ("search_batch (100 per call)", batch_runner),
        ("8 threads, grpcio stub", threaded(raw)),
        ("8 threads, shoal.Client, coalesce off", threaded(client_nc)),
        ("8 threads, shoal.Client (coalescing)", threaded(client_eventual)),
        ("AsyncClient, 16 concurrent, coalesce off", async_runner(aclient_nc)),
        ("AsyncClient, 16 concurrent (coalescing)", async_runner(aclient)),
    ]
    if native is not None:
        def native_batch(qs: np.ndarray) -> list:
            out = []
            for s in range(0, len(qs), 100):
                out.extend(native.search_batch(coll, qs[s:s + 100], top_k=10, ef=a.ef))
            return out

        concurrent.insert(1, ("native search_batch (100 per call)", native_batch))
        concurrent.append(("8 threads, shoal.Client native (coalescing)",
                           threaded(lambda q: [h.id for h in native.search(coll, q, top_k=10, ef=a.ef)])))

    if pg is not None:
        variants.append((f"psycopg + pgvector {pg.version}", pg.search, 1))

    def measure(name: str, fn, per_call: bool, server_pids: list[int]) -> dict:  # type: ignore[no-untyped-def]
        qs = [queries[i % a.queries] for i in range(a.calls)]
        for q in qs[:100]:
            fn(q) if per_call else None
        s0, c0, w0 = ticks(server_pids), time.process_time(), time.perf_counter()
        if per_call:
            for q in qs:
                fn(q)
        else:
            fn(np.stack(qs))
        w1, c1, s1 = time.perf_counter(), time.process_time(), ticks(server_pids)
        return {"client_us": (c1 - c0) / a.calls * 1e6, "server_us": (s1 - s0) / a.calls * 1e6,
                "qps": a.calls / (w1 - w0)}

    def recall(fn, per_call: bool = True) -> float:  # type: ignore[no-untyped-def]
        if per_call:
            got = [fn(queries[i]) for i in range(200)]
        else:
            got = [[h.id for h in r] for r in fn(queries[:200])]
        return float(np.mean([len(set(map(int, g)) & set(t.tolist())) / 10 for g, t in zip(got, truth)]))

    recalls = {name: recall(fn) for name, fn, _ in variants}
    for name, fn in concurrent:
        if name.startswith("8 threads"):
            recalls[name] = float(np.mean([len(set(map(int, g)) & set(t.tolist())) / 10
                                           for g, t in zip(fn(queries[:200]), truth)]))
        else:
            recalls[name] = recall(fn, False)

    shoal_pids = [server.pid]
    results: dict[str, list[dict]] = {}
    for r in range(a.rounds):
        for name, fn, _ in variants:
            pids = pg.pids() if (pg is not None and name.startswith("psycopg")) else shoal_pids
            results.setdefault(name, []).append(measure(name, fn, True, pids))
        for name, fn in concurrent:
            results.setdefault(name, []).append(measure(name, fn, False, shoal_pids))
        log(f"round {r + 1}/{a.rounds} done")

    print(f"\n{a.n:,} x {a.dim} cosine (clustered, seed {a.seed}), top 10, ef {a.ef}; "
          f"{a.calls} calls per variant per round, median of {a.rounds} rounds\n")
    print("| variant | client CPU per query (µs) | server CPU per query (µs) | QPS | recall@10 |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        med = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
        print(f"| {name} | {med['client_us']:.0f} | {med['server_us']:.0f} | {med['qps']:,.0f} | "
              f"{recalls.get(name, float('nan')):.3f} |")
    print(f"\nload average during the run: {os.getloadavg()}")
    loop.run_until_complete(aclient.close())
    loop.run_until_complete(aclient_nc.close())
    for c in (client, eventual, eventual_nc, native, native_session):
        if c is not None:
            c.close()


if __name__ == "__main__":
    try:
        main()
    finally:
        for f in reversed(CLEANUP):
            try:
                f()
            except Exception:  # noqa: BLE001
                pass
