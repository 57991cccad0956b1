"""Headless player timeline: where listed segments sit, where playback starts."""

from __future__ import annotations

from mainevent.media.manifest.model import MediaPlaylist, SegmentEntry, ServerControl
from mainevent.player.timeline import SegmentTimeline, TimelineAnchor

S = 1_000_000
MSN0 = 900_000_000  # epoch-numbered: segment n starts at n x 2 s


def live(first: int, count: int, *, pdt: bool = True, endlist: bool = False) -> MediaPlaylist:
    segments = tuple(
        SegmentEntry(
            uri=f"{n}.m4s",
            duration_us=2 * S,
            program_date_time_ms=n * 2000 if pdt else None,
            map_uri="init.mp4" if i == 0 else None,
        )
        for i, n in enumerate(range(first, first + count))
    )
    return MediaPlaylist(
        target_duration_s=2, media_sequence=first, segments=segments, endlist=endlist
    )


def test_positions_are_pdt_in_epoch_microseconds() -> None:
    """With PDT, a segment's position is its capture time, identical across renditions."""
    tl = SegmentTimeline()
    tl.update(live(MSN0, 5))
    assert [s.start_us for s in tl.segments] == [(MSN0 + i) * 2 * S for i in range(5)]
    assert tl.live_edge_us == (MSN0 + 5) * 2 * S
    assert all(s.map_uri == "init.mp4" for s in tl.segments)


def test_start_is_three_target_durations_behind_live_edge() -> None:
    """Standard HLS starts HOLD-BACK (>= 3 x TD) behind the end of the playlist."""
    tl = SegmentTimeline()
    tl.update(live(MSN0, 6))
    assert tl.start_position_us() == (MSN0 + 6) * 2 * S - 6 * S


def test_server_hold_back_is_honoured_when_longer() -> None:
    """EXT-X-SERVER-CONTROL HOLD-BACK above 3 x TD moves the start further back."""
    playlist = live(MSN0, 8)
    tl = SegmentTimeline()
    tl.update(
        MediaPlaylist(
            target_duration_s=2,
            media_sequence=MSN0,
            segments=playlist.segments,
            server_control=ServerControl(hold_back_us=10 * S),
        )
    )
    assert tl.start_position_us() == (MSN0 + 8) * 2 * S - 10 * S


def test_finished_stream_starts_at_the_beginning() -> None:
    """An ENDLIST playlist (VOD) plays from its first segment."""
    tl = SegmentTimeline()
    tl.update(live(MSN0, 6, endlist=True))
    assert tl.start_position_us() == MSN0 * 2 * S


def test_locate_finds_segment_covering_position_and_waits_at_edge() -> None:
    """The next segment is the one still holding media after the position; none past the edge."""
    tl = SegmentTimeline()
    tl.update(live(MSN0, 3))
    found = tl.locate(MSN0 * 2 * S + 3 * S)
    assert found is not None
    assert found.msn == MSN0 + 1
    boundary = tl.locate((MSN0 + 2) * 2 * S)
    assert boundary is not None
    assert boundary.msn == MSN0 + 2
    assert tl.locate((MSN0 + 3) * 2 * S) is None


def test_behind_window_detected() -> None:
    """A position before the first listed segment has fallen off the live window."""
    tl = SegmentTimeline()
    tl.update(live(MSN0 + 10, 3))
    assert tl.is_behind_window(MSN0 * 2 * S)
    assert not tl.is_behind_window((MSN0 + 10) * 2 * S)


def test_without_pdt_positions_accumulate_durations_across_reloads() -> None:
    """Without PDT a segment keeps its position from one reload to the next."""
    tl = SegmentTimeline()
    tl.update(live(100, 3, pdt=False))
    assert [s.start_us for s in tl.segments] == [0, 2 * S, 4 * S]
    tl.update(live(101, 3, pdt=False))
    assert [s.start_us for s in tl.segments] == [2 * S, 4 * S, 6 * S]
    assert tl.segments[0].map_uri == "init.mp4"


def test_switched_rendition_keeps_positions_without_pdt() -> None:
    """A rendition switch places segment n where the previous rendition had it."""
    anchor = TimelineAnchor()
    tl = SegmentTimeline(anchor)
    tl.update(live(100, 3, pdt=False))
    other = tl.for_switch()
    other.update(live(102, 3, pdt=False))
    assert other.segments[0].start_us == 4 * S


def test_audio_track_shares_anchor_without_pdt() -> None:
    """Two tracks of one session agree on positions through the shared anchor."""
    anchor = TimelineAnchor()
    video, audio = SegmentTimeline(anchor), SegmentTimeline(anchor)
    video.update(live(100, 3, pdt=False))
    audio.update(live(101, 3, pdt=False))
    assert audio.segments[0].start_us == video.segments[1].start_us
