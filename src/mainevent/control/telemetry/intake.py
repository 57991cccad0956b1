"""Sans-IO admission of player reports: dedupe, per-session rate limit, overload shedding.

A batch (one CMCD POST) is admitted whole or refused whole (429 + Retry-After), so a refused
batch loses nothing: the player retries it and the sequence numbers make the retry safe.
Under pressure, start-up, error and stall reports (:attr:`Priority.KEEP`) are always taken
while their own budget lasts; heartbeats and response reports (:attr:`Priority.SAMPLE`) are
taken only while the capacity budget has room, and each kept one carries the weight
``1 / sample rate`` so sums and quantiles stay unbiased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from mainevent.common.ratelimit import TokenBucket
from mainevent.control.telemetry.events import KEEP_STATES, PlayerReport, ReportKind

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
    all_accepted: bool = False
    """Every report accepted (none duplicate or shed): ``verdicts`` need not be read."""


@dataclass(frozen=True, slots=True)
class IntakeStats:
    """Counters since start (a frozen snapshot)."""

    accepted: int
    duplicates: int
    shed: int
    refused_batches: int
    sample_rate: float
    sessions: int = 0
    """Sessions whose admission state is held (at most ``max_sessions``)."""


_MASK = 0xFFFF_FFFF_FFFF_FFFF


class _Seen:
    """One session's admission state: its sequence numbers (the highest, and a 64-bit mask of
    the ones below it) and its rate-limit token bucket, so one lookup serves both."""

    __slots__ = ("batch_high", "high", "mask", "pending", "tokens", "updated")

    def __init__(self, burst: float, now: float) -> None:
        self.high = -1
        self.mask = 0
        self.tokens = burst
        self.updated = now
        self.pending = 0
        """Reports of this session in the batch being admitted."""
        self.batch_high = -1
        """The highest sequence number of this session so far in the batch being admitted."""

    def seen(self, sn: int) -> bool:
        if sn > self.high:
            return False
        d = self.high - sn
        return d >= 64 or bool(self.mask >> d & 1)  # older than the mask: treat as a retry

    def mark(self, sn: int) -> None:
        if sn > self.high:
            shift = sn - self.high
            self.mask = ((self.mask << shift) | 1) & _MASK if shift < 64 else 1
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
        if session_rate <= 0 or session_burst < 1 or max_sessions < 1:
            raise ValueError("session rate must be positive, burst and max sessions at least 1")
        self._capacity = TokenBucket(capacity_per_s, max(1.0, capacity_per_s / 2))
        self._keep = TokenBucket(keep_capacity_per_s, max(1.0, keep_capacity_per_s / 2))
        self._session_rate = session_rate
        self._session_burst = session_burst
        self._seen: dict[str, _Seen] = {}
        """Per session; forgetting one hands it a full bucket. A plain dict, not an LRU: keeping
        recency order cost a linked-list move per report (see `_forget`)."""
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

    def _roll(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            if self._offered:
                self._rate = max(self._kept, 1) / self._offered
            elif second > self._second + 1:
                self._rate = 1.0
            self._second, self._offered, self._kept = second, 0, 0

    def _forget(self, now: float) -> None:
        """At the session cap: forget the least recently seen eighth of the sessions at once
        (one sort per cap/8 new sessions), never one of the batch being admitted."""
        seen = self._seen
        n = max(1, len(seen) // 8)
        cutoff = sorted(st.updated for st in seen.values())[n - 1]
        for sid in [sid for sid, st in seen.items() if st.updated <= cutoff and not st.pending]:
            del seen[sid]

    def admit(self, reports: Sequence[PlayerReport], now: float) -> Admission:
        """Decide a whole batch at ``now`` (monotonic or epoch seconds, consistently).

        Nothing is spent or marked unless the batch is admitted: a refused batch's retry finds
        the same state.
        """
        self._roll(now)
        seen = self._seen
        burst = self._session_burst
        states: list[_Seen] = []
        touched: list[_Seen] = []
        fresh: list[bool] = []
        kept: list[bool] = []
        keep = 0
        all_fresh = True
        error, play_state = ReportKind.ERROR, ReportKind.PLAY_STATE
        rate = self._session_rate
        short = 0.0  # the most reports one session of the batch has beyond its tokens
        batch_sns: set[tuple[str, int | None]] | None = None
        for r in reports:
            sid = r.sid
            st = seen.get(sid)
            if st is None:
                if len(seen) >= self._max_sessions:
                    self._forget(now)
                st = seen[sid] = _Seen(burst, now)
                touched.append(st)
            elif not st.pending:
                touched.append(st)
                if now > st.updated:  # the session's bucket refills once per batch
                    tokens = st.tokens + (now - st.updated) * rate
                    st.tokens = tokens if tokens < burst else burst  # min() without the call
                    st.updated = now
            pending = st.pending = st.pending + 1
            if pending > st.tokens and pending - st.tokens > short:
                short = pending - st.tokens
            states.append(st)
            sn = r.sn
            if sn is None:
                f = True
            elif sn > st.batch_high:
                # Higher than any of the session's before it in the batch (-1 at its first): no
                # repeat of one in the batch (the usual case; one compare).
                st.batch_high = sn
                f = sn > st.high or not st.seen(sn)
            else:
                # At or below one this batch already holds for the session: a repeat if that
                # very number is among them (rare: the batch's (sid, sn) set is built once).
                if batch_sns is None:
                    batch_sns = {(q.sid, q.sn) for q, qf in zip(reports, fresh, strict=False) if qf}
                f = (sid, sn) not in batch_sns and (sn > st.high or not st.seen(sn))
            if batch_sns is not None and f:
                batch_sns.add((sid, sn))
            fresh.append(f)
            kind = r.kind
            # PlayerReport.priority is KEEP, inlined (the hot loop of the collector).
            k = (
                kind is error
                or kind is play_state
                or sn == 0
                or r.sta in KEEP_STATES
                or r.error is not None
            )
            kept.append(k)
            if f:
                if k:
                    keep += 1
            else:
                all_fresh = False
        # Seconds until every session of the batch has tokens for its reports (0: now).
        wait = short / rate
        reason = "session_rate"
        if not wait and keep:
            wait = self._keep.take(now, keep)
            reason = "overloaded"
        if wait:
            for st in touched:
                st.pending = 0
                st.batch_high = -1
            self.refused += 1
            return Admission((), (), max(1.0, wait), reason)
        for st in touched:
            st.tokens -= st.pending
            st.pending = 0
            st.batch_high = -1
        cap = self._capacity
        if now > cap.updated:
            cap.tokens = min(cap.burst, cap.tokens + (now - cap.updated) * cap.rate)
            cap.updated = now
        tokens = cap.tokens
        weight = 1.0 / self._rate  # re-weight by the sample rate of the last full second
        n = len(reports)
        if all_fresh and tokens >= n:
            # Nothing duplicate, room for all: every report accepted (the usual batch).
            for r, st in zip(reports, states, strict=True):
                sn = r.sn
                if sn is not None:
                    high = st.high
                    if sn > high:  # _Seen.mark's usual case, inlined
                        shift = sn - high
                        st.mask = ((st.mask << shift) | 1) & _MASK if shift < 64 else 1
                        st.high = sn
                    else:
                        st.mark(sn)
            cap.tokens = tokens - n
            sampled = n - keep
            self._offered += sampled
            self._kept += sampled
            self.accepted += n
            if weight == 1.0 or not sampled:
                weights: tuple[float, ...] = (1.0,) * n
            else:
                weights = tuple(1.0 if k else weight for k in kept)
            return Admission((Verdict.ACCEPT,) * n, weights, all_accepted=True)
        verdicts: list[Verdict] = []
        weight_list: list[float] = []
        accept, dup, shed = Verdict.ACCEPT, Verdict.DUPLICATE, Verdict.SHED
        n_dup = n_offered = n_kept = n_shed = 0
        for r, st, f, k in zip(reports, states, fresh, kept, strict=True):
            if not f:
                verdicts.append(dup)
                weight_list.append(0.0)
                n_dup += 1
                continue
            if r.sn is not None:
                st.mark(r.sn)
            room = tokens >= 1.0
            if room:
                tokens -= 1.0
            if k:
                verdicts.append(accept)
                weight_list.append(1.0)
                continue
            n_offered += 1
            if room:
                n_kept += 1
                verdicts.append(accept)
                weight_list.append(weight)
            else:
                n_shed += 1
                verdicts.append(shed)
                weight_list.append(0.0)
        cap.tokens = tokens
        self._offered += n_offered
        self._kept += n_kept
        self.duplicates += n_dup
        self.shed_count += n_shed
        self.accepted += len(reports) - n_dup - n_shed
        return Admission(tuple(verdicts), tuple(weight_list))

    def stats(self) -> IntakeStats:
        return IntakeStats(
            self.accepted,
            self.duplicates,
            self.shed_count,
            self.refused,
            self._rate,
            len(self._seen),
        )
