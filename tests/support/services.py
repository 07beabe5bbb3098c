"""The services under test, and the tests' own small apps, each a real uvicorn process on a
free port, its log kept."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts.processes import Process, free_port, http_status, start, wait_until

__all__ = ["Service", "run_app", "run_service"]

REPO = Path(__file__).resolve().parents[2]


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
    url = f"http://{host}:{port}"
    with _answering(name, command, full_env, log_path, log_dir, f"{url}/readyz", 20) as process:
        yield Service(name, url, log_path, process.popen)


@contextlib.contextmanager
def run_app(name: str, factory: str, env: Mapping[str, str], log_dir: Path) -> Iterator[str]:
    """A test's own app: ``uvicorn --factory <factory>`` (``module:function``) with exactly
    ``env``, run from the repository; its URL once ``/healthz`` answers."""
    port = free_port()
    log_path = log_dir / f"{name}-{port}.log"
    command = [sys.executable, "-m", "uvicorn", "--factory", "--port", str(port), factory]
    url = f"http://127.0.0.1:{port}"
    with _answering(name, command, env, log_path, REPO, f"{url}/healthz", 30):
        yield url


@contextlib.contextmanager
def _answering(
    name: str,
    command: list[str],
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path,
    probe: str,
    timeout: float,
) -> Iterator[Process]:
    """``command`` running until the block ends, from once ``probe`` answers 200."""
    process = start(name, command, env=env, log=log_path, cwd=cwd)
    try:
        wait_until(
            probe,
            lambda: http_status(probe) == 200,
            timeout=timeout,
            check=process.check_running,
            hint=lambda: f":\n{log_path.read_text(errors='replace')}",
        )
        yield process
    finally:
        process.stop()
