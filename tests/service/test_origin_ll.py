"""The LL-HLS origin over HTTP (in-process ASGI): blocking reload, preload hints, delta updates,
caching headers and bad input. Target duration 1 s here, so every hold ends within 3 s."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from mainevent.media.cmaf import InitSection, Part, Segment, TrackInfo
from mainevent.media.manifest import MediaPlaylist, parse_media_playlist
from mainevent.media.origin.app import create_app
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.store import LocalSegmentStore

pytestmark = pytest.mark.anyio

TS = 90_000
D = TS  # 1 s segments
PARTS = 4
BASE = 1_800_000_000  # first MSN: epoch second 1.8e9


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_event(
    tmp_path: Path, *, latency: str = "low", max_held: int = 20_000, window: int = 3
) -> LiveEvent:
    return LiveEvent(
        event_id="final",
        renditions=[
            RenditionSpec("v360", "video", 600, 640, 360),
            RenditionSpec("a128", "audio", 128),
        ],
        store=LocalSegmentStore(tmp_path),
        segment_duration_ms=1000,
        window_segments=window,
        fps=30,
        monotonic=Clock(),
        wall=time.time,
        latency="low" if latency == "low" else "standard",
        part_target_ms=250,
        max_held_requests=max_held,
    )


def part(msn: int, k: int, timescale: int = TS) -> Part:
    d = timescale // PARTS
    return Part(msn, k, msn * timescale + k * d, d, k == 0, bytes([65 + k]) * 1000)


def segment(msn: int, timescale: int = TS) -> Segment:
    parts = tuple(part(msn, k, timescale) for k in range(PARTS))
    return Segment(
        msn=msn,
        start=msn * timescale,
        duration=timescale,
        timescale=timescale,
        parts=parts,
        data=b"".join(p.data for p in parts),
    )


class Live:
    """An LL event fed by hand, and a client of its origin."""

    def __init__(self, ev: LiveEvent, client: httpx.AsyncClient) -> None:
        self.ev = ev
        self.client = client

    async def start(self, segments: int) -> None:
        await self.ev.on_init(
            "v360", InitSection(b"VINIT", TrackInfo(1, "video", TS, "avc1.64001e", 640, 360))
        )
        await self.ev.on_init(
            "a128",
            InitSection(
                b"AINIT",
                TrackInfo(1, "audio", 48_000, "mp4a.40.2", sample_rate=48_000, channels=2),
            ),
        )
        for msn in range(BASE, BASE + segments):
            await self.complete(msn)

    def parts(self, msn: int, ks: range) -> None:
        for k in ks:
            self.ev.on_part("v360", part(msn, k))
            self.ev.on_part("a128", part(msn, k, 48_000))

    async def complete(self, msn: int, first_part: int = 0) -> None:
        self.parts(msn, range(first_part, PARTS))
        await self.ev.on_segment("v360", segment(msn))
        await self.ev.on_segment("a128", segment(msn, 48_000))

    def get(self, url: str) -> asyncio.Task[httpx.Response]:
        return asyncio.ensure_future(self.client.get(url))

    async def held(self, n: int) -> None:
        """Wait (bounded) until the origin holds `n` requests."""
        deadline = time.monotonic() + 5
        while self.ev.waiters.held != n:
            assert time.monotonic() < deadline, f"{self.ev.waiters.held} held, expected {n}"
            await asyncio.sleep(0.005)


PL = "/live/final/v360/index.m3u8"


@pytest.fixture
async def live_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Live]]:
    clients: list[httpx.AsyncClient] = []

    def factory(**kw: object) -> Live:
        ev = make_event(tmp_path, **kw)  # type: ignore[arg-type]
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app({"final": ev})),
            base_url="http://origin",
            timeout=10,
        )
        clients.append(client)
        return Live(ev, client)

    yield factory
    for c in clients:
        await c.aclose()


@pytest.fixture
async def live(live_factory: Callable[..., Live]) -> Live:
    lv = live_factory()
    await lv.start(14)
    return lv


def parsed(r: httpx.Response) -> MediaPlaylist:
    assert r.status_code == 200, r.text
    return parse_media_playlist(r.text)


LAST = BASE + 13


async def test_ll_playlist_lists_parts_hint_and_reports(live: Live) -> None:
    """An LL player sees parts, the next part's hint, server control and the audio's position."""
    live.parts(LAST + 1, range(2))
    r = await live.client.get(PL)
    pl = parsed(r)
    assert r.headers["cache-control"] == "public, max-age=1"  # TD/2, at least 1 s
    assert "cmsd-static" not in r.headers
    # The longest part a 250 ms cut can give: 8 video frames at 30 fps (266.7 ms; 12 AAC
    # frames are 256 ms), rounded up to 1 ms.
    assert pl.part_target_us == 267_000
    sc = pl.server_control
    assert sc is not None
    assert sc.can_block_reload
    assert sc.part_hold_back_us == 3 * 267_000
    assert sc.hold_back_us == 3_000_000
    assert sc.can_skip_until_us == 6_000_000
    assert [p.uri for p in pl.pending_parts] == [f"{LAST + 1}.0.m4s", f"{LAST + 1}.1.m4s"]
    assert pl.pending_parts[0].independent
    assert [h.uri for h in pl.preload_hints] == [f"{LAST + 1}.2.m4s"]
    assert [(rr.uri, rr.last_msn, rr.last_part) for rr in pl.rendition_reports] == [
        ("../a128/index.m3u8", LAST + 1, 1)
    ]
    first = pl.media_sequence
    assert all(s.program_date_time_ms == (first + i) * 1000 for i, s in enumerate(pl.segments))
    with_parts = [s for s in pl.segments if s.parts]
    assert with_parts
    assert all(s.parts[0].independent for s in with_parts)
    assert sum(s.duration_us for s in with_parts) <= 3 * 1_000_000  # parts of the last 3 × TD


async def test_blocking_reload_is_released_by_the_part(live: Live) -> None:
    """A player asking for the next part gets the playlist the moment that part lands."""
    task = live.get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=1")
    await live.held(1)
    live.parts(LAST + 1, range(1))
    await asyncio.sleep(0)
    assert not task.done()
    live.parts(LAST + 1, range(1, 2))
    r = await task
    pl = parsed(r)
    assert pl.pending_parts[-1].uri == f"{LAST + 1}.1.m4s"
    assert r.headers["cache-control"] == "public, max-age=6"  # 6 × TD
    ht = r.headers["cmsd-static"]
    assert ht.startswith("ht=")
    assert int(ht[3:]) >= 0
    assert live.ev.waiters.held == 0


async def test_released_requests_share_one_rendering(live: Live) -> None:
    """Fifty held players are all answered with the same playlist, rendered once."""
    tasks = [live.get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0") for _ in range(50)]
    await live.held(50)
    live.parts(LAST + 1, range(1))
    bodies = {(await t).content for t in tasks}
    assert len(bodies) == 1
    assert live.ev.playlist_body("v360") is live.ev.playlist_body("v360")


async def test_already_available_answers_at_once(live: Live) -> None:
    """Asking for a segment the playlist already has is answered without holding."""
    r = await live.client.get(f"{PL}?_HLS_msn={LAST}")
    assert parsed(r).last_msn == LAST
    assert r.headers["cache-control"] == "public, max-age=6"


async def test_part_past_the_last_means_next_segment(live: Live) -> None:
    """_HLS_part beyond a segment's final part waits for part 0 of the next segment."""
    task = live.get(f"{PL}?_HLS_msn={LAST}&_HLS_part={PARTS}")
    await live.held(1)
    live.parts(LAST + 1, range(1))
    assert parsed(await task).pending_parts[0].uri == f"{LAST + 1}.0.m4s"


