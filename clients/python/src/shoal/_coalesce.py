"""Client-side coalescing of concurrent searches into ``SearchBatch`` calls.

grpcio's cost per call is most of a search's client CPU, and a ``SearchBatch`` of many
queries costs little more than one call. So concurrent ``search`` calls of one client
(threads, or tasks of one event loop) with the same collection and read options form a
*group*: a search whose group has nothing in flight is sent at once, alone, exactly as
without coalescing (a lone caller never waits); searches arriving while one is in
flight queue, and when it returns the queue (up to ``max_batch``) is sent as one
``SearchBatch`` by the first queued caller, and so on. Results are the same as single
searches (the server runs the same per-query search and merge for a batch).

If a batch fails with an error other than UNAVAILABLE (which the transport already
retried), its searches are sent again one by one, so one bad query (a wrong dimension,
say) fails only its own caller.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _views, _wire
from .errors import ShoalError, Unavailable
from .v1 import shoal_pb2 as pb

_SEARCH = "/shoal.v1.Points/Search"
_BATCH = "/shoal.v1.Points/SearchBatch"


def _key(collection: str, read: Optional[pb.ReadOptions]) -> Tuple[str, bytes]:
    return collection, (read.SerializeToString() if read is not None else b"")


def _batch_request(collection: str, bodies: List[bytes], read: Optional[pb.ReadOptions]) -> bytes:
    return _wire.search_batch_request(collection, bodies, read)


def _split(resp: bytes) -> List[Any]:
    return [_wire.scored(r) for r in _views.SearchBatchResponse.FromString(resp).responses]


class _Slot:
    __slots__ = ("body", "result", "error", "event", "lead")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.event = threading.Event()
        self.lead: Optional[List["_Slot"]] = None  # set on the slot whose caller sends the batch


class _Group:
    __slots__ = ("busy", "queue")

    def __init__(self) -> None:
        self.busy = False
        self.queue: List[Any] = []


class SyncCoalescer:
    def __init__(self, call: Callable[[str, bytes, Any, bool], Any], max_batch: int = 64) -> None:
        self._call = call  # transport.call(path, request, parse, idempotent)
        self._max = max_batch
        self._lock = threading.Lock()
        self._groups: Dict[Tuple[str, bytes], _Group] = {}
        self.batches = 0  # SearchBatch calls sent (for tests and curiosity)

    def search(self, collection: str, body: bytes, read: Optional[pb.ReadOptions], single: bytes,
               parse: Callable[[bytes], Any]) -> Any:
        """``body``: the SearchRequest without collection and read; ``single``: the
        complete request to send when alone."""
        key = _key(collection, read)
        with self._lock:
            g = self._groups.get(key)
            if g is None:
                g = self._groups[key] = _Group()
            if not g.busy:
                g.busy = True
                slot = None
            else:
                slot = _Slot(body)
                g.queue.append(slot)
        if slot is None:
            try:
                return self._call(_SEARCH, single, parse, True)
            finally:
                self._next(key, g, collection, read)
        slot.event.wait()
        if slot.lead is not None:
            self._send(slot.lead, collection, read)
            self._next(key, g, collection, read)
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _next(self, key: Tuple[str, bytes], g: _Group, collection: str, read: Optional[pb.ReadOptions]) -> None:
        """The group's call ended: hand the queue to its first caller, or go idle."""
        with self._lock:
            if not g.queue:
                g.busy = False
                if self._groups.get(key) is g:
                    del self._groups[key]
                return
            batch, g.queue = g.queue[: self._max], g.queue[self._max:]
        batch[0].lead = batch
        batch[0].event.set()

    def _send(self, batch: List[_Slot], collection: str, read: Optional[pb.ReadOptions]) -> None:
        self.batches += 1
        try:
            if len(batch) == 1:
                results = [self._call(_SEARCH, _wire.search_request(collection, _with_read(batch[0].body, read)),
                                      _wire.scored_bytes, True)]
            else:
                results = self._call(_BATCH, _batch_request(collection, [s.body for s in batch], read), _split, True)
            for s, r in zip(batch, results):
                s.result = r
        except ShoalError as e:
            if isinstance(e, Unavailable) or len(batch) == 1:
                for s in batch:
                    s.error = e
            else:
                for s in batch:  # one bad query must not fail the others
                    try:
                        s.result = self._call(_SEARCH, _wire.search_request(collection, _with_read(s.body, read)),
                                              _wire.scored_bytes, True)
                    except BaseException as e2:  # noqa: BLE001 - handed to its caller
                        s.error = e2
        except BaseException as e:  # noqa: BLE001 - handed to every caller
            for s in batch:
                s.error = e
        finally:
            for s in batch[1:]:
                s.event.set()


class AsyncCoalescer:
    """The asyncio twin: one per event loop (futures belong to a loop)."""

    def __init__(self, call: Callable[..., Any], max_batch: int = 64) -> None:
        self._call = call
        self._max = max_batch
        self._groups: Dict[Tuple[str, bytes], _Group] = {}
        self.batches = 0

    async def search(self, collection: str, body: bytes, read: Optional[pb.ReadOptions], single: bytes,
                     parse: Callable[[bytes], Any]) -> Any:
        key = _key(collection, read)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group()
        if not g.busy:
            g.busy = True
            try:
                return await self._call(_SEARCH, single, parse, True)
            finally:
                self._next(key, g, collection, read)
        fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        g.queue.append((body, fut))
        return await fut

    def _next(self, key: Tuple[str, bytes], g: _Group, collection: str, read: Optional[pb.ReadOptions]) -> None:
        g.queue = [(b, f) for b, f in g.queue if not f.done()]  # callers that gave up
        if not g.queue:
            g.busy = False
            if self._groups.get(key) is g:
                del self._groups[key]
            return
        batch, g.queue = g.queue[: self._max], g.queue[self._max:]
        task = asyncio.ensure_future(self._send(batch, collection, read))
        task.add_done_callback(lambda _t: self._next(key, g, collection, read))

    async def _send(self, batch: List[Tuple[bytes, "asyncio.Future[Any]"]], collection: str,
                    read: Optional[pb.ReadOptions]) -> None:
        self.batches += 1
        try:
            if len(batch) == 1:
                results = [await self._call(_SEARCH, _wire.search_request(collection, _with_read(batch[0][0], read)),
                                            _wire.scored_bytes, True)]
            else:
                results = await self._call(_BATCH, _batch_request(collection, [b for b, _ in batch], read), _split,
                                           True)
            for (_, f), r in zip(batch, results):
                if not f.done():
                    f.set_result(r)
        except ShoalError as e:
            if isinstance(e, Unavailable) or len(batch) == 1:
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
            else:
                for b, f in batch:
                    try:
                        r = await self._call(_SEARCH, _wire.search_request(collection, _with_read(b, read)),
                                             _wire.scored_bytes, True)
                        if not f.done():
                            f.set_result(r)
                    except BaseException as e2:  # noqa: BLE001
                        if not f.done():
                            f.set_exception(e2)
        except BaseException as e:  # noqa: BLE001
            for _, f in batch:
                if not f.done():
                    f.set_exception(e)


def _with_read(body: bytes, read: Optional[pb.ReadOptions]) -> bytes:
    """A batch entry's body as a complete single search (read options appended)."""
    if read is None:
        return body
    r = read.SerializeToString()
    return body + b"\x42" + _wire.varint(len(r)) + r  # SearchRequest.read = 8
