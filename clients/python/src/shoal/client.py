"""The synchronous client."""

from __future__ import annotations

import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Deque, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _base
from ._base import ConsistencyLike, VectorLike, _Api, _Tokens
from ._transport import DEFAULT_MAX_MESSAGE_BYTES, PemLike, RetryPolicy, SyncTransport, channel_options, security
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
from ._coalesce import SyncCoalescer
from .errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from .aio import AsyncClient

__all__ = ["Client"]

Progress = Union[bool, Callable[[int], Any], Any]


def _policy(retry: Union[RetryPolicy, int, None]) -> RetryPolicy:
    if retry is None or retry == 0:
        return RetryPolicy.none()
    if isinstance(retry, int):
        return RetryPolicy(max_attempts=max(1, retry))
    return retry


class Client(_Api):
    """A synchronous client of a Shoal cluster.

    Args:
        url: one node (``"127.0.0.1:7470"``, ``"http://host:7470"``,
            ``"https://host:7470"`` for TLS), a comma-separated list, or a list. Requests
            go to one node at a time; a node that answers UNAVAILABLE (or cannot be
            reached) is skipped for the next.
        api_key: an API key or JWT, sent with every call as ``authorization: Bearer``.
            A call the server refuses raises :class:`~shoal.Unauthenticated` (missing,
            unknown or expired credential) or :class:`~shoal.PermissionDenied` (valid,
            but not allowed this call).
        tls: ``True`` to connect with TLS (implied by an ``https://`` address or any
            argument below), trusting the system's CAs unless ``root_certificates``.
        root_certificates: the CA(s) to trust, as PEM bytes, PEM text or a file path.
        client_certificate, client_key: a client certificate and its key (same forms),
            for a server that requires one.
        tls_server_name: the name the server's certificate must carry when it is not the
            address's host (e.g. connecting by IP address).
        timeout: seconds per call, retries included (``None``: no limit).
        retry: a :class:`RetryPolicy` for idempotent calls that fail with UNAVAILABLE,
            an int (attempts), or ``None``/``0`` for no retries.
        consistency: the default for reads: ``"session"`` (default: read-your-writes;
            the client remembers the write tokens of its own writes and sends them),
            ``"eventual"`` or ``"strong"``. Every read also takes ``consistency=``.
        max_message_bytes: gRPC message size limit both ways (the server's default is 64 MiB).
        metadata: extra gRPC metadata sent with every call.
        grpc_options: extra grpcio channel options.
        coalesce: send concurrent searches (from several threads) that share a
            collection and read options as one ``SearchBatch``: a search goes out at
            once when none is in flight, later ones queue until it returns. Cuts the
            client's CPU per search several times under concurrency; a lone caller is
            unaffected. A search given its own ``timeout`` is never coalesced.
        native: send calls through the optional compiled transport (``shoal_native``,
            tonic over pyo3, ``pip install ./clients/python/native``) instead of grpcio:
            the same requests, replies, retries and errors at a fraction of grpcio's CPU
            per call. ``grpc_options`` other than the message size do not apply to it.

    A client is thread-safe; reuse one per process. Use it as a context manager or call
    :meth:`close`.
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
        native: bool = False,
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
        self._t = SyncTransport(addresses, options, timeout, _policy(retry), sec.metadata, native, sec.credentials)
        self._t.coalescer = SyncCoalescer(self._t.call) if coalesce else None
        self._tokens = _Tokens()
        self._consistency = Consistency.parse(consistency)
        self._owner = True

    @classmethod
    def _view(cls, transport: SyncTransport, tokens: _Tokens, consistency: Consistency) -> "Client":
        c = cls.__new__(cls)
        c._t, c._tokens, c._consistency, c._owner = transport, tokens, consistency, False
        return c

    def __repr__(self) -> str:
        kind = "Client" if self._owner else "Client.session"
        return f"{kind}({self._t.rotation.addresses!r})"


    def _call(self, req: _base._Req, timeout: Optional[float] = None) -> Any:
        return self._t.call(req.path, req.request, req.parse, req.idempotent, timeout)

    # ---- backups ----
    #
    # Backups live on the node that made them: give a backup's calls a client of one
    # address (a client of several may move to another node between calls).

    def create_backup(self, collections: Optional[Sequence[str]] = None, *, name: Optional[str] = None,
                      timeout: Optional[float] = None) -> BackupInfo:
        """Backs up ``collections`` (all if none) into the node's backup directory and
        returns the backup once it is complete: each shard copied at its leader while
        writes go on (every write acknowledged before the call is in it). ``name``:
        1 to 128 of ``A-Z a-z 0-9 _ -`` (default ``backup-YYYYMMDD-HHMMSS``, UTC).
        :class:`~shoal.AlreadyExists` for a name taken; :class:`~shoal.NotFound` for an
        unknown collection. Not retried."""
        return self._call(_base._req_create_backup(collections, name), timeout)

    def list_backups(self, *, timeout: Optional[float] = None) -> List[BackupInfo]:
        """The backups kept on the node, oldest first."""
        return self._call(_base._req_list_backups(), timeout)

    def delete_backup(self, name: str, *, timeout: Optional[float] = None) -> None:
        """Deletes a backup kept on the node (:class:`~shoal.NotFound` if there is none)."""
        self._call(_base._req_delete_backup(name), timeout)

    def download_backup(self, name: str, path: Any, *, timeout: Optional[float] = None) -> int:
        """Writes backup ``name`` to the file ``path`` as a tar archive (what
        :meth:`restore_backup` and ``shoal backup restore`` take); returns its size.
        Written to ``path + ".partial"`` and renamed when complete."""
        with _base._PartialFile(path) as out:
            for msg in self._t.stream_out(_base._BACKUPS + "Download", _base._download_request(name), timeout):
                out.write_chunk(msg)
        return out.bytes

    def restore_backup(self, path: Any = None, *, name: Optional[str] = None,
                       collections: Optional[Sequence[str]] = None, rename: Optional[str] = None,
                       replication_factor: Optional[int] = None,
                       timeout: Optional[float] = None) -> List[RestoredCollection]:
        """Restores a backup into this cluster: the archive at ``path`` (uploaded), or
        backup ``name`` kept on the node. The whole backup is verified first
        (:class:`~shoal.InvalidArgument` naming a missing, truncated or corrupted
        file); each collection stays hidden until all its points are committed; a
        failed restore leaves nothing. ``collections``: only these; ``rename``: restore
        the one selected collection under this name; ``replication_factor``: default
        the backup's, at most the active nodes. :class:`~shoal.AlreadyExists` if a
        collection of that name exists. Not retried."""
        if (path is None) == (name is None):
            raise InvalidArgument("path, name: give the archive to upload or the name of a backup on the node")
        chunks = _base._file_chunks(path) if path is not None else iter(())
        msgs = _base._restore_messages(chunks, name, collections, rename, replication_factor)
        return self._t.stream_in(_base._BACKUPS + "Restore", msgs, _base._parse_restored, timeout)

    # ---- lifecycle ----

    def close(self) -> None:
        """Closes the channels (a session's close does nothing: its client owns them)."""
        if self._owner:
            self._t.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def session(self, *, consistency: ConsistencyLike = Consistency.SESSION,
                tokens: Optional[Mapping[str, WriteToken]] = None) -> "Client":
        """A view of this client with its own write tokens: its reads see its own
        writes (through any node), and are not slowed by the client's other writes.
        ``tokens`` (collection -> token) adopts writes made elsewhere. Closing a session
        leaves the client open.

            with client.session() as s:
                s.upsert("docs", ids=[1], vectors=[[0.1, 0.2]])
                assert s.get("docs", [1])   # read-your-writes, whichever node answers
        """
        t = _Tokens()
        for c, tok in (tokens or {}).items():
            t.record(c, tok)
        return Client._view(self._t, t, Consistency.parse(consistency))

    def async_client(self) -> "AsyncClient":
        """An :class:`~shoal.AsyncClient` to the same nodes, with the same settings,
        sharing this client's (or session's) write tokens: SESSION reads of either see
        the writes of both. It has channels of its own; close it separately."""
        from .aio import AsyncClient

        t = self._t
        return AsyncClient._twin(t.rotation.addresses, t.options, t.timeout, t.retry, t.metadata, self._tokens,
                                 self._consistency, t.coalescer is not None, t.credentials)

    # ---- collections ----

    def create_collection(self, name: str, dim: int, metric: Union[str, Metric] = Metric.COSINE, *,
                          shard_count: Optional[int] = None, replication_factor: Optional[int] = None,
                          m: Optional[int] = None, ef_construction: Optional[int] = None,
                          timeout: Optional[float] = None) -> CollectionInfo:
        """Creates a collection (:class:`~shoal.AlreadyExists` if the name is taken).
        ``metric``: ``"COSINE"``, ``"DOT"`` or ``"L2"``. Not retried."""
        return self._call(self._req_create(name, dim, metric, shard_count, replication_factor, m,
                                           ef_construction), timeout)

    def get_collection(self, name: str) -> CollectionInfo:
        """A collection's configuration and point counts (:class:`~shoal.NotFound`)."""
        return self._call(self._req_get_collection(name))

    def collection_exists(self, name: str) -> bool:
        try:
            self.get_collection(name)
            return True
        except NotFound:
            return False

    def list_collections(self) -> List[CollectionInfo]:
        """Every collection, ordered by name."""
        return self._call(self._req_list())

    def delete_collection(self, name: str, *, timeout: Optional[float] = None) -> None:
        """Deletes a collection and its points (:class:`~shoal.NotFound`). Not retried."""
        self._call(self._req_delete_collection(name), timeout)

    def update_collection(self, name: str, *, replication_factor: Optional[int] = None,
                          shard_count: Optional[int] = None,
                          timeout: Optional[float] = None) -> CollectionInfo:
        """Changes a collection online: its replication factor (copies of every shard)
        and its shard count (a reshard: shards split in two, widest first, until the
        collection has ``shard_count``; writes and searches keep working, a write to a
        shard in the middle of its split waits for it). Returns once the change is
        recorded: the cluster then adds (or removes) replicas, or splits shards, in the
        background; :meth:`cluster_status` shows the operations and
        :meth:`get_collection` the shard count reached. :class:`~shoal.InvalidArgument`
        for a factor out of range or above the number of active nodes, or a shard count
        not above the current one (shards are never merged) or above 256;
        :class:`~shoal.FailedPrecondition` while a reshard is still running;
        :class:`~shoal.NotFound` for an unknown collection. Not retried."""
        return self._call(self._req_update_collection(name, replication_factor, shard_count),
                          timeout)

    # ---- points ----

    def upsert(self, collection: str, points: Optional[Iterable[Any]] = None, *,
               ids: Optional[Iterable[PointIdLike]] = None, vectors: Any = None,
               payloads: Optional[Iterable[Optional[Mapping[str, Any]]]] = None,
               timeout: Optional[float] = None) -> WriteResult:
        """Inserts or replaces points, in one request (all or nothing per shard).

        Either ``points`` (:class:`~shoal.Point`, ``{"id", "vector", "payload"}`` dicts or
        ``(id, vector[, payload])`` tuples), or ``vectors`` (an ``(n, dim)`` array or a
        list of vectors) with ``ids`` (random UUIDs if omitted) and ``payloads``.
        Durable on return. For many points use :meth:`upload`.
        """
        encoded = _base.encode_points(points, ids, vectors, payloads)
        if not encoded:
            return WriteResult(0, None)
        return self._call(self._req_upsert(collection, encoded), timeout)

    def delete(self, collection: str, ids: Union[PointIdLike, Iterable[PointIdLike]], *,
               timeout: Optional[float] = None) -> WriteResult:
        """Deletes points by id; unknown ids are ignored. Durable on return."""
        return self._call(self._req_delete(collection, ids), timeout)

    def get(self, collection: str, ids: Union[PointIdLike, Iterable[PointIdLike]], *, with_payload: bool = True,
            with_vector: bool = False, consistency: Optional[ConsistencyLike] = None,
            token: Optional[WriteToken] = None, timeout: Optional[float] = None) -> List[Record]:
        """Points by id, in the order asked; unknown ids are left out."""
        return self._call(self._req_get(collection, ids, with_payload, with_vector, consistency, token), timeout)

    def search(self, collection: str, vector: VectorLike, *, top_k: int = 10, ef: Optional[int] = None,
               filter: Optional[FilterLike] = None, with_payload: bool = True, with_vector: bool = False,
               consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
               timeout: Optional[float] = None) -> List[ScoredPoint]:
        """The ``top_k`` nearest points to ``vector`` (a list or a float32 array),
        among those matching ``filter``, nearest first. ``ef``: the graph search's
        candidate list (server default 64)."""
        co = self._t.coalescer
        if co is None or timeout is not None:
            return self._call(self._req_search(collection, vector, top_k, ef, filter, with_payload, with_vector,
                                               consistency, token), timeout)
        coll, body, read, whole = self._search_parts(collection, vector, top_k, ef, filter, with_payload,
                                                     with_vector, consistency, token)
        return co.search(coll, body, read, whole, _base._parse_search)

    def search_batch(self, collection: str, vectors: Any, *, top_k: int = 10, ef: Optional[int] = None,
                     filter: Union[FilterLike, Sequence[Optional[FilterLike]], None] = None,
                     with_payload: bool = True, with_vector: bool = False,
                     consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
                     timeout: Optional[float] = None) -> List[List[ScoredPoint]]:
        """Many searches in one call, run by the server as one parallel job. ``filter``
        is one filter for every query, or a list with one per query."""
        return self._call(self._req_search_batch(collection, vectors, top_k, ef, filter, with_payload,
                                                 with_vector, consistency, token), timeout)

    def scroll_page(self, collection: str, *, offset: Optional[PointIdLike] = None, limit: Optional[int] = None,
                    filter: Optional[FilterLike] = None, with_payload: bool = True, with_vector: bool = False,
                    consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
                    timeout: Optional[float] = None) -> ScrollPage:
        """One page of points in id order (numeric ids first, then UUIDs), from
        ``offset`` (inclusive); ``limit`` defaults to the server's 100."""
        return self._call(self._req_scroll(collection, offset, limit, filter, with_payload, with_vector,
                                           consistency, token), timeout)

    def scroll(self, collection: str, *, filter: Optional[FilterLike] = None, page_size: int = 256,
               offset: Optional[PointIdLike] = None, limit: Optional[int] = None, with_payload: bool = True,
               with_vector: bool = False, consistency: Optional[ConsistencyLike] = None,
               token: Optional[WriteToken] = None) -> Iterator[Record]:
        """Every matching point in id order, fetched ``page_size`` at a time (at most
        ``limit`` points if given)."""
        left = limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            page = self.scroll_page(collection, offset=offset, limit=size, filter=filter,
                                    with_payload=with_payload, with_vector=with_vector,
                                    consistency=consistency, token=token)
            for r in page.points:
                yield r
            if left is not None:
                left -= len(page.points)
            if page.next_offset is None or not page.points:
                return
            offset = page.next_offset

    def count(self, collection: str, filter: Optional[FilterLike] = None, *,
              consistency: Optional[ConsistencyLike] = None, token: Optional[WriteToken] = None,
              timeout: Optional[float] = None) -> int:
        """How many points (match ``filter``)."""
        return self._call(self._req_count(collection, filter, consistency, token), timeout)

    def cluster_status(self, digests: bool = False, *, timeout: Optional[float] = None) -> ClusterStatus:
        """Nodes (their state, whether they vote in the metadata group, their load),
        every shard's replicas, and the operations in flight, as the current node sees
        them. With ``digests``, a content digest of every replica (reads every point)."""
        return self._call(self._req_status(digests), timeout)

    # ---- cluster administration ----

    def drain_node(self, node_id: int, *, timeout: Optional[float] = None) -> None:
        """Starts draining node ``node_id``: its replicas move to the other nodes (a few
        at a time, leaderships handed over first), then it leaves the cluster and can be
        stopped. Returns at once; :meth:`cluster_status` shows the node ``draining``,
        the moves in ``operations``, and the node gone when it is done. Draining a
        draining node does nothing.

        :class:`~shoal.NotFound` for an unknown node; :class:`~shoal.FailedPrecondition`
        if the other active nodes could not hold every collection's replication factor.
        Not retried (on :class:`~shoal.Unavailable`, look at :meth:`cluster_status`, or
        call again: that is safe)."""
        self._call(self._req_drain(node_id), timeout)

    def move_replica(self, collection: str, shard: int, from_node: Optional[int] = None,
                     to_node: Optional[int] = None, *, timeout: Optional[float] = None) -> int:
        """Moves one replica of shard ``shard`` of ``collection`` from node ``from_node``
        to node ``to_node``; with ``to_node`` alone adds a replica there, with
        ``from_node`` alone removes that one. The new replica catches up as a learner,
        then the shard's voters change by joint consensus, then the old replica is
        deleted: the shard stays available throughout. Returns the operation's id at
        once (see ``ClusterStatus.operations``).

        :class:`~shoal.NotFound` for an unknown collection, shard or node;
        :class:`~shoal.FailedPrecondition` if the move makes no sense (the target holds
        the shard already or is draining, removing the last replica);
        :class:`~shoal.Unavailable` if another operation is working on the shard (try
        again later). Not retried: a move sent twice would be two moves. With automatic
        rebalancing on (the server's default) the cluster may later move replicas again
        to keep replica counts even and every shard at its replication factor."""
        return self._call(self._req_move_replica(collection, shard, from_node, to_node), timeout)

    def rebalance(self, dry_run: bool = False, *, timeout: Optional[float] = None) -> List[PlannedOperation]:
        """What the cluster's scheduler would do now to restore replication factors,
        empty draining and dead nodes and even out replicas and leaders, each step with
        its reason; unless ``dry_run``, starts it (a list, empty when there is nothing
        to do). A dry run changes nothing and is retried like a read; a real one is not
        retried."""
        return self._call(self._req_rebalance(dry_run), timeout)

    # ---- bulk ----

    def upload(self, collection: str, vectors: Any = None, ids: Optional[Iterable[PointIdLike]] = None,
               payloads: Optional[Iterable[Optional[Mapping[str, Any]]]] = None, *,
               points: Optional[Iterable[Any]] = None, batch_size: int = 256, parallel: int = 2,
               progress: Progress = False, total: Optional[int] = None) -> UploadResult:
        """Uploads many points in batches of ``batch_size``, ``parallel`` requests in
        flight (each batch is retried on UNAVAILABLE like any upsert).

        ``vectors`` may be an ``(n, dim)`` array or any iterable of vectors, ``ids`` and
        ``payloads`` any iterables (read alongside, one batch at a time: generators
        keep memory bounded); or ``points`` as :meth:`upsert` takes them. Back-pressure:
        at most ``parallel`` batches are in flight and the next batch is encoded only
        when one returns. ``progress``: ``True`` for a tqdm bar (if tqdm is installed),
        a callable called with the points written so far, or a tqdm-like object with
        ``update(n)``. Returns the points written, time taken and points/s.
        """
        if parallel < 1:
            raise ValueError("parallel: expected a positive integer")
        batches = _base.upload_batches(ids, vectors, payloads, points, batch_size)
        if total is None:
            src = points if points is not None else vectors
            total = len(src) if hasattr(src, "__len__") else None  # type: ignore[arg-type]
        bar, tick, close = _progress(progress, total)
        started = time.perf_counter()
        done = 0
        n_batches = 0
        token: Optional[WriteToken] = None
        pending: Deque[Tuple[Future, int]] = deque()

        def finish(f: Future, n: int) -> None:
            nonlocal done, token
            res: WriteResult = f.result()
            done += n
            token = res.token.merge(token) if res.token is not None else token
            tick(n, done)

        try:
            with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="shoal-upload") as pool:
                try:
                    for batch in batches:
                        while len(pending) >= parallel:
                            finish(*pending.popleft())
                        req = self._req_upsert(collection, batch)
                        pending.append((pool.submit(self._call, req), len(batch)))
                        n_batches += 1
                    while pending:
                        finish(*pending.popleft())
                finally:
                    for f, _ in pending:
                        f.cancel()
        finally:
            close()
        return UploadResult(done, n_batches, time.perf_counter() - started, token)


def _progress(progress: Progress, total: Optional[int]) -> Tuple[Any, Callable[[int, int], None], Callable[[], None]]:
    """(bar, tick(n, done), close)."""
    if progress is False or progress is None:
        return None, lambda n, d: None, lambda: None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            warnings.warn("progress=True needs tqdm (pip install 'shoal-client[progress]'); no bar shown",
                          stacklevel=3)
            return None, lambda n, d: None, lambda: None
        bar = tqdm(total=total, unit="pt", unit_scale=True, desc="upload")
        return bar, lambda n, d: bar.update(n), bar.close
    if hasattr(progress, "update"):
        return progress, lambda n, d: progress.update(n), lambda: None
    if callable(progress):
        return None, lambda n, d: progress(d), lambda: None
    raise TypeError("progress: expected a bool, a callable or an object with update(n)")
