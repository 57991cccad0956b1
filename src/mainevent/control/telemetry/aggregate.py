"""Sans-IO QoE aggregation: reports and access records in, closed 1 s windows out.

``Aggregator.player(...)``, ``.access(...)`` and ``.shed(...)`` take inputs with ``now`` (epoch
seconds of arrival: windows are by arrival time, so client clock skew moves nothing between
windows); ``.tick(now)`` closes every window that ended and returns them; ``next_deadline()``
says when to call it next. Sessions follow CTA-2066: a play attempt starts at the first report
(the play request), start-up ends at the first ``sta=p``, played and stalled time integrate the
reported state between observations, start-up excluded.

Operators can switch telemetry detail off for an event (the ``degrade`` command, feature
``telemetry_detail``): its sessions keep only what the aggregates need (no latency history,
no start-up figure of their own) and ``session()`` says the detail is degraded.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from mainevent.common.telemetry import AccessRecord
from mainevent.control.telemetry.events import (
    EventTiming,
    PlayerReport,
    Priority,
    ReportKind,
    media_pdt_ms,
)
from mainevent.control.telemetry.model import UNKNOWN, Dims, QoeAggregate, SessionView

__all__ = ["Aggregator", "AggregatorStats", "ClosedWindow"]

_CACHE_LOOKUPS = frozenset({"HIT", "STALE", "MISS", "COLLAPSED", "EXPIRED"})
_CACHE_HITS = frozenset({"HIT", "STALE"})


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """One finished 1 s window of one series."""

    start: int
    """Epoch second the window began."""
    dims: Dims
    agg: QoeAggregate


@dataclass(frozen=True, slots=True)
class AggregatorStats:
    """A snapshot of the core's bounded state (what the collector exports as gauges)."""

    sessions: int
    open_series: int
    evicted_sessions: int
    overflow_series: int


@dataclass(slots=True)
class _Session:
    dims: Dims
    first_ms: float
    last_seen: float
    last_obs_ms: float | None = None
    last_sta: str | None = None
    started: bool = False
    failed: bool = False
    attempt_counted: bool = False
    bitrate_kbps: float | None = None
    startup_ms: float | None = None
    start_known_at: float | None = None
    media_obs_ms: float | None = None
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=5))


@dataclass(slots=True)
class _Window:
    start: int
    series: dict[Dims, QoeAggregate] = field(default_factory=dict)


