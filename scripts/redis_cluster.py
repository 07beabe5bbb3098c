"""A local Redis Cluster of ``redis-server`` processes, for the cluster tests and the bench.

:func:`local_cluster` starts ``primaries * (1 + replicas)`` nodes, each in its own folder under
a work folder (its ``nodes.conf``, append-only file and ``redis.log``), joins them with
``redis-cli --cluster create``, and returns once every node says ``cluster_state:ok`` and all
agree on who owns every slot. :class:`LocalCluster` then kills, restarts and fails over nodes
and migrates slots, each step waited for until the whole cluster agrees again.

Everything here is synchronous and blocking (a few seconds at most per call): an asyncio test
calls it through ``asyncio.to_thread`` so its own streams keep reading meanwhile.

CLI: ``python -m scripts.redis_cluster up DIR`` prints the ``REDIS_URL`` and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import redis
from redis.crc import key_slot

from scripts.processes import (
    Process,
    StartError,
    free_port,
    require_tool,
    start_redis,
    wait_until,
)

__all__ = ["ClusterNode", "LocalCluster", "SlotMap", "local_cluster"]

HOST = "127.0.0.1"
SLOTS = 16384
URL_SCHEME = "redis+cluster://"
# Keys moved per MIGRATE when nothing asks to go slowly.
MIGRATE_BATCH = 100
MIGRATE_TIMEOUT_MS = 5000
# How long the whole cluster may take to agree after a change it makes itself (create,
# restart, migration): generous, as other tests share the 2 cores.
AGREE_TIMEOUT = 30.0
STOP_GRACE_SECONDS = 5.0

# slot -> node id of its primary
SlotMap = dict[int, str]


@dataclass(eq=False)
class ClusterNode:
    """One ``redis-server`` of the cluster: its ports and id stay the same across restarts
    (``nodes.conf`` in its folder keeps the id); its role is read live."""

    port: int
    bus_port: int
    workdir: Path
    process: Process
    node_id: str = ""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def running(self) -> bool:
        return self.process.running()

    @property
    def role(self) -> Literal["primary", "replica", "down"]:
        """What the node says it is now (``ROLE``), or ``down`` when it does not answer."""
        try:
            reply = self.command("ROLE")
        except redis.RedisError:
            return "down"
        assert isinstance(reply, list)
        return "primary" if reply[0] == "master" else "replica"

    def command(self, *args: str | int) -> object:
        """One command on a connection of its own (closed again: nothing leaks)."""
        with redis.Redis(
            host=HOST, port=self.port, decode_responses=True, socket_timeout=5.0
        ) as client:
            return client.execute_command(*args)

    def __repr__(self) -> str:
        return f"ClusterNode({self.address}, {self.node_id[:8]})"


@dataclass(frozen=True)
class _NodeLine:
    """One line of ``CLUSTER NODES``, as one node sees another."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[int, ...]

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})


def _parse_nodes(text: str) -> list[_NodeLine]:
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # id ip:port@cport[,hostname] flags primary ping pong epoch link slot...
        fields = line.split(" ")
        node_id, address, flags, primary = fields[:4]
        port = int(address.split("@", 1)[0].rsplit(":", 1)[1])
        slots: list[int] = []
        for entry in fields[8:]:
            if entry.startswith("["):  # a migration in progress, not an owned slot
                continue
            first, _, last = entry.partition("-")
            slots.extend(range(int(first), int(last or first) + 1))
        lines.append(
            _NodeLine(
                node_id,
                port,
                frozenset(flags.split(",")),
                None if primary == "-" else primary,
                tuple(slots),
            )
        )
    return lines


def _parse_info(text: str) -> dict[str, str]:
    return dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
    )


