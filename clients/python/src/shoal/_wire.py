"""Python values <-> wire messages.

Vectors are written straight into the wire format: a proto3 ``repeated float`` is
packed, i.e. its bytes on the wire are the vector's little-endian float32 bytes. So a
request is the protobuf encoding of its small fields followed by the vector field
appended as ``tag, length, raw bytes`` (protobuf parsers accept fields in any order),
and a numpy vector never becomes a list of Python floats.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from uuid import UUID

import numpy as np

from .errors import InvalidArgument
from .models import (
    ClusterStatus,
    CollectionInfo,
    CollectionStatus,
    Metric,
    NodeLoad,
    NodeStatus,
    OperationStatus,
    PointId,
    PointIdLike,
    Record,
    ReplicaStatus,
    ScoredPoint,
    ShardInfo,
    ShardStatus,
    WriteToken,
)
from . import _views
from .v1 import shoal_pb2 as pb

_U64 = 2**64
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_LITTLE = np.little_endian


# ---- ids ---------------------------------------------------------------------------

def point_id(i: PointIdLike) -> pb.PointId:
    """An accepted id as a ``PointId`` message."""
    if isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)):
        n = int(i)
        if not 0 <= n < _U64:
            raise InvalidArgument(f"point id {n} is out of range: ids are 0 to 2**64-1, or UUIDs")
        return pb.PointId(num=n)
    if isinstance(i, UUID):
        return pb.PointId(uuid=str(i))
    if isinstance(i, str):
        try:
            return pb.PointId(uuid=str(UUID(i)))
        except ValueError:
            raise InvalidArgument(
                f"point id {i!r} is neither an unsigned integer nor a UUID"
            ) from None
    raise InvalidArgument(f"point id {i!r} ({type(i).__name__}) is neither an unsigned integer nor a UUID")


def point_id_bytes(i: PointIdLike) -> bytes:
    """The encoding of a ``PointId`` message (fast path for ints)."""
    if type(i) is int and 0 <= i < _U64:
        return b"\x08" + varint(i)
    return point_id(i).SerializeToString()


def from_point_id(p: pb.PointId) -> PointId:
    """An id from the wire: an int, or canonical UUID text."""
    if p.WhichOneof("kind") == "uuid":
        return p.uuid
    return p.num


def normalize_id(i: PointIdLike) -> PointId:
    """The form the server will return an accepted id in."""
    return from_point_id(point_id(i))


# ---- payloads ------------------------------------------------------------------------

def value(v: Any, path: str = "payload") -> pb.Value:
    """A Python value as a ``Value``: None, bool, int (int64), float, str, list/tuple,
    dict with string keys; numpy scalars and arrays too."""
    if v is None:
        return pb.Value(null_value=pb.NULL_VALUE)
    if isinstance(v, (bool, np.bool_)):
        return pb.Value(bool_value=bool(v))
    if isinstance(v, (int, np.integer)):
        n = int(v)
        if not _I64_MIN <= n <= _I64_MAX:
            raise InvalidArgument(f"{path}: integer {n} does not fit in int64")
        return pb.Value(integer_value=n)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise InvalidArgument(f"{path}: {f} is not a finite number")
        return pb.Value(double_value=f)
    if isinstance(v, str):
        return pb.Value(string_value=v)
    if isinstance(v, Mapping):
        return pb.Value(struct_value=pb.Struct(fields=payload(v, path)))
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return pb.Value(list_value=pb.ListValue(values=[value(x, f"{path}[{k}]") for k, x in enumerate(v)]))
    if isinstance(v, UUID):
        return pb.Value(string_value=str(v))
    raise InvalidArgument(f"{path}: cannot store a {type(v).__name__} in a payload")


def payload(d: Mapping[str, Any], path: str = "payload") -> Dict[str, pb.Value]:
    out = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise InvalidArgument(f"{path}: keys must be strings, got {k!r}")
        out[k] = value(v, f"{path}.{k}")
    return out


def from_value(v: pb.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "integer_value":
        return v.integer_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "list_value":
        return [from_value(x) for x in v.list_value.values]
    if kind == "struct_value":
        return {k: from_value(x) for k, x in v.struct_value.fields.items()}
    return None


def from_payload(m: Any) -> Dict[str, Any]:
    return {k: from_value(x) for k, x in m.items()}


# ---- vectors ---------------------------------------------------------------------------

def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def vector_bytes(v: Any, path: str = "vector") -> bytes:
    """A vector's float32 little-endian bytes (the packed ``repeated float``)."""
    if isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise InvalidArgument(f"{path}: expected a 1-d vector, got shape {v.shape}")
        if v.dtype != np.float32 or not _LITTLE:
            v = v.astype("<f4")
        return v.tobytes()
    if isinstance(v, (list, tuple)):
        try:
            return array("f", v).tobytes() if _LITTLE else np.asarray(v, "<f4").tobytes()
        except (TypeError, OverflowError) as e:
            raise InvalidArgument(f"{path}: components must be float32 numbers ({e})") from None
    if isinstance(v, (str, bytes)) or v is None:
        raise InvalidArgument(f"{path}: expected a list of floats or a numpy array, got {type(v).__name__}")
    return vector_bytes(np.asarray(v, dtype=np.float32), path)


