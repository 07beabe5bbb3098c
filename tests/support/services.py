"""The services under test, each a real uvicorn process on a free port, its log kept."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scripts.processes import free_port, http_status, start, wait_until

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
    command = [sys.executable, "-m", f"chatrelay_{name}"]
    process = start(name, command, env=full_env, log=log_path, cwd=log_dir)
    url = f"http://{host}:{port}"
    try:
        wait_until(
            f"{url}/readyz",
            lambda: http_status(f"{url}/readyz") == 200,
            timeout=20,
            check=process.check_running,
            hint=lambda: f":\n{log_path.read_text(errors='replace')}",
        )
        yield Service(name, url, log_path, process.popen)
    finally:
        process.stop()
