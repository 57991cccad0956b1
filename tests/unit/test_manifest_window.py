"""The live window: what each rendition's playlist lists, and which segments stay downloadable."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.manifest import (
    PublishedPart,
    PublishedSegment,
    RenditionWindow,
    WindowError,
    WindowStats,
    parse_media_playlist,
    render_media_playlist,
)

SECOND = 1_000_000
PDT0 = 1_760_000_000_000  # 2025-10-09T08:53:20.000Z


def seg(
    msn: int,
    duration_s: float = 2.0,
    init: str = "init-a.mp4",
    *,
    gap: bool = False,
    discontinuity: bool = False,
) -> PublishedSegment:
    """Segment `msn` of a 2 s cadence, with the PDT it would have had since msn 0."""
    return PublishedSegment(
        msn=msn,
        duration_us=round(duration_s * SECOND),
        program_date_time_ms=PDT0 + 2000 * msn,
        init_uri=init,
        gap=gap,
        discontinuity=discontinuity,
    )


def window(n: int = 3, **kw: Any) -> RenditionWindow:
    return RenditionWindow(
        target_duration_s=2, window_segments=n, segment_duration_us=2 * SECOND, **kw
    )


def test_sliding_window_golden() -> None:
    """Players see the last three 2 s segments, with the init section and one PDT per segment."""
    w = window()
    for msn in range(10):
        w.publish(seg(msn), now=2.0 * msn)
    assert render_media_playlist(w.playlist(now=18.0)) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:6\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-MEDIA-SEQUENCE:7\n"
        "#EXT-X-DISCONTINUITY-SEQUENCE:0\n"
        '#EXT-X-MAP:URI="init-a.mp4"\n'
        "#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:34.000Z\n"
        "#EXTINF:2.000,\n"
        "7.m4s\n"
        "#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:36.000Z\n"
        "#EXTINF:2.000,\n"
        "8.m4s\n"
        "#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:38.000Z\n"
        "#EXTINF:2.000,\n"
        "9.m4s\n"
    )


def test_missing_segments_are_listed_as_gaps() -> None:
    """An encoder outage shows as EXT-X-GAP segments, so players skip them instead of stalling."""
    w = window(5, segment_uri=lambda msn: f"seg-{msn}.m4s")
    w.publish(seg(10), now=0.0)
    w.publish(seg(11, duration_s=2.021333), now=2.0)
    w.publish(seg(14), now=8.0)
    pl = w.playlist(now=8.0)
    assert [(s.uri, s.gap) for s in pl.segments] == [
        ("seg-10.m4s", False),
        ("seg-11.m4s", False),
        ("seg-12.m4s", True),
        ("seg-13.m4s", True),
        ("seg-14.m4s", False),
    ]
    # PDT carried on from segment 11 (which was 21.333 ms long), then 2 s per gap.
    assert [s.program_date_time_ms for s in pl.segments[2:4]] == [PDT0 + 24_021, PDT0 + 26_021]
    assert [s.duration_us for s in pl.segments[2:4]] == [2 * SECOND, 2 * SECOND]
    assert not any(s.discontinuity or s.map_uri for s in pl.segments[1:])
    assert not w.is_available(12, now=8.0)
    assert w.is_available(14, now=8.0)
    assert w.statistics().filled_gaps == 2


def test_removed_segment_stays_available_for_its_duration_plus_longest_playlist() -> None:
    """A player that read an old playlist can still fetch its segments, for exactly as long as the RFC says."""
    w = window(3)
    for msn in range(4):  # segment 0 was in playlists of 2, 4 and 6 s; it leaves at t=6
        w.publish(seg(msn), now=2.0 * msn)
    assert w.playlist(now=6.0).media_sequence == 1
    deadline = 6.0 + 2.0 + 6.0
    assert w.is_available(0, now=math.nextafter(deadline, 0.0))
    assert w.expired(now=math.nextafter(deadline, 0.0)) == []
    assert not w.is_available(0, now=deadline)
    assert w.expired(now=deadline) == [0]
    assert w.expired(now=deadline + 100) == []  # each MSN is reported once


def test_longest_playlist_counts_even_after_it_shrank() -> None:
    """A segment once listed in a longer playlist stays available by that longer duration."""
    w = window(3)
    durations = [2.0, 2.0, 2.0, 0.5, 2.0, 2.0, 2.0, 2.0, 2.0]
    now = 0.0
    for msn, d in enumerate(durations):
        w.publish(seg(msn, duration_s=d), now)
        if msn == 8:
            break
        now += d
    # The short segment 3 kept four segments (6.5 s) listed until it left at t=10.5; since
    # then three segments (6 s). Segment 5 was in the 6.5 s playlist and leaves at t=14.5.
    assert now == 14.5
    assert w.playlist(now).media_sequence == 6
    assert w.is_available(5, now=math.nextafter(14.5 + 2.0 + 6.5, 0.0))
    assert not w.is_available(5, now=14.5 + 2.0 + 6.5)


def test_discontinuity_sequence_counts_removed_discontinuities() -> None:
    """When a slate with its own init slides out, players keep their timelines aligned."""
    w = window(3)
    for msn in range(3):
        w.publish(seg(msn), now=2.0 * msn)
    w.publish(seg(3, init="init-slate.mp4"), now=6.0)
    w.publish(seg(4, init="init-slate.mp4", discontinuity=True), now=8.0)
    pl = w.playlist(now=8.0)
    assert [(s.discontinuity, s.map_uri) for s in pl.segments] == [
        (False, "init-a.mp4"),
        (True, "init-slate.mp4"),
        (True, None),
    ]
    assert pl.discontinuity_sequence == 0
    w.publish(seg(5, init="init-slate.mp4"), now=10.0)
    pl = w.playlist(now=10.0)
    assert pl.discontinuity_sequence == 0  # the slate's DISCONTINUITY is still listed
    assert (pl.segments[0].discontinuity, pl.segments[0].map_uri) == (True, "init-slate.mp4")
    w.publish(seg(6, init="init-slate.mp4"), now=12.0)
    assert w.playlist(now=12.0).discontinuity_sequence == 1
    w.publish(seg(7, init="init-slate.mp4"), now=14.0)
    pl = w.playlist(now=14.0)
    assert pl.discontinuity_sequence == 2
    assert pl.segments[0].map_uri == "init-slate.mp4"  # the init moves with the head
    assert not pl.segments[0].discontinuity


def test_end_adds_endlist_and_refuses_more_segments() -> None:
    """After the event ends, players see ENDLIST and stop reloading; late segments are refused."""
    w = window()
    for msn in range(4):
        w.publish(seg(msn), now=2.0 * msn)
    w.end(now=8.0)
    text = render_media_playlist(w.playlist(now=8.0))
    assert text.endswith("3.m4s\n#EXT-X-ENDLIST\n")
    with pytest.raises(WindowError, match="published after the window ended"):
        w.publish(seg(4), now=9.0)
    assert w.statistics().ended


def test_event_playlist_keeps_every_segment() -> None:
    """A DVR-from-start (EVENT) playlist lists everything since the start; nothing expires."""
    w = window(3, playlist_type="EVENT")
    for msn in range(20):
        w.publish(seg(msn), now=2.0 * msn)
    pl = w.playlist(now=40.0)
    assert (pl.media_sequence, len(pl.segments), pl.playlist_type) == (0, 20, "EVENT")
    assert w.is_available(0, now=1e9)
    assert w.expired(now=1e9) == []


def test_restart_far_ahead_keeps_sequence_contiguous_and_window_small() -> None:
    """After a long outage the playlist stays short and numbered contiguously (no huge gap list)."""
    w = window(3)
    w.publish(seg(0), now=0.0)
    w.publish(seg(1_000_000), now=10.0)
    pl = w.playlist(now=10.0)
    assert pl.media_sequence == 999_998
    assert [s.gap for s in pl.segments] == [True, True, False]
    assert w.statistics().filled_gaps == 999_999
    assert w.expired(now=10.0 + 4.0) == [0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_segments": 2}, r"less than 3 × target duration \(6 s\) .* at least 3$"),
        ({"segment_duration_us": 2_600_000}, "do not fit a target duration of 2 s"),
        ({"window_segments": 0}, "must be positive"),
    ],
)
def test_window_configuration_is_validated(kwargs: dict[str, Any], message: str) -> None:
    """A window that would break SPEC §1 is refused at start-up with what to change."""
    args: dict[str, Any] = {
        "target_duration_s": 2,
        "window_segments": 3,
        "segment_duration_us": 2 * SECOND,
    }
    with pytest.raises(WindowError, match=message):
        RenditionWindow(**(args | kwargs))


def test_out_of_order_or_oversized_segments_are_refused() -> None:
    """A repeated, older or too-long segment never reaches players' playlists."""
    w = window()
    with pytest.raises(WindowError, match="no segment published yet"):
        w.playlist(now=0.0)
    w.publish(seg(5), now=0.0)
    with pytest.raises(WindowError, match="segment 5 published after segment 5"):
        w.publish(seg(5), now=1.0)
    with pytest.raises(WindowError, match="segment 4 published after segment 5"):
        w.publish(seg(4), now=1.0)
    with pytest.raises(WindowError, match="round to at most the target duration"):
        w.publish(seg(6, duration_s=2.5), now=1.0)
    with pytest.raises(WindowError, match="must not be negative"):
        RenditionWindow(
            target_duration_s=2, window_segments=3, segment_duration_us=2 * SECOND
        ).publish(seg(-1), now=0.0)
    assert w.last_msn == 5


