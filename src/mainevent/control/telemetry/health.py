"""Platform health by scraping: the samples of every service's Prometheus ``/metrics``, the
latest and a short bounded history per target.

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
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["HEALTH_KINDS", "HealthRound", "HealthScraper", "of_kind"]

log = logging.getLogger("mainevent.telemetry")

HEALTH_KINDS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "feed_connected": (
        "Pipeline: 1 while its contribution feed is connected (feed-lost alert)",
        ("mainevent_feed_connected",),
    ),
    "feed_bitrate": (
        "Pipeline: incoming feed bitrate (kbit/s, last second)",
        ("mainevent_feed_bitrate_kbps",),
    ),
    "feed_fps": ("Pipeline: incoming video frames per second", ("mainevent_feed_fps",)),
    "feed_frames": (
        "Pipeline: dropped and duplicated frames (`kind` dropped_frames, "
        "duplicated_frames) and corrupt input (continuity_errors, sync_losses, "
        "decode_errors)",
        ("mainevent_feed_input_errors",),
    ),
    "av_drift": (
        "Pipeline: audio moved against video since the feed connected (s)",
        ("mainevent_feed_av_offset_seconds",),
    ),
    "feed_verdict": (
        "Pipeline: 1 for its verdict (healthy, degraded, lost)",
        ("mainevent_feed_verdict",),
    ),
    "publish_delay": (
        "Packager: publication minus capture of a segment's end (histogram)",
        ("mainevent_publish_delay_seconds",),
    ),
    "rejected_segments": (
        "Packager: segments refused by validation, by `reason`",
        ("mainevent_segments_rejected_total",),
    ),
    "selector_decisions": (
        "Selector: copies published per pipeline and reason, copies "
        "discarded, the preferred pipeline",
        (
            "mainevent_selected_segments_total",
            "mainevent_discarded_segments_total",
            "mainevent_pipeline_preferred",
        ),
    ),
    "failovers": (
        "Selector: changes of the preferred pipeline, by reason",
        ("mainevent_pipeline_switches_total",),
    ),
    "manifest_freshness": (
        "Selector: 1 while a rendition lists no new media (manifest-stale alert)",
        ("mainevent_manifest_stalled",),
    ),
    "authorisations": (
        "Control plane: playback grants and admitted requests by priority",
        ("mainevent_playback_grants_total", "mainevent_control_admitted_total"),
    ),
    "denials": (
        "Control plane: playback denials by `reason`",
        ("mainevent_playback_denials_total",),
    ),
    "shed_requests": (
        "Control plane: requests shed by priority (authorisation-shedding alert)",
        ("mainevent_control_shed_total", "mainevent_control_shed_late_total"),
    ),
}
"""Kind of platform health → (what it is, the Prometheus sample names that carry it)."""

_PARTS = ("", "_total", "_bucket", "_sum", "_count", "_created")


def of_kind(kind: str, key: str) -> bool:
    """Whether the sample ``key`` (``name{labels}``) carries health of ``kind``."""
    base = key.split("{", 1)[0]
    return any(base == n + p for n in HEALTH_KINDS[kind][1] for p in _PARTS)


@dataclass(frozen=True, slots=True)
class HealthRound:
    """One scrape of one target: when, whether it answered, its samples (empty when down)."""

    at: float
    up: bool
    samples: Mapping[str, float]


@dataclass
class HealthScraper:
    """Latest samples of each target's ``/metrics``, refreshed every ``interval_s``, and the
    last ``history_rounds`` scrapes of each target (older ones are dropped)."""

    targets: dict[str, str]
    interval_s: float = 1.0
    history_rounds: int = 300
    """Scrapes kept per target: 5 minutes at one a second (a scrape's samples are shared with
    ``samples``, so the bound is rounds × samples of one target)."""
    samples: dict[str, dict[str, float]] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    scraped_at: dict[str, float] = field(default_factory=dict)
    history: dict[str, deque[HealthRound]] = field(default_factory=dict)
    on_round: Callable[[HealthScraper], object] | None = None
    """Called after every scrape round (the collector evaluates its health alerts there)."""
    clock: Callable[[], float] = time.time

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.interval_s) as client:
            while True:
                targets = list(self.targets.items())  # targets may be added between rounds
                await asyncio.gather(*(self._scrape(client, n, u) for n, u in targets))
                if self.on_round is not None:
                    self.on_round(self)
                await asyncio.sleep(self.interval_s)

    def rounds(self, name: str, start: float, end: float) -> list[HealthRound]:
        """Scrapes of ``name`` taken in [start, end], oldest first."""
        return [r for r in self.history.get(name, ()) if start <= r.at <= end]

    def _keep(self, name: str, r: HealthRound) -> None:
        kept = self.history.get(name)
        if kept is None:
            kept = self.history[name] = deque(maxlen=self.history_rounds)
        kept.append(r)

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
            self._keep(name, HealthRound(self.clock(), False, {}))
            log.debug("health scrape of %s (%s) failed: %s", name, url, exc)
            return
        now = self.clock()
        self.samples[name] = out
        self.up[name] = True
        self.scraped_at[name] = now
        self._keep(name, HealthRound(now, True, out))
