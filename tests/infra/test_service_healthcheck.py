"""The service image's HEALTHCHECK probe (infra/docker/service/healthcheck.py), run as the
image runs it: a separate Python process against a real HTTP server on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from chatrelay_gateway._settings import GatewaySettings
from chatrelay_web._settings import WebSettings

from tests.infra.conftest import free_port

PROBE = Path(__file__).resolve().parents[2] / "infra/docker/service/healthcheck.py"


class FakeService:
    """Answers every GET with `status` and records the paths asked for."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.paths: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.paths.append(self.path)
                self.send_response(service.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[FakeService]:
    fake = FakeService(request.param)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join(timeout=10)


def run_probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # Only what the image has: no *_PORT from the caller's shell leaks in.
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_PORT")}
    return subprocess.run(
        [sys.executable, str(PROBE), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("service", [200], indirect=True)
def test_ready_service_is_healthy(service: FakeService) -> None:
    result = run_probe({"CHATRELAY_SERVICE": "web", "WEB_PORT": str(service.port)})
    assert (result.returncode, result.stderr) == (0, "")
    assert service.paths == ["/readyz"]


@pytest.mark.parametrize("service", [503], indirect=True)
def test_not_ready_service_is_unhealthy(service: FakeService) -> None:
    result = run_probe({"CHATRELAY_SERVICE": "gateway", "GATEWAY_PORT": str(service.port)})
    assert result.returncode == 1
    assert result.stderr == (
        f"chatrelay-gateway not ready on port {service.port}: HTTP Error 503: Service Unavailable\n"
    )
    assert service.paths == ["/readyz"]


def test_nothing_listening_is_unhealthy() -> None:
    port = free_port()
    result = run_probe({"CHATRELAY_SERVICE": "web", "WEB_PORT": str(port)})
    assert result.returncode == 1
    assert result.stderr.startswith(f"chatrelay-web not ready on port {port}: ")


def test_port_variable_wins_over_the_default() -> None:
    result = run_probe({"CHATRELAY_SERVICE": "gateway", "GATEWAY_PORT": "9123"}, "--print-port")
    assert (result.returncode, result.stdout) == (0, "9123\n")


@pytest.mark.parametrize(
    ("name", "default_port"),
    [("gateway", GatewaySettings().port), ("web", WebSettings().port)],
)
def test_unset_port_is_the_settings_default(name: str, default_port: int) -> None:
    result = run_probe({"CHATRELAY_SERVICE": name}, "--print-port")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{default_port}\n", "")
