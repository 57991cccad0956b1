"""One representative playback-API worker, simulated request by request with the real policies.

The load balancer spreads requests evenly over `workers` identical processes, each with its
own admission controller, rate limiter, decision cache and breaker (as `mainevent control
serve` runs them). So one worker is simulated exactly — arrivals, a FIFO in front of one
event loop, service times — and its outcome fractions are scaled to the fleet. Model:

* new starts and refreshes are individual requests (Poisson-thinned to 1/workers of the fleet's
  arrivals); each is admitted on arrival (`AdmissionController.enqueue`), checked again when it
  is about to run (`start`, CoDel), then served for its CPU time; a new start that misses the
  `DecisionCache` asks the entitlement store through the `CircuitBreaker`;
* waiting-room polls and heartbeats are fluid background load (they take CPU from the same
  worker); the share of polls shed is the real controller's answer to a sample of
  `admit(POLL)` calls each tick;
* event-loop lag fed to `observe_delay` is the work queued ahead (backlog), every 10 ms, plus
  — calibrated — a draw from the machine's measured scheduling delay (`base_latency_ms` above
  its minimum: on a shared machine the real loop lags because its process waits for a core);
* the entitlement store's latency grows with its utilisation (M/M/1: base / (1 - utilisation)); above
  capacity or during an outage lookups fail (or time out, which the breaker counts as failure).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from mainevent.common.admission import Admitted, Shed
from mainevent.sim.policies import (
    AdmissionController,
    AdmissionPolicy,
    CircuitBreaker,
    DecisionCache,
    KeyedRateLimiter,
    Priority,
)
from mainevent.sim.scenario import ControlPlane

__all__ = ["Outcome", "Request", "RequestKind", "TickResult", "WorkerModel"]


class RequestKind(IntEnum):
    PREAUTH = 0
    """Page open before the bell: a waiting-room grant (full checks)."""
    START = 1
    """Play pressed without a pre-authorisation: a new start."""
    REFRESH = 2


class Outcome(IntEnum):
    GRANTED = 0
    SHED = 1
    """503 overloaded (Retry-After)."""
    UNAVAILABLE = 2
    """503 entitlement_unavailable (no known-good decision)."""
    RATE_LIMITED = 3


@dataclass(frozen=True, slots=True)
class Request:
    at: float
    kind: RequestKind
    account: int
    address: str


@dataclass(slots=True)
class TickResult:
    """What the representative worker did with the requests that finished in one tick."""

    granted: list[list[float]] = field(default_factory=lambda: [[], [], []])
    """Latencies (s) of granted requests, per RequestKind."""
    refused: list[list[tuple[Outcome, float]]] = field(default_factory=lambda: [[], [], []])
    """(outcome, retry after) per RequestKind."""
    degraded: int = 0
    lookups: int = 0
    lookup_failures: int = 0
    poll_shed_share: float = 0.0
    utilisation: float = 0.0
    delay: float = 0.0
    door_refused: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Arrivals above the worker's individual cap, refused at the door in bulk, per RequestKind."""


@dataclass(frozen=True, slots=True)
class _Job:
    """An admitted request about to run on the worker."""

    req: Request
    ticket: Admitted
    start: float
    cost: float


_ARRIVE, _RUN, _SAMPLE = 0, 1, 2
_PRIORITY = {
    RequestKind.PREAUTH: Priority.NEW_START,
    RequestKind.START: Priority.NEW_START,
    RequestKind.REFRESH: Priority.REFRESH,
}


