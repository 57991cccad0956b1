"""The origin's steered manifests: pathways from its configuration, the viewer's token in them."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mainevent.common.tokens import TokenSigner
from mainevent.media.manifest import parse_multivariant_playlist
from mainevent.media.manifest.pathways import Pathways
from mainevent.media.origin.app import create_app
from tests.service.test_origin import Clock, make_event, publish

pytestmark = pytest.mark.anyio

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
PATHWAYS = Pathways(
    cdns=(("cdn-a", "http://a.example"), ("cdn-b", "http://b.example")),
    steering_url="http://steer.example/steering",
)


def token() -> str:
    now = time.time()
    return TokenSigner({"k1": KEY}, "k1").sign(
        acl="/live/final/*", start=int(now) - 60, expires=int(now) + 600, session_id="s-7"
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    ev = make_event(tmp_path, Clock())
    ev.pathways = PATHWAYS
    await publish(ev, range(900_000_000, 900_000_004))
    app = create_app({"final": ev}, token_keys={"k1": KEY})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as c:
        yield c


async def test_a_tokened_master_names_the_session_and_is_never_shared(
    client: httpx.AsyncClient,
) -> None:
    """Through /t/<token>/ the master lists each CDN with the token, steering names the session."""
    t = token()
    r = await client.get(f"/t/{t}/live/final/master.m3u8?pathway=cdn-b")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "private, no-store"
    pl = parse_multivariant_playlist(r.text)
    assert {v.uri for v in pl.variants} == {
        f"http://a.example/t/{t}/live/final/v360/index.m3u8",
        f"http://b.example/t/{t}/live/final/v360/index.m3u8",
    }
    assert pl.content_steering is not None
    assert pl.content_steering.pathway_id == "cdn-b"
    assert pl.content_steering.server_uri == (
        "http://steer.example/steering/final/hls?sid=s-7&p=cdn-b"
    )


async def test_a_bare_master_is_unchanged_and_a_pathway_query_steers_it(
    client: httpx.AsyncClient,
) -> None:
    """`/live/…/master.m3u8` stays the one-CDN, cacheable playlist; `?pathway=` asks for steering."""
    r = await client.get("/live/final/master.m3u8")
    assert r.status_code == 200
    assert "no-store" not in r.headers["cache-control"]
    assert "CONTENT-STEERING" not in r.text
    assert "PATHWAY-ID" not in r.text
    r = await client.get("/live/final/master.m3u8?pathway=cdn-a")
    assert r.headers["cache-control"] == "private, no-store"
    assert (
        '#EXT-X-CONTENT-STEERING:SERVER-URI="http://steer.example/steering/final/hls?p=cdn-a"'
        in r.text
    )


async def test_an_unknown_pathway_is_a_400_naming_the_known_ones(
    client: httpx.AsyncClient,
) -> None:
    """`?pathway=cdn-z` is refused with a message that lists the event's pathways."""
    for path in ("master.m3u8", "manifest.mpd"):
        r = await client.get(f"/live/final/{path}?pathway=cdn-z")
        assert r.status_code == 400
        assert "unknown pathway 'cdn-z'" in r.text
        assert "cdn-a, cdn-b" in r.text


async def test_the_mpd_carries_a_base_url_per_cdn_with_the_token(
    client: httpx.AsyncClient,
) -> None:
    """dash.js gets BaseURL@serviceLocation per CDN and ContentSteering to the session's URL."""
    t = token()
    r = await client.get(f"/t/{t}/live/final/manifest.mpd")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "private, no-store"
    mpd = ET.fromstring(r.text)
    assert [b.text for b in mpd.findall("d:BaseURL", NS)] == [
        f"http://a.example/t/{t}/live/final/",
        f"http://b.example/t/{t}/live/final/",
    ]
    cs = mpd.find("d:ContentSteering", NS)
    assert cs is not None
    assert cs.text == "http://steer.example/steering/final/dash?sid=s-7&p=cdn-a"
