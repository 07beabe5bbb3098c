"""The cluster tests' stack, one per test module (a module that kills or migrates leaves nothing
behind for the next): a local Redis Cluster of 3 primaries and 3 replicas, the fake upstream,
2 gateways and 2 web processes on the cluster. ``redis-server`` and ``redis-cli`` must be
installed (scripts/system-deps.sh): without them the tests fail, they are never skipped.

A module sets how fast the fake's ``slow`` reply streams by overriding ``slow_delay``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from chatrelay_common import SessionKeys

from scripts.redis_cluster import ClusterNode, LocalCluster, local_cluster
from tests.conftest import keyed_gateway_env
from tests.support.api import create_session
from tests.support.fake_upstream import SLOW_DELAY, FakeUpstream
from tests.support.services import Service, run_service

GATEWAYS = 2
WEBS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("redis-cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def slow_delay() -> float:
    """Seconds between the ``slow`` reply's 200 tokens."""
    return SLOW_DELAY


@pytest.fixture(scope="module")
def upstream(slow_delay: float) -> Iterator[FakeUpstream]:
    with FakeUpstream(slow_delay=slow_delay) as fake:
        yield fake


@pytest.fixture(scope="module")
def cluster_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster-service-logs")


@pytest.fixture(scope="module")
def gateways(
    cluster: LocalCluster, upstream: FakeUpstream, cluster_logs: Path
) -> Iterator[list[Service]]:
    env = keyed_gateway_env(cluster.url, upstream.base_url, OPENAI_MODEL="slow")
    with ExitStack() as stack:
        yield [
            stack.enter_context(run_service("gateway", env, cluster_logs)) for _ in range(GATEWAYS)
        ]


@pytest.fixture(scope="module")
def webs(cluster: LocalCluster, cluster_logs: Path) -> Iterator[list[Service]]:
    env = {"REDIS_URL": cluster.url, "WEB_HEARTBEAT_SECONDS": "1"}
    with ExitStack() as stack:
        yield [stack.enter_context(run_service("web", env, cluster_logs)) for _ in range(WEBS)]


async def sessions_on_every_primary(
    client: httpx.AsyncClient,
    cluster: LocalCluster,
    gateways: list[Service],
    per_primary: int,
    *,
    model: str = "slow",
) -> dict[ClusterNode, list[str]]:
    """New sessions, created over the gateways in turn, until every primary holds
    ``per_primary`` of them (by the slot of the session's hash tag); the extra ones made on the
    way are left alone."""
    primaries = cluster.primaries()
    placed: dict[ClusterNode, list[str]] = {primary: [] for primary in primaries}
    for attempt in range(per_primary * len(primaries) * 20):
        if all(len(ids) >= per_primary for ids in placed.values()):
            return placed
        gateway = gateways[attempt % len(gateways)]
        session_id = await create_session(client, gateway.url, model=model)
        owner = cluster.primary_of_key(SessionKeys(session_id).session)
        if len(placed[owner]) < per_primary:
            placed[owner].append(session_id)
    raise AssertionError(f"sessions did not spread over every primary: {placed}")
