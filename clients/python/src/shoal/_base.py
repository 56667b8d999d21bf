"""What the sync and asyncio clients share: building requests, parsing replies,
session tokens. Each public call is a ``_Req`` (method path, request bytes, parse
function, idempotent) that the client's transport sends."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _views, _wire
from .errors import InvalidArgument
from .filters import FilterLike, to_filter
from .models import (
    CollectionInfo,
    Consistency,
    Metric,
    PlannedOperation,
    Point,
    PointIdLike,
    ScrollPage,
    WriteResult,
    WriteToken,
)
from .v1 import shoal_pb2 as pb

_COLLECTIONS = "/shoal.v1.Collections/"
_POINTS = "/shoal.v1.Points/"
_CLUSTER = "/shoal.v1.Cluster/"
_BACKUPS = "/shoal.v1.Backups/"

_STRONG = pb.ReadOptions(consistency=pb.STRONG)
_SESSION_NO_TOKEN = pb.ReadOptions(consistency=pb.SESSION)
_EVENTUAL = pb.ReadOptions(consistency=pb.EVENTUAL)

ConsistencyLike = Union[str, Consistency]
VectorLike = Union[Sequence[float], np.ndarray]


class _Req(NamedTuple):
    path: str
    request: bytes
    parse: Any
    idempotent: bool


class _Tokens:
    """Write tokens per collection name, merged; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: Dict[str, WriteToken] = {}
        self._msgs: Dict[str, pb.ReadOptions] = {}

    def record(self, collection: str, token: Optional[WriteToken]) -> None:
        if token is None or not token.shards:
            return
        with self._lock:
            old = self._tokens.get(collection)
            new = token if old is None else old.merge(token)
            self._tokens[collection] = new
            self._msgs.pop(collection, None)

    def get(self, collection: str) -> Optional[WriteToken]:
        return self._tokens.get(collection)

    def read_options(self, collection: str) -> Optional[pb.ReadOptions]:
        m = self._msgs.get(collection)
        if m is None:
            with self._lock:
                t = self._tokens.get(collection)
                if t is None:
                    return None
                m = pb.ReadOptions(consistency=pb.SESSION, token=_wire.token_msg(t))
                self._msgs[collection] = m
        return m

    def forget(self, collection: str) -> None:
        with self._lock:
            self._tokens.pop(collection, None)
            self._msgs.pop(collection, None)

    def snapshot(self) -> Dict[str, WriteToken]:
        with self._lock:
            return dict(self._tokens)


def _name(collection: Any) -> str:
    if not isinstance(collection, str) or not collection:
        raise InvalidArgument(f"collection: expected a non-empty name, got {collection!r}")
    return collection


def _opt_uint(v: Optional[int], what: str) -> Optional[int]:
    if v is None:
        return None
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
        raise InvalidArgument(f"{what}: expected a non-negative integer, got {v!r}")
    return int(v)


def _uint(v: Any, what: str) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
        raise InvalidArgument(f"{what}: expected a non-negative integer, got {v!r}")
    return int(v)


def _ids(ids: Any, what: str = "ids") -> List[pb.PointId]:
    if isinstance(ids, (int, str, uuid.UUID, np.integer)):
        ids = [ids]
    try:
        return [_wire.point_id(i) for i in ids]
    except InvalidArgument as e:
        raise InvalidArgument(f"{what}: {e.message}") from None


def _point_parts(p: Any, k: int) -> Tuple[PointIdLike, Any, Optional[Mapping[str, Any]]]:
    if isinstance(p, Point):
        return p.id, p.vector, p.payload
    if isinstance(p, Mapping):
        try:
            return p["id"], p["vector"], p.get("payload")
        except KeyError as e:
            raise InvalidArgument(f"points[{k}]: missing {e.args[0]!r}") from None
    if isinstance(p, (tuple, list)) and len(p) in (2, 3):
        return p[0], p[1], (p[2] if len(p) == 3 else None)
    raise InvalidArgument(f"points[{k}]: expected a Point, a dict or an (id, vector[, payload]) tuple")


