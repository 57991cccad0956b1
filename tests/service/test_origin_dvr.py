"""DVR over the origin's HTTP API (in-process ASGI): window, delta updates, start-over, VOD,
live-edge-first shedding, retention, and the precise 4xx of bad requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mainevent.media.manifest import parse_media_playlist, parse_multivariant_playlist
from mainevent.media.origin.app import create_app
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.redundancy.ops import ADMIN_SECRET_HEADER, with_ops
from mainevent.media.shedding import Budget
from mainevent.media.store import LocalSegmentStore
from tests.service.test_origin import Clock, publish, segment

pytestmark = pytest.mark.anyio

FIRST = 900_000_000
SECRET = "s3cret"


class Wall:
    def __init__(self) -> None:
        self.t = FIRST * 2.0

    def __call__(self) -> float:
        return self.t


def make_event(tmp_path: Path, clock: Clock, wall: Wall, **kw: object) -> LiveEvent:
    return LiveEvent(
        event_id="final",
        renditions=[
            RenditionSpec("v360", "video", 600, 640, 360),
            RenditionSpec("a128", "audio", 128),
        ],
        store=LocalSegmentStore(tmp_path, memory_segments=8),
        segment_duration_ms=2000,
        window_segments=6,
        fps=30,
        monotonic=clock,
        wall=wall,
        dvr_window_s=60,
        archive=True,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def wall() -> Wall:
    return Wall()


async def _client(ev: LiveEvent) -> AsyncIterator[httpx.AsyncClient]:
    app = with_ops(create_app({"final": ev}), None, SECRET, None, {"final": ev})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://origin"
    ) as c:
        yield c


@pytest.fixture
async def client(tmp_path: Path, wall: Wall) -> AsyncIterator[httpx.AsyncClient]:
    ev = make_event(tmp_path, Clock(), wall)
    async for c in _client(ev):
        c.event = ev  # type: ignore[attr-defined]
        yield c


async def test_live_playlist_carries_the_dvr_window_and_delta_updates(
    client: httpx.AsyncClient,
) -> None:
    """60 s of DVR = 30 segments listed; `_HLS_skip=YES` answers a small delta update."""
    ev: LiveEvent = client.event  # type: ignore[attr-defined]
    await publish(ev, range(FIRST, FIRST + 40))
    r = await client.get("/live/final/v360/index.m3u8")
    assert r.status_code == 200
    pl = parse_media_playlist(r.text)
    assert len(pl.segments) == 30
    assert pl.media_sequence == FIRST + 10
    assert pl.start_offset_us == -6_000_000, "players start at the live edge (3 × TD)"
    assert pl.server_control is not None
    assert pl.server_control.can_skip_until_us == 12_000_000
    d = await client.get("/live/final/v360/index.m3u8?_HLS_skip=YES")
    assert d.status_code == 200
    delta = parse_media_playlist(d.text)
    assert delta.skipped_segments == 24
    assert delta.last_msn == pl.last_msn
    assert len(d.content) * 3 < len(r.content)
    v2 = await client.get("/live/final/v360/index.m3u8?_HLS_skip=v2")
    assert v2.status_code == 200
    bad = await client.get("/live/final/v360/index.m3u8?_HLS_msn=5")
    assert bad.status_code == 400
    assert "no blocking reload" in bad.text
    mpd = (await client.get("/live/final/manifest.mpd")).text
    assert 'timeShiftBufferDepth="PT58S"' in mpd  # (window − 1) segments, as before


async def test_seek_before_the_window_is_a_precise_404(client: httpx.AsyncClient) -> None:
    """Segments inside the DVR window are served; one before it names the oldest available."""
    ev: LiveEvent = client.event  # type: ignore[attr-defined]
    await publish(ev, range(FIRST + 100, FIRST + 140))
    ok = await client.get(f"/live/final/v360/{FIRST + 112}.m4s")
    assert ok.status_code == 200, "read back from disk (memory keeps 8)"
    before = await client.get(f"/live/final/v360/{FIRST + 50}.m4s")
    assert before.status_code == 404
    assert f"before the DVR window of 60 s (the oldest available is {FIRST + 100})" in before.text
    unknown = await client.get("/live/nope/startover.m3u8")
    assert unknown.status_code == 404
    assert "event 'nope'" in unknown.text


async def test_startover_lists_from_the_first_segment_and_turns_vod(
    client: httpx.AsyncClient,
) -> None:
    """Start-over is EVENT from the event's first segment (older than the DVR window) and
    serves those segments; after the end command it has ENDLIST and VOD + MPD appear."""
    ev: LiveEvent = client.event  # type: ignore[attr-defined]
    await publish(ev, range(FIRST, FIRST + 50))
    vod = await client.get("/live/final/vod.m3u8")
    assert vod.status_code == 404
    assert "has not ended yet" in vod.text
    assert vod.headers["cache-control"] == "no-store"
    mv = parse_multivariant_playlist((await client.get("/live/final/startover.m3u8")).text)
    assert mv.variants[0].uri == "v360/startover.m3u8"
    assert mv.media[0].uri == "a128/startover.m3u8"
    so = parse_media_playlist((await client.get("/live/final/v360/startover.m3u8")).text)
    assert so.playlist_type == "EVENT"
    assert so.media_sequence == FIRST
    assert len(so.segments) == 50
    assert so.start_offset_us == 0
    old = await client.get(f"/live/final/v360/{FIRST}.m4s")
    assert old.status_code == 200, "start-over keeps the first segment downloadable"
    delta = await client.get("/live/final/v360/startover.m3u8?_HLS_skip=YES")
    assert parse_media_playlist(delta.text).skipped_segments == 44
    refused = await client.post("/_ops/events/final/end")
    assert refused.status_code == 401
    unknown = await client.post("/_ops/events/nope/end", headers={ADMIN_SECRET_HEADER: SECRET})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_event"
    r = await client.post("/_ops/events/final/end", headers={ADMIN_SECRET_HEADER: SECRET})
    assert r.status_code == 200
    assert r.json()["vod"] == "/live/final/vod.m3u8"
    ended = parse_media_playlist((await client.get("/live/final/v360/startover.m3u8")).text)
    assert ended.endlist
    assert len(ended.segments) == 50
    mv = parse_multivariant_playlist((await client.get("/live/final/vod.m3u8")).text)
    assert mv.variants[0].uri == "v360/vod.m3u8"
    v = parse_media_playlist((await client.get("/live/final/v360/vod.m3u8")).text)
    assert v.playlist_type == "VOD"
    assert v.endlist
    assert len(v.segments) == 50
    assert v.segments[0].uri == f"{FIRST}.m4s"
    mpd = await client.get("/live/final/vod.mpd")
    assert mpd.status_code == 200
    assert 'type="static"' in mpd.text
    assert 'mediaPresentationDuration="PT100S"' in mpd.text
    live = parse_media_playlist((await client.get("/live/final/v360/index.m3u8")).text)
    assert live.endlist
    assert live.start_offset_us is None


async def test_vod_leaves_the_slate_run_out(client: httpx.AsyncClient) -> None:
    """Slate segments are listed live but left out of the VOD playlist and MPD."""
    ev: LiveEvent = client.event  # type: ignore[attr-defined]
    await publish(ev, range(FIRST, FIRST + 10))
    for msn in range(FIRST + 10, FIRST + 13):
        video = segment(msn, 150_000)
        await ev.on_segment("v360", video, slate_parts=[p.data for p in video.parts])
        audio = segment(msn, 32_000, 48_000)
        await ev.on_segment("a128", audio, slate_parts=[p.data for p in audio.parts])
    await publish(ev, range(FIRST + 13, FIRST + 20))
    await ev.end()
    v = parse_media_playlist((await client.get("/live/final/v360/vod.m3u8")).text)
    assert len(v.segments) == 17
    assert f"{FIRST + 10}.m4s" not in [s.uri for s in v.segments]
    cut = next(s for s in v.segments if s.uri == f"{FIRST + 13}.m4s")
    assert cut.discontinuity
    mpd = (await client.get("/live/final/vod.mpd")).text
    assert mpd.count("<Period ") == 2
    assert 'mediaPresentationDuration="PT34S"' in mpd


async def test_a_segment_one_rendition_lost_splits_the_vod_mpd(client: httpx.AsyncClient) -> None:
    """A segment the audio rendition alone lost (rejected, never stored) leaves that second out
    of the static MPD as a cut between two Periods; the video's HLS VOD still lists it. (Before,
    the MPD listed only runs identical in every rendition, so one lost segment left it empty:
    404.)"""
    ev: LiveEvent = client.event  # type: ignore[attr-defined]
    await publish(ev, range(FIRST, FIRST + 10))
    video = segment(FIRST + 10, 150_000)
    for part in video.parts:
        ev.on_part("v360", part)
    await ev.on_segment("v360", video)  # the audio of this second never arrives
    await publish(ev, range(FIRST + 11, FIRST + 20))
    await ev.end()
    v = parse_media_playlist((await client.get("/live/final/v360/vod.m3u8")).text)
    assert len(v.segments) == 20
    mpd = await client.get("/live/final/vod.mpd")
    assert mpd.status_code == 200, mpd.text
    assert mpd.text.count("<Period ") == 2
    assert 'mediaPresentationDuration="PT38S"' in mpd.text
    assert f'startNumber="{FIRST + 11}"' in mpd.text


async def test_dvr_requests_are_shed_first_and_counted(tmp_path: Path, wall: Wall) -> None:
    """With the budget used up, a DVR segment gets 503 + Retry-After while a live-edge one is
    served; both outcomes are in the metrics."""
    ev = make_event(tmp_path, Clock(), wall, shed_budget=Budget(max_concurrent=1, retry_after_s=3))
    await publish(ev, range(FIRST, FIRST + 30))
    assert ev.shedder is not None
    # One request in progress uses the whole budget (as a slow disk read would).
    from mainevent.media.shedding import RequestClass

    busy = ev.shedder.admit(RequestClass.LIVE, 0.0)
    async for client in _client(ev):
        dvr = await client.get(f"/live/final/v360/{FIRST + 5}.m4s")
        assert dvr.status_code == 503
        assert dvr.headers["retry-after"] == "3"
        assert dvr.headers["cache-control"] == "no-store"
        assert "DVR requests are shed first" in dvr.text
        live = await client.get(f"/live/final/v360/{FIRST + 29}.m4s")
        assert live.status_code == 200
        ev.shedder.done(busy, 0, 0.0)
        again = await client.get(f"/live/final/v360/{FIRST + 5}.m4s")
        assert again.status_code == 200
        metrics = (await client.get("/metrics")).text
    assert (
        'mainevent_origin_media_requests_by_class_total{class="dvr",event="final",'
        'outcome="shed_concurrency"} 1.0'
    ) in metrics
    assert (
        'mainevent_origin_media_requests_by_class_total{class="live",event="final",'
        'outcome="served"} 1.0'
    ) in metrics


async def test_retention_deletes_only_what_no_playlist_lists(tmp_path: Path, wall: Wall) -> None:
    """During the event the archive lists everything, so nothing goes; once retention after
    the end ran out the playlists are withdrawn (410) and the files deleted."""
    ev = make_event(tmp_path, Clock(), wall, retention_s=30)
    await publish(ev, range(FIRST, FIRST + 40))
    wall.t = (FIRST + 40) * 2.0 + 3600
    assert ev.apply_retention() == []
    assert (tmp_path / "final" / "v360" / f"{FIRST}.m4s").exists()
    await ev.end()
    async for client in _client(ev):
        assert (await client.get("/live/final/v360/vod.m3u8")).status_code == 200
        wall.t += 31
        deleted = ev.apply_retention()
        assert len(deleted) == 80
        for task in list(ev._deleting):
            await task
        gone = await client.get("/live/final/vod.m3u8")
        assert gone.status_code == 410
        assert "retention" in gone.text
        live = await client.get("/live/final/v360/index.m3u8")
        assert live.status_code == 410, "no playlist lists deleted segments"
        seg = await client.get(f"/live/final/v360/{FIRST}.m4s")
        assert seg.status_code == 404
    assert not (tmp_path / "final" / "v360" / f"{FIRST}.m4s").exists()


async def test_low_latency_dvr_window_keeps_parts_at_the_edge_and_skips(
    tmp_path: Path, wall: Wall
) -> None:
    """LL-HLS with a DVR window: the window is the DVR one, parts only near the edge, delta
    updates through the LL server control, and no EXT-X-START (PART-HOLD-BACK places players)."""
    ev = make_event(tmp_path, Clock(), wall, latency="low", part_target_ms=500)
    await publish(ev, range(FIRST, FIRST + 40))
    async for client in _client(ev):
        pl = parse_media_playlist((await client.get("/live/final/v360/index.m3u8")).text)
        assert len(pl.segments) == 30
        assert pl.start_offset_us is None
        assert pl.server_control is not None
        assert pl.server_control.can_block_reload
        assert sum(1 for s in pl.segments if s.parts) <= 4
        delta = parse_media_playlist(
            (await client.get("/live/final/v360/index.m3u8?_HLS_skip=YES")).text
        )
        assert delta.skipped_segments == 24
        held = await client.get(f"/live/final/v360/index.m3u8?_HLS_msn={FIRST + 39}")
        assert held.status_code == 200


async def test_parts_longer_than_the_part_target_list_the_segment_whole(
    tmp_path: Path, wall: Wall, caplog: pytest.LogCaptureFixture
) -> None:
    """An encoder cutting 0.5 s parts for an event declared with 0.25 s parts: the origin
    lists every segment whole (no part breaks PART-TARGET) and says why, instead of failing
    the playlist."""
    ev = make_event(tmp_path, Clock(), wall, latency="low", part_target_ms=250)
    await publish(ev, range(FIRST, FIRST + 10))
    async for client in _client(ev):
        r = await client.get("/live/final/v360/index.m3u8")
        assert r.status_code == 200
        pl = parse_media_playlist(r.text)
        assert [s.uri for s in pl.segments][-1] == f"{FIRST + 9}.m4s"
        assert all(not s.parts for s in pl.segments)
    assert f"segment {FIRST + 9} listed without parts" in caplog.text
