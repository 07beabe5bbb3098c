"""Streams a chat completion from an OpenAI-compatible server.

:func:`stream_chat` yields the answer's pieces as they arrive, each ``(kind, text)`` with
``kind`` the event that carries it (``delta`` for the answer, ``reasoning`` for the model's
thinking), and a :class:`Completion` last. Anything else a real server does ends in an
:class:`UpstreamError` whose ``code`` and ``message`` are safe to show to every tab (the API
key is scrubbed from them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import msgspec
from chatrelay_common import Delta, Reasoning, Usage

from ._settings import GatewaySettings

__all__ = [
    "CONTENT",
    "REASONING",
    "Completion",
    "Piece",
    "UpstreamConfig",
    "UpstreamError",
    "stream_chat",
]

# What a piece of text is: the name of the event that carries it.
CONTENT: Final = Delta.name
REASONING: Final = Reasoning.name
Piece = tuple[str, str]

_ERROR_BODY_LIMIT = 64 * 1024
_EVENT_STREAM = "text/event-stream"
_KEY_PATTERN = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-*]{4,}")


class TokenCapName:
    """Which name each model takes for the reply's token cap. OpenAI's newer models refuse
    ``max_tokens`` and want ``max_completion_tokens``; many other servers know only the
    former. A model's first refusal switches its name for every later reply."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def of(self, model: object) -> str:
        return self._names.get(str(model), "max_tokens")

    def switch(self, model: object, refused: str) -> None:
        if self.of(model) == refused:  # not already switched by a concurrent reply
            other = "max_completion_tokens" if refused == "max_tokens" else "max_tokens"
            self._names[str(model)] = other


def _default(name: str) -> Any:
    """A setting's default: the settings class is its one source."""
    return GatewaySettings.model_fields[name].default


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str
    api_key: str | None = field(repr=False)  # never in a log line
    first_byte_timeout: float = _default("first_byte_timeout")
    max_tokens: int | None = None
    max_reply_bytes: int = _default("max_reply_bytes")
    max_reply_seconds: float = _default("max_reply_seconds")
    token_cap_name: TokenCapName = field(default_factory=TokenCapName, repr=False, compare=False)
    # Models whose server refused ``stream_options`` (some proxies): asked without it since.
    without_stream_options: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> UpstreamConfig:
        return cls(
            base_url=settings.upstream_base_url,
            api_key=settings.api_key,
            first_byte_timeout=settings.first_byte_timeout,
            max_tokens=settings.max_tokens,
            max_reply_bytes=settings.max_reply_bytes,
            max_reply_seconds=settings.max_reply_seconds,
        )


@dataclass(frozen=True, slots=True)
class Completion:
    finish_reason: str
    usage: Usage | None


class UpstreamError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def _scrub(text: str, api_key: str | None) -> str:
    if api_key:
        text = text.replace(api_key, "***")
    return _KEY_PATTERN.sub("sk-***", text)


def _status_error(response: httpx.Response, body: bytes) -> UpstreamError:
    detail = ""
    try:
        parsed = json.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            detail = str(error.get("message") or "")
        elif isinstance(error, str):
            detail = error
    except ValueError:
        detail = body[:300].decode(errors="replace").strip()
    status = response.status_code
    code, summary = {
        401: ("upstream_auth", "The upstream rejected the API key"),
        403: ("upstream_auth", "The upstream refused access"),
        404: ("upstream_not_found", "The upstream does not know this model or path"),
        429: ("upstream_rate_limited", "The upstream is rate limiting"),
    }.get(status, ("upstream_unavailable" if status >= 500 else "upstream_bad_request", ""))
    message = f"{summary or 'The upstream answered'} (HTTP {status})"
    if status == 429 and (retry_after := response.headers.get("retry-after")):
        message += f"; retry after {retry_after} s"
    if detail:
        message += f": {detail}"
    return UpstreamError(code, message)


def _error_object(error: object) -> UpstreamError:
    """An ``{"error": ...}`` object in place of an answer."""
    message = error.get("message") if isinstance(error, dict) else str(error)
    return UpstreamError("upstream_error", f"The upstream failed mid-answer: {message}")


