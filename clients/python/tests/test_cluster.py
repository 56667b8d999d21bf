"""Three `shoal serve` processes on loopback: read-your-writes across nodes with
session tokens, a client given every node address, cluster status with replica
digests, and retries with failover while a node is killed (SIGKILL) under a writer.
The kill test runs last and restarts the node."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Generator, List

import numpy as np
import pytest

import shoal
from conftest import Cluster, wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def ready(cluster: Cluster) -> Generator[Cluster, None, None]:
    """The cluster, once its metadata group has a leader every node knows."""
    with shoal.Client(cluster.addresses[0]) as c:
        wait_until(lambda: c.cluster_status().metadata_leader is not None, 60, what="a metadata leader")
    yield cluster


def _name() -> str:
    return "c_" + uuid.uuid4().hex[:12]


def test_session_reads_your_writes_through_other_nodes(ready: Cluster) -> None:
    a1, a2, a3 = ready.addresses
    name = _name()
    writer = shoal.Client(a1, timeout=60)
    readers = [shoal.Client(a2, timeout=60), shoal.Client(a3, timeout=60)]
    try:
        writer.create_collection(name, dim=8, shard_count=3, replication_factor=3)
        rng = np.random.default_rng(3)
        total = 0
        for round_ in range(20):
            vecs = rng.standard_normal((25, 8)).astype(np.float32)
            ids = list(range(round_ * 25, round_ * 25 + 25))
            w = writer.upsert(name, ids=ids, vectors=vecs, payloads=[{"round": round_}] * 25)
            total += 25
            reader = readers[round_ % 2]
            # The writer's token travels with the read: the other node's replicas wait
            # until they applied it, so the write is always seen.
            assert reader.count(name, consistency="session", token=w.token) == total
            got = reader.get(name, ids[-1:], consistency="session", token=w.token)
            assert [r.id for r in got] == ids[-1:]
            hits = reader.search(name, vecs[0], top_k=1, consistency="session", token=writer.token(name))
            assert hits[0].id == ids[0]
        # a session handed to a client of another node by its tokens
        s = readers[0].session(tokens={name: writer.token(name)})
        assert s.count(name) == total
        # strong reads through any node
        assert readers[1].count(name, consistency="strong") == total
    finally:
        writer.delete_collection(name)
        for c in [writer, *readers]:
            c.close()


def test_one_client_many_addresses_and_status(ready: Cluster) -> None:
    name = _name()
    with shoal.Client(",".join(ready.addresses), timeout=60) as c:
        c.create_collection(name, dim=4, shard_count=2, replication_factor=3)
        c.upload(name, np.random.default_rng(0).standard_normal((500, 4)).astype(np.float32), ids=range(500),
                 batch_size=100)
        assert c.count(name) == 500  # session: sees its own upload

        def agree() -> shoal.ClusterStatus:
            st = c.cluster_status(digests=True)
            return st if st.digests_agree() else None  # type: ignore[return-value]

        st = wait_until(agree, 60, what="replica digests to agree")
        coll = next(x for x in st.collections if x.name == name)
        assert len(st.nodes) == 3 and all(n.reachable for n in st.nodes)
        assert all(len(s.replicas) == 3 and s.leader is not None for s in coll.shards)
        assert sum(s.replicas[0].points for s in coll.shards) == 500
        c.delete_collection(name)


async def test_async_client_across_nodes(ready: Cluster) -> None:
    name = _name()
    async with shoal.AsyncClient(list(reversed(ready.addresses)), timeout=60) as c:
        await c.create_collection(name, dim=4, replication_factor=3)
        await c.upsert(name, ids=[1, 2], vectors=[[1, 0, 0, 0], [0, 1, 0, 0]])
        results = await asyncio.gather(*(c.search(name, [1, 0, 0, 0], top_k=1) for _ in range(20)))
        assert all(r[0].id == 1 for r in results)
        await c.delete_collection(name)


def test_retries_and_failover_across_a_killed_node(ready: Cluster) -> None:
    """A client knows all three nodes and talks to node 1. Node 1 is SIGKILLed while a
    thread keeps upserting batches: every call succeeds (retried on the next node,
    after the cluster elects new leaders), and every acknowledged point is there."""
    name = _name()
    policy = shoal.RetryPolicy(max_attempts=8, initial_backoff=0.2, max_backoff=2.0)
    c = shoal.Client(ready.addresses, timeout=90, retry=policy)
    victim = ready.nodes[0]
    acked: List[int] = []
    errors: List[BaseException] = []
    stop = threading.Event()
    try:
        c.create_collection(name, dim=8, shard_count=3, replication_factor=3)
        rng = np.random.default_rng(5)

        def write() -> None:
            batch = 0
            while not stop.is_set() and batch < 400:
                ids = list(range(batch * 20, batch * 20 + 20))
                try:
                    c.upsert(name, ids=ids, vectors=rng.standard_normal((20, 8)).astype(np.float32))
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)
                    return
                acked.extend(ids)
                batch += 1

        t = threading.Thread(target=write)
        t.start()
        wait_until(lambda: len(acked) >= 200, 60, what="writes before the kill")
        assert c._t.rotation.current() == 0
        victim.kill()
        before = len(acked)
        wait_until(lambda: len(acked) >= before + 200 or errors, 90, what="writes after the kill")
        stop.set()
        t.join(timeout=120)
        assert not t.is_alive()
        assert not errors, f"a write failed despite retries: {errors[0]!r}"
        assert c._t.rotation.current() != 0  # failed over
        # reads fail over too, and see every acknowledged write
        assert c.count(name, consistency="strong") == len(acked)
        got = c.get(name, acked[-5:])
        assert [r.id for r in got] == acked[-5:]
        # with only a dead node left to try, calls give up within the policy
        dead = shoal.Client(victim.address, retry=shoal.RetryPolicy(max_attempts=3, initial_backoff=0.05),
                            timeout=10)
        with pytest.raises(shoal.Unavailable):
            dead.count(name)
        dead.close()
    finally:
        stop.set()
        if not victim.running:
            victim.restart()
        with shoal.Client(ready.addresses, timeout=90) as c2:
            wait_until(lambda: all(n.reachable for n in c2.cluster_status().nodes), 60, what="node 1 back")
            assert c2.count(name, consistency="strong") == len(acked)
            c2.delete_collection(name)
        c.close()
