"""Sans-IO HTTP cache core of the shield and the edges: keys, freshness, eviction, collapsing.

No clock, socket or task lives here: every call takes `now` (monotonic seconds) and returns what
the adapter must do (`Hit`, `Stale`, `Fetch`, `Wait`). One upstream fetch per key is in flight at
a time; every concurrent miss for that key — a cold segment storm or identical held LL-HLS
blocking reloads, which share a key because `_HLS_msn`/`_HLS_part`/`_HLS_skip` are in it — waits
for that fetch (SPEC.md §2, Appendix B). When the fetch's head arrives, `arrived` says whether its
body may be streamed to the waiters as it comes in; only a whole body is ever stored (`finish`).
A non-blocking LL-HLS playlist (no `_HLS_msn` in its key, `EXT-X-PART-INF` in its body) is
kept at most one PART-TARGET, whatever its `max-age` (whole seconds, TD/2): it is what players
join from and they start PART-HOLD-BACK behind its newest part, so every second it spends in
the shield and then in an edge was added to a joining player's latency for good (stock hls.js
never speeds up to catch up). Blocking responses keep their `max-age`: their key names the
part they waited for. Every fetch's outcome also feeds the upstream's health (`health.UpstreamHealth`): while the
upstream is marked failing, a request with a stale copy it may still use is answered from that
copy without going upstream, and one probe per backoff interval looks for the recovery.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl

from mainevent.media.edge.health import UpstreamHealth

__all__ = [
    "Arrival",
    "Cache",
    "CacheStats",
    "Entry",
    "Fetch",
    "Finished",
    "Freshness",
    "Hit",
    "Stale",
    "UpstreamResponse",
    "Wait",
    "cache_key",
    "is_refusal",
    "ll_playlist_ttl",
    "object_type",
    "parse_cache_control",
]

# Query parameters that select a different LL-HLS response; everything else (CMCD,
# _HLS_throughput, _HLS_pathway, cache busters) is dropped from the key and from the upstream
# request, so collapsed waiters really ask for the same bytes.
KEY_PARAMS = ("_HLS_msn", "_HLS_part", "_HLS_skip")
_PART = re.compile(r"/\d+\.\d+\.m4s$")
_PART_INF = re.compile(rb"#EXT-X-PART-INF:PART-TARGET=([0-9.]+)")


def ll_playlist_ttl(key: str, body: bytes, ttl: float) -> float:
    """`ttl` for a stored playlist, capped at its PART-TARGET when it is a non-blocking LL-HLS
    playlist (key without `_HLS_msn`); other objects keep `ttl`."""
    if "_HLS_msn=" in key or not key.partition("?")[0].endswith(".m3u8"):
        return ttl
    m = _PART_INF.search(body, 0, 4096)
    if m is None:
        return ttl
    try:
        part_target = float(m[1])
    except ValueError:
        return ttl
    return min(ttl, part_target) if part_target > 0 else ttl


def cache_key(path: str, query: str | None) -> str:
    """The cache key (also the upstream request target): path + LL-HLS params in fixed order."""
    if not query:
        return path
    wanted: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in KEY_PARAMS and name not in wanted:
            wanted[name] = value
    if not wanted:
        return path
    return path + "?" + "&".join(f"{n}={wanted[n]}" for n in KEY_PARAMS if n in wanted)


def object_type(path: str) -> str:
    """`playlist`, `segment`, `part`, `init` or `other` (metric label) from the URL path."""
    if path.endswith(".m3u8"):
        return "playlist"
    if path.endswith(".m4s"):
        return "part" if _PART.search(path) else "segment"
    if path.endswith(".mp4"):
        return "init"
    return "other"


@dataclass(frozen=True, slots=True)
class Freshness:
    """What an upstream response's `Cache-Control`/`Age` allow, in seconds."""

    storable: bool
    ttl: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0


def parse_cache_control(
    value: str | None,
    *,
    status: int = 200,
    default_stale_if_error: float = 0.0,
    negative_ttl: float = 1.0,
) -> Freshness:
    """Freshness for a shared cache: `s-maxage` over `max-age`; `no-store`/`private`/`no-cache` → not stored.

    404/410 are cached at most `negative_ttl`; other non-200 statuses are not stored. When the
    upstream does not say, `stale-if-error` defaults to `default_stale_if_error` (as CDNs do).
    """
    directives: dict[str, str] = {}
    for item in (value or "").split(","):
        name, _, arg = item.strip().partition("=")
        if name:
            directives[name.lower()] = arg.strip().strip('"')

    def seconds(name: str) -> float | None:
        arg = directives.get(name)
        if arg is None:
            return None
        try:
            return max(0.0, float(int(arg)))
        except ValueError:
            return 0.0

    if {"no-store", "private", "no-cache"} & directives.keys():
        return Freshness(False, 0.0)
    ttl = seconds("s-maxage")
    if ttl is None:
        ttl = seconds("max-age")
    if status in (404, 410):
        return Freshness(True, min(negative_ttl, ttl if ttl is not None else negative_ttl))
    if status != 200 or ttl is None or ttl <= 0:
        return Freshness(False, 0.0)
    swr = seconds("stale-while-revalidate") or 0.0
    sie = seconds("stale-if-error")
    return Freshness(True, ttl, swr, default_stale_if_error if sie is None else sie)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A complete upstream response (the body is whole: the adapter never stores a partial one)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    age: float = 0.0

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


