"""Every client call against one real node: collections, upsert/get/delete, search
(lists and numpy in, numpy out), search_batch, scroll paging, count, cluster status,
ids (int and UUID), payload values, filters end to end, errors mapped from statuses
with the server's message, client-side validation, upload (progress, back-pressure,
generators), sessions and consistency options."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Generator, List

import numpy as np
import pytest

import shoal
from conftest import wait_until
from shoal import Field, HasId
from shoal.v1 import shoal_pb2 as pb


@pytest.fixture(scope="module")
def client(url: str) -> Generator[shoal.Client, None, None]:
    with shoal.Client(url) as c:
        yield c


@pytest.fixture()
def docs(client: shoal.Client, name: str) -> Generator[str, None, None]:
    """A 4-d cosine collection, 2 shards, 8 points with payloads."""
    client.create_collection(name, dim=4, metric="COSINE", shard_count=2)
    vecs = np.eye(4, dtype=np.float32)
    vectors = np.concatenate([vecs, vecs + 0.1]).astype(np.float32)
    payloads = [
        {"lang": "en", "year": 2019, "tags": ["a", "b"], "price": 1.5, "meta": {"src": "web"}},
        {"lang": "fr", "year": 2020, "tags": ["b"], "price": 2.5, "meta": {"src": "pdf"}},
        {"lang": "de", "year": 2021, "tags": [], "price": 3.5, "note": None},
        {"lang": "en", "year": 2022, "tags": ["c"], "price": 4.5},
        {"lang": "fr", "year": 2023, "price": 5.5},
        {"lang": "en", "year": 2024, "tags": ["a"]},
        {"lang": "es", "year": 2025, "note": None},
        {"year": 2026},
    ]
    client.upsert(name, ids=list(range(1, 9)), vectors=vectors, payloads=payloads)
    yield name
    client.delete_collection(name)


def ids(hits) -> List:  # type: ignore[no-untyped-def]
    return sorted(h.id for h in hits)


# ---- collections ----------------------------------------------------------------------

def test_collections_lifecycle(client: shoal.Client, name: str) -> None:
    info = client.create_collection(name, dim=3, metric="l2", shard_count=3, m=8, ef_construction=50)
    assert (info.name, info.dim, info.metric, info.shard_count, info.m, info.ef_construction) == \
        (name, 3, shoal.Metric.L2, 3, 8, 50)
    assert info.replication_factor == 1 and info.points_count == 0 and len(info.shards) == 3
    assert client.collection_exists(name)
    assert name in [c.name for c in client.list_collections()]
    with pytest.raises(shoal.AlreadyExists) as e:
        client.create_collection(name, dim=3)
    assert name in e.value.message and e.value.code.name == "ALREADY_EXISTS"
    client.upsert(name, ids=[1, 2], vectors=[[1, 2, 3], [4, 5, 6]])
    assert client.get_collection(name).points_count == 2
    client.delete_collection(name)
    assert not client.collection_exists(name)
    with pytest.raises(shoal.NotFound):
        client.get_collection(name)
    with pytest.raises(shoal.NotFound):
        client.delete_collection(name)


# ---- points ---------------------------------------------------------------------------

def test_upsert_forms_ids_and_payload_values(client: shoal.Client, name: str) -> None:
    client.create_collection(name, dim=3, metric="DOT")
    u = uuid.uuid4()
    payload = {"s": "x", "i": -(2**63), "f": 0.25, "b": True, "n": None, "l": [1, "two", [3.0]],
               "d": {"k": {"deep": [False]}}, "np": np.int64(7), "arr": np.array([1, 2])}
    w = client.upsert(name, [
        shoal.Point(1, [1, 0, 0], payload),
        {"id": u, "vector": np.array([0, 1, 0], dtype=np.float64)},
        (2**64 - 1, (0.0, 0.0, 1.0), {"max": 1}),
        (u.hex.upper().replace("-", "")[:32] if False else str(uuid.UUID(int=5)), [1, 1, 1]),
    ])
    assert w.count == 4 and w.token is not None and w.token.shards
    got = client.get(name, [1, u, 2**64 - 1, str(uuid.UUID(int=5)), 999], with_vector=True)
    assert [r.id for r in got] == [1, str(u), 2**64 - 1, str(uuid.UUID(int=5))]
    assert got[0].payload == {**payload, "np": 7, "arr": [1, 2]}
    assert got[1].payload == {} and got[2].payload == {"max": 1}
    assert isinstance(got[1].vector, np.ndarray) and got[1].vector.dtype == np.float32
    np.testing.assert_array_equal(got[1].vector, [0, 1, 0])
    assert client.get(name, 1, with_payload=False)[0].payload == {}
    # hyphen-less UUID text names the same point
    assert client.get(name, u.hex)[0].id == str(u)
    # re-upserting replaces vector and payload
    client.upsert(name, ids=[1], vectors=[[0, 0, 2]], payloads=[{"v": 2}])
    r = client.get(name, [1], with_vector=True)[0]
    assert r.payload == {"v": 2} and r.vector.tolist() == [0, 0, 2]
    d = client.delete(name, [1, 12345])
    assert d.count == 2 and client.count(name) == 3
    assert client.upsert(name, []).count == 0


def test_search_lists_numpy_scores_and_vectors(client: shoal.Client, docs: str) -> None:
    hits = client.search(docs, [1, 0, 0, 0], top_k=3)
    assert hits[0].id == 1 and hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert hits[0].payload["lang"] == "en" and hits[0].vector is None
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hits2 = client.search(docs, np.array([1, 0, 0, 0], dtype=np.float32), top_k=3, ef=32, with_vector=True,
                          with_payload=False)
    assert [h.id for h in hits2] == [h.id for h in hits]
    assert hits2[0].payload == {} and hits2[0].vector.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(hits2[0].vector), 1.0, rtol=1e-5)  # COSINE stores normalised
    assert len(client.search(docs, np.array([0, 1, 0, 0], dtype=np.float64), top_k=100)) == 8
    assert client.search(docs, (0.0, 0.0, 1.0, 0.0), top_k=1)[0].id == 3


def test_search_batch(client: shoal.Client, docs: str) -> None:
    q = np.eye(4, dtype=np.float32)
    res = client.search_batch(docs, q, top_k=2)
    assert [r[0].id for r in res] == [1, 2, 3, 4]
    res = client.search_batch(docs, [[1, 0, 0, 0], [0, 1, 0, 0]], top_k=8,
                              filter=[Field("lang") == "en", {"must": [{"key": "lang", "keyword": ["fr"]}]}])
    assert ids(res[0]) == [1, 4, 6] and ids(res[1]) == [2, 5]
    res = client.search_batch(docs, q[:2], top_k=8, filter=Field("year") >= 2024, consistency="strong")
    assert all(ids(r) == [6, 7, 8] for r in res)
    with pytest.raises(shoal.InvalidArgument):
        client.search_batch(docs, q, filter=[None])


def test_scroll_pages_and_iterator(client: shoal.Client, docs: str) -> None:
    page = client.scroll_page(docs, limit=3)
    assert [r.id for r in page.points] == [1, 2, 3] and page.next_offset == 4
    page = client.scroll_page(docs, offset=page.next_offset, limit=10, with_vector=True)
    assert [r.id for r in page.points] == [4, 5, 6, 7, 8] and page.next_offset is None
    assert page.points[0].vector is not None
    assert [r.id for r in client.scroll(docs, page_size=2)] == list(range(1, 9))
    assert [r.id for r in client.scroll(docs, page_size=3, limit=4)] == [1, 2, 3, 4]
    assert [r.id for r in client.scroll(docs, filter=Field("lang") == "fr", page_size=1)] == [2, 5]


def test_count_and_cluster_status(client: shoal.Client, docs: str) -> None:
    assert client.count(docs) == 8
    assert client.count(docs, Field("lang").any_of("en", "fr")) == 5
    assert client.count(docs, consistency="eventual") == 8
    st = client.cluster_status(digests=True)
    assert st.node_id == 1 and len(st.nodes) == 1 and st.nodes[0].reachable
    coll = next(c for c in st.collections if c.name == docs)
    assert len(coll.shards) == 2 and sum(s.replicas[0].points for s in coll.shards) == 8
    assert all(s.replicas[0].digest for s in coll.shards) and st.digests_agree()


# ---- filters ------------------------------------------------------------------------------

@pytest.mark.parametrize("flt, expected", [
    (Field("lang").any_of("en", "fr") & (Field("year") >= 2020), [2, 4, 5, 6]),
    (Field("lang").any_of("en", "fr") & Field("year") >= 2020, [2, 4, 5, 6]),  # unparenthesised
    (Field("lang") == "en", [1, 4, 6]),
    (Field("lang") != "en", [2, 3, 5, 7, 8]),
    (Field("year") == 2021, [3]),
    (Field("year").any_of([2019, 2026]), [1, 8]),
    (Field("price").between(2, 4), [2, 3]),
    ((Field("price") > 1.5) & (Field("price") < 5.5), [2, 3, 4]),
    (Field("price") <= 1.5, [1]),
    (Field("price") == 2.5, [2]),
    (Field("tags") == "a", [1, 6]),  # any element of a list
    (Field("tags").is_empty(), [3, 5, 7, 8]),
    (Field("note").is_null(), [3, 7]),
    (Field("meta.src") == "pdf", [2]),  # a path
    (HasId(1, 3, 5), [1, 3, 5]),
    ((Field("lang") == "de") | (Field("lang") == "es") | (Field("year") == 2026), [3, 7, 8]),
    (~Field("lang").any_of("en", "fr"), [3, 7, 8]),
    (~~(Field("lang") == "de"), [3]),
    ((Field("lang") == "en") & ~HasId(1), [4, 6]),
    (((Field("lang") == "fr") | (Field("lang") == "de")) & (Field("year") > 2020), [3, 5]),
    ({"must": [{"key": "lang", "keyword": ["en", "fr"]}, {"key": "year", "range": {"gte": 2020}}]}, [2, 4, 5, 6]),
    ({"should": [{"key": "year", "integer": [2019, 2020]}, {"is_null": "note"}]}, [1, 2, 3, 7]),
    ({"must_not": [{"is_empty": "tags"}], "must": [{"has_id": [1, 2, 3, 4]}]}, [1, 2, 4]),
    ({"must": [{"filter": {"should": [{"key": "lang", "keyword": ["es"]}, {"has_id": [8]}]}}]}, [7, 8]),
    ({"must": [{"keyword": {"key": "lang", "any": ["de"]}}]}, [3]),  # proto3 JSON mapping
    (pb.Filter(must=[pb.Condition(integer=pb.MatchInteger(key="year", any=[2022]))]), [4]),
])
def test_filters_end_to_end(client: shoal.Client, docs: str, flt, expected) -> None:  # type: ignore[no-untyped-def]
    assert ids(client.search(docs, [1, 1, 1, 1], top_k=8, filter=flt)) == expected
    assert client.count(docs, flt) == len(expected)
    assert sorted(r.id for r in client.scroll(docs, filter=flt)) == expected


@pytest.mark.parametrize("bad", [
    lambda: Field(""),
    lambda: Field("a").any_of(),
    lambda: Field("a").any_of("x", 1),
    lambda: Field("a").any_of(True),
    lambda: Field("a").range(),
    lambda: Field("a") >= float("nan"),
    lambda: Field("a") >= "x",
    lambda: HasId(-1),
    lambda: HasId("not-a-uuid"),
    lambda: shoal.filters.to_filter({"must": [{"key": "a"}]}),
    lambda: shoal.filters.to_filter({"maybe": []}),
    lambda: shoal.filters.to_filter({"must": [{"key": "a", "keyword": [1]}]}),
    lambda: shoal.filters.to_filter({"must": [{"key": "a", "range": {"ge": 1}}]}),
    lambda: shoal.filters.to_filter({"must": [{"keyword": {"key": "a", "nope": 1}}]}),
    lambda: shoal.filters.to_filter(Field("a") & Field("b")),
])
def test_filter_mistakes_raise_before_the_call(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(shoal.InvalidArgument):
        bad()


def test_filter_truthiness_is_an_error() -> None:
    with pytest.raises(TypeError):
        (Field("a") == 1) and (Field("b") == 2)  # noqa: B015


# ---- errors --------------------------------------------------------------------------------

def test_server_errors_map_to_exceptions_with_field_paths(client: shoal.Client, docs: str) -> None:
    with pytest.raises(shoal.InvalidArgument) as e:
        client.upsert(docs, ids=[1, 2], vectors=[[1, 0, 0, 0], [0, float("nan"), 0, 0]])
    assert "points[1].vector[1]" in e.value.message and "NaN" in e.value.message
    assert isinstance(e.value, ValueError) and e.value.code.name == "INVALID_ARGUMENT"
    with pytest.raises(shoal.InvalidArgument) as e:
        client.search(docs, [1, 0, 0], top_k=1)
    assert "dim" in e.value.message or "dimension" in e.value.message
    with pytest.raises(shoal.InvalidArgument) as e:
        client.upsert(docs, ids=[9, 9], vectors=[[1, 0, 0, 0], [0, 1, 0, 0]])
    assert "points[1].id" in e.value.message and "more than once" in e.value.message
    with pytest.raises(shoal.NotFound) as e:
        client.search("no_such_collection", [1, 0, 0, 0])
    assert "no_such_collection" in str(e.value)
    with pytest.raises(shoal.ResourceExhausted, match="top_k"):  # over --max-top-k
        client.search(docs, [1, 0, 0, 0], top_k=10**6)
    with pytest.raises(shoal.ResourceExhausted, match="10000"):
        client.upsert(docs, ids=range(10_001), vectors=np.ones((10_001, 4), dtype=np.float32))
    with pytest.raises(shoal.InvalidArgument):
        client.create_collection("bad name!", dim=4)
    # client-side, before any call
    with pytest.raises(shoal.InvalidArgument, match=r"vectors\[0\]\[2\]"):
        client.upsert(docs, ids=[1], vectors=np.array([[0, 0, np.inf, 0]], dtype=np.float32))
    for bad in (lambda: client.search(docs, [1, 0, 0, 0], top_k=0),
                lambda: client.search(docs, np.ones((2, 4))),
                lambda: client.search(docs, "abcd"),
                lambda: client.get(docs, [-1]),
                lambda: client.get(docs, ["x"]),
                lambda: client.upsert(docs, ids=[1, 2], vectors=[[1, 0, 0, 0]]),
                lambda: client.upsert(docs, ids=[1], vectors=[[1, 0, 0, 0]], payloads=[{"x": object()}]),
                lambda: client.upsert(docs, ids=[1], vectors=[[1, 0, 0, 0]], payloads=[{"x": 2**70}]),
                lambda: client.upsert(docs, ids=[1], vectors=[[1, 0, 0, 0]], payloads=[{1: 2}]),
                lambda: client.create_collection("x", dim=0),
                lambda: client.search("", [1])):
        with pytest.raises(shoal.InvalidArgument):
            bad()
    with pytest.raises(ValueError):
        client.search(docs, [1, 0, 0, 0], consistency="sometimes")


def test_unreachable_node_is_unavailable_after_bounded_retries() -> None:
    with socket_port() as port:
        c = shoal.Client(f"127.0.0.1:{port}", retry=shoal.RetryPolicy(max_attempts=3, initial_backoff=0.05),
                         timeout=10)
        started = time.monotonic()
        with pytest.raises(shoal.Unavailable):
            c.count("x")
        assert time.monotonic() - started < 5
        c2 = shoal.Client(f"127.0.0.1:{port}", retry=None, timeout=0.5)
        with pytest.raises((shoal.Unavailable, shoal.DeadlineExceeded)):
            c2.list_collections()
        c.close()
        c2.close()


def test_admin_calls_are_not_retried(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Cluster administration calls are tried once on UNAVAILABLE (whether they took
    effect is unknown); a dry-run rebalance and the status are retried like reads."""
    import asyncio

    with socket_port() as p1, socket_port() as p2:
        policy = shoal.RetryPolicy(max_attempts=4, initial_backoff=0.01)
        addrs = [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]
        c = shoal.Client(addrs, retry=policy, timeout=10)
        a = shoal.AsyncClient(addrs, retry=policy, timeout=10)
        tries: List[str] = []
        for t in (c._t, a._t):
            real = t._method

            def counting(i: int, path: str, real=real):  # type: ignore[no-untyped-def]
                tries.append(path)
                return real(i, path)

            monkeypatch.setattr(t, "_method", counting)
        once = [lambda x: x.drain_node(2), lambda x: x.move_replica("x", 0, from_node=1, to_node=2),
                lambda x: x.rebalance(), lambda x: x.rebalance(dry_run=False),
                lambda x: x.update_collection("x", replication_factor=2)]
        retried = [lambda x: x.rebalance(dry_run=True), lambda x: x.cluster_status()]

        for calls, expected in ((once, 1), (retried, 4)):
            for call in calls:
                tries.clear()
                with pytest.raises(shoal.Unavailable):
                    call(c)
                with pytest.raises(shoal.Unavailable):
                    asyncio.run(call(a))
                assert len(tries) == 2 * expected, (tries, expected)
        c.close()
        asyncio.run(a.close())


