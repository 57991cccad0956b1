"""HLS playlist text: exact renders, parsing of real-world playlists, errors that say where and what."""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction

import pytest

import mainevent.media.manifest as manifest
from mainevent.media.manifest import (
    ContentSteering,
    DateRange,
    MediaPlaylist,
    MediaRendition,
    MultivariantPlaylist,
    PartEntry,
    PlaylistError,
    PreloadHint,
    RenditionReport,
    SegmentEntry,
    ServerControl,
    Variant,
    parse_media_playlist,
    parse_multivariant_playlist,
    render_media_playlist,
    render_multivariant_playlist,
    validate_media_playlist,
)

PDT0 = 1_760_000_000_000  # 2025-10-09T08:53:20.000Z


def live_playlist() -> MediaPlaylist:
    """Five 2 s segments at the live edge: an encoder outage (gap), then a slate with its own init."""
    segs = [
        SegmentEntry("880000.m4s", 2_000_000, PDT0, map_uri="init-v720-a.mp4"),
        SegmentEntry("880001.m4s", 2_021_333, PDT0 + 2000),
        SegmentEntry("880002.m4s", 2_000_000, PDT0 + 4021, gap=True),
        SegmentEntry(
            "880003.m4s", 1_500_000, PDT0 + 6021, discontinuity=True, map_uri="init-slate.mp4"
        ),
        SegmentEntry("880004.m4s", 2_000_000, PDT0 + 7521),
    ]
    return MediaPlaylist(
        target_duration_s=2, media_sequence=880000, segments=tuple(segs), discontinuity_sequence=3
    )


LIVE_TEXT = """\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:880000
#EXT-X-DISCONTINUITY-SEQUENCE:3
#EXT-X-MAP:URI="init-v720-a.mp4"
#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:20.000Z
#EXTINF:2.000,
880000.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:22.000Z
#EXTINF:2.021333,
880001.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:24.021Z
#EXT-X-GAP
#EXTINF:2.000,
880002.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI="init-slate.mp4"
#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:26.021Z
#EXTINF:1.500,
880003.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:27.521Z
#EXTINF:2.000,
880004.m4s
"""


def test_live_playlist_golden_render() -> None:
    """The live playlist players fetch every 2 s is byte-for-byte what we expect."""
    assert render_media_playlist(live_playlist()) == LIVE_TEXT
    assert parse_media_playlist(LIVE_TEXT) == live_playlist()


LL_TEXT = """\
#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,HOLD-BACK=6.000,PART-HOLD-BACK=1.500
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-SKIP:SKIPPED-SEGMENTS=4
#EXT-X-PROGRAM-DATE-TIME:2025-10-09T08:53:20.000Z
#EXT-X-PART:DURATION=0.500,URI="104.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI="104.1.m4s"
#EXT-X-PART:DURATION=0.500,URI="104.2.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.4995,URI="104.3.m4s"
#EXTINF:1.9995,
104.m4s
#EXT-X-PART:DURATION=0.500,URI="105.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI="105.1.m4s",GAP=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="105.2.m4s"
#EXT-X-RENDITION-REPORT:URI="../v360/index.m3u8",LAST-MSN=104,LAST-PART=1
#EXT-X-RENDITION-REPORT:URI="../a128/index.m3u8",LAST-MSN=104
"""


def ll_playlist() -> MediaPlaylist:
    """A delta update of a low-latency playlist: parts, a preload hint, rendition reports."""
    half = 500_000
    parts = (
        PartEntry("104.0.m4s", half, independent=True),
        PartEntry("104.1.m4s", half),
        PartEntry("104.2.m4s", half, independent=True),
        PartEntry("104.3.m4s", 499_500),
    )
    return MediaPlaylist(
        target_duration_s=2,
        media_sequence=100,
        skipped_segments=4,
        version=9,
        segments=(SegmentEntry("104.m4s", 1_999_500, PDT0, parts=parts),),
        part_target_us=half,
        server_control=ServerControl(True, 1_500_000, 6_000_000, 12_000_000),
        pending_parts=(
            PartEntry("105.0.m4s", half, independent=True),
            PartEntry("105.1.m4s", half, gap=True),
        ),
        preload_hints=(PreloadHint("105.2.m4s"),),
        rendition_reports=(
            RenditionReport("../v360/index.m3u8", 104, 1),
            RenditionReport("../a128/index.m3u8", 104),
        ),
    )


