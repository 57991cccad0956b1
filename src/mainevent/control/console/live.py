"""The console's live view of one event: QoE series and alerts from the telemetry API, and the
platform's counters from ``/metrics`` (parsed with prometheus_client's parser) where no API
exists — ingest health per pipeline, the published pipeline, manifest freshness, shield/edge hit
ratio and origin fetches, playback authorisations, denials by reason, shedding.

The summaries are pure functions of the exposition text; :class:`LiveView` does the fetching
(one refresh = every source at once, each with a short timeout; a source that fails is reported,
not fatal) and remembers when each rendition's newest segment last changed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "DeliveryHealth",
    "FreshnessTracker",
    "LiveView",
    "PipelineHealth",
    "PlaybackCounters",
    "Samples",
    "delivery_health",
    "parse_exposition",
    "pipeline_health",
    "playback_counters",
    "qoe_columns",
]

Samples = list[tuple[str, dict[str, str], float]]
"""(sample name, labels, value) of one exposition."""

QOE_FIELDS = (
    "concurrent_sessions",
    "video_start_time_p50_ms",
    "rebuffer_ratio",
    "error_rate",
    "cdn_ttfb_p50_ms",
    "live_latency_p50_ms",
    "cache_hit_ratio",
    "player_errors",
)
"""QoE figures the console charts (columns of :func:`qoe_columns`)."""


def parse_exposition(text: str) -> Samples:
    """Every sample of a Prometheus text exposition (NaN values dropped)."""
    out: Samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not math.isnan(s.value):
                out.append((s.name, dict(s.labels), float(s.value)))
    return out


def _of(samples: Samples, name: str, **match: str) -> Iterable[tuple[dict[str, str], float]]:
    for n, labels, v in samples:
        if n == name and all(labels.get(k) == val for k, val in match.items()):
            yield labels, v


def _event_match(samples: Samples, name: str, event: str) -> dict[str, str]:
    """Filter on ``event`` when the metric carries that label (one stack may serve several)."""
    has = any("event" in labels for n, labels, _ in samples if n == name)
    return {"event": event} if has else {}


@dataclass(frozen=True, slots=True)
class PipelineHealth:
    """One pipeline's contribution feed and transcoder, as the origin exposes them."""

    pipeline: str
    connected: bool
    bitrate_kbps: float
    fps: float
    av_offset_s: float
    since_last_packet_s: float | None
    verdict: str
    input_errors: float
    transcoder_restarts: float
    published: bool


