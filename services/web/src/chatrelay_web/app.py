"""The web service: owns reads. Serves the page and each session's event stream."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any, cast

from chatrelay_common import open_redis, store_lifespan
from chatrelay_litestar import (
    MetricsController,
    exception_handlers,
    owner_cookie_middleware,
    provide_value,
    request_metrics,
)
from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.static_files import create_static_files_router
from litestar.types import (
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)

from ._controllers import STATIC_DIR, PageController, events_session_id, open_events
from ._events import StreamTiming
from ._fanout import Fanout
from ._health import HealthController
from ._heap import freeze_after_growth, tune_collector
from ._settings import WebSettings
from ._shared import (
    SharedController,
    ShareViewers,
    open_shared_events,
    shared_events_token,
)

__all__ = ["create_app"]


class _WebApp(Litestar):
    """Litestar, with the events streams (a session's, a share link's) answered before its
    router (see ``open_events``)."""

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] == ScopeType.HTTP:
            http_scope = cast("HTTPScope", scope)
            if (session_id := events_session_id(http_scope)) is not None:
                stream = await open_events(self.state, http_scope, cast("Send", send), session_id)
                if stream is not None:
                    await stream(http_scope, cast("Receive", receive), cast("Send", send))
                return
            if (token := shared_events_token(http_scope)) is not None:
                viewer = await open_shared_events(self.state, http_scope, cast("Send", send), token)
                if viewer is not None:
                    await viewer(http_scope, cast("Receive", receive), cast("Send", send))
                return
        await super().__call__(scope, receive, send)


def _drain_on_exit_signals(fanout: Fanout) -> None:
    """On SIGTERM or SIGINT, end every open stream at once, then let the server (uvicorn,
    whose handlers are in place while the app starts) shut down as it does. Otherwise the
    server waits its graceful timeout (5 s) for streams that never end by themselves, then
    cuts them; this way each tab reconnects elsewhere right away, at a clean end of stream."""
    loop = asyncio.get_running_loop()
    for exit_signal in (signal.SIGTERM, signal.SIGINT):
        server_handler = signal.getsignal(exit_signal)
        if not callable(server_handler):
            continue  # no server handler to hand the signal on to: leave it as it is

        def on_exit_signal(
            exit_signal: signal.Signals = exit_signal,
            server_handler: Callable[[int, FrameType | None], Any] = server_handler,
        ) -> None:
            fanout.drain()
            server_handler(exit_signal, None)

        loop.add_signal_handler(exit_signal, on_exit_signal)


def create_app(settings: WebSettings | None = None) -> Litestar:
    settings = settings or WebSettings()

    @contextlib.asynccontextmanager
    async def fanout_lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_redis(settings.redis_url, retry=False) as redis:
            fanout = Fanout(
                redis,
                max_backlog=settings.max_backlog,
                max_backlog_bytes=settings.max_backlog_bytes,
                flush_spacing=settings.flush_spacing,
            )
            app.state.fanout = fanout
            app.state.opening = asyncio.Semaphore(settings.max_opening_streams)
            app.state.stream_timing = StreamTiming(
                settings.heartbeat_seconds, settings.stall_seconds
            )
            reader = asyncio.create_task(fanout.run())
            tune_collector()
            freezer = asyncio.create_task(freeze_after_growth(lambda: fanout.subscribers))
            _drain_on_exit_signals(fanout)
            try:
                yield
            finally:
                for task in (freezer, reader):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    return _WebApp(
        route_handlers=[
            PageController,
            SharedController,
            HealthController,
            MetricsController,
            create_static_files_router(path="/static", directories=[STATIC_DIR]),
        ],
        lifespan=[store_lifespan(settings), fanout_lifespan],
        # Routed requests only: the events streams are answered before the router.
        # The open mode's owner cookie, set when the page is served to a browser without one.
        middleware=[request_metrics("web"), owner_cookie_middleware],
        dependencies={
            "settings": provide_value(settings),
        },
        state=State(
            {"settings": settings, "share_viewers": ShareViewers(settings.max_viewers_per_share)}
        ),
        exception_handlers=exception_handlers(),
        openapi_config=None,
    )
