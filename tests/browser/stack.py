"""The whole product on free ports for the browser tests: fake upstream, gateway, web and
nginx (TLS + HTTP/2, rendered from infra/nginx by scripts/render_nginx.py). Redis comes from
the caller (tests/conftest.py's ``redis_server_url``).

Every process is started here and stopped here, by pid. Their output goes to
``test-artifacts/browser-logs/<name>.log`` so a failure can be read afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from scripts.dev import ensure_cert
from scripts.render_nginx import render_run_dir
from tests.support.redis_server import free_port, wait_for_port

__all__ = ["ARTIFACTS", "LOG_MAX_EVENTS", "ROOT", "Stack", "run_stack"]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
LOGS = ARTIFACTS / "browser-logs"
UPSTREAM_KEY = "sk-browser-test-key-0123456789"
UPSTREAM_MODEL = "fake-gpt"
# Only a label here: the page shows a demo badge for this name.
DEMO_MODEL = "chatrelay-demo"
# Variables of the developer's shell that would change what the services do.
_SCRUB = ("OPENAI_", "SITE_PASSWORD", "GATEWAY_", "WEB_", "REDIS_URL", "HTTPS_PORT", "CHATRELAY_")
# The smallest event log the services accept: a tab away for longer gets `reset` + snapshot.
LOG_MAX_EVENTS = 100


@dataclass
class Stack:
    url: str  # https://127.0.0.1:PORT (nginx)
    gateway_url: str
    web_url: str
    upstream_url: str
    password: str | None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


def _find(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is None:
        raise RuntimeError(f"{name} is not installed (make browser-deps installs it)")
    return path


def _http_status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _https_status(port: int, path: str) -> int | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=1, context=ctx)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _wait(
    log: str, proc: subprocess.Popen[bytes], probe: Callable[[], bool], timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}; see {LOGS / log}.log")
        if probe():
            return
        time.sleep(0.1)
    raise TimeoutError(f"not ready after {timeout}s; see {LOGS / log}.log")


def _stop(name: str, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # nginx finishes open requests on QUIT; worker_shutdown_timeout bounds SSE streams.
    proc.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def run_stack(
    redis_url: str, *, name: str = "main", password: str | None = None
) -> Iterator[Stack]:
    LOGS.mkdir(parents=True, exist_ok=True)
    up_port, gw_port, web_port, https_port, http_port = (free_port() for _ in range(5))
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(gw_port),
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(web_port),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
            "OPENAI_API_KEY": UPSTREAM_KEY,
            "OPENAI_MODEL": UPSTREAM_MODEL,
            # The settings test switches a session to the demo model's name (only a label).
            "OPENAI_MODELS": f"{UPSTREAM_MODEL},{DEMO_MODEL}",
            "CHATRELAY_LOG_MAX_EVENTS": str(LOG_MAX_EVENTS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if password is not None:
        env["SITE_PASSWORD"] = password
    stack = Stack(
        url=f"https://127.0.0.1:{https_port}",
        gateway_url=f"http://127.0.0.1:{gw_port}",
        web_url=f"http://127.0.0.1:{web_port}",
        upstream_url=f"http://127.0.0.1:{up_port}",
        password=password,
    )
    logs: list[IO[bytes]] = []

    def start(
        what: str, argv: list[str], cwd: Path, extra: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (LOGS / f"{name}-{what}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**env, **(extra or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        stack.procs[what] = proc
        return proc

    with tempfile.TemporaryDirectory(prefix=f"chatrelay-browser-{name}-") as tmp:
        workdir = Path(tmp)  # cwd of the services: no developer .env is read
        try:
            upstream = start(
                "upstream",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "tests.browser.fake_upstream:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(up_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                ROOT,
                {"PYTHONPATH": str(ROOT)},
            )
            gateway = start("gateway", [sys.executable, "-m", "chatrelay_gateway"], workdir)
            web = start("web", [sys.executable, "-m", "chatrelay_web"], workdir)

            cert, key = ensure_cert(_find("openssl"), workdir / "tls")
            conf = render_run_dir(
                workdir / "nginx",
                {
                    "HTTPS_PORT": str(https_port),
                    "HTTP_PORT": str(http_port),
                    "WEB_UPSTREAM": f"127.0.0.1:{web_port}",
                    "GATEWAY_UPSTREAM": f"127.0.0.1:{gw_port}",
                    "TLS_CERT": str(cert),
                    "TLS_KEY": str(key),
                },
            )
            nginx = start(
                "nginx", [_find("nginx"), "-p", str(conf.parent), "-c", str(conf)], workdir
            )

            _wait(f"{name}-upstream", upstream, lambda: _tcp(up_port))
            _wait(f"{name}-gateway", gateway, lambda: _http_status(gw_port, "/readyz") == 200)
            _wait(f"{name}-web", web, lambda: _http_status(web_port, "/readyz") == 200)
            _wait(f"{name}-nginx", nginx, lambda: _https_status(https_port, "/healthz") is not None)
            yield stack
        finally:
            for what, proc in reversed(list(stack.procs.items())):
                _stop(what, proc)
            for log in logs:
                log.close()
            if (workdir / "nginx" / "logs").is_dir():
                for item in (workdir / "nginx" / "logs").iterdir():
                    shutil.copyfile(item, LOGS / f"{name}-nginx-{item.name}")


def _tcp(port: int) -> bool:
    try:
        wait_for_port(port, timeout=0.2)
    except TimeoutError:
        return False
    return True
