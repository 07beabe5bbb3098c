"""The bench's minimal HTTP/2 client, fed frames as nginx sends them, cut at every byte:
DATA (padded or not) reaches the right stream's scanner, SETTINGS and PING are acknowledged,
END_STREAM and RST_STREAM end a stream."""

from __future__ import annotations

import asyncio
import struct
from array import array
from typing import cast

from bench.h2 import H2Connection, frame
from bench.scan import StreamFormat
from bench.tokens import token_text


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def event(seq: int, name: str, text: str) -> bytes:
    return b'id: %d\nevent: %s\ndata: {"text": "%s"}\n\n' % (seq, name.encode(), text.encode())


async def test_frames_reach_their_streams_and_control_frames_are_answered() -> None:
    connection = H2Connection()
    transport = FakeTransport()
    connection.connection_made(cast("asyncio.Transport", transport))
    assert transport.written[0].startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    latencies: array[int] = array("q")
    first = connection.get("/api/sessions/a/events", StreamFormat.CHATRELAY, 2, latencies)
    second = connection.get("/api/sessions/b/events", StreamFormat.CHATRELAY, 2, latencies)
    assert (first.stream_id, second.stream_id) == (1, 3)
    assert b"/api/sessions/b/events" in transport.written[-1]

    padded = event(2, "delta", token_text(1, 1000))
    wire = b"".join(
        [
            frame(0x4, 0, 0, struct.pack(">HI", 0x3, 100)),  # server SETTINGS
            frame(0x1, 0x4, 1, b"\x88"),  # response HEADERS (:status 200), not decoded
            frame(0x0, 0, 1, event(1, "snapshot", token_text(0, 500))),
            frame(0x6, 0, 0, b"12345678"),  # PING
            frame(0x0, 0x8, 1, bytes([3]) + padded + b"\0\0\0"),  # PADDED
            frame(0x0, 0x1, 1, event(3, "done", "")),  # END_STREAM
            frame(0x3, 0, 3, struct.pack(">I", 2)),  # RST_STREAM on the second
        ]
    )
    for i in range(len(wire)):
        connection.data_received(wire[i : i + 1])

    assert (first.scan.lost, first.scan.duplicated, first.scan.prefix, first.scan.live) == (
        0,
        0,
        1,
        1,
    )
    assert (first.finished.done(), first.scan.done_ns is not None) == (True, True)
    assert (second.finished.done(), second.scan.lost) == (True, 2)
    assert connection.streams == {}
    answers = transport.written[3:]
    assert answers == [frame(0x4, 0x1, 0), frame(0x6, 0x1, 0, b"12345678")]
