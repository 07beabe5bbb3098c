"""What running either service takes, framework aside: Redis on the app state, and uvicorn."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn

from ._redis import open_redis
from ._settings import ServiceSettings

__all__ = ["serve", "store_lifespan"]


def store_lifespan(
    settings: ServiceSettings,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan context manager putting ``redis`` and ``store`` on ``app.state``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with open_redis(
            settings.redis_url,
            socket_timeout=settings.redis_socket_timeout,
            connect_timeout=settings.redis_connect_timeout,
        ) as redis:
            app.state.redis = redis
            app.state.store = settings.session_store(redis)
            yield

    return lifespan


def serve(factory: str, *, host: str, port: int, client_address: bool = True) -> None:
    """Run an app factory (``"module:create_app"``) behind a proxy that sets X-Forwarded-*.

    Only the proxies named by ``FORWARDED_ALLOW_IPS`` (uvicorn's own variable; default
    127.0.0.1, where nginx runs natively) may set the client address: the access rules and
    per-client limits depend on it. Compose sets it to ``*``: there only the network's nginx
    reaches the services. A service that never reads the client address passes
    ``client_address=False``: no proxy-headers middleware then runs (and stays alive, a
    coroutine frame per open connection) in front of it."""
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        proxy_headers=client_address,
        timeout_graceful_shutdown=5,
    )
