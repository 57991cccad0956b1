"""Sans-IO DVR cores: DVR playlists, delta updates, start-over, VOD, shedding, retention."""

from __future__ import annotations

import pytest

from mainevent.media.manifest import (
    PlaylistError,
    PublishedSegment,
    RenditionWindow,
    WindowError,
    parse_media_playlist,
    render_media_playlist,
    validate_media_playlist,
)
from mainevent.media.manifest.dash import DashRepresentation
from mainevent.media.manifest.dash_vod import MpdRun, render_vod_mpd
from mainevent.media.manifest.dvr import (
    delta_update,
    dvr_playlist,
    skippable_segments,
    startover_playlist,
    vod_playlist,
)
from mainevent.media.origin.blocking import Directives, Rejection, check_directives
from mainevent.media.origin.retention import RetentionPolicy, StoredSegment
from mainevent.media.shedding import (
    Budget,
    LoadShedder,
    RequestClass,
    ShedReason,
    classify,
)

D_US = 2_000_000
FIRST = 900_000_000


def seg(msn: int, *, gap: bool = False, init: str = "init.mp4") -> PublishedSegment:
    return PublishedSegment(
        msn=msn, duration_us=D_US, program_date_time_ms=msn * 2000, init_uri=init, gap=gap
    )


def window(n: int, *, window_segments: int, kind: str | None = None) -> RenditionWindow:
    w = RenditionWindow(
        target_duration_s=2,
        window_segments=window_segments,
        segment_duration_us=D_US,
        playlist_type="EVENT" if kind == "EVENT" else None,
    )
    for i in range(n):
        w.publish(seg(FIRST + i), float(i))
    return w


def test_dvr_playlist_carries_window_skip_and_live_edge_start() -> None:
    """A DVR playlist lists the whole window, offers delta updates and starts at the live edge."""
    w = window(300, window_segments=300)  # 10 min of 2 s segments
    pl = dvr_playlist(
        w.playlist(300.0), can_skip_until_us=12 * 1_000_000, start_offset_us=-6_000_000
    )
    text = render_media_playlist(pl)
    assert "#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=12.000" in text
    assert "#EXT-X-START:TIME-OFFSET=-6.000" in text
    assert "#EXT-X-VERSION:9" in text
    back = parse_media_playlist(text)
    assert len(back.segments) == 300
    assert back.start_offset_us == -6_000_000
    assert back.server_control is not None
    assert back.server_control.can_skip_until_us == 12_000_000
    assert back.playlist_type is None  # a sliding window, not EVENT


def test_delta_update_skips_all_but_can_skip_until_and_keeps_msns() -> None:
    """`_HLS_skip=YES` replaces the old segments with EXT-X-SKIP; the tail and MSNs are exact."""
    w = window(300, window_segments=300)
    full = dvr_playlist(w.playlist(300.0), can_skip_until_us=12_000_000, start_offset_us=None)
    delta = delta_update(full)
    # Every segment that ends 12 s (CAN-SKIP-UNTIL) or more before the end is skipped: 6 stay.
    assert delta.skipped_segments == 300 - 6
    assert delta.last_msn == full.last_msn
    assert [s.uri for s in delta.segments] == [s.uri for s in full.segments[-6:]]
    assert delta.segments[0].map_uri == "init.mp4", "the delta names the init section in force"
    text = render_media_playlist(delta)
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=294" in text
    assert len(text) * 10 < len(render_media_playlist(full))
    assert parse_media_playlist(text).skipped_segments == 294


def test_delta_update_of_ended_or_short_playlist_is_the_full_playlist() -> None:
    """No delta update on an ENDLIST playlist, or when nothing is old enough to skip."""
    short = dvr_playlist(
        window(5, window_segments=5).playlist(5.0),
        can_skip_until_us=12_000_000,
        start_offset_us=None,
    )
    assert skippable_segments(short, 12_000_000) == 0
    assert delta_update(short) is short
    w = window(20, window_segments=20)
    w.end(20.0)
    ended = dvr_playlist(w.playlist(20.0), can_skip_until_us=12_000_000, start_offset_us=-6_000_000)
    assert ended.start_offset_us is None
    assert ended.server_control is None, "an ended playlist offers no delta updates"
    assert delta_update(ended) is ended


