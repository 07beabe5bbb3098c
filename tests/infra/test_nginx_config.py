"""The edge config: the one renderer (infra/nginx/render.sh, which the edge image runs too),
the one certificate maker, `nginx -t`, and the directives the SSE path depends on.

The directive checks read the config text on purpose: the app sends X-Accel-Buffering: no,
so a timing test alone would not notice `proxy_buffering off` going missing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scripts import render_nginx
from scripts.render_nginx import EdgeError, render_text
from tests.infra.conftest import Cert, edge_values, find_tool, free_port
from tests.infra.nginx_conf import Directive, duration_seconds, parse, size_bytes

ROOT = Path(__file__).resolve().parents[2]
SSE_LOCATION = ["~", "^/api/sessions/[^/]+/events$"]
HEALTH_LOCATIONS = [["=", "/healthz"], ["=", "/readyz"]]
# Bearer-guarded (tests/infra/test_edge_metrics.py), and everything else under /metrics: 404.
METRICS_LOCATIONS = [["=", "/metrics/gateway"], ["=", "/metrics/web"], ["^~", "/metrics"]]
HEARTBEAT_SECONDS = 15
API_MAX_BODY = 32 * 1024
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

VALUES = {
    "HTTPS_PORT": "8443",
    "HTTP_PORT": "8080",
    "WEB_UPSTREAM": "127.0.0.1:9002",
    "GATEWAY_UPSTREAM": "127.0.0.1:9001",
    "TLS_CERT": "/run/tls/cert.pem",
    "TLS_KEY": "/run/tls/key.pem",
}


@pytest.fixture(scope="module")
def http() -> Directive:
    """The rendered template, as nginx's `http {}` block would hold it."""
    return Directive("http", [], parse(render_text(VALUES)))


def https_server(http: Directive) -> Directive:
    servers = [s for s in http.children("server") if "ssl" in s.one("listen")]
    assert len(servers) == 1
    return servers[0]


def location(server: Directive, args: list[str]) -> Directive:
    found = [loc for loc in server.children("location") if loc.args == args]
    assert len(found) == 1, f"want one location {args}, got {len(found)}"
    return found[0]


def headers_set(block: Directive) -> dict[str, str]:
    return {args[0].lower(): args[1] for args in block.values("proxy_set_header")}


def upstream_servers(text: str, name: str) -> list[list[str]]:
    (upstream,) = [u for u in parse(text) if u.name == "upstream" and u.args == [name]]
    return upstream.values("server")


# ---------------------------------------------------------------- renderer


def test_every_placeholder_is_given_or_defaulted() -> None:
    assert render_nginx.placeholders() == set(VALUES) | set(render_nginx.defaults())
    text = render_text(VALUES)
    assert "${" not in text
    # nginx's own variables stay
    assert "$host" in text
    assert "$request_uri" in text
    assert "$remote_addr" in text
    # Appending would keep the client's own X-Forwarded-For leftmost, where uvicorn reads it.
    assert "$proxy_add_x_forwarded_for" not in text


def test_a_missing_value_is_named() -> None:
    with pytest.raises(EdgeError, match=r"^render.sh: no value for TLS_KEY "):
        render_text({k: v for k, v in VALUES.items() if k != "TLS_KEY"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTPS_PORT", "84a3"),
        ("HTTP_PORT", "70000"),
        ("HTTP_PORT", "080"),
        ("WEB_UPSTREAM", "127.0.0.1:9002; } server { listen 1"),
        ("WEB_UPSTREAM", " , "),
        ("GATEWAY_UPSTREAM", "gateway"),
        ("GATEWAY_UPSTREAM", "[::1;]:80"),
        ("GATEWAY_UPSTREAM", "unix:/run/x y.sock"),
        ("TLS_CERT", "/a b/cert.pem"),
        ("TLS_KEY", "/x;y"),
        ("TLS_KEY", "/x/$host"),
    ],
)
def test_render_refuses_values_that_break_the_config(name: str, value: str, tmp_path: Path) -> None:
    out = tmp_path / "chatrelay.conf"
    out.write_text("the last good config")
    with pytest.raises(EdgeError, match=rf"^render.sh: (bad )?{name}"):
        render_nginx.render({**VALUES, name: value}, out)
    assert out.read_text() == "the last good config"


