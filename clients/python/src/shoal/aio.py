"""The asyncio client: the same calls as :class:`shoal.Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from . import _base
from ._base import ConsistencyLike, VectorLike, _Api, _Tokens
from ._transport import DEFAULT_MAX_MESSAGE_BYTES, AsyncTransport, PemLike, RetryPolicy, channel_options, security
from .client import Progress, _policy, _progress
from .errors import InvalidArgument, NotFound
from .filters import FilterLike
from .models import (
    BackupInfo,
    ClusterStatus,
    CollectionInfo,
    Consistency,
    Metric,
    PlannedOperation,
    PointIdLike,
    Record,
    RestoredCollection,
    ScoredPoint,
    ScrollPage,
    UploadResult,
    WriteResult,
    WriteToken,
)

__all__ = ["AsyncClient"]


class AsyncClient(_Api):
    """An asyncio client of a Shoal cluster (grpc.aio). Arguments and behaviour are
    those of :class:`shoal.Client`; every call is a coroutine and :meth:`scroll` an
    async iterator. Channels are opened lazily in the running event loop (a client
    used from another loop later opens new ones).

        async with AsyncClient("127.0.0.1:7470") as client:
            hits = await client.search("docs", vector, top_k=5)
    """

    def __init__(
        self,
        url: Union[str, Sequence[str]] = "127.0.0.1:7470",
        *,
        timeout: Optional[float] = 30.0,
        retry: Union[RetryPolicy, int, None] = RetryPolicy(),
        consistency: ConsistencyLike = Consistency.SESSION,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        metadata: Optional[Sequence[Tuple[str, str]]] = None,
        grpc_options: Optional[Sequence[Tuple[str, Any]]] = None,
        coalesce: bool = True,
        api_key: Optional[str] = None,
        tls: Optional[bool] = None,
        root_certificates: Optional[PemLike] = None,
        client_certificate: Optional[PemLike] = None,
        client_key: Optional[PemLike] = None,
        tls_server_name: Optional[str] = None,
    ) -> None:
        addresses, sec = security(url, api_key, tls, root_certificates, client_certificate, client_key,
                                  tls_server_name, metadata)
        options = channel_options(max_message_bytes, list(grpc_options or ()) + list(sec.options))
        self._t = AsyncTransport(addresses, options, timeout, _policy(retry), sec.metadata, sec.credentials)
        self._t.coalesce = coalesce
        self._tokens = _Tokens()
        self._consistency = Consistency.parse(consistency)
        self._owner = True

    @classmethod
    def _view(cls, transport: AsyncTransport, tokens: _Tokens, consistency: Consistency) -> "AsyncClient":
        c = cls.__new__(cls)
        c._t, c._tokens, c._consistency, c._owner = transport, tokens, consistency, False
        return c

    @classmethod
    def _twin(cls, addresses: List[str], options: List[Tuple[str, Any]], timeout: Optional[float],
              retry: RetryPolicy, metadata: Any, tokens: _Tokens, consistency: Consistency,
              coalesce: bool = True, credentials: Any = None) -> "AsyncClient":
        c = cls.__new__(cls)
        c._t = AsyncTransport(list(addresses), options, timeout, retry, metadata, credentials)
        c._t.coalesce = coalesce
        c._tokens, c._consistency, c._owner = tokens, consistency, True
        return c

    def __repr__(self) -> str:
        kind = "AsyncClient" if self._owner else "AsyncClient.session"
        return f"{kind}({self._t.rotation.addresses!r})"

    async def _call(self, req: _base._Req, timeout: Optional[float] = None) -> Any:
        return await self._t.call(req.path, req.request, req.parse, req.idempotent, timeout)

    # ---- backups (see Client: they live on the node that made them) ----

    async def create_backup(self, collections: Optional[Sequence[str]] = None, *, name: Optional[str] = None,
                            timeout: Optional[float] = None) -> BackupInfo:
        """See :meth:`Client.create_backup`."""
        return await self._call(_base._req_create_backup(collections, name), timeout)

    async def list_backups(self, *, timeout: Optional[float] = None) -> List[BackupInfo]:
        """See :meth:`Client.list_backups`."""
        return await self._call(_base._req_list_backups(), timeout)

    async def delete_backup(self, name: str, *, timeout: Optional[float] = None) -> None:
        """See :meth:`Client.delete_backup`."""
        await self._call(_base._req_delete_backup(name), timeout)

    async def download_backup(self, name: str, path: Any, *, timeout: Optional[float] = None) -> int:
        """See :meth:`Client.download_backup` (the file is written from the event loop's
        thread, a chunk of 1 MiB at a time)."""
        with _base._PartialFile(path) as out:
            async for msg in self._t.stream_out(_base._BACKUPS + "Download",
                                                _base._download_request(name), timeout):
                out.write_chunk(msg)
        return out.bytes

    async def restore_backup(self, path: Any = None, *, name: Optional[str] = None,
                             collections: Optional[Sequence[str]] = None, rename: Optional[str] = None,
                             replication_factor: Optional[int] = None,
                             timeout: Optional[float] = None) -> List[RestoredCollection]:
        """See :meth:`Client.restore_backup`."""
        if (path is None) == (name is None):
            raise InvalidArgument("path, name: give the archive to upload or the name of a backup on the node")
        chunks = _base._file_chunks(path) if path is not None else iter(())
        msgs = _base._restore_messages(chunks, name, collections, rename, replication_factor)
        return await self._t.stream_in(_base._BACKUPS + "Restore", msgs, _base._parse_restored, timeout)

    # ---- lifecycle ----

    async def close(self) -> None:
        """Closes the channels (a session's close does nothing)."""
        if self._owner:
            await self._t.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def session(self, *, consistency: ConsistencyLike = Consistency.SESSION,
                tokens: Optional[Mapping[str, WriteToken]] = None) -> "AsyncClient":
        """A view with its own write tokens; see :meth:`shoal.Client.session`."""
        t = _Tokens()
        for c, tok in (tokens or {}).items():
            t.record(c, tok)
        return AsyncClient._view(self._t, t, Consistency.parse(consistency))

    # ---- collections ----

    async def create_collection(self, name: str, dim: int, metric: Union[str, Metric] = Metric.COSINE, *,
                                shard_count: Optional[int] = None, replication_factor: Optional[int] = None,
                                m: Optional[int] = None, ef_construction: Optional[int] = None,
                                timeout: Optional[float] = None) -> CollectionInfo:
        return await self._call(self._req_create(name, dim, metric, shard_count, replication_factor, m,
                                                 ef_construction), timeout)

    async def get_collection(self, name: str) -> CollectionInfo:
        return await self._call(self._req_get_collection(name))

    async def collection_exists(self, name: str) -> bool:
        try:
            await self.get_collection(name)
            return True
        except NotFound:
            return False

    async def list_collections(self) -> List[CollectionInfo]:
        return await self._call(self._req_list())

    async def delete_collection(self, name: str, *, timeout: Optional[float] = None) -> None:
        await self._call(self._req_delete_collection(name), timeout)

    async def update_collection(self, name: str, *, replication_factor: Optional[int] = None,
                                shard_count: Optional[int] = None,
                                timeout: Optional[float] = None) -> CollectionInfo:
        """See :meth:`shoal.Client.update_collection`. Not retried."""
        return await self._call(
            self._req_update_collection(name, replication_factor, shard_count), timeout)

    # ---- points ----

    async def upsert(self, collection: str, points: Optional[Iterable[Any]] = None, *,
                     ids: Optional[Iterable[PointIdLike]] = None, vectors: Any = None,
                     payloads: Optional[Iterable[Optional[Mapping[str, Any]]]] = None,
                     timeout: Optional[float] = None) -> WriteResult:
        encoded = _base.encode_points(points, ids, vectors, payloads)
        if not encoded:
            return WriteResult(0, None)
        return await self._call(self._req_upsert(collection, encoded), timeout)

    async def delete(self, collection: str, ids: Union[PointIdLike, Iterable[PointIdLike]], *,
                     timeout: Optional[float] = None) -> WriteResult:
        return await self._call(self._req_delete(collection, ids), timeout)

    async def get(self, collection: str, ids: Union[PointIdLike, Iterable[PointIdLike]], *,
                  with_payload: bool = True, with_vector: bool = False,
                  consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
                  timeout: Optional[float] = None) -> List[Record]:
        return await self._call(self._req_get(collection, ids, with_payload, with_vector, consistency, token),
                                timeout)

    async def search(self, collection: str, vector: VectorLike, *, top_k: int = 10, ef: Optional[int] = None,
                     filter: Optional[FilterLike] = None, with_payload: bool = True, with_vector: bool = False,
                     consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
                     timeout: Optional[float] = None) -> List[ScoredPoint]:
        co = self._t.coalescer()
        if co is None or timeout is not None:
            return await self._call(self._req_search(collection, vector, top_k, ef, filter, with_payload,
                                                     with_vector, consistency, token), timeout)
        coll, body, read, whole = self._search_parts(collection, vector, top_k, ef, filter, with_payload,
                                                     with_vector, consistency, token)
        return await co.search(coll, body, read, whole, _base._parse_search)

    async def search_batch(self, collection: str, vectors: Any, *, top_k: int = 10, ef: Optional[int] = None,
                           filter: Union[FilterLike, Sequence[Optional[FilterLike]], None] = None,
                           with_payload: bool = True, with_vector: bool = False,
                           consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
                           timeout: Optional[float] = None) -> List[List[ScoredPoint]]:
        return await self._call(self._req_search_batch(collection, vectors, top_k, ef, filter, with_payload,
                                                       with_vector, consistency, token), timeout)

    async def scroll_page(self, collection: str, *, offset: Optional[PointIdLike] = None,
                          limit: Optional[int] = None, filter: Optional[FilterLike] = None,
                          with_payload: bool = True, with_vector: bool = False,
                          consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
                          timeout: Optional[float] = None) -> ScrollPage:
        return await self._call(self._req_scroll(collection, offset, limit, filter, with_payload, with_vector,
                                                 consistency, token), timeout)

    async def scroll(self, collection: str, *, filter: Optional[FilterLike] = None, page_size: int = 256,
                     offset: Optional[PointIdLike] = None, limit: Optional[int] = None,
                     with_payload: bool = True, with_vector: bool = False,
                     consistency: Optional[ConsistencyLike] = None,
                     token: Optional[WriteToken] = None) -> AsyncIterator[Record]:
        left = limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            page = await self.scroll_page(collection, offset=offset, limit=size, filter=filter,
                                          with_payload=with_payload, with_vector=with_vector,
                                          consistency=consistency, token=token)
            for r in page.points:
                yield r
            if left is not None:
                left -= len(page.points)
            if page.next_offset is None or not page.points:
                return
            offset = page.next_offset

    async def count(self, collection: str, filter: Optional[FilterLike] = None, *,
                    consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
                    timeout: Optional[float] = None) -> int:
        return await self._call(self._req_count(collection, filter, consistency, token), timeout)

    async def cluster_status(self, digests: bool = False, *, timeout: Optional[float] = None) -> ClusterStatus:
        return await self._call(self._req_status(digests), timeout)

    # ---- cluster administration ----

    async def drain_node(self, node_id: int, *, timeout: Optional[float] = None) -> None:
        """See :meth:`shoal.Client.drain_node`. Not retried."""
        await self._call(self._req_drain(node_id), timeout)

    async def move_replica(self, collection: str, shard: int, from_node: Optional[int] = None,
                           to_node: Optional[int] = None, *, timeout: Optional[float] = None) -> int:
        """See :meth:`shoal.Client.move_replica`; returns the operation's id. Not retried."""
        return await self._call(self._req_move_replica(collection, shard, from_node, to_node), timeout)

    async def rebalance(self, dry_run: bool = False, *,
                        timeout: Optional[float] = None) -> List[PlannedOperation]:
        """See :meth:`shoal.Client.rebalance`. Only a dry run is retried."""
        return await self._call(self._req_rebalance(dry_run), timeout)

    # ---- bulk ----

    async def upload(self, collection: str, vectors: Any = None, ids: Optional[Iterable[PointIdLike]] = None,
                     payloads: Optional[Iterable[Optional[Mapping[str, Any]]]] = None, *,
                     points: Optional[Iterable[Any]] = None, batch_size: int = 256, parallel: int = 2,
                     progress: Progress = False, total: Optional[int] = None) -> UploadResult:
        """See :meth:`shoal.Client.upload`: at most ``parallel`` upserts in flight."""
        if parallel < 1:
            raise ValueError("parallel: expected a positive integer")
        batches = _base.upload_batches(ids, vectors, payloads, points, batch_size)
        if total is None:
            src = points if points is not None else vectors
            total = len(src) if hasattr(src, "__len__") else None  # type: ignore[arg-type]
        _bar, tick, close = _progress(progress, total)
        started = time.perf_counter()
        done = 0
        n_batches = 0
        token: Optional[WriteToken] = None
        pending: Set["asyncio.Task[Tuple[WriteResult, int]]"] = set()

        async def one(req: _base._Req, n: int) -> Tuple[WriteResult, int]:
            return await self._call(req), n

        def finish(t: "asyncio.Task[Tuple[WriteResult, int]]") -> None:
            nonlocal done, token
            res, n = t.result()
            done += n
            token = res.token.merge(token) if res.token is not None else token
            tick(n, done)

        try:
            for batch in batches:
                while len(pending) >= parallel:
                    finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for t in finished:
                        pending.discard(t)
                        finish(t)
                pending.add(asyncio.ensure_future(one(self._req_upsert(collection, batch), len(batch))))
                n_batches += 1
            while pending:
                finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in finished:
                    pending.discard(t)
                    finish(t)
        finally:
            for t in pending:
                t.cancel()
            close()
        return UploadResult(done, n_batches, time.perf_counter() - started, token)
