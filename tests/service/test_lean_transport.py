"""`LeanTransport` (the players' httpx transport on httptools) against real loopback servers.

Each test's server answers with raw bytes the test writes, so framing (Content-Length, chunked,
close-delimited), keep-alive reuse, a server closing an idle connection, a response cut short,
a silent server, a refused port and a malformed answer are each exercised for real.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from mainevent.player.transport import LeanTransport

pytestmark = pytest.mark.anyio

Answer = Callable[[bytes], bytes | None]
"""The raw response to one request head (None: close the connection without answering)."""


@dataclass
class RawServer:
    answer: Answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    close_after_each: bool = False
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                out = self.answer(head + body)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Serve = Callable[[Answer], Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> RawServer:
        raw = RawServer(answer)
        raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        servers.append(raw.server)
        return raw

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


def _ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n" + b"".join(e + b"\r\n" for e in extra)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def _client(timeout: httpx.Timeout | float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(), timeout=timeout)


async def test_keep_alive_reuses_one_connection_and_reads_content_length_bodies(
    serve: Serve,
) -> None:
    srv = await serve(lambda head: _ok(b"x" * 150_000, b"x-cache: HIT"))
    async with _client() as c:
        for _ in range(5):
            r = await c.get(srv.url + "/live/v1/7.m4s")
            assert r.status_code == 200
            assert r.content == b"x" * 150_000
            assert r.headers["x-cache"] == "HIT"
        async with c.stream("GET", srv.url + "/s") as r:
            await r.aread()
            assert len(r.content) == 150_000
    assert srv.connections == 1
    first = srv.requests[0]
    assert first.startswith(b"GET /live/v1/7.m4s HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in first.lower()


async def test_concurrent_requests_open_their_own_connections(serve: Serve) -> None:
    srv = await serve(lambda head: _ok(b"ok"))
    async with _client() as c:
        rs = await asyncio.gather(*(c.get(srv.url + f"/{i}") for i in range(4)))
        assert [r.text for r in rs] == ["ok"] * 4
        await asyncio.gather(*(c.get(srv.url + f"/{i}") for i in range(4)))
    assert srv.connections == 4  # the second round reused the four idle ones


async def test_chunked_and_close_delimited_bodies(serve: Serve) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    srv = await serve(lambda head: chunked)
    async with _client() as c:
        assert (await c.get(srv.url + "/a")).text == "hello world"
        assert (await c.get(srv.url + "/b")).text == "hello world"
    assert srv.connections == 1

    srv2 = await serve(lambda head: b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
    srv2.close_after_each = True
    async with _client() as c:
        assert (await c.get(srv2.url + "/c")).text == "until the end"
        assert (await c.get(srv2.url + "/d")).text == "until the end"
    assert srv2.connections == 2


async def test_post_sends_its_body_and_head_requests_end_with_the_head(serve: Serve) -> None:
    srv = await serve(lambda head: _ok(b"12345"))
    async with _client() as c:
        r = await c.post(srv.url + "/v1/cmcd", content=b'{"sid":"s"}')
        assert r.status_code == 200
        h = await c.head(srv.url + "/x")
        assert h.status_code == 200
        assert h.headers["content-length"] == "5"
        assert h.content == b""
        assert (await c.get(srv.url + "/y")).text == "12345"
    assert srv.requests[0].endswith(b'\r\n\r\n{"sid":"s"}')
    assert b"content-length: 11" in srv.requests[0].lower()


async def test_server_closing_an_idle_connection_is_retried_on_a_new_one(serve: Serve) -> None:
    # Already closed when the request is sent: the pool skips it.
    srv = await serve(lambda head: _ok(b"fresh"))
    srv.close_after_each = True
    async with _client() as c:
        assert (await c.get(srv.url + "/1")).text == "fresh"
        await asyncio.sleep(0.05)
        assert (await c.get(srv.url + "/2")).text == "fresh"
    assert srv.connections == 2

    # Closed by the server as the request arrives (the keep-alive race): sent again, once.
    answers = iter([_ok(b"first"), None, _ok(b"again")])
    racy = await serve(lambda head: next(answers))
    async with _client() as c:
        assert (await c.get(racy.url + "/1")).text == "first"
        assert (await c.get(racy.url + "/2")).text == "again"
    assert racy.connections == 2
    assert len(racy.requests) == 3


async def test_response_cut_short_is_a_read_error(serve: Serve) -> None:
    srv = await serve(lambda head: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
    srv.close_after_each = True
    async with _client() as c:
        with pytest.raises(httpx.ReadError):
            await c.get(srv.url + "/cut")


async def test_silent_server_is_a_read_timeout(serve: Serve) -> None:
    srv = await serve(lambda head: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    async with _client(timeout=httpx.Timeout(5.0, read=0.3)) as c:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await c.get(srv.url + "/slow")
        assert loop.time() - t0 >= 0.3


async def test_refused_port_and_malformed_answer(serve: Serve) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with _client() as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/")
        srv = await serve(lambda head: b"NOT HTTP AT ALL\r\n\r\n")
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(srv.url + "/")
        with pytest.raises(httpx.UnsupportedProtocol):
            await c.get("ftp://127.0.0.1/")


async def test_a_cancellation_as_the_connection_completes_is_not_lost(serve: Serve) -> None:
    """The task is cancelled just as its connection is made (the race Python 3.11's `wait_for`
    loses): the request ends cancelled instead of carrying on as if nothing happened."""
    srv = await serve(lambda head: _ok(b"late"))
    loop = asyncio.get_running_loop()
    real = loop.create_connection
    victim: list[asyncio.Task[object]] = []

    async def connect_then_cancel(*args: object, **kw: object) -> object:
        made = await real(*args, **kw)  # type: ignore[arg-type]
        victim[0].cancel()  # arrives as the connection completes
        return made

    async with _client() as c:
        loop.create_connection = connect_then_cancel  # type: ignore[method-assign]
        try:
            task: asyncio.Task[object] = asyncio.ensure_future(c.get(srv.url + "/x"))
            victim.append(task)
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            loop.create_connection = real  # type: ignore[method-assign]
    assert task.cancelled()
