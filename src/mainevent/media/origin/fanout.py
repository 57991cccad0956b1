"""Sans-IO core of the ingest fan-out: every object the packager stores goes to every origin.

The packager stores each validated CMAF object (init section, LL-HLS part, segment) once and
offers it here; this core decides, per origin, when to PUT it (DASH-IF live media ingest,
Interface 1 style) and what to do with the answer. Each origin is a bulkhead of its own:

* a **lane** per (origin, event, rendition) sends one object at a time, in the order offered
  (an origin lists segment n only after n − 1, and needs the init section before either);
* a **bounded queue** per origin (`max_queued` objects over its lanes): when full, the oldest
  queued part goes first (a part is worth nothing once its segment is out), else the oldest
  object: that origin then lists the MSN as a gap, the others are untouched;
* **retries with backoff** per lane (`base_backoff_s` doubling up to `max_backoff_s`);
  an unreachable origin costs no attempts (its breaker decides), an origin answering 5xx
  for one object gives up on it after `max_attempts`;
* a **circuit breaker** per origin (`common/breaker.py`): while open nothing is sent there,
  after `open_s` one probe goes; after an origin was unreachable every lane re-sends its current
  init section first (idempotent: 204 if the origin still has it), so a restarted origin with
  an empty disk can list what follows.

`handle(event, now) -> actions`, `next_deadline()`; the adapter (`ingest_client.py`) performs the
`Send`s and arms one timer for the deadline. No clock, socket or task in here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from mainevent.common.breaker import BreakerState, CircuitBreaker

__all__ = [
    "DropReason",
    "Dropped",
    "FanoutCore",
    "FanoutEvent",
    "IngestObject",
    "ObjectKind",
    "Offered",
    "OriginStatistics",
    "Outcome",
    "Send",
    "SendDone",
    "Tick",
]


class ObjectKind(StrEnum):
    """What a CMAF ingest object is."""

    INIT = "init"
    PART = "part"
    SEGMENT = "segment"
    END = "end"
    """The event ended after this rendition's last segment (EXT-X-ENDLIST)."""


@dataclass(frozen=True, slots=True)
class IngestObject:
    """One stored CMAF object, as it is PUT to `/ingest/<event>/<rendition>/<name>`."""

    event: str
    rendition: str
    name: str
    kind: ObjectKind
    data: bytes
    slate: bool = False
    """A slate segment standing in for lost input (sent as `Mainevent-Slate: 1`)."""

    @property
    def path(self) -> str:
        return f"/ingest/{self.event}/{self.rendition}/{self.name}"


class Outcome(StrEnum):
    """How an origin answered one PUT."""

    STORED = "stored"
    """201: new, validated, listed."""
    SAME = "same"
    """204: the origin holds these very bytes under that name already (a retry)."""
    CONFLICT = "conflict"
    """409: the name is taken by other bytes (or its MSN is listed already): never retried."""
    NEEDS_INIT = "needs_init"
    """409 `init_required`: the origin has no init section for the rendition (restarted)."""
    REJECTED = "rejected"
    """Another 4xx: the origin refuses the object (invalid CMAF, unknown event): not retried."""
    SERVER_ERROR = "server_error"
    """5xx: retried up to `max_attempts`."""
    UNREACHABLE = "unreachable"
    """Refused, reset or timed out: the origin is down or slow; retried while the breaker allows."""


class DropReason(StrEnum):
    """Why an object will never reach one origin."""

    QUEUE_FULL = "queue_full"
    CONFLICT = "conflict"
    REJECTED = "rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"


@dataclass(frozen=True, slots=True)
class Offered:
    """The packager stored `obj`: send it to every origin."""

    obj: IngestObject


@dataclass(frozen=True, slots=True)
class SendDone:
    """The PUT of `Send.seq` to `origin` ended with `outcome` after `duration_s`."""

    origin: int
    seq: int
    outcome: Outcome
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Tick:
    """The adapter's timer fired (a backoff or breaker interval may be over)."""


FanoutEvent = Offered | SendDone | Tick


@dataclass(frozen=True, slots=True)
class Send:
    """PUT `obj` to origin `origin`; report the answer as `SendDone(origin, seq, ...)`."""

    origin: int
    seq: int
    obj: IngestObject
    attempt: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """`obj` will not be sent to `origin` (counted and logged by the adapter)."""

    origin: int
    obj: IngestObject
    reason: DropReason


