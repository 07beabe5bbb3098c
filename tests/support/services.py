"""The services under test, each a real uvicorn process on a free port, its log kept."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.redis_server import free_port

__all__ = ["Service", "run_service"]


@dataclass(frozen=True)
class Service:
    name: str
    url: str
    log_path: Path
    # The uvicorn process, for fault tests that kill it (SIGKILL) mid-reply.
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url}/readyz not ready in 20 s:\n{log_path.read_text()}")


@contextlib.contextmanager
def run_service(
    name: str, env: dict[str, str], log_dir: Path, *, host: str = "127.0.0.1"
) -> Iterator[Service]:
    """``name`` is ``gateway`` or ``web``: runs ``python -m chatrelay_<name>`` listening on
    ``host`` only."""
    port = free_port()
    prefix = name.upper()
    log_path = log_dir / f"{name}-{port}.log"
    full_env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GATEWAY_", "WEB_"))
        },
        f"{prefix}_HOST": host,
        f"{prefix}_PORT": str(port),
        **env,
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"chatrelay_{name}"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
        )
    url = f"http://{host}:{port}"
    try:
        _wait_ready(url, proc, log_path)
        yield Service(name, url, log_path, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