async def test_msn_alone_waits_for_the_whole_segment(live: Live) -> None:
    """_HLS_msn without _HLS_part is held until that segment is complete, not just started."""
    task = live.get(f"{PL}?_HLS_msn={LAST + 1}")
    await live.held(1)
    live.parts(LAST + 1, range(PARTS))
    await asyncio.sleep(0.01)
    assert not task.done()
    await live.ev.on_segment("v360", segment(LAST + 1))
    assert parsed(await task).last_msn == LAST + 1


@pytest.mark.parametrize(
    "query",
    [
        "_HLS_part=1",  # part without msn
        f"_HLS_msn={LAST + 3}",  # more than 2 beyond the last MSN
        f"_HLS_msn={LAST + 3}&_HLS_part=0",
        "_HLS_msn=abc",
        "_HLS_msn=-1",
        f"_HLS_msn={LAST}&_HLS_part=-2",
        "_HLS_msn=+5",
        "_HLS_msn=1e9",
        "_HLS_msn=",
        "_HLS_msn=99999999999999999999999",  # beyond 18 digits
        f"_HLS_msn={LAST}&_HLS_part=1.5",
        f"_HLS_msn={LAST}&_HLS_msn={LAST}",  # duplicated
        f"_HLS_msn={LAST}&_HLS_part=0&_HLS_part=1",
        "_HLS_skip=NO",
        "_HLS_skip=YES&_HLS_skip=YES",
        "_HLS_msn=%00",
    ],
)
async def test_malformed_directives_are_400_at_once(live: Live, query: str) -> None:
    """A malformed or impossible request gets a cacheable 400 at once, never a held request."""
    r = await asyncio.wait_for(live.client.get(f"{PL}?{query}"), 2)
    assert r.status_code == 400, (query, r.text)
    assert r.headers["cache-control"] == "max-age=1"  # errors: 1 × TD
    assert live.ev.waiters.held == 0


