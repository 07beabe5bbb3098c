"""A fake OpenAI-compatible upstream on a real socket, for streaming tests.

``FakeUpstream()`` is a context manager that runs uvicorn in a background thread on a free
``127.0.0.1`` port; ``.base_url`` is ``http://127.0.0.1:PORT/v1``. The app is a small raw ASGI
callable, so every byte and every flush is under the test's control (uvicorn's transport has
``TCP_NODELAY`` set: each ASGI send leaves as its own segment).

``POST /v1/chat/completions`` picks its behaviour from the request body's ``model``. Unless a
scenario says otherwise it streams ``text/event-stream`` with CRLF line endings, ignoring the
request's ``stream`` flag; ``*_PIECES`` are the ``delta.content`` values in order and
``*_TEXT`` is their concatenation (what a client must collect, exactly):

``ok``
    A role-only first chunk (``{"role": "assistant", "content": ""}``), ``OK_PIECES``
    (``OK_TEXT`` = ``"Hello, world! How can I help?"``) with an empty-delta chunk and an SSE
    comment line (``: keepalive``) in between, a final chunk with ``finish_reason: "stop"``
    and an empty delta, then - only when the request had ``stream_options.include_usage`` - a
    usage chunk with ``choices: []`` and ``usage`` = ``USAGE``, then ``data: [DONE]``.
``length``
    Like ``ok`` with ``LENGTH_PIECES``/``LENGTH_TEXT`` and ``finish_reason: "length"``.
``utf8``
    ``UTF8_PIECES`` (``UTF8_TEXT`` = ``"你好，世界 🌍🚀 再见 👋🏽"``), finish ``stop``, usage,
    ``[DONE]``. The raw UTF-8 bytes (JSON with ``ensure_ascii=False``) go out in separate ASGI
    sends, ``UTF8_SEND_DELAY`` seconds apart, cut in the middle of every multi-byte character
    and between every ``\\r`` and ``\\n``.
``slow``
    A role chunk, then ``SLOW_TOKEN_COUNT`` pieces ``SLOW_PIECES`` (``SLOW_TEXT`` =
    ``"w0 w1 ... w199"``), one every ``slow_delay`` seconds (``SLOW_DELAY`` unless
    ``FakeUpstream(slow_delay=...)``), then finish ``stop``, usage, ``[DONE]``. Stops at once
    when the client closes the connection (recorded in ``client_disconnects``).
``midstream_error``
    ``MIDSTREAM_PIECES``/``MIDSTREAM_TEXT``, then
    ``data: {"error": {"message": MIDSTREAM_ERROR_MESSAGE, "type": "server_error", ...}}`` and
    the body ends.
``no_done``
    ``NO_DONE_PIECES``/``NO_DONE_TEXT``, then the body ends cleanly: no ``finish_reason``, no
    ``[DONE]``.
``finish_no_done``
    ``FINISH_NO_DONE_PIECES``/``FINISH_NO_DONE_TEXT`` and a ``finish_reason: "stop"`` chunk,
    then the body ends without usage and without ``[DONE]``.
``cut``
    ``CUT_PIECES``/``CUT_TEXT``, then the app raises mid-body so uvicorn closes the connection
    in the middle of the chunked body: the client sees a protocol/transport error.
``http_401``, ``http_404``, ``http_429``, ``http_500``, ``http_503``
    That status with the OpenAI error body ``{"error": {"message", "type", "param", "code"}}``
    from ``HTTP_ERRORS``; 429 also sends ``Retry-After: 7`` (``RETRY_AFTER``). The 401 message
    echoes a fragment of the presented key as OpenAI does (``auth_error_message(key)``:
    ``"Incorrect API key provided: sk-test-**********1234. ..."``).
``hang``
    Never sends the response head.
``idle``
    Sends a role chunk and ``IDLE_PIECES``/``IDLE_TEXT``, then goes silent.
``json``
    Ignores ``stream`` and answers ``application/json`` with one whole completion:
    ``JSON_TEXT``, ``finish_reason: "stop"``, ``usage`` = ``USAGE``.
``json_long``
    Like ``json`` with ``JSON_LONG_TEXT`` (about 90 KB: a long answer from a server that
    ignores ``stream``), the body written in ``JSON_LONG_SEND_SIZE``-byte sends.
``no_max_tokens``, ``no_max_completion_tokens``
    A request carrying that parameter gets OpenAI's 400 for it (``TOKEN_CAP_REFUSALS``:
    "Unsupported parameter: 'max_tokens' ... Use 'max_completion_tokens' instead." and the
    reverse); any other request is answered like ``ok``.
``bad_usage``
    Like ``ok``, but the usage chunk carries ``BAD_USAGE`` (non-numeric counts).
``flood``
    A role chunk, then ``FLOOD_PIECE`` (1 KiB of text) every ``FLOOD_DELAY`` seconds, without
    end, until the client leaves.

``scripted``
    The browser tests' model: the last user message picks the reply. ``slow N [MS]`` streams
    ``slow_text(N)`` (``w001 w002 ... wN``) a word at a time, ``MS`` ms apart (40); ``cut N``
    the same words 20 ms apart, each with a trailing space, then the connection drops;
    ``fail STATUS`` answers that status with an OpenAI error body; ``xss`` streams
    ``XSS_PAYLOAD`` and ``showcase`` (or ``SHOWCASE_PROMPT``) ``SHOWCASE``, in small pieces;
    anything else ``echo: <message>``. Each streamed reply ends with finish ``stop``, usage
    when asked for, ``[DONE]``.

``reasoning``
    A role chunk, ``REASONING_PIECES`` (``REASONING_TEXT``) as ``delta.reasoning_content``
    (DeepSeek, vLLM <= 0.10, llama.cpp), then ``OK_PIECES`` as content, finish ``stop``,
    usage, ``[DONE]``.
``reasoning_field``
    The same with ``delta.reasoning`` (vLLM >= 0.11, Ollama, OpenRouter).
``think_tags``
    The same reasoning inside the content, ``<think>REASONING_TEXT</think>`` then two
    newlines and ``OK_TEXT``, in ``THINK_TAG_PIECES``: both tags are cut across chunks.
``reasoning_pause``
    Like ``reasoning``, with a pause of ``REASONING_PAUSE`` seconds between the reasoning
    and the answer (a tab can join while the model "thinks").
``no_stream_options``
    A request carrying ``stream_options`` gets a 400 ``STREAM_OPTIONS_REFUSAL`` (as some
    proxies answer); any other is answered like ``ok`` (without usage: none was asked for).

Any other model gets a 404 ``model_not_found`` error body; a body that is not a JSON object
gets a 400. ``GET /v1/models`` lists ``.listed_models`` (``SCENARIOS`` unless set), after
``.models_delay`` seconds (0), with status ``.models_status`` (200; any other answers an
error body); ``.models_requests`` counts them.

When the fake stops (the ``with`` block ends), responses still waiting (``hang``, ``idle``,
``slow``) end at once: with a 503 error body if no head was sent, else the body just ends.

Tracking, all thread-safe (the server runs in its own thread and event loop):

- ``.requests``: every chat-completions request, as ``RecordedRequest(headers, body)`` (a
  named tuple; header names lower-case, body the parsed JSON).
- ``.client_disconnects``: the model (scenario) of every response the client closed before the
  server finished it, in order, detected through ASGI ``http.disconnect``.
- ``wait_for_disconnect(count=1, timeout=5.0)`` blocks until at least ``count`` were recorded
  (``TimeoutError`` otherwise); ``await wait_for_disconnect_async(...)`` is the same without
  blocking the calling event loop (use it when the client runs in that loop).
- ``reset()`` forgets both.

``unanswered_base_url()`` (a context manager) gives a base URL whose TCP connect never
completes (a listener with a full accept queue), for connect timeouts.
"""  # noqa: RUF002 (the full-width comma in UTF8_TEXT is real)

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, NamedTuple

