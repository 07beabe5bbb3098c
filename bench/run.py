"""``make bench`` / ``make bench-smoke``: chatrelay against its baselines, on this machine.

    python -m bench.run           # the full run (a few minutes)
    python -m bench.run --smoke   # ~40 s; exit 1 only on a lost or duplicated token
    python -m bench.run --only cluster   # the cluster scenario alone (~45 s)

Starts the bench fake, chatrelay as ``make dev`` runs it, and a plain relay behind its own
nginx (``bench.stack``), and for the cluster scenario a second chatrelay on a local Redis
Cluster (``bench.cluster``); runs the scenarios one after another; prints a progress line per
scenario and a table; writes ``bench-results/<UTC time>.json`` (+ ``latest.json``) and PNG
plots there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import platform
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report
from .client import BARRIER_TIMEOUT, Endpoint, Job, JobKind, WorkerResult, http_request, run_worker
from .cluster import run_cluster_stack
from .procs import cpu_seconds, machine_busy_seconds, redis_counts, rss_kib, summed_counts
from .stack import ROOT, Stack, run_stack
from .tokens import model_name, parse_model

__all__ = [
    "Scenario",
    "cluster_scenarios",
    "lost_or_duplicated",
    "main",
    "median_round",
    "run_scenario",
    "scenarios",
]

REPLY = model_name(200, 10)  # 200 tokens, 10 ms apart: a 2 s answer at 100 tokens/s
FANOUT_REPLY = model_name(500, 10)  # 5 s at 100 tokens/s on one session
# 1,000 tokens 1 ms apart (1 s): ten times the usual pace. A stack that cannot keep up shows
# it as a wall time over the nominal 1 s, and fewer deliveries/s.
FAST_REPLY = model_name(1000, 1)
STREAMS_PER_WORKER = 100
MAX_WORKERS = 4


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: JobKind
    count: int  # replies (chat, direct, relay) or connections (fanout, idle)
    tabs: int = 1
    model: str = REPLY
    late_tabs: bool = False
    h2: bool = False
    # A side of the cluster comparison: its chatrelay runs on one Redis ("single", the main
    # stack) or on the local cluster ("cluster"); None: not compared, on the main stack.
    side: report.Side | None = None

    @property
    def streams(self) -> int:
        return self.count * self.tabs

    @property
    def workers(self) -> int:
        return min(MAX_WORKERS, max(1, math.ceil(self.streams / STREAMS_PER_WORKER)))


def cluster_scenarios(smoke: bool) -> list[Scenario]:
    """The cluster scenario (run after the others, on a stack of its own for its cluster
    side): the same load on one Redis and on the cluster, one right after the other in each
    round. Many sessions: each is one slot, so they spread over the 3 primaries. Twice: at
    the usual pace (what it costs), and ten times as fast (whether it keeps up). The smoke
    form is small and at the usual pace: it is there to catch a lost or duplicated token on
    the cluster."""
    count, tabs = (12, 2) if smoke else (60, 3)
    loads = [("", REPLY)] if smoke else [("", REPLY), (" fast", FAST_REPLY)]
    return [
        Scenario(
            f"cluster {count}x{tabs}{label} {report.SIDES[side]}",
            JobKind.CHAT,
            count,
            tabs,
            model=model,
            side=side,
        )
        for label, model in loads
        for side in report.SIDES
    ]


def scenarios(smoke: bool) -> list[Scenario]:
    # Idle first: the web's memory is measured before any fan-out has grown its heap.
    if smoke:
        return [
            Scenario("idle 300", JobKind.IDLE, 300),
            Scenario("direct 10", JobKind.DIRECT, 10),
            Scenario("relay 10", JobKind.RELAY, 10),
            Scenario("chatrelay 10x1", JobKind.CHAT, 10),
            Scenario("chatrelay 10x3", JobKind.CHAT, 10, tabs=3),
            Scenario("chatrelay 10x3 h2", JobKind.CHAT, 10, tabs=3, h2=True),
            Scenario("catch-up 10", JobKind.CHAT, 10, late_tabs=True),
            Scenario("fan-out 200", JobKind.FANOUT, 200, model=FANOUT_REPLY),
        ]
    found = [Scenario("idle 5000", JobKind.IDLE, 5000)]
    found += [Scenario(f"direct {c}", JobKind.DIRECT, c) for c in (1, 10, 100)]
    found += [Scenario(f"relay {c}", JobKind.RELAY, c) for c in (1, 10, 100)]
    found += [
        Scenario(f"chatrelay {c}x{tabs}", JobKind.CHAT, c, tabs=tabs)
        for c in (1, 10, 100)
        for tabs in (1, 3)
    ]
    found += [
        Scenario("chatrelay 100x3 h2", JobKind.CHAT, 100, tabs=3, h2=True),
        Scenario("catch-up 100", JobKind.CHAT, 100, late_tabs=True),
        Scenario("fan-out 1000", JobKind.FANOUT, 1000, model=FANOUT_REPLY),
        Scenario("fan-out 4000", JobKind.FANOUT, 4000, model=FANOUT_REPLY),
    ]
    return found


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _sample_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_seconds(pid) for pid in group) for role, group in pids.items()}


def _all_pids(stacks: list[Stack]) -> dict[str, list[int]]:
    """Every stack's processes by role, each pid once (the stacks share the fake)."""
    merged: dict[str, list[int]] = {}
    for stack in stacks:
        for role, group in stack.pids.items():
            merged.setdefault(role, [])
            merged[role] += [pid for pid in group if pid not in merged[role]]
    return merged