def vector_field(tag: bytes, raw: bytes) -> bytes:
    return tag + varint(len(raw)) + raw if raw else b""


def from_vector(rep: Any) -> Optional[np.ndarray]:
    """A vector from the wire: raw packed bytes (the reply views) or a repeated field."""
    if not len(rep):
        return None
    if isinstance(rep, bytes):
        return np.frombuffer(rep, dtype="<f4").astype(np.float32)  # a writable copy, native order
    return np.array(rep, dtype=np.float32)


def matrix(vectors: Any, path: str = "vectors") -> Tuple[Optional[np.ndarray], Optional[List[bytes]]]:
    """A batch of vectors as a C-contiguous little-endian float32 matrix when it is one
    (checked finite in one pass), else the list of per-vector bytes."""
    if isinstance(vectors, np.ndarray):
        if vectors.ndim != 2:
            raise InvalidArgument(f"{path}: expected a 2-d array (n, dim), got shape {vectors.shape}")
        m = np.ascontiguousarray(vectors, dtype="<f4")
        if not np.isfinite(m).all():
            row, col = np.argwhere(~np.isfinite(m))[0]
            raise InvalidArgument(f"{path}[{row}][{col}]: component is {m[row, col]}")
        return m, None
    return None, [vector_bytes(v, f"{path}[{k}]") for k, v in enumerate(vectors)]


# ---- requests --------------------------------------------------------------------------

_TAG_SEARCH_VECTOR = b"\x12"  # SearchRequest.vector = 2, packed
_TAG_POINT_VECTOR = b"\x12"  # Point.vector = 2, packed
_TAG_BATCH_SEARCH = b"\x12"  # SearchBatchRequest.searches = 2
_TAG_UPSERT_POINT = b"\x12"  # UpsertRequest.points = 2


def string_field(tag: bytes, s: str) -> bytes:
    b = s.encode()
    return tag + varint(len(b)) + b


