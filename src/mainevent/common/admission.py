"""Sans-IO admission control: who gets served when there is not capacity for everyone.

Requests carry a priority (token refresh of a playing session > new playback start > purchase >
page/status polling). The controller sees two load signals fed in by the adapter: requests in
flight and the server's queueing delay (event-loop lag). Each priority may occupy only a share of
the in-flight budget and starts being shed, with a probability rising linearly, once the delay
passes its own target; lower priorities therefore go first and the requests that are admitted
keep their latency. Refreshes are only refused at the hard in-flight cap. Shed requests get a
jittered Retry-After so they do not come back as one wave. A :class:`Bulkhead` is the same idea
for one pool (purchases): a separate concurrency budget that cannot starve anything else.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "AdmissionController",
    "AdmissionPolicy",
    "AdmissionStats",
    "Admitted",
    "Bulkhead",
    "Priority",
    "Shed",
]


class Priority(IntEnum):
    """Request classes, most important first."""

    REFRESH = 0
    NEW_START = 1
    PURCHASE = 2
    POLL = 3


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """Tuning of the controller; tuples are indexed by :class:`Priority`."""

    max_in_flight: int = 512
    #: Share of ``max_in_flight`` each priority may occupy (refresh may use all of it).
    in_flight_share: tuple[float, float, float, float] = (1.0, 0.75, 0.4, 0.25)
    #: Queueing delay (s) at which a priority starts being shed ...
    delay_target: tuple[float, float, float, float] = (math.inf, 0.005, 0.003, 0.002)
    #: ... and the delay at which all of it is shed.
    delay_full: tuple[float, float, float, float] = (math.inf, 0.030, 0.015, 0.010)
    #: A request that already waited longer than this in the server's queues is shed at once:
    #: answering it now would blow its latency anyway, and shedding it is cheap (CoDel's idea).
    max_wait: tuple[float, float, float, float] = (math.inf, 0.050, 0.030, 0.020)
    #: Retry-After given to shed requests: base seconds plus uniform jitter up to ``retry_jitter``.
    retry_after: tuple[float, float, float, float] = (1.0, 2.0, 3.0, 5.0)
    retry_jitter: float = 2.0
    #: Weight of a new delay sample in the smoothed delay (samples come every ~10 ms and with
    #: each request, so 0.2 reacts within a few tens of milliseconds).
    delay_alpha: float = 0.2

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        for lo, hi in zip(self.delay_target, self.delay_full, strict=True):
            if hi < lo:
                raise ValueError("delay_full must not be below delay_target")


@dataclass(frozen=True, slots=True)
class Admitted:
    """The request may proceed; call :meth:`AdmissionController.release` when it is done."""

    priority: Priority


@dataclass(frozen=True, slots=True)
class Shed:
    """The request is refused for now: answer 503 with ``Retry-After: retry_after``."""

    priority: Priority
    retry_after: float
    reason: str


@dataclass(frozen=True, slots=True)
class AdmissionStats:
    """Snapshot of the controller (for /metrics and the benchmark)."""

    in_flight: int
    delay: float
    admitted: tuple[int, ...]
    shed: tuple[int, ...]


@dataclass(slots=True)
class AdmissionController:
    """Decides per request; the adapter feeds in delay samples and releases admitted requests."""

    policy: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    rng: random.Random = field(default_factory=random.Random)
    in_flight: int = 0
    delay: float = 0.0
    _admitted: list[int] = field(default_factory=lambda: [0] * len(Priority))
    _shed: list[int] = field(default_factory=lambda: [0] * len(Priority))

    def observe_delay(self, delay: float) -> None:
        """Feed one queueing-delay sample (seconds) measured by the adapter."""
        # Smoothed both ways: on a shared machine single samples include time the CPU was taken
        # by other processes, and shedding on one of them throws away capacity for nothing.
        a = self.policy.delay_alpha
        self.delay = (1 - a) * self.delay + a * delay

    def admit(self, priority: Priority, waited: float = 0.0) -> Admitted | Shed:
        """Admit or shed one request of ``priority`` that has been queued for ``waited`` seconds."""
        p = self.policy
        if waited > p.max_wait[priority]:
            return self._shed_one(priority, "overloaded_late")
        cap = p.max_in_flight * p.in_flight_share[priority]
        if self.in_flight >= cap:
            return self._shed_one(priority, "overloaded_in_flight")
        lo, hi = p.delay_target[priority], p.delay_full[priority]
        if self.delay > lo:
            drop = 1.0 if hi <= lo or self.delay >= hi else (self.delay - lo) / (hi - lo)
            if self.rng.random() < drop:
                return self._shed_one(priority, "overloaded_delay")
        self.in_flight += 1
        self._admitted[priority] += 1
        return Admitted(priority)

    def release(self, ticket: Admitted) -> None:
        """An admitted request finished (successfully or not)."""
        self.in_flight -= 1

    def statistics(self) -> AdmissionStats:
        """A frozen snapshot of counters and load signals."""
        return AdmissionStats(self.in_flight, self.delay, tuple(self._admitted), tuple(self._shed))

    def _shed_one(self, priority: Priority, reason: str) -> Shed:
        self._shed[priority] += 1
        base = self.policy.retry_after[priority]
        return Shed(priority, base + self.rng.uniform(0, self.policy.retry_jitter), reason)


@dataclass(slots=True)
class Bulkhead:
    """A separate concurrency pool: at most ``limit`` at once; the rest are refused, not queued."""

    limit: int
    in_use: int = 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free."""
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        """Give a slot back."""
        if self.in_use <= 0:
            raise RuntimeError("bulkhead released more often than acquired")
        self.in_use -= 1
