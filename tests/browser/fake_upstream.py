"""A small OpenAI-compatible streaming server for the browser tests (bare ASGI, no deps).

Run: ``python -m uvicorn tests.browser.fake_upstream:app --port P``. What it answers is
chosen by the last user message, so a test drives it by what it types in the page:

- ``slow N [MS]`` — the words ``w001 … wN`` (see :func:`slow_text`), one chunk per word,
  ``MS`` milliseconds apart (default 40).
- ``xss`` — :data:`XSS_PAYLOAD`: markdown mixed with HTML and script that must stay inert.
- ``fail STATUS`` — that HTTP status with an OpenAI error body (no stream).
- ``cut N`` — ``w001 … wN`` (with a trailing space), then the connection drops: no finish
  chunk, no ``[DONE]``.
- ``showcase`` or :data:`SHOWCASE_PROMPT` — :data:`SHOWCASE`: markdown with a code block, a
  list and math.
- anything else — ``echo: <message>``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["SHOWCASE", "SHOWCASE_PROMPT", "XSS_PAYLOAD", "app", "slow_text"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

XSS_PAYLOAD = (
    "Here you go: <script>window.__xss = 'script'; alert('script')</script>\n\n"
    "<img src=x onerror=\"window.__xss='img'; alert('img')\">\n\n"
    "[click me](javascript:window.__xss='link';alert('link'))\n\n"
    "<svg onload=\"alert('svg')\"><circle r=5></circle></svg>\n\n"
    "<iframe src=\"javascript:alert('iframe')\"></iframe>"
    '<div id="injected" style="color:red">raw html</div>\n\n'
    "![pic](x\" onerror=\"alert('attr'))\n\n"
    "`<b>code</b>` and ```\n<script>alert('fence')</script>\n```\n"
    "END-OF-PAYLOAD"
)

SHOWCASE_PROMPT = "How do I sort a list in Python, and how fast is it?"
SHOWCASE = (
    "Here is a **quick sort** in Python, plus the maths behind its average cost.\n\n"
    "```python\n"
    "def quicksort(items: list[int]) -> list[int]:\n"
    "    if len(items) <= 1:\n"
    "        return items\n"
    "    pivot, *rest = items\n"
    "    left = [x for x in rest if x < pivot]\n"
    "    right = [x for x in rest if x >= pivot]\n"
    "    return quicksort(left) + [pivot] + quicksort(right)\n"
    "```\n\n"
    "- average case: $O(n \\log n)$ comparisons\n"
    "- worst case (sorted input, first element as pivot): $O(n^2)$\n\n"
    "$$C(n) = (n-1) + \\frac{2}{n}\\sum_{k=0}^{n-1} C(k) \\approx 2n \\ln n$$\n\n"
    "Pick a random pivot to make the worst case unlikely."
)


class StreamCutError(RuntimeError):
    """Raised inside the ASGI app so that uvicorn drops the connection mid-response."""


def slow_text(count: int) -> str:
    """The full reply ``slow N`` produces: ``w001 w002 … wN``."""
    return " ".join(f"w{i:03d}" for i in range(1, count + 1))


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _last_user_text(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
        await _json(send, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        return
    request = json.loads(body or b"{}")
    model = str(request.get("model") or "fake-model")
    text = _last_user_text(request).strip()

    if match := re.fullmatch(r"fail (\d{3})", text):
        status = int(match.group(1))
        await _json(
            send,
            status,
            {
                "error": {
                    "message": f"fake upstream says {status}",
                    "type": "fake_error",
                    "code": str(status),
                }
            },
        )
        return

    delay = 0.0
    cut = False
    if match := re.fullmatch(r"cut (\d+)", text):
        pieces = [f"w{i:03d} " for i in range(1, int(match.group(1)) + 1)]
        delay, cut = 0.02, True
    elif match := re.fullmatch(r"slow (\d+)(?: (\d+))?", text):
        pieces = [
            f"w{i:03d}" + ("" if i == int(match.group(1)) else " ")
            for i in range(1, int(match.group(1)) + 1)
        ]
        delay = int(match.group(2) or 40) / 1000
    elif text == "xss":
        pieces = re.findall(r".{1,12}", XSS_PAYLOAD, flags=re.S)
    elif text in ("showcase", SHOWCASE_PROMPT):
        pieces = re.findall(r".{1,16}", SHOWCASE, flags=re.S)
    else:
        pieces = [f"echo: {text}"]

    # The gateway closes the request on `stop`: notice it and stop writing.
    gone = asyncio.Event()

    async def watch_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.ensure_future(watch_disconnect())
    try:
        await _stream(send, model, pieces, delay, gone, cut)
        if cut:
            raise StreamCutError("the fake upstream drops the connection mid-stream")
    finally:
        watcher.cancel()


async def _stream(
    send: Send, model: str, pieces: list[str], delay: float, gone: asyncio.Event, cut: bool
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": _chunk(model, {"role": "assistant"}),
            "more_body": True,
        }
    )
    for piece in pieces:
        if delay:
            await asyncio.sleep(delay)
        if gone.is_set():
            return
        await send(
            {
                "type": "http.response.body",
                "body": _chunk(model, {"content": piece}),
                "more_body": True,
            }
        )
    if cut:
        return  # no finish chunk, no [DONE]: the caller drops the connection
    await send({"type": "http.response.body", "body": _chunk(model, {}, "stop"), "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