def encode_points(
    points: Optional[Iterable[Any]],
    ids: Optional[Iterable[PointIdLike]],
    vectors: Any,
    payloads: Optional[Iterable[Optional[Mapping[str, Any]]]],
    offset: int = 0,
) -> List[bytes]:
    """Encoded ``Point`` messages from either ``points`` or ``ids``/``vectors``/``payloads``."""
    out: List[bytes] = []
    if points is not None:
        if ids is not None or vectors is not None or payloads is not None:
            raise InvalidArgument("give either points or ids/vectors/payloads, not both")
        for k, p in enumerate(points):
            pid, vec, pl = _point_parts(p, k + offset)
            out.append(_wire.point_bytes(pid, _wire.vector_bytes(vec, f"points[{k + offset}].vector"), pl,
                                         f"points[{k + offset}]"))
        return out
    if vectors is None:
        raise InvalidArgument("vectors: required (or give points)")
    mat, rows = _wire.matrix(vectors)
    n = len(mat) if mat is not None else len(rows)  # type: ignore[arg-type]
    id_list = [str(uuid.uuid4()) for _ in range(n)] if ids is None else list(ids)
    if len(id_list) != n:
        raise InvalidArgument(f"ids: {len(id_list)} ids for {n} vectors")
    pl_list = [None] * n if payloads is None else list(payloads)
    if len(pl_list) != n:
        raise InvalidArgument(f"payloads: {len(pl_list)} payloads for {n} vectors")
    for k in range(n):
        vec = mat[k].tobytes() if mat is not None else rows[k]  # type: ignore[index]
        out.append(_wire.point_bytes(id_list[k], vec, pl_list[k], f"points[{k + offset}]"))
    return out


def upload_batches(
    ids: Optional[Iterable[PointIdLike]],
    vectors: Any,
    payloads: Optional[Iterable[Optional[Mapping[str, Any]]]],
    points: Optional[Iterable[Any]],
    batch_size: int,
) -> Iterator[List[bytes]]:
    """Encoded batches, built lazily: iterables (generators) are consumed one batch at
    a time, so memory stays bounded however large the upload."""
    if batch_size < 1:
        raise InvalidArgument("batch_size: expected a positive integer")
    if points is not None:
        if ids is not None or vectors is not None or payloads is not None:
            raise InvalidArgument("give either points or ids/vectors/payloads, not both")
        batch: List[Any] = []
        done = 0
        for p in points:
            batch.append(p)
            if len(batch) == batch_size:
                yield encode_points(batch, None, None, None, done)
                done += len(batch)
                batch = []
        if batch:
            yield encode_points(batch, None, None, None, done)
        return
    if vectors is None:
        raise InvalidArgument("vectors: required (or give points)")
    if isinstance(vectors, np.ndarray):
        if vectors.ndim != 2:
            raise InvalidArgument(f"vectors: expected a 2-d array (n, dim), got shape {vectors.shape}")
        n = len(vectors)
        id_iter = iter(ids) if ids is not None else None
        pl_iter = iter(payloads) if payloads is not None else None
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            bids = _take(id_iter, stop - start, "ids") if id_iter is not None else None
            bpl = _take(pl_iter, stop - start, "payloads") if pl_iter is not None else None
            yield encode_points(None, bids, vectors[start:stop], bpl, start)
        return
    id_iter = iter(ids) if ids is not None else None
    pl_iter = iter(payloads) if payloads is not None else None
    done = 0
    vec_batch: List[Any] = []
    for v in vectors:
        vec_batch.append(v)
        if len(vec_batch) == batch_size:
            yield _encode_list(vec_batch, id_iter, pl_iter, done)
            done += len(vec_batch)
            vec_batch = []
    if vec_batch:
        yield _encode_list(vec_batch, id_iter, pl_iter, done)


def _encode_list(vecs: List[Any], id_iter: Optional[Iterator[Any]], pl_iter: Optional[Iterator[Any]],
                 offset: int) -> List[bytes]:
    bids = _take(id_iter, len(vecs), "ids") if id_iter is not None else None
    bpl = _take(pl_iter, len(vecs), "payloads") if pl_iter is not None else None
    return encode_points(None, bids, vecs, bpl, offset)


def _take(it: Iterator[Any], n: int, what: str) -> List[Any]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            raise InvalidArgument(f"{what}: fewer {what} than vectors") from None
    return out


