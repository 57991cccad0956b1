"""Highlights in manifests (sans-IO): date ranges in live playlists, the DASH EventStream, and
segment-accurate VOD clip playlists."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.manifest import (
    MediaPlaylist,
    SegmentEntry,
    parse_media_playlist,
    render_media_playlist,
    validate_media_playlist,
)
from mainevent.media.manifest.errors import ManifestError
from mainevent.media.manifest.highlights import (
    DATERANGE_CLASS,
    EVENT_SCHEME,
    ClipSegment,
    Highlight,
    clip_playlist,
    clip_segments,
    highlight_date_ranges,
    insert_event_stream,
    with_highlights,
)

D_MS = 2000
T0 = 1_800_000_000_000  # epoch ms, a multiple of D


def stored(first: int, last: int, *, missing: tuple[int, ...] = ()) -> list[ClipSegment]:
    return [
        ClipSegment(m, D_MS * 1000, m * D_MS, "init.mp4")
        for m in range(first, last + 1)
        if m not in missing
    ]


def live(first: int, count: int) -> MediaPlaylist:
    return MediaPlaylist(
        target_duration_s=2,
        media_sequence=first,
        segments=tuple(
            SegmentEntry(f"{m}.m4s", D_MS * 1000, m * D_MS, map_uri="init.mp4")
            for m in range(first, first + count)
        ),
    )


def test_live_playlist_carries_ranges_and_points_still_in_the_window() -> None:
    """Ranges and points show as EXT-X-DATERANGE; those over before the window are left out."""
    first = T0 // D_MS
    hs = [
        Highlight("ko", "Knockout", T0 + 1500, T0 + 4500, number=1),
        Highlight("bell", "Bell", T0 + 100, number=2),
        Highlight("old", "Before", T0 - 10_000, T0 - 5_000, number=3),
    ]
    pl = with_highlights(live(first, 5), hs)
    validate_media_playlist(pl)
    text = render_media_playlist(pl)
    assert 'ID="highlight-ko"' in text
    assert "highlight-old" not in text
    back = parse_media_playlist(text)
    ko = next(d for d in back.date_ranges if d.id == "highlight-ko")
    assert ko.class_name == DATERANGE_CLASS
    assert (ko.start_date_ms, ko.end_date_ms, ko.duration_us) == (T0 + 1500, T0 + 4500, 3_000_000)
    assert ko.client_attributes == (("X-TITLE", '"Knockout"'),)
    bell = next(d for d in back.date_ranges if d.id == "highlight-bell")
    assert bell.end_date_ms is None
    assert bell.duration_us is None


def test_no_highlights_leaves_the_playlist_alone() -> None:
    """Without highlights the playlist object is returned unchanged (no re-render cost)."""
    pl = live(10, 3)
    assert with_highlights(pl, []) is pl
    assert highlight_date_ranges([Highlight("a", "A", 0)], None) == ()


@given(
    start=st.integers(T0, T0 + 20_000),
    length=st.integers(1, 12_000),
)
def test_clip_lists_exactly_the_segments_overlapping_the_range(start: int, length: int) -> None:
    """The clip starts at the boundary at or before the start (< one segment early) and ends
    with the segment holding the end; every listed segment overlaps the range."""
    end = start + length
    segs = clip_segments(stored(T0 // D_MS - 2, T0 // D_MS + 20), start, end)
    assert segs[0].program_date_time_ms <= start < segs[0].program_date_time_ms + D_MS
    assert segs[-1].program_date_time_ms < end <= segs[-1].program_date_time_ms + D_MS
    assert [s.msn for s in segs] == list(range(segs[0].msn, segs[-1].msn + 1))
    pl = clip_playlist(segs, 2, Highlight("c", "C", start, end))
    validate_media_playlist(pl)
    back = parse_media_playlist(render_media_playlist(pl))
    assert back.playlist_type == "VOD"
    assert back.endlist
    assert back.media_sequence == segs[0].msn
    assert [s.uri for s in back.segments] == [f"{s.msn}.m4s" for s in segs]


def test_clip_over_a_hole_marks_a_discontinuity() -> None:
    """A missing MSN inside the clip (never stored) is set off by EXT-X-DISCONTINUITY."""
    first = T0 // D_MS
    segs = clip_segments(stored(first, first + 5, missing=(first + 2,)), T0, T0 + 5 * D_MS)
    pl = clip_playlist(segs, 2, Highlight("c", "C", T0, T0 + 5 * D_MS))
    assert [s.discontinuity for s in pl.segments] == [False, False, True, False]
    text = render_media_playlist(pl)
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1


def test_a_range_with_nothing_stored_has_no_clip() -> None:
    """An empty clip is refused rather than rendered as a playlist without segments."""
    with pytest.raises(ManifestError, match="no stored segment"):
        clip_playlist([], 2, Highlight("c", "C", T0, T0 + 1))


def test_mpd_gets_an_event_stream_relative_to_the_period() -> None:
    """DASH: one Event per highlight, presentationTime relative to the Period start in ms."""
    mpd = (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011">\n'
        '  <Period id="0" start="PT0S">\n    <AdaptationSet/>\n  </Period>\n</MPD>\n'
    )
    anchor = T0 - 86_400_000
    out = insert_event_stream(
        mpd,
        [Highlight("ko", "Knock & out", T0, T0 + 3000, number=7), Highlight("p", "P", T0 + 1)],
        anchor,
    )
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    period = ET.fromstring(out.split("\n", 1)[1]).find("d:Period", ns)
    assert period is not None
    stream = period[0]
    assert stream.tag.endswith("EventStream")
    assert stream.get("schemeIdUri") == EVENT_SCHEME
    events = stream.findall("d:Event", ns)
    assert [e.get("presentationTime") for e in events] == [str(86_400_000), str(86_400_001)]
    assert events[0].get("duration") == "3000"
    assert events[0].get("id") == "7"
    assert events[0].text == "Knock & out"
    assert events[1].get("duration") is None
    assert insert_event_stream(mpd, [], anchor) == mpd


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"id": "bad id"}, "must match"),
        ({"title": 'a "quote"'}, "title"),
        ({"title": ""}, "title"),
        ({"end_ms": T0}, "end must be after start"),
        ({"start_ms": -1, "end_ms": None}, "before the epoch"),
    ],
)
def test_bad_highlights_are_refused(kw: dict[str, object], message: str) -> None:
    """Ids, titles and ranges that could not be written into a playlist are refused."""
    args: dict[str, object] = {"id": "ok", "title": "T", "start_ms": T0, "end_ms": T0 + 1} | kw
    with pytest.raises(ManifestError, match=message):
        Highlight(**args)  # type: ignore[arg-type]
