"""Data sets shared by the side-by-side scripts (`peers.py`, `servers.py`): fvecs/ivecs
reading and writing, the seeded clustered recipe, and exact L2 ground truth.

Imported by those scripts once they run inside their virtualenv (needs numpy only);
it must never start processes or touch the network.
"""
import os

import numpy as np


def read_vecs(path, dtype):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    m = a.reshape(-1, d + 1)
    assert (m[:, 0] == d).all(), path
    return np.ascontiguousarray(m[:, 1:].view(dtype))


def write_vecs(path, rows):
    """Writes 32-bit rows (float32 for fvecs, int32 for ivecs), atomically."""
    rows = np.ascontiguousarray(rows)
    assert rows.dtype.itemsize == 4, rows.dtype
    out = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.int32)
    out[:, 0] = rows.shape[1]
    out[:, 1:] = rows.view(np.int32)
    out.tofile(path + ".tmp")
    os.replace(path + ".tmp", path)


def clustered(n, nq, dim, seed):
    """`n` base vectors and `nq` queries from 100 Gaussian blobs (centres uniform in
    [-1,1)^dim, sigma 0.1), the recipe of `shoal bench --synthetic clustered` (not the
    same numbers)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1.0, 1.0, (100, dim)).astype(np.float32)
    which = rng.integers(0, 100, n + nq)
    allv = centres[which] + rng.normal(0.0, 0.1, (n + nq, dim)).astype(np.float32)
    return np.ascontiguousarray(allv[:n]), np.ascontiguousarray(allv[n:])


def exact_knn(base, queries, k, mask=None):
    """Exact top-k by L2: float32 GEMM for candidates, float64 re-ranking of the best
    4k + 50, ties by lower id."""
    idx = np.flatnonzero(mask) if mask is not None else np.arange(len(base))
    b = base[idx]
    bn = (b.astype(np.float64) ** 2).sum(1).astype(np.float32)
    out = np.empty((len(queries), k), dtype=np.int64)
    c = min(len(idx), 4 * k + 50)
    for s in range(0, len(queries), 256):
        q = queries[s:s + 256]
        d = bn[None, :] - 2.0 * (q @ b.T)
        cand = np.argpartition(d, c - 1, axis=1)[:, :c]
        for i, row in enumerate(cand):
            dd = ((b[row].astype(np.float64) - q[i].astype(np.float64)) ** 2).sum(1)
            order = np.lexsort((idx[row], dd))[:k]
            out[s + i] = idx[row[order]]
    return out
