"""Channels to one or more nodes, retries with back-off, failover.

Every request goes to the *current* node. When a call fails with UNAVAILABLE (the
node is down, or the cluster could not find a leader or replica in time), the next
node becomes current; idempotent calls are retried there at once, and after every
node has been tried once, with exponential back-off and jitter, until the policy's
attempts or the call's timeout run out.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

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


def parse_target(url: Union[str, Sequence[str]]) -> Tuple[List[str], Optional[bool]]:
    """``"host:port"``, ``"http://host:port"``, ``"https://host:port"``, a
    comma-separated list, or a list of either: the grpc targets (``host:port``), and
    whether the addresses asked for TLS (``https://``: True, ``http://``: False, no
    scheme: None). Mixing ``http://`` and ``https://`` is an error."""
    items = [url] if isinstance(url, str) else list(url)
    out: List[str] = []
    schemes = set()
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            for prefix, scheme in (("http://", False), ("grpc://", False), ("https://", True)):
                if part.startswith(prefix):
                    part = part[len(prefix):]
                    schemes.add(scheme)
            part = part.rstrip("/")
            if ":" not in part.rsplit("]", 1)[-1]:
                part = f"{part}:{DEFAULT_PORT}"
            out.append(part)
    if not out:
        raise ValueError("no node address given")
    if len(schemes) > 1:
        raise ValueError("give every node as https:// (TLS) or none of them")
    return out, (schemes.pop() if schemes else None)


def parse_addresses(url: Union[str, Sequence[str]]) -> List[str]:
    """The grpc targets (``host:port``) of :func:`parse_target`."""
    return parse_target(url)[0]


PemLike = Union[bytes, str, "os.PathLike[str]"]