def test_live_start_offset_must_be_three_target_durations_from_the_end() -> None:
    """EXT-X-START within 3 × TD of the live edge is refused (rfc8216bis §4.4.2.2)."""
    pl = window(10, window_segments=10).playlist(10.0)
    validate_media_playlist(dvr_playlist(pl, can_skip_until_us=None, start_offset_us=-6_000_000))
    with pytest.raises(PlaylistError, match="EXT-X-START"):
        validate_media_playlist(
            dvr_playlist(pl, can_skip_until_us=None, start_offset_us=-2_000_000)
        )


def test_startover_is_an_event_playlist_from_the_first_segment_then_vod() -> None:
    """Start-over lists every segment since the first, starts at 0, and ends with ENDLIST."""
    w = window(40, window_segments=3, kind="EVENT")
    pl = startover_playlist(w.playlist(40.0))
    text = render_media_playlist(pl)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text
    assert "#EXT-X-START:TIME-OFFSET=0.000,PRECISE=YES" in text
    back = parse_media_playlist(text)
    assert back.media_sequence == FIRST
    assert len(back.segments) == 40
    w.end(41.0)
    ended = parse_media_playlist(render_media_playlist(startover_playlist(w.playlist(41.0))))
    assert ended.endlist
    assert ended.media_sequence == FIRST
    assert len(ended.segments) == 40


def test_vod_excludes_slate_and_gap_runs_with_a_discontinuity() -> None:
    """VOD leaves slate and gap runs out; the segment after a cut run starts a discontinuity."""
    w = RenditionWindow(
        target_duration_s=2, window_segments=3, segment_duration_us=D_US, playlist_type="EVENT"
    )
    for i in range(10):
        w.publish(seg(FIRST + i, gap=i in (3, 4)), float(i))
    archive = w.playlist(10.0)
    vod = vod_playlist(archive, slate_msns={FIRST + 7}, gaps="exclude")
    assert vod.playlist_type == "VOD"
    assert vod.endlist
    uris = [s.uri for s in vod.segments]
    assert uris == [f"{FIRST + i}.m4s" for i in (0, 1, 2, 5, 6, 8, 9)]
    disc = [s.uri for s in vod.segments if s.discontinuity]
    assert disc == [f"{FIRST + 5}.m4s", f"{FIRST + 8}.m4s"]
    assert all(s.map_uri == "init.mp4" for s in vod.segments if s.discontinuity)
    text = render_media_playlist(vod)
    assert "#EXT-X-GAP" not in text
    assert "SERVER-CONTROL" not in text
    validate_media_playlist(parse_media_playlist(text))
    marked = vod_playlist(archive, slate_msns={FIRST + 7}, gaps="mark")
    assert len(marked.segments) == 10
    assert [s.gap for s in marked.segments].count(True) == 2


def test_vod_of_an_event_with_no_media_is_refused() -> None:
    """A VOD playlist with nothing to list is an error, not an empty playlist."""
    w = RenditionWindow(
        target_duration_s=2, window_segments=3, segment_duration_us=D_US, playlist_type="EVENT"
    )
    for i in range(3):
        w.publish(seg(FIRST + i, gap=True), float(i))
    with pytest.raises(ValueError, match="no media segment"):
        vod_playlist(w.playlist(3.0), gaps="exclude")


def test_vod_mpd_lists_one_period_per_run() -> None:
    """The static MPD has back-to-back Periods whose $Number$ is still the epoch MSN."""
    reps = [
        DashRepresentation("v360", "video", "avc1.64001e", 800_000, 90_000, "v360/init.mp4"),
        DashRepresentation("a128", "audio", "mp4a.40.2", 128_000, 48_000, "a128/init.mp4"),
    ]
    runs = [
        MpdRun(FIRST, 3, {"v360": "v360/init.mp4", "a128": "a128/init.mp4"}),
        MpdRun(FIRST + 5, 5, {"v360": "v360/init.mp4", "a128": "a128/init.mp4"}),
    ]
    text = render_vod_mpd(runs, reps, 2000)
    assert 'type="static"' in text
    assert 'mediaPresentationDuration="PT16S"' in text
    assert '<Period id="1" start="PT6S" duration="PT10S">' in text
    assert f'startNumber="{FIRST + 5}"' in text
    assert f'presentationTimeOffset="{(FIRST + 5) * 2 * 90_000}"' in text


