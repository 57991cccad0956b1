"""Playlist errors: malformed text names its line, invalid values name the rule they break."""

from __future__ import annotations

import dataclasses
import pickle
from fractions import Fraction
from typing import Any

import pytest

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
)

PDT0 = 1_760_000_000_000  # 2025-10-09T08:53:20.000Z


def _media(body: str) -> str:
    return "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n" + body


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("#EXT-X-TARGETDURATION:2\n", 1, "must start with #EXTM3U"),
        (
            _media("#EXT-X-MEDIA-SEQUENCE:1.5\n"),
            4,
            "EXT-X-MEDIA-SEQUENCE must be a decimal integer",
        ),
        (_media("#EXT-X-MEDIA-SEQUENCE:-1\n"), 4, "must be a decimal integer, got '-1'"),
        (_media("#EXTINF:2.000,\n0.m4s\n#EXTINF:2.000,\n"), 6, "EXTINF without a URI line"),
        (_media("#EXTINF:2.000,\n#EXTINF:2.000,\n1.m4s\n"), 4, "EXTINF without a URI line"),
        (_media("#EXTINF:2.000,\n0.m4s\n1.m4s\n"), 6, "URI line '1.m4s' has no EXTINF"),
        (_media("#EXTINF:2.000\n0.m4s\n"), 4, "EXTINF must be '<duration>,[<title>]'"),
        (_media("#EXTINF:two,\n0.m4s\n"), 4, "EXTINF duration must be a non-negative decimal"),
        (_media('#EXT-X-MAP:URI="init.mp4\n'), 4, "unterminated quoted string in URI"),
        (_media("#EXT-X-MAP:URI=init.mp4\n"), 4, "EXT-X-MAP: URI must be a quoted string"),
        (_media('#EXT-X-MAP:BYTERANGE="1@0"\n'), 4, "missing required attribute URI"),
        (
            _media("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,,HOLD-BACK=6\n"),
            4,
            "invalid attribute name ',HOLD-BACK'",
        ),
        (_media("#EXT-X-SERVER-CONTROL:HOLD-BACK=6,\n"), 4, "trailing ','"),
        (_media("#EXT-X-SERVER-CONTROL:HOLD-BACK=6,HOLD-BACK=7\n"), 4, "HOLD-BACK appears twice"),
        (_media("#EXT-X-SERVER-CONTROL:hold-back=6\n"), 4, "invalid attribute name 'hold-back'"),
        (
            _media("#EXT-X-SERVER-CONTROL:HOLD-BACK=6 ,CAN-BLOCK-RELOAD=YES\n"),
            4,
            "contains '\"' or blanks",
        ),
        (_media("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=MAYBE\n"), 4, "must be one of YES, NO"),
        (
            _media('#EXT-X-PART:DURATION=0.5,URI="p"x,INDEPENDENT=YES\n'),
            4,
            "expected ',' after attribute URI",
        ),
        (_media("#EXT-X-PART:DURATION\n"), 4, "expected NAME=VALUE"),
        (_media("#EXT-X-PLAYLIST-TYPE:LIVE\n"), 4, "must be EVENT or VOD"),
        (_media("#EXT-X-PROGRAM-DATE-TIME:yesterday\n"), 4, "ISO 8601 date-time with zone"),
        (_media("#EXT-X-PROGRAM-DATE-TIME:2025-02-30T00:00:00Z\n"), 4, "not a valid date-time"),
        (_media("#EXT-X-TARGETDURATION:4\n"), 4, "EXT-X-TARGETDURATION appears more than once"),
        (_media("#EXT-X-ENDLIST:YES\n"), 4, "EXT-X-ENDLIST takes no value"),
        (_media("#EXT-X-PART-INF\n"), 4, "EXT-X-PART-INF needs a value"),
        (_media("#EXTINF:2.000,\n0.m4s\n#EXT-X-MEDIA-SEQUENCE:5\n"), 6, "before the first segment"),
        (_media("#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n"), 4, "cannot appear in a media playlist"),
        (_media("#EXTINF:2.000,\n0.m4s\n#EXT-X-DISCONTINUITY\n"), 6, "apply to no segment"),
        (_media('#EXT-X-PRELOAD-HINT:URI="p"\n'), 4, "missing required attribute TYPE"),
        (_media("#EXT-X-MAP:\n"), 4, "EXT-X-MAP has an empty attribute list"),
        (
            _media("#EXT-X-SERVER-CONTROL:HOLD-BACK=,CAN-BLOCK-RELOAD=YES\n"),
            4,
            "HOLD-BACK has no value",
        ),
        (
            _media('#EXT-X-DATERANGE:ID="d",DURATION=1\n'),
            4,
            "missing required attribute START-DATE",
        ),
        (
            _media('#EXT-X-DATERANGE:ID="d",START-DATE="2025-10-09T08:53:20Z",X-TEAM=home\n'),
            4,
            "X-TEAM must be a quoted string, hexadecimal or decimal",
        ),
        (_media('#EXT-X-RENDITION-REPORT:URI="r",LAST-MSN=x\n'), 4, "LAST-MSN must be a decimal"),
    ],
)
def test_malformed_media_playlist_errors_name_the_line(text: str, line: int, what: str) -> None:
    """A broken playlist is rejected with the line number and what is wrong on it."""
    with pytest.raises(PlaylistError, match=rf"^line {line}: .*") as info:
        parse_media_playlist(text)
    assert info.value.line == line
    assert what in str(info.value)


