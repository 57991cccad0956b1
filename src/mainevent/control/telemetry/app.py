"""HTTP adapter of the collector: FastAPI routes (OpenAPI at /openapi.json) over :class:`Collector`.

Players post CMCD v2 event reports to ``/v1/cmcd/{event}`` (cross-origin: CORS is open, the
preflight of ``Content-Type: application/cmcd`` is answered), edges post access batches to
``/v1/access``; operators query ``/v1/telemetry/qoe`` and ``/v1/telemetry/alerts``; Prometheus
scrapes ``/metrics``. One timer task closes windows at each second boundary.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from mainevent.control.telemetry.aggregate import ClosedWindow
from mainevent.control.telemetry.collector import Collector, Outcome, Rejected
from mainevent.control.telemetry.health import HEALTH_KINDS, HealthScraper, of_kind
from mainevent.control.telemetry.model import DIMENSIONS, QoeAggregate, QoePoint
from mainevent.control.telemetry.store import TelemetryStore
from mainevent.control.telemetry.stream import StreamPublisher

__all__ = ["TelemetryService", "create_app"]

MAX_QUERY_POINTS = 20_000


class TelemetryService:
    """The collector, its store and the clock: what the routes and the timer share."""

    def __init__(
        self,
        collector: Collector,
        store: TelemetryStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collector = collector
        self.store = store
        self.clock = clock
        self._wake = asyncio.Event()
        self._armed: float | None = None
        """The deadline the timer waits for (None: none)."""
        self.expired_at = 0.0
        self.publisher: StreamPublisher | None = None
        """Set in stream mode: admitted inputs are appended to Redis before the 204."""

    def ingest_windows(self, windows: Sequence[ClosedWindow]) -> None:
        """Windows closed by stream aggregators: merged into the store, alerts evaluated."""
        self.store.write(windows, merge=True)
        self.collector.closed(windows, self.clock())

    async def published(self) -> Response | None:
        """In stream mode, append what the last POST admitted; a 503 if Redis failed."""
        if self.publisher is None:
            return None
        try:
            await self.publisher.flush()
        except (OSError, RedisError) as exc:
            return _error(
                503, "stream_unavailable", f"report stream unavailable: {exc}", {"Retry-After": "1"}
            )
        return None

    def tick(self) -> None:
        now = self.clock()
        windows, _ = self.collector.tick(now)
        self.store.write(windows)
        if now - self.expired_at > 60:
            self.store.expire(now)
            self.expired_at = now

    def poke(self) -> None:
        """New input may have moved the core's next deadline earlier: re-arm the timer then
        (only then: at ~100 POSTs a second, waking the timer for each would cost a task each)."""
        deadline = self.collector.next_deadline()
        if deadline is not None and (self._armed is None or deadline < self._armed):
            self._wake.set()

    async def run_timer(self) -> None:
        """Close windows as each second ends: one timer armed at the core's next deadline."""
        while True:
            deadline = self._armed = self.collector.next_deadline()
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - self.clock() + 0.01
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                    continue
                except TimeoutError:
                    pass
            self.tick()


class QoeSeriesOut(BaseModel):
    labels: dict[str, str] = Field(description="Values of the `by` dimensions.")
    points: list[QoePoint]  # the contract dataclass itself: one definition of the fields


class QoeResponse(BaseModel):
    event: str
    by: list[str]
    from_: float = Field(alias="from")
    to: float
    step: int
    resolution_s: int = Field(description="Stored resolution the points were merged from.")
    series: list[QoeSeriesOut]


class AlertOut(BaseModel):
    rule: str
    labels: dict[str, str]
    state: str
    at: float
    value: float | None


class AlertsResponse(BaseModel):
    firing: list[AlertOut] = Field(description="Alerts firing now (`at` = when they began).")
    events: list[AlertOut] = Field(description="Alert starts and ends, oldest first.")


class ErrorOut(BaseModel):
    error: str
    detail: str


