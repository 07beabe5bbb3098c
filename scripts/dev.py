"""Run the whole product natively: Redis, gateway, web and nginx (TLS + HTTP/2).

``make dev`` runs this with .venv/bin/python. Standard library only.

- Missing redis-server / nginx / openssl: installed with apt-get on Debian/Ubuntu as root,
  otherwise it stops at once and names what to install.
- ``.env`` (KEY=VALUE lines; ``DEV_ENV_FILE`` names another) is read when present; the
  environment wins.
- Everything it makes lives in ``.run/`` (``DEV_RUN_DIR`` moves it): a self-signed cert in
  ``tls/`` (made once, reused), Redis data in ``redis/``, the rendered edge in ``nginx/``.
- Redis: a local ``redis-server`` on REDIS_PORT (6379) unless REDIS_URL is set.
- Ports (defaults): HTTPS_PORT 8443, HTTP_PORT 8080 (redirects), GATEWAY_PORT 8001,
  WEB_PORT 8002, REDIS_PORT 6379. A port in use stops it before anything starts.
- Ctrl-C / SIGTERM stops what it started, newest first, by pid (nginx with QUIT). A child
  that exits on its own stops the rest; the exit status says which one.
- OPENAI_API_KEY is passed to the gateway and never printed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # `python scripts/dev.py`: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts import render_nginx

ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"redis-server": "redis-server", "nginx": "nginx", "openssl": "openssl"}  # cmd: package
# Debian keeps nginx in /usr/sbin, which a non-root PATH may lack.
EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
DEFAULTS = {
    "HTTPS_PORT": "8443",
    "HTTP_PORT": "8080",
    "GATEWAY_HOST": "127.0.0.1",
    "GATEWAY_PORT": "8001",
    "WEB_HOST": "127.0.0.1",
    "WEB_PORT": "8002",
    "REDIS_PORT": "6379",
}
READY_TIMEOUT = float(os.environ.get("DEV_READY_TIMEOUT", "30"))
STOP_GRACE = 8.0


class AbortError(Exception):
    """Stop the runner with a message and an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def say(message: str) -> None:
    print(f"dev: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environment


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments, blank lines and ``export`` are allowed; one pair
    of matching quotes around the value is removed. Nothing is expanded."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_env(env_file: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``env_file`` (if present), overridden by ``environ``, then our defaults."""
    env: dict[str, str] = {}
    if env_file.is_file():
        env.update(parse_env_file(env_file.read_text(encoding="utf-8")))
    env.update(environ)
    for key, value in DEFAULTS.items():
        if not env.get(key):
            env[key] = value
    return env


def port_of(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise AbortError(f"{name}={value!r} is not a port number (1..65535)")
    return int(value)


def demo_mode(env: Mapping[str, str]) -> bool:
    return not env.get("OPENAI_API_KEY") and not env.get("OPENAI_BASE_URL")


def model_line(env: Mapping[str, str]) -> str:
    if demo_mode(env):
        return "model: built-in demo model (set OPENAI_API_KEY or OPENAI_BASE_URL for a real one)"
    url = urllib.parse.urlsplit(env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
    host = url.hostname or "?"
    where = f"{url.scheme}://{host}{f':{url.port}' if url.port else ''}{url.path}"
    key = "API key set" if env.get("OPENAI_API_KEY") else "no API key"
    model = env.get("OPENAI_MODEL") or "default model"
    return f"model: {model} at {where} ({key})"


# --------------------------------------------------------------------------- tools


def find_tool(name: str, path: str | None) -> str | None:
    found = shutil.which(name, path=path)
    if found:
        return found
    for folder in EXTRA_BIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def is_debian_like() -> bool:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return Path("/etc/debian_version").exists()
    fields = dict(parse_env_file(text))
    ids = {fields.get("ID", "")} | set(fields.get("ID_LIKE", "").split())
    return bool(ids & {"debian", "ubuntu"})


def ensure_tools(names: list[str], env: Mapping[str, str]) -> dict[str, str]:
    """Paths of the tools; apt-get installs missing ones on Debian/Ubuntu as root."""
    path = env.get("PATH")
    missing = [name for name in names if find_tool(name, path) is None]
    if missing:
        packages = [TOOLS[name] for name in missing]
        can_apt = os.geteuid() == 0 and is_debian_like() and shutil.which("apt-get")
        if not can_apt:
            raise AbortError(
                f"missing: {', '.join(missing)}. Install {' '.join(packages)} "
                f"(Debian/Ubuntu: sudo apt-get install -y {' '.join(packages)}; "
                f"macOS: brew install {' '.join(p.removesuffix('-server') for p in packages)})"
            )
        say(f"installing {' '.join(packages)} with apt-get")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
            if subprocess.run(argv, env=apt_env, check=False).returncode != 0:
                raise AbortError(
                    f"`{' '.join(argv)}` failed; install {' '.join(packages)} yourself"
                )
    tools: dict[str, str] = {}
    for name in names:
        found = find_tool(name, path)
        if found is None:
            raise AbortError(f"{name} is still missing after apt-get install")
        tools[name] = found
    return tools


# --------------------------------------------------------------------------- ports, probes


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


def http_status(host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def check_redis_url(redis_url: str) -> None:
    """Fail fast when the user's Redis does not even accept a connection."""
    url = urllib.parse.urlsplit(redis_url)
    if url.scheme not in ("redis", "rediss"):
        say(f"using REDIS_URL ({url.scheme}://...) from the environment / .env")
        return
    where = f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"  # no password in messages
    if not tcp_open(url.port or 6379, url.hostname or "127.0.0.1"):
        raise AbortError(
            f"REDIS_URL points at {where}, which does not accept connections; start that "
            "Redis, or unset REDIS_URL and dev.py starts a local one"
        )
    say(f"using the Redis at {where} (REDIS_URL)")


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- children


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the runner dies (Linux), own process group
    so that the terminal's Ctrl-C reaches only the runner, which stops children in order."""
    os.setpgrp()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    stop_signal: signal.Signals
    log: Path | None = None

    def describe_exit(self) -> str:
        code = self.proc.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        text = f"{self.name} {how}"
        if self.log is not None and self.log.is_file():
            tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
            if tail:
                text += f"; last lines of {self.log}:\n  " + "\n  ".join(tail)
        return text


@dataclass
class Runner:
    children: list[Child] = field(default_factory=list)
    stop_requested: signal.Signals | None = None

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_requested is None:
            self.stop_requested = signal.Signals(signum)
        else:  # second Ctrl-C: do not wait for graceful stops
            for child in self.children:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()

    def start(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        log: Path | None = None,
    ) -> Child:
        self.check()
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # the runner has no threads
        )
        child = Child(name, proc, stop_signal, log)
        self.children.append(child)
        say(f"started {name} (pid {proc.pid})")
        return child

    def check(self) -> None:
        """Raise AbortError when a stop was asked for or a child has exited."""
        if self.stop_requested is not None:
            raise AbortError(f"got {self.stop_requested.name}", status=0)
        for child in self.children:
            if child.proc.poll() is not None:
                raise AbortError(child.describe_exit() + "; stopping the rest")

    def wait_until(
        self,
        what: str,
        ready: Callable[[], bool],
        timeout: float,
        hint: Callable[[], str] = str,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                raise AbortError(f"{what} not ready after {timeout:.0f} s{hint()}; stopping")
            time.sleep(0.1)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            proc = child.proc
            if proc.poll() is not None:
                continue
            say(f"stopping {child.name} (pid {proc.pid}, {child.stop_signal.name})")
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(child.stop_signal)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in {STOP_GRACE:.0f} s; killing it")
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- steps


def ensure_cert(openssl: str, tls_dir: Path) -> tuple[Path, Path]:
    """Self-signed localhost cert, made once and reused until it is about to expire."""
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert.is_file() and key.is_file():
        still_valid = subprocess.run(
            [openssl, "x509", "-checkend", "86400", "-noout", "-in", str(cert)],
            capture_output=True,
            check=False,
        )
        if still_valid.returncode == 0:
            return cert, key
    tls_dir.mkdir(parents=True, exist_ok=True)
    say(f"making a self-signed certificate for localhost in {tls_dir}")
    made = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "365",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        raise AbortError(f"openssl failed: {made.stderr.decode(errors='replace').strip()}")
    key.chmod(0o600)
    return cert, key


def wait_ready(runner: Runner, name: str, host: str, port: int) -> None:
    last: int | None = None

    def ready() -> bool:
        nonlocal last
        last = http_status(host, port, "/readyz")
        return last == 200

    def hint() -> str:
        return f" (/readyz answers {last}: is Redis at REDIS_URL reachable?)" if last else ""

    runner.wait_until(f"{name} (http://{host}:{port}/readyz)", ready, READY_TIMEOUT, hint)


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


def run(runner: Runner, environ: Mapping[str, str]) -> None:
    env = load_env(Path(environ.get("DEV_ENV_FILE") or ROOT / ".env"), environ)
    run_dir = Path(env.get("DEV_RUN_DIR") or ROOT / ".run")
    if not run_dir.is_absolute():
        run_dir = ROOT / run_dir
    own_redis = not env.get("REDIS_URL")

    ports = {name: port_of(env, name) for name in ("HTTPS_PORT", "HTTP_PORT")}
    ports |= {name: port_of(env, name) for name in ("GATEWAY_PORT", "WEB_PORT")}
    if own_redis:
        ports["REDIS_PORT"] = port_of(env, "REDIS_PORT")
    clashes = {port: [n for n, p in ports.items() if p == port] for port in ports.values()}
    for port, names in clashes.items():
        if len(names) > 1:
            raise AbortError(f"{' and '.join(names)} are both {port}; give each its own port")

    tools = ensure_tools(
        ["redis-server", "nginx", "openssl"] if own_redis else ["nginx", "openssl"], env
    )
    check_services_installed()
    check_port_free(ports["HTTPS_PORT"], "0.0.0.0", "HTTPS_PORT")
    check_port_free(ports["HTTP_PORT"], "0.0.0.0", "HTTP_PORT")
    check_port_free(ports["GATEWAY_PORT"], env["GATEWAY_HOST"], "GATEWAY_PORT")
    check_port_free(ports["WEB_PORT"], env["WEB_HOST"], "WEB_PORT")
    if own_redis:
        check_port_free(ports["REDIS_PORT"], "127.0.0.1", "REDIS_PORT")

    cert, key = ensure_cert(tools["openssl"], run_dir / "tls")

    # OPENAI_* (the API key above all) goes to the gateway only.
    child_env = {k: v for k, v in env.items() if not k.startswith("OPENAI_")}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    if own_redis:
        redis_dir = run_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        redis_log = redis_dir / "redis.log"
        port = ports["REDIS_PORT"]
        runner.start(
            "redis",
            [
                tools["redis-server"],
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                # Every acknowledged write on disk: a crash then loses no event.
                "--appendfsync",
                "always",
                "--logfile",
                str(redis_log),
            ],
            child_env,
            log=redis_log,
        )
        runner.wait_until("redis", lambda: redis_pong(port), READY_TIMEOUT)
        child_env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        say(f"redis up on 127.0.0.1:{port} (data in {redis_dir})")
    else:
        check_redis_url(env["REDIS_URL"])

    services = (("gateway", "GATEWAY"), ("web", "WEB"))
    for name, _prefix in services:
        service_env = env | child_env if name == "gateway" else child_env
        runner.start(name, [sys.executable, "-m", f"chatrelay_{name}"], service_env)
    for name, prefix in services:
        host, port = env[f"{prefix}_HOST"], ports[f"{prefix}_PORT"]
        wait_ready(runner, name, host, port)
        say(f"{name} ready on http://{host}:{port}")

    nginx_dir = run_dir / "nginx"
    conf = render_nginx.render_run_dir(
        nginx_dir,
        {
            "HTTPS_PORT": str(ports["HTTPS_PORT"]),
            "HTTP_PORT": str(ports["HTTP_PORT"]),
            "WEB_UPSTREAM": f"{env['WEB_HOST']}:{ports['WEB_PORT']}",
            "GATEWAY_UPSTREAM": f"{env['GATEWAY_HOST']}:{ports['GATEWAY_PORT']}",
            "TLS_CERT": str(cert),
            "TLS_KEY": str(key),
            # EDGE_* abuse limits from the environment/.env; unset: infra/nginx/limits.env.
            **{name: env.get(name, "") for name in render_nginx.LIMITS},
        },
    )
    nginx = [tools["nginx"], "-p", str(nginx_dir), "-c", str(conf)]
    tested = subprocess.run([*nginx, "-t", "-q"], capture_output=True, check=False)
    if tested.returncode != 0:
        raise AbortError(f"nginx config test failed:\n{tested.stderr.decode(errors='replace')}")
    runner.start(
        "nginx", nginx, child_env, stop_signal=signal.SIGQUIT, log=nginx_dir / "logs" / "error.log"
    )
    runner.wait_until("nginx", lambda: tcp_open(ports["HTTPS_PORT"]), READY_TIMEOUT)

    https = ports["HTTPS_PORT"]
    url = "https://localhost" + ("" if https == 443 else f":{https}")
    print(f"chatrelay is up: {url}", flush=True)
    print(model_line(env), flush=True)
    say(
        f"self-signed certificate: {cert} (curl -k, or trust it); "
        f"http://localhost:{ports['HTTP_PORT']} redirects; logs in {nginx_dir / 'logs'}; "
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
        run(runner, os.environ)
    except AbortError as exc:
        status = exc.status
        say(str(exc))
    except render_nginx.RenderError as exc:
        status = 1
        say(f"nginx config: {exc}")
    finally:
        runner.stop_all()
    if status == 0:
        say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
