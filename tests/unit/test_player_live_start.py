"""Live start position and steady-state latency on timelines shaped like the real platform's.

The platform publishes 2 s video segments with PDT = capture time on every segment, each listed
~0.75 s after its last frame was captured (TD 2, 6-segment window). The audio rendition is cut on
AAC frame boundaries (1024 samples at 48 kHz = 21.33 ms): an audio segment starts up to 21 ms
after the video boundary and lasts 1.984 or 2.005 s. Regression tests for a player that started
one segment behind the live edge (latency ~3.5 s, a stall every few segments) when the stream
had just begun and the playlist held less than the hold-back.
"""

from __future__ import annotations

import pytest

from mainevent.media.manifest.model import MediaPlaylist, SegmentEntry
from mainevent.player.model import PlaybackModel, StallStarted
from mainevent.player.timeline import SegmentTimeline

S = 1_000_000
SEG_US = 2 * S
MSN0 = 897_733_043  # epoch-numbered: video segment n starts at n x 2 s
PUBLISH_DELAY_S = 0.75
HOLD_BACK_S = 6.0  # 3 x TD, no EXT-X-SERVER-CONTROL
T_REQUEST = (MSN0 + 6) * 2 + PUBLISH_DELAY_S + 0.3  # play request, epoch seconds


def video_start_us(n: int) -> int:
    return n * SEG_US