def is_refusal(key: str, response: UpstreamResponse) -> bool:
    """A segment or part refused on purpose (503 + Retry-After: the origin sheds DVR requests,
    or DVR is off), not a failing upstream. Playlists keep the failure path (stale copies)."""
    return (
        response.status == 503
        and response.header("retry-after") is not None
        and key.partition("?")[0].endswith(".m4s")
    )


@dataclass(slots=True, eq=False)
class Entry:
    """One stored response. `born` is when it left the origin (now − Age at arrival)."""

    key: str
    response: UpstreamResponse
    born: float
    freshness: Freshness
    size: int
    kind: str
    # Adapter-owned precomputed bytes (serialized head), kept with the entry it describes.
    wire: object = None

    def age(self, now: float) -> float:
        return max(0.0, now - self.born)

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.freshness.ttl

    def expires_at(self) -> float:
        return self.born + self.freshness.ttl

    def usable_until(self) -> float:
        f = self.freshness
        return self.born + f.ttl + max(f.stale_while_revalidate, f.stale_if_error)


@dataclass(frozen=True, slots=True)
class Hit:
    """Serve `entry`, fresh."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class Stale:
    """Serve `entry` stale; if `revalidate`, start the one refresh (or probe) in the background.

    Stale because of stale-while-revalidate, or — `upstream_failing` — because the upstream is
    marked failing and the entry is within its stale-if-error allowance.
    """

    entry: Entry
    revalidate: bool
    upstream_failing: bool = False


@dataclass(frozen=True, slots=True)
class Fetch:
    """The caller leads: fetch `key` upstream, then call `finish`."""

    key: str


@dataclass(frozen=True, slots=True)
class Wait:
    """A fetch for `key` is in flight: wait for its `finish` (collapsed)."""

    key: str


@dataclass(frozen=True, slots=True)
class Arrival:
    """How to treat a fetch's upstream response once its head is in, before its body."""

    stream: bool
    """Pass it to the waiters as it arrives. Not for a 5xx: that may still give way to a stale
    copy (stale-if-error), so it is held until `finish` decides."""
    stale: bool
    """It arrived already past its freshness (an upstream serving stale): `X-Cache: STALE`."""


@dataclass(frozen=True, slots=True)
class Finished:
    """Outcome of a fetch, for the leader and every waiter.

    `response` is what to serve (the new response, or the stale entry's under stale-if-error,
    `stale` then True); None means nothing usable (the adapter answers 502/504).
    """

    response: UpstreamResponse | None
    entry: Entry | None
    stale: bool
    waiters: int


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of the cache's size and in-flight fetches."""

    objects: int
    bytes: int
    max_bytes: int
    in_flight: int
    evicted: int


@dataclass(slots=True)
class _Flight:
    started: float
    waiters: int = 0
    revalidation: bool = False


