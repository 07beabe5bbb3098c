"""The load client: one worker process runs many streams on one uvloop event loop.

Every stream is a raw HTTP/1.1 connection (TLS to nginx, or plain to a service) whose
protocol takes the arrival time first, then hands the bytes to a ``TabScan``. A run spreads
its streams over several worker processes; they start together on a
``multiprocessing.Barrier`` that the coordinator also waits on, so it can read every
process's CPU right at the start.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import resource
import ssl
import time
from array import array
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, cast

import uvloop

from .h2 import H2Connection
from .scan import ChunkedDecoder, StreamFormat, TabScan
from .tokens import parse_model

__all__ = [
    "ApiConnection",
    "Endpoint",
    "Job",
    "JobKind",
    "WorkerResult",
    "http_request",
    "run_worker",
]

BARRIER_TIMEOUT = 180.0
_USER_MESSAGE = "go"  # carries no token stamp


class JobKind(Enum):
    CHAT = "chat"  # sessions x tabs through the edge; the worker posts the messages
    DIRECT = "direct"  # the fake read directly
    RELAY = "relay"  # the plain relay behind its own nginx
    FANOUT = "fanout"  # many tabs on one session; the coordinator posts the message
    IDLE = "idle"  # many tabs on one session held open, nothing streams


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool


@dataclass(frozen=True)
class Job:
    kind: JobKind
    streams: Endpoint  # where the event streams are read
    model: str
    count: int  # sessions (chat), streams (direct, relay) or connections (fanout, idle)
    api: Endpoint | None = None  # where a chat worker creates sessions and posts
    tabs: int = 1
    late_tabs: bool = False  # chat: one more tab per session, opened mid-reply
    h2: bool = False  # chat: a session's tabs share one HTTP/2 connection
    session_id: str = ""  # fanout, idle
    timeout: float = 120.0


@dataclass
class WorkerResult:
    streams: int = 0
    expected: int = 0
    received: int = 0
    live: int = 0
    prefix: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_range: int = 0
    id_gaps: int = 0
    id_repeats: int = 0
    resets: int = 0
    unfinished: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_us: array[int] = field(default_factory=lambda: array("q"))
    start_ns: int = 0
    end_ns: int = 0
    reply_seconds: list[float] = field(default_factory=list)  # POST to done, per reply
    first_token_ms: list[float] = field(default_factory=list)  # POST to first token
    catchup_prefix_ms: list[float] = field(default_factory=list)
    catchup_live_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0


class _Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...

    def abort(self) -> None: ...


class _Queue(Protocol):
    def put(self, obj: Any) -> None: ...


@functools.cache
def _ssl_context(h2: bool = False) -> ssl.SSLContext:
    """One per process and protocol: making one that loads the system's CA store costs
    milliseconds."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the bench stack's self-signed edge certificate
    context.set_alpn_protocols(["h2" if h2 else "http/1.1"])
    return context


class _Tab(Protocol):
    """One event stream, over HTTP/1.1 (_StreamProtocol) or HTTP/2 (H2Stream)."""

    scan: TabScan
    ready: asyncio.Future[None]
    finished: asyncio.Future[None]

    def close(self) -> None: ...