def _pem(value: Optional[PemLike], what: str) -> Optional[bytes]:
    """PEM bytes from bytes, PEM text, or the path of a PEM file."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {value!s}: {e.strerror}") from None


@dataclass(frozen=True)
class Security:
    """What a client sends to authenticate and how it encrypts: the metadata that
    carries the API key, the TLS credentials (``None``: plaintext), extra channel
    options (the TLS server name)."""

    metadata: Optional[Tuple[Tuple[str, str], ...]]
    credentials: Optional[grpc.ChannelCredentials]
    options: Tuple[Tuple[str, Any], ...] = ()

    def __repr__(self) -> str:  # never shows the key
        return f"Security(api_key={'set' if self.metadata else 'none'}, tls={self.credentials is not None})"


def security(url: Union[str, Sequence[str]], api_key: Optional[str], tls: Optional[bool],
             root_certificates: Optional[PemLike], client_certificate: Optional[PemLike],
             client_key: Optional[PemLike], tls_server_name: Optional[str],
             metadata: Optional[Sequence[Tuple[str, str]]]) -> Tuple[List[str], Security]:
    """The addresses of ``url`` and the :class:`Security` the client arguments ask for.
    TLS is on with ``tls=True``, an ``https://`` address, or any certificate argument;
    ``tls=False`` with one of those is an error."""
    addresses, scheme_tls = parse_target(url)
    wants_tls = scheme_tls is True or any(
        v is not None for v in (root_certificates, client_certificate, client_key, tls_server_name))
    if tls is False and wants_tls:
        raise ValueError("tls=False, but an https:// address or TLS certificates were given")
    use_tls = bool(tls) or wants_tls
    if scheme_tls is False and use_tls:
        raise ValueError("TLS asked for, but the address is http://: use https:// or no scheme")
    if (client_certificate is None) != (client_key is None):
        raise ValueError("client_certificate and client_key go together")
    md = list(metadata or ())
    if api_key is not None:
        if not isinstance(api_key, str) or not api_key or not api_key.isascii() or not api_key.isprintable() \
                or " " in api_key:
            raise ValueError("api_key must be a non-empty printable ASCII string without spaces")
        if any(k.lower() == "authorization" for k, _ in md):
            raise ValueError("api_key and an authorization entry in metadata: give one")
        md.append(("authorization", f"Bearer {api_key}"))
    creds = None
    options: List[Tuple[str, Any]] = []
    if use_tls:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates, "root_certificates"),
            private_key=_pem(client_key, "client_key"),
            certificate_chain=_pem(client_certificate, "client_certificate"),
        )
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
    return addresses, Security(tuple(md) if md else None, creds, tuple(options))


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
                 retry: RetryPolicy, metadata: Optional[Sequence[Tuple[str, str]]], native: bool = False,
                 credentials: Optional[grpc.ChannelCredentials] = None) -> None:
        if native and metadata:
            raise ValueError("native=True does not send gRPC metadata (nor api_key) yet")
        if native and credentials is not None:
            raise ValueError("native=True does not support TLS yet")
        self.native = _load_native() if native else None
        self.rotation = _Rotation(addresses)
        self.options = options
        self.timeout = timeout
        self.retry = retry
        self.metadata = tuple(metadata) if metadata else None
        self.credentials = credentials
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
                m = self._grpc_channel_locked(i).unary_unary(
                    path, request_serializer=None, response_deserializer=_identity)
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

    def _grpc_channel_locked(self, i: int) -> grpc.Channel:
        """The grpcio channel to node `i`, opened on first use (`self._lock` held)."""
        ch = self._channels[i]
        if ch is None:
            addr = self.rotation.addresses[i]
            ch = self._channels[i] = (
                grpc.secure_channel(addr, self.credentials, options=self.options)
                if self.credentials is not None
                else grpc.insecure_channel(addr, options=self.options))
        return ch

    def _grpc_channel(self, i: int) -> grpc.Channel:
        if self.native is not None:
            raise ShoalError("backups need the grpcio transport: use a client made with native=False")
        with self._lock:
            if self._closed:
                raise ShoalError("the client is closed")
            return self._grpc_channel_locked(i)

    def stream_out(self, path: str, request: bytes, timeout: Optional[float] = None) -> Iterator[bytes]:
        """A server-streaming call to the current node (not retried)."""
        i = self.rotation.current()
        m = self._grpc_channel(i).unary_stream(path, request_serializer=None, response_deserializer=_identity)
        try:
            for msg in m(request, timeout=self.timeout if timeout is None else timeout, metadata=self.metadata):
                yield msg
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.rotation.addresses[i]) from None

    def stream_in(self, path: str, requests: Iterator[bytes], parse: Parse,
                  timeout: Optional[float] = None) -> Any:
        """A client-streaming call to the current node (not retried)."""
        i = self.rotation.current()
        m = self._grpc_channel(i).stream_unary(path, request_serializer=None, response_deserializer=_identity)
        try:
            return parse(m(requests, timeout=self.timeout if timeout is None else timeout, metadata=self.metadata))
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.rotation.addresses[i]) from None

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
                 retry: RetryPolicy, metadata: Optional[Sequence[Tuple[str, str]]],
                 credentials: Optional[grpc.ChannelCredentials] = None) -> None:
        self.rotation = _Rotation(addresses)
        self.options = options
        self.timeout = timeout
        self.retry = retry
        self.metadata = tuple(metadata) if metadata else None
        self.credentials = credentials
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
                addr = self.rotation.addresses[i]
                ch = self._channels[i] = (
                    grpc.aio.secure_channel(addr, self.credentials, options=self.options)
                    if self.credentials is not None
                    else grpc.aio.insecure_channel(addr, options=self.options))
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

    def _aio_channel(self, i: int) -> Any:
        self._method(i, "/grpc.health.v1.Health/Check")  # makes the loop's channel
        return self._channels[i]

    async def stream_out(self, path: str, request: bytes,
                         timeout: Optional[float] = None) -> AsyncIterator[bytes]:
        """A server-streaming call to the current node (not retried): its messages."""
        i = self.rotation.current()
        m = self._aio_channel(i).unary_stream(path, request_serializer=None, response_deserializer=_identity)
        try:
            async for msg in m(request, timeout=self.timeout if timeout is None else timeout,
                               metadata=self.metadata):
                yield msg
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.rotation.addresses[i]) from None

    async def stream_in(self, path: str, requests: Iterator[bytes], parse: Parse,
                        timeout: Optional[float] = None) -> Any:
        """A client-streaming call to the current node (not retried)."""
        i = self.rotation.current()
        m = self._aio_channel(i).stream_unary(path, request_serializer=None, response_deserializer=_identity)
        try:
            return parse(await m(requests, timeout=self.timeout if timeout is None else timeout,
                                 metadata=self.metadata))
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.rotation.addresses[i]) from None

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
