"""The selector's adapter at the origin: pipelines in, one LiveEvent out.

Each pipeline publishes into its own `input(name)` (a `PipelineSink`). Validated segments are
held here (in memory) until the `Selector` decides; only the chosen copy reaches the LiveEvent,
which stores it before listing it, so a (rendition, MSN) is published once, with one content.
A ticker applies the deadlines (late copy → fallback, nothing in time → EXT-X-GAP), feeds the
pipelines' health to the selector, and raises the manifest stall alarm: a rendition that has
listed no new media for 1.5 × target duration.

Every transition into and out of slate/gap is logged with its cause (the selector's account of
each pipeline), and so is media listed after the fixed gap deadline (a late pipeline waited for
rather than slated: latency grew) and valid media discarded because its MSN was already covered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

from mainevent.media.cmaf import InitSection, Part, Segment
from mainevent.media.origin.live import LiveEvent
from mainevent.media.redundancy.selector import (
    Action,
    Discard,
    Gap,
    Publish,
    Selector,
    Switched,
)
from mainevent.media.redundancy.slate import SlateRendition
from mainevent.media.store import StoreError

log = logging.getLogger(__name__)

TICK_S = 0.1


class _Metrics:
    def __init__(self, event: LiveEvent, pipelines: tuple[str, ...]) -> None:
        reg = event.metrics.registry
        self.selected = Counter(
            "mainevent_selected_segments_total",
            "Segments published per source pipeline and why that copy was chosen",
            ["event", "pipeline", "reason"],
            registry=reg,
        )
        self.discarded = Counter(
            "mainevent_discarded_segments_total",
            "Valid segment copies not published (their MSN was already decided)",
            ["event", "pipeline"],
            registry=reg,
        )
        self.switches = Counter(
            "mainevent_pipeline_switches_total",
            "Changes of the preferred pipeline",
            ["event", "reason"],
            registry=reg,
        )
        self.preferred = Gauge(
            "mainevent_pipeline_preferred",
            "1 for the pipeline whose segments are preferred now",
            ["event", "pipeline"],
            registry=reg,
        )
        self.stalled = Gauge(
            "mainevent_manifest_stalled",
            "1 while a rendition has listed no new media for 1.5 × target duration",
            ["event", "rendition"],
            registry=reg,
        )
        self.slate = Counter(
            "mainevent_slate_segments_total",
            "Slate segments listed in place of lost input",
            ["event", "rendition"],
            registry=reg,
        )
        self.stall_alarms = Counter(
            "mainevent_manifest_stall_alarms_total",
            "Manifest stall alarms raised",
            ["event", "rendition"],
            registry=reg,
        )
        self.late = Counter(
            "mainevent_late_segments_total",
            "Segments listed after the fixed gap deadline: a late pipeline was waited for "
            "instead of listing the slate (latency grew)",
            ["event", "rendition", "pipeline"],
            registry=reg,
        )
        self.listing_late = Gauge(
            "mainevent_listing_late",
            "1 while a rendition lists its segments after the fixed gap deadline",
            ["event", "rendition"],
            registry=reg,
        )
        self.lateness = Gauge(
            "mainevent_listing_lateness_seconds",
            "Seconds from the end of the newest listed segment's capture interval to its listing",
            ["event", "rendition"],
            registry=reg,
        )
        self.discarded_covered = Counter(
            "mainevent_discarded_after_loss_total",
            "Valid segment copies discarded because slate or EXT-X-GAP already covers their MSN",
            ["event", "pipeline"],
            registry=reg,
        )
        for p in pipelines:
            self.preferred.labels(event.event_id, p).set(0)


class _Input:
    """One pipeline's view of the publisher (satisfies `PipelineSink`)."""

    def __init__(self, owner: RedundantPublisher, name: str) -> None:
        self._owner = owner
        self.name = name

    async def on_init(self, rendition: str, init: InitSection) -> str:
        return await self._owner._on_init(self.name, rendition, init)

    def on_part(self, rendition: str, part: Part) -> None:
        self._owner._on_part(self.name, rendition, part)

    async def on_segment(
        self, rendition: str, segment: Segment, *, suspect: str | None = None
    ) -> None:
        await self._owner._on_segment(self.name, rendition, segment, suspect)

    def on_rejected(
        self, rendition: str, msn: int, reason: str, *, drop_parts: bool = True
    ) -> None:
        self._owner._on_rejected(self.name, rendition, msn, reason, drop_parts)

    def next_msn_floor(self) -> int:
        return self._owner.event.next_msn_floor()


