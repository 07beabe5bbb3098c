"""Live replies on a Redis Cluster (issue 12): sessions on all 3 primaries, 2 gateways, 2 web
processes, 3 tabs per session spread over both web processes. Every tab sees the same events,
ids one after another, and the fake upstream's exact text; a tab joining mid-reply and a tab
resuming with ``Last-Event-ID`` get the rest exactly once. Each web process holds one sharded
subscription connection per primary, not one per tab."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from chatrelay_common import SessionKeys

from scripts.redis_cluster import ClusterNode, LocalCluster
from tests.cluster.conftest import sessions_on_every_primary
from tests.support.api import send_message
from tests.support.fake_upstream import SLOW_TEXT, SLOW_TOKEN_COUNT
from tests.support.services import Service
from tests.support.sse import Event, open_events

SESSIONS_PER_PRIMARY = 2
TABS = 3
# A generous bound for "every tab saw its reply end" on a busy 2-core box.
REPLY_SECONDS = 60.0


@pytest.fixture(scope="module")
def slow_delay() -> float:
    return 0.01  # 200 tokens in ~2 s: the replies stream while the tabs watch


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        yield client


@pytest.fixture(scope="module")
async def spread(
    client: httpx.AsyncClient, cluster: LocalCluster, gateways: list[Service]
) -> dict[ClusterNode, list[str]]:
    placed = await sessions_on_every_primary(client, cluster, gateways, SESSIONS_PER_PRIMARY)
    assert len(placed) == 3
    return placed


async def watch(
    client: httpx.AsyncClient,
    web: Service,
    session_id: str,
    *,
    connected: asyncio.Event | None = None,
    last_event_id: int | None = None,
    until: set[str] | None = None,
) -> list[Event]:
    """One tab: every event (the snapshot first, unless resuming) until a reply ends;
    ``connected`` is set once the snapshot arrived (the web process follows the session)."""
    got: list[Event] = []
    async with open_events(client, web.url, session_id, last_event_id) as events:
        async for event in events:
            got.append(event)
            if event.name == "snapshot" and connected is not None:
                connected.set()
            if event.name in (until or {"done", "error"}):
                return got
    raise AssertionError(f"the stream ended before the reply did: {got}")


def _text(events: list[Event], reply_id: str) -> str:
    return "".join(
        e.data["text"] for e in events if e.name == "delta" and e.data["reply_id"] == reply_id
    )


def _assert_one_after_another(events: list[Event]) -> None:
    ids = [e.id for e in events if e.id is not None]
    assert len(ids) == len(events), events
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids


def _after(events: list[Event], event_id: int | None) -> list[Event]:
    assert event_id is not None
    return [e for e in events if e.id is not None and e.id > event_id]


def _subscribers(spread: dict[ClusterNode, list[str]]) -> dict[str, tuple[int, int]]:
    """For each primary: its connections holding sharded subscriptions, and the fewest
    subscribers any of its sessions' channels has. Plain channels must have none."""
    seen = {}
    for primary, sessions in spread.items():
        channels = [SessionKeys(s).channel for s in sessions]
        clients = str(primary.command("CLIENT", "LIST", "TYPE", "pubsub")).splitlines()
        sharded = [line for line in clients if " ssub=0 " not in line]
        counts = primary.command("PUBSUB", "SHARDNUMSUB", *channels)
        plain = primary.command("PUBSUB", "NUMSUB", *channels)
        assert isinstance(counts, list)
        assert isinstance(plain, list)
        assert not any(plain[1::2]), plain
        seen[primary.address] = (len(sharded), min(counts[1::2]))
    return seen


def _wire(events: list[Event]) -> list[tuple[int | None, str, dict[str, object]]]:
    return [(e.id, e.name, e.data) for e in events]


