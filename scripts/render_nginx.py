"""Render the chatrelay edge config (infra/nginx) into a run folder. Standard library only.

The template is envsubst-compatible: it uses only the ``${NAME}`` placeholders listed in
``PLACEHOLDERS``, so docker's nginx image can render the same file. This renderer is stricter
than envsubst: an unknown ``${UPPER_CASE}`` name in the template, a missing value, an extra
value, or a value that could break out of its directive is an error. The abuse limits
(``LIMITS``) are optional: their defaults come from ``infra/nginx/limits.env``.

Used by scripts/dev.py and tests/infra; also a small CLI::

    python scripts/render_nginx.py OUT_DIR   # values from the environment (names below)

then ``nginx -p OUT_DIR -c OUT_DIR/nginx.conf``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "LIMITS",
    "LIMITS_FILE",
    "NGINX_DIR",
    "PLACEHOLDERS",
    "TEMPLATE",
    "WRAPPER",
    "RenderError",
    "limit_defaults",
    "placeholders_in",
    "render",
    "render_run_dir",
    "upstream_servers",
]

NGINX_DIR = Path(__file__).resolve().parent.parent / "infra" / "nginx"
TEMPLATE = NGINX_DIR / "chatrelay.conf.template"
WRAPPER = NGINX_DIR / "nginx.conf"
LIMITS_FILE = NGINX_DIR / "limits.env"

# Abuse limits: positive whole numbers, each optional (default from LIMITS_FILE).
LIMITS: tuple[str, ...] = (
    "EDGE_RATE_PER_IP",
    "EDGE_BURST_PER_IP",
    "EDGE_RATE_TOTAL",
    "EDGE_BURST_TOTAL",
    "EDGE_CONN_PER_IP",
    "EDGE_CONN_TOTAL",
)
PLACEHOLDERS: tuple[str, ...] = (
    "HTTPS_PORT",
    "HTTP_PORT",
    "WEB_UPSTREAM",
    "GATEWAY_UPSTREAM",
    "TLS_CERT",
    "TLS_KEY",
    *LIMITS,
)

# Only UPPER_CASE names are ours; nginx's own variables ($host, ${host}) are lower case.
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_PORT = re.compile(r"[0-9]{1,5}")
# host:port, [v6]:port or unix:/path — one item of an upstream list.
_UPSTREAM_ITEM = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}|unix:/[^\s;{}'\"]+")
# A path must stay one nginx token: no whitespace, quotes, ';', braces or '$'.
_PATH = re.compile(r"[^\s;{}'\"$#\\]+")
_COUNT = re.compile(r"[1-9][0-9]{0,8}")


class RenderError(ValueError):
    """The template or the values do not fit together."""


def placeholders_in(template: str) -> set[str]:
    """The ``${NAME}`` placeholders a template uses."""
    return set(_PLACEHOLDER.findall(template))


def upstream_servers(value: str) -> str:
    """Turn ``"a:1"`` or ``"a:1, b:2"`` (commas or spaces) into ``server`` arguments.

    The template says ``server ${WEB_UPSTREAM};`` so a list becomes ``a:1; server b:2``.
    envsubst (docker) takes a single ``host:port``; a DNS name that resolves to several
    addresses gives several servers there.
    """
    items = [item for item in re.split(r"[,\s]+", value.strip()) if item]
    if not items:
        raise RenderError("empty upstream list")
    for item in items:
        if not _UPSTREAM_ITEM.fullmatch(item):
            raise RenderError(f"bad upstream {item!r}: expected host:port")
        if not item.startswith("unix:"):
            _check_port(item.rsplit(":", 1)[1], item)
    return ";\n    server ".join(items)


def _check_port(value: str, what: str) -> str:
    if not _PORT.fullmatch(value) or not 1 <= int(value) <= 65535:
        raise RenderError(f"bad port {what!r}: expected 1..65535")
    return str(int(value))


def _check_path(value: str, what: str) -> str:
    if not _PATH.fullmatch(value):
        raise RenderError(f"bad {what} path {value!r}: no spaces, quotes, ';', '{{}}', '$'")
    return value


def limit_defaults() -> dict[str, str]:
    """``NAME=value`` lines of LIMITS_FILE (comments and blank lines skipped)."""
    found: dict[str, str] = {}
    for raw in LIMITS_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value.strip()
    if set(found) != set(LIMITS):
        raise RenderError(f"{LIMITS_FILE} must set exactly {', '.join(LIMITS)}")
    return found


def _check_count(value: str, what: str) -> str:
    if not _COUNT.fullmatch(value):
        raise RenderError(f"bad {what} {value!r}: expected a whole number above 0")
    return value


def _checked(given: Mapping[str, str]) -> dict[str, str]:
    values = {**limit_defaults(), **{k: v for k, v in given.items() if v or k not in LIMITS}}
    missing = [name for name in PLACEHOLDERS if not values.get(name)]
    if missing:
        raise RenderError(f"missing value(s) for {', '.join(missing)}")
    extra = sorted(set(values) - set(PLACEHOLDERS))
    if extra:
        raise RenderError(f"unknown name(s) {', '.join(extra)}; known: {', '.join(PLACEHOLDERS)}")
    return {
        "HTTPS_PORT": _check_port(values["HTTPS_PORT"], "HTTPS_PORT"),
        "HTTP_PORT": _check_port(values["HTTP_PORT"], "HTTP_PORT"),
        "WEB_UPSTREAM": upstream_servers(values["WEB_UPSTREAM"]),
        "GATEWAY_UPSTREAM": upstream_servers(values["GATEWAY_UPSTREAM"]),
        "TLS_CERT": _check_path(values["TLS_CERT"], "TLS_CERT"),
        "TLS_KEY": _check_path(values["TLS_KEY"], "TLS_KEY"),
        **{name: _check_count(values[name], name) for name in LIMITS},
    }


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute exactly the ``PLACEHOLDERS``; anything else in ``${UPPER}`` is an error."""
    unknown = placeholders_in(template) - set(PLACEHOLDERS)
    if unknown:
        raise RenderError(f"template uses unknown placeholder(s) {', '.join(sorted(unknown))}")
    checked = _checked(values)
    if checked["HTTPS_PORT"] == checked["HTTP_PORT"]:
        raise RenderError("HTTPS_PORT and HTTP_PORT must differ")
    return _PLACEHOLDER.sub(lambda m: checked[m.group(1)], template)


def render_run_dir(run_dir: Path, values: Mapping[str, str]) -> Path:
    """Write ``nginx.conf`` + ``chatrelay.conf`` and the log/temp folders into ``run_dir``.

    Returns the path of ``nginx.conf``; start with ``nginx -p run_dir -c <that path>``.
    """
    text = render(TEMPLATE.read_text(encoding="utf-8"), values)
    run_dir = run_dir.resolve()
    for sub in ("logs", "temp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    (run_dir / "chatrelay.conf").write_text(text, encoding="utf-8")
    conf = run_dir / "nginx.conf"
    shutil.copyfile(WRAPPER, conf)
    return conf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out_dir", type=Path, help="run folder to write (nginx -p OUT_DIR)")
    args = parser.parse_args(argv)
    values = {name: os.environ.get(name, "") for name in PLACEHOLDERS}  # "" = default limit
    try:
        conf = render_run_dir(args.out_dir, values)
    except RenderError as exc:
        print(f"render_nginx: {exc}", file=sys.stderr)
        return 2
    print(conf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
