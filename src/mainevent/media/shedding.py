"""Live edge first under load: classify media requests by distance from the live edge and shed
the far (DVR) ones first when a concurrency or bandwidth budget is exceeded.

Sans-IO, shared by the origin and the shield: the caller says which MSN a request is for and
where the live edge is, passes monotonic `now`, and reports when the response is done. A
live-edge request is never refused here: DVR requests are refused while the budget is used up
(by live and DVR requests together), so live-edge viewers keep the capacity DVR viewers would
take (ARCHITECTURE.md, principle 3; SPEC §7: Netflix answers DVR requests 503 under load).
An operator can also switch DVR off for an event (the `degrade` command): `dvr_off` makes the
shedder refuse every DVR request as if its budget were used up, whatever the load.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass

__all__ = [
    "DVR_OFF_RETRY_AFTER_S",
    "Admission",
    "Budget",
    "LiveEdgeTracker",
    "LoadShedder",
    "RequestClass",
    "ShedReason",
    "ShedStats",
    "classify",
    "shed_message",
]


class RequestClass(enum.Enum):
    """Where a request stands: at the live edge, or far behind it (DVR, start-over, VOD)."""

    LIVE = "live"
    DVR = "dvr"


class ShedReason(enum.Enum):
    CONCURRENCY = "concurrency"
    BANDWIDTH = "bandwidth"
    DVR_OFF = "dvr_off"
    """Operators switched DVR off for the event: refused whatever the load."""


DVR_OFF_RETRY_AFTER_S = 30
"""Retry-After of a request refused because DVR is off: an operator's degrade lasts minutes,
not the second a budget overrun does."""


def shed_message(reason: ShedReason, retry_after_s: int) -> str:
    """The body of the 503 for a request shed for `reason` (one line, what to do)."""
    if reason is ShedReason.DVR_OFF:
        return (
            "DVR is switched off for this event (degraded by its operators): only the live edge "
            f"is served; rejoin at the live edge, or retry in {retry_after_s} s\n"
        )
    return (
        f"origin over its {reason.value} budget: DVR requests are shed first; "
        f"retry in {retry_after_s} s\n"
    )


def classify(msn: int | None, live_edge_msn: int | None, live_segments: int) -> RequestClass:
    """DVR when segment `msn` is more than `live_segments` segments behind the live edge (the
    newest listed MSN); LIVE otherwise, and for requests that name no segment (playlists,
    init sections) or before anything is listed."""
    if msn is None or live_edge_msn is None or live_edge_msn - msn <= live_segments:
        return RequestClass.LIVE
    return RequestClass.DVR


@dataclass(frozen=True, slots=True)
class Budget:
    """What one origin or shield serves at once before DVR requests are shed.

    `max_concurrent`: requests in progress (live + DVR); `max_bytes_per_s`: bytes served over
    the last second (live + DVR). None: no limit of that kind. `retry_after_s` goes into the
    503's Retry-After."""

    max_concurrent: int | None = None
    max_bytes_per_s: int | None = None
    retry_after_s: int = 2

    def __post_init__(self) -> None:
        for name in ("max_concurrent", "max_bytes_per_s"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no limit), got {value}")
        if self.retry_after_s < 1:
            raise ValueError(f"retry_after_s must be at least 1, got {self.retry_after_s}")