class _Delta(msgspec.Struct):
    content: str | None = None
    # The model's thinking, by either name servers use for it. Loose: a server's odd value
    # here must not cost the user the answer.
    reasoning_content: Any = None
    reasoning: Any = None

    def thought(self) -> str | None:
        """Its reasoning text, if any (one field only: some servers fill both alike)."""
        for value in (self.reasoning_content, self.reasoning):
            if isinstance(value, str) and value:
                return value
        return None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    message: _Delta | None = None  # a whole (non-streamed) answer
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    """The parts of a chunk (or of a whole completion) that matter here; the rest is ignored.
    ``usage`` stays loose: a server's odd usage must not cost the user a complete answer."""

    choices: list[_Choice] | None = None
    usage: Any = None
    error: Any = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


def _decode_chunk(data: bytes | str) -> _Chunk:
    try:
        return _chunk_decoder.decode(data)
    except msgspec.ValidationError:
        raise UpstreamError("upstream_protocol", "The upstream sent an unexpected chunk") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        if isinstance(data, bytes):
            # Maybe text that is not UTF-8: read it as a text decoder would (U+FFFD for bad bytes).
            return _decode_chunk(data.decode(errors="replace"))
        raise UpstreamError(
            "upstream_protocol", "The upstream sent data that is not JSON"
        ) from None


def _count(value: object) -> int:
    """A token count, or 0 for anything that is not one (ignored rather than fatal)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if value >= 0 and value == int(value) else 0


def _usage_of(chunk: _Chunk) -> Usage | None:
    usage = chunk.usage
    if not isinstance(usage, dict):
        return None
    return Usage(
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        total_tokens=_count(usage.get("total_tokens")),
    )


async def stream_chat(
    client: httpx.AsyncClient, config: UpstreamConfig, body: dict[str, Any]
) -> AsyncGenerator[Piece | Completion, None]:
    """POST ``/chat/completions`` with ``stream: true``; yield each piece of the answer as it
    arrives, then its :class:`Completion`. The client's timeouts bound connect and idle
    reads; ``first_byte_timeout`` bounds the wait for the response head, ``max_reply_seconds``
    the whole answer and ``max_reply_bytes`` what it may send.

    The whole-answer timeout cancels the task iterating, so that task must await nothing
    else while it iterates (between pieces it may only do quick work). Close the generator
    (``contextlib.aclosing``) to end the request early."""
    try:
        async with asyncio.timeout(config.max_reply_seconds):
            # A refused parameter is dropped and the request sent again at once (nothing
            # was streamed yet): once for each of the two a server may refuse.
            for attempt in range(3):
                try:
                    response = await _open(client, config, body, retry=attempt < 2)
                except _RefusedError as refused:
                    _remember_refusal(config, body.get("model"), refused.parameter)
                    continue
                try:
                    with _mid_answer_errors():
                        async for piece in _read_events(response, config.max_reply_bytes):
                            yield piece
                finally:
                    await response.aclose()
                return
    except TimeoutError:
        scrubbed = UpstreamError(
            "upstream_timeout",
            f"The answer took longer than {config.max_reply_seconds:g} s and was cut; "
            "the partial answer is kept",
        )
    except UpstreamError as error:
        scrubbed = UpstreamError(error.code, _scrub(error.message, config.api_key))
    # Raised outside the handler, so the unscrubbed error is not even its __context__.
    raise scrubbed


class _RefusedError(Exception):
    """The upstream refused one parameter of the request (``parameter``)."""

    def __init__(self, parameter: str) -> None:
        super().__init__(parameter)
        self.parameter = parameter


_STREAM_OPTIONS: Final = "stream_options"


def _refused_parameter(status: int, body: bytes, payload: dict[str, Any], cap_name: str) -> str:
    """Which parameter a 400 refuses, or "". OpenAI: "Unsupported parameter: 'max_tokens' is
    not supported with this model. Use 'max_completion_tokens' instead." (and the reverse);
    proxies without ``stream_options`` (usage in the stream): "Unrecognized request argument
    supplied: stream_options" and the like."""
    if status != 400:
        return ""
    text = body.decode(errors="replace")
    if cap_name in payload and f"'{cap_name}'" in text and "nsupported parameter" in text:
        return cap_name
    if _STREAM_OPTIONS in payload and _STREAM_OPTIONS in text:
        return _STREAM_OPTIONS
    return ""


