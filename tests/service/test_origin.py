"""The origin over HTTP (in-process ASGI): URLs, status codes, headers, availability."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mainevent.media.cmaf import InitSection, Part, Segment, TrackInfo
from mainevent.media.manifest import parse_media_playlist, parse_multivariant_playlist
from mainevent.media.origin.app import create_app
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.store import LocalSegmentStore

pytestmark = pytest.mark.anyio

TS = 90_000
D = 2 * TS


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_event(tmp_path: Path, clock: Clock) -> LiveEvent:
    store = LocalSegmentStore(tmp_path)
    return LiveEvent(
        event_id="final",
        renditions=[
            RenditionSpec("v360", "video", 600, 640, 360),
            RenditionSpec("a128", "audio", 128),
        ],
        store=store,
        segment_duration_ms=2000,
        window_segments=3,
        fps=30,
        monotonic=clock,
        wall=lambda: 1_800_000_010.0,
    )


def segment(msn: int, size: int, timescale: int = TS) -> Segment:
    d = 2 * timescale
    parts = tuple(
        Part(msn, k, msn * d + k * d // 4, d // 4, k == 0, bytes([k]) * (size // 4))
        for k in range(4)
    )
    return Segment(
        msn=msn,
        start=msn * d,
        duration=d,
        timescale=timescale,
        parts=parts,
        data=b"".join(p.data for p in parts),
    )


async def publish(ev: LiveEvent, msns: range) -> None:
    await ev.on_init(
        "v360", InitSection(b"VINIT", TrackInfo(1, "video", TS, "avc1.64001e", 640, 360))
    )
    await ev.on_init(
        "a128",
        InitSection(
            b"AINIT", TrackInfo(1, "audio", 48_000, "mp4a.40.2", sample_rate=48_000, channels=2)
        ),
    )
    for msn in msns:
        video = segment(msn, 150_000)
        for part in video.parts:
            ev.on_part("v360", part)
        await ev.on_segment("v360", video)
        await ev.on_segment("a128", segment(msn, 32_000, 48_000))


@pytest.fixture
async def client(tmp_path: Path, clock: Clock) -> Iterator[httpx.AsyncClient]:
    ev = make_event(tmp_path, clock)
    app = create_app({"final": ev})
    app.state.event = ev
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://origin"
    ) as c:
        c.event = ev  # type: ignore[attr-defined]
        yield c  # type: ignore[misc]


async def test_master_waits_for_media_then_describes_it(client: httpx.AsyncClient) -> None:
    """Before any segment the master is 503 + Retry-After; then it carries measured figures."""
    r = await client.get("/live/final/master.m3u8")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    await publish(client.event, range(900_000_000, 900_000_004))  # type: ignore[attr-defined]
    r = await client.get("/live/final/master.m3u8")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert r.headers["cache-control"] == "max-age=1"
    mv = parse_multivariant_playlist(r.text)
    (v,) = mv.variants
    # 150 kB per 2 s video + 32 kB per 2 s audio
    assert v.bandwidth == 150_000 * 8 // 2 + 32_000 * 8 // 2
    assert v.average_bandwidth == v.bandwidth
    assert v.codecs == "avc1.64001e,mp4a.40.2"
    assert v.resolution == (640, 360)
    assert mv.media[0].uri == "a128/index.m3u8"


async def test_media_playlist_and_objects(client: httpx.AsyncClient) -> None:
    """Playlists list epoch MSNs with PDT; segments are immutable, playlists live ~TD/2."""
    await publish(client.event, range(900_000_000, 900_000_005))  # type: ignore[attr-defined]
    r = await client.get("/live/final/v360/index.m3u8")
    pl = parse_media_playlist(r.text)
    assert pl.media_sequence == 900_000_002
    assert [s.program_date_time_ms for s in pl.segments] == [
        m * 2000 for m in range(900_000_002, 900_000_005)
    ]
    assert pl.segments[0].map_uri == "init.mp4"
    seg = await client.get("/live/final/v360/900000004.m4s")
    assert seg.status_code == 200
    assert seg.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert seg.headers["access-control-allow-origin"] == "*"
    init = await client.get("/live/final/v360/init.mp4")
    assert init.content == b"VINIT"
    assert init.headers["content-type"] == "video/mp4"
    part = await client.get("/live/final/v360/900000004.1.m4s")
    assert part.status_code == 200
    assert part.content == bytes([1]) * (150_000 // 4)


async def test_removed_segment_stays_available_then_goes(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A segment that left the playlist is served for its duration + the playlist's, then 404."""
    ev = client.event  # type: ignore[attr-defined]
    await publish(ev, range(900_000_000, 900_000_004))
    clock = ev.monotonic
    assert (await client.get("/live/final/v360/900000000.m4s")).status_code == 200
    clock.t += 2 + 6 + 0.5  # type: ignore[attr-defined]
    assert (await client.get("/live/final/v360/900000000.m4s")).status_code == 404
    assert (tmp_path / "final" / "v360" / "900000000.m4s").exists(), "disk copy kept for DVR/VOD"