_PLAYER_POST_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 404, 413, 415, 429, 503)
}
_CdnParam = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="CDN of records naming none."),
]


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def outcome_response(o: Outcome) -> Response:
    """The answer to an ingest POST (the routes' and the lean front's, ``telemetry/front.py``)."""
    if o.status < 300:
        return Response(
            status_code=204,
            headers={
                "X-Accepted": str(o.accepted),
                "X-Duplicates": str(o.duplicates),
                "X-Shed": str(o.shed),
                "X-Unknown-Keys": str(o.unknown_keys),
            },
        )
    headers = {"Retry-After": str(math.ceil(o.retry_after_s))} if o.retry_after_s else None
    return _error(o.status, str(o.reason or "error"), o.message, headers)


async def _body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is longer than ``limit`` (stops reading there)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_QOE_GAUGES: dict[str, str] = {
    "concurrent_sessions": "Sessions alive (last 10 s)",
    "rebuffer_ratio": "Stalled ÷ watched time (last 10 s)",
    "video_start_time_p95_ms": "Video start time p95 (ms)",
    "live_latency_p95_ms": "Live latency p95 (ms)",
    "average_bitrate_kbps": "Average played bitrate",
    "error_rate": "CDN responses ≥ 400 ÷ all",
    "cdn_ttfb_p95_ms": "CDN time to first byte p95 (ms)",
    "video_start_failure_ratio": "VSF ÷ attempts",
}
"""Headline QoE gauges at /metrics: `mainevent_qoe_<key>` → help text."""


class _QoeMetrics(PromCollector):
    """Headline QoE series of the last 10 s per event × region × CDN, and collector counters."""

    def __init__(self, service: TelemetryService) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        c = self.service.collector
        groups: dict[tuple[str, str, str], QoeAggregate] = {}
        seconds = len(c.recent)
        for windows in c.recent:
            for w in windows:
                key = (w.dims.event, w.dims.region, w.dims.cdn)
                acc = groups.get(key)
                if acc is None:
                    groups[key] = acc = QoeAggregate()
                acc.merge(w.agg)
        labels = ["event", "region", "cdn"]
        fams = {
            key: GaugeMetricFamily(f"mainevent_qoe_{key}", help_text, labels=labels)
            for key, help_text in _QOE_GAUGES.items()
        }
        for key, acc in sorted(groups.items()):
            point = acc.figures(0.0, float(max(seconds, 1)))
            for name, fam in fams.items():
                v = getattr(point, name)
                if v is not None:
                    fam.add_metric(list(key), float(v))
        yield from fams.values()
        rej = CounterMetricFamily(
            "mainevent_telemetry_rejected", "Refused input by reason", labels=["reason"]
        )
        for reason, n in c.rejected.items():
            rej.add_metric([str(reason)], n)
        yield rej
        st = c.intake.stats()
        rep = CounterMetricFamily(
            "mainevent_telemetry_reports", "Player reports by outcome", labels=["outcome"]
        )
        rep.add_metric(["accepted"], st.accepted)
        rep.add_metric(["duplicate"], st.duplicates)
        rep.add_metric(["shed"], st.shed)
        yield rep
        yield CounterMetricFamily(
            "mainevent_telemetry_unknown_keys", "CMCD keys ignored", value=c.unknown_keys
        )
        yield CounterMetricFamily(
            "mainevent_telemetry_access_records", "Edge access records", value=c.access_records
        )
        yield CounterMetricFamily(
            "mainevent_telemetry_access_cmcd_malformed",
            "Edge access records whose request CMCD did not parse (the record counted, its CMCD "
            "dropped)",
            value=c.access_cmcd_malformed,
        )
        dropped = CounterMetricFamily(
            "mainevent_telemetry_access_dropped",
            "Edge access records not aggregated: unknown event, or a path naming no event",
            labels=["reason"],
        )
        for why, n in c.access_dropped.items():
            dropped.add_metric([why], n)
        yield dropped
        yield GaugeMetricFamily(
            "mainevent_telemetry_sample_rate", "Heartbeat sample rate", value=st.sample_rate
        )
        a = c.aggregator.stats()
        yield GaugeMetricFamily(
            "mainevent_telemetry_sessions", "Sessions tracked", value=a.sessions
        )
        degraded = GaugeMetricFamily(
            "mainevent_degraded",
            "1 while operators have switched the optional feature off for the event (degrade)",
            labels=["event", "feature"],
        )
        for event in sorted(c.events):
            off = event in c.aggregator.detail_off
            degraded.add_metric([event, "telemetry_detail"], 1.0 if off else 0.0)
        yield degraded
        firing = GaugeMetricFamily(
            "mainevent_telemetry_alert_firing", "1 while an alert fires", labels=["rule", "series"]
        )
        for f in c.firing():
            firing.add_metric([f.rule, ",".join(f"{k}={v}" for k, v in f.labels.items())], 1.0)
        yield firing
        events = CounterMetricFamily(
            "mainevent_telemetry_alert_events", "Alert starts and ends", labels=["rule", "state"]
        )
        counts: dict[tuple[str, str], int] = {}
        for e in c.alert_log:
            counts[(e.rule, str(e.state))] = counts.get((e.rule, str(e.state)), 0) + 1
        for (rule, state), n in sorted(counts.items()):
            events.add_metric([rule, state], n)
        yield events


