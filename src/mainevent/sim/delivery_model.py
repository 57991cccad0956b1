"""Edges and shield as the real caches (`media.edge.cache.Cache`), driven one request wave at a time.

Per published segment, every (CDN, region) edge whose viewers play that rendition gets a wave
of requests spread over the segment duration. The real cache decides the first request
(`Fetch`: it goes to the shield, another real cache, whose own `Fetch` is an origin fetch), a
second one while the fetch is in flight (`Wait`: collapsed), and one after it finished (`Hit`,
or `Stale` when the upstream is failing). The wave's other requests are counted as their
position in time says: before the fetch completes they are collapsed waiters, after it hits.
Media playlists (`max-age` = D/2) are looked up twice per segment per edge, init sections once
per edge (a wave per tick per rendition a POP plays: a hit once the edge has it). Origin fetches
are counted by object type too (`origin_by_type`: playlist, segment, init), as the shield's
`edge_upstream_fetches_total{type}` counts them in a real run. Model error: each edge is one cache (a CDN's region is one POP) and requests inside a
wave are uniform in time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mainevent.media.edge.cache import Fetch, Hit, Stale, Wait
from mainevent.sim.policies import Cache, UpstreamResponse

__all__ = ["DeliveryModel", "WaveResult"]


def _type(key: str) -> str:
    """The shield metrics' object type of a model key (`/v2/init.mp4`, `/a/7.m4s`, `/v1.m3u8`)."""
    if key.endswith(".m3u8"):
        return "playlist"
    return "init" if key.endswith("init.mp4") else "segment"


@dataclass(slots=True)
class WaveResult:
    fetches: int = 0
    collapsed: float = 0.0
    hits: float = 0.0
    failed: float = 0.0
    stale: float = 0.0
    wait_s: float = 0.0
    """Mean extra wait of a request of this wave (collapsed waiters wait for the fetch)."""


@dataclass(slots=True)
class DeliveryModel:
    segment_s: float
    shield_rtt_s: float
    origin_rtt_s: float
    edge_cache_bytes: int
    origin_fetches: int = 0
    origin_fetches_tick: int = 0
    shield_fetches_tick: int = 0
    origin_down: bool = False
    origin_by_type: dict[str, int] = field(
        default_factory=lambda: {"playlist": 0, "segment": 0, "init": 0}
    )
    edges: dict[tuple[str, str], Cache] = field(default_factory=dict)
    shield: Cache = field(default_factory=lambda: Cache(max_bytes=2 << 30))
    _bodies: dict[int, bytes] = field(default_factory=dict)

    def edge(self, cdn: str, region: str) -> Cache:
        key = (cdn, region)
        cache = self.edges.get(key)
        if cache is None:
            cache = self.edges[key] = Cache(
                max_bytes=self.edge_cache_bytes, default_stale_if_error=10.0
            )
        return cache

    def _response(self, size: int, max_age: float) -> UpstreamResponse:
        body = self._bodies.get(size)
        if body is None:
            body = self._bodies[size] = bytes(size)  # shared: one allocation per object size
        return UpstreamResponse(
            200, (("cache-control", f"max-age={max(1, int(max_age))}, stale-if-error=10"),), body
        )

    def _shield_fetch(self, key: str, size: int, max_age: float, now: float) -> tuple[float, bool]:
        """Edge miss → shield: returns (time until the edge has the body, ok)."""
        self.shield_fetches_tick += 1
        d = self.shield.lookup(key, now)
        took = self.shield_rtt_s + size * 8 / 10e9
        if isinstance(d, Hit | Stale):
            return took, True
        if isinstance(d, Wait):
            return took + self.origin_rtt_s / 2, True
        assert isinstance(d, Fetch)
        self.origin_fetches += 1
        self.origin_fetches_tick += 1
        self.origin_by_type[_type(key)] += 1
        if self.origin_down:
            fin = self.shield.finish(key, None, now + self.origin_rtt_s)
            return took + self.origin_rtt_s, fin.response is not None
        self.shield.finish(key, self._response(size, max_age), now + self.origin_rtt_s)
        return took + self.origin_rtt_s, True

    def wave(
        self,
        cdn: str,
        region: str,
        key: str,
        size: int,
        max_age: float,
        n: float,
        start: float,
        spread: float,
        cdn_failing: bool,
    ) -> WaveResult:
        """`n` requests for `key` at edge (cdn, region) spread uniformly over [start, start+spread)."""
        res = WaveResult()
        if n <= 0:
            return res
        if cdn_failing:
            res.failed = n
            return res
        edge = self.edge(cdn, region)
        d = edge.lookup(key, start)
        if isinstance(d, Hit):
            res.hits = n
            return res
        if isinstance(d, Stale):
            res.stale = n
            if d.revalidate:
                took, ok = self._shield_fetch(key, size, max_age, start)
                edge.finish(key, self._response(size, max_age) if ok else None, start + took)
            return res
        if isinstance(d, Wait):  # a fetch from an earlier wave still in flight
            res.collapsed = n
            res.wait_s = self.shield_rtt_s / 2
            return res
        took, ok = self._shield_fetch(key, size, max_age, start)
        res.fetches = 1
        collapsing = True
        if n > 1:
            # A concurrent request: the real cache decides whether it waits for this fetch.
            collapsing = isinstance(edge.lookup(key, start + took / 2), Wait)
        fin = edge.finish(key, self._response(size, max_age) if ok else None, start + took)
        if fin.response is None:
            res.failed = n
            return res
        late = edge.lookup(key, start + took)
        share = min(1.0, took / spread) if spread > 0 else 1.0
        if not collapsing:  # every concurrent miss goes upstream on its own
            res.fetches += round((n - 1) * share)
        res.collapsed = (n - 1) * share if collapsing else 0.0
        rest = n - 1 - res.collapsed
        if isinstance(late, Hit):
            res.hits = rest
        else:
            res.stale = rest
        res.wait_s = took * (1 + share) / 2 * (1 / n + (n - 1) * share / n)
        return res

    def take_tick_counts(self) -> tuple[int, int]:
        o, s = self.origin_fetches_tick, self.shield_fetches_tick
        self.origin_fetches_tick = self.shield_fetches_tick = 0
        return o, s
