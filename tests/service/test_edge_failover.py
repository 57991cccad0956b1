"""A shield in front of two origins (real loopback sockets, stub origins the test breaks): it
prefers the first, fails over to the second within the same request, serves stale copies while
neither answers, and goes back to the first once it answers again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.edge.stub import StubObject, StubUpstream

pytestmark = pytest.mark.anyio

PLAYLIST = "/live/final/v360/index.m3u8"
SEG = "/live/final/v360/7.m4s"


@dataclass
class Pair:
    first: StubUpstream
    second: StubUpstream
    shield: EdgeServer
    client: httpx.AsyncClient

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(self.shield.url + path)

    async def health(self) -> dict[str, object]:
        body: dict[str, object] = (await self.get("/healthz")).json()
        return body


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    first, second = StubUpstream(), StubUpstream()
    await first.start()
    await second.start()
    for stub, msn in ((first, 7), (second, 7)):
        stub.set_playlist_msn(PLAYLIST, msn)
        stub.publish(SEG, StubObject(b"seg-7" * 100, cache_control="max-age=1"))
    shield = EdgeServer(
        EdgeConfig(
            "shield",
            first.url,
            upstreams=(second.url,),
            stale_if_error_s=30,
            upstream_timeout_s=2.0,
            upstream_backoff_s=0.5,
            upstream_max_backoff_s=1.0,
        )
    )
    await shield.start()
    async with httpx.AsyncClient(timeout=10) as client:
        yield Pair(first, second, shield, client)
    await shield.close()
    await first.stop()
    await second.stop()


async def test_failover_in_order_stale_while_none_answers_then_back_to_the_first(
    pair: Pair,
) -> None:
    """Origin 1 refused → origin 2 answers the same request; both refused → stale copies at once;
    origin 1 back → preferred again within its breaker's interval."""
    assert (await pair.get(PLAYLIST)).status_code == 200
    assert pair.first.fetches[PLAYLIST] == 1
    assert pair.second.fetches[PLAYLIST] == 0

    await pair.first.stop()
    pair.second.set_playlist_msn(PLAYLIST, 8)
    await asyncio.sleep(1.1)  # the cached copy expires (max-age=1)
    r = await pair.get(PLAYLIST)
    assert r.status_code == 200
    assert b"8.m4s" in r.content  # the second origin's, in the same request
    health = await pair.health()
    ups = health["upstreams"]
    assert isinstance(ups, list)
    assert ups[0]["breaker"] == "open"
    assert ups[0]["failovers"] == 1
    assert health["upstream_healthy"] is True  # the tier answered: no stale serving

    await pair.second.stop()
    await asyncio.sleep(1.1)
    t0 = time.monotonic()
    r = await pair.get(PLAYLIST)
    assert r.status_code == 200
    assert r.headers.get("x-cache") == "STALE"
    assert b"8.m4s" in r.content
    assert time.monotonic() - t0 < 2.0  # no wait for a timeout

    await pair.first.start()  # same port
    pair.first.set_playlist_msn(PLAYLIST, 9)
    async with asyncio.timeout(10):
        while True:  # polled through the shield, as players do
            if b"9.m4s" in (await pair.get(PLAYLIST)).content:
                break
            await asyncio.sleep(0.1)
    health = await pair.health()
    ups = health["upstreams"]
    assert isinstance(ups, list)
    assert ups[0]["breaker"] == "closed"


async def test_a_media_object_missing_on_the_first_origin_comes_from_the_second(
    pair: Pair,
) -> None:
    """A 404 for a segment (an origin that missed it) is asked of the next origin before the
    viewer sees a 404; the first origin stays preferred (a 404 is not a failure)."""
    only = "/live/final/v360/8.m4s"
    pair.second.publish(only, StubObject(b"seg-8" * 100))
    r = await pair.get(only)
    assert (r.status_code, r.content) == (200, b"seg-8" * 100)
    assert pair.first.fetches[only] == 1
    ups = (await pair.health())["upstreams"]
    assert isinstance(ups, list)
    assert ups[0]["breaker"] == "closed"
    assert (await pair.get("/live/final/v360/99.m4s")).status_code == 404  # nowhere: 404
