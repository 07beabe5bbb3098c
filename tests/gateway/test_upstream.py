"""``stream_chat`` against the fake upstream over a real socket, one test per behaviour."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from chatrelay_common import Usage
from chatrelay_gateway._upstream import (
    CONTENT,
    Completion,
    Piece,
    UpstreamConfig,
    UpstreamError,
    stream_chat,
)

from tests.support import fake_upstream as fake
from tests.support.fake_upstream import FakeUpstream

API_KEY = "sk-test-SECRETSECRETSECRET1234"
MESSAGES = [{"role": "user", "content": "hi"}]
USAGE = Usage(**fake.USAGE)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
        yield client


async def drain(
    pieces: AsyncIterator[Piece | Completion], texts: list[str], thoughts: list[str]
) -> Completion:
    """Every piece of an answer into ``texts`` or ``thoughts``; returns its Completion."""
    async for piece in pieces:
        if isinstance(piece, Completion):
            return piece
        kind, text = piece
        (texts if kind == CONTENT else thoughts).append(text)
    raise AssertionError("no Completion at the end")


class Run:
    """One ``stream_chat`` call; keeps every piece of text and of reasoning."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        api_key: str | None = API_KEY,
        first_byte_timeout: float = 5.0,
        **limits: Any,
    ) -> None:
        self.client = client
        self.config = UpstreamConfig(base_url, api_key, first_byte_timeout, **limits)
        self.pieces: list[str] = []
        self.thoughts: list[str] = []

    async def __call__(self, model: str) -> Completion:
        return await self.send({"model": model, "messages": MESSAGES})

    async def send(self, body: dict[str, Any]) -> Completion:
        stream = stream_chat(self.client, self.config, body)
        return await drain(stream, self.pieces, self.thoughts)

    async def error(self, model: str) -> UpstreamError:
        with pytest.raises(UpstreamError) as info:
            await self(model)
        return info.value


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"not true after {within}s")


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_key_scrubbed(message: str) -> None:
    assert "SECRET" not in message
    assert "1234" not in message
    assert re.findall(r"sk-\S{0,3}", message) == ["sk-***"] * message.count("sk-")


# --- happy paths ---------------------------------------------------------------------------


