"""A live session's slot moved to another primary while its reply streams (issue 12, "Slot
migration"): ``CLUSTER SETSLOT … IMPORTING/MIGRATING``, its keys moved with ``MIGRATE``, the slot
handed over; at once (keys in batches) or slowly (one key at a time, so the gateway and the web
processes meet the slot half moved: ``ASK`` redirects, ``TRYAGAIN`` for a script whose keys are
split). The 3 tabs, over both web processes, are unaffected: the exact text, every id once and
in order, no reset, no stuck tab."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from chatrelay_common import SessionKeys
from redis.crc import key_slot

from scripts.redis_cluster import LocalCluster
from tests.chaos._reply_tabs import ReplyTab, follow_reply
from tests.support.api import create_session, send_message
from tests.support.fake_upstream import SLOW_TEXT
from tests.support.services import Service

TABS = 3
TARGET_SECONDS = 20.0  # from the migration's start to every tab's end (the reply takes ~6 s)


@pytest.fixture(scope="module")
def slow_delay() -> float:
    return 0.03  # a 6 s reply: the migration happens in its middle


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        yield client


# At once, and one key at a time 0.3 s apart (a session has a handful of keys, so the slot
# stays half moved for a second or two while deltas are written).
@pytest.mark.parametrize("pause", [0.0, 0.3], ids=["batched", "key-by-key"])
async def test_a_streaming_session_s_slot_moves_and_its_tabs_are_unaffected(
    client: httpx.AsyncClient,
    cluster: LocalCluster,
    gateways: list[Service],
    webs: list[Service],
    pause: float,
) -> None:
    session_id = await create_session(client, gateways[0].url, model="slow")
    slot = key_slot(SessionKeys(session_id).session.encode())
    source = cluster.primary_of_slot(slot)
    target = next(p for p in cluster.primaries() if p is not source)

    reply_id = (await send_message(client, gateways[1].url, session_id, "go"))["reply_id"]
    tabs = [ReplyTab(reply_id) for _ in range(TABS)]
    following = [
        asyncio.create_task(
            follow_reply(client, webs[n % len(webs)].url, session_id, tab, seconds=60)
        )
        for n, tab in enumerate(tabs)
    ]
    for _ in range(400):
        session = (await client.get(f"{gateways[0].url}/api/sessions/{session_id}")).json()
        if len(session["messages"][-1]["content"]) > 20:
            break
        await asyncio.sleep(0.025)
    else:
        raise AssertionError("the reply streamed nothing in 10 s")

    keys = source.command("CLUSTER", "COUNTKEYSINSLOT", slot)
    started = time.monotonic()
    await asyncio.to_thread(cluster.migrate_slot, slot, target, pause_between_keys=pause)
    moved_in = time.monotonic() - started
    streaming_after = (await client.get(f"{gateways[0].url}/api/sessions/{session_id}")).json()
    await asyncio.gather(*following)

    ended_after = [None if t.ended_at is None else round(t.ended_at - started, 2) for t in tabs]
    print(
        f"\nmigration ({'one key at a time' if pause else 'batched'}): slot {slot} with {keys} "
        f"keys from {source.address} to {target.address} in {moved_in:.2f} s, the reply "
        f"{streaming_after['messages'][-1]['status']} after it; tabs ended after "
        f"{ended_after} s from its start: {[t.outcome for t in tabs]}, "
        f"reconnects {[t.reconnects for t in tabs]}, resets {[t.resets for t in tabs]}"
    )
    assert cluster.primary_of_key(SessionKeys(session_id).session) is target
    final = (await client.get(f"{gateways[0].url}/api/sessions/{session_id}")).json()
    assert final["messages"][-1]["content"] == SLOW_TEXT
    for tab in tabs:
        assert tab.outcome == "done:stop", tab
        assert tab.text == SLOW_TEXT
        assert tab.resets == 0
        assert tab.ids == list(range(tab.ids[0], tab.ids[0] + len(tab.ids))), tab.ids
    assert all(s is not None and s <= TARGET_SECONDS for s in ended_after), ended_after