class Aggregator:
    """Per-second, per-:class:`Dims` QoE aggregation with a bounded session table."""

    def __init__(
        self,
        events: Mapping[str, EventTiming],
        *,
        session_timeout_s: float = 10.0,
        max_sessions: int = 200_000,
        max_series: int = 20_000,
    ) -> None:
        self.events = dict(events)
        self.session_timeout_s = session_timeout_s
        self.max_sessions = max_sessions
        self.max_series = max_series
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._window: _Window | None = None
        self._closed: list[_Window] = []
        self._evicted = 0
        self._overflow = 0
        self.detail_off: set[str] = set()
        """Events whose per-session detail is switched off (``set_detail``)."""

    def set_detail(self, event: str, on: bool) -> None:
        """Keep per-session detail for ``event`` (True) or only what the aggregates need."""
        if on:
            self.detail_off.discard(event)
            return
        self.detail_off.add(event)
        for s in self._sessions.values():
            if s.dims.event == event:
                s.latencies.clear()
                s.startup_ms = s.start_known_at = None

    # --- inputs ---------------------------------------------------------------------------

    def _agg(self, dims: Dims, now: float) -> QoeAggregate:
        second = int(now)
        w = self._window
        if w is None or second > w.start:
            # A report for a later second closes the open window (tick() returns it).
            if w is not None:
                self._closed.append(w)
            w = self._window = _Window(second)
        series = w.series  # an earlier second (a clock step back) joins the open window
        agg = series.get(dims)
        if agg is None:
            if len(series) >= self.max_series:
                self._overflow += 1
                dims = Dims(dims.event, "other", dims.cdn, "other", "other")
                agg = series.get(dims)
            if agg is None:
                agg = series[dims] = QoeAggregate()
        return agg

    def player(self, dims: Dims, r: PlayerReport, weight: float, now: float) -> None:
        """One accepted report; ``weight`` is 1/sample rate for a sampled heartbeat, else 1."""
        s = self._sessions.get(r.sid)
        if s is None:
            s = _Session(dims, r.ts_ms, now)
            self._sessions[r.sid] = s
            if len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
                self._evicted += 1
        else:
            self._sessions.move_to_end(r.sid)
            if dims.cdn == UNKNOWN and s.dims.cdn != UNKNOWN:
                dims = replace(dims, cdn=s.dims.cdn)  # a heartbeat names no URL: same CDN
            s.dims = dims
            s.last_seen = now
        agg = self._agg(dims, now)
        if not s.attempt_counted and (dims.cdn != UNKNOWN or r.kind is ReportKind.ERROR):
            # hls.js's first report (the play request) names no URL: the attempt is counted
            # under the CDN of the session's first media response (or where it fails/ends).
            s.attempt_counted = True
            agg.play_attempts += 1
        if r.priority is Priority.SAMPLE:
            agg.heartbeats_offered += 1
            agg.heartbeats_kept += 1
        if not s.started and r.ts_ms < s.first_ms:
            s.first_ms = r.ts_ms  # reports of one batch may arrive out of order
        if r.bitrate_kbps is not None:
            s.bitrate_kbps = r.bitrate_kbps
        elif (
            s.bitrate_kbps is None
            and r.object_bitrate_kbps is not None
            and r.object_type in ("v", "av")
        ):
            s.bitrate_kbps = r.object_bitrate_kbps
        obs = r.observed_ms
        if s.last_obs_ms is not None and obs > s.last_obs_ms and s.started:
            dt = obs - s.last_obs_ms
            if s.last_sta == "p":
                agg.played_ms += dt
                if s.bitrate_kbps is not None:
                    agg.bits_played += dt * s.bitrate_kbps
            elif s.last_sta == "r":
                agg.stalled_ms += dt
        sta = r.sta
        if sta is not None and (s.last_obs_ms is None or obs >= s.last_obs_ms):
            if not s.started and sta == "p" and not s.failed:
                s.started = True
                if r.start_delay_ms is not None:
                    startup = r.start_delay_ms
                elif r.kind is ReportKind.PLAY_STATE or s.last_obs_ms is None:
                    startup = obs - s.first_ms
                else:
                    # The first frame came between the last non-playing observation and this
                    # one: take the middle of that bracket.
                    startup = (s.last_obs_ms + obs) / 2 - s.first_ms
                agg.startup.add(startup)
                if dims.event not in self.detail_off:
                    s.startup_ms = startup
                    s.start_known_at = now
            elif s.started and sta == "r" and s.last_sta != "r":
                agg.rebuffers += 1
            s.last_sta = sta
            s.last_obs_ms = obs
        if r.kind is ReportKind.ERROR:
            agg.player_errors += 1
        if (r.kind is ReportKind.ERROR or sta == "f") and not s.failed:
            s.failed = True
            if s.started:
                agg.playback_failures += 1
            else:
                agg.start_failures += 1
        if sta in ("e", "q", "f") and not s.attempt_counted:
            s.attempt_counted = True
            agg.play_attempts += 1
        if sta in ("e", "q") and not s.started and not s.failed:
            s.failed = True  # ended: never again an EBVS candidate
            agg.exits_before_start += 1
        if s.started and s.last_sta == "p":
            self._latency(s, r, agg, weight)

    def _latency(self, s: _Session, r: PlayerReport, agg: QoeAggregate, weight: float) -> None:
        detail = s.dims.event not in self.detail_off
        if r.latency_ms is not None:
            agg.latency.add(r.latency_ms, weight)
            if detail:
                s.latencies.append(r.latency_ms)
            return
        # hls.js sends no `ltc`. Its response records name the segment or part fetched (epoch-
        # locked, so its PDT is known) and carry `bl`, the buffer ahead of the playhead as of
        # the last append, i.e. just after the previous media response ended, when the buffer
        # ended where this object begins: latency = that moment − (PDT − bl).
        if (
            r.kind is ReportKind.RESPONSE_RECEIVED
            and r.url is not None
            and r.object_type in (None, "v", "av", "a")
            and (r.status is None or r.status < 300)
        ):
            timing = self.events.get(s.dims.event)
            pdt = media_pdt_ms(urlsplit(r.url).path, timing) if timing is not None else None
            if pdt is None:
                return
            appended_at, s.media_obs_ms = s.media_obs_ms, r.observed_ms
            if appended_at is not None and r.buffer_ms is not None:
                latency = appended_at - pdt + r.buffer_ms
                if detail:
                    s.latencies.append(latency)
                agg.latency.add(latency, weight)

    def shed(self, dims: Dims, now: float) -> None:
        """A heartbeat dropped under pressure: counted so the kept ones are re-weighted."""
        self._agg(dims, now).heartbeats_offered += 1

    def access(self, dims: Dims, rec: AccessRecord, now: float) -> None:
        """One edge or shield response."""
        agg = self._agg(dims, now)
        agg.requests += 1
        agg.status[rec.status] = agg.status.get(rec.status, 0.0) + 1
        agg.ttfb.add(rec.ttfb_ms)
        if rec.cache in _CACHE_LOOKUPS:
            agg.cache_lookups += 1
            if rec.cache in _CACHE_HITS:
                agg.cache_hits += 1
        if rec.cdn == "shield" and rec.cache == "MISS":
            agg.origin_fetches += 1

    # --- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the open window ends (epoch seconds), or None with nothing open."""
        if self._window is None and not self._sessions:
            return None
        start = self._window.start if self._window is not None else None
        return None if start is None else start + 1.0

    def tick(self, now: float) -> list[ClosedWindow]:
        """Close every window that ended by ``now``; expire silent sessions."""
        second = int(now)
        if self._window is not None and self._window.start < second:
            self._closed.append(self._window)
            self._window = _Window(second)
        elif self._window is None and self._sessions:
            self._window = _Window(second)
        out: list[ClosedWindow] = []
        closed, self._closed = self._closed, []
        for w in closed:
            self._count_sessions(w)
            out.extend(ClosedWindow(w.start, d, a) for d, a in w.series.items())
        self._expire(now)
        return out

    def _count_sessions(self, w: _Window) -> None:
        end = w.start + 1
        for s in self._sessions.values():
            if s.failed or s.last_seen > end or end - s.last_seen > self.session_timeout_s:
                continue
            agg = w.series.get(s.dims)
            if agg is None:
                agg = w.series[s.dims] = QoeAggregate()
            agg.session_seconds += 1

    def _expire(self, now: float) -> None:
        while self._sessions:
            sid, s = next(iter(self._sessions.items()))
            if now - s.last_seen <= self.session_timeout_s:
                break
            del self._sessions[sid]
            if not s.attempt_counted:
                self._agg(s.dims, now).play_attempts += 1
            if not s.started and not s.failed:
                self._agg(s.dims, now).exits_before_start += 1

    def session(self, sid: str) -> SessionView | None:
        """A snapshot of one session (None once it ended and expired, or was never seen).
        Its event's detail switched off: start-up and latency are None (see `degraded`)."""
        s = self._sessions.get(sid)
        if s is None:
            return None
        return SessionView(
            sid,
            s.dims,
            s.first_ms,
            s.startup_ms,
            s.last_sta,
            s.bitrate_kbps,
            statistics.median(s.latencies) if s.latencies else None,
            s.failed,
            s.start_known_at,
            s.last_seen,
        )

    def stats(self) -> AggregatorStats:
        return AggregatorStats(
            sessions=len(self._sessions),
            open_series=len(self._window.series) if self._window else 0,
            evicted_sessions=self._evicted,
            overflow_series=self._overflow,
        )
