"""Sans-IO circuit breaker: stop calling a dependency that fails or is slow, probe it back in.

closed ──(failure_threshold consecutive failures or slow calls)──► open ──(open_s)──► half_open
half_open ──(a probe succeeds)──► closed;  half_open ──(a probe fails)──► open
A call slower than ``slow_call_s`` counts as a failure even if it returned an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """Feed it call outcomes with ``now`` (monotonic seconds); ask it before each call."""

    failure_threshold: int = 5
    slow_call_s: float = 0.25
    open_s: float = 5.0
    half_open_probes: int = 1
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probes: int = 0
    trips: int = 0

    def allow(self, now: float) -> bool:
        """Whether a call may go to the dependency now (counts a probe when half open)."""
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.open_s:
                return False
            self.state = BreakerState.HALF_OPEN
            self.probes = 0
        if self.state is BreakerState.HALF_OPEN:
            if self.probes >= self.half_open_probes:
                return False
            self.probes += 1
        return True

    def record(self, now: float, ok: bool, duration: float = 0.0) -> None:
        """Report the outcome of a call that :meth:`allow` let through."""
        if ok and duration <= self.slow_call_s:
            self.failures = 0
            if self.state is BreakerState.HALF_OPEN:
                self.state = BreakerState.CLOSED
            return
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self.state = BreakerState.OPEN
            self.opened_at = now
            self.trips += 1
