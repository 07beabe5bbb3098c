"""The web's metrics (``chatrelay_web_*``), served at ``/metrics`` with the rest of the
process's default registry. Nothing here is labelled: no session id, no text."""

from __future__ import annotations

import asyncio
import time

from chatrelay_litestar import METRICS_NAMESPACE
from prometheus_client import Counter, Gauge, Histogram

__all__ = ["FANOUT_LAG", "RESETS", "RESUMES", "SSE_CONNECTIONS", "FanoutLagMeter"]

_SUBSYSTEM = "web"

SSE_CONNECTIONS = Gauge(
    "sse_connections",
    "Event streams (SSE responses) open now",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
)
RESUMES = Counter(
    "resumes",
    "Event streams opened with a Last-Event-ID (header or ?last_event_id=): a reconnect",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
)
RESETS = Counter(
    "resets",
    "reset events sent: the stream's last event id was no longer in the session log (or "
    "never was), so the tab got a fresh snapshot instead of the missed events",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
)
FANOUT_LAG = Histogram(
    "fanout_lag_seconds",
    "Per fan-out turn (the sessions' flushes of one event-loop turn): from the web reading "
    "the oldest of their events from Redis to every tab they woke having written it to its "
    "socket",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
    # Sub-millisecond for a few tabs; 1,000 tabs are spread over ~10 ms by design.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class FanoutLagMeter:
    """Observes the fan-out lag once per loop turn of flushes, not per flush: at 100 replies
    a flush runs per event, and a loop callback plus an observation each (about 1 µs) would
    add a tenth to the web's cost per token. A flush costs a comparison here.

    A woken tab writes in its next step, which the loop runs in the turn after its flush. So
    the first flush of a turn queues a callback that queues the observation once more: that
    runs after the steps of every tab woken in the flush's turn, and so after their writes.
    Stamps are ``perf_counter`` (uvloop's loop clock ticks in whole milliseconds)."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        # The oldest read stamp of the flushes waiting to be observed; None: none waits.
        self._since: float | None = None

    def flushed(self, received_at: float) -> None:
        """A flush woke its tabs; its first event was read from Redis at ``received_at``."""
        if self._since is None:
            self._since = received_at
            asyncio.get_running_loop().call_soon(self._after_next_turn)
        elif received_at < self._since:
            self._since = received_at

    def _after_next_turn(self) -> None:
        asyncio.get_running_loop().call_soon(self._observe)

    def _observe(self) -> None:
        if self._since is not None:
            FANOUT_LAG.observe(time.perf_counter() - self._since)
            self._since = None