def test_classification_by_distance_from_the_live_edge() -> None:
    """Only media more than N segments behind the live edge is DVR."""
    assert classify(100, 100, 6) is RequestClass.LIVE
    assert classify(94, 100, 6) is RequestClass.LIVE
    assert classify(93, 100, 6) is RequestClass.DVR
    assert classify(None, 100, 6) is RequestClass.LIVE  # init sections, playlists
    assert classify(5, None, 6) is RequestClass.LIVE


def test_live_edge_requests_are_never_shed_dvr_requests_first() -> None:
    """Over the concurrency budget DVR requests get refused while live-edge ones keep coming."""
    shedder = LoadShedder(Budget(max_concurrent=3))
    live = [shedder.admit(RequestClass.LIVE, 0.0) for _ in range(5)]
    assert all(a.admitted for a in live), "live-edge requests are admitted beyond the budget"
    dvr = shedder.admit(RequestClass.DVR, 0.0)
    assert not dvr.admitted
    assert dvr.reason is ShedReason.CONCURRENCY
    for a in live[:3]:
        shedder.done(a, 1000, 0.1)
    ok = shedder.admit(RequestClass.DVR, 0.1)
    assert ok.admitted
    stats = shedder.statistics(0.1)
    assert (stats.in_flight_live, stats.in_flight_dvr, stats.shed_concurrency) == (2, 1, 1)
    shedder.done(dvr, 0, 0.2)  # a shed request's done() changes nothing
    assert shedder.statistics(0.2).in_flight_dvr == 1


def test_bandwidth_budget_sheds_dvr_over_the_last_second() -> None:
    """Bytes served in the last second over the budget shed DVR requests until they age out."""
    shedder = LoadShedder(Budget(max_bytes_per_s=1_000_000))
    a = shedder.admit(RequestClass.LIVE, 0.0)
    shedder.done(a, 1_200_000, 0.0)
    shed = shedder.admit(RequestClass.DVR, 0.5)
    assert shed.reason is ShedReason.BANDWIDTH
    assert shedder.admit(RequestClass.LIVE, 0.5).admitted
    assert shedder.admit(RequestClass.DVR, 1.01).admitted


def test_budget_rejects_nonsense() -> None:
    """A zero budget is a configuration error, not 'shed everything'."""
    with pytest.raises(ValueError, match="max_concurrent"):
        Budget(max_concurrent=0)


def test_retention_never_deletes_a_listed_segment() -> None:
    """Past retention, only segments no playlist lists are deleted; the deadline is exact."""
    policy = RetentionPolicy(60)
    stored = [StoredSegment(m, 2000 * (m + 1)) for m in range(10)]
    listed = [range(4, 10)]
    assert policy.due(stored, listed, now_ms=2000 * 10 + 60_000) == [0, 1, 2, 3]
    assert policy.due(stored, listed, now_ms=2000 * 2 + 60_000) == [0, 1]
    assert policy.due(stored, [range(0, 10)], now_ms=10**12) == []
    assert policy.next_deadline(stored, listed) == 2000 + 60_000
    assert RetentionPolicy(None).due(stored, [], now_ms=10**12) == []


def test_standard_mode_dvr_offers_delta_updates_but_no_blocking() -> None:
    """`_HLS_skip` is accepted on a standard-mode DVR playlist; `_HLS_msn` stays a 400."""
    skip = Directives(skip=True)
    assert (
        check_directives(skip, low_latency=False, ended=False, last_msn=9, delta_updates=True)
        == skip
    )
    refused = check_directives(
        Directives(msn=9), low_latency=False, ended=False, last_msn=9, delta_updates=True
    )
    assert isinstance(refused, Rejection)
    assert refused.status == 400
    assert isinstance(check_directives(skip, low_latency=False, ended=False, last_msn=9), Rejection)


