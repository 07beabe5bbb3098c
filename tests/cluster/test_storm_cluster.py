"""The reconnect storm of the hardening issue (tests/chaos/test_reconnect_storm.py), run on the
Redis Cluster with its sessions over all 3 primaries, 2 gateways and 2 web processes: every tab
loses nothing and sees nothing twice, none is stuck, and afterwards no web process holds a
sharded subscription on any node."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from chatrelay_common import SessionKeys

from scripts.redis_cluster import LocalCluster
from tests.chaos.test_reconnect_storm import TOKEN_DELAY, StormSize, run_storm
from tests.support.services import Service

# The single-node storm's size (50 sessions, 5 tabs each, 10,000 cuts and late tabs): the
# cluster run is held to the same.
SIZE = StormSize()


@pytest.fixture(scope="module")
def slow_delay() -> float:
    return TOKEN_DELAY


def _shard_subscriptions(cluster: LocalCluster, channels: list[str]) -> int:
    """Sharded subscriptions to ``channels`` on every node: each lives on one node only."""
    total = 0
    for node in cluster.live_nodes():
        reply = node.command("PUBSUB", "SHARDNUMSUB", *channels)
        assert isinstance(reply, list)
        total += sum(int(count) for count in reply[1::2])
    return total


async def test_a_reconnect_storm_on_the_cluster_loses_and_duplicates_nothing(
    cluster: LocalCluster, gateways: list[Service], webs: list[Service]
) -> None:
    async def subscribed(channels: list[str]) -> int:
        # The web processes leave a channel soon after its last tab: give them a moment.
        for _ in range(100):
            left = await asyncio.to_thread(_shard_subscriptions, cluster, channels)
            if left == 0:
                break
            await asyncio.sleep(0.1)
        return left

    sessions = await run_storm(gateways, webs, subscribed, SIZE)
    per_primary = Counter(cluster.primary_of_key(SessionKeys(s).session) for s in sessions)
    print(f"sessions per primary: {[per_primary[p] for p in cluster.primaries()]}")
    assert len(per_primary) == 3
