"""Sans-IO admission control: who gets served when there is not capacity for everyone.

Requests carry a priority (token refresh of a playing session > new playback start > purchase >
page/status polling). The controller sees three signals fed in by the adapter: requests in
flight, the server's queueing delay (event-loop lag, smoothed: :meth:`observe_delay`) and each
request's own sojourn (how long it has waited since its bytes were read). Each priority may occupy
only a share of the in-flight budget and starts being shed, with a probability rising linearly,
once the smoothed delay passes its own target; lower priorities therefore go first. A server that
decides on arrival (:meth:`enqueue`) keeps a bounded queue of admitted requests waiting for its
worker: an arrival is shed while ``max_queued[priority]`` admitted requests (of any priority) are
already waiting. And a request whose sojourn exceeds its priority's ``max_wait`` is shed outright,
on arrival and, as CoDel drops at dequeue, when it is about to run (:meth:`start`). So admitted
work never queues up behind a burst, and the requests that are served keep their latency.
Refreshes are only refused at the hard in-flight cap. Shed requests get a jittered Retry-After so
they do not come back as one wave. A :class:`Bulkhead` is the same idea for one pool
(purchases): a separate concurrency budget that cannot starve anything else.
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
    #: A request that already waited longer than this in the server's queues is shed at once, on
    #: arrival or when it is about to run: answering it now would blow its latency anyway, and
    #: shedding it is cheap (CoDel's idea, with the sojourn checked at dequeue).
    max_wait: tuple[float, float, float, float] = (math.inf, 0.030, 0.020, 0.010)
    #: Requests admitted on arrival that may wait for the worker at once (of any priority) before
    #: an arrival of this priority is shed: the bounded queue in front of a single event loop.
    #: 32 new starts through the web framework are ~10 ms of work on a slow core.
    max_queued: tuple[float, float, float, float] = (math.inf, 32, 16, 8)
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
        if min(self.max_queued) < 0:
            raise ValueError("max_queued must not be negative")


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
    #: Every shed request, including those admitted first and shed by :meth:`AdmissionController.start`.
    shed: tuple[int, ...]
    #: Of ``shed``, those shed by :meth:`AdmissionController.start` (late, at dequeue).
    late: tuple[int, ...] = (0, 0, 0, 0)
    #: Admitted on arrival and not yet running.
    queued: int = 0


@dataclass(slots=True)
class AdmissionController:
    """Decides per request; the adapter feeds in delay samples and releases admitted requests."""

    policy: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    rng: random.Random = field(default_factory=random.Random)
    in_flight: int = 0
    queued: int = 0
    delay: float = 0.0
    _admitted: list[int] = field(default_factory=lambda: [0] * len(Priority))
    _shed: list[int] = field(default_factory=lambda: [0] * len(Priority))
    _late: list[int] = field(default_factory=lambda: [0] * len(Priority))

    def observe_delay(self, delay: float) -> None:
        """Feed one sample (seconds) of the server's queueing delay, e.g. event-loop lag.

        Not a request's own sojourn: those are passed to :meth:`admit` and :meth:`start`. Most
        requests are read the moment they are parsed, so mixing their near-zero waits in would
        hide the queue that builds up in front of the server.
        """
        # Smoothed both ways: on a shared machine single samples include time the CPU was taken
        # by other processes, and shedding on one of them throws away capacity for nothing.
        a = self.policy.delay_alpha
        self.delay = (1 - a) * self.delay + a * delay

    def admit(self, priority: Priority, waited: float = 0.0) -> Admitted | Shed:
        """Admit or shed one request of ``priority``, about to run, queued for ``waited`` seconds."""
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

    def enqueue(self, priority: Priority, waited: float = 0.0) -> Admitted | Shed:
        """Like :meth:`admit`, for a request that arrived and will wait for the worker to run it.

        Shed while ``max_queued[priority]`` admitted requests are already waiting. An admitted
        one counts as queued until :meth:`start` (it runs) or :meth:`withdraw` (it never will).
        """
        if self.queued >= self.policy.max_queued[priority]:
            return self._shed_one(priority, "overloaded_queue")
        decision = self.admit(priority, waited)
        if isinstance(decision, Admitted):
            self.queued += 1
        return decision

    def start(self, ticket: Admitted, waited: float) -> Admitted | Shed:
        """A request admitted by :meth:`enqueue` is about to run after ``waited`` seconds.

        Beyond its priority's ``max_wait`` it is shed after all (its slot is released): what
        was admitted alongside it in the same burst made it late (CoDel's dequeue-time drop).
        """
        self.queued -= 1
        if waited <= self.policy.max_wait[ticket.priority]:
            return ticket
        self.in_flight -= 1
        self._late[ticket.priority] += 1
        return self._shed_one(ticket.priority, "overloaded_late")

    def withdraw(self, ticket: Admitted) -> None:
        """A request admitted by :meth:`enqueue` will never run (e.g. it could not be parsed)."""
        self.queued -= 1
        self.in_flight -= 1

    def release(self, ticket: Admitted) -> None:
        """An admitted request finished (successfully or not)."""
        self.in_flight -= 1

    def statistics(self) -> AdmissionStats:
        """A frozen snapshot of counters and load signals."""
        return AdmissionStats(
            self.in_flight,
            self.delay,
            tuple(self._admitted),
            tuple(self._shed),
            tuple(self._late),
            self.queued,
        )

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