def pipeline_health(samples: Samples, event: str) -> list[PipelineHealth]:
    """Per pipeline health, and whether its segments are the ones published now."""

    def by_pipeline(name: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = {}
        m = _event_match(samples, name, event) | match
        for labels, v in _of(samples, name, **m):
            p = labels.get("pipeline")
            if p is not None:
                out[p] = out.get(p, 0.0) + v
        return out

    connected = by_pipeline("mainevent_feed_connected")
    bitrate = by_pipeline("mainevent_feed_bitrate_kbps")
    fps = by_pipeline("mainevent_feed_fps")
    drift = by_pipeline("mainevent_feed_av_offset_seconds")
    age = by_pipeline("mainevent_feed_since_last_packet_seconds")
    errors = by_pipeline("mainevent_feed_input_errors_total")
    restarts = by_pipeline("mainevent_transcoder_restarts_total")
    preferred = by_pipeline("mainevent_pipeline_preferred")
    verdicts: dict[str, str] = {}
    for labels, v in _of(samples, "mainevent_feed_verdict"):
        if v >= 1 and "pipeline" in labels:
            verdicts[labels["pipeline"]] = labels.get("verdict", "?")
    names = sorted(set(connected) | set(preferred), key=lambda n: (n != "primary", n))
    single = len(names) == 1 and not preferred
    return [
        PipelineHealth(
            pipeline=n,
            connected=connected.get(n, 0.0) >= 1,
            bitrate_kbps=round(bitrate.get(n, 0.0), 1),
            fps=round(fps.get(n, 0.0), 2),
            av_offset_s=round(drift.get(n, 0.0), 4),
            since_last_packet_s=None if n not in age else round(age[n], 3),
            verdict=verdicts.get(n, "unknown"),
            input_errors=errors.get(n, 0.0),
            transcoder_restarts=restarts.get(n, 0.0),
            published=single or preferred.get(n, 0.0) >= 1,
        )
        for n in names
    ]


@dataclass(frozen=True, slots=True)
class DeliveryHealth:
    """One cache tier (the shield or an edge): requests, hit ratio, fetches upstream."""

    name: str
    requests: float
    hits: float
    misses: float
    hit_ratio: float | None
    upstream_fetches: float
    upstream_errors: float


_HITS = ("HIT", "STALE", "COLLAPSED")


def delivery_health(name: str, samples: Samples) -> DeliveryHealth:
    """Counters of one cache tier; hits are answers without a fetch of their own."""
    hits = misses = total = 0.0
    for labels, v in _of(samples, "edge_requests_total"):
        total += v
        cache = labels.get("cache")
        if cache in _HITS:
            hits += v
        elif cache == "MISS":
            misses += v
    lookups = hits + misses
    return DeliveryHealth(
        name=name,
        requests=total,
        hits=hits,
        misses=misses,
        hit_ratio=round(hits / lookups, 4) if lookups else None,
        upstream_fetches=sum(v for _, v in _of(samples, "edge_upstream_fetches_total")),
        upstream_errors=sum(v for _, v in _of(samples, "edge_upstream_errors_total")),
    )


@dataclass(frozen=True, slots=True)
class PlaybackCounters:
    """The control plane's authorisation and admission counters (monotonic totals)."""

    grants: float
    preauth_grants: float
    refreshes: float
    degraded_grants: float
    denials: dict[str, float]
    shed: dict[str, float]
    sessions: float


def playback_counters(samples: Samples) -> PlaybackCounters:
    """Totals from the control plane's exposition."""

    def one(name: str) -> float:
        return sum(v for _, v in _of(samples, name))

    def by(name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, v in _of(samples, name):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
        return out

    shed = by("mainevent_control_shed_total", "priority")
    for k, v in by("mainevent_control_shed_late_total", "priority").items():
        shed[k] = shed.get(k, 0.0) + v
    return PlaybackCounters(
        grants=one("mainevent_playback_grants_total"),
        preauth_grants=one("mainevent_playback_preauth_grants_total"),
        refreshes=one("mainevent_playback_refreshes_total"),
        degraded_grants=one("mainevent_playback_degraded_grants_total"),
        denials=by("mainevent_playback_denials_total", "reason"),
        shed=shed,
        sessions=one("mainevent_playback_sessions"),
    )


@dataclass
class FreshnessTracker:
    """When each rendition's newest media sequence number last moved."""

    seen: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    """(event, rendition) → (last MSN, time it was first seen)."""

    def update(self, samples: Samples, event: str, now: float) -> list[dict[str, Any]]:
        """Per rendition: newest MSN, seconds since it changed, and the origin's stall flag."""
        stalled = {
            labels.get("rendition", ""): v >= 1
            for labels, v in _of(samples, "mainevent_manifest_stalled", event=event)
        }
        out = []
        for labels, msn in _of(samples, "mainevent_last_msn", event=event):
            r = labels.get("rendition", "")
            prev = self.seen.get((event, r))
            if prev is None or prev[0] != msn:
                self.seen[(event, r)] = (msn, now)
                since = now
            else:
                since = prev[1]
            out.append(
                {
                    "rendition": r,
                    "last_msn": int(msn),
                    "age_s": round(now - since, 3),
                    "stalled": stalled.get(r, False),
                }
            )
        return sorted(out, key=lambda x: str(x["rendition"]))


def qoe_columns(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A ``/v1/telemetry/qoe`` answer as columns per series: ``t`` and one list per field."""
    out = []
    for series in body.get("series", []):
        points = series.get("points", [])
        cols: dict[str, list[Any]] = {"t": [p["start"] for p in points]}
        for f in QOE_FIELDS:
            cols[f] = [p.get(f) for p in points]
        out.append({"labels": series.get("labels", {}), "columns": cols})
    return out


class LiveView:
    """Fetches every source of the live view of an event and summarises it."""

    def __init__(
        self,
        *,
        telemetry_url: str,
        metrics_targets: Mapping[str, str],
        own_metrics: Callable[[], Awaitable[str]],
        timeout_s: float,
        clock: Callable[[], float],
        window_s: int = 120,
    ) -> None:
        self.telemetry_url = telemetry_url.rstrip("/")
        self.metrics_targets = dict(metrics_targets)
        self.own_metrics = own_metrics
        self.timeout_s = timeout_s
        self.clock = clock
        self.window_s = window_s
        self.freshness = FreshnessTracker()

    @staticmethod
    async def _get(
        client: httpx.AsyncClient, url: str, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        r = await client.get(url, params=params)
        r.raise_for_status()
        return r

    async def _qoe(
        self, client: httpx.AsyncClient, event: str, by: str, now: float
    ) -> list[dict[str, Any]]:
        r = await self._get(
            client,
            f"{self.telemetry_url}/v1/telemetry/qoe",
            {"event": event, "by": by, "from": now - self.window_s, "to": now, "step": 1},
        )
        return qoe_columns(r.json())

    async def snapshot(self, event: str) -> dict[str, Any]:
        """Everything the per-event view shows, now; ``sources`` names what could not be read."""
        now = self.clock()
        sources: dict[str, str] = {}
        names = list(self.metrics_targets)

        async def guarded(name: str, coro: Any) -> Any:
            try:
                result = await coro
            except (httpx.HTTPError, ValueError) as exc:
                sources[name] = f"unavailable: {type(exc).__name__}: {exc}"[:200]
                return None
            sources[name] = "ok"
            return result

        # A client per refresh: loopback connections are cheap, and nothing outlives the call.
        async with httpx.AsyncClient(timeout=self.timeout_s) as c:
            jobs: list[Any] = [guarded(n, self._get(c, self.metrics_targets[n])) for n in names]
            if self.telemetry_url:
                jobs += [
                    guarded("telemetry", self._qoe(c, event, "", now)),
                    guarded("telemetry_cdn", self._qoe(c, event, "cdn", now)),
                    guarded("telemetry_region", self._qoe(c, event, "region", now)),
                    guarded("alerts", self._get(c, f"{self.telemetry_url}/v1/telemetry/alerts")),
                ]
            results = await asyncio.gather(*jobs)
        scraped: dict[str, Samples] = {}
        for n, r in zip(names, results[: len(names)], strict=True):
            if r is not None:
                try:
                    scraped[n] = parse_exposition(r.text)
                except ValueError as exc:
                    sources[n] = f"unparsable metrics: {exc}"[:200]
        own = parse_exposition(await self.own_metrics())
        qoe: dict[str, Any] = {"event": [], "cdn": [], "region": []}
        alerts: dict[str, Any] = {"firing": [], "events": []}
        if self.telemetry_url:
            ev, by_cdn, by_region, al = results[len(names) :]
            qoe = {"event": ev or [], "cdn": by_cdn or [], "region": by_region or []}
            if al is not None:
                body = al.json()
                alerts = {
                    "firing": [a for a in body.get("firing", []) if _for_event(a, event)],
                    "events": [a for a in body.get("events", []) if _for_event(a, event)][-50:],
                }
        origin = scraped.get("origin", [])
        tiers = [delivery_health(n, s) for n, s in scraped.items() if n != "origin"]
        return {
            "event": event,
            "at": now,
            "qoe": qoe,
            "alerts": alerts,
            "pipelines": [asdict(p) for p in pipeline_health(origin, event)],
            "renditions": self.freshness.update(origin, event, now) if origin else [],
            "delivery": [asdict(t) for t in tiers],
            "playback": asdict(playback_counters(own)),
            "sources": sources,
        }


def _for_event(alert: Mapping[str, Any], event: str) -> bool:
    labels = alert.get("labels") or {}
    return bool(labels.get("event", event) == event)
