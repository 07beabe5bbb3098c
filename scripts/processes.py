"""Start, probe and stop the processes of a local chatrelay: the one set of primitives behind
``make dev`` (scripts/dev.py), the bench (bench/stack.py) and the tests (tests/support,
tests/browser, tests/infra). Standard library only.

- :func:`start` a process with an environment and a log file; :meth:`Process.stop` sends its
  stop signal, waits, then kills.
- :func:`wait_until` something answers (:func:`port_open`, :func:`http_status`,
  :func:`redis_ready`), failing at once when the process it waits for exits.
- :func:`start_redis` on a given (free) port, :func:`start_nginx` from a rendered run folder
  (scripts/render_nginx.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "Process",
    "ProcessExitedError",
    "StartError",
    "StartTimeoutError",
    "find_tool",
    "free_port",
    "http_status",
    "port_open",
    "redis_ready",
    "require_tool",
    "start",
    "start_nginx",
    "start_redis",
    "wait_for_port",
    "wait_until",
]

# Debian keeps nginx in /usr/sbin, which a non-root PATH may lack.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
STOP_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A process could not be started or did not come up."""


class ProcessExitedError(StartError):
    """The process exited while something waited for it."""


class StartTimeoutError(StartError, TimeoutError):
    """It did not answer in time."""


def find_tool(name: str, path: str | None = None) -> str | None:
    """``name`` on ``path`` (default: PATH), else in the sbin folders."""
    found = shutil.which(name, path=path)
    if found:
        return found
    for folder in _SBIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tool(name: str) -> str:
    found = find_tool(name)
    if found is None:
        raise StartError(f"{name} is not installed (scripts/system-deps.sh installs it)")
    return found


def free_port() -> int:
    """A TCP port free on every interface at the time of the call (nginx binds 0.0.0.0)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status of ``GET url`` (https: any certificate), or None when nothing answers."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def redis_ready(port: int) -> bool:
    """PING answers PONG: listening and done loading its data (a loading server says LOADING)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass(eq=False)
class Process:
    """A started child process."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None
    stop_signal: signal.Signals

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def describe_exit(self) -> str:
        code = self.popen.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        text = f"{self.name} {how}"
        if self.log is not None and self.log.is_file():
            tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
            if tail:
                text += f"; last lines of {self.log}:\n  " + "\n  ".join(tail)
        return text

    def check_running(self) -> None:
        if not self.running():
            raise ProcessExitedError(self.describe_exit())

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> bool:
        """Send the stop signal, wait up to ``grace`` seconds, then kill. False when it had to
        be killed."""
        if not self.running():
            return True
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(self.stop_signal)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait()


def _child_setup(own_group: bool, die_with_parent: bool) -> Callable[[], None] | None:
    if not (own_group or die_with_parent):
        return None

    def setup() -> None:  # runs in the child, before exec
        if own_group:  # the terminal's Ctrl-C then reaches only the supervisor
            os.setpgrp()
        if die_with_parent:  # Linux: SIGTERM when the supervisor dies, however it dies
            with contextlib.suppress(Exception):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def start(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    append_log: bool = False,
    cwd: Path | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
    own_group: bool = False,
    die_with_parent: bool = False,
) -> Process:
    """Start ``argv``; its stdout and stderr go to ``log`` (None: this process's own).

    ``own_group`` and ``die_with_parent`` run code in the child before exec: only for callers
    that have no threads yet (make dev, the bench), as ``preexec_fn`` requires.
    """
    with contextlib.ExitStack() as files:
        out = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = files.enter_context(log.open("ab" if append_log else "wb"))
        popen = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=None if out is None else subprocess.STDOUT,
            preexec_fn=_child_setup(own_group, die_with_parent),
        )
    return Process(name, popen, log, stop_signal)


def wait_until(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout: float,
    check: Callable[[], None] | None = None,
    hint: Callable[[], str] | None = None,
) -> None:
    """Poll ``ready`` until it says yes; ``check`` raises to stop waiting (e.g. the process
    exited). After ``timeout`` seconds: StartTimeoutError, with ``hint()`` appended."""
    deadline = time.monotonic() + timeout
    while not ready():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            extra = hint() if hint is not None else ""
            raise StartTimeoutError(f"{what} not ready after {timeout:g} s{extra}")
        time.sleep(0.05)


def wait_for_port(
    port: int, timeout: float = 10.0, process: Process | None = None, host: str = "127.0.0.1"
) -> None:
    """Until something listens on ``host:port``."""
    wait_until(
        f"{host}:{port}",
        lambda: port_open(port, host, timeout=0.2),
        timeout=timeout,
        check=None if process is None else process.check_running,
    )


def _stop_if_not_up(process: Process, ready: Callable[[], None]) -> Process:
    try:
        ready()
    except BaseException:
        process.stop()
        raise
    return process


def start_redis(
    workdir: Path,
    port: int,
    *,
    appendfsync: Literal["always", "everysec"] | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    own_group: bool = False,
    die_with_parent: bool = False,
) -> Process:
    """A ``redis-server`` on ``127.0.0.1:port`` with its data and ``redis.log`` in ``workdir``,
    returned once it answers PING (its data loaded). ``appendfsync``: an append-only file
    synced that often (``always``: an acknowledged write is on disk); None: no persistence.
    ``extra_args``: more ``--option value`` pairs (e.g. cluster mode, scripts/redis_cluster.py)."""
    durability = (
        ["--appendonly", "no"]
        if appendfsync is None
        else ["--appendonly", "yes", "--appendfsync", appendfsync]
    )
    argv = [require_tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--dir", str(workdir), "--save", "", *durability, *extra_args]
    process = start(
        "redis",
        argv,
        env=env,
        log=workdir / "redis.log",
        append_log=True,  # a restarted server adds to the same log
        own_group=own_group,
        die_with_parent=die_with_parent,
    )
    return _stop_if_not_up(
        process,
        lambda: wait_until(
            f"redis-server on port {port}",
            lambda: redis_ready(port),
            timeout=timeout,
            check=process.check_running,
        ),
    )


def start_nginx(
    conf: Path,
    port: int,
    *,
    name: str = "nginx",
    nginx: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    own_group: bool = False,
    die_with_parent: bool = False,
) -> Process:
    """nginx (the binary ``nginx``, else the one installed) from a run folder (``conf`` = its
    nginx.conf, from render_nginx.render_run_dir), checked with ``nginx -t`` first, returned
    once ``port`` accepts connections. Stopped with QUIT: it finishes open requests
    (worker_shutdown_timeout bounds event streams)."""
    nginx = nginx or require_tool("nginx")
    run_dir = conf.parent
    command = [nginx, "-p", str(run_dir), "-c", str(conf)]
    tested = subprocess.run([*command, "-t", "-q"], capture_output=True, check=False)
    if tested.returncode != 0:
        raise StartError(f"nginx config test failed:\n{tested.stderr.decode(errors='replace')}")
    process = start(
        name,
        command,
        env=env,
        log=run_dir / "logs" / "stderr.log",
        stop_signal=signal.SIGQUIT,
        own_group=own_group,
        die_with_parent=die_with_parent,
    )
    return _stop_if_not_up(process, lambda: wait_for_port(port, timeout=timeout, process=process))
