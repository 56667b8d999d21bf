#!/usr/bin/env python3
"""Side by side, in one run, on this machine: three vector database *servers* on the
same data, k=10, L2, one client issuing one query per call.

- Shoal: a release `shoal serve` built and started here (one node, one shard by
  default, fresh temp --data-dir, free ports; writes are durable: each Upsert is
  fsynced before it returns). Client: Python gRPC, stubs generated at run time from
  proto/shoal/v1/shoal.proto into .peers/cache/shoal-stubs (not committed). Per-query
  `Search` calls; also `SearchBatch` (all queries of a pass in one call) for reference.
- PostgreSQL 15 + pgvector 0.8 (Debian packages; pgvector built from Debian's trixie
  source package as ../shared/PEERS.md says, if not installed yet; needs root). A
  private cluster (initdb into a temp dir as the postgres user, a free port), left
  running only while the script runs. Bulk load with binary COPY, then
  CREATE INDEX ... USING hnsw (m=16, ef_construction=200), sweeping hnsw.ef_search.
  Client psycopg 3 (binary), parameters in pgvector's binary format.
- Chroma (`chromadb` from PyPI, `chroma run`), hnsw space l2, max_neighbors 16,
  ef_construction 200, ef_search swept with collection.modify() and a server restart
  per ef (modify() alone is not applied to an index the server has loaded).
- Qdrant (optional, `--systems ...,qdrant --qdrant-bin PATH`): a `qdrant` binary the
  caller built from source (this script does not build it; BENCHMARKS.md says how it
  was built here), started with a temp storage dir, telemetry off, otherwise its
  defaults. Collection with HNSW m 16, ef_construct 200, integer payload indexes on the
  filter fields created before the upload; ingest counts until the optimizer has
  indexed every segment (collection status green). Client: the gRPC stubs of the
  `qdrant-client` package (`Points.Search` with `hnsw_ef`), the same Python gRPC stack
  as Shoal's client.

Data: siftsmall (10k x 128, 100 queries, the shipped exact ground truth) and a seeded
synthetic clustered set (100 Gaussian blobs, centres uniform in [-1,1)^128, sigma 0.1:
the recipe of `shoal bench --synthetic clustered`, not the same numbers), exact ground
truth by numpy brute force (cached under .peers/cache). Every point has three integer
payload fields s1 in [0,100), s10 in [0,10), s50 in [0,2): the filters s1 = 0,
s10 = 0, s50 = 0 match about 1%, 10% and 50% of the points; filtered ground truth is
exact (numpy over the matching points).

Per data set, the systems are started and loaded one after the other (each ingest
with the others idle), and stay up; the search levels are then interleaved: for every
ef and filter each system runs its level right after the others, so that the shared
machine's changes of speed during a run fall on all systems alike.

With --native-clients N,N, each level is repeated with compiled clients in a child
process, N at once, on the first 100 queries: `shoal bench --existing` (Rust, gRPC,
one `Search` per query) for Shoal and pgbench (C, libpq, prepared statements, one
script per query with its vector as a literal) for pgvector; their recall is the
Python level's at the same ef and filter. They show each server without the Python
client's cost per call (grpcio's is several times psycopg's).

Per system and data set: ingest (points/s, until all writes returned and a first
search answered), QPS and p50/p99 latency at each ef with recall@10, the server's CPU
time per query (utime+stime from /proc/<pid>/stat of the server's processes: shoal;
postmaster and its children; chroma and its children), client CPU per query, RSS and
PSS after load; filtered search per selectivity. Every level runs all queries once
(for recall) and then more passes up to --passes passes or --seconds seconds, and
stops at --level-seconds even inside its first pass (recall is then over the queries
answered). SearchBatch rows give the latency of one whole batch. The "other load"
column is the cores kept busy by everything else on the machine during the level.

Writes benches/results/servers-<dataset>.json (all rows), .md (the tables) and .png
(QPS vs recall@10, log y; one panel unfiltered and one per filter).

Usage: python3 benches/servers.py [--datasets siftsmall,clustered] [--n 200000] ...
       (see --help). Cargo honours CARGO_TARGET_DIR. Runs as root (apt, postgres).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".peers")
PY = os.path.join(VENV, "bin", "python")
CACHE = os.path.join(VENV, "cache")
RESULTS = os.path.join(ROOT, "benches", "results")
SIFT = os.environ.get("SHOAL_SIFTSMALL", os.path.join(ROOT, "..", "shared", "data", "siftsmall"))
PACKAGES = ["numpy", "grpcio", "grpcio-tools", "psycopg[binary]", "pgvector", "chromadb", "qdrant-client",
            "matplotlib"]
PG_BIN = "/usr/lib/postgresql/15/bin"
K, M, EFC = 10, 16, 200
FILTERS = [("s1", 0.01), ("s10", 0.10), ("s50", 0.50)]  # field == 0 matches ~fraction

if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
    if not os.path.exists(PY):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([PY, "-m", "pip", "install", "-q"] + PACKAGES)
    os.execv(PY, [PY] + sys.argv)

import numpy as np  # noqa: E402

from benchdata import clustered, exact_knn, read_vecs, write_vecs  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--datasets", default="siftsmall,clustered")
ap.add_argument("--systems", default="shoal,pgvector,chroma")
ap.add_argument("--n", type=int, default=200_000, help="points of the synthetic set")
ap.add_argument("--n-queries", type=int, default=1000, help="queries of the synthetic set")
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--efs", default="10,20,40,80,160")
ap.add_argument("--passes", type=int, default=10, help="at most this many passes over the queries per level")
ap.add_argument("--seconds", type=float, default=3.0, help="no new pass after this many seconds of a level")
ap.add_argument("--level-seconds", type=float, default=20.0,
                help="hard cap of a level: even its first pass stops here (recall is then over the queries answered)")
ap.add_argument("--shards", type=int, default=1, help="Shoal shards (one node)")
ap.add_argument("--shoal-before", metavar="PATH",
                help="a second shoal binary (e.g. built from an earlier commit), run as system 'shoal-before' "
                     "(name it in --systems) for a before/after comparison in the same run")
ap.add_argument("--qdrant-bin", metavar="PATH", help="the qdrant server binary for system 'qdrant'")
ap.add_argument("--results-name", metavar="NAME",
                help="write benches/results/NAME-<dataset>.{json,md,png} instead of servers-<dataset>.*")
ap.add_argument("--no-filters", action="store_true")
ap.add_argument("--no-batch", action="store_true", help="skip Shoal's SearchBatch rows")
ap.add_argument("--native-clients", default="", metavar="N,N",
                help="also search with compiled clients at these client counts (e.g. 1,4,16): `shoal bench "
                     "--existing` (Rust, gRPC) for Shoal and pgbench (C, libpq) for pgvector, on the first "
                     "100 queries; rows '<system> [native xN]'")
args = ap.parse_args()
EFS = [int(x) for x in args.efs.split(",")]
NATIVE = [int(x) for x in args.native_clients.split(",") if x]
NATIVE_QUERIES = 100  # pgbench takes at most 128 scripts: one per query, its vector a literal


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Cleanup: every server started here is stopped on exit, exceptions and signals.
# ---------------------------------------------------------------------------
CLEANUPS = []


def cleanup():
    while CLEANUPS:
        fn = CLEANUPS.pop()
        try:
            fn()
        except Exception as e:  # keep stopping the others
            log("cleanup:", e)


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGHUP, on_signal)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc, timeout=20):
    """SIGTERM the process group of `proc` (started with start_new_session), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# ---------------------------------------------------------------------------
