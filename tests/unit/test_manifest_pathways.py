"""Content steering in manifests: one pathway per CDN in HLS and DASH, the token in every URL."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from fractions import Fraction

import pytest

from mainevent.media.manifest import (
    ManifestError,
    MediaRendition,
    MultivariantPlaylist,
    Variant,
    parse_multivariant_playlist,
    render_multivariant_playlist,
)
from mainevent.media.manifest.dash import render_mpd
from mainevent.media.manifest.pathways import (
    DashSteering,
    Pathways,
    SteeringContext,
    steered_multivariant,
)
from tests.unit.test_manifest_dash import NS, REPS, info

CDNS = (
    ("cdn-a", "http://a.example:8001"),
    ("cdn-b", "http://b.example"),
    ("cdn-c", "https://c.example/"),
)
PATHWAYS = Pathways(cdns=CDNS, steering_url="http://steer.example/steering")
TOKEN = "st=1~exp=2~acl=/live/final/*~id=s-42~kid=dev~hmac=" + "ab" * 32
BASE = MultivariantPlaylist(
    variants=(
        Variant("v720/index.m3u8", 2_600_000, 2_500_000, "avc1.64001f,mp4a.40.2", (1280, 720),
                Fraction(30), audio="aud"),
        Variant("v360/index.m3u8", 800_000, 700_000, "avc1.64001e,mp4a.40.2", (640, 360),
                Fraction(30), audio="aud"),
    ),
    media=(MediaRendition("AUDIO", "aud", "a128", "a128/index.m3u8", True, True, channels="2"),),
)  # fmt: skip


def test_every_variant_and_rendition_is_listed_once_per_pathway_with_the_token() -> None:
    """hls.js sees three pathways, each a full ladder + audio on its CDN, token in each URL."""
    ctx = SteeringContext(token=TOKEN, session_id="s-42", pathway="cdn-b")
    text = render_multivariant_playlist(steered_multivariant(BASE, PATHWAYS, "final", ctx))
    pl = parse_multivariant_playlist(text)
    assert Counter(v.pathway_id for v in pl.variants) == {"cdn-a": 2, "cdn-b": 2, "cdn-c": 2}
    for v in pl.variants:
        root = dict(CDNS)[v.pathway_id or ""].rstrip("/")
        assert v.uri == f"{root}/t/{TOKEN}/live/final/{v.stable_variant_id}/index.m3u8"
        assert v.audio == f"aud-{v.pathway_id}"
    assert {v.stable_variant_id for v in pl.variants} == {"v720", "v360"}
    audio = {m.group_id: m.uri for m in pl.media}
    assert audio == {
        f"aud-{name}": f"{root.rstrip('/')}/t/{TOKEN}/live/final/a128/index.m3u8"
        for name, root in CDNS
    }
    cs = pl.content_steering
    assert cs is not None
    assert cs.pathway_id == "cdn-b"
    assert cs.server_uri == "http://steer.example/steering/final/hls?sid=s-42&p=cdn-b"


def test_without_a_token_or_pathway_the_first_cdn_leads_and_urls_are_bare() -> None:
    """A shared (cacheable) multivariant: no token, the preferred CDN first, no session."""
    pl = steered_multivariant(BASE, PATHWAYS, "final", SteeringContext())
    assert pl.content_steering is not None
    assert pl.content_steering.pathway_id == "cdn-a"
    assert pl.content_steering.server_uri.endswith("/final/hls?p=cdn-a")
    assert pl.variants[0].uri == "http://a.example:8001/live/final/v720/index.m3u8"


def test_an_unknown_pathway_or_unsafe_session_is_refused_by_name() -> None:
    """`?pathway=cdn-x` is a client error that names the known pathways."""
    with pytest.raises(ManifestError, match=r"unknown pathway 'cdn-x'.*cdn-a, cdn-b, cdn-c"):
        steered_multivariant(BASE, PATHWAYS, "final", SteeringContext(pathway="cdn-x"))
    with pytest.raises(ManifestError, match="not URL-safe"):
        SteeringContext(session_id="a b").validate(PATHWAYS)


@pytest.mark.parametrize(
    ("cdns", "message"),
    [
        ((), "at least one CDN"),
        ((("cdn a", "http://x"),), "pathway id"),
        ((("a", "x.example"),), "absolute"),
    ],
)
def test_bad_pathway_configuration_is_refused(
    cdns: tuple[tuple[str, str], ...], message: str
) -> None:
    """CDN names must be valid pathway ids and base URLs absolute."""
    with pytest.raises(ManifestError, match=message):
        Pathways(cdns=cdns, steering_url="http://s")


def test_mpd_has_one_base_url_per_cdn_and_content_steering() -> None:
    """dash.js: BaseURL@serviceLocation per CDN (token included), ContentSteering to the server."""
    ctx = SteeringContext(token=TOKEN, session_id="s-42", pathway="cdn-c")
    mpd = ET.fromstring(render_mpd(info(), REPS, DashSteering.of(PATHWAYS, "final", ctx)))
    bases = [(b.get("serviceLocation"), b.text) for b in mpd.findall("d:BaseURL", NS)]
    assert bases == [(name, f"{root.rstrip('/')}/t/{TOKEN}/live/final/") for name, root in CDNS]
    cs = mpd.find("d:ContentSteering", NS)
    assert cs is not None
    assert cs.get("defaultServiceLocation") == "cdn-c"
    assert cs.get("queryBeforeStart") == "true"
    assert cs.text == "http://steer.example/steering/final/dash?sid=s-42&p=cdn-c"
    # Segment URLs stay relative, so each resolves against its BaseURL (and keeps the token).
    tpl = mpd.find(".//d:SegmentTemplate", NS)
    assert tpl is not None
    assert tpl.get("media") == "v360/$Number$.m4s"
