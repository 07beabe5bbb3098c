"""A stand-in backend for edge tests (standard library only).

Serves, like web/gateway would:
- ``GET /healthz`` and ``GET /readyz`` (``/readyz`` PINGs ``redis_url`` when one is given);
- ``GET /api/sessions/{id}/events``: an SSE stream WITHOUT ``X-Accel-Buffering`` — a
  ``hello`` event echoing what the proxy forwarded, then ``n`` events ``interval`` s apart;
- any other GET: JSON echo of the request; any POST: JSON with the body size.

Usable in a thread (``Backend``) or as a process (``python sse_backend.py NAME PORT``, used
as a stand-in for ``python -m chatrelay_web`` / ``chatrelay_gateway`` by the runner tests).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

__all__ = ["Backend", "SentEvent"]

EVENTS_PATH = re.compile(r"^/api/sessions/[^/]+/events$")


class SentEvent:
    __slots__ = ("n", "sent_at")

    def __init__(self, n: int, sent_at: float) -> None:
        self.n = n
        self.sent_at = sent_at


def _redis_answers(redis_url: str) -> bool:
    url = urllib.parse.urlsplit(redis_url)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), 1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend: Backend


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive to nginx's upstream pool
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _echo(self) -> dict[str, object]:
        return {
            "backend": self.server.backend.name,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            # the runner hands the API key to the gateway only
            "has_openai_key": "OPENAI_API_KEY" in os.environ,
        }

    def do_GET(self) -> None:
        backend = self.server.backend
        path, _, query = self.path.partition("?")
        if path == "/healthz":
            self._json(200, {"status": "ok", "backend": backend.name})
        elif path == "/readyz":
            ok = backend.redis_url is None or _redis_answers(backend.redis_url)
            self._json(200 if ok else 503, {"status": "ok" if ok else "redis down"})
        elif EVENTS_PATH.match(path):
            params = urllib.parse.parse_qs(query)
            self._stream(
                int(params.get("n", [str(backend.events)])[0]),
                float(params.get("interval", [str(backend.interval)])[0]),
            )
        else:
            self._json(200, self._echo())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self._json(200, {**self._echo(), "body_bytes": len(body)})

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, n: int, interval: float) -> None:
        backend = self.server.backend
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()  # deliberately no X-Accel-Buffering: nginx must not buffer anyway
        try:
            hello = json.dumps(self._echo())
            self._chunk(f"event: hello\ndata: {hello}\n\n".encode())
            for i in range(n):
                time.sleep(interval)
                sent_at = time.monotonic()
                self._chunk(
                    f"id: {i}\ndata: {json.dumps({'n': i, 'sent_at': sent_at})}\n\n".encode()
                )
                with backend.lock:
                    backend.sent.append(SentEvent(i, sent_at))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # client went away
            self.close_connection = True


class Backend:
    """A backend on 127.0.0.1 served from a thread; ``with Backend("web") as b: b.port``."""

    def __init__(
        self,
        name: str,
        port: int = 0,
        *,
        events: int = 10,
        interval: float = 0.1,
        redis_url: str | None = None,
    ) -> None:
        self.name = name
        self.events = events
        self.interval = interval
        self.redis_url = redis_url
        self.sent: list[SentEvent] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.backend = self
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Backend:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _main(argv: list[str]) -> int:
    name, port = argv[0], int(argv[1])
    redis_url = argv[2] if len(argv) > 2 else None
    backend = Backend(name, port, redis_url=redis_url)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"stand-in {name} on {backend.address}", flush=True)
    try:
        backend.serve_forever()
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