class _StreamProtocol(asyncio.Protocol):
    def __init__(
        self, scan: TabScan, request: bytes | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        """``request`` is sent once connected; None: later, with ``send``."""
        self.scan = scan
        self._request = request
        self.ready: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not subclasses
        if self._request is not None:
            self.transport.write(self._request)

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()  # arrival first, before any parsing
        scan = self.scan
        scan.feed(data, now)
        if scan.ready and not self.ready.done():
            self.ready.set_result(None)
        if scan.done and not self.finished.done():
            self.finished.set_result(None)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.ready, self.finished):
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Worker:
    def __init__(self, job: Job) -> None:
        self.job = job
        shape = parse_model(job.model)
        if shape is None:
            raise ValueError(f"not a bench model: {job.model}")
        self.tokens, self.interval_ms = shape
        self.result = WorkerResult()
        self.scans: list[TabScan] = []
        self._ssl = _ssl_context()
        self._errors: list[str] = []

    async def open(
        self, endpoint: Endpoint, fmt: StreamFormat, request: bytes | None
    ) -> _StreamProtocol:
        loop = asyncio.get_running_loop()
        scan = TabScan(fmt, self.tokens, self.result.latencies_us)
        self.scans.append(scan)
        protocol = _StreamProtocol(scan, request, loop)
        await loop.create_connection(
            lambda: protocol,
            endpoint.host,
            endpoint.port,
            ssl=self._ssl if endpoint.tls else None,
            server_hostname="localhost" if endpoint.tls else None,
        )
        return protocol

    async def open_h2(self, endpoint: Endpoint) -> H2Connection:
        loop = asyncio.get_running_loop()
        transport, connection = await loop.create_connection(
            H2Connection,
            endpoint.host,
            endpoint.port,
            ssl=_ssl_context(h2=True),
            server_hostname="localhost",
        )
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            raise RuntimeError("the edge did not agree to HTTP/2 (ALPN)")
        return connection

    async def open_tab(
        self, endpoint: Endpoint, session_id: str, via: H2Connection | None = None
    ) -> _Tab:
        path = f"/api/sessions/{session_id}/events"
        if via is not None:
            stream = via.get(path, StreamFormat.CHATRELAY, self.tokens, self.result.latencies_us)
            self.scans.append(stream.scan)
            return stream
        request = (
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        return await self.open(endpoint, StreamFormat.CHATRELAY, request)

    async def wait_ready(self, tabs: list[_Tab]) -> None:
        await asyncio.wait_for(asyncio.gather(*(tab.ready for tab in tabs)), self.job.timeout)

    async def wait_finished(self, tabs: list[_Tab]) -> None:
        waiting = [tab.finished for tab in tabs]
        _, pending = await asyncio.wait(waiting, timeout=self.job.timeout)
        self.result.unfinished += len(pending)

    async def start_together(self, barrier: _Barrier) -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, BARRIER_TIMEOUT)
        self.result.start_ns = time.monotonic_ns()

    # ------------------------------------------------------------------ the job kinds

    async def chat(self, barrier: _Barrier) -> None:
        job = self.job
        assert job.api is not None
        api = job.api

        connections: dict[str, ApiConnection] = {}

        async def new_session() -> str:
            connection = await ApiConnection.open(api)
            status, body = await connection.request("POST", "/api/sessions", {"model": job.model})
            if status != 201:
                raise RuntimeError(f"POST /api/sessions: {status} {body[:200]!r}")
            session_id = str(json.loads(body)["id"])
            connections[session_id] = connection
            return session_id

        sessions = await asyncio.gather(*(new_session() for _ in range(job.count)))
        # HTTP/2: a browser holds every tab of one origin on one connection; here, a session's.
        h2 = {sid: await self.open_h2(job.streams) for sid in sessions} if job.h2 else {}
        tabs = {
            sid: [await self.open_tab(job.streams, sid, h2.get(sid)) for _ in range(job.tabs)]
            for sid in sessions
        }
        await self.wait_ready([tab for group in tabs.values() for tab in group])
        await self.start_together(barrier)
        late: list[_Tab] = []
        stream_seconds = self.tokens * self.interval_ms / 1000

        async def reply(session_id: str) -> None:
            posted = time.monotonic_ns()
            path = f"/api/sessions/{session_id}/messages"
            connection = connections[session_id]
            status, body = await connection.request("POST", path, {"content": _USER_MESSAGE})
            connection.close()
            if status != 202:
                self._errors.append(f"POST messages: {status} {body[:200]!r}")
                return
            if job.late_tabs:
                await asyncio.sleep(random.uniform(0.25, 0.6) * stream_seconds)
                opened = time.monotonic_ns()
                tab = await self.open_tab(job.streams, session_id, h2.get(session_id))
                late.append(tab)
                await tab.ready
                if tab.scan.snapshot_ns is not None:
                    self.result.catchup_prefix_ms.append((tab.scan.snapshot_ns - opened) / 1e6)
                await tab.finished
                if tab.scan.first_live_ns is not None:
                    self.result.catchup_live_ms.append((tab.scan.first_live_ns - opened) / 1e6)
            first = tabs[session_id][0]
            await first.finished
            if first.scan.done_ns is not None:
                self.result.reply_seconds.append((first.scan.done_ns - posted) / 1e9)
            if first.scan.first_live_ns is not None:
                self.result.first_token_ms.append((first.scan.first_live_ns - posted) / 1e6)

        await asyncio.wait_for(
            asyncio.gather(*(reply(sid) for sid in sessions)), job.timeout + stream_seconds
        )
        await self.wait_finished([tab for group in tabs.values() for tab in group] + late)
        for connection in h2.values():
            connection.close()

    async def baseline(self, barrier: _Barrier) -> None:
        job = self.job
        if job.kind is JobKind.DIRECT:
            body = json.dumps({"model": job.model, "stream": True, "messages": []}).encode()
            request = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        else:
            request = f"GET /api/relay/{job.model} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        # Connected (TLS included) before the start, as chatrelay's tabs and POST connections
        # are: both walls then start at the request.
        streams = await asyncio.gather(
            *(self.open(job.streams, StreamFormat.OPENAI, None) for _ in range(job.count))
        )
        await self.start_together(barrier)
        for stream in streams:
            stream.send(request)
        await self.wait_finished(list(streams))

    async def connect_all(self, count: int) -> list[_Tab]:
        job = self.job
        tabs: list[_Tab] = []
        for start in range(0, count, 200):  # connect in waves: no accept-queue overflow
            wave = range(start, min(count, start + 200))
            tabs += await asyncio.gather(
                *(self.open_tab(job.streams, job.session_id) for _ in wave)
            )
        await self.wait_ready(tabs)
        return tabs

    async def fanout(self, barrier: _Barrier) -> None:
        tabs = await self.connect_all(self.job.count)
        await self.start_together(barrier)
        await self.wait_finished(tabs)

    async def idle(self, barrier: _Barrier) -> None:
        """Half the connections, a pause for the coordinator to read the web's memory, the
        other half, another pause: the difference is the cost of a connection alone."""
        loop = asyncio.get_running_loop()
        half = self.job.count // 2
        tabs = await self.connect_all(half)
        await self.start_together(barrier)
        await loop.run_in_executor(None, barrier.wait, BARRIER_TIMEOUT)
        tabs += await self.connect_all(self.job.count - half)
        for _ in range(2):
            await loop.run_in_executor(None, barrier.wait, BARRIER_TIMEOUT)
        for tab in tabs:
            tab.close()

    def finish(self) -> WorkerResult:
        result = self.result
        result.end_ns = max((s.done_ns or 0 for s in self.scans), default=0)
        counted = self.job.kind is not JobKind.IDLE
        for scan in self.scans:
            result.streams += 1
            if counted:
                result.expected += scan.expected
                result.received += scan.received
                result.lost += scan.lost
            result.live += scan.live
            result.prefix += scan.prefix
            result.duplicated += scan.duplicated
            result.out_of_range += scan.out_of_range
            result.id_gaps += scan.id_gaps
            result.id_repeats += scan.id_repeats
            result.resets += scan.resets
            if scan.error is not None:
                self._errors.append(scan.error[:200].decode(errors="replace"))
        result.errors = self._errors[:5]
        return result


