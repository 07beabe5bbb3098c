"""A reconnect storm (issue 7): 50 sessions with several tabs each while replies stream, every
tab cutting its own connection after 1 to 25 events and resuming with ``Last-Event-ID``, and new
tabs joining late: 10,000 disconnects and new tabs in all. Tabs of one session leave and join
its channel at the same moments, which is the race that used to lose a tab's live feed.

Afterwards every tab has lost nothing and seen nothing twice, and the tabs still open hold the
final conversation, with every reply ended."""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import pytest
from chatrelay_common import SessionKeys, open_redis
from redis.asyncio import Redis

from tests.chaos._storm_client import Endpoint, StreamRejectedError, TabView, open_stream
from tests.conftest import keyed_gateway_env
from tests.support.api import create_session, send_message
from tests.support.fake_upstream import SLOW_TEXT, FakeUpstream
from tests.support.services import Service, run_service

SESSIONS = 50
TABS_PER_SESSION = 5
STORM = 10_000  # disconnects plus tabs joining late
NEW_TAB_CHANCE = 0.15  # a cut closes the tab and a new one joins, instead of a resume
# 200 tokens 0.02 s apart: a reply streams for ~4 s, so a session sees several while the
# storm blows. Measured: with these settings the fan-out before the fix (and no stall safety
# net) left 78 tabs stuck on heartbeats; the fixed one, none.
TOKEN_DELAY = 0.02
DEADLINE = 170.0  # seconds for the whole storm; a stuck tab fails the test, it never hangs


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(slow_delay=TOKEN_DELAY) as fake:
        yield fake


@pytest.fixture(scope="module")
def storm_services(
    redis_server_url: str, slow_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Service]]:
    logs = tmp_path_factory.mktemp("storm-logs")
    gateway_env = keyed_gateway_env(redis_server_url, slow_upstream.base_url, OPENAI_MODEL="slow")
    web_env = {"REDIS_URL": redis_server_url, "WEB_HEARTBEAT_SECONDS": "1"}
    with (
        run_service("gateway", gateway_env, logs) as gateway,
        run_service("web", web_env, logs) as web,
    ):
        yield gateway, web


@dataclass(frozen=True)
class StormSize:
    """How hard it blows: the defaults are this module's; the cluster run reuses the storm
    (tests/cluster/test_storm_cluster.py)."""

    sessions: int = SESSIONS
    tabs_per_session: int = TABS_PER_SESSION
    storm: int = STORM
    deadline: float = DEADLINE


# The subscriptions still held on these channels, once the web processes had a moment.
SubscriptionsLeft = Callable[[list[str]], Awaitable[int]]


@dataclass
class Storm:
    rng: random.Random
    budget: int = STORM
    reconnects: int = 0
    late_tabs: int = 0
    rejected: int = 0
    finished_tabs: list[tuple[str, TabView]] = field(default_factory=list)
    closed_tabs: list[TabView] = field(default_factory=list)

    @property
    def blowing(self) -> bool:
        return self.reconnects + self.late_tabs < self.budget


@dataclass
class Session:
    id: str
    ended: dict[str, asyncio.Event] = field(default_factory=dict)
    final: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def reply_ended(self, reply_id: str) -> asyncio.Event:
        return self.ended.setdefault(reply_id, asyncio.Event())

    def over_for(self, tab: TabView) -> bool:
        return self.final is not None and self.final in tab.messages and not tab.streaming()


async def drive(
    client: httpx.AsyncClient, gateway: Service, session: Session, storm: Storm
) -> None:
    """Send a message, wait until a tab saw its reply end, again, until the storm is over."""
    while True:
        reply_id = (await send_message(client, gateway.url, session.id, "go"))["reply_id"]
        await session.reply_ended(reply_id).wait()
        if not storm.blowing:
            session.final = reply_id
            session.done.set()
            return


async def tab_life(session: Session, storm: Storm, view: TabView, endpoint: Endpoint) -> None:
    """One tab: reads 1 to 25 events, cuts, resumes with the last id it applied; sometimes it
    closes and a new tab joins instead. Once the storm is over it reads to the final reply."""
    while True:
        cut_after = storm.rng.randint(1, 25) if storm.blowing else None
        try:
            async with open_stream(endpoint, session.id, view.last_id) as frames:
                async for frame in frames:
                    for ended in view.apply(frame):
                        session.reply_ended(ended).set()
                    if session.over_for(view):
                        storm.finished_tabs.append((session.id, view))
                        return
                    if frame.id is not None and cut_after is not None:
                        cut_after -= 1
                        if cut_after == 0:
                            break
        except StreamRejectedError:
            storm.rejected += 1
            await asyncio.sleep(0.2)
        if not storm.blowing:
            continue
        if storm.rng.random() < NEW_TAB_CHANCE:
            storm.late_tabs += 1
            storm.closed_tabs.append(view)
            view = TabView()
        else:
            storm.reconnects += 1
        # Back at once, as a reconnect that lands as the old connection closes.
        await asyncio.sleep(storm.rng.uniform(0, 0.002))


