"""The built-in demo model: an OpenAI-compatible streaming endpoint the gateway calls over
HTTP like any upstream, so the demo runs through exactly the same code path."""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import msgspec
from litestar import Request, Router, post
from litestar.response import Stream

from ._settings import DEMO_MODEL

__all__ = ["demo_model_router", "demo_reasoning", "demo_reply"]

_TOKEN = re.compile(r"\s*\S+")


class _Topic(NamedTuple):
    """One worked example: what the page renders (heading, list, table, code, formula)."""

    about: str  # for the thinking: "The question sounds like it is about <about>"
    keywords: tuple[str, ...]
    body: str


_TOPICS = (
    _Topic(
        "code",
        ("code", "python", "sort", "program", "function", "bug", "script", "list"),
        "## Sorting in Python\n\n"
        "Python sorts with **Timsort**, a merge sort that takes advantage of runs already in "
        "order:\n\n"
        "- `sorted(items)` returns a new list; `items.sort()` sorts in place\n"
        "- `key=` picks what to compare, `reverse=True` flips the order\n"
        "- equal items keep their order (the sort is *stable*)\n\n"
        "| algorithm | average | worst | stable |\n"
        "|---|---|---|---|\n"
        "| Timsort | $O(n \\log n)$ | $O(n \\log n)$ | yes |\n"
        "| quicksort | $O(n \\log n)$ | $O(n^2)$ | no |\n"
        "| insertion sort | $O(n^2)$ | $O(n^2)$ | yes |\n\n"
        "```python\n"
        'people = [("Ada", 36), ("Alan", 41), ("Grace", 85)]\n'
        "by_age = sorted(people, key=lambda person: person[1], reverse=True)\n"
        "print(by_age[0])  # ('Grace', 85)\n"
        "```\n\n"
        "No comparison sort can beat this bound, since it must tell $n!$ orders apart:\n\n"
        "$$\\log_2 n! \\approx n \\log_2 n - n \\log_2 e$$",
    ),
    _Topic(
        "numbers",
        ("math", "formula", "equation", "interest", "number", "calculate", "money", "save"),
        "## Compound interest\n\n"
        "Money that earns interest on its interest grows faster every year:\n\n"
        "1. start with a principal $P$\n"
        "2. add the rate $r$ once per period\n"
        "3. repeat for $t$ periods\n\n"
        "$$A = P \\left(1 + \\frac{r}{n}\\right)^{nt}$$\n\n"
        "| years | at 3 % | at 7 % |\n"
        "|---|---|---|\n"
        "| 1 | 1,030 | 1,070 |\n"
        "| 10 | 1,344 | 1,967 |\n"
        "| 30 | 2,427 | 7,612 |\n\n"
        "```python\n"
        "def grow(principal: float, rate: float, years: int) -> float:\n"
        "    return principal * (1 + rate) ** years\n\n"
        "print(round(grow(1000, 0.07, 30)))  # 7612\n"
        "```\n\n"
        "At 7 % a sum doubles in about $72 / 7 \\approx 10$ years (the *rule of 72*).",
    ),
    _Topic(
        "distances",
        ("light", "space", "far", "fast", "speed", "travel", "distance", "science", "time"),
        "## How far light travels\n\n"
        "Light in a vacuum covers $c = 299\\,792\\,458$ m/s, so:\n\n"
        "- a round trip to the Moon takes about **2.6 s**\n"
        "- sunlight is about **8 minutes** old when it arrives\n"
        "- a light-year is about $9.46 \\times 10^{15}$ m\n\n"
        "| from Earth to | distance | light takes |\n"
        "|---|---|---|\n"
        "| the Moon | 384,400 km | 1.28 s |\n"
        "| the Sun | 149.6 million km | 8 min 19 s |\n"
        "| Proxima Centauri | 4.24 light-years | 4.24 years |\n\n"
        "$$t = \\frac{d}{c}$$\n\n"
        "```python\n"
        "C = 299_792_458  # m/s\n"
        "moon = 384_400_000  # m\n"
        'print(f"{moon / C:.2f} s")  # 1.28 s\n'
        "```",
    ),
)


def _quoted(prompt: str, limit: int) -> str:
    quoted = " ".join(prompt.split())
    return quoted[:limit] + "…" if len(quoted) > limit else quoted


def _topic(prompt: str) -> _Topic:
    """The example for this question: by its words, else by its text (the same question
    always gets the same answer)."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    for topic in _TOPICS:
        if words.intersection(topic.keywords):
            return topic
    return _TOPICS[zlib.crc32(prompt.encode()) % len(_TOPICS)]


def demo_reasoning(prompt: str) -> str:
    """What the demo model "thinks" before its answer (streamed as reasoning)."""
    return (
        f"The user wrote “{_quoted(prompt, 60)}”. I am the built-in demo model, so I know "
        "nothing real to answer with. The most useful reply shows what this page renders: a "
        "heading, a list, a table, a code block and a formula. The question sounds like it "
        f"is about {_topic(prompt).about}, so I will use that as the example."
    )


def demo_reply(prompt: str) -> str:
    """Deterministic: the same prompt always gets the same answer."""
    return (
        "Hello! I am the **chatrelay demo model**: no `OPENAI_API_KEY` is set, so this answer "
        "comes from a built-in script, streamed token by token to every tab that shows this "
        f"chat.\n\nYou wrote: “{_quoted(prompt, 200)}”\n\n"
        f"{_topic(prompt).body}\n\n"
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
        thoughts = _TOKEN.findall(demo_reasoning(prompt))
        tokens = _TOKEN.findall(demo_reply(prompt))

        async def chunks() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant", "content": ""})
            # Thinking first, as reasoning models stream it (DeepSeek's field name).
            for thought in thoughts:
                await asyncio.sleep(delay)
                yield _chunk({"reasoning_content": thought})
            for token in tokens:
                await asyncio.sleep(delay)
                yield _chunk({"content": token})
            yield _chunk({}, finish_reason="stop")
            usage = {
                "prompt_tokens": len(_TOKEN.findall(prompt)),
                "completion_tokens": len(thoughts) + len(tokens),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return Stream(chunks(), media_type="text/event-stream")

    return Router("/demo/v1", route_handlers=[chat_completions], include_in_schema=False)