import uvicorn

__all__ = [
    "BAD_USAGE",
    "CUT_PIECES",
    "CUT_TEXT",
    "FINISH_NO_DONE_PIECES",
    "FINISH_NO_DONE_TEXT",
    "FLOOD_DELAY",
    "FLOOD_PIECE",
    "HTTP_ERRORS",
    "IDLE_PIECES",
    "IDLE_TEXT",
    "JSON_LONG_SEND_SIZE",
    "JSON_LONG_TEXT",
    "JSON_TEXT",
    "LENGTH_PIECES",
    "LENGTH_TEXT",
    "MIDSTREAM_ERROR_MESSAGE",
    "MIDSTREAM_PIECES",
    "MIDSTREAM_TEXT",
    "NO_DONE_PIECES",
    "NO_DONE_TEXT",
    "OK_PIECES",
    "OK_TEXT",
    "REASONING_PAUSE",
    "REASONING_PIECES",
    "REASONING_TEXT",
    "RETRY_AFTER",
    "SCENARIOS",
    "SHOWCASE",
    "SHOWCASE_PROMPT",
    "SLOW_DELAY",
    "SLOW_PIECES",
    "SLOW_TEXT",
    "SLOW_TOKEN_COUNT",
    "STREAM_OPTIONS_REFUSAL",
    "THINK_TAG_PIECES",
    "TOKEN_CAP_REFUSALS",
    "USAGE",
    "UTF8_PIECES",
    "UTF8_SEND_DELAY",
    "UTF8_TEXT",
    "XSS_PAYLOAD",
    "FakeUpstream",
    "HttpError",
    "RecordedRequest",
    "auth_error_message",
    "slow_text",
    "token_cap_refusal",
    "unanswered_base_url",
]