async def _run(job: Job, barrier: _Barrier) -> WorkerResult:
    worker = _Worker(job)
    before = resource.getrusage(resource.RUSAGE_SELF)
    if job.kind is JobKind.CHAT:
        await worker.chat(barrier)
    elif job.kind in (JobKind.DIRECT, JobKind.RELAY):
        await worker.baseline(barrier)
    elif job.kind is JobKind.FANOUT:
        await worker.fanout(barrier)
    else:
        await worker.idle(barrier)
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = worker.finish()
    # Setup (sessions, connecting) counts too: it is small next to the streaming itself.
    result.cpu_seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def run_worker(job: Job, barrier: _Barrier, results: _Queue) -> None:
    """A worker process's entry point: run the job, put a WorkerResult (or the error text)."""
    try:
        results.put(uvloop.run(_run(job, barrier)))
    except BaseException as exc:  # reported to the coordinator, which fails the run
        results.put(f"{type(exc).__name__}: {exc}")
        barrier.abort()  # the others stop waiting at once


class ApiConnection:
    """A keep-alive HTTP/1.1 connection for JSON requests. A chat worker opens one per
    session before the measured part, as a browser already has its connection: no TLS
    handshake inside the measured window."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, endpoint: Endpoint) -> ApiConnection:
        reader, writer = await asyncio.open_connection(
            endpoint.host,
            endpoint.port,
            ssl=_ssl_context() if endpoint.tls else None,
            server_hostname="localhost" if endpoint.tls else None,
        )
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        """(status, body)."""
        payload = b"" if body is None else json.dumps(body).encode()
        self._writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        head = (await self._reader.readuntil(b"\r\n\r\n")).lower()
        length = -1
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length >= 0:
            answer = await self._reader.readexactly(length)
        elif b"transfer-encoding: chunked" in head:
            decoder, parts = ChunkedDecoder(), []
            while not decoder.finished:
                data = await self._reader.read(65536)
                if not data:
                    break
                parts.append(decoder.feed(data))
            answer = b"".join(parts)
        else:
            answer = await self._reader.read()
        return int(head[9:12]), answer

    def close(self) -> None:
        self._writer.close()


async def http_request(
    endpoint: Endpoint, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, bytes]:
    """One request on its own connection: (status, body)."""
    connection = await ApiConnection.open(endpoint)
    try:
        return await connection.request(method, path, body)
    finally:
        connection.close()