def create_app(
    service: TelemetryService, background: bool = True, health: HealthScraper | None = None
) -> FastAPI:
    """The collector's ASGI app; with ``background`` its lifespan runs the window timer."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not background:
            yield
            return
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(service.run_timer())
            try:
                yield
            finally:
                task.cancel()

    app = FastAPI(
        title="mainevent telemetry",
        version="1",
        lifespan=lifespan,
        description="CMCD v2 player reports, edge access records, QoE per region/CDN/ISP/device.",
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST"],
        allow_headers=["content-type"],
        expose_headers=["retry-after"],
        max_age=600,
    )
    registry = CollectorRegistry()
    registry.register(_QoeMetrics(service))
    c = service.collector
    limit = c.settings.max_body_bytes

    async def _ingested(out: Outcome) -> Response:
        """The answer to an ingest POST; in stream mode only once Redis has what was admitted."""
        if out.accepted:
            failed = await service.published()
            if failed is not None:
                return failed
            service.poke()
        return outcome_response(out)

    async def _player_post(
        ingest: Callable[..., Outcome], event: str, request: Request, cdn: str | None
    ) -> Response:
        body = await _body(request, limit)
        if body is None:
            return outcome_response(
                c._reject(Rejected.OVERSIZE, 413, f"body larger than {limit} bytes")
            )
        out = ingest(
            event,
            body,
            request.headers.get("content-type"),
            client=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
            region_header=request.headers.get("x-client-region"),
            now=service.clock(),
            cdn=cdn,
        )
        return await _ingested(out)

    @app.post(
        "/v1/cmcd/{event}",
        status_code=204,
        tags=["ingest"],
        summary="CMCD v2 event-mode report (application/cmcd, one record per line)",
        responses=_PLAYER_POST_ERRORS,
    )
    async def cmcd(event: str, request: Request, cdn: _CdnParam = None) -> Response:
        return await _player_post(c.cmcd_report, event, request, cdn)

    @app.post(
        "/v1/cmcd/{event}/batch",
        status_code=204,
        tags=["ingest"],
        summary="CMCD v2 event records of many sessions as one JSON batch (the fast path)",
        description=(
            'Body: `{"records": [{"sid": …, "sn": …, "e": "t", "ts": …, "sta": "p", …}]}`, each '
            "record the CMCD v2 event-mode keys as JSON values. Same admission, dedupe and "
            "answers as `/v1/cmcd/{event}`; a bad record is refused with its 1-based index."
        ),
        responses=_PLAYER_POST_ERRORS,
    )
    async def cmcd_batch(event: str, request: Request, cdn: _CdnParam = None) -> Response:
        return await _player_post(c.cmcd_batch, event, request, cdn)

    @app.post(
        "/v1/access",
        status_code=204,
        tags=["ingest"],
        summary="Access records from the shield and edges (JSON batch)",
        responses={
            400: {"model": ErrorOut},
            413: {"model": ErrorOut},
            415: {"model": ErrorOut},
            503: {"model": ErrorOut},
        },
    )
    async def access(request: Request) -> Response:
        body = await _body(request, limit)
        if body is None:
            return outcome_response(
                c._reject(Rejected.OVERSIZE, 413, f"body larger than {limit} bytes")
            )
        out = c.access_batch(body, request.headers.get("content-type"), service.clock())
        return await _ingested(out)

    @app.get(
        "/v1/telemetry/qoe",
        response_model=QoeResponse,
        tags=["query"],
        summary="QoE series of an event grouped by dimensions",
        responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    )
    async def qoe(
        event: Annotated[str, Query(description="Event id.")],
        by: Annotated[
            str, Query(description="Comma-separated dimensions: event, region, cdn, isp, device.")
        ] = "",
        from_: Annotated[
            float | None,
            Query(alias="from", description="Epoch seconds (default: 60 s ago)."),
        ] = None,
        to: Annotated[float | None, Query(description="Epoch seconds (default: now).")] = None,
        step: Annotated[int, Query(ge=1, le=86_400, description="Seconds per point.")] = 1,
        region: Annotated[str | None, Query(description="Only this region.")] = None,
        cdn: Annotated[str | None, Query(description="Only this CDN.")] = None,
        isp: Annotated[str | None, Query(description="Only this ISP.")] = None,
        device: Annotated[str | None, Query(description="Only this device class.")] = None,
        partial: Annotated[
            bool,
            Query(
                description="Also the step still in progress, with what it has so far (its "
                "figures grow until it ends; the open 1 s window of this collector included)."
            ),
        ] = False,
    ) -> Any:
        if event not in c.events:
            return _error(404, "unknown_event", f"unknown event {event!r}")
        dims = [d for d in by.split(",") if d] if by else []
        bad = [d for d in dims if d not in DIMENSIONS]
        if bad:
            return _error(
                400,
                "bad_dimension",
                f"unknown dimension {bad[0]!r} in by= (use {', '.join(DIMENSIONS)})",
            )
        now = service.clock()
        end = now if to is None else to
        start = end - 60 if from_ is None else from_
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            return _error(400, "bad_range", "from must be before to")
        if (end - start) / step > MAX_QUERY_POINTS:
            return _error(
                400, "too_many_points", f"(to - from) / step exceeds {MAX_QUERY_POINTS} points"
            )
        where = {
            k: v
            for k, v in (("region", region), ("cdn", cdn), ("isp", isp), ("device", device))
            if v is not None
        }
        # The open window is copied here, on the loop that feeds it; the store is read in a
        # worker thread (as a sync route would be), so a long query does not hold up ingest.
        series = await asyncio.to_thread(
            service.store.query,
            event,
            dims,
            start,
            end,
            step,
            now,
            where,
            open_windows=c.aggregator.open_windows() if partial else (),
            partial=partial,
        )
        resolution, effective = service.store.step_for(start, step, now)
        return {
            "event": event,
            "by": dims,
            "from": start,
            "to": end,
            "step": effective,  # at least the resolution read (the step asked for may be finer)
            "resolution_s": resolution,
            "series": [
                {"labels": s.labels, "points": [asdict(p) for p in s.points]} for s in series
            ],
        }

    @app.get(
        "/v1/telemetry/sessions/{sid}",
        tags=["query"],
        summary="One playback session now (start-up, state, bitrate, latency)",
        responses={404: {"model": ErrorOut}},
    )
    def session(sid: str) -> Any:
        view = c.aggregator.session(sid)
        if view is None:
            return _error(404, "unknown_session", f"no live session {sid!r}")
        if view.dims.event in c.aggregator.detail_off:
            return {
                "sid": sid,
                "event": view.dims.event,
                "degraded": ["telemetry_detail"],
                "detail": f"per-session detail is switched off for event {view.dims.event!r} "
                "(degraded by its operators); its aggregates are still kept at "
                "/v1/telemetry/qoe",
            }
        out = asdict(view)
        out["dims"] = asdict(view.dims)
        out["degraded"] = []
        return out

    @app.get("/v1/telemetry/alerts", response_model=AlertsResponse, tags=["query"])
    def alerts() -> Any:
        return {
            "firing": [
                {
                    "rule": f.rule,
                    "labels": f.labels,
                    "state": "firing",
                    "at": f.since,
                    "value": f.value,
                }
                for f in c.firing()
            ],
            "events": [
                {
                    "rule": e.rule,
                    "labels": e.labels,
                    "state": str(e.state),
                    "at": e.at,
                    "value": e.value,
                }
                for e in c.alert_log
            ],
        }

    @app.get(
        "/v1/telemetry/health",
        tags=["query"],
        summary="Scraped platform health: latest samples per target, and (from/to) their history",
        description=(
            "Every scrape target (`telemetry.scrape_targets`; under `mainevent up` the origin, "
            "shield, edges, control plane and scale-out processes) with `up` (its last scrape "
            "answered), `scraped_at` and `samples` (`name{labels}` → value). With `from`/`to`, "
            "also `history`: each scrape in that range (the last 5 minutes are kept), `up` and "
            "samples. `kind` keeps only the samples of one kind of health:\n\n"
            + "\n".join(
                f"- `{k}`: {what} ({', '.join(f'`{n}`' for n in names)})"
                for k, (what, names) in HEALTH_KINDS.items()
            )
        ),
        responses={400: {"model": ErrorOut}},
    )
    def platform_health(
        target: Annotated[str | None, Query(description="Only this target.")] = None,
        match: Annotated[str | None, Query(description="Only samples containing this.")] = None,
        kind: Annotated[
            str | None, Query(description="Only samples of this kind (listed above).")
        ] = None,
        from_: Annotated[
            float | None, Query(alias="from", description="History from (epoch seconds).")
        ] = None,
        to: Annotated[
            float | None, Query(description="History to (epoch seconds; default: now).")
        ] = None,
    ) -> Any:
        if kind is not None and kind not in HEALTH_KINDS:
            return _error(400, "bad_kind", f"unknown kind {kind!r} (use {', '.join(HEALTH_KINDS)})")
        if health is None:
            return {"targets": {}}
        history = from_ is not None or to is not None
        end = service.clock() if to is None else to
        start = (end - 300) if from_ is None else from_
        if history and (not (math.isfinite(start) and math.isfinite(end)) or end < start):
            return _error(400, "bad_range", "from must not be after to")

        def pick(samples: Mapping[str, float]) -> dict[str, float]:
            return {
                k: v
                for k, v in samples.items()
                if (match is None or match in k) and (kind is None or of_kind(kind, k))
            }

        out: dict[str, Any] = {}
        for name in [*health.targets, *(n for n in health.samples if n not in health.targets)]:
            if target is not None and name != target:
                continue
            out[name] = {
                "up": health.up.get(name, False),
                "scraped_at": health.scraped_at.get(name),
                "samples": pick(health.samples.get(name, {})),
            }
            if history:
                out[name]["history"] = [
                    {"at": r.at, "up": r.up, "samples": pick(r.samples)}
                    for r in health.rounds(name, start, end)
                ]
        return {"targets": out}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        a = c.aggregator.stats()
        return {"status": "ok", "sessions": a.sessions, "events": sorted(c.events)}

    return app
