"""Platform health through the collector: real services' ``/metrics`` on loopback (a packager
with its pipelines and selector, an edge, the control plane) scraped by the collector's
:class:`HealthScraper`; every kind of health shows on ``/v1/telemetry/health``, its history is
kept, and a service going down is reported and alerts as the default rules say."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, start_http_server

from mainevent.config import TelemetrySettings
from mainevent.control.app import ControlServices
from mainevent.control.app import create_app as create_control_app
from mainevent.control.auth import hash_api_key
from mainevent.control.server import build_services
from mainevent.control.settings import ApiKeySetting, ControlSettings
from mainevent.control.telemetry.app import TelemetryService, create_app
from mainevent.control.telemetry.collector import Collector
from mainevent.control.telemetry.health import HEALTH_KINDS, HealthScraper
from mainevent.control.telemetry.store import TelemetryStore
from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.encode.ffmpeg import IngestSpec
from mainevent.media.encode.pipeline import Pipeline, PipelineCollector
from mainevent.media.origin.live import LiveEvent, Metrics, RenditionSpec
from mainevent.media.redundancy.publisher import _Metrics as SelectorMetrics
from mainevent.media.store import LocalSegmentStore
from tests.telemetry.conftest import Clock

pytestmark = pytest.mark.anyio

EVENT = "final"


@contextlib.contextmanager
def metrics_server(registry: CollectorRegistry) -> Iterator[str]:
    """``registry`` at a real ``/metrics`` on loopback (prometheus_client's own server)."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Packager:
    """A packager's health as its process exports it: a live event (publish delay,
    rejections), two real pipelines (feeds) and the selector's metrics."""

    event: LiveEvent
    primary: Pipeline
    backup: Pipeline
    selector: SelectorMetrics
    registry: CollectorRegistry


def _packager(tmp_path: Path) -> Packager:
    registry = CollectorRegistry()
    event = LiveEvent(
        event_id=EVENT,
        renditions=[RenditionSpec("v720", "video", 2500, 1280, 720)],
        store=LocalSegmentStore(tmp_path / "data", memory_segments=8),
        segment_duration_ms=2000,
        window_segments=6,
        fps=25,
        metrics=Metrics(registry),
    )
    from mainevent.commands.stack import ladder_spec
    from mainevent.config import load_settings

    ladder = ladder_spec(load_settings())
    pipes = [
        Pipeline(
            name=name,
            sink=event,  # type: ignore[arg-type]
            ffmpeg="ffmpeg",
            ingest=IngestSpec("rtmp", "127.0.0.1", 0, "key"),
            ladder=ladder,
        )
        for name in ("primary", "backup")
    ]
    registry.register(PipelineCollector(pipes))
    return Packager(
        event, pipes[0], pipes[1], SelectorMetrics(event, ("primary", "backup")), registry
    )


@contextlib.asynccontextmanager
async def control_plane(tmp_path: Path) -> AsyncIterator[tuple[ControlServices, str]]:
    """The real control plane (SQLite) served by uvicorn on a loopback port."""
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path}/control.db",
        data_dir=tmp_path,
        api_keys=(ApiKeySetting(name="a", role="admin", key_sha256=hash_api_key("k" * 20)),),
    )
    services = build_services(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(create_control_app(services), log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(20):
            while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event
                await asyncio.sleep(0.02)
        yield services, f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Rig:
    api: httpx.AsyncClient
    scraper: HealthScraper
    clock: Clock

    async def health(self, **params: Any) -> dict[str, Any]:
        r = await self.api.get("/v1/telemetry/health", params=params)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()["targets"]
        return out

    async def alerts(self) -> dict[str, Any]:
        r = await self.api.get("/v1/telemetry/alerts")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


@contextlib.asynccontextmanager
async def collector(targets: dict[str, str], history_rounds: int = 300) -> AsyncIterator[Rig]:
    """The collector's API over a real scraper; each scrape round is one second of its clock
    (the alert rules' `for_s` count in it), rounds 50 ms apart."""
    clock = Clock(1_800_000_000.0)
    service = TelemetryService(
        Collector(TelemetrySettings(db_path=Path(":memory:")), {}),
        TelemetryStore(":memory:"),
        clock,
    )

    def round_done(h: HealthScraper) -> None:
        service.collector.health(h.samples, h.up, clock())
        clock.advance(1.0)

    scraper = HealthScraper(
        targets, interval_s=0.05, history_rounds=history_rounds, on_round=round_done, clock=clock
    )
    app = create_app(service, background=False, health=scraper)
    task = asyncio.create_task(scraper.run())
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://collector"
        ) as api:
            yield Rig(api, scraper, clock)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        service.store.close()


async def until(check: Callable[[], Any], what: str, within: float = 10.0) -> Any:
    """Poll the async ``check`` until it returns something truthy (bounded)."""
    try:
        async with asyncio.timeout(within):
            while not (got := await check()):  # noqa: ASYNC110 - an HTTP API, no event to await
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not seen within {within} s: {what}") from None
    return got


async def test_every_kind_of_platform_health_reaches_the_collector_api(tmp_path: Path) -> None:
    """An operator finds feed, packager, selector and control-plane health on one API."""
    p = _packager(tmp_path)
    p.primary.health.on_connect()
    p.primary.health.dropped_frames = 3
    p.primary.health.duplicated_frames = 1
    p.primary.health.continuity_errors = 2
    p.event.metrics.publish_delay.labels(EVENT, "v720").observe(0.2)
    p.event.metrics.rejected.labels(EVENT, "v720", "bad_duration").inc()
    p.selector.selected.labels(EVENT, "primary", "preferred").inc(5)
    p.selector.preferred.labels(EVENT, "primary").set(1)
    p.selector.switches.labels(EVENT, "primary_lost").inc()
    p.selector.stalled.labels(EVENT, "v720").set(0)
    async with control_plane(tmp_path) as (services, control_url):
        services.playback.stats.grants = 7
        services.playback.stats.denials["region_not_allowed"] = 2
        with metrics_server(p.registry) as origin_url:
            async with collector({"origin": origin_url, "control": control_url}) as rig:

                async def all_up() -> bool:
                    t = await rig.health()
                    return all(t[n]["up"] and t[n]["samples"] for n in ("origin", "control"))

                await until(all_up, "origin and control scraped")
                kinds = {k: await rig.health(kind=k) for k in HEALTH_KINDS}
    o = {k: v["origin"]["samples"] for k, v in kinds.items()}
    c = {k: v["control"]["samples"] for k, v in kinds.items()}
    assert o["feed_connected"]['mainevent_feed_connected{pipeline="primary"}'] == 1.0
    assert o["feed_connected"]['mainevent_feed_connected{pipeline="backup"}'] == 0.0
    assert 'mainevent_feed_bitrate_kbps{pipeline="primary"}' in o["feed_bitrate"]
    assert 'mainevent_feed_fps{pipeline="primary"}' in o["feed_fps"]
    frames = o["feed_frames"]
    assert (
        frames['mainevent_feed_input_errors_total{kind="dropped_frames",pipeline="primary"}'] == 3
    )
    assert (
        frames['mainevent_feed_input_errors_total{kind="duplicated_frames",pipeline="primary"}']
        == 1
    )
    assert (
        frames['mainevent_feed_input_errors_total{kind="continuity_errors",pipeline="primary"}']
        == 2
    )
    assert 'mainevent_feed_av_offset_seconds{pipeline="primary"}' in o["av_drift"]
    assert (
        o["publish_delay"][
            f'mainevent_publish_delay_seconds_count{{event="{EVENT}",rendition="v720"}}'
        ]
        == 1
    )
    rejected = o["rejected_segments"]
    key = f'mainevent_segments_rejected_total{{event="{EVENT}",reason="bad_duration",rendition="v720"}}'
    assert rejected[key] == 1
    sel = o["selector_decisions"]
    assert (
        sel[
            f'mainevent_selected_segments_total{{event="{EVENT}",pipeline="primary",reason="preferred"}}'
        ]
        == 5
    )
    assert sel[f'mainevent_pipeline_preferred{{event="{EVENT}",pipeline="primary"}}'] == 1
    assert (
        o["failovers"][
            f'mainevent_pipeline_switches_total{{event="{EVENT}",reason="primary_lost"}}'
        ]
        == 1
    )
    assert (
        o["manifest_freshness"][f'mainevent_manifest_stalled{{event="{EVENT}",rendition="v720"}}']
        == 0
    )
    assert c["authorisations"]["mainevent_playback_grants_total"] == 7
    assert c["denials"]['mainevent_playback_denials_total{reason="region_not_allowed"}'] == 2
    assert any(k.startswith("mainevent_control_shed_total{") for k in c["shed_requests"])
    # Each kind is of one service: the origin's kinds carry nothing of the control plane's.
    assert not o["denials"]
    assert not c["feed_bitrate"]


async def test_health_history_is_kept_per_target_and_bounded(tmp_path: Path) -> None:
    """An operator can look back over the last scrapes of a target, not only the latest."""
    p = _packager(tmp_path)
    with metrics_server(p.registry) as url:
        async with collector({"origin": url}, history_rounds=4) as rig:
            start = rig.clock()

            async def rounds() -> list[dict[str, Any]] | None:
                h = await rig.health(target="origin", kind="feed_connected", **{"from": start})
                got: list[dict[str, Any]] = h["origin"]["history"]
                return got if len(got) >= 4 and got[0]["at"] > start else None

            history = await until(rounds, "four scrapes after the start")
            r = await rig.api.get("/v1/telemetry/health", params={"kind": "nope"})
            assert r.status_code == 400
    assert len(history) == 4  # bounded: older scrapes dropped
    times = [h["at"] for h in history]
    assert times == sorted(times)
    assert len(set(times)) == 4
    assert all(h["up"] for h in history)
    assert all(
        set(h["samples"])
        == {
            'mainevent_feed_connected{pipeline="primary"}',
            'mainevent_feed_connected{pipeline="backup"}',
        }
        for h in history
    )


async def test_a_target_going_down_is_reported_and_alerts_fire(tmp_path: Path) -> None:
    """A dead edge shows as down and `target-down` fires; a lost feed and a stale manifest
    fire `feed-lost` and `manifest-stale` as the default rules define."""
    p = _packager(tmp_path)
    p.primary.health.on_connect()  # the backup's feed never connects: feed lost
    with metrics_server(p.registry) as origin_url:
        edge = EdgeServer(EdgeConfig("cdn-a", origin_url.removesuffix("/metrics")))
        await edge.start()
        try:
            async with collector({"origin": origin_url, "cdn-a": f"{edge.url}/metrics"}) as rig:
                await until(lambda: _up(rig, "cdn-a"), "the edge scraped while it runs")
                p.selector.stalled.labels(EVENT, "v720").set(1)
                await edge.close()

                async def down() -> bool:
                    return (await rig.health(target="cdn-a"))["cdn-a"]["up"] is False

                await until(down, "the edge reported down")

                async def firing() -> dict[str, list[dict[str, str]]] | None:
                    got: dict[str, list[dict[str, str]]] = {}
                    for f in (await rig.alerts())["firing"]:
                        got.setdefault(f["rule"], []).append(f["labels"])
                    want = {"target-down", "feed-lost", "manifest-stale"}
                    return got if want <= set(got) else None

                fired = await until(firing, "target-down, feed-lost and manifest-stale firing")
        finally:
            await edge.close()
    assert fired["target-down"] == [{"target": "cdn-a"}]
    assert fired["feed-lost"] == [{"target": "origin", "pipeline": "backup"}]
    assert fired["manifest-stale"] == [{"target": "origin", "event": EVENT, "rendition": "v720"}]


async def _up(rig: Rig, name: str) -> bool:
    t = await rig.health(target=name)
    return bool(t.get(name, {}).get("up"))


async def test_a_target_added_while_the_collector_runs_is_scraped_and_shedding_alerts(
    tmp_path: Path,
) -> None:
    """As under `mainevent up` (the control plane's port is known only once it listens): a
    control plane added to a running collector is scraped, and its shedding fires
    `authorisation-shedding`."""
    from mainevent.common.admission import Priority
    from mainevent.control.telemetry.server import TelemetryServer, build_service

    server = TelemetryServer(build_service(TelemetrySettings(db_path=tmp_path / "t.db")))
    url = server.bind()
    task = asyncio.create_task(server.serve())
    try:
        async with (
            control_plane(tmp_path) as (services, control_url),
            httpx.AsyncClient(base_url=url, timeout=5) as api,
        ):
            server.scrape_targets["control"] = control_url

            async def scraped() -> bool:
                r = await api.get("/v1/telemetry/health", params={"target": "control"})
                return bool(r.json()["targets"].get("control", {}).get("up"))

            await until(scraped, "the control plane scraped")

            async def shedding() -> bool:
                for _ in range(5):  # requests a real admission controller sheds (waited too long)
                    services.admission.admit(Priority.NEW_START, waited=1e9)
                firing = (await api.get("/v1/telemetry/alerts")).json()["firing"]
                return any(
                    f["rule"] == "authorisation-shedding" and f["labels"]["target"] == "control"
                    for f in firing
                )

            await until(shedding, "authorisation-shedding firing")
    finally:
        server.stop()
        await task
