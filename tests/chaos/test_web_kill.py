"""A web process SIGKILLed mid-reply behind nginx, with a second web process running (issue
7): the tabs it served see their stream cut, reconnect through the edge with
``Last-Event-ID``, land on the other process, and end with the exact full text: nothing lost,
nothing twice. And a web process told to stop (SIGTERM) ends its streams at once, cleanly,
instead of after the server's graceful timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from chatrelay_common import SessionSettings, SessionStore
from redis.asyncio import Redis

from tests.chaos._edge import client_tls, running_edge
from tests.chaos._storm_client import Endpoint, StreamRejectedError, TabView, open_stream
from tests.conftest import keyed_gateway_env
from tests.support.api import create_session, send_message
from tests.support.fake_upstream import SLOW_TEXT, FakeUpstream
from tests.support.services import Service, run_service
from tests.support.sse import Event, open_events

TABS = 6
# 200 tokens 0.04 s apart: the reply streams for ~8 s, so it is mid-way when a web dies.
TOKEN_DELAY = 0.04
# A browser's EventSource waits the stream's `retry` (1 s) before reconnecting; these tabs
# come back sooner, so the figure printed is the system's part of the recovery.
RECONNECT_PAUSE = 0.1


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(slow_delay=TOKEN_DELAY) as fake:
        yield fake


@dataclass
class Tab:
    view: TabView = field(default_factory=TabView)
    cuts: int = 0
    cut_at: float | None = None
    recovered_after: float | None = None


async def follow(endpoint: Endpoint, session_id: str, reply_id: str, tab: Tab) -> None:
    """Read as a browser tab does until the reply ends; reconnect whenever the stream ends."""
    while True:
        with contextlib.suppress(StreamRejectedError, OSError):
            async with open_stream(endpoint, session_id, tab.view.last_id) as frames:
                async for frame in frames:
                    before = tab.view.events
                    ended = tab.view.apply(frame)
                    if tab.cut_at is not None and tab.view.events > before:
                        tab.recovered_after = time.monotonic() - tab.cut_at
                        tab.cut_at = None
                    if reply_id in ended:
                        return
        tab.cuts += 1
        tab.cut_at = tab.cut_at or time.monotonic()
        await asyncio.sleep(RECONNECT_PAUSE)


async def test_a_killed_web_process_loses_no_tab(
    redis_server_url: str, slow_upstream: FakeUpstream, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    gateway_env = keyed_gateway_env(redis_server_url, slow_upstream.base_url, OPENAI_MODEL="slow")
    web_env = {"REDIS_URL": redis_server_url, "WEB_HEARTBEAT_SECONDS": "1"}
    with contextlib.ExitStack() as stack:
        gateway = stack.enter_context(run_service("gateway", gateway_env, logs))
        webs: list[Service] = [stack.enter_context(run_service("web", web_env, logs)) for _ in "ab"]
        https_port = stack.enter_context(
            running_edge(
                tmp_path / "edge",
                web=",".join(web.url.removeprefix("http://") for web in webs),
                gateway=gateway.url.removeprefix("http://"),
            )
        )
        endpoint = Endpoint("127.0.0.1", https_port, client_tls())
        async with httpx.AsyncClient(timeout=30) as client:
            session_id = await create_session(client, gateway.url, model="slow")
            reply_id = (await send_message(client, gateway.url, session_id, "go"))["reply_id"]
            tabs = [Tab() for _ in range(TABS)]
            following = [
                asyncio.create_task(follow(endpoint, session_id, reply_id, tab)) for tab in tabs
            ]
            async with asyncio.timeout(30):
                while True:  # every tab is live, mid-reply
                    if min(tab.view.events for tab in tabs) >= 20:
                        break
                    await asyncio.sleep(0.05)
            victim = webs[0].process
            assert victim is not None
            victim.kill()
            killed_at = time.monotonic()
            async with asyncio.timeout(60):
                await asyncio.gather(*following)
            ended_after = time.monotonic() - killed_at
            final = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
        victim.wait(10)

    cut = [tab for tab in tabs if tab.cuts]
    recoveries = sorted(t.recovered_after for t in cut if t.recovered_after is not None)
    print(
        f"\nweb kill: {len(cut)} of {TABS} tabs were on the killed process; they applied "
        f"their next event {', '.join(f'{r:.2f}' for r in recoveries)} s after their stream "
        f"was cut (reconnecting after {RECONNECT_PAUSE} s); every tab saw the reply end "
        f"{ended_after:.1f} s after the kill"
    )
    assert cut, "no tab was served by the killed web process"
    assert len(recoveries) == len(cut)
    assert final["messages"][-1]["content"] == SLOW_TEXT
    for tab in tabs:
        assert (tab.view.lost, tab.view.duplicated, tab.view.resets) == (0, 0, 0)
        assert tab.view.conversation() == [(m["id"], m["content"]) for m in final["messages"]]
        assert tab.view.messages[reply_id].status == "done"


# uvicorn's graceful timeout (serve()) is 5 s: a stream ending later was waited out, then cut.
PROMPT_END_SECONDS = 3.0


async def test_a_sigterm_ends_every_open_stream_at_once_and_cleanly(
    redis_server_url: str, redis: Redis, tmp_path: Path
) -> None:
    session_id = await SessionStore(redis).create(SessionSettings(model="m"))
    web_env = {"REDIS_URL": redis_server_url}
    with run_service("web", web_env, tmp_path) as web:
        process = web.process
        assert process is not None
        async with httpx.AsyncClient(timeout=30) as client, contextlib.AsyncExitStack() as tabs:
            streams = [
                await tabs.enter_async_context(open_events(client, web.url, session_id))
                for _ in range(3)
            ]
            for stream in streams:
                assert (await anext(stream)).name == "snapshot"

            async def until_end(stream: AsyncIterator[Event]) -> float:
                async for event in stream:
                    raise AssertionError(f"an event after the snapshot: {event}")
                return time.monotonic() - stopped_at

            stopped_at = time.monotonic()
            process.terminate()
            async with asyncio.timeout(30):
                # A cut stream (the server's timeout) raises here instead of ending.
                ended = await asyncio.gather(*(until_end(stream) for stream in streams))
        exit_code = await asyncio.to_thread(process.wait, 10)
    print(
        f"\nSIGTERM: streams ended cleanly {', '.join(f'{e:.2f}' for e in ended)} s after it; "
        f"the process exited with {exit_code}"
    )
    assert max(ended) < PROMPT_END_SECONDS
