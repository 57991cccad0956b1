"""The headless player's steering client obeys steering manifests as hls.js does."""

from __future__ import annotations

import json
from fractions import Fraction
from urllib.parse import parse_qs, urlsplit

from mainevent.media.manifest import ContentSteering, MultivariantPlaylist, Variant
from mainevent.player.steering import SteeringClient

PL = MultivariantPlaylist(
    variants=tuple(
        Variant(f"http://{p}.example/live/e/v360/index.m3u8", 800_000, frame_rate=Fraction(30),
                pathway_id=p, stable_variant_id="v360")
        for p in ("cdn-a", "cdn-b")
    ),
    content_steering=ContentSteering("/steering/e/hls?sid=s1&p=cdn-a", "cdn-a"),
)  # fmt: skip


def manifest(
    priority: list[str], ttl: int = 10, reload: str = "/steering/e/hls?sid=s1&p=x"
) -> bytes:
    return json.dumps(
        {"VERSION": 1, "TTL": ttl, "RELOAD-URI": reload, "PATHWAY-PRIORITY": priority}
    ).encode()


def client() -> SteeringClient:
    c = SteeringClient.from_multivariant(PL, "http://cdn-a.example/live/e/master.m3u8")
    assert c is not None
    return c


def test_it_asks_the_server_uri_with_its_pathway_then_follows_reload_uri_and_ttl() -> None:
    """First SERVER-URI (+ _HLS_pathway, _HLS_throughput), then RELOAD-URI after TTL."""
    c = client()
    first = urlsplit(c.request_url(5_000_000))
    assert first.netloc == "cdn-a.example"
    assert first.path == "/steering/e/hls"
    q = parse_qs(first.query)
    assert q == {
        "sid": ["s1"],
        "p": ["cdn-a"],
        "_HLS_pathway": ["cdn-a"],
        "_HLS_throughput": ["5000000"],
    }
    assert (
        c.on_response(200, manifest(["cdn-a", "cdn-b"], ttl=7, reload="/r?s=2"), None, 100.0)
        is None
    )
    assert c.next_at == 107.0
    assert c.request_url(None) == "http://cdn-a.example/r?s=2&_HLS_pathway=cdn-a"


def test_a_new_priority_switches_pathway_and_unknown_pathways_are_skipped() -> None:
    """The first pathway of PATHWAY-PRIORITY the playlist has wins."""
    c = client()
    assert c.on_response(200, manifest(["cdn-z", "cdn-b", "cdn-a"]), None, 1.0) == "cdn-b"
    assert c.pathway == "cdn-b"
    assert c.on_response(200, manifest(["cdn-b"]), None, 11.0) is None
    assert c.history == [(1.0, "cdn-b")]


def test_410_stops_429_waits_and_errors_keep_the_pathway() -> None:
    """410 ends steering; 429 waits Retry-After; a 5xx or garbage changes nothing but the time."""
    c = client()
    c.on_response(200, manifest(["cdn-a"], ttl=10), None, 0.0)
    assert c.on_response(429, b"", 3.0, 5.0) is None
    assert c.next_at == 8.0
    assert c.on_response(503, b"", None, 8.0) is None
    assert c.next_at == 18.0
    assert c.on_response(200, b"not json", None, 18.0) is None
    assert c.pathway == "cdn-a"
    assert c.on_response(200, json.dumps({"VERSION": 2}).encode(), None, 28.0) is None
    c.on_response(410, b"", None, 38.0)
    assert c.stopped


def test_no_steering_tag_means_no_client() -> None:
    """A playlist without EXT-X-CONTENT-STEERING is played without steering."""
    bare = MultivariantPlaylist(variants=(Variant("v/index.m3u8", 1),))
    assert SteeringClient.from_multivariant(bare, "http://x/master.m3u8") is None