class WorkerModel:
    """The representative worker; `run_until(t)` processes every event before `t`."""

    def __init__(self, cfg: ControlPlane, rng: random.Random, event_id: str = "ev") -> None:
        self.cfg = cfg
        self.rng = rng
        self.event_id = event_id
        self.admission = AdmissionController(
            AdmissionPolicy(max_in_flight=cfg.max_in_flight), rng=random.Random(rng.random())
        )
        self.breaker = CircuitBreaker(
            failure_threshold=cfg.breaker_failures,
            slow_call_s=cfg.store_timeout_s,
            open_s=cfg.breaker_open_s,
        )
        self.decisions = DecisionCache(cfg.decision_ttl_s, 6 * 3600.0)
        self.addresses = KeyedRateLimiter(cfg.address_rate, cfg.address_burst)
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._queue: deque[tuple[Request, object]] = deque()
        self._busy_until = -math.inf
        self._backlog_work = 0.0
        self.background = 0.0
        """Share of this worker's CPU taken by fluid load (polls, heartbeats)."""
        self.store_utilisation = 0.0
        self.store_down = False
        self._result = TickResult()
        self._busy_time = 0.0
        self._next_sample = -math.inf
        measured = sorted(cfg.base_latency_ms)
        self._lag = [(m - measured[0]) / 1000 for m in measured]
        """Calibration: the machine's scheduling delay as the loop-lag sampler sees it (measured
        trivial-request latencies above their minimum), added to each lag sample."""

    # -- inputs ---------------------------------------------------------------------------

    def arrive(self, req: Request) -> None:
        self._push(req.at, _ARRIVE, req)

    def individual_cap(self, tick_s: float) -> int:
        """Most arrivals per tick simulated one by one: twice what the loop can serve this tick
        (its CPU share left by the fluid load) plus a margin. Beyond that the loop is saturated,
        its in-flight budget stays full across ticks and the controller refuses whatever else
        arrives, so the surplus is refused in bulk by :meth:`refuse_at_door`."""
        free = max(0.02, 1.0 - self.background)
        return int(2 * tick_s * 1000 * free / self.cfg.new_start_ms) + 64

    def refuse_at_door(self, kind: RequestKind, n: float, tick_s: float) -> None:
        """`n` arrivals of `kind` this tick beyond the individual cap: each is a door refusal
        (503 overloaded) and costs `shed_ms` of the loop, taken as fluid load this tick."""
        if n <= 0:
            return
        self._result.door_refused[kind] += n
        self.background = min(0.98, self.background + n * self.cfg.shed_ms / 1000 / tick_s)

    def run_until(self, t: float) -> TickResult:
        """Process events before `t`; returns (and resets) what finished meanwhile."""
        if self._next_sample < t:
            self._push(max(self._next_sample, t - 1.0), _SAMPLE, None)
            self._next_sample = t
        events = self._events
        while events and events[0][0] < t:
            at, kind, _, payload = heapq.heappop(events)
            if kind == _ARRIVE:
                assert isinstance(payload, Request)
                self._on_arrival(payload, at)
            elif kind == _RUN:
                assert isinstance(payload, _Job)
                self._on_run(payload, at)
            else:
                lag = self.rng.choice(self._lag) if self._lag else 0.0
                self.admission.observe_delay(max(0.0, self._busy_until - at) + lag)
                if at + 0.01 < t:
                    self._push(at + 0.01, _SAMPLE, None)
        result = self._result
        result.delay = self.admission.delay
        result.poll_shed_share = self._poll_shed_share()
        self._result = TickResult()
        return result

    # -- internals ------------------------------------------------------------------------

    def _push(self, at: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, kind, self._seq, payload))

    def _service(self, seconds: float) -> float:
        # Fluid background load slows everything the loop does by 1 / (1 - its share).
        return seconds / max(0.02, 1.0 - self.background)

    def _on_arrival(self, req: Request, now: float) -> None:
        res = self._result
        decision = self.admission.enqueue(_PRIORITY[req.kind], 0.0)
        if isinstance(decision, Shed):
            res.refused[req.kind].append((Outcome.SHED, decision.retry_after))
            self._busy_until = max(self._busy_until, now) + self._service(self.cfg.shed_ms / 1000)
            return
        if req.kind is not RequestKind.REFRESH and self.addresses.take(req.address, now) > 0:
            self.admission.withdraw(decision)
            res.refused[req.kind].append((Outcome.RATE_LIMITED, 1.0))
            return
        start = max(self._busy_until, now)
        ms = self.cfg.refresh_ms if req.kind is RequestKind.REFRESH else self.cfg.new_start_ms
        cost = self._service(ms / 1000)
        self._busy_until = start + cost
        self._busy_time += cost
        self._push(start, _RUN, _Job(req, decision, start, cost))

    def _on_run(self, job: _Job, at: float) -> None:
        # The in-flight slot is held from arrival to the start of the run (the run itself is
        # accounted as busy time); the latency is the wait plus the CPU time (plus the store's).
        req = job.req
        res = self._result
        started = self.admission.start(job.ticket, at - req.at)
        if isinstance(started, Shed):
            res.refused[req.kind].append((Outcome.SHED, started.retry_after))
            return
        latency = (job.start - req.at) + job.cost
        outcome = Outcome.GRANTED
        if req.kind is not RequestKind.REFRESH:
            latency_store, outcome = self._entitle(req, job.start)
            latency += latency_store
        self.admission.release(job.ticket)
        if outcome is Outcome.GRANTED:
            res.granted[req.kind].append(latency)
        else:
            res.refused[req.kind].append((outcome, 5.0 + self.rng.uniform(0, 2)))

    def _entitle(self, req: Request, now: float) -> tuple[float, Outcome]:
        account = str(req.account)
        res = self._result
        if self.decisions.get(account, self.event_id, now) is not None:
            return 0.0, Outcome.GRANTED
        if self.breaker.allow(now):
            res.lookups += 1
            rho = self.store_utilisation
            base = self.cfg.entitlement_latency_ms / 1000
            took = base / (1 - rho) if rho < 0.99 else self.cfg.store_timeout_s * 2
            took = min(took, self.cfg.store_timeout_s * 2)
            ok = not self.store_down and took <= self.cfg.store_timeout_s
            if self.store_down:
                took = min(took, 0.05)  # refused fast (connection errors)
            self.breaker.record(now + took, ok, took)
            if ok:
                self.decisions.put(account, self.event_id, None, now + took)
                return took, Outcome.GRANTED
            res.lookup_failures += 1
        else:
            took = 0.0
        if self.decisions.known_good(account, self.event_id, now):
            res.degraded += 1
            return took, Outcome.GRANTED
        return took, Outcome.UNAVAILABLE

    def _poll_shed_share(self, samples: int = 32) -> float:
        shed = 0
        for _ in range(samples):
            d = self.admission.admit(Priority.POLL)
            if isinstance(d, Shed):
                shed += 1
            else:
                self.admission.release(d)
        return shed / samples

    def remember_preauth(self, account: int, now: float) -> None:
        """A viewer pre-authorised by this worker is known good (as the service marks it)."""
        self.decisions.mark_known_good(str(account), self.event_id, now)

    def utilisation(self, t0: float, t1: float) -> float:
        busy, self._busy_time = self._busy_time, 0.0
        return min(1.0, busy / max(1e-9, t1 - t0) + self.background)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (normal approximation above 50)."""
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1
