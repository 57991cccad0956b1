"""Values of content steering: the policy's inputs (health signals, CDNs, overrides), its
configuration and its per-session output. All frozen and slotted; no behaviour beyond checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ANY",
    "PATHWAY_ID",
    "CdnSignal",
    "CdnSpec",
    "Decision",
    "HealthReport",
    "LinkState",
    "Override",
    "OverrideAction",
    "Reason",
    "SessionState",
    "SteeringConfig",
    "Thresholds",
]

ANY = "*"
"""Wildcard ISP (or region) in a signal key: applies where nothing more specific is known."""

PATHWAY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""Pathway ids (= CDN names) as rfc8216bis allows them."""


@dataclass(frozen=True, slots=True)
class CdnSignal:
    """What is known about one CDN for one (region, ISP): the policy's only health input.

    Today active edge probes fill `error_rate`, `ttfb_p95_ms` and `availability`; player
    telemetry (CMCD/QoE aggregates) can fill `rebuffer_ratio` and sharpen the others later
    without any change to the policy. `None` means "no data", never "good" or "bad".
    """

    error_rate: float | None = None
    """Share of requests that failed (5xx, refused, timed out), 0..1."""
    rebuffer_ratio: float | None = None
    """Stalled time ÷ (played + stalled) of sessions on this CDN, 0..1."""
    ttfb_p95_ms: float | None = None
    """95th percentile time to first byte."""
    availability: float | None = None
    """Share of active probes that succeeded, 0..1."""
    samples: int = 0
    """Observations behind the figures (0 = none: the signal is ignored)."""


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One snapshot of signals: (region, isp, cdn) → signal; `isp` or `region` may be `ANY`."""

    signals: Mapping[tuple[str, str, str], CdnSignal]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A signal is bad beyond these (leaving) and good again only within `recover_*` (returning):
    the gap between the two is the hysteresis."""

    error_rate: float = 0.05
    rebuffer_ratio: float = 0.05
    ttfb_p95_ms: float = 1500.0
    availability: float = 0.9
    recover_error_rate: float = 0.01
    recover_rebuffer_ratio: float = 0.02
    recover_ttfb_p95_ms: float = 800.0
    recover_availability: float = 0.99

    def __post_init__(self) -> None:
        if not (
            self.recover_error_rate <= self.error_rate
            and self.recover_rebuffer_ratio <= self.rebuffer_ratio
            and self.recover_ttfb_p95_ms <= self.ttfb_p95_ms
            and self.recover_availability >= self.availability
        ):
            raise ValueError("recovery thresholds must be at least as strict as leaving ones")


@dataclass(frozen=True, slots=True)
class CdnSpec:
    """One CDN (= one pathway)."""

    name: str
    cost: float = 1.0
    """Relative cost per session; new sessions spread ∝ 1/cost among healthy CDNs."""
    capacity: int | None = None
    """Sessions this CDN may carry across all regions (None = unlimited)."""

    def __post_init__(self) -> None:
        if PATHWAY_ID.fullmatch(self.name) is None:
            raise ValueError(f"CDN name {self.name!r} may only use A-Z a-z 0-9 . _ -")
        if not self.cost > 0:
            raise ValueError(f"CDN {self.name!r}: cost must be positive")
        if self.capacity is not None and self.capacity < 0:
            raise ValueError(f"CDN {self.name!r}: capacity must be ≥ 0")


@dataclass(frozen=True, slots=True)
class SteeringConfig:
    """Every rule's parameter (seconds and shares)."""

    ttl_s: int = 10
    """Steering manifest TTL: how often players come back, and the drain-rate period."""
    quorum: int = 2
    """Bad signals needed to declare a CDN degraded in a group (fewer known: all of them)."""
    min_dwell_s: float = 30.0
    """A session moved stays at least this long; a CDN's state stays at least this long."""
    recover_hold_s: float = 30.0
    """A degraded CDN must look good (recovery thresholds) this long before it is healthy."""
    failure_drain_share: float = 0.5
    """Share of a CDN's sessions in a region moved off per TTL when it is degraded there."""
    drain_share: float = 0.25
    """Default share per TTL for an operator drain or pin without an explicit rate."""
    return_share: float = 0.2
    """Share of the sessions that left a recovered CDN sent back per TTL."""
    session_timeout_s: float = 60.0
    """A session not seen this long is forgotten (stops counting against caps)."""
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        if self.ttl_s < 1:
            raise ValueError("ttl_s must be at least 1")
        if self.quorum < 1:
            raise ValueError("quorum must be at least 1")
        for name in ("failure_drain_share", "drain_share", "return_share"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {v}")
        if self.min_dwell_s < 0 or self.recover_hold_s < 0:
            raise ValueError("min_dwell_s and recover_hold_s must be ≥ 0")
        if self.session_timeout_s < self.ttl_s:
            raise ValueError("session_timeout_s must be at least one TTL")


class OverrideAction(StrEnum):
    DRAIN = "drain"
    """Move this CDN's sessions in the region elsewhere, at the override's rate."""
    PIN = "pin"
    """Move every session in the region to this CDN, at the override's rate."""


@dataclass(frozen=True, slots=True)
class Override:
    """An operator decision for one CDN in one region (`ANY` = every region)."""

    region: str
    cdn: str
    action: OverrideAction
    rate: float
    """Share of the affected sessions moved per TTL, (0, 1]."""
    at: float
    """When it was applied (the drain's clock starts here)."""

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {self.rate}")


class LinkState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"


class Reason(StrEnum):
    """Why a session got its pathway."""

    PLACED = "placed"
    """New session: best healthy CDN with room, by cost-weighted hash."""
    STAY = "stay"
    """Sticky: its CDN is fine."""
    MOVED_UNHEALTHY = "moved_unhealthy"
    MOVED_DRAIN = "moved_drain"
    MOVED_PIN = "moved_pin"
    RETURNED = "returned"
    """Back to its home CDN after that recovered."""
    HELD_DWELL = "held_dwell"
    """Should move, but moved less than the minimum dwell ago."""
    HELD_RATE = "held_rate"
    """Should move, but not its turn yet (drain rate)."""
    HELD_CAPACITY = "held_capacity"
    """Should move, but every candidate CDN is at its cap."""


@dataclass(frozen=True, slots=True)
class SessionState:
    """What the session carries between steering requests (in its RELOAD-URI)."""

    session_id: str
    region: str
    isp: str = ANY
    pathway: str | None = None
    """Current pathway; None = not placed yet (or the playback API's choice, see `home`)."""
    home: str | None = None
    """The CDN the session was placed on and returns to after a failure."""
    moved_at: float | None = None
    """When it last changed pathway (wall-clock seconds, as the policy's `now`)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for one session: `priority[0]` is `pathway`."""

    state: SessionState
    priority: tuple[str, ...]
    reason: Reason

    @property
    def pathway(self) -> str:
        return self.priority[0]
