"""Figures from raw results, the table, the JSON file and the plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CDF_POINTS",
    "SIDES",
    "Side",
    "cdf",
    "cluster_comparison",
    "cluster_text",
    "goals",
    "goals_text",
    "percentile",
    "plot",
    "plot_cluster",
    "serving",
    "table",
    "write_json",
]

CDF_POINTS = 200
OURS = ("gateway", "web", "redis", "nginx")
PLAIN = ("relay", "relay-nginx")

Side = Literal["single", "cluster"]
# The cluster scenario's two sides, in the order they run, and how their names say it.
SIDES: dict[Side, str] = {"single": "1 node", "cluster": "3 primaries"}
# The figures compared as cluster / single.
_RATIOS = ("deliveries_per_s", "gateway_web_cpu_ms", "redis_cpu_ms", "wall_s", "p99_ms")


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when it is empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def cdf(ordered: Sequence[float]) -> list[float]:
    """CDF_POINTS evenly spaced quantiles (0.5 % … 100 %), for the JSON and the plot."""
    if not ordered:
        return []
    return [float(percentile(ordered, (i + 1) / CDF_POINTS) or 0.0) for i in range(CDF_POINTS)]


def serving(kind: str) -> tuple[str, ...]:
    """The processes a scenario's tokens pass through, the fake and the client included."""
    return (*{"direct": (), "relay": PLAIN}.get(kind, OURS), "fake", "client")


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _redis(per_token: dict[str, float]) -> str:
    return f"{per_token['reads']:.2f} ({per_token['scripts']:.2f}, {per_token['commands']:.1f})"


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | streams | p50 / p99 ms (p99 of each round: min-max) "
        "| added p50 / p99 ms | wall s (nominal; vs relay) "
        "| CPU ms/token: ours (per process) | Redis per upstream token: round trips "
        "(scripts, commands) | CPU s: client / others "
        "| lost / dup |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in results:
        if r["kind"] == "idle":
            continue
        lat = r["latency_ms"]
        per = r["cpu_ms_per_token"]
        shown = [role for role in serving(r["kind"]) if role not in ("fake", "client")]
        detail = ", ".join(f"{role} {per[role]:.3f}" for role in shown if role in per)
        wall = f"{r['wall_s']:.2f} ({r['nominal_s']:.1f}"
        wall += f"; {r['wall_vs_relay']:.2f}x relay)" if "wall_vs_relay" in r else ")"
        ours = r.get("cpu_ms_per_token_serving")
        redis = r.get("redis_per_upstream_token")
        p99s = [x["p99_ms"] for x in r.get("rounds", []) if x["p99_ms"] is not None]
        spread = f" ({min(p99s):.1f}-{max(p99s):.1f})" if len(p99s) > 1 else ""
        lines.append(
            f"| {r['name']} | {r['streams']} | {_ms(lat['p50'])} / {_ms(lat['p99'])}{spread} "
            f"| {_ms(lat.get('added_p50'), True)} / {_ms(lat.get('added_p99'), True)} "
            f"| {wall} "
            f"| {'-' if ours is None else f'{ours:.3f}'} ({detail or '-'}) "
            f"| {'-' if redis is None else _redis(redis)} "
            f"| {r['client_cpu_s']:.1f} / {r['others_cpu_s']:.1f} "
            f"| {r['lost']} / {r['duplicated']} |"
        )
    extra = [
        "CPU is read from /proc in 10 ms ticks: a process's figure is +/- 10 ms / tokens "
        "delivered (+/- 0.05 ms per token at 1 reply of 200 tokens)."
    ]
    for r in results:
        if r.get("web_healthz_ms", {}).get("max") is not None:
            h = r["web_healthz_ms"]
            extra.append(
                f"- {r['name']}: the web's /healthz answered in {h['p99']:.1f} ms p99, "
                f"{h['max']:.1f} ms at worst (event-loop stalls: GC pauses, long writes)"
            )
        if r.get("catchup_ms"):
            c = r["catchup_ms"]
            extra.append(
                f"- {r['name']}: a new tab's prefix in {_ms(c['prefix_p50'])} ms p50, "
                f"{_ms(c['prefix_p95'])} ms p95; live in {_ms(c['live_p50'])} ms p50, "
                f"{_ms(c['live_p95'])} ms p95 ({c['tabs']} tabs)"
            )
        if r["kind"] == "idle":
            extra.append(
                f"- {r['name']}: web RSS {r['rss_before_kib']} → {r['rss_half_kib']} (half) → "
                f"{r['rss_after_kib']} KiB: {r['rss_per_connection_kib']:.1f} KiB per idle "
                f"connection, {r['rss_per_added_connection_kib']:.1f} KiB per connection of the "
                "second half "
                f"({r['streams']} connections, lost / dup {r['lost']} / {r['duplicated']})"
            )
    return "\n".join([*lines, "", *extra])