USAGE: dict[str, int] = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}

OK_PIECES = ("Hello", ", ", "world", "! ", "How can I help?")
OK_TEXT = "".join(OK_PIECES)
LENGTH_PIECES = ("This answer ", "is cut ", "at max_tokens")
LENGTH_TEXT = "".join(LENGTH_PIECES)
UTF8_PIECES = ("你好，", "世界 🌍", "🚀 再见 ", "👋🏽")  # noqa: RUF001 (a real full-width comma)
UTF8_TEXT = "".join(UTF8_PIECES)
UTF8_SEND_DELAY = 0.003
SLOW_TOKEN_COUNT = 200
SLOW_DELAY = 0.02
SLOW_PIECES = tuple(f"w{i}" if i == 0 else f" w{i}" for i in range(SLOW_TOKEN_COUNT))
SLOW_TEXT = "".join(SLOW_PIECES)
MIDSTREAM_PIECES = ("This answer ", "breaks ", "half way")
MIDSTREAM_TEXT = "".join(MIDSTREAM_PIECES)
MIDSTREAM_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
NO_DONE_PIECES = ("This stream ", "just ends")
NO_DONE_TEXT = "".join(NO_DONE_PIECES)
FINISH_NO_DONE_PIECES = ("Finished, ", "but no done marker.")
FINISH_NO_DONE_TEXT = "".join(FINISH_NO_DONE_PIECES)
CUT_PIECES = ("The connection ", "drops after this")
CUT_TEXT = "".join(CUT_PIECES)
IDLE_PIECES = ("Thinking ", "about it")
IDLE_TEXT = "".join(IDLE_PIECES)
JSON_TEXT = "A whole answer in one JSON body."
JSON_LONG_SEND_SIZE = 8192
JSON_LONG_TEXT = "".join(f"Line {i}: a long answer that does not stream.\n" for i in range(2000))
RETRY_AFTER = "7"
BAD_USAGE: dict[str, object] = {
    "prompt_tokens": "twelve",
    "completion_tokens": 7,
    "total_tokens": {"n": 19},
}
FLOOD_PIECE = "x" * 1023 + " "
FLOOD_DELAY = 0.001
REASONING_PIECES = ("The user ", "greets me; ", "greet them back.")
REASONING_TEXT = "".join(REASONING_PIECES)
THINK_TAG_PIECES = (
    "<thi",
    "nk>The user ",
    "greets me; greet them back.</th",
    "ink>\n",
    "\nHello",
    *OK_PIECES[1:],
)
STREAM_OPTIONS_REFUSAL = "Unrecognized request argument supplied: stream_options"
REASONING_PAUSE = 1.0
TOKEN_CAP_REFUSALS: dict[str, str] = {
    "no_max_tokens": "max_tokens",
    "no_max_completion_tokens": "max_completion_tokens",
}

