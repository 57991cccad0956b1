"""The origin's own HTTP protocol (as `mainevent up` serves it, over real TCP): media playlists and
held LL-HLS reloads answered in the protocol, everything else through the ASGI app, with the
same answers either way. Target duration 1 s here, so every hold ends within 3 s."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from mainevent.media.origin.app import create_app
from mainevent.media.origin.protocol import origin_protocol
from tests.service.test_origin_ll import BASE, LAST, PL, Live, make_event, part
from tests.service.test_origin_tokens import KEY, token

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


@dataclass
class Served:
    """An LL event behind a real origin server on a free port, and clients of it."""

    live: Live  # its client talks to the app in-process (ASGI), for comparisons
    tcp: httpx.AsyncClient
    port: int
    server: _Server
    task: asyncio.Task[None]

    async def raw(self, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(request)
        await writer.drain()
        return reader, writer


def get(path: str, *, version: str = "1.1", extra: str = "") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: origin\r\n{extra}\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def served_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    running: list[Served] = []

    async def factory(*, max_held: int = 20_000, required: bool | None = None) -> Served:
        ev = make_event(tmp_path, max_held=max_held)
        keys = None if required is None else {"k1": KEY}
        app = create_app({"final": ev}, token_keys=keys, require_token=bool(required))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            app, http=origin_protocol(app), log_level="warning", lifespan="off", access_log=False
        )
        server = _Server(config)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        deadline = time.monotonic() + 5
        while not server.started:
            assert time.monotonic() < deadline, "origin server did not start"
            await asyncio.sleep(0.01)
        port = sock.getsockname()[1]
        asgi = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://origin", timeout=10
        )
        tcp = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        s = Served(Live(ev, asgi), tcp, port, server, task)
        await s.live.start(14)
        running.append(s)
        return s

    yield factory
    for s in running:
        await s.tcp.aclose()
        await s.live.client.aclose()
        s.server.should_exit = True
        await asyncio.wait_for(s.task, 10)


@pytest.fixture
async def served(served_factory: Callable[..., Awaitable[Served]]) -> Served:
    return await served_factory()


async def test_held_reloads_are_answered_by_the_part_over_tcp(served: Served) -> None:
    """Players holding a blocking reload all get the new playlist when the part lands."""
    url = f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0"
    tasks = [asyncio.ensure_future(served.tcp.get(url)) for _ in range(20)]
    await served.live.held(20)
    served.live.ev.on_part("v360", part(LAST + 1, 0))
    answers = await asyncio.gather(*tasks)
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert served.live.ev.waiters.held == 0
    r = answers[0]
    assert r.headers["cache-control"] == "public, max-age=6"
    assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert r.headers["access-control-allow-origin"] == "*"
    assert "date" in r.headers
    assert int(r.headers["cmsd-static"].removeprefix("ht=")) >= 0
    assert f'URI="{LAST + 1}.0.m4s"' in r.text
    metrics = (await served.tcp.get("/metrics")).text
    assert 'mainevent_origin_requests_total{status="200",type="playlist"} 20.0' in metrics
    # The same answer the ASGI app gives now (it is available, so it is not held).
    same = await served.live.client.get(url)
    assert same.content == r.content
    assert same.headers["cache-control"] == r.headers["cache-control"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?_HLS_skip=YES",
        f"?_HLS_msn={LAST}",
        f"?_HLS_msn={LAST}&_HLS_part=1",
        "?_HLS_part=1",
        f"?_HLS_msn={LAST + 3}",
        "?_HLS_msn=abc",
        "?_HLS_skip=NO",
        f"?CMCD=bl%3D1000&_HLS_msn={LAST}",
    ],
)
async def test_immediate_answers_are_the_asgi_answers(served: Served, query: str) -> None:
    """Playlist answers (and refusals) over the origin's protocol equal the app's own."""
    for path in (PL, "/live/final/v9999/index.m3u8", "/live/other/v360/index.m3u8"):
        want = await served.live.client.get(path + query)
        got = await served.tcp.get(path + query)
        assert (got.status_code, got.content) == (want.status_code, want.content), path + query
        for name in ("content-type", "cache-control", "access-control-allow-origin"):
            assert got.headers.get(name) == want.headers.get(name), (name, path + query)
        assert ("cmsd-static" in got.headers) == ("cmsd-static" in want.headers)


async def test_hold_limit_and_hold_timeout_over_tcp(
    served_factory: Callable[..., Awaitable[Served]],
) -> None:
    """Beyond the bound a player gets 503 + Retry-After at once; a hold that outlives 3 × TD
    is answered 503 too, and nothing stays held."""
    s = await served_factory(max_held=2)
    url = f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0"
    t0 = time.monotonic()
    held = [await s.raw(get(url)) for _ in range(2)]
    await s.live.held(2)
    r = await s.tcp.get(url)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.headers["cache-control"] == "no-store"
    for reader, writer in held:
        status, headers, body = await read_response(reader)
        assert status == 503, body
        assert headers["cache-control"] == "max-age=1"
        writer.close()
    assert 2.9 <= time.monotonic() - t0 < 5
    assert s.live.ev.waiters.held == 0


async def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    """A request pipelined behind a held reload waits for it; the connection is then reused."""
    reader, writer = await served.raw(
        get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0") + get("/healthz") + get(PL)
    )
    await served.live.held(1)
    served.live.parts(LAST + 1, range(1))
    status, headers, body = await read_response(reader)
    assert (status, headers["content-type"]) == (200, "application/vnd.apple.mpegurl")
    assert "cmsd-static" in headers
    status, headers, body = await read_response(reader)
    assert (status, headers["content-type"]) == (200, "application/json")
    status, headers, body = await read_response(reader)
    assert status == 200
    assert f'URI="{LAST + 1}.0.m4s"' in body.decode()
    # Kept alive: the next blocking reload on the same connection is held and answered.
    writer.write(get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=1"))
    await served.live.held(1)
    served.live.parts(LAST + 1, range(1, 2))
    status, headers, body = await read_response(reader)
    assert status == 200
    assert f'URI="{LAST + 1}.1.m4s"' in body.decode()
    writer.close()


async def test_a_player_that_leaves_is_no_longer_held(served: Served) -> None:
    """Closing the connection of a held reload frees its place at once."""
    _, writer = await served.raw(get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0"))
    await served.live.held(1)
    writer.close()
    await served.live.held(0)


async def test_http10_client_gets_its_answer_and_a_close(served: Served) -> None:
    """An HTTP/1.0 player is answered (held as well) and the connection closed after."""
    reader, writer = await served.raw(get(f"{PL}?_HLS_msn={LAST + 1}", version="1.0"))
    await served.live.held(1)
    await served.live.complete(LAST + 1)
    status, headers, _ = await read_response(reader)
    assert status == 200
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_tokens_are_checked_on_the_fast_path(
    served_factory: Callable[..., Awaitable[Served]],
) -> None:
    """With tokens required, a valid /t/<token>/ playlist (held or not) plays and anything
    else is 403 with its reason, exactly as through the app."""
    s = await served_factory(required=True)
    t = token()
    r = await s.tcp.get(f"/t/{t}{PL}")
    assert r.status_code == 200
    assert r.text == (await s.live.client.get(f"/t/{t}{PL}")).text
    task = asyncio.ensure_future(s.tcp.get(f"/t/{t}{PL}?_HLS_msn={LAST + 1}&_HLS_part=0"))
    await s.live.held(1)
    s.live.parts(LAST + 1, range(1))
    assert (await task).status_code == 200
    for path, reason in (
        (PL, "missing_token"),
        (f"/t/{token(acl='/live/other/*')}{PL}", "acl_mismatch"),
        ("/t/garbage" + PL, "malformed"),
    ):
        r = await s.tcp.get(path)
        assert r.status_code == 403
        assert r.headers["x-token-denied"] == reason
    assert s.live.ev.waiters.held == 0


async def test_stopping_origin_answers_held_players(served: Served) -> None:
    """On shutdown a held player is told to retry (503, connection closed) at once."""
    reader, writer = await served.raw(get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0"))
    await served.live.held(1)
    t0 = time.monotonic()
    served.server.should_exit = True
    status, headers, _ = await read_response(reader)
    assert status == 503
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    await asyncio.wait_for(served.task, 5)
    assert time.monotonic() - t0 < 2
    assert served.live.ev.waiters.held == 0
    writer.close()


async def test_non_playlist_paths_still_go_through_the_app(served: Served) -> None:
    """Segments, parts, master playlist and health are served as before."""
    for path, ctype in (
        ("/live/final/master.m3u8", "application/vnd.apple.mpegurl"),
        (f"/live/final/v360/{BASE + 5}.m4s", "video/iso.segment"),
        (f"/live/final/v360/{LAST}.1.m4s", "video/mp4"),
        ("/healthz", "application/json"),
    ):
        r = await served.tcp.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(ctype)
