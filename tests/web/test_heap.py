"""The web's collector policy: what the open streams keep alive is frozen once they grew,
and garbage is collected before it is frozen."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest
from chatrelay_web import _heap


class _Cycle:
    """Garbage only a collection frees (it refers to itself)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def fast_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_heap, "_CHECK_SECONDS", 0.01)
    yield
    gc.unfreeze()  # this process's heap is the tests' own


async def _until_frozen() -> None:
    for _ in range(1000):  # generous: the machine is shared
        if gc.get_freeze_count() > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("nothing was frozen within 10 s")


async def test_growth_freezes_what_is_alive_after_collecting_garbage(fast_checks: None) -> None:
    gc.unfreeze()
    streams = 0
    freezer = asyncio.create_task(_heap.freeze_after_growth(lambda: streams))
    try:
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() == 0, "no growth yet: nothing is frozen"
        alive = [object() for _ in range(10)]  # stands for what new streams keep alive
        garbage = _Cycle()
        collected = weakref.ref(garbage)
        del garbage
        streams = _heap._FREEZE_AFTER_STREAMS
        await _until_frozen()
        assert collected() is None, "cyclic garbage was frozen instead of collected"
        assert alive
        frozen = gc.get_freeze_count()
        # Tracked objects that a second freeze would take.
        later: list[list[int]] = [[] for _ in range(1000)]
        await asyncio.sleep(0.05)
        # Frozen objects still die by reference counting, so the count may only fall.
        assert gc.get_freeze_count() <= frozen, "no further growth: no further freeze"
        assert later
    finally:
        freezer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await freezer


async def test_growth_counts_from_the_lowest_point_after_streams_closed(
    fast_checks: None,
) -> None:
    gc.unfreeze()
    streams = 500
    freezer = asyncio.create_task(_heap.freeze_after_growth(lambda: streams))
    try:
        streams = 100  # most streams closed
        await asyncio.sleep(0.05)
        streams = 100 + _heap._FREEZE_AFTER_STREAMS  # below 500, yet grown from 100
        await _until_frozen()
    finally:
        freezer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await freezer
