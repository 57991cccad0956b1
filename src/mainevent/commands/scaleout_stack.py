"""The scale-out parts of a `Stack` (`stack.py`): its ingest fan-out, origin replicas and edge fleet.

Kept apart from `stack.py` so the one-process platform reads as before; each function takes the
stack and fills in or runs its `fanout`, `replicas` and `edge_fleet`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.registry import Collector, CollectorRegistry

from mainevent.commands.scaleout import EdgeFleet, ReplicaOrigins, run_all, shield_processes
from mainevent.media.origin.fanout import FanoutCore
from mainevent.media.origin.ingest_client import FanoutPublisher, FanoutStore
from mainevent.media.origin.live import LiveEvent
from mainevent.media.store import SegmentStore

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from mainevent.commands.stack import Stack

__all__ = [
    "end_on_origins",
    "fanout_store",
    "forward_metrics",
    "metrics_targets",
    "plan_edge_fleet",
    "scaleout_ready",
    "scaleout_tasks",
]

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0


def _free_port(host: str) -> int:
    from mainevent.commands.stack import free_port

    return free_port(host=host)


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def fanout_store(stack: Stack, store: SegmentStore) -> SegmentStore:
    """`store`, or (with origin replicas or remote ingest URLs) a `FanoutStore` around it that
    publishes every stored object of the stack's event to each origin."""
    s = stack.settings
    o = s.origin
    targets = list(o.ingest_urls)
    secret = o.ingest_secret
    if o.replicas > 1:
        secret = secret or secrets.token_hex(16)
        host = _loopback(o.host)
        ports = tuple(_free_port(host) for _ in range(o.replicas))
        stack.replicas = ReplicaOrigins(s, host, ports, secret)
        targets = [*stack.replicas.urls, *targets]
    if not targets:
        return store
    stack.fanout = FanoutPublisher(
        targets,
        secret=secret,
        core=FanoutCore(len(targets), max_queued=o.ingest_queue),
        registry=CollectorRegistry(),
    )
    return FanoutStore(
        store, stack.fanout, events=frozenset({s.event.id}), parts=s.event.latency == "low"
    )


def end_on_origins(stack: Stack, event: LiveEvent) -> None:
    """When `event` ends on the packager, it ends on every origin too (after its last segment)."""
    store = event.store
    if isinstance(store, FanoutStore):
        fanout = store
        event.on_end = lambda ev: fanout.ended(ev.event_id, ev.rendition_ids)


def plan_edge_fleet(
    stack: Stack, host: str, regions: Mapping[str, tuple[str, ...]], origins: Sequence[str]
) -> EdgeFleet:
    """`delivery.edges_per_cdn` edge processes per CDN behind nginx, missing to the stack's
    shield, or (`delivery.shields` ≥ 2) to shield processes in front of `origins`."""
    per_cdn = stack.settings.delivery.edges_per_cdn
    base = stack.edge_port_base
    names = list(stack.edge_names)
    try:
        return _plan_fleet(stack, host, regions, per_cdn, base, names, origins)
    except RuntimeError as exc:
        from mainevent.commands.stack import StackError

        raise StackError(str(exc)) from None


def _plan_fleet(
    stack: Stack,
    host: str,
    regions: Mapping[str, tuple[str, ...]],
    per_cdn: int,
    base: int,
    names: list[str],
    origins: Sequence[str],
) -> EdgeFleet:
    n = stack.settings.delivery.shields
    shields = []
    if n > 1:
        ports = [base if base and i == 0 else _free_port(host) for i in range(n)]
        shields = shield_processes(
            host,
            ports,
            origins,
            admin_secret=stack.edge_admin_secret,
            telemetry_url=stack.telemetry_url,
        )
        shield_urls = [f"http://{host}:{p}" for p in ports]
    else:
        assert stack.shield is not None
        shield_urls = [stack.shield.url]
    return EdgeFleet.plan(
        names,
        per_cdn=per_cdn,
        host=host,
        listen_ports=[base + i if base else _free_port(host) for i in range(1, len(names) + 1)],
        edge_ports=[[_free_port(host) for _ in range(per_cdn)] for _ in names],
        shield_urls=shield_urls,
        regions=regions,
        workdir=(stack.settings.origin.data_dir / "edge-lb").resolve(),
        admin_secret=stack.edge_admin_secret,
        token_keys=stack.edge_token_keys,
        telemetry_url=stack.telemetry_url,
        shields=shields,
    )


def metrics_targets(fleet: EdgeFleet | None, replicas: ReplicaOrigins | None) -> dict[str, str]:
    """Name → `/metrics` URL of every scale-out process: each edge and shield process of the
    fleet (by its supervised name, e.g. `cdn-a-0`, `shield-1`) and each origin replica.

    Each process is scraped itself, not through nginx: the balancer would answer from any one
    edge, and a dead edge would vanish instead of showing as a failed scrape."""
    out: dict[str, str] = {}
    if fleet is not None:
        for child in [*fleet.shields, *fleet.children]:
            if child.health_url:
                out[child.name] = child.health_url.removesuffix("/healthz") + "/metrics"
    if replicas is not None:
        for i, url in enumerate(replicas.urls):
            out[f"origin-{i}"] = f"{url}/metrics"
    return out


async def _serve_replicas(stack: Stack) -> None:
    replicas = stack.replicas
    assert replicas is not None
    await stack._control_built.wait()
    pathways = getattr(stack, "_pathways", None)
    if pathways is not None:
        replicas.build(pathways.cdns, pathways.steering_url)
    else:
        replicas.build()
    await run_all(replicas.children)


def scaleout_tasks(stack: Stack) -> list[Coroutine[Any, Any, None]]:
    """What the stack's task group runs for its scale-out parts."""
    out: list[Coroutine[Any, Any, None]] = []
    if stack.fanout is not None:
        out.append(stack.fanout.serve())
    if stack.replicas is not None:
        out.append(_serve_replicas(stack))
    fleet = stack.edge_fleet
    if fleet is not None:
        out.append(run_all([*fleet.shields, *fleet.children, fleet.balancer()]))
    return out


class _Forward(Collector):
    """The fan-out's metrics on the packager origin's /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


async def scaleout_ready(stack: Stack) -> None:
    """Wait (bounded) until every origin replica and edge process answers its health check."""
    children = []
    if stack.replicas is not None:
        await stack._control_built.wait()
        while not stack.replicas.children:  # noqa: ASYNC110 - built right after control
            await asyncio.sleep(0.05)
        children += stack.replicas.children
    if stack.edge_fleet is not None:
        children += [*stack.edge_fleet.shields, *stack.edge_fleet.children]
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            for c in children:
                await c.ready.wait()
    except TimeoutError:
        log.error("scale-out processes not all healthy after %.0f s", READY_TIMEOUT_S)


def forward_metrics(stack: Stack) -> None:
    """Show the fan-out's per-origin metrics on the packager origin's /metrics."""
    if stack.fanout is not None and stack.event is not None:
        stack.event.metrics.registry.register(_Forward(stack.fanout.metrics.registry))
