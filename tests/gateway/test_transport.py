"""The gateway's own HTTP/1.1 transport to the upstream (``_transport.py``), against raw
socket servers that send exactly the bytes each case needs: streaming as bytes arrive,
keep-alive reuse and its limits, every way a response can end or break, timeouts, TLS,
and proxies left to httpx. Each case runs on asyncio's loop and on uvloop (the services')."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from chatrelay_gateway import _transport
from chatrelay_gateway._transport import UpstreamTransport, upstream_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_TIMEOUT = httpx.Timeout(5.0)
_OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    def runner(scenario: Coroutine[Any, Any, None]) -> None:
        if request.param == "uvloop":
            uvloop.run(asyncio.wait_for(scenario, 30))
        else:
            asyncio.run(asyncio.wait_for(scenario, 30))

    return runner


class _Server:
    """A raw TCP server on a free loopback port; counts connections, keeps requests."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[_Server]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _post(client: httpx.AsyncClient, url: str) -> list[bytes]:
    async with client.stream("POST", url, json={"model": "m"}) as response:
        assert response.status_code == 200
        return [data async for data in response.aiter_raw()]


async def _read_into(received: list[bytes], client: httpx.AsyncClient, url: str) -> None:
    async with client.stream("POST", url) as response:
        async for data in response.aiter_raw():
            received.append(data)


def test_a_chunked_body_streams_as_it_arrives(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        first_read = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(_OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(b"data: 1\n\n"))
            await first_read.wait()  # the second piece only once the first one was read
            writer.write(_chunk(b"data: 2\n\n") + b"0\r\n\r\n")
            await reader.read()

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client,
            client.stream("POST", f"http://127.0.0.1:{server.port}/v1/x", json={}) as response,
        ):
            assert response.headers["content-type"] == "text/event-stream"
            assert response.reason_phrase == "OK"
            assert response.http_version == "HTTP/1.1"
            pieces = response.aiter_raw()
            assert await anext(pieces) == b"data: 1\n\n"
            first_read.set()
            assert [data async for data in pieces] == [b"data: 2\n\n"]

    run(scenario())


def test_the_request_goes_out_as_httpx_built_it(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        seen: list[tuple[bytes, bytes]] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for _ in range(2):
                seen.append(await _read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await reader.read()

        async def streamed() -> AsyncIterator[bytes]:
            yield b"in "
            yield b"parts"

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client,
        ):
            response = await client.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions?a=1",
                json={"model": "m", "text": "é"},
                headers={"Authorization": "Bearer k"},
            )
            # A body httpx has not read (a stream) goes out whole, with its length.
            streamed_response = await client.post(
                f"http://127.0.0.1:{server.port}/s", content=streamed()
            )
        assert response.content == streamed_response.content == b"ok"
        [(head, body), (streamed_head, streamed_body)] = seen
        assert streamed_body == b"in parts"
        assert b"\r\ncontent-length: 8\r\n" in streamed_head.lower()
        assert b"transfer-encoding" not in streamed_head.lower()
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /v1/chat/completions?a=1 HTTP/1.1"
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if line)}
        assert headers["host"] == f"127.0.0.1:{server.port}"
        assert headers["authorization"] == "Bearer k"
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"model": "m", "text": "é"}
        assert headers["content-length"] == str(len(body))

    run(scenario())


def test_a_finished_response_leaves_its_connection_for_the_next(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in (b"one", b"two!"):
                await _read_request(reader)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
            await reader.read()

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client,
        ):
            url = f"http://127.0.0.1:{server.port}/"
            assert await _post(client, url) == [b"one"]
            assert await _post(client, url) == [b"two!"]
            assert server.connections == 1

    run(scenario())


def test_connections_are_not_reused_when_stale_closed_or_refused(
    run: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head, _ = await _read_request(reader)
            if b"/close-header" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nc")
                await reader.read()
            elif b"/hang-up" in head:  # closes without saying so: the transport notices
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nh")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk")
                await reader.read()

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client,
        ):
            base = f"http://127.0.0.1:{server.port}"
            assert await _post(client, f"{base}/close-header") == [b"c"]
            assert await _post(client, f"{base}/hang-up") == [b"h"]
            await asyncio.sleep(0.2)  # the server's close reaches the idle connection
            assert await _post(client, f"{base}/") == [b"k"]
            monkeypatch.setattr(_transport, "KEEPALIVE_SECONDS", 0.0)
            assert await _post(client, f"{base}/") == [b"k"]
            assert server.connections == 4

    run(scenario())


