"""A local Redis Cluster (3 primaries, 3 replicas) per test module, torn down after it: a
module that kills or migrates leaves nothing behind for the next. ``redis-server`` and
``redis-cli`` must be installed (scripts/system-deps.sh): without them the tests fail, they
are never skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.redis_cluster import LocalCluster, local_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("redis-cluster")) as running:
        yield running
