"""The one way both services open Redis: a lifespan-friendly async context manager.

``redis://…`` (or ``rediss://``, ``unix://``) is one Redis. ``redis+cluster://host:port,
host:port,…`` is a Redis Cluster reached through any of the nodes listed (``rediss+cluster``
with TLS): both services then use redis-py's cluster client, and a pub/sub reader opens its
own connection per node (:func:`node_client`), since that client has no pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, NodesManager
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import PRIMARY, REPLICA
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "CLUSTER_SCHEMES",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "AnyRedis",
    "is_cluster_url",
    "node_client",
    "open_pubsub",
    "open_redis",
]

# Either client: the store and the services take both.
AnyRedis = Redis | RedisCluster
# The URL schemes of a Redis Cluster (``REDIS_URL``), each with the scheme of its nodes.
CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

DEFAULT_SOCKET_TIMEOUT: Final = 5.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
# A command failing on a broken connection or a timeout is sent again after 0.05, 0.1, 0.2
# and 0.4 s (with jitter): a blip of under a second is ridden out. Every write script is safe
# to run twice (see _store.py), since a command whose answer was lost may have run.
_RETRIES: Final = 4
_BACKOFF: Final = ExponentialWithJitterBackoff(base=0.05, cap=0.5)
# A pub/sub connection has no read timeout (it is idle between messages), so TCP keepalive
# is what notices a peer that vanished: probes after 10 s idle, every 5 s, 3 of them.
_KEEPALIVE: Final = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


class _CancelSafeWrites(AbstractConnection):
    """redis-py bounds a socket write with ``asyncio.wait_for``, which on Python 3.11 drops a
    cancellation that arrives as the write completes: the cancelled task runs on (a reply's
    keepalive that never stops). ``asyncio.timeout`` has no such race."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout, self.socket_timeout = self.socket_timeout, None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


def _cancel_safe(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    name = f"CancelSafe{connection_class.__name__}"
    return type(name, (_CancelSafeWrites, connection_class), {})


class _NodesManager(NodesManager):
    """redis-py 7.4 builds new node objects each time it reads the slot map, routes through
    them, but keeps the old ones (with their old roles) as its nodes: a promoted replica then
    stays typed "replica", so SCRIPT LOAD to "the primaries" never reaches it (its sessions
    answer NOSCRIPT for good), and the connections of the routed objects are never closed
    (``aclose`` closes the kept ones). Route through the kept objects, with the roles the map
    just gave them."""

    __slots__ = ()

    async def initialize(self) -> None:
        await super().initialize()
        shared: dict[int, list[ClusterNode]] = {}  # a range of slots shares one list
        for slot, nodes in self.slots_cache.items():
            kept = shared.get(id(nodes))
            if kept is None:
                kept = shared[id(nodes)] = [self.nodes_cache.get(n.name, n) for n in nodes]
                for at, node in enumerate(kept):
                    node.server_type = PRIMARY if at == 0 else REPLICA
            self.slots_cache[slot] = kept


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def _cluster_nodes(url: str) -> tuple[list[ClusterNode], dict[str, Any]]:
    """The startup nodes of a ``redis+cluster://[user:password@]host:port,host:port`` URL,
    and the options (credentials, TLS) every node connection takes."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    if parts.username:
        options["username"] = parts.username
    if parts.password:
        options["password"] = parts.password
    if CLUSTER_SCHEMES[parts.scheme] == "rediss":
        options["ssl"] = True
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for address in hosts.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a cluster node must be host:port, not {address!r}")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    return nodes, options


def _options(retry: bool, socket_timeout: float, connect_timeout: float) -> dict[str, Any]:
    """Connection options of a client, or of a pub/sub connection (``retry=False``)."""
    return {
        "health_check_interval": 30,
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout if retry else None,
        "socket_keepalive": True,
        "socket_keepalive_options": _KEEPALIVE,
        "retry": Retry(_BACKOFF, _RETRIES) if retry else Retry(NoBackoff(), 0),
    }


def node_client(cluster: RedisCluster, host: str, port: int) -> Redis:
    """A plain client of one node of ``cluster``, with its credentials and TLS, for a pub/sub
    connection: no retries and no read timeout, as ``open_redis(retry=False)``. The caller
    closes it."""
    kwargs = cluster.nodes_manager.connection_kwargs
    shared = {
        name: kwargs[name]
        for name in ("username", "password", "socket_connect_timeout")
        if kwargs.get(name) is not None
    }
    tls = kwargs.get("connection_class") is not None and issubclass(
        kwargs["connection_class"], SSLConnection
    )
    options = _options(False, 0.0, shared.pop("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    client = Redis(host=host, port=port, ssl=tls, **shared, **options)
    _make_cancel_safe(client)
    return client


@asynccontextmanager
async def open_pubsub(redis: AnyRedis, **options: Any) -> AsyncIterator[PubSub]:
    """A pub/sub connection for plain (not sharded) channels: the client's own, or on a
    cluster one to a node picked at random, since a plain PUBLISH reaches every node."""
    async with contextlib.AsyncExitStack() as opened:
        if isinstance(redis, RedisCluster):
            await redis.initialize()
            node = random.choice(redis.get_primaries())
            client = node_client(redis, node.host, int(node.port))
            opened.push_async_callback(client.aclose)
        else:
            client = redis
        pubsub = client.pubsub(**options)
        try:
            yield pubsub
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _make_cancel_safe(client: Redis) -> None:
    pool: Any = client.connection_pool
    pool.connection_class = _cancel_safe(pool.connection_class)


@asynccontextmanager
async def open_redis(
    url: str,
    *,
    retry: bool = True,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[AnyRedis]:
    """A client returning bytes; connecting is lazy, so a service starts while Redis is down
    (``/readyz`` reports it). Commands time out after ``socket_timeout`` and are retried
    briefly with backoff. A ``redis+cluster://`` URL gives a cluster client.

    ``retry=False`` is for a long-lived pub/sub connection: a broken connection surfaces at
    once (a pub/sub reader must know, since a silent reconnect would skip what was published
    meanwhile), and reads have no timeout, so an idle subscription stays up.
    """
    options = _options(retry, socket_timeout, connect_timeout)
    client: AnyRedis
    if is_cluster_url(url):
        nodes, credentials = _cluster_nodes(url)
        tls = credentials.pop("ssl", False)
        client = RedisCluster(startup_nodes=nodes, ssl=tls, **credentials, **options)
        # RedisCluster makes its node manager itself: only its class can be swapped.
        client.nodes_manager.__class__ = _NodesManager
        # The nodes it discovers are made with these (the startup nodes only find them).
        client.nodes_manager.connection_kwargs["connection_class"] = _cancel_safe(
            SSLConnection if tls else Connection
        )
    else:
        client = Redis.from_url(url, **options)
        _make_cancel_safe(client)
    try:
        yield client
    finally:
        await client.aclose()
