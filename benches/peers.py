#!/usr/bin/env python3
"""Side by side, in one run, single-threaded: Shoal's index (in process, `cargo run -p
shoal-benches --bin ann`, native and hnsw_rs backends) against hnswlib and faiss
IndexHNSWFlat, all with M=16 and ef_construction=200, L2, k=10, sweeping ef.
hnswlib is also timed with all queries in one call, which removes Python's per-call
cost from its figures.

Data sets: siftsmall (10k x 128, real, the default), or `--dataset clustered`, a
seeded synthetic set (100 Gaussian blobs, centres uniform in [-1,1)^dim, sigma 0.1:
the recipe of servers.py) of `--n` points and `--n-queries` queries, written once as
fvecs/ivecs with its exact ground truth (numpy, brute force) under .peers/data/.

Installs the peers from PyPI into ./.peers (a virtualenv) on first use, as
../shared/PEERS.md describes. Prints a markdown table with build time and the resident
memory each build added (VmRSS after minus before, per vector), and the best QPS each
system reaches at recall@10 >= 0.90 / 0.95 / 0.99 with the ratio Shoal (native) /
peer; writes all rows to benches/results/peers-<data set>.json. Cargo honours
CARGO_TARGET_DIR.

Usage: python3 benches/peers.py [ef,ef,...] [--dataset clustered --n 1000000]
       [--backends native,hnsw_rs] [--systems shoal,hnswlib,faiss]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".peers")
PY = os.path.join(VENV, "bin", "python")
DATA = os.environ.get("SHOAL_SIFTSMALL", os.path.join(ROOT, "..", "shared", "data", "siftsmall"))
# QPS: the best of REPEATS timings of whole passes over the queries, at least
# MIN_QUERIES per timing (the machine is shared; the best timing is the least disturbed
# one). ann.rs does the same.
K, M, EFC, MIN_QUERIES, REPEATS = 10, 16, 200, 500, 3

if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
    if not os.path.exists(PY):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([PY, "-m", "pip", "install", "-q", "numpy", "hnswlib", "faiss-cpu", "matplotlib"])
    os.execv(PY, [PY] + sys.argv)

import numpy as np  # noqa: E402

from benchdata import clustered, exact_knn, read_vecs, write_vecs  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("efs", nargs="?", help="ef values, comma-separated (default 10..160 on siftsmall, 10..640 on clustered)")
ap.add_argument("--dataset", choices=["siftsmall", "clustered"], default="siftsmall")
ap.add_argument("--n", type=int, default=1_000_000, help="clustered: base vectors")
ap.add_argument("--n-queries", type=int, default=1000, help="clustered: queries")
ap.add_argument("--dim", type=int, default=128, help="clustered: dimension")
ap.add_argument("--seed", type=int, default=42, help="clustered: random seed")
ap.add_argument("--backends", help="Shoal backends, comma-separated (default native,hnsw_rs on siftsmall, "
                "native on clustered: hnsw_rs builds ~4x slower)")
ap.add_argument("--systems", default="shoal,hnswlib,faiss",
                help="which systems to run, comma-separated (default all three)")
ap.add_argument("--results-name", metavar="NAME",
                help="write benches/results/NAME.{json,png} instead of peers-<data set>.*")
args = ap.parse_args()
SYSTEMS = set(args.systems.split(","))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def clustered_dir():
    n, nq, dim, seed = args.n, args.n_queries, args.dim, args.seed
    name = f"clustered-{n // 1000}k"
    path = os.path.join(VENV, "data", f"{name}-{nq}q-{dim}d-seed{seed}")
    if os.path.exists(os.path.join(path, "groundtruth.ivecs")):
        return name, path
    os.makedirs(path, exist_ok=True)
    log(f"{name}: generating {n:,} x {dim} (+{nq} queries, seed {seed})")
    base, queries = clustered(n, nq, dim, seed)
    log(f"{name}: exact ground truth (numpy brute force)")
    truth = exact_knn(base, queries, 100)
    write_vecs(os.path.join(path, "base.fvecs"), base)
    write_vecs(os.path.join(path, "query.fvecs"), queries)
    write_vecs(os.path.join(path, "groundtruth.ivecs"), truth.astype(np.int32))
    return name, path


if args.dataset == "siftsmall":
    NAME, DIR = "siftsmall", None
    base = read_vecs(os.path.join(DATA, "siftsmall_base.fvecs"), np.float32)
    queries = read_vecs(os.path.join(DATA, "siftsmall_query.fvecs"), np.float32)
    truth = read_vecs(os.path.join(DATA, "siftsmall_groundtruth.ivecs"), np.int32)[:, :K]
    EFS = args.efs or "10,20,40,80,160"
    BACKENDS = args.backends or "native,hnsw_rs"
else:
    NAME, DIR = clustered_dir()
    base = read_vecs(os.path.join(DIR, "base.fvecs"), np.float32)
    queries = read_vecs(os.path.join(DIR, "query.fvecs"), np.float32)
    truth = read_vecs(os.path.join(DIR, "groundtruth.ivecs"), np.int32)[:, :K]
    EFS = args.efs or "10,20,40,80,160,320,640"
    BACKENDS = args.backends or "native"
EFS = [int(x) for x in EFS.split(",")]
PASSES = -(-MIN_QUERIES // len(queries))


def resident_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def recall(found):
    return float(np.mean([len(set(f[:K]) & set(t)) / K for f, t in zip(found, truth)]))


def measure(system, search, build_seconds, bytes_per_vector):
    rows = []
    for ef in EFS:
        found = search(ef)
        qps = 0.0
        for _ in range(REPEATS):
            started = time.perf_counter()
            for _ in range(PASSES):
                search(ef)
            qps = max(qps, PASSES * len(queries) / (time.perf_counter() - started))
        rows.append({"system": system, "dataset": NAME, "ef": ef, "recall": recall(found),
                     "qps": qps, "build_seconds": build_seconds, "n": len(base),
                     "rss_bytes_per_vector": bytes_per_vector})
    return rows


def hnswlib_rows():
    import hnswlib
    index = hnswlib.Index(space="l2", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=M, ef_construction=EFC)
    index.set_num_threads(1)
    log(f"hnswlib: building {len(base):,} vectors")
    rss, started = resident_bytes(), time.perf_counter()
    index.add_items(base, np.arange(len(base)), num_threads=1)
    build = time.perf_counter() - started
    per_vector = (resident_bytes() - rss) / len(base)

    def search(ef):
        index.set_ef(ef)
        # One query per call, as a server answers them.
        return [index.knn_query(q.reshape(1, -1), k=K, num_threads=1)[0][0] for q in queries]

    def search_batch(ef):
        # All queries in one call, still one thread: hnswlib's C++ search without
        # the Python cost of each call, for reference.
        index.set_ef(ef)
        return list(index.knn_query(queries, k=K, num_threads=1)[0])
    return (measure("hnswlib", search, build, per_vector)
            + measure(f"hnswlib ({len(queries)} queries per call)", search_batch, build, per_vector))


def faiss_rows():
    import faiss
    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(base.shape[1], M, faiss.METRIC_L2)
    index.hnsw.efConstruction = EFC
    log(f"faiss: building {len(base):,} vectors")
    rss, started = resident_bytes(), time.perf_counter()
    index.add(base)
    build = time.perf_counter() - started
    per_vector = (resident_bytes() - rss) / len(base)

    def search(ef):
        index.hnsw.efSearch = ef
        return [index.search(q.reshape(1, -1), K)[1][0] for q in queries]
    return measure("faiss IndexHNSWFlat", search, build, per_vector)


def shoal_rows():
    log(f"shoal ({BACKENDS}): building and searching")
    cmd = ["cargo", "run", "--release", "-q", "-p", "shoal-benches", "--bin", "ann", "--",
           ",".join(map(str, EFS)), BACKENDS] + ([DIR] if DIR else [])
    out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


rows = shoal_rows() if "shoal" in SYSTEMS else []
rows += hnswlib_rows() if "hnswlib" in SYSTEMS else []
rows += faiss_rows() if "faiss" in SYSTEMS else []
print(f"{NAME} ({len(base):,} x {base.shape[1]}, {len(queries)} queries), single thread, M={M}, "
      f"ef_construction={EFC}, k={K}, one query per call\n")
print("| system | ef | recall@10 | QPS | build (s) | RSS added by the build (B/vector) |\n|---|---|---|---|---|---|")
for r in rows:
    mem = r.get("rss_bytes_per_vector")
    mem = f"{mem:,.0f}" if mem is not None else "–"
    print(f"| {r['system']} | {r['ef']} | {r['recall']:.3f} | {r['qps']:,.0f} | {r['build_seconds']:.2f} | {mem} |")

systems = list(dict.fromkeys(r["system"] for r in rows))
print(f"\nBest QPS at recall@10 >= target (ratio: {systems[0]} / other)\n")
print("| target | " + " | ".join(systems) + " |")
print("|---" * (len(systems) + 1) + "|")
for target in (0.90, 0.95, 0.99):
    best = {s: max([r["qps"] for r in rows if r["system"] == s and r["recall"] >= target], default=None) for s in systems}
    ours = best[systems[0]]
    cells = []
    for s in systems:
        if best[s] is None:
            cells.append("not reached")
        elif s == systems[0] or ours is None:
            cells.append(f"{best[s]:,.0f}")
        else:
            cells.append(f"{best[s]:,.0f} ({ours / best[s]:.2f}x)")
    print(f"| {target:.2f} | " + " | ".join(cells) + " |")



def chart(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for s in systems:
        pts = sorted((r["ef"], r["recall"], r["qps"]) for r in rows if r["system"] == s)
        ax.plot([p[1] for p in pts], [p[2] for p in pts], "o-", label=s)
        for ef, x, y in pts:
            ax.annotate(str(ef), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("QPS (one thread, one query per call)")
    ax.set_title(f"{NAME} ({len(base):,} x {base.shape[1]}): QPS vs recall@10, points labelled with ef")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


results = os.path.join(ROOT, "benches", "results")
os.makedirs(results, exist_ok=True)
out = args.results_name or f"peers-{NAME}"
with open(os.path.join(results, f"{out}.json"), "w") as f:
    json.dump(rows, f, indent=1)
chart(os.path.join(results, f"{out}.png"))
print(f"\nrows: benches/results/{out}.json, chart: benches/results/{out}.png")