def test_limits_default_from_the_one_defaults_file() -> None:
    defaults = render_nginx.defaults()
    assert set(defaults) == {
        name for name in render_nginx.placeholders() if name.startswith("EDGE_")
    } | {"METRICS_TOKEN"}
    server = https_server(Directive("http", [], parse(render_text(VALUES))))
    assert server.values("limit_conn") == [
        ["chatrelay_conn_ip", defaults["EDGE_CONN_PER_IP"]],
        ["chatrelay_conn_all", defaults["EDGE_CONN_TOTAL"]],
    ]
    # An empty value (an unset compose variable) also means the default...
    assert render_text({**VALUES, "EDGE_CONN_TOTAL": ""}) == render_text(VALUES)
    # ...and a given one wins.
    given = https_server(
        Directive("http", [], parse(render_text({**VALUES, "EDGE_CONN_TOTAL": "7"})))
    )
    assert given.values("limit_conn")[1] == ["chatrelay_conn_all", "7"]


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "10r/s", "5; limit_conn x 1", "9999999999"])
def test_render_refuses_limits_that_are_not_positive_counts(value: str) -> None:
    with pytest.raises(EdgeError, match="EDGE_RATE_PER_IP"):
        render_text({**VALUES, "EDGE_RATE_PER_IP": value})


def test_upstream_list_becomes_several_servers() -> None:
    text = render_text(
        {**VALUES, "WEB_UPSTREAM": "10.0.0.1:80, web:9002 [::1]:81,unix:/run/web.sock"}
    )
    assert upstream_servers(text, "chatrelay_web") == [
        ["10.0.0.1:80"],
        ["web:9002"],
        ["[::1]:81"],
        ["unix:/run/web.sock"],
    ]
    assert upstream_servers(text, "chatrelay_gateway") == [["127.0.0.1:9001"]]


def test_a_new_placeholder_needs_no_renderer_change(tmp_path: Path) -> None:
    """What the metrics location will do: a ${NAME} the renderer has never heard of is
    checked by the kind its name has (here a word) and filled in."""
    folder = tmp_path / "nginx"
    folder.mkdir()
    for source in (render_nginx.RENDERER, render_nginx.DEFAULTS_FILE):
        (folder / source.name).write_text(source.read_text())
    template = render_nginx.TEMPLATE.read_text() + "\n# token: ${METRICS_TOKEN}\n"
    (folder / render_nginx.TEMPLATE.name).write_text(template)
    out = tmp_path / "out.conf"

    def run(token: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(folder / "render.sh"), str(out)],
            env={"PATH": "/usr/bin:/bin", **VALUES, "METRICS_TOKEN": token},
            capture_output=True,
            text=True,
            check=False,
        )

    assert run("s3cr3t-T0ken").returncode == 0
    assert out.read_text().endswith("# token: s3cr3t-T0ken\n")
    refused = run("a b;")
    assert refused.returncode == 2
    assert refused.stderr.startswith("render.sh: bad METRICS_TOKEN='a b;'")


def test_busybox_renders_the_same(tmp_path: Path) -> None:
    """The public edge image is nginx:*-alpine: busybox's sh, awk, grep, sed, sort and tr."""
    busybox = find_tool("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (make test installs it)")
    applets = tmp_path / "bin"
    applets.mkdir()
    for name in ("sh", "awk", "grep", "sed", "sort", "tr", "tail", "mv", "rm", "dirname"):
        (applets / name).symlink_to(busybox)
    values = {**VALUES, "WEB_UPSTREAM": "web:1, [::1]:2 unix:/run/w.sock", "EDGE_CONN_TOTAL": "9"}

    def run(values: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(applets / "sh"), str(render_nginx.RENDERER), str(out)],
            env={"PATH": str(applets), **values},
            capture_output=True,
            text=True,
            check=False,
        )

    done = run(values, tmp_path / "busybox.conf")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "busybox.conf").read_text() == render_text(values)
    refused = run({**values, "GATEWAY_UPSTREAM": "g:1;"}, tmp_path / "refused.conf")
    assert (refused.returncode, refused.stderr) == (
        2,
        "render.sh: bad GATEWAY_UPSTREAM item 'g:1;' (port 1..65535)\n",
    )


