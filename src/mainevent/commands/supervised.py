"""The event supervisor's adapter: carries out `mainevent.control.supervisor` decisions on real
media (the one place that sees both planes, as the import contract allows for `commands/`).

`EventMedia` is one event's media: its `LiveEvent` (restored from the store, so a restart
continues the media sequence), ingest listeners with the event's own credentials and ports,
primary and backup pipelines, the redundant publisher, the slate, and — with the feed
simulator on — a simulated venue feed per pipeline. `MediaSupervisor` feeds the sans-IO core
(records from the control store, media health, the clock), arms one timer for its next
deadline, and applies its actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mainevent.common.eventspec import Rung
from mainevent.config import Settings
from mainevent.control.schemas import EventOut
from mainevent.control.supervisor.core import Supervisor
from mainevent.control.supervisor.model import (
    Action,
    ArchiveMedia,
    EndMedia,
    EventRecord,
    Feature,
    Input,
    MediaFailed,
    MediaSpec,
    MediaStarted,
    PreflightDone,
    RecordChanged,
    ReportError,
    RequestTransition,
    RungSpec,
    RunPreflight,
    SetDegraded,
    SetDvrWindow,
    SetPipelineMode,
    SetVisibility,
    StartMedia,
    Tick,
    Visibility,
)
from mainevent.control.supervisor.preflight import PreflightFacts
from mainevent.media.encode.ffmpeg import IngestSpec
from mainevent.media.encode.pipeline import Pipeline, PipelineCollector
from mainevent.media.feed import FeedProcess
from mainevent.media.origin.app import Origin
from mainevent.media.origin.live import LiveEvent, Metrics
from mainevent.media.redundancy.publisher import RedundantPublisher
from mainevent.media.redundancy.slate import SlateError, encode_slate
from mainevent.media.store import SegmentStore

if TYPE_CHECKING:
    from mainevent.control.app import ControlServices

__all__ = [
    "DEMO_PREFLIGHT_WAIT_S",
    "EventMedia",
    "MediaSupervisor",
    "create_demo_event",
    "demo_go_live",
    "event_settings",
    "record_of",
]

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 2.0
"""How often a running event's pipelines are looked at (start-up failures, recovery)."""
START_GRACE_S = 20.0
"""A pipeline not producing this long after its event's media started is reported failing."""


def record_of(out: EventOut) -> EventRecord:
    """The supervisor's view of a control-plane event."""
    ig = out.ingest
    return EventRecord(
        id=out.id,
        status=out.status,
        version=out.version,
        media=MediaSpec(
            ladder=tuple(RungSpec(r.id, r.width, r.height, r.bitrate_kbps) for r in out.ladder),
            segment_duration_ms=out.segment_duration_ms,
            latency_mode=out.latency_mode,
            protocol=ig.protocol,
            stream_key=ig.stream_key,
            passphrase=ig.passphrase,
            port=ig.port,
            backup_port=ig.backup_port,
            dvr_window_s=out.dvr_window_s,
        ),
        starts_at=out.starts_at.timestamp() if out.starts_at else None,
        ends_at=out.ends_at.timestamp() if out.ends_at else None,
        rehearsal_lead_s=float(out.rehearsal_lead_s),
        degraded=frozenset(Feature(f) for f in out.degraded),
        pipeline_mode=out.pipeline_mode,
    )


def event_settings(
    base: Settings, event_id: str, spec: MediaSpec, ports: dict[str, int]
) -> Settings:
    """The platform's settings with this event's ladder, timing, DVR window, credentials and
    ports (the record's `dvr_window_s`, not the platform's `dvr.window_s`, sets the window)."""
    ev = base.event.model_copy(
        update={
            "id": event_id,
            "ladder": [
                Rung(id=r.id, width=r.width, height=r.height, bitrate_kbps=r.bitrate_kbps)
                for r in spec.ladder
            ],
            "segment_duration_ms": spec.segment_duration_ms,
            "latency": spec.latency_mode,
        }
    )
    ig = base.ingest.model_copy(
        update={
            "protocol": spec.protocol,
            "stream_key": spec.stream_key,
            "passphrase": spec.passphrase,
            "port": ports["primary"],
        }
    )
    red = base.redundancy.model_copy(update={"backup_port": ports["backup"]})
    dvr = base.dvr.model_copy(update={"window_s": spec.dvr_window_s})
    return base.model_copy(update={"event": ev, "ingest": ig, "redundancy": red, "dvr": dvr})


