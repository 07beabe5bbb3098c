"""What we rely on in redis-py's asyncio client."""

from __future__ import annotations

import asyncio
import random

from redis.asyncio import Redis


async def test_cancelling_a_task_mid_command_cancels_it(redis: Redis) -> None:
    """A reply's keepalive and an SSE stream are cancelled mid-command; the cancellation must
    end the task. (redis-py 8.0/8.1 swallowed about half of them: the task ran on.)"""
    rng = random.Random(7)
    went_on = 0

    async def commands() -> None:
        nonlocal went_on
        for _ in range(1000):
            await redis.get("chatrelay:test:cancel")
            await asyncio.sleep(0)
        went_on += 1

    for _ in range(200):
        task = asyncio.create_task(commands())
        await asyncio.sleep(rng.uniform(0, 0.001))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, "a cancelled task is still running"
        assert task.cancelled() or went_on
    assert went_on == 0
