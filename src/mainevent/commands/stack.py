"""Assemble and run the platform in one process: origin + pipeline (+ feed simulator), and the
delivery tier in front of the origin: shield → edges `cdn-a`, `cdn-b`, `cdn-c`, each on its port.

Used by `mainevent up` and by the end-to-end tests (which run it as a real subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from mainevent.commands.scaleout_stack import (
    end_on_origins,
    fanout_store,
    forward_metrics,
    metrics_targets,
    plan_edge_fleet,
    scaleout_ready,
    scaleout_tasks,
)
from mainevent.common.telemetry import HttpTelemetrySink
from mainevent.config import Settings
from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.encode.ffmpeg import FeedSpec, IngestSpec, LadderSpec, RungSpec, find_ffmpeg
from mainevent.media.encode.pipeline import Pipeline, PipelineCollector
from mainevent.media.feed import FeedProcess, grid_start
from mainevent.media.origin import tune_gc
from mainevent.media.origin.app import create_app
from mainevent.media.origin.clips import ClipService
from mainevent.media.origin.live import LiveEvent, Metrics, RenditionSpec
from mainevent.media.origin.protocol import origin_protocol
from mainevent.media.redundancy import Selector
from mainevent.media.redundancy.ops import with_ops
from mainevent.media.redundancy.publisher import RedundantPublisher
from mainevent.media.redundancy.slate import SlateError, encode_slate
from mainevent.media.shedding import Budget
from mainevent.media.store import LocalSegmentStore, SegmentStore
from mainevent.media.store.s3 import S3Config, S3SegmentStore

log = logging.getLogger(__name__)


SHUTDOWN_DEADLINE_S = 15.0


def _force_exit() -> None:
    log.error("shutdown did not finish within %.0f s; exiting now", SHUTDOWN_DEADLINE_S)
    logging.shutdown()
    os._exit(1)


class StackError(Exception):
    """The platform cannot start; the message says why and what to do."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the stack owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for listeners that cannot bind port 0 themselves)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def ladder_spec(settings: Settings) -> LadderSpec:
    ev = settings.event
    return LadderSpec(
        rungs=tuple(RungSpec(r.id, r.width, r.height, r.bitrate_kbps) for r in ev.ladder),
        audio_id=ev.audio_id,
        audio_bitrate_kbps=ev.audio_bitrate_kbps,
        fps=ev.fps,
        segment_duration_ms=ev.segment_duration_ms,
        part_target_ms=ev.part_target_ms,
        preset=settings.encoder.preset,
        threads=settings.encoder.threads,
    )


def segment_store(settings: Settings) -> LocalSegmentStore | S3SegmentStore:
    """The configured segment store (`origin.store`): local, or local with a bucket behind it."""
    o = settings.origin
    local = LocalSegmentStore(o.data_dir, memory_segments=o.memory_segments)
    if o.store == "local":
        return local
    b = settings.s3
    return S3SegmentStore(
        local,
        S3Config(
            bucket=b.bucket,
            endpoint_url=b.endpoint_url,
            region=b.region,
            access_key_id=b.access_key_id,
            secret_access_key=b.secret_access_key,
            prefix=b.prefix,
            queue_max=b.upload_queue,
            local_segments=b.local_segments,
            retry_max_s=b.retry_max_s,
            timeout_s=b.timeout_s,
        ),
    )


def live_event(settings: Settings, store: SegmentStore, metrics: Metrics) -> LiveEvent:
    ev = settings.event
    specs = [RenditionSpec(r.id, "video", r.bitrate_kbps, r.width, r.height) for r in ev.ladder]
    specs.append(RenditionSpec(ev.audio_id, "audio", ev.audio_bitrate_kbps))
    return LiveEvent(
        event_id=ev.id,
        renditions=specs,
        store=store,
        segment_duration_ms=ev.segment_duration_ms,
        window_segments=ev.window_segments,
        fps=ev.fps,
        metrics=metrics,
        latency=ev.latency,
        part_target_ms=ev.part_target_ms,
        part_hold_back_ms=ev.part_hold_back_ms,
        hold_back_ms=ev.hold_back_ms,
        max_held_requests=settings.origin.max_held_requests,
        playlist_freshness=settings.origin.playlist_freshness,
        **dvr_options(settings),
    )


