"""Active edge probes → the policy's health signals. `ProbeBook` is the sans-IO part (results in,
`HealthReport` out); `EdgeProber` is the thin adapter: one loop, one timer, one request per
(CDN, region) per interval, each with `X-Client-Region` so a regional fault shows only there.

Player telemetry (issue 10) will feed the same `HealthReport` type; the policy does not care
where a `CdnSignal` came from.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from mainevent.control.steering.model import ANY, CdnSignal, HealthReport

__all__ = ["EdgeProber", "ProbeBook", "ProbeResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    """A 2xx/3xx answer within the timeout."""
    ttfb_ms: float
    """Time to the response head (the timeout when there was none)."""


class ProbeBook:
    """The last `window` probe results per (region, CDN) and the signal they make."""

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self._results: dict[tuple[str, str], deque[ProbeResult]] = {}

    def record(self, region: str, cdn: str, result: ProbeResult) -> None:
        q = self._results.get((region, cdn))
        if q is None:
            q = self._results[(region, cdn)] = deque(maxlen=self.window)
        q.append(result)

    def signal(self, region: str, cdn: str) -> CdnSignal:
        q = self._results.get((region, cdn), ())
        n = len(q)
        if not n:
            return CdnSignal()
        ok = sum(r.ok for r in q)
        ttfbs = sorted(r.ttfb_ms for r in q)
        p95 = ttfbs[min(n - 1, math.ceil(0.95 * n) - 1)]
        # No error_rate: a probe's failure is already its availability (counting it twice
        # would make one lost probe a quorum); error rates come from real requests (telemetry).
        return CdnSignal(ttfb_p95_ms=p95, availability=ok / n, samples=n)

    def report(self) -> HealthReport:
        return HealthReport(
            {(region, ANY, cdn): self.signal(region, cdn) for region, cdn in self._results}
        )


class EdgeProber:
    """Probe `targets` (CDN → URL of a small object on it) from each region every `interval_s`;
    hand each round's `HealthReport` to `on_report(report, now)`."""

    def __init__(
        self,
        targets: Mapping[str, str],
        regions: Sequence[str],
        on_report: Callable[[HealthReport, float], None],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 1.0,
        window: int = 10,
    ) -> None:
        self.targets = dict(targets)
        self.regions = tuple(regions) or (ANY,)
        self.on_report = on_report
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.book = ProbeBook(window)
        self.rounds = 0
        self._armed: set[tuple[str, str]] = set()

    async def _probe(self, client: httpx.AsyncClient, region: str, cdn: str, url: str) -> None:
        headers = {} if region == ANY else {"X-Client-Region": region}
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                r = await client.get(url, headers=headers)
            ok = r.status_code < 400
        except (TimeoutError, httpx.HTTPError):
            ok = False
        ttfb = (time.monotonic() - t0) * 1000
        if ok:
            self._armed.add((region, cdn))
        elif (region, cdn) not in self._armed:
            # Never seen working (the stream is still starting): no signal rather than a bad one.
            return
        self.book.record(region, cdn, ProbeResult(ok, ttfb if ok else self.timeout_s * 1000))

    async def run_once(self, client: httpx.AsyncClient) -> None:
        async with asyncio.TaskGroup() as tg:
            for region in self.regions:
                for cdn, url in self.targets.items():
                    tg.create_task(self._probe(client, region, cdn, url))
        self.rounds += 1
        self.on_report(self.book.report(), time.time())

    async def serve(self) -> None:
        # One connection per probe: a blackholed edge must not hold a pooled connection
        # that later probes would queue behind.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout_s) as client:
            while True:
                started = time.monotonic()
                await self.run_once(client)
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
