"""Sans-IO preflight: the checks that must pass before an event goes live.

The media-plane adapter gathers `PreflightFacts` (pipeline health, rejected segments, playlist
freshness, one fetch through every CDN path, the playback service's answers); `evaluate` turns
them into one `CheckResult` per check. A failing check blocks go-live unless the operator
overrides it with a reason (audited).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Check", "CheckResult", "PreflightFacts", "evaluate", "failing"]


class Check(StrEnum):
    FEEDS_HEALTHY = "feeds_healthy"
    SEGMENTS_VALIDATING = "segments_validating"
    MANIFESTS_ADVANCING = "manifests_advancing"
    CDN_PATHS_FRESH = "cdn_paths_fresh"
    PLAYBACK_ANSWERING = "playback_answering"
    WAITING_ROOM_WARM = "waiting_room_warm"


@dataclass(frozen=True, slots=True)
class PreflightFacts:
    """What the adapter observed for one event."""

    pipelines: Mapping[str, bool]
    """Pipeline → healthy (feed connected, transcoder producing)."""
    rejected_segments: int
    """Segments that failed validation since the media started (or the last preflight)."""
    since_publish_s: Mapping[str, float | None]
    """Rendition → seconds since it last listed a segment (None: never)."""
    target_duration_s: float
    cdn_problems: Mapping[str, str | None] = field(default_factory=dict)
    """CDN → why its path did not serve a fresh object (None: it did)."""
    playback_problem: str | None = None
    waiting_room_problem: str | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: Check
    passed: bool
    detail: str


def evaluate(f: PreflightFacts) -> tuple[CheckResult, ...]:
    """Every check, in a fixed order."""
    sick = sorted(p for p, ok in f.pipelines.items() if not ok)
    feeds = CheckResult(
        Check.FEEDS_HEALTHY,
        bool(f.pipelines) and not sick,
        "no pipeline running"
        if not f.pipelines
        else (f"unhealthy: {', '.join(sick)}" if sick else f"healthy: {', '.join(f.pipelines)}"),
    )
    valid = CheckResult(
        Check.SEGMENTS_VALIDATING,
        f.rejected_segments == 0,
        f"{f.rejected_segments} segments rejected" if f.rejected_segments else "no rejections",
    )
    limit = 1.5 * f.target_duration_s
    stale = sorted(r for r, s in f.since_publish_s.items() if s is None or s > limit)
    manifests = CheckResult(
        Check.MANIFESTS_ADVANCING,
        bool(f.since_publish_s) and not stale,
        f"no new segment within {limit:g} s: {', '.join(stale)}"
        if stale
        else ("no renditions" if not f.since_publish_s else "every rendition advancing"),
    )
    bad_cdns = {c: p for c, p in sorted(f.cdn_problems.items()) if p is not None}
    cdns = CheckResult(
        Check.CDN_PATHS_FRESH,
        bool(f.cdn_problems) and not bad_cdns,
        "; ".join(f"{c}: {p}" for c, p in bad_cdns.items())
        if bad_cdns
        else (
            "no CDN configured" if not f.cdn_problems else f"fresh via {', '.join(f.cdn_problems)}"
        ),
    )
    playback = CheckResult(
        Check.PLAYBACK_ANSWERING, f.playback_problem is None, f.playback_problem or "answering"
    )
    waiting = CheckResult(
        Check.WAITING_ROOM_WARM,
        f.waiting_room_problem is None,
        f.waiting_room_problem or "event cached for pre-authorisation",
    )
    return (feeds, valid, manifests, cdns, playback, waiting)


def failing(results: tuple[CheckResult, ...]) -> tuple[str, ...]:
    """Names of the checks that failed."""
    return tuple(r.name.value for r in results if not r.passed)