Action = Send | Dropped


@dataclass(frozen=True, slots=True)
class OriginStatistics:
    """A snapshot of one origin's side of the fan-out."""

    queued: int
    in_flight: int
    breaker: BreakerState
    delivered: int
    dropped: int


@dataclass(slots=True)
class _Queued:
    obj: IngestObject
    seq: int
    attempts: int = 0


@dataclass(slots=True)
class _Lane:
    queue: deque[_Queued] = field(default_factory=deque)
    in_flight: _Queued | None = None
    retry_at: float = 0.0
    failures: int = 0
    """Consecutive failed sends (backoff exponent)."""
    resend_init: bool = False
    init: IngestObject | None = None
    """The rendition's current init section (re-sent after the origin was unreachable)."""


@dataclass(slots=True)
class _Origin:
    breaker: CircuitBreaker
    lanes: dict[tuple[str, str], _Lane] = field(default_factory=dict)
    queued: int = 0
    delivered: int = 0
    dropped: int = 0


class FanoutCore:
    """Per-origin lanes, queues, backoff and breakers for `origins` (by index)."""

    def __init__(
        self,
        origins: int,
        *,
        max_queued: int = 512,
        max_attempts: int = 5,
        base_backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        breaker_failures: int = 3,
        breaker_open_s: float = 1.0,
    ) -> None:
        if origins < 1:
            raise ValueError(f"the fan-out needs at least one origin, got {origins}")
        if max_queued < 1:
            raise ValueError(f"the per-origin queue must hold at least 1 object, got {max_queued}")
        self.max_queued = max_queued
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._origins = [
            _Origin(
                CircuitBreaker(
                    failure_threshold=breaker_failures,
                    # Slowness alone never opens it: an origin storing a big segment is fine.
                    slow_call_s=float("inf"),
                    open_s=breaker_open_s,
                )
            )
            for _ in range(origins)
        ]
        self._seq = 0

    # -- inputs ----------------------------------------------------------------------------

    def handle(self, event: FanoutEvent, now: float) -> list[Action]:
        """Apply `event` at `now` (monotonic seconds); the sends and drops it causes."""
        actions: list[Action] = []
        if isinstance(event, Offered):
            for i in range(len(self._origins)):
                self._enqueue(i, event.obj, actions)
        elif isinstance(event, SendDone):
            self._done(event, now, actions)
        for i in range(len(self._origins)):
            self._pump(i, now, actions)
        return actions

    def next_deadline(self) -> float | None:
        """When a lane's backoff or an open breaker's interval ends (None: nothing waits)."""
        deadlines: list[float] = []
        for o in self._origins:
            waiting = [ln for ln in o.lanes.values() if ln.in_flight is None and ln.queue]
            if not waiting:
                continue
            b = o.breaker
            if b.state is BreakerState.OPEN:
                deadlines.append(b.opened_at + b.open_s)
                continue
            deadlines.extend(ln.retry_at for ln in waiting if ln.failures)
        return min(deadlines) if deadlines else None

    def statistics(self, origin: int) -> OriginStatistics:
        o = self._origins[origin]
        return OriginStatistics(
            queued=o.queued,
            in_flight=sum(1 for ln in o.lanes.values() if ln.in_flight is not None),
            breaker=o.breaker.state,
            delivered=o.delivered,
            dropped=o.dropped,
        )

    @property
    def origins(self) -> int:
        return len(self._origins)

    # -- internals ---------------------------------------------------------------------------

    def _enqueue(self, i: int, obj: IngestObject, actions: list[Action]) -> None:
        o = self._origins[i]
        lane = o.lanes.setdefault((obj.event, obj.rendition), _Lane())
        if obj.kind is ObjectKind.INIT:
            lane.init = obj
        if o.queued >= self.max_queued:
            victim = self._victim(o)
            if victim is not None:
                vlane, item = victim
                vlane.queue.remove(item)
                o.queued -= 1
                o.dropped += 1
                actions.append(Dropped(i, item.obj, DropReason.QUEUE_FULL))
            else:  # every slot is in flight: nothing to make room with
                o.dropped += 1
                actions.append(Dropped(i, obj, DropReason.QUEUE_FULL))
                return
        self._seq += 1
        lane.queue.append(_Queued(obj, self._seq))
        o.queued += 1

    @staticmethod
    def _victim(o: _Origin) -> tuple[_Lane, _Queued] | None:
        """The oldest queued part, else the oldest queued object that is not an init section
        (an init is what makes everything after it listable) or an end."""
        oldest: tuple[_Lane, _Queued] | None = None
        oldest_part: tuple[_Lane, _Queued] | None = None
        for lane in o.lanes.values():
            for item in lane.queue:
                if item.obj.kind in (ObjectKind.INIT, ObjectKind.END) or item is lane.in_flight:
                    continue
                if item.obj.kind is ObjectKind.PART:
                    if oldest_part is None or item.seq < oldest_part[1].seq:
                        oldest_part = (lane, item)
                    break  # later parts of this lane are newer
                if oldest is None or item.seq < oldest[1].seq:
                    oldest = (lane, item)
        return oldest_part or oldest

    def _done(self, ev: SendDone, now: float, actions: list[Action]) -> None:
        o = self._origins[ev.origin]
        lane = next(
            (ln for ln in o.lanes.values() if ln.in_flight and ln.in_flight.seq == ev.seq), None
        )
        if lane is None or lane.in_flight is None:
            return  # not ours (the adapter's bookkeeping is trusted; nothing to undo)
        item = lane.in_flight
        lane.in_flight = None
        resend = item.seq < 0  # an init re-sent ahead of the queue (not in it)
        reached = ev.outcome not in (Outcome.UNREACHABLE, Outcome.SERVER_ERROR)
        o.breaker.record(now, reached, ev.duration_s)
        if reached:
            lane.failures = 0
        if ev.outcome in (Outcome.STORED, Outcome.SAME):
            if resend:
                lane.resend_init = False
            else:
                self._pop(o, lane, item)
                o.delivered += 1
                if item.obj.kind is ObjectKind.INIT:
                    lane.resend_init = False
            return
        if ev.outcome is Outcome.NEEDS_INIT and resend:
            lane.resend_init = False  # nonsense for an init section: send the head as it is
            return
        if ev.outcome is Outcome.NEEDS_INIT:
            item.attempts += 1
            if item.attempts >= self.max_attempts or lane.init is None:
                self._drop(ev.origin, o, lane, item, DropReason.REJECTED, actions, resend)
            else:
                lane.resend_init = True
            return
        if ev.outcome in (Outcome.CONFLICT, Outcome.REJECTED):
            reason = DropReason.CONFLICT if ev.outcome is Outcome.CONFLICT else DropReason.REJECTED
            self._drop(ev.origin, o, lane, item, reason, actions, resend)
            if resend:
                lane.resend_init = False
            return
        # Not reached, or a server error: back off (the breaker may open as well).
        lane.failures += 1
        lane.retry_at = now + min(
            self.max_backoff_s, self.base_backoff_s * 2 ** (lane.failures - 1)
        )
        if ev.outcome is Outcome.UNREACHABLE:
            for ln in o.lanes.values():
                ln.resend_init = ln.init is not None
            return
        item.attempts += 1
        if item.attempts >= self.max_attempts:
            self._drop(ev.origin, o, lane, item, DropReason.RETRIES_EXHAUSTED, actions, resend)

    def _pop(self, o: _Origin, lane: _Lane, item: _Queued) -> None:
        if lane.queue and lane.queue[0] is item:
            lane.queue.popleft()
            o.queued -= 1

    def _drop(
        self,
        i: int,
        o: _Origin,
        lane: _Lane,
        item: _Queued,
        reason: DropReason,
        actions: list[Action],
        resend: bool,
    ) -> None:
        if resend:  # the re-sent init failed for good: send what follows without it
            lane.resend_init = False
            return
        self._pop(o, lane, item)
        o.dropped += 1
        actions.append(Dropped(i, item.obj, reason))

    def _pump(self, i: int, now: float, actions: list[Action]) -> None:
        o = self._origins[i]
        for lane in o.lanes.values():
            if lane.in_flight is not None or not lane.queue:
                continue
            if lane.failures and now < lane.retry_at:
                continue
            if not o.breaker.allow(now):
                return  # open (or its probe is out): nothing goes to this origin now
            head = lane.queue[0]
            item = head
            if lane.resend_init and lane.init is not None and head.obj is not lane.init:
                item = _Queued(lane.init, -head.seq)  # ahead of the queue, not in it
            lane.in_flight = item
            actions.append(Send(i, item.seq, item.obj, item.attempts + 1))