@dataclass
class LocalCluster:
    """The running cluster. ``url`` names the primaries at start (any node would serve as a
    startup node); ``nodes`` are all its nodes, primaries and replicas."""

    workdir: Path
    node_timeout_ms: int
    appendfsync: Literal["always", "everysec"] | None
    nodes: list[ClusterNode] = field(default_factory=list)
    url: str = ""
    _killed: dict[int, tuple[float, tuple[int, ...]]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- reading the cluster's state --------------------------------------------------------

    def live_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running()]

    def node_by_id(self, node_id: str) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} in this cluster")

    def _view(self) -> list[_NodeLine]:
        """``CLUSTER NODES`` as the first live node that answers sees it."""
        errors = []
        for node in self.live_nodes():
            try:
                return _parse_nodes(str(node.command("CLUSTER", "NODES")))
            except redis.RedisError as error:
                errors.append(f"{node.address}: {error}")
        raise StartError(f"no node of the cluster answers: {errors}")

    def slot_map(self) -> SlotMap:
        return {slot: line.node_id for line in self._view() for slot in line.slots}

    def primaries(self) -> list[ClusterNode]:
        """The primaries that own slots now, in port order."""
        owners = {line.node_id for line in self._view() if "master" in line.flags and line.slots}
        return sorted((self.node_by_id(i) for i in owners), key=lambda node: node.port)

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        return [
            self.node_by_id(line.node_id)
            for line in self._view()
            if line.primary_id == primary.node_id
        ]

    def primary_of_slot(self, slot: int) -> ClusterNode:
        return self.node_by_id(self.slot_map()[slot])

    def primary_of_key(self, key: str) -> ClusterNode:
        return self.primary_of_slot(key_slot(key.encode()))

    def _disagreement(self) -> str | None:
        """Why the live nodes do not agree yet (None: they do). Agreeing means: every live
        node says ``cluster_state:ok``, sees every slot owned by the same live primaries and
        every replica following the same primary as the others, and flags no live node as
        failing."""
        live = self.live_nodes()
        live_ids = {node.node_id for node in live}
        maps: dict[str, SlotMap] = {}
        followed: dict[str, dict[str, str | None]] = {}
        for node in live:
            try:
                info = _parse_info(str(node.command("CLUSTER", "INFO")))
                view = _parse_nodes(str(node.command("CLUSTER", "NODES")))
            except redis.RedisError as error:
                return f"{node.address} does not answer: {error}"
            if info.get("cluster_state") != "ok":
                return f"{node.address} says cluster_state:{info.get('cluster_state')}"
            failing = [line.port for line in view if line.node_id in live_ids and line.failing]
            if failing:
                return f"{node.address} flags live nodes {failing} as failing"
            maps[node.address] = {slot: line.node_id for line in view for slot in line.slots}
            followed[node.address] = {line.node_id: line.primary_id for line in view}
        first_address, first = next(iter(maps.items()))
        if len(first) != SLOTS:
            return f"{first_address} sees {len(first)} of {SLOTS} slots owned"
        if set(first.values()) - live_ids:
            return f"{first_address} sees slots owned by a node that is down"
        for address, slots in maps.items():
            if slots != first:
                return f"{address} and {first_address} disagree on the slots"
            if followed[address] != followed[first_address]:
                return f"{address} and {first_address} disagree on who replicates whom"
        return None

    def _unsynced_replica(self) -> str | None:
        """A live replica whose link to its primary is not up yet (it could not take over)."""
        for node in self.live_nodes():
            info = _parse_info(str(node.command("INFO", "replication")))
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return f"{node.address} has not synced with its primary yet"
        return None

    def wait_until_agreed(self, timeout: float = AGREE_TIMEOUT) -> None:
        """Until the live nodes agree and every live replica is in sync."""
        last: list[str | None] = [None]

        def agreed() -> bool:
            try:
                last[0] = self._disagreement() or self._unsynced_replica()
            except redis.RedisError as error:  # a node still loading or going down
                last[0] = str(error)
            return last[0] is None

        wait_until(
            "the cluster",
            agreed,
            timeout=timeout,
            check=self._check_running,
            hint=lambda: f": {last[0]}",
        )

    def _check_running(self) -> None:
        for node in self.nodes:
            if node.port not in self._killed:
                node.process.check_running()

    # -- changing it ------------------------------------------------------------------------

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL, as a crash. The node's slots and the moment are kept for
        :meth:`wait_for_failover`."""
        with self._lock:
            owned = tuple(s for s, owner in self.slot_map().items() if owner == node.node_id)
            node.process.kill()
            self._killed[node.port] = (time.monotonic(), owned)

    def restart(self, node: ClusterNode) -> None:
        """Start a killed (or stopped) node again on its ports, from its ``nodes.conf`` and
        append-only file; returns once the cluster agrees again and every replica synced (an
        old primary whose replica took over comes back as that replica's replica)."""
        if node.running():
            raise StartError(f"{node} is running already")
        node.process = _start_node(node.workdir, node.port, node.bus_port, self)
        self._killed.pop(node.port, None)
        self.wait_until_agreed()

    def wait_for_failover(
        self, dead: ClusterNode, timeout: float = 15.0
    ) -> tuple[ClusterNode, float]:
        """After :meth:`kill` of a primary: the replica that took over its slots, and the
        seconds from the kill until every live node agreed on it with ``cluster_state:ok``."""
        if dead.port not in self._killed:
            raise StartError(f"{dead} was not killed through this cluster")
        killed_at, owned = self._killed[dead.port]
        if not owned:
            raise StartError(f"{dead} owned no slots when it was killed: nothing fails over")
        remaining = timeout - (time.monotonic() - killed_at)
        self.wait_until_agreed(timeout=max(remaining, 0.1))
        seconds = time.monotonic() - killed_at
        return self.primary_of_slot(owned[0]), seconds

    def migrate_slot(self, slot: int, to: ClusterNode, *, pause_between_keys: float = 0.0) -> None:
        """Move ``slot`` and its keys to the primary ``to`` as ``redis-cli --cluster reshard``
        does: IMPORTING on the target, MIGRATING on the source, MIGRATE the keys (REPLACE),
        then SETSLOT NODE on the target, the source and every other primary. With
        ``pause_between_keys`` the keys go one at a time with that pause between them, so a
        client meets the slot half moved (``ASK`` redirects, ``TRYAGAIN`` for a script whose
        keys are split)."""
        source = self.primary_of_slot(slot)
        if source is to:
            raise StartError(f"slot {slot} is on {to} already")
        to.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", to.node_id)
        batch = 1 if pause_between_keys > 0 else MIGRATE_BATCH
        while keys := source.command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            assert isinstance(keys, list)
            source.command(
                "MIGRATE", HOST, to.port, "", 0, MIGRATE_TIMEOUT_MS, "REPLACE", "KEYS", *keys
            )
            if pause_between_keys > 0:
                time.sleep(pause_between_keys)
        # The target first: once the source lets go, the slot's new owner must know it is.
        for primary in [to, source, *(p for p in self.primaries() if p not in (to, source))]:
            primary.command("CLUSTER", "SETSLOT", slot, "NODE", to.node_id)
        wait_until(
            f"slot {slot} on {to}",
            lambda: self._disagreement() is None and self.primary_of_slot(slot) is to,
            timeout=AGREE_TIMEOUT,
            check=self._check_running,
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.process.stop(STOP_GRACE_SECONDS)


def _start_node(workdir: Path, port: int, bus_port: int, cluster: LocalCluster) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    return start_redis(
        workdir,
        port,
        appendfsync=cluster.appendfsync,
        extra_args=[
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(cluster.node_timeout_ms),
            "--cluster-port", str(bus_port),
            # A replica syncs at once: the default waits 5 s for more replicas to join.
            "--repl-diskless-sync-delay", "0",
        ],
    )  # fmt: skip


@contextlib.contextmanager
def local_cluster(
    workdir: Path,
    *,
    primaries: int = 3,
    replicas: int = 1,
    node_timeout_ms: int = 2000,
    appendfsync: Literal["always", "everysec"] | None = "always",
) -> Iterator[LocalCluster]:
    """A running cluster of ``primaries`` primaries with ``replicas`` replicas each, every node
    in ``workdir/node-PORT`` (kept afterwards, logs included); every node is stopped at the
    end. ``appendfsync`` as compose's Redis (``always``); None for no persistence."""
    redis_cli = require_tool("redis-cli")
    cluster = LocalCluster(workdir, node_timeout_ms, appendfsync)
    try:
        for _ in range(primaries * (1 + replicas)):
            port, bus_port = free_port(), free_port()
            node_dir = workdir / f"node-{port}"
            process = _start_node(node_dir, port, bus_port, cluster)
            cluster.nodes.append(ClusterNode(port, bus_port, node_dir, process))
        for node in cluster.nodes:
            node.node_id = str(node.command("CLUSTER", "MYID"))
        addresses = [node.address for node in cluster.nodes]
        replicas_option = ["--cluster-replicas", str(replicas), "--cluster-yes"]
        created = subprocess.run(
            [redis_cli, "--cluster", "create", *addresses, *replicas_option],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise StartError(
                f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}"
            )
        (workdir / "create.log").write_text(created.stdout + created.stderr)
        cluster.wait_until_agreed()
        cluster.url = URL_SCHEME + ",".join(p.address for p in cluster.primaries())
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.redis_cluster")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run a local cluster until Ctrl-C")
    up.add_argument("workdir", type=Path)
    up.add_argument("--primaries", type=int, default=3)
    up.add_argument("--replicas", type=int, default=1)
    up.add_argument("--node-timeout-ms", type=int, default=2000)
    args = parser.parse_args(argv)
    with local_cluster(
        args.workdir,
        primaries=args.primaries,
        replicas=args.replicas,
        node_timeout_ms=args.node_timeout_ms,
    ) as cluster:
        print(f"REDIS_URL={cluster.url}", flush=True)
        for node in cluster.nodes:
            print(f"  {node.address} {node.node_id} {node.role} ({node.workdir})", flush=True)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # so the stop runs on either
        signal.sigwait(stop_signals)


if __name__ == "__main__":
    main()
