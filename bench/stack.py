"""The processes under test, on free ports, all stopped at the end.

- the bench fake upstream (``bench.fake``);
- chatrelay as ``make dev`` runs it (``python -m scripts.dev``: Redis, gateway, web, nginx TLS h2),
  pointed at the fake, with the limits raised so that the bench, all on one address, is not
  refused;
- the plain relay (``bench.relay``) behind a second nginx rendered from the same template.

A second stack for the cluster scenario (``bench.cluster``) is chatrelay alone on a Redis given
to it (``GivenRedis``: dev.py then starts none), reading the first stack's fake.

Started and stopped with scripts/processes.py, the primitives make dev and the tests use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scripts import render_nginx
from scripts.processes import Process, free_port, start, start_nginx, wait_for_port, wait_until

from .client import Endpoint
from .procs import descendants

__all__ = ["GivenRedis", "Stack", "run_stack"]

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90.0
# Far above what the bench asks for from its one address; the defaults are for the internet.
RAISED_LIMITS = {
    "GATEWAY_MAX_REPLIES_PER_IP": "100000",
    "GATEWAY_MAX_REPLIES": "100000",
    "EDGE_RATE_PER_IP": "1000000",
    "EDGE_BURST_PER_IP": "1000000",
    "EDGE_RATE_TOTAL": "1000000",
    "EDGE_BURST_TOTAL": "1000000",
    "EDGE_CONN_PER_IP": "60000",  # nginx takes less than 65536
    "EDGE_CONN_TOTAL": "60000",
}
# Our own settings only: what the user's shell or .env says must not change the bench.
# HTTP* and *_proxy also: the ports dev.py reads, and no local request through a proxy.
_SCRUBBED = ("OPENAI_", "GATEWAY_", "WEB_", "EDGE_", "REDIS_", "CHATRELAY_", "DEV_", "HTTP")
_SCRUBBED_NAMES = {
    "SITE_PASSWORD",
    "ALLOW_OPEN_ACCESS",
    "FORWARDED_ALLOW_IPS",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "ALL_PROXY",
}


@dataclass
class Stack:
    edge: Endpoint
    gateway: Endpoint
    web: Endpoint
    fake: Endpoint
    relay_edge: Endpoint | None  # None: no plain relay in this stack
    redis_ports: list[int]  # where Redis's counters are read: the server, or every primary
    # Role → pids: gateway, web, redis, nginx (chatrelay's edge), fake, relay, relay-nginx.
    pids: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class GivenRedis:
    """A Redis the caller runs (a local cluster): dev.py is told its URL and starts none."""

    url: str
    pids: list[int]  # every redis-server behind it, replicas included: their CPU counts
    ports: list[int]  # the servers whose counters are read (the primaries)


def _role(cmdline: str) -> str | None:
    for needle, role in (
        ("chatrelay_gateway", "gateway"),
        ("chatrelay_web", "web"),
        ("redis-server", "redis"),
        ("nginx", "nginx"),
    ):
        if needle in cmdline:
            return role
    return None


@contextlib.contextmanager
def run_stack(
    run_dir: Path,
    models: list[str],
    web_server: str | None = None,
    *,
    redis: GivenRedis | None = None,
    fake: tuple[Endpoint, int] | None = None,
    relay: bool = True,
) -> Iterator[Stack]:
    """``web_server``: the HTTP server the web runs on (``WEB_SERVER``), else its default.
    ``redis``: the Redis chatrelay uses, else dev.py starts its own. ``fake``: a running bench
    fake (endpoint, pid) to read, else one is started. ``relay``: start the plain relay too."""
    run_dir.mkdir(parents=True, exist_ok=True)
    # A fresh Redis each run: the last run's sessions would only slow its start and grow it.
    shutil.rmtree(run_dir / "dev" / "redis", ignore_errors=True)
    ports = {
        name: free_port()
        for name in (
            "fake",
            "https",
            "http",
            "gateway",
            "web",
            "redis",
            "relay",
            "relay_https",
            "relay_http",
        )
    }
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED) and k not in _SCRUBBED_NAMES
    }
    started: list[Process] = []

    def run(name: str, argv: list[str], env: dict[str, str], log: Path) -> Process:
        # die_with_parent: no stack outlives the bench, however it dies (dev.py then stops
        # its own children). The coordinator has no threads yet.
        process = start(name, argv, env=env, log=log, cwd=ROOT, die_with_parent=True)
        started.append(process)
        return process

    try:
        if fake is None:
            fake_process = run(
                "the bench fake",
                [sys.executable, "-m", "bench.fake", "--port", str(ports["fake"])],
                base_env,
                run_dir / "fake.log",
            )
            wait_for_port(ports["fake"], START_TIMEOUT, fake_process)
            fake = Endpoint("127.0.0.1", ports["fake"], tls=False), fake_process.pid
        upstream = f"http://{fake[0].host}:{fake[0].port}/v1"

        dev_env = (
            base_env
            | RAISED_LIMITS
            | {
                "DEV_ENV_FILE": "/dev/null",  # not the user's .env
                "DEV_RUN_DIR": str(run_dir / "dev"),
                "HTTPS_PORT": str(ports["https"]),
                "HTTP_PORT": str(ports["http"]),
                "GATEWAY_PORT": str(ports["gateway"]),
                "WEB_PORT": str(ports["web"]),
                "REDIS_PORT": str(ports["redis"]),
                # A keyless upstream: the gateway serves every client, and no key exists to leak.
                "OPENAI_BASE_URL": upstream,
                "OPENAI_MODEL": models[0],
                "OPENAI_MODELS": ",".join(models),
            }
            | ({"WEB_SERVER": web_server} if web_server else {})
            | ({"REDIS_URL": redis.url} if redis else {})
        )
        dev_log = run_dir / "dev.log"
        dev = run("make dev's runner", [sys.executable, "-m", "scripts.dev"], dev_env, dev_log)
        wait_until(
            "make dev's runner",
            lambda: "chatrelay is up" in dev_log.read_text(errors="replace"),
            timeout=START_TIMEOUT,
            check=dev.check_running,
        )

        pids: dict[str, list[int]] = {"fake": [fake[1]]}
        for pid, cmdline in descendants(dev.pid).items():
            role = _role(cmdline)
            if role is not None:
                pids.setdefault(role, []).append(pid)
        if redis is not None:
            pids["redis"] = list(redis.pids)
        missing = {"gateway", "web", "redis", "nginx"} - pids.keys()
        if missing:
            raise RuntimeError(f"cannot find the pids of {', '.join(sorted(missing))}")
        stack = Stack(
            edge=Endpoint("127.0.0.1", ports["https"], tls=True),
            gateway=Endpoint("127.0.0.1", ports["gateway"], tls=False),
            web=Endpoint("127.0.0.1", ports["web"], tls=False),
            fake=fake[0],
            relay_edge=None,
            redis_ports=list(redis.ports) if redis else [ports["redis"]],
            pids=pids,
        )
        if not relay:
            yield stack
            return

        relay_process = run(
            "the plain relay",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.relay:app",
                "--port",
                str(ports["relay"]),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            base_env | {"BENCH_UPSTREAM": upstream},
            run_dir / "relay.log",
        )
        wait_for_port(ports["relay"], START_TIMEOUT, relay_process)
        tls = run_dir / "dev" / "tls"
        relay_dir = run_dir / "relay-nginx"
        conf = render_nginx.render_run_dir(
            relay_dir,
            {
                "HTTPS_PORT": str(ports["relay_https"]),
                "HTTP_PORT": str(ports["relay_http"]),
                "WEB_UPSTREAM": f"127.0.0.1:{ports['relay']}",
                "GATEWAY_UPSTREAM": f"127.0.0.1:{ports['relay']}",
                "TLS_CERT": str(tls / "cert.pem"),
                "TLS_KEY": str(tls / "key.pem"),
                # Every edge default but the limits (METRICS_TOKEN) stays as it is.
                **{name: RAISED_LIMITS.get(name, "") for name in render_nginx.defaults()},
            },
        )
        relay_nginx = start_nginx(
            conf, ports["relay_https"], name="the relay's nginx", env=base_env, die_with_parent=True
        )
        started.append(relay_nginx)
        pids["relay"] = [relay_process.pid, *descendants(relay_process.pid)]
        pids["relay-nginx"] = [relay_nginx.pid, *descendants(relay_nginx.pid)]
        stack.relay_edge = Endpoint("127.0.0.1", ports["relay_https"], tls=True)
        yield stack
    finally:
        for process in reversed(started):
            process.stop(15)
