"""The gateway's HTTP/1.1 client transport to the upstream: asyncio protocols, responses
parsed by httptools (llhttp, in C; uvicorn's own parser).

Under httpx's default transport every chunk of a streamed answer passes through httpcore,
h11 and an anyio cancel scope per read: at 100 streaming replies that was about a third of
the gateway's CPU (py-spy, issue 8), most of it the per-read timeout bookkeeping, and it
starved the start of new replies. This transport keeps httpx's client API, its errors
(``httpx.ConnectError``, ``ReadTimeout``, ``RemoteProtocolError`` ...) and its connect and
read timeouts, with one timer per wait for data. An upstream reached through a proxy
(``HTTPS_PROXY`` and the like, which httpx honours) keeps httpx's own transport:
:func:`upstream_client` picks.

Keep-alive connections are reused (most recent first) while fresher than
``KEEPALIVE_SECONDS``, with no cap on concurrent connections: the gateway's reply slots
already bound those. A response not read to its end closes its connection, so that an
upstream whose answer was stopped stops generating (and billing) too.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator
from typing import Final, cast

import httptools
import httpx

__all__ = ["KEEPALIVE_SECONDS", "UpstreamTransport", "upstream_client"]

# Servers close idle keep-alive connections after some seconds; one reused just as it is
# closed fails its request, so only fresher ones are reused (httpx's default expiry).
KEEPALIVE_SECONDS: Final = 5.0
# A body its reader does not keep up with: stop reading the socket past this much.
_HIGH_WATER: Final = 256 * 1024
_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443}

# scheme, host, port
_Origin = tuple[bytes, bytes, int]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection carrying one request at a time; httptools calls the
    ``on_*`` methods as it parses the response."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[bool] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._until_eof = False  # no length and not chunked: the body ends with the connection
        self.complete = False
        self.reusable = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._error: httpx.TransportError | None = None

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast("asyncio.Transport", transport)  # again from _connect: no harm

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"Malformed HTTP response: {exc}"))
            self.abort()

    def eof_received(self) -> None:
        return None  # close the connection (after the body, if it ends here)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head_done and self._until_eof and not self.complete and self._error is None:
            self.complete = True
        elif not self.complete:
            self._fail(
                httpx.ReadError(str(exc))
                if exc is not None
                else httpx.RemoteProtocolError("Server disconnected without a complete response")
            )
        self._wake()

    # --- httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_done = True
        names = {name.lower() for name, _ in self._headers}
        self._until_eof = b"content-length" not in names and b"transfer-encoding" not in names
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.reusable = self._parser.should_keep_alive()
        self._wake()

    # --- used by the transport

    def send(self, request: bytes) -> None:
        assert self._transport is not None
        if self._paused:  # the last response ended while its reader lagged behind
            self._transport.resume_reading()
        self._reset()
        self._transport.write(request)

    def abort(self) -> None:
        """Close at once (a response not read to its end: the upstream should stop now)."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    async def head(
        self, idle_seconds: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        while not self._head_done:
            if self._error is not None:
                raise self._error
            if not await self._wait(idle_seconds):
                raise httpx.ReadTimeout("Timed out waiting for the response head")
        return self._parser.get_status_code(), self._reason, self._headers

    async def body(self, idle_seconds: float | None) -> AsyncIterator[bytes]:
        """The body as it arrives: what came since the last read, joined."""
        while True:
            if self._chunks:
                data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._paused and self._transport is not None and not self.closed:
                    self._paused = False
                    self._transport.resume_reading()
                yield data
            elif self.complete:
                return
            elif self._error is not None:
                raise self._error
            elif not await self._wait(idle_seconds):
                raise httpx.ReadTimeout("Timed out waiting for the response body")

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def _wait(self, seconds: float | None) -> bool:
        """Until something happens (True), or False after ``seconds`` of nothing: one timer
        per wait, far cheaper than a cancel scope (``asyncio.timeout``) per read."""
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        timer = None if seconds is None else self._loop.call_later(seconds, _time_out, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _time_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Body(httpx.AsyncByteStream):
    def __init__(
        self,
        owner: UpstreamTransport,
        origin: _Origin,
        connection: _Connection,
        read_timeout: float | None,
    ) -> None:
        self._owner = owner
        self._origin = origin
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in self._connection.body(self._read_timeout):
            yield data

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._owner.release(self._origin, self._connection)


def _request_bytes(request: httpx.Request, body: bytes) -> bytes:
    lines = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    has_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":  # the body is sent whole, with its length
            continue
        has_length = has_length or lowered == b"content-length"
        lines += [name, b": ", value, b"\r\n"]
    if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines += [b"\r\n", body]
    return b"".join(lines)


class UpstreamTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient(transport=...)`` for HTTP/1.1 to the upstream. ``max_idle``
    bounds the keep-alive connections kept per origin."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 100) -> None:
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._busy: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"Unsupported URL scheme {scheme.decode()!r}")
        origin = (scheme, request.url.raw_host, request.url.port or _DEFAULT_PORTS[scheme])
        timeouts = request.extensions.get("timeout", {})
        try:
            body = request.content  # built from json= or content=: already in memory
        except httpx.RequestNotRead:
            assert isinstance(request.stream, httpx.AsyncByteStream)
            body = b"".join([part async for part in request.stream])
        connection = self._reuse(origin) or await self._connect(origin, timeouts.get("connect"))
        self._busy.add(connection)
        try:
            connection.send(_request_bytes(request, body))
            status, reason, headers = await connection.head(timeouts.get("read"))
        except BaseException:
            self._busy.discard(connection)
            connection.abort()
            raise
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(self, origin, connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def release(self, origin: _Origin, connection: _Connection) -> None:
        """A response is done with: keep its connection for the next request if it may
        carry one, else close it."""
        self._busy.discard(connection)
        if not (connection.complete and connection.reusable) or connection.closed:
            connection.abort()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle = self._idle.setdefault(origin, [])
        idle.append(connection)
        if len(idle) > self._max_idle:
            idle.pop(0).close()

    async def aclose(self) -> None:
        for connection in [*self._busy, *(c for idle in self._idle.values() for c in idle)]:
            connection.abort()
        self._busy.clear()
        self._idle.clear()

    def _reuse(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        fresh_after = asyncio.get_running_loop().time() - KEEPALIVE_SECONDS
        while idle:
            connection = idle.pop()  # the most recent: the least likely to be closed
            if not connection.closed and connection.idle_since > fresh_after:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, seconds: float | None) -> _Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        tls = None
        if scheme == b"https":
            if self._ssl_context is None:
                # httpx's defaults: certifi, or SSL_CERT_FILE / SSL_CERT_DIR when set.
                self._ssl_context = httpx.create_ssl_context()
            tls = self._ssl_context
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                transport, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"Timed out connecting to {host}:{port}") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        # uvloop may call connection_made only after create_connection has returned.
        connection.connection_made(transport)
        return connection


def _proxied(url: httpx.URL) -> bool:
    """Whether the environment sends ``url`` through a proxy (``*_PROXY``, ``NO_PROXY``)."""
    proxies = urllib.request.getproxies_environment()
    if url.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(url.host)


def upstream_client(base_url: str, timeout: httpx.Timeout, *, max_idle: int) -> httpx.AsyncClient:
    """The client for the upstream at ``base_url``: on :class:`UpstreamTransport`, unless a
    proxy is configured for it (then httpx's own transport, which speaks to proxies)."""
    if _proxied(httpx.URL(base_url)):
        return httpx.AsyncClient(timeout=timeout)
    return httpx.AsyncClient(timeout=timeout, transport=UpstreamTransport(max_idle=max_idle))
