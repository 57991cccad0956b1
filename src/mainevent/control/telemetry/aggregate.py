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
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mainevent.common.telemetry import AccessRecord
from mainevent.control.telemetry.events import (
    KEEP_STATES,
    EventTiming,
    PlayerReport,
    ReportKind,
    media_pdt_ms,
)
from mainevent.control.telemetry.model import UNKNOWN, Dims, QoeAggregate, SessionView

__all__ = ["Aggregator", "AggregatorStats", "ClosedWindow"]

_ENDED = frozenset({"e", "f", "q"})
"""Player states that end an attempt (ended, fatal error, quit)."""
_APPEND_MARGIN_MS = 250.0
"""Two media responses ending closer than this: the later one's ``bl`` cannot include the
earlier one (hls.js sets ``bl`` at each append, and an append follows its response's end)."""
_PDT_CACHE = 20_000
"""Media URLs whose PDT is remembered (every viewer of the live edge fetches the same ones)."""
_MEDIA_TYPES = frozenset({None, "v", "av", "a"})
"""CMCD object types (``ot``) whose response records carry the playhead's latency."""
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
    bl_ms: float | None = None
    """The last ``bl`` of a media response record, and when the append behind it happened."""
    bl_appended_at: float | None = None
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
        self._sessions: dict[str, _Session] = {}
        self._swept = float("-inf")
        """When `_expire` last scanned the session table."""
        self._window: _Window | None = None
        self._closed: list[_Window] = []
        self._evicted = 0
        self._overflow = 0
        self._pdt_cache: dict[str, tuple[EventTiming, float | None]] = {}
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

    def _open(self, now: float) -> dict[Dims, QoeAggregate]:
        """The series of the window ``now`` falls in (a later second closes the open one)."""
        second = int(now)
        w = self._window
        if w is None or second > w.start:
            # A report for a later second closes the open window (tick() returns it).
            if w is not None:
                self._close(w, second)
            w = self._window = _Window(second)
        return w.series  # an earlier second (a clock step back) joins the open window

    def _close(self, w: _Window, until: int) -> None:
        """Close ``w`` (and the empty seconds up to ``until``) with their concurrent sessions.

        Counted now, before the report that closes it touches any session: every session's
        last report is then the one before the window ended, so a session counts in each
        second it was active (CTA-2066), however soon it reports again. Counted at ``tick()``
        instead, sessions that had already reported in the next second were missing.
        """
        self._count_sessions(w)
        self._closed.append(w)
        # Seconds nobody reported in (tick() ran late) still had live sessions: a window each,
        # as far as a silent session stays alive (none counts after its timeout).
        second = w.start + 1
        last = min(until, second + int(self.session_timeout_s) + 1)
        while second < last and self._sessions:
            gap = _Window(second)
            self._count_sessions(gap)
            if gap.series:
                self._closed.append(gap)
            second += 1

    def _series(self, series: dict[Dims, QoeAggregate], dims: Dims) -> QoeAggregate:
        agg = series.get(dims)
        if agg is None:
            if len(series) >= self.max_series:
                self._overflow += 1
                dims = Dims(dims.event, "other", dims.cdn, "other", "other")
                agg = series.get(dims)
            if agg is None:
                agg = series[dims] = QoeAggregate()
        return agg

    def _agg(self, dims: Dims, now: float) -> QoeAggregate:
        return self._series(self._open(now), dims)

    def player(self, dims: Dims, r: PlayerReport, weight: float, now: float) -> None:
        """One accepted report; ``weight`` is 1/sample rate for a sampled heartbeat, else 1."""
        self.players((dims,), (r,), (weight,), now)

    def players(
        self,
        dims_of: Sequence[Dims],
        reports: Sequence[PlayerReport],
        weights: Sequence[float],
        now: float,
    ) -> None:
        """Accepted reports that arrived together at ``now`` (one POST), each with its
        dimensions and weight (1/sample rate for a sampled heartbeat, else 1).

        The hot path of the collector: one loop, no object per report; the window is found
        once, the series per distinct dimensions object, sketches only buffer the values.
        """
        sessions = self._sessions
        detail_off = self.detail_off
        series = self._open(now)
        last_dims: Dims | None = None
        agg = QoeAggregate()  # replaced at the first report (last_dims is None)
        inherited: dict[tuple[int, str], Dims] = {}
        # Enum members and module constants as locals: the loop runs once per report.
        error, play_state = ReportKind.ERROR, ReportKind.PLAY_STATE
        bitrate_change, response = ReportKind.BITRATE_CHANGE, ReportKind.RESPONSE_RECEIVED
        keep_states, ended, unknown = KEEP_STATES, _ENDED, UNKNOWN
        for dims, r, weight in zip(dims_of, reports, weights, strict=True):
            sid = r.sid
            s = sessions.get(sid)
            if s is None:
                if len(sessions) >= self.max_sessions:
                    self._evict(now)
                s = sessions[sid] = _Session(dims, r.ts_ms, now)
            else:
                if dims.cdn == unknown:
                    cdn = s.dims.cdn
                    if cdn != unknown:
                        # A heartbeat names no URL: the session's CDN (one Dims per batch).
                        key = (id(dims), cdn)
                        d = inherited.get(key)
                        if d is None:
                            d = inherited[key] = Dims(
                                dims.event, dims.region, cdn, dims.isp, dims.device
                            )
                        dims = d
                s.dims = dims
                s.last_seen = now
            if dims is not last_dims:
                agg = self._series(series, dims)
                last_dims = dims
            kind = r.kind
            if not s.attempt_counted and (dims.cdn != unknown or kind is error):
                # hls.js's first report (the play request) names no URL: the attempt is counted
                # under the CDN of the session's first media response (or where it fails/ends).
                s.attempt_counted = True
                agg.play_attempts += 1
            sta = r.sta
            if not (
                kind is error
                or kind is play_state
                or r.sn == 0
                or sta in keep_states
                or r.error is not None
            ):  # Priority.SAMPLE (see PlayerReport.priority)
                agg.heartbeats_offered += 1
                agg.heartbeats_kept += 1
            ts = r.ts_ms
            if not s.started and ts < s.first_ms:
                s.first_ms = ts  # reports of one batch may arrive out of order
            bitrate = r.bitrate_kbps
            if bitrate is None and kind is bitrate_change:
                bitrate = r.object_bitrate_kbps
            if bitrate is not None:
                s.bitrate_kbps = bitrate
            elif (
                s.bitrate_kbps is None
                and r.object_bitrate_kbps is not None
                and r.object_type in ("v", "av")
            ):
                s.bitrate_kbps = r.object_bitrate_kbps
            obs = ts
            if kind is response and r.ttlb_ms is not None:
                obs = ts + r.ttlb_ms  # written when the response ended (ts = request start)
            last_obs = s.last_obs_ms
            if last_obs is not None and obs > last_obs and s.started:
                dt = obs - last_obs
                if s.last_sta == "p":
                    agg.played_ms += dt
                    if s.bitrate_kbps is not None:
                        agg.bits_played += dt * s.bitrate_kbps
                elif s.last_sta == "r":
                    agg.stalled_ms += dt
            if sta is not None and (last_obs is None or obs >= last_obs):
                if not s.started and sta == "p" and not s.failed:
                    s.started = True
                    if r.start_delay_ms is not None:
                        startup = r.start_delay_ms
                    elif kind is play_state or last_obs is None:
                        startup = obs - s.first_ms
                    else:
                        # The first frame came between the last non-playing observation and
                        # this one: take the middle of that bracket.
                        startup = (last_obs + obs) / 2 - s.first_ms
                    agg.startup.add(startup)
                    if dims.event not in detail_off:
                        s.startup_ms = startup
                        s.start_known_at = now
                elif s.started and sta == "r" and s.last_sta != "r":
                    agg.rebuffers += 1
                s.last_sta = sta
                s.last_obs_ms = obs
            if kind is error:
                agg.player_errors += 1
                if not s.failed:
                    s.failed = True
                    if s.started:
                        agg.playback_failures += 1
                    else:
                        agg.start_failures += 1
            if sta in ended:
                if sta == "f" and not s.failed:
                    s.failed = True
                    if s.started:
                        agg.playback_failures += 1
                    else:
                        agg.start_failures += 1
                if not s.attempt_counted:
                    s.attempt_counted = True
                    agg.play_attempts += 1
                if sta != "f" and not s.started and not s.failed:
                    s.failed = True  # ended: never again an EBVS candidate
                    agg.exits_before_start += 1
            if s.started and s.last_sta == "p":
                if r.latency_ms is not None:
                    agg.latency.add(r.latency_ms, weight)
                    if dims.event not in detail_off:
                        s.latencies.append(r.latency_ms)
                elif kind is response and r.url is not None:
                    self._latency(s, r, agg, weight, obs)

    def _pdt(self, url: str, timing: EventTiming) -> float | None:
        hit = self._pdt_cache.get(url)
        if hit is not None and hit[0] is timing:
            return hit[1]
        pdt = media_pdt_ms(url, timing)
        if len(self._pdt_cache) >= _PDT_CACHE:
            self._pdt_cache.clear()  # cheap bound; the live edge's URLs refill it at once
        self._pdt_cache[url] = (timing, pdt)
        return pdt

    def _latency(
        self, s: _Session, r: PlayerReport, agg: QoeAggregate, weight: float, obs: float
    ) -> None:
        # hls.js sends no `ltc`. Its response records name the segment or part fetched (epoch-
        # locked, so its PDT is known) and carry `bl`, the buffer ahead of the playhead (the
        # shorter of audio and video) as of the last append, i.e. just after the previous media
        # response ended, when the buffer ended where this object begins: latency = that
        # moment − (PDT − bl). Audio and video of one index are fetched in parallel, so the
        # previous response may have ended an instant before, not yet appended (see below).
        if r.object_type not in _MEDIA_TYPES or (r.status is not None and r.status >= 300):
            return
        url = r.url
        if url is None:
            return
        timing = self.events.get(s.dims.event)
        if timing is None:
            return
        hit = self._pdt_cache.get(url)  # `_pdt`'s usual case, inlined (once per media record)
        pdt = hit[1] if hit is not None and hit[0] is timing else self._pdt(url, timing)
        if pdt is None:
            return
        appended_at, s.media_obs_ms = s.media_obs_ms, obs
        bl = r.buffer_ms
        if bl is None:
            return
        if (
            bl == s.bl_ms
            and appended_at is not None
            and obs - appended_at < _APPEND_MARGIN_MS
            and s.bl_appended_at is not None
        ):
            # The previous response (the other track's object, fetched in parallel) ended
            # just before this one and `bl` has not moved: it was not appended yet, so `bl` is
            # still the one of the append before it; pair `bl` with that append's time.
            appended_at = s.bl_appended_at
        else:
            s.bl_ms, s.bl_appended_at = bl, appended_at
        if appended_at is not None:
            latency = appended_at - pdt + bl
            if s.dims.event not in self.detail_off:
                s.latencies.append(latency)
            agg.latency.add(latency, weight)

    def shed(self, dims: Dims, now: float, sid: str | None = None) -> None:
        """A heartbeat dropped under pressure: counted so the kept ones are re-weighted.

        With its ``sid``, it also says the session is alive: at 3x capacity a viewer's
        heartbeats can all be shed for longer than the session timeout, and the session then
        expired while playing (its next report a new attempt that never started: an extra
        play attempt, an exit before start, its played time lost)."""
        self._agg(dims, now).heartbeats_offered += 1
        if sid is not None:
            s = self._sessions.get(sid)
            if s is not None:
                s.last_seen = now

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
        """When ``tick`` is due next (epoch seconds), or None with nothing open: the end of the
        oldest window not yet handed out, which is already past when a report for a later
        second closed it (the timer must not wait for the end of the new one)."""
        if self._closed:
            return self._closed[0].start + 1.0
        if self._window is None and not self._sessions:
            return None
        start = self._window.start if self._window is not None else None
        return None if start is None else start + 1.0

    def tick(self, now: float) -> list[ClosedWindow]:
        """Close every window that ended by ``now``; expire silent sessions."""
        second = int(now)
        if self._window is not None and self._window.start < second:
            self._close(self._window, second)
            self._window = _Window(second)
        elif self._window is None and self._sessions:
            self._window = _Window(second)
        out: list[ClosedWindow] = []
        closed, self._closed = self._closed, []
        for w in closed:
            for d, a in w.series.items():
                a.settle()  # its sketches are read from other threads from now on
                out.append(ClosedWindow(w.start, d, a))
        self._expire(now)
        return out

    def open_windows(self) -> list[ClosedWindow]:
        """What the windows not yet closed hold so far, as if they closed now (copies: the
        core goes on adding to them), for a query that asks for the step in progress."""
        out: list[ClosedWindow] = []
        for w in [*self._closed, *([self._window] if self._window is not None else [])]:
            snap = _Window(w.start)
            for d, a in w.series.items():
                copy = snap.series[d] = QoeAggregate()
                copy.merge(a)
            if w is self._window:
                self._count_sessions(snap)  # closed ones were counted when they closed
            out.extend(ClosedWindow(snap.start, d, a) for d, a in snap.series.items())
        return out

    def _count_sessions(self, w: _Window) -> None:
        end = w.start + 1
        timeout = self.session_timeout_s
        # Counted per Dims object first (sessions of one batch share one): hashing a Dims
        # dataclass per session per window cost a fifth of a busy collector's time.
        alive: dict[int, tuple[Dims, list[int]]] = {}
        for s in self._sessions.values():
            seen = s.last_seen
            if s.failed or seen > end or end - seen > timeout:
                continue
            d = s.dims
            entry = alive.get(id(d))
            if entry is None:
                alive[id(d)] = (d, [1])  # holds d: its id is not reused meanwhile
            else:
                entry[1][0] += 1
        for d, (n,) in alive.values():
            agg = w.series.get(d)
            if agg is None:
                agg = w.series[d] = QoeAggregate()
            agg.session_seconds += n

    def _evict(self, now: float) -> None:
        """At the session cap: evict the least recently seen eighth of the sessions at once
        (one sort per cap/8 new sessions; a plain dict keeps no recency order, and keeping one
        cost a linked-list move per report), never one seen at ``now`` (the batch in hand)."""
        sessions = self._sessions
        n = max(1, len(sessions) // 8)
        cutoff = sorted(s.last_seen for s in sessions.values())[n - 1]
        gone = [sid for sid, s in sessions.items() if s.last_seen <= cutoff and s.last_seen < now]
        for sid in gone:
            del sessions[sid]
        self._evicted += len(gone)

    def _expire(self, now: float) -> None:
        """Sessions silent past the timeout end (a scan of the table, at most once a second)."""
        if now - self._swept < 1.0 and now >= self._swept:
            return
        self._swept = now
        timeout = self.session_timeout_s
        sessions = self._sessions
        for sid in [sid for sid, s in sessions.items() if now - s.last_seen > timeout]:
            s = sessions.pop(sid)
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
