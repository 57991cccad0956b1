"""The telemetry contract: the values steering, the ops console and the simulator build on.

Keep these stable. :class:`QoePoint` is what the query API returns per step and what
:meth:`QoeAggregate.figures` computes; :class:`QoeAggregate` is the mergeable state behind it
(counters plus DDSketches), so windows from several collectors or 1 s windows of one collector
merge into 10 s / 1 min windows without error beyond the sketch's relative-accuracy bound.
Metric definitions follow CTA-2066 (SPEC.md §6). Times are epoch seconds unless a name says ms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from mainevent.control.telemetry.sketch import Sketch

__all__ = [
    "DIMENSIONS",
    "AlertEvent",
    "AlertState",
    "Dims",
    "QoeAggregate",
    "QoePoint",
    "QoeSeries",
    "SessionView",
]

DIMENSIONS = ("event", "region", "cdn", "isp", "device")
"""The dimensions every window is keyed by, in this order (the ``by=`` values of the query API)."""

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, order=True)
class Dims:
    """Where a viewer or request is: one key of the per-second aggregation."""

    event: str
    """Event id (the ``/live/<event>/`` path segment, CMCD ``cid``)."""
    region: str = UNKNOWN
    """Region from the CIDR table or a trusted edge's region header."""
    cdn: str = UNKNOWN
    """CDN / edge id (``cdn-a``...), from the edge's access record or CMCD ``cdn``/the media URL."""
    isp: str = UNKNOWN
    """Network operator from the CIDR table."""
    device: str = UNKNOWN
    """Device class from the user agent: desktop, mobile, tv, headless."""

    def project(self, by: Iterable[str]) -> tuple[str, ...]:
        """The values of the dimensions in ``by`` (for grouping)."""
        return tuple(getattr(self, d) for d in by)


