"""Shield and CDN edges: a sans-IO HTTP cache core behind a lean asyncio/httptools server.

`Cache` decides (keys, freshness, stale serving, eviction, collapsing) and, with its
`UpstreamHealth`, when to stop asking a failing upstream; `EdgeServer` does the I/O; `Fault` drills
break one edge on purpose; `nginx_shield_config` renders the equivalent Debian nginx configuration
for interop.
"""

from mainevent.media.edge.cache import (
    Arrival,
    Cache,
    CacheStats,
    Entry,
    Fetch,
    Finished,
    Freshness,
    Hit,
    Stale,
    UpstreamResponse,
    Wait,
    cache_key,
    object_type,
    parse_cache_control,
)
from mainevent.media.edge.faults import Fault, FaultDecision, FaultError, decide
from mainevent.media.edge.health import HealthStats, UpstreamHealth
from mainevent.media.edge.nginx import NginxShield, nginx_shield_config
from mainevent.media.edge.server import ADMIN_HEADER, EdgeConfig, EdgeServer

__all__ = [
    "ADMIN_HEADER",
    "Arrival",
    "Cache",
    "CacheStats",
    "EdgeConfig",
    "EdgeServer",
    "Entry",
    "Fault",
    "FaultDecision",
    "FaultError",
    "Fetch",
    "Finished",
    "Freshness",
    "HealthStats",
    "Hit",
    "NginxShield",
    "Stale",
    "UpstreamHealth",
    "UpstreamResponse",
    "Wait",
    "cache_key",
    "decide",
    "nginx_shield_config",
    "object_type",
    "parse_cache_control",
]
