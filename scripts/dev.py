"""Run the whole product natively: Redis, gateway, web and nginx (TLS + HTTP/2).

``make dev`` runs this as ``.venv/bin/python -m scripts.dev`` from the repository root.

- Missing redis-server / nginx / openssl: scripts/system-deps.sh installs them (as root with
  apt-get) or stops at once, naming what to install.
- What the services are told comes from their own settings classes: ``.env`` (``DEV_ENV_FILE``
  names another) is read the way they read it, the environment wins, and the services get
  exactly that environment (they run in the run folder, where no other ``.env`` is).
- Everything it makes lives in ``.run/`` (``DEV_RUN_DIR`` moves it): a self-signed cert in
  ``tls/`` (made once, reused), Redis data in ``redis/``, the rendered edge in ``nginx/``.
- Redis: a local ``redis-server`` on REDIS_PORT (6379) unless REDIS_URL is set.
- Ports: HTTPS_PORT 8443, HTTP_PORT 8080 (redirects), REDIS_PORT 6379; GATEWAY_PORT and
  WEB_PORT default to the services' settings. A port in use stops it before anything starts.
- Ctrl-C / SIGTERM stops what it started, newest first, by pid (nginx with QUIT). A child
  that exits on its own stops the rest; the exit status says which one.
- OPENAI_API_KEY is passed to the gateway and never printed.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from chatrelay_gateway._settings import GatewaySettings
from chatrelay_web._settings import WebSettings
from dotenv import dotenv_values
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from scripts import processes, render_nginx
from scripts.processes import Process

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_DEPS = ROOT / "scripts" / "system-deps.sh"
TOOL_PACKAGES = {"redis-server": "redis-server", "nginx": "nginx", "openssl": "openssl"}
STOP_GRACE_SECONDS = 8.0


class DevSettings(BaseSettings):
    """The runner's own knobs (the services' are in their settings classes)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    https_port: int = Field(default=8443, ge=1, le=65535, validation_alias="HTTPS_PORT")
    http_port: int = Field(default=8080, ge=1, le=65535, validation_alias="HTTP_PORT")
    redis_port: int = Field(default=6379, ge=1, le=65535, validation_alias="REDIS_PORT")
    run_dir: Path = Field(default=ROOT / ".run", validation_alias="DEV_RUN_DIR")
    ready_timeout: float = Field(default=30.0, gt=0, validation_alias="DEV_READY_TIMEOUT")


@dataclass(frozen=True)
class Config:
    """What the runner and the services will see: the .env file overridden by the environment."""

    env: dict[str, str]
    dev: DevSettings
    gateway: GatewaySettings
    web: WebSettings

    @property
    def own_redis(self) -> bool:
        return "redis_url" not in self.gateway.model_fields_set

    @property
    def run_dir(self) -> Path:
        return self.dev.run_dir if self.dev.run_dir.is_absolute() else ROOT / self.dev.run_dir


class AbortError(Exception):
    """Stop the runner with a message and an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def say(message: str) -> None:
    print(f"dev: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- configuration


def load_config(env_file: Path) -> Config:
    """Read ``env_file`` under the environment the way the services' settings classes do."""
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    try:
        return Config(
            {**from_file, **os.environ},
            DevSettings(_env_file=env_file),  # type: ignore[call-arg]
            GatewaySettings(_env_file=env_file),  # type: ignore[call-arg]
            WebSettings(_env_file=env_file),  # type: ignore[call-arg]
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'/'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
        )
        raise AbortError(f"bad setting in the environment or {env_file}: {problems}") from None


def model_line(gateway: GatewaySettings) -> str:
    if gateway.demo:
        return "model: built-in demo model (set OPENAI_API_KEY or OPENAI_BASE_URL for a real one)"
    url = urllib.parse.urlsplit(gateway.upstream_base_url)
    port = f":{url.port}" if url.port else ""
    where = f"{url.scheme}://{url.hostname or '?'}{port}{url.path}"  # never user:password@
    key = "API key set" if gateway.api_key else "no API key"
    return f"model: {gateway.default_model} at {where} ({key})"


# --------------------------------------------------------------------------- checks


