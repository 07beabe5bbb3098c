"""Who is asking, as both services learn it, served by a real uvicorn: the open mode's owner
cookie (made once, then reused; one list per browser) and ``SITE_PASSWORD``'s one owner."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatrelay_common import AUTH_COOKIE, LoginTokens, open_redis
from chatrelay_litestar import OWNER_COOKIE, SITE_OWNER, is_anonymous_owner

from tests.support.services import run_app

PASSWORD = "identity-password"
SECRET = "identity-secret-0123456789abcdef0123456789"
FOUR_HUNDRED_DAYS = str(400 * 24 * 3600)


def _identity_app(log_dir: Path, env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SITE_PASSWORD"} | env
    factory = "tests.litestar_kit.identity_app:create_app"
    return run_app("identity", factory, environment, log_dir)


@pytest.fixture(scope="module")
def open_url(redis_server_url: str, service_logs: Path) -> Iterator[str]:
    with _identity_app(service_logs, {"REDIS_URL": redis_server_url}) as url:
        yield url


@pytest.fixture(scope="module")
def locked_url(redis_server_url: str, service_logs: Path) -> Iterator[str]:
    env = {"REDIS_URL": redis_server_url, "SITE_PASSWORD": PASSWORD, "CHATRELAY_SECRET": SECRET}
    with _identity_app(service_logs, env) as url:
        yield url


class _Forgetful(httpx.AsyncClient):
    """Keeps no cookies between requests: each test says exactly what it sends."""

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = await super().send(request, **kwargs)
        self.cookies.clear()
        return response


@pytest.fixture
async def plain() -> AsyncIterator[httpx.AsyncClient]:
    async with _Forgetful(timeout=10) as client:
        yield client


def _set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            found[name] = cookie
    return found


async def test_open_mode_makes_an_owner_once_and_reuses_it(
    open_url: str, plain: httpx.AsyncClient
) -> None:
    first = await plain.get(f"{open_url}/who")
    assert first.status_code == 200
    owner = first.json()["owner"]
    assert first.json() == {"owner": owner, "user": None}
    assert is_anonymous_owner(owner), owner
    assert len(owner) == 24, owner
    set_cookie = first.headers.get_list("set-cookie")
    assert len(set_cookie) == 1, set_cookie
    morsel = _set_cookies(first)[OWNER_COOKIE][OWNER_COOKIE]
    assert morsel.value == owner
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert morsel["max-age"] == FOUR_HUNDRED_DAYS
    assert not morsel["secure"], "plain HTTP with no edge: a Secure cookie would be dropped"

    again = await plain.get(f"{open_url}/who", headers={"cookie": f"{OWNER_COOKIE}={owner}"})
    assert again.json() == {"owner": owner, "user": None}
    assert "set-cookie" not in again.headers
    bare = await plain.get(f"{open_url}/who/bare", headers={"cookie": f"{OWNER_COOKIE}={owner}"})
    assert bare.json() == {"owner": owner, "user": None}


async def test_two_browsers_are_two_owners(open_url: str, plain: httpx.AsyncClient) -> None:
    one = (await plain.get(f"{open_url}/who")).json()["owner"]
    other = (await plain.get(f"{open_url}/who")).json()["owner"]
    assert one != other
    assert is_anonymous_owner(one)
    assert is_anonymous_owner(other)


@pytest.mark.parametrize(
    "forged",
    ["site", "u:alice", "o:short", "o:" + "a" * 23, "o:" + "!" * 22, "x" * 5000],
)
async def test_open_mode_replaces_an_owner_it_did_not_make(
    open_url: str, plain: httpx.AsyncClient, forged: str
) -> None:
    answer = await plain.get(f"{open_url}/who", headers={"cookie": f"{OWNER_COOKIE}={forged}"})
    assert answer.status_code == 200
    owner = answer.json()["owner"]
    assert owner != forged
    assert is_anonymous_owner(owner)
    assert _set_cookies(answer)[OWNER_COOKIE][OWNER_COOKIE].value == owner


async def test_the_cookie_is_secure_behind_an_https_edge(
    open_url: str, plain: httpx.AsyncClient
) -> None:
    answer = await plain.get(f"{open_url}/who", headers={"x-forwarded-proto": "https"})
    assert _set_cookies(answer)[OWNER_COOKIE][OWNER_COOKIE]["secure"] is True


async def test_a_route_that_does_not_ask_sets_no_cookie(
    open_url: str, plain: httpx.AsyncClient
) -> None:
    answer = await plain.get(f"{open_url}/anonymous")
    assert answer.json() == {"asked": "nobody"}
    assert "set-cookie" not in answer.headers
    bare = await plain.get(f"{open_url}/who/bare")
    assert is_anonymous_owner(bare.json()["owner"])
    assert "set-cookie" not in bare.headers, "a bare endpoint only reads: nothing to keep"


async def test_site_password_is_one_owner_for_every_login(
    locked_url: str, plain: httpx.AsyncClient, redis_server_url: str
) -> None:
    denied = await plain.get(f"{locked_url}/who")
    assert denied.status_code == 401
    async with open_redis(redis_server_url) as redis:
        tokens = LoginTokens(redis, password=PASSWORD, max_age=3600, configured_secret=SECRET)
        logins = [await tokens.issue(), await tokens.issue()]
    for token in logins:
        for path in ("/who", "/who/bare"):
            answer = await plain.get(
                f"{locked_url}{path}",
                headers={"cookie": f"{AUTH_COOKIE}={token}; {OWNER_COOKIE}=o:{'a' * 22}"},
            )
            assert answer.json() == {"owner": SITE_OWNER, "user": None}
            assert "set-cookie" not in answer.headers
