"""The bench-mode fake upstream: OpenAI-compatible ``POST /v1/chat/completions`` streaming.

Raw asyncio on uvloop (no framework): it shares two cores with the stack under test, so it
must stay cheap. The model name says what to stream: ``bench-<N>x<M>`` is N tokens, M ms
apart, scheduled against absolute times (no drift), each stamped when written
(``bench.tokens``). HTTP/1.1 keep-alive, chunked bodies. ``python -m bench.fake --port P``.

Why not the tests' fake (tests/support/fake_upstream.py, one scenario per model): that one
runs uvicorn in a thread of the test process and builds every chunk from a dict, which is
right for exact-content tests and too dear here. This one is a process of its own whose
per-token cost is one bytes concatenation (each event is encoded once and split around the
stamp), so the shared cores go to the stack under test. It speaks only the minimal chunk
shape the gateway reads; the gateway's tests pin the full format against the tests' fake.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop

from .tokens import parse_model, token_text

__all__ = ["serve"]

_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_DONE = b"data: [DONE]\n\n"


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(model: str, delta: dict[str, str], finish: str | None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _error(status: bytes, message: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


async def _stream(
    writer: asyncio.StreamWriter, model: str, tokens: int, interval_ms: int, usage: bool
) -> None:
    loop = asyncio.get_running_loop()
    writer.write(_HEAD + _chunk(_event(model, {"role": "assistant", "content": ""}, None)))
    # The token event with a placeholder split once: only the stamp changes per token.
    before, after = _event(model, {"content": "\x01"}, None).split(b"\\u0001")
    start = loop.time()
    for index in range(tokens):
        wait = start + index * interval_ms / 1000 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if writer.is_closing():
            return
        text = token_text(index, time.monotonic_ns()).encode()
        writer.write(_chunk(before + text + after))
        if writer.transport.get_write_buffer_size() > 1 << 20:
            await writer.drain()
    tail = _event(model, {}, "stop")
    if usage:
        usage_body = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
        tail += (
            b"data: "
            + json.dumps(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [],
                    "usage": usage_body,
                }
            ).encode()
            + b"\n\n"
        )
    writer.write(_chunk(tail + _DONE) + b"0\r\n\r\n")
    await writer.drain()


def _read_request(body: bytes) -> tuple[str, int, int, bool] | bytes:
    """(model, tokens, interval_ms, include usage) to stream, or an error response."""
    try:
        request = json.loads(body)
        model = str(request["model"])
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return _error(b"400 Bad Request", "expected a JSON body with a model")
    shape = parse_model(model)
    if shape is None:
        return _error(b"404 Not Found", f"no bench model {model!r}")
    return model, *shape, include_usage


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, keep_alive = 0, True
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep_alive = False
            answer = _read_request(await reader.readexactly(length))
            if isinstance(answer, bytes):
                writer.write(answer)
            else:
                await _stream(writer, *answer)
            if not keep_alive:
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