def test_cluster_administration_on_one_node(client: shoal.Client, name: str) -> None:
    st = wait_until(lambda: (lambda s: s if s.nodes[0].load and s.nodes[0].load.rss_bytes > 0 else None)(
        client.cluster_status()), 30, what="a load sample")
    n = st.nodes[0]
    assert n.id == 1 and n.state == "active" and n.voter and n.reachable and n.load is not None
    assert st.operations == [] and st.node(1) is n
    assert client.rebalance(dry_run=True) == []
    with pytest.raises(shoal.NotFound, match="node 99"):
        client.drain_node(99)
    client.create_collection(name, dim=4)
    try:
        with pytest.raises(shoal.NotFound, match="shard 3"):
            client.move_replica(name, 3, to_node=1)
        with pytest.raises(shoal.FailedPrecondition) as e:
            client.move_replica(name, 0, from_node=1)  # its last replica
        assert e.value.code.name == "FAILED_PRECONDITION"
        with pytest.raises(shoal.InvalidArgument, match="replication_factor"):
            client.update_collection(name, replication_factor=2)  # one node holds one copy
        assert client.update_collection(name, replication_factor=1).replication_factor == 1
        # A reshard on one node: the shard splits in two, every point kept once.
        client.upsert(name, ids=list(range(100)), vectors=[[float(i), 1.0, 0.0, 0.0] for i in range(100)])
        client.update_collection(name, shard_count=2)
        deadline = time.monotonic() + 60
        while client.get_collection(name).shard_count < 2:
            assert time.monotonic() < deadline, "the reshard did not finish"
            time.sleep(0.2)
        assert client.count(name) == 100
        with pytest.raises(shoal.InvalidArgument, match="shards"):
            client.update_collection(name, shard_count=2)  # never merged, nor unchanged
        for bad in (lambda: client.update_collection(name),  # nothing to change
                    lambda: client.update_collection(name, shard_count=-1),
                    lambda: client.update_collection(name, replication_factor=-1),
                    lambda: client.move_replica(name, 0),
                    lambda: client.move_replica(name, -1, to_node=1),
                    lambda: client.move_replica(name, 0, to_node="2"),  # type: ignore[arg-type]
                    lambda: client.drain_node(True)):  # type: ignore[arg-type]
            with pytest.raises(shoal.InvalidArgument):
                bad()
    finally:
        client.delete_collection(name)


