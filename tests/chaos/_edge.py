"""The real edge for the chaos tests: nginx from the project's template, with TLS, in front of
real service processes (a comma-separated upstream list for several web processes)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import render_nginx
from scripts.render_nginx import ensure_cert
from tests.infra.conftest import (
    Cert,
    edge_values,
    find_tool,
    free_port,
    running_nginx,
    wait_for_port,
)

__all__ = ["client_tls", "running_edge"]


@contextlib.contextmanager
def running_edge(run_dir: Path, *, web: str, gateway: str) -> Iterator[int]:
    """nginx proxying to ``web`` (``"host:port,host:port"``) and ``gateway``; yields the HTTPS
    port. Skips the test where nginx or openssl is not installed (CI installs both)."""
    nginx, openssl = find_tool("nginx"), find_tool("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx and openssl are needed (apt-get install -y nginx openssl)")
    cert, key = ensure_cert(openssl, run_dir / "tls")
    https_port, http_port = free_port(), free_port()
    values = edge_values(
        Cert(cert, key), https_port=https_port, http_port=http_port, web=web, gateway=gateway
    )
    conf = render_nginx.render_run_dir(run_dir, values)
    with running_nginx(nginx, run_dir, conf, https_port):
        wait_for_port(http_port)
        yield https_port


def client_tls() -> ssl.SSLContext:
    """The edge's certificate is self-signed: a test client trusts it blindly."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