def _remember_refusal(config: UpstreamConfig, model: object, parameter: str) -> None:
    if parameter == _STREAM_OPTIONS:
        config.without_stream_options.add(str(model))
    else:
        config.token_cap_name.switch(model, parameter)


async def _open(
    client: httpx.AsyncClient,
    config: UpstreamConfig,
    body: dict[str, Any],
    *,
    retry: bool,
) -> httpx.Response:
    """Send the request; the response once it has begun a (2xx) answer. ``retry``: a refused
    parameter raises ``_RefusedError`` instead of an ``UpstreamError``."""
    headers = {"Accept": "text/event-stream"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    payload = {**body, "stream": True}
    if str(body.get("model")) not in config.without_stream_options:
        payload[_STREAM_OPTIONS] = {"include_usage": True}
    cap_name = config.token_cap_name.of(body.get("model"))
    if config.max_tokens is not None:
        payload[cap_name] = config.max_tokens
    request = client.build_request(
        "POST", f"{config.base_url}/chat/completions", json=payload, headers=headers
    )
    try:
        async with asyncio.timeout(config.first_byte_timeout):
            response = await client.send(request, stream=True)
    except TimeoutError:
        raise UpstreamError(
            "upstream_timeout",
            f"No answer from the upstream within {config.first_byte_timeout:g} s",
        ) from None
    except httpx.TimeoutException:
        raise UpstreamError("upstream_timeout", "Timed out connecting to the upstream") from None
    except httpx.TransportError as exc:
        raise UpstreamError("upstream_unreachable", f"Cannot reach the upstream: {exc}") from None
    response.stream = _CappedStream(response.stream, config.max_reply_bytes)
    if response.status_code < 400:
        return response
    try:
        with _mid_answer_errors():
            error_body = await _read_limited(response)
    finally:
        await response.aclose()
    refused = _refused_parameter(response.status_code, error_body, payload, cap_name)
    if retry and refused:
        raise _RefusedError(refused)
    raise _status_error(response, error_body)


@contextlib.contextmanager
def _mid_answer_errors() -> Iterator[None]:
    """A connection that fails once the answer began: what to tell the user."""
    try:
        yield
    except httpx.TimeoutException:
        raise UpstreamError(
            "upstream_timeout",
            "The upstream stopped sending (idle timeout); the partial answer is kept",
        ) from None
    except httpx.TransportError:
        raise UpstreamError(
            "upstream_disconnected", "The upstream connection broke; the partial answer is kept"
        ) from None


class _CappedStream(httpx.AsyncByteStream):
    """The response body, ended with ``upstream_too_large`` once it passes ``limit`` bytes
    (the connection is then closed, so the upstream stops too)."""

    def __init__(self, inner: httpx.AsyncByteStream | httpx.SyncByteStream, limit: int) -> None:
        assert isinstance(inner, httpx.AsyncByteStream)
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for data in self._inner:
            received += len(data)
            if received > self._limit:
                raise UpstreamError(
                    "upstream_too_large",
                    f"The answer passed {self._limit} bytes and was cut; "
                    "the partial answer is kept",
                )
            yield data

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _read_limited(response: httpx.Response, limit: int = _ERROR_BODY_LIMIT) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return body


async def _read_events(
    response: httpx.Response, whole_answer_limit: int
) -> AsyncIterator[Piece | Completion]:
    content_type = response.headers.get("content-type", "")
    if "application/json" in content_type:
        # A server that ignores `stream: true` answers with one whole completion.
        whole = _decode_chunk(await _read_limited(response, whole_answer_limit))
        if whole.error is not None:
            raise _error_object(whole.error)
        choice = (whole.choices or [_Choice()])[0]
        if choice.message is not None:
            if thought := choice.message.thought():
                yield REASONING, thought
            for piece in _ThinkTags().pieces(choice.message.content or "", end=True):
                yield piece
        yield Completion(choice.finish_reason or "stop", _usage_of(whole))
        return

    if _EVENT_STREAM not in content_type.partition(";")[0]:
        raise UpstreamError(
            "upstream_protocol",
            f"The upstream answered {content_type or 'no content type'}, not an event stream",
        )
    finish_reason: str | None = None
    usage: Usage | None = None
    think: _ThinkTags | None = _ThinkTags()
    async for data in _event_data(response):
        if data == b"[DONE]":
            break
        chunk = _decode_chunk(data)
        if chunk.error is not None:
            raise _error_object(chunk.error)
        choices = chunk.choices or []
        if choices and (delta := choices[0].delta) is not None:
            # Checked first: most chunks carry no reasoning field at all.
            has_reasoning = delta.reasoning_content is not None or delta.reasoning is not None
            if has_reasoning and (thought := delta.thought()):
                yield REASONING, thought
            if delta.content:
                if think is None:  # the usual path: plain text
                    yield CONTENT, delta.content
                else:
                    for piece in think.pieces(delta.content):
                        yield piece
                    if think.settled:
                        think = None
        for choice in choices:
            finish_reason = choice.finish_reason or finish_reason
        usage = _usage_of(chunk) or usage
    else:
        if finish_reason is None:
            raise UpstreamError(
                "upstream_incomplete",
                "The upstream ended the answer early; the partial answer is kept",
            )
        # Some servers close right after the final chunk without sending [DONE].
    if think is not None:
        for piece in think.pieces("", end=True):
            yield piece
    yield Completion(finish_reason or "stop", usage)


_OPEN_TAG: Final = "<think>"
_CLOSE_TAG: Final = "</think>"


class _ThinkTags:
    """Reasoning inside the answer's text: an answer that begins with ``<think>…</think>``
    (DeepSeek-R1 and its distills behind a server without a reasoning parser) thinks inside
    the tags. Either tag may be cut across chunks at any point, so text that may be the start
    of one is held back until the next chunk tells. Only the beginning of an answer is
    looked at: "<think>" later on is text."""

    __slots__ = ("_held", "_state")

    def __init__(self) -> None:
        self._state = "opening"  # then "thinking", "closing" (after </think>), "settled"
        self._held = ""

    @property
    def settled(self) -> bool:
        """Whether the rest of the answer is plain text (nothing more to look for)."""
        return self._state == "settled"

    def pieces(self, text: str, *, end: bool = False) -> list[Piece]:
        """The pieces ``text`` makes, given what came before; ``end``: nothing follows, so
        release whatever is held."""
        text, self._held = self._held + text, ""
        out: list[Piece] = []
        if self._state == "opening":
            start = text.lstrip()
            if start.startswith(_OPEN_TAG):
                self._state, text = "thinking", start[len(_OPEN_TAG) :]
            elif _OPEN_TAG.startswith(start) and not end:  # maybe the tag, cut short
                self._held = text
                return out
            else:
                self._state = "settled"
        if self._state == "thinking":
            close = text.find(_CLOSE_TAG)
            if close < 0:
                kept = 0 if end else _tag_start_at_end(text, _CLOSE_TAG)
                thought, self._held = text[: len(text) - kept], text[len(text) - kept :]
                if thought:
                    out.append((REASONING, thought))
                return out
            if close:
                out.append((REASONING, text[:close]))
            self._state, text = "closing", text[close + len(_CLOSE_TAG) :]
        if self._state == "closing":
            # The blank lines between the thinking and the answer are neither.
            text = text.lstrip()
            if not text:
                return out
            self._state = "settled"
        if text:
            out.append((CONTENT, text))
        return out


def _tag_start_at_end(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that is a start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


async def _event_data(response: httpx.Response) -> AsyncIterator[bytes]:
    """The non-empty ``data`` of each server-sent event, as bytes (its lines joined by
    ``\n``). Only ``data`` matters here, so the other fields and comments are skipped; lines
    end in CRLF, LF or CR, as the SSE format allows. Leaner than a general SSE client: no
    text decoding (the JSON decoder reads bytes) and no object per line or event."""
    pending = b""
    data: list[bytes] = []
    async for chunk in response.aiter_bytes():
        text = pending + chunk
        # A CR at the end may be the first half of a CRLF: keep it for the next chunk.
        held = b"\r" if text.endswith(b"\r") else b""
        text = text[: len(text) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, partial = text.split(b"\n")
        pending = partial + held
        for line in lines:
            if not line:  # the end of an event
                joined = b"\n".join(data)
                data.clear()
                if joined:
                    yield joined
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)
