"""scripts/dev.py, the native runner: its pieces, then whole runs with stand-in services.

The stand-ins are `python -m chatrelay_gateway` / `chatrelay_web` packages put first on
PYTHONPATH (tests/infra/sse_backend.py behind them), so these tests need no real service.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

from scripts import dev
from tests.infra.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-test-never-print-me-0123456789"

STANDIN = """\
import os, sys
sys.path.insert(0, {root!r})
from tests.infra.sse_backend import _main
sys.exit(_main([{name!r}, os.environ[{port_var!r}], os.environ["REDIS_URL"]]))
"""


# ---------------------------------------------------------------- pieces


def test_env_file_parsing() -> None:
    text = "\n".join(
        [
            "# comment",
            "",
            "A=1",
            "export B = two words ",
            "C='quoted # not a comment'",
            'D="x"',
            "E=",
            "not a line",
            "1X=bad key",
        ]
    )
    assert dev.parse_env_file(text) == {
        "A": "1",
        "B": "two words",
        "C": "quoted # not a comment",
        "D": "x",
        "E": "",
    }


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("WEB_PORT=9002\nGATEWAY_PORT=9001\nOPENAI_MODEL=m\n")
    env = dev.load_env(env_file, {"WEB_PORT": "7002"})
    assert env["WEB_PORT"] == "7002"
    assert env["GATEWAY_PORT"] == "9001"
    assert env["HTTPS_PORT"] == "8443"
    assert dev.load_env(tmp_path / "absent", {})["REDIS_PORT"] == "6379"


def test_model_line_names_demo_mode_and_never_the_key() -> None:
    assert "demo" in dev.model_line({})
    line = dev.model_line(
        {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "https://u:pw@llm.example:8443/v1"}
    )
    assert "demo" not in line
    assert SECRET not in line
    assert "pw" not in line
    assert "llm.example:8443/v1" in line
    assert "demo" not in dev.model_line({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})


def test_certificate_is_made_once_and_reused(openssl_bin: str, tmp_path: Path) -> None:
    cert, key = dev.ensure_cert(openssl_bin, tmp_path / "tls")
    made = cert.stat().st_mtime_ns
    assert key.stat().st_mode & 0o077 == 0
    assert dev.ensure_cert(openssl_bin, tmp_path / "tls") == (cert, key)
    assert cert.stat().st_mtime_ns == made


def test_missing_tools_named_at_once_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "find_tool", lambda name, path: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(dev.AbortError, match="missing: redis-server, nginx") as caught:
        dev.ensure_tools(["redis-server", "nginx"], {})
    assert "apt-get install -y redis-server nginx" in str(caught.value)


def test_port_in_use_is_reported() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(dev.AbortError, match=f"port {port} \\(WEB_PORT\\) is already in use"):
            dev.check_port_free(port, "127.0.0.1", "WEB_PORT")


# ---------------------------------------------------------------- whole runs


@dataclass
class Run:
    proc: subprocess.Popen[str]
    https_port: int
    run_dir: Path
    out: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    lines: list[tuple[str, str]] = field(default_factory=list)

    def _pump(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self.out.put((name, line.rstrip("\n")))

    def start_readers(self) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def wait_for(self, pattern: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.out.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.out.empty():
                    break
                continue
            self.lines.append(item)
            if re.search(pattern, item[1]):
                return item[1]
        raise AssertionError(f"no line matching {pattern!r}; got:\n{self.text()}")

    def finish(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.05)  # let the readers drain the pipes
        while not self.out.empty():
            self.lines.append(self.out.get())
        return code

    def text(self) -> str:
        return "\n".join(f"{name}: {line}" for name, line in self.lines)

    def pids(self) -> dict[str, int]:
        found = (re.search(r"started (\w+) \(pid (\d+)\)", line) for _, line in self.lines)
        return {m.group(1): int(m.group(2)) for m in found if m}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def standins(tmp_path: Path) -> Path:
    folder = tmp_path / "standins"
    for name, port_var in (("gateway", "GATEWAY_PORT"), ("web", "WEB_PORT")):
        package = folder / f"chatrelay_{name}"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text(
            STANDIN.format(root=str(ROOT), name=name, port_var=port_var)
        )
    return folder


@pytest.fixture
def start_runner(nginx_bin: str, openssl_bin: str, standins: Path, tmp_path: Path) -> Iterator[Run]:
    if dev.find_tool("redis-server", os.environ.get("PATH")) is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    env_file = tmp_path / "dotenv"
    env_file.write_text(f"OPENAI_MODEL=from-dotenv\nWEB_PORT=1\nOPENAI_API_KEY={SECRET}\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "REDIS_")) and k not in dev.DEFAULTS
    }
    https_port = free_port()
    env |= {
        "PYTHONPATH": os.pathsep.join([str(standins), env.get("PYTHONPATH", "")]).rstrip(":"),
        "DEV_ENV_FILE": str(env_file),
        "DEV_RUN_DIR": str(tmp_path / "run"),
        "DEV_READY_TIMEOUT": "10",
        "HTTPS_PORT": str(https_port),
        "HTTP_PORT": str(free_port()),
        "GATEWAY_PORT": str(free_port()),
        "WEB_PORT": str(free_port()),  # beats the .env file's WEB_PORT=1
        "REDIS_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "dev.py")],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = Run(proc, https_port, tmp_path / "run")
    run.start_readers()
    try:
        yield run
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_runner_brings_everything_up_and_stops_it_on_sigterm(start_runner: Run) -> None:
    run = start_runner
    assert run.wait_for("chatrelay is up") == f"chatrelay is up: https://localhost:{run.https_port}"
    model = run.wait_for("^model: ")
    assert "from-dotenv" in model
    assert "demo" not in model  # the key came from the env file
    pids = run.pids()
    assert set(pids) == {"redis", "gateway", "web", "nginx"}

    context = ssl.create_default_context(cafile=str(run.run_dir / "tls" / "cert.pem"))
    with httpx.Client(verify=context, timeout=5.0) as client:
        base = f"https://localhost:{run.https_port}"
        assert client.get(f"{base}/login").json()["backend"] == "web"
        web = client.get(f"{base}/s/x").json()
        assert web["backend"] == "web"
        assert web["has_openai_key"] is False
        gateway = client.get(f"{base}/api/sessions").json()
        assert gateway["backend"] == "gateway"
        assert gateway["has_openai_key"] is True
        events = client.get(f"{base}/api/sessions/x/events?n=2&interval=0.01")
        assert events.headers["content-type"] == "text/event-stream"
        assert events.text.count("id: ") == 2
    assert (run.run_dir / "redis" / "appendonlydir").is_dir()

    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0, run.text()
    assert all(gone(pid) for pid in pids.values()), run.text()
    assert "stopping nginx" in run.text()
    assert SECRET not in run.text()


def test_runner_stops_the_rest_when_a_child_dies(start_runner: Run) -> None:
    run = start_runner
    run.wait_for("chatrelay is up")
    pids = run.pids()
    os.kill(pids["gateway"], signal.SIGKILL)
    assert run.finish() == 1
    assert "gateway was killed by SIGKILL; stopping the rest" in run.text()
    assert all(gone(pid) for pid in pids.values()), run.text()
    assert SECRET not in run.text()


def test_runner_refuses_a_port_in_use(
    nginx_bin: str, openssl_bin: str, standins: Path, tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": str(standins),
            "DEV_ENV_FILE": str(tmp_path / "none"),
            "DEV_RUN_DIR": str(tmp_path / "run"),
            "HTTPS_PORT": str(port),
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "dev.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    assert done.returncode == 1
    assert f"port {port} (HTTPS_PORT) is already in use" in done.stderr
    assert "started" not in done.stderr


def test_unreachable_redis_url_fails_fast_without_the_password() -> None:
    port = free_port()
    with pytest.raises(dev.AbortError, match=f"127.0.0.1:{port}, which does not") as caught:
        dev.check_redis_url(f"redis://:hunter2@127.0.0.1:{port}/0")
    assert "hunter2" not in str(caught.value)
