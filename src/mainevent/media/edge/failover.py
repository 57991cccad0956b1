"""Sans-IO choice of upstream for a shield with several origins: ordered, health by breaker.

The shield asks the first origin whose breaker lets a call through (configured order = the
preference: the most complete origin first); a fetch that fails there (refused, reset, timed out,
cut off, 500/502/504) is tried on the next one within the same request, and a 404 too (an
origin that missed the object, or hides its event while it catches up after a restart), without
counting against it; the last origin's answer is the shield's. An origin's breaker opens at its first
failure and lets one probe through after `open_s`, so a returning origin is preferred again
within that long. When no origin answers the fetch fails and the cache answers from its stale
copy (stale-if-error, `health.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mainevent.common.breaker import BreakerState, CircuitBreaker

__all__ = ["FAILOVER_STATUSES", "OriginChoice", "UpstreamStatistics"]

FAILOVER_STATUSES = frozenset({500, 502, 504})
"""Answers that say the origin, not the object, is broken (a 503 is its deliberate answer)."""


@dataclass(frozen=True, slots=True)
class UpstreamStatistics:
    """One upstream's health as the shield sees it."""

    url: str
    breaker: BreakerState
    failures: int
    failovers: int
    """Fetches that went on to the next upstream after this one failed them."""
    trips: int


@dataclass(slots=True)
class _Upstream:
    url: str
    breaker: CircuitBreaker
    failures: int = 0
    failovers: int = 0


@dataclass(slots=True)
class OriginChoice:
    """Which of `urls` (in preference order) the next fetch goes to."""

    urls: tuple[str, ...]
    open_s: float = 2.0
    _ups: list[_Upstream] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a shield needs at least one upstream")
        self._ups = [
            _Upstream(
                u, CircuitBreaker(failure_threshold=1, slow_call_s=float("inf"), open_s=self.open_s)
            )
            for u in self.urls
        ]

    def next(self, now: float, tried: frozenset[int]) -> int | None:
        """The first untried upstream whose breaker allows a call now (None: none does)."""
        for i, up in enumerate(self._ups):
            if i not in tried and up.breaker.allow(now):
                return i
        return None

    def record(self, i: int, ok: bool, now: float, *, moved_on: bool = False) -> None:
        """The outcome of a fetch from upstream `i`; `moved_on`: the next one is tried."""
        up = self._ups[i]
        up.breaker.record(now, ok)
        if not ok:
            up.failures += 1
        if moved_on:
            up.failovers += 1

    def statistics(self) -> list[UpstreamStatistics]:
        return [
            UpstreamStatistics(u.url, u.breaker.state, u.failures, u.failovers, u.breaker.trips)
            for u in self._ups
        ]
