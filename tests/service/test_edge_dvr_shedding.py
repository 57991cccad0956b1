"""The shield sheds DVR cache misses first: over its upstream budget a far-behind segment gets
503 + Retry-After while live-edge misses keep going to the origin (real loopback sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.edge.stub import StubObject, StubUpstream
from mainevent.media.shedding import Budget
from mainevent.testing.probes import metric
from tests.service.test_edge_server import until

pytestmark = pytest.mark.anyio

LIVE = "/live/final/v360/{}.m4s"


@pytest.fixture
async def shield() -> AsyncIterator[tuple[StubUpstream, EdgeServer]]:
    stub = StubUpstream(hold_missing_s=30.0)
    await stub.start()
    shield = EdgeServer(
        EdgeConfig(
            "shield",
            stub.url,
            shed_budget=Budget(max_concurrent=2, retry_after_s=4),
            live_edge_segments=6,
        )
    )
    await shield.start()
    yield stub, shield
    await shield.close()
    await stub.stop()


async def test_dvr_misses_are_shed_while_live_edge_misses_are_fetched(
    shield: tuple[StubUpstream, EdgeServer],
) -> None:
    """Two live-edge fetches in flight use the budget: a DVR miss is 503, a third live-edge
    miss still goes upstream, and cached DVR segments are still served from the cache."""
    stub, edge = shield
    stub.publish(LIVE.format(150), StubObject(b"old" * 1000))
    async with httpx.AsyncClient(timeout=20) as client:
        cached = await client.get(edge.url + LIVE.format(150))
        assert cached.status_code == 200
        # Live-edge segments not published yet: their fetches stay in flight.
        held = [asyncio.create_task(client.get(edge.url + LIVE.format(m))) for m in (200, 201, 202)]
        await until(lambda: len(edge._flights) == 3)
        dvr = await client.get(edge.url + LIVE.format(100))
        assert dvr.status_code == 503
        assert dvr.headers["retry-after"] == "4"
        assert dvr.headers["cache-control"] == "no-store"
        assert "DVR requests are shed first" in dvr.text
        hit = await client.get(edge.url + LIVE.format(150))
        assert hit.status_code == 200, "a DVR segment in the cache is a hit, never shed"
        assert hit.headers["x-cache"] == "HIT"
        for m in (200, 201, 202):
            stub.publish(LIVE.format(m), StubObject(b"new" * 1000))
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
        stub.publish(LIVE.format(100), StubObject(b"dvr" * 1000))
        again = await client.get(edge.url + LIVE.format(100))
        assert again.status_code == 200, again.text
        text = (await client.get(edge.url + "/metrics")).text
    assert metric(text, "edge_dvr_shed_total", edge="shield", reason="concurrency") == 1
