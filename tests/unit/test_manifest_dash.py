"""The live DASH MPD renderer: epoch-numbered SegmentTemplate over the HLS CMAF media."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mainevent.media.manifest import ManifestError
from mainevent.media.manifest.dash import DashRepresentation, MpdInfo, render_mpd

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
DAY_MS = 1_763_856_000_000  # 2025-11-23T00:00:00Z


def info(**kw: int | str) -> MpdInfo:
    base: dict[str, int | str] = {
        "availability_start_ms": DAY_MS,
        "publish_time_ms": DAY_MS + 3_600_000,
        "segment_duration_ms": 2000,
        "start_number": DAY_MS // 2000,
        "time_shift_buffer_ms": 10_000,
        "minimum_update_period_ms": 2000,
        "suggested_presentation_delay_ms": 6000,
        "min_buffer_ms": 2000,
        "utc_timing_url": "http://origin/time",
    }
    base.update(kw)
    return MpdInfo(**base)  # type: ignore[arg-type]


REPS = [
    DashRepresentation("v360", "video", "avc1.64001e", 700_000, 90_000, "v360/init.mp4", 640, 360, 30),
    DashRepresentation("a128", "audio", "mp4a.40.2", 130_000, 48_000, "a128/init.mp4",
                       audio_sampling_rate=48_000),
]  # fmt: skip


def test_mpd_is_dynamic_and_epoch_numbered() -> None:
    """A DASH player computes segment n = the HLS MSN n, with tfdt = epoch time."""
    mpd = ET.fromstring(render_mpd(info(), REPS))
    assert mpd.get("type") == "dynamic"
    assert mpd.get("availabilityStartTime") == "2025-11-23T00:00:00.000Z"
    assert mpd.get("publishTime") == "2025-11-23T01:00:00.000Z"
    assert mpd.get("minimumUpdatePeriod") == "PT2S"
    assert mpd.get("timeShiftBufferDepth") == "PT10S"
    assert mpd.get("suggestedPresentationDelay") == "PT6S"
    tpls = {
        rep.get("id"): rep.find("d:SegmentTemplate", NS)
        for rep in mpd.iterfind(".//d:Representation", NS)
    }
    v, a = tpls["v360"], tpls["a128"]
    assert v is not None
    assert a is not None
    assert v.get("media") == "v360/$Number$.m4s"
    assert v.get("initialization") == "v360/init.mp4"
    assert v.get("startNumber") == str(DAY_MS // 2000)
    assert v.get("duration") == "180000"
    assert int(v.get("presentationTimeOffset", "")) == DAY_MS // 1000 * 90_000
    assert int(a.get("presentationTimeOffset", "")) == DAY_MS // 1000 * 48_000
    timing = mpd.find("d:UTCTiming", NS)
    assert timing is not None
    assert timing.get("schemeIdUri") == "urn:mpeg:dash:utc:http-iso:2014"
    assert timing.get("value") == "http://origin/time"


def test_mpd_refuses_an_off_grid_anchor() -> None:
    """An anchor off the segment grid would shift every $Number$: refused."""
    with pytest.raises(ManifestError):
        render_mpd(info(availability_start_ms=DAY_MS + 1000), REPS)
    with pytest.raises(ManifestError):
        render_mpd(info(start_number=1), REPS)
    with pytest.raises(ManifestError):
        render_mpd(info(), [])


@pytest.mark.parametrize(("d_ms", "spd_ms"), [(2000, 4000), (4000, 8000), (1000, 2000)])
def test_presentation_delay_is_two_segments(d_ms: int, spd_ms: int) -> None:
    """DASH players are asked to play 2 × D behind the newest available segment's end (3 × D
    behind the wall clock for Shaka, as HLS players play 3 × TD)."""
    from mainevent.media.manifest.dash import suggested_presentation_delay_ms

    assert suggested_presentation_delay_ms(d_ms) == spd_ms