@dataclass
class EventMedia:
    """One event's media plane (see the module docstring)."""

    settings: Settings
    event: LiveEvent
    ingests: dict[str, IngestSpec]
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    publisher: RedundantPublisher | None = None
    feeds: dict[str, FeedProcess] = field(default_factory=dict)
    started_m: float = field(default_factory=time.monotonic)
    degraded: frozenset[Feature] = frozenset()
    rejected_at_start: float = 0.0
    """Rejections counted before this media started (or up to the last preflight)."""
    task: asyncio.Task[None] | None = None
    failures: dict[str, str] = field(default_factory=dict)
    """Pipelines that stopped with an error → the error."""

    @property
    def event_id(self) -> str:
        return self.event.event_id

    def rejected(self) -> float:
        """Segments rejected (validation, store) since this media started or the last preflight."""
        total = 0.0
        for metric in self.event.metrics.rejected.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("event") == self.event_id:
                    total += sample.value
        return total - self.rejected_at_start

    async def run(self, ffmpeg: str, with_feed: bool) -> None:
        """Pipelines, publisher, slate (and simulated venue feeds) until cancelled."""
        from mainevent.commands.stack import ladder_spec, simulated_feed

        ladder = ladder_spec(self.settings)
        async with asyncio.TaskGroup() as tg:
            for name, p in self.pipelines.items():
                tg.create_task(self._pipeline(name, p))
            if self.publisher is not None:
                tg.create_task(self.publisher.serve())
                tg.create_task(self._encode_slate(ffmpeg, self.publisher, ladder))
            if with_feed:
                for name, ingest in self.ingests.items():
                    self.feeds[name] = simulated_feed(self.settings, ffmpeg, ingest)
                    tg.create_task(self._feed_when_listening(self.feeds[name]))

    async def _pipeline(self, name: str, pipeline: Pipeline) -> None:
        """One pipeline; if it fails (e.g. its ingest port is taken) the error is kept for the
        event and the other pipeline carries on."""
        try:
            await pipeline.serve()
        except Exception as exc:
            log.error("event %s: pipeline %s stopped: %s", self.event_id, name, exc)
            self.failures[name] = f"{exc.__class__.__name__}: {exc}"

    @staticmethod
    async def _encode_slate(ffmpeg: str, publisher: RedundantPublisher, ladder: Any) -> None:
        try:
            publisher.slate = await encode_slate(ffmpeg, ladder)
        except SlateError as exc:
            log.error("%s; pause and total input loss will be listed as EXT-X-GAP", exc)

    @staticmethod
    async def _feed_when_listening(feed: FeedProcess) -> None:
        await asyncio.sleep(0.5)  # the ingest listener binds first
        await feed.serve()

    def state(self) -> dict[str, Any]:
        """Ingest health per pipeline, the published pipeline, manifest freshness."""
        pipelines = []
        for name, p in self.pipelines.items():
            st = p.status()
            feed = st["feed"]
            pipelines.append(
                {
                    "name": name,
                    "healthy": p.is_healthy(),
                    "state": st["state"],
                    "verdict": st["verdict"],
                    "reason": st["reason"],
                    "connected": bool(feed.get("connected")),
                    "bitrate_kbps": feed.get("bitrate_kbps"),
                    "fps": feed.get("fps"),
                    "dropped_frames": feed.get("dropped_frames"),
                    "av_drift_ms": None
                    if feed.get("av_offset_s") is None
                    else round(1000 * feed["av_offset_s"], 1),
                    "since_last_packet_s": feed.get("since_last_packet_s"),
                    "ingest_url": self.ingests[name].publish_url,
                    "transcoder_restarts": st["transcoder_restarts"],
                }
            )
        published = None
        mode = "auto"
        if self.publisher is not None:
            sel = self.publisher.status()
            published = sel.get("preferred")
            mode = str(sel.get("mode", "auto"))
        return {
            "pipelines": pipelines,
            "published_pipeline": published,
            "pipeline_mode": mode,
            "renditions": [
                {
                    "rendition": r,
                    "last_msn": self.event.last_msn(r),
                    "since_publish_s": self.event.stalled_for(r),
                }
                for r in self.event.rendition_ids
            ],
        }


