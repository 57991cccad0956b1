"""Epoch-locked time in the ffmpeg command lines and the pipeline's clock helpers."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.encode.ffmpeg import (
    FeedSpec,
    LadderSpec,
    RungSpec,
    feed_command,
    transcode_command,
)
from mainevent.media.encode.pipeline import epoch_of_time_of_day, next_boundary
from mainevent.media.feed import grid_start


@given(st.floats(min_value=1.6e9, max_value=2.2e9), st.sampled_from([25, 30, 50, 60]))
def test_feeds_started_at_different_moments_share_the_frame_grid(now: float, fps: int) -> None:
    """Any feed's frame k sits at an epoch instant j/fps, so two feeds agree on capture times."""
    start = grid_start(now, fps)
    assert start > now
    assert (start * fps).denominator == 1


def test_feed_carries_the_venue_clock_and_barcode() -> None:
    """The feed's timestamps are the time of day of frame 0 and its barcode the epoch frame number."""
    start = Fraction(1_795_465_478_1, 10)  # 1795465478.1
    cmd = feed_command("ffmpeg", FeedSpec(url="srt://x", start_epoch=start, fps=30))
    offset = cmd[cmd.index("-output_ts_offset") + 1]
    assert float(offset) == float(start % 86400)
    vf = cmd[cmd.index("-vf") + 1]
    assert f"+{int(start * 30) % (1 << 24)})" in vf


def test_transcoder_starts_on_the_boundary_and_keeps_a_constant_gop() -> None:
    """Keyframes fall on epoch boundaries: fps/aresample pinned to T, GOP = one segment, no scene cuts."""
    ladder = LadderSpec(
        rungs=(RungSpec("v1", 640, 360, 600),),
        audio_id="a",
        audio_bitrate_kbps=128,
        fps=30,
        segment_duration_ms=2000,
        part_target_ms=500,
    )
    cmd = transcode_command("ffmpeg", ladder, Fraction(71_430), {"v1": 3, "a": 4})
    graph = cmd[cmd.index("-filter_complex") + 1]
    assert "fps=30:start_time=71430.000000" in graph
    assert f"first_pts={71_430 * 48_000}" in graph
    assert "scenecut=0:open_gop=0:keyint=60:min-keyint=60" in cmd
    assert "-copyts" in cmd
    assert cmd[-1] == "pipe:4"


@given(
    st.integers(min_value=1_600_000_000_000, max_value=2_200_000_000_000),
    st.integers(min_value=-40_000, max_value=40_000),
)
def test_time_of_day_maps_to_the_nearest_epoch_across_midnight(now_ms: int, skew_ms: int) -> None:
    """A venue time of day within ±40 s of the wall clock maps to the right date, midnight included."""
    true_epoch = Fraction(now_ms + skew_ms, 1000)
    tod = true_epoch % 86400
    assert epoch_of_time_of_day(tod, now_ms / 1000) == true_epoch


@given(
    st.fractions(min_value=1_600_000_000, max_value=2_200_000_000),
    st.sampled_from([1000, 2000, 4000, 6000]),
)
def test_next_boundary(t: Fraction, seg_ms: int) -> None:
    """Runs start on the first segment boundary at or after the newest frame (+ margin)."""
    b = next_boundary(t, seg_ms)
    d = Fraction(seg_ms, 1000)
    assert b >= t
    assert b - t < d
    assert (b / d).denominator == 1