@dataclass(slots=True)
class Cache:
    """A byte-budgeted LRU of responses with per-key collapsing of upstream fetches."""

    max_bytes: int = 256 * 1024 * 1024
    negative_ttl: float = 1.0
    default_stale_if_error: float = 0.0
    health: UpstreamHealth = field(default_factory=UpstreamHealth)
    _entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)
    _flights: dict[str, _Flight] = field(default_factory=dict)
    _bytes: int = 0
    _evicted: int = 0

    def fresh(self, key: str, now: float) -> Entry | None:
        """The fresh entry for `key` (marked recently used), or None: the hit fast path."""
        entry = self._entries.get(key)
        if entry is not None and now - entry.born < entry.freshness.ttl:
            self._entries.move_to_end(key)
            return entry
        return None

    def lookup(self, key: str, now: float) -> Hit | Stale | Fetch | Wait:
        """Decide how to answer a request for `key` at `now` (registers the fetch or the wait)."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fresh(now):
                self._entries.move_to_end(key)
                return Hit(entry)
            f = entry.freshness
            health = self.health
            if health.failing and now < entry.expires_at() + max(
                f.stale_while_revalidate, f.stale_if_error
            ):
                # Asking a failing upstream would only make this client wait for the error
                # stale-if-error answers with this copy anyway: answer now, and at most one
                # request per backoff interval probes the upstream (in the background).
                self._entries.move_to_end(key)
                if key not in self._flights and health.probe(now):
                    self._flights[key] = _Flight(now, revalidation=True)
                    return Stale(entry, True, True)
                return Stale(entry, False, True)
            if now < entry.expires_at() + f.stale_while_revalidate:
                self._entries.move_to_end(key)
                if key in self._flights:
                    return Stale(entry, False)
                self._flights[key] = _Flight(now, revalidation=True)
                return Stale(entry, True)
        flight = self._flights.get(key)
        if flight is not None and not flight.revalidation:
            flight.waiters += 1
            return Wait(key)
        if flight is not None:
            # A background refresh is running and our stale copy ran out: wait for it.
            flight.revalidation = False
            flight.waiters += 1
            return Wait(key)
        self._flights[key] = _Flight(now)
        return Fetch(key)

    def peek(self, key: str, now: float) -> Entry | None:
        """Any stored entry for `key` however stale (the "serve stale" drill), without a fetch."""
        entry = self._entries.get(key)
        if entry is not None and now < entry.usable_until() + 3600:
            return entry
        return None

    def arrived(self, status: int, cache_control: str | None, age: float) -> Arrival:
        """The head of a fetch's response is in: stream it to the waiters now, or hold it."""
        if status >= 500:
            return Arrival(False, False)
        fresh = self._freshness(status, cache_control)
        return Arrival(True, fresh.storable and fresh.ttl > 0 and age >= fresh.ttl)

    def _freshness(self, status: int, cache_control: str | None) -> Freshness:
        return parse_cache_control(
            cache_control,
            status=status,
            default_stale_if_error=self.default_stale_if_error,
            negative_ttl=self.negative_ttl,
        )

    def finish(self, key: str, response: UpstreamResponse | None, now: float) -> Finished:
        """The fetch for `key` ended: `response` is complete, or None (error, timeout, or a body
        cut off mid-transfer: nothing partial is stored, the old entry stays as it was).

        A response below 500 marks the upstream healthy; None or a 5xx is a failure, except a
        refusal (503 with Retry-After: the origin sheds DVR requests under load, or operators
        switched DVR off): the upstream answered, so it is not marked failing (which would
        answer every expiring live playlist stale for the backoff), and nothing is stored."""
        flight = self._flights.pop(key, None)
        if flight is None:
            flight = _Flight(now)
        if response is not None and is_refusal(key, response):
            self.health.succeeded()
            return Finished(response, None, False, flight.waiters)
        if response is not None and response.status < 500:
            self.health.succeeded()
            fresh = self._freshness(response.status, response.header("cache-control"))
            if fresh.storable and response.status == 200:
                ttl = ll_playlist_ttl(key, response.body, fresh.ttl)
                if ttl != fresh.ttl:
                    fresh = replace(fresh, ttl=ttl)
            entry = None
            if fresh.storable and fresh.ttl > 0:
                # Kept even when it arrives already stale (an upstream serving stale-if-error):
                # it stays usable here for stale-if-error if the upstream goes away entirely.
                entry = self._store(key, response, now - response.age, fresh)
            else:
                self._remove(key)  # superseded by a response we may not keep
            stale = entry is not None and response.age >= fresh.ttl
            return Finished(response, entry, stale, flight.waiters)
        self.health.failed(flight.started, now)
        old = self._entries.get(key)
        if old is not None and now < old.expires_at() + old.freshness.stale_if_error:
            self._entries.move_to_end(key)
            return Finished(old.response, old, True, flight.waiters)
        return Finished(response, None, False, flight.waiters)

    def _store(self, key: str, response: UpstreamResponse, born: float, fresh: Freshness) -> Entry:
        size = len(response.body) + sum(len(k) + len(v) for k, v in response.headers) + 64
        self._remove(key)
        entry = Entry(key, response, born, fresh, size, object_type(key.partition("?")[0]))
        if size > self.max_bytes:
            return entry  # served to this fetch's clients, never stored
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self._evicted += 1
        return entry

    def _remove(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size

    def expire(self, now: float) -> int:
        """Drop entries past every staleness allowance (TTL eviction); returns how many."""
        dead = [k for k, e in self._entries.items() if now >= e.usable_until()]
        for k in dead:
            self._remove(k)
        self._evicted += len(dead)
        return len(dead)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._entries), self._bytes, self.max_bytes, len(self._flights), self._evicted
        )
