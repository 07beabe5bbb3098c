"""Event ids across a Redis restart: they go on where Redis had every write on disk before it
answered (appendfsync always), and skip far ahead where the last writes may have been lost,
so that no id a tab holds is ever reused for another event."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from chatrelay_common import SessionSettings, SessionStore, open_redis
from chatrelay_common._store import SEQ_SKIP_AFTER_RESTART

from tests.support.redis_process import redis_process


@pytest.mark.parametrize(
    ("appendfsync", "skip"), [("always", 0), ("everysec", SEQ_SKIP_AFTER_RESTART)]
)
async def test_ids_after_a_restart(
    tmp_path: Path, appendfsync: Literal["always", "everysec"], skip: int
) -> None:
    with redis_process(tmp_path, appendfsync=appendfsync) as server:
        async with open_redis(server.url) as redis:
            store = SessionStore(redis)
            session = await store.create(SessionSettings(model="m"))
            _, reply = await store.begin_reply(session, model="m", content="hi")
            assert await store.append_delta(session, reply, "a", batch=1)
            assert await store.append_delta(session, reply, "b", batch=2)
        server.stop()  # a clean stop: here nothing is lost, but Redis cannot know it
        server.start()
        async with open_redis(server.url) as redis:
            store = SessionStore(redis)
            assert await store.append_delta(session, reply, "c", batch=3)
            assert await store.append_delta(session, reply, "d", batch=4)
            snapshot = await store.snapshot(session)
            assert snapshot.messages[-1].content == "abcd"
            log = await store.events_after(session, 0)
            assert [e.seq for e in log] == [1, 2, 3, 4, 5 + skip, 6 + skip]
            # A tab resuming from 4 gets `reset` + `snapshot` (the next id is not 5) when ids
            # skipped, and exactly the events it missed when they did not.
            assert (await store.events_after(session, 4))[0].seq == 5 + skip
