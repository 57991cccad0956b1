"""Edge metrics: plain counters on the hot path, exposed through a prometheus-client collector.

A prometheus `Counter.inc()` takes a lock (~0.5 µs); at 100 k hits/s that is a noticeable share
of a core, so the hit path bumps dict entries and the collector turns them into metric families
when `/metrics` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from mainevent.media.edge.cache import CacheStats
from mainevent.media.edge.faults import Fault
from mainevent.media.edge.health import HealthStats

__all__ = ["TYPES", "EdgeMetrics"]

TYPES = ("playlist", "segment", "part", "init", "other")
RESULTS = ("HIT", "MISS", "COLLAPSED", "STALE", "ERROR", "DENIED", "FAULT")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.sum += value


class EdgeMetrics(Collector):
    """Counters of one edge (`name`), registered in its own `CollectorRegistry`."""

    def __init__(
        self,
        name: str,
        cache_stats: Callable[[], CacheStats],
        fault: Callable[[], Fault | None],
        health: Callable[[], HealthStats] | None = None,
    ) -> None:
        self.name = name
        self._cache_stats = cache_stats
        self._fault = fault
        self._health = health
        self.requests: dict[tuple[str, str], int] = {(t, r): 0 for t in TYPES for r in RESULTS}
        self.bytes_sent: dict[str, int] = dict.fromkeys(TYPES, 0)
        self.upstream_fetches: dict[str, int] = dict.fromkeys(TYPES, 0)
        self.upstream_errors: dict[str, int] = dict.fromkeys(TYPES, 0)
        self.collapsed: dict[str, int] = dict.fromkeys(TYPES, 0)
        self.stale_upstream_failing: dict[str, int] = dict.fromkeys(TYPES, 0)
        self.latency: dict[str, _Histogram] = {t: _Histogram() for t in TYPES}
        self.upstream_latency: dict[str, _Histogram] = {t: _Histogram() for t in TYPES}
        self.faults_applied = 0
        self.shed: dict[str, int] = {"concurrency": 0, "bandwidth": 0}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        labels = ["edge", "type"]
        req = CounterMetricFamily(
            "edge_requests", "Requests by object type and cache result", labels=[*labels, "cache"]
        )
        for (t, r), v in self.requests.items():
            req.add_metric([self.name, t, r], v)
        yield req
        for metric, doc, values in (
            ("edge_bytes_sent", "Body bytes sent to clients", self.bytes_sent),
            (
                "edge_upstream_fetches",
                "Requests sent upstream (one per collapsed miss)",
                self.upstream_fetches,
            ),
            (
                "edge_upstream_errors",
                "Upstream fetches that failed (5xx, timeout, reset)",
                self.upstream_errors,
            ),
            (
                "edge_collapsed_waiters",
                "Requests that waited for another request's fetch",
                self.collapsed,
            ),
            (
                "edge_stale_upstream_failing",
                "Requests answered stale without asking the upstream, as it was marked failing",
                self.stale_upstream_failing,
            ),
        ):
            fam = CounterMetricFamily(metric, doc, labels=labels)
            for t, v in values.items():
                fam.add_metric([self.name, t], v)
            yield fam
        for metric, doc, hists in (
            ("edge_request_seconds", "Time to first response byte", self.latency),
            ("edge_upstream_seconds", "Upstream fetch duration", self.upstream_latency),
        ):
            h = HistogramMetricFamily(metric, doc, labels=labels)
            for t, hist in hists.items():
                cumulative, buckets = 0, []
                for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
                h.add_metric([self.name, t], buckets, hist.sum)
            yield h
        s = self._cache_stats()
        for metric, doc, value in (
            ("edge_cache_objects", "Objects stored", s.objects),
            ("edge_cache_bytes", "Bytes stored", s.bytes),
            ("edge_cache_max_bytes", "Byte budget", s.max_bytes),
            ("edge_in_flight_fetches", "Upstream fetches in flight", s.in_flight),
        ):
            g = GaugeMetricFamily(metric, doc, labels=["edge"])
            g.add_metric([self.name], value)
            yield g
        ev = CounterMetricFamily(
            "edge_cache_evictions", "Entries evicted (LRU or TTL)", labels=["edge"]
        )
        ev.add_metric([self.name], s.evicted)
        yield ev
        if self._health is not None:
            yield from self._collect_health(self._health())
        fault = self._fault()
        region = (fault.region or "*") if fault else "*"
        active = GaugeMetricFamily(
            "edge_fault_active", "1 while a fault drill is set", labels=["edge", "region"]
        )
        active.add_metric([self.name, region], 1 if fault else 0)
        yield active
        detail = GaugeMetricFamily(
            "edge_fault", "Settings of the active fault drill", labels=["edge", "region", "setting"]
        )
        if fault is not None:
            settings: tuple[tuple[str, float], ...] = (
                ("error_rate", fault.error_rate),
                ("error_status", fault.error_status),
                ("latency_ms", fault.latency_ms),
                ("throughput_kbps", fault.throughput_kbps),
                ("blackhole", 1 if fault.blackhole else 0),
                ("serve_stale", 1 if fault.serve_stale else 0),
            )
            for setting, number in settings:
                detail.add_metric([self.name, region, setting], float(number))
        yield detail
        applied = CounterMetricFamily(
            "edge_fault_applied", "Requests a fault drill changed", labels=["edge"]
        )
        applied.add_metric([self.name], self.faults_applied)
        yield applied
        shed = CounterMetricFamily(
            "edge_dvr_shed",
            "Cache misses for DVR segments answered 503 + Retry-After over the budget",
            labels=["edge", "reason"],
        )
        for reason, count in self.shed.items():
            shed.add_metric([self.name, reason], count)
        yield shed

    def _collect_health(self, h: HealthStats) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for metric, doc, value in (
            ("edge_upstream_healthy", "0 while the upstream is marked failing, else 1", h.healthy),
            (
                "edge_upstream_backoff_seconds",
                "Current backoff interval while the upstream is marked failing (0 when healthy)",
                h.backoff_s,
            ),
        ):
            g = GaugeMetricFamily(metric, doc, labels=["edge"])
            g.add_metric([self.name], float(value))
            yield g
        for metric, doc, count in (
            (
                "edge_upstream_marked_failing",
                "Times the upstream went from healthy to marked failing",
                h.marked_failing,
            ),
            ("edge_upstream_probes", "Probes sent to an upstream marked failing", h.probes),
        ):
            c = CounterMetricFamily(metric, doc, labels=["edge"])
            c.add_metric([self.name], count)
            yield c
