"""The bench's cluster scenario: its stack (chatrelay on a real local cluster), Redis counters
added up over the cluster's primaries, the two sides and their ratios, the table and the plot,
and the scenario list."""

from __future__ import annotations

import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from bench.client import Endpoint, JobKind
from bench.cluster import run_cluster_stack
from bench.procs import redis_counts, summed_counts
from bench.report import SIDES, Side, cluster_comparison, cluster_text, plot_cluster
from bench.run import FAST_REPLY, REPLY, Scenario, cluster_scenarios, run_scenario, scenarios
from scripts.processes import free_port, start, wait_for_port
from scripts.redis_cluster import LocalCluster, local_cluster


def command(port: int, *args: str) -> bytes:
    """One command on a raw connection of its own: nothing else (no client's handshake) runs
    on the server, so its counters move by exactly what the test sends."""
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(4096)
    return reply


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def key_on(cluster: LocalCluster, port: int, prefix: str) -> str:
    """A key whose slot the primary on ``port`` owns."""
    owners = cluster.slot_map()
    wanted = next(node.node_id for node in cluster.nodes if node.port == port)
    return next(
        key
        for key in (f"{prefix}{i}" for i in range(10_000))
        if owners[key_slot(key.encode())] == wanted
    )


def test_counts_add_up_over_the_primaries_of_a_real_cluster(cluster: LocalCluster) -> None:
    ports = [node.port for node in cluster.primaries()]
    assert len(ports) == 3
    # Keys first: finding them asks the cluster (CLUSTER NODES), which would count too.
    plain = [key_on(cluster, port, "plain") for port in ports]
    scripted = key_on(cluster, ports[-1], "script")
    before = [redis_counts(port) for port in ports]
    # On primary i: i + 1 SETs, and on the last one an EVAL that calls SET once more.
    for i, port in enumerate(ports):
        for n in range(i + 1):
            assert command(port, "SET", plain[i], str(n)) == b"+OK\r\n"
    script = "return redis.call('SET', KEYS[1], 'x')"
    assert command(ports[-1], "EVAL", script, "1", scripted) == b"+OK\r\n"
    after = [redis_counts(port) for port in ports]
    moved = summed_counts(
        [{name: a[name] - b.get(name, 0) for name in a} for b, a in zip(before, after, strict=True)]
    )
    assert moved["cmd:set"] == 1 + 2 + 3 + 1
    assert (moved["cmd:eval"], moved["scripts"]) == (1, 1)
    assert moved["commands"] == 6 + 1 + 1  # the SET inside the script counts too
    # Redis counts a read per socket read, the one that finds the connection closed too:
    # 2 per command here (each on its own connection), and on each server 3 of the readings
    # (the first one's INFO commandstats and close, the second one's INFO stats).
    assert moved["reads"] == 2 * 7 + 3 * len(ports)


def test_the_cluster_stack_serves_a_small_load_from_every_primary(tmp_path: Path) -> None:
    port = free_port()
    fake = start("the bench fake", [sys.executable, "-m", "bench.fake", "--port", str(port)])
    try:
        wait_for_port(port, 30, fake)
        upstream = (Endpoint("127.0.0.1", port, tls=False), fake.pid)
        with run_cluster_stack(tmp_path, [REPLY], upstream) as stack:
            # Every node's CPU counts as Redis's, the counters are read on the primaries.
            titles = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in stack.pids["redis"]}
            assert len(titles) == 6
            assert all(b"redis-server" in t and b"[cluster]" in t for t in titles.values())
            assert len(stack.redis_ports) == 3
            assert {f"127.0.0.1:{p}".encode() for p in stack.redis_ports} <= {
                t.split(b" ")[1] for t in titles.values()
            }
            assert stack.pids["fake"] == [fake.pid]
            assert stack.relay_edge is None
            sc = Scenario("cluster 12x2 3 primaries", JobKind.CHAT, 12, 2, side="cluster")
            # The load client's workers (forked: they inherit the filters) leave transports
            # they closed to finish as their event loop ends, which uvloop reports as a
            # ResourceWarning; under filterwarnings = error that breaks the loop's close.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                result = run_scenario(sc, stack)
            stack_pids = dict(stack.pids)
    finally:
        fake.stop()
    assert (result["received"], result["lost"], result["duplicated"], result["id_gaps"]) == (
        12 * 2 * 200,
        0,
        0,
        0,
    )
    assert result["processes"] == {role: len(pids) for role, pids in stack_pids.items()}
    assert result["redis_servers"] == 3
    per_primary = result["redis_scripts_per_server"]
    assert sum(per_primary) == result["redis"]["scripts"]
    print(f"script calls per primary: {per_primary}")
    # 12 sessions; all on one primary would be 3 * (1/3)^12: a near-certain spread.
    assert sum(1 for calls in per_primary if calls) >= 2
    assert result["cpu_ms_per_upstream_token"]["redis"] > 0


def test_summed_counts_keep_names_only_one_server_has() -> None:
    assert summed_counts([{"scripts": 2, "cmd:evalsha": 2}, {"scripts": 1, "cmd:get": 4}]) == {
        "scripts": 3,
        "cmd:evalsha": 2,
        "cmd:get": 4,
    }
    assert summed_counts([]) == {}