def test_the_edge_image_runs_the_same_renderer_and_certificate_maker() -> None:
    entrypoint = (ROOT / "infra/docker/edge/entrypoint.sh").read_text()
    dockerfile = (ROOT / "infra/docker/edge/Dockerfile").read_text()
    assert "sh /etc/chatrelay/render.sh /etc/nginx/conf.d/chatrelay.conf" in entrypoint
    assert 'sh /etc/chatrelay/self-signed.sh "$TLS_DIR"' in entrypoint
    for script in (render_nginx.RENDERER, render_nginx.CERT_MAKER, render_nginx.DEFAULTS_FILE):
        assert f"infra/nginx/{script.name}" in dockerfile
    # No second certificate maker (`openssl req -x509`) outside the tests (the tests make
    # theirs with render_nginx.ensure_cert too, but a test's own is not the product's).
    found = subprocess.run(
        ["git", "grep", "--untracked", "-l", "-F", "-e", "-x509", "--", ":!*.md", ":!tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert found == ["infra/nginx/self-signed.sh"]


def test_certificate_is_made_once_and_renewed_before_it_expires(
    openssl_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = tmp_path / "tls"
    monkeypatch.setenv("TLS_SELF_SIGNED_DAYS", "1")  # expires within a day: renewed next time
    short, _ = render_nginx.ensure_cert(openssl_bin, tls, "chat.example")
    short_lived = short.read_bytes()
    monkeypatch.delenv("TLS_SELF_SIGNED_DAYS")
    cert, key = render_nginx.ensure_cert(openssl_bin, tls, "chat.example")
    made = cert.read_bytes()
    assert made != short_lived
    assert key.stat().st_mode & 0o777 == 0o600
    assert cert.stat().st_mode & 0o777 == 0o644
    names = subprocess.run(
        [openssl_bin, "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:chat.example, DNS:localhost, IP Address:127.0.0.1" in names
    assert render_nginx.ensure_cert(openssl_bin, tls) == (cert, key)
    assert cert.read_bytes() == made  # kept: valid for more than a day
    assert sorted(p.name for p in tls.iterdir()) == ["cert.pem", "key.pem"]


# ---------------------------------------------------------------- nginx -t


def test_rendered_config_passes_nginx_t(nginx_bin: str, tls_cert: Cert, tmp_path: Path) -> None:
    values = edge_values(
        tls_cert,
        https_port=free_port(),
        http_port=free_port(),
        web=f"127.0.0.1:{free_port()}",
        gateway=f"127.0.0.1:{free_port()}, localhost:{free_port()}",
    )
    conf = render_nginx.render_run_dir(tmp_path / "run", values)
    result = subprocess.run(
        [nginx_bin, "-t", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr
    # the run folder holds everything nginx writes
    temp = {p.name for p in (conf.parent / "temp").iterdir()}
    assert temp == {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}


def test_wrapper_keeps_every_path_under_the_run_dir() -> None:
    main = parse(render_nginx.WRAPPER.read_text(encoding="utf-8"))
    top = Directive("main", [], main)
    assert top.one("daemon") == ["off"]
    relative = [top.one("pid")[0], top.one("error_log")[0]]
    (http,) = top.children("http")
    relative += [http.one("access_log")[0]]
    for name in (
        "client_body_temp_path",
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
    ):
        relative.append(http.one(name)[0])
    assert all(not p.startswith("/") for p in relative), relative
    assert http.one("include") == ["chatrelay.conf"]


# ---------------------------------------------------------------- directives


def test_https_listener_is_tls_and_http2_in_1_22_syntax(http: Directive) -> None:
    server = https_server(http)
    assert server.one("listen") == ["8443", "ssl", "http2"]
    assert server.one("ssl_certificate") == ["/run/tls/cert.pem"]
    assert server.one("ssl_certificate_key") == ["/run/tls/key.pem"]
    assert all(d.name != "http2" for d in http.walk()), "`http2 on;` needs nginx >= 1.25.1"


def test_plain_http_only_redirects_to_https(http: Directive) -> None:
    (plain,) = [s for s in http.children("server") if "ssl" not in s.one("listen")]
    assert plain.one("listen") == ["8080"]
    (loc,) = plain.children("location")
    assert loc.one("return") == ["301", "https://$host$chatrelay_https_port_suffix$request_uri"]
    (port_map,) = [m for m in http.children("map") if m.args[1] == "$chatrelay_https_port_suffix"]
    assert port_map.args == ["8443", "$chatrelay_https_port_suffix"]
    assert port_map.values("default") == [[":8443"]]


def test_sse_location_never_buffers_and_outlives_heartbeats(http: Directive) -> None:
    sse = location(https_server(http), SSE_LOCATION)
    assert sse.one("proxy_pass") == ["http://chatrelay_web"]
    assert sse.one("proxy_buffering") == ["off"]
    assert sse.one("proxy_cache") == ["off"]
    assert sse.one("proxy_http_version") == ["1.1"]
    assert sse.one("gzip") == ["off"]
    assert duration_seconds(sse.one("proxy_read_timeout")[0]) >= 3600
    assert duration_seconds(sse.one("proxy_read_timeout")[0]) > 4 * HEARTBEAT_SECONDS
    assert duration_seconds(sse.one("send_timeout")[0]) > 4 * HEARTBEAT_SECONDS
    headers = headers_set(sse)
    assert headers["connection"] == ""
    assert headers["host"] == "$host"
    assert headers["x-forwarded-for"] == "$remote_addr"
    assert headers["x-forwarded-proto"] == "$scheme"
    # Last-Event-ID reaches web because client headers pass by default: nothing may turn
    # that off or blank the header.
    assert "last-event-id" not in headers
    assert all(d.name != "proxy_pass_request_headers" for d in http.walk())
    assert all(d.name != "proxy_ignore_headers" for d in sse.walk())


def proxied_locations(server: Directive) -> list[Directive]:
    found = [loc for loc in server.children("location") if loc.children("proxy_pass")]
    assert len(found) == 5
    return found


def test_every_proxied_location_keeps_upstream_connections_alive(http: Directive) -> None:
    for loc in proxied_locations(https_server(http)):
        assert loc.one("proxy_http_version") == ["1.1"], loc.args
        headers = headers_set(loc)
        assert headers.get("connection") == "", loc.args
        assert headers.get("x-forwarded-proto") == "$scheme", loc.args


def test_every_proxied_location_sets_the_client_address_itself(http: Directive) -> None:
    for loc in proxied_locations(https_server(http)):
        headers = headers_set(loc)
        assert headers["x-forwarded-for"] == "$remote_addr", loc.args
        assert headers["host"] == "$host", loc.args
        assert headers["x-forwarded-host"] == "$host", loc.args


def test_health_checks_are_not_routed(http: Directive) -> None:
    server = https_server(http)
    for args in HEALTH_LOCATIONS:
        loc = location(server, args)
        assert loc.one("return") == ["404", '{"detail": "Not found"}']
        assert loc.one("default_type") == ["application/json"]
        assert not loc.children("proxy_pass")


def test_limits_per_client_and_in_total(http: Directive) -> None:
    zones = {
        args[1].split(":")[0].removeprefix("zone="): args for args in http.values("limit_req_zone")
    }
    assert zones["chatrelay_req_ip"][0] == "$binary_remote_addr"
    assert zones["chatrelay_req_all"][0] == "$chatrelay_everyone"
    assert zones["chatrelay_req_ip"][2] == "rate=20r/s"
    conn_zones = {
        args[1].split(":")[0].removeprefix("zone="): args[0]
        for args in http.values("limit_conn_zone")
    }
    assert conn_zones == {
        "chatrelay_conn_ip": "$binary_remote_addr",
        "chatrelay_conn_all": "$chatrelay_everyone",
    }
    server = https_server(http)
    assert server.values("limit_req") == [
        ["zone=chatrelay_req_ip", "burst=200", "nodelay"],
        ["zone=chatrelay_req_all", "burst=1000", "nodelay"],
    ]
    assert server.one("limit_req_status") == ["429"]
    assert server.one("limit_conn_status") == ["429"]
    # Set once, for the whole server: no location may replace them (a location's own
    # limit_req would drop the server's).
    for loc in server.children("location"):
        assert not loc.children("limit_req"), loc.args
        assert not loc.children("limit_conn"), loc.args


def test_retry_after_only_on_the_edges_own_429s(http: Directive) -> None:
    server = https_server(http)
    added = {args[0].lower(): args[1:] for args in server.values("add_header")}
    assert added["retry-after"] == ["$chatrelay_retry_after", "always"]
    (retry_map,) = [m for m in http.children("map") if m.args[1] == "$chatrelay_retry_after"]
    assert retry_map.args[0] == "$status:$upstream_status"
    # Only a 429 with no upstream status (nginx's own) gets one; the gateway's 429s keep theirs.
    assert retry_map.values("429:") == [["1"]]
    assert retry_map.values("default") == [[""]]
    # ...and its body is JSON like every other error.
    assert server.one("error_page") == ["429", "@chatrelay_too_many"]
    too_many = location(server, ["@chatrelay_too_many"])
    assert too_many.one("return") == ["429", '{"detail": "Too many requests; retry shortly"}']
    assert too_many.one("default_type") == ["application/json"]
    (everyone,) = [m for m in http.children("map") if m.args[1] == "$chatrelay_everyone"]
    assert everyone.values("default") == [["all"]]
    for name in ("chatrelay_web", "chatrelay_gateway"):
        (upstream,) = [u for u in http.children("upstream") if u.args == [name]]
        assert int(upstream.one("keepalive")[0]) > 0


def test_routing(http: Directive) -> None:
    server = https_server(http)
    assert {tuple(loc.args) for loc in server.children("location")} == {
        tuple(SSE_LOCATION),
        ("/api/",),
        ("/",),
        *(tuple(args) for args in HEALTH_LOCATIONS),
        *(tuple(args) for args in METRICS_LOCATIONS),
        ("@chatrelay_too_many",),
    }
    assert location(server, ["/api/"]).one("proxy_pass") == ["http://chatrelay_gateway"]
    assert location(server, ["/"]).one("proxy_pass") == ["http://chatrelay_web"]
    (web,) = [u for u in http.children("upstream") if u.args == ["chatrelay_web"]]
    (gateway,) = [u for u in http.children("upstream") if u.args == ["chatrelay_gateway"]]
    assert web.values("server") == [["127.0.0.1:9002"]]
    assert gateway.values("server") == [["127.0.0.1:9001"]]


def test_gzip_never_applies_to_event_streams(http: Directive) -> None:
    server = https_server(http)
    for block in (http, server):
        for args in block.values("gzip_types"):
            assert "text/event-stream" not in args
            assert "*" not in args


def test_body_limit_fits_the_api_limit(http: Directive) -> None:
    (limit,) = https_server(http).one("client_max_body_size")
    assert API_MAX_BODY < size_bytes(limit) <= 4 * API_MAX_BODY
    # Bodies stay in memory: workers (nobody) may not reach a temp folder below /root.
    (buffer,) = https_server(http).one("client_body_buffer_size")
    assert size_bytes(buffer) >= size_bytes(limit)


def test_security_headers_on_every_https_response(http: Directive) -> None:
    server = https_server(http)
    added = {args[0].lower(): args[1:] for args in server.values("add_header")}
    assert added["strict-transport-security"][0].startswith("max-age=")
    assert added["x-content-type-options"][0] == "nosniff"
    assert "referrer-policy" in added
    assert added["content-security-policy"][0] == CSP
    assert all(rest[-1] == "always" for rest in added.values())
    # one add_header inside a location would silently drop all of the above there
    for loc in server.children("location"):
        assert not loc.children("add_header"), loc.args
