"""The selector's adapter at the origin, with a real LiveEvent and real CMAF segments on a fake
clock: late media is listed rather than the slate, and every slate transition says why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mainevent.media.encode.ffmpeg import LadderSpec, RungSpec, find_ffmpeg
from mainevent.media.manifest import parse_media_playlist
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.redundancy.publisher import RedundantPublisher
from mainevent.media.redundancy.selector import Selector
from mainevent.media.redundancy.slate import SlateRendition, encode_slate
from mainevent.media.store import LocalSegmentStore

pytestmark = pytest.mark.anyio

D = 2.0
LADDER = LadderSpec(
    rungs=(RungSpec("v180", 320, 180, 300),),
    audio_id="a128",
    audio_bitrate_kbps=128,
    fps=30,
    segment_duration_ms=2000,
    part_target_ms=500,
    preset="ultrafast",
    threads=1,
)
RENDITIONS = ("v180", "a128")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def slate() -> dict[str, SlateRendition]:
    return await encode_slate(find_ffmpeg(), LADDER)


def stack(tmp_path: Path, clock: Clock) -> RedundantPublisher:
    ev = LiveEvent(
        event_id="soak",
        renditions=[
            RenditionSpec("v180", "video", 300, 320, 180),
            RenditionSpec("a128", "audio", 128),
        ],
        store=LocalSegmentStore(tmp_path),
        segment_duration_ms=2000,
        window_segments=30,
        fps=30,
        monotonic=clock,
        wall=clock,
    )
    sel = Selector(
        pipelines=("primary", "backup"),
        renditions=RENDITIONS,
        segment_duration_s=D,
        late_after_s=1.0,
        gap_after_s=1.5,
        failback_hold_s=10.0,
        failover_hold_s=1.0,
    )
    return RedundantPublisher(
        ev, sel, health=lambda: {"primary": True, "backup": True}, wall=clock, monotonic=clock
    )


async def deliver(
    pub: RedundantPublisher,
    clock: Clock,
    slate: dict[str, SlateRendition],
    msns: range,
    lateness_s: float,
) -> None:
    """Both pipelines deliver each segment `lateness_s` after its capture end (0.1 s ticks)."""
    for msn in msns:
        at = (msn + 1) * D + lateness_s
        while clock.t + 0.1 < at:
            clock.t += 0.1
            await pub._tick()
        clock.t = at
        for p in ("primary", "backup"):
            for r in RENDITIONS:
                # Stand-in media: the slate's own segments, delivered as ordinary segments.
                await pub.inputs[p].on_init(r, slate[r].init)
                await pub.inputs[p].on_segment(r, slate[r].at(msn)[0])


def slate_count(pub: RedundantPublisher) -> float:
    value = pub.event.metrics.registry.get_sample_value(
        "mainevent_slate_segments_total", {"event": "soak", "rendition": "v180"}
    )
    return value or 0.0


async def test_late_pipelines_are_listed_and_the_alarm_says_so(
    tmp_path: Path, slate: dict[str, SlateRendition], caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 9): media 1.8 s late (past the 1.5 s gap deadline) is listed, never
    the slate; the late-listing alarm (metric + log line) says latency grew."""
    clock = Clock(100 * D)
    pub = stack(tmp_path, clock)
    pub.slate = slate
    caplog.set_level(logging.WARNING)
    await deliver(pub, clock, slate, range(100, 112), lateness_s=1.8)
    assert slate_count(pub) == 0
    pl = parse_media_playlist(pub.event.playlist("v180") or "")
    assert [s.discontinuity or s.gap for s in pl.segments] == [False] * 12
    assert pl.media_sequence == 100
    reg = pub.event.metrics.registry
    assert reg.get_sample_value("mainevent_listing_late", {"event": "soak", "rendition": "v180"})
    late = reg.get_sample_value(
        "mainevent_late_segments_total",
        {"event": "soak", "rendition": "v180", "pipeline": "primary"},
    )
    assert late == 12
    assert "listing late: segment 100 from primary came 1.8 s after its capture end" in caplog.text
    # Back on time: the alarm clears.
    await deliver(pub, clock, slate, range(112, 115), lateness_s=0.3)
    assert not reg.get_sample_value(
        "mainevent_listing_late", {"event": "soak", "rendition": "v180"}
    )
    assert "listing on time again" in caplog.text


async def test_slate_in_and_out_is_logged_with_its_cause(
    tmp_path: Path, slate: dict[str, SlateRendition], caplog: pytest.LogCaptureFixture
) -> None:
    """Both pipelines silent: slate, logged with each pipeline's state; media coming back
    (late) is listed again and the way out of the slate is logged too."""
    clock = Clock(100 * D)
    pub = stack(tmp_path, clock)
    pub.slate = slate
    caplog.set_level(logging.WARNING)
    await deliver(pub, clock, slate, range(100, 103), lateness_s=0.3)
    for _ in range(60):  # 6 s of silence
        clock.t += 0.1
        await pub._tick()
    assert slate_count(pub) > 0
    assert "into slate up to segment" in caplog.text
    assert "primary (unhealthy, " in caplog.text  # not producing: unhealthy too
    assert "newest segment 102, 0.3 s after its capture end" in caplog.text
    await deliver(pub, clock, slate, range(107, 115), lateness_s=2.6)
    assert "out of slate/gap: segment" in caplog.text
    pl = parse_media_playlist(pub.event.playlist("v180") or "")
    assert pl.segments[-1].discontinuity is False
    assert pl.segments[-1].gap is False
    assert pub.event.last_msn("v180") == 114
