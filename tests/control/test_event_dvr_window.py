"""Each event's DVR window comes from its control-plane record (`dvr_window_s`), not from the
platform's `dvr.window_s`: the real control plane in-process, the event's media plane built the
way the supervisor's adapter builds it (`record_of` → `event_settings` → `live_event`), and the
real origin app serving both events (synthetic segments, no ffmpeg, no browser)."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mainevent.commands.stack import live_event
from mainevent.commands.supervised import MediaSupervisor, event_settings, record_of
from mainevent.config import Settings
from mainevent.control.db import Database, open_database
from mainevent.control.supervisor.model import RecordChanged, SetDvrWindow
from mainevent.media.manifest import parse_media_playlist
from mainevent.media.origin.app import create_app
from mainevent.media.origin.live import LiveEvent, Metrics
from mainevent.media.store import LocalSegmentStore
from tests.control.conftest import Harness
from tests.service.test_origin import publish

pytestmark = pytest.mark.anyio

FIRST = 900_000_000
LADDER = [{"id": "v360", "width": 640, "height": 360, "bitrate_kbps": 600}]


@pytest.fixture
def database(tmp_path: Path, _sqlite_template: Path) -> Iterator[Database]:
    """SQLite only: what is under test is the record reaching the media plane, not the store."""
    target = tmp_path / "control.db"
    shutil.copyfile(_sqlite_template, target)
    db = open_database(f"sqlite:///{target}", migrate=False)
    try:
        yield db
    finally:
        db.dispose()


class Media:
    """Two events' media planes behind one real origin, as the supervisor's adapter makes them."""

    def __init__(self, harness: Harness, root: Path) -> None:
        self.harness = harness
        self.settings = Settings()  # dvr.window_s = 600: the records must win over it
        self.store = LocalSegmentStore(root)
        self.events: dict[str, LiveEvent] = {}
        self.app = create_app(self.events)
        self.supervisor = MediaSupervisor(
            settings=self.settings,
            services=harness.services,
            control_url="http://control",
            admin_key="unused",
            origin=self.app.state.origin,
            events=self.events,
            store=self.store,
            ffmpeg="ffmpeg",
            with_feed=False,
            edge_urls=dict,
            rehearsal_secret="rehearsal-secret",
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://origin"
        )

    def start(self, event_id: str) -> LiveEvent:
        out = self.harness.services.store.get_event(event_id)
        rec = record_of(out)
        self.supervisor.core.handle(RecordChanged(rec), self.harness.clock())
        s = event_settings(self.settings, event_id, rec.media, {"primary": 0, "backup": 0})
        ev = live_event(s, self.store, Metrics(CollectorRegistry()))
        self.events[event_id] = ev
        return ev

    def reread(self, event_id: str) -> list[SetDvrWindow]:
        """What the supervisor does with the changed record (only its DVR actions)."""
        rec = record_of(self.harness.services.store.get_event(event_id))
        acts = self.supervisor.core.handle(RecordChanged(rec), self.harness.clock())
        out = [a for a in acts if isinstance(a, SetDvrWindow)]
        for a in out:
            self.supervisor.set_dvr_window(a.event_id, a.window_s)
        return out

    async def depth(self, event_id: str) -> tuple[int, str, bool]:
        """(segments listed, MPD timeShiftBufferDepth, offers delta updates)."""
        text = (await self.client.get(f"/live/{event_id}/v360/index.m3u8")).raise_for_status()
        pl = parse_media_playlist(text.text)
        mpd = (await self.client.get(f"/live/{event_id}/manifest.mpd")).raise_for_status().text
        m = re.search(r'timeShiftBufferDepth="(PT\d+S)"', mpd)
        assert m is not None, mpd
        skips = pl.server_control is not None and pl.server_control.can_skip_until_us is not None
        return len(pl.segments), m[1], skips


@pytest.fixture
async def media(harness: Harness, tmp_path: Path) -> AsyncIterator[Media]:
    common = {"ladder": LADDER, "latency_mode": "standard", "segment_duration_ms": 2000}
    await harness.event("long", "live", dvr_window_s=120, **common)
    await harness.event("short", "live", dvr_window_s=0, **common)
    m = Media(harness, tmp_path / "media")
    async with m.client:
        yield m


async def test_two_events_carry_their_own_dvr_windows(media: Media) -> None:
    """A 120 s record lists 60 segments (MPD depth 118 s) with delta updates and a live-edge
    start; a 0 s record lists the live window only, whatever the platform's `dvr.window_s`."""
    for eid in ("long", "short"):
        await publish(media.start(eid), range(FIRST, FIRST + 100))
    assert await media.depth("long") == (60, "PT118S", True)
    live = media.settings.event.window_segments
    assert await media.depth("short") == (live, f"PT{(live - 1) * 2}S", False)
    pl = parse_media_playlist((await media.client.get("/live/long/v360/index.m3u8")).text)
    assert pl.start_offset_us == -6_000_000, "DVR playlists start players at the live edge"