def audio_start_us(n: int) -> int:
    """First AAC frame boundary at or after video boundary n (93.75 frames per 2 s)."""
    frames = -(-n * 375 // 4)
    return frames * 1024 * S // 48_000


def segments(track: str, first: int, last: int) -> tuple[SegmentEntry, ...]:
    start = audio_start_us if track == "audio" else video_start_us
    return tuple(
        SegmentEntry(
            uri=f"{n}.m4s",
            duration_us=start(n + 1) - start(n),
            program_date_time_ms=start(n) // 1000,
            map_uri="init.mp4" if n == first else None,
        )
        for n in range(first, last + 1)
    )


def playlist(track: str, first: int, last: int) -> MediaPlaylist:
    return MediaPlaylist(
        target_duration_s=2, media_sequence=first, segments=segments(track, first, last)
    )


def timeline(track: str, first: int, last: int) -> SegmentTimeline:
    tl = SegmentTimeline()
    tl.update(playlist(track, first, last))
    return tl


def published_at(n: int) -> float:
    """Epoch second at which segment n (both tracks) is listed."""
    return video_start_us(n + 1) / S + PUBLISH_DELAY_S


def test_synthetic_audio_looks_like_the_real_one() -> None:
    """Audio starts 0-21 ms after the video boundary and lasts 1.984-2.006 s."""
    for n in range(MSN0, MSN0 + 50):
        offset = audio_start_us(n) - video_start_us(n)
        assert 0 <= offset < 21_334
        assert 1_984_000 <= audio_start_us(n + 1) - audio_start_us(n) <= 2_006_000


@pytest.mark.parametrize("listed", [1, 2])
def test_live_playlist_shorter_than_hold_back_does_not_start(listed: int) -> None:
    """A stream that just began (1-2 segments listed) has no segment 3 x TD from the end."""
    tl = timeline("main", MSN0, MSN0 + listed - 1)
    assert tl.start_position_us() is None


def test_start_once_the_playlist_holds_the_hold_back() -> None:
    """With exactly 3 x TD listed, playback starts at the first segment, 6 s from the end."""
    tl = timeline("main", MSN0, MSN0 + 2)
    assert tl.start_position_us() == video_start_us(MSN0)


def test_start_honours_rfc_rule_on_a_full_window() -> None:
    """The chosen segment starts >= HOLD-BACK (playlist time) from the end; the playhead sits
    exactly HOLD-BACK before the end (hls.js liveSyncPosition)."""
    for track in ("main", "audio"):
        tl = timeline(track, MSN0, MSN0 + 5)
        start = tl.start_position_us()
        assert start is not None
        ref = tl.locate(start)
        assert ref is not None
        after_ref = sum(s.duration_us for s in tl.segments if s.msn >= ref.msn)
        assert after_ref >= HOLD_BACK_S * S
        after_start = after_ref - (start - ref.start_us)
        assert after_start == HOLD_BACK_S * S
    assert timeline("main", MSN0, MSN0 + 5).start_position_us() == video_start_us(MSN0 + 3)


def test_hold_back_is_measured_in_playlist_time_not_pdt() -> None:
    """PDT rounded to the millisecond must not make a 3 x TD playlist look too short."""
    entries = tuple(
        SegmentEntry(uri=f"{i}.m4s", duration_us=1_999_800, program_date_time_ms=1000 + 2000 * i)
        for i in range(3)
    )
    tl = SegmentTimeline()
    tl.update(MediaPlaylist(target_duration_s=2, media_sequence=0, segments=entries))
    assert tl.start_position_us() == 1_000_000  # 5.9994 s listed: within the edge slack


def test_window_shorter_than_hold_back_starts_once_it_slides() -> None:
    """A sliding window that will never hold HOLD-BACK (here 2 segments) starts at its first
    segment once segments leave its head; before that the player waits for it to grow."""
    tl = SegmentTimeline()
    tl.update(playlist("main", MSN0, MSN0 + 1))
    assert tl.start_position_us() is None
    tl.update(playlist("main", MSN0 + 1, MSN0 + 2))
    assert tl.start_position_us() == video_start_us(MSN0 + 1)
    assert tl.for_switch().start_position_us() is None  # no playlist loaded yet


def test_resync_falls_back_to_the_first_segment() -> None:
    """After falling out of a (too short) window the player jumps to its first segment."""
    tl = timeline("main", MSN0, MSN0 + 1)
    assert tl.start_position_us() is None
    assert tl.resync_position_us() == video_start_us(MSN0)


def run_av(
    start_us: int, first_msn: int, seconds: float, reload_lag_s: float
) -> tuple[PlaybackModel, list[StallStarted]]:
    """Feed both tracks to a model as a player would: segment n of each track is appended
    `reload_lag_s` after it is listed (playlist reload phase + download), from the segment
    holding the start position on; the clock ticks every 0.25 s."""
    model = PlaybackModel(["main", "audio"], start_us, T_REQUEST)
    arrivals: list[tuple[float, str, int]] = []
    for n in range(first_msn, first_msn + int(seconds / 2) + 8):
        for track, start in (("main", video_start_us), ("audio", audio_start_us)):
            if start(n + 1) > start_us + 1000:  # still has media after the start position
                at = max(T_REQUEST, published_at(n) + reload_lag_s)
                arrivals.append((at, track, n))
    arrivals.sort()
    now = T_REQUEST
    stalls: list[StallStarted] = []
    end = T_REQUEST + seconds
    while now < end:
        now = round(now + 0.25, 6)
        while arrivals and arrivals[0][0] <= now:
            at, track, n = arrivals.pop(0)
            start = audio_start_us if track == "audio" else video_start_us
            events = model.append(
                track, start(n), start(n + 1) - start(n), at, pdt_ms=start(n) // 1000
            )
            stalls += [e for e in events if isinstance(e, StallStarted)]
        stalls += [e for e in model.advance(now) if isinstance(e, StallStarted)]
    return model, stalls


@pytest.mark.parametrize("reload_lag_s", [0.0, 0.6, 1.25, 1.95])
def test_hold_back_start_plays_av_without_stalls(reload_lag_s: float) -> None:
    """Started HOLD-BACK behind a fresh playlist, with audio not aligned to video and segments
    found up to one reload interval late, neither track ever runs dry."""
    newest = MSN0 + 5  # listed at published_at(newest) <= T_REQUEST
    assert published_at(newest) <= T_REQUEST < published_at(newest + 1)
    start = timeline("main", newest - 5, newest).start_position_us()
    assert start == video_start_us(newest + 1) - int(HOLD_BACK_S * S)
    model, stalls = run_av(start, newest - 5, 60.0, reload_lag_s)
    assert stalls == []
    stats = model.statistics()
    assert stats.stalls == 0
    assert stats.played_s == pytest.approx(60.0, abs=0.3)
    # wall clock - PDT at the playhead = hold-back + how stale the playlist was at the request
    assert stats.latency_s == pytest.approx(
        HOLD_BACK_S + (T_REQUEST - video_start_us(newest + 1) / S), abs=1e-3
    )
    assert stats.buffer_ahead_s > 1.0


def test_one_segment_behind_the_edge_stalls() -> None:
    """What the old clamped start did (first segment of a 1-segment playlist): with the reload
    schedule finding segments ~1.4 s after publication, the buffer runs dry (for contrast)."""
    model, stalls = run_av(video_start_us(MSN0 + 5), MSN0 + 5, 30.0, reload_lag_s=1.4)
    assert len(stalls) >= 5
    assert model.statistics().stalls == len(stalls)


def test_latency_follows_the_video_pdt_under_the_playhead() -> None:
    """Latency = wall clock - PDT of the video (main) frame under the playhead, not of an
    audio segment appended later whose PDT is its video boundary though it starts 10 ms on."""
    model = PlaybackModel(["main", "audio"], 10 * S, 100.0)
    model.append("main", 10 * S, 2 * S, 100.0, pdt_ms=50_000)
    model.append("audio", 10 * S - 1_990_000, 2 * S, 100.0, pdt_ms=48_000)
    model.append("audio", 10 * S + 10_000, 2 * S, 100.0, pdt_ms=50_000)
    model.advance(101.0)
    assert model.position_us == 11 * S
    assert model.latency_s() == pytest.approx(101.0 - 51.0)


def test_latency_uses_audio_pdt_when_video_has_none() -> None:
    """Without a video PDT under the playhead the audio one maps the position."""
    model = PlaybackModel(["main", "audio"], 10 * S, 100.0)
    model.append("main", 10 * S, 2 * S, 100.0)
    model.append("audio", 10 * S, 2 * S, 100.0, pdt_ms=50_000)
    model.advance(100.5)
    assert model.latency_s() == pytest.approx(100.5 - 50.5)
