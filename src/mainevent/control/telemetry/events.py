"""Inputs of the aggregation core: normalised player reports, edge access records, timers.

The collector's adapters translate wire formats (CMCD v2 event bodies, CMCD v1/v2 query keys,
the edge access-record batches of :mod:`mainevent.common.telemetry`) into these values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import msgspec

from mainevent.control.telemetry.cmcd import CmcdValue, first_number

__all__ = [
    "KEEP_STATES",
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

    @classmethod
    def _missing_(cls, value: object) -> ReportKind:
        # Event types the core does not tell apart (and future ones) are OTHER, on the text
        # path and in the JSON batch alike (msgspec honours _missing_ when decoding).
        return cls.OTHER


_KEEP_KINDS = (ReportKind.ERROR, ReportKind.PLAY_STATE)  # a tuple: identity hits, no Enum hash
KEEP_STATES = frozenset({"s", "r", "f", "e", "q", "d"})
"""Player states whose reports are never shed (start-up, stall, failure, end)."""


class Priority(StrEnum):
    """What overload may do to a report: ``KEEP`` ones are never shed, ``SAMPLE`` ones may be."""

    KEEP = "keep"
    SAMPLE = "sample"


@dataclass(frozen=True, slots=True)
class EventTiming:
    """What the core needs of an event: its epoch-locked segment grid (for latency from URLs)."""

    segment_duration_ms: int
    part_target_ms: int = 0


class PlayerReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One CMCD v2 event-mode record, normalised (ms for durations, kbps for bitrates).

    A msgspec struct rather than a dataclass: the JSON batch endpoint decodes its records
    straight into these (one C call per body, constraints checked there), and building one
    costs a tenth of a frozen dataclass on the text path. Wire names are the CMCD keys.
    """

    sid: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    """Session id (``sid``)."""
    sn: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Sequence number (``sn``), for dedupe of retransmissions."""
    kind: ReportKind = msgspec.field(name="e")
    ts_ms: Annotated[float, msgspec.Meta(gt=0)] = msgspec.field(name="ts")
    """Client wall clock of the report (``ts``), ms since the epoch."""
    sta: str | None = None
    """Player state: s starting, p playing, r rebuffering, a paused, k seeking, e ended,
    f fatal error, q quit, d preloading, w waiting."""
    bitrate_kbps: float | None = msgspec.field(default=None, name="pb")
    """Bitrate at the playhead (``pb``), else of the level switched to (``br`` on ``bc``)."""
    object_bitrate_kbps: float | None = msgspec.field(default=None, name="br")
    """``br`` of the object a ``rr`` record describes."""
    object_type: str | None = msgspec.field(default=None, name="ot")
    buffer_ms: float | None = msgspec.field(default=None, name="bl")
    latency_ms: float | None = msgspec.field(default=None, name="ltc")
    """``ltc`` when the player sends it."""
    start_delay_ms: float | None = msgspec.field(default=None, name="msd")
    """``msd`` (media start delay) when the player sends it."""
    url: str | None = None
    status: int | None = msgspec.field(default=None, name="rc")
    ttfb_ms: float | None = msgspec.field(default=None, name="ttfb")
    ttlb_ms: float | None = msgspec.field(default=None, name="ttlb")
    error: str | None = msgspec.field(default=None, name="ec")
    cdn: str | None = None
    content_id: str | None = msgspec.field(default=None, name="cid")

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
        if self.kind in _KEEP_KINDS or self.sn == 0:
            return Priority.KEEP
        if self.sta in KEEP_STATES or self.error is not None:
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
        sid=sid,
        sn=sn,
        kind=kind,
        ts_ms=float(ts),  # type: ignore[arg-type]
        sta=sta if type(sta) is str else _text(sta),
        bitrate_kbps=pb if pb is not None else (br if kind is ReportKind.BITRATE_CHANGE else None),
        object_bitrate_kbps=br,
        object_type=ot if type(ot) is str else _text(ot),
        buffer_ms=_num(get("bl")),
        latency_ms=_num(get("ltc")),
        start_delay_ms=_num(get("msd")),
        url=url if type(url) is str else _text(url),
        status=rc if type(rc) is int else None,
        ttfb_ms=_num(get("ttfb")),
        ttlb_ms=_num(get("ttlb")),
        error=_text(ec) if kind is ReportKind.ERROR else None,
        cdn=cdn if type(cdn) is str else _text(cdn),
        content_id=cid if type(cid) is str else _text(cid),
    )


_MEDIA = re.compile(r"/live/([^/?#]+)/[^/?#]+/(\d+)(?:\.(\d+))?\.m4s(?:[?#].*)?$")


def media_pdt_ms(path: str, timing: EventTiming) -> float | None:
    """The capture time (PDT, epoch ms) at which the segment or part at ``path`` (or a whole
    URL: query and fragment are ignored) begins.

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
