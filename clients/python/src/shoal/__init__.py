"""Shoal: a Python client for the Shoal vector database.

    import shoal
    from shoal import Field

    client = shoal.Client("127.0.0.1:7470")                  # or ["n1:7470", "n2:7470", ...]
    client.create_collection("docs", dim=384, metric="COSINE")
    client.upsert("docs", ids=[1, 2], vectors=embeddings, payloads=[{"lang": "en"}, {"lang": "fr"}])
    hits = client.search("docs", query, top_k=5, filter=Field("lang").any_of("en", "fr"))

See :class:`Client` (sync) and :class:`AsyncClient` (asyncio). Integrations:
``shoal.langchain.ShoalVectorStore`` and ``shoal.llamaindex.ShoalVectorStore``.
"""

from ._transport import RetryPolicy
from .aio import AsyncClient
from .client import Client
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ShoalError,
    Unavailable,
)
from .filters import Condition, Field, Filter, HasId
from .models import (
    BackupCollection,
    BackupInfo,
    ClusterStatus,
    CollectionInfo,
    CollectionStatus,
    Consistency,
    Metric,
    NodeLoad,
    NodeStatus,
    OperationStatus,
    PlannedOperation,
    Point,
    ReplicaStatus,
    Record,
    RestoredCollection,
    ScoredPoint,
    ScrollPage,
    ShardStatus,
    UploadResult,
    WriteResult,
    WriteToken,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "RetryPolicy",
    "Field",
    "Filter",
    "HasId",
    "Condition",
    "Metric",
    "Consistency",
    "Point",
    "Record",
    "ScoredPoint",
    "ScrollPage",
    "CollectionInfo",
    "ClusterStatus",
    "NodeStatus",
    "NodeLoad",
    "CollectionStatus",
    "ShardStatus",
    "ReplicaStatus",
    "OperationStatus",
    "PlannedOperation",
    "WriteResult",
    "WriteToken",
    "UploadResult",
    "BackupInfo",
    "BackupCollection",
    "RestoredCollection",
    "ShoalError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "ResourceExhausted",
    "Unavailable",
    "DeadlineExceeded",
    "Unauthenticated",
    "PermissionDenied",
    "InternalError",
]
