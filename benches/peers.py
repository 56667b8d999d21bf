#!/usr/bin/env python3
"""Side by side, in one run, single-threaded, on siftsmall (10k x 128, L2, k=10):
Shoal's index with both backends, native and hnsw_rs (in process, `cargo run -p
shoal-benches --bin ann`), against hnswlib and faiss IndexHNSWFlat, all with M=16 and
ef_construction=200, sweeping ef. hnswlib is also timed with all queries in one call,
which removes Python's per-call cost from its figures.

Installs the peers from PyPI into ./.peers (a virtualenv) on first use, as
../shared/PEERS.md describes. Prints a markdown table, and the best QPS each system
reaches at recall@10 >= 0.90 / 0.95 / 0.99 with the ratio Shoal (native) / peer; writes
all rows to benches/results/peers-siftsmall.json. Cargo honours CARGO_TARGET_DIR.

Usage: python3 benches/peers.py [ef,ef,...]
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".peers")
PY = os.path.join(VENV, "bin", "python")
DATA = os.environ.get("SHOAL_SIFTSMALL", os.path.join(ROOT, "..", "shared", "data", "siftsmall"))
EFS = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "10,20,40,80,160").split(",")]
# QPS: the best of REPEATS timings of PASSES passes over the queries (the machine is
# shared; the best timing is the least disturbed one). ann.rs does the same.
K, M, EFC, PASSES, REPEATS = 10, 16, 200, 5, 3

if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
    if not os.path.exists(PY):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([PY, "-m", "pip", "install", "-q", "numpy", "hnswlib", "faiss-cpu"])
    os.execv(PY, [PY] + sys.argv)

import numpy as np  # noqa: E402


def read_vecs(path, dtype):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    m = a.reshape(-1, d + 1)
    assert (m[:, 0] == d).all(), path
    return np.ascontiguousarray(m[:, 1:].view(dtype))


base = read_vecs(os.path.join(DATA, "siftsmall_base.fvecs"), np.float32)
queries = read_vecs(os.path.join(DATA, "siftsmall_query.fvecs"), np.float32)
truth = read_vecs(os.path.join(DATA, "siftsmall_groundtruth.ivecs"), np.int32)[:, :K]


def recall(found):
    return float(np.mean([len(set(f[:K]) & set(t)) / K for f, t in zip(found, truth)]))


def measure(system, search, build_seconds):
    rows = []
    for ef in EFS:
        found = search(ef)
        qps = 0.0
        for _ in range(REPEATS):
            started = time.perf_counter()
            for _ in range(PASSES):
                search(ef)
            qps = max(qps, PASSES * len(queries) / (time.perf_counter() - started))
        rows.append({"system": system, "dataset": "siftsmall", "ef": ef, "recall": recall(found),
                     "qps": qps, "build_seconds": build_seconds})
    return rows


def hnswlib_rows():
    import hnswlib
    index = hnswlib.Index(space="l2", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=M, ef_construction=EFC)
    index.set_num_threads(1)
    started = time.perf_counter()
    index.add_items(base, np.arange(len(base)), num_threads=1)
    build = time.perf_counter() - started

    def search(ef):
        index.set_ef(ef)
        # One query per call, as a server answers them.
        return [index.knn_query(q.reshape(1, -1), k=K, num_threads=1)[0][0] for q in queries]

    def search_batch(ef):
        # All queries in one call, still one thread: hnswlib's C++ search without
        # the Python cost of each call, for reference.
        index.set_ef(ef)
        return list(index.knn_query(queries, k=K, num_threads=1)[0])
    return measure("hnswlib", search, build) + measure("hnswlib (100 queries per call)", search_batch, build)


def faiss_rows():
    import faiss
    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(base.shape[1], M, faiss.METRIC_L2)
    index.hnsw.efConstruction = EFC
    started = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - started

    def search(ef):
        index.hnsw.efSearch = ef
        return [index.search(q.reshape(1, -1), K)[1][0] for q in queries]
    return measure("faiss IndexHNSWFlat", search, build)


def shoal_rows():
    out = subprocess.run(["cargo", "run", "--release", "-q", "-p", "shoal-benches", "--bin", "ann", "--",
                          ",".join(map(str, EFS))], cwd=ROOT, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


rows = shoal_rows() + hnswlib_rows() + faiss_rows()
print(f"siftsmall, single thread, M={M}, ef_construction={EFC}, k={K}, one query per call\n")
print("| system | ef | recall@10 | QPS | build (s) |\n|---|---|---|---|---|")
for r in rows:
    print(f"| {r['system']} | {r['ef']} | {r['recall']:.3f} | {r['qps']:,.0f} | {r['build_seconds']:.2f} |")

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

os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
with open(os.path.join(ROOT, "benches", "results", "peers-siftsmall.json"), "w") as f:
    json.dump(rows, f, indent=1)
