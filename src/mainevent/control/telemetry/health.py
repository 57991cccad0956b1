"""Platform health by scraping: the latest samples of every service's Prometheus ``/metrics``.

Scraped (pull), not pushed: every service already exposes Prometheus text at ``/metrics``
(pipelines with feed bitrate/fps/drops/drift, packager rejections, selector decisions and
failovers, manifest freshness, edges, the control plane's authorisations, denials and shedding),
so nothing in the media plane needs to know the collector, and a dead service shows up as a
failed scrape rather than as silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["HealthScraper"]

log = logging.getLogger("mainevent.telemetry")


@dataclass
class HealthScraper:
    """Latest samples of each target's ``/metrics``, refreshed every ``interval_s``."""

    targets: dict[str, str]
    interval_s: float = 1.0
    samples: dict[str, dict[str, float]] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    scraped_at: dict[str, float] = field(default_factory=dict)
    on_round: Callable[[HealthScraper], object] | None = None
    """Called after every scrape round (the collector evaluates its health alerts there)."""

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.interval_s) as client:
            while True:
                targets = list(self.targets.items())  # targets may be added between rounds
                await asyncio.gather(*(self._scrape(client, n, u) for n, u in targets))
                if self.on_round is not None:
                    self.on_round(self)
                await asyncio.sleep(self.interval_s)

    async def _scrape(self, client: httpx.AsyncClient, name: str, url: str) -> None:
        try:
            r = await client.get(url)
            r.raise_for_status()
            out: dict[str, float] = {}
            for fam in text_string_to_metric_families(r.text):
                for s in fam.samples:
                    labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                    out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
        except (httpx.HTTPError, ValueError) as exc:
            self.up[name] = False
            log.debug("health scrape of %s (%s) failed: %s", name, url, exc)
            return
        self.samples[name] = out
        self.up[name] = True
        self.scraped_at[name] = time.time()
