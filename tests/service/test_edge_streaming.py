"""Collapsed misses are streamed: one upstream fetch, its bytes passed to every waiter as they arrive.

Edge → shield → stub upstream on loopback; raw-socket clients watch the bytes arrive, so the tests
can tell "received before the upstream finished" and "cut off" from "complete".
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httptools
import httpx
import pytest

from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.edge.stub import StubObject, StubUpstream

pytestmark = pytest.mark.anyio

SEG = "/live/final/v360/200.m4s"
BODY = random.Random(5).randbytes(400_000)
HALF = len(BODY) // 2


@dataclass
class Tier:
    stub: StubUpstream
    shield: EdgeServer
    edge: EdgeServer


async def until(check: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


class Client:
    """One request on its own connection (`Connection: close`), its response parsed as it arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.complete = False
        self.eof = False

    @classmethod
    async def get(cls, port: int, path: str, *, version: str = "1.1") -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/{version}\r\nHost: e\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        return cls(reader, writer)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    @property
    def status(self) -> int:
        return int(self.parser.get_status_code())

    async def read(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(20):
            while not done() and not self.eof:
                data = await self.reader.read(65536)
                if not data:
                    self.eof = True
                    break
                self.parser.feed_data(data)

    async def read_until(self, n: int) -> None:
        """Read until `n` body bytes are in (or the connection ends)."""
        await self.read(lambda: len(self.body) >= n)

    async def read_to_end(self) -> None:
        """Read until the server closes the connection."""
        await self.read(lambda: False)
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def tier() -> AsyncIterator[Tier]:
    stub = StubUpstream(hold_missing_s=30.0)
    await stub.start()
    shield = EdgeServer(EdgeConfig("shield", stub.url, stale_if_error_s=30))
    await shield.start()
    edge = EdgeServer(EdgeConfig("cdn-a", shield.url, stale_if_error_s=30))
    await edge.start()
    yield Tier(stub, shield, edge)
    await edge.close()
    await shield.close()
    await stub.stop()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_collapsed_waiters_receive_first_half_before_upstream_finishes(
    tier: Tier, chunked: bool
) -> None:
    """Waiters (and a late joiner) get the first half while the upstream withholds the rest; all end whole and identical."""
    clients = [await Client.get(tier.edge.port, SEG) for _ in range(20)]
    await until(lambda: tier.edge.waiting == 20 and tier.stub.fetches[SEG] == 1)
    tier.stub.publish(SEG, StubObject(BODY, pause_after=HALF, chunked=chunked))
    for c in clients:
        await c.read_until(HALF)
        assert (c.status, bytes(c.body)) == (200, BODY[:HALF])
    late = await Client.get(tier.edge.port, SEG)  # joins mid-transfer: gets the bytes so far
    await late.read_until(HALF)
    assert bytes(late.body) == BODY[:HALF]
    assert late.headers["x-cache"] == "COLLAPSED"
    assert tier.stub.completed[SEG] == 0  # the upstream has not sent the second half yet
    assert not any(c.complete for c in [*clients, late])

    tier.stub.release(SEG)
    for c in [*clients, late]:
        await c.read_to_end()
        assert c.complete
        assert bytes(c.body) == BODY
        if chunked:
            assert c.headers["transfer-encoding"] == "chunked"
        else:
            assert c.headers["content-length"] == str(len(BODY))
    assert sorted(c.headers["x-cache"] for c in clients) == ["COLLAPSED"] * 19 + ["MISS"]
    assert tier.stub.fetches == {SEG: 1}
    assert tier.shield.metrics.upstream_fetches["segment"] == 1
    assert tier.edge.metrics.upstream_fetches["segment"] == 1
    assert tier.edge.metrics.collapsed["segment"] == 20
    async with httpx.AsyncClient() as h:
        hit = await h.get(tier.edge.url + SEG)
    assert (hit.headers["x-cache"], hit.content) == ("HIT", BODY)
    assert hit.headers["content-length"] == str(len(BODY))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_upstream_failure_mid_body_cuts_every_waiter_and_caches_nothing(
    tier: Tier, chunked: bool
) -> None:
    """The origin dies mid-body: every client's response is visibly cut short, nothing is cached, the next request refetches."""
    clients = [await Client.get(tier.edge.port, SEG) for _ in range(10)]
    await until(lambda: tier.edge.waiting == 10 and tier.stub.fetches[SEG] == 1)
    tier.stub.publish(SEG, StubObject(BODY, fail_after=HALF, chunked=chunked))
    for c in clients:
        await c.read_to_end()
        assert c.status == 200
        assert not c.complete
        assert bytes(c.body) == BODY[:HALF]
        if not chunked:
            assert int(c.headers["content-length"]) == len(BODY) > len(c.body)
    await until(lambda: tier.edge.waiting == 0)
    assert SEG not in tier.edge.cache
    assert SEG not in tier.shield.cache
    assert tier.edge.metrics.upstream_errors["segment"] == 1
    assert tier.shield.metrics.upstream_errors["segment"] == 1

    tier.stub.publish(SEG, StubObject(BODY))
    async with httpx.AsyncClient() as h:
        again = await h.get(tier.edge.url + SEG)
    assert (again.status_code, again.headers["x-cache"], again.content) == (200, "MISS", BODY)
    assert tier.stub.fetches[SEG] == 2


async def test_head_and_http10_waiters_get_the_whole_response(tier: Tier) -> None:
    """A HEAD and an HTTP/1.0 client collapsed onto a chunked stream get a Content-Length answer once it is whole."""
    streamed = await Client.get(tier.edge.port, SEG)
    old = await Client.get(tier.edge.port, SEG, version="1.0")
    reader, writer = await asyncio.open_connection("127.0.0.1", tier.edge.port)
    writer.write(f"HEAD {SEG} HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n".encode())
    await until(lambda: tier.edge.waiting == 3 and tier.stub.fetches[SEG] == 1)
    tier.stub.publish(SEG, StubObject(BODY, pause_after=HALF, chunked=True))
    await streamed.read_until(HALF)
    assert streamed.headers["transfer-encoding"] == "chunked"
    tier.stub.release(SEG)
    await streamed.read_to_end()
    await old.read_to_end()
    assert old.complete
    assert bytes(old.body) == BODY
    assert old.headers["content-length"] == str(len(BODY))
    assert old.headers["x-cache"] == "COLLAPSED"
    async with asyncio.timeout(20):
        head = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"\r\nContent-Length: {len(BODY)}\r\n".encode() in head
    assert head.endswith(b"\r\n\r\n")  # headers only
