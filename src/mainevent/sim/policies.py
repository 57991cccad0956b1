"""The seams where the simulator plugs in policies, and the production objects it drives.

Every decision the services make is taken by the service's own class, imported here:
admission control (`common.admission`), rate limits (`common.ratelimit`), the entitlement
circuit breaker (`common.breaker`), the decision cache (`control.decisions`), the edge and
shield caches with their collapsing and upstream health (`media.edge.cache`), and the player's
ABR (`player.abr`), and the multi-CDN steering core (`control.steering.policy`, driven by
`sim.steering_model`). The simulator only models what surrounds them (arrivals, service times,
networks).
"""

from __future__ import annotations

from mainevent.common.admission import AdmissionController, AdmissionPolicy, Priority
from mainevent.common.breaker import CircuitBreaker
from mainevent.common.ratelimit import KeyedRateLimiter
from mainevent.control.decisions import DecisionCache
from mainevent.control.steering.policy import SteeringPolicy
from mainevent.media.edge.cache import Cache, UpstreamResponse
from mainevent.player.abr import AbrController, choose_level

__all__ = [
    "AbrController",
    "AdmissionController",
    "AdmissionPolicy",
    "Cache",
    "CircuitBreaker",
    "DecisionCache",
    "KeyedRateLimiter",
    "Priority",
    "SteeringPolicy",
    "UpstreamResponse",
    "choose_level",
]