def write_json(out_dir: Path, stamp: str, document: dict[str, Any], latest: str) -> Path:
    """``<stamp>.json``, copied to ``<latest>.json`` (``latest`` or ``latest-smoke``: a smoke
    run never replaces the full run's figures)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}.json"
    text = json.dumps(document, indent=1)
    path.write_text(text, encoding="utf-8")
    (out_dir / f"{latest}.json").write_text(text, encoding="utf-8")
    return path


def plot(out_dir: Path, stamp: str, results: list[dict[str, Any]], latest: str) -> list[Path]:
    """latency CDF per scenario; CPU per delivered token per process, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)

    streamed = [r for r in results if r["kind"] != "idle" and r["cdf_ms"]]
    panels = (
        ("replies: direct, plain relay, chatrelay (nginx TLS)", "fanout", False),
        ("one session fanned out by one web process", "fanout", True),
    )
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), sharey=True)
    for ax, (title, kind, wanted) in zip(axes, panels, strict=True):
        shown = [r for r in streamed if (r["kind"] == kind) == wanted]
        palette = plt.get_cmap("tab20")  # more lines than tab10 has colours
        ax.set_prop_cycle(color=[palette(i) for i in range(20)])
        for r in shown:
            points = r["cdf_ms"]
            ys = [(i + 1) / len(points) for i in range(len(points))]
            ax.plot([max(p, 0.01) for p in points], ys, label=r["name"])
        ax.set_xscale("log")
        ax.set_xlabel("per-token latency, emit → arrival at the client (ms, log)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if shown:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("fraction of tokens")
    fig.suptitle("Per-token latency CDF")
    latency = out_dir / f"{stamp}-latency-cdf.png"
    fig.tight_layout()
    fig.savefig(latency, dpi=110)
    plt.close(fig)

    roles = [*OURS, *PLAIN, "fake", "client"]
    fig, ax = plt.subplots(figsize=(10, 6))
    names = [r["name"] for r in streamed]
    bottoms = [0.0] * len(streamed)
    for role in roles:
        values = [
            r["cpu_ms_per_token"].get(role, 0.0) if role in serving(r["kind"]) else 0.0
            for r in streamed
        ]
        if any(values):
            ax.bar(names, values, bottom=bottoms, label=role)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_ylabel("CPU ms per delivered token")
    ax.set_title("CPU per delivered token, per process (those serving the scenario)")
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    if streamed:
        ax.legend(fontsize=8)
    cpu = out_dir / f"{stamp}-cpu-per-token.png"
    fig.tight_layout()
    fig.savefig(cpu, dpi=110)
    plt.close(fig)
    for source in (latency, cpu):
        (out_dir / source.name.replace(stamp, latest)).write_bytes(source.read_bytes())
    return [latency, cpu]


def _find(results: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in results if r["name"] == name), None)


