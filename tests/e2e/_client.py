"""What the e2e tests drive: the stack's public URLs, SSE clients over HTTP/2, compose."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Event", "SseClient", "Stack"]


@dataclass(frozen=True)
class Event:
    arrived: float  # time.monotonic() when the event's closing blank line arrived
    id: int | None
    name: str
    raw: str  # the data field as sent

    @property
    def data(self) -> dict[str, Any]:
        value = json.loads(self.raw)
        assert isinstance(value, dict)
        return value


class SseClient:
    """`curl --http2 -N` (or --http1.1) reading a session's event stream through the edge.

    curl, not httpx: the project venv has no HTTP/2 client, and nginx's HTTP/2 path is what
    browsers use. Events are parsed as they arrive, each with its arrival time.
    """

    def __init__(self, url: str, *, http: str = "2", max_seconds: float = 120.0) -> None:
        self.url = url
        self.status = ""
        self.headers: dict[str, str] = {}
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._ended = False
        self._proc = subprocess.Popen(
            ["curl", f"--http{http}", "-sS", "-N", "-k", "-i", "--max-time", str(max_seconds), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        out = self._proc.stdout
        try:
            self.status = out.readline().decode().strip()
            for raw in iter(out.readline, b""):
                line = raw.decode().strip()
                if not line:
                    break
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            fields: dict[str, str] = {}
            for raw in iter(out.readline, b""):
                line = raw.decode().rstrip("\r\n")
                if line:
                    if not line.startswith(":"):
                        key, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        fields[key] = fields[key] + "\n" + value if key in fields else value
                    continue
                if "event" in fields or "data" in fields:
                    event = Event(
                        time.monotonic(),
                        int(fields["id"]) if fields.get("id") else None,
                        fields.get("event", "message"),
                        fields.get("data", ""),
                    )
                    with self._cond:
                        self.events.append(event)
                        self._cond.notify_all()
                fields = {}
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def wait_for(self, match: Callable[[Event], bool], timeout: float = 30.0) -> Event:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self._ended:
                    names = [e.name for e in self.events]
                    raise AssertionError(
                        f"{self.url}: no matching event after {timeout} s "
                        f"(status {self.status!r}, ended {self._ended}, got {names})"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(10)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> SseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Stack:
    """The running stack as scripts/e2e.sh describes it in the environment."""

    base_url: str
    http_url: str
    mode: str  # "compose" or "native"
    compose_cmd: list[str] = field(default_factory=list)
    up_seconds: float | None = None

    @classmethod
    def from_env(cls) -> Stack:
        up = os.environ.get("E2E_UP_SECONDS")
        return cls(
            base_url=os.environ["E2E_BASE_URL"].rstrip("/"),
            http_url=os.environ.get("E2E_HTTP_URL", "").rstrip("/"),
            mode=os.environ.get("E2E_MODE", "compose"),
            compose_cmd=shlex.split(os.environ.get("E2E_COMPOSE", "")),
            up_seconds=float(up) if up else None,
        )

    def client(self) -> httpx.Client:
        # The edge's certificate is self-signed, made inside the stack.
        return httpx.Client(base_url=self.base_url, verify=False, timeout=15.0)  # noqa: S501

    def compose(self, *args: str, timeout: float = 300.0, stdin: str | None = None) -> str:
        assert self.compose_cmd, "not a compose stack"
        started = time.monotonic()
        done = subprocess.run(
            [*self.compose_cmd, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )
        took = time.monotonic() - started
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stdout}\n{done.stderr}"
        print(f"    compose {' '.join(args)}: {took:.1f} s")
        return done.stdout

    def events_url(self, session_id: str, tag: str = "") -> str:
        suffix = f"?client={tag}" if tag else ""
        return f"{self.base_url}/api/sessions/{session_id}/events{suffix}"

    def new_session(self, client: httpx.Client) -> str:
        response = client.post("/api/sessions", json={})
        assert response.status_code == 201, response.text
        session_id = response.json()["id"]
        assert isinstance(session_id, str)
        return session_id

    def send(self, client: httpx.Client, session_id: str, content: str) -> str:
        response = client.post(f"/api/sessions/{session_id}/messages", json={"content": content})
        assert response.status_code == 202, response.text
        reply_id = response.json()["reply_id"]
        assert isinstance(reply_id, str)
        return reply_id
