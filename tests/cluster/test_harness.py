"""The local cluster itself (scripts/redis_cluster.py), before any product test relies on it:
it comes up with its slots spread over 3 primaries, a killed primary fails over to its
replica, a restarted node rejoins, a slot moves with its keys."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import MovedError

from scripts.redis_cluster import SLOTS, ClusterNode, LocalCluster

FAILOVER_TIMEOUT = 15.0


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[redis.RedisCluster]:
    """redis-py's own cluster client, from the cluster's URL: an outside view of the slots."""
    first = cluster.url.removeprefix("redis+cluster://").split(",")[0]
    host, port = first.split(":")
    with redis.RedisCluster(host=host, port=int(port), decode_responses=True) as client:
        yield client


def _owns(node: ClusterNode, key: str) -> bool:
    """The node serves ``key`` itself (a node that does not own its slot answers MOVED)."""
    try:
        node.command("GET", key)
    except MovedError:
        return False
    return True


def test_three_primaries_share_every_slot_each_with_a_synced_replica(
    cluster: LocalCluster, client: redis.RedisCluster
) -> None:
    primaries = cluster.primaries()
    assert len(primaries) == 3
    assert len(cluster.nodes) == 6
    assert cluster.url == "redis+cluster://" + ",".join(p.address for p in primaries)
    owners = cluster.slot_map()
    assert sorted(owners) == list(range(SLOTS))
    assert {owners[s] for s in owners} == {p.node_id for p in primaries}
    for primary in primaries:
        assert primary.role == "primary"
        (replica,) = cluster.replicas_of(primary)
        assert replica.role == "replica"
    # The launcher's idea of who owns a key is redis-py's: each answers only for its own.
    for key in ("{a}", "{b}", "{c}", "{session-1}:log", "{session-2}:log"):
        client.set(key, "x")
        owner = cluster.primary_of_key(key)
        assert [p for p in primaries if _owns(p, key)] == [owner]


def test_a_killed_primary_fails_over_to_its_replica_and_rejoins_when_restarted(
    cluster: LocalCluster, client: redis.RedisCluster
) -> None:
    key = "{failover}:k"
    client.set(key, "kept")
    doomed = cluster.primary_of_key(key)
    (replica,) = cluster.replicas_of(doomed)
    # Replicated before the kill (replication is asynchronous): the value must survive.
    assert doomed.command("WAIT", 1, 5000) == 1

    cluster.kill(doomed)
    promoted, seconds = cluster.wait_for_failover(doomed, timeout=FAILOVER_TIMEOUT)
    print(f"\nfailover: {replica} took over from {doomed} in {seconds:.2f} s")
    assert promoted is replica
    assert seconds < FAILOVER_TIMEOUT
    assert promoted.role == "primary"
    assert cluster.primary_of_key(key) is promoted
    assert promoted.command("GET", key) == "kept"
    assert doomed not in cluster.primaries()

    started = time.monotonic()
    cluster.restart(doomed)
    print(f"restart: {doomed} rejoined in {time.monotonic() - started:.2f} s")
    assert doomed.role == "replica"
    assert cluster.replicas_of(promoted) == [doomed]
    assert len(cluster.primaries()) == 3
    with redis.Redis(port=doomed.port, decode_responses=True) as direct:
        direct.execute_command("READONLY")  # a replica's reads: it holds the data again
        assert direct.get(key) == "kept"


# In batches (150 keys: more than one MIGRATE), and one key at a time with a pause.
@pytest.mark.parametrize(("key_count", "pause"), [(150, 0.0), (20, 0.05)])
def test_a_slot_moves_to_another_primary_with_its_keys(
    cluster: LocalCluster, client: redis.RedisCluster, key_count: int, pause: float
) -> None:
    tag = f"{{moving-{pause}}}"
    keys = {f"{tag}:{n}": str(n) for n in range(key_count)}
    for key, value in keys.items():
        client.set(key, value)
    slot = key_slot(tag.encode())
    source = cluster.primary_of_slot(slot)
    target = next(p for p in cluster.primaries() if p is not source)

    started = time.monotonic()
    cluster.migrate_slot(slot, target, pause_between_keys=pause)
    print(f"\nslot {slot}: {len(keys)} keys moved in {time.monotonic() - started:.2f} s")

    assert cluster.primary_of_slot(slot) is target
    assert all(_owns(target, key) and not _owns(source, key) for key in keys)
    assert {key: target.command("GET", key) for key in keys} == keys
    assert source.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    # Every primary, not only the two involved, sends clients to the new owner.
    for primary in cluster.primaries():
        if primary is not target:
            assert not _owns(primary, next(iter(keys)))
    client.set(f"{tag}:new", "after")  # the client follows the move
    assert target.command("GET", f"{tag}:new") == "after"