def goals(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 8's goals, each measured against this run (informational: a run never fails on
    them). A goal whose scenarios did not run is left out."""

    def get(name: str, *path: str) -> float | None:
        found: Any = _find(results, name)
        for key in path:
            found = None if found is None else found.get(key)
        return None if found is None else float(found)

    relay_wall = get("relay 100", "wall_s")
    wall_100x3 = get("chatrelay 100x3", "wall_s")
    lost_100x3 = _find(results, "chatrelay 100x3")
    checks: list[tuple[str, float | None, float]] = [
        (
            "100x3: wall time / the plain relay's at 100x1",
            None if relay_wall is None or wall_100x3 is None else wall_100x3 / relay_wall,
            1.0,
        ),
        ("100x3: added latency p99, ms", get("chatrelay 100x3", "latency_ms", "added_p99"), 50),
        (
            "100x3: tokens lost + duplicated",
            None if lost_100x3 is None else lost_100x3["lost"] + lost_100x3["duplicated"],
            0,
        ),
        (
            "100x1: CPU ms per delivered token (ours)",
            get("chatrelay 100x1", "cpu_ms_per_token_serving"),
            0.12,
        ),
        (
            "100x3: CPU ms per delivered token (ours)",
            get("chatrelay 100x3", "cpu_ms_per_token_serving"),
            0.05,
        ),
        (
            "100x1: Redis round trips per upstream token",
            get("chatrelay 100x1", "redis_per_upstream_token", "reads"),
            0.2,
        ),
        ("fan-out 1000: added p99, ms", get("fan-out 1000", "latency_ms", "added_p99"), 50),
        ("fan-out 4000: added p99, ms", get("fan-out 4000", "latency_ms", "added_p99"), 100),
        ("idle: KiB per added connection", get("idle 5000", "rss_per_added_connection_kib"), 12),
        (
            "idle 5000: longest web event-loop stall (/healthz, ms; GC or other)",
            get("idle 5000", "web_healthz_ms", "max"),
            50,
        ),
        ("catch-up 100: new tab live, p95 ms", get("catch-up 100", "catchup_ms", "live_p95"), 150),
        ("1x3: added latency p99, ms", get("chatrelay 1x3", "latency_ms", "added_p99"), 3),
    ]
    return [
        {"goal": goal, "measured": measured, "target": target, "met": measured <= target}
        for goal, measured, target in checks
        if measured is not None
    ]


def goals_text(found: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"- {'met ' if g['met'] else 'MISS'} {g['goal']}: {g['measured']:.3g} "
        f"(goal <= {g['target']:g})"
        for g in found
    )


def _side_figures(r: dict[str, Any]) -> dict[str, Any]:
    per = r["cpu_ms_per_upstream_token"] or {}
    redis = r.get("redis_per_upstream_token") or {}
    return {
        "scenario": r["name"],
        "redis_processes": r.get("processes", {}).get("redis"),
        "deliveries_per_s": r["deliveries_per_s"],
        # CPU ms per upstream token; Redis's summed over every redis-server of the side
        "gateway_web_cpu_ms": per.get("gateway", 0.0) + per.get("web", 0.0),
        "cpu_ms_per_upstream_token": per,
        "redis_cpu_ms": per.get("redis", 0.0),
        "redis_round_trips": redis.get("reads"),
        "redis_scripts_per_server": r.get("redis_scripts_per_server"),
        "wall_s": r["wall_s"],
        "p99_ms": r["latency_ms"]["p99"],
        "lost": r["lost"],
        "duplicated": r["duplicated"],
        "id_gaps": r["id_gaps"],
    }


def cluster_comparison(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per load of the cluster scenario that ran on both sides (in run order): each side's
    figures and cluster / single for each figure in _RATIOS."""
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        if r.get("side"):
            pairs.setdefault(r["pair"], {})[r["side"]] = r
    found = []
    for pair, sides in pairs.items():
        if set(sides) != set(SIDES):
            continue
        single, cluster = _side_figures(sides["single"]), _side_figures(sides["cluster"])
        ratio = {
            key: cluster[key] / single[key] if single[key] and cluster[key] is not None else None
            for key in _RATIOS
        }
        found.append({"load": pair, "single": single, "cluster": cluster, "ratio": ratio})
    return found