class _Api:
    """Request building shared by :class:`~shoal.Client` and :class:`~shoal.AsyncClient`."""

    _tokens: _Tokens
    _consistency: Consistency

    # ---- session tokens ----

    def token(self, collection: str) -> Optional[WriteToken]:
        """The merged token of this client's (or session's) writes to ``collection``."""
        return self._tokens.get(collection)

    def add_token(self, collection: str, token: Union[WriteToken, Mapping[str, Any]]) -> None:
        """Adopt a token from elsewhere (another client or process): later SESSION
        reads of ``collection`` see those writes too."""
        if isinstance(token, Mapping):
            token = WriteToken.from_dict(token)
        self._tokens.record(collection, token)

    def _record(self, collection: str, resp: bytes) -> WriteResult:
        msg = pb.WriteResponse.FromString(resp)
        tok = _wire.token(msg.token) if msg.HasField("token") else None
        self._tokens.record(collection, tok)
        return WriteResult(msg.count, tok)

    def _read(self, collection: str, consistency: Optional[ConsistencyLike],
              token: Optional[WriteToken]) -> Optional[pb.ReadOptions]:
        c = self._consistency if consistency is None else Consistency.parse(consistency)
        if c is Consistency.SESSION:
            if token is not None:
                mine = self._tokens.get(collection)
                merged = token.merge(mine) if mine is not None else token
                return pb.ReadOptions(consistency=pb.SESSION, token=_wire.token_msg(merged))
            return self._tokens.read_options(collection) or _SESSION_NO_TOKEN
        if c is Consistency.STRONG:
            return _STRONG
        return None  # EVENTUAL is the server's default

    # ---- collections ----

    def _req_create(self, name: str, dim: int, metric: Union[str, Metric], shard_count: Optional[int],
                    replication_factor: Optional[int], m: Optional[int], ef_construction: Optional[int]) -> _Req:
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise InvalidArgument(f"dim: expected a positive integer, got {dim!r}")
        req = pb.CreateCollectionRequest(
            name=_name(name),
            dim=int(dim),
            metric=_wire.METRIC_ENUM[Metric.parse(metric)],
            shard_count=_opt_uint(shard_count, "shard_count"),
            replication_factor=_opt_uint(replication_factor, "replication_factor"),
            m=_opt_uint(m, "m"),
            ef_construction=_opt_uint(ef_construction, "ef_construction"),
        )
        return _Req(_COLLECTIONS + "Create", req.SerializeToString(),
                    lambda b: _wire.collection_info(pb.CollectionInfo.FromString(b)), False)

    def _req_get_collection(self, name: str) -> _Req:
        return _Req(_COLLECTIONS + "Get", pb.GetCollectionRequest(name=_name(name)).SerializeToString(),
                    lambda b: _wire.collection_info(pb.CollectionInfo.FromString(b)), True)

    def _req_list(self) -> _Req:
        def parse(b: bytes) -> List[CollectionInfo]:
            return [_wire.collection_info(c) for c in pb.ListCollectionsResponse.FromString(b).collections]
        return _Req(_COLLECTIONS + "List", b"", parse, True)

    def _req_delete_collection(self, name: str) -> _Req:
        def parse(_b: bytes) -> None:
            self._tokens.forget(name)
        return _Req(_COLLECTIONS + "Delete", pb.DeleteCollectionRequest(name=_name(name)).SerializeToString(),
                    parse, False)

    def _req_update_collection(self, name: str, replication_factor: Optional[int],
                               shard_count: Optional[int] = None) -> _Req:
        rf = _opt_uint(replication_factor, "replication_factor")
        shards = _opt_uint(shard_count, "shard_count")
        if rf is None and shards is None:
            raise InvalidArgument("nothing to update: give replication_factor= or shard_count=")
        req = pb.UpdateCollectionRequest(name=_name(name), replication_factor=rf,
                                         shard_count=shards)
        # Not retried: an UNAVAILABLE reply may come after the change was recorded.
        return _Req(_COLLECTIONS + "Update", req.SerializeToString(),
                    lambda b: _wire.collection_info(pb.CollectionInfo.FromString(b)), False)

    # ---- points ----

    def _req_upsert(self, collection: str, encoded: List[bytes]) -> _Req:
        collection = _name(collection)
        return _Req(_POINTS + "Upsert", _wire.upsert_request(collection, encoded),
                    lambda b: self._record(collection, b), True)

    def _req_delete(self, collection: str, ids: Any) -> _Req:
        collection = _name(collection)
        req = pb.DeletePointsRequest(collection=collection, ids=_ids(ids))
        return _Req(_POINTS + "Delete", req.SerializeToString(), lambda b: self._record(collection, b), True)

    def _req_get(self, collection: str, ids: Any, with_payload: bool, with_vector: bool,
                 consistency: Optional[ConsistencyLike], token: Optional[WriteToken]) -> _Req:
        collection = _name(collection)
        req = pb.GetPointsRequest(collection=collection, ids=_ids(ids), with_payload=with_payload,
                                  with_vector=with_vector, read=self._read(collection, consistency, token))
        return _Req(_POINTS + "Get", req.SerializeToString(),
                    lambda b: _wire.records(_views.GetPointsResponse.FromString(b).points), True)

    def _search_parts(self, collection: str, vector: VectorLike, top_k: int, ef: Optional[int],
                      filter: Optional[FilterLike], with_payload: bool, with_vector: bool,
                      consistency: Optional[ConsistencyLike],
                      token: Optional[WriteToken]) -> Tuple[str, bytes, Optional[pb.ReadOptions], bytes]:
        """(collection, body without read options, read options, the whole request)."""
        collection = _name(collection)
        body = _wire.search_body(vector, top_k, ef, to_filter(filter), with_payload, with_vector, None)
        read = self._read(collection, consistency, token)
        whole = _wire.search_request(collection, body)
        if read is not None:
            r = read.SerializeToString()
            whole += b"\x42" + _wire.varint(len(r)) + r  # SearchRequest.read = 8
        return collection, body, read, whole

    def _req_search(self, collection: str, vector: VectorLike, top_k: int, ef: Optional[int],
                    filter: Optional[FilterLike], with_payload: bool, with_vector: bool,
                    consistency: Optional[ConsistencyLike], token: Optional[WriteToken]) -> _Req:
        _c, _b, _r, whole = self._search_parts(collection, vector, top_k, ef, filter, with_payload, with_vector,
                                               consistency, token)
        return _Req(_POINTS + "Search", whole, _parse_search, True)

    def _req_search_batch(self, collection: str, vectors: Any, top_k: int, ef: Optional[int],
                          filter: Any, with_payload: bool, with_vector: bool,
                          consistency: Optional[ConsistencyLike], token: Optional[WriteToken]) -> _Req:
        collection = _name(collection)
        if isinstance(vectors, np.ndarray):
            if vectors.ndim != 2:
                raise InvalidArgument(f"vectors: expected a 2-d array (n, dim), got shape {vectors.shape}")
            vectors = np.ascontiguousarray(vectors, dtype="<f4")
        n = len(vectors)
        if isinstance(filter, (list, tuple)):
            if len(filter) != n:
                raise InvalidArgument(f"filter: {len(filter)} filters for {n} queries")
            filters = [to_filter(f) for f in filter]
        else:
            f = to_filter(filter)
            filters = [f] * n
        bodies = [_wire.search_body(vectors[k], top_k, ef, filters[k], with_payload, with_vector, None)
                  for k in range(n)]
        req = _wire.search_batch_request(collection, bodies, self._read(collection, consistency, token))
        return _Req(_POINTS + "SearchBatch", req, _parse_search_batch, True)

    def _req_scroll(self, collection: str, offset: Optional[PointIdLike], limit: Optional[int],
                    filter: Optional[FilterLike], with_payload: bool, with_vector: bool,
                    consistency: Optional[ConsistencyLike], token: Optional[WriteToken]) -> _Req:
        collection = _name(collection)
        req = pb.ScrollRequest(
            collection=collection,
            offset=None if offset is None else _wire.point_id(offset),
            limit=_opt_uint(limit, "limit"),
            filter=to_filter(filter),
            with_payload=with_payload,
            with_vector=with_vector,
            read=self._read(collection, consistency, token),
        )
        return _Req(_POINTS + "Scroll", req.SerializeToString(), _parse_scroll, True)

    def _req_count(self, collection: str, filter: Optional[FilterLike], consistency: Optional[ConsistencyLike],
                   token: Optional[WriteToken]) -> _Req:
        collection = _name(collection)
        req = pb.CountRequest(collection=collection, filter=to_filter(filter),
                              read=self._read(collection, consistency, token))
        return _Req(_POINTS + "Count", req.SerializeToString(), lambda b: pb.CountResponse.FromString(b).count, True)

    def _req_status(self, digests: bool) -> _Req:
        return _Req(_CLUSTER + "Status", pb.ClusterStatusRequest(digests=digests).SerializeToString(),
                    lambda b: _wire.cluster_status(pb.ClusterStatus.FromString(b)), True)

    # ---- cluster administration ----
    #
    # Only a dry-run rebalance (which changes nothing) is retried on UNAVAILABLE: the
    # others record an intention in the cluster's metadata, and an UNAVAILABLE reply
    # does not say whether it was recorded (a move sent twice would be two moves).

    def _req_drain(self, node_id: int) -> _Req:
        req = pb.DrainRequest(node=_uint(node_id, "node_id"))
        return _Req(_CLUSTER + "Drain", req.SerializeToString(), _parse_nothing, False)

    def _req_move_replica(self, collection: str, shard: int, from_node: Optional[int],
                          to_node: Optional[int]) -> _Req:
        collection = _name(collection)
        shard_ = _uint(shard, "shard")
        src = _opt_uint(from_node, "from_node")
        dst = _opt_uint(to_node, "to_node")
        if src is None and dst is None:
            raise InvalidArgument("from_node, to_node: give the node that gives up a replica, the node that "
                                  "takes one, or both")
        req = pb.MoveReplicaRequest(collection=collection, shard=shard_)
        if src is not None:
            setattr(req, "from", src)  # `from` is a Python keyword
        if dst is not None:
            req.to = dst
        return _Req(_CLUSTER + "MoveReplica", req.SerializeToString(),
                    lambda b: pb.MoveReplicaResponse.FromString(b).operation, False)

    def _req_rebalance(self, dry_run: bool) -> _Req:
        def parse(b: bytes) -> List[PlannedOperation]:
            return [PlannedOperation(p.description, p.reason) for p in pb.RebalanceResponse.FromString(b).planned]
        return _Req(_CLUSTER + "Rebalance", pb.RebalanceRequest(dry_run=bool(dry_run)).SerializeToString(),
                    parse, bool(dry_run))