@dataclass(frozen=True, slots=True)
class Admission:
    """The decision on one request: served (`reason` None) or shed, and why."""

    request_class: RequestClass
    reason: ShedReason | None = None

    @property
    def admitted(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class ShedStats:
    in_flight_live: int
    in_flight_dvr: int
    bytes_last_second: int
    shed_concurrency: int
    shed_bandwidth: int
    shed_dvr_off: int = 0


_WINDOW_S = 1.0


class LoadShedder:
    """Admission by class under one `Budget`. Every admitted request must be `done()`."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._in_flight = {RequestClass.LIVE: 0, RequestClass.DVR: 0}
        self._sent: deque[tuple[float, int]] = deque()
        self._sent_bytes = 0
        self._shed = dict.fromkeys(ShedReason, 0)
        self.dvr_off = False
        """Refuse every DVR request (operators degraded DVR), budget or not."""

    def admit(self, request_class: RequestClass, now: float) -> Admission:
        """Serve or shed a request of `request_class` arriving at `now`."""
        reason = self.refusal(request_class, now)
        if reason is not None:
            self._shed[reason] += 1
            return Admission(request_class, reason)
        self._in_flight[request_class] += 1
        return Admission(request_class)

    def refusal(self, request_class: RequestClass, now: float) -> ShedReason | None:
        """Why a request of `request_class` would be shed now (None: it would be served),
        without admitting it: for a fast path that refuses before doing any other work."""
        if request_class is RequestClass.LIVE:
            return None
        if self.dvr_off:
            return ShedReason.DVR_OFF
        return self._over_budget(now)

    def retry_after_s(self, reason: ShedReason) -> int:
        """Retry-After (seconds) of a request shed for `reason`."""
        return DVR_OFF_RETRY_AFTER_S if reason is ShedReason.DVR_OFF else self.budget.retry_after_s

    def count_shed(self, reason: ShedReason) -> None:
        """A request the caller refused after `refusal()` said why."""
        self._shed[reason] += 1

    def done(self, admission: Admission, sent_bytes: int, now: float) -> None:
        """An admitted request finished after sending `sent_bytes` bytes."""
        if not admission.admitted:
            return
        self._in_flight[admission.request_class] -= 1
        if sent_bytes > 0:
            self._sent.append((now, sent_bytes))
            self._sent_bytes += sent_bytes
        self._expire(now)

    def statistics(self, now: float) -> ShedStats:
        self._expire(now)
        return ShedStats(
            in_flight_live=self._in_flight[RequestClass.LIVE],
            in_flight_dvr=self._in_flight[RequestClass.DVR],
            bytes_last_second=self._sent_bytes,
            shed_concurrency=self._shed[ShedReason.CONCURRENCY],
            shed_bandwidth=self._shed[ShedReason.BANDWIDTH],
            shed_dvr_off=self._shed[ShedReason.DVR_OFF],
        )

    def _over_budget(self, now: float) -> ShedReason | None:
        b = self.budget
        if b.max_concurrent is not None:
            if sum(self._in_flight.values()) >= b.max_concurrent:
                return ShedReason.CONCURRENCY
        if b.max_bytes_per_s is not None:
            self._expire(now)
            if self._sent_bytes >= b.max_bytes_per_s:
                return ShedReason.BANDWIDTH
        return None

    def _expire(self, now: float) -> None:
        sent = self._sent
        while sent and sent[0][0] <= now - _WINDOW_S:
            self._sent_bytes -= sent.popleft()[1]


_MEDIA = re.compile(r"^(?P<dir>/live/[^/]+/[^/]+)/(?P<msn>\d{1,18})(?:\.\d{1,4})?\.m4s$")


class LiveEdgeTracker:
    """Where the live edge is, for a cache in front of the origin that does not parse
    playlists: the newest MSN requested per rendition path. Live-edge players request the
    newest segments within a segment of their publication, so that maximum is the live edge
    as soon as anyone watches live; with only DVR viewers nothing is far behind it, and
    nothing is shed (there is no live-edge audience to protect)."""

    def __init__(self, live_segments: int) -> None:
        if live_segments < 1:
            raise ValueError(f"live_segments must be at least 1, got {live_segments}")
        self.live_segments = live_segments
        self._edge: dict[str, int] = {}

    def classify(self, path: str) -> tuple[RequestClass, bool]:
        """The class of a request for `path` (a `/live/<event>/<rendition>/<msn>[.<k>].m4s`;
        anything else is LIVE), and whether it names a segment or part at all."""
        m = _MEDIA.match(path)
        if m is None:
            return RequestClass.LIVE, False
        directory, msn = m["dir"], int(m["msn"])
        edge = self._edge.get(directory)
        if edge is None or msn > edge:
            self._edge[directory] = edge = msn
        return classify(msn, edge, self.live_segments), True
