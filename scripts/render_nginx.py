"""The native edge's run folder: the config rendered by ``infra/nginx/render.sh`` and the
certificate made by ``infra/nginx/self-signed.sh`` — the same two scripts the edge image runs,
so the native edge (make dev, the bench, the tests) and the compose one cannot drift apart.

``render_run_dir(run_dir, values)`` writes ``chatrelay.conf`` (the template rendered with
``values``; an empty or missing EDGE_* limit takes its default from ``infra/nginx/limits.env``)
next to a copy of ``infra/nginx/nginx.conf``, plus the ``logs``/``temp`` folders, and returns
the path of ``nginx.conf``: start it with ``processes.start_nginx``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CERT_MAKER",
    "DEFAULTS_FILE",
    "NGINX_DIR",
    "RENDERER",
    "TEMPLATE",
    "WRAPPER",
    "EdgeError",
    "defaults",
    "ensure_cert",
    "placeholders",
    "render",
    "render_run_dir",
    "render_text",
]

NGINX_DIR = Path(__file__).resolve().parent.parent / "infra" / "nginx"
TEMPLATE = NGINX_DIR / "chatrelay.conf.template"
WRAPPER = NGINX_DIR / "nginx.conf"
DEFAULTS_FILE = NGINX_DIR / "limits.env"
RENDERER = NGINX_DIR / "render.sh"
CERT_MAKER = NGINX_DIR / "self-signed.sh"

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class EdgeError(ValueError):
    """render.sh refused a value, or self-signed.sh could not make a certificate (their
    message)."""


def placeholders() -> set[str]:
    """The ``${NAME}`` placeholders the template uses: the names render.sh needs."""
    return set(_PLACEHOLDER.findall(TEMPLATE.read_text(encoding="utf-8")))


def defaults() -> dict[str, str]:
    """``NAME=value`` lines of limits.env: the values a name takes when none is given."""
    found: dict[str, str] = {}
    for raw in DEFAULTS_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value.strip()
    return found


def _script_env(values: Mapping[str, str]) -> dict[str, str]:
    # Only the given values: a stray EDGE_* or *_PORT of the caller's shell must not leak in.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **values}


def render(values: Mapping[str, str], out: Path) -> str:
    """Render the template into ``out`` with render.sh; returns the text written."""
    done = subprocess.run(
        ["sh", str(RENDERER), str(out)],
        env=_script_env(values),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise EdgeError(done.stderr.strip() or f"render.sh exited {done.returncode}")
    return out.read_text(encoding="utf-8")


def render_text(values: Mapping[str, str]) -> str:
    """The rendered config as text, written nowhere that stays."""
    with tempfile.TemporaryDirectory(prefix="chatrelay-render-") as folder:
        return render(values, Path(folder) / "chatrelay.conf")


def render_run_dir(run_dir: Path, values: Mapping[str, str]) -> Path:
    """Write ``chatrelay.conf``, ``nginx.conf`` and the log/temp folders into ``run_dir``;
    returns the path of ``nginx.conf`` (``nginx -p run_dir -c <it>``)."""
    run_dir = run_dir.resolve()
    for sub in ("logs", "temp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    render(values, run_dir / "chatrelay.conf")
    conf = run_dir / "nginx.conf"
    shutil.copyfile(WRAPPER, conf)
    return conf


def ensure_cert(openssl: str, tls_dir: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` in ``tls_dir``: self-signed.sh keeps one valid for another day,
    else makes a new one."""
    done = subprocess.run(
        ["sh", str(CERT_MAKER), str(tls_dir), hostname],
        env={**os.environ, "OPENSSL": openssl},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise EdgeError(done.stderr.strip() or f"self-signed.sh exited {done.returncode}")
    return tls_dir / "cert.pem", tls_dir / "key.pem"
