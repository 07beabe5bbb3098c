"""Streams a chat completion from an OpenAI-compatible server.

Everything a real server does ends in either a :class:`Completion` or an
:class:`UpstreamError` whose ``code`` and ``message`` are safe to show to every tab (the API
key is scrubbed from them).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from chatrelay_common import Usage
from httpx_sse import EventSource, SSEError

__all__ = ["Completion", "UpstreamConfig", "UpstreamError", "normalize_base_url", "stream_chat"]

_ERROR_BODY_LIMIT = 64 * 1024
_WHOLE_ANSWER_LIMIT = 8 * 1024 * 1024
_KEY_PATTERN = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-*]{4,}")


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str
    api_key: str | None
    first_byte_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Completion:
    finish_reason: str
    usage: Usage | None


class UpstreamError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def normalize_base_url(url: str) -> str:
    """``http://host:port`` and ``http://host:port/`` mean ``http://host:port/v1``; any other
    path (``/v1``, ``/openai/v1``, ``/v1beta/openai``) is kept as given."""
    url = url.rstrip("/")
    return url + "/v1" if httpx.URL(url).path in ("", "/") else url


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


def _text_of(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    return delta.get("content") or ""


def _usage_of(chunk: dict[str, Any]) -> Usage | None:
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        total_tokens=int(usage.get("total_tokens") or 0),
    )


async def stream_chat(
    client: httpx.AsyncClient,
    config: UpstreamConfig,
    body: dict[str, Any],
    on_text: Callable[[str], None],
) -> Completion:
    """POST ``/chat/completions`` with ``stream: true`` and call ``on_text`` for each piece of
    text as it arrives. The client's timeouts bound connect and idle reads;
    ``first_byte_timeout`` bounds the wait for the response head."""
    try:
        return await _stream(client, config, body, on_text)
    except UpstreamError as error:
        scrubbed = UpstreamError(error.code, _scrub(error.message, config.api_key))
    # Raised outside the handler, so the unscrubbed error is not even its __context__.
    raise scrubbed


async def _stream(
    client: httpx.AsyncClient,
    config: UpstreamConfig,
    body: dict[str, Any],
    on_text: Callable[[str], None],
) -> Completion:
    headers = {"Accept": "text/event-stream"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    request = client.build_request(
        "POST",
        f"{config.base_url}/chat/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        headers=headers,
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
    try:
        if response.status_code >= 400:
            raise _status_error(response, await _read_limited(response))
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
        try:
            whole = json.loads(await _read_limited(response, _WHOLE_ANSWER_LIMIT))
        except ValueError:
            raise UpstreamError(
                "upstream_protocol", "The upstream sent JSON that does not parse"
            ) from None
        if not isinstance(whole, dict):
            raise UpstreamError("upstream_protocol", "The upstream sent an unexpected answer")
        if "error" in whole:
            raise _error_object(whole["error"])
        choice = (whole.get("choices") or [{}])[0]
        if text := (choice.get("message") or {}).get("content"):
            on_text(text)
        return Completion(choice.get("finish_reason") or "stop", _usage_of(whole))

    finish_reason: str | None = None
    usage: Usage | None = None
    try:
        async for sse in EventSource(response).aiter_sse():
            if sse.data == "[DONE]":
                return Completion(finish_reason or "stop", usage)
            if not sse.data:
                continue
            try:
                chunk = json.loads(sse.data)
            except ValueError:
                raise UpstreamError(
                    "upstream_protocol", "The upstream sent data that is not JSON"
                ) from None
            if not isinstance(chunk, dict):
                raise UpstreamError("upstream_protocol", "The upstream sent an unexpected chunk")
            if "error" in chunk:
                raise _error_object(chunk["error"])
            if text := _text_of(chunk):
                on_text(text)
            for choice in chunk.get("choices") or []:
                finish_reason = choice.get("finish_reason") or finish_reason
            usage = _usage_of(chunk) or usage
    except SSEError:
        raise UpstreamError(
            "upstream_protocol",
            f"The upstream answered {content_type or 'no content type'}, not an event stream",
        ) from None
    if finish_reason is not None:
        # Some servers close right after the final chunk without sending [DONE].
        return Completion(finish_reason, usage)
    raise UpstreamError(
        "upstream_incomplete", "The upstream ended the answer early; the partial answer is kept"
    )