# -- the event's DVR window changes while live -------------------------------------------------


def test_a_shorter_window_drops_the_head_at_once_and_keeps_it_downloadable() -> None:
    """Resizing 30 → 10 segments lists the newest 10 now; the dropped ones stay available for
    the RFC's period, then expire; the media sequence only moves forward."""
    w = window(30, window_segments=30)
    before = w.playlist(0.0)
    w.resize(10, 1.0)
    pl = w.playlist(1.0)
    assert len(pl.segments) == 10
    assert pl.media_sequence == before.media_sequence + 20
    assert pl.last_msn == before.last_msn
    validate_media_playlist(pl)
    assert w.is_available(FIRST, 1.0), "a dropped segment stays downloadable for a while"
    assert FIRST in w.expired(1000.0)
    assert not w.is_available(FIRST, 1000.0)


def test_a_longer_window_grows_as_segments_come_and_never_relists() -> None:
    """Resizing 10 → 20 keeps the media sequence where it is and lists more as new segments
    are published, up to 20."""
    w = window(30, window_segments=10)
    head = w.playlist(0.0).media_sequence
    w.resize(20, 0.0)
    assert w.playlist(0.0).media_sequence == head
    assert len(w.playlist(0.0).segments) == 10
    for msn in range(FIRST + 30, FIRST + 45):
        w.publish(seg(msn), 1.0)
    pl = w.playlist(1.0)
    assert len(pl.segments) == 20
    assert pl.media_sequence == FIRST + 25
    assert w.window_segments == 20


def test_a_window_too_short_for_players_is_refused_and_an_ended_one_stays() -> None:
    """Fewer than 3 × TD listed is a WindowError; an ended playlist is not cut any more."""
    w = window(30, window_segments=30)
    with pytest.raises(WindowError, match="3 × target duration"):
        w.resize(2, 0.0)
    w.end(0.0)
    w.resize(5, 0.0)
    assert len(w.playlist(0.0).segments) == 30


def test_supervisor_applies_a_changed_dvr_window_only_to_running_media() -> None:
    """StartMedia carries the record's window; a PATCH while live or paused becomes one
    SetDvrWindow; before the media runs or after the end nothing is sent."""
    from mainevent.control.lifecycle import EventStatus as S
    from mainevent.control.supervisor import Supervisor
    from mainevent.control.supervisor.model import (
        EndMedia,
        EventRecord,
        MediaSpec,
        RecordChanged,
        RungSpec,
        SetDvrWindow,
        StartMedia,
    )

    def rec(status: S, version: int, window_s: int) -> EventRecord:
        spec = MediaSpec(
            ladder=(RungSpec("v360", 640, 360, 600),),
            segment_duration_ms=2000,
            latency_mode="standard",
            protocol="srt",
            stream_key="key-final-1",
            dvr_window_s=window_s,
        )
        return EventRecord(id="final", status=status, version=version, media=spec)

    sup = Supervisor()
    acts = sup.handle(RecordChanged(rec(S.SCHEDULED, 1, 600)), 0.0)
    assert not [a for a in acts if isinstance(a, SetDvrWindow)], "no media runs yet"
    acts = sup.handle(RecordChanged(rec(S.LIVE, 2, 3600)), 0.0)
    (start,) = [a for a in acts if isinstance(a, StartMedia)]
    assert start.spec.dvr_window_s == 3600
    assert not [a for a in acts if isinstance(a, SetDvrWindow)]
    assert sup.handle(RecordChanged(rec(S.LIVE, 3, 3600)), 0.0) == []
    assert sup.handle(RecordChanged(rec(S.LIVE, 4, 120)), 0.0) == [SetDvrWindow("final", 120)]
    acts = sup.handle(RecordChanged(rec(S.PAUSED, 5, 0)), 0.0)
    assert SetDvrWindow("final", 0) in acts
    acts = sup.handle(RecordChanged(rec(S.ENDED, 6, 0)), 0.0)
    assert [a for a in acts if isinstance(a, EndMedia)]
    assert not [a for a in sup.handle(RecordChanged(rec(S.ENDED, 7, 900)), 0.0)]
