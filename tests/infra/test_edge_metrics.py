"""The edge's /metrics: a real nginx from the template in front of a real web and gateway
(real Redis). With METRICS_TOKEN rendered, the right bearer reaches each service's /metrics;
a wrong or missing one, any other /metrics path, and everything while METRICS_TOKEN is off
(the default) answer 404 like a path that does not exist."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from scripts import render_nginx
from scripts.render_nginx import EdgeError, render_text
from tests.infra.conftest import Cert, edge_values, free_port, running_nginx
from tests.infra.nginx_conf import Directive, parse
from tests.support.metrics import Metrics
from tests.support.services import Service, run_service

TOKEN = "0123456789abcdef0123456789ABCDEF-._~+/=:@"
NOT_FOUND = {"detail": "Not found"}
SERVICE_METRIC = {
    "gateway": "chatrelay_gateway_replies_running",
    "web": "chatrelay_web_sse_connections",
}


@pytest.fixture(scope="module")
def services(redis_server_url: str, service_logs: Path) -> Iterator[tuple[Service, Service]]:
    """A demo gateway (no key: open to any address) and a web."""
    env = {"REDIS_URL": redis_server_url}
    with (
        run_service("gateway", env, service_logs) as gateway,
        run_service("web", env, service_logs) as web,
    ):
        yield gateway, web


@contextlib.contextmanager
def edge_client(
    nginx_bin: str,
    cert: Cert,
    run_dir: Path,
    services: tuple[Service, Service],
    **extra: str,
) -> Iterator[httpx.Client]:
    gateway, web = services
    https_port, http_port = free_port(), free_port()
    values = edge_values(
        cert, https_port=https_port, http_port=http_port,
        web=web.url.removeprefix("http://"), gateway=gateway.url.removeprefix("http://"),
    )  # fmt: skip
    conf = render_nginx.render_run_dir(run_dir, {**values, **extra})
    with running_nginx(nginx_bin, run_dir, conf, https_port):
        context = ssl.create_default_context(cafile=str(cert.cert))
        with httpx.Client(
            base_url=f"https://localhost:{https_port}", verify=context, timeout=10.0
        ) as client:
            yield client


@pytest.fixture(scope="module")
def open_edge(
    nginx_bin: str,
    tls_cert: Cert,
    tmp_path_factory: pytest.TempPathFactory,
    services: tuple[Service, Service],
) -> Iterator[httpx.Client]:
    """The edge with METRICS_TOKEN=TOKEN."""
    run_dir = tmp_path_factory.mktemp("edge-metrics")
    with edge_client(nginx_bin, tls_cert, run_dir, services, METRICS_TOKEN=TOKEN) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, (response.request.url, response.text[:200])
    assert response.json() == NOT_FOUND
    # The edge's security headers, as on every answer.
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("service", ["gateway", "web"])
def test_the_right_bearer_reaches_each_services_metrics(
    open_edge: httpx.Client, service: str
) -> None:
    response = open_edge.get(f"/metrics/{service}", headers=bearer(TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    metrics = Metrics.parse(response.text)
    assert metrics.types[SERVICE_METRIC[service]] == "gauge"
    other = SERVICE_METRIC["web" if service == "gateway" else "gateway"]
    assert other not in metrics.types
    assert response.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-token-0123456789"),
        bearer(TOKEN[:-1]),
        bearer(TOKEN + "x"),
        bearer(TOKEN.swapcase()),
        bearer(f"{TOKEN} {TOKEN}"),
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"{TOKEN} Bearer {TOKEN}"},
        {"X-Metrics-Token": TOKEN},
    ],
    ids=[
        "none", "wrong", "prefix", "longer", "other-case", "twice", "no-scheme", "basic",
        "token-first", "other-header",
    ],
)  # fmt: skip
@pytest.mark.parametrize("service", ["gateway", "web"])
def test_a_wrong_or_missing_token_is_404(
    open_edge: httpx.Client, service: str, headers: dict[str, str]
) -> None:
    assert_not_found(open_edge.get(f"/metrics/{service}", headers=headers))


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/metrics/",
        "/metrics/other",
        "/metrics/gateway/",
        "/metricsx",
        "//metrics",
        "/%6detrics",
        "/metrics;x",
        "/api/../metrics",
    ],
)
def test_other_metrics_paths_are_404_even_with_the_token(
    open_edge: httpx.Client, path: str
) -> None:
    # An absolute URL, so that the client sends the path as written ("//metrics" included).
    url = f"{str(open_edge.base_url).rstrip('/')}{path}"
    assert_not_found(open_edge.get(url, headers=bearer(TOKEN)))


def test_without_metrics_token_every_metrics_path_is_404(
    nginx_bin: str,
    tls_cert: Cert,
    tmp_path: Path,
    services: tuple[Service, Service],
) -> None:
    with edge_client(nginx_bin, tls_cert, tmp_path / "run", services) as closed:
        for path in ("/metrics/gateway", "/metrics/web", "/metrics"):
            for headers in ({}, bearer("off"), bearer(TOKEN)):
                assert_not_found(closed.get(path, headers=headers))
        # The rest of the edge works as before.
        assert closed.get("/login").status_code == 200


# ---------------------------------------------------------------- the rendered config

VALUES = {
    "HTTPS_PORT": "8443",
    "HTTP_PORT": "8080",
    "WEB_UPSTREAM": "127.0.0.1:9002",
    "GATEWAY_UPSTREAM": "127.0.0.1:9001",
    "TLS_CERT": "/run/tls/cert.pem",
    "TLS_KEY": "/run/tls/key.pem",
}


def test_the_token_stops_at_the_edge() -> None:
    http = Directive("http", [], parse(render_text({**VALUES, "METRICS_TOKEN": TOKEN})))
    (server,) = [s for s in http.children("server") if "ssl" in s.one("listen")]
    for service in ("gateway", "web"):
        (location,) = [
            loc for loc in server.children("location") if loc.args == ["=", f"/metrics/{service}"]
        ]
        assert location.one("proxy_pass") == [f"http://chatrelay_{service}/metrics"]
        headers = {args[0].lower(): args[1] for args in location.values("proxy_set_header")}
        assert headers["authorization"] == ""
        assert headers["x-forwarded-for"] == "$remote_addr"


def test_metrics_token_is_off_by_default() -> None:
    assert render_nginx.defaults()["METRICS_TOKEN"] == "off"
    assert '"off $http_authorization"' in render_text(VALUES)


@pytest.mark.parametrize(
    "token", ["has space", 'quote"', "dollar$host", "brace}", "semicolon;", "back\\slash"]
)
def test_render_refuses_a_token_that_could_leave_its_string(token: str) -> None:
    with pytest.raises(EdgeError, match="METRICS_TOKEN"):
        render_text({**VALUES, "METRICS_TOKEN": token})
