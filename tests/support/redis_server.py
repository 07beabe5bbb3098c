"""A real Redis for the tests: a testcontainers container where a Docker engine answers and
the image is present locally, else a local ``redis-server`` on a free port."""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from chatrelay_common import open_redis
from redis.asyncio import Redis

from scripts.processes import free_port, start_redis, wait_for_port

# free_port and wait_for_port: many tests take them from here.
__all__ = ["free_port", "open_plain_redis", "redis_source", "redis_url", "wait_for_port"]


@contextlib.asynccontextmanager
async def open_plain_redis(url: str, **options: Any) -> AsyncIterator[Redis]:
    """``open_redis`` of one Redis (not a cluster), typed as such."""
    async with open_redis(url, **options) as client:
        assert isinstance(client, Redis)
        yield client


# Nothing is pulled (there may be no registry): the image must already be on the engine, e.g.
# the Debian stand-in that `make images` builds and names in REDIS_IMAGE.
REDIS_IMAGE = os.environ.get("REDIS_IMAGE", "redis:7-alpine")


def _engine_has_image() -> bool:
    """True when a Docker engine answers and holds the Redis image (nothing can be pulled)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not os.path.exists(host.removeprefix("unix://")):
        return False
    import docker

    # docker-py leaks its socket when the engine does not answer; that is not our leak.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env()
        except Exception:  # no engine answers: the local server serves
            gc.collect()
            return False
    try:
        client.images.get(REDIS_IMAGE)
    except Exception:  # no such image, and nothing can be pulled
        return False
    finally:
        client.close()
    return True


@contextlib.contextmanager
def _container() -> Iterator[str]:
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.community.redis import RedisContainer

    with RedisContainer(REDIS_IMAGE) as container:
        host = container.get_container_host_ip()
        yield f"redis://{host}:{container.get_exposed_port(6379)}/0"


@contextlib.contextmanager
def _local_server() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="chatrelay-redis-") as workdir:
        server = start_redis(Path(workdir), port)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.stop()


def redis_source() -> str:
    if _engine_has_image():
        return f"testcontainers, image {REDIS_IMAGE}"
    return "a local redis-server (no Docker engine holding the image)"


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    with _container() if _engine_has_image() else _local_server() as url:
        yield url
