"""scripts/processes.py, the one set of process primitives make dev, the bench and the tests
start and stop everything with: real processes, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.processes import (
    ProcessExitedError,
    StartTimeoutError,
    free_port,
    port_open,
    redis_ready,
    start,
    start_redis,
    wait_until,
)
from tests.infra.conftest import gone

ROOT = Path(__file__).resolve().parents[2]
# Ignores SIGTERM, says so, then sleeps: only SIGKILL stops it.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring SIGTERM', flush=True); time.sleep(60)"
)


def test_stop_is_graceful_and_the_log_keeps_the_output(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    child = start(
        "child",
        [sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(60)"],
        log=log,
    )
    wait_until("hello", lambda: "hello" in log.read_text(), timeout=10, check=child.check_running)
    assert child.stop(grace=5) is True
    assert child.popen.returncode == -signal.SIGTERM
    assert log.read_text() == "hello\n"


def test_stop_kills_what_ignores_its_stop_signal(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    child = start("stubborn", [sys.executable, "-c", STUBBORN], log=log)
    wait_until("ready", lambda: "ignoring" in log.read_text(), timeout=10)
    began = time.monotonic()
    assert child.stop(grace=0.5) is False
    waited = time.monotonic() - began
    print(f"killed after {waited:.2f} s")
    assert child.popen.returncode == -signal.SIGKILL
    assert 0.5 <= waited < 5


def test_waiting_ends_at_once_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "broken.log"
    child = start("broken", ["sh", "-c", "echo 'cannot start: no config'; exit 3"], log=log)
    port = free_port()
    began = time.monotonic()
    with pytest.raises(ProcessExitedError) as caught:
        wait_until("broken", lambda: port_open(port), timeout=30, check=child.check_running)
    assert time.monotonic() - began < 5
    assert str(caught.value) == (
        f"broken exited (3); last lines of {log}:\n  cannot start: no config"
    )


def test_waiting_gives_up_after_its_timeout_with_the_hint() -> None:
    with pytest.raises(StartTimeoutError, match=r"^nothing not ready after 0.2 s \(why\)$"):
        wait_until("nothing", lambda: False, timeout=0.2, hint=lambda: " (why)")


def test_a_child_dies_with_its_supervisor(tmp_path: Path) -> None:
    """What keeps make dev and the bench from leaving processes behind when killed."""
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from scripts.processes import start\n"
            "child = start('child', ['sleep', '60'], die_with_parent=True)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert supervisor.stdout is not None
    child_pid = int(supervisor.stdout.readline())
    assert not gone(child_pid)
    supervisor.kill()
    supervisor.wait()
    supervisor.stdout.close()
    wait_until("the child gone", lambda: gone(child_pid), timeout=10)


def test_redis_restarts_from_its_append_only_file(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(tmp_path, port, appendfsync="always")
    try:
        assert redis_ready(port)
        cli = ["redis-cli", "-p", str(port)]
        subprocess.run([*cli, "SET", "kept", "yes"], check=True, capture_output=True)
        server.kill()
        assert not redis_ready(port)
        server = start_redis(tmp_path, port, appendfsync="always")
        got = subprocess.run([*cli, "GET", "kept"], check=True, capture_output=True, text=True)
        assert got.stdout == "yes\n"
        assert (tmp_path / "redis.log").read_text().count("Ready to accept connections") == 2
    finally:
        server.stop()
