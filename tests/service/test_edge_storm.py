"""Cold-object storms from a separate process: 5,000 clients, one upstream fetch per shield."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest

from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.edge.stub import StubObject, StubUpstream

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

N = 5000
SEG = "/live/final/v360/900000001.m4s"
PLAYLIST = "/live/final/v360/index.m3u8"


async def until(check: Callable[[], bool], limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def storm(url: str, n: int = N) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mainevent.media.edge.storm",
        url,
        str(n),
        "--timeout",
        "60",
        stdout=asyncio.subprocess.PIPE,
    )


async def result(proc: asyncio.subprocess.Process) -> dict[str, dict[str, int]]:
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    data: dict[str, dict[str, int]] = json.loads(out.decode().strip().splitlines()[-1])
    return data


@pytest.fixture
async def shield() -> AsyncIterator[tuple[StubUpstream, EdgeServer]]:
    stub = StubUpstream(hold_missing_s=60.0, hold_timeout_s=60.0)
    await stub.start()
    edge = EdgeServer(EdgeConfig("shield", stub.url, upstream_timeout_s=90))
    await edge.start()
    yield stub, edge
    await edge.close()
    await stub.stop()


async def test_segment_storm_is_one_origin_fetch(shield: tuple[StubUpstream, EdgeServer]) -> None:
    """5,000 concurrent requests for a segment not yet published: 1 origin fetch, identical bytes to all."""
    stub, edge = shield
    proc = await storm(edge.url + SEG + "?CMCD=bl%3D900")
    await until(lambda: edge.waiting == N and stub.fetches[SEG] == 1)
    body = bytes(range(256)) * 800  # ~200 KB
    stub.publish(SEG, StubObject(body))
    data = await result(proc)
    assert data["errors"] == {}
    assert data["statuses"] == {"200": N}
    assert len(data["digests"]) == 1
    assert data["x_cache"] == {"MISS": 1, "COLLAPSED": N - 1}
    assert stub.fetches == {SEG: 1}


async def test_held_blocking_playlist_storm_is_one_fetch(
    shield: tuple[StubUpstream, EdgeServer],
) -> None:
    """5,000 identical held _HLS_msn reloads: one held upstream request, one playlist for all."""
    stub, edge = shield
    stub.set_playlist_msn(PLAYLIST, 41)
    proc = await storm(edge.url + PLAYLIST + "?_HLS_msn=42&_HLS_part=0&_HLS_throughput=123")
    key = PLAYLIST + "?_HLS_msn=42&_HLS_part=0"
    await until(lambda: edge.waiting == N and stub.fetches[key] == 1)
    stub.set_playlist_msn(PLAYLIST, 42)
    data = await result(proc)
    assert data["errors"] == {}
    assert data["statuses"] == {"200": N}
    assert len(data["digests"]) == 1
    assert stub.fetches == {key: 1}


async def test_storm_through_three_edges_is_one_fetch_per_tier(
    shield: tuple[StubUpstream, EdgeServer],
) -> None:
    """Three edges × 1,500 clients for one cold segment: 1 origin fetch, 1 shield fetch per edge."""
    stub, sh = shield
    edges = [EdgeServer(EdgeConfig(f"cdn-{c}", sh.url, upstream_timeout_s=90)) for c in "abc"]
    for e in edges:
        await e.start()
    try:
        procs = [await storm(e.url + SEG, 1500) for e in edges]
        await until(lambda: all(e.waiting == 1500 for e in edges) and sh.waiting == 3)
        stub.publish(SEG, StubObject(b"seg" * 50_000))
        results = [await result(p) for p in procs]
        for data in results:
            assert data["errors"] == {}
            assert data["statuses"] == {"200": 1500}
        assert len({d for r in results for d in r["digests"]}) == 1
        assert stub.fetches == {SEG: 1}
        assert sh.metrics.upstream_fetches["segment"] == 1
        assert (
            sh.metrics.requests[("segment", "MISS")] + sh.metrics.requests[("segment", "COLLAPSED")]
            == 3
        )
        assert all(e.metrics.upstream_fetches["segment"] == 1 for e in edges)
    finally:
        for e in edges:
            await e.close()
