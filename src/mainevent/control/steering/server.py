"""The steering server's adapters: a bare ASGI app for the hot path (no framework, no database),
Prometheus metrics of the policy, and `SteeringRuntime`, which owns the policy, the service, the
edge prober and the session-expiry timer and runs them under one TaskGroup."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Receive, Scope, Send

from mainevent.control.entitlement import RegionTable
from mainevent.control.settings import SteeringSettings
from mainevent.control.steering.model import CdnSpec, HealthReport, SteeringConfig
from mainevent.control.steering.policy import SteeringPolicy
from mainevent.control.steering.probe import EdgeProber
from mainevent.control.steering.service import SteeringService

__all__ = ["SteeringApp", "SteeringRuntime", "build_steering"]

PREFIX = "/steering/"


class SteeringApp:
    """ASGI: `GET /steering/<event>/hls|dash?…` → the session's steering manifest."""

    def __init__(
        self, service: SteeringService, *, clock: Callable[[], float] = time.time, cors: str = "*"
    ) -> None:
        self.service = service
        self.clock = clock
        self._cors = cors.encode("latin-1")

    def handles(self, path: str) -> bool:
        return path.startswith(PREFIX)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        event, _, kind = path[len(PREFIX) :].partition("/")
        client = scope.get("client")
        if scope["method"] not in ("GET", "HEAD"):
            status, body, ctype, retry = (
                405,
                b'{"error":{"reason":"method_not_allowed"}}',
                "application/json",
                None,
            )
        else:
            r = self.service.manifest(
                kind,
                event,
                scope["query_string"].decode("latin-1"),
                client[0] if client else None,
                self.clock(),
            )
            status, body, ctype, retry = r.status, r.body, r.content_type, r.retry_after
        headers = [
            (b"content-type", _CTYPES.get(ctype) or ctype.encode()),
            (b"content-length", b"%d" % len(body)),
            _NO_STORE,
            (b"access-control-allow-origin", self._cors),
        ]
        if retry is not None:
            headers.append((b"retry-after", b"%d" % retry))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )


_NO_STORE = (b"cache-control", b"no-store")
_CTYPES = {
    "application/json": b"application/json",
    "application/vnd.apple.steering-list": b"application/vnd.apple.steering-list",
}


class SteeringCollector(Collector):
    """Steering figures at scrape time (nothing is counted twice on the hot path)."""

    def __init__(self, service: SteeringService, prober: EdgeProber | None) -> None:
        self.service = service
        self.prober = prober

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        req = CounterMetricFamily(
            "mainevent_steering_requests",
            "Steering manifest requests by kind (hls, dash) and status.",
            labels=["kind", "status"],
        )
        for (kind, status), n in sorted(self.service.counts.items()):
            req.add_metric([kind, str(status)], n)
        yield req
        stats = self.service.policy.statistics()
        sessions = GaugeMetricFamily(
            "mainevent_steering_sessions",
            "Steered sessions by region and CDN.",
            labels=["region", "cdn"],
        )
        for (region, cdn), n in sorted(stats.sessions.items()):
            sessions.add_metric([region, cdn], n)
        yield sessions
        links = GaugeMetricFamily(
            "mainevent_steering_cdn_degraded",
            "1 when the policy considers the CDN degraded for (region, isp).",
            labels=["region", "isp", "cdn"],
        )
        for (region, isp, cdn), state in sorted(stats.links.items()):
            links.add_metric([region, isp, cdn], 1 if state == "degraded" else 0)
        yield links
        moves = CounterMetricFamily(
            "mainevent_steering_moves", "Sessions moved from one CDN to another."
        )
        moves.add_metric([], stats.moves)
        yield moves
        overrides = GaugeMetricFamily(
            "mainevent_steering_overrides",
            "Operator overrides in force.",
            labels=["region", "cdn", "action"],
        )
        for o in stats.overrides:
            overrides.add_metric([o.region, o.cdn, str(o.action)], 1)
        yield overrides


@dataclass
class SteeringRuntime:
    """Everything steering needs at run time."""

    settings: SteeringSettings
    policy: SteeringPolicy
    service: SteeringService
    app: SteeringApp
    prober: EdgeProber | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def on_health(self, report: HealthReport, now: float) -> None:
        self.policy.update_health(report, now)

    async def _expire(self) -> None:
        # One timer: sleep until the oldest session could expire, then forget the idle ones.
        while True:
            deadline = self.policy.next_deadline()
            wait = self.settings.session_timeout_s if deadline is None else deadline - time.time()
            await asyncio.sleep(max(0.05, wait))
            self.policy.expire(time.time())

    async def serve(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._expire())
            if self.prober is not None:
                tg.create_task(self.prober.serve())


def build_steering(
    settings: SteeringSettings,
    cdns: Iterable[str],
    *,
    regions: RegionTable,
    probe_targets: Mapping[str, str] | None = None,
    events: Iterable[str] | None = None,
) -> SteeringRuntime:
    """Policy + service + app (+ prober of `probe_targets`: CDN → URL) from settings."""
    names = list(cdns)
    for label, table in (("capacity", settings.capacity), ("cost", settings.cost)):
        unknown = set(table) - set(names)
        if unknown:
            raise ValueError(f"steering.{label} names unknown CDNs: {', '.join(sorted(unknown))}")
    specs = [
        CdnSpec(name=n, cost=settings.cost.get(n, 1.0), capacity=settings.capacity.get(n))
        for n in names
    ]
    config = SteeringConfig(
        ttl_s=settings.ttl_s,
        quorum=settings.quorum,
        min_dwell_s=settings.min_dwell_s,
        recover_hold_s=settings.recover_hold_s,
        failure_drain_share=settings.failure_drain_share,
        drain_share=settings.drain_share,
        return_share=settings.return_share,
        session_timeout_s=max(settings.session_timeout_s, settings.ttl_s),
    )
    policy = SteeringPolicy(specs, config)
    service = SteeringService(
        policy,
        regions=regions,
        new_id=lambda: "st-" + secrets.token_urlsafe(9),
        events=events,
        min_reload_interval_s=settings.min_reload_interval_s,
    )
    runtime = SteeringRuntime(settings, policy, service, SteeringApp(service))
    if probe_targets:
        runtime.prober = EdgeProber(
            probe_targets,
            settings.probe_regions,
            runtime.on_health,
            interval_s=settings.probe_interval_s,
            timeout_s=settings.probe_timeout_s,
            window=settings.probe_window,
        )
    runtime.registry.register(SteeringCollector(service, runtime.prober))
    return runtime