def test_low_latency_playlist_golden_render() -> None:
    """An LL-HLS delta update lists parts, the preload hint and the other renditions' edges exactly."""
    assert render_media_playlist(ll_playlist()) == LL_TEXT
    assert parse_media_playlist(LL_TEXT) == ll_playlist()


MULTIVARIANT_TEXT = """\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-CONTENT-STEERING:SERVER-URI="/steering/final.json",PATHWAY-ID="cdn-a"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="a128/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=3300000,AVERAGE-BANDWIDTH=3000000,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=29.970,AUDIO="aud",PATHWAY-ID="cdn-a",STABLE-VARIANT-ID="v720"
https://a.example.com/live/final/v720/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=3300000,AVERAGE-BANDWIDTH=3000000,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=29.970,AUDIO="aud",PATHWAY-ID="cdn-b",STABLE-VARIANT-ID="v720"
https://b.example.com/live/final/v720/index.m3u8
"""


def multivariant() -> MultivariantPlaylist:
    """One 720p rung served by two CDNs (pathways) plus the shared audio group."""
    variants = tuple(
        Variant(
            uri=f"https://{cdn}.example.com/live/final/v720/index.m3u8",
            bandwidth=3_300_000,
            average_bandwidth=3_000_000,
            codecs="avc1.64001f,mp4a.40.2",
            resolution=(1280, 720),
            frame_rate=Fraction(2997, 100),
            audio="aud",
            pathway_id=f"cdn-{cdn}",
            stable_variant_id="v720",
        )
        for cdn in ("a", "b")
    )
    audio = MediaRendition(
        "AUDIO", "aud", "English", "a128/index.m3u8", True, True, language="en", channels="2"
    )
    return MultivariantPlaylist(
        variants=variants,
        media=(audio,),
        content_steering=ContentSteering("/steering/final.json", "cdn-a"),
    )


def test_multivariant_golden_render() -> None:
    """The multivariant playlist offers each rung per CDN pathway, with steering, exactly."""
    assert render_multivariant_playlist(multivariant()) == MULTIVARIANT_TEXT
    assert parse_multivariant_playlist(MULTIVARIANT_TEXT) == multivariant()


def test_ntsc_frame_rate_renders_with_three_decimals() -> None:
    """A 30000/1001 encode is advertised as FRAME-RATE=29.970, as players expect."""
    pl = dataclasses.replace(
        multivariant(),
        variants=(
            dataclasses.replace(multivariant().variants[0], frame_rate=Fraction(30000, 1001)),
        ),
    )
    assert "FRAME-RATE=29.970," in render_multivariant_playlist(pl)


@pytest.mark.parametrize(
    ("duration_us", "written"),
    [
        (2_000_000, "2.000"),
        (2_021_333, "2.021333"),
        (2_100_000, "2.100"),
        (2_120_000, "2.120"),
        (2_123_400, "2.1234"),
        (1, "0.000001"),
        (10_010_010, "10.01001"),
    ],
)
def test_extinf_durations_are_exact(duration_us: int, written: str) -> None:
    """Segment durations reach players exactly (µs), never float-rounded."""
    pl = MediaPlaylist(11, 0, (SegmentEntry("0.m4s", duration_us),))
    text = render_media_playlist(pl)
    assert f"#EXTINF:{written},\n" in text
    assert parse_media_playlist(text).segments[0].duration_us == duration_us


