"""The whole product on free ports for the browser tests: the tests' fake upstream
(tests/support/fake_upstream.py, its ``scripted`` scenario), gateway, web and nginx (TLS +
HTTP/2, rendered from infra/nginx by the one renderer). Redis comes from the caller
(tests/conftest.py's ``redis_server_url``).

Every process is started and stopped with scripts/processes.py, by pid. Their output goes to
``test-artifacts/browser-logs/<name>-<process>.log`` so a failure can be read afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chatrelay_common import DEMO_MODEL

from scripts import render_nginx
from scripts.processes import (
    Process,
    free_port,
    http_status,
    require_tool,
    start,
    start_nginx,
    wait_until,
)
from tests.support.fake_upstream import FakeUpstream

__all__ = [
    "ARTIFACTS",
    "DEMO_MODEL",
    "LOG_MAX_EVENTS",
    "REASONING_MODEL",
    "ROOT",
    "UPSTREAM_MODEL",
    "Stack",
    "run_stack",
]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
LOGS = ARTIFACTS / "browser-logs"
UPSTREAM_KEY = "sk-browser-test-key-0123456789"
# The fake's scenario whose reply the typed message picks ("slow 100 50", "xss", ...).
UPSTREAM_MODEL = "scripted"
# The fake upstream's scenario that streams reasoning_content before its answer.
REASONING_MODEL = "reasoning"
# Variables of the developer's shell that would change what the services do.
_SCRUB = ("OPENAI_", "SITE_PASSWORD", "GATEWAY_", "WEB_", "REDIS_URL", "HTTPS_PORT", "CHATRELAY_")
# The smallest event log the services accept: a tab away for longer gets `reset` + snapshot.
LOG_MAX_EVENTS = 100
START_TIMEOUT = 30.0


@dataclass
class Stack:
    url: str  # https://127.0.0.1:PORT (nginx)
    gateway_url: str
    web_url: str
    upstream_url: str
    password: str | None
    processes: dict[str, Process] = field(default_factory=dict)


def _wait_ready(process: Process, port: int) -> None:
    readyz = f"http://127.0.0.1:{port}/readyz"
    wait_until(
        f"{process.name} ({readyz}; log {process.log})",
        lambda: http_status(readyz) == 200,
        timeout=START_TIMEOUT,
        check=process.check_running,
    )


def _keep_nginx_logs(logs: Path, name: str) -> None:
    if logs.is_dir():
        for item in logs.iterdir():
            shutil.copyfile(item, LOGS / f"{name}-nginx-{item.name}")


@contextlib.contextmanager
def run_stack(
    redis_url: str, *, name: str = "main", password: str | None = None, accounts: bool = False
) -> Iterator[Stack]:
    LOGS.mkdir(parents=True, exist_ok=True)
    ports = {what: free_port() for what in ("gateway", "web", "https", "http")}
    with (
        FakeUpstream() as upstream,
        tempfile.TemporaryDirectory(prefix=f"chatrelay-browser-{name}-") as tmp,
        contextlib.ExitStack() as running,  # stops what it started, newest first
    ):
        workdir = Path(tmp)  # cwd of the services: no developer .env is read
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        env |= {
            "REDIS_URL": redis_url,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(ports["gateway"]),
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(ports["web"]),
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": UPSTREAM_KEY,
            "OPENAI_MODEL": UPSTREAM_MODEL,
            # The settings test switches a session to the demo model's name (only a label
            # here: with a key, the fake upstream answers it); "reasoning" thinks first.
            "OPENAI_MODELS": f"{UPSTREAM_MODEL},{DEMO_MODEL},{REASONING_MODEL}",
            "CHATRELAY_LOG_MAX_EVENTS": str(LOG_MAX_EVENTS),
            "PYTHONUNBUFFERED": "1",
        }
        if password is not None:
            env["SITE_PASSWORD"] = password
        if accounts:  # users log in by name (python -m chatrelay_gateway users add NAME)
            env["CHATRELAY_ACCOUNTS"] = "1"
        stack = Stack(
            url=f"https://127.0.0.1:{ports['https']}",
            gateway_url=f"http://127.0.0.1:{ports['gateway']}",
            web_url=f"http://127.0.0.1:{ports['web']}",
            upstream_url=upstream.base_url,
            password=password,
        )
        # /api/models keeps only the allowlisted models the upstream lists.
        upstream.listed_models = (UPSTREAM_MODEL, DEMO_MODEL, REASONING_MODEL)
        for what in ("gateway", "web"):
            command = [sys.executable, "-m", f"chatrelay_{what}"]
            log = LOGS / f"{name}-{what}.log"
            process = start(what, command, env=env, log=log, cwd=workdir)
            running.callback(process.stop)
            stack.processes[what] = process

        cert, key = render_nginx.ensure_cert(require_tool("openssl"), workdir / "tls")
        conf = render_nginx.render_run_dir(
            workdir / "nginx",
            {
                "HTTPS_PORT": str(ports["https"]),
                "HTTP_PORT": str(ports["http"]),
                "WEB_UPSTREAM": f"127.0.0.1:{ports['web']}",
                "GATEWAY_UPSTREAM": f"127.0.0.1:{ports['gateway']}",
                "TLS_CERT": str(cert),
                "TLS_KEY": str(key),
                # One address opening pages many times a second (each ~25 requests: the page's
                # modules) is the test suite, not abuse; tests/infra pins the limits themselves.
                "EDGE_RATE_PER_IP": "500",
            },
        )
        for what in ("gateway", "web"):
            _wait_ready(stack.processes[what], ports[what])
        running.callback(_keep_nginx_logs, workdir / "nginx" / "logs", name)
        nginx = start_nginx(conf, ports["https"], timeout=START_TIMEOUT)
        running.callback(nginx.stop)
        stack.processes["nginx"] = nginx
        yield stack
