"""Feed health verdicts (healthy / degraded / lost) with the reason an operator reads."""

from __future__ import annotations

from mainevent.media.encode.pipeline import FeedHealth


def healthy_feed(now: float) -> FeedHealth:
    h = FeedHealth(connected=True, connects=1, last_packet_monotonic=now - 0.05)
    h.window = [(now - 0.5 + i / 30, 6000, 1) for i in range(30)]
    h.last_video_pts, h.last_audio_pts = 900_000, 900_000
    return h


def test_healthy() -> None:
    """A connected feed at full frame rate with no errors is healthy."""
    assert healthy_feed(100.0).verdict(100.0, input_timeout_s=2, fps=30) == ("healthy", "ok")


def test_lost_when_silent_or_disconnected() -> None:
    """No data for longer than the timeout, or no connection, is lost with the reason."""
    h = healthy_feed(100.0)
    assert h.verdict(102.5, input_timeout_s=2, fps=30)[0] == "lost"
    assert "no data for 2.5 s" in h.verdict(102.5, input_timeout_s=2, fps=30)[1]
    assert FeedHealth().verdict(0, input_timeout_s=2, fps=30) == ("lost", "never connected")
    h.connected = False
    assert h.verdict(100.0, input_timeout_s=2, fps=30) == ("lost", "feed disconnected")


def test_degraded_reasons() -> None:
    """Drift, corrupt input and a low frame rate degrade the feed and are all named."""
    h = healthy_feed(100.0)
    for i in range(10):  # audio PES every 1920 ticks, then timestamps jump 0.3 s ahead
        h.av.push("audio", 900_000 + i * 1920 + (27_000 if i >= 5 else 0))
        h.av.push("video", 900_000 + i * 3000)
    h.note_errors(99.0, 3)
    h.window = h.window[:20]
    verdict, reason = h.verdict(100.0, input_timeout_s=2, fps=30)
    assert verdict == "degraded"
    assert "audio/video offset +0.300 s" in reason
    assert "3 corrupt-input events" in reason
    assert "frame rate 20 below 30" in reason
    assert h.verdict(106.0, input_timeout_s=10, fps=30)[1].count("corrupt") == 0


def test_observe_counts_frames_and_notices_midnight() -> None:
    """Each chunk updates rate, clock and delay; a venue clock passing midnight is flagged."""
    from mainevent.media.ingest.ts import PesStart, TsStatistics

    h = FeedHealth()
    h.on_connect()
    late = 86_399 * 90_000
    assert not h.observe(
        1.0,
        1_795_500_000.0,
        1000,
        [PesStart("video", late), PesStart("audio", late)],
        TsStatistics(),
    )
    assert h.snapshot(1.0)["fps"] == 1
    assert h.feed_delay_s is not None
    assert h.observe(1.1, 1_795_500_000.1, 1000, [PesStart("video", 3000)], TsStatistics())
    assert not h.observe(
        1.2, 1_795_500_000.2, 1000, [PesStart("video", 6000)], TsStatistics(continuity_errors=2)
    )
    assert sum(1 for _ in h.error_times) == 2


def test_dropped_and_duplicated_frames_from_the_decode_cadence() -> None:
    """Missing frames and repeated decode times are counted; B-frame PTS order is not."""
    from mainevent.media.ingest.ts import PesStart, TsStatistics

    h = FeedHealth(fps=30)
    h.on_connect()
    frame = 3000
    # Decode order with B-frames: PTS out of order, DTS steady: no drops, no duplicates.
    dts = [0, 1, 2, 3, 4, 5]
    pts = [2, 5, 3, 4, 8, 6]
    ev = [
        PesStart("video", 900_000 + p * frame, dts=900_000 + d * frame)
        for p, d in zip(pts, dts, strict=True)
    ]
    h.observe(1.0, 1_000.0, 1000, ev, TsStatistics())
    assert (h.dropped_frames, h.duplicated_frames) == (0, 0)
    # Frames 6, 7 lost; then frame 9 twice.
    ev = [PesStart("video", 900_000 + d * frame) for d in (8, 9, 9)]
    h.observe(1.1, 1_000.1, 1000, ev, TsStatistics())
    assert (h.dropped_frames, h.duplicated_frames) == (2, 1)
    assert h.snapshot(1.1)["dropped_frames"] == 2
    # A new connection starts a new cadence.
    h.on_connect()
    h.observe(5.0, 1_005.0, 1000, [PesStart("video", 99_000_000)], TsStatistics())
    assert h.dropped_frames == 2


def test_lost_pes_starts_are_no_av_offset() -> None:
    """Regression: a burst of garbage that loses PES starts (the relay re-muxes, so only the
    cadence skips whole frames) left the primary "degraded" by a phantom A/V offset until its
    feed reconnected. Whole-PES skips are counted as losses, not as a shift."""
    h = healthy_feed(100.0)
    audio = [900_000 + i * 1920 for i in range(60)]
    video = [900_000 + i * 3000 for i in range(40)]
    lost_audio = {10, 11, 12, 30}  # PES starts destroyed by the garbage
    lost_video = {7, 8, 20, 21, 22, 23}
    for i, pts in enumerate(audio):
        if i not in lost_audio:
            h.av.push("audio", pts)
    for i, pts in enumerate(video):
        if i not in lost_video:
            h.av.push("video", pts)
    assert h.av.offset_s == 0
    assert h.av.lost_pes == 3  # a single lost PES is within the cadence tolerance anyway
    assert h.verdict(100.0, input_timeout_s=2, fps=30) == ("healthy", "ok")


def test_a_shift_after_lost_packets_is_not_counted_but_a_later_one_is() -> None:
    """A jump right after packets the probe saw lost re-anchors; a clean jump still counts."""
    from mainevent.media.ingest.ts import AvOffsetTracker

    av = AvOffsetTracker()
    for i in range(5):
        av.push("audio", i * 1920)
    av.push("audio", 5 * 1920 + 50_000, after_loss=True)  # lost packets: no evidence of shift
    assert av.offset_s == 0
    for i in range(6, 10):
        av.push("audio", i * 1920 + 50_000)
    av.push("audio", 10 * 1920 + 50_000 + 36_000)  # the desync drill's 400 ms
    assert av.offset_s == 0.4
