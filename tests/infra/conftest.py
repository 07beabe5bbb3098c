"""Fixtures for the edge (nginx) tests: tools, a cert, free ports, a running edge."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts import render_nginx
from scripts.processes import find_tool, free_port, start_nginx, wait_for_port
from tests.infra.sse_backend import Backend

# The chaos tests' edge (tests/chaos/_edge.py) takes these from here.
__all__ = [
    "Cert",
    "Edge",
    "edge_values",
    "find_tool",
    "free_port",
    "gone",
    "running_nginx",
    "wait_for_port",
]


def gone(pid: int) -> bool:
    """No process has this pid any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _installed(name: str) -> str:
    found = find_tool(name)
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/system-deps.sh {name}:{name}); CI has it")
    return found


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    return _installed("nginx")


@pytest.fixture(scope="session")
def openssl_bin() -> str:
    return _installed("openssl")


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_cert(openssl_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Cert:
    cert, key = render_nginx.ensure_cert(openssl_bin, tmp_path_factory.mktemp("tls"))
    return Cert(cert, key)


def edge_values(
    cert: Cert, *, https_port: int, http_port: int, web: str, gateway: str
) -> dict[str, str]:
    return {
        "HTTPS_PORT": str(https_port),
        "HTTP_PORT": str(http_port),
        "WEB_UPSTREAM": web,
        "GATEWAY_UPSTREAM": gateway,
        "TLS_CERT": str(cert.cert),
        "TLS_KEY": str(cert.key),
    }


@dataclass
class Edge:
    https_port: int
    http_port: int
    web: Backend
    gateway: Backend
    run_dir: Path
    cert: Cert

    @property
    def https(self) -> str:
        return f"https://localhost:{self.https_port}"

    def error_log(self) -> str:
        log = self.run_dir / "logs" / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""


@contextlib.contextmanager
def running_nginx(nginx: str, run_dir: Path, conf: Path, port: int) -> Iterator[None]:
    """nginx (scripts/processes.start_nginx) from ``conf`` in ``run_dir`` until the block ends."""
    assert conf.parent == run_dir.resolve(), (conf, run_dir)
    server = start_nginx(conf, port, nginx=nginx)
    try:
        yield
    finally:
        server.stop(8)


@pytest.fixture(scope="module")
def edge(
    nginx_bin: str, tls_cert: Cert, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    """nginx from the real template in front of two stand-in backends (web, gateway)."""
    run_dir = tmp_path_factory.mktemp("edge")
    with Backend("web") as web, Backend("gateway") as gateway:
        https_port, http_port = free_port(), free_port()
        conf = render_nginx.render_run_dir(
            run_dir,
            edge_values(
                tls_cert, https_port=https_port, http_port=http_port,
                web=web.address, gateway=gateway.address,
            ),
        )  # fmt: skip
        with running_nginx(nginx_bin, run_dir, conf, https_port):
            wait_for_port(http_port)
            yield Edge(https_port, http_port, web, gateway, run_dir, tls_cert)
