"""A primary killed mid-reply (issue 12, "Failover semantics"): sessions on every primary stream
slow replies to 3 tabs each over 2 web processes; SIGKILL one primary; its replica takes over.
Every tab of every session sees its reply end (``done``, or ``error`` with the text kept)
within 15 s of the kill, with ids strictly increasing and no event twice; a tab may get
``reset`` + ``snapshot`` where asynchronous replication lost the last writes, never a silent
gap: each tab ends with the session's own text. The session then takes a new message."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from itertools import pairwise

import httpx
import pytest

from scripts.redis_cluster import ClusterNode, LocalCluster
from tests.chaos._reply_tabs import ReplyTab, follow_reply
from tests.cluster.conftest import sessions_on_every_primary
from tests.support.api import send_message
from tests.support.fake_upstream import SLOW_TEXT
from tests.support.services import Service

SESSIONS_PER_PRIMARY = 2
TABS = 3
TARGET_SECONDS = 15.0  # from the kill to every tab's end
FOLLOW_SECONDS = 60.0  # a tab gives up (and counts as stuck) after this


@pytest.fixture(scope="module")
def slow_delay() -> float:
    # 200 tokens 0.03 s apart: a 6 s reply, killed ~1 s in; left alone it would end within
    # the target even after a ~4 s failover.
    return 0.03


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        yield client


async def _until_streamed(client: httpx.AsyncClient, gateway: Service, session_id: str) -> None:
    for _ in range(400):
        session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
        reply = session["messages"][-1]
        if len(reply["content"]) > 20:
            assert reply["status"] == "streaming", "the reply ended before the kill"
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{session_id}: the reply streamed nothing in 10 s")


def _statuses(service: Service) -> Counter[str]:
    return Counter(re.findall(r'" (\d{3}) ', service.log()))


async def test_a_primary_killed_mid_reply_fails_over_and_every_tab_ends(
    client: httpx.AsyncClient,
    cluster: LocalCluster,
    gateways: list[Service],
    webs: list[Service],
) -> None:
    spread = await sessions_on_every_primary(client, cluster, gateways, SESSIONS_PER_PRIMARY)
    primary_of = {s: primary for primary, ids in spread.items() for s in ids}
    sessions = list(primary_of)
    replies = {
        s: (await send_message(client, gateways[n % len(gateways)].url, s, "go"))["reply_id"]
        for n, s in enumerate(sessions)
    }
    tabs: dict[str, list[ReplyTab]] = {
        s: [ReplyTab(replies[s]) for _ in range(TABS)] for s in sessions
    }
    following = [
        asyncio.create_task(
            follow_reply(client, webs[(n + t) % len(webs)].url, s, tab, seconds=FOLLOW_SECONDS)
        )
        for n, s in enumerate(sessions)
        for t, tab in enumerate(tabs[s])
    ]
    for n, s in enumerate(sessions):
        await _until_streamed(client, gateways[n % len(gateways)], s)

    doomed: ClusterNode = next(iter(spread))
    text_at_kill = {id(tab): len(tab.text) for ts in tabs.values() for tab in ts}
    cluster.kill(doomed)
    killed = time.monotonic()
    promoted, failover_seconds = await asyncio.to_thread(cluster.wait_for_failover, doomed)
    await asyncio.gather(*following)

    finals = {
        s: (await client.get(f"{gateways[0].url}/api/sessions/{s}")).json()["messages"][-1]
        for s in sessions
    }
    every_tab = [(s, tab) for s in sessions for tab in tabs[s]]
    ended_after = [
        None if tab.ended_at is None else round(tab.ended_at - killed, 2) for _, tab in every_tab
    ]
    outcomes = Counter(str(tab.outcome) for _, tab in every_tab)
    continued = sum(
        1
        for _, tab in every_tab
        if tab.outcome is not None
        and tab.outcome.startswith("done")
        and len(tab.text) > text_at_kill[id(tab)]
    )
    affected = [tab for s, tab in every_tab if primary_of[s] is doomed]
    print(
        f"\nfailover: killed primary {doomed.address} ({len(spread[doomed])} of "
        f"{len(sessions)} sessions), replica {promoted.address} took over, every node agreed "
        f"after {failover_seconds:.2f} s"
        f"\n  tabs: {len(every_tab)}; ends after the kill (s): {ended_after}"
        f"\n  outcomes: {dict(outcomes)}; continued past the kill to done: {continued}; "
        f"resets: {sum(tab.resets for _, tab in every_tab)} (on the killed primary's sessions: "
        f"{sum(tab.resets for tab in affected)}); reconnects: "
        f"{sum(tab.reconnects for _, tab in every_tab)}"
        f"\n  web statuses: {[dict(_statuses(web)) for web in webs]}"
    )

    assert promoted in cluster.primaries()
    assert promoted.node_id != doomed.node_id
    stuck = [(s, tab) for s, tab in every_tab if tab.outcome is None]
    assert not stuck, f"{len(stuck)} tabs never saw their reply end: {stuck}"
    assert all(s is not None and s <= TARGET_SECONDS for s in ended_after), ended_after
    for session_id, tab in every_tab:
        assert all(b > a for a, b in pairwise(tab.ids)), (session_id, tab.ids)  # no duplicate
        final = finals[session_id]
        assert final["id"] == tab.reply_id
        assert tab.text == final["content"], (session_id, tab)  # no silent gap
        if tab.outcome in ("done:stop", "snapshot:complete"):
            assert tab.text == SLOW_TEXT
        else:  # ended early: the text so far is kept
            assert str(tab.outcome).startswith(("error:", "snapshot:error")), tab.outcome
            assert SLOW_TEXT.startswith(tab.text)
    for web in webs:
        assert "500" not in _statuses(web), web.log()[-3000:]

    # A session on the killed primary takes the next message, and it streams to the end.
    session_id = spread[doomed][0]
    last_id = max(tab.last_event_id or 0 for tab in tabs[session_id])
    reply_id = (await send_message(client, gateways[1].url, session_id, "again"))["reply_id"]
    after = await follow_reply(
        client, webs[0].url, session_id, ReplyTab(reply_id, last_event_id=last_id), seconds=30
    )
    assert after.outcome == "done:stop", after
    assert after.text == SLOW_TEXT