def _settle(pids: dict[str, list[int]]) -> None:
    """Wait (10 s at most) until the stack is quiet, e.g. done closing the last scenario's
    connections, so that work is not counted against the next one."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = sum(_sample_cpu(pids).values())
        time.sleep(0.3)
        if sum(_sample_cpu(pids).values()) - before < 0.03:
            return


class _HealthProbe:
    """GET /healthz on the web process every 20 ms from a thread, timing each answer: the
    web's event loop answers late when it stalls (a GC pause, a long fan-out write)."""

    def __init__(self, web: Endpoint) -> None:
        self._web = web
        self._stop = threading.Event()
        self.millis: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        while not self._stop.wait(0.02):
            began = time.monotonic()
            try:
                with socket.create_connection((self._web.host, self._web.port), 10) as sock:
                    sock.sendall(request)
                    while sock.recv(4096):
                        pass
            except OSError:
                continue
            self.millis.append((time.monotonic() - began) * 1000)

    def stop(self) -> dict[str, float | None]:
        self._stop.set()
        self._thread.join()
        ordered = sorted(self.millis)
        return {"p99": report.percentile(ordered, 0.99), "max": ordered[-1] if ordered else None}


def _post(endpoint: Endpoint, path: str, body: dict[str, Any], expect: int) -> bytes:
    status, answer = asyncio.run(http_request(endpoint, "POST", path, body))
    if status != expect:
        raise RuntimeError(f"POST {path}: {status} {answer[:300]!r}")
    return answer


def run_scenario(sc: Scenario, stack: Stack) -> dict[str, Any]:
    tokens, interval_ms = parse_model(sc.model) or (0, 0)
    nominal = tokens * interval_ms / 1000
    session_id = ""
    if sc.kind in (JobKind.FANOUT, JobKind.IDLE):
        import json

        created = _post(stack.gateway, "/api/sessions", {"model": sc.model}, 201)
        session_id = json.loads(created)["id"]
    endpoint = {
        JobKind.CHAT: stack.edge,
        JobKind.DIRECT: stack.fake,
        JobKind.RELAY: stack.relay_edge,
        JobKind.FANOUT: stack.web,
        JobKind.IDLE: stack.web,
    }[sc.kind]
    if endpoint is None:
        raise RuntimeError(f"{sc.name}: this stack runs no plain relay")
    jobs = [
        Job(
            sc.kind,
            endpoint,
            sc.model,
            count,
            api=stack.edge,
            tabs=sc.tabs,
            late_tabs=sc.late_tabs,
            h2=sc.h2,
            session_id=session_id,
            timeout=60 + 10 * nominal,
        )
        for count in _split(sc.count, sc.workers)
        if count
    ]
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(jobs) + 1)
    results_queue = context.Queue()
    web_pid = stack.pids["web"][0]
    rss_before = rss_kib(web_pid)
    workers = [
        context.Process(target=run_worker, args=(job, barrier, results_queue)) for job in jobs
    ]
    for worker in workers:
        worker.start()
    outcome: dict[str, Any] = {}
    probe: _HealthProbe | None = None
    try:
        barrier.wait(BARRIER_TIMEOUT)
        cpu_before = _sample_cpu(stack.pids)
        busy_before = machine_busy_seconds()
        counts_before = [redis_counts(port) for port in stack.redis_ports]
        started = time.monotonic()
        if sc.kind in (JobKind.FANOUT, JobKind.IDLE):
            probe = _HealthProbe(stack.web)
        if sc.kind is JobKind.FANOUT:
            _post(stack.gateway, f"/api/sessions/{session_id}/messages", {"content": "go"}, 202)
        if sc.kind is JobKind.IDLE:  # see _Worker.idle: half, pause, the rest, pause
            time.sleep(1.0)  # let the connections settle
            outcome["rss_half_kib"] = rss_kib(web_pid)
            barrier.wait(BARRIER_TIMEOUT)
            barrier.wait(BARRIER_TIMEOUT)
            time.sleep(1.0)
            outcome["rss_after_kib"] = rss_kib(web_pid)
            barrier.wait(BARRIER_TIMEOUT)
    except threading.BrokenBarrierError:
        pass  # a worker failed: its message is in the queue
    gathered: list[WorkerResult] = []
    failures: list[str] = []
    for _ in workers:
        try:
            item = results_queue.get(timeout=BARRIER_TIMEOUT + jobs[0].timeout)
        except queue.Empty:
            failures.append("a worker sent no result")
            continue
        (gathered.append(item) if isinstance(item, WorkerResult) else failures.append(item))
    for worker in workers:
        worker.join(30)
    if failures:
        raise RuntimeError(f"{sc.name}: " + "; ".join(failures))
    if probe is not None:
        outcome["healthz_ms"] = probe.stop()
    cpu_after = _sample_cpu(stack.pids)
    outcome["busy_s"] = machine_busy_seconds() - busy_before
    counts_after = [redis_counts(port) for port in stack.redis_ports]
    calls = [
        {name: after[name] - before.get(name, 0) for name in after}
        for before, after in zip(counts_before, counts_after, strict=True)
    ]
    result = _summarize(
        sc, gathered, cpu_after, cpu_before, calls, nominal, started, outcome, rss_before
    )
    result["processes"] = {role: len(group) for role, group in stack.pids.items()}
    return result


