"""The processes under test, on free ports, all stopped at the end.

- the bench fake upstream (``bench.fake``);
- chatrelay as ``make dev`` runs it (``scripts/dev.py``: Redis, gateway, web, nginx TLS h2),
  pointed at the fake, with the limits raised so that the bench, all on one address, is not
  refused;
- the plain relay (``bench.relay``) behind a second nginx rendered from the same template.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scripts import render_nginx

from .client import Endpoint
from .procs import descendants

__all__ = ["Stack", "run_stack"]

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
    relay_edge: Endpoint
    redis_port: int
    # Role → pids: gateway, web, redis, nginx (chatrelay's edge), fake, relay, relay-nginx.
    pids: dict[str, list[int]] = field(default_factory=dict)


def _die_with_us() -> None:
    """In the child before exec (Linux): SIGTERM when the bench dies, however it dies, so
    that no stack outlives it (dev.py then stops its own children)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_tcp(port: int, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on {port} after {START_TIMEOUT:.0f} s")


def _wait_line(log: Path, line: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.is_file() else ""
        if line in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"make dev's runner exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"make dev's runner did not print {line!r} in {START_TIMEOUT:.0f} s")


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
def run_stack(run_dir: Path, models: list[str]) -> Iterator[Stack]:
    run_dir.mkdir(parents=True, exist_ok=True)
    # A fresh Redis each run: the last run's sessions would only slow its start and grow it.
    shutil.rmtree(run_dir / "dev" / "redis", ignore_errors=True)
    ports = {
        name: _free_port()
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
    started: list[tuple[subprocess.Popen[bytes], signal.Signals]] = []

    def start(
        argv: list[str], env: dict[str, str], log: Path, stop: signal.Signals
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_us,  # the coordinator has no threads yet
            )
        started.append((proc, stop))
        return proc

    try:
        fake_log = run_dir / "fake.log"
        fake = start(
            [sys.executable, "-m", "bench.fake", "--port", str(ports["fake"])],
            base_env,
            fake_log,
            signal.SIGTERM,
        )
        _wait_tcp(ports["fake"], "the bench fake", fake, fake_log)
        upstream = f"http://127.0.0.1:{ports['fake']}/v1"

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
        )
        dev_log = run_dir / "dev.log"
        dev = start(
            [sys.executable, str(ROOT / "scripts" / "dev.py")], dev_env, dev_log, signal.SIGTERM
        )
        _wait_line(dev_log, "chatrelay is up", dev)

        relay_log = run_dir / "relay.log"
        relay = start(
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
            relay_log,
            signal.SIGTERM,
        )
        _wait_tcp(ports["relay"], "the plain relay", relay, relay_log)
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
                **{name: RAISED_LIMITS[name] for name in render_nginx.LIMITS},
            },
        )
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        relay_nginx = start(
            [nginx_bin, "-p", str(relay_dir), "-c", str(conf)],
            base_env,
            run_dir / "relay-nginx.log",
            signal.SIGQUIT,
        )
        _wait_tcp(
            ports["relay_https"], "the relay's nginx", relay_nginx, relay_dir / "logs" / "error.log"
        )

        pids: dict[str, list[int]] = {"fake": [fake.pid]}
        for pid, cmdline in descendants(dev.pid).items():
            role = _role(cmdline)
            if role is not None:
                pids.setdefault(role, []).append(pid)
        pids["relay"] = [relay.pid, *descendants(relay.pid)]
        pids["relay-nginx"] = [relay_nginx.pid, *descendants(relay_nginx.pid)]
        missing = {"gateway", "web", "redis", "nginx"} - pids.keys()
        if missing:
            raise RuntimeError(f"cannot find the pids of {', '.join(sorted(missing))}")
        yield Stack(
            edge=Endpoint("127.0.0.1", ports["https"], tls=True),
            gateway=Endpoint("127.0.0.1", ports["gateway"], tls=False),
            web=Endpoint("127.0.0.1", ports["web"], tls=False),
            fake=Endpoint("127.0.0.1", ports["fake"], tls=False),
            relay_edge=Endpoint("127.0.0.1", ports["relay_https"], tls=True),
            redis_port=ports["redis"],
            pids=pids,
        )
    finally:
        for proc, stop in reversed(started):
            if proc.poll() is None:
                proc.send_signal(stop)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
