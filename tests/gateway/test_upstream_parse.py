"""The upstream event-stream reader on the edges of the SSE format: each line ending the
format allows, cut anywhere between reads; comments and fields other than ``data``; data over
several lines; bytes that are not UTF-8. Served from a raw socket in pieces that end after
every CR (a CRLF cut in two) and in the middle of every line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from chatrelay_gateway._upstream import Completion, UpstreamConfig, stream_chat

from tests.gateway.test_upstream import drain

_EVENTS = [
    b": a comment",
    b"event: message",
    b"id: 1",
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}',
    b"",
    b'data: {"choices":[{"delta":',
    b'data: {"content":"lo"}}]}',  # one event's data over two lines
    b"",
    b"data:",  # no data at all: no event
    b"",
    b'data:{"choices":[{"delta":{"content":" \xff!"}}]}',  # no space; not UTF-8
    b"",
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}',
    b"",
    b"data: [DONE]",
    b"",
]


def _pieces(body: bytes) -> list[bytes]:
    pieces = []
    for part in body.replace(b"\r", b"\r\0").split(b"\0"):
        middle = len(part) // 2
        pieces += [part[:middle], part[middle:]]
    return [piece for piece in pieces if piece]


async def _serve_in_pieces(body: bytes) -> AsyncIterator[str]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"connection: close\r\n\r\n"
        )
        for piece in _pieces(body):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)  # each piece in a read of its own
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n", b"\r"], ids=["crlf", "lf", "cr"])
async def test_every_line_ending_and_field_with_lines_cut_anywhere(line_end: bytes) -> None:
    body = b"".join(line + line_end for line in _EVENTS)
    pieces: list[str] = []
    async for base_url in _serve_in_pieces(body):
        async with httpx.AsyncClient() as client:
            stream = stream_chat(client, UpstreamConfig(base_url, None), {"model": "m"})
            completion = await drain(stream, pieces, [])
    assert pieces == ["Hel", "lo", " \ufffd!"]
    assert completion == Completion("stop", None)
