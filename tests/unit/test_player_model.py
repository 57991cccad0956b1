"""Playback model of the headless player: startup, stalls, latency on a virtual playhead."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.player.model import (
    PlaybackConfig,
    PlaybackEnded,
    PlaybackModel,
    PlaybackStarted,
    StallEnded,
    StallStarted,
)

S = 1_000_000  # one second in microseconds
T0 = 1_800_000_000.0  # play request, epoch seconds
EPOCH_US = 1_799_999_990 * S  # media position = PDT in epoch microseconds


def model(tracks: tuple[str, ...] = ("main",), start: int = EPOCH_US) -> PlaybackModel:
    return PlaybackModel(tracks, start, T0, PlaybackConfig())


def test_starts_when_start_buffer_is_there() -> None:
    """Playback starts once 0.5 s is buffered on every track; startup = request to then."""
    m = model(("main", "audio"))
    assert m.append("main", EPOCH_US, 2 * S, T0 + 0.4) == []
    events = m.append("audio", EPOCH_US, 2 * S, T0 + 0.7)
    assert len(events) == 1
    assert isinstance(events[0], PlaybackStarted)
    assert events[0].startup_s == pytest.approx(0.7)
    assert m.statistics().startup_s == pytest.approx(0.7)
    assert m.state == "playing"


def test_no_stall_when_segments_arrive_in_time() -> None:
    """Segments that arrive before the playhead needs them cause no stall."""
    m = model()
    m.append("main", EPOCH_US, 2 * S, T0 + 0.1)
    for n in range(1, 10):
        events = m.append("main", EPOCH_US + n * 2 * S, 2 * S, T0 + 0.1 + n * 2 - 0.5)
        assert not any(isinstance(e, StallStarted) for e in events)
    m.advance(T0 + 18.0)
    stats = m.statistics()
    assert stats.stalls == 0
    assert stats.stall_time_s == 0
    assert stats.played_s == pytest.approx(17.9)
    assert stats.buffer_ahead_s == pytest.approx(2.1)


def test_stall_is_counted_with_its_duration() -> None:
    """The playhead stops at the end of the buffer; the stall lasts until media is back."""
    m = model()
    m.append("main", EPOCH_US, 2 * S, T0 + 1.0)  # starts at T0 + 1
    events = m.advance(T0 + 4.0)  # buffer ran out at T0 + 3
    assert len(events) == 1
    assert isinstance(events[0], StallStarted)
    assert events[0].at == pytest.approx(T0 + 3.0)
    assert events[0].position_us == EPOCH_US + 2 * S
    assert m.statistics().stall_time_s == pytest.approx(1.0)  # ongoing stall counts
    events = m.append("main", EPOCH_US + 2 * S, 2 * S, T0 + 4.5)
    assert len(events) == 1
    assert isinstance(events[0], StallEnded)
    assert events[0].duration_s == pytest.approx(1.5)
    m.advance(T0 + 5.0)
    stats = m.statistics()
    assert (stats.stalls, stats.state) == (1, "playing")
    assert stats.stall_time_s == pytest.approx(1.5)
    assert stats.played_s == pytest.approx(2.5)
    assert stats.longest_stall_s == pytest.approx(1.5)


def test_longest_stall_is_the_longest_single_one() -> None:
    """Two stalls of 1 s and 0.5 s: 1.5 s stalled in all, the longest 1 s (an ongoing one counts)."""
    m = model()
    m.append("main", EPOCH_US, 2 * S, T0 + 1.0)  # plays until T0 + 3
    m.append("main", EPOCH_US + 2 * S, 2 * S, T0 + 4.0)  # 1 s stall, plays until T0 + 6
    m.append("main", EPOCH_US + 4 * S, 2 * S, T0 + 6.5)  # 0.5 s stall
    stats = m.statistics()
    assert (stats.stalls, stats.stall_time_s, stats.longest_stall_s) == (
        2,
        pytest.approx(1.5),
        pytest.approx(1.0),
    )
    m.advance(T0 + 10.5)  # out of media at T0 + 8.5: 2 s into a third stall
    assert m.statistics().longest_stall_s == pytest.approx(2.0)


def test_stall_needs_resume_buffer() -> None:
    """A sliver of media (below the resume threshold) does not end a stall."""
    m = model()
    m.append("main", EPOCH_US, 1 * S, T0)
    m.advance(T0 + 2)
    assert m.append("main", EPOCH_US + S, S // 10, T0 + 2.5) == []
    assert m.state == "stalled"


def test_one_track_short_of_media_stalls_playback() -> None:
    """Audio and video both have to be buffered: the shorter one decides."""
    m = model(("main", "audio"))
    m.append("main", EPOCH_US, 6 * S, T0)
    m.append("audio", EPOCH_US, 2 * S, T0)
    assert m.buffer_ahead_us() == 2 * S
    m.advance(T0 + 3)
    assert m.state == "stalled"
    assert m.fetch_position_us("audio") == EPOCH_US + 2 * S
    assert m.fetch_position_us("main") == EPOCH_US + 6 * S


def test_latency_is_wall_clock_minus_pdt_at_playhead() -> None:
    """Live latency = now - PDT of the media under the playhead."""
    m = model()
    pdt_ms = EPOCH_US // 1000
    m.append("main", EPOCH_US, 4 * S, T0 + 1.0, pdt_ms=pdt_ms)
    m.advance(T0 + 2.5)
    assert m.latency_s() == pytest.approx(T0 + 2.5 - (EPOCH_US / S + 1.5))
    m.advance(T0 + 9.0)  # stalled since T0 + 5: latency grows
    assert m.latency_s() == pytest.approx(T0 + 9.0 - (EPOCH_US / S + 4.0))


def test_no_latency_before_start() -> None:
    """Latency is only defined once the playhead moves."""
    m = model()
    assert m.latency_s() is None
    assert m.statistics().startup_s is None


def test_end_of_presentation_is_not_a_stall() -> None:
    """Reaching the end of an ENDLIST stream ends playback without a stall."""
    m = model()
    m.append("main", EPOCH_US, S, T0)
    m.complete("main", T0)
    events = m.advance(T0 + 5)
    assert len(events) == 1
    assert isinstance(events[0], PlaybackEnded)
    assert events[0].at == pytest.approx(T0 + 1)
    assert m.statistics().stalls == 0


def test_short_final_segment_still_starts() -> None:
    """A finished stream shorter than the start buffer plays anyway."""
    m = model()
    m.append("main", EPOCH_US, S // 5, T0)
    events = m.complete("main", T0 + 0.1)
    assert isinstance(events[0], PlaybackStarted)


def test_small_holes_are_played_through() -> None:
    """A 50 ms hole between segments (timestamp rounding) is not a stall."""
    m = model()
    m.append("main", EPOCH_US, 2 * S, T0)
    m.append("main", EPOCH_US + 2 * S + 50_000, 2 * S, T0 + 0.5)
    assert m.buffer_ahead_us() == 4 * S + 50_000 - S // 2  # started at T0


def test_start_jumps_to_buffered_media() -> None:
    """If the start position falls in a hole, playback starts where media begins."""
    m = model(start=EPOCH_US - 3 * S)
    m.append("main", EPOCH_US, 2 * S, T0)
    assert m.state == "playing"
    assert m.position_us == EPOCH_US


def test_seek_into_empty_buffer_stalls_until_media() -> None:
    """Jumping back into the live window stalls until the new position is buffered."""
    m = model()
    m.append("main", EPOCH_US, 2 * S, T0)
    m.advance(T0 + 1)
    m.seek(EPOCH_US + 20 * S, T0 + 1)
    assert m.state == "stalled"
    assert m.fetch_position_us("main") == EPOCH_US + 20 * S
    m.append("main", EPOCH_US + 20 * S, 2 * S, T0 + 2)
    assert m.statistics().state == "playing"


@given(
    gaps=st.lists(st.floats(0.0, 4.0, allow_nan=False), min_size=1, max_size=20),
    seg_s=st.sampled_from([1, 2, 4]),
)
def test_time_is_accounted_for(gaps: list[float], seg_s: int) -> None:
    """After start, played + stalled time equals elapsed wall time, whatever the arrivals."""
    m = model()
    m.append("main", EPOCH_US, seg_s * S, T0)
    now = T0
    for n, gap in enumerate(gaps, start=1):
        now += gap
        m.append("main", EPOCH_US + n * seg_s * S, seg_s * S, now)
    now += 0.25
    m.advance(now)
    stats = m.statistics()
    assert stats.startup_s == 0
    assert stats.played_s + stats.stall_time_s == pytest.approx(now - T0, abs=1e-5)
    assert stats.played_s <= (len(gaps) + 1) * seg_s + 1e-9
