"""The web's metrics (``chatrelay_web_*``), served at ``/metrics`` with the rest of the
process's default registry. Nothing here is labelled: no session id, no text."""

from __future__ import annotations

import time

from chatrelay_litestar import METRICS_NAMESPACE
from prometheus_client import Counter, Gauge, Histogram

__all__ = ["FANOUT_LAG", "RESETS", "RESUMES", "SSE_CONNECTIONS", "observe_fanout_lag"]

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
    "Per flush of a session's channel: from the web reading the flush's first event from "
    "Redis to every woken tab of the session having written it to its socket",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
    # Sub-millisecond for a few tabs; 1,000 tabs are spread over ~10 ms by design.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def observe_fanout_lag(received_at: float) -> None:
    """A loop callback queued right after a flush wakes its tabs: it runs once their steps,
    which write before they wait again, have run. ``received_at`` is a ``perf_counter``
    stamp (uvloop's loop clock ticks in whole milliseconds)."""
    FANOUT_LAG.observe(time.perf_counter() - received_at)