async def test_tabs_on_both_web_processes_see_every_primary_s_replies_exactly(
    client: httpx.AsyncClient,
    spread: dict[ClusterNode, list[str]],
    gateways: list[Service],
    webs: list[Service],
) -> None:
    sessions = [session_id for ids in spread.values() for session_id in ids]
    tabs: dict[str, list[asyncio.Task[list[Event]]]] = {}
    connected: list[asyncio.Event] = []
    for n, session_id in enumerate(sessions):
        for tab in range(TABS):
            ready = asyncio.Event()
            connected.append(ready)
            web = webs[(n + tab) % len(webs)]
            task = asyncio.create_task(watch(client, web, session_id, connected=ready))
            tabs.setdefault(session_id, []).append(task)
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in connected)), 30)
    subscribers = await asyncio.to_thread(_subscribers, spread)
    assert subscribers == {p.address: (len(webs), len(webs)) for p in spread}, subscribers

    started = time.monotonic()
    reply_ids = {
        session_id: (await send_message(client, gateways[n % len(gateways)].url, session_id, "go"))[
            "reply_id"
        ]
        for n, session_id in enumerate(sessions)
    }
    seen = {
        session_id: await asyncio.wait_for(asyncio.gather(*session_tabs), REPLY_SECONDS)
        for session_id, session_tabs in tabs.items()
    }
    seconds = time.monotonic() - started

    for session_id, session_tabs in seen.items():
        first = session_tabs[0]
        for events in session_tabs:
            snapshot, *live = events
            assert snapshot.name == "snapshot"
            names = [e.name for e in live]
            assert names == ["message", "start", *["delta"] * (len(names) - 3), "done"], names
            assert live[1].data["reply_id"] == reply_ids[session_id]
            assert _text(live, reply_ids[session_id]) == SLOW_TEXT
            assert live[-1].data["finish_reason"] == "stop"
            _assert_one_after_another(events)
            # Every tab, on either web process, saw the very same events.
            assert _wire(live) == _wire(first[1:])
    deltas = [len(tab) - 4 for session_tabs in seen.values() for tab in session_tabs]
    print(
        f"\nlive on the cluster: {len(sessions)} sessions "
        f"({', '.join(f'{len(ids)} on {p.address}' for p, ids in spread.items())}), "
        f"{len(sessions) * TABS} tabs over {len(webs)} web processes: every tab got the "
        f"{SLOW_TOKEN_COUNT}-token reply exactly, in {min(deltas)}-{max(deltas)} delta events, "
        f"in {seconds:.1f} s"
    )


async def test_a_late_tab_and_a_resumed_tab_get_the_rest_exactly_once(
    client: httpx.AsyncClient,
    spread: dict[ClusterNode, list[str]],
    gateways: list[Service],
    webs: list[Service],
) -> None:
    for primary, (session_id, *_) in spread.items():
        ready = asyncio.Event()
        early = asyncio.create_task(watch(client, webs[0], session_id, connected=ready))
        await asyncio.wait_for(ready.wait(), 30)
        reply_id = (await send_message(client, gateways[1].url, session_id, "again"))["reply_id"]
        # Joins once some text has streamed: its snapshot holds the reply so far.
        for _ in range(600):
            session = (await client.get(f"{gateways[0].url}/api/sessions/{session_id}")).json()
            if len(session["messages"][-1]["content"]) > 40:
                break
            await asyncio.sleep(0.01)
        late_events = await asyncio.wait_for(watch(client, webs[1], session_id), REPLY_SECONDS)
        early_events = await asyncio.wait_for(early, REPLY_SECONDS)

        snapshot, *late_live = late_events
        assert snapshot.name == "snapshot"
        partial = next(m for m in snapshot.data["messages"] if m["id"] == reply_id)
        assert partial["status"] == "streaming", "joined too late to see the reply mid-way"
        assert partial["content"]
        assert partial["content"] + _text(late_live, reply_id) == SLOW_TEXT
        assert _wire(late_live) == _wire(_after(early_events, snapshot.id))

        # Resuming from the reply's start, on the other web process: the same events again.
        start = next(e for e in early_events if e.name == "start")
        resumed = await asyncio.wait_for(
            watch(client, webs[1], session_id, last_event_id=start.id), REPLY_SECONDS
        )
        assert _wire(resumed) == _wire(_after(early_events, start.id))
        print(
            f"\n{primary.address}: late tab joined at id {snapshot.id} with "
            f"{len(partial['content'])} characters, then {len(late_live)} events; resume from "
            f"id {start.id}: {len(resumed)} events"
        )