def test_caller_published_gap_is_listed_but_never_available() -> None:
    """A segment the packager marked as a gap is listed with EXT-X-GAP and never served."""
    w = window()
    w.publish(seg(0, gap=True), now=0.0)
    assert w.playlist(now=0.0).segments[0].gap
    assert not w.is_available(0, now=0.0)
    for msn in range(1, 4):
        w.publish(seg(msn), now=2.0 * msn)
    assert w.expired(now=1e9) == [0]  # the caller may drop its record


def test_statistics_snapshot() -> None:
    """Operators see how much is listed and retained per rendition."""
    w = window()
    assert w.statistics() == WindowStats(0, 0, 0, 0, None, 0, None, 0, False)
    parts = (PublishedPart(0, SECOND, True), PublishedPart(1, SECOND, False))
    for msn in range(5):
        w.publish(dataclass_replace_parts(seg(msn), parts), now=2.0 * msn)
    assert w.statistics() == WindowStats(
        published_segments=5,
        filled_gaps=0,
        listed_segments=3,
        listed_duration_us=6 * SECOND,
        media_sequence=2,
        discontinuity_sequence=0,
        last_msn=4,
        retained_segments=2,
        ended=False,
    )
    assert all(not s.parts for s in w.playlist(now=8.0).segments)  # LL listing comes later


