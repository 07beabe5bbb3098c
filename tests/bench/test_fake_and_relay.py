"""The bench fake and the plain relay over real sockets: every token once, in order, stamped
with a time the client can subtract from its own clock; the relay passes the stream through
unchanged."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator

from bench.client import Endpoint, http_request
from bench.scan import StreamFormat, TabScan
from bench.tokens import STAMP
from tests.support.redis_server import free_port

HEAD = b"HTTP/1.1 200 OK\r\n\r\n"  # the body comes back decoded; the scanner wants a head


@contextlib.contextmanager
def process(argv: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"{argv} exited with {proc.returncode}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, f"{argv} not listening after 20 s"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def fake() -> Iterator[Endpoint]:
    port = free_port()
    with process([sys.executable, "-m", "bench.fake", "--port", str(port)], port):
        yield Endpoint("127.0.0.1", port, tls=False)


def scan_body(body: bytes, expected: int, now_ns: int) -> TabScan:
    scan = TabScan(StreamFormat.OPENAI, expected, array("q"))
    scan.feed(HEAD + body, now_ns)
    return scan


async def test_the_fake_streams_every_token_once_stamped_at_its_emit_time() -> None:
    with fake() as endpoint:
        before = time.monotonic_ns()
        request = {"model": "bench-20x5", "stream_options": {"include_usage": True}}
        status, body = await http_request(endpoint, "POST", "/v1/chat/completions", request)
        after = time.monotonic_ns()
    assert status == 200
    stamps = [(int(i), int(ns)) for i, ns in STAMP.findall(body)]
    assert [i for i, _ in stamps] == list(range(20))
    times = [ns for _, ns in stamps]
    assert before < times[0] <= times[-1] < after
    # Scheduled 5 ms apart against absolute times: the 20th comes 95 ms after the 1st (less
    # the event loop's timer slack of a millisecond or so: a lower bound only).
    assert times[-1] - times[0] >= 90_000_000
    assert b'"finish_reason":"stop"' in body
    assert b'"completion_tokens": 20' in body
    assert body.endswith(b"data: [DONE]\n\n")
    scan = scan_body(body, 20, after)
    assert (scan.lost, scan.duplicated, scan.done) == (0, 0, True)


async def test_the_fake_refuses_unknown_models_and_bad_bodies() -> None:
    with fake() as endpoint:
        unknown = await http_request(endpoint, "POST", "/v1/chat/completions", {"model": "gpt"})
        bad = await http_request(endpoint, "POST", "/v1/chat/completions", {"no": "model"})
    assert unknown[0] == 404
    assert b"no bench model 'gpt'" in unknown[1]
    assert bad[0] == 400


async def test_the_relay_passes_the_stream_through_unchanged() -> None:
    with fake() as upstream:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.relay:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        env = {"BENCH_UPSTREAM": f"http://127.0.0.1:{upstream.port}/v1"}
        with process(argv, port, env):
            relay = Endpoint("127.0.0.1", port, tls=False)
            status, body = await http_request(relay, "GET", "/api/relay/bench-30x2")
            missing = await http_request(relay, "GET", "/elsewhere")
    assert status == 200
    assert [int(i) for i, _ in STAMP.findall(body)] == list(range(30))
    assert body.count(b"data: ") == 30 + 3  # role chunk, tokens, finish chunk, [DONE]
    scan = scan_body(body, 30, time.monotonic_ns())
    assert (scan.lost, scan.duplicated, scan.done) == (0, 0, True)
    assert missing[0] == 404
