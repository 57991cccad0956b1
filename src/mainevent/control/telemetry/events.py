"""Inputs of the aggregation core: normalised player reports, edge access records, timers.

The collector's adapters translate wire formats (CMCD v2 event bodies, CMCD v1/v2 query keys,
the edge access-record batches of :mod:`mainevent.common.telemetry`) into these values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from mainevent.control.telemetry.cmcd import CmcdValue, first_number

__all__ = [
    "EventTiming",
    "PlayerReport",
    "Priority",
    "ReportKind",
    "media_pdt_ms",
    "report_from_cmcd",
]


class ReportKind(StrEnum):
    """CMCD v2 event types (``e=``) the core distinguishes; others count as ``OTHER``."""

    TIME_INTERVAL = "t"
    PLAY_STATE = "ps"
    ERROR = "e"
    BITRATE_CHANGE = "bc"
    RESPONSE_RECEIVED = "rr"
    OTHER = "o"


class Priority(StrEnum):
    """What overload may do to a report: ``KEEP`` ones are never shed, ``SAMPLE`` ones may be."""

    KEEP = "keep"
    SAMPLE = "sample"


@dataclass(frozen=True, slots=True)
class EventTiming:
    """What the core needs of an event: its epoch-locked segment grid (for latency from URLs)."""

    segment_duration_ms: int
    part_target_ms: int = 0


@dataclass(frozen=True, slots=True)
class PlayerReport:
    """One CMCD v2 event-mode record, normalised (ms for durations, kbps for bitrates)."""

    sid: str
    sn: int | None
    kind: ReportKind
    ts_ms: float
    """Client wall clock of the report (``ts``), ms since the epoch."""
    sta: str | None = None
    """Player state: s starting, p playing, r rebuffering, a paused, k seeking, e ended,
    f fatal error, q quit, d preloading, w waiting."""
    bitrate_kbps: float | None = None
    """Bitrate at the playhead (``pb``), else of the level switched to (``br`` on ``bc``)."""
    object_bitrate_kbps: float | None = None
    """``br`` of the object a ``rr`` record describes."""
    object_type: str | None = None
    buffer_ms: float | None = None
    latency_ms: float | None = None
    """``ltc`` when the player sends it."""
    start_delay_ms: float | None = None
    """``msd`` (media start delay) when the player sends it."""
    url: str | None = None
    status: int | None = None
    ttfb_ms: float | None = None
    ttlb_ms: float | None = None
    error: str | None = None
    cdn: str | None = None
    content_id: str | None = None

    @property
    def observed_ms(self) -> float:
        """When the state in ``sta`` was true: a response record is written when the response
        ends (its ``ts`` is the request start), every other record at ``ts``."""
        if self.kind is ReportKind.RESPONSE_RECEIVED and self.ttlb_ms is not None:
            return self.ts_ms + self.ttlb_ms
        return self.ts_ms

    @property
    def priority(self) -> Priority:
        """Start-up, error and stall signals are kept; heartbeats and the rest may be sampled."""
        if self.kind in (ReportKind.ERROR, ReportKind.PLAY_STATE) or self.sn == 0:
            return Priority.KEEP
        if self.sta in ("s", "r", "f", "e", "q", "d") or self.error is not None:
            return Priority.KEEP
        return Priority.SAMPLE


def _text(v: CmcdValue | None) -> str | None:
    if isinstance(v, tuple):
        v = v[0] if v else None
    return v if isinstance(v, str) else None


_KINDS = {k.value: k for k in ReportKind}


def _num(v: CmcdValue | None) -> float | None:
    # first_number, inlined for the per-record hot path: ints and floats (not bools), or the
    # first entry of an inner list.
    t = type(v)
    if t is int or t is float:
        return float(v)  # type: ignore[arg-type]
    if t is tuple:
        return first_number(v)
    return None


def report_from_cmcd(data: dict[str, CmcdValue]) -> PlayerReport | str:
    """A decoded CMCD v2 event record → report, or the reason it is unusable."""
    get = data.get
    sid = get("sid")
    if type(sid) is not str:
        sid = _text(sid)
    if not sid:
        return "missing sid (session id)"
    if len(sid) > 128:
        return "sid longer than 128 characters"
    ts = get("ts")
    if type(ts) not in (int, float) or ts <= 0:  # type: ignore[operator]
        return "missing or invalid ts (epoch ms)"
    e = get("e")
    if type(e) is not str:
        e = _text(e)
        if e is None:
            return "missing e (event type)"
    kind = _KINDS.get(e, ReportKind.OTHER)
    sn_v = get("sn")
    if sn_v is None:
        sn = None
    elif type(sn_v) is int and sn_v >= 0:
        sn = sn_v
    else:
        return "invalid sn (sequence number)"
    pb = _num(get("pb"))
    br = _num(get("br"))
    rc = get("rc")
    ec = get("ec")
    sta = get("sta")
    url = get("url")
    ot = get("ot")
    cdn = get("cdn")
    cid = get("cid")
    return PlayerReport(
        sid,
        sn,
        kind,
        float(ts),  # type: ignore[arg-type]
        sta if type(sta) is str else _text(sta),
        pb if pb is not None else (br if kind is ReportKind.BITRATE_CHANGE else None),
        br,
        ot if type(ot) is str else _text(ot),
        _num(get("bl")),
        _num(get("ltc")),
        _num(get("msd")),
        url if type(url) is str else _text(url),
        rc if type(rc) is int else None,
        _num(get("ttfb")),
        _num(get("ttlb")),
        _text(ec) if kind is ReportKind.ERROR else None,
        cdn if type(cdn) is str else _text(cdn),
        cid if type(cid) is str else _text(cid),
    )


_MEDIA = re.compile(r"/live/([^/]+)/[^/]+/(\d+)(?:\.(\d+))?\.m4s$")


def media_pdt_ms(path: str, timing: EventTiming) -> float | None:
    """The capture time (PDT, epoch ms) at which the segment or part at ``path`` begins.

    Segment ``n`` covers ``[n·D, (n+1)·D)`` of epoch time and part ``p`` of it starts ``p``
    part targets in (ARCHITECTURE.md, epoch-locked time); None for other paths.
    """
    m = _MEDIA.search(path)
    if m is None:
        return None
    msn = int(m.group(2))
    part = int(m.group(3)) if m.group(3) is not None else 0
    return float(msn * timing.segment_duration_ms + part * timing.part_target_ms)


def event_of_path(path: str) -> str | None:
    """The event id of a ``/live/<event>/...`` path (token prefix allowed)."""
    i = path.find("/live/")
    if i < 0:
        return None
    rest = path[i + 6 :]
    event = rest.split("/", 1)[0]
    return event or None
