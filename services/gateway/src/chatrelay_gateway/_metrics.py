"""The gateway's metrics (``chatrelay_gateway_*``), served at ``/metrics`` with the rest of
the process's default registry. Labels are small fixed sets (outcomes, error codes): never a
session, a model name, text or the key."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal, get_args

from chatrelay_common import Done, ErrorEvent
from chatrelay_litestar import METRICS_NAMESPACE
from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "FIRST_TOKEN_SECONDS",
    "REDIS_WRITE_SECONDS",
    "REPLIES_FINISHED",
    "REPLIES_RUNNING",
    "REPLY_ERRORS",
    "TOKENS_RELAYED",
    "UPSTREAM_SECONDS",
    "Outcome",
    "observe_redis_write",
    "reply_finished",
    "reply_reaped",
    "time_upstream",
]

_SUBSYSTEM = "gateway"

# done: the upstream finished; length: cut off at the token cap; stopped: a client asked;
# error: an error event (by code in reply_errors); interrupted: the gateway shut down,
# Redis stayed away, or a reaper closed a reply whose gateway had died.
Outcome = Literal["done", "length", "stopped", "error", "interrupted"]
_INTERRUPTED = "interrupted"  # the error code of an interrupted reply

TOKENS_RELAYED = Counter(
    "tokens_relayed",
    "Pieces of text (answer or reasoning, about one token each) read from the upstream and "
    "handed to the writer",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
)
REPLIES_RUNNING = Gauge(
    "replies_running",
    "Replies this gateway is running now",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
)
REPLIES_FINISHED = Counter(
    "replies_finished",
    "Replies ended, by outcome: done, length (cut off at the token cap), stopped, error, "
    "interrupted (gateway shut down, Redis away, or closed by a reaper)",
    ["outcome"],
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
)
REPLY_ERRORS = Counter(
    "reply_errors",
    "Replies that ended with an error event, by its code (the API's error codes)",
    ["code"],
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
)
FIRST_TOKEN_SECONDS = Histogram(
    "first_token_seconds",
    "From a reply's start (its message accepted) to its first piece of text from the upstream",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
UPSTREAM_SECONDS = Histogram(
    "upstream_seconds",
    "One upstream request, from sending it to its answer's end, whatever ended it",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
    # Up to GATEWAY_MAX_REPLY_SECONDS' default (600 s).
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
REDIS_WRITE_SECONDS = Histogram(
    "redis_write_seconds",
    "One batched write of the new text of every running reply (one Lua call per flush "
    "tick), when it succeeded",
    namespace=METRICS_NAMESPACE,
    subsystem=_SUBSYSTEM,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

# Every outcome from 0, so that a rate() sees the first one.
for _name in get_args(Outcome):
    REPLIES_FINISHED.labels(_name)


def _outcome(event: Done | ErrorEvent) -> Outcome:
    if isinstance(event, ErrorEvent):
        return "interrupted" if event.code == _INTERRUPTED else "error"
    if event.finish_reason == "stopped":
        return "stopped"
    return "length" if event.finish_reason == "length" else "done"


def reply_finished(event: Done | ErrorEvent) -> None:
    """The reply's end (``done`` or ``error``), as this gateway writes it."""
    REPLIES_FINISHED.labels(_outcome(event)).inc()
    if isinstance(event, ErrorEvent):
        REPLY_ERRORS.labels(event.code).inc()


def reply_reaped() -> None:
    """A reaper closed a reply whose gateway stopped renewing it (``interrupted``)."""
    REPLIES_FINISHED.labels("interrupted").inc()
    REPLY_ERRORS.labels(_INTERRUPTED).inc()


def time_upstream(reader: asyncio.Task[Any]) -> None:
    """Observes the upstream request run by ``reader`` once it ends."""
    started = time.perf_counter()
    reader.add_done_callback(lambda _: UPSTREAM_SECONDS.observe(time.perf_counter() - started))


def observe_redis_write(started: float) -> None:
    """``started``: a ``perf_counter`` stamp (uvloop's loop clock ticks in milliseconds)."""
    REDIS_WRITE_SECONDS.observe(time.perf_counter() - started)
