"""The edge cache core without sockets: keys, freshness, stale serving, eviction, collapsing."""

from __future__ import annotations

import pytest

from mainevent.media.edge import (
    Arrival,
    Cache,
    Fault,
    FaultError,
    Fetch,
    Hit,
    Stale,
    UpstreamResponse,
    Wait,
    cache_key,
    decide,
    object_type,
    parse_cache_control,
)


def resp(
    body: bytes = b"x", cc: str = "max-age=2", status: int = 200, age: float = 0.0
) -> UpstreamResponse:
    return UpstreamResponse(status, (("Cache-Control", cc),), body, age)


def test_key_keeps_only_ll_hls_parameters_in_fixed_order() -> None:
    """Blocking reloads differ by _HLS_msn/_HLS_part/_HLS_skip; CMCD and throughput do not."""
    assert cache_key("/live/e/v/index.m3u8", None) == "/live/e/v/index.m3u8"
    assert (
        cache_key("/live/e/v/index.m3u8", "CMCD=bl%3D100&_HLS_part=2&_HLS_throughput=9&_HLS_msn=5")
        == "/live/e/v/index.m3u8?_HLS_msn=5&_HLS_part=2"
    )
    assert cache_key("/p", "_HLS_skip=YES&_HLS_msn=7") == "/p?_HLS_msn=7&_HLS_skip=YES"
    assert cache_key("/p", "CMCD=sid%3D%22x%22&_HLS_pathway=cdn-a") == "/p"


def test_object_types() -> None:
    """Metrics are split by playlist, segment, part and init."""
    assert object_type("/live/e/v/index.m3u8") == "playlist"
    assert object_type("/live/e/v/12.m4s") == "segment"
    assert object_type("/live/e/v/12.3.m4s") == "part"
    assert object_type("/live/e/v/init.mp4") == "init"


def test_cache_control_parsing() -> None:
    """s-maxage wins over max-age; no-store/private/no-cache are not stored; 404 briefly."""
    assert parse_cache_control("public, max-age=31536000, immutable").ttl == 31536000
    assert parse_cache_control("max-age=1, s-maxage=4").ttl == 4
    assert not parse_cache_control("no-store").storable
    assert not parse_cache_control("private, max-age=9").storable
    assert not parse_cache_control(None).storable
    f = parse_cache_control("max-age=2, stale-while-revalidate=3, stale-if-error=30")
    assert (f.stale_while_revalidate, f.stale_if_error) == (3, 30)
    assert parse_cache_control("max-age=2", default_stale_if_error=60).stale_if_error == 60
    assert parse_cache_control("max-age=60", status=404, negative_ttl=1).ttl == 1
    assert parse_cache_control(None, status=410, negative_ttl=1).ttl == 1
    assert not parse_cache_control("max-age=60", status=503).storable


def test_fresh_then_expired() -> None:
    """A playlist with max-age=1 is a hit for 1 s, then fetched again (never served staler)."""
    c = Cache()
    assert isinstance(c.lookup("/a.m3u8", 0.0), Fetch)
    c.finish("/a.m3u8", resp(cc="max-age=1"), 0.0)
    assert isinstance(c.lookup("/a.m3u8", 0.99), Hit)
    assert isinstance(c.lookup("/a.m3u8", 1.0), Fetch)


def test_upstream_age_counts_against_freshness() -> None:
    """An object that already aged at the shield is fresh only for the remainder here."""
    c = Cache()
    c.lookup("/a.m3u8", 10.0)
    c.finish("/a.m3u8", resp(cc="max-age=2", age=1.5), 10.0)
    assert isinstance(c.lookup("/a.m3u8", 10.4), Hit)
    assert isinstance(c.lookup("/a.m3u8", 10.5), Fetch)


def test_collapse_concurrent_misses() -> None:
    """Concurrent misses for one key: one Fetch, the rest Wait, all get the same response."""
    c = Cache()
    assert isinstance(c.lookup("/s.m4s", 0.0), Fetch)
    assert all(isinstance(c.lookup("/s.m4s", 0.0), Wait) for _ in range(99))
    done = c.finish("/s.m4s", resp(b"seg", "max-age=100"), 0.1)
    assert done.waiters == 99
    assert done.response is not None
    assert done.response.body == b"seg"
    assert isinstance(c.lookup("/s.m4s", 0.2), Hit)


def test_arrival_streams_all_but_5xx_and_flags_stale() -> None:
    """A response is streamed to waiters as it arrives unless it is a 5xx (which stale-if-error may still replace)."""
    c = Cache(default_stale_if_error=10)
    assert c.arrived(200, "max-age=2", 0.0) == Arrival(stream=True, stale=False)
    assert c.arrived(404, "max-age=60", 0.0) == Arrival(stream=True, stale=False)
    assert c.arrived(200, "no-store", 5.0) == Arrival(stream=True, stale=False)
    assert c.arrived(200, "max-age=2", 3.0) == Arrival(stream=True, stale=True)
    assert not c.arrived(503, "max-age=2", 0.0).stream


def test_failed_fetch_keeps_old_entry_and_stores_nothing() -> None:
    """A fetch cut off mid-body leaves the old copy as it was (served stale if allowed) and stores nothing."""
    c = Cache(default_stale_if_error=10)
    c.lookup("/s.m4s", 0.0)
    c.finish("/s.m4s", resp(b"old", "max-age=1"), 0.0)
    assert isinstance(c.lookup("/s.m4s", 2.0), Fetch)
    assert isinstance(c.lookup("/s.m4s", 2.0), Wait)
    f = c.finish("/s.m4s", None, 2.5)
    assert (f.stale, f.waiters) == (True, 1)
    assert f.response is not None
    assert f.response.body == b"old"
    assert c.stats().in_flight == 0
    # Not stuck on the failure: served from the old copy while the upstream is marked failing,
    # asked again (a probe) once the backoff interval is over.
    assert isinstance(c.lookup("/s.m4s", 2.6), Stale)
    probe = c.lookup("/s.m4s", 3.5)
    assert isinstance(probe, Stale)
    assert probe.revalidate


