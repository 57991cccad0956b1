"""The fan-out's adapter: PUTs each stored CMAF object to every origin's ingest (HTTP, httpx).

`FanoutStore` wraps the packager's segment store: whatever the LiveEvent stores whole (init
sections, parts in low-latency mode, segments) is offered to `FanoutPublisher`, which never makes
the packager wait: `offer()` only queues. The decisions (order, bounded queues, backoff,
breakers) are `FanoutCore`'s; this module performs its `Send`s, one httpx client per origin (a
slow origin's connections never starve another's), arms one timer for `next_deadline()`, and
keeps the per-origin Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mainevent.media.origin.fanout import (
    Dropped,
    FanoutCore,
    FanoutEvent,
    IngestObject,
    ObjectKind,
    Offered,
    Outcome,
    Send,
    SendDone,
    Tick,
)
from mainevent.media.store import SegmentRecord, SegmentStore

__all__ = ["FanoutPublisher", "FanoutStore", "outcome_of"]

log = logging.getLogger(__name__)

SLATE_HEADER = "Mainevent-Slate"
HIDDEN_HEADER = "Mainevent-Hidden"
"""1 while the event is hidden from viewers on the packager's origin (in rehearsal)."""
BACKLOG_HEADER = "Mainevent-Backlog"
"""Objects still waiting for this origin behind this one: 0 tells a restarted origin it has
caught up (it then serves its event again, `ingest.py`)."""


def outcome_of(status: int, body: bytes) -> Outcome:
    """The core's view of an origin's answer to one PUT."""
    if status in (200, 201, 204):
        return Outcome.SAME if status == 204 else Outcome.STORED
    if status == 409:
        return Outcome.NEEDS_INIT if b'"init_required"' in body else Outcome.CONFLICT
    if status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.REJECTED


