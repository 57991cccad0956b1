"""What one headless playback session measured: the values `play()` returns."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Live latency samples (wall clock - PDT at the playhead), in seconds."""

    samples: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None

    @classmethod
    def of(cls, samples: Sequence[float]) -> LatencySummary:
        """Summarise `samples` (nearest-rank percentiles)."""
        if not samples:
            return cls()
        ordered = sorted(samples)
        return cls(
            samples=len(ordered),
            p50_s=_nearest_rank(ordered, 0.50),
            p95_s=_nearest_rank(ordered, 0.95),
            max_s=ordered[-1],
        )


@dataclass(frozen=True, slots=True)
class RenditionSwitch:
    """The video rendition fetched from `t_s` seconds after the play request on."""

    t_s: float
    rendition: str


@dataclass(frozen=True, slots=True)
class PlaybackReport:
    """Outcome of `play()`: QoE figures as defined in SPEC.md §6, and what was fetched."""

    url: str
    startup_s: float | None
    """Play request (first request) to the playhead moving; None if playback never started."""
    played_s: float
    stalls: int
    stall_time_s: float
    latency: LatencySummary
    renditions: tuple[RenditionSwitch, ...]
    segments_fetched: int
    """Media segments downloaded (all tracks; init sections and playlists not counted)."""
    playlists_fetched: int
    bytes_fetched: int
    """Response body bytes of every successful request (playlists, init sections, segments)."""
    http_errors: Mapping[str, int] = field(default_factory=dict)
    """Failed requests by HTTP status ("503") or transport error class ("ConnectError")."""
    failovers: int = 0
    """Moves to the next base URL after repeated failures."""
    final_url: str = ""
    """Multivariant playlist URL in use at the end (differs from `url` after a failover)."""
    resyncs: int = 0
    """Jumps back into the live window after the playhead fell out of it."""
    fatal: str | None = None
    pathways: tuple[tuple[float, str], ...] = ()
    """Content steering: (seconds since the play request, pathway) at the start and at each
    switch of pathway (empty without steering)."""
    startup_phases_s: tuple[float, ...] = ()
    """Where the start-up went, in order: the multivariant playlist, the media playlists (all
    tracks in parallel, until the start position is known), then the media (init sections and
    first segments, tracks in parallel) until the playhead moved. Empty if it never started."""
    stall_starts_s: tuple[float, ...] = ()
    """When each stall began, in seconds since the play request."""
    longest_stall_s: float = 0.0
    """The longest single stall (0 without stalls)."""

    @property
    def rebuffering_ratio(self) -> float:
        """Stalled time / (played + stalled time), startup excluded (SPEC.md §6)."""
        total = self.played_s + self.stall_time_s
        return self.stall_time_s / total if total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (renditions as [t_s, rendition] pairs)."""
        data = asdict(self)
        data["http_errors"] = dict(self.http_errors)
        data["renditions"] = [[r.t_s, r.rendition] for r in self.renditions]
        data["startup_phases_s"] = list(self.startup_phases_s)
        data["stall_starts_s"] = list(self.stall_starts_s)
        data["rebuffering_ratio"] = self.rebuffering_ratio
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _nearest_rank(ordered: Sequence[float], q: float) -> float:
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