# /proc: CPU time and memory of a server's processes.
# ---------------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid):
    """pid and all its descendants (by walking every process's ppid)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                parent[int(d)] = int(s[s.rfind(")") + 2:].split()[1])
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def cpu_times(pids):
    """{pid: utime+stime+cutime+cstime seconds} of the live ones. The c* fields hold
    the children a process has waited for (postgres' parallel workers, reaped by the
    postmaster), which are gone from /proc."""
    out = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            fields = s[s.rfind(")") + 2:].split()
            out[p] = sum(int(x) for x in fields[11:15]) / TICK
        except OSError:
            pass
    return out


def cpu_delta(before, after):
    """CPU seconds spent between two cpu_times() maps (processes born in between count whole)."""
    return sum(t - before.get(p, 0.0) for p, t in after.items())


def busy_seconds():
    """CPU seconds all cores spent not idle (idle and iowait excluded), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK


def memory(pids):
    """(RSS, PSS) in bytes summed over pids. PSS shares shared pages (postgres' shared
    buffers) among the processes mapping them, so it does not double-count them."""
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


# ---------------------------------------------------------------------------
# Data sets and exact ground truth.
# ---------------------------------------------------------------------------
def payloads(n, seed):
    rng = np.random.default_rng(seed + 7)
    return {"s1": rng.integers(0, 100, n), "s10": rng.integers(0, 10, n), "s50": rng.integers(0, 2, n)}


def load_dataset(name):
    os.makedirs(CACHE, exist_ok=True)
    if name == "siftsmall":
        base = read_vecs(os.path.join(SIFT, "siftsmall_base.fvecs"), np.float32)
        queries = read_vecs(os.path.join(SIFT, "siftsmall_query.fvecs"), np.float32)
        truth = read_vecs(os.path.join(SIFT, "siftsmall_groundtruth.ivecs"), np.int32)[:, :K].astype(np.int64)
        label = "siftsmall (10k x 128, 100 queries)"
        seed = args.seed
    elif name == "clustered":
        n, nq, dim, seed = args.n, args.n_queries, 128, args.seed
        base, queries = clustered(n, nq, dim, seed)
        truth = None
        label = f"clustered ({n // 1000}k x {dim}, {nq} queries, seed {seed})"
    else:
        raise SystemExit(f"unknown data set {name}")
    pay = payloads(len(base), seed)
    key = f"{name}-{len(base)}-{len(queries)}-{seed}"
    path = os.path.join(CACHE, f"truth-{key}.npz")
    if os.path.exists(path):
        cached = np.load(path)
        truths = {f: cached[f] for f in cached.files}
    else:
        log(f"{name}: exact ground truth (numpy)")
        truths = {"": truth if truth is not None else exact_knn(base, queries, K)}
        for field, _ in FILTERS:
            truths[field] = exact_knn(base, queries, K, pay[field] == 0)
        np.savez(path, **truths)
    if truth is not None:  # the shipped siftsmall truth must agree with numpy's
        assert np.mean([len(set(a) & set(b)) for a, b in zip(truth, truths[""])]) == K
    return {"name": name, "label": label, "base": base, "queries": queries, "truth": truths, "payload": pay}


def recall(found, truth):
    return float(np.mean([len(set(map(int, f[:K])) & set(map(int, t))) / K for f, t in zip(found, truth)]))


# ---------------------------------------------------------------------------
# Shoal
# ---------------------------------------------------------------------------
def shoal_stubs():
    out = os.path.join(CACHE, "shoal-stubs")
    proto = os.path.join(ROOT, "proto", "shoal", "v1", "shoal.proto")
    stamp = os.path.join(out, "stamp")
    mtime = str(os.path.getmtime(proto))
    if not (os.path.exists(stamp) and open(stamp).read() == mtime):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        subprocess.check_call([PY, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
                               f"--python_out={out}", f"--grpc_python_out={out}", proto])
        open(stamp, "w").write(mtime)
    sys.path.insert(0, out)
    from shoal.v1 import shoal_pb2, shoal_pb2_grpc
    return shoal_pb2, shoal_pb2_grpc


