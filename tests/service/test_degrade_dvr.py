"""`degrade` DVR through the real origin (in-process ASGI): with DVR off everything behind the
live edge answers 503 + Retry-After while the live playlist and the live edge play on; back on,
the segments recorded meanwhile are all there."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mainevent.media.origin.app import create_app
from mainevent.media.shedding import DVR_OFF_RETRY_AFTER_S
from tests.service.test_origin import Clock, publish
from tests.service.test_origin_dvr import FIRST, Wall, make_event

pytestmark = pytest.mark.anyio


def degraded_gauge(metrics: str) -> str:
    line = next(
        (ln for ln in metrics.splitlines() if ln.startswith('mainevent_degraded{event="final"')),
        "",
    )
    return line.rsplit(" ", 1)[-1]


async def test_dvr_off_refuses_everything_behind_the_live_edge_and_back_on_loses_nothing(
    tmp_path: Path,
) -> None:
    """DVR off: a DVR segment and the start-over playlist get 503 + Retry-After (no-store),
    the live playlist and the newest segments are served; on again: the DVR segment and the
    segments published while it was off are served, start-over lists them."""
    ev = make_event(tmp_path, Clock(), Wall())
    await publish(ev, range(FIRST, FIRST + 30))
    app = create_app({"final": ev})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://origin"
    ) as client:
        assert (await client.get(f"/live/final/v360/{FIRST + 5}.m4s")).status_code == 200
        assert degraded_gauge((await client.get("/metrics")).text) == "0.0"

        ev.set_dvr_off(True)
        dvr = await client.get(f"/live/final/v360/{FIRST + 5}.m4s")
        assert dvr.status_code == 503
        assert dvr.headers["retry-after"] == str(DVR_OFF_RETRY_AFTER_S)
        assert dvr.headers["cache-control"] == "no-store"
        assert "DVR is switched off for this event" in dvr.text
        startover = await client.get("/live/final/v360/startover.m3u8")
        assert startover.status_code == 503
        assert startover.headers["retry-after"] == str(DVR_OFF_RETRY_AFTER_S)
        assert (await client.get("/live/final/startover.m3u8")).status_code == 503

        # The live edge keeps playing, and the event keeps recording.
        playlist = await client.get("/live/final/v360/index.m3u8")
        assert playlist.status_code == 200
        assert f"{FIRST + 29}.m4s" in playlist.text
        await publish(ev, range(FIRST + 30, FIRST + 34))
        assert (await client.get(f"/live/final/v360/{FIRST + 33}.m4s")).status_code == 200
        assert (await client.get("/live/final/a128/index.m3u8")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert degraded_gauge(metrics) == "1.0"
        assert (
            'mainevent_origin_media_requests_by_class_total{class="dvr",event="final",'
            'outcome="shed_dvr_off"} 1.0'
        ) in metrics

        ev.set_dvr_off(False)
        assert (await client.get(f"/live/final/v360/{FIRST + 5}.m4s")).status_code == 200
        again = await client.get("/live/final/v360/startover.m3u8")
        assert again.status_code == 200
        for msn in (FIRST, FIRST + 5, FIRST + 30, FIRST + 33):
            assert f"{msn}.m4s" in again.text
        assert degraded_gauge((await client.get("/metrics")).text) == "0.0"


async def test_dvr_off_shrinks_the_mpd_time_shift_buffer_to_the_live_window(
    tmp_path: Path,
) -> None:
    """DASH players see the seekable range of the live window while DVR is off (60 s of DVR:
    PT58S → PT10S with a 6-segment live window of 2 s segments) and the DVR window again after."""
    ev = make_event(tmp_path, Clock(), Wall())
    await publish(ev, range(FIRST, FIRST + 30))
    app = create_app({"final": ev})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://origin"
    ) as client:

        async def depth() -> str:
            r = await client.get("/live/final/manifest.mpd")
            assert r.status_code == 200, r.text
            return r.text.split('timeShiftBufferDepth="', 1)[1].split('"', 1)[0]

        assert await depth() == "PT58S"
        ev.set_dvr_off(True)
        assert await depth() == "PT10S"
        ev.set_dvr_off(False)
        assert await depth() == "PT58S"
