"""The cluster scenario's second stack: chatrelay (gateway, web, nginx, as ``make dev`` runs
them) on a local Redis Cluster of 3 primaries + 3 replicas, reading the first stack's fake.

Its nodes persist as dev.py's Redis does (``appendfsync always``), so the two sides differ
only in the Redis topology. Every node's CPU counts as Redis's (replicas included: they are
the price of a cluster that survives a primary); Redis's counters are read on the primaries
only, the servers the services talk to, as the single side's one server.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from scripts.redis_cluster import local_cluster

from .client import Endpoint
from .stack import GivenRedis, Stack, run_stack

__all__ = ["run_cluster_stack"]


@contextlib.contextmanager
def run_cluster_stack(
    run_dir: Path, models: list[str], fake: tuple[Endpoint, int]
) -> Iterator[Stack]:
    """``fake``: the running bench fake (endpoint, pid) the first stack reads."""
    # A fresh cluster each run: a node folder left from the last one (its nodes.conf) would
    # make `redis-cli --cluster create` refuse a node that is not empty.
    nodes_dir = run_dir / "redis-cluster"
    shutil.rmtree(nodes_dir, ignore_errors=True)
    with local_cluster(nodes_dir) as cluster:
        redis = GivenRedis(
            cluster.url,
            pids=[node.process.pid for node in cluster.nodes],
            ports=[node.port for node in cluster.primaries()],
        )
        with run_stack(run_dir, models, redis=redis, fake=fake, relay=False) as stack:
            yield stack
