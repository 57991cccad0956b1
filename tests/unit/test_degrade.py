"""The decisions behind `degrade`: the supervisor tells the media plane which features are off
(and turns them back on at the end), the origin's shedder refuses every DVR request while DVR
is off, and the telemetry aggregator keeps aggregates without per-session detail."""

from __future__ import annotations

from mainevent.control.supervisor import Feature, Supervisor
from mainevent.control.supervisor.model import EndMedia, RecordChanged, SetDegraded
from mainevent.control.telemetry.aggregate import Aggregator
from mainevent.control.telemetry.events import ReportKind
from mainevent.media.shedding import (
    DVR_OFF_RETRY_AFTER_S,
    Budget,
    LoadShedder,
    RequestClass,
    ShedReason,
)
from tests.telemetry.test_core import DIMS, TIMING, merged, rep
from tests.unit.test_supervisor_core import T0, S, rec

DVR = frozenset({Feature.DVR})
BOTH = frozenset({Feature.DVR, Feature.TELEMETRY_DETAIL})


def test_degraded_flags_reach_a_live_event_and_come_back_when_cleared() -> None:
    """Flags set on a live record are sent once; clearing them sends the empty set."""
    sup = Supervisor()
    sup.handle(RecordChanged(rec(S.LIVE, 1)), T0)
    assert sup.handle(RecordChanged(rec(S.LIVE, 2, degraded=BOTH)), T0) == [
        SetDegraded("final", BOTH)
    ]
    assert sup.handle(RecordChanged(rec(S.LIVE, 3, degraded=BOTH)), T0) == []
    snap = sup.event("final")
    assert snap is not None
    assert snap.degraded == BOTH
    assert sup.handle(RecordChanged(rec(S.LIVE, 4)), T0) == [SetDegraded("final", frozenset())]


def test_the_end_turns_every_feature_back_on_for_the_vod() -> None:
    """Ending an event with DVR off: ENDLIST first, then DVR back on (the VOD is whole),
    whatever flags the ended record still carries."""
    sup = Supervisor()
    sup.handle(RecordChanged(rec(S.LIVE, 1, degraded=DVR)), T0)
    acts = sup.handle(RecordChanged(rec(S.ENDED, 2, degraded=DVR)), T0)
    assert acts == [EndMedia("final", rec(S.ENDED).media), SetDegraded("final", frozenset())]
    archived = sup.handle(RecordChanged(rec(S.ARCHIVED, 3, degraded=DVR)), T0)
    assert not any(isinstance(a, SetDegraded) for a in archived)


def test_a_restart_applies_the_recorded_flags_again_but_not_to_an_ended_event() -> None:
    """After a restart a live event gets its flags again; an ended one serves its VOD whole."""
    live = Supervisor().handle(RecordChanged(rec(S.LIVE, 5, degraded=DVR)), T0)
    assert live[-1] == SetDegraded("final", DVR)
    ended = Supervisor().handle(RecordChanged(rec(S.ENDED, 5, degraded=DVR)), T0)
    assert not any(isinstance(a, SetDegraded) for a in ended)


def test_dvr_off_refuses_every_dvr_request_but_never_the_live_edge() -> None:
    """DVR off sheds DVR requests with no load at all (Retry-After of a degrade, not of a
    budget) and counts them; the live edge is admitted; back on, DVR is admitted again."""
    shedder = LoadShedder(Budget(retry_after_s=2))
    shedder.dvr_off = True
    refused = shedder.admit(RequestClass.DVR, 0.0)
    assert refused.reason is ShedReason.DVR_OFF
    assert shedder.retry_after_s(ShedReason.DVR_OFF) == DVR_OFF_RETRY_AFTER_S
    assert shedder.retry_after_s(ShedReason.CONCURRENCY) == 2
    live = shedder.admit(RequestClass.LIVE, 0.0)
    assert live.admitted
    assert shedder.statistics(0.0).shed_dvr_off == 1
    shedder.dvr_off = False
    assert shedder.admit(RequestClass.DVR, 0.0).admitted


