"""Typed values the client returns (and a few it accepts)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union
from uuid import UUID

import numpy as np

__all__ = [
    "BackupInfo",
    "BackupCollection",
    "RestoredCollection",
    "PointIdLike",
    "PointId",
    "Metric",
    "Consistency",
    "Point",
    "Record",
    "ScoredPoint",
    "ShardInfo",
    "CollectionInfo",
    "WriteToken",
    "WriteResult",
    "ScrollPage",
    "UploadResult",
    "NodeLoad",
    "NodeStatus",
    "OperationStatus",
    "PlannedOperation",
    "ReplicaStatus",
    "ShardStatus",
    "CollectionStatus",
    "ClusterStatus",
]

#: What the client accepts as a point id: a non-negative int (< 2**64), a
#: :class:`uuid.UUID`, or UUID text (canonical or without hyphens).
PointIdLike = Union[int, UUID, str]
#: What the client returns as a point id: an int, or canonical UUID text.
PointId = Union[int, str]


class Metric(str, enum.Enum):
    """How vectors are compared, and what a score means.

    ``COSINE``: cosine similarity in [-1, 1], larger is nearer (stored vectors are
    normalised). ``DOT``: inner product, larger is nearer. ``L2``: Euclidean
    distance, smaller is nearer.
    """

    COSINE = "COSINE"
    DOT = "DOT"
    L2 = "L2"

    @classmethod
    def parse(cls, value: Union[str, "Metric"]) -> "Metric":
        if isinstance(value, Metric):
            return value
        try:
            return cls(str(value).upper())
        except ValueError:
            raise ValueError(f"unknown metric {value!r}; expected one of COSINE, DOT, L2") from None


class Consistency(str, enum.Enum):
    """How fresh a read must be.

    ``EVENTUAL``: the nearest replica of each shard (may miss a write acknowledged a
    moment ago). ``SESSION``: read-your-writes: the replica first applies the writes
    whose tokens this client (or session) holds. ``STRONG``: linearizable, each
    shard's leader confirms it still leads.
    """

    EVENTUAL = "eventual"
    SESSION = "session"
    STRONG = "strong"

    @classmethod
    def parse(cls, value: Union[str, "Consistency"]) -> "Consistency":
        if isinstance(value, Consistency):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"unknown consistency {value!r}; expected 'eventual', 'session' or 'strong'"
            ) from None


@dataclass
class Point:
    """A point to upsert: an id, a vector (list or numpy array) and an optional payload."""

    id: PointIdLike
    vector: Union[Sequence[float], np.ndarray]
    payload: Optional[Mapping[str, Any]] = None


@dataclass(slots=True)
class Record:
    """A stored point as ``get`` and ``scroll`` return it. ``vector`` is a float32
    array when requested, else ``None``; ``payload`` is empty when not requested."""

    id: PointId
    payload: Dict[str, Any]
    vector: Optional[np.ndarray] = None


@dataclass(slots=True)
class ScoredPoint:
    """A search result. ``score`` follows the collection's metric (see :class:`Metric`)."""

    id: PointId
    score: float
    payload: Dict[str, Any]
    vector: Optional[np.ndarray] = None


@dataclass
class ShardInfo:
    shard: int
    points_count: int
    tombstones: int
    applied_seq: int


@dataclass
class CollectionInfo:
    """A collection's configuration and size."""

    name: str
    dim: int
    metric: Metric
    shard_count: int
    replication_factor: int
    m: int
    ef_construction: int
    points_count: int
    shards: List[ShardInfo] = field(default_factory=list)


@dataclass
class WriteToken:
    """Per shard of one collection, the Raft log index a write was applied at.

    Reads with ``SESSION`` consistency that carry the token see the write on any node.
    Tokens of one collection merge by taking, per shard, the larger index.
    """

    collection_id: int
    shards: Dict[int, int] = field(default_factory=dict)

    def merge(self, other: Optional["WriteToken"]) -> "WriteToken":
        """The token covering both writes. A token of another collection id (the
        collection was deleted and created again) replaces this one if newer."""
        if other is None:
            return self
        if other.collection_id != self.collection_id:
            return other if other.collection_id > self.collection_id else self
        shards = dict(self.shards)
        for s, i in other.shards.items():
            if i > shards.get(s, 0):
                shards[s] = i
        return WriteToken(self.collection_id, shards)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly form, e.g. to hand the token to another process."""
        return {"collection_id": self.collection_id, "shards": {str(k): v for k, v in self.shards.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WriteToken":
        return cls(int(d["collection_id"]), {int(k): int(v) for k, v in d.get("shards", {}).items()})


@dataclass
class WriteResult:
    """What an upsert or delete returns: how many points were written (or ids
    processed) and the write's token."""

    count: int
    token: Optional[WriteToken]


