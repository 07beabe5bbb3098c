"""A real nginx from the template in front of stand-in backends that send NO
X-Accel-Buffering header: events must arrive as they are sent, over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts import render_nginx
from tests.infra.conftest import Cert, Edge, edge_values, free_port, running_nginx
from tests.infra.sse_backend import Backend

EVENTS = 10
INTERVAL = 0.1
EVENTS_PATH = f"/api/sessions/s1/events?n={EVENTS}&interval={INTERVAL}"


@pytest.fixture
def client(edge: Edge) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(edge.cert.cert))
    with httpx.Client(base_url=edge.https, verify=context, timeout=10.0) as client:
        yield client


def sse_events(lines: Iterator[str]) -> Iterator[tuple[float, dict[str, str]]]:
    """(arrival time, fields) per event, from an iterator of text lines."""
    fields: dict[str, str] = {}
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if fields:
                yield time.monotonic(), fields
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


def check_spread(backend: Backend, arrivals: dict[int, float]) -> float:
    """Each event arrived soon after it was sent; returns the worst lag in seconds."""
    sent = {event.n: event.sent_at for event in backend.sent[-EVENTS:]}
    assert sorted(arrivals) == list(range(EVENTS))
    assert sorted(sent) == list(range(EVENTS))
    # The first event is in our hands well before the backend even writes the last one.
    assert arrivals[0] < sent[EVENTS - 1] - 0.4, (arrivals[0], sent[EVENTS - 1])
    lags = [arrivals[n] - sent[n] for n in range(EVENTS)]
    assert max(lags) < 0.3, lags
    return max(lags)


def test_events_stream_through_over_http1(edge: Edge, client: httpx.Client) -> None:
    arrivals: dict[int, float] = {}
    hello: dict[str, object] = {}
    with client.stream("GET", EVENTS_PATH, headers={"Last-Event-ID": "41"}) as response:
        assert response.status_code == 200
        assert response.http_version == "HTTP/1.1"
        assert response.headers["content-type"] == "text/event-stream"
        assert "x-accel-buffering" not in response.headers
        assert "content-encoding" not in response.headers
        assert response.headers["strict-transport-security"].startswith("max-age=")
        for arrived, fields in sse_events(response.iter_lines()):
            if fields.get("event") == "hello":
                hello = json.loads(fields["data"])
            else:
                arrivals[int(fields["id"])] = arrived
    print(f"HTTP/1.1 worst lag {check_spread(edge.web, arrivals) * 1000:.1f} ms")
    # What the proxy forwarded to web:
    assert hello["backend"] == "web"
    headers = hello["headers"]
    assert isinstance(headers, dict)
    assert headers["last-event-id"] == "41"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["host"] == "localhost"
    assert headers.get("connection", "") == ""  # keep-alive pool: no `Connection: close`


def test_events_stream_through_over_http2(edge: Edge) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed: the HTTP/2 check drives curl --http2")
    proc = subprocess.Popen(
        [curl, "--http2", "-sS", "-N", "-i", "--cacert", str(edge.cert.cert),
         "-H", "Last-Event-ID: 7", "-H", "Accept-Encoding: gzip", edge.https + EVENTS_PATH],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        status = proc.stdout.readline()
        head = []
        for line in proc.stdout:
            if not line.strip():
                break
            head.append(line.strip().lower())
        arrivals = {
            int(fields["id"]): arrived
            for arrived, fields in sse_events(iter(proc.stdout.readline, ""))
            if "id" in fields
        }
    finally:
        proc.wait(10)
        proc.stdout.close()
        assert proc.stderr is not None
        errors = proc.stderr.read()
        proc.stderr.close()
    assert status.startswith("HTTP/2 200"), (status, errors)
    assert "content-type: text/event-stream" in head
    assert not any(h.startswith("content-encoding") for h in head), head
    print(f"HTTP/2 worst lag {check_spread(edge.web, arrivals) * 1000:.1f} ms")


def test_routing_by_path(edge: Edge, client: httpx.Client) -> None:
    for path, backend in [
        ("/", "web"),
        ("/s/abc", "web"),
        ("/static/app.js", "web"),
        ("/api/sessions", "gateway"),
        ("/api/sessions/abc/messages", "gateway"),
        ("/api/sessions/abc/events/extra", "gateway"),
        ("/demo/v1/models", "web"),  # the demo model is not routed to the gateway
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.json()["backend"] == backend, path
        assert response.json()["path"] == path


def test_security_headers(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"]
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "server" not in response.headers or "/" not in response.headers["server"]


def test_body_limit(client: httpx.Client) -> None:
    # 40 KiB is over the API's 32 KiB: nginx lets it through so the app answers 413 itself.
    response = client.post("/api/sessions/abc/messages", content=b"x" * 40_000)
    assert response.status_code == 200
    assert response.json()["body_bytes"] == 40_000
    assert client.post("/api/sessions/abc/messages", content=b"x" * 70_000).status_code == 413


def test_plain_http_redirects_to_https(edge: Edge) -> None:
    response = httpx.get(
        f"http://localhost:{edge.http_port}/s/abc?x=1", follow_redirects=False, timeout=5.0
    )
    assert response.status_code == 301
    assert response.headers["location"] == f"https://localhost:{edge.https_port}/s/abc?x=1"


def test_health_checks_are_not_reachable_through_the_edge(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/healthz?x=1"):
        response = client.get(path)
        assert (response.status_code, response.json()) == (404, {"detail": "Not found"}), path
        assert response.headers["x-content-type-options"] == "nosniff"
    # The rest of the page's paths still reach web.
    assert client.get("/healthzz").json()["backend"] == "web"


def test_the_client_cannot_choose_its_address(client: httpx.Client) -> None:
    spoofed = {"x-forwarded-for": "127.0.0.1, 6.6.6.6", "x-real-ip": "6.6.6.6"}
    for path, backend in [("/", "web"), ("/api/sessions", "gateway")]:
        echoed = client.get(path, headers=spoofed).json()
        assert echoed["backend"] == backend
        assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1", path
    with client.stream("GET", EVENTS_PATH.replace("n=10", "n=1"), headers=spoofed) as response:
        hello = next(fields for _, fields in sse_events(response.iter_lines()))
    assert json.loads(hello["data"])["headers"]["x-forwarded-for"] == "127.0.0.1"


@contextlib.contextmanager
def limited_edge(
    nginx_bin: str, cert: Cert, run_dir: Path, **limits: str
) -> Iterator[tuple[httpx.Client, Backend]]:
    """nginx from the template with the given EDGE_* limits, in front of stand-ins."""
    with Backend("web") as web, Backend("gateway") as gateway:
        https_port, http_port = free_port(), free_port()
        values = edge_values(
            cert, https_port=https_port, http_port=http_port,
            web=web.address, gateway=gateway.address,
        )  # fmt: skip
        conf = render_nginx.render_run_dir(run_dir, {**values, **limits})
        with running_nginx(nginx_bin, run_dir, conf, https_port):
            context = ssl.create_default_context(cafile=str(cert.cert))
            limits_client = httpx.Client(
                base_url=f"https://localhost:{https_port}", verify=context, timeout=10.0
            )
            with limits_client:
                yield limits_client, web


@pytest.mark.parametrize(
    "limits",
    [
        {"EDGE_RATE_PER_IP": "1", "EDGE_BURST_PER_IP": "5"},
        {"EDGE_RATE_TOTAL": "1", "EDGE_BURST_TOTAL": "5"},
    ],
    ids=["per-client", "total"],
)
def test_a_burst_gets_429_with_retry_after(
    nginx_bin: str, tls_cert: Cert, tmp_path: Path, limits: dict[str, str]
) -> None:
    with limited_edge(nginx_bin, tls_cert, tmp_path / "run", **limits) as (client, _):
        started = time.monotonic()
        answers = [client.get("/s/x") for _ in range(30)]
        elapsed = time.monotonic() - started
        statuses = [answer.status_code for answer in answers]
        passed = statuses.count(200)
        print(f"30 requests in {elapsed:.2f} s at 1 r/s + burst 5: {passed} passed")
        # 1 + the burst of 5, plus one per second the loop took.
        assert 6 <= passed <= 6 + int(elapsed) + 1, statuses
        assert set(statuses) == {200, 429}
        refused = [answer for answer in answers if answer.status_code == 429]
        for answer in refused:
            assert answer.headers["retry-after"] == "1"
            assert answer.json() == {"detail": "Too many requests; retry shortly"}
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert "retry-after" not in answers[0].headers


def test_open_requests_per_client_are_capped(
    nginx_bin: str, tls_cert: Cert, tmp_path: Path
) -> None:
    slow = EVENTS_PATH.replace("interval=0.1", "interval=0.5")  # 10 events over 5 s
    with limited_edge(nginx_bin, tls_cert, tmp_path / "run", EDGE_CONN_PER_IP="2") as (
        client,
        _,
    ):
        with client.stream("GET", slow) as first, client.stream("GET", slow) as second:
            assert (first.status_code, second.status_code) == (200, 200)
            third = client.get("/s/x")
            assert third.status_code == 429
            assert third.headers["retry-after"] == "1"
        # Streams closed: room again.
        deadline = time.monotonic() + 10
        while (status := client.get("/s/x").status_code) == 429 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 200


def _parallel_http2_statuses(curl: str, cert: Cert, urls: list[str]) -> tuple[list[str], int]:
    """Status of each URL fetched at once by one curl over HTTP/2, and the TCP connections
    curl opened for them all."""
    out = subprocess.run(
        [curl, "--http2", "-sS", "--cacert", str(cert.cert), "-Z", "--parallel-max", "50",
         *[arg for url in urls for arg in ("-o", "/dev/null", url)],
         "-w", "%{http_code} %{num_connects}\\n"],
        capture_output=True, text=True, timeout=30, check=False,
    ).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [status for status, _ in rows], sum(int(connects) for _, connects in rows)


def test_ten_tabs_on_one_http2_connection_fit_the_default_limits(edge: Edge) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed: this check drives curl --http2")
    streams = [f"{edge.https}/api/sessions/tab{n}/events?n=3&interval=0.3" for n in range(10)]
    statuses, connections = _parallel_http2_statuses(curl, edge.cert, [*streams, edge.https])
    print(f"10 streams + a page over HTTP/2: {statuses}, {connections} TCP connection(s)")
    assert statuses == ["200"] * 11
    assert connections == 1  # all multiplexed: a browser's tabs look just like this


def test_open_requests_are_counted_per_stream_over_http2(
    nginx_bin: str, tls_cert: Cert, tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed: this check drives curl --http2")
    with limited_edge(nginx_bin, tls_cert, tmp_path / "run", EDGE_CONN_PER_IP="5") as (
        client,
        _,
    ):
        base = str(client.base_url).rstrip("/")
        streams = [f"{base}/api/sessions/tab{n}/events?n=10&interval=0.5" for n in range(10)]
        statuses, connections = _parallel_http2_statuses(curl, tls_cert, streams)
    print(f"10 streams over HTTP/2 with 5 allowed: {sorted(statuses)}, {connections} conn(s)")
    assert connections == 1
    assert sorted(statuses) == ["200"] * 5 + ["429"] * 5