async def test_ok_collects_exact_text_finish_and_usage(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    assert await run("ok") == Completion("stop", USAGE)
    assert run.pieces == list(fake.OK_PIECES)
    assert "".join(run.pieces) == fake.OK_TEXT == "Hello, world! How can I help?"
    assert fake_upstream.client_disconnects == []


async def test_the_request_asks_for_a_stream_with_usage_and_carries_the_key(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    body = {"model": "ok", "messages": MESSAGES, "temperature": 0.5, "stream": False}
    await run.send(body)

    [(headers, sent)] = fake_upstream.requests
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["accept"] == "text/event-stream"
    assert headers["content-type"] == "application/json"
    assert sent == {
        "model": "ok",
        "messages": MESSAGES,
        "temperature": 0.5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_no_key_sends_no_authorization_header(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url, api_key=None)
    assert await run("ok") == Completion("stop", USAGE)
    [(headers, _)] = fake_upstream.requests
    assert "authorization" not in headers


async def test_finish_reason_length_is_kept(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    assert await run("length") == Completion("length", USAGE)
    assert "".join(run.pieces) == fake.LENGTH_TEXT


async def test_utf8_split_inside_characters_and_lines_arrives_exactly(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    assert await run("utf8") == Completion("stop", USAGE)
    assert run.pieces == list(fake.UTF8_PIECES)
    assert "".join(run.pieces) == fake.UTF8_TEXT == "你好，世界 🌍🚀 再见 👋🏽"  # noqa: RUF001


async def test_a_json_answer_to_a_stream_request_is_taken_whole(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    assert await run("json") == Completion("stop", USAGE)
    assert run.pieces == [fake.JSON_TEXT]


async def test_a_long_json_answer_is_taken_whole(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    # ~90 KB: more than the 64 KiB kept of an error body, a plausible length for one answer.
    assert len(fake.JSON_LONG_TEXT.encode()) > 64 * 1024
    run = Run(client, fake_upstream.base_url)
    assert await run("json_long") == Completion("stop", USAGE)
    assert run.pieces == [fake.JSON_LONG_TEXT]


async def test_finish_reason_without_done_completes(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    assert await run("finish_no_done") == Completion("stop", None)
    assert "".join(run.pieces) == fake.FINISH_NO_DONE_TEXT


async def test_slow_runs_to_the_end(client: httpx.AsyncClient) -> None:
    with FakeUpstream(slow_delay=0.0005) as quick:
        run = Run(client, quick.base_url)
        assert await run("slow") == Completion("stop", USAGE)
        assert run.pieces == list(fake.SLOW_PIECES)
        assert "".join(run.pieces) == fake.SLOW_TEXT
        assert fake.SLOW_TEXT.endswith(f"w{fake.SLOW_TOKEN_COUNT - 1}")


# --- faults mid-stream: the partial text is delivered before the error ---------------------


async def test_error_object_mid_stream(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    error = await run.error("midstream_error")
    assert error.code == "upstream_error"
    assert error.message == f"The upstream failed mid-answer: {fake.MIDSTREAM_ERROR_MESSAGE}"
    assert "".join(run.pieces) == fake.MIDSTREAM_TEXT


async def test_a_stream_that_just_ends_is_incomplete(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    error = await run.error("no_done")
    assert error.code == "upstream_incomplete"
    assert error.message == "The upstream ended the answer early; the partial answer is kept"
    assert "".join(run.pieces) == fake.NO_DONE_TEXT


async def test_a_connection_cut_mid_body_is_a_disconnect(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    error = await run.error("cut")
    assert error.code == "upstream_disconnected"
    assert error.message == "The upstream connection broke; the partial answer is kept"
    assert "".join(run.pieces) == fake.CUT_TEXT
    # The pool recovers: the next request on the same client works.
    assert await Run(client, fake_upstream.base_url)("ok") == Completion("stop", USAGE)


# --- HTTP errors --------------------------------------------------------------------------


async def test_401_names_the_auth_problem_and_never_the_key(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    error = await Run(client, fake_upstream.base_url).error("http_401")
    assert error.code == "upstream_auth"
    # The fake echoed "sk-test-**********1234", as OpenAI does; it is scrubbed.
    assert "sk-test-" in fake.auth_error_message(API_KEY)
    assert error.message == (
        "The upstream rejected the API key (HTTP 401): Incorrect API key provided: sk-***. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    assert_key_scrubbed(error.message)
    assert_key_scrubbed(str(error))


async def test_401_without_a_key(client: httpx.AsyncClient, fake_upstream: FakeUpstream) -> None:
    error = await Run(client, fake_upstream.base_url, api_key=None).error("http_401")
    assert error.code == "upstream_auth"
    assert error.message == (
        f"The upstream rejected the API key (HTTP 401): {fake.auth_error_message(None)}"
    )


@pytest.mark.parametrize(
    ("model", "code", "message"),
    [
        (
            "http_404",
            "upstream_not_found",
            "The upstream does not know this model or path (HTTP 404): "
            + fake.HTTP_ERRORS["http_404"].message,
        ),
        (
            "http_429",
            "upstream_rate_limited",
            "The upstream is rate limiting (HTTP 429); retry after 7 s: "
            + fake.HTTP_ERRORS["http_429"].message,
        ),
        (
            "http_500",
            "upstream_unavailable",
            "The upstream answered (HTTP 500): " + fake.HTTP_ERRORS["http_500"].message,
        ),
        (
            "http_503",
            "upstream_unavailable",
            "The upstream answered (HTTP 503): " + fake.HTTP_ERRORS["http_503"].message,
        ),
        (
            "no-such-model",
            "upstream_not_found",
            "The upstream does not know this model or path (HTTP 404): "
            "The model `no-such-model` does not exist or you do not have access to it.",
        ),
    ],
)
async def test_http_errors_map_to_codes_with_the_upstream_message(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream, model: str, code: str, message: str
) -> None:
    run = Run(client, fake_upstream.base_url)
    error = await run.error(model)
    assert (error.code, error.message) == (code, message)
    assert run.pieces == []


# --- timeouts, refusals, cancellation -----------------------------------------------------


async def test_no_response_head_hits_the_first_byte_timeout(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url, first_byte_timeout=0.2)
    started = time.monotonic()
    error = await run.error("hang")
    assert time.monotonic() - started < 2
    assert error.code == "upstream_timeout"
    assert error.message == "No answer from the upstream within 0.2 s"
    # The request is abandoned at once: the fake sees its client leave.
    await fake_upstream.wait_for_disconnect_async(timeout=2)
    assert fake_upstream.client_disconnects == ["hang"]


async def test_silence_mid_stream_hits_the_idle_timeout(fake_upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.2)) as client:
        run = Run(client, fake_upstream.base_url)
        error = await run.error("idle")
    assert error.code == "upstream_timeout"
    assert error.message == (
        "The upstream stopped sending (idle timeout); the partial answer is kept"
    )
    assert "".join(run.pieces) == fake.IDLE_TEXT
    await fake_upstream.wait_for_disconnect_async(timeout=2)
    assert fake_upstream.client_disconnects == ["idle"]


async def test_nothing_listening_is_unreachable(client: httpx.AsyncClient) -> None:
    error = await Run(client, f"http://127.0.0.1:{unused_port()}/v1").error("ok")
    assert error.code == "upstream_unreachable"
    assert error.message.startswith("Cannot reach the upstream: ")


async def test_a_connect_that_never_completes_hits_the_connect_timeout() -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=0.2)) as client:
        with fake.unanswered_base_url() as base_url:
            error = await Run(client, base_url).error("ok")
    assert error.code == "upstream_timeout"
    assert error.message == "Timed out connecting to the upstream"


async def test_cancelling_closes_the_upstream_connection_at_once(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    task = asyncio.create_task(run("slow"))
    await until(lambda: len(run.pieces) >= 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_upstream.wait_for_disconnect_async(timeout=1)
    assert fake_upstream.client_disconnects == ["slow"]
    assert fake.SLOW_TEXT.startswith("".join(run.pieces))
    assert len(run.pieces) < fake.SLOW_TOKEN_COUNT


@pytest.mark.parametrize(
    ("model", "code"), [("hang", "upstream_unavailable"), ("idle", "upstream_incomplete")]
)
async def test_a_waiting_fake_stops_quickly_and_ends_its_responses(
    client: httpx.AsyncClient, model: str, code: str
) -> None:
    with FakeUpstream() as own:
        run = Run(client, own.base_url)
        task = asyncio.create_task(run.error(model))
        await until(lambda: bool(own.requests))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.to_thread(own.stop)
        assert time.monotonic() - started < 1.5
        error = await task
    assert error.code == code
    assert own.client_disconnects == []


# --- the fake itself does the awkward things it promises ----------------------------------


async def test_fake_ok_stream_has_crlf_comments_empty_deltas_and_usage_only_on_request(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    url = f"{fake_upstream.base_url}/chat/completions"
    with_usage = await client.post(
        url, json={"model": "ok", "stream": True, "stream_options": {"include_usage": True}}
    )
    without = await client.post(url, json={"model": "ok", "stream": True})
    raw = with_usage.content
    assert raw.startswith(b'data: {"id":')
    assert b'"delta":{"role":"assistant","content":""}' in raw.split(b"\r\n\r\n")[0]
    assert raw.count(b"\n") == raw.count(b"\r\n")
    assert b"\r\n: keepalive\r\n" in raw
    assert b'"delta":{},"logprobs":null,"finish_reason":null' in raw
    assert b'"delta":{},"logprobs":null,"finish_reason":"stop"' in raw
    assert b'"choices":[],"usage":{"prompt_tokens":12' in raw
    assert raw.endswith(b"data: [DONE]\r\n\r\n")
    assert b'"choices":[]' not in without.content
    assert b'"usage"' not in without.content


async def test_fake_utf8_bytes_arrive_split_inside_characters(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    url = f"{fake_upstream.base_url}/chat/completions"
    async with client.stream("POST", url, json={"model": "utf8"}) as response:
        reads = [chunk async for chunk in response.aiter_raw()]
    undecodable = 0
    for chunk in reads:
        try:
            chunk.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable >= 5
    assert b"".join(reads).decode().count("\r\n") > 0


async def test_fake_lists_its_scenarios(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    response = await client.get(f"{fake_upstream.base_url}/models")
    assert [model["id"] for model in response.json()["data"]] == list(fake.SCENARIOS)
    assert fake_upstream.requests == []


# --- caps: tokens, bytes, time -------------------------------------------------------------


async def test_the_token_cap_is_sent_as_max_tokens(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url, max_tokens=300)
    assert await run("ok") == Completion("stop", USAGE)
    [(_, sent)] = fake_upstream.requests
    assert sent == {
        "model": "ok",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 300,
    }


@pytest.mark.parametrize(
    ("model", "refused", "taken"),
    [
        ("no_max_tokens", "max_tokens", "max_completion_tokens"),
        ("no_max_completion_tokens", "max_tokens", None),
    ],
)
async def test_a_refused_token_cap_is_retried_once_under_the_other_name_and_remembered(
    client: httpx.AsyncClient,
    fake_upstream: FakeUpstream,
    model: str,
    refused: str,
    taken: str | None,
) -> None:
    run = Run(client, fake_upstream.base_url, max_tokens=300)
    assert await run(model) == Completion("stop", USAGE)
    assert await run(model) == Completion("stop", USAGE)
    assert run.pieces == list(fake.OK_PIECES) * 2
    names = [[k for k in r.body if k.startswith("max_")] for r in fake_upstream.requests]
    if taken is None:  # the upstream takes max_tokens: one request per reply
        assert names == [[refused], [refused]]
    else:  # refused once; the second reply uses the name that worked at once
        assert names == [[refused], [taken], [taken]]
        assert fake_upstream.requests[1].body[taken] == 300
    # Another model is not affected by what this one refused.
    fake_upstream.reset()
    await run("ok")
    assert "max_tokens" in fake_upstream.requests[0].body


async def test_a_remembered_name_that_is_refused_switches_back(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url, max_tokens=300)
    run.config.token_cap_name.switch("no_max_completion_tokens", "max_tokens")
    assert await run("no_max_completion_tokens") == Completion("stop", USAGE)
    names = [[k for k in r.body if k.startswith("max_")] for r in fake_upstream.requests]
    assert names == [["max_completion_tokens"], ["max_tokens"]]
    assert run.config.token_cap_name.of("no_max_completion_tokens") == "max_tokens"


async def test_an_answer_over_the_byte_cap_is_cut_and_its_connection_closed(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url, max_reply_bytes=64 * 1024)
    error = await run.error("flood")
    assert (error.code, error.message) == (
        "upstream_too_large",
        "The answer passed 65536 bytes and was cut; the partial answer is kept",
    )
    await fake_upstream.wait_for_disconnect_async()
    assert fake_upstream.client_disconnects == ["flood"]
    # What arrived before the cap is kept: whole pieces, less than the cap.
    text = "".join(run.pieces)
    print(f"byte cap 65536: {len(text)} characters of text kept")
    assert 32 * 1024 < len(text) < 64 * 1024
    assert text == fake.FLOOD_PIECE * (len(text) // len(fake.FLOOD_PIECE))


async def test_an_answer_over_the_time_cap_is_cut_and_its_connection_closed(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url, max_reply_seconds=0.5)
    started = time.monotonic()
    error = await run.error("slow")
    took = time.monotonic() - started
    print(f"time cap 0.5 s: cut after {took:.2f} s")
    assert (error.code, error.message) == (
        "upstream_timeout",
        "The answer took longer than 0.5 s and was cut; the partial answer is kept",
    )
    await fake_upstream.wait_for_disconnect_async()
    assert fake_upstream.client_disconnects == ["slow"]
    assert 0 < len(run.pieces) < fake.SLOW_TOKEN_COUNT
    assert run.pieces == list(fake.SLOW_PIECES[: len(run.pieces)])


async def test_non_numeric_usage_is_ignored_not_fatal(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    assert await run("bad_usage") == Completion(
        "stop", Usage(prompt_tokens=0, completion_tokens=7, total_tokens=0)
    )
    assert "".join(run.pieces) == fake.OK_TEXT


def test_the_config_never_shows_the_key() -> None:
    config = UpstreamConfig("http://127.0.0.1:1/v1", API_KEY, max_tokens=5)
    for text in (repr(config), str(config), f"{config}", repr([config])):
        assert "SECRET" not in text
        assert "http://127.0.0.1:1/v1" in text
    assert config.api_key == API_KEY
