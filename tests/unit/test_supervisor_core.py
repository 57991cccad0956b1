"""The event supervisor's sans-IO core: records drive media actions, schedule deadlines,
preflight-gated scheduled go-live, failures reported, restart resume."""

from __future__ import annotations

import dataclasses

import pytest

from mainevent.control.lifecycle import EventStatus
from mainevent.control.supervisor import Check, PreflightFacts, Supervisor, evaluate
from mainevent.control.supervisor.core import MediaPhase, SupervisorError
from mainevent.control.supervisor.model import (
    ArchiveMedia,
    EndMedia,
    EventRecord,
    MediaFailed,
    MediaSpec,
    MediaStarted,
    PreflightDone,
    RecordChanged,
    ReportError,
    RequestTransition,
    RungSpec,
    RunPreflight,
    SetDegraded,
    SetPipelineMode,
    SetVisibility,
    StartMedia,
    Tick,
    Visibility,
)

S = EventStatus
SPEC = MediaSpec(
    ladder=(RungSpec("v360", 640, 360, 600),),
    segment_duration_ms=1000,
    latency_mode="standard",
    protocol="srt",
    stream_key="key-final-1",
)
T0 = 1_800_000_000.0


def rec(status: EventStatus, version: int = 1, **kw: object) -> EventRecord:
    base = EventRecord(
        id="final",
        status=status,
        version=version,
        media=SPEC,
        starts_at=T0 + 3600,
        ends_at=T0 + 7200,
        rehearsal_lead_s=1800,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_scheduled_event_asks_for_rehearsal_at_its_lead_time() -> None:
    """A scheduled event enters rehearsal starts_at − lead, not before, and asks once per retry."""
    sup = Supervisor(retry_s=5)
    assert sup.handle(RecordChanged(rec(S.SCHEDULED)), T0) == []
    assert sup.next_deadline() == T0 + 1800
    assert sup.handle(Tick(), T0 + 1799) == []
    acts = sup.handle(Tick(), T0 + 1800)
    assert acts == [RequestTransition("final", S.REHEARSAL, "rehearsal lead time reached")]
    assert sup.handle(Tick(), T0 + 1801) == []  # not again before retry_s
    assert sup.next_deadline() == T0 + 1805


def test_rehearsal_starts_media_on_the_hidden_rehearsal_path() -> None:
    """Rehearsal: ingest and pipelines start with the event's own spec, published to rehearsal."""
    sup = Supervisor()
    acts = sup.handle(RecordChanged(rec(S.REHEARSAL, 2)), T0)
    assert acts == [StartMedia("final", SPEC), SetVisibility("final", Visibility.REHEARSAL)]
    snap = sup.event("final")
    assert snap is not None
    assert snap.phase is MediaPhase.REHEARSAL


def test_lifecycle_live_pause_resume_end_archive() -> None:
    """Each transition maps to one media action; pipelines keep running through pause."""
    sup = Supervisor()
    sup.handle(RecordChanged(rec(S.REHEARSAL, 2)), T0)
    assert sup.handle(RecordChanged(rec(S.LIVE, 3)), T0) == [
        SetVisibility("final", Visibility.LIVE)
    ]
    assert sup.handle(RecordChanged(rec(S.PAUSED, 4)), T0) == [
        SetVisibility("final", Visibility.PAUSED)
    ]
    assert sup.handle(RecordChanged(rec(S.LIVE, 5)), T0) == [
        SetVisibility("final", Visibility.LIVE)
    ]
    assert sup.handle(RecordChanged(rec(S.ENDED, 6)), T0) == [EndMedia("final", SPEC)]
    assert sup.handle(RecordChanged(rec(S.ARCHIVED, 7)), T0) == [ArchiveMedia("final")]
    assert sup.handle(RecordChanged(rec(S.ARCHIVED, 7)), T0) == []  # idempotent


def test_the_same_record_twice_does_nothing_twice() -> None:
    """A repeated or older record (two operators, a resync) applies nothing again."""
    sup = Supervisor()
    sup.handle(RecordChanged(rec(S.REHEARSAL, 2)), T0)
    sup.handle(RecordChanged(rec(S.LIVE, 3)), T0)
    assert sup.handle(RecordChanged(rec(S.LIVE, 3)), T0) == []
    assert sup.handle(RecordChanged(rec(S.REHEARSAL, 2)), T0) == []  # stale read


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (S.LIVE, [StartMedia("final", SPEC), SetVisibility("final", Visibility.LIVE)]),
        (S.PAUSED, [StartMedia("final", SPEC), SetVisibility("final", Visibility.PAUSED)]),
        (S.ENDED, [EndMedia("final", SPEC)]),
        (S.ARCHIVED, [ArchiveMedia("final")]),
        (S.DRAFT, []),
    ],
)
def test_restart_resumes_every_event_in_its_recorded_state(
    status: EventStatus, expected: list[object]
) -> None:
    """A fresh supervisor (a restart) brings each event's media back to where its record is."""
    assert Supervisor().handle(RecordChanged(rec(status, 9)), T0) == expected