def _parse_nothing(_b: bytes) -> None:
    return None


_parse_search = _wire.scored_bytes


def _parse_search_batch(b: bytes) -> Any:
    return [_wire.scored(r) for r in _views.SearchBatchResponse.FromString(b).responses]


def _parse_scroll(b: bytes) -> ScrollPage:
    r = _views.ScrollResponse.FromString(b)
    nxt = _wire.from_point_id(r.next_offset) if r.HasField("next_offset") else None
    return ScrollPage(_wire.records(r.points), nxt)


# ---- backups ----


def _backup_info(b: Any) -> Any:
    from .models import BackupCollection, BackupInfo

    return BackupInfo(
        name=b.name, created_unix_ms=b.created_unix_ms, duration_ms=b.duration_ms,
        shoal_version=b.shoal_version, points=b.points, bytes=b.bytes, node=b.node,
        collections=[BackupCollection(c.name, c.points, [
            {"shard": s.shard, "applied_index": s.applied_index, "points": s.points, "bytes": s.bytes,
             "sha256": s.sha256} for s in c.shards]) for c in b.collections])


def _req_create_backup(collections: Optional[Sequence[str]], name: Optional[str]) -> _Req:
    req = pb.CreateBackupRequest(name=name or "", collections=[_name(c) for c in (collections or [])])
    return _Req(_BACKUPS + "Create", req.SerializeToString(),
                lambda b: _backup_info(pb.BackupInfo.FromString(b)), False)