def test_missing_target_duration_is_an_error() -> None:
    """A media playlist without EXT-X-TARGETDURATION is refused (players cannot pace reloads)."""
    with pytest.raises(PlaylistError, match="missing EXT-X-TARGETDURATION"):
        parse_media_playlist("#EXTM3U\n#EXTINF:2.000,\n0.m4s\n")


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", 2, "EXT-X-STREAM-INF without a URI line"),
        (
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n#EXT-X-STREAM-INF:BANDWIDTH=2\nv\n",
            2,
            "without a URI",
        ),
        ("#EXTM3U\nv.m3u8\n", 2, "has no EXT-X-STREAM-INF before it"),
        (
            '#EXTM3U\n#EXT-X-STREAM-INF:CODECS="avc1"\nv\n',
            2,
            "missing required attribute BANDWIDTH",
        ),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=1280*720\nv\n", 2, "WIDTHxHEIGHT"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,FRAME-RATE=fast\nv\n", 2, "FRAME-RATE must be"),
        (
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=aud\nv\n",
            2,
            "AUDIO must be a quoted string",
        ),
        ('#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,NAME="en"\n', 2, "missing required attribute GROUP-ID"),
        ('#EXTM3U\n#EXT-X-MEDIA:TYPE="AUDIO",GROUP-ID="a",NAME="en"\n', 2, "TYPE must be unquoted"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n", 2, "cannot appear in a multivariant playlist"),
    ],
)
def test_malformed_multivariant_errors_name_the_line(text: str, line: int, what: str) -> None:
    """A broken multivariant playlist is rejected with the line number and what is wrong."""
    with pytest.raises(PlaylistError) as info:
        parse_multivariant_playlist(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")
    assert what in str(info.value)


def _seg(**kw: Any) -> SegmentEntry:
    return dataclasses.replace(SegmentEntry("0.m4s", 2_000_000, PDT0), **kw)


@pytest.mark.parametrize(
    ("pl", "what"),
    [
        (
            MediaPlaylist(2, 0, (_seg(duration_us=2_500_000),)),
            "rounds to more than the target duration of 2 s",
        ),
        (MediaPlaylist(2, 0, (_seg(duration_us=0),)), "must be positive"),
        (
            MediaPlaylist(2, 0, (_seg(map_uri="i.mp4"),), version=5),
            "EXT-X-MAP needs EXT-X-VERSION ≥ 6",
        ),
        (MediaPlaylist(2, 0, (_seg(uri=" 0.m4s"),)), "URI of segment 0 must be"),
        (MediaPlaylist(2, 0, (_seg(uri="#0.m4s"),)), "not start with '#'"),
        (MediaPlaylist(2, 0, (_seg(title="a\nb"),)), "contains a line break"),
        (MediaPlaylist(2, 0, (_seg(map_uri='a"b'),)), "free of '\"'"),
        (
            MediaPlaylist(
                2, 0, (_seg(program_date_time_ms=None),), date_ranges=(DateRange("d", PDT0),)
            ),
            "EXT-X-DATERANGE needs an EXT-X-PROGRAM-DATE-TIME",
        ),
        (
            MediaPlaylist(
                2, 0, (_seg(),), date_ranges=(DateRange("d", PDT0), DateRange("d", PDT0))
            ),
            "IDs must be unique",
        ),
        (
            MediaPlaylist(2, 0, (_seg(),), date_ranges=(DateRange("d", PDT0, end_on_next=True),)),
            "END-ON-NEXT needs a CLASS",
        ),
        (
            MediaPlaylist(
                2, 0, (_seg(),), date_ranges=(DateRange("d", PDT0, end_date_ms=PDT0 - 1),)
            ),
            "ends before it starts",
        ),
        (MediaPlaylist(2, 0, (_seg(parts=(PartEntry("p", 1),)),)), "has no EXT-X-PART-INF"),
        (
            MediaPlaylist(
                2,
                0,
                (_seg(parts=(PartEntry("p", 600_000),)),),
                part_target_us=500_000,
                server_control=ServerControl(part_hold_back_us=1_500_000),
            ),
            "at most the part target",
        ),
        (MediaPlaylist(2, 0, (_seg(),), part_target_us=500_000), "requires PART-HOLD-BACK"),
        (
            MediaPlaylist(2, 0, (_seg(),), server_control=ServerControl(hold_back_us=5_999_999)),
            "HOLD-BACK",
        ),
        (MediaPlaylist(2, 0, (_seg(),), server_control=ServerControl()), "with no attribute"),
        (
            MediaPlaylist(
                2, 0, (_seg(),), server_control=ServerControl(can_skip_until_us=11_000_000)
            ),
            "less than 6 × target duration",
        ),
        (MediaPlaylist(2, 0, (_seg(),), skipped_segments=2, version=9), "without CAN-SKIP-UNTIL"),
        (
            MediaPlaylist(
                2,
                0,
                (_seg(),),
                skipped_segments=2,
                server_control=ServerControl(can_skip_until_us=12_000_000),
            ),
            "EXT-X-SKIP needs EXT-X-VERSION ≥ 9",
        ),
        (
            MediaPlaylist(2, 0, (_seg(),), endlist=True, preload_hints=(PreloadHint("p"),)),
            "no preload hints",
        ),
        (MediaPlaylist(0, 0, ()), "target duration must be at least 1 s"),
        (MediaPlaylist(2, 0, (), version=2), "needs EXT-X-VERSION ≥ 3"),
        (
            MediaPlaylist(
                2,
                0,
                (_seg(),),
                date_ranges=(DateRange("d", PDT0, end_date_ms=PDT0 + 1, duration_us=2000),),
            ),
            "END-DATE must equal START-DATE + DURATION",
        ),
        (
            MediaPlaylist(
                2,
                0,
                (_seg(),),
                date_ranges=(DateRange("d", PDT0, client_attributes=(("TEAM", '"a"'),)),),
            ),
            "client attribute name 'TEAM' is not X-<NAME>",
        ),
        (
            MediaPlaylist(
                2,
                0,
                (_seg(),),
                date_ranges=(DateRange("d", PDT0, client_attributes=(("X-T", "a b"),)),),
            ),
            "X-T value 'a b' is not a quoted string",
        ),
        (
            MediaPlaylist(
                2, 0, (_seg(),), server_control=ServerControl(part_hold_back_us=3_000_000)
            ),
            "PART-HOLD-BACK without EXT-X-PART-INF",
        ),
        (
            MediaPlaylist(2, 0, (), rendition_reports=(RenditionReport("r", -1),)),
            "negative LAST-MSN",
        ),
        (MediaPlaylist(2, -1, ()), "media_sequence must not be negative"),
        (MediaPlaylist(2, 0, (_seg(program_date_time_ms=-(10**15)),)), "outside years 1-9999"),
    ],
)
def test_renderer_refuses_invalid_media_playlists(pl: MediaPlaylist, what: str) -> None:
    """We never serve a playlist that breaks an HLS rule; the error says which rule."""
    with pytest.raises(PlaylistError) as info:
        render_media_playlist(pl)
    assert what in str(info.value)
    assert info.value.line is None


def _variant(**kw: Any) -> Variant:
    return dataclasses.replace(Variant("v.m3u8", 1_000_000), **kw)


AUDIO = MediaRendition("AUDIO", "aud", "English", "a.m3u8", default=True, autoselect=True)


@pytest.mark.parametrize(
    ("pl", "what"),
    [
        (MultivariantPlaylist(()), "at least one variant"),
        (MultivariantPlaylist((_variant(audio="aud"),)), "no EXT-X-MEDIA defines"),
        (MultivariantPlaylist((_variant(bandwidth=0),)), "positive BANDWIDTH"),
        (MultivariantPlaylist((_variant(pathway_id="cdn a"),)), "PATHWAY-ID 'cdn a' may only use"),
        (MultivariantPlaylist((_variant(stable_variant_id="v 1"),)), "STABLE-VARIANT-ID"),
        (MultivariantPlaylist((_variant(codecs='avc1"'),)), "CODECS of variant"),
        (MultivariantPlaylist((_variant(resolution=(0, 720)),)), "non-positive RESOLUTION"),
        (MultivariantPlaylist((_variant(frame_rate=Fraction(0)),)), "non-positive FRAME-RATE"),
        (MultivariantPlaylist((_variant(),), version=0), "EXT-X-VERSION must be at least 1"),
        (
            MultivariantPlaylist((_variant(),), (dataclasses.replace(AUDIO, autoselect=False),)),
            "requires AUTOSELECT=YES",
        ),
        (
            MultivariantPlaylist(
                (_variant(),), (AUDIO, dataclasses.replace(AUDIO, name="Deutsch"))
            ),
            "more than one DEFAULT=YES",
        ),
        (MultivariantPlaylist((_variant(),), (AUDIO, AUDIO)), "names must be unique"),
        (
            MultivariantPlaylist((_variant(),), (MediaRendition("SUBTITLES", "s", "en"),)),
            "needs a URI",
        ),
        (
            MultivariantPlaylist(
                (_variant(pathway_id="cdn-a"),), content_steering=ContentSteering("/s", "cdn-b")
            ),
            "'cdn-b' is not the pathway of any variant",
        ),
    ],
)
def test_renderer_refuses_invalid_multivariant_playlists(
    pl: MultivariantPlaylist, what: str
) -> None:
    """We never serve a multivariant playlist players would misread; the error says why."""
    with pytest.raises(PlaylistError) as info:
        render_multivariant_playlist(pl)
    assert what in str(info.value)


def test_playlist_error_survives_pickling() -> None:
    """Errors raised in a worker process reach the parent with their line number intact."""
    err = pickle.loads(pickle.dumps(PlaylistError("EXTINF without a URI line after it", 7)))
    assert (str(err), err.line, err.reason) == (
        "line 7: EXTINF without a URI line after it",
        7,
        "EXTINF without a URI line after it",
    )
