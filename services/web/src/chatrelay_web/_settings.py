from __future__ import annotations

from chatrelay_common import ServiceSettings
from pydantic import Field

from ._fanout import DEFAULT_FLUSH_SPACING, DEFAULT_MAX_BACKLOG, DEFAULT_MAX_BACKLOG_BYTES

__all__ = ["WebSettings"]


class WebSettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="WEB_HOST")
    port: int = Field(default=8002, validation_alias="WEB_PORT")
    # SSE comment sent when a stream has been quiet this long (proxies close idle streams).
    heartbeat_seconds: float = Field(
        default=15.0, gt=0, le=15, validation_alias="WEB_HEARTBEAT_SECONDS"
    )
    # Events queued for one slow connection before it is closed (it resumes from the log).
    max_backlog: int = Field(default=DEFAULT_MAX_BACKLOG, ge=10, validation_alias="WEB_MAX_BACKLOG")
    # Bytes queued for one slow connection before it is closed (it resumes from the log).
    max_backlog_bytes: int = Field(
        default=DEFAULT_MAX_BACKLOG_BYTES, ge=64 * 1024, validation_alias="WEB_MAX_BACKLOG_BYTES"
    )
    # A stream with a reply in flight that hears nothing this long re-checks the session log.
    stall_seconds: float = Field(default=3.0, gt=0, validation_alias="WEB_STALL_SECONDS")
    # Seconds between one session's flushes to its tabs, per open tab: with many tabs on one
    # session, events closer together than this are written together (one write per tab).
    flush_spacing: float = Field(
        default=DEFAULT_FLUSH_SPACING, ge=0, le=1e-3, validation_alias="WEB_FLUSH_SPACING_SECONDS"
    )
    # Events streams checking the session or reading their first snapshot at once; more
    # wait their turn (a burst of tabs neither stalls the loop nor opens a Redis connection
    # per tab).
    max_opening_streams: int = Field(default=32, ge=1, validation_alias="WEB_MAX_OPENING_STREAMS")
    # Open viewer streams per share link, per web process; more get 429 with Retry-After.
    max_viewers_per_share: int = Field(
        default=200, ge=1, validation_alias="WEB_MAX_VIEWERS_PER_SHARE"
    )
