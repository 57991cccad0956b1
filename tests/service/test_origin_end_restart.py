"""The end of an event survives an origin restart on its own (in-process ASGI over one store
directory): the restarted origin serves the VOD, keeps ENDLIST on the live playlists, lists no
segment handed in later and answers 410 for segments past the end."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mainevent.media.manifest import parse_media_playlist, validate_media_playlist
from mainevent.media.origin.app import create_app
from mainevent.media.origin.archive import END_RECORD, EndRecord
from mainevent.media.origin.live import LiveEvent
from mainevent.media.redundancy.ops import ADMIN_SECRET_HEADER, with_ops
from tests.service.cmaf_headers import audio_init, video_init
from tests.service.test_origin import Clock, segment
from tests.service.test_origin_dvr import FIRST, SECRET, Wall, make_event

pytestmark = pytest.mark.anyio


@pytest.fixture
def wall() -> Wall:
    return Wall()


async def publish(ev: LiveEvent, msns: range) -> None:
    """Real headers (a restart parses them again), synthetic media segments."""
    await ev.on_init("v360", video_init())
    await ev.on_init("a128", audio_init())
    for msn in msns:
        await ev.on_segment("v360", segment(msn, 150_000))
        await ev.on_segment("a128", segment(msn, 32_000, 48_000))


def _client(ev: LiveEvent) -> httpx.AsyncClient:
    app = with_ops(create_app({"final": ev}), None, SECRET, None, {"final": ev})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://origin")


async def _vod_and_live(c: httpx.AsyncClient) -> tuple[str, str, str]:
    vod = await c.get("/live/final/v360/vod.m3u8")
    live = await c.get("/live/final/v360/index.m3u8")
    mpd = await c.get("/live/final/vod.mpd")
    assert (vod.status_code, live.status_code, mpd.status_code) == (200, 200, 200)
    return vod.text, live.text, mpd.text


async def test_a_restarted_origin_still_serves_the_vod_and_never_reopens(
    tmp_path: Path, wall: Wall
) -> None:
    """End on command → a new origin process over the same store (nobody tells it of the
    end) answers the same VOD playlist and static MPD, the live playlist keeps ENDLIST, a
    segment the encoder still hands in is not listed (counted as rejected), and a request
    for a segment past the end is a cacheable 410."""
    ev = make_event(tmp_path, Clock(), wall)
    await publish(ev, range(FIRST, FIRST + 40))
    async with _client(ev) as c:
        r = await c.post("/_ops/events/final/end", headers={ADMIN_SECRET_HEADER: SECRET})
        assert r.status_code == 200, r.text
        before_vod, before_live, before_mpd = await _vod_and_live(c)
    # Acknowledged means on disk: the end record is there, whole.
    record = EndRecord.decode((tmp_path / "final" / END_RECORD).read_bytes())
    assert record.last_msn("v360") == FIRST + 39
    assert record.ended_wall == wall.t

    wall.t += 600
    again = make_event(tmp_path, Clock(), wall)  # the restart: a fresh process's state
    assert again.restore() == 80
    assert again.ended
    assert again.ended_wall == record.ended_wall, "retention counts from the real end"
    async with _client(again) as c:
        vod, live, mpd = await _vod_and_live(c)
        assert vod == before_vod
        assert mpd == before_mpd
        assert 'type="static"' in mpd
        pl = parse_media_playlist(live)
        validate_media_playlist(pl)
        assert pl.endlist
        assert live == before_live
        vod_pl = parse_media_playlist(vod)
        assert vod_pl.playlist_type == "VOD"
        assert vod_pl.last_msn == FIRST + 39

        # The encoder of the restarted process keeps producing: nothing is listed, and its
        # new init section changes neither the VOD nor the MPD.
        assert await again.on_init("v360", video_init(1280, 720)) == "init.mp4"
        await again.on_segment("v360", segment(FIRST + 40, 150_000))
        await again.on_segment("v360", segment(FIRST + 41, 150_000))
        assert again.last_msn("v360") == FIRST + 39
        assert (await c.get("/live/final/v360/index.m3u8")).text == before_live
        assert (await c.get("/live/final/vod.mpd")).text == before_mpd
        late = await c.get(f"/live/final/v360/{FIRST + 40}.m4s")
        assert late.status_code == 410
        assert late.headers["cache-control"] == "max-age=60"
        assert f"ended with segment {FIRST + 39}" in late.text
        assert "vod.m3u8" in late.text
        metrics = (await c.get("/metrics")).text
        assert (
            'mainevent_segments_rejected_total{event="final",reason="event ended",'
            'rendition="v360"} 2.0'
        ) in metrics
        # A second end (an operator retrying) changes nothing.
        r = await c.post("/_ops/events/final/end", headers={ADMIN_SECRET_HEADER: SECRET})
        assert r.status_code == 200
    assert EndRecord.decode((tmp_path / "final" / END_RECORD).read_bytes()) == record


async def test_a_segment_stored_during_the_end_stays_unlisted_after_a_restart(
    tmp_path: Path, wall: Wall
) -> None:
    """A segment whose write was in flight when the event ended is on disk but never listed,
    neither now nor after a restart (the end record names the last listed MSN)."""
    ev = make_event(tmp_path, Clock(), wall)
    await publish(ev, range(FIRST, FIRST + 10))
    await ev.end()
    # As if its store write had started before the end and finished after it.
    store = ev.store
    from mainevent.media.store import SegmentRecord

    late = segment(FIRST + 10, 150_000)
    rec = SegmentRecord(FIRST + 10, 2_000_000, (FIRST + 10) * 2000, "init.mp4", len(late.data))
    await store.put_segment("final", "v360", rec, late.data)
    assert (tmp_path / "final" / "v360" / f"{FIRST + 10}.m4s").exists()
    again = make_event(tmp_path, Clock(), wall)
    again.restore()
    assert again.last_msn("v360") == FIRST + 9
    async with _client(again) as c:
        vod = parse_media_playlist((await c.get("/live/final/v360/vod.m3u8")).text)
        assert vod.last_msn == FIRST + 9
        r = await c.get(f"/live/final/v360/{FIRST + 10}.m4s")
        assert r.status_code == 410


async def test_an_event_that_never_ended_resumes_live_after_a_restart(
    tmp_path: Path, wall: Wall
) -> None:
    """Without an end record a restart continues the live event (no ENDLIST, no VOD)."""
    ev = make_event(tmp_path, Clock(), wall)
    await publish(ev, range(FIRST, FIRST + 10))
    again = make_event(tmp_path, Clock(), wall)
    assert again.restore() == 20
    assert not again.ended
    async with _client(again) as c:
        live = parse_media_playlist((await c.get("/live/final/v360/index.m3u8")).text)
        assert not live.endlist
        assert (await c.get("/live/final/vod.m3u8")).status_code == 404
        future = await c.get(f"/live/final/v360/{FIRST + 10}.m4s")
        assert future.status_code == 404
        assert future.headers["cache-control"] == "no-store"


async def test_a_damaged_end_record_still_keeps_the_event_ended(tmp_path: Path, wall: Wall) -> None:
    """An unreadable end record (disk damage) never reopens the live window."""
    ev = make_event(tmp_path, Clock(), wall)
    await publish(ev, range(FIRST, FIRST + 10))
    (tmp_path / "final" / END_RECORD).write_text(json.dumps({"ended": "yes"}))
    again = make_event(tmp_path, Clock(), wall)
    assert again.restore() == 20
    assert again.ended
    async with _client(again) as c:
        live = parse_media_playlist((await c.get("/live/final/v360/index.m3u8")).text)
        assert live.endlist
        assert (await c.get("/live/final/vod.m3u8")).status_code == 200


def test_end_record_round_trip_and_bad_input() -> None:
    """The record encodes to JSON and back; anything else is a ValueError naming the cause."""
    rec = EndRecord.of(1_800_000_000.5, {"v360": 7, "a128": 7, "v180": None})
    assert EndRecord.decode(rec.encode()) == rec
    assert rec.last_msn("v180") is None
    for bad in (b"", b"[]", b"{}", b'{"ended_wall": "x", "last_msn": {}}', b"\xff"):
        with pytest.raises(ValueError, match="not an end record"):
            EndRecord.decode(bad)


async def test_an_end_that_could_not_be_persisted_is_a_503_and_a_retry_persists_it(
    tmp_path: Path, wall: Wall
) -> None:
    """When the end record cannot be written the playlists still end, the command answers a
    precise 503 (retry), and the retry writes the record."""
    ev = make_event(tmp_path, Clock(), wall)
    await publish(ev, range(FIRST, FIRST + 10))
    blocker = tmp_path / "final" / END_RECORD
    blocker.mkdir()  # a directory where the record goes: the rename fails
    async with _client(ev) as c:
        r = await c.post("/_ops/events/final/end", headers={ADMIN_SECRET_HEADER: SECRET})
        assert r.status_code == 503
        assert r.json()["error"] == "end_not_persisted"
        assert "retry" in r.json()["detail"]
        live = parse_media_playlist((await c.get("/live/final/v360/index.m3u8")).text)
        assert live.endlist, "the playlists ended anyway"
        blocker.rmdir()
        r = await c.post("/_ops/events/final/end", headers={ADMIN_SECRET_HEADER: SECRET})
        assert r.status_code == 200
    assert EndRecord.decode(blocker.read_bytes()).last_msn("v360") == FIRST + 9
