"""The web is ready once Redis answers and the fan-out's pub/sub connection is up."""

from __future__ import annotations

from chatrelay_litestar import health_controller
from litestar.datastructures import State

from ._fanout import Fanout

__all__ = ["HealthController"]


def _fanout_not_ready(state: State) -> str | None:
    fanout: Fanout = state.fanout
    return None if fanout.connected else "Live events are not connected to Redis"


HealthController = health_controller(_fanout_not_ready)
