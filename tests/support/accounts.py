"""Accounts for tests: the users CLI as an operator runs it, and logins over HTTP."""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass

import httpx
from chatrelay_common import AUTH_COOKIE

__all__ = [
    "CliResult",
    "add_user",
    "from_address",
    "log_in",
    "new_username",
    "run_users_cli",
    "with_cookie",
]

# Fresh documentation-range addresses: the login throttle counts failures per address in
# the shared Redis, so tests must not eat into each other's allowance.
_addresses = (f"203.0.113.{n % 250}" for n in itertools.count(1))


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def run_users_cli(redis_url: str, *args: str, stdin: str = "") -> CliResult:
    """``python -m chatrelay_gateway users ARGS`` with ``stdin`` piped in (not a terminal)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHATRELAY_", "SITE_"))},
        "REDIS_URL": redis_url,
        "CHATRELAY_ACCOUNTS": "1",
        "PYTHONIOENCODING": "utf-8",
        "REDIS_CONNECT_TIMEOUT": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "chatrelay_gateway", "users", *args],
        input=stdin.encode(),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    return CliResult(done.returncode, done.stdout.decode(), done.stderr.decode())


def new_username(prefix: str = "user") -> str:
    """Users live in the shared Redis: each test makes names of its own."""
    return f"{prefix}-{secrets.token_hex(4)}"


def add_user(redis_url: str, password: str, prefix: str = "user") -> str:
    """A new user, added with the CLI; its stored (lower-case) name."""
    name = new_username(prefix)
    result = run_users_cli(redis_url, "add", name, stdin=f"{password}\n")
    assert (result.code, result.out) == (0, f"added user {name!r}\n"), result.err
    return name


def from_address(address: str | None = None) -> dict[str, str]:
    """Headers making a service see the request as coming from ``address``."""
    return {"x-forwarded-for": address or next(_addresses)}


def with_cookie(token: str) -> dict[str, str]:
    return {"cookie": f"{AUTH_COOKIE}={token}"}


async def log_in(client: httpx.AsyncClient, url: str, username: str, password: str) -> str:
    response = await client.post(
        f"{url}/api/login",
        json={"username": username, "password": password},
        headers=from_address(),
    )
    assert response.status_code == 204, response.text
    token = response.cookies[AUTH_COOKIE]
    assert token
    return token