def dvr_budget(settings: Settings) -> Budget | None:
    """The live-edge-first budget of the origin and shield (None: nothing is shed)."""
    d = settings.dvr
    if d.max_concurrent is None and d.max_bytes_per_s is None:
        return None
    return Budget(d.max_concurrent, d.max_bytes_per_s, d.retry_after_s)


def dvr_options(settings: Settings) -> dict[str, Any]:
    """`LiveEvent` keyword arguments of the `dvr` settings."""
    d = settings.dvr
    return {
        "dvr_window_s": d.window_s,
        "archive": d.archive,
        "vod_gaps": d.vod_gaps,
        "shed_budget": dvr_budget(settings),
        "live_edge_segments": d.live_edge_segments,
        "retention_s": d.retention_s,
    }


def ingest_spec(settings: Settings, port: int) -> IngestSpec:
    """One feed's listener: the event's credentials and the gateway's limits."""
    ig = settings.ingest
    return IngestSpec(
        ig.protocol,
        ig.host,
        port,
        ig.stream_key,
        ig.passphrase,
        max_pending_connections=ig.max_pending_connections,
        attempts_per_second=ig.attempts_per_second,
        attempts_burst=ig.attempts_burst,
        handshake_timeout_s=ig.handshake_timeout_s,
        srt_latency_ms=ig.srt_latency_ms,
    )


def redundant_publisher(
    settings: Settings,
    event: LiveEvent,
    pipelines: dict[str, Pipeline],
    names: tuple[str, ...] = ("primary", "backup"),
) -> RedundantPublisher:
    """Selection between the primary and backup pipelines (`names`), fed by their health."""
    seg_ms = settings.event.segment_duration_ms
    late, gap = settings.redundancy.deadlines_s(seg_ms)
    selector = Selector(
        pipelines=names,
        renditions=event.rendition_ids,
        segment_duration_s=seg_ms / 1000,
        late_after_s=late,
        gap_after_s=gap,
        failback_hold_s=settings.redundancy.failback_hold_s,
        failover_hold_s=settings.redundancy.failover_hold_s,
    )

    def health() -> dict[str, bool]:
        return {name: p.is_healthy() for name, p in pipelines.items()}

    return RedundantPublisher(event, selector, health=health)


def simulated_feed(settings: Settings, ffmpeg: str, ingest: IngestSpec) -> FeedProcess:
    """The feed simulator standing in for a venue encoder on `ingest`."""
    fs = settings.feed
    spec = FeedSpec(
        url=ingest.publish_url,
        start_epoch=grid_start(time.time(), fs.fps),
        width=fs.width,
        height=fs.height,
        fps=fs.fps,
        bitrate_kbps=fs.bitrate_kbps,
        tone_hz=fs.tone_hz,
    )
    return FeedProcess(ffmpeg, spec)