@pytest.mark.parametrize(
    "path",
    [
        "/live/final/v360/999999999.m4s",  # future
        "/live/final/v360/123.m4s",  # long gone / never
        "/live/final/v999/index.m3u8",  # unknown rendition
        "/live/nope/master.m3u8",  # unknown event
        "/live/final/v360/..%2f..%2fetc%2fpasswd",
        "/live/final/v360/%2e%2e",
        "/live/final/v360/index.mp4",
        "/live/final/v360/init-../../x.mp4",
        "/live/final/../../../etc/passwd",
    ],
)
async def test_unknown_future_and_traversal_are_404(client: httpx.AsyncClient, path: str) -> None:
    """Unknown, future and path-traversal requests are 404 and never touch other files."""
    await publish(client.event, range(900_000_000, 900_000_004))  # type: ignore[attr-defined]
    r = await client.get(path)
    assert r.status_code == 404
    assert b"root:" not in r.content


async def test_restart_restores_published_window(tmp_path: Path, clock: Clock) -> None:
    """A new origin on the same data directory lists and serves what was published."""
    first = make_event(tmp_path, clock)
    await publish(first, range(900_000_000, 900_000_005))
    before = first.playlist("v360")
    second = make_event(tmp_path, clock)
    assert second.restore() == 10
    assert second.playlist("v360") == before
    app = create_app({"final": second})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as c:
        r = await c.get("/live/final/v360/900000004.m4s")
        assert r.status_code == 200
        assert len(r.content) == 150_000


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    """/healthz reports each rendition's last MSN; /metrics counts publications and requests."""
    await publish(client.event, range(900_000_000, 900_000_003))  # type: ignore[attr-defined]
    await client.get("/live/final/v360/1.m4s")
    h = (await client.get("/healthz")).json()
    assert h["events"]["final"]["v360"]["last_msn"] == 900_000_002
    m = (await client.get("/metrics")).text
    assert 'mainevent_segments_published_total{event="final",rendition="v360"} 3.0' in m
    assert 'mainevent_origin_requests_total{status="404",type="segment"} 1.0' in m


def _event_at(tmp_path: Path, wall_s: float, **kw: object) -> LiveEvent:
    return LiveEvent(
        event_id="final",
        renditions=[
            RenditionSpec("v360", "video", 600, 640, 360),
            RenditionSpec("a128", "audio", 128),
        ],
        store=LocalSegmentStore(tmp_path),
        segment_duration_ms=2000,
        window_segments=3,
        fps=30,
        wall=lambda: wall_s,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("wall_s", "freshness", "max_age"),
    [
        # Segments up to 900_000_003 are listed: it ended at capture 1_800_000_008 s, and the
        # next one can be listed from 1_800_000_010 s on.
        (1_800_000_008.4, "aligned", "max-age=1"),  # 1.6 s before the next can be listed
        (1_800_000_009.2, "aligned", "max-age=0"),  # the last second: not kept by any cache
        (1_800_000_010.5, "aligned", "max-age=0"),  # due and not yet listed
        (1_800_000_013.0, "aligned", "max-age=1"),  # running late: plain TD/2 again
        (1_800_000_009.2, "half_td", "max-age=1"),
        (1_800_000_009.2, None, "max-age=1"),  # the default: TD/2
    ],
)
async def test_standard_playlist_never_cached_past_the_next_publication(
    tmp_path: Path, wall_s: float, freshness: str | None, max_age: str
) -> None:
    """With `aligned` freshness a cached standard playlist expires before the next segment can
    be listed, so a player joining through the shield and an edge gets the newest segment, not
    one 2 s old; the default keeps TD/2."""
    kw = {} if freshness is None else {"playlist_freshness": freshness}
    ev = _event_at(tmp_path, wall_s, **kw)
    await publish(ev, range(900_000_000, 900_000_004))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app({"final": ev})), base_url="http://origin"
    ) as c:
        r = await c.get("/live/final/v360/index.m3u8")
    assert r.status_code == 200
    assert r.headers["cache-control"] == max_age
    assert parse_media_playlist(r.text).last_msn == 900_000_003


async def test_mpd_asks_dash_players_to_play_where_hls_players_do(
    client: httpx.AsyncClient,
) -> None:
    """suggestedPresentationDelay is 2 × D (Shaka adds one segment for its live edge: 3 × D,
    the HLS hold-back); before it was 3 × D, a segment behind every HLS player."""
    import xml.etree.ElementTree as ET

    await publish(client.event, range(900_000_000, 900_000_004))  # type: ignore[attr-defined]
    r = await client.get("/live/final/manifest.mpd")
    assert r.status_code == 200
    mpd = ET.fromstring(r.text)
    assert mpd.get("suggestedPresentationDelay") == "PT4S"
    assert mpd.get("maxSegmentDuration") == "PT2S"
