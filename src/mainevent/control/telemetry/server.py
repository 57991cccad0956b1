"""Run the collector: build it from settings, serve it with uvicorn on a bound socket (report
POSTs answered by the lean front, ``telemetry/front.py``), scrape the platform's ``/metrics`` for
health, all under one TaskGroup.

Platform health is scraped (see :mod:`.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import uvicorn

from mainevent.config import TelemetrySettings
from mainevent.control.settings import RegionRange
from mainevent.control.telemetry.app import TelemetryService, create_app
from mainevent.control.telemetry.collector import Collector
from mainevent.control.telemetry.events import EventTiming
from mainevent.control.telemetry.front import IngestFront, ingest_protocol
from mainevent.control.telemetry.health import HealthScraper
from mainevent.control.telemetry.store import TelemetryStore
from mainevent.control.telemetry.stream import StreamAggregator, StreamPublisher, WindowConsumer

__all__ = ["TelemetryServer", "build_service", "run_aggregator"]

log = logging.getLogger("mainevent.telemetry")


def build_service(
    settings: TelemetrySettings,
    events: Mapping[str, EventTiming] | None = None,
    clock: Callable[[], float] = time.time,
    regions: Sequence[RegionRange] | None = None,
) -> TelemetryService:
    """Collector + store from settings (``events``: the stack's own events and their timing;
    ``regions``: the control plane's client-address table, unless ``networks`` overrides it).

    With ``stream.mode = "redis"`` the collector publishes to Redis Streams instead of
    aggregating (``mainevent telemetry aggregate`` workers consume them) and the service serves
    the windows the workers publish."""
    store = TelemetryStore(settings.db_path)
    if settings.stream.mode == "redis":
        publisher = StreamPublisher(aioredis.from_url(settings.stream.redis_url), settings)
        service = TelemetryService(
            Collector(settings, events or {}, sink=publisher.sink, regions=regions), store, clock
        )
        service.publisher = publisher
        return service
    return TelemetryService(Collector(settings, events or {}, regions=regions), store, clock)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield  # the owner (CLI or stack) handles signals


@dataclass
class TelemetryServer:
    """The collector on a socket; ``url`` is known once ``bind()`` returned."""

    service: TelemetryService
    host: str = "127.0.0.1"
    port: int = 0
    scrape_targets: dict[str, str] = field(default_factory=dict)
    url: str = ""
    _sock: socket.socket | None = None
    _server: _Server | None = None

    def bind(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    async def serve(self) -> None:
        """Serve until ``stop()``; the window timer and the health scraper run alongside."""
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        service = self.service
        # The same dict: targets known only later (the control plane's port, edge processes)
        # are added to it while the collector runs and scraped from the next round on.
        scraper = HealthScraper(
            self.scrape_targets,
            on_round=lambda h: service.collector.health(h.samples, h.up, service.clock()),
            clock=service.clock,
        )
        app = create_app(self.service, background=False, health=scraper)
        # The lean front only without the stream: there an answer waits for Redis.
        lean = service.collector.settings.lean_ingest and service.publisher is None
        self._server = _Server(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="off",
                access_log=False,
                http=ingest_protocol(IngestFront(service) if lean else None),
            )
        )
        try:
            async with asyncio.TaskGroup() as tg:
                timer = tg.create_task(self.service.run_timer())
                scrape = tg.create_task(scraper.run())
                windows = None
                if service.publisher is not None:
                    consumer = WindowConsumer(service.publisher.client, service.collector.settings)
                    windows = tg.create_task(consumer.run(service.ingest_windows))
                await self._server.serve(sockets=[self._sock])
                timer.cancel()
                for task in (scrape, windows):
                    if task is not None:
                        task.cancel()
        finally:
            self.service.store.close()


async def run_aggregator(
    settings: TelemetrySettings,
    shards: list[int] | None,
    consumer: str,
    events: Mapping[str, EventTiming] | None = None,
) -> None:
    """One stream aggregator until cancelled (``mainevent telemetry aggregate``)."""
    client = aioredis.from_url(settings.stream.redis_url)
    try:
        agg = StreamAggregator(
            client, settings, events or {}, shards=shards, consumer=consumer, clock=time.time
        )
        await agg.run()
    finally:
        await client.aclose()