@dataclass
class Stack:
    """The running platform's parts, for printing URLs and for drills."""

    settings: Settings
    with_feed: bool = True
    on_ready: Callable[[Stack], None] | None = None
    on_listening: Callable[[Stack], None] | None = None
    base_url: str = ""
    ingest: IngestSpec | None = None
    backup_ingest: IngestSpec | None = None
    pipeline: Pipeline | None = None
    """The primary pipeline."""
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    publisher: RedundantPublisher | None = None
    """Per-segment selection between primary and backup (None without a backup pipeline)."""
    feed: FeedProcess | None = None
    feeds: dict[str, FeedProcess] = field(default_factory=dict)
    event: LiveEvent | None = None
    edge_names: tuple[str, ...] = ("cdn-a", "cdn-b", "cdn-c")
    """CDN edges behind one shield; empty = no delivery tier (players use the origin)."""
    edge_port_base: int = 0
    """Shield on this port, edges on the next ones; 0 = any free ports."""
    edge_admin_secret: str | None = None
    edge_token_keys: dict[str, str] | None = None
    shield: EdgeServer | None = None
    edges: dict[str, EdgeServer] = field(default_factory=dict)
    control: Any = None
    """ControlSettings: run the control plane (playback API, steering server, operator API)
    beside the media plane; None = media plane only."""
    control_url: str = ""
    control_admin_key: str | None = None
    console_logins: dict[str, str] = field(default_factory=dict)
    """Role → generated API key to sign in at /console/ (empty when keys are configured)."""
    control_services: Any = None
    telemetry: Any = None
    """The telemetry collector (a `TelemetryServer`; None when `telemetry.enabled` is false)."""
    telemetry_sink: HttpTelemetrySink | None = None
    """Access records of the shield and edges, batched to the collector."""
    supervisor: Any = None
    """The event supervisor's adapter (`MediaSupervisor`) when the control plane runs here."""
    supervisor_retry_s: float = 2.0
    supervisor_resync_s: float | None = None
    """Re-read every record this often (other control-plane processes share the database)."""
    demo_preflight_wait_s: float = 60.0
    """The demo event waits this long in rehearsal for a passing preflight, then goes live with
    an audited override naming the failing checks."""
    replicas: Any = None
    """The origin processes fed by the ingest fan-out (`ReplicaOrigins`, origin.replicas ≥ 2)."""
    fanout: Any = None
    """The packager's ingest fan-out (`FanoutPublisher`) when there are origins to feed."""
    edge_fleet: Any = None
    """Edge processes behind nginx (`EdgeFleet`, delivery.edges_per_cdn ≥ 2)."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _demo_live: asyncio.Event = field(default_factory=asyncio.Event)
    _demo_rehearsal: asyncio.Event = field(default_factory=asyncio.Event)
    _control_built: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def telemetry_url(self) -> str:
        """The collector's base URL ('' without telemetry)."""
        return str(self.telemetry.url) if self.telemetry is not None else ""

    def _bind_telemetry(self) -> None:
        """Bind the collector first, so the edges' sink knows where to post."""
        t = self.settings.telemetry
        if not t.enabled:
            return
        from mainevent.control.telemetry.events import EventTiming
        from mainevent.control.telemetry.server import TelemetryServer, build_service

        ev = self.settings.event
        if t.db_path == type(t)().db_path:  # the default: keep it beside the segments
            t = t.model_copy(update={"db_path": self.settings.origin.data_dir / "telemetry.db"})
        timing = EventTiming(
            ev.segment_duration_ms, ev.part_target_ms if ev.latency == "low" else 0
        )
        self.telemetry = TelemetryServer(
            # One client-address table: the control plane's (unless `telemetry.networks`).
            build_service(
                t,
                {ev.id: timing},
                regions=self.control.regions if self.control is not None else None,
            ),
            host=t.host,
            port=t.port,
        )
        self.telemetry.bind()
        self.telemetry_sink = HttpTelemetrySink(self.telemetry.url)

    def _point_telemetry(self) -> None:
        """Tell the collector which host is which CDN, and what to scrape for health."""
        if self.telemetry is None:
            return
        c = self.telemetry.service.collector
        targets = {"origin": f"{self.base_url}/metrics"}
        for name, edge in [
            *self.edges.items(),
            *([("shield", self.shield)] if self.shield else []),
        ]:
            c.cdn_hosts[edge.url.removeprefix("http://")] = name
            targets[name] = f"{edge.url}/metrics"
        if self.edge_fleet is not None:
            for name, url in self.edge_fleet.urls.items():
                c.cdn_hosts[url.removeprefix("http://")] = name
        targets.update(metrics_targets(self.edge_fleet, self.replicas))
        self.telemetry.scrape_targets.update(targets)
        self.telemetry.scrape_targets.update(self.settings.telemetry.scrape_targets)

    @property
    def edge_urls(self) -> dict[str, str]:
        """Edge name → base URL (empty without a delivery tier)."""
        if self.edge_fleet is not None:
            return dict(self.edge_fleet.urls)
        return {name: e.url for name, e in self.edges.items()}

    async def _start_edges(self, host: str) -> None:
        if not self.edge_names:
            return
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        base = self.edge_port_base
        regions = {"cdn-a": ("eu",), "cdn-b": ("us",), "cdn-c": ("apac",)}
        origins = [*(self.replicas.urls if self.replicas is not None else ()), self.base_url]
        if self.settings.delivery.shields > 1:
            # Shield processes instead of this one (a kill -9 drill must not take the stack).
            self.edge_fleet = plan_edge_fleet(self, host, regions, origins)
            return
        self.shield = EdgeServer(
            EdgeConfig(
                name="shield",
                # The origin processes in order, the packager's own origin last.
                upstream=origins[0],
                upstreams=tuple(origins[1:]),
                host=host,
                port=base,
                max_bytes=256 * 1024 * 1024,
                admin_secret=self.edge_admin_secret,
                shed_budget=dvr_budget(self.settings),
                live_edge_segments=(
                    self.event.live_edge_segments
                    if self.event is not None
                    else self.settings.event.window_segments
                ),
            ),
            sink=self.telemetry_sink,
        )
        await self.shield.start()
        if self.settings.delivery.edges_per_cdn > 1:
            self.edge_fleet = plan_edge_fleet(self, host, regions, origins)
            return
        for i, name in enumerate(self.edge_names, start=1):
            edge = EdgeServer(
                EdgeConfig(
                    name=name,
                    upstream=self.shield.url,
                    regions=regions.get(name, ()),
                    host=host,
                    port=base + i if base else 0,
                    max_bytes=128 * 1024 * 1024,
                    admin_secret=self.edge_admin_secret,
                    token_keys=self.edge_token_keys,
                ),
                sink=self.telemetry_sink,
            )
            await edge.start()
            self.edges[name] = edge

    async def _close_edges(self) -> None:
        for edge in [*self.edges.values(), *([self.shield] if self.shield else [])]:
            await edge.close()

    def stop(self) -> None:
        """Begin a graceful shutdown; if it has not finished within the deadline, exit anyway
        (children die with us: they were started with PDEATHSIG)."""
        if not self._stop.is_set():
            timer = threading.Timer(SHUTDOWN_DEADLINE_S, _force_exit)
            timer.daemon = True
            timer.start()
        self._stop.set()

    async def run(self) -> None:
        s = self.settings
        ffmpeg = find_ffmpeg(s.encoder.ffmpeg_path)
        store = segment_store(s)
        event_store = fanout_store(self, store)

        events: dict[str, LiveEvent] = {}
        self._store = event_store
        self._ffmpeg = ffmpeg
        if self.supervised:
            # The event record drives the media: the control plane's supervisor starts each
            # event's pipelines (the demo event's included) once the control plane is up.
            pipelines: list[Pipeline] = []
            publisher = None
        else:
            event = self._single_event(s, event_store, ffmpeg)
            end_on_origins(self, event)
            events[event.event_id] = event
            pipelines = list(self.pipelines.values())
            publisher = self.publisher
        ladder = ladder_spec(s)

        def health() -> dict[str, Any]:
            out: dict[str, Any] = {"pipelines": [p.status() for p in self.pipelines.values()]}
            if self.publisher is not None:
                out["redundancy"] = self.publisher.status()
            if self.supervisor is not None:
                out["supervised"] = {
                    eid: self.supervisor.media_state(eid) for eid in sorted(self.supervisor.media)
                }
            if isinstance(store, S3SegmentStore):
                out["s3"] = dataclasses.asdict(store.statistics())
            if self.fanout is not None:
                out["ingest_fanout"] = self.fanout.statistics()
            return out

        clips = ClipService(
            events,  # the same dict the supervisor adds its events to
            admin_secret=self.edge_admin_secret,
            state_dir=s.origin.data_dir / "highlights",
            ffmpeg=ffmpeg,
        )
        origin = create_app(
            events,
            clips=clips,
            cors_origin=s.origin.cors_origin,
            health=health,
            token_keys=s.origin.token_keys,
            require_token=s.origin.require_token,
        )
        self._origin = origin.state.origin
        if self.fanout is not None:  # an event in rehearsal is hidden on every origin
            rehearsal = self._origin.rehearsal
            self.fanout.hidden = lambda eid: eid in rehearsal
        self._events = events
        app = with_ops(
            origin, lambda: self.publisher, self.edge_admin_secret, self.pipelines, events
        )
        if self.edge_token_keys is None and s.origin.require_token:
            # Edges with keys require tokens on /live/: same policy as the origin.
            self.edge_token_keys = dict(s.origin.token_keys)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((s.origin.host, s.origin.port))
        except OSError as exc:
            sock.close()
            raise StackError(
                f"origin cannot listen on {s.origin.host}:{s.origin.port}: {exc.strerror} "
                "(choose another --port, or 0 for any free port)"
            ) from None
        host, http_port = sock.getsockname()[:2]
        self.base_url = f"http://{host}:{http_port}"
        self._bind_telemetry()
        await self._start_edges(host)
        self._point_telemetry()
        server = _Server(
            uvicorn.Config(
                app,
                # Media playlists (and held LL-HLS reloads) answered in the protocol itself.
                http=origin_protocol(origin),
                log_level="warning",
                lifespan="off",
                access_log=False,
                timeout_graceful_shutdown=int(SHUTDOWN_DEADLINE_S // 3),
            )
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        try:
            async with asyncio.TaskGroup() as tg:
                server_task = tg.create_task(server.serve(sockets=[sock]))
                control_task = tg.create_task(self._serve_control(host, s.event.id))
                tasks = [tg.create_task(p.serve()) for p in pipelines]
                if isinstance(store, S3SegmentStore):
                    tasks.append(tg.create_task(store.serve()))
                tasks += [tg.create_task(c) for c in scaleout_tasks(self)]
                telemetry_task = None
                if self.telemetry is not None:
                    telemetry_task = tg.create_task(self.telemetry.serve())
                    if self.telemetry_sink is not None and (self.edges or self.edge_fleet):
                        tasks.append(tg.create_task(self.telemetry_sink.serve()))
                if publisher is not None:
                    tasks.append(tg.create_task(publisher.serve()))
                    if s.redundancy.on_total_loss == "slate":
                        tasks.append(tg.create_task(self._encode_slate(ffmpeg, publisher, ladder)))
                if self.with_feed and not self.supervised:
                    ingests = {"primary": self.ingest, "backup": self.backup_ingest}
                    for name, ingest in ingests.items():
                        if ingest is None:
                            continue
                        self.feeds[name] = simulated_feed(s, ffmpeg, ingest)
                        tasks.append(tg.create_task(self._feed_when_listening(self.feeds[name])))
                    self.feed = self.feeds["primary"]
                tasks.append(tg.create_task(self._announce()))
                # Startup garbage (imports, settings) leaves the collector's reach; full
                # collections get rarer, so held LL-HLS requests do not see long pauses.
                tune_gc()
                if self.on_listening is not None and not self.supervised:
                    self.on_listening(self)  # supervised: once the demo event's media starts
                await self._stop.wait()
                log.info("stopping")
                for t in tasks:
                    t.cancel()
                server.should_exit = True
                if telemetry_task is not None:
                    self.telemetry.stop()
                await server_task
                await control_task
        finally:
            await self._close_edges()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _single_event(self, s: Settings, store: SegmentStore, ffmpeg: str) -> LiveEvent:
        """Without a control plane: the one event of the settings, live from the start."""
        from prometheus_client import CollectorRegistry

        metrics = Metrics(CollectorRegistry())
        event = live_event(s, store, metrics)
        restored = event.restore()
        if restored:
            log.info("restored %d published segments from %s", restored, s.origin.data_dir)
        self.event = event
        ig = s.ingest
        kind = socket.SOCK_DGRAM if ig.protocol == "srt" else socket.SOCK_STREAM
        port = ig.port or free_port(kind, ig.host)
        self.ingest = ingest_spec(s, port)
        ingests = {"primary": self.ingest}
        if s.redundancy.backup:
            self.backup_ingest = ingest_spec(
                s, s.redundancy.backup_port or free_port(kind, ig.host)
            )
            ingests["backup"] = self.backup_ingest
            self.publisher = redundant_publisher(s, event, self.pipelines)
        ladder = ladder_spec(s)
        for name, spec in ingests.items():
            self.pipelines[name] = Pipeline(
                name=name,
                sink=event if self.publisher is None else self.publisher.input(name),
                ffmpeg=ffmpeg,
                ingest=spec,
                ladder=ladder,
                stall_timeout_s=s.encoder.stall_timeout_s,
                input_timeout_s=ig.input_timeout_s,
                restart_backoff_s=s.encoder.restart_backoff_s,
            )
        self.pipeline = self.pipelines["primary"]
        metrics.registry.register(PipelineCollector(list(self.pipelines.values())))
        return event

    @property
    def supervised(self) -> bool:
        """Whether the control plane runs here and drives the media (else one fixed event)."""
        return self.control is not None and bool(
            dict(self.settings.delivery.cdns) or self.edge_names
        )

    def _control_server(
        self, host: str, event_id: str
    ) -> tuple[uvicorn.Server, socket.socket] | None:
        """The control plane (with the steering server) on its own port, and the event's
        pathways: one per CDN (configured, or this stack's edges), steered by it."""
        s = self.settings
        cdns = dict(s.delivery.cdns) or self.edge_urls
        if self.control is None or not cdns:
            return None
        from mainevent.control.app import create_app as create_control_app
        from mainevent.control.console.demo import console_for_stack, ensure_demo_logins
        from mainevent.control.server import build_services
        from mainevent.media.manifest.pathways import Pathways

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ctrl = self.control
        try:
            sock.bind((host, ctrl.port))
        except OSError as exc:
            sock.close()
            raise StackError(
                f"control plane cannot listen on {host}:{ctrl.port}: {exc.strerror}"
            ) from None
        self.control_url = f"http://{host}:{sock.getsockname()[1]}"
        steering_url = s.delivery.steering_url or f"{self.control_url}/steering"
        st = ctrl.steering.model_copy(
            update={
                "public_url": steering_url,
                "probe_path": ctrl.steering.probe_path or f"/live/{event_id}/master.m3u8",
            }
        )
        console = console_for_stack(
            ctrl.console,
            telemetry_url=self.telemetry_url,
            metrics_targets={
                "origin": f"{self.base_url}/metrics",
                **({"shield": f"{self.shield.url}/metrics"} if self.shield else {}),
                **{n: f"{u}/metrics" for n, u in self.edge_urls.items()},
            },
        )
        media = {
            "media_ops_url": ctrl.media_ops_url or self.base_url,
            "media_admin_secret": ctrl.media_admin_secret or self.edge_admin_secret,
        }
        ctrl = ctrl.model_copy(update={"cdns": cdns, "steering": st, "console": console, **media})
        ctrl, self.console_logins = ensure_demo_logins(ctrl)
        self.control_admin_key = self.console_logins.get("admin")
        services = build_services(ctrl)
        assert services.steering is not None
        services.steering.service.events = {event_id}
        self.control_services = services
        self._pathways = Pathways(cdns=tuple(cdns.items()), steering_url=steering_url)
        if self.event is not None:
            self.event.pathways = self._pathways
        server = _Server(
            uvicorn.Config(
                create_control_app(services),
                log_level="warning",
                lifespan="on",
                access_log=False,
                timeout_graceful_shutdown=int(SHUTDOWN_DEADLINE_S // 3),
            )
        )
        return server, sock

    async def _serve_control(self, host: str, event_id: str) -> None:
        """Build the control plane off the event loop (imports, migrations: seconds on a busy
        machine, while the media plane is already starting), serve it until the stack stops;
        supervised, run the event supervisor beside it and create the demo event through the
        control plane's API."""
        try:
            built = await asyncio.to_thread(self._control_server, host, event_id)
        finally:
            self._control_built.set()
        if built is None:
            return
        server, sock = built
        if self.telemetry is not None:  # on the loop: the scraper reads the dict each round
            # The control plane's authorisations, denials and shedding (its port is known only
            # now); a configured target of the same name wins, as in `_point_telemetry`.
            self.telemetry.scrape_targets.setdefault("control", f"{self.control_url}/metrics")
        task = asyncio.create_task(server.serve(sockets=[sock]))
        supervisor_task = None
        try:
            if self.supervised:
                supervisor_task = asyncio.create_task(self._supervise(server))
            await self._stop.wait()
        finally:
            if supervisor_task is not None:
                supervisor_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor_task
            server.should_exit = True
            await task

    async def _supervise(self, server: uvicorn.Server) -> None:
        from mainevent.commands.supervised import MediaSupervisor, create_demo_event, demo_go_live

        services = self.control_services
        assert self.control_admin_key is not None
        sup = MediaSupervisor(
            settings=self.settings,
            services=services,
            control_url=self.control_url,
            admin_key=self.control_admin_key,
            origin=self._origin,
            events=self._events,
            store=self._store,
            ffmpeg=self._ffmpeg,
            with_feed=self.with_feed,
            edge_urls=lambda: self.edge_urls,
            rehearsal_secret=self.edge_admin_secret or secrets.token_hex(16),
            retry_s=self.supervisor_retry_s,
            resync_s=self.supervisor_resync_s,
            on_media=self._on_media,
            on_visibility=self._on_visibility,
            on_degraded=self._on_degraded,
        )
        self.supervisor = sup
        services.media = sup
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sup.serve())
            async with asyncio.timeout(60):
                # uvicorn offers a flag, not an event, for "serving".
                while not server.started:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            demo = self.settings.event.id
            if await create_demo_event(self.control_url, self.control_admin_key, self.settings):
                await self._demo_rehearsal.wait()
                await demo_go_live(
                    self.control_url,
                    self.control_admin_key,
                    demo,
                    self._demo_live,
                    wait_s=self.demo_preflight_wait_s,
                )

    def _on_media(self, m: Any) -> None:
        """An event's media started: steer it; the demo event's parts are the stack's."""
        m.event.pathways = self._pathways
        steering = self.control_services.steering
        if steering is not None:
            steering.service.events.add(m.event_id)
        if self.telemetry is not None:  # its players' reports and QoE series are accepted
            from mainevent.control.telemetry.events import EventTiming

            ev = m.settings.event
            self.telemetry.service.collector.add_event(
                m.event_id,
                EventTiming(
                    ev.segment_duration_ms, ev.part_target_ms if ev.latency == "low" else 0
                ),
            )
        if m.event_id != self.settings.event.id:
            return
        end_on_origins(self, m.event)
        self.event = m.event
        self.pipelines.update(m.pipelines)
        self.pipeline = m.pipelines["primary"]
        self.publisher = m.publisher
        self.ingest = m.ingests["primary"]
        self.backup_ingest = m.ingests.get("backup")
        self.feeds = m.feeds
        if self.on_listening is not None:
            self.on_listening(self)

    def _on_degraded(self, event_id: str, features: frozenset[str]) -> None:
        """Telemetry detail off or on for the event in this stack's collector."""
        if self.telemetry is not None:
            self.telemetry.service.collector.aggregator.set_detail(
                event_id, "telemetry_detail" not in features
            )

    def _on_visibility(self, event_id: str, visibility: Any) -> None:
        if event_id == self.settings.event.id:
            if str(visibility) == "live":
                self._demo_live.set()
            elif str(visibility) == "rehearsal":
                self._demo_rehearsal.set()

    async def _encode_slate(
        self, ffmpeg: str, publisher: RedundantPublisher, ladder: LadderSpec
    ) -> None:
        try:
            publisher.slate = await encode_slate(ffmpeg, ladder)
        except SlateError as exc:
            log.error("%s; total input loss will be listed as EXT-X-GAP", exc)

    async def _feed_when_listening(self, feed: FeedProcess) -> None:
        # The ingest listener needs a moment to bind before the venue connects.
        await asyncio.sleep(0.5)
        await feed.serve()

    async def _announce(self) -> None:
        await scaleout_ready(self)
        if self.supervised:
            await self._demo_live.wait()
        assert self.event is not None
        await self.event.ready_event.wait()
        forward_metrics(self)
        await self._control_built.wait()
        if self.on_ready is not None:
            self.on_ready(self)
