"""The token wire format shared by the bench fake (which writes it) and the load client
(which scans for it): one source for both.

Each token's text is `` k<index>@<emit time>``: its position in the reply and the
``time.monotonic_ns()`` at which the fake wrote it. CLOCK_MONOTONIC is system-wide, so the
client (same machine) subtracts it from its own arrival time.
"""

from __future__ import annotations

import re

__all__ = ["MODEL_PREFIX", "STAMP", "model_name", "parse_model", "token_text"]

MODEL_PREFIX = "bench-"
# Matches inside JSON string values as they are: digits and '@' are never escaped.
STAMP = re.compile(rb" k(\d+)@(\d+)")
_MODEL = re.compile(r"bench-(\d+)x(\d+)")


def model_name(tokens: int, interval_ms: int) -> str:
    """The model that streams ``tokens`` tokens ``interval_ms`` apart."""
    return f"{MODEL_PREFIX}{tokens}x{interval_ms}"


def parse_model(model: str) -> tuple[int, int] | None:
    """``(tokens, interval_ms)`` of a bench model name, or None."""
    found = _MODEL.fullmatch(model)
    return (int(found[1]), int(found[2])) if found else None


def token_text(index: int, emitted_ns: int) -> str:
    return f" k{index}@{emitted_ns}"