class _Metrics:
    def __init__(self, registry: CollectorRegistry, origins: Sequence[str]) -> None:
        self.registry = registry
        self.sends = Counter(
            "mainevent_ingest_sends_total",
            "Ingest PUTs to each origin by object type and outcome",
            ["origin", "type", "outcome"],
            registry=registry,
        )
        self.dropped = Counter(
            "mainevent_ingest_dropped_total",
            "Objects that will never reach an origin (queue full, refused, retries exhausted)",
            ["origin", "type", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "mainevent_ingest_put_seconds",
            "Duration of one ingest PUT",
            ["origin"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.queued = Gauge(
            "mainevent_ingest_queued",
            "Objects waiting to be sent to each origin (bounded per origin)",
            ["origin"],
            registry=registry,
        )
        self.breaker_open = Gauge(
            "mainevent_ingest_breaker_open",
            "1 while an origin's ingest breaker is open or half open",
            ["origin"],
            registry=registry,
        )
        self.origins = list(origins)


class FanoutPublisher:
    """Sends every offered object to each of `origins` (ingest base URLs) until stopped."""

    def __init__(
        self,
        origins: Sequence[str],
        *,
        secret: str | None = None,
        core: FanoutCore | None = None,
        registry: CollectorRegistry | None = None,
        timeout_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        transport: Callable[[int], httpx.AsyncBaseTransport | None] | None = None,
    ) -> None:
        if not origins:
            raise ValueError("the fan-out needs at least one origin ingest URL")
        self.origins = [o.rstrip("/") for o in origins]
        self.core = core or FanoutCore(len(origins))
        self.monotonic = monotonic
        self.hidden: Callable[[str], bool] = lambda event: False
        """Whether an event is hidden from viewers now (set by the stack: rehearsal)."""
        headers = {"authorization": f"Bearer {secret}"} if secret else {}
        self._clients = [
            httpx.AsyncClient(
                base_url=url,
                headers=headers,
                timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0)),
                limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
                trust_env=False,
                transport=transport(i) if transport is not None else None,
            )
            for i, url in enumerate(self.origins)
        ]
        self.metrics = _Metrics(registry or CollectorRegistry(), self.origins)
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- packager side ---------------------------------------------------------------------

    def offer(self, obj: IngestObject) -> None:
        """Queue `obj` for every origin (never waits; a full queue drops the origin's oldest)."""
        if self._closed:
            return
        self._handle(Offered(obj))

    def statistics(self) -> list[dict[str, Any]]:
        """Per origin: URL, queue, in-flight sends, breaker state, delivered and dropped."""
        out = []
        for i, url in enumerate(self.origins):
            st = self.core.statistics(i)
            out.append(
                {
                    "url": url,
                    "queued": st.queued,
                    "in_flight": st.in_flight,
                    "breaker": st.breaker.value,
                    "delivered": st.delivered,
                    "dropped": st.dropped,
                }
            )
        return out

    async def serve(self) -> None:
        """Run until cancelled; then stop sending and close the connections."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.Event().wait()
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            for t in list(self._tasks):
                t.cancel()
            for t in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for c in self._clients:
                await c.aclose()

    # -- core driving ----------------------------------------------------------------------

    def _handle(self, event: FanoutEvent) -> None:
        now = self.monotonic()
        for a in self.core.handle(event, now):
            if isinstance(a, Send):
                self._spawn(a)
            elif isinstance(a, Dropped):
                self._dropped(a)
        self._gauges()
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.next_deadline()
        if deadline is None or self._closed:
            return
        loop = self._loop or asyncio.get_running_loop()
        delay = max(0.0, deadline - self.monotonic())
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._handle(Tick())

    def _spawn(self, send: Send) -> None:
        task = asyncio.get_running_loop().create_task(self._put(send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put(self, send: Send) -> None:
        obj = send.obj
        st = self.core.statistics(send.origin)
        headers = {
            "content-type": "video/mp4",
            BACKLOG_HEADER: str(max(0, st.queued - st.in_flight)),
            HIDDEN_HEADER: "1" if self.hidden(obj.event) else "0",
        }
        if obj.slate:
            headers[SLATE_HEADER] = "1"
        t0 = self.monotonic()
        try:
            r = await self._clients[send.origin].put(obj.path, content=obj.data, headers=headers)
        except httpx.HTTPError as exc:
            outcome = Outcome.UNREACHABLE
            if send.attempt == 1:
                log.warning(
                    "ingest %s %s: %s", self.origins[send.origin], obj.path, type(exc).__name__
                )
        else:
            outcome = outcome_of(r.status_code, r.content)
            if outcome in (Outcome.CONFLICT, Outcome.REJECTED, Outcome.SERVER_ERROR):
                log.warning(
                    "ingest %s %s: %d %s",
                    self.origins[send.origin],
                    obj.path,
                    r.status_code,
                    r.text[:200],
                )
        duration = self.monotonic() - t0
        url = self.origins[send.origin]
        self.metrics.sends.labels(url, obj.kind.value, outcome.value).inc()
        self.metrics.latency.labels(url).observe(duration)
        if not self._closed:
            self._handle(SendDone(send.origin, send.seq, outcome, duration))

    def _dropped(self, a: Dropped) -> None:
        url = self.origins[a.origin]
        self.metrics.dropped.labels(url, a.obj.kind.value, a.reason.value).inc()
        log.warning("ingest %s: %s dropped (%s)", url, a.obj.path, a.reason.value)

    def _gauges(self) -> None:
        for i, url in enumerate(self.origins):
            st = self.core.statistics(i)
            self.metrics.queued.labels(url).set(st.queued)
            self.metrics.breaker_open.labels(url).set(0 if st.breaker.value == "closed" else 1)


class FanoutStore:
    """A `SegmentStore` that stores through `inner`, then offers each object to `publisher`.

    Only what is stored whole is offered (write before publish holds on every origin); `events`
    limits the fan-out to the events the origins serve, `parts` sends LL-HLS parts too.
    """

    def __init__(
        self,
        inner: SegmentStore,
        publisher: FanoutPublisher,
        *,
        events: frozenset[str] | None = None,
        parts: bool = True,
    ) -> None:
        self.inner = inner
        self.publisher = publisher
        self.events = events
        self.parts = parts
        self._init: dict[tuple[str, str], str] = {}  # (event, rendition) → init name sent last

    def _fans(self, event: str) -> bool:
        return self.events is None or event in self.events

    async def put_init(self, event: str, rendition: str, name: str, data: bytes) -> None:
        await self.inner.put_init(event, rendition, name, data)
        if self._fans(event):
            self._init[(event, rendition)] = name
            self.publisher.offer(IngestObject(event, rendition, name, ObjectKind.INIT, data))

    async def put_segment(
        self, event: str, rendition: str, record: SegmentRecord, data: bytes
    ) -> None:
        await self.inner.put_segment(event, rendition, record, data)
        if self._fans(event):
            if self._init.get((event, rendition)) != record.init_name:
                # Back to an init section stored before (live media after the slate): the
                # LiveEvent does not store it again, but the origins must switch to it too.
                init = self.inner.inits(event, rendition).get(record.init_name)
                if init is not None:
                    self._init[(event, rendition)] = record.init_name
                    kind = ObjectKind.INIT
                    self.publisher.offer(
                        IngestObject(event, rendition, record.init_name, kind, init)
                    )
            obj = IngestObject(
                event, rendition, f"{record.msn}.m4s", ObjectKind.SEGMENT, data, record.slate
            )
            self.publisher.offer(obj)

    def put_part(self, event: str, rendition: str, msn: int, index: int, data: bytes) -> None:
        self.inner.put_part(event, rendition, msn, index, data)
        if self.parts and self._fans(event):
            name = f"{msn}.{index}.m4s"
            self.publisher.offer(IngestObject(event, rendition, name, ObjectKind.PART, data))

    def ended(self, event: str, renditions: list[str]) -> None:
        """The event ended: each rendition's lane ends with an `end` after its last segment."""
        if self._fans(event):
            for r in renditions:
                self.publisher.offer(IngestObject(event, r, "end", ObjectKind.END, b""))

    async def read(self, event: str, rendition: str, name: str) -> bytes | None:
        return await self.inner.read(event, rendition, name)

    async def put_event_meta(self, event: str, name: str, data: bytes) -> None:
        # Event records (the end record) stay with the packager's own store: each origin
        # persists its own when the `end` of every rendition reached it.
        await self.inner.put_event_meta(event, name, data)

    def event_meta(self, event: str, name: str) -> bytes | None:
        return self.inner.event_meta(event, name)

    def records(self, event: str, rendition: str) -> list[SegmentRecord]:
        return self.inner.records(event, rendition)

    def inits(self, event: str, rendition: str) -> dict[str, bytes]:
        return self.inner.inits(event, rendition)

    def forget(self, event: str, rendition: str, msns: list[int]) -> None:
        self.inner.forget(event, rendition, msns)

    async def delete(self, event: str, rendition: str, msns: list[int]) -> None:
        await self.inner.delete(event, rendition, msns)