class socket_port:
    """A port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *a) -> None:  # type: ignore[no-untyped-def]
        pass


def test_closed_client_raises(url: str) -> None:
    c = shoal.Client(url)
    c.list_collections()
    c.close()
    with pytest.raises(shoal.ShoalError):
        c.list_collections()


# ---- upload ----------------------------------------------------------------------------------

def test_upload_progress_backpressure_and_generators(client: shoal.Client, name: str) -> None:
    client.create_collection(name, dim=8, metric="L2", shard_count=2)
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((2500, 8)).astype(np.float32)
    seen: List[int] = []
    res = client.upload(name, vecs, ids=range(2500), payloads=({"i": i} for i in range(2500)),
                        batch_size=300, parallel=3, progress=seen.append)
    assert res.points == 2500 and res.batches == 9 and res.points_per_second > 0
    assert seen[-1] == 2500 and seen == sorted(seen) and len(seen) == 9
    assert client.count(name) == 2500
    assert client.get(name, [1234])[0].payload == {"i": 1234}

    class Bar:
        total = 0

        def update(self, n: int) -> None:
            self.total += n

    bar = Bar()
    gen_vecs = (v for v in vecs[:1000] * 2)
    res = client.upload(name, gen_vecs, ids=(i for i in range(1000)), batch_size=128, progress=bar)
    assert bar.total == 1000 and res.points == 1000 and res.batches == 8
    np.testing.assert_allclose(client.get(name, [5], with_vector=True)[0].vector, vecs[5] * 2, rtol=1e-6)
    res = client.upload(name, points=[shoal.Point(10_000 + i, vecs[i]) for i in range(10)], batch_size=4,
                        progress=True)
    assert res.points == 10 and client.count(name) == 2510
    with pytest.raises(shoal.InvalidArgument):
        client.upload(name, vecs[:10], ids=range(5))


def test_upload_limits_requests_in_flight(client: shoal.Client, name: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client.create_collection(name, dim=4)
    inflight, peak = 0, 0
    lock = threading.Lock()
    real = client._call

    def slow(req, timeout=None):  # type: ignore[no-untyped-def]
        nonlocal inflight, peak
        with lock:
            inflight += 1
            peak = max(peak, inflight)
        try:
            time.sleep(0.02)
            return real(req, timeout)
        finally:
            with lock:
                inflight -= 1

    monkeypatch.setattr(client, "_call", slow)
    produced = []

    def vectors():  # type: ignore[no-untyped-def]
        for i in range(400):
            produced.append(i)
            yield [1.0, i, 0.0, 0.0]

    res = client.upload(name, vectors(), ids=range(400), batch_size=20, parallel=2)
    assert res.points == 400 and peak == 2


# ---- consistency and sessions -----------------------------------------------------------------

def test_session_tokens_are_tracked_and_sent(client: shoal.Client, name: str) -> None:
    client.create_collection(name, dim=2, shard_count=2)
    with client.session() as s:
        assert s.token(name) is None
        w1 = s.upsert(name, ids=[1], vectors=[[1, 0]])
        w2 = s.upsert(name, ids=[2, 3, 4, 5], vectors=[[0, 1]] * 4)
        tok = s.token(name)
        assert tok == w1.token.merge(w2.token)
        assert s.get(name, [1, 2])  # read-your-writes
        # a session's writes are not the client's, but a token can be handed over
        other = client.session()
        assert other.token(name) is None
        other.add_token(name, tok.to_dict())
        assert other.token(name) == tok
        assert other.count(name, consistency="strong") == 5
    assert client.count(name) == 5  # the session closed nothing
    # a token of a collection that was deleted and created again is replaced
    client.upsert(name, ids=[9], vectors=[[1, 1]])
    old = client.token(name)
    client.delete_collection(name)
    assert client.token(name) is None
    client.create_collection(name, dim=2)
    client.upsert(name, ids=[1], vectors=[[1, 1]])
    assert client.token(name).collection_id > old.collection_id
    assert client.count(name) == 1


def test_read_options_on_the_wire(client: shoal.Client, name: str) -> None:
    client.create_collection(name, dim=2)
    s = client.session()
    s.upsert(name, ids=[1], vectors=[[1, 0]])
    r = s._read(name, None, None)
    assert r.consistency == pb.SESSION and r.token.shards[0].index > 0
    assert s._read(name, "strong", None).consistency == pb.STRONG
    assert s._read(name, "eventual", None) is None
    ev = shoal.Client(client._t.rotation.addresses, consistency="eventual")
    assert ev._read(name, None, None) is None
    assert ev._read(name, "session", None).consistency == pb.SESSION
    ev.close()


# ---- client-side coalescing -------------------------------------------------------------------

def test_concurrent_searches_are_coalesced_and_exact(url: str, name: str) -> None:
    """Threads searching through one client: results equal uncoalesced searches, some
    went out as SearchBatch calls, and a bad query fails only its own caller."""
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((2000, 16)).astype(np.float32)
    plain = shoal.Client(url, coalesce=False)
    co = shoal.Client(url)
    try:
        co.create_collection(name, dim=16, metric="L2", shard_count=2)
        co.upload(name, vecs, ids=range(2000), payloads=({"p": i % 3} for i in range(2000)), batch_size=500)
        queries = rng.standard_normal((400, 16)).astype(np.float32)
        filters = [None, Field("p") == 1, {"must": [{"key": "p", "integer": [2]}]}]
        want = [plain.search(name, q, top_k=5, ef=32, filter=filters[i % 3], consistency="strong")
                for i, q in enumerate(queries)]
        got: List = [None] * len(queries)
        errors: List[BaseException] = []

        def worker(k: int) -> None:
            try:
                for i in range(k, len(queries), 8):
                    got[i] = co.search(name, queries[i], top_k=5, ef=32, filter=filters[i % 3],
                                       consistency="strong")
                    if i % 50 == 0:  # a bad query in the middle of the others
                        with pytest.raises(shoal.InvalidArgument):
                            co.search(name, queries[i][:3], consistency="strong")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[0]
        assert [[(h.id, h.payload) for h in r] for r in got] == [[(h.id, h.payload) for h in r] for r in want]
        assert co._t.coalescer.batches > 0  # some searches did go out together
        assert not co._t.coalescer._groups  # every group went idle
    finally:
        co.delete_collection(name)
        co.close()
        plain.close()
