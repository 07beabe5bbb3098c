"""Tabs for the fault tests: each follows a session's events stream as a browser would
(reconnecting with ``Last-Event-ID`` when the stream ends or is refused) until it learns how a
reply ended, and keeps the reply's text as the page would show it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx

from tests.support.sse import open_events

__all__ = ["ReplyTab", "follow_reply"]


@dataclass
class ReplyTab:
    reply_id: str
    text: str = ""
    last_event_id: int | None = None
    outcome: str | None = None  # done (its finish_reason) or error (its code)
    ended_at: float | None = None
    reconnects: int = 0
    resets: int = 0
    ids: list[int] = field(default_factory=list)

    def _apply(self, name: str, data: dict[str, object]) -> None:
        if name == "snapshot":
            messages = data["messages"]
            assert isinstance(messages, list)
            reply = next((m for m in messages if m["id"] == self.reply_id), None)
            if reply is not None:
                self.text = reply["content"]
                if reply["status"] != "streaming":
                    self._end(f"snapshot:{reply['status']}")
        elif data.get("reply_id") == self.reply_id:
            if name == "delta":
                self.text += str(data["text"])
            elif name == "done":
                self._end(f"done:{data['finish_reason']}")
            elif name == "error":
                self._end(f"error:{data['code']}")

    def _end(self, outcome: str) -> None:
        self.outcome = outcome
        self.ended_at = time.monotonic()


async def follow_reply(
    client: httpx.AsyncClient,
    web_url: str,
    session_id: str,
    tab: ReplyTab,
    *,
    seconds: float,
) -> ReplyTab:
    """Follow until the reply ends (``tab.outcome`` set) or ``seconds`` pass."""

    async def follow() -> None:
        while True:
            try:
                async with open_events(client, web_url, session_id, tab.last_event_id) as events:
                    async for event in events:
                        if event.name == "reset":
                            tab.resets += 1
                        if event.id is not None:
                            if event.name != "snapshot":
                                tab.ids.append(event.id)
                            tab.last_event_id = event.id
                        tab._apply(event.name, event.data)
                        if tab.outcome is not None:
                            return
            except httpx.HTTPError:
                pass  # refused (503 while Redis is away) or cut: the browser retries
            tab.reconnects += 1
            await asyncio.sleep(0.2)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(follow(), seconds)
    return tab