class RedundantPublisher:
    """Publishes, per rendition and MSN, one pipeline's copy into `event`."""

    def __init__(
        self,
        event: LiveEvent,
        selector: Selector,
        *,
        health: Callable[[], dict[str, bool]],
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.event = event
        self.selector = selector
        self.health = health
        self.wall = wall
        self.monotonic = monotonic
        self.stall_after_s = 1.5 * event.target_duration_s
        self.slate: dict[str, SlateRendition] | None = None
        """Per rendition; set once encoded (until then, and in `gap` mode, losses are gaps)."""
        self.paused = False
        """Operator pause: every segment the selector publishes is listed as the slate instead
        (pipelines and selection keep running, so resuming is immediate)."""
        self.inputs = {name: _Input(self, name) for name in selector.order}
        self._inits: dict[tuple[str, str], InitSection] = {}
        self._held: dict[tuple[str, str, int], Segment] = {}
        self._suspect: dict[tuple[str, str, int], str] = {}  # held copies from damaged input
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_delivery: dict[str, float] = {}  # pipeline -> monotonic of its last segment
        self._last_media: dict[str, float] = {}  # rendition -> monotonic of its last media
        self.stalled: dict[str, bool] = dict.fromkeys(selector.renditions, False)
        self.late: dict[str, bool] = dict.fromkeys(selector.renditions, False)
        # rendition -> (first MSN covered, MSNs covered) while slate/gap stands in for media
        self._covering: dict[str, tuple[int, int]] = {}
        self._discarding: set[tuple[str, str]] = set()  # (pipeline, rendition) being dropped
        self.metrics = _Metrics(event, selector.order)
        self.metrics.preferred.labels(event.event_id, selector.preferred).set(1)
        for r in selector.renditions:
            selector.restore(r, event.last_msn(r))

    def input(self, name: str) -> _Input:
        return self.inputs[name]

    # -- operator -------------------------------------------------------------------------

    async def force(self, mode: str) -> dict[str, Any]:
        """Prefer `mode` (a pipeline name) or `auto`; `SelectorError` if unknown."""
        async with self._lock:
            actions = self.selector.force(mode, self.wall())
            log.warning("operator set pipeline selection to %s", mode)
            await self._apply(actions)
        return self.status()

    def status(self) -> dict[str, Any]:
        st = self.selector.status(self.wall())
        st["stalled_renditions"] = sorted(r for r, s in self.stalled.items() if s)
        st["stall_after_s"] = self.stall_after_s
        return st

    # -- ticker ---------------------------------------------------------------------------

    async def serve(self) -> None:
        """Apply deadlines, health and the stall alarm until cancelled."""
        while True:
            await asyncio.sleep(TICK_S)
            async with self._lock:
                await self._tick()

    async def _tick(self) -> None:
        now_m = self.monotonic()
        external = self.health()
        actions: list[Action] = []
        for name in self.selector.order:
            delivered = self._last_delivery.get(name)
            producing = delivered is None or now_m - delivered < self.stall_after_s
            actions += self.selector.set_health(
                name, external.get(name, False) and producing, self.wall()
            )
        actions += self.selector.tick(self.wall())
        await self._apply(actions)
        self._check_stalls(now_m)

    def _check_stalls(self, now_m: float) -> None:
        for r in self.selector.renditions:
            last = self._last_media.get(r)
            stalled = last is not None and now_m - last >= self.stall_after_s
            if stalled and not self.stalled[r]:
                log.error(
                    "manifest stall: event %s rendition %s listed no new media for %.1f s "
                    "(limit 1.5 × TD = %.1f s); recovery: preferred %s, fallback to other "
                    "pipelines, EXT-X-GAP while none delivers",
                    self.event.event_id,
                    r,
                    now_m - last if last is not None else 0.0,
                    self.stall_after_s,
                    self.selector.preferred,
                )
                self.metrics.stall_alarms.labels(self.event.event_id, r).inc()
            elif not stalled and self.stalled[r]:
                log.warning("manifest stall cleared: event %s rendition %s", self.event.event_id, r)
            self.stalled[r] = stalled
            self.metrics.stalled.labels(self.event.event_id, r).set(1 if stalled else 0)

    # -- pipeline inputs ------------------------------------------------------------------

    async def _on_init(self, pipeline: str, rendition: str, init: InitSection) -> str:
        self._inits[(pipeline, rendition)] = init
        if self.event.init_name(rendition) is None:
            # The first init of a rendition makes its codec known (multivariant playlist).
            return await self.event.on_init(rendition, init)
        return ""

    def _on_part(self, pipeline: str, rendition: str, part: Part) -> None:
        if self.paused:
            return  # the slate's parts are listed with its segment
        if pipeline == self.selector.preferred and self._same_init(pipeline, rendition):
            self.event.on_part(rendition, part)

    def _same_init(self, pipeline: str, rendition: str) -> bool:
        init = self._inits.get((pipeline, rendition))
        return init is not None and self.event.is_current_init(rendition, init)

    async def _on_segment(
        self, pipeline: str, rendition: str, segment: Segment, suspect: str | None
    ) -> None:
        self._last_delivery[pipeline] = self.monotonic()
        async with self._lock:
            key = (pipeline, rendition, segment.msn)
            self._held[key] = segment
            if suspect:
                self._suspect[key] = suspect
            await self._apply(
                self.selector.offer(
                    pipeline, rendition, segment.msn, self.wall(), suspect=suspect is not None
                )
            )

    def _on_rejected(
        self, pipeline: str, rendition: str, msn: int, reason: str, drop_parts: bool
    ) -> None:
        preferred = pipeline == self.selector.preferred
        self.event.on_rejected(
            rendition, msn, reason, drop_parts=drop_parts and preferred, source=pipeline
        )
        if msn >= 0:
            task = asyncio.get_running_loop().create_task(self._reject(pipeline, rendition, msn))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _reject(self, pipeline: str, rendition: str, msn: int) -> None:
        async with self._lock:
            await self._apply(self.selector.reject(pipeline, rendition, msn, self.wall()))

    # -- actions --------------------------------------------------------------------------

    async def _cover_loss(self, rendition: str, msn: int, cause: str) -> None:
        """No pipeline can deliver up to `msn`: list the slate there (or EXT-X-GAP)."""
        ev = self.event
        slate = self.slate.get(rendition) if self.slate else None
        last = ev.last_msn(rendition)
        entering = "into" if rendition not in self._covering else "still in"
        first_lost = msn if last is None else last + 1
        start, covered = self._covering.get(rendition, (first_lost, 0))
        self._covering[rendition] = (start, covered + msn - first_lost + 1)
        if slate is None or last is None:
            if ev.publish_gap(rendition, msn):
                log.warning(
                    "event %s rendition %s: %s EXT-X-GAP up to segment %d "
                    "(no pipeline can deliver it: %s)",
                    ev.event_id,
                    rendition,
                    entering,
                    msn,
                    cause or "no cause given",
                )
            return
        first = max(last + 1, msn - ev.window_segments + 1)
        for m in range(first, msn + 1):
            await self._list_slate(rendition, m)
        log.warning(
            "event %s rendition %s: %s slate up to segment %d (no pipeline can deliver it: %s)",
            ev.event_id,
            rendition,
            entering,
            msn,
            cause or "no cause given",
        )

    async def _list_slate(self, rendition: str, msn: int) -> None:
        """The slate as segment `msn` (EXT-X-GAP while no slate is encoded)."""
        ev = self.event
        slate = self.slate.get(rendition) if self.slate else None
        if slate is None:
            ev.publish_gap(rendition, msn)
            return
        seg, parts = slate.at(msn)
        try:
            await ev.on_init(rendition, slate.init)
            await ev.on_segment(rendition, seg, slate_parts=parts)
        except StoreError as exc:
            ev.on_rejected(rendition, msn, f"store: {exc}", source="slate")
            return
        self.metrics.slate.labels(ev.event_id, rendition).inc()

    def _late_s(self, msn: int) -> float:
        """Seconds since the end of segment `msn`'s capture interval."""
        return self.wall() - (msn + 1) * self.selector.d

    def _listed(self, a: Publish) -> None:
        """Media listed: leave slate/gap, and raise or clear the late-listing alarm."""
        ev, r = self.event, a.rendition
        late = self._late_s(a.msn)
        self.metrics.lateness.labels(ev.event_id, r).set(round(late, 3))
        self._discarding.discard((a.pipeline, r))
        covering = self._covering.pop(r, None)
        if covering is not None:
            log.warning(
                "event %s rendition %s: out of slate/gap: segment %d from %s listed %.1f s "
                "after its capture end, after %d covered segments from %d",
                ev.event_id,
                r,
                a.msn,
                a.pipeline,
                late,
                covering[1],
                covering[0],
            )
        if late > self.selector.gap_after_s:
            self.metrics.late.labels(ev.event_id, r, a.pipeline).inc()
            if not self.late[r]:
                log.warning(
                    "event %s rendition %s: listing late: segment %d from %s came %.1f s after "
                    "its capture end (fixed deadline %.1f s); waiting for it rather than "
                    "listing the slate: latency grows",
                    ev.event_id,
                    r,
                    a.msn,
                    a.pipeline,
                    late,
                    self.selector.gap_after_s,
                )
            self.late[r] = True
        elif self.late[r] and late <= self.selector.late_after_s:
            log.warning(
                "event %s rendition %s: listing on time again: segment %d from %s %.1f s "
                "after its capture end",
                ev.event_id,
                r,
                a.msn,
                a.pipeline,
                late,
            )
            self.late[r] = False
        self.metrics.listing_late.labels(ev.event_id, r).set(1 if self.late[r] else 0)

    def _discarded_covered(self, a: Discard) -> None:
        """A valid copy came for an MSN already covered by slate/gap: say so (once a run)."""
        self.metrics.discarded_covered.labels(self.event.event_id, a.pipeline).inc()
        key = (a.pipeline, a.rendition)
        if key in self._discarding:
            return
        self._discarding.add(key)
        log.warning(
            "event %s rendition %s: valid segment %d from %s discarded, %.1f s after its "
            "capture end: %s (the slate/gap there is already listed)",
            self.event.event_id,
            a.rendition,
            a.msn,
            a.pipeline,
            self._late_s(a.msn),
            a.reason,
        )

    async def _apply(self, actions: list[Action]) -> None:
        ev = self.event
        for a in actions:
            if isinstance(a, Publish) and self.paused:
                self._held.pop((a.pipeline, a.rendition, a.msn), None)
                self._suspect.pop((a.pipeline, a.rendition, a.msn), None)
                await self._list_slate(a.rendition, a.msn)
                self._last_media[a.rendition] = self.monotonic()
            elif isinstance(a, Publish):
                seg = self._held.pop((a.pipeline, a.rendition, a.msn))
                init = self._inits[(a.pipeline, a.rendition)]
                chosen_damage = self._suspect.pop((a.pipeline, a.rendition, a.msn), None)
                try:
                    await ev.on_init(a.rendition, init)
                    await ev.on_segment(a.rendition, seg, suspect=chosen_damage)
                except StoreError as exc:
                    # Not stored whole → not listed; the window lists the MSN as a gap.
                    ev.on_rejected(a.rendition, a.msn, f"store: {exc}", source=a.pipeline)
                    continue
                self._last_media[a.rendition] = self.monotonic()
                self._listed(a)
                reason = a.reason.split(":", 1)[0]
                self.metrics.selected.labels(ev.event_id, a.pipeline, reason).inc()
                if a.reason != "preferred":
                    log.warning(
                        "event %s rendition %s: segment %d from %s (%s)",
                        ev.event_id,
                        a.rendition,
                        a.msn,
                        a.pipeline,
                        a.reason,
                    )
            elif isinstance(a, Discard):
                self._held.pop((a.pipeline, a.rendition, a.msn), None)
                damage = self._suspect.pop((a.pipeline, a.rendition, a.msn), None)
                if damage is not None:
                    # Replaced by a clean copy: counted and logged like a failed validation.
                    ev.on_rejected(
                        a.rendition,
                        a.msn,
                        f"input corrupt: {damage}",
                        drop_parts=False,
                        source=a.pipeline,
                    )
                self.metrics.discarded.labels(ev.event_id, a.pipeline).inc()
                if "already gap" in a.reason:
                    self._discarded_covered(a)
                log.debug("discarded %s %s/%d: %s", a.pipeline, a.rendition, a.msn, a.reason)
            elif isinstance(a, Gap):
                for key in [k for k in self._held if k[1] == a.rendition and k[2] <= a.msn]:
                    del self._held[key]
                    self._suspect.pop(key, None)
                await self._cover_loss(a.rendition, a.msn, a.cause)
            elif isinstance(a, Switched):
                log.warning("preferred pipeline %s → %s (%s)", a.previous, a.current, a.reason)
                self.metrics.switches.labels(ev.event_id, a.reason.split(":", 1)[0]).inc()
                self.metrics.preferred.labels(ev.event_id, a.previous).set(0)
                self.metrics.preferred.labels(ev.event_id, a.current).set(1)
