"""A cheap browser-tab stand-in for the chaos tests: one events stream read as raw bytes over
a socket (plain or TLS), HTTP/1.1 chunked decoded by hand, SSE frames split on blank lines.
A tab keeps what a page keeps: the last id it applied and the conversation, rebuilt from the
snapshot and the events after it. It counts every id it missed or saw twice."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = ["Endpoint", "Frame", "StreamRejectedError", "TabView", "open_stream"]


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: ssl.SSLContext | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE frame; ``id`` None and ``name`` ``b""`` for a comment (a heartbeat)."""

    id: int | None
    name: bytes
    data: bytes


class StreamRejectedError(RuntimeError):
    def __init__(self, status: int) -> None:
        super().__init__(f"the events endpoint answered {status}")
        self.status = status


def _parse(raw: bytes) -> Frame | None:
    event_id: int | None = None
    name = b""
    data = b""
    for line in raw.split(b"\n"):
        if line.startswith(b"id: "):
            event_id = int(line[4:])
        elif line.startswith(b"event: "):
            name = line[7:]
        elif line.startswith(b"data: "):
            data = line[6:]
        elif line.startswith(b"retry: "):
            return None
    return Frame(event_id, name, data)


@contextlib.asynccontextmanager
async def open_stream(
    endpoint: Endpoint, session_id: str, last_event_id: int | None
) -> AsyncIterator[AsyncIterator[Frame]]:
    """GET the events stream; yields its frames (heartbeats included) until the server ends
    it. Raises StreamRejectedError for a non-200 answer, OSError when the connection fails."""
    reader, writer = await asyncio.open_connection(
        endpoint.host,
        endpoint.port,
        ssl=endpoint.tls,
        server_hostname="localhost" if endpoint.tls else None,
    )
    try:
        resume = b"" if last_event_id is None else b"Last-Event-ID: %d\r\n" % last_event_id
        writer.write(
            b"GET /api/sessions/%s/events HTTP/1.1\r\nHost: localhost\r\n%s\r\n"
            % (session_id.encode(), resume)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            raise StreamRejectedError(status)
        yield _frames(reader)
    finally:
        writer.transport.abort()  # a tab that goes away does not say goodbye


async def _frames(reader: asyncio.StreamReader) -> AsyncIterator[Frame]:
    """Until the stream ends, or is cut (a killed process): the browser reconnects either way."""
    buffer = b""
    while True:
        try:
            size_line = await reader.readline()
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            chunk = await reader.readexactly(size + 2)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        buffer += chunk[:-2]
        *complete, buffer = buffer.split(b"\n\n")
        for raw in complete:
            if raw and (frame := _parse(raw)) is not None:
                yield frame


@dataclass
class _Message:
    role: str
    content: str
    status: str


@dataclass
class TabView:
    """What one tab has applied. ``lost``/``duplicated`` count ids skipped or seen twice."""

    last_id: int | None = None
    messages: dict[str, _Message] = field(default_factory=dict)
    events: int = 0
    lost: int = 0
    duplicated: int = 0
    resets: int = 0

    def apply(self, frame: Frame) -> tuple[str, ...]:
        """Apply one frame; returns the ids of the replies it shows ended (a ``done`` or an
        ``error``, or a snapshot taken after they ended)."""
        if frame.name == b"reset":
            self.resets += 1
            return ()
        if frame.id is None:
            return ()  # a heartbeat
        if self.last_id is not None and frame.name != b"snapshot":
            if frame.id <= self.last_id:
                self.duplicated += 1
                return ()
            self.lost += frame.id - self.last_id - 1
        self.last_id = frame.id
        self.events += 1
        if frame.name == b"delta":  # the hot path: only deltas are many
            delta = _delta_decoder.decode(frame.data)
            self.messages[delta.reply_id].content += delta.text
            return ()
        data: dict[str, Any] = msgspec.json.decode(frame.data)
        if frame.name == b"snapshot":
            self.messages = {
                m["id"]: _Message(m["role"], m["content"], m["status"]) for m in data["messages"]
            }
            return tuple(
                message_id
                for message_id, m in self.messages.items()
                if m.role == "assistant" and m.status != "streaming"
            )
        if frame.name == b"message":
            m = data["message"]
            self.messages[m["id"]] = _Message(m["role"], m["content"], m["status"])
        elif frame.name == b"start":
            self.messages[data["reply_id"]] = _Message("assistant", "", "streaming")
        elif frame.name in (b"done", b"error"):
            self.messages[data["reply_id"]].status = frame.name.decode()
            return (str(data["reply_id"]),)
        return ()

    def conversation(self) -> list[tuple[str, str]]:
        return [(message_id, m.content) for message_id, m in self.messages.items()]

    def streaming(self) -> list[str]:
        return [message_id for message_id, m in self.messages.items() if m.status == "streaming"]


class _Delta(msgspec.Struct):
    reply_id: str
    text: str


_delta_decoder = msgspec.json.Decoder(_Delta)