class Shoal:
    name = "shoal"

    def binary(self):
        log("shoal: cargo build --release -p shoal-cli")
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "shoal-cli"], cwd=ROOT)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        return os.path.join(target, "release", "shoal")

    def __init__(self):
        import grpc
        self.pb, pbg = shoal_stubs()
        binary = self.bin = self.binary()
        self.dir = tempfile.mkdtemp(prefix="shoal-bench-")
        CLEANUPS.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.out = open(os.path.join(self.dir, "stdout"), "w+")
        self.err = open(os.path.join(self.dir, "stderr"), "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--raft-listen", "127.0.0.1:0",
             "--data-dir", os.path.join(self.dir, "data")],
            stdout=self.out, stderr=self.err, start_new_session=True)
        CLEANUPS.append(lambda: kill_group(self.proc))
        addr, deadline = None, time.time() + 60
        while addr is None:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("shoal serve did not start: " + open(self.err.name).read()[-2000:])
            self.out.seek(0)
            for line in self.out.read().splitlines():
                if line.startswith("listening on "):
                    addr = line.split()[-1]
            time.sleep(0.1)
        self.addr = addr
        self.channel = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 64 << 20),
                                                           ("grpc.max_send_message_length", 64 << 20)])
        self.collections = pbg.CollectionsStub(self.channel)
        self.points = pbg.PointsStub(self.channel)
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
        self.config = f"{self.version}, 1 node, {args.shards} shard(s), native HNSW M={M} ef_construction={EFC}"
        self.coll = None

    def pids(self):
        return descendants(self.proc.pid)

    def ingest(self, ds):
        pb = self.pb
        self.coll = f"bench_{ds['name']}"
        self.collections.Create(pb.CreateCollectionRequest(
            name=self.coll, dim=ds["base"].shape[1], metric=pb.L2, shard_count=args.shards, m=M,
            ef_construction=EFC))
        base, pay = ds["base"], ds["payload"]
        # Requests are built before the clock starts (client-side encoding is not the server's cost).
        reqs = []
        for s in range(0, len(base), 1000):
            pts = []
            for i in range(s, min(s + 1000, len(base))):
                p = pb.Point(id=pb.PointId(num=i), vector=base[i].tolist())
                for f in pay:
                    p.payload[f].integer_value = int(pay[f][i])
                pts.append(p)
            reqs.append(pb.UpsertRequest(collection=self.coll, points=pts))
        started = time.perf_counter()
        for r in reqs:  # one client, one batch of 1,000 in flight
            self.points.Upsert(r)
        return time.perf_counter() - started

    def _filter(self, field):
        pb = self.pb
        return pb.Filter(must=[pb.Condition(integer=pb.MatchInteger(key=field, any=[0]))])

    def prepare(self, queries, ef, field):
        pb = self.pb
        f = self._filter(field) if field else None
        return [pb.SearchRequest(collection=self.coll, vector=q.tolist(), top_k=K, ef=ef, filter=f)
                for q in queries]

    def search(self, req):
        return [p.id.num for p in self.points.Search(req).results]

    def prepare_batch(self, queries, ef, field):
        return self.pb.SearchBatchRequest(collection=self.coll, searches=self.prepare(queries, ef, field))

    def search_batch(self, req):
        return [[p.id.num for p in r.results] for r in self.points.SearchBatch(req).responses]

    def native(self, ds, ef, field, clients, files):
        """One level with the Rust client: `shoal bench --existing`, `clients` tasks
        sending one `Search` per query over one HTTP/2 connection. Returns (queries,
        seconds, p50 ms, p99 ms, recall over the queries)."""
        out = os.path.join(files, "bench.json")
        cmd = [self.bin, "--addr", f"http://{self.addr}", "bench", "--existing", "--collection", self.coll,
               "--queries", os.path.join(files, "queries.fvecs"),
               "--ground-truth", os.path.join(files, f"truth-{field or 'none'}.ivecs"),
               "--top-k", str(K), "--ef", str(ef), "--concurrency", str(clients), "--seconds", str(args.seconds),
               "--out", out]
        if field:
            cmd += ["--filter", json.dumps({"must": [{"key": field, "integer": [0]}]})]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lv = json.load(open(out))["levels"][0]
        return lv["queries"], lv["queries"] / lv["qps"], lv["p50_ms"], lv["p99_ms"], lv["recall"]

    def drop(self):
        self.collections.Delete(self.pb.DeleteCollectionRequest(name=self.coll))


# ---------------------------------------------------------------------------
# PostgreSQL + pgvector
# ---------------------------------------------------------------------------
PGVECTOR_INSTALL = r"""
set -e
apt-get update -q
apt-get install -y -q postgresql-15 postgresql-server-dev-15
src=$(mktemp -d); mkdir -p "$src/lists/partial"
printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)" > "$src/src.sources"
o="-o Dir::Etc::sourcelist=$src/src.sources -o Dir::Etc::sourceparts=- -o Dir::State::Lists=$src/lists"
apt-get $o update && (cd "$src" && apt-get $o source --download-only pgvector)
tar xzf "$src"/pgvector_*.orig.tar.gz -C "$src" && make -C "$src"/pgvector-*/ && make -C "$src"/pgvector-*/ install
rm -rf "$src"
"""


