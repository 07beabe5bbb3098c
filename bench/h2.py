"""A minimal HTTP/2 client for event streams (GET only), as a browser holds several tabs'
streams on one connection. The venv has no ``h2`` package and the bench needs little:

- requests: one HEADERS frame, HPACK literals without indexing (no table, no Huffman);
- responses: DATA frames go to the stream's ``TabScan`` as they are; response HEADERS are
  not decoded (a refusal shows up as a stream without the expected events, i.e. lost tokens);
- flow control: the largest windows at the start, so nothing ever waits for WINDOW_UPDATE in
  a run (2 GiB per connection);
- SETTINGS and PING are acknowledged; RST_STREAM, GOAWAY and the end of the connection end
  the streams.
"""

from __future__ import annotations

import asyncio
import struct
import time
from array import array
from typing import cast

from .scan import StreamFormat, TabScan

__all__ = ["H2Connection", "H2Stream", "frame"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS, _PADDED = 0x1, 0x1, 0x4, 0x8
_MAX_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65535
_SETTINGS_ENABLE_PUSH, _SETTINGS_INITIAL_WINDOW = 0x2, 0x4


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload
    )


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK 'literal header field without indexing, new name', plain strings (< 127 bytes)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


class H2Stream:
    """One GET on an H2Connection: the same face as an HTTP/1.1 tab (scan, ready, finished,
    close)."""

    def __init__(self, connection: H2Connection, stream_id: int, scan: TabScan) -> None:
        loop = asyncio.get_running_loop()
        self.connection = connection
        self.stream_id = stream_id
        self.scan = scan
        self.ready: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()

    def on_body(self, data: bytes, now_ns: int) -> None:
        scan = self.scan
        scan.feed(data, now_ns)
        if scan.ready and not self.ready.done():
            self.ready.set_result(None)
        if scan.done:
            self.end()

    def end(self) -> None:
        for future in (self.ready, self.finished):
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        self.connection.reset(self.stream_id)


class H2Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self._next_id = 1
        self._buf = b""
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not subclasses
        settings = struct.pack(
            ">HIHI", _SETTINGS_ENABLE_PUSH, 0, _SETTINGS_INITIAL_WINDOW, _MAX_WINDOW
        )
        window = struct.pack(">I", _MAX_WINDOW - _DEFAULT_WINDOW)
        self.transport.write(_PREFACE + frame(_SETTINGS, 0, 0, settings) + frame(0x8, 0, 0, window))
        self.opened.set_result(None)

    def get(
        self, path: str, fmt: StreamFormat, expected: int, latencies_us: array[int]
    ) -> H2Stream:
        assert self.transport is not None
        stream_id = self._next_id
        self._next_id += 2
        stream = H2Stream(self, stream_id, TabScan(fmt, expected, latencies_us, head=False))
        self.streams[stream_id] = stream
        block = (
            _literal(b":method", b"GET")
            + _literal(b":scheme", b"https")
            + _literal(b":authority", b"localhost")
            + _literal(b":path", path.encode())
            + _literal(b"accept", b"text/event-stream")
        )
        self.transport.write(frame(_HEADERS, _END_HEADERS | _END_STREAM, stream_id, block))
        return stream

    def reset(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.end()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(frame(_RST_STREAM, 0, stream_id, struct.pack(">I", 0x8)))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()  # arrival first, before any parsing
        buf = self._buf + data if self._buf else data
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = buf[pos + 9 : pos + 9 + length]
            pos += 9 + length
            self._frame_received(kind, flags, stream_id, payload, now)
        self._buf = buf[pos:]

    def _frame_received(
        self, kind: int, flags: int, stream_id: int, payload: bytes, now: int
    ) -> None:
        stream = self.streams.get(stream_id)
        if kind == _DATA and stream is not None:
            if flags & _PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            stream.on_body(payload, now)
        elif kind == _SETTINGS and not flags & _ACK:
            self._write(frame(_SETTINGS, _ACK, 0))
        elif kind == _PING and not flags & _ACK:
            self._write(frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            self.connection_lost(None)
            return
        if stream is not None and (
            kind == _RST_STREAM or (kind in (_DATA, _HEADERS) and flags & _END_STREAM)
        ):
            self.streams.pop(stream_id, None)
            stream.end()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        for stream in list(self.streams.values()):
            stream.end()
        self.streams.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