def dataclass_replace_parts(
    s: PublishedSegment, parts: tuple[PublishedPart, ...]
) -> PublishedSegment:
    return PublishedSegment(s.msn, s.duration_us, s.program_date_time_ms, s.init_uri, parts)


step = st.tuples(
    st.integers(1, 4),  # MSN increment (> 1 leaves a gap)
    st.integers(1, 2_499_999),  # duration µs (rounds to ≤ 2 s)
    st.sampled_from(["a.mp4", "a.mp4", "a.mp4", "b.mp4"]),
    st.booleans(),  # discontinuity
    st.integers(0, 10).map(lambda n: n == 0),  # gap, rarely
    st.integers(0, 4000),  # ms until the next publish
)


@given(
    window_segments=st.integers(3, 6),
    event=st.booleans(),
    steps=st.lists(step, min_size=1, max_size=30),
)
def test_window_invariants_under_random_publishing(
    window_segments: int, event: bool, steps: list[tuple[int, int, str, bool, bool, int]]
) -> None:
    """Whatever the packager publishes, players get contiguous, monotonic, valid playlists and no early 404."""
    w = window(window_segments, playlist_type="EVENT" if event else None)
    now, msn, pdt = 0.0, 99, PDT0
    prev_sequence = -1
    first_msn = msn + steps[0][0]
    discontinuity: dict[int, bool] = {}
    gap: dict[int, bool] = {}
    longest: dict[int, int] = {}
    removed_at: dict[int, float] = {}
    duration: dict[int, int] = {}
    published: set[int] = set()
    reported: set[int] = set()
    for inc, dur, init, disc, is_gap, dt in steps:
        msn += inc
        w.publish(PublishedSegment(msn, dur, pdt, init, gap=is_gap, discontinuity=disc), now)
        published.add(msn)
        pdt += dur // 1000
        pl = w.playlist(now)
        assert parse_media_playlist(render_media_playlist(pl)) == pl
        msns = [pl.media_sequence + i for i in range(len(pl.segments))]
        assert [s.uri for s in pl.segments] == [f"{m}.m4s" for m in msns]
        assert msns[-1] == msn == w.last_msn
        assert pl.media_sequence >= prev_sequence
        listed_us = sum(s.duration_us for s in pl.segments)
        if pl.media_sequence > first_msn and not event:  # something left: ≥ 3 × TD stays listed
            assert listed_us >= 6 * SECOND
            assert (
                len(pl.segments) <= window_segments
                or listed_us - pl.segments[0].duration_us < 6 * SECOND
            )
        if event:
            assert pl.media_sequence == first_msn
        assert pl.segments[0].map_uri is not None
        for m, s in zip(msns, pl.segments, strict=True):
            assert discontinuity.setdefault(m, s.discontinuity) == s.discontinuity
            gap[m] = s.gap
            duration[m] = s.duration_us
            longest[m] = max(longest.get(m, 0), listed_us)
            assert w.is_available(m, now) == (not s.gap)
        for m in list(longest):
            if m < pl.media_sequence and m not in removed_at:
                removed_at[m] = now
        assert pl.discontinuity_sequence == sum(
            discontinuity[m] for m in discontinuity if m < pl.media_sequence
        )
        prev_sequence = pl.media_sequence
        now += dt / 1000
        for m in w.expired(now):
            assert m in published
            assert m not in reported
            assert now >= removed_at[m] + (duration[m] + longest[m]) / SECOND
            reported.add(m)
    for m, t in removed_at.items():
        deadline = t + (duration[m] + longest[m]) / SECOND
        if m not in reported:
            assert w.is_available(m, math.nextafter(deadline, 0.0)) == (
                m in published and not gap[m]
            )
        assert not w.is_available(m, deadline)
    assert set(w.expired(math.inf)) | reported == {m for m in removed_at if m in published}
    assert not w.is_available(msn + 1, now)