def _summarize(
    sc: Scenario,
    gathered: list[WorkerResult],
    cpu_after: dict[str, float],
    cpu_before: dict[str, float],
    redis_per_server: list[dict[str, int]],
    nominal: float,
    started: float,
    outcome: dict[str, Any],
    rss_before: int,
) -> dict[str, Any]:
    latencies = sorted(v / 1000 for r in gathered for v in r.latencies_us)
    first_token = sorted(v for r in gathered for v in r.first_token_ms)
    total = {
        name: sum(getattr(r, name) for r in gathered)
        for name in (
            "streams",
            "expected",
            "received",
            "live",
            "prefix",
            "lost",
            "duplicated",
            "out_of_range",
            "id_gaps",
            "id_repeats",
            "resets",
            "unfinished",
        )
    }
    start_ns = min(r.start_ns for r in gathered)
    end_ns = max(r.end_ns for r in gathered)
    delivered = total["received"] if sc.kind is not JobKind.IDLE else 0
    cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_before}
    cpu["client"] = sum(r.cpu_seconds for r in gathered)
    per_token = (
        {role: seconds * 1000 / delivered for role, seconds in cpu.items()} if delivered else {}
    )
    serving = report.PLAIN if sc.kind is JobKind.RELAY else report.OURS
    tokens, _ = parse_model(sc.model) or (0, 0)
    upstream_tokens = sc.count * tokens if sc.kind is JobKind.CHAT else tokens
    redis = summed_counts(redis_per_server)
    wall_s = (end_ns - start_ns) / 1e9 if end_ns else time.monotonic() - started
    result: dict[str, Any] = {
        "name": sc.name,
        "kind": sc.kind.value,
        "replies": sc.count if sc.kind in (JobKind.CHAT, JobKind.DIRECT, JobKind.RELAY) else 1,
        "tabs": sc.tabs,
        "model": sc.model,
        "workers": len(gathered),
        **total,
        # a token delivered twice, or an event id seen twice, is a duplicate
        "duplicated": total["duplicated"] + total["id_repeats"] + total["out_of_range"],
        "errors": [e for r in gathered for e in r.errors][:5],
        "nominal_s": nominal,
        "wall_s": wall_s,
        # tokens into tabs (each tab's copy; snapshot prefixes included) per second of wall time
        "deliveries_per_s": delivered / wall_s if wall_s > 0 else None,
        "reply_s_p50": report.percentile(sorted(s for r in gathered for s in r.reply_seconds), 0.5),
        "first_token_ms": {
            "p50": report.percentile(first_token, 0.5),
            "p99": report.percentile(first_token, 0.99),
        },
        "latency_ms": {
            "p50": report.percentile(latencies, 0.5),
            "p90": report.percentile(latencies, 0.9),
            "p99": report.percentile(latencies, 0.99),
            "max": latencies[-1] if latencies else None,
            "samples": len(latencies),
        },
        "cdf_ms": report.cdf(latencies),
        "cpu_s": cpu,
        "client_cpu_s": cpu["client"],
        # What else ran on the machine meanwhile (other users' work): the figures above
        # are only as clean as this is small.
        "others_cpu_s": max(0.0, outcome["busy_s"] - sum(cpu.values())),
        "cpu_ms_per_token": per_token,
        # per token the upstream sent: what a reply costs, however many tabs watch it
        "cpu_ms_per_upstream_token": (
            {role: seconds * 1000 / upstream_tokens for role, seconds in cpu.items()}
            if sc.kind is JobKind.CHAT and upstream_tokens
            else None
        ),
        "cpu_ms_per_token_serving": (
            sum(per_token.get(role, 0.0) for role in serving)
            if per_token and sc.kind is not JobKind.DIRECT
            else None
        ),
        "redis": {name: count for name, count in redis.items() if count},
        "redis_per_upstream_token": (
            {name: count / upstream_tokens for name, count in redis.items() if ":" not in name}
            if sc.kind in (JobKind.CHAT, JobKind.FANOUT)
            else None
        ),
        "redis_servers": len(redis_per_server),
    }
    if sc.side is not None:
        result["side"] = sc.side
        result["pair"] = sc.name.removesuffix(f" {report.SIDES[sc.side]}")
    if len(redis_per_server) > 1:  # how the work spread over a cluster's primaries
        result["redis_scripts_per_server"] = [c.get("scripts", 0) for c in redis_per_server]
    if "healthz_ms" in outcome:
        result["web_healthz_ms"] = outcome["healthz_ms"]
    prefix = sorted(v for r in gathered for v in r.catchup_prefix_ms)
    live = sorted(v for r in gathered for v in r.catchup_live_ms)
    if prefix:
        result["catchup_ms"] = {
            "tabs": len(prefix),
            "prefix_p50": report.percentile(prefix, 0.5),
            "prefix_p95": report.percentile(prefix, 0.95),
            "live_p50": report.percentile(live, 0.5),
            "live_p95": report.percentile(live, 0.95),
        }
    if sc.kind is JobKind.IDLE:
        result["rss_before_kib"] = rss_before
        result["rss_after_kib"] = outcome["rss_after_kib"]
        result["rss_half_kib"] = outcome["rss_half_kib"]
        result["rss_per_connection_kib"] = (outcome["rss_after_kib"] - rss_before) / sc.count
        # The second half alone: without the one-off costs of the first connections.
        second_half = sc.count - sum(c // 2 for c in _split(sc.count, sc.workers))
        result["rss_per_added_connection_kib"] = (
            outcome["rss_after_kib"] - outcome["rss_half_kib"]
        ) / second_half
    return result


def _add_baselines(results: list[dict[str, Any]]) -> None:
    """Added latency over the fake read directly at the same concurrency (or at 1 for one
    session's fan-out), and wall time over the plain relay's at 100 (or the largest) x 1."""
    direct = {r["replies"]: r["latency_ms"] for r in results if r["kind"] == "direct"}
    relay = {r["replies"]: r["wall_s"] for r in results if r["kind"] == "relay"}
    for r in results:
        if r["kind"] in ("direct", "idle") or not direct:
            continue
        base = direct.get(r["replies"]) or direct[min(direct)]
        for key in ("p50", "p99"):
            if r["latency_ms"][key] is not None and base[key] is not None:
                r["latency_ms"][f"added_{key}"] = r["latency_ms"][key] - base[key]
        if relay and r["kind"] == "chat":
            r["wall_vs_relay"] = r["wall_s"] / relay[max(relay)]


def _progress(r: dict[str, Any], seconds: float, where: str) -> None:
    lat = r["latency_ms"]
    p99 = "-" if lat["p99"] is None else f"{lat['p99']:.1f} ms"
    first = r["first_token_ms"]["p99"]
    p99 += "" if first is None else f", first token p99 {first:.0f} ms"
    print(
        f"bench: {where} {r['name']:<18} done in {seconds:5.1f} s: {r['streams']} streams, "
        f"{r['received']} tokens, p99 {p99}, wall {r['wall_s']:.2f} s, "
        f"lost {r['lost']}, dup {r['duplicated']}, client CPU {r['client_cpu_s']:.1f} s, "
        f"others' CPU {r['others_cpu_s']:.1f} s"
        + (f", errors: {r['errors']}" if r["errors"] else ""),
        flush=True,
    )


def _p99(result: dict[str, Any]) -> float:
    p99 = result["latency_ms"]["p99"]
    return float(p99 if p99 is not None else result.get("rss_per_added_connection_kib", 0.0))


def median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median p99 latency, whole (its figures belong together), with
    every round's p99 and wall time beside it; lost / duplicated / gaps add up over all
    rounds, so a loss in any round fails the run."""
    ordered = sorted(results, key=_p99)
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds"] = [
        {"p99_ms": r["latency_ms"]["p99"], "wall_s": r["wall_s"], "others_cpu_s": r["others_cpu_s"]}
        for r in results
    ]
    for key in ("lost", "duplicated", "id_gaps"):
        chosen[key] = sum(r[key] for r in results)
    return chosen


def lost_or_duplicated(results: list[dict[str, Any]]) -> list[str]:
    """The scenarios that fail the run: a token lost or delivered twice, or an event lost (a
    gap in a tab's ids, which are consecutive). Never timing."""
    return [r["name"] for r in results if r["lost"] or r["duplicated"] or r["id_gaps"]]


def _machine() -> dict[str, Any]:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="the ~20 s CI subset")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds of every scenario (idle runs once); the table shows the median round "
        "by p99 (default: 3, smoke 1)",
    )
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat or (1 if args.smoke else 3))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    every = [*scenarios(args.smoke), *cluster_scenarios(args.smoke)]
    chosen = [sc for sc in every if not args.only or args.only in sc.name]
    # REPLY first: the default model (every bench request names its model anyway)
    models = [REPLY, *sorted(({sc.model for sc in every} | {FANOUT_REPLY}) - {REPLY})]
    rounds: dict[str, list[dict[str, Any]]] = {sc.name: [] for sc in chosen}
    began = time.monotonic()
    print(f"bench: starting the stack (run folder {args.out / 'run'})", flush=True)
    with contextlib.ExitStack() as running:
        stack = running.enter_context(run_stack(args.out / "run", models))
        print(f"bench: stack up; pids {stack.pids}", flush=True)
        stacks = {None: stack, "single": stack}
        if any(sc.side == "cluster" for sc in chosen):
            cluster_dir = args.out / "run-cluster"
            print(f"bench: starting chatrelay on a local Redis Cluster ({cluster_dir})", flush=True)
            fake = (stack.fake, stack.pids["fake"][0])
            stacks["cluster"] = running.enter_context(run_cluster_stack(cluster_dir, models, fake))
            print(f"bench: cluster stack up; pids {stacks['cluster'].pids}", flush=True)
        everything = _all_pids(list(stacks.values()))
        # Round after round, not one scenario N times: a burst of other work on the shared
        # machine then spoils one round of several scenarios, not every round of one.
        for round_number in range(repeat):
            for sc in chosen:
                if sc.kind is JobKind.IDLE and round_number:
                    continue  # memory is only measured right on a fresh web process
                _settle(everything)
                t0 = time.monotonic()
                result = run_scenario(sc, stacks[sc.side])
                rounds[sc.name].append(result)
                _progress(result, time.monotonic() - t0, f"round {round_number + 1}/{repeat}")
    results = [median_round(rounds[sc.name]) for sc in chosen]
    _add_baselines(results)
    goals = report.goals(results)
    cluster = report.cluster_comparison(results)
    document = {
        "stamp": stamp,
        "mode": "smoke" if args.smoke else "full",
        "rounds": repeat,
        "command": "make bench-smoke" if args.smoke else "make bench",
        "machine": _machine(),
        "seconds": time.monotonic() - began,
        "scenarios": results,
        "goals": goals,
        "cluster": cluster,
    }
    latest = "latest-smoke" if args.smoke else "latest"
    path = report.write_json(args.out, stamp, document, latest)
    plots = report.plot(args.out, stamp, results, latest)
    if cluster:
        plots.append(report.plot_cluster(args.out, stamp, results, latest))
    print()
    print(report.table(results))
    if cluster:
        print("\nOne Redis vs a Redis Cluster, the same load (issue 12):")
        print(report.cluster_text(cluster))
    if goals:
        print("\nIssue 8's goals (informational; only lost or duplicated tokens fail a run):")
        print(report.goals_text(goals))
    print(f"\nbench: wrote {path} and {', '.join(str(p) for p in plots)}")
    bad = lost_or_duplicated(results)
    if bad:
        print(f"bench: FAILED: lost or duplicated tokens in {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
