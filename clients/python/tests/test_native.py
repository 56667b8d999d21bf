"""The optional compiled transport (shoal_native: tonic over pyo3): the same calls,
results, errors, retries and failover as through grpcio. Skipped unless it is
installed (`pip install ./clients/python/native`, or `SHOAL_PY_NATIVE=1 ci.sh`)."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

import shoal
from shoal import Field

pytest.importorskip("shoal_native")


def _dead_address() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def test_native_every_call_matches_grpcio(url: str, name: str) -> None:
    nat = shoal.Client(url, native=True)
    ref = shoal.Client(url)
    try:
        info = nat.create_collection(name, dim=8, metric="COSINE", shard_count=2)
        assert info.shard_count == 2 and nat.collection_exists(name)
        rng = np.random.default_rng(4)
        vecs = rng.standard_normal((600, 8)).astype(np.float32)
        res = nat.upload(name, vecs, ids=range(600), payloads=({"g": i % 4} for i in range(600)), batch_size=100)
        assert res.points == 600 and nat.count(name) == 600
        for q in vecs[:20]:
            a = nat.search(name, q, top_k=5, filter=Field("g") == 1, with_vector=True, consistency="strong")
            b = ref.search(name, q, top_k=5, filter=Field("g") == 1, with_vector=True, consistency="strong")
            assert [(h.id, h.payload) for h in a] == [(h.id, h.payload) for h in b]
            np.testing.assert_array_equal(a[0].vector, b[0].vector)
        assert [[h.id for h in r] for r in nat.search_batch(name, vecs[:5], top_k=1)] == [[i] for i in range(5)]
        assert [r.id for r in nat.get(name, [3, 1])] == [3, 1]
        assert len(list(nat.scroll(name, page_size=128))) == 600
        assert nat.cluster_status().node_id == 1
        assert nat.delete(name, [0]).count == 1 and nat.count(name) == 599
        with pytest.raises(shoal.InvalidArgument, match=r"vector"):
            nat.search(name, [1.0, 2.0])
        with pytest.raises(shoal.NotFound, match="no_such"):
            nat.count("no_such")
        with pytest.raises(shoal.AlreadyExists):
            nat.create_collection(name, dim=8)
        # threads (coalesced) through the native transport
        out = [None] * 64

        def work(k: int) -> None:
            for i in range(k, 64, 8):
                out[i] = nat.search(name, vecs[i + 1], top_k=1)[0].id

        ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=60)
        assert out == list(range(1, 65))
    finally:
        ref.delete_collection(name)
        nat.close()
        ref.close()


def test_native_failover_and_unavailable(url: str) -> None:
    c = shoal.Client([_dead_address(), url], native=True, timeout=20)
    assert isinstance(c.list_collections(), list)  # the dead node was skipped
    assert c._t.rotation.current() == 1
    c.close()
    dead = shoal.Client(_dead_address(), native=True, retry=shoal.RetryPolicy(max_attempts=2, initial_backoff=0.05),
                        timeout=10)
    with pytest.raises(shoal.Unavailable):
        dead.count("x")
    dead.close()
