"""A web fan-out running against a real Redis (one or a cluster) for the duration of a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from chatrelay_web._fanout import Fanout

__all__ = ["running"]


@contextlib.asynccontextmanager
async def running(fanout: Fanout) -> AsyncIterator[Fanout]:
    """``fanout`` with its reader task, once it is connected."""
    reader = asyncio.create_task(fanout.run())
    try:
        for _ in range(400):
            if fanout.connected:
                break
            await asyncio.sleep(0.025)
        assert fanout.connected
        yield fanout
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