def test_a_body_without_length_ends_with_the_connection(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(_OK_HEAD + b"\r\ndata: 1\n\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"data: [DONE]\n\n")

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client,
        ):
            url = f"http://127.0.0.1:{server.port}/"
            assert b"".join(await _post(client, url)) == b"data: 1\n\ndata: [DONE]\n\n"
            assert await _post(client, url) == [b"data: 1\n\n", b"data: [DONE]\n\n"]
            assert server.connections == 2

    run(scenario())


def test_a_cut_or_malformed_response_is_a_transport_error(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head, _ = await _read_request(reader)
            if b"/garbage" in head:
                writer.write(b"HTTP/1.1 2x0 Nope\r\n\r\n")
            elif b"/no-head" in head:
                writer.write(b"HTTP/1.1 200")
            else:  # a chunked body cut after its first chunk
                writer.write(_OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(b"data: 1"))

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client,
        ):
            base = f"http://127.0.0.1:{server.port}"
            received: list[bytes] = []
            with pytest.raises(httpx.RemoteProtocolError, match="without a complete response"):
                await _read_into(received, client, f"{base}/cut")
            assert received == [b"data: 1"]
            with pytest.raises(httpx.RemoteProtocolError, match="Malformed HTTP response"):
                await client.post(f"{base}/garbage")
            with pytest.raises(httpx.RemoteProtocolError, match="without a complete response"):
                await client.post(f"{base}/no-head")

    run(scenario())


def test_silence_times_out_and_a_refused_connect_fails(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head, _ = await _read_request(reader)
            if b"/after-head" in head:
                writer.write(_OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            await reader.read()  # then nothing

        quick = httpx.Timeout(5.0, read=0.3)
        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=quick) as client,
        ):
            base = f"http://127.0.0.1:{server.port}"
            with pytest.raises(httpx.ReadTimeout, match="response head"):
                await client.post(f"{base}/")
            with pytest.raises(httpx.ReadTimeout, match="response body"):
                await client.post(f"{base}/after-head")
        # The port is free again: nothing listens there now.
        async with httpx.AsyncClient(transport=UpstreamTransport(), timeout=quick) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(f"{base}/")
            with pytest.raises(httpx.UnsupportedProtocol):
                await client.post("ftp://127.0.0.1/")

    run(scenario())


def test_closing_an_unfinished_response_hangs_up_on_the_upstream(
    run: Callable[..., None],
) -> None:
    """A stopped reply must stop the upstream (it bills by the token): its connection
    closes at once, and the next request takes a new one."""

    async def scenario() -> None:
        hung_up = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(_OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            while not writer.is_closing():
                writer.write(_chunk(b"data: more\n\n"))
                try:
                    await writer.drain()
                    if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                        break
                except TimeoutError:
                    continue
            hung_up.set()

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client,
        ):
            async with client.stream("POST", f"http://127.0.0.1:{server.port}/") as response:
                assert (await anext(response.aiter_raw())).startswith(b"data: more\n\n")
            await asyncio.wait_for(hung_up.wait(), 5)
            assert server.connections == 1

    run(scenario())


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
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
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_verifies_the_upstream(run: Callable[..., None], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
            await reader.read()

        async with _Server(handler).running(tls=server_tls) as server:
            url = f"https://localhost:{server.port}/"
            trusting = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(
                transport=UpstreamTransport(ssl_context=trusting), timeout=_TIMEOUT
            ) as client:
                assert await _post(client, url) == [b"secret"]
            # The default context does not know this certificate.
            async with httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.post(url)

    run(scenario())


def test_a_proxied_upstream_keeps_httpx_transport(
    run: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set the request goes to the proxy (absolute-form request line), as
    httpx does it; NO_PROXY still reaches the upstream directly."""

    async def scenario() -> None:
        lines: list[bytes] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head, _ = await _read_request(reader)
            lines.append(head.split(b"\r\n")[0])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

        async with _Server(handler).running() as server:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
            async with upstream_client("http://upstream.invalid/v1", _TIMEOUT, max_idle=4) as c:
                assert (
                    await c.post("http://upstream.invalid/v1/chat/completions")
                ).content == b"ok"
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            direct = f"http://127.0.0.1:{server.port}/v1"
            async with upstream_client(direct, _TIMEOUT, max_idle=4) as c:
                assert (await c.post(f"{direct}/chat/completions")).content == b"ok"
        assert lines == [
            b"POST http://upstream.invalid/v1/chat/completions HTTP/1.1",
            b"POST /v1/chat/completions HTTP/1.1",
        ]

    run(scenario())


def test_a_connection_paused_for_a_lagging_reader_carries_the_next_request(
    run: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer past the buffer's high-water mark pauses reading and ends unread: the
    connection goes back to the pool, and must read again for the next request. (A small
    mark and a small answer: it arrives in one read, whatever the socket buffers.)"""
    monkeypatch.setattr(_transport, "_HIGH_WATER", 16)

    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in (b"x" * 64, b"next"):
                await _read_request(reader)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
            await reader.read()

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(
                transport=UpstreamTransport(), timeout=httpx.Timeout(5.0, read=2.0)
            ) as client,
        ):
            url = f"http://127.0.0.1:{server.port}/"
            async with client.stream("POST", url) as response:
                assert response.status_code == 200
                await asyncio.sleep(0.1)  # the answer is in; none of it is read
            assert await _post(client, url) == [b"next"]
            assert server.connections == 1

    run(scenario())


def test_a_compressed_answer_is_decoded_by_httpx(run: Callable[..., None]) -> None:
    """Content-Encoding stays httpx's business (its response decoders), as before."""

    async def scenario() -> None:
        packed = gzip.compress(b"data: 1\n\n" * 100)

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head, _ = await _read_request(reader)
            assert b"\r\naccept-encoding: gzip" in head.lower()
            writer.write(
                _OK_HEAD
                + b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                + _chunk(packed[:10])
                + _chunk(packed[10:])
                + b"0\r\n\r\n"
            )
            await reader.read()

        async with (
            _Server(handler).running() as server,
            httpx.AsyncClient(transport=UpstreamTransport(), timeout=_TIMEOUT) as client,
            client.stream("POST", f"http://127.0.0.1:{server.port}/") as response,
        ):
            assert b"".join([data async for data in response.aiter_bytes()]) == b"data: 1\n\n" * 100

    run(scenario())
