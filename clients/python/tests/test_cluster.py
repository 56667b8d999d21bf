"""Three `shoal serve` processes on loopback: read-your-writes across nodes with
session tokens, a client given every node address, cluster status with replica
digests, cluster administration (node state/voter/load in the status, a replication
factor raised, a replica moved, rebalance dry runs, errors of drain and move), and
retries with failover while a node is killed (SIGKILL) under a writer. The kill test
runs last and restarts the node."""

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


# ---- cluster administration -------------------------------------------------------------

def _replicas(st: shoal.ClusterStatus, name: str, shard: int = 0) -> List[shoal.ReplicaStatus]:
    coll = st.collection(name)
    assert coll is not None, f"{name} not in the status"
    return next(s for s in coll.shards if s.shard == shard).replicas


def _wait_operation_done(c: shoal.Client, op: int, timeout: float = 60) -> None:
    wait_until(lambda: op not in {o.id for o in c.cluster_status().operations}, timeout,
               what=f"operation {op} to finish")


def test_status_shows_node_state_voters_load_and_operations(ready: Cluster) -> None:
    with shoal.Client(ready.addresses, timeout=30) as c:
        # The load is sampled every 2 s: wait for every node's first sample.
        st = wait_until(lambda: (lambda s: s if all(n.reachable and n.load is not None and n.load.rss_bytes > 0
                                                    for n in s.nodes) else None)(c.cluster_status()),
                        30, what="every node reachable with a load sample")
        assert sorted(n.id for n in st.nodes) == [1, 2, 3]
        assert all(n.state == "active" and not n.draining for n in st.nodes)
        assert any(n.voter for n in st.nodes)
        for n in st.nodes:
            load = n.load
            assert isinstance(load, shoal.NodeLoad)
            assert load.cpu_percent >= 0 and load.requests_per_second >= 0
            assert load.replicas >= load.leaders >= 0 and load.points >= 0
        assert isinstance(st.operations, list)
        assert all(isinstance(o, shoal.OperationStatus) for o in st.operations)
        assert st.node(2) is not None and st.node(2).id == 2 and st.node(99) is None  # type: ignore[union-attr]


def test_update_collection_adds_a_replica(ready: Cluster) -> None:
    """A 1-shard collection with one copy goes to two: the status soon shows the shard
    on two nodes, both voting, with every point."""
    name = _name()
    with shoal.Client(ready.addresses, timeout=60) as c:
        c.create_collection(name, dim=4, shard_count=1, replication_factor=1)
        try:
            c.upsert(name, ids=range(50), vectors=np.random.default_rng(1).standard_normal((50, 4)))
            assert len(_replicas(c.cluster_status(), name)) == 1
            info = c.update_collection(name, replication_factor=2)
            assert info.name == name and info.replication_factor == 2
            assert c.get_collection(name).replication_factor == 2

            def two_voting() -> bool:
                reps = _replicas(c.cluster_status(), name)
                return (len(reps) == 2 and len({r.node for r in reps}) == 2
                        and all(r.state in ("leader", "follower") and r.points == 50 for r in reps))

            wait_until(two_voting, 60, interval=0.5, what="shard 0 on two voting replicas")
            assert c.count(name, consistency="strong") == 50
            with pytest.raises(shoal.InvalidArgument, match="replication_factor"):
                c.update_collection(name, replication_factor=4)  # more than the 3 nodes
            with pytest.raises(shoal.NotFound):
                c.update_collection(_name(), replication_factor=2)
        finally:
            c.delete_collection(name)


def test_rebalance_drain_and_move_replica(ready: Cluster) -> None:
    name = _name()
    with shoal.Client(ready.addresses, timeout=60) as c:
        plan = c.rebalance(dry_run=True)
        assert isinstance(plan, list) and all(isinstance(p, shoal.PlannedOperation) for p in plan)
        assert all(p.description and p.reason for p in plan)

        with pytest.raises(shoal.NotFound) as e:
            c.drain_node(99)
        assert "node 99" in e.value.message
        with pytest.raises(shoal.InvalidArgument):
            c.drain_node(-1)  # client-side

        c.create_collection(name, dim=4, shard_count=1, replication_factor=1)
        try:
            with pytest.raises(shoal.NotFound) as e:
                c.move_replica(name, 7, to_node=1)
            assert "shard 7" in e.value.message
            with pytest.raises(shoal.NotFound) as e:
                c.move_replica(_name(), 0, to_node=1)
            assert "collection" in e.value.message
            with pytest.raises(shoal.InvalidArgument, match="from_node, to_node"):
                c.move_replica(name, 0)  # client-side: neither end given

            holder = _replicas(c.cluster_status(), name)[0].node
            other = next(n for n in (1, 2, 3) if n != holder)
            # a node that holds the shard already cannot take it; the last replica stays
            with pytest.raises(shoal.FailedPrecondition) as refused:
                c.move_replica(name, 0, to_node=holder)
            assert f"node {holder}" in refused.value.message
            with pytest.raises(shoal.FailedPrecondition):
                c.move_replica(name, 0, from_node=holder)

            # A real move returns its operation's id, the operation finishes, nothing is lost.
            c.upsert(name, ids=range(20), vectors=np.ones((20, 4), dtype=np.float32))
            deadline = time.monotonic() + 30
            while True:
                try:
                    op = c.move_replica(name, 0, from_node=holder, to_node=other)
                    break
                except shoal.Unavailable:  # another operation on the shard: retrying is safe
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            assert isinstance(op, int) and op > 0
            _wait_operation_done(c, op)
            assert c.count(name, consistency="strong") == 20
        finally:
            c.delete_collection(name)


async def test_async_cluster_administration(ready: Cluster) -> None:
    async with shoal.AsyncClient(ready.addresses, timeout=60) as c:
        st = await c.cluster_status()
        assert len(st.nodes) == 3 and any(n.voter for n in st.nodes)
        assert all(n.state == "active" for n in st.nodes)
        assert all(n.load is not None for n in st.nodes if n.reachable)
        assert isinstance(await c.rebalance(dry_run=True), list)
        with pytest.raises(shoal.NotFound, match="node 99"):
            await c.drain_node(99)
        with pytest.raises(shoal.NotFound, match="collection"):
            await c.move_replica(_name(), 0, from_node=1, to_node=2)
        with pytest.raises(shoal.NotFound):
            await c.update_collection(_name(), replication_factor=2)


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
