"""Channels to one or more nodes, retries with back-off, failover.

Every request goes to the *current* node. When a call fails with UNAVAILABLE (the
node is down, or the cluster could not find a leader or replica in time), the next
node becomes current; idempotent calls are retried there at once, and after every
node has been tried once, with exponential back-off and jitter, until the policy's
attempts or the call's timeout run out.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import grpc

from .errors import ShoalError, from_rpc_error

DEFAULT_PORT = 7470
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent calls (every read, upsert and delete) that fail with
    UNAVAILABLE. ``max_attempts`` counts the first try; the wait before retry ``k``
    (after every node was tried once) is ``min(max_backoff, initial_backoff *
    multiplier**k)`` with up to ``jitter`` of it added at random. ``RetryPolicy.none()``
    turns retries off. Collection create, update and delete, and the cluster
    administration calls (drain, move a replica, rebalance other than a dry run) are
    never retried: an UNAVAILABLE reply does not say whether they took effect."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2

    @classmethod
    def none(cls) -> "RetryPolicy":
        return cls(max_attempts=1)

    def backoff(self, k: int) -> float:
        d = min(self.max_backoff, self.initial_backoff * (self.multiplier ** k))
        return d * (1.0 + random.random() * self.jitter)


def parse_addresses(url: Union[str, Sequence[str]]) -> List[str]:
    """``"host:port"``, ``"http://host:port"``, a comma-separated list, or a list of
    either, as grpc targets (``host:port``)."""
    items = [url] if isinstance(url, str) else list(url)
    out: List[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            for prefix in ("http://", "grpc://"):
                if part.startswith(prefix):
                    part = part[len(prefix):]
            if part.startswith("https://"):
                raise ValueError("TLS is not supported yet: Shoal serves plaintext gRPC")
            part = part.rstrip("/")
            if ":" not in part.rsplit("]", 1)[-1]:
                part = f"{part}:{DEFAULT_PORT}"
            out.append(part)
    if not out:
        raise ValueError("no node address given")
    return out


def channel_options(max_message_bytes: int, extra: Optional[Sequence[Tuple[str, Any]]]) -> List[Tuple[str, Any]]:
    opts = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # A restarted node should be retried soon, not after grpc's long reconnect back-off.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.enable_retries", 0),
    ]
    if extra:
        opts.extend(extra)
    return opts


# A parse function turns the response bytes into the call's result.
Parse = Callable[[bytes], Any]


def _identity(b: bytes) -> bytes:
    return b


class _NativeRpcError(grpc.RpcError):
    """A failed call of the compiled transport, shaped like grpcio's errors."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _load_native() -> Any:
    try:
        import shoal_native
    except ImportError as e:
        raise ImportError("native=True needs the compiled transport: pip install ./clients/python/native "
                          "(Rust toolchain and maturin)") from e
    return shoal_native


def _native_method(ch: Any, path: str, status: Any) -> Any:
    def call(request: bytes, timeout: Optional[float] = None, metadata: Any = None) -> bytes:
        try:
            return ch.call(path, request, timeout)
        except status as e:
            code, msg = e.args
            raise _NativeRpcError(_CODES.get(code, grpc.StatusCode.UNKNOWN), msg) from None

    return call


class _Rotation:
    """Which node is current; shared by a client and its sessions."""

    def __init__(self, addresses: List[str]) -> None:
        self.addresses = addresses
        self._current = 0
        self._lock = threading.Lock()

    def current(self) -> int:
        return self._current

    def failed(self, i: int) -> None:
        with self._lock:
            if self._current == i:
                self._current = (i + 1) % len(self.addresses)