APPLE_LL = """\
#EXTM3U
# Low-latency example in the style of Apple's LL-HLS documentation.
#EXT-X-TARGETDURATION:4
#EXT-X-VERSION:6
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=24.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:13:36.106Z
#EXT-X-MAP:URI="init.mp4"
#EXTINF:4.00008,
fileSequence266.mp4
#EXTINF:4.00008,
fileSequence267.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart268.0.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart268.1.mp4",INDEPENDENT=YES
#EXTINF:4.00008,
fileSequence268.mp4
#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:13:48.106Z
#EXT-X-PART:DURATION=0.33334,URI="filePart269.0.mp4"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart269.1.mp4"
#EXT-X-RENDITION-REPORT:URI="../1M/waitForMSN.php",LAST-MSN=269,LAST-PART=0
"""


def test_parses_apple_style_low_latency_playlist() -> None:
    """The headless player follows an Apple-style LL-HLS playlist: segments, parts and hints."""
    pl = parse_media_playlist(APPLE_LL)
    assert (pl.target_duration_s, pl.media_sequence, pl.version) == (4, 266, 6)
    assert pl.server_control == ServerControl(True, 1_000_000, None, 24_000_000)
    assert pl.part_target_us == 333_340
    assert [s.uri for s in pl.segments] == [f"fileSequence{n}.mp4" for n in (266, 267, 268)]
    assert pl.segments[0].map_uri == "init.mp4"
    assert pl.segments[0].program_date_time_ms == 1_550_110_416_106
    assert pl.segments[2].parts[1] == PartEntry("filePart268.1.mp4", 333_340, independent=True)
    assert pl.pending_parts == (PartEntry("filePart269.0.mp4", 333_340),)
    assert pl.preload_hints == (PreloadHint("filePart269.1.mp4"),)
    assert pl.rendition_reports == (RenditionReport("../1M/waitForMSN.php", 269, 0),)
    assert not pl.independent_segments
    assert not pl.endlist


def test_conformance_check_flags_short_part_hold_back() -> None:
    """A conformance test can flag third-party playlists whose PART-HOLD-BACK is under 3 parts."""
    with pytest.raises(
        PlaylistError, match=r"PART-HOLD-BACK 1\.000 s is less than 3 × part target"
    ):
        validate_media_playlist(parse_media_playlist(APPLE_LL))


VOD_TS = (
    "#EXTM3U\r\n"
    "#EXT-X-PLAYLIST-TYPE:VOD\r\n"
    "#EXT-X-TARGETDURATION:10\r\n"
    "#EXT-X-START:TIME-OFFSET=-3.5,PRECISE=YES\r\n"
    "#EXT-X-KEY:METHOD=NONE\r\n"
    "\r\n"
    "#EXTINF:10,\r\n"
    "http://example.com/movie1/fileSequenceA.ts\r\n"
    "#EXTINF:9.97663333333,Intro, part 2\r\n"
    "fileSequenceB.ts\r\n"
    "#EXT-X-PROGRAM-DATE-TIME:2010-02-19T14:54:23.031+08:00\r\n"
    "#EXTINF:3.003,\r\n"
    "fileSequenceC.ts\r\n"
    "#EXT-X-ENDLIST\r\n"
)


def test_parses_legacy_ts_vod_playlist() -> None:
    """Older hls.js-style VOD playlists (CRLF, integer EXTINF, unknown tags, zones) still parse."""
    pl = parse_media_playlist(VOD_TS)
    assert (pl.version, pl.playlist_type, pl.endlist) == (1, "VOD", True)
    assert [s.duration_us for s in pl.segments] == [10_000_000, 9_976_633, 3_003_000]
    assert pl.segments[1].title == "Intro, part 2"
    assert pl.segments[2].program_date_time_ms == 1_266_562_463_031  # 06:54:23.031Z
    assert pl.segments[0].uri == "http://example.com/movie1/fileSequenceA.ts"


