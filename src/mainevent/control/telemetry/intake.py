"""Sans-IO admission of player reports: dedupe, per-session rate limit, overload shedding.

A batch (one CMCD POST) is admitted whole or refused whole (429 + Retry-After), so a refused
batch loses nothing: the player retries it and the sequence numbers make the retry safe.
Under pressure, start-up, error and stall reports (:attr:`Priority.KEEP`) are always taken
while their own budget lasts; heartbeats and response reports (:attr:`Priority.SAMPLE`) are
taken only while the capacity budget has room, and each kept one carries the weight
``1 / sample rate`` so sums and quantiles stay unbiased.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from mainevent.common.ratelimit import KeyedRateLimiter, TokenBucket
from mainevent.control.telemetry.events import PlayerReport, Priority

__all__ = ["Admission", "Intake", "IntakeStats", "Verdict"]


class Verdict(StrEnum):
    """What happened to one report of an admitted batch."""

    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    SHED = "shed"


@dataclass(frozen=True, slots=True)
class Admission:
    """A batch's outcome: per-report verdicts and weights, or a refusal with Retry-After."""

    verdicts: tuple[Verdict, ...]
    weights: tuple[float, ...]
    retry_after_s: float = 0.0
    """> 0: the whole batch was refused (429); nothing of it was used."""
    reason: str = ""
    """Why the batch was refused: ``session_rate`` or ``overloaded``."""


@dataclass(frozen=True, slots=True)
class IntakeStats:
    """Counters since start (a frozen snapshot)."""

    accepted: int
    duplicates: int
    shed: int
    refused_batches: int
    sample_rate: float


class _Seen:
    """Sequence numbers of one session: the highest, and a 64-bit mask of the ones below it."""

    __slots__ = ("high", "mask")

    def __init__(self) -> None:
        self.high = -1
        self.mask = 0

    def seen(self, sn: int) -> bool:
        if sn > self.high:
            return False
        d = self.high - sn
        return d >= 64 or bool(self.mask >> d & 1)  # older than the mask: treat as a retry

    def mark(self, sn: int) -> None:
        if sn > self.high:
            shift = sn - self.high
            self.mask = ((self.mask << shift) | 1) & 0xFFFF_FFFF_FFFF_FFFF if shift < 64 else 1
            self.high = sn
        else:
            self.mask |= 1 << (self.high - sn)


class Intake:
    """Admission state: one budget for everything, one for kept reports, one per session."""

    def __init__(
        self,
        *,
        capacity_per_s: float,
        keep_capacity_per_s: float,
        session_rate: float,
        session_burst: float,
        max_sessions: int = 200_000,
    ) -> None:
        self._capacity = TokenBucket(capacity_per_s, max(1.0, capacity_per_s / 2))
        self._keep = TokenBucket(keep_capacity_per_s, max(1.0, keep_capacity_per_s / 2))
        self._session = KeyedRateLimiter(session_rate, session_burst, max_sessions)
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._max_sessions = max_sessions
        # Sample-rate estimate: offered/kept sampleable reports in the current and last second.
        self._second = -1
        self._offered = 0
        self._kept = 0
        self._rate = 1.0
        self.accepted = 0
        self.duplicates = 0
        self.shed_count = 0
        self.refused = 0

    def _seen_for(self, sid: str) -> _Seen:
        s = self._seen.get(sid)
        if s is None:
            s = self._seen[sid] = _Seen()
            if len(self._seen) > self._max_sessions:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(sid)
        return s

    def _roll(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            if self._offered:
                self._rate = max(self._kept, 1) / self._offered
            elif second > self._second + 1:
                self._rate = 1.0
            self._second, self._offered, self._kept = second, 0, 0

    def admit(self, reports: Sequence[PlayerReport], now: float) -> Admission:
        """Decide a whole batch at ``now`` (monotonic or epoch seconds, consistently)."""
        self._roll(now)
        for sid, cost in Counter(r.sid for r in reports).items():
            wait = self._session.take(sid, now, cost)
            if wait:
                self.refused += 1
                return Admission((), (), max(1.0, wait), "session_rate")
        fresh = []
        for r in reports:
            seen = self._seen.get(r.sid)
            fresh.append(r.sn is None or seen is None or not seen.seen(r.sn))
        keep = sum(
            1 for r, f in zip(reports, fresh, strict=True) if f and r.priority is Priority.KEEP
        )
        if keep:
            wait = self._keep.take(now, keep)
            if wait:
                self.refused += 1
                return Admission((), (), max(1.0, wait), "overloaded")
        verdicts: list[Verdict] = []
        weights: list[float] = []
        for r, f in zip(reports, fresh, strict=True):
            if not f:
                verdicts.append(Verdict.DUPLICATE)
                weights.append(0.0)
                self.duplicates += 1
                continue
            if r.sn is not None:
                self._seen_for(r.sid).mark(r.sn)
            room = self._capacity.take(now) == 0.0
            if r.priority is Priority.KEEP:
                verdicts.append(Verdict.ACCEPT)
                weights.append(1.0)
                self.accepted += 1
                continue
            self._offered += 1
            if room:
                self._kept += 1
                self.accepted += 1
                verdicts.append(Verdict.ACCEPT)
                # Re-weight by the sample rate of the last full second (1.0 when unloaded).
                weights.append(1.0 / self._rate)
            else:
                self.shed_count += 1
                verdicts.append(Verdict.SHED)
                weights.append(0.0)
        return Admission(tuple(verdicts), tuple(weights))

    def stats(self) -> IntakeStats:
        return IntakeStats(
            self.accepted, self.duplicates, self.shed_count, self.refused, self._rate
        )
