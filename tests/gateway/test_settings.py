"""The upstream the gateway calls: a normalised base URL, or in demo mode itself, at an
address where it actually listens."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from chatrelay_gateway._demo import demo_reply
from chatrelay_gateway._settings import GatewaySettings

from tests.support.api import create_session, send_message
from tests.support.services import run_service


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what each test passes counts: no OPENAI_*/GATEWAY_* variable, no ``.env``."""
    monkeypatch.chdir(tmp_path)
    for name in os.environ:
        if name.startswith(("OPENAI_", "GATEWAY_")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.openai.com", "https://api.openai.com/v1"),
        ("https://api.openai.com/", "https://api.openai.com/v1"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001/v1"),
        ("http://127.0.0.1:8001/demo/v1", "http://127.0.0.1:8001/demo/v1"),
        ("http://localhost:11434/v1/", "http://localhost:11434/v1"),
        ("https://example.com/openai/v1", "https://example.com/openai/v1"),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "https://generativelanguage.googleapis.com/v1beta/openai",
        ),
    ],
)
def test_the_base_url_is_normalised(given: str, expected: str) -> None:
    settings = GatewaySettings(OPENAI_BASE_URL=given)  # type: ignore[call-arg]
    assert settings.upstream_base_url == expected


def test_no_base_url_means_openai() -> None:
    settings = GatewaySettings(OPENAI_API_KEY="sk-x")  # type: ignore[call-arg]
    assert settings.upstream_base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:9001/demo/v1"),
        ("127.0.0.5", "http://127.0.0.5:9001/demo/v1"),
        ("0.0.0.0", "http://127.0.0.1:9001/demo/v1"),
        ("::", "http://[::1]:9001/demo/v1"),
        ("::1", "http://[::1]:9001/demo/v1"),
        ("192.0.2.7", "http://192.0.2.7:9001/demo/v1"),
        ("fd00::7", "http://[fd00::7]:9001/demo/v1"),
        ("localhost", "http://localhost:9001/demo/v1"),
    ],
)
def test_demo_mode_calls_the_address_the_gateway_listens_on(host: str, expected: str) -> None:
    settings = GatewaySettings(GATEWAY_HOST=host, GATEWAY_PORT=9001)  # type: ignore[call-arg]
    assert settings.demo
    assert settings.upstream_base_url == expected


def _non_loopback_ipv4() -> str | None:
    """The source address of the default route (connecting UDP sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: never answers, only routed
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_a_demo_gateway_on_a_non_loopback_address_answers(
    redis_server_url: str, tmp_path: Path
) -> None:
    host = _non_loopback_ipv4()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    env = {"REDIS_URL": redis_server_url, "GATEWAY_DEMO_TOKEN_DELAY": "0"}
    with run_service("gateway", env, tmp_path, host=host) as gateway:
        url = gateway.url
        async with httpx.AsyncClient(timeout=10) as client:
            session_id = await create_session(client, url)
            ids = await send_message(client, url, session_id, "Hello there")
            deadline = time.monotonic() + 30
            while True:
                response = await client.get(f"{url}/api/sessions/{session_id}")
                reply = response.json()["messages"][-1]
                if reply["status"] != "streaming" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
    print(f"gateway on {host}: reply {reply['status']}, {len(reply['content'])} chars")
    assert reply["id"] == ids["reply_id"]
    assert (reply["status"], reply["content"]) == ("complete", demo_reply("Hello there"))