def test_scheduled_go_live_waits_for_a_passing_preflight() -> None:
    """At starts_at a rehearsal runs preflight; failing holds go-live (reported) and retries."""
    sup = Supervisor(retry_s=2)
    sup.handle(RecordChanged(rec(S.REHEARSAL, 2)), T0)
    assert sup.next_deadline() == T0 + 3600
    assert sup.handle(Tick(), T0 + 3600) == [RunPreflight("final")]
    assert sup.next_deadline() is None  # waiting for the answer
    acts = sup.handle(PreflightDone("final", False, ("feeds_healthy",)), T0 + 3601)
    assert acts == [
        ReportError("final", "scheduled go-live held: preflight failing: feeds_healthy")
    ]
    assert sup.next_deadline() == T0 + 3603
    assert sup.handle(Tick(), T0 + 3603) == [RunPreflight("final")]
    acts = sup.handle(PreflightDone("final", True), T0 + 3604)
    assert acts == [
        ReportError("final", None),
        RequestTransition("final", S.LIVE, "scheduled start; preflight passed"),
    ]


def test_no_automatic_go_live_when_disabled() -> None:
    """auto_go_live=False: rehearsal → live only on command."""
    sup = Supervisor(auto_go_live=False)
    sup.handle(RecordChanged(rec(S.REHEARSAL, 2)), T0)
    assert sup.next_deadline() is None
    assert sup.handle(Tick(), T0 + 10_000) == []


def test_a_pipeline_failing_in_rehearsal_is_reported_and_the_event_stays() -> None:
    """A pipeline that fails to start: a clear error; no transition; cleared once it produces."""
    sup = Supervisor()
    sup.handle(RecordChanged(rec(S.REHEARSAL, 2)), T0)
    acts = sup.handle(MediaFailed("final", "backup", "port in use"), T0)
    assert acts == [ReportError("final", "pipeline backup failed: port in use")]
    assert sup.handle(MediaFailed("final", "backup", "port in use"), T0) == []
    snap = sup.event("final")
    assert snap is not None
    assert snap.status is S.REHEARSAL
    assert snap.error is not None
    assert sup.handle(MediaStarted("final"), T0) == [ReportError("final", None)]


def test_operator_flags_follow_the_record() -> None:
    """Forced pipeline and degraded features reach the media plane (and again after restart)."""
    sup = Supervisor()
    sup.handle(RecordChanged(rec(S.REHEARSAL, 2)), T0)
    acts = sup.handle(
        RecordChanged(rec(S.REHEARSAL, 3, pipeline_mode="backup", degraded=frozenset({"dvr"}))),
        T0,
    )
    assert acts == [SetDegraded("final", frozenset({"dvr"})), SetPipelineMode("final", "backup")]
    restarted = Supervisor().handle(RecordChanged(rec(S.LIVE, 4, pipeline_mode="backup")), T0)
    assert restarted[-1] == SetPipelineMode("final", "backup")


def test_reports_for_unknown_events_are_refused() -> None:
    """A media report for an event the supervisor never saw is an error, not ignored."""
    with pytest.raises(SupervisorError):
        Supervisor().handle(MediaStarted("nope"), T0)
    with pytest.raises(SupervisorError):
        Supervisor(retry_s=0)


def test_resync_deadline_for_separate_processes() -> None:
    """With resync_s the adapter re-reads records on a deadline (shared database mode)."""
    sup = Supervisor(resync_s=5)
    assert sup.wants_resync(T0) is True
    assert sup.next_deadline() == T0 + 5
    assert sup.wants_resync(T0 + 1) is False
    assert sup.wants_resync(T0 + 5) is True


def test_preflight_evaluation_names_each_failing_check() -> None:
    """Every check passes on good facts; each bad fact fails exactly its check."""
    good = PreflightFacts(
        pipelines={"primary": True, "backup": True},
        rejected_segments=0,
        since_publish_s={"v360": 0.4, "a128": 0.5},
        target_duration_s=1,
        cdn_problems={"cdn-a": None, "cdn-b": None},
    )
    assert all(r.passed for r in evaluate(good))
    bad = dataclasses.replace(
        good,
        pipelines={"primary": True, "backup": False},
        rejected_segments=2,
        since_publish_s={"v360": 4.0, "a128": None},
        cdn_problems={"cdn-a": None, "cdn-b": "segment 7 answered 404"},
        playback_problem="entitlement breaker open",
        waiting_room_problem="waiting room answers waiting_room_closed",
    )
    results = {r.name: r for r in evaluate(bad)}
    assert not any(r.passed for r in results.values())
    assert "backup" in results[Check.FEEDS_HEALTHY].detail
    assert "cdn-b" in results[Check.CDN_PATHS_FRESH].detail
    empty = PreflightFacts(
        pipelines={}, rejected_segments=0, since_publish_s={}, target_duration_s=1
    )
    failing = {r.name for r in evaluate(empty) if not r.passed}
    assert failing == {Check.FEEDS_HEALTHY, Check.MANIFESTS_ADVANCING, Check.CDN_PATHS_FRESH}
