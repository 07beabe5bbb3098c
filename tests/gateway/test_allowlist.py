"""No open relay: OPENAI_MODELS is the allowlist, checked on create, PATCH, send and
regenerate; it defaults to the default model alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chatrelay_gateway._settings import GatewaySettings
from pydantic import ValidationError

from tests.conftest import _keyed_gateway
from tests.support.api import create_session
from tests.support.fake_upstream import FakeUpstream
from tests.support.services import Service


def _gateway(redis_url: str, fake: FakeUpstream, logs: Path, **env: str) -> Iterator[Service]:
    """A keyed gateway whose allowlist is only what ``env`` says (empty means unset)."""
    yield from _keyed_gateway(redis_url, fake.base_url, logs, **{"OPENAI_MODELS": "", **env})


@pytest.fixture(scope="module")
def listed_gateway(
    redis_server_url: str, fake_upstream_server: FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    """Allows ``ok`` and ``slow``; ``ok`` by default."""
    yield from _gateway(
        redis_server_url,
        fake_upstream_server,
        service_logs,
        OPENAI_MODELS=" ok, slow,,ok ",
        OPENAI_MODEL="ok",
    )


@pytest.fixture(scope="module")
def narrowed_gateway(
    redis_server_url: str, fake_upstream_server: FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    """The operator's list after ``slow`` was removed: OPENAI_MODEL alone."""
    yield from _gateway(redis_server_url, fake_upstream_server, service_logs, OPENAI_MODEL="ok")


async def test_create_with_a_model_not_listed_is_422_naming_the_allowed_ones(
    client: httpx.AsyncClient, listed_gateway: Service, fake_upstream: FakeUpstream
) -> None:
    url = f"{listed_gateway.url}/api/sessions"
    refused = await client.post(url, json={"model": "gpt-4.5-preview"})
    assert (refused.status_code, refused.json()) == (
        422,
        {"detail": "Model 'gpt-4.5-preview' is not allowed here. Allowed: ok, slow"},
    )
    for model in ("ok", "slow"):
        created = await client.post(url, json={"model": model})
        assert created.status_code == 201
        snapshot = await client.get(f"{url}/{created.json()['id']}")
        assert snapshot.json()["settings"]["model"] == model
    assert fake_upstream.requests == []


async def test_patch_to_a_model_not_listed_is_422_and_changes_nothing(
    client: httpx.AsyncClient, listed_gateway: Service
) -> None:
    session_id = await create_session(client, listed_gateway.url, temperature=0.5)
    url = f"{listed_gateway.url}/api/sessions/{session_id}"
    refused = await client.patch(url, json={"model": "o1", "temperature": 1.0})
    assert (refused.status_code, refused.json()) == (
        422,
        {"detail": "Model 'o1' is not allowed here. Allowed: ok, slow"},
    )
    settings = {"system": None, "model": "ok", "temperature": 0.5}
    assert (await client.get(url)).json()["settings"] == settings
    allowed = await client.patch(url, json={"model": "slow"})
    assert (allowed.status_code, allowed.json()) == (
        200,
        {"settings": {**settings, "model": "slow"}},
    )


async def test_the_allowed_models_are_listed(
    client: httpx.AsyncClient, listed_gateway: Service
) -> None:
    listed = await client.get(f"{listed_gateway.url}/api/models")
    assert (listed.status_code, listed.json()) == (
        200,
        {"models": ["ok", "slow"], "default": "ok", "data": [{"id": "ok"}, {"id": "slow"}]},
    )


async def test_without_a_list_only_the_default_model_is_allowed(
    client: httpx.AsyncClient, narrowed_gateway: Service, demo_gateway: Service
) -> None:
    refused = await client.post(f"{narrowed_gateway.url}/api/sessions", json={"model": "slow"})
    assert (refused.status_code, refused.json()) == (
        422,
        {"detail": "Model 'slow' is not allowed here. Allowed: ok"},
    )
    demo = await client.post(f"{demo_gateway.url}/api/sessions", json={"model": "gpt-4o"})
    assert (demo.status_code, demo.json()) == (
        422,
        {"detail": "Model 'gpt-4o' is not allowed here. Allowed: chatrelay-demo"},
    )
    listed = await client.get(f"{demo_gateway.url}/api/models")
    assert listed.json() == {
        "models": ["chatrelay-demo"],
        "default": "chatrelay-demo",
        "data": [{"id": "chatrelay-demo"}],
    }


async def test_a_stored_model_no_longer_allowed_sends_nothing_upstream(
    client: httpx.AsyncClient,
    listed_gateway: Service,
    narrowed_gateway: Service,
    fake_upstream: FakeUpstream,
) -> None:
    """A session made while ``slow`` was allowed, used after the operator removed it."""
    session_id = await create_session(client, listed_gateway.url, model="slow")
    url = f"{narrowed_gateway.url}/api/sessions/{session_id}"
    detail = "This session's model 'slow' is not allowed here; pick another with PATCH. Allowed: ok"
    sent = await client.post(f"{url}/messages", json={"content": "hi"})
    assert (sent.status_code, sent.json()) == (422, {"detail": detail})
    again = await client.post(f"{url}/regenerate")
    assert (again.status_code, again.json()) == (422, {"detail": detail})
    assert fake_upstream.requests == []
    snapshot = (await client.get(url)).json()
    assert (snapshot["messages"], snapshot["seq"]) == ([], 0)
    # Switching to an allowed model makes the session usable again.
    assert (await client.patch(url, json={"model": "ok"})).status_code == 200
    assert (await client.post(f"{url}/messages", json={"content": "hi"})).status_code == 202


def test_a_default_model_outside_the_list_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match=r"OPENAI_MODEL \(o1\) must be one of"):
        GatewaySettings(OPENAI_API_KEY="sk-x", OPENAI_MODEL="o1", OPENAI_MODELS="ok,slow")  # type: ignore[call-arg]
    listed_first = GatewaySettings(OPENAI_API_KEY="sk-x", OPENAI_MODELS="b,a")  # type: ignore[call-arg]
    assert (listed_first.default_model, listed_first.allowed_models) == ("b", ("b", "a"))