def test_the_cluster_scenario_is_each_load_on_both_sides() -> None:
    full, smoke = cluster_scenarios(smoke=False), cluster_scenarios(smoke=True)
    assert [(sc.name, sc.side, sc.model) for sc in full] == [
        ("cluster 60x3 1 node", "single", REPLY),
        ("cluster 60x3 3 primaries", "cluster", REPLY),
        ("cluster 60x3 fast 1 node", "single", FAST_REPLY),
        ("cluster 60x3 fast 3 primaries", "cluster", FAST_REPLY),
    ]
    assert [(sc.name, sc.side, sc.model) for sc in smoke] == [
        ("cluster 12x2 1 node", "single", REPLY),
        ("cluster 12x2 3 primaries", "cluster", REPLY),
    ]
    for pair, count, tabs in ((full, 60, 3), (smoke, 12, 2)):
        assert {(sc.kind, sc.count, sc.tabs) for sc in pair} == {(JobKind.CHAT, count, tabs)}
    # `python -m bench.run --only cluster` picks them all, and nothing else.
    for smoke_mode, pair in ((False, full), (True, smoke)):
        every = [*scenarios(smoke_mode), *pair]
        assert [sc for sc in every if "cluster" in sc.name] == pair


def side(name: str, which: Side, **figures: Any) -> dict[str, Any]:
    """A result as run.py writes it, with the figures the comparison reads."""
    base: dict[str, Any] = {
        "name": name,
        "side": which,
        "pair": name.removesuffix(f" {SIDES[which]}"),
        "replies": 60,
        "tabs": 3,
        "processes": {"redis": 1},
        "deliveries_per_s": 10_000.0,
        "cpu_ms_per_upstream_token": {"gateway": 0.1, "web": 0.2, "redis": 0.05, "nginx": 0.3},
        "redis_per_upstream_token": {"reads": 0.15, "scripts": 0.1, "commands": 1.0},
        "wall_s": 2.5,
        "latency_ms": {"p99": 20.0},
        "cdf_ms": [1.0, 2.0, 20.0],
        "lost": 0,
        "duplicated": 0,
        "id_gaps": 0,
    }
    return base | figures


SINGLE = side("cluster 60x3 1 node", "single")
CLUSTER = side(
    "cluster 60x3 3 primaries",
    "cluster",
    processes={"redis": 6},
    deliveries_per_s=8_000.0,
    cpu_ms_per_upstream_token={"gateway": 0.15, "web": 0.25, "redis": 0.2, "nginx": 0.3},
    wall_s=3.0,
    latency_ms={"p99": 30.0},
    redis_scripts_per_server=[40, 45, 35],
)
FAST_SINGLE = side("cluster 60x3 fast 1 node", "single", deliveries_per_s=30_000.0)
FAST_CLUSTER = side("cluster 60x3 fast 3 primaries", "cluster", deliveries_per_s=15_000.0)


def test_the_comparison_puts_both_sides_and_the_cluster_over_single_ratio() -> None:
    other = {"name": "chatrelay 10x1", "kind": "chat"}
    results = [other, SINGLE, CLUSTER, FAST_SINGLE, FAST_CLUSTER]
    paced, fast = cluster_comparison(results)
    assert (paced["load"], fast["load"]) == ("cluster 60x3", "cluster 60x3 fast")
    assert paced["single"]["gateway_web_cpu_ms"] == pytest.approx(0.3)
    assert paced["cluster"]["gateway_web_cpu_ms"] == pytest.approx(0.4)
    assert (paced["single"]["redis_processes"], paced["cluster"]["redis_processes"]) == (1, 6)
    assert paced["ratio"] == pytest.approx(
        {
            "deliveries_per_s": 0.8,
            "gateway_web_cpu_ms": 0.4 / 0.3,
            "redis_cpu_ms": 4.0,
            "wall_s": 1.2,
            "p99_ms": 1.5,
        }
    )
    assert fast["ratio"]["deliveries_per_s"] == pytest.approx(0.5)
    # A load run on one side alone (e.g. --only "1 node") is no comparison.
    assert cluster_comparison([other, SINGLE, FAST_CLUSTER]) == []


def test_the_comparison_table_shows_each_side_and_the_ratios() -> None:
    lines = cluster_text(cluster_comparison([SINGLE, CLUSTER])).splitlines()
    assert lines[2] == (
        "| cluster 60x3 1 node | 1 | 10000 | 0.300 (0.100, 0.200) | 0.050 | 0.15 | 2.50 "
        "| 20.0 | 0 / 0 |"
    )
    assert lines[3].startswith("| cluster 60x3 3 primaries | 6 | 8000 | 0.400 (0.150, 0.250)")
    assert lines[4] == (
        "| cluster 60x3: cluster / single | | 0.80x | 1.33x | 4.00x | | 1.20x | 1.50x | |"
    )
    assert lines[-1] == "- cluster 60x3: script calls per primary [40, 45, 35]"


def test_the_plot_is_a_png_copied_to_latest(tmp_path: Path) -> None:
    results = [SINGLE, CLUSTER, FAST_SINGLE, FAST_CLUSTER]
    path = plot_cluster(tmp_path, "STAMP", results, "latest")
    assert path == tmp_path / "STAMP-cluster.png"
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000
    assert (tmp_path / "latest-cluster.png").read_bytes() == data
