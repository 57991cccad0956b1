"""LL-HLS through the delivery tier: a real origin server (its own HTTP protocol, over TCP) →
shield → edge, as `mainevent up --latency low` wires them. What leaves the playlist stays
downloadable at the edge as long as the origin's rule says (rfc8216bis §6.2.2: a removed
segment for its duration + the longest playlist that held it; part files 3 × TD after their
tags go), what is listed is downloadable at once, and blocking reloads at the window's edges
get the origin's answers. Target duration 1 s here (the origin's clock is a fake one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.manifest import MediaPlaylist, parse_media_playlist
from tests.service.test_origin_ll import BASE, LAST, PARTS, PL, part, segment
from tests.service.test_origin_protocol import Served, served_factory

pytestmark = pytest.mark.anyio

__all__ = ["served_factory"]  # the origin server fixture, reused

SEG = "/live/final/v360/{}.m4s"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Tier:
    served: Served
    shield: EdgeServer
    edge: EdgeServer
    client: httpx.AsyncClient

    @property
    def origin_fetches(self) -> int:
        return sum(self.shield.metrics.upstream_fetches.values())

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(self.edge.url + path)

    async def origin(self, path: str) -> httpx.Response:
        return await self.served.tcp.get(path)

    def advance(self, seconds: float) -> None:
        """Move the origin's clock (it decides what is still available)."""
        clock = self.served.live.ev.monotonic
        clock.t += seconds  # type: ignore[attr-defined]

    async def playlist(self, *, at_origin: bool = False) -> MediaPlaylist:
        """The media playlist through the tier (cached up to TD/2 there) or at the origin."""
        r = await (self.origin(PL) if at_origin else self.get(PL))
        assert r.status_code == 200, r.text
        return parse_media_playlist(r.text)


@pytest.fixture
async def tier(served_factory: Callable[..., Awaitable[Served]]) -> AsyncIterator[Tier]:
    served = await served_factory()
    shield = EdgeServer(EdgeConfig("shield", f"http://127.0.0.1:{served.port}"))
    await shield.start()
    edge = EdgeServer(EdgeConfig("cdn-a", shield.url))
    await edge.start()
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=200)) as c:
        yield Tier(served, shield, edge, c)
    await edge.close()
    await shield.close()


async def publish(tier: Tier, msn: int) -> None:
    await tier.served.live.complete(msn)


async def test_removed_segments_stay_downloadable_at_the_edge(tier: Tier) -> None:
    """Segments that left the LL playlist are served by the edge until the origin's deadline."""
    pl = await tier.playlist()
    first = pl.media_sequence
    assert first > BASE  # BASE .. first-1 were removed from the window
    for msn in range(BASE, first):
        r = await tier.get(SEG.format(msn))
        assert r.status_code == 200, (msn, r.text)
        assert r.content == segment(msn).data
    # One more slides out now; it is requested at the edge for the first time a while later,
    # still inside the availability period (1 s segment + the ≥ 12 s playlist that held it).
    await publish(tier, LAST + 1)
    assert (await tier.playlist(at_origin=True)).media_sequence == first + 1
    tier.advance(10)
    r = await tier.get(SEG.format(first))
    assert r.status_code == 200, r.text
    assert r.content == segment(first).data
    # Past the origin's deadline a segment never fetched before is gone everywhere.
    await publish(tier, LAST + 2)  # first + 1 leaves the window now
    tier.advance(30)
    assert (await tier.origin(SEG.format(first + 1))).status_code == 404
    assert (await tier.get(SEG.format(first + 1))).status_code == 404


async def test_removed_parts_stay_downloadable_at_the_edge(tier: Tier) -> None:
    """Part files whose tags were dropped (older than 3 × TD) are still served whole."""
    pl = await tier.playlist()
    listed = {p.uri for s in pl.segments for p in s.parts}
    old = [s for s in pl.segments if not s.parts]
    assert old, "every segment still lists parts"
    msn = int(old[-1].uri.split(".")[0])
    for k in range(PARTS):
        uri = f"{msn}.{k}.m4s"
        assert uri not in listed
        r = await tier.get(f"/live/final/v360/{uri}")
        assert r.status_code == 200, (uri, r.text)
        assert r.content == part(msn, k).data