async def test_a_patch_while_live_changes_the_window_at_once(
    media: Media, harness: Harness
) -> None:
    """PATCH dvr_window_s 120 → 30 on a live event: its playlist drops to 15 segments at once
    (the other event is untouched); → 300: it grows as new segments come, never re-listing."""
    long_ev = media.start("long")
    await publish(long_ev, range(FIRST, FIRST + 100))
    await publish(media.start("short"), range(FIRST, FIRST + 100))
    r = await harness.op("PATCH", "/v1/events/long", {"dvr_window_s": 30})
    assert r.status_code == 200, r.text
    assert media.reread("long") == [SetDvrWindow("long", 30)]
    assert await media.depth("long") == (15, "PT28S", True)
    assert (await media.depth("short"))[0] == media.settings.event.window_segments
    head = parse_media_playlist((await media.client.get("/live/long/v360/index.m3u8")).text)
    assert head.media_sequence == FIRST + 85
    dropped = await media.client.get(f"/live/long/v360/{FIRST + 84}.m4s")
    assert dropped.status_code == 200, "a segment just dropped stays downloadable a while"

    r = await harness.op("PATCH", "/v1/events/long", {"dvr_window_s": 300})
    assert r.status_code == 200, r.text
    assert media.reread("long") == [SetDvrWindow("long", 300)]
    assert (await media.depth("long"))[0] == 15, "nothing already gone is listed again"
    await publish(long_ev, range(FIRST + 100, FIRST + 130))
    assert await media.depth("long") == (45, "PT298S", True)
    assert media.reread("long") == [], "an unchanged record sends nothing"


async def test_a_bad_window_is_a_precise_422(harness: Harness) -> None:
    """A negative or over-a-day window, or null, is refused naming the field."""
    await harness.event("bad", "live", dvr_window_s=60)
    for value in (-1, 86_401, None, "long"):
        r = await harness.op("PATCH", "/v1/events/bad", {"dvr_window_s": value})
        assert r.status_code == 422, (value, r.text)
        assert "dvr_window_s" in r.text


async def test_turning_dvr_off_live_never_breaks_a_player_using_delta_updates(
    media: Media, harness: Harness
) -> None:
    """PATCH 120 → 0: the playlist shrinks to the live window and stops declaring delta
    updates, but a player's next `_HLS_skip=YES` reload still gets a (full) playlist, not a
    400; an event that never offered them refuses the directive as before."""
    await publish(media.start("long"), range(FIRST, FIRST + 100))
    await publish(media.start("short"), range(FIRST, FIRST + 100))
    delta = await media.client.get("/live/long/v360/index.m3u8?_HLS_skip=YES")
    assert parse_media_playlist(delta.text).skipped_segments > 0
    r = await harness.op("PATCH", "/v1/events/long", {"dvr_window_s": 0})
    assert r.status_code == 200, r.text
    assert media.reread("long") == [SetDvrWindow("long", 0)]
    live = media.settings.event.window_segments
    assert await media.depth("long") == (live, f"PT{(live - 1) * 2}S", False)
    again = await media.client.get("/live/long/v360/index.m3u8?_HLS_skip=YES")
    assert again.status_code == 200
    pl = parse_media_playlist(again.text)
    assert pl.skipped_segments == 0
    assert len(pl.segments) == live
    never = await media.client.get("/live/short/v360/index.m3u8?_HLS_skip=YES")
    assert never.status_code == 400
    assert "no blocking reload or delta updates" in never.text
