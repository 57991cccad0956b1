"""The live window in LL-HLS mode: parts, preload hints, blocking conditions, delta updates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.manifest import (
    LowLatency,
    PartPosition,
    PublishedPart,
    PublishedSegment,
    RenditionReport,
    RenditionWindow,
    WindowError,
    parse_media_playlist,
    render_media_playlist,
)

SECOND = 1_000_000
PDT0 = 1_760_000_000_000
LL = LowLatency(
    part_target_us=522_000,
    part_us=500_000,
    part_hold_back_us=1_566_000,
    hold_back_us=6 * SECOND,
    can_skip_until_us=12 * SECOND,
)


def window(n: int = 12, **kw: Any) -> RenditionWindow:
    return RenditionWindow(
        target_duration_s=2,
        window_segments=n,
        segment_duration_us=2 * SECOND,
        low_latency=LL,
        **kw,
    )


def parts(n: int = 4) -> tuple[PublishedPart, ...]:
    return tuple(PublishedPart(k, 500_000, k == 0) for k in range(n))


def fill(w: RenditionWindow, msns: range, pending: int = 0) -> None:
    for m in msns:
        for p in parts():
            w.add_part(m, p, 0.0)
        w.publish(PublishedSegment(m, 2 * SECOND, PDT0 + 2000 * m, "init.mp4", parts()), 0.0)
    for p in parts(pending):
        w.add_part(msns.stop, p, 0.0)


def test_parts_listed_for_the_last_three_target_durations() -> None:
    """Players see parts of the newest 6 s only; older segments are listed whole."""
    w = window()
    fill(w, range(10), pending=2)
    pl = w.playlist(0.0)
    with_parts = [s.uri for s in pl.segments if s.parts]
    # Before the edge (1 s of pending parts): 9 ends 1 s, 8 ends 3 s, 7 ends 5 s, 6 ends 7 s.
    assert with_parts == ["7.m4s", "8.m4s", "9.m4s"]
    assert [p.uri for p in pl.pending_parts] == ["10.0.m4s", "10.1.m4s"]
    assert pl.pending_parts[0].independent
    assert [h.uri for h in pl.preload_hints] == ["10.2.m4s"]
    text = render_media_playlist(pl)
    assert "#EXT-X-PART-INF:PART-TARGET=0.522" in text
    assert (
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,"
        "HOLD-BACK=6.000,PART-HOLD-BACK=1.566"
    ) in text


def test_standard_window_unchanged_without_low_latency() -> None:
    """A window without LL settings lists no parts, hints or server control."""
    w = RenditionWindow(target_duration_s=2, window_segments=6, segment_duration_us=2 * SECOND)
    w.publish(PublishedSegment(0, 2 * SECOND, PDT0, "init.mp4", parts()), 0.0)
    text = render_media_playlist(w.playlist(0.0))
    assert "PART" not in text
    assert "SERVER-CONTROL" not in text
    with pytest.raises(WindowError):
        w.add_part(1, PublishedPart(0, 500_000, True), 0.0)


def test_preload_hint_rolls_to_next_segment() -> None:
    """After a segment's last part the hint names part 0 of the next segment."""
    w = window()
    fill(w, range(3), pending=4)
    assert w.preload_hint() == PartPosition(4, 0)
    w.publish(PublishedSegment(3, 2 * SECOND, PDT0 + 6000, "init.mp4", parts()), 0.0)
    assert w.preload_hint() == PartPosition(4, 0)
    assert w.position() == PartPosition(3, 3)


def test_contains_follows_rfc_part_rules() -> None:
    """Blocking conditions: a part past a segment's end means part 0 of the next segment."""
    w = window()
    fill(w, range(5), pending=1)
    assert w.contains(4)
    assert not w.contains(5)
    assert w.contains(5, 0)
    assert not w.contains(5, 1)
    assert w.contains(4, 3)
    assert w.contains(4, 4)  # = (5, 0), listed
    assert not w.contains(5, 4)  # = (6, 0), not yet
    assert w.part_state(5, 0) == "listed"
    assert w.part_state(5, 1) == "future"
    assert w.part_state(4, 4) == "never"


