"""The seams where the simulator plugs in policies, and the production objects it drives.

Every decision the services make is taken by the service's own class, imported here:
admission control (`common.admission`), rate limits (`common.ratelimit`), the entitlement
circuit breaker (`common.breaker`), the decision cache (`control.decisions`), the edge and
shield caches with their collapsing and upstream health (`media.edge.cache`), and the player's
ABR (`player.abr`). The simulator only models what surrounds them (arrivals, service times,
networks). Multi-CDN steering is not in this branch yet: :class:`SteeringPolicy` is the seam, and
:class:`FirstCdnFailover` is a trivial stand-in (stay on the region's first CDN, move on when it
fails) until the production steering core lands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mainevent.common.admission import AdmissionController, AdmissionPolicy, Priority
from mainevent.common.breaker import CircuitBreaker
from mainevent.common.ratelimit import KeyedRateLimiter
from mainevent.control.decisions import DecisionCache
from mainevent.media.edge.cache import Cache, UpstreamResponse
from mainevent.player.abr import AbrController, choose_level

__all__ = [
    "AbrController",
    "AdmissionController",
    "AdmissionPolicy",
    "Cache",
    "CdnHealth",
    "CircuitBreaker",
    "DecisionCache",
    "FirstCdnFailover",
    "KeyedRateLimiter",
    "Priority",
    "SteeringPolicy",
    "UpstreamResponse",
    "choose_level",
]


@dataclass(frozen=True, slots=True)
class CdnHealth:
    """What a steering policy may observe about one CDN in one region during the last tick."""

    cdn: str
    region: str
    error_rate: float
    """Share of requests that failed (0..1)."""
    utilisation: float
    """Egress demand / capacity."""
    cost_per_gb: float


class SteeringPolicy(Protocol):
    """Chooses the CDN of a new session and the next one when a player fails over.

    The seam for the multi-CDN steering core (issue 11): any object with these methods.
    """

    def observe(self, health: Sequence[CdnHealth], now: float) -> None:
        """Health of every (CDN, region) over the last tick."""

    def choose(self, region: str, isp: str, candidates: Sequence[str], now: float) -> str:
        """CDN for a new session in `region` (candidates in the region's preference order)."""

    def failover(self, region: str, current: str, candidates: Sequence[str], now: float) -> str:
        """CDN a player on `current` moves to after repeated failures."""


class FirstCdnFailover:
    """Stand-in steering: the region's first CDN that did not fail last tick; next in order on failure.

    Not the production steering policy (it has none of cost, capacity or QoE awareness).
    """

    __slots__ = ("_failing",)

    def __init__(self) -> None:
        self._failing: set[tuple[str, str]] = set()

    def observe(self, health: Sequence[CdnHealth], now: float) -> None:
        self._failing = {(h.cdn, h.region) for h in health if h.error_rate >= 0.5}

    def choose(self, region: str, isp: str, candidates: Sequence[str], now: float) -> str:
        for cdn in candidates:
            if (cdn, region) not in self._failing:
                return cdn
        return candidates[0]

    def failover(self, region: str, current: str, candidates: Sequence[str], now: float) -> str:
        if current not in candidates:
            return candidates[0]
        i = candidates.index(current)
        for cdn in [*candidates[i + 1 :], *candidates[:i]]:
            if (cdn, region) not in self._failing:
                return cdn
        return candidates[(i + 1) % len(candidates)]
