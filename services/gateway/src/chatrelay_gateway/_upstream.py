"""Streams a chat completion from an OpenAI-compatible server.

Everything a real server does ends in either a :class:`Completion` or an
:class:`UpstreamError` whose ``code`` and ``message`` are safe to show to every tab (the API
key is scrubbed from them).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from chatrelay_common import Usage

__all__ = ["Completion", "UpstreamConfig", "UpstreamError", "stream_chat"]

_ERROR_BODY_LIMIT = 64 * 1024
_WHOLE_ANSWER_LIMIT = 8 * 1024 * 1024
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


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str
    api_key: str | None = field(repr=False)  # never in a log line
    first_byte_timeout: float = 60.0
    max_tokens: int | None = None
    max_reply_bytes: int = 8 * 1024 * 1024
    max_reply_seconds: float = 600.0
    token_cap_name: TokenCapName = field(default_factory=TokenCapName, repr=False, compare=False)


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
    client: httpx.AsyncClient,
    config: UpstreamConfig,
    body: dict[str, Any],
    on_text: Callable[[str], None],
) -> Completion:
    """POST ``/chat/completions`` with ``stream: true`` and call ``on_text`` for each piece of
    text as it arrives. The client's timeouts bound connect and idle reads;
    ``first_byte_timeout`` bounds the wait for the response head, ``max_reply_seconds`` the
    whole answer and ``max_reply_bytes`` what it may send."""
    try:
        async with asyncio.timeout(config.max_reply_seconds):
            try:
                return await _stream(client, config, body, on_text)
            except _TokenCapRefusedError as refused:
                # Nothing was streamed yet: ask once more with the other name.
                config.token_cap_name.switch(body.get("model"), refused.name)
                return await _stream(client, config, body, on_text, retry=False)
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


class _TokenCapRefusedError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _refuses_token_cap(status: int, body: bytes, name: str) -> bool:
    """OpenAI: 400 "Unsupported parameter: 'max_tokens' is not supported with this model.
    Use 'max_completion_tokens' instead." (and the same the other way round)."""
    text = body.decode(errors="replace")
    return status == 400 and f"'{name}'" in text and "nsupported parameter" in text


async def _stream(
    client: httpx.AsyncClient,
    config: UpstreamConfig,
    body: dict[str, Any],
    on_text: Callable[[str], None],
    *,
    retry: bool = True,
) -> Completion:
    headers = {"Accept": "text/event-stream"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
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
    try:
        if response.status_code >= 400:
            error_body = await _read_limited(response)
            if (
                retry
                and config.max_tokens is not None
                and _refuses_token_cap(response.status_code, error_body, cap_name)
            ):
                raise _TokenCapRefusedError(cap_name)
            raise _status_error(response, error_body)
        return await _read_events(response, on_text)
    except httpx.TimeoutException:
        raise UpstreamError(
            "upstream_timeout",
            "The upstream stopped sending (idle timeout); the partial answer is kept",
        ) from None
    except httpx.TransportError:
        raise UpstreamError(
            "upstream_disconnected", "The upstream connection broke; the partial answer is kept"
        ) from None
    finally:
        await response.aclose()


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


async def _read_events(response: httpx.Response, on_text: Callable[[str], None]) -> Completion:
    content_type = response.headers.get("content-type", "")
    if "application/json" in content_type:
        # A server that ignores `stream: true` answers with one whole completion.
        whole = _decode_chunk(await _read_limited(response, _WHOLE_ANSWER_LIMIT))
        if whole.error is not None:
            raise _error_object(whole.error)
        choice = (whole.choices or [_Choice()])[0]
        if choice.message is not None and choice.message.content:
            on_text(choice.message.content)
        return Completion(choice.finish_reason or "stop", _usage_of(whole))

    if _EVENT_STREAM not in content_type.partition(";")[0]:
        raise UpstreamError(
            "upstream_protocol",
            f"The upstream answered {content_type or 'no content type'}, not an event stream",
        )
    finish_reason: str | None = None
    usage: Usage | None = None
    async for data in _event_data(response):
        if data == b"[DONE]":
            return Completion(finish_reason or "stop", usage)
        chunk = _decode_chunk(data)
        if chunk.error is not None:
            raise _error_object(chunk.error)
        choices = chunk.choices or []
        if choices and choices[0].delta is not None and choices[0].delta.content:
            on_text(choices[0].delta.content)
        for choice in choices:
            finish_reason = choice.finish_reason or finish_reason
        usage = _usage_of(chunk) or usage
    if finish_reason is not None:
        # Some servers close right after the final chunk without sending [DONE].
        return Completion(finish_reason, usage)
    raise UpstreamError(
        "upstream_incomplete", "The upstream ended the answer early; the partial answer is kept"
    )


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