async def test_unrelated_query_keys_are_ignored(live: Live) -> None:
    """CMCD and throughput keys do not change the answer."""
    r = await live.client.get(f"{PL}?CMCD=bl%3D1000&_HLS_throughput=5000000&_HLS_msn={LAST}")
    assert parsed(r).last_msn == LAST


async def test_unknown_rendition_and_event_are_404(live: Live) -> None:
    """Unknown names are 404 even with valid directives."""
    for url in (
        f"/live/final/v9999/index.m3u8?_HLS_msn={LAST + 1}",
        f"/live/other/v360/index.m3u8?_HLS_msn={LAST + 1}",
    ):
        r = await asyncio.wait_for(live.client.get(url), 2)
        assert r.status_code == 404
    assert live.ev.waiters.held == 0


async def test_request_held_past_three_target_durations_is_503(live: Live) -> None:
    """If the part does not come within 3 × TD the player gets a 503 and can retry."""
    t0 = time.monotonic()
    r = await asyncio.wait_for(live.client.get(f"{PL}?_HLS_msn={LAST + 2}&_HLS_part=0"), 10)
    held = time.monotonic() - t0
    assert r.status_code == 503
    assert 2.9 <= held < 5
    assert r.headers["cache-control"] == "max-age=1"
    assert live.ev.waiters.held == 0


