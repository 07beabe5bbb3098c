"""Dependencies read from ``app.state`` (set by a lifespan) or fixed when the app is made."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

__all__ = ["from_state", "provide_value"]


def from_state(attribute: str) -> Provide:
    """Provides ``app.state.<attribute>``, read per request: lifespans set it after startup."""

    def provide(state: State) -> Any:
        return getattr(state, attribute)

    return Provide(provide, sync_to_thread=False)


def provide_value(value: object) -> Provide:
    def provide() -> Any:
        return value

    return Provide(provide, sync_to_thread=False)