def _req_list_backups() -> _Req:
    return _Req(_BACKUPS + "List", b"",
                lambda b: [_backup_info(x) for x in pb.ListBackupsResponse.FromString(b).backups], True)


def _req_delete_backup(name: str) -> _Req:
    return _Req(_BACKUPS + "Delete", pb.DeleteBackupRequest(name=name).SerializeToString(), _parse_nothing, False)


def _download_request(name: str) -> bytes:
    return pb.DownloadBackupRequest(name=name).SerializeToString()


def _chunk_of(b: bytes) -> bytes:
    return pb.BackupChunk.FromString(b).data


def _restore_messages(chunks: Iterable[bytes], name: Optional[str], collections: Optional[Sequence[str]],
                      rename: Optional[str], replication_factor: Optional[int]) -> Iterator[bytes]:
    opts = pb.RestoreOptions(backup=name or "", collections=list(collections or []), rename=rename or "",
                             replication_factor=_uint(replication_factor or 0, "replication_factor"))
    yield pb.RestoreBackupRequest(options=opts).SerializeToString()
    for c in chunks:
        yield pb.RestoreBackupRequest(chunk=c).SerializeToString()


def _parse_restored(b: bytes) -> Any:
    from .models import RestoredCollection

    return [RestoredCollection(c.name, c.points) for c in pb.RestoreBackupResponse.FromString(b).collections]


def _file_chunks(path: Any, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            c = f.read(size)
            if not c:
                return
            yield c


class _PartialFile:
    """A file written as ``path + ".partial"`` and renamed to ``path`` only when the
    block ends without an error (removed otherwise): a cut download never looks whole."""

    def __init__(self, path: Any) -> None:
        self.path, self.partial = path, f"{path}.partial"
        self.bytes = 0

    def __enter__(self) -> "_PartialFile":
        self._f = open(self.partial, "wb")
        return self

    def write_chunk(self, msg: bytes) -> None:
        data = _chunk_of(msg)
        self._f.write(data)
        self.bytes += len(data)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        import os

        self._f.close()
        if exc_type is None:
            os.replace(self.partial, self.path)
        elif os.path.exists(self.partial):
            os.remove(self.partial)
