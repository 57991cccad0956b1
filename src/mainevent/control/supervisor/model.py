"""Values of the event supervisor: what it is told (records, media reports, preflight results)
and what it asks the media plane and the control plane to do (actions).

The control plane never imports the media plane: these are plain values, and the adapter in
`mainevent.commands.supervised` translates the actions into media operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mainevent.control.lifecycle import EventStatus

__all__ = [
    "Action",
    "ArchiveMedia",
    "EndMedia",
    "EventRecord",
    "Feature",
    "Input",
    "MediaFailed",
    "MediaSpec",
    "MediaStarted",
    "PreflightDone",
    "RecordChanged",
    "ReportError",
    "RequestTransition",
    "RunPreflight",
    "SetDegraded",
    "SetDvrWindow",
    "SetPipelineMode",
    "SetVisibility",
    "StartMedia",
    "Tick",
    "Visibility",
]


class Feature(StrEnum):
    """An optional feature operators may switch off for an event (`degrade`) before playback
    suffers (the names of the API's `degraded` list)."""

    DVR = "dvr"
    """Off: the origin refuses everything behind the live edge (503 + Retry-After); the live
    playlist plays on and the archive keeps recording."""
    TELEMETRY_DETAIL = "telemetry_detail"
    """Off: the collector keeps the aggregates but no per-session detail."""


class Visibility(StrEnum):
    """Who sees an event's media."""

    REHEARSAL = "rehearsal"
    """Only on the rehearsal path (a capability URL operators get); `/live/<event>/` is 404."""
    LIVE = "live"
    """On `/live/<event>/` (behind playback tokens where the origin requires them)."""
    PAUSED = "paused"
    """On `/live/<event>/`, every new segment the slate; the pipelines keep running."""


@dataclass(frozen=True, slots=True)
class RungSpec:
    """One video rung of the event's ladder."""

    id: str
    width: int
    height: int
    bitrate_kbps: int


@dataclass(frozen=True, slots=True)
class MediaSpec:
    """What the media plane needs to run an event: its ladder, timing, ingest credentials/ports."""

    ladder: tuple[RungSpec, ...]
    segment_duration_ms: int
    latency_mode: str
    protocol: str
    stream_key: str
    passphrase: str | None = None
    port: int = 0
    """Primary ingest port (0 = the media plane picks one and keeps it across restarts)."""
    backup_port: int = 0
    dvr_window_s: int = 0
    """Seconds viewers may seek back (0 = the live window only); changes apply while live."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """The control plane's record of an event, as the supervisor needs it (times: epoch s)."""

    id: str
    status: EventStatus
    version: int
    media: MediaSpec
    starts_at: float | None = None
    ends_at: float | None = None
    rehearsal_lead_s: float = 1800.0
    degraded: frozenset[Feature] = field(default_factory=frozenset)
    pipeline_mode: str = "auto"
    """`auto`, or the pipeline an operator forced (`primary` / `backup`)."""


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordChanged:
    """The record as stored now (created, changed, moved, or read at start-up)."""

    record: EventRecord


@dataclass(frozen=True, slots=True)
class MediaStarted:
    """Every pipeline of the event is producing media."""

    event_id: str


@dataclass(frozen=True, slots=True)
class MediaFailed:
    """A pipeline of the event could not start (or stopped producing)."""

    event_id: str
    pipeline: str
    message: str


@dataclass(frozen=True, slots=True)
class PreflightDone:
    """An automatic preflight (scheduled go-live) finished."""

    event_id: str
    passed: bool
    failing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Tick:
    """The deadline the adapter armed has come."""


Input = RecordChanged | MediaStarted | MediaFailed | PreflightDone | Tick


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartMedia:
    """Open the event's ingest listeners and start its pipelines (resuming its stored media)."""

    event_id: str
    spec: MediaSpec


@dataclass(frozen=True, slots=True)
class SetVisibility:
    """Publish the event's media to rehearsal, live, or paused (slate)."""

    event_id: str
    visibility: Visibility


@dataclass(frozen=True, slots=True)
class EndMedia:
    """ENDLIST on every playlist, pipelines stopped, ingest closed (stored media served as VOD)."""

    event_id: str
    spec: MediaSpec


@dataclass(frozen=True, slots=True)
class ArchiveMedia:
    """The event is archived: nothing runs for it; its stored media stays on disk."""

    event_id: str


@dataclass(frozen=True, slots=True)
class SetDegraded:
    """The optional features switched off for the event now (empty: every one back on)."""

    event_id: str
    features: frozenset[Feature]


@dataclass(frozen=True, slots=True)
class SetDvrWindow:
    """The record's DVR window changed while the event's media runs: apply it live."""

    event_id: str
    window_s: int


@dataclass(frozen=True, slots=True)
class SetPipelineMode:
    """Publish the forced pipeline's segments (`primary` / `backup`) or let health decide."""

    event_id: str
    mode: str


@dataclass(frozen=True, slots=True)
class RequestTransition:
    """The schedule says the record should move (audited as the supervisor's action)."""

    event_id: str
    to: EventStatus
    reason: str


@dataclass(frozen=True, slots=True)
class RunPreflight:
    """Run the preflight checks; answer with `PreflightDone`."""

    event_id: str


@dataclass(frozen=True, slots=True)
class ReportError:
    """Something the operator must see on the event (None clears it)."""

    event_id: str
    message: str | None


Action = (
    StartMedia
    | SetVisibility
    | EndMedia
    | ArchiveMedia
    | SetDegraded
    | SetDvrWindow
    | SetPipelineMode
    | RequestTransition
    | RunPreflight
    | ReportError
)