def test_negative_caching_is_brief() -> None:
    """A 404 for a not-yet-published segment is remembered ≤ 1 s, then asked again."""
    c = Cache(negative_ttl=1.0)
    c.lookup("/9.m4s", 0.0)
    c.finish("/9.m4s", resp(b"nf", "max-age=60", status=404), 0.0)
    hit = c.lookup("/9.m4s", 0.5)
    assert isinstance(hit, Hit)
    assert hit.entry.response.status == 404
    assert isinstance(c.lookup("/9.m4s", 1.0), Fetch)


def test_stale_if_error_serves_old_copy_then_gives_up() -> None:
    """Upstream down: the stale copy is served within stale-if-error, not after."""
    c = Cache(default_stale_if_error=10)
    c.lookup("/a.m3u8", 0.0)
    c.finish("/a.m3u8", resp(b"v1", "max-age=1"), 0.0)
    assert isinstance(c.lookup("/a.m3u8", 5.0), Fetch)
    f = c.finish("/a.m3u8", None, 5.0)
    assert f.stale
    assert f.response is not None
    assert f.response.body == b"v1"
    c.lookup("/a.m3u8", 11.5)
    f = c.finish("/a.m3u8", None, 11.5)
    assert f.response is None


def test_stale_while_revalidate_one_refresh() -> None:
    """Within stale-while-revalidate, clients get the stale copy and only one refresh starts."""
    c = Cache()
    c.lookup("/a.m3u8", 0.0)
    c.finish("/a.m3u8", resp(b"v1", "max-age=1, stale-while-revalidate=2"), 0.0)
    first = c.lookup("/a.m3u8", 1.5)
    assert isinstance(first, Stale)
    assert first.revalidate
    second = c.lookup("/a.m3u8", 1.6)
    assert isinstance(second, Stale)
    assert not second.revalidate
    c.finish("/a.m3u8", resp(b"v2", "max-age=1, stale-while-revalidate=2"), 1.7)
    hit = c.lookup("/a.m3u8", 1.8)
    assert isinstance(hit, Hit)
    assert hit.entry.response.body == b"v2"


def test_byte_budget_evicts_least_recently_used() -> None:
    """Over budget, the least recently used object goes first."""
    c = Cache(max_bytes=3000)
    for k in ("/1.m4s", "/2.m4s"):
        c.lookup(k, 0.0)
        c.finish(k, resp(b"x" * 1000, "max-age=100"), 0.0)
    c.lookup("/1.m4s", 1.0)  # touch 1
    c.lookup("/3.m4s", 1.0)
    c.finish("/3.m4s", resp(b"x" * 1000, "max-age=100"), 1.0)
    assert "/1.m4s" in c
    assert "/3.m4s" in c
    assert "/2.m4s" not in c
    assert c.stats().bytes <= 3000


def test_ttl_eviction_and_uncacheable() -> None:
    """Expired objects are dropped; no-store and 5xx responses are served but never stored."""
    c = Cache(default_stale_if_error=0)
    c.lookup("/a", 0.0)
    c.finish("/a", resp(cc="max-age=1"), 0.0)
    assert c.expire(5.0) == 1
    c.lookup("/b", 0.0)
    assert c.finish("/b", resp(cc="no-store"), 0.0).entry is None
    c.lookup("/c", 0.0)
    f = c.finish("/c", resp(cc="max-age=9", status=503), 0.0)
    assert f.response is not None
    assert f.response.status == 503
    assert "/c" not in c


def test_fault_decisions() -> None:
    """A regional fault affects only that region; error rate follows the draw."""
    f = Fault(error_rate=0.5, region="eu", latency_ms=200)
    assert decide(f, "us", 0.0).error_status == 0
    assert decide(f, "eu", 0.1).error_status == 503
    assert decide(f, "eu", 0.9).error_status == 0
    assert decide(f, "eu", 0.9).delay_s == pytest.approx(0.2)
    with pytest.raises(FaultError):
        Fault(error_rate=2)
    with pytest.raises(FaultError):
        Fault.from_json({"eror_rate": 1})


LL_PLAYLIST = (
    b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-VERSION:9\n#EXT-X-PART-INF:PART-TARGET=0.512\n"
    b"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.536\n"
)


def test_non_blocking_ll_playlist_is_kept_one_part_target() -> None:
    """Players join from the plain LL playlist: an edge keeps it one PART-TARGET, not TD/2."""
    c = Cache()
    key = "/live/e/v360/index.m3u8"
    c.lookup(key, 0.0)
    c.finish(key, resp(LL_PLAYLIST, "public, max-age=1"), 0.0)
    assert isinstance(c.lookup(key, 0.5), Hit)
    assert isinstance(c.lookup(key, 0.52), Fetch)
    # A blocking reload's answer keeps its max-age (its key names the part it waited for).
    blocking = key + "?_HLS_msn=5&_HLS_part=1"
    c.lookup(blocking, 0.0)
    c.finish(blocking, resp(LL_PLAYLIST, "public, max-age=12"), 0.0)
    assert isinstance(c.lookup(blocking, 11.0), Hit)
    # A standard playlist (no parts) keeps TD/2.
    plain = "/live/e/v360/std.m3u8"
    c.lookup(plain, 0.0)
    c.finish(plain, resp(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n", "max-age=1"), 0.0)
    assert isinstance(c.lookup(plain, 0.9), Hit)