def test_detail_off_keeps_the_aggregates_and_drops_the_session_detail() -> None:
    """With telemetry detail off, start-up, play time and latency still reach the aggregates;
    the session keeps no start-up or latency of its own; back on, new samples are kept."""
    agg = Aggregator(TIMING)
    t = T0
    agg.player(DIMS, rep("s", 0, ReportKind.TIME_INTERVAL, t, sta="s"), 1, t)
    agg.set_detail("final", False)
    agg.player(DIMS, rep("s", 1, ReportKind.PLAY_STATE, t + 2, sta="p"), 1, t + 2)
    agg.player(
        DIMS, rep("s", 2, ReportKind.TIME_INTERVAL, t + 4, sta="p", latency_ms=3000.0), 1, t + 4
    )
    f = merged(agg.tick(t + 5)).figures(T0, 5)
    assert f.started_sessions == 1
    assert f.video_start_time_p50_ms is not None
    assert f.live_latency_p50_ms is not None
    assert f.played_s == 2.0
    view = agg.session("s")
    assert view is not None
    assert view.video_start_time_ms is None
    assert view.live_latency_ms is None
    agg.set_detail("final", True)
    agg.player(
        DIMS, rep("s", 3, ReportKind.TIME_INTERVAL, t + 6, sta="p", latency_ms=2000.0), 1, t + 6
    )
    view = agg.session("s")
    assert view is not None
    assert view.live_latency_ms == 2000.0


def test_switching_detail_off_forgets_what_sessions_kept_and_spares_other_events() -> None:
    """Turning detail off clears the latency history of that event's sessions only."""
    agg = Aggregator({**TIMING, "other": TIMING["final"]})
    other = DIMS.__class__("other", "eu", "cdn-a", "isp1", "desktop")
    for sid, dims in (("a", DIMS), ("b", other)):
        agg.player(dims, rep(sid, 0, ReportKind.PLAY_STATE, T0, sta="p"), 1, T0)
        agg.player(
            dims, rep(sid, 1, ReportKind.TIME_INTERVAL, T0 + 1, sta="p", latency_ms=1000.0), 1, T0
        )
    agg.set_detail("final", False)
    a, b = agg.session("a"), agg.session("b")
    assert a is not None
    assert b is not None
    assert a.live_latency_ms is None
    assert b.live_latency_ms == 1000.0


def test_a_refusal_from_the_origin_does_not_make_the_edge_think_it_is_failing() -> None:
    """A 503 + Retry-After for a DVR segment leaves the upstream healthy, so an expired live
    playlist is fetched afresh (not answered stale for a backoff); a 503 without Retry-After
    still counts as a failure."""
    from mainevent.media.edge import Cache, Fetch, Stale, UpstreamResponse

    cache = Cache(default_stale_if_error=60)
    cache.lookup("/live/e/v1/index.m3u8", 0.0)
    cache.finish(
        "/live/e/v1/index.m3u8",
        UpstreamResponse(200, (("Cache-Control", "max-age=1"),), b"#EXTM3U"),
        0.0,
    )
    cache.lookup("/live/e/v1/100.m4s", 1.5)
    refused = UpstreamResponse(503, (("Retry-After", "30"), ("Cache-Control", "no-store")), b"")
    done = cache.finish("/live/e/v1/100.m4s", refused, 1.5)
    assert done.response is refused
    assert done.entry is None
    assert not cache.health.failing
    assert isinstance(cache.lookup("/live/e/v1/index.m3u8", 2.0), Fetch)
    cache.finish("/live/e/v1/index.m3u8", UpstreamResponse(503, (), b"down"), 2.0)
    assert cache.health.failing
    assert isinstance(cache.lookup("/live/e/v1/index.m3u8", 2.1), Stale)