def _fixed(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def cluster_text(comparisons: list[dict[str, Any]]) -> str:
    head = (
        "| side | redis-server processes | deliveries/s | CPU ms per upstream token: "
        "gateway + web (gateway, web) | Redis (all its processes) | Redis round trips per "
        "upstream token | wall s | p99 ms | lost / dup |"
    )
    lines = [head, "|" + "---|" * 9]
    spreads = []
    for comparison in comparisons:
        for side in SIDES:
            f = comparison[side]
            per = f["cpu_ms_per_upstream_token"]
            lines.append(
                f"| {f['scenario']} | {f['redis_processes'] or '-'} "
                f"| {f['deliveries_per_s']:.0f} | {f['gateway_web_cpu_ms']:.3f} "
                f"({per.get('gateway', 0.0):.3f}, {per.get('web', 0.0):.3f}) "
                f"| {f['redis_cpu_ms']:.3f} | {_fixed(f['redis_round_trips'])} "
                f"| {f['wall_s']:.2f} | {_ms(f['p99_ms'])} | {f['lost']} / {f['duplicated']} |"
            )
        ratio = comparison["ratio"]
        lines.append(
            f"| {comparison['load']}: cluster / single | | "
            f"{_fixed(ratio['deliveries_per_s'], 'x')} "
            f"| {_fixed(ratio['gateway_web_cpu_ms'], 'x')} | {_fixed(ratio['redis_cpu_ms'], 'x')} "
            f"| | {_fixed(ratio['wall_s'], 'x')} | {_fixed(ratio['p99_ms'], 'x')} | |"
        )
        spread = comparison["cluster"]["redis_scripts_per_server"]
        if spread:
            spreads.append(f"- {comparison['load']}: script calls per primary {spread}")
    if spreads:
        lines += ["", "How the sessions spread over the primaries:", *spreads]
    return "\n".join(lines)


def plot_cluster(out_dir: Path, stamp: str, results: list[dict[str, Any]], latest: str) -> Path:
    """The cluster scenario, each load on both sides: deliveries/s, CPU per upstream token
    per process (stacked), and the latency CDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [r for r in results if r.get("side")]
    labels = [f"{r['pair']}\n{SIDES[r['side']]}" for r in sides]
    colours = {"single": "tab:blue", "cluster": "tab:orange"}
    fig, (rate, cpu, latency) = plt.subplots(1, 3, figsize=(18, 6))
    rate.bar(
        labels, [r["deliveries_per_s"] for r in sides], color=[colours[r["side"]] for r in sides]
    )
    rate.set_ylabel("tokens delivered to tabs (each tab's copy) per second of wall time")
    rate.set_title("deliveries/s", fontsize=10)
    bottoms = [0.0] * len(sides)
    for role in OURS:
        values = [(r["cpu_ms_per_upstream_token"] or {}).get(role, 0.0) for r in sides]
        cpu.bar(labels, values, bottom=bottoms, label=role)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    cpu.set_ylabel("CPU ms per upstream token")
    cpu.set_title("CPU per upstream token (Redis: all its processes)", fontsize=10)
    cpu.legend(fontsize=8)
    for ax in (rate, cpu):
        ax.tick_params(axis="x", labelsize=7)
    for r in sides:
        points = r["cdf_ms"]
        ys = [(i + 1) / len(points) for i in range(len(points))]
        latency.plot([max(p, 0.01) for p in points], ys, label=r["name"])
    latency.set_xscale("log")
    latency.set_xlabel("per-token latency, emit → arrival at the client (ms, log)")
    latency.set_ylabel("fraction of tokens")
    latency.set_title("latency CDF", fontsize=10)
    latency.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=8)
    fig.suptitle(
        "The same load on one Redis (1 node) and on a Redis Cluster (3 primaries + 3 replicas)"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}-cluster.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    (out_dir / path.name.replace(stamp, latest)).write_bytes(path.read_bytes())
    return path
