"""A test client for the events stream: real HTTP, events parsed by httpx-sse."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, aconnect_sse

__all__ = ["Event", "collect_until", "open_events", "reply_text"]


@dataclass(frozen=True)
class Event:
    id: int | None
    name: str
    data: dict[str, Any]


@asynccontextmanager
async def open_events(
    client: httpx.AsyncClient, web_url: str, session_id: str, last_event_id: int | None = None
) -> AsyncIterator[AsyncIterator[Event]]:
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    url = f"{web_url}/api/sessions/{session_id}/events"
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        source.response.raise_for_status()
        yield _events(source)


async def _events(source: EventSource) -> AsyncIterator[Event]:
    async for sse in source.aiter_sse():
        if sse.event == "message" and not sse.data:
            continue  # a heartbeat comment: httpx-sse reports it as an empty event
        event_id = int(sse.id) if sse.id else None
        yield Event(event_id, sse.event, json.loads(sse.data))


async def collect_until(events: AsyncIterator[Event], *names: str, count: int = 1) -> list[Event]:
    """Read events until ``count`` events named one of ``names`` have been read."""
    got: list[Event] = []
    async for event in events:
        got.append(event)
        if event.name in names:
            count -= 1
            if count == 0:
                return got
    raise AssertionError(f"stream ended before {names}: {got}")


def reply_text(events: list[Event], reply_id: str) -> str:
    return "".join(
        e.data["text"] for e in events if e.name == "delta" and e.data["reply_id"] == reply_id
    )
