"""The plain-relay baseline: a bare ASGI app that streams the upstream body to the client as
it comes, standing in for a single-process relay like chatgpt-demo. Behind the same nginx
template as chatrelay (a second nginx instance), so the two differ only behind the edge.

``GET /api/relay/<model>`` → the fake's ``/chat/completions`` stream for that model, bytes
unchanged. Run: ``BENCH_UPSTREAM=http://127.0.0.1:P/v1 uvicorn bench.relay:app``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

__all__ = ["app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:1/v1") + "/chat/completions"
_PREFIX = "/api/relay/"
_client: httpx.AsyncClient | None = None


async def _lifespan(receive: Receive, send: Send) -> None:
    global _client
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000)
            _client = httpx.AsyncClient(limits=limits, timeout=60)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _client is not None:
                await _client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    if scope["type"] != "http" or not path.startswith(_PREFIX) or _client is None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = {"model": path.removeprefix(_PREFIX), "stream": True, "messages": []}
    async with _client.stream("POST", _UPSTREAM, content=json.dumps(body)) as upstream:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send(
            {"type": "http.response.start", "status": upstream.status_code, "headers": headers}
        )
        async for chunk in upstream.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
