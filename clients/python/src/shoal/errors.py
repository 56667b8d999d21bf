"""Exceptions raised by the Shoal client.

Every error the server returns is a gRPC status; the client raises the subclass of
:class:`ShoalError` that matches its code, with the server's message (which names the
offending field, e.g. ``points[3].vector[17]: component is NaN``)::

    ShoalError
    ├── InvalidArgument      INVALID_ARGUMENT (also raised client-side before a call); a ValueError
    ├── NotFound             NOT_FOUND (unknown collection, shard, node)
    ├── AlreadyExists        ALREADY_EXISTS
    ├── FailedPrecondition   FAILED_PRECONDITION (an admin request the cluster's state refuses)
    ├── ResourceExhausted    RESOURCE_EXHAUSTED (over a server limit, e.g. message size)
    ├── Unavailable          UNAVAILABLE (no leader / replica in time, or no node reachable)
    ├── DeadlineExceeded     DEADLINE_EXCEEDED (the client's timeout ran out, or a write's
    │                        outcome is unknown: it may be committed; retrying it is safe)
    ├── Unauthenticated      UNAUTHENTICATED (no credential, or an unknown or expired one)
    ├── PermissionDenied     PERMISSION_DENIED (a valid credential that does not allow the call)
    └── InternalError        INTERNAL and every other code
"""

from __future__ import annotations

from typing import Optional

import grpc

__all__ = [
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
    "from_rpc_error",
]


class ShoalError(Exception):
    """Base class of every error the client raises.

    Attributes:
        message: the server's message (or the client's, for errors raised before a call).
        code: the gRPC status code, or ``None`` for errors found client-side.
        address: the node that answered, when known.
    """

    code: Optional[grpc.StatusCode] = None

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        address: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.address = address

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        return f"{self.code.name}: {self.message}"


class InvalidArgument(ShoalError, ValueError):
    """A malformed request; the message names the field (``points[3].vector[17]: ...``)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ShoalError):
    """The collection (or, for cluster administration, the shard or node) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ShoalError):
    """A collection of that name exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ShoalError):
    """The cluster's current state refuses the request; the message says why. E.g.
    draining a node when the others could not hold every collection's replication
    factor, moving a replica to a node that already holds the shard or is draining,
    removing a shard's last replica, or a call to a node removed from the cluster."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ShoalError):
    """The request is over a configured server limit (batch size, message size, top_k ...)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ShoalError):
    """No node could serve the request in time. Retrying is safe; the client already
    retried idempotent calls as its :class:`~shoal.RetryPolicy` allows. A write that
    failed with it was not written on the shards the message lists as "not written"."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ShoalError):
    """The call's timeout ran out. A write may or may not have been applied (retrying
    an upsert or delete is safe)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(ShoalError):
    """The server requires a credential and got none, or one it does not accept (an
    unknown API key, an expired or badly signed token): pass ``api_key=``."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ShoalError):
    """The credential is valid but does not allow this call (a read-only key writing,
    a token scoped to other collections, a non-admin creating a collection); the
    message says what the call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InternalError(ShoalError):
    """INTERNAL (a server bug or disk failure) or any status without a class of its own."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def from_rpc_error(err: grpc.RpcError, address: Optional[str] = None) -> ShoalError:
    """The :class:`ShoalError` for a grpcio error (sync or asyncio)."""
    code = err.code()  # type: ignore[attr-defined]
    details = err.details() or ""  # type: ignore[attr-defined]
    cls = _BY_CODE.get(code, InternalError)
    return cls(details, code=code, address=address)
