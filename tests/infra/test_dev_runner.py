"""scripts/dev.py, the native runner, and scripts/system-deps.sh, the one system-package
installer: their pieces, then whole runs with stand-in services.

The stand-ins are `python -m chatrelay_gateway` / `chatrelay_web` packages put first on
PYTHONPATH (tests/infra/sse_backend.py behind them), so these tests need no real service. Only
their `__main__` is a stand-in: the runner reads the real packages' settings classes.
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

import chatrelay_gateway
import chatrelay_web
import httpx
import pytest
from chatrelay_gateway._settings import GatewaySettings
from chatrelay_web._settings import WebSettings

from scripts import dev
from scripts.processes import find_tool
from tests.infra.conftest import free_port, gone

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_DEPS = ROOT / "scripts" / "system-deps.sh"
SECRET = "sk-test-never-print-me-0123456789"
# What the runner reads; the developer's shell must not change these tests.
RUNNER_VARIABLES = ("OPENAI_", "REDIS_", "GATEWAY_", "WEB_", "HTTPS_PORT", "HTTP_PORT", "DEV_")

STANDIN_INIT = """\
# Only __main__ is a stand-in: the real package's modules (its settings) stay importable.
__path__.append({real!r})
"""
STANDIN_MAIN = """\
import os, sys
sys.path.insert(0, {root!r})
from tests.infra.sse_backend import _main
sys.exit(_main([{name!r}, os.environ[{port_var!r}], os.environ["REDIS_URL"]]))
"""


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(RUNNER_VARIABLES):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------- settings


@pytest.mark.usefixtures("clean_environ")
def test_env_file_under_the_environment_reaches_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n"
        "WEB_PORT=9002\n"
        "GATEWAY_PORT=9001\n"
        "export HTTPS_PORT=9443\n"
        "C='quoted # not a comment'\n"
        "OPENAI_MODEL=from-dotenv\n"
        "OPENAI_BASE_URL=http://127.0.0.1:9/v1\n"
    )
    monkeypatch.setenv("WEB_PORT", "7002")
    config = dev.load_config(env_file)
    assert (config.web.port, config.gateway.port, config.dev.https_port) == (7002, 9001, 9443)
    assert config.env["C"] == "quoted # not a comment"
    assert config.env["WEB_PORT"] == "7002"  # what the services are given
    assert config.gateway.default_model == "from-dotenv"
    assert config.own_redis


@pytest.mark.usefixtures("clean_environ")
def test_defaults_are_the_services_own(tmp_path: Path) -> None:
    config = dev.load_config(tmp_path / "absent")
    assert config.gateway.port == GatewaySettings.model_fields["port"].default
    assert config.web.port == WebSettings.model_fields["port"].default
    assert (config.dev.https_port, config.dev.http_port, config.dev.redis_port) == (
        8443,
        8080,
        6379,
    )
    assert config.gateway.demo
    assert config.run_dir == ROOT / ".run"


@pytest.mark.usefixtures("clean_environ")
def test_a_given_redis_url_means_no_redis_of_its_own(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_URL=redis://127.0.0.1:1/0\n")
    assert not dev.load_config(env_file).own_redis


@pytest.mark.usefixtures("clean_environ")
def test_a_bad_setting_stops_it_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_MODEL", "not-listed")
    monkeypatch.setenv("OPENAI_MODELS", "a,b")
    with pytest.raises(
        dev.AbortError, match=r"OPENAI_MODEL \(not-listed\) must be one of"
    ) as caught:
        dev.load_config(tmp_path / "absent")
    assert SECRET not in str(caught.value)
    monkeypatch.setenv("HTTPS_PORT", "70000")
    with pytest.raises(dev.AbortError, match="HTTPS_PORT"):
        dev.load_config(tmp_path / "absent")


@pytest.mark.usefixtures("clean_environ")
def test_model_line_names_demo_mode_and_never_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = tmp_path / "absent"
    assert "demo" in dev.model_line(dev.load_config(absent).gateway)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://u:pw@llm.example:8443/v1")
    line = dev.model_line(dev.load_config(absent).gateway)
    assert line == "model: gpt-4o-mini at https://llm.example:8443/v1 (API key set)"
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OPENAI_MODELS", "local-a,local-b")
    line = dev.model_line(dev.load_config(absent).gateway)
    assert line == "model: local-a at http://127.0.0.1:9/v1 (no API key)"


def test_port_in_use_is_reported() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(dev.AbortError, match=f"port {port} \\(WEB_PORT\\) is already in use"):
            dev.check_port_free(port, "127.0.0.1", "WEB_PORT")


# ---------------------------------------------------------------- system packages


def fake_apt(folder: Path) -> Path:
    """An apt-get on PATH that records its arguments and 'installs' a package by putting a
    command of that name next to itself."""
    folder.mkdir()
    calls = folder / "calls"
    apt = folder / "apt-get"
    apt.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >>{calls}\n'
        'if [ "$1" = install ]; then\n'
        "  for arg; do case $arg in -*|install) ;; *)\n"
        f'    printf "#!/bin/sh\\n" >{folder}/"$arg"; chmod +x {folder}/"$arg" ;; esac; done\n'
        "fi\n"
    )
    apt.chmod(0o755)
    return calls


def system_deps(*specs: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SYSTEM_DEPS), *specs],
        env={"PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )


def test_system_deps_installs_only_what_is_missing_in_one_go(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("installing is what root does")
    calls = fake_apt(tmp_path / "bin")
    path = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    done = system_deps("sh:dash", "chatrelay-a:pkg-a", "chatrelay-b:pkg-b", path=path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "installing system packages: pkg-a pkg-b\n"
    assert calls.read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends pkg-a pkg-b",
    ]
    # Already there: nothing runs again.
    (tmp_path / "bin" / "chatrelay-a").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "chatrelay-a").chmod(0o755)
    (tmp_path / "bin" / "chatrelay-b").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "chatrelay-b").chmod(0o755)
    again = system_deps("sh:dash", "chatrelay-a:pkg-a", "chatrelay-b:pkg-b", path=path)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert len(calls.read_text().splitlines()) == 2


def test_system_deps_names_what_to_install_without_root(tmp_path: Path) -> None:
    setpriv = find_tool("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to become another user")
    done = subprocess.run(
        [
            *(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"),
            *("bash", str(SYSTEM_DEPS), "sh:dash", "chatrelay-a:pkg-a", "chatrelay-b:pkg-b"),
        ],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "missing system packages: pkg-a pkg-b — install them "
        "(e.g. sudo apt-get install -y pkg-a pkg-b) and retry\n"
    )


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


@pytest.fixture
def standins(tmp_path: Path) -> Path:
    folder = tmp_path / "standins"
    for real, port_var in ((chatrelay_gateway, "GATEWAY_PORT"), (chatrelay_web, "WEB_PORT")):
        name = real.__name__.removeprefix("chatrelay_")
        package = folder / real.__name__
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            STANDIN_INIT.format(real=str(Path(real.__file__ or "").parent))
        )
        (package / "__main__.py").write_text(
            STANDIN_MAIN.format(root=str(ROOT), name=name, port_var=port_var)
        )
    return folder


def runner_pythonpath(standins: Path) -> str:
    """The stand-ins first; the repository root for `python -m scripts.dev`."""
    return os.pathsep.join([str(standins), str(ROOT)])


@pytest.fixture
def start_runner(nginx_bin: str, openssl_bin: str, standins: Path, tmp_path: Path) -> Iterator[Run]:
    if find_tool("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    env_file = tmp_path / "dotenv"
    env_file.write_text(f"OPENAI_MODEL=from-dotenv\nWEB_PORT=1\nOPENAI_API_KEY={SECRET}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(RUNNER_VARIABLES)}
    https_port = free_port()
    env |= {
        "PYTHONPATH": runner_pythonpath(standins),
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
        [sys.executable, "-m", "scripts.dev"],
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
            "PYTHONPATH": runner_pythonpath(standins),
            "DEV_ENV_FILE": str(tmp_path / "none"),
            "DEV_RUN_DIR": str(tmp_path / "run"),
            "HTTPS_PORT": str(port),
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
        done = subprocess.run(
            [sys.executable, "-m", "scripts.dev"],
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
