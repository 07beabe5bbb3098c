"""The garbage collector, tuned for thousands of long-lived connections.

A collection's pause grows with the objects it scans. Open connections live for hours, so
scanning them again and again buys nothing: once a burst of new streams has settled, what is
alive is frozen (``gc.freeze()``), out of every later collection. A closed connection's
objects are still freed at once by reference counting (measured: after 2,200 frozen
connections closed, one unfrozen full collection found 30 objects of cyclic garbage in all).
The young generations are kept small, so that no single collection pauses the loop long.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

__all__ = ["freeze_after_growth", "tune_collector"]

# Allocations between young collections, and young collections per middle one: at most
# ~50,000 objects scanned at once (about 20 ms here; the defaults of the last session,
# 50,000 and 2, paused 100-175 ms while 5,000 connections arrived).
_YOUNG_THRESHOLD = 5_000
_MIDDLE_THRESHOLD = 10
# Middle collections per full one (default 10): full ones only find what a freeze missed.
_OLD_THRESHOLD = 100
# Streams opened (net) since the last freeze that make the next check freeze again.
_FREEZE_AFTER_STREAMS = 100
_CHECK_SECONDS = 1.0


def tune_collector() -> None:
    """Freeze what is alive now (modules, the app: it lives as long as the process) and set
    the thresholds above."""
    gc.freeze()
    gc.set_threshold(_YOUNG_THRESHOLD, _MIDDLE_THRESHOLD, _OLD_THRESHOLD)


async def freeze_after_growth(open_streams: Callable[[], int]) -> None:
    """Forever: each second, when ``open_streams()`` grew by ``_FREEZE_AFTER_STREAMS`` since
    the last freeze, collect the young generations (their garbage must not be frozen) and
    freeze what is left."""
    frozen_at = open_streams()
    while True:
        await asyncio.sleep(_CHECK_SECONDS)
        now = open_streams()
        if now < frozen_at:
            frozen_at = now  # streams closed: growth counts from here
        elif now - frozen_at >= _FREEZE_AFTER_STREAMS:
            gc.collect(1)
            gc.freeze()
            frozen_at = now
