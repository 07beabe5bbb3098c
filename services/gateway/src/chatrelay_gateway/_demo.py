"""The built-in demo model: an OpenAI-compatible streaming endpoint the gateway calls over
HTTP like any upstream, so the demo runs through exactly the same code path."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Router, post
from litestar.response import Stream

from ._settings import DEMO_MODEL

__all__ = ["demo_model_router", "demo_reply"]

_TOKEN = re.compile(r"\s*\S+")


def demo_reply(prompt: str) -> str:
    """Deterministic: the same prompt always gets the same answer."""
    quoted = " ".join(prompt.split())
    if len(quoted) > 200:
        quoted = quoted[:200] + "…"
    return (
        "Hello! I am the **chatrelay demo model**: no `OPENAI_API_KEY` is set, so this answer "
        "comes from a built-in script, streamed token by token to every tab that shows this "
        f"chat.\n\nYou wrote: “{quoted}”\n\n"
        "To talk to a real model, set `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL` and "
        "`OPENAI_MODEL`) and restart."
    )


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": DEMO_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


class _Turn(msgspec.Struct):
    role: str
    content: str | None = None


class _ChatRequest(msgspec.Struct):
    """The part of an OpenAI chat request the demo reads; other fields are ignored."""

    messages: list[_Turn]


def demo_model_router(max_body_bytes: int) -> Router:
    """The demo endpoint, with its own body limit: the gateway sends it whole conversations,
    which outgrow the limit on a single message."""

    @post(
        "/chat/completions",
        status_code=200,
        request_max_body_size=max_body_bytes,
        include_in_schema=False,
    )
    async def chat_completions(data: _ChatRequest, request: Request[Any, Any, Any]) -> Stream:
        prompt = next((t.content or "" for t in reversed(data.messages) if t.role == "user"), "")
        delay: float = request.app.state.demo_token_delay
        tokens = _TOKEN.findall(demo_reply(prompt))

        async def chunks() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant", "content": ""})
            for token in tokens:
                await asyncio.sleep(delay)
                yield _chunk({"content": token})
            yield _chunk({}, finish_reason="stop")
            usage = {
                "prompt_tokens": len(_TOKEN.findall(prompt)),
                "completion_tokens": len(tokens),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return Stream(chunks(), media_type="text/event-stream")

    return Router("/demo/v1", route_handlers=[chat_completions], include_in_schema=False)
