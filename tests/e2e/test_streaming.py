"""Streaming through nginx over HTTP/2: many clients, same tokens, spread over time."""

from __future__ import annotations

import os
import re

import httpx
import pytest

from tests.e2e._client import Event, SseClient, Stack


def _after_snapshot(client: SseClient) -> list[Event]:
    return [e for e in client.events if e.name != "snapshot"]


def test_three_clients_get_identical_tokens(stack: Stack, api: httpx.Client) -> None:
    session_id = stack.new_session(api)
    clients = [SseClient(stack.events_url(session_id, f"three-{i}")) for i in range(3)]
    try:
        for client in clients:
            client.wait_for(lambda e: e.name == "snapshot", timeout=15)
            assert client.status.startswith("HTTP/2 200"), client.status
            assert client.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in client.headers
        reply_id = stack.send(api, session_id, "hi")
        for client in clients:
            client.wait_for(lambda e: e.name == "done" and reply_id in e.raw, timeout=60)
        seen = [[(e.id, e.name, e.raw) for e in _after_snapshot(c)] for c in clients]
        deltas = [e for e in seen[0] if e[1] == "delta"]
        print(f"    3 clients, {len(seen[0])} events each, {len(deltas)} deltas")
        assert len(deltas) >= 5
        assert seen[0] == seen[1] == seen[2]
        ids = [e[0] for e in seen[0] if e[0] is not None]
        assert len(ids) == len(seen[0])  # every event but `reset` carries an id
        assert ids == sorted(set(ids))  # increasing, no repeats
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("http", ["1.1", "2"])
def test_tokens_arrive_spread_over_time(stack: Stack, api: httpx.Client, http: str) -> None:
    """The demo model sends a token every GATEWAY_DEMO_TOKEN_DELAY s (0.05 in e2e). Through an
    unbuffered edge they arrive spread over seconds; a buffering edge delivers them in bursts.
    The e2e edge ignores the apps' X-Accel-Buffering header, so this depends on the config's
    own `proxy_buffering off`. Checked by hand with that line removed (E2E_EXTRA_COMPOSE
    mounting such a template): the HTTP/1.1 case fails (nginx holds the small event writes),
    while HTTP/2 still streams - which is why both are here."""
    delay = float(os.environ.get("GATEWAY_DEMO_TOKEN_DELAY", "0.05"))
    session_id = stack.new_session(api)
    with SseClient(stack.events_url(session_id, "spread"), http=http) as client:
        client.wait_for(lambda e: e.name == "snapshot", timeout=15)
        assert client.status.startswith(f"HTTP/{http} 200"), client.status
        reply_id = stack.send(api, session_id, "hi")
        client.wait_for(lambda e: e.name == "done" and reply_id in e.raw, timeout=60)
        times = [e.arrived for e in client.events if e.name == "delta"]
    assert len(times) >= 10, times
    span = times[-1] - times[0]
    window = 0.2
    densest = max(sum(1 for t in times if start <= t < start + window) for start in times)
    print(
        f"    HTTP/{http}: {len(times)} deltas over {span:.2f} s (token delay {delay} s); "
        f"densest {window} s window holds {densest}"
    )
    burst = "tokens arrived in a burst: is the edge buffering?"
    assert span >= 0.5 * (len(times) - 1) * delay, burst
    assert densest <= len(times) // 2, burst


def test_edge_config_turns_buffering_off(compose_stack: Stack) -> None:
    """The rendered config inside the running edge (`nginx -T`), SSE location."""
    config = compose_stack.compose("exec", "-T", "nginx", "nginx", "-T")
    sse_location = r"location ~ \^/api/sessions/\[\^/\]\+/events\$ \{(.*?)\n    \}"
    match = re.search(sse_location, config, re.S)
    assert match, "SSE location missing from the running edge config"
    block = match.group(1)
    wanted = ("proxy_buffering off;", "proxy_cache off;", "gzip off;", "proxy_http_version 1.1;")
    for directive in wanted:
        assert directive in block, directive
    assert "proxy_ignore_headers X-Accel-Buffering;" in config  # the e2e knob is on
