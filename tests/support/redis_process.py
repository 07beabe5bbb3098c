"""A redis-server of a test's own that can be killed and restarted from its append-only file,
on the same port, for fault tests (the shared Redis of the run must not be touched).

``appendfsync always`` is what production needs for "no acknowledged message lost" (a write
is on disk before Redis answers); a test may ask for ``everysec`` to see what else happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from scripts.processes import Process, free_port, start_redis

__all__ = ["RedisProcess", "redis_process"]


class RedisProcess:
    def __init__(
        self, workdir: Path, *, appendfsync: Literal["always", "everysec"] = "always"
    ) -> None:
        self._workdir = workdir
        self._appendfsync: Literal["always", "everysec"] = appendfsync
        self.port = free_port()
        self._server: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server; returns once it has loaded its append-only file."""
        if self._server is not None and self._server.running():
            raise RuntimeError("redis-server is running already")
        self._server = start_redis(self._workdir, self.port, appendfsync=self._appendfsync)

    def kill(self) -> None:
        """SIGKILL, as a crash: only what the append-only file holds survives."""
        if self._server is not None:
            self._server.kill()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


@contextlib.contextmanager
def redis_process(
    workdir: Path, *, appendfsync: Literal["always", "everysec"] = "always"
) -> Iterator[RedisProcess]:
    """A started server in ``workdir``, stopped at the end."""
    server = RedisProcess(workdir, appendfsync=appendfsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()