async def subscriptions_left(channels: list[str], redis_url: str) -> int:
    """Redis's subscriber count over ``channels`` once the web process had a moment to leave
    them (it leaves a channel soon after its last tab)."""
    async with open_redis(redis_url) as redis:
        assert isinstance(redis, Redis)  # this storm's Redis is one node
        for _ in range(100):
            counts = await redis.pubsub_numsub(*channels)
            if (left := sum(int(count) for _, count in counts)) == 0:
                break
            await asyncio.sleep(0.1)
    return left


async def test_a_reconnect_storm_loses_and_duplicates_nothing(
    storm_services: tuple[Service, Service], redis_server_url: str
) -> None:
    gateway, web = storm_services

    async def subscribed(channels: list[str]) -> int:
        return await subscriptions_left(channels, redis_server_url)

    await run_storm([gateway], [web], subscribed, StormSize())


def _endpoint(web: Service) -> Endpoint:
    host, port = web.url.removeprefix("http://").split(":")
    return Endpoint(host, int(port))


async def run_storm(
    gateways: Sequence[Service],
    webs: Sequence[Service],
    subscribed: SubscriptionsLeft,
    size: StormSize,
) -> list[str]:
    """The storm, its figures printed, and every assertion: sessions take turns over the
    gateways (creation and messages), tabs over the web processes. Returns the sessions'
    ids."""
    storm = Storm(random.Random(2026), budget=size.storm)
    started = time.monotonic()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    async with httpx.AsyncClient(timeout=30) as client:
        sessions = [
            Session(await create_session(client, gateways[n % len(gateways)].url, model="slow"))
            for n in range(size.sessions)
        ]
        tabs = [
            asyncio.create_task(
                tab_life(session, storm, TabView(), _endpoint(webs[tab % len(webs)]))
            )
            for session in sessions
            for tab in range(size.tabs_per_session)
        ]
        drivers = [
            asyncio.create_task(drive(client, gateways[n % len(gateways)], s, storm))
            for n, s in enumerate(sessions)
        ]
        _, stuck = await asyncio.wait(
            [*tabs, *drivers], timeout=size.deadline, return_when=asyncio.FIRST_EXCEPTION
        )
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        for task in [*tabs, *drivers]:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        finals = {
            s.id: (await client.get(f"{gateways[0].url}/api/sessions/{s.id}")).json()
            for s in sessions
        }
    seconds = time.monotonic() - started
    left = await subscribed([SessionKeys(s.id).channel for s in sessions])
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    all_tabs = [tab for _, tab in storm.finished_tabs] + storm.closed_tabs
    events = sum(tab.events for tab in all_tabs)
    lost = sum(tab.lost for tab in all_tabs)
    duplicated = sum(tab.duplicated for tab in all_tabs)
    replies = sum(len(f["messages"]) // 2 for f in finals.values())
    client_cpu = cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    print(
        f"\nreconnect storm: {size.sessions} sessions, {replies} replies, "
        f"{size.sessions * size.tabs_per_session + storm.late_tabs} tabs "
        f"({storm.late_tabs} joined late) over {len(webs)} web and {len(gateways)} gateway "
        "processes, "
        f"{storm.reconnects} reconnects, {events} events applied, {lost} lost, "
        f"{duplicated} duplicated, {sum(t.resets for t in all_tabs)} resets, "
        f"{storm.rejected} rejected, {len(stuck)} stuck, {left} subscriptions left; "
        f"{seconds:.1f} s "
        f"(client CPU {client_cpu:.1f} s)"
    )

    assert not stuck, f"{len(stuck)} tabs or drivers never finished"
    assert left == 0  # every tab gone: the web processes left every channel
    assert storm.reconnects + storm.late_tabs >= size.storm
    assert (lost, duplicated, storm.rejected) == (0, 0, 0)
    assert len(storm.finished_tabs) == size.sessions * size.tabs_per_session
    for session_id, tab in storm.finished_tabs:
        final = finals[session_id]
        assert tab.conversation() == [(m["id"], m["content"]) for m in final["messages"]]
        assert tab.streaming() == []
    for final in finals.values():
        replies_text = [m["content"] for m in final["messages"] if m["role"] == "assistant"]
        assert replies_text
        assert all(text == SLOW_TEXT for text in replies_text)
    for tab in storm.closed_tabs:  # a closed tab's partial view agrees with the end state
        for message_id, content in tab.conversation():
            if tab.messages[message_id].status != "streaming":
                assert any(
                    m["id"] == message_id and m["content"] == content
                    for f in finals.values()
                    for m in f["messages"]
                )
    return [s.id for s in sessions]