def test_withdrawn_parts_never_come() -> None:
    """Parts of a rejected segment leave the playlist and are never waited for again."""
    w = window()
    fill(w, range(5), pending=2)
    w.drop_parts(5)
    assert not w.playlist(0.0).pending_parts
    w.add_part(6, PublishedPart(0, 500_000, True), 0.0)
    assert w.part_state(5, 1) == "never"
    assert w.part_state(5, 2) == "never"


def test_parts_out_of_order_or_too_long_are_refused() -> None:
    """The window refuses parts it could not list truthfully."""
    w = window()
    fill(w, range(2))
    with pytest.raises(WindowError):
        w.add_part(2, PublishedPart(1, 500_000, False), 0.0)
    with pytest.raises(WindowError):
        w.add_part(1, PublishedPart(0, 500_000, True), 0.0)
    with pytest.raises(WindowError):
        w.add_part(2, PublishedPart(0, 600_000, True), 0.0)


def test_delta_update_skips_only_old_segments() -> None:
    """A delta update replaces segments older than CAN-SKIP-UNTIL with EXT-X-SKIP."""
    w = window(n=12)
    fill(w, range(12), pending=1)
    full = w.playlist(0.0)
    delta = w.playlist(0.0, skip=True)
    assert delta.skipped_segments == 6  # segments 0-5 end ≥ 12 s before segment 11's end
    assert delta.segments[0].uri == "6.m4s"
    assert delta.segments[0].map_uri == "init.mp4"
    assert [s.uri for s in delta.segments] == [s.uri for s in full.segments[6:]]
    text = render_media_playlist(delta)
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=6" in text
    back = parse_media_playlist(text)
    assert back.skipped_segments == 6
    assert back.last_msn == full.last_msn


def test_ended_window_has_no_hint_and_no_skip() -> None:
    """After ENDLIST there are no preload hints, pending parts or delta updates."""
    w = window()
    fill(w, range(12), pending=2)
    w.end(0.0)
    pl = w.playlist(0.0, skip=True)
    assert pl.endlist
    assert not pl.preload_hints
    assert not pl.pending_parts
    assert pl.skipped_segments == 0
    assert w.part_state(12, 3) == "never"
    render_media_playlist(pl)


def test_reports_are_rendered() -> None:
    """Rendition reports supplied by the caller appear after the preload hint."""
    w = window()
    fill(w, range(3), pending=1)
    rr = RenditionReport("../a128/index.m3u8", 3, 0)
    text = render_media_playlist(w.playlist(0.0, reports=[rr]))
    assert text.endswith(
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="3.1.m4s"\n'
        '#EXT-X-RENDITION-REPORT:URI="../a128/index.m3u8",LAST-MSN=3,LAST-PART=0\n'
    )


@pytest.mark.parametrize(
    "bad",
    [
        LowLatency(522_000, 500_000, 1_000_000, 6 * SECOND, 12 * SECOND),  # PHB < 3 × PT
        LowLatency(522_000, 500_000, 1_566_000, 5 * SECOND, 12 * SECOND),  # HB < 3 × TD
        LowLatency(522_000, 500_000, 1_566_000, 6 * SECOND, 11 * SECOND),  # CSU < 6 × TD
        LowLatency(400_000, 500_000, 1_566_000, 6 * SECOND, 12 * SECOND),  # cut > target
    ],
)
def test_low_latency_settings_are_checked(bad: LowLatency) -> None:
    """Server-control values below SPEC §2's minimums are refused up front."""
    with pytest.raises(WindowError):
        RenditionWindow(
            target_duration_s=2, window_segments=12, segment_duration_us=2 * SECOND, low_latency=bad
        )


@given(st.integers(1, 14), st.integers(0, 4), st.booleans())
def test_ll_playlist_round_trips(n: int, pending: int, skip: bool) -> None:
    """Every LL playlist the window produces renders, parses back equal, and is valid."""
    w = window()
    fill(w, range(n), pending=pending)
    pl = w.playlist(0.0, skip=skip)
    assert parse_media_playlist(render_media_playlist(pl)) == pl