def _ports_file(data_dir: Path, event_id: str) -> Path:
    return data_dir / "_media" / f"{event_id}.json"


class MediaSupervisor:
    """Runs every event's media as its record says (implements the control plane's
    `MediaPlane`); `serve()` runs under the stack's task group."""

    def __init__(
        self,
        *,
        settings: Settings,
        services: ControlServices,
        control_url: str,
        admin_key: str,
        origin: Origin,
        events: dict[str, LiveEvent],
        store: SegmentStore,
        ffmpeg: str,
        with_feed: bool,
        edge_urls: Callable[[], dict[str, str]],
        rehearsal_secret: str,
        retry_s: float = 1.0,
        resync_s: float | None = None,
        on_media: Callable[[EventMedia], None] | None = None,
        on_visibility: Callable[[str, Visibility], None] | None = None,
        on_degraded: Callable[[str, frozenset[Feature]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.services = services
        self.control_url = control_url
        self.admin_key = admin_key
        self.origin = origin
        self.events = events
        self.store = store
        self.ffmpeg = ffmpeg
        self.with_feed = with_feed
        self.edge_urls = edge_urls
        self.rehearsal_secret = rehearsal_secret
        self.core = Supervisor(retry_s=retry_s, resync_s=resync_s)
        self.on_media = on_media
        self.on_visibility = on_visibility
        self.on_degraded = on_degraded
        """Told the features switched off for an event (the stack turns telemetry detail off)."""
        self.clock = clock
        self.media: dict[str, EventMedia] = {}
        self.errors: dict[str, str] = {}
        self.visibility: dict[str, Visibility] = {}
        self._changed: set[str] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._health_at = 0.0

    # -- MediaPlane (called by the control plane) ----------------------------------------------

    def changed(self, event_id: str) -> None:
        """An event's record changed (from any thread): re-read it on the loop."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._mark, event_id)

    def _mark(self, event_id: str) -> None:
        self._changed.add(event_id)
        self._wake.set()

    def rehearsal_key(self, event_id: str) -> str:
        mac = hmac.new(self.rehearsal_secret.encode(), event_id.encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def media_state(self, event_id: str) -> dict[str, Any] | None:
        snap = self.core.event(event_id)
        if snap is None:
            return None
        m = self.media.get(event_id)
        vis = self.visibility.get(event_id)
        base: dict[str, Any] = {
            "event_id": event_id,
            "phase": snap.phase.value,
            "error": self.errors.get(event_id),
            "published_pipeline": None,
            "pipeline_mode": "auto",
            "degraded": sorted(snap.degraded),
            "pipelines": [],
            "renditions": [],
            "rehearsal_path": f"/rehearsal/{self.rehearsal_key(event_id)}/{event_id}/master.m3u8"
            if vis is Visibility.REHEARSAL
            else None,
            "live_path": f"/live/{event_id}/master.m3u8",
            "ended": snap.phase.value in ("ended", "archived"),
        }
        if m is not None:
            base |= m.state()
        elif (ev := self.events.get(event_id)) is not None:
            base["renditions"] = [
                {"rendition": r, "last_msn": ev.last_msn(r), "since_publish_s": ev.stalled_for(r)}
                for r in ev.rendition_ids
            ]
        return base

    async def preflight_facts(self, event_id: str) -> PreflightFacts | None:
        m = self.media.get(event_id)
        if m is None:
            return None
        ev = m.event
        rejected = m.rejected()
        m.rejected_at_start += rejected  # the next preflight counts from here
        return PreflightFacts(
            pipelines={n: p.is_healthy() for n, p in m.pipelines.items()},
            rejected_segments=int(rejected),
            since_publish_s={r: ev.stalled_for(r) for r in ev.rendition_ids},
            target_duration_s=ev.target_duration_s,
            cdn_problems=await self._cdn_problems(m),
        )

    async def _cdn_problems(self, m: EventMedia) -> dict[str, str | None]:
        """Fetch the newest segment of the first rendition through every CDN path."""
        ev = m.event
        rendition = ev.rendition_ids[0]
        last = ev.last_msn(rendition)
        vis = self.visibility.get(ev.event_id)
        prefix = (
            f"/rehearsal/{self.rehearsal_key(ev.event_id)}/{ev.event_id}"
            if vis is Visibility.REHEARSAL
            else f"/live/{ev.event_id}"
        )
        out: dict[str, str | None] = {}
        edges = self.edge_urls()
        if last is None:
            return dict.fromkeys(edges, "nothing published yet")
        async with httpx.AsyncClient(timeout=5) as client:
            for name, url in edges.items():
                try:
                    r = await client.get(f"{url}{prefix}/{rendition}/{last}.m4s")
                except httpx.HTTPError as exc:
                    out[name] = f"unreachable: {exc.__class__.__name__}"
                    continue
                if r.status_code != 200 or not r.content:
                    out[name] = f"segment {last} answered {r.status_code}"
                else:
                    out[name] = None
        return out

    # -- loop ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Load every record, then act on changes and deadlines until cancelled."""
        self._loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for out in await asyncio.to_thread(self.services.store.list_events, None, 1000):
                await self._feed(RecordChanged(record_of(out)))
            while True:
                deadline = self.core.next_deadline()
                if any(m.task is not None for m in self.media.values()):
                    self._health_at = self._health_at or self.clock() + HEALTH_CHECK_S
                    deadline = min(deadline or self._health_at, self._health_at)
                timeout = None if deadline is None else max(0.0, deadline - self.clock())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                self._wake.clear()
                now = self.clock()
                changed, self._changed = self._changed, set()
                for event_id in sorted(changed):
                    await self._reload(event_id)
                if self.core.wants_resync(now):
                    for out in await asyncio.to_thread(self.services.store.list_events, None, 1000):
                        await self._feed(RecordChanged(record_of(out)))
                await self._feed(Tick())
                if self._health_at and now >= self._health_at:
                    self._health_at = now + HEALTH_CHECK_S
                    await self._check_health()

    async def _reload(self, event_id: str) -> None:
        try:
            out = await asyncio.to_thread(self.services.store.get_event, event_id)
        except Exception as exc:  # NotFound, database down: the next change retries
            log.warning("supervisor: cannot read event %s: %s", event_id, exc)
            return
        await self._feed(RecordChanged(record_of(out)))

    async def _feed(self, event: Input) -> None:
        todo = list(self.core.handle(event, self.clock()))
        while todo:
            action = todo.pop(0)
            try:
                more = await self._apply(action)
            except Exception:
                log.exception("supervisor: %s failed", action)
                continue
            if more is not None:
                todo += self.core.handle(more, self.clock())

    async def _check_health(self) -> None:
        now_m = time.monotonic()
        for event_id, m in list(self.media.items()):
            if m.task is None:
                continue
            if m.failures:
                name, why = next(iter(m.failures.items()))
                await self._feed(MediaFailed(event_id, name, f"could not run: {why}"))
                continue
            sick = [(n, p) for n, p in m.pipelines.items() if not p.is_healthy()]
            if not sick:
                await self._feed(MediaStarted(event_id))
            elif now_m - m.started_m >= START_GRACE_S:
                name, p = sick[0]
                verdict, reason = p.verdict(now_m)
                await self._feed(
                    MediaFailed(event_id, name, f"{p.state}, feed {verdict}: {reason}")
                )

    # -- actions ------------------------------------------------------------------------------

    async def _apply(self, a: Action) -> Input | None:
        if isinstance(a, StartMedia):
            return self._start(a.event_id, a.spec)
        if isinstance(a, SetVisibility):
            self._set_visibility(a.event_id, a.visibility)
        elif isinstance(a, EndMedia):
            await self._end(a.event_id, a.spec)
        elif isinstance(a, ArchiveMedia):
            await self._stop(a.event_id)
            self.origin.rehearsal.pop(a.event_id, None)
        elif isinstance(a, SetDegraded):
            self._set_degraded(a.event_id, a.features)
        elif isinstance(a, SetDvrWindow):
            self.set_dvr_window(a.event_id, a.window_s)
        elif isinstance(a, SetPipelineMode):
            m = self.media.get(a.event_id)
            if m is not None and m.publisher is not None:
                await m.publisher.force(a.mode)
        elif isinstance(a, ReportError):
            if a.message is None:
                self.errors.pop(a.event_id, None)
            else:
                log.error("event %s: %s", a.event_id, a.message)
                self.errors[a.event_id] = a.message
        elif isinstance(a, RequestTransition):
            await self._transition(a)
            await self._reload(a.event_id)
        elif isinstance(a, RunPreflight):
            return await self._preflight(a.event_id)
        return None

    def _ports(self, event_id: str, spec: MediaSpec) -> dict[str, int]:
        """The event's ingest ports: from the record, else the ones it had (kept on disk so a
        venue reconnects to the same port after a restart), else free ones."""
        from mainevent.commands.stack import free_port

        path = _ports_file(self.settings.origin.data_dir, event_id)
        kept: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            kept = {k: int(v) for k, v in json.loads(path.read_text()).items()}
        import socket

        kind = socket.SOCK_DGRAM if spec.protocol == "srt" else socket.SOCK_STREAM
        host = self.settings.ingest.host
        ports = {
            "primary": spec.port or kept.get("primary") or free_port(kind, host),
            "backup": spec.backup_port or kept.get("backup") or free_port(kind, host),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ports))
        return ports

    def _live_event(self, s: Settings) -> LiveEvent:
        from prometheus_client import CollectorRegistry

        from mainevent.commands.stack import live_event

        existing = self.events.get(s.event.id)
        if existing is not None:
            existing.set_dvr_window(s.dvr.window_s)
            return existing
        event = live_event(s, self.store, Metrics(CollectorRegistry()))
        restored = event.restore()
        if restored:
            log.info("event %s: restored %d published segments", s.event.id, restored)
        return event

    def _start(self, event_id: str, spec: MediaSpec) -> Input | None:
        from mainevent.commands.stack import ingest_spec, ladder_spec, redundant_publisher

        if event_id in self.media:
            return None
        try:
            s = event_settings(self.settings, event_id, spec, self._ports(event_id, spec))
            event = self._live_event(s)
        except Exception as exc:
            return MediaFailed(event_id, "primary", f"cannot start: {exc}")
        self.origin.rehearsal[event_id] = self.rehearsal_key(event_id)  # hidden until told
        self.events[event_id] = event
        ingests = {"primary": ingest_spec(s, s.ingest.port)}
        if s.redundancy.backup:
            ingests["backup"] = ingest_spec(s, s.redundancy.backup_port)
        m = EventMedia(settings=s, event=event, ingests=ingests)
        # A publisher even for one pipeline: it lists the slate while the event is paused.
        m.publisher = redundant_publisher(s, event, m.pipelines, tuple(ingests))
        ladder = ladder_spec(s)
        for name, ig in ingests.items():
            m.pipelines[name] = Pipeline(
                name=name,
                sink=m.publisher.input(name),
                ffmpeg=self.ffmpeg,
                ingest=ig,
                ladder=ladder,
                stall_timeout_s=s.encoder.stall_timeout_s,
                input_timeout_s=s.ingest.input_timeout_s,
                restart_backoff_s=s.encoder.restart_backoff_s,
            )
        event.metrics.registry.register(PipelineCollector(list(m.pipelines.values())))
        m.rejected_at_start = m.rejected()
        assert self._tg is not None
        m.task = self._tg.create_task(self._run(m))
        self.media[event_id] = m
        log.info(
            "event %s: media started (ingest %s)",
            event_id,
            ", ".join(f"{n} {i.publish_url}" for n, i in ingests.items()),
        )
        if self.on_media is not None:
            self.on_media(m)
        return None

    async def _run(self, m: EventMedia) -> None:
        try:
            await m.run(self.ffmpeg, self.with_feed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("event %s: media stopped", m.event_id)
            self.errors[m.event_id] = f"media stopped: {exc}"

    def set_dvr_window(self, event_id: str, window_s: int) -> None:
        """The event's DVR window changed in its record: its live playlists follow at once
        (`LiveEvent.set_dvr_window`: shorter drops the head, longer grows from now on)."""
        event = self.events.get(event_id)
        if event is not None:
            event.set_dvr_window(window_s)

    def _set_visibility(self, event_id: str, v: Visibility) -> None:
        self.visibility[event_id] = v
        if v is Visibility.REHEARSAL:
            self.origin.rehearsal[event_id] = self.rehearsal_key(event_id)
        else:
            self.origin.rehearsal.pop(event_id, None)
        m = self.media.get(event_id)
        if m is not None and m.publisher is not None:
            m.publisher.paused = v is Visibility.PAUSED
        log.warning("event %s: media %s", event_id, v.value)
        if self.on_visibility is not None:
            self.on_visibility(event_id, v)

    def _set_degraded(self, event_id: str, features: frozenset[Feature]) -> None:
        """DVR off or on at the origin (`LiveEvent.set_dvr_off`); the rest through
        `on_degraded` (telemetry detail: the collector)."""
        event = self.events.get(event_id)
        if event is not None:
            event.set_dvr_off(Feature.DVR in features)
        if (m := self.media.get(event_id)) is not None:
            m.degraded = features
        if self.on_degraded is not None:
            self.on_degraded(event_id, features)
        log.warning(
            "event %s: degraded: %s",
            event_id,
            ", ".join(f"{f} off" for f in sorted(features)) or "every feature back on",
        )

    async def _stop(self, event_id: str) -> None:
        m = self.media.pop(event_id, None)
        if m is None or m.task is None:
            return
        m.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await m.task
        m.task = None

    async def _end(self, event_id: str, spec: MediaSpec) -> None:
        await self._stop(event_id)
        self.origin.rehearsal.pop(event_id, None)
        self.visibility.pop(event_id, None)
        event = self.events.get(event_id)
        if event is None:  # a restart: serve what was stored, as VOD
            ports = {"primary": spec.port, "backup": spec.backup_port}
            event = self._live_event(event_settings(self.settings, event_id, spec, ports))
            self.events[event_id] = event
        await event.end()
        log.warning("event %s: ended (ENDLIST, pipelines stopped, ingest closed)", event_id)

    async def _control(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.admin_key}",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        async with httpx.AsyncClient(base_url=self.control_url, timeout=15) as client:
            return await client.request(method, path, json=body, headers=headers)

    async def _transition(self, a: RequestTransition) -> None:
        r = await self._control("POST", f"/v1/events/{a.event_id}/transitions", {"to": a.to.value})
        if r.status_code == 200:
            log.warning("event %s: %s (%s)", a.event_id, a.to.value, a.reason)
        else:
            log.warning("event %s: could not move to %s: %s", a.event_id, a.to.value, r.text[:300])

    async def _preflight(self, event_id: str) -> Input:
        r = await self._control("POST", f"/v1/events/{event_id}/preflight", None)
        if r.status_code != 200:
            return PreflightDone(event_id, False, (f"preflight answered {r.status_code}",))
        body = r.json()
        return PreflightDone(event_id, bool(body["passed"]), tuple(body["failing"]))


async def create_demo_event(
    control_url: str,
    admin_key: str,
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bool:
    """The settings' event, created through the control plane's own API if it does not exist
    yet: scheduled to start now with no rehearsal lead, so the supervisor takes it through
    rehearsal and a preflight to live on its own. An existing record is left as it is (a
    restart resumes it in its recorded state)."""
    from datetime import UTC, datetime, timedelta

    ev, ig = settings.event, settings.ingest
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(
        base_url=control_url, timeout=15, headers=headers, transport=transport
    ) as client:
        found = await client.get(f"/v1/events/{ev.id}")
        if found.status_code == 200:
            status = found.json()["status"]
            if status in ("ended", "archived"):
                log.warning(
                    "event %s is %s in the control plane's database: it is served as recorded "
                    "(start with another --event, or a fresh --data-dir, for a new demo)",
                    ev.id,
                    status,
                )
            return False
        now = datetime.now(UTC)
        body = {
            "id": ev.id,
            "title": f"{ev.id} (demo event of mainevent up)",
            "starts_at": now.isoformat(),
            "ends_at": (now + timedelta(days=7)).isoformat(),
            "ladder": [r.model_dump() for r in ev.ladder],
            "segment_duration_ms": ev.segment_duration_ms,
            "latency_mode": ev.latency,
            "dvr_window_s": settings.dvr.window_s,
            "rehearsal_lead_s": 0,
            "ingest": {
                "protocol": ig.protocol,
                "stream_key": ig.stream_key,
                "passphrase": ig.passphrase,
                "port": ig.port,
                "backup_port": settings.redundancy.backup_port,
            },
        }
        for method, path, payload in (
            ("POST", "/v1/events", body),
            ("POST", f"/v1/events/{ev.id}/transitions", {"to": "scheduled"}),
        ):
            r = await client.request(
                method, path, json=payload, headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            if r.status_code >= 300:
                log.error(
                    "demo event %s: %s %s answered %s: %s",
                    ev.id,
                    method,
                    path,
                    r.status_code,
                    r.text[:500],
                )
                return False
        log.info("demo event %s created through the control plane's API", ev.id)
        return True


DEMO_OVERRIDE = "demo event of mainevent up"
DEMO_PREFLIGHT_WAIT_S = 60.0
"""How long the demo event waits in rehearsal for a passing preflight before it goes live with
an audited override (`mainevent up --demo-preflight-wait`)."""


async def demo_go_live(
    control_url: str,
    admin_key: str,
    event_id: str,
    live: asyncio.Event,
    *,
    wait_s: float = DEMO_PREFLIGHT_WAIT_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bool:
    """The demo goes live like any event: at `starts_at` (now) the supervisor runs its
    preflight, retries it while a check fails and moves the event live once every check
    passes; `live` is set then. This waits up to `wait_s` for that. Still failing after the
    bound (a machine too loaded for healthy feeds), it names the failing checks and goes live
    with an audited override whose reason says so. True when live without an override."""
    log.warning(
        "demo event %s: in rehearsal; live as soon as its preflight passes (waiting up to %g s, "
        "then with an audited override)",
        event_id,
        wait_s,
    )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            await live.wait()
    if live.is_set():
        log.warning("demo event %s: live after a passing preflight (no override)", event_id)
        return True
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(
        base_url=control_url, timeout=15, headers=headers, transport=transport
    ) as client:
        last = await client.get(f"/v1/events/{event_id}/preflight")
        failing = _failing_checks(last)
        reason = f"{DEMO_OVERRIDE}: preflight still failing after {wait_s:g} s: {failing}"[:500]
        log.error(
            "demo event %s: preflight still failing after %g s: %s; going live with an audited "
            "override",
            event_id,
            wait_s,
            failing,
        )
        r = await client.post(
            f"/v1/events/{event_id}/transitions",
            json={"to": "live", "override": {"reason": reason}},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
    if r.status_code < 300:
        log.warning("demo event %s: live by override (%s)", event_id, reason)
        return False
    if "already_in_state" in r.text:  # the supervisor got there first, on a passing preflight
        return True
    log.error("demo event %s: go-live answered %s: %s", event_id, r.status_code, r.text[:300])
    return False


def _failing_checks(last: httpx.Response) -> str:
    """`check (detail), …` of the last stored preflight, or why there is none."""
    if last.status_code != 200:
        return f"no preflight result ({last.status_code})"
    body = last.json()
    bad = [f"{c['name']} ({c['detail']})" for c in body.get("checks", []) if not c["passed"]]
    return ", ".join(bad) or "none (it passed just now)"