@dataclass
class ScrollPage:
    """One page of ``scroll_page``; pass ``next_offset`` as ``offset`` for the next."""

    points: List[Record]
    next_offset: Optional[PointId]


@dataclass
class UploadResult:
    """What ``upload`` returns."""

    points: int
    batches: int
    seconds: float
    token: Optional[WriteToken] = None

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class NodeLoad:
    """What a node reported of its load (for autoscaling: scale out above ~70% CPU,
    in below ~30%).

    ``cpu_percent`` is the node process's CPU over the last few seconds in percent of
    one core (200 = two cores busy); ``rss_bytes`` its resident memory;
    ``requests_per_second`` the public API requests it served over the last few
    seconds; ``points`` the points in the replicas it holds (each replica counted);
    ``replicas`` how many it holds and ``leaders`` how many of them it leads.
    """

    cpu_percent: float
    rss_bytes: int
    requests_per_second: float
    points: int
    replicas: int
    leaders: int


@dataclass
class NodeStatus:
    """One node of the cluster.

    ``state`` is ``"active"`` (takes replicas) or ``"draining"`` (giving them away
    before it leaves); ``voter`` is true when it votes in the metadata group (the
    others follow it as learners); ``load`` is ``None`` when the node is unreachable
    (``error`` then says why); ``failure`` is non-empty when the node failed (its
    storage took no more writes, or a Raft group of it stopped) and says why: it then
    refuses writes and reports NOT_SERVING until it is restarted.
    """

    id: int
    address: str
    reachable: bool
    error: str
    state: str = ""
    voter: bool = False
    load: Optional[NodeLoad] = None
    failure: str = ""

    @property
    def draining(self) -> bool:
        return self.state == "draining"


@dataclass
class ReplicaStatus:
    node: int
    state: str
    applied_index: int
    points: int
    digest: Optional[str]
    term: int
    # Invalid stored records the replica moved aside when it opened (see its log).
    quarantined: int = 0
    # Why the replica failed (state "failed"), else empty.
    failure: str = ""


@dataclass
class ShardStatus:
    shard: int
    leader: Optional[int]
    replicas: List[ReplicaStatus]


@dataclass
class CollectionStatus:
    name: str
    id: int
    shards: List[ShardStatus]


@dataclass
class OperationStatus:
    """A replica move or shard split in flight: its id (what
    :meth:`~shoal.Client.move_replica` returns), e.g. ``"move docs/2 from node 3 to
    node 4"`` and ``"node 4 catching up: applied 1200 of 5000"``."""

    id: int
    description: str
    progress: str


@dataclass
class PlannedOperation:
    """A step :meth:`~shoal.Client.rebalance` plans (or started): what, e.g. ``"move
    docs/2 from node 3 to node 4"``, and why, e.g. ``"node 3 is draining"``."""

    description: str
    reason: str


@dataclass
class ClusterStatus:
    """The cluster as one node sees it (see ``Cluster.Status`` in the proto): the
    answering node, the metadata group's leader, every node (state, load), every
    shard's replicas, and the operations (replica moves, shard splits) in flight."""

    node_id: int
    metadata_leader: Optional[int]
    nodes: List[NodeStatus]
    collections: List[CollectionStatus]
    operations: List[OperationStatus] = field(default_factory=list)

    def node(self, node_id: int) -> Optional[NodeStatus]:
        """The node with that id, if it is in the cluster."""
        return next((n for n in self.nodes if n.id == node_id), None)

    def collection(self, name: str) -> Optional[CollectionStatus]:
        """The named collection's shards and replicas, if it exists."""
        return next((c for c in self.collections if c.name == name), None)

    def digests_agree(self) -> bool:
        """True when every shard's replicas report one applied index and one digest
        (only meaningful for a status taken with ``digests=True``)."""
        for c in self.collections:
            for s in c.shards:
                views = {(r.applied_index, r.digest) for r in s.replicas}
                if len(views) != 1 or any(r.digest is None for r in s.replicas):
                    return False
        return all(n.reachable for n in self.nodes)


@dataclass
class BackupCollection:
    """One collection of a backup: its points and its shards' copies (each
    ``{"shard", "applied_index", "points", "bytes", "sha256"}``)."""

    name: str
    points: int
    shards: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class BackupInfo:
    """A backup kept on a node (see ``shoal.v1.Backups``): its name, when it was made
    (ms since the epoch) and how long it took, the Shoal version that wrote it, its
    points and bytes, its collections, and the node that holds it."""

    name: str
    created_unix_ms: int
    duration_ms: int
    shoal_version: str
    points: int
    bytes: int
    node: int
    collections: List[BackupCollection] = field(default_factory=list)


@dataclass
class RestoredCollection:
    """A collection a restore created, and the points it holds."""

    name: str
    points: int