async def test_a_listed_segment_is_downloadable_at_once_after_an_early_404(tier: Tier) -> None:
    """A segment asked for before it existed is served the moment the playlist lists it."""
    nxt = SEG.format(LAST + 1)
    early = await tier.get(nxt)
    assert early.status_code == 404
    await publish(tier, LAST + 1)
    assert (await tier.playlist(at_origin=True)).last_msn == LAST + 1
    r = await tier.get(nxt)
    assert r.status_code == 200, r.text
    assert r.content == segment(LAST + 1).data


async def test_a_listed_part_is_downloadable_at_once_after_an_early_404(tier: Tier) -> None:
    """A part asked for too far ahead (404) is served as soon as it is listed."""
    uri = f"/live/final/v360/{LAST + 3}.0.m4s"  # beyond the hint's reach: 404, not held
    assert (await tier.get(uri)).status_code == 404
    await publish(tier, LAST + 1)
    await publish(tier, LAST + 2)
    tier.served.live.parts(LAST + 3, range(1))
    r = await tier.get(uri)
    assert r.status_code == 200, r.text
    assert r.content == part(LAST + 3, 0).data


async def test_blocking_reloads_at_the_window_edges(tier: Tier) -> None:
    """Through shield + edge: an MSN that left the window answers at once, the next part is
    held and released by it (one origin fetch for identical requests), too far ahead is 400."""
    pl = await tier.playlist()
    gone = await tier.get(f"{PL}?_HLS_msn={BASE}&_HLS_part=0")
    assert gone.status_code == 200, gone.text
    assert parse_media_playlist(gone.text).media_sequence == pl.media_sequence
    too_far = await tier.get(f"{PL}?_HLS_msn={LAST + 3}")
    assert too_far.status_code == 400
    before = tier.origin_fetches
    url = f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0"
    held = [asyncio.ensure_future(tier.get(url)) for _ in range(10)]
    await tier.served.live.held(1)
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in held)
    tier.served.live.parts(LAST + 1, range(1))
    answers = await asyncio.gather(*held)
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert f'URI="{LAST + 1}.0.m4s"' in answers[0].text
    assert tier.origin_fetches == before + 1  # collapsed at the edge and at the shield
    # The 400 was not kept: once the window moved on, the same request is a valid hold.
    await tier.served.live.complete(LAST + 1, first_part=1)
    await publish(tier, LAST + 2)
    again = asyncio.ensure_future(tier.get(f"{PL}?_HLS_msn={LAST + 3}"))
    await tier.served.live.held(1)
    await publish(tier, LAST + 3)
    r = await again
    assert r.status_code == 200, r.text
    assert parse_media_playlist(r.text).last_msn == LAST + 3


async def test_preload_hint_is_held_through_the_tier(tier: Tier) -> None:
    """The hinted part, requested at the edge before it exists, arrives whole when produced."""
    pl = await tier.playlist()
    hint = pl.preload_hints[0].uri
    assert hint == f"{LAST + 1}.0.m4s"
    task = asyncio.ensure_future(tier.get(f"/live/final/v360/{hint}"))
    await tier.served.live.held(1)
    tier.served.live.parts(LAST + 1, range(1))
    r = await task
    assert r.status_code == 200, r.text
    assert r.content == part(LAST + 1, 0).data


async def test_plain_ll_playlist_is_at_most_part_targets_old_at_the_edge(tier: Tier) -> None:
    """A player joining through shield + edge starts from a playlist at most one PART-TARGET
    old per tier (it starts PART-HOLD-BACK behind its newest part), not TD/2 per tier."""
    before = await tier.playlist()  # now cached at the shield and at the edge
    assert not before.pending_parts
    tier.served.live.parts(LAST + 1, range(1))
    part_target_s = (before.part_target_us or 0) / 1e6
    await asyncio.sleep(2 * part_target_s + 0.05)  # the max-age=1 copies would still be fresh
    after = await tier.playlist()
    assert [p.uri for p in after.pending_parts] == [f"{LAST + 1}.0.m4s"]