def search_body(
    vector: Any,
    top_k: int,
    ef: Optional[int],
    filter_msg: Optional[pb.Filter],
    with_payload: bool,
    with_vector: bool,
    read: Optional[pb.ReadOptions],
) -> bytes:
    """A ``SearchRequest`` without its collection."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InvalidArgument(f"top_k: expected a positive integer, got {top_k!r}")
    if ef is not None and (not isinstance(ef, int) or isinstance(ef, bool) or ef < 1):
        raise InvalidArgument(f"ef: expected a positive integer, got {ef!r}")
    head = pb.SearchRequest(
        top_k=top_k, ef=ef, filter=filter_msg, with_payload=with_payload, with_vector=with_vector, read=read
    ).SerializeToString()
    return head + vector_field(_TAG_SEARCH_VECTOR, vector_bytes(vector))


def search_request(collection: str, body: bytes) -> bytes:
    return string_field(b"\x0a", collection) + body


def search_batch_request(collection: str, bodies: Iterable[bytes], read: Optional[pb.ReadOptions]) -> bytes:
    parts = [string_field(b"\x0a", collection)]
    for b in bodies:
        parts.append(_TAG_BATCH_SEARCH + varint(len(b)) + b)
    if read is not None:
        r = read.SerializeToString()
        parts.append(b"\x1a" + varint(len(r)) + r)
    return b"".join(parts)


def point_bytes(pid: PointIdLike, vec: bytes, pl: Optional[Mapping[str, Any]], path: str) -> bytes:
    """One encoded ``Point``."""
    idb = point_id_bytes(pid)
    parts = [b"\x0a" + varint(len(idb)) + idb, vector_field(_TAG_POINT_VECTOR, vec)]
    if pl:
        if not isinstance(pl, Mapping):
            raise InvalidArgument(f"{path}.payload: expected a dict, got {type(pl).__name__}")
        parts.append(pb.Point(payload=payload(pl, f"{path}.payload")).SerializeToString())
    return b"".join(parts)


def upsert_request(collection: str, points: Sequence[bytes]) -> bytes:
    parts = [string_field(b"\x0a", collection)]
    for p in points:
        parts.append(_TAG_UPSERT_POINT + varint(len(p)) + p)
    return b"".join(parts)


# ---- responses ------------------------------------------------------------------------------

def scored(resp: Any) -> List[ScoredPoint]:
    """Results of a ``SearchResponse`` (or its bytes-vector view)."""
    out = []
    for p in resp.results:
        pid = p.id
        out.append(
            ScoredPoint(
                pid.uuid if pid.WhichOneof("kind") == "uuid" else pid.num,
                p.score,
                from_payload(p.payload) if p.payload else {},
                from_vector(p.vector) if p.vector else None,
            )
        )
    return out


def scored_bytes(b: bytes) -> List[ScoredPoint]:
    return scored(_views.SearchResponse.FromString(b))


def records(points: Iterable[pb.RetrievedPoint]) -> List[Record]:
    return [
        Record(from_point_id(p.id), from_payload(p.payload) if p.payload else {}, from_vector(p.vector))
        for p in points
    ]


def token(t: pb.WriteToken) -> WriteToken:
    return WriteToken(t.collection_id, {s.shard: s.index for s in t.shards})


def token_msg(t: WriteToken) -> pb.WriteToken:
    return pb.WriteToken(
        collection_id=t.collection_id,
        shards=[pb.ShardIndex(shard=s, index=i) for s, i in sorted(t.shards.items())],
    )


_METRIC_NAMES = {pb.COSINE: Metric.COSINE, pb.DOT: Metric.DOT, pb.L2: Metric.L2}
METRIC_ENUM = {Metric.COSINE: pb.COSINE, Metric.DOT: pb.DOT, Metric.L2: pb.L2}


def collection_info(c: pb.CollectionInfo) -> CollectionInfo:
    cfg = c.config
    return CollectionInfo(
        name=cfg.name,
        dim=cfg.dim,
        metric=_METRIC_NAMES.get(cfg.metric, Metric.COSINE),
        shard_count=cfg.shard_count,
        replication_factor=cfg.replication_factor,
        m=cfg.m,
        ef_construction=cfg.ef_construction,
        points_count=c.points_count,
        shards=[ShardInfo(s.shard, s.points_count, s.tombstones, s.applied_seq) for s in c.shards],
    )


def cluster_status(s: pb.ClusterStatus) -> ClusterStatus:
    return ClusterStatus(
        node_id=s.node_id,
        metadata_leader=s.metadata_leader if s.HasField("metadata_leader") else None,
        nodes=[
            NodeStatus(
                n.id,
                n.address,
                n.reachable,
                n.error,
                n.state,
                n.voter,
                NodeLoad(n.load.cpu_percent, n.load.rss_bytes, n.load.requests_per_second, n.load.points,
                         n.load.replicas, n.load.leaders) if n.HasField("load") else None,
                n.failure,
            )
            for n in s.nodes
        ],
        collections=[
            CollectionStatus(
                c.name,
                c.id,
                [
                    ShardStatus(
                        sh.shard,
                        sh.leader if sh.HasField("leader") else None,
                        [
                            ReplicaStatus(
                                r.node,
                                r.state,
                                r.applied_index,
                                r.points,
                                r.digest if r.HasField("digest") else None,
                                r.term,
                                r.quarantined,
                                r.failure,
                            )
                            for r in sh.replicas
                        ],
                    )
                    for sh in c.shards
                ],
            )
            for c in s.collections
        ],
        operations=[OperationStatus(o.id, o.description, o.progress) for o in s.operations],
    )