# ``scripted``: markdown mixed with HTML and script that the page must keep inert.
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
# ``scripted``: markdown with a code block, a list and math (the README's screenshot).
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


def slow_text(count: int) -> str:
    """The whole reply ``slow N`` streams in ``scripted``: ``w001 w002 ... wN``."""
    return " ".join(f"w{i:03d}" for i in range(1, count + 1))


def token_cap_refusal(name: str) -> str:
    """OpenAI's words for a model that does not take ``name``."""
    other = "max_completion_tokens" if name == "max_tokens" else "max_tokens"
    return (
        f"Unsupported parameter: '{name}' is not supported with this model. Use '{other}' instead."
    )


_AUTH_HELP = "You can find your API key at https://platform.openai.com/account/api-keys."


def auth_error_message(api_key: str | None) -> str:
    """The 401 message, echoing a fragment of the presented key the way OpenAI does."""
    if not api_key:
        return (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    return f"Incorrect API key provided: {api_key[:8]}{'*' * 10}{api_key[-4:]}. {_AUTH_HELP}"


class HttpError(NamedTuple):
    status: int
    type: str
    code: str | None
    message: str


HTTP_ERRORS: dict[str, HttpError] = {
    # The 401 message is built per request by auth_error_message(presented key).
    "http_401": HttpError(401, "invalid_request_error", "invalid_api_key", ""),
    "http_404": HttpError(
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `http_404` does not exist or you do not have access to it.",
    ),
    "http_429": HttpError(
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in 7s.",
    ),
    "http_500": HttpError(
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "http_503": HttpError(
        503,
        "server_error",
        "overloaded",
        "The engine is currently overloaded, please try again later.",
    ),
}

_STREAMING = (
    "ok",
    "length",
    "utf8",
    "slow",
    "midstream_error",
    "no_done",
    "finish_no_done",
    "cut",
    "hang",
    "idle",
    "json",
    "json_long",
    *TOKEN_CAP_REFUSALS,
    "bad_usage",
    "flood",
    "scripted",
    "reasoning",
    "reasoning_field",
    "think_tags",
    "no_stream_options",
    "reasoning_pause",
)
SCENARIOS: tuple[str, ...] = (*_STREAMING, *HTTP_ERRORS)


class RecordedRequest(NamedTuple):
    headers: dict[str, str]
    body: dict[str, Any]


Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _CutError(Exception):
    """Raised by the ``cut`` scenario so uvicorn drops the connection mid-body."""


class _StopError(Exception):
    """The fake is shutting down: waiting scenarios end their response now."""


class _QuietCut(logging.Filter):
    """Keeps uvicorn from logging the deliberate ``cut`` exception as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _CutError))


_QUIET_CUT = _QuietCut()


def _json(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _sse(payload: object) -> bytes:
    data = payload.encode() if isinstance(payload, str) else _json(payload)
    return b"data: " + data + b"\r\n\r\n"


class _Response:
    """One HTTP response; remembers how far it got."""

    def __init__(self, send: Send, stopping: asyncio.Event) -> None:
        self._send = send
        self._stopping = stopping
        self.started = False
        self.complete = False

    async def start(
        self, status: int, content_type: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), *headers],
            }
        )

    async def write(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        self.complete = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def pause(self, seconds: float) -> None:
        """Sleep, unless the fake stops first (then raise ``_StopError``)."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return
        raise _StopError

    async def wait_forever(self) -> None:
        await self._stopping.wait()
        raise _StopError

    async def json_response(
        self,
        status: int,
        payload: object,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        *,
        send_size: int = 0,
    ) -> None:
        """Send ``payload``; with ``send_size``, in sends of that many bytes, 1 ms apart."""
        await self.start(status, b"application/json", headers)
        data = _json(payload)
        if send_size:
            while len(data) > send_size:
                await self.write(data[:send_size])
                data = data[send_size:]
                await self.pause(0.001)
        await self.end(data)

    async def error(self, status: int, message: str, type_: str, code: str | None) -> None:
        headers = ((b"retry-after", RETRY_AFTER.encode()),) if status == 429 else ()
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        await self.json_response(status, body, headers)


class _Request(NamedTuple):
    model: str
    api_key: str | None
    include_usage: bool
    body: dict[str, Any]


class _Stream:
    """Builds the chunks of one ``chat.completion.chunk`` stream."""

    def __init__(self, request: _Request) -> None:
        self._request = request
        self._id = f"chatcmpl-fake-{time.monotonic_ns()}"
        self._created = int(time.time())

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._request.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._request.include_usage:
            payload["usage"] = None  # what OpenAI sends on every chunk but the last
        return _sse(payload)

    def role(self) -> bytes:
        return self.chunk({"role": "assistant", "content": ""})

    def text(self, piece: str) -> bytes:
        return self.chunk({"content": piece})

    def finish(self, reason: str = "stop") -> bytes:
        return self.chunk({}, reason)

    def tail(self, reason: str = "stop", usage: Mapping[str, object] = USAGE) -> bytes:
        """Final chunk, usage chunk when asked for, ``[DONE]``."""
        out = self.finish(reason)
        if self._request.include_usage:
            out += _sse(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._request.model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
            )
        return out + _sse("[DONE]")


_SSE_TYPE = b"text/event-stream; charset=utf-8"
_SSE_HEADERS = ((b"cache-control", b"no-cache"),)


def _utf8_sends(data: bytes) -> Iterator[bytes]:
    """Cut ``data`` in the middle of every multi-byte character and of every CRLF."""
    cuts: list[int] = []
    for index, byte in enumerate(data):
        if byte >= 0xC0:  # first byte of a multi-byte sequence: cut right after it
            cuts.append(index + 1)
        elif byte == 0x0A and index and data[index - 1] == 0x0D:
            cuts.append(index)
    start = 0
    for cut in cuts:
        if cut > start:
            yield data[start:cut]
            start = cut
    yield data[start:]


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


async def _scripted(request: _Request, stream: _Stream, response: _Response) -> None:
    """The ``scripted`` scenario: the last user message picks the reply."""
    text = _last_user_text(request.body).strip()
    if match := re.fullmatch(r"fail (\d{3})", text):
        status = int(match.group(1))
        await response.error(status, f"fake upstream says {status}", "fake_error", str(status))
        return
    delay, cut = 0.0, False
    pieces: list[str]
    if match := re.fullmatch(r"cut (\d+)", text):
        pieces = [f"{word} " for word in slow_text(int(match.group(1))).split()]
        delay, cut = 0.02, True
    elif match := re.fullmatch(r"slow (\d+)(?: (\d+))?", text):
        pieces = re.findall(r"\S+ ?", slow_text(int(match.group(1))))
        delay = int(match.group(2) or 40) / 1000
    elif text == "xss":
        pieces = re.findall(r".{1,12}", XSS_PAYLOAD, flags=re.S)
    elif text in ("showcase", SHOWCASE_PROMPT):
        pieces = re.findall(r".{1,16}", SHOWCASE, flags=re.S)
    else:
        pieces = [f"echo: {text}"]
    await response.start(200, _SSE_TYPE, _SSE_HEADERS)
    await response.write(stream.role())
    for piece in pieces:
        if delay:
            await response.pause(delay)
        await response.write(stream.text(piece))
    if cut:
        await response.pause(0.01)
        raise _CutError("the fake cuts the connection mid-body")
    await response.end(stream.tail())


class _App:
    def __init__(self, fake: FakeUpstream) -> None:
        self._fake = fake

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        stopping = self._fake._stopping_event()
        response = _Response(send, stopping)
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        if path == "/v1/models" and method == "GET":
            await self._models(response)
            return
        if path != "/v1/chat/completions":
            await response.error(404, f"Unknown path {path}", "invalid_request_error", None)
            return
        if method != "POST":
            await response.error(405, f"{method} not allowed", "invalid_request_error", None)
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await response.error(
                400, "The body is not a JSON object", "invalid_request_error", None
            )
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self._fake._record_request(RecordedRequest(headers, body))
        authorization = headers.get("authorization", "")
        stream_options = body.get("stream_options")
        request = _Request(
            model=str(body.get("model", "")),
            api_key=authorization.removeprefix("Bearer ") or None,
            include_usage=isinstance(stream_options, dict)
            and stream_options.get("include_usage") is True,
            body=body,
        )
        await self._serve(request, response, receive)

    async def _serve(self, request: _Request, response: _Response, receive: Receive) -> None:
        """Run the scenario while watching for the client leaving."""
        work = asyncio.create_task(self._run(request, response))
        watch = asyncio.ensure_future(receive())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done() and not response.complete:
                # Only a disconnect (or our own cancellation) gets here.
                if watch.done() and not watch.cancelled():
                    self._fake._record_disconnect(request.model)
                work.cancel()
            watch.cancel()
            for task in (watch, work):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # The scenario's own exceptions (the cut) reach uvicorn through this await above.

    async def _run(self, request: _Request, response: _Response) -> None:
        try:
            await self._scenario(request, response)
        except _StopError:
            if not response.started:
                await response.error(503, "The fake upstream is stopping", "server_error", None)
            elif not response.complete:
                await response.end()

    async def _scenario(self, request: _Request, response: _Response) -> None:
        name = request.model
        stream = _Stream(request)
        if name in HTTP_ERRORS:
            status, type_, code, message = HTTP_ERRORS[name]
            if status == 401:
                message = auth_error_message(request.api_key)
            await response.error(status, message, type_, code)
        elif name in ("json", "json_long"):
            await response.json_response(
                200,
                {
                    "id": "chatcmpl-fake-json",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": JSON_TEXT if name == "json" else JSON_LONG_TEXT,
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": USAGE,
                },
                send_size=JSON_LONG_SEND_SIZE if name == "json_long" else 0,
            )
        elif name == "hang":
            await response.wait_forever()
        elif name in TOKEN_CAP_REFUSALS and TOKEN_CAP_REFUSALS[name] in request.body:
            refused = TOKEN_CAP_REFUSALS[name]
            await response.error(
                400, token_cap_refusal(refused), "invalid_request_error", "unsupported_parameter"
            )
        elif name == "no_stream_options" and "stream_options" in request.body:
            await response.error(
                400, STREAM_OPTIONS_REFUSAL, "invalid_request_error", "invalid_parameter"
            )
        elif name == "scripted":
            await _scripted(request, stream, response)
        elif name not in _STREAMING:
            await response.error(
                404,
                f"The model `{name}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        else:
            await response.start(200, _SSE_TYPE, _SSE_HEADERS)
            await self._stream(name, stream, response)

    async def _stream(self, name: str, stream: _Stream, response: _Response) -> None:
        if name in ("ok", "length", "bad_usage", *TOKEN_CAP_REFUSALS):
            pieces = LENGTH_PIECES if name == "length" else OK_PIECES
            await response.write(stream.role())
            for index, piece in enumerate(pieces):
                await response.write(stream.text(piece))
                if index == 1:
                    await response.write(stream.chunk({}))  # an empty delta
                if index == 2:
                    await response.write(b": keepalive\r\n\r\n")
            usage: Mapping[str, object] = BAD_USAGE if name == "bad_usage" else USAGE
            await response.write(stream.tail("length" if name == "length" else "stop", usage))
            await response.end()
        elif name == "utf8":
            data = stream.role() + b"".join(map(stream.text, UTF8_PIECES)) + stream.tail()
            for part in _utf8_sends(data):
                await response.write(part)
                await response.pause(UTF8_SEND_DELAY)
            await response.end()
        elif name == "slow":
            await response.write(stream.role())
            for piece in SLOW_PIECES:
                await response.pause(self._fake.slow_delay)
                await response.write(stream.text(piece))
            await response.write(stream.tail())
            await response.end()
        elif name == "midstream_error":
            await self._pieces(stream, response, MIDSTREAM_PIECES)
            error = {"message": MIDSTREAM_ERROR_MESSAGE, "type": "server_error", "code": None}
            await response.end(_sse({"error": error}))
        elif name == "no_done":
            await self._pieces(stream, response, NO_DONE_PIECES)
            await response.end()
        elif name == "finish_no_done":
            await self._pieces(stream, response, FINISH_NO_DONE_PIECES)
            await response.end(stream.finish())
        elif name == "cut":
            await self._pieces(stream, response, CUT_PIECES)
            await response.pause(0.01)
            raise _CutError("the fake cuts the connection mid-body")
        elif name == "idle":
            await self._pieces(stream, response, IDLE_PIECES)
            await response.wait_forever()
        elif name == "flood":
            await response.write(stream.role())
            while True:
                await response.write(stream.text(FLOOD_PIECE))
                await response.pause(FLOOD_DELAY)
        elif name in ("reasoning", "reasoning_field", "reasoning_pause"):
            field = "reasoning" if name == "reasoning_field" else "reasoning_content"
            await response.write(stream.role())
            for piece in REASONING_PIECES:
                await response.write(stream.chunk({field: piece}))
            if name == "reasoning_pause":
                await response.pause(REASONING_PAUSE)
            for piece in OK_PIECES:
                await response.write(stream.text(piece))
            await response.end(stream.tail())
        elif name in ("think_tags", "no_stream_options"):
            await self._pieces(
                stream, response, THINK_TAG_PIECES if name == "think_tags" else OK_PIECES
            )
            await response.end(stream.tail())

    async def _models(self, response: _Response) -> None:
        fake = self._fake
        with fake._changed:
            fake.models_requests += 1
        await response.pause(fake.models_delay)
        if fake.models_status != 200:
            await response.error(fake.models_status, "No model list here", "server_error", None)
            return
        models = [
            {"id": n, "object": "model", "created": 0, "owned_by": "fake"}
            for n in fake.listed_models
        ]
        await response.json_response(200, {"object": "list", "data": models})

    @staticmethod
    async def _pieces(stream: _Stream, response: _Response, pieces: tuple[str, ...]) -> None:
        await response.write(stream.role())
        for piece in pieces:
            await response.write(stream.text(piece))


class FakeUpstream:
    """``with FakeUpstream() as fake: ... fake.base_url ...`` (see the module docstring)."""

    def __init__(self, *, slow_delay: float = SLOW_DELAY) -> None:
        self.slow_delay = slow_delay
        # What GET /v1/models answers (see the module docstring).
        self.listed_models: tuple[str, ...] = SCENARIOS
        self.models_delay = 0.0
        self.models_status = 200
        self.models_requests = 0
        self.port = 0
        self._changed = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._disconnects: list[str] = []
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._changed:
            return list(self._requests)

    @property
    def client_disconnects(self) -> list[str]:
        with self._changed:
            return list(self._disconnects)

    def reset(self) -> None:
        with self._changed:
            self._requests.clear()
            self._disconnects.clear()

    def wait_for_disconnect(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until at least ``count`` client disconnects were recorded."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._disconnects) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._disconnects)} client disconnect(s) after {timeout}s, "
                    f"expected {count}"
                )

    async def wait_for_disconnect_async(self, count: int = 1, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Like ``wait_for_disconnect`` but lets the calling event loop run meanwhile."""
        deadline = time.monotonic() + timeout
        while len(self.client_disconnects) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.client_disconnects)} client disconnect(s) after {timeout}s, "
                    f"expected {count}"
                )
            await asyncio.sleep(0.005)

    def _record_request(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _record_disconnect(self, model: str) -> None:
        with self._changed:
            self._disconnects.append(model)
            self._changed.notify_all()

    def _stopping_event(self) -> asyncio.Event:
        assert self._stopping is not None
        return self._stopping

    def start(self) -> None:
        logging.getLogger("uvicorn.error").addFilter(_QUIET_CUT)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            config = uvicorn.Config(
                _App(self),
                lifespan="off",
                http="h11",
                ws="none",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=2,
            )
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(
                target=self._run, args=(sock,), name=f"fake-upstream-{self.port}", daemon=True
            )
            self._thread.start()
        except BaseException:
            sock.close()
            raise
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake upstream did not start") from self._failure
            time.sleep(0.005)

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(sock))
        except BaseException as exc:  # reported by start(); a thread must not raise
            self._failure = exc
        finally:
            sock.close()

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        assert self._server is not None
        await self._server.serve(sockets=[sock])

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("the fake upstream did not stop within 10 s")
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def unanswered_base_url() -> Iterator[str]:
    """A ``/v1`` base URL on a listener whose accept queue is full: connects time out."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):  # fill the queue; later SYNs are dropped, never refused
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/v1"
