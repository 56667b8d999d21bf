"""AsyncClient: every call awaited, concurrency on one client, async scroll and upload,
sessions, errors, and a client used from two event loops."""

from __future__ import annotations

import asyncio
from typing import List

import numpy as np
import pytest

import shoal
from shoal import Field


async def test_async_every_call(url: str, name: str) -> None:
    async with shoal.AsyncClient(url) as c:
        info = await c.create_collection(name, dim=4, metric="DOT", shard_count=2)
        assert info.metric is shoal.Metric.DOT and await c.collection_exists(name)
        assert name in [x.name for x in await c.list_collections()]
        assert (await c.get_collection(name)).shard_count == 2
        w = await c.upsert(name, ids=[1, 2, 3], vectors=np.eye(4, dtype=np.float32)[:3],
                           payloads=[{"k": "a"}, {"k": "b"}, {"k": "a"}])
        assert w.count == 3 and c.token(name) == w.token
        hits = await c.search(name, [0, 1, 0, 0], top_k=1, with_vector=True)
        assert hits[0].id == 2 and hits[0].vector.tolist() == [0, 1, 0, 0]
        res = await c.search_batch(name, np.eye(4)[:3], top_k=1, filter=Field("k") == "a")
        assert [r[0].id for r in res] == [1, 1, 3]
        assert [r.id for r in await c.get(name, [3, 1])] == [3, 1]
        page = await c.scroll_page(name, limit=2)
        assert [r.id for r in page.points] == [1, 2] and page.next_offset == 3
        assert [r.id async for r in c.scroll(name, page_size=1)] == [1, 2, 3]
        assert await c.count(name, {"must": [{"key": "k", "keyword": ["a"]}]}, consistency="strong") == 2
        st = await c.cluster_status()
        assert st.node_id == 1
        assert (await c.delete(name, [1])).count == 1
        assert await c.count(name) == 2
        with pytest.raises(shoal.NotFound):
            await c.search("missing_coll", [1, 0, 0, 0])
        with pytest.raises(shoal.InvalidArgument, match=r"vector\[0\]"):
            await c.search(name, [float("nan"), 0, 0, 0])
        await c.delete_collection(name)
        with pytest.raises(shoal.NotFound):
            await c.delete_collection(name)


async def test_async_concurrency_upload_and_sessions(url: str, name: str) -> None:
    c = shoal.AsyncClient(url)
    try:
        await c.create_collection(name, dim=16, metric="L2", shard_count=3)
        rng = np.random.default_rng(1)
        vecs = rng.standard_normal((3000, 16)).astype(np.float32)
        seen: List[int] = []
        res = await c.upload(name, vecs, ids=range(3000), payloads=({"i": i % 7} for i in range(3000)),
                             batch_size=250, parallel=4, progress=seen.append)
        assert res.points == 3000 and res.batches == 12 and seen[-1] == 3000
        assert await c.count(name) == 3000
        # many concurrent searches on one client
        results = await asyncio.gather(*(c.search(name, vecs[i], top_k=1) for i in range(200)))
        assert [r[0].id for r in results] == list(range(200))
        async with c.session() as s:  # a view: closing it leaves the client open
            await s.upsert(name, ids=[5000], vectors=[np.zeros(16)])
            assert s.token(name) is not None and c.token(name) != s.token(name)
            assert await s.count(name, Field("i").is_empty()) == 1
        assert await c.count(name) == 3001
    finally:
        await c.delete_collection(name)
        await c.close()


def test_async_client_used_from_two_event_loops(url: str, name: str) -> None:
    c = shoal.AsyncClient(url)
    asyncio.run(c.create_collection(name, dim=2))
    asyncio.run(c.upsert(name, ids=[1], vectors=[[1, 0]]))
    assert asyncio.run(c.count(name)) == 1
    asyncio.run(c.delete_collection(name))
    asyncio.run(c.close())


def test_sync_and_async_twins_share_session_tokens(url: str, name: str) -> None:
    with shoal.Client(url) as c:
        a = c.async_client()
        c.create_collection(name, dim=2)
        asyncio.run(a.upsert(name, ids=[1], vectors=[[0, 1]]))
        assert c.token(name) is not None  # written by the twin
        assert c.get(name, [1])[0].id == 1
        asyncio.run(a.close())
        c.delete_collection(name)


async def test_async_coalescing_matches_single_searches(url: str, name: str) -> None:
    rng = np.random.default_rng(12)
    vecs = rng.standard_normal((1500, 8)).astype(np.float32)
    async with shoal.AsyncClient(url) as co, shoal.AsyncClient(url, coalesce=False) as plain:
        await co.create_collection(name, dim=8, shard_count=2)
        await co.upload(name, vecs, ids=range(1500), batch_size=500)
        qs = rng.standard_normal((300, 8)).astype(np.float32)
        want = [await plain.search(name, q, top_k=3, consistency="strong") for q in qs]
        got = await asyncio.gather(*(co.search(name, q, top_k=3, consistency="strong") for q in qs))
        assert [[h.id for h in r] for r in got] == [[h.id for h in r] for r in want]
        assert co._t.coalescer().batches > 0
        # one bad query among good ones fails alone
        res = await asyncio.gather(co.search(name, qs[0]), co.search(name, qs[1][:2]), co.search(name, qs[2]),
                                   return_exceptions=True)
        assert isinstance(res[1], shoal.InvalidArgument) and not isinstance(res[0], Exception)
        assert not isinstance(res[2], Exception)
        await co.delete_collection(name)


async def test_async_failover_and_bounded_retries(url: str) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    async with shoal.AsyncClient([dead, url], timeout=20) as c:
        assert isinstance(await c.list_collections(), list)  # the dead node was skipped
        assert c._t.rotation.current() == 1
    async with shoal.AsyncClient(dead, retry=shoal.RetryPolicy(max_attempts=3, initial_backoff=0.05),
                                 timeout=10) as d:
        with pytest.raises(shoal.Unavailable):
            await d.count("x")
    with pytest.raises(ValueError):
        shoal.AsyncClient(["https://tls.example:443", "http://plain.example:7470"])
