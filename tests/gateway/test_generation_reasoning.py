"""The writer with reasoning: a reply's reasoning and answer go through the same numbered
batches, so their order holds and a write retried after its answer was lost applies nothing
twice (in-process runner, real Redis, fake upstream over HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import msgspec
from chatrelay_common import SessionSettings, SessionStore
from chatrelay_common._store import DeltaWrite
from chatrelay_gateway._generation import Generations
from chatrelay_gateway._upstream import UpstreamConfig
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support import fake_upstream as fake


class _LosesAnswers(SessionStore):
    """Runs each write, then loses its answer once for each of the first ``lose`` calls
    (as when a connection breaks after Redis ran the script): the writer must retry."""

    def __init__(self, redis: Redis, lose: int) -> None:
        super().__init__(redis)
        self.lose = lose
        self.calls: list[list[tuple[str, int | None]]] = []

    async def append_deltas(self, writes: Sequence[DeltaWrite]) -> list[bool]:
        self.calls.append([(kind, batch) for _, _, kind, _, batch in writes])
        result = await super().append_deltas(writes)
        if self.lose > 0:
            self.lose -= 1
            raise RedisConnectionError("the answer was lost")
        return result


async def test_reasoning_then_text_once_each_in_order_through_lost_answers(
    redis: Redis, fake_upstream: fake.FakeUpstream
) -> None:
    store = _LosesAnswers(redis, lose=2)
    session_id = await store.create(SessionSettings(model="reasoning"))
    _, reply_id = await store.begin_reply(session_id, model="reasoning", content="hi")
    async with httpx.AsyncClient() as client:
        runner = Generations(store, client, UpstreamConfig(fake_upstream.base_url, None))
        try:
            await asyncio.wait_for(runner.start(session_id, reply_id), timeout=20)
        finally:
            await runner.aclose()

    log = await store.events_after(session_id, 0)
    texts = [
        (e.name, msgspec.json.decode(e.data)["text"])
        for e in log
        if e.name in ("reasoning", "delta")
    ]
    names = [name for name, _ in texts]
    assert names == sorted(names, key=lambda name: name != "reasoning")
    assert "".join(t for n, t in texts if n == "reasoning") == fake.REASONING_TEXT
    assert "".join(t for n, t in texts if n == "delta") == fake.OK_TEXT
    assert log[-1].name == "done"
    reply = (await store.snapshot(session_id)).messages[-1]
    assert (reply.reasoning, reply.content, reply.status) == (
        fake.REASONING_TEXT,
        fake.OK_TEXT,
        "complete",
    )
    # The lost calls were sent again with the same numbers: 1, 2, … across both kinds.
    print(f"writer calls (kind, batch): {store.calls}")
    assert store.calls[1][: len(store.calls[0])] == store.calls[0]
    numbers = {batch or 0 for call in store.calls for _, batch in call}
    assert sorted(numbers) == list(range(1, max(numbers) + 1))