def ensure_tools(names: list[str], path: str | None) -> dict[str, str]:
    """Paths of the tools; scripts/system-deps.sh installs missing ones (or names them)."""
    specs = [f"{name}:{TOOL_PACKAGES[name]}" for name in names]
    if subprocess.run(["bash", str(SYSTEM_DEPS), *specs], check=False).returncode != 0:
        raise AbortError(f"cannot go on without {', '.join(names)} (see above)")
    tools: dict[str, str] = {}
    for name in names:
        found = processes.find_tool(name, path)
        if found is None:
            raise AbortError(f"{name} is still missing after scripts/system-deps.sh")
        tools[name] = found
    return tools


def check_port_free(port: int, host: str, name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AbortError(
                    f"port {port} ({name}) is already in use on {host}: stop what holds it "
                    f"(`ss -ltnp 'sport = :{port}'`) or set {name} to another port "
                    "in .env or the environment"
                ) from None
            raise AbortError(f"cannot bind {host}:{port} ({name}): {exc.strerror}") from None


def check_redis_url(redis_url: str) -> None:
    """Fail fast when the user's Redis does not even accept a connection."""
    url = urllib.parse.urlsplit(redis_url)
    if url.scheme not in ("redis", "rediss"):
        say(f"using REDIS_URL ({url.scheme}://...) from the environment / .env")
        return
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    where = f"{host}:{port}"  # no password in messages
    if not processes.port_open(port, host):
        raise AbortError(
            f"REDIS_URL points at {where}, which does not accept connections; start that "
            "Redis, or unset REDIS_URL and dev.py starts a local one"
        )
    say(f"using the Redis at {where} (REDIS_URL)")


def check_services_installed() -> None:
    for module in ("chatrelay_gateway", "chatrelay_web"):
        try:
            spec = importlib.util.find_spec(f"{module}.__main__")
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            raise AbortError(
                f"`python -m {module}` is not available in {sys.executable}; run `make venv`"
            )


# --------------------------------------------------------------------------- children


@dataclass
class Runner:
    children: list[Process] = field(default_factory=list)
    stop_requested: signal.Signals | None = None

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_requested is None:
            self.stop_requested = signal.Signals(signum)
        else:  # second Ctrl-C: do not wait for graceful stops
            for child in self.children:
                with contextlib.suppress(ProcessLookupError):
                    child.popen.kill()

    def adopt(self, child: Process) -> Process:
        self.children.append(child)
        say(f"started {child.name} (pid {child.pid})")
        return child

    def check(self) -> None:
        """Raise AbortError when a stop was asked for or a child has exited."""
        if self.stop_requested is not None:
            raise AbortError(f"got {self.stop_requested.name}", status=0)
        for child in self.children:
            if not child.running():
                raise AbortError(child.describe_exit() + "; stopping the rest")

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.running():
                say(f"stopping {child.name} (pid {child.pid}, {child.stop_signal.name})")
                if not child.stop(STOP_GRACE_SECONDS):
                    say(f"{child.name} did not stop in {STOP_GRACE_SECONDS:.0f} s; killed it")


# Every child runs with own_group=True (the terminal's Ctrl-C reaches only the runner, which
# stops them in order) and die_with_parent=True (SIGTERM if the runner dies). No threads here.


def start_redis(runner: Runner, config: Config, env: Mapping[str, str]) -> str:
    redis_dir = config.run_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = config.dev.redis_port
    # Every acknowledged write on disk: a crash then loses no event.
    runner.adopt(
        processes.start_redis(
            redis_dir,
            port,
            appendfsync="always",
            env=env,
            timeout=config.dev.ready_timeout,
            own_group=True,
            die_with_parent=True,
        )
    )
    say(f"redis up on 127.0.0.1:{port} (data in {redis_dir})")
    return f"redis://127.0.0.1:{port}/0"


def wait_ready(runner: Runner, config: Config, name: str, host: str, port: int) -> None:
    url = f"http://{host}:{port}/readyz"
    last: int | None = None

    def ready() -> bool:
        nonlocal last
        last = processes.http_status(url)
        return last == 200

    def hint() -> str:
        return f" (/readyz answers {last}: is Redis at REDIS_URL reachable?)" if last else ""

    processes.wait_until(
        f"{name} ({url})", ready, timeout=config.dev.ready_timeout, check=runner.check, hint=hint
    )


def run(runner: Runner) -> None:
    config = load_config(Path(os.environ.get("DEV_ENV_FILE") or ROOT / ".env"))
    dev, gateway, web = config.dev, config.gateway, config.web
    ports = {"HTTPS_PORT": dev.https_port, "HTTP_PORT": dev.http_port}
    ports |= {"GATEWAY_PORT": gateway.port, "WEB_PORT": web.port}
    if config.own_redis:
        ports["REDIS_PORT"] = dev.redis_port
    for name, port in ports.items():
        if not 1 <= port <= 65535:
            raise AbortError(f"{name}={port} is not a port number (1..65535)")
        clash = [other for other, value in ports.items() if value == port and other != name]
        if clash:
            raise AbortError(f"{name} and {clash[0]} are both {port}; give each its own port")

    tools = ensure_tools(
        ["redis-server", "nginx", "openssl"] if config.own_redis else ["nginx", "openssl"],
        config.env.get("PATH"),
    )
    check_services_installed()
    check_port_free(dev.https_port, "0.0.0.0", "HTTPS_PORT")
    check_port_free(dev.http_port, "0.0.0.0", "HTTP_PORT")
    check_port_free(gateway.port, gateway.host, "GATEWAY_PORT")
    check_port_free(web.port, web.host, "WEB_PORT")
    if config.own_redis:
        check_port_free(dev.redis_port, "127.0.0.1", "REDIS_PORT")

    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    cert, key = render_nginx.ensure_cert(tools["openssl"], run_dir / "tls")

    # OPENAI_* (the API key above all) goes to the gateway only.
    child_env = {k: v for k, v in config.env.items() if not k.startswith("OPENAI_")}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    if config.own_redis:
        child_env["REDIS_URL"] = start_redis(runner, config, child_env)
    else:
        check_redis_url(gateway.redis_url)

    services = (("gateway", gateway.host, gateway.port), ("web", web.host, web.port))
    for name, _host, _port in services:
        service_env = config.env | child_env if name == "gateway" else child_env
        command = [sys.executable, "-m", f"chatrelay_{name}"]
        # cwd: the run folder, where no .env adds to what they were given.
        runner.adopt(
            processes.start(
                name, command, env=service_env, cwd=run_dir, own_group=True, die_with_parent=True
            )
        )
    for name, host, port in services:
        wait_ready(runner, config, name, host, port)
        say(f"{name} ready on http://{host}:{port}")

    nginx_dir = run_dir / "nginx"
    conf = render_nginx.render_run_dir(
        nginx_dir,
        {
            "HTTPS_PORT": str(dev.https_port),
            "HTTP_PORT": str(dev.http_port),
            "WEB_UPSTREAM": f"{web.host}:{web.port}",
            "GATEWAY_UPSTREAM": f"{gateway.host}:{gateway.port}",
            "TLS_CERT": str(cert),
            "TLS_KEY": str(key),
            # EDGE_* limits from the environment/.env; unset: infra/nginx/limits.env.
            **{name: config.env.get(name, "") for name in render_nginx.defaults()},
        },
    )
    runner.adopt(
        processes.start_nginx(
            conf,
            dev.https_port,
            env=child_env,
            timeout=dev.ready_timeout,
            own_group=True,
            die_with_parent=True,
        )
    )

    url = "https://localhost" + ("" if dev.https_port == 443 else f":{dev.https_port}")
    print(f"chatrelay is up: {url}", flush=True)
    print(model_line(gateway), flush=True)
    say(
        f"self-signed certificate: {cert} (curl -k, or trust it); "
        f"http://localhost:{dev.http_port} redirects; logs in {nginx_dir / 'logs'}; "
        "Ctrl-C stops everything"
    )
    while True:
        runner.check()
        time.sleep(0.2)


def main() -> int:
    runner = Runner()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, runner.on_signal)
    status = 0
    try:
        run(runner)
    except AbortError as exc:
        status = exc.status
        say(str(exc))
    except (processes.StartError, render_nginx.EdgeError) as exc:
        status = 1
        say(str(exc))
    finally:
        runner.stop_all()
    if status == 0:
        say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