def as_postgres(cmd, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--"] + cmd, check=True, **kw)


class ShoalBefore(Shoal):
    """The binary given by --shoal-before, not built here."""
    name = "shoal-before"

    def binary(self):
        if not args.shoal_before:
            raise SystemExit("system shoal-before needs --shoal-before PATH")
        return os.path.abspath(args.shoal_before)


class Pgvector:
    name = "pgvector"

    def __init__(self):
        if not os.path.exists("/usr/share/postgresql/15/extension/vector.control"):
            log("pgvector: installing PostgreSQL 15 and building pgvector from Debian's trixie source (PEERS.md)")
            subprocess.run(["bash", "-c", PGVECTOR_INSTALL], check=True, stdout=sys.stderr)
        import psycopg
        self.psycopg = psycopg
        self.dir = tempfile.mkdtemp(prefix="shoal-pg-")
        CLEANUPS.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8"],
                    stdout=subprocess.DEVNULL)
        self.port = free_port()
        # Memory for an in-memory HNSW build and a cache that holds table and index;
        # one parallel maintenance worker (two cores). fsync and synchronous_commit stay on.
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c shared_buffers=2GB "
                "-c maintenance_work_mem=2GB -c max_parallel_maintenance_workers=1 -c jit=off "
                "-c max_wal_size=4GB")
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-o", opts,
                     "-w", "start"], stdout=subprocess.DEVNULL)
        CLEANUPS.append(self.stop)
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.postmaster = int(f.readline())
        self.conn = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                    autocommit=True)
        self.conn.execute("CREATE EXTENSION vector")
        from pgvector.psycopg import register_vector
        register_vector(self.conn)
        pgv = self.conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()[0]
        pg = self.conn.execute("SHOW server_version").fetchone()[0]
        self.config = (f"PostgreSQL {pg.split()[0]}, pgvector {pgv}, HNSW m={M} ef_construction={EFC}, "
                       "shared_buffers 2GB, maintenance_work_mem 2GB, 1 parallel maintenance worker, jit off")
        self.plans = {}

    def stop(self):
        try:
            self.conn.close()
        except Exception:
            pass
        r = subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast",
                            "-w", "-t", "30", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            try:
                os.kill(self.postmaster, signal.SIGQUIT)
            except ProcessLookupError:
                pass

    def pids(self):
        return descendants(self.postmaster)

    def ingest(self, ds):
        base, pay = ds["base"], ds["payload"]
        n, dim = base.shape
        c = self.conn
        c.execute("DROP TABLE IF EXISTS items")
        c.execute(f"CREATE TABLE items (id int4 PRIMARY KEY, s1 int4, s10 int4, s50 int4, v vector({dim}))")
        # Binary COPY rows, built with numpy before the clock starts:
        # int16 nfields, then (int32 len, data) per field, big-endian; a vector is
        # int16 dim, int16 0, dim float4.
        row = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("id", ">i4"), ("l1", ">i4"), ("s1", ">i4"),
                        ("l2", ">i4"), ("s10", ">i4"), ("l3", ">i4"), ("s50", ">i4"), ("l4", ">i4"),
                        ("vd", ">i2"), ("vu", ">i2"), ("v", ">f4", (dim,))])
        rows = np.zeros(n, dtype=row)
        rows["nf"], rows["l0"], rows["l1"], rows["l2"], rows["l3"] = 5, 4, 4, 4, 4
        rows["l4"], rows["vd"] = 4 + 4 * dim, dim
        rows["id"], rows["s1"], rows["s10"], rows["s50"], rows["v"] = np.arange(n), pay["s1"], pay["s10"], pay["s50"], base
        payload = (b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8) + rows.tobytes() + b"\xff\xff"
        started = time.perf_counter()
        with c.cursor() as cur:
            with cur.copy("COPY items (id, s1, s10, s50, v) FROM STDIN WITH (FORMAT BINARY)") as cp:
                for s in range(0, len(payload), 8 << 20):
                    cp.write(payload[s:s + (8 << 20)])
        loaded = time.perf_counter()
        c.execute(f"CREATE INDEX items_v ON items USING hnsw (v vector_l2_ops) WITH (m={M}, ef_construction={EFC})")
        indexed = time.perf_counter()
        for f in pay:  # what a user filtering on these columns would have
            c.execute(f"CREATE INDEX ON items ({f})")
        c.execute("VACUUM ANALYZE items")
        done = time.perf_counter()
        self.sizes = {r: c.execute(f"SELECT pg_relation_size('{r}')").fetchone()[0] for r in ("items", "items_v")}
        self.phases = {"copy_s": loaded - started, "hnsw_index_s": indexed - loaded, "btree_analyze_s": done - indexed}
        log(f"pgvector: {self.phases}")
        return done - started

    def prepare(self, queries, ef, field):
        c = self.conn
        c.execute(f"SET hnsw.ef_search = {ef}")
        if field:
            c.execute("SET hnsw.iterative_scan = relaxed_order")
            sql = f"SELECT id FROM items WHERE {field} = 0 ORDER BY v <-> %s LIMIT {K}"
        else:
            c.execute("SET hnsw.iterative_scan = off")
            sql = f"SELECT id FROM items ORDER BY v <-> %s LIMIT {K}"
        plan = [r[0] for r in c.execute("EXPLAIN " + sql, (queries[0],)).fetchall()]
        self.plans[(field, ef)] = " / ".join(re.sub(r"'\[[^]]*\]'", "$1", re.sub(r"\s*\(cost=.*", "", line)).strip()
                                             for line in plan)
        self.sql = sql
        return list(queries)

    def search(self, q):
        return [r[0] for r in self.conn.execute(self.sql, (q,), prepare=True).fetchall()]

    def native(self, ds, ef, field, clients, files):
        """One level with pgbench (C, libpq): `clients` connections, prepared
        statements, one script per query with the query vector as a literal (so the
        vector is parsed once, at PREPARE, like a bound parameter). Returns (queries,
        seconds, p50 ms, p99 ms, None): pgbench does not see the ids, so the level's
        recall is the Python level's at the same ef (same server, index and settings)."""
        where = f"WHERE {field} = 0 " if field else ""
        sqls = [f"SELECT id FROM items {where}ORDER BY v <-> '[{','.join(repr(float(x)) for x in q)}]' LIMIT {K}"
                for q in ds["queries"][:NATIVE_QUERIES]]
        scripts = []
        for i, sql in enumerate(sqls):  # the same files for every level of this filter
            path = os.path.join(files, f"pg-{field or 'none'}-{i}.sql")
            if not os.path.exists(path):
                with open(path, "w") as f:
                    f.write(sql + ";\n")
            scripts += ["-f", f"{path}@1"]
        logs = os.path.join(files, "pglog")
        shutil.rmtree(logs, ignore_errors=True)
        os.makedirs(logs)
        env = dict(os.environ, PGOPTIONS=f"-c hnsw.ef_search={ef} -c hnsw.iterative_scan="
                                         f"{'relaxed_order' if field else 'off'}")
        r = subprocess.run([f"{PG_BIN}/pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients),
                            "-T", str(max(1, round(args.seconds))), "-l", "--log-prefix", os.path.join(logs, "tx"),
                            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "postgres"] + scripts,
                           check=True, capture_output=True, text=True, env=env)
        lat = []
        for name in os.listdir(logs):
            for line in open(os.path.join(logs, name)):
                lat.append(int(line.split()[2]) / 1000)
        secs = float(re.search(r"duration: (\d+) s", r.stdout).group(1))
        done = int(re.search(r"number of transactions actually processed: (\d+)", r.stdout).group(1))
        if (field, ef, "pgbench") not in self.plans:
            self.prepare(ds["queries"][:1], ef, field)  # this session's settings = PGOPTIONS above
            plan = [x[0] for x in self.conn.execute("EXPLAIN " + sqls[-1]).fetchall()]
            self.plans[(field, ef, "pgbench")] = " / ".join(
                re.sub(r"'\[[^]]*\]'", "$1", re.sub(r"\s*\(cost=.*", "", x)).strip() for x in plan)
        return done, secs, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), None

    def drop(self):
        self.conn.execute("DROP TABLE IF EXISTS items")


