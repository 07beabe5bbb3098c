"""The events a session's stream carries, and their wire encoding.

An event travels as three parts: its integer id (the session's sequence number), its SSE
event name, and its JSON data. The gateway encodes the data once; Redis carries it in the log
and on pub/sub as ``"<seq> <name> <json>"``; the web service turns that into SSE bytes once
and writes the same bytes to every connection.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

__all__ = [
    "STREAM_ENDING_EVENTS",
    "WIRE_SEPARATOR",
    "Deleted",
    "Delta",
    "Done",
    "ErrorEvent",
    "Event",
    "Message",
    "MessageAdded",
    "Reasoning",
    "ReplyError",
    "Reset",
    "SessionSettings",
    "SettingsChanged",
    "Snapshot",
    "Start",
    "Timing",
    "TitleChanged",
    "Truncate",
    "Usage",
    "decode_wire",
    "encode_data",
    "encode_sse",
    "encode_wire",
]

Role = Literal["user", "assistant"]
Status = Literal["complete", "streaming", "stopped", "error"]


class SessionSettings(msgspec.Struct, omit_defaults=False):
    system: str | None = None
    model: str = ""
    temperature: float | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ReplyError(msgspec.Struct):
    """Why a reply failed: the ``code`` and ``message`` of its ``error`` event."""

    code: str
    message: str


class Timing(msgspec.Struct):
    """How a reply streamed: milliseconds from its start to its first token (reasoning or
    text), and completion tokens per second from then to its end."""

    first_token_ms: int
    tokens_per_s: float


class Message(msgspec.Struct):
    """A message of a session. ``created_at`` is RFC 3339 (UTC; null for a message saved
    before chatrelay kept it). The fields after it belong to assistant messages only: for a
    user message they are UNSET, which msgspec leaves out of the JSON."""

    id: str
    role: Role
    content: str
    status: Status
    created_at: str | None = None
    model: str | msgspec.UnsetType = msgspec.UNSET
    finish_reason: str | msgspec.UnsetType | None = msgspec.UNSET
    usage: Usage | msgspec.UnsetType | None = msgspec.UNSET
    error: ReplyError | msgspec.UnsetType | None = msgspec.UNSET
    reasoning: str | msgspec.UnsetType = msgspec.UNSET
    timing: Timing | msgspec.UnsetType | None = msgspec.UNSET


class Snapshot(msgspec.Struct):
    name: ClassVar[str] = "snapshot"
    id: str
    settings: SessionSettings
    messages: list[Message]
    seq: int
    # Absent until the session has a title (its first message gives it one).
    title: str | msgspec.UnsetType = msgspec.UNSET


class MessageAdded(msgspec.Struct):
    name: ClassVar[str] = "message"
    message: Message


class Start(msgspec.Struct):
    name: ClassVar[str] = "start"
    reply_id: str
    model: str
    created_at: str | None = None


class Delta(msgspec.Struct):
    name: ClassVar[str] = "delta"
    reply_id: str
    text: str


class Reasoning(msgspec.Struct):
    """The model's "thinking" before its answer: append ``text`` to that reply's reasoning."""

    name: ClassVar[str] = "reasoning"
    reply_id: str
    text: str


class Done(msgspec.Struct):
    name: ClassVar[str] = "done"
    reply_id: str
    finish_reason: str
    usage: Usage | None
    timing: Timing | None = None


class ErrorEvent(msgspec.Struct):
    name: ClassVar[str] = "error"
    reply_id: str
    code: str
    message: str


class SettingsChanged(msgspec.Struct):
    name: ClassVar[str] = "settings"
    settings: SessionSettings


class TitleChanged(msgspec.Struct):
    """The session was renamed."""

    name: ClassVar[str] = "title"
    title: str


class Deleted(msgspec.Struct):
    """The session was deleted: nothing of it is left, and its streams end after this."""

    name: ClassVar[str] = "deleted"


class Truncate(msgspec.Struct):
    """Removes the message ``from_message_id`` and all after it (``None``: all messages)."""

    name: ClassVar[str] = "truncate"
    from_message_id: str | None


class Reset(msgspec.Struct):
    """The requested ``Last-Event-ID`` is gone from the log; a snapshot follows."""

    name: ClassVar[str] = "reset"
    last_event_id: int


Event = (
    Snapshot
    | MessageAdded
    | Start
    | Delta
    | Reasoning
    | Done
    | ErrorEvent
    | SettingsChanged
    | Truncate
    | Reset
    | TitleChanged
    | Deleted
)
# Logged events after which a session's streams end (the web closes them).
STREAM_ENDING_EVENTS: frozenset[str] = frozenset({Deleted.name})

_encoder = msgspec.json.Encoder()


def encode_data(event: Event) -> bytes:
    """The event's JSON ``data`` (its fields only: the name travels beside it)."""
    return _encoder.encode(event)


# Between the parts of an event on pub/sub. The store's Lua `emit` publishes every event (it
# alone knows the seq) and gets this from here; tests/common pins that its messages are
# exactly what `encode_wire` makes.
WIRE_SEPARATOR = b" "


def encode_wire(seq: int, name: str, data: bytes) -> bytes:
    """How an event travels through Redis pub/sub: ``b"<seq> <name> <json>"``. The store's
    Lua writes it so; this builds the same bytes for a test or a tool that publishes."""
    return WIRE_SEPARATOR.join((b"%d" % seq, name.encode(), data))


def decode_wire(raw: bytes) -> tuple[int, str, bytes]:
    """The parts of a pub/sub message that the store published."""
    seq, name, data = raw.split(WIRE_SEPARATOR, 2)
    return int(seq), name.decode(), data


def encode_sse(seq: int | None, name: str, data: bytes) -> bytes:
    """One SSE frame. JSON data never holds a raw newline, so one ``data:`` line suffices."""
    head = b"" if seq is None else b"id: %d\n" % seq
    return b"%sevent: %s\ndata: %s\n\n" % (head, name.encode(), data)