class SyncTransport:
    def __init__(self, addresses: List[str], options: List[Tuple[str, Any]], timeout: Optional[float],
                 retry: RetryPolicy, metadata: Optional[Sequence[Tuple[str, str]]], native: bool = False) -> None:
        self.native = _load_native() if native else None
        if native and metadata:
            raise ValueError("native=True does not send gRPC metadata yet")
        self.rotation = _Rotation(addresses)
        self.options = options
        self.timeout = timeout
        self.retry = retry
        self.metadata = tuple(metadata) if metadata else None
        self._channels: List[Optional[grpc.Channel]] = [None] * len(addresses)
        self._methods: Dict[Tuple[int, str], Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.coalescer: Any = None

    def _method(self, i: int, path: str) -> Any:
        m = self._methods.get((i, path))
        if m is None:
            with self._lock:
                if self._closed:
                    raise ShoalError("the client is closed")
                ch = self._channels[i]
                if self.native is not None:
                    if ch is None:
                        max_bytes = dict(self.options).get("grpc.max_receive_message_length", 64 << 20)
                        ch = self._channels[i] = self.native.Channel(self.rotation.addresses[i], max_bytes)
                    m = _native_method(ch, path, self.native.RpcStatus)
                    self._methods[(i, path)] = m
                    return m
                if ch is None:
                    ch = self._channels[i] = grpc.insecure_channel(self.rotation.addresses[i], options=self.options)
                m = ch.unary_unary(path, request_serializer=None, response_deserializer=_identity)
                self._methods[(i, path)] = m
        return m

    def call(self, path: str, request: bytes, parse: Parse, idempotent: bool,
             timeout: Optional[float] = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        attempts = self.retry.max_attempts if idempotent else 1
        n = len(self.rotation.addresses)
        tried = 0
        sleeps = 0
        while True:
            i = self.rotation.current()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                resp = self._method(i, path)(request, timeout=remaining, metadata=self.metadata)
            except grpc.RpcError as e:
                tried += 1
                if e.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise from_rpc_error(e, self.rotation.addresses[i]) from None
                self.rotation.failed(i)
                if tried >= attempts:
                    raise from_rpc_error(e, self.rotation.addresses[i]) from None
                if tried % n == 0:  # every node tried once more: back off
                    pause = self.retry.backoff(sleeps)
                    sleeps += 1
                    if deadline is not None and time.monotonic() + pause >= deadline:
                        raise from_rpc_error(e, self.rotation.addresses[i]) from None
                    time.sleep(pause)
                continue
            return parse(resp)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, [None] * len(self._channels)
            self._methods.clear()
        for ch in channels:
            if ch is not None and self.native is None:
                ch.close()


class AsyncTransport:
    """The asyncio twin. grpc.aio channels belong to the event loop that made them,
    so channels are made per running loop (a client used from several loops, as
    test frameworks do, works)."""

    def __init__(self, addresses: List[str], options: List[Tuple[str, Any]], timeout: Optional[float],
                 retry: RetryPolicy, metadata: Optional[Sequence[Tuple[str, str]]]) -> None:
        self.rotation = _Rotation(addresses)
        self.options = options
        self.timeout = timeout
        self.retry = retry
        self.metadata = tuple(metadata) if metadata else None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._channels: List[Optional[grpc.aio.Channel]] = [None] * len(addresses)
        self._methods: Dict[Tuple[int, str], Any] = {}
        self._closed = False
        self.coalesce = False
        self._coalescer: Any = None
        self._coalescer_loop: Optional[asyncio.AbstractEventLoop] = None

    def coalescer(self) -> Any:
        """The running loop's search coalescer (``None`` when coalescing is off)."""
        if not self.coalesce:
            return None
        loop = asyncio.get_running_loop()
        if self._coalescer_loop is not loop:
            from ._coalesce import AsyncCoalescer

            self._coalescer, self._coalescer_loop = AsyncCoalescer(self.call), loop
        return self._coalescer

    def _method(self, i: int, path: str) -> Any:
        if self._closed:
            raise ShoalError("the client is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Channels of a loop that is gone cannot be closed from this one; drop them.
            self._loop = loop
            self._channels = [None] * len(self._channels)
            self._methods = {}
        m = self._methods.get((i, path))
        if m is None:
            ch = self._channels[i]
            if ch is None:
                ch = self._channels[i] = grpc.aio.insecure_channel(self.rotation.addresses[i], options=self.options)
            m = ch.unary_unary(path, request_serializer=None, response_deserializer=_identity)
            self._methods[(i, path)] = m
        return m

    async def call(self, path: str, request: bytes, parse: Parse, idempotent: bool,
                   timeout: Optional[float] = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        attempts = self.retry.max_attempts if idempotent else 1
        n = len(self.rotation.addresses)
        tried = 0
        sleeps = 0
        while True:
            i = self.rotation.current()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                resp = await self._method(i, path)(request, timeout=remaining, metadata=self.metadata)
            except grpc.RpcError as e:
                tried += 1
                if e.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise from_rpc_error(e, self.rotation.addresses[i]) from None
                self.rotation.failed(i)
                if tried >= attempts:
                    raise from_rpc_error(e, self.rotation.addresses[i]) from None
                if tried % n == 0:
                    pause = self.retry.backoff(sleeps)
                    sleeps += 1
                    if deadline is not None and time.monotonic() + pause >= deadline:
                        raise from_rpc_error(e, self.rotation.addresses[i]) from None
                    await asyncio.sleep(pause)
                continue
            return parse(resp)

    async def close(self) -> None:
        self._closed = True
        channels, self._channels = self._channels, [None] * len(self._channels)
        self._methods = {}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and loop is self._loop:
            for ch in channels:
                if ch is not None:
                    await ch.close(None)