# ---------------------------------------------------------------------------
# Chroma
# ---------------------------------------------------------------------------
class Chroma:
    name = "chroma"

    def __init__(self):
        import chromadb
        self.chromadb = chromadb
        self.dir = tempfile.mkdtemp(prefix="shoal-chroma-")
        CLEANUPS.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.port = free_port()
        self.start()
        self.config = (f"chromadb {chromadb.__version__} (chroma run), hnsw space l2, max_neighbors {M}, "
                       f"ef_construction {EFC}, other settings default")
        self.ef = None

    def start(self):
        chromadb = self.chromadb
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        self.log = open(os.path.join(self.dir, "log"), "a")
        proc = self.proc = subprocess.Popen(
            [os.path.join(VENV, "bin", "chroma"), "run", "--path", os.path.join(self.dir, "db"),
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        CLEANUPS.append(lambda: kill_group(proc))
        deadline = time.time() + 60
        while True:
            try:
                self.client = chromadb.HttpClient(host="127.0.0.1", port=self.port,
                                                  settings=chromadb.Settings(anonymized_telemetry=False))
                self.client.heartbeat()
                break
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("chroma run did not start: " + open(self.log.name).read()[-2000:])
                time.sleep(0.3)

    def pids(self):
        return descendants(self.proc.pid)

    def ingest(self, ds):
        base, pay = ds["base"], ds["payload"]
        self.ef = EFS[-1]
        self.coll = self.client.create_collection(
            f"bench_{ds['name']}",
            configuration={"hnsw": {"space": "l2", "max_neighbors": M, "ef_construction": EFC, "ef_search": self.ef}})
        ids = [str(i) for i in range(len(base))]
        metas = [{f: int(pay[f][i]) for f in pay} for i in range(len(base))]
        lists = base.tolist()
        bs = min(5000, self.client.get_max_batch_size())
        started = time.perf_counter()
        for s in range(0, len(base), bs):
            self.coll.add(ids=ids[s:s + bs], embeddings=lists[s:s + bs], metadatas=metas[s:s + bs])
        took = time.perf_counter() - started
        assert self.coll.count() == len(base)
        return took

    def prepare(self, queries, ef, field):
        if ef != self.ef:
            # The server keeps the ef_search a loaded index was opened with (modify()
            # only updates the stored configuration): restart it so the index is
            # reopened with the new one, then warm it up with one unmeasured pass.
            self.coll.modify(configuration={"hnsw": {"ef_search": ef}})
            self.ef = ef
            kill_group(self.proc)
            self.start()
            self.coll = self.client.get_collection(self.coll.name)
            got = self.coll.configuration["hnsw"]["ef_search"]
            assert got == ef, got
            for q in queries:
                self.coll.query(query_embeddings=[q.tolist()], n_results=K, include=[])
        self.where = {field: 0} if field else None
        return [q.tolist() for q in queries]

    def search(self, q):
        r = self.coll.query(query_embeddings=[q], n_results=K, where=self.where, include=[])
        return [int(i) for i in r["ids"][0]]

    def drop(self):
        self.client.delete_collection(self.coll.name)
        self.ef = None


class Qdrant:
    name = "qdrant"

    def __init__(self):
        import grpc
        from qdrant_client import grpc as qg
        if not args.qdrant_bin:
            raise SystemExit("system qdrant needs --qdrant-bin PATH (a qdrant binary built from source)")
        self.qg = qg
        self.dir = tempfile.mkdtemp(prefix="shoal-qdrant-")
        CLEANUPS.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        port = free_port()
        env = dict(os.environ, QDRANT__STORAGE__STORAGE_PATH=os.path.join(self.dir, "storage"),
                   QDRANT__STORAGE__SNAPSHOTS_PATH=os.path.join(self.dir, "snapshots"),
                   QDRANT__SERVICE__HOST="127.0.0.1", QDRANT__SERVICE__HTTP_PORT=str(free_port()),
                   QDRANT__SERVICE__GRPC_PORT=str(port), QDRANT__TELEMETRY_DISABLED="true")
        self.log = open(os.path.join(self.dir, "log"), "w")
        proc = self.proc = subprocess.Popen([os.path.abspath(args.qdrant_bin)], cwd=self.dir, env=env,
                                            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        CLEANUPS.append(lambda: kill_group(proc))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                             options=[("grpc.max_receive_message_length", 64 << 20),
                                                      ("grpc.max_send_message_length", 64 << 20)])
        deadline = time.time() + 60
        while True:
            try:
                health = qg.QdrantStub(self.channel).HealthCheck(qg.HealthCheckRequest(), timeout=2)
                break
            except grpc.RpcError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("qdrant did not start: " + open(self.log.name).read()[-2000:])
                time.sleep(0.3)
        self.collections = qg.CollectionsStub(self.channel)
        self.points = qg.PointsStub(self.channel)
        self.config = (f"qdrant {health.version} (built from source), HNSW m {M} ef_construct {EFC}, "
                       f"integer payload indexes on the filter fields, other settings default")

    def pids(self):
        return descendants(self.proc.pid)

    def ingest(self, ds):
        qg = self.qg
        base, pay = ds["base"], ds["payload"]
        self.coll = f"bench_{ds['name']}"
        self.collections.Create(qg.CreateCollection(
            collection_name=self.coll,
            vectors_config=qg.VectorsConfig(params=qg.VectorParams(size=base.shape[1], distance=qg.Distance.Euclid)),
            hnsw_config=qg.HnswConfigDiff(m=M, ef_construct=EFC)))
        for f in pay:  # before the upload, so the HNSW build sees them (Qdrant's advice)
            self.points.CreateFieldIndex(qg.CreateFieldIndexCollection(
                collection_name=self.coll, field_name=f, field_type=qg.FieldType.FieldTypeInteger, wait=True))
        reqs = []
        for s in range(0, len(base), 1000):
            reqs.append(qg.UpsertPoints(collection_name=self.coll, wait=True, points=[
                qg.PointStruct(id=qg.PointId(num=i), vectors=qg.Vectors(vector=qg.Vector(
                    dense=qg.DenseVector(data=base[i].tolist()))),
                    payload={f: qg.Value(integer_value=int(pay[f][i])) for f in pay})
                for i in range(s, min(s + 1000, len(base)))]))
        started = time.perf_counter()
        for r in reqs:  # one client, one batch of 1,000 in flight, as for Shoal
            self.points.Upsert(r)
        written = time.perf_counter() - started
        # Qdrant builds its HNSW graphs in the background: count until the optimizer is
        # done (status green on two reads a second apart) so searches hit the graphs.
        green, first_green, deadline = 0, None, time.time() + 3600
        while green < 2:
            info = self.collections.Get(qg.GetCollectionInfoRequest(collection_name=self.coll)).result
            if info.status == qg.CollectionStatus.Green:
                green, first_green = green + 1, first_green or time.perf_counter()
            else:
                green, first_green = 0, None
            if time.time() > deadline:
                raise RuntimeError("qdrant did not finish indexing within an hour")
            if green < 2:
                time.sleep(1.0)
        took = first_green - started
        self.phases = {"upsert_seconds": written, "indexed_seconds": took,
                       "indexed_vectors": info.indexed_vectors_count, "segments": info.segments_count}
        return took

    def prepare(self, queries, ef, field):
        qg = self.qg
        f = (qg.Filter(must=[qg.Condition(field=qg.FieldCondition(key=field, match=qg.Match(integer=0)))])
             if field else None)
        return [qg.SearchPoints(collection_name=self.coll, vector=q.tolist(), limit=K,
                                params=qg.SearchParams(hnsw_ef=ef), filter=f) for q in queries]

    def search(self, req):
        return [p.id.num for p in self.points.Search(req).result]

    def drop(self):
        self.collections.Delete(self.qg.DeleteCollection(collection_name=self.coll))


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------
def level(system, ds, ef, field, batch=False):
    """One sweep level: every query once (recall), then more passes while under
    --passes and --seconds. Returns a row."""
    queries = ds["queries"]
    truth = ds["truth"][field or ""]
    if batch:
        req = system.prepare_batch(queries, ef, field)
        run = lambda: [system.search_batch(req)]  # noqa: E731
    else:
        reqs = system.prepare(queries, ef, field)
        run = None
    pids = system.pids()
    cpu0, client0, busy0 = cpu_times(pids), time.process_time(), busy_seconds()
    lat, found, passes = [], None, 0
    started = time.perf_counter()
    # A batch pass is one call: allow more of them, so that the time bound, not the
    # pass count, ends the level and /proc's 10 ms CPU ticks add up to something.
    max_passes = args.passes * (50 if batch else 1)
    while passes < max_passes and (passes == 0 or time.perf_counter() - started < args.seconds):
        out = []
        if batch:
            t = time.perf_counter()
            out = run()[0]
            lat.append(time.perf_counter() - t)
        else:
            for r in reqs:
                t = time.perf_counter()
                out.append(system.search(r))
                lat.append(time.perf_counter() - t)
                if t - started > args.level_seconds:
                    break
        found = found or out
        passes += 1
        if time.perf_counter() - started > args.level_seconds:
            break
    elapsed = time.perf_counter() - started
    cpu = cpu_delta(cpu0, cpu_times(set(pids) | set(system.pids())))
    client = time.process_time() - client0
    # Cores kept busy by everything else on the machine during the level (other
    # engineers' builds): a disturbed level shows here.
    other = max(0.0, busy_seconds() - busy0 - cpu - client) / elapsed
    n = len(lat) * (len(queries) if batch else 1)
    lat_ms = np.array(lat) * 1000
    name = system.name + (" (SearchBatch)" if batch else "")
    return {"dataset": ds["name"], "system": name, "filter": f"{field} = 0" if field else None,
            "selectivity": float(np.mean(ds["payload"][field] == 0)) if field else 1.0,
            "ef": ef, "recall": recall(found, truth[:len(found)]), "recall_queries": len(found), "n_queries": len(queries), "qps": n / elapsed,
            "p50_ms": float(np.percentile(lat_ms, 50)),
            "p99_ms": float(np.percentile(lat_ms, 99)),
            "latency_unit": "per batch" if batch else "per query",
            "server_cpu_ms_per_query": cpu * 1000 / n, "client_cpu_ms_per_query": client * 1000 / n,
            "queries": n, "passes": passes, "seconds": elapsed, "other_cores_busy": other}


def native_files(ds):
    """The first NATIVE_QUERIES queries and their exact (filtered) top-k, as files."""
    d = tempfile.mkdtemp(prefix="shoal-native-")
    CLEANUPS.append(lambda: shutil.rmtree(d, ignore_errors=True))
    q = ds["queries"][:NATIVE_QUERIES]
    write_vecs(os.path.join(d, "queries.fvecs"), q.astype(np.float32))
    for field, truth in ds["truth"].items():
        write_vecs(os.path.join(d, f"truth-{field or 'none'}.ivecs"), np.asarray(truth[:len(q), :K], dtype=np.int32))
    return d


def native_level(system, ds, ef, field, clients, files, rows):
    """A level with the system's compiled client in a child process (`clients`
    concurrent clients): QPS, latency and CPU as in `level`, the client's CPU from the
    reaped child. Recall is the Python level's at the same ef and filter."""
    pids = system.pids()
    cpu0, busy0, child0 = cpu_times(pids), busy_seconds(), os.times()
    n, secs, p50, p99, own_recall = system.native(ds, ef, field, clients, files)
    cpu = cpu_delta(cpu0, cpu_times(set(pids) | set(system.pids())))
    t = os.times()
    client = (t.children_user - child0.children_user) + (t.children_system - child0.children_system)
    other = max(0.0, busy_seconds() - busy0 - cpu - client) / secs
    py = next(r for r in rows if r["system"] == system.name and r["ef"] == ef
              and r["filter"] == (f"{field} = 0" if field else None))
    return {"dataset": ds["name"], "system": f"{system.name} [native x{clients}]", "clients": clients,
            "filter": py["filter"], "selectivity": py["selectivity"], "ef": ef, "recall": py["recall"],
            "recall_queries": py["recall_queries"], "n_queries": py["n_queries"], "native_recall": own_recall,
            "native_queries": min(NATIVE_QUERIES, len(ds["queries"])), "qps": n / secs,
            "p50_ms": p50, "p99_ms": p99, "latency_unit": "per query",
            "server_cpu_ms_per_query": cpu * 1000 / n, "client_cpu_ms_per_query": client * 1000 / n,
            "queries": n, "passes": None, "seconds": secs, "other_cores_busy": other}


def fmt_row(r):
    part = r.get("recall_queries", 0) < r.get("n_queries", 0)
    rec = f"{r['recall']:.3f}" + (f" ({r['recall_queries']} q)" if part else "")
    return (f"| {r['system']} | {r['filter'] or '-'} | {r['ef']} | {rec} | {r['qps']:,.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu_ms_per_query']:.3f} | "
            f"{r['client_cpu_ms_per_query']:.3f} | {r['other_cores_busy']:.2f} |")


def start_system(cls, ds, result):
    """Starts one system, ingests the data set, warms it up and measures its memory.
    The server stays up (idle) until the whole data set is done."""
    log(f"{ds['name']}: starting {cls.name}")
    system = cls()
    result["config"][system.name] = system.config
    idle_rss, idle_pss = memory(system.pids())
    cpu0, busy0, client0 = cpu_times(system.pids()), busy_seconds(), time.process_time()
    log(f"{ds['name']}: {system.name}: ingest {len(ds['base'])} points")
    took = system.ingest(ds)
    req = system.prepare(ds["queries"][:1], EFS[-1], None)[0]
    t = time.perf_counter()
    first = system.search(req)
    first_s = time.perf_counter() - t
    assert len(first) == K, first
    ingest_cpu = cpu_delta(cpu0, cpu_times(system.pids()))
    other = max(0.0, busy_seconds() - busy0 - ingest_cpu - (time.process_time() - client0)) / (took + first_s)
    n = len(ds["base"])
    ing = {"system": system.name, "points": n, "write_seconds": took, "first_search_seconds": first_s,
           "points_per_s": n / (took + first_s), "server_cpu_s": ingest_cpu,
           "server_cpu_us_per_point": ingest_cpu * 1e6 / n, "other_cores_busy": other}
    if hasattr(system, "phases"):
        ing["phases"] = system.phases
    if hasattr(system, "sizes"):
        ing["relation_bytes"] = system.sizes
    result["ingest"].append(ing)
    log(f"{ds['name']}: {system.name}: {ing}")
    # Warm-up: one pass at the largest ef, unmeasured (its rate only logged).
    reqs = system.prepare(ds["queries"], EFS[-1], None)
    t = time.perf_counter()
    for r in reqs:
        system.search(r)
    log(f"{ds['name']}: {system.name}: warm-up pass at ef {EFS[-1]}: {len(reqs) / (time.perf_counter() - t):,.0f} QPS")
    rss, pss = memory(system.pids())
    result["memory"].append({"system": system.name, "points": n, "rss_bytes": rss, "pss_bytes": pss,
                             "idle_rss_bytes": idle_rss, "idle_pss_bytes": idle_pss,
                             "processes": len(system.pids())})
    return system


def run_dataset(names, ds, result, partial):
    """All systems on one data set. Each system is started and loaded in turn (the
    others idle); then the search levels are *interleaved*: for every ef and filter,
    each system runs its level right after the others, so that a change in this
    shared machine's speed during the run (other tenants, host load) falls on all of
    them alike instead of on whichever system ran at the time."""
    systems = []
    try:
        for name in names:
            systems.append(start_system(CLASSES[name], ds, result))
            with open(partial, "w") as f:  # kept if a later system fails
                json.dump(result, f, indent=1)
        fields = [None] + ([] if args.no_filters else [f for f, _ in FILTERS])
        for ef in EFS:  # ef outer: Chroma restarts once per ef
            for field in fields:
                for system in systems:
                    batches = [False]
                    if field is None and hasattr(system, "search_batch") and not args.no_batch:
                        batches.append(True)
                    for batch in batches:
                        row = level(system, ds, ef, field, batch)
                        result["rows"].append(row)
                        log(fmt_row(row))
            with open(partial, "w") as f:
                json.dump(result, f, indent=1)
        native = [x for x in systems if hasattr(x, "native")]
        if NATIVE and native:
            files = native_files(ds)
            for clients in NATIVE:
                for ef in EFS:
                    for field in fields:
                        for system in native:
                            row = native_level(system, ds, ef, field, clients, files, result["rows"])
                            result["rows"].append(row)
                            log(fmt_row(row))
        for system in systems:
            if getattr(system, "plans", None):
                result["pg_plans"] = {f"{k[0] or 'none'} ef={k[1]}" + "".join(f" {x}" for x in k[2:]): v
                                      for k, v in system.plans.items()}
            if system.name == "shoal":
                try:
                    result["shoal_log_tail"] = open(system.err.name).read()[-3000:]
                except OSError:
                    pass
    finally:
        while CLEANUPS:
            CLEANUPS.pop()()


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def best(rows, system, target, field):
    ok = [r for r in rows if r["system"] == system and r["filter"] == field and r["recall"] >= target]
    if not ok:
        return None
    return max(ok, key=lambda r: r["qps"])


def report(ds, result):
    rows = result["rows"]
    lines = [f"## {ds['label']}", "", f"k = {K}, L2, one Python client, one query per call unless marked SearchBatch; "
             f"[native xN]: N compiled clients (Shoal: `shoal bench --existing`, Rust gRPC; pgvector: pgbench, "
             f"prepared) on the first {NATIVE_QUERIES} queries, recall taken from the Python row of the same ef "
             f"and filter.", ""]
    for s, c in result["config"].items():
        lines.append(f"- {s}: {c}")
    lines += ["", "Ingest (until every write returned and a first search was answered):", "",
              "| system | points | points/s | write (s) | first search (s) | server CPU (µs/point) | other load |",
              "|---|---|---|---|---|---|---|"]
    for i in result["ingest"]:
        lines.append(f"| {i['system']} | {i['points']:,} | {i['points_per_s']:,.0f} | {i['write_seconds']:.1f} | "
                     f"{i['first_search_seconds']:.3f} | {i['server_cpu_us_per_point']:.0f} | {i['other_cores_busy']:.2f} |")
    phased = [i for i in result["ingest"] if i.get("phases")]
    if phased:
        lines += [""] + [f"- {i['system']} ingest phases: " + ", ".join(
            f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}" for k, v in i["phases"].items())
            for i in phased]
    lines += ["", "Memory after load and a warm-up pass (summed over the server's processes; PSS splits shared "
              "pages, e.g. postgres' shared buffers, among the processes mapping them):", "",
              "| system | RSS (MiB) | PSS (MiB) | before load: RSS / PSS (MiB) | growth per million vectors, RSS / PSS (GiB) |",
              "|---|---|---|---|---|"]
    for m in result["memory"]:
        per = 1e6 / m["points"] / 2**30
        lines.append(f"| {m['system']} | {m['rss_bytes'] / 2**20:,.0f} | {m['pss_bytes'] / 2**20:,.0f} | "
                     f"{m['idle_rss_bytes'] / 2**20:,.0f} / {m['idle_pss_bytes'] / 2**20:,.0f} | "
                     f"{(m['rss_bytes'] - m['idle_rss_bytes']) * per:.2f} / {(m['pss_bytes'] - m['idle_pss_bytes']) * per:.2f} |")
    for m in result["memory"]:
        if m["system"] == "shoal":
            n, dim = m["points"], ds["base"].shape[1]
            stride = -(-dim // 16) * 16
            vectors = n * stride * 4
            level0 = n * (1 + 2 * M) * 4
            upper = n / (M - 1) * (1 + M) * 4 + n * (8 + 1 + 1 + 1)  # expected upper lists; pointer, level, lock, flags
            grown = m["rss_bytes"] - m["idle_rss_bytes"]
            rest = grown - vectors - level0 - upper
            mib = lambda b: f"{b / 2**20:,.1f} MiB ({b / n:,.0f} B/point)"  # noqa: E731
            lines += ["", f"Shoal's RSS growth ({mib(grown)}), estimated: raw vectors {mib(vectors)}; "
                      f"layer-0 links (1 + 2M u32 per node) {mib(level0)}; upper layers and per-node bookkeeping "
                      f"{mib(upper)}; the rest (payloads, id maps, storage, allocator) {mib(rest)}."]
    lines += ["", "Searches (other load: cores kept busy by other processes on the machine during the level, "
              f"out of 2; \"(N q)\": the level hit --level-seconds and recall is over its first N queries):", "",
              "| system | filter | ef | recall@10 | QPS | p50 (ms) | p99 (ms) | server CPU (ms/query) | client CPU (ms/query) | other load |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    order = {s: i for i, s in enumerate(dict.fromkeys(r["system"] for r in rows))}
    fields = [None] + [f"{f} = 0" for f, _ in FILTERS]
    lines += [fmt_row(r) for r in sorted(rows, key=lambda r: (fields.index(r["filter"]), order[r["system"]], r["ef"]))]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for field in [None] + [f"{f} = 0" for f, _ in FILTERS]:
        if not any(r["filter"] == field for r in rows):
            continue
        sel = [r for r in rows if r["filter"] == field]
        here = [s for s in systems if any(r["system"] == s for r in sel)]
        title = "unfiltered" if field is None else f"filter {field} (selectivity {sel[0]['selectivity']:.3f})"
        lines += ["", f"Best QPS at recall@10 >= target, {title} (ratio: shoal per-query Search / other, with the same "
                  "client kind: Python, or [native xN] against [native xN]; server CPU ms/query of that row)", "",
                  "| target | " + " | ".join(here) + " |", "|---" * (len(here) + 1) + "|"]
        for target in (0.90, 0.95, 0.99):
            cells = []
            for s in here:
                ref = "shoal" + (s[s.index(" ["):] if " [" in s else "")
                ours = best(rows, ref, target, field)
                b = best(rows, s, target, field)
                if b is None:
                    top = max(r["recall"] for r in sel if r["system"] == s)
                    cells.append(f"not reached (max {top:.3f})")
                elif s == ref or ours is None or "SearchBatch" in s:
                    cells.append(f"{b['qps']:,.0f} ({b['server_cpu_ms_per_query']:.3f} ms)")
                else:
                    cells.append(f"{b['qps']:,.0f} ({ours['qps'] / b['qps']:.2f}x; {b['server_cpu_ms_per_query']:.3f} ms)")
            lines.append(f"| {target:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(ds, result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    fields = [None] + [f"{f} = 0" for f, _ in FILTERS if any(r["filter"] == f"{f} = 0" for r in rows)]
    cols = 2 if len(fields) > 1 else 1
    rows_n = -(-len(fields) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.5 * cols, 4.5 * rows_n), squeeze=False)
    systems = list(dict.fromkeys(r["system"] for r in rows))
    colours = {"shoal": "tab:blue", "shoal-before": "tab:gray", "shoal (SearchBatch)": "tab:cyan", "pgvector": "tab:orange", "chroma": "tab:green",
               "qdrant": "tab:red"}
    for ax, field in zip(axes.flat, fields):
        for s in systems:
            pts = sorted([(r["ef"], r["recall"], r["qps"]) for r in rows if r["system"] == s and r["filter"] == field])
            if not pts:
                continue
            style = "s--" if "Batch" in s else "^:" if "[native" in s else "o-"
            ax.plot([p[1] for p in pts], [p[2] for p in pts], style, label=s, color=colours.get(s.split(" [")[0]),
                    alpha=0.6 if "[native" in s and not s.endswith("x1]") else 1.0)
            for ef, x, y in pts:
                ax.annotate(str(ef), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("QPS")
        sel = next((r["selectivity"] for r in rows if r["filter"] == field), 1.0)
        ax.set_title("unfiltered" if field is None else f"filter {field} ({sel:.0%} of points)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(fields):]:
        ax.axis("off")
    fig.suptitle(f"{ds['label']}: QPS vs recall@10 (points labelled with ef), one Python client "
                 f"unless [native xN], 2 shared cores")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    os.makedirs(RESULTS, exist_ok=True)
    for name in args.datasets.split(","):
        ds = load_dataset(name)
        result = {"dataset": name, "label": ds["label"], "k": K, "m": M, "ef_construction": EFC, "efs": EFS,
                  "passes": args.passes, "seconds": args.seconds, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "load_before": os.getloadavg(), "command": " ".join(sys.argv), "config": {}, "ingest": [],
                  "memory": [], "rows": []}
        base = os.path.join(RESULTS, f"{args.results_name or 'servers'}-{name}")
        run_dataset(args.systems.split(","), ds, result, base + ".partial.json")
        result["load_after"] = os.getloadavg()
        md = report(ds, result)
        print(md, flush=True)
        with open(base + ".json", "w") as f:
            json.dump(result, f, indent=1)
        os.remove(base + ".partial.json")
        with open(base + ".md", "w") as f:
            f.write(md)
        chart(ds, result, base + ".png")
        log(f"wrote {base}.json/.md/.png")


CLASSES = {"shoal": Shoal, "shoal-before": ShoalBefore, "pgvector": Pgvector, "chroma": Chroma, "qdrant": Qdrant}

if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
