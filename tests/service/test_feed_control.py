"""The feed simulator's drill API: validated commands that change what the feed sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction

import httpx
import pytest

from mainevent.media.encode.ffmpeg import FeedSpec
from mainevent.media.feed import FeedProcess
from mainevent.media.feed_control import create_feed_control_app

pytestmark = pytest.mark.anyio


@pytest.fixture
async def feed_client() -> AsyncIterator[tuple[FeedProcess, httpx.AsyncClient]]:
    feed = FeedProcess(
        "ffmpeg", FeedSpec(url="srt://127.0.0.1:9?mode=caller", start_epoch=Fraction(0))
    )
    app = create_feed_control_app(feed)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://feed"
    ) as c:
        yield feed, c


async def test_commands_change_the_faults(
    feed_client: tuple[FeedProcess, httpx.AsyncClient],
) -> None:
    """stall, corrupt and desync set the faults the relay applies; clear removes them all."""
    feed, c = feed_client
    assert (await c.post("/faults/stall", json={"seconds": 3})).status_code == 200
    assert feed.status()["stalled_for_s"] > 2.5
    assert (
        await c.post("/faults/corrupt", json={"packets": 10, "raw_bytes": 5})
    ).status_code == 200
    assert feed.faults.garbage_packets == 10
    assert feed.faults.garbage_bytes == 5
    r = await c.post("/faults/desync", json={"audio_offset_ms": 300})
    assert r.json()["status"]["audio_offset_ms"] == 300
    assert (await c.post("/faults/clear")).status_code == 200
    assert feed.faults.garbage_packets == 0
    assert feed.faults.audio_offset_ticks == 0
    assert feed.status()["stalled_for_s"] == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/faults/stall", {"seconds": -1}, "seconds"),
        ("/faults/stall", {}, "seconds"),
        ("/faults/stall", {"seconds": "soon"}, "seconds"),
        ("/faults/corrupt", {"packets": 5, "bogus": 1}, "bogus"),
        ("/faults/desync", {"audio_offset_ms": 99_999}, "audio_offset_ms"),
    ],
)
async def test_bad_commands_are_422_with_the_field(
    feed_client: tuple[FeedProcess, httpx.AsyncClient],
    path: str,
    body: dict[str, object],
    field: str,
) -> None:
    """A bad drill command is refused with the field and reason, and changes nothing."""
    feed, c = feed_client
    r = await c.post(path, json=body)
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == field
    assert feed.faults.garbage_packets == 0
    assert feed.faults.stall_until == 0


async def test_not_json_and_wrong_method(
    feed_client: tuple[FeedProcess, httpx.AsyncClient],
) -> None:
    """A non-JSON body is 422 and GET on a command is 405."""
    _, c = feed_client
    assert (await c.post("/faults/stall", content=b"{not json")).status_code == 422
    assert (await c.get("/faults/drop")).status_code == 405
