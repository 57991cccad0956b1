"""Sans-IO event supervisor: the event record drives the media plane.

`handle(input, now) -> actions` and `next_deadline()`; the adapter supplies the records (at
start-up and after every change), the media plane's reports and the clock, arms one timer for
`next_deadline()`, and carries out the actions. Times are epoch seconds (the schedule is wall
time, shared with other machines).

Per event it converges what the media plane does on what the record says:

    scheduled ──(starts_at − rehearsal lead)──► RequestTransition(rehearsal)
    rehearsal ──► StartMedia + SetVisibility(rehearsal)
              ──(starts_at)──► RunPreflight ──passed──► RequestTransition(live)
                                            ──failed──► ReportError, retry after `retry_s`
    live      ──► SetVisibility(live)           (StartMedia first after a restart)
    any running state: SetPipelineMode / SetDegraded when the record's flags change,
                       SetDvrWindow when its `dvr_window_s` does (StartMedia carries it)
    paused    ──► SetVisibility(paused)         (slate; pipelines keep running)
    ended     ──► EndMedia                      (ENDLIST, pipelines stopped, ingest closed)
              ──► SetDegraded(∅) if any feature was off (the VOD is served whole)
    archived  ──► ArchiveMedia

Starting from nothing (a restart) it emits the same actions for every event in its recorded
state, so the media plane resumes each one where the record says it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mainevent.control.lifecycle import EventStatus
from mainevent.control.supervisor.model import (
    Action,
    ArchiveMedia,
    EndMedia,
    EventRecord,
    Feature,
    Input,
    MediaFailed,
    MediaStarted,
    PreflightDone,
    RecordChanged,
    ReportError,
    RequestTransition,
    RunPreflight,
    SetDegraded,
    SetDvrWindow,
    SetPipelineMode,
    SetVisibility,
    StartMedia,
    Tick,
    Visibility,
)

__all__ = ["MediaPhase", "SupervisedEvent", "Supervisor", "SupervisorError"]

S = EventStatus


class SupervisorError(Exception):
    """An input the supervisor cannot take (e.g. a report for an event it never saw)."""


class MediaPhase(StrEnum):
    """What the media plane does for an event, as the supervisor last told it."""

    IDLE = "idle"
    REHEARSAL = "rehearsal"
    LIVE = "live"
    PAUSED = "paused"
    ENDED = "ended"
    ARCHIVED = "archived"


_VISIBLE = {
    S.REHEARSAL: (MediaPhase.REHEARSAL, Visibility.REHEARSAL),
    S.LIVE: (MediaPhase.LIVE, Visibility.LIVE),
    S.PAUSED: (MediaPhase.PAUSED, Visibility.PAUSED),
}


@dataclass(frozen=True, slots=True)
class SupervisedEvent:
    """Snapshot of one event under supervision (for the media view of the API)."""

    event_id: str
    status: EventStatus
    phase: MediaPhase
    error: str | None
    preflight_running: bool
    degraded: frozenset[Feature]
    """The features switched off in the media plane now (as the supervisor told it)."""
    pipeline_mode: str


@dataclass(slots=True)
class _Tracked:
    record: EventRecord
    phase: MediaPhase = MediaPhase.IDLE
    degraded: frozenset[Feature] = field(default_factory=frozenset)
    pipeline_mode: str = "auto"
    dvr_window_s: int | None = None
    """The DVR window the media plane runs with (None: no media started)."""
    retry_at: float = 0.0
    """No schedule action before this time (a request was just made, or a preflight failed)."""
    preflight_running: bool = False
    error: str | None = None
    media_error: str | None = None


class Supervisor:
    """Drives every event's media from its record (see the module docstring)."""

    def __init__(
        self, *, retry_s: float = 2.0, auto_go_live: bool = True, resync_s: float | None = None
    ) -> None:
        if retry_s <= 0:
            raise SupervisorError("retry_s must be > 0")
        self.retry_s = retry_s
        self.auto_go_live = auto_go_live
        """Go live at `starts_at` once a preflight passes (False: only on command)."""
        self.resync_s = resync_s
        """Re-read every record this often (separate processes over a shared database; the
        in-process control plane tells the supervisor of each change instead)."""
        self._events: dict[str, _Tracked] = {}
        self._resync_at: float | None = None

    # -- queries ------------------------------------------------------------------------------

    def events(self) -> list[SupervisedEvent]:
        """Every event under supervision."""
        return [self._snapshot(t) for t in self._events.values()]

    def event(self, event_id: str) -> SupervisedEvent | None:
        t = self._events.get(event_id)
        return None if t is None else self._snapshot(t)

    @staticmethod
    def _snapshot(t: _Tracked) -> SupervisedEvent:
        return SupervisedEvent(
            t.record.id,
            t.record.status,
            t.phase,
            t.error or t.media_error,
            t.preflight_running,
            t.degraded,
            t.pipeline_mode,
        )

    def next_deadline(self) -> float | None:
        """When the adapter must call `handle(Tick(), now)` next (None: only on new input)."""
        times = [d for t in self._events.values() if (d := self._due(t)) is not None]
        if self._resync_at is not None:
            times.append(self._resync_at)
        return min(times, default=None)

    def wants_resync(self, now: float) -> bool:
        """Whether the adapter should re-read every record now (and reset the resync timer)."""
        if self.resync_s is None:
            return False
        if self._resync_at is None or now >= self._resync_at:
            self._resync_at = now + self.resync_s
            return True
        return False

    # -- input --------------------------------------------------------------------------------

    def handle(self, event: Input, now: float) -> list[Action]:
        """Take one input at epoch time `now`; return what to do."""
        if isinstance(event, RecordChanged):
            return self._record(event.record, now)
        if isinstance(event, Tick):
            out: list[Action] = []
            for t in self._events.values():
                out += self._schedule(t, now)
            return out
        found = self._events.get(event.event_id)
        if found is None:
            raise SupervisorError(f"no supervised event {event.event_id!r}")
        t = found
        if isinstance(event, MediaFailed):
            message = f"pipeline {event.pipeline} failed: {event.message}"
            if t.media_error == message:
                return []
            t.media_error = message
            return [ReportError(t.record.id, message)]
        if isinstance(event, MediaStarted):
            if t.media_error is None:
                return []
            t.media_error = None
            return [ReportError(t.record.id, t.error)]
        return self._preflight_done(t, event, now)

    def _record(self, record: EventRecord, now: float) -> list[Action]:
        t = self._events.get(record.id)
        if t is None:
            t = self._events[record.id] = _Tracked(record)
        elif record.version < t.record.version:
            return []  # an older read than one already seen (separate processes)
        t.record = record
        return self._converge(t) + self._schedule(t, now)

    def _converge(self, t: _Tracked) -> list[Action]:
        rec = t.record
        out: list[Action] = []
        if rec.status in _VISIBLE:
            phase, visibility = _VISIBLE[rec.status]
            if t.phase is MediaPhase.IDLE:
                out.append(StartMedia(rec.id, rec.media))
                t.dvr_window_s = rec.media.dvr_window_s
            if t.phase is not phase:
                out.append(SetVisibility(rec.id, visibility))
                t.phase = phase
        elif rec.status is S.ENDED and t.phase is not MediaPhase.ENDED:
            out.append(EndMedia(rec.id, rec.media))
            t.phase = MediaPhase.ENDED
            t.preflight_running = False
        elif rec.status is S.ARCHIVED and t.phase is not MediaPhase.ARCHIVED:
            out.append(ArchiveMedia(rec.id))
            t.phase = MediaPhase.ARCHIVED
        if rec.status is not S.REHEARSAL and t.error is not None:
            t.error = None  # a held go-live no longer applies
            out.append(ReportError(rec.id, t.media_error))
        running = t.phase in (MediaPhase.REHEARSAL, MediaPhase.LIVE, MediaPhase.PAUSED)
        if running or t.phase is MediaPhase.ENDED:
            # Degrading protects a running event; after the end nothing competes with the
            # archive any more, whatever flags the record still carries.
            want = rec.degraded if running else frozenset[Feature]()
            if want != t.degraded:
                out.append(SetDegraded(rec.id, want))
                t.degraded = want
        if rec.pipeline_mode != t.pipeline_mode and running:
            out.append(SetPipelineMode(rec.id, rec.pipeline_mode))
            t.pipeline_mode = rec.pipeline_mode
        if running and t.dvr_window_s is not None and rec.media.dvr_window_s != t.dvr_window_s:
            out.append(SetDvrWindow(rec.id, rec.media.dvr_window_s))
            t.dvr_window_s = rec.media.dvr_window_s
        return out

    def _due(self, t: _Tracked) -> float | None:
        rec = t.record
        if rec.starts_at is None:
            return None
        if rec.status is S.SCHEDULED:
            return max(rec.starts_at - rec.rehearsal_lead_s, t.retry_at)
        if rec.status is S.REHEARSAL and self.auto_go_live and not t.preflight_running:
            return max(rec.starts_at, t.retry_at)
        return None

    def _schedule(self, t: _Tracked, now: float) -> list[Action]:
        due = self._due(t)
        if due is None or now < due:
            return []
        rec = t.record
        t.retry_at = now + self.retry_s
        if rec.status is S.SCHEDULED:
            return [RequestTransition(rec.id, S.REHEARSAL, "rehearsal lead time reached")]
        t.preflight_running = True
        return [RunPreflight(rec.id)]

    def _preflight_done(self, t: _Tracked, done: PreflightDone, now: float) -> list[Action]:
        t.preflight_running = False
        if t.record.status is not S.REHEARSAL:
            return []
        t.retry_at = now + self.retry_s
        if done.passed:
            out: list[Action] = []
            if t.error is not None:
                t.error = None
                out.append(ReportError(t.record.id, t.media_error))
            out.append(RequestTransition(t.record.id, S.LIVE, "scheduled start; preflight passed"))
            return out
        message = "scheduled go-live held: preflight failing: " + ", ".join(done.failing)
        if message == t.error:
            return []
        t.error = message
        return [ReportError(t.record.id, message)]