@dataclass(slots=True)
class QoeAggregate:
    """Mergeable per-window state of one :class:`Dims` key (sums, counts and sketches)."""

    session_seconds: float = 0.0
    """Σ over 1 s windows of sessions alive then; ÷ window length = concurrent sessions."""
    play_attempts: float = 0.0
    """Sessions that began (first report) in the window."""
    startup: Sketch = field(default_factory=Sketch)
    """Video start time (play request → first frame), ms, one value per started session."""
    exits_before_start: float = 0.0
    """Attempts ended by the viewer (or gone silent) before the first frame, no fatal error."""
    start_failures: float = 0.0
    """Attempts ended by a fatal error before the first frame."""
    playback_failures: float = 0.0
    """Views ended by a fatal error after the first frame."""
    played_ms: float = 0.0
    """Time spent playing (CMCD ``sta=p``) after start-up."""
    stalled_ms: float = 0.0
    """Time spent rebuffering (``sta=r``) after start-up."""
    rebuffers: float = 0.0
    """Transitions into rebuffering after start-up."""
    bits_played: float = 0.0
    """Σ bitrate × played time (kbit), for the average bitrate."""
    latency: Sketch = field(default_factory=Sketch)
    """Live latency samples (wall clock − PDT of the playhead), ms, weighted by 1/sample rate."""
    requests: float = 0.0
    """CDN responses (edge access records) in the window."""
    status: dict[int, float] = field(default_factory=dict)
    """CDN responses by HTTP status."""
    ttfb: Sketch = field(default_factory=Sketch)
    """CDN time to first byte, ms, per response."""
    cache_hits: float = 0.0
    """Responses the edge answered from its cache (HIT, STALE)."""
    cache_lookups: float = 0.0
    """Responses the edge looked up in its cache (HIT, STALE, MISS, EXPIRED, COLLAPSED)."""
    origin_fetches: float = 0.0
    """Fetches the shield sent to the origin."""
    player_errors: float = 0.0
    """CMCD error events (``e=e``) reported by players."""
    heartbeats_offered: float = 0.0
    """Heartbeat/periodic reports that arrived."""
    heartbeats_kept: float = 0.0
    """Of those, the ones aggregated (the rest were shed under pressure)."""

    def merge(self, other: QoeAggregate) -> None:
        """Add ``other`` into this aggregate (exact for counters, sketch-bounded for quantiles)."""
        for f in fields(self):
            mine = getattr(self, f.name)
            theirs = getattr(other, f.name)
            if isinstance(mine, Sketch):
                mine.merge(theirs)
            elif isinstance(mine, dict):
                for k, v in theirs.items():
                    mine[k] = mine.get(k, 0.0) + v
            else:
                setattr(self, f.name, mine + theirs)

    def settle(self) -> None:
        """Bin the values the sketches buffered (done once a window closes, so readers in
        other threads never race the buffer)."""
        self.startup.settle()
        self.latency.settle()
        self.ttfb.settle()

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (sketches as their bins); :meth:`from_json` inverts it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Sketch):
                if v.count:
                    out[f.name] = v.to_json()
            elif isinstance(v, dict):
                if v:
                    out[f.name] = {str(k): n for k, n in v.items()}
            elif v:
                out[f.name] = v
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QoeAggregate:
        agg = cls()
        for f in fields(cls):
            if f.name not in data:
                continue
            v = data[f.name]
            if f.name in ("startup", "latency", "ttfb"):
                setattr(agg, f.name, Sketch.from_json(v))
            elif f.name == "status":
                agg.status = {int(k): float(n) for k, n in v.items()}
            else:
                setattr(agg, f.name, float(v))
        return agg

    def figures(self, start: float, step_s: float) -> QoePoint:
        """The CTA-2066 figures of this aggregate over a window of ``step_s`` seconds."""
        watched = self.played_ms + self.stalled_ms
        errors = sum(n for s, n in self.status.items() if s >= 400)
        return QoePoint(
            start=start,
            step_s=step_s,
            concurrent_sessions=self.session_seconds / step_s if step_s else 0.0,
            play_attempts=self.play_attempts,
            video_start_time_p50_ms=self.startup.quantile(0.5),
            video_start_time_p95_ms=self.startup.quantile(0.95),
            started_sessions=self.startup.count,
            exits_before_video_start=self.exits_before_start,
            video_start_failures=self.start_failures,
            video_start_failure_ratio=_ratio(self.start_failures, self.play_attempts),
            video_playback_failures=self.playback_failures,
            rebuffer_ratio=_ratio(self.stalled_ms, watched),
            rebuffer_count_per_hour=_ratio(self.rebuffers, watched / 3_600_000),
            played_s=self.played_ms / 1000,
            average_bitrate_kbps=_ratio(self.bits_played, self.played_ms),
            live_latency_p50_ms=self.latency.quantile(0.5),
            live_latency_p95_ms=self.latency.quantile(0.95),
            requests=self.requests,
            error_rate=_ratio(errors, self.requests),
            errors_by_status={s: n for s, n in sorted(self.status.items()) if s >= 400},
            error_rate_by_status={
                s: n / self.requests for s, n in sorted(self.status.items()) if s >= 400
            },
            cdn_ttfb_p50_ms=self.ttfb.quantile(0.5),
            cdn_ttfb_p95_ms=self.ttfb.quantile(0.95),
            cache_hit_ratio=_ratio(self.cache_hits, self.cache_lookups),
            origin_fetches=self.origin_fetches,
            player_errors=self.player_errors,
            heartbeat_sample_rate=self.heartbeats_kept / self.heartbeats_offered
            if self.heartbeats_offered
            else 1.0,
        )


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@dataclass(frozen=True, slots=True)
class QoePoint:
    """The QoE figures of one series over one step (what ``GET /v1/telemetry/qoe`` returns)."""

    start: float
    """Window start, epoch seconds."""
    step_s: float
    """Window length in seconds."""
    concurrent_sessions: float
    """Average number of sessions alive during the window."""
    play_attempts: float
    """Sessions that began in the window."""
    video_start_time_p50_ms: float | None
    """Median video start time of sessions that started in the window."""
    video_start_time_p95_ms: float | None
    """95th percentile video start time."""
    started_sessions: float
    """Sessions whose first frame was shown in the window."""
    exits_before_video_start: float
    """EBVS: attempts abandoned (or gone silent) before the first frame, no fatal error."""
    video_start_failures: float
    """VSF: attempts ended by a fatal error before the first frame."""
    video_start_failure_ratio: float | None
    """VSF ÷ play attempts."""
    video_playback_failures: float
    """VPF: views ended by a fatal error after start."""
    rebuffer_ratio: float | None
    """Stalled ÷ (played + stalled) time, start-up excluded."""
    rebuffer_count_per_hour: float | None
    """Rebuffering events per hour watched."""
    played_s: float
    """Seconds of playback (not stalled) in the window."""
    average_bitrate_kbps: float | None
    """Bits actually played ÷ played time."""
    live_latency_p50_ms: float | None
    """Median live latency (wall clock − PDT of the playhead)."""
    live_latency_p95_ms: float | None
    """95th percentile live latency."""
    requests: float
    """CDN responses counted from edge access records."""
    error_rate: float | None
    """Share of CDN responses with status ≥ 400."""
    errors_by_status: dict[int, float]
    """CDN error responses by HTTP status."""
    error_rate_by_status: dict[int, float]
    """Share of CDN responses with each error status (≥ 400): the error rate by HTTP status."""
    cdn_ttfb_p50_ms: float | None
    """Median CDN time to first byte."""
    cdn_ttfb_p95_ms: float | None
    """95th percentile CDN time to first byte."""
    cache_hit_ratio: float | None
    """Cache hits ÷ cache lookups at the edges."""
    origin_fetches: float
    """Fetches the shield sent to the origin."""
    player_errors: float
    """Error events reported by players (fatal or not)."""
    heartbeat_sample_rate: float
    """Share of heartbeats aggregated (1.0 = none shed); weights were already applied."""


@dataclass(frozen=True, slots=True)
class QoeSeries:
    """One group of a query: the values of the ``by`` dimensions and its points in time order."""

    labels: dict[str, str]
    """Dimension → value for the ``by`` dimensions of the query."""
    points: tuple[QoePoint, ...]
    """One point per step that had data."""


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the collector knows of one playback session now."""

    sid: str
    """CMCD session id (``sid``)."""
    dims: Dims
    """Where the session was last seen."""
    first_report_ms: float
    """Client time of the play request (its first report), epoch ms."""
    video_start_time_ms: float | None
    """Start-up time, once the first frame was shown."""
    state: str | None
    """Last CMCD player state (``sta``)."""
    bitrate_kbps: float | None
    """Bitrate at the playhead."""
    live_latency_ms: float | None
    """Median of the last five live-latency samples (one response record is noisy)."""
    failed: bool
    """Ended by a fatal error or by the viewer."""
    start_known_at: float | None
    """Collector time (epoch s) when the start-up became known: from then the API shows it."""
    last_seen: float
    """Collector time of the last report, epoch seconds."""


class AlertState(StrEnum):
    """Whether an alert began or ended."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert rule began or stopped matching for one series."""

    rule: str
    """Rule name from the configuration."""
    labels: dict[str, str]
    """The series (dimension → value) the rule matched."""
    state: AlertState
    """Firing (start) or resolved (end)."""
    at: float
    """Epoch seconds of the change."""
    value: float | None
    """The rule's metric at the change."""