APPLE_MULTIVARIANT = """\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud1",LANGUAGE="en",NAME="English",AUTOSELECT=YES,DEFAULT=YES,CHANNELS="2",URI="a1/prog_index.m3u8"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="sub1",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,FORCED=NO,URI="s1/en/prog_index.m3u8"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc1",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,INSTREAM-ID="CC1"

#EXT-X-STREAM-INF:AVERAGE-BANDWIDTH=2168183,BANDWIDTH=2177116,CODECS="avc1.640020,mp4a.40.2",RESOLUTION=960x540,FRAME-RATE=60.000,CLOSED-CAPTIONS="cc1",AUDIO="aud1",SUBTITLES="sub1"
v5/prog_index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=541000,CODECS="avc1.640015,mp4a.40.2",RESOLUTION=480x270,FRAME-RATE=59.94,AUDIO="aud1"
v2/prog_index.m3u8
#EXT-X-I-FRAME-STREAM-INF:AVERAGE-BANDWIDTH=183689,BANDWIDTH=187492,CODECS="avc1.64002a",RESOLUTION=1920x1080,URI="v7/iframe_index.m3u8"
"""


def test_parses_apple_style_multivariant_playlist() -> None:
    """The headless player picks variants and audio from an Apple-style multivariant playlist."""
    pl = parse_multivariant_playlist(APPLE_MULTIVARIANT)
    assert [v.uri for v in pl.variants] == ["v5/prog_index.m3u8", "v2/prog_index.m3u8"]
    v5 = pl.variants[0]
    assert (v5.bandwidth, v5.average_bandwidth, v5.resolution) == (2177116, 2168183, (960, 540))
    assert (v5.codecs, v5.audio) == ("avc1.640020,mp4a.40.2", "aud1")
    assert pl.variants[1].frame_rate == Fraction(5994, 100)
    assert [m.type for m in pl.media] == ["AUDIO", "SUBTITLES"]  # closed captions: in-band
    assert pl.media[0] == MediaRendition(
        "AUDIO", "aud1", "English", "a1/prog_index.m3u8", True, True, "en", "2"
    )


def test_parses_date_range_with_client_attributes() -> None:
    """Highlight markers (EXT-X-DATERANGE) reach the player with their custom X- attributes."""
    text = LIVE_TEXT.replace(
        '#EXT-X-MAP:URI="init-v720-a.mp4"\n',
        '#EXT-X-DATERANGE:ID="goal-1",CLASS="com.mainevent.highlight",'
        'START-DATE="2025-10-09T08:53:21.500Z",DURATION=30.0,X-SCORE="1-0",X-ID=0x1F,'
        'SCTE35-OUT=0xFC\n#EXT-X-MAP:URI="init-v720-a.mp4"\n',
    )
    (dr,) = parse_media_playlist(text).date_ranges
    assert dr == DateRange(
        "goal-1",
        PDT0 + 1500,
        "com.mainevent.highlight",
        duration_us=30_000_000,
        client_attributes=(("X-SCORE", '"1-0"'), ("X-ID", "0x1F")),
    )
    pl = dataclasses.replace(live_playlist(), date_ranges=(dr,))
    assert parse_media_playlist(render_media_playlist(pl)) == pl


def test_render_ten_segments_is_fast() -> None:
    """Rendering the live playlist on every update costs well under a millisecond."""
    segs = tuple(SegmentEntry(f"{n}.m4s", 2_000_000, PDT0 + 2000 * n) for n in range(10))
    pl = MediaPlaylist(2, 0, (dataclasses.replace(segs[0], map_uri="init.mp4"), *segs[1:]))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(100):
            render_media_playlist(pl)
        best = min(best, (time.perf_counter() - start) / 100)
    assert best < 0.0005


def test_public_api_is_exported() -> None:
    """Importers get the whole documented API from `mainevent.media.manifest` and nothing private."""
    assert sorted(manifest.__all__) == manifest.__all__
    for name in manifest.__all__:
        assert getattr(manifest, name) is not None
    assert not any(name.startswith("_") for name in manifest.__all__)
