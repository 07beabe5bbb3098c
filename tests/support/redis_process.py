"""A redis-server of a test's own that can be killed and restarted from its append-only file,
on the same port, for fault tests (the shared Redis of the run must not be touched).

``appendfsync always`` is what production needs for "no acknowledged message lost" (a write
is on disk before Redis answers); a test may ask for ``everysec`` to see what else happens.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from tests.support.redis_server import free_port, wait_for_port

__all__ = ["RedisProcess", "redis_process"]


class RedisProcess:
    def __init__(
        self, workdir: Path, *, appendfsync: Literal["always", "everysec"] = "always"
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._binary = binary
        self._workdir = workdir
        self._appendfsync = appendfsync
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server; it loads what its append-only file holds."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("redis-server is running already")
        log = (self._workdir / "redis.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [
                    self._binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self._workdir),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    self._appendfsync,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port)
        self._wait_loaded()

    def kill(self) -> None:
        """SIGKILL, as a crash: only what the append-only file holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def _wait_loaded(self) -> None:
        """Until the data set is loaded (a loading server answers commands with LOADING)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "PING"], capture_output=True, text=True
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} not loaded in 10 s")


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
