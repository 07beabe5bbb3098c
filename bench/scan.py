"""Counting what one stream (a browser tab, or a baseline reader) receives, from raw bytes.

No JSON per event: the scanner splits SSE blocks, reads the ``id:`` line and the event name,
and finds token stamps (``bench.tokens.STAMP``) with one regex. Arrival times are taken by
the caller before the bytes are fed in.
"""

from __future__ import annotations

from array import array
from enum import Enum

from .tokens import STAMP

__all__ = ["ChunkedDecoder", "StreamFormat", "TabScan"]


class StreamFormat(Enum):
    CHATRELAY = "chatrelay"  # GET /api/sessions/{id}/events: id/event/data blocks
    OPENAI = "openai"  # the upstream's own stream: data blocks, then data: [DONE]


class ChunkedDecoder:
    """Incremental HTTP/1.1 chunked transfer decoding: body bytes out, framing dropped."""

    def __init__(self) -> None:
        self._pending = b""
        self._left = 0  # body bytes still to come in the current chunk
        self._crlf = False  # the CRLF after a chunk's data is next
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data if self._pending else data
        out: list[bytes] = []
        pos = 0
        while pos < len(buf) and not self.finished:
            if self._left:
                take = min(self._left, len(buf) - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                self._crlf = self._left == 0
            elif self._crlf:
                if len(buf) - pos < 2:
                    break
                pos += 2
                self._crlf = False
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                size = int(buf[pos:end].split(b";", 1)[0], 16)
                pos = end + 2
                if size == 0:
                    self.finished = True
                self._left = size
        self._pending = buf[pos:]
        return b"".join(out)


class TabScan:
    """One stream's tally: tokens by index (lost, duplicated), id order, timings.

    ``latencies_us`` (shared by the streams of one worker) gets arrival minus emit stamp, in µs,
    for every token that arrives live (not the prefix a snapshot carries).
    """

    def __init__(
        self, fmt: StreamFormat, expected: int, latencies_us: array[int], *, head: bool = True
    ) -> None:
        """``head``: the bytes start with an HTTP/1.1 response head (not so over HTTP/2,
        whose DATA frames carry the body alone)."""
        self.fmt = fmt
        self.expected = expected
        self._latencies = latencies_us
        self._seen = bytearray(expected)
        self._head = b""
        self._head_done = not head
        self._decoder: ChunkedDecoder | None = None
        self._buf = b""
        self.status = 0 if head else 200
        self.last_id: int | None = None
        self.id_gaps = 0  # an id more than one above the previous one
        self.id_repeats = 0  # an id not above the previous one
        self.duplicated = 0
        self.out_of_range = 0
        self.resets = 0
        self.live = 0
        self.prefix = 0
        self.snapshot_ns: int | None = None
        self.first_live_ns: int | None = None
        self.done_ns: int | None = None
        self.error: bytes | None = None

    @property
    def ready(self) -> bool:
        """The stream is established: a chatrelay tab has its snapshot."""
        return self.snapshot_ns is not None or self.fmt is StreamFormat.OPENAI

    @property
    def done(self) -> bool:
        return self.done_ns is not None or self.error is not None

    @property
    def received(self) -> int:
        return self.expected - self.lost

    @property
    def lost(self) -> int:
        return self._seen.count(0)

    def feed(self, data: bytes, now_ns: int) -> None:
        if not self._head_done:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end].lower(), self._head[end + 4 :]
            self._head_done = True
            self.status = int(head[9:12])
            if b"transfer-encoding: chunked" in head:
                self._decoder = ChunkedDecoder()
            if self.status != 200:
                self.error = head[:12]
                return
        if self._decoder is not None:
            data = self._decoder.feed(data)
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return
        self._buf = buf[end + 2 :]
        for block in buf[:end].split(b"\n\n"):
            self._block(block, now_ns)

    def _block(self, block: bytes, now_ns: int) -> None:
        if self.fmt is StreamFormat.OPENAI:
            if block == b"data: [DONE]":
                self.done_ns = now_ns
            else:
                self._stamps(block, now_ns, live=True)
            return
        if not block.startswith(b"id: "):
            if block.startswith(b"event: reset"):
                self.resets += 1
            return  # retry:, ": ping"
        line_end = block.index(b"\n")
        seq = int(block[4:line_end])
        if self.last_id is not None:
            if seq <= self.last_id:
                self.id_repeats += 1
            elif seq != self.last_id + 1:
                self.id_gaps += 1
        self.last_id = seq
        name = block[line_end + 8 : block.index(b"\n", line_end + 1)]
        if name == b"delta":
            self._stamps(block, now_ns, live=True)
        elif name == b"snapshot":
            self.snapshot_ns = now_ns
            self._stamps(block, now_ns, live=False)
        elif name == b"done":
            self.done_ns = now_ns
        elif name == b"error":
            self.error = block

    def _stamps(self, block: bytes, now_ns: int, *, live: bool) -> None:
        seen = self._seen
        for index_text, emitted in STAMP.findall(block):
            index = int(index_text)
            if index >= self.expected:
                self.out_of_range += 1
            elif seen[index]:
                self.duplicated += 1
            else:
                seen[index] = 1
                if live:
                    self.live += 1
                    self._latencies.append((now_ns - int(emitted)) // 1000)
                    if self.first_live_ns is None:
                        self.first_live_ns = now_ns
                else:
                    self.prefix += 1