async def test_hold_limit_answers_503_retry_after(live_factory: Callable[..., Live]) -> None:
    """Beyond the origin's bound on held requests, extra players get 503 + Retry-After."""
    lv = live_factory(max_held=3)
    await lv.start(14)
    tasks = [lv.get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0") for _ in range(3)]
    await lv.held(3)
    r = await lv.client.get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.headers["cache-control"] == "no-store"
    lv.parts(LAST + 1, range(1))
    assert {(await t).status_code for t in tasks} == {200}


async def test_delta_update_is_full_playlist_minus_skipped(live: Live) -> None:
    """_HLS_skip=YES gives EXT-X-SKIP and exactly the full playlist's newer segments."""
    live.parts(LAST + 1, range(2))
    full = parsed(await live.client.get(PL))
    delta = parsed(await live.client.get(f"{PL}?_HLS_skip=YES"))
    assert delta.skipped_segments > 0
    assert delta.media_sequence == full.media_sequence
    n = delta.skipped_segments
    strip = [(s.uri, s.duration_us, s.program_date_time_ms, s.parts) for s in full.segments[n:]]
    got = [(s.uri, s.duration_us, s.program_date_time_ms, s.parts) for s in delta.segments]
    assert got == strip
    assert delta.pending_parts == full.pending_parts
    assert delta.preload_hints == full.preload_hints
    assert delta.rendition_reports == full.rendition_reports
    # The skipped segments all end at least CAN-SKIP-UNTIL before the playlist's last segment.
    end = sum(s.duration_us for s in full.segments)
    assert sum(s.duration_us for s in full.segments[:n]) <= end - 6_000_000
    # Blocking and skipping combine.
    task = live.get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=2&_HLS_skip=YES")
    await live.held(1)
    live.parts(LAST + 1, range(2, 3))
    assert parsed(await task).skipped_segments == n


async def test_skip_on_a_playlist_too_short_to_skip_gives_full(
    live_factory: Callable[..., Live],
) -> None:
    """When no segment is old enough to skip, a delta request gets the full playlist."""
    lv = live_factory()
    await lv.start(5)
    r = await lv.client.get(f"{PL}?_HLS_skip=YES")
    assert parsed(r).skipped_segments == 0
    assert r.text == (await lv.client.get(PL)).text


async def test_standard_mode_refuses_directives(live_factory: Callable[..., Live]) -> None:
    """A standard-latency playlist offers no blocking or skip: asking for them is a 400."""
    lv = live_factory(latency="standard")
    await lv.start(5)
    plain = await lv.client.get(PL)
    assert "#EXT-X-PART" not in plain.text
    assert "SERVER-CONTROL" not in plain.text
    for q in (f"_HLS_msn={BASE + 5}", "_HLS_skip=YES", f"_HLS_msn={BASE}&_HLS_part=0"):
        r = await asyncio.wait_for(lv.client.get(f"{PL}?{q}"), 2)
        assert r.status_code == 400, q
    assert lv.ev.waiters.held == 0


async def test_endlist_ignores_directives_and_releases_holds(live: Live) -> None:
    """When the event ends, held players get the final playlist and directives are ignored."""
    task = live.get(f"{PL}?_HLS_msn={LAST + 1}&_HLS_part=0")
    await live.held(1)
    await live.ev.end()
    final = parsed(await task)
    assert final.endlist
    assert not final.preload_hints
    assert not final.pending_parts
    r = await live.client.get(f"{PL}?_HLS_msn={LAST + 50}&_HLS_skip=YES")
    pl = parsed(r)
    assert pl.endlist
    assert pl.skipped_segments == 0


async def test_preload_hint_request_is_held_then_served_whole(live: Live) -> None:
    """Requesting the hinted part early returns its complete bytes as soon as it exists."""
    live.parts(LAST + 1, range(1))
    hint = parsed(await live.client.get(PL)).preload_hints[0].uri
    assert hint == f"{LAST + 1}.1.m4s"
    task = live.get(f"/live/final/v360/{hint}")
    await live.held(1)
    live.parts(LAST + 1, range(1, 2))
    r = await task
    assert r.status_code == 200
    assert r.content == part(LAST + 1, 1).data
    assert r.headers["cmsd-static"].startswith("ht=")
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_part_of_withdrawn_segment_is_404(live: Live) -> None:
    """A held part whose segment is rejected is answered 404 once the stream moves on."""
    live.parts(LAST + 1, range(1))
    task = live.get(f"/live/final/v360/{LAST + 1}.2.m4s")
    await live.held(1)
    live.ev.on_rejected("v360", LAST + 1, "bad media: test")
    live.ev.on_part("v360", part(LAST + 2, 0))
    r = await asyncio.wait_for(task, 2)
    assert r.status_code == 404


async def test_part_too_far_ahead_or_never_coming(live: Live) -> None:
    """Parts far in the future are 404 at once; a hinted part that never comes is 503."""
    r = await asyncio.wait_for(live.client.get(f"/live/final/v360/{LAST + 5}.0.m4s"), 2)
    assert r.status_code == 404
    r = await asyncio.wait_for(live.client.get(f"/live/final/v360/{LAST}.{PARTS}.m4s"), 2)
    assert r.status_code == 404  # the segment is complete without such a part
    t0 = time.monotonic()
    r = await asyncio.wait_for(live.client.get(f"/live/final/v360/{LAST + 1}.0.m4s"), 10)
    assert r.status_code == 503
    assert time.monotonic() - t0 < 5


async def test_mpd_over_the_same_segments(live: Live) -> None:
    """A DASH player gets a dynamic MPD whose numbers are the epoch MSNs of the HLS segments."""
    r = await live.client.get("/live/final/manifest.mpd")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/dash+xml")
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    mpd = ET.fromstring(r.text)
    assert mpd.get("type") == "dynamic"
    ast = dt.datetime.fromisoformat(mpd.get("availabilityStartTime", "").replace("Z", "+00:00"))
    for rep in mpd.iterfind(".//d:Representation", ns):
        tpl = rep.find("d:SegmentTemplate", ns)
        assert tpl is not None
        ts = int(tpl.get("timescale", "0"))
        start = int(tpl.get("startNumber", "0"))
        assert int(tpl.get("duration", "0")) == ts  # 1 s segments
        assert int(tpl.get("presentationTimeOffset", "0")) == start * ts
        assert start == int(ast.timestamp())
        assert tpl.get("media") == f"{rep.get('id')}/$Number$.m4s"
        init = await live.client.get(f"/live/final/{tpl.get('initialization')}")
        assert init.status_code == 200
        seg = await live.client.get(f"/live/final/{rep.get('id')}/{LAST}.m4s")
        assert seg.status_code == 200
    timing = mpd.find("d:UTCTiming", ns)
    assert timing is not None
    assert timing.get("schemeIdUri") == "urn:mpeg:dash:utc:http-iso:2014"
    clock = await live.client.get(timing.get("value", ""))
    served = dt.datetime.fromisoformat(clock.text.replace("Z", "+00:00")).timestamp()
    assert abs(served - time.time()) < 2
