"""CMAF headers: the codec strings and track facts the playlists advertise come from the init."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from mainevent.media.cmaf import (
    Box,
    MalformedBox,
    TrackDefaults,
    UnsupportedMedia,
    find_box,
    parse_audio_specific_config,
    parse_init,
    parse_track_defaults,
)
from tests.unit.cmaf_media import EncodedMedia, encode_media, split_stream


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> EncodedMedia:
    """Real transcoder-style ffmpeg output, encoded once for this module."""
    return encode_media(Path(tmp_path_factory.mktemp("cmaf-init")))


def _box(data: bytes, path: str) -> Box:
    found = find_box(data, path)
    assert found is not None, path
    return found


def insert_into(data: bytes, parents: list[Box], at: int, extra: bytes) -> bytes:
    """`data` with `extra` inserted at offset `at`, growing the 32-bit sizes of `parents`."""
    out = bytearray(data[:at] + extra + data[at:])
    for parent in parents:
        struct.pack_into(">I", out, parent.offset, parent.size + len(extra))
    return bytes(out)


def test_video_init_gives_the_h264_codec_string_and_resolution(media: EncodedMedia) -> None:
    """The multivariant playlist can advertise CODECS="avc1.64001f" and RESOLUTION=320x180."""
    init, _ = split_stream(media.video)
    section = parse_init(init)
    track = section.track
    assert (track.kind, track.codec, track.timescale) == ("video", "avc1.64001f", 90000)
    assert (track.width, track.height, track.track_id) == (320, 180, 1)
    assert (track.sample_rate, track.channels) == (None, None)
    assert section.data == init


def test_audio_init_gives_the_aac_codec_string_and_format(media: EncodedMedia) -> None:
    """The audio rendition is advertised as mp4a.40.2 (AAC-LC), 48 kHz, mono."""
    init, _ = split_stream(media.audio)
    track = parse_init(init).track
    assert (track.kind, track.codec, track.timescale) == ("audio", "mp4a.40.2", 48000)
    assert (track.sample_rate, track.channels) == (48000, 1)
    assert (track.width, track.height) == (None, None)


def test_edit_list_is_removed_from_the_published_init(media: EncodedMedia) -> None:
    """An encoder's edit list never reaches players, so they do not shift the epoch timeline."""
    init, _ = split_stream(media.video)
    moov, trak, tkhd = (_box(init, p) for p in ("moov", "moov/trak", "moov/trak/tkhd"))
    elst = struct.pack(">I4sII", 28, b"elst", 0, 1) + struct.pack(">IiI", 0, 1024, 1 << 16)
    edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    with_edts = insert_into(init, [moov, trak], tkhd.end, edts)
    assert find_box(with_edts, "moov/trak/edts") is not None
    section = parse_init(with_edts)
    assert section.data == init
    assert section.track == parse_init(init).track


def test_two_track_init_is_unsupported(media: EncodedMedia) -> None:
    """A muxed audio+video output is refused: CMAF renditions carry one track each."""
    init, _ = split_stream(media.video)
    moov, trak = _box(init, "moov"), _box(init, "moov/trak")
    doubled = insert_into(init, [moov], trak.end, init[trak.offset : trak.end])
    with pytest.raises(UnsupportedMedia, match="2 tracks"):
        parse_init(doubled)


def test_non_h264_video_is_unsupported(media: EncodedMedia) -> None:
    """A codec the packager cannot describe is refused rather than advertised wrongly."""
    init, _ = split_stream(media.video)
    entry = _box(init, "moov/trak/mdia/minf/stbl/stsd").payload_offset + 8
    assert init[entry + 4 : entry + 8] == b"avc1"
    hevc = init[: entry + 4] + b"hvc1" + init[entry + 8 :]
    with pytest.raises(UnsupportedMedia, match=r"not H\.264"):
        parse_init(hevc)


def test_truncated_init_is_malformed(media: EncodedMedia) -> None:
    """A header cut short is reported as malformed, not half-parsed."""
    init, _ = split_stream(media.audio)
    with pytest.raises(MalformedBox):
        parse_init(init[:-40])


def test_track_defaults_come_from_trex(media: EncodedMedia) -> None:
    """The cutter learns the trex defaults it needs to read fragments that omit fields."""
    init, _ = split_stream(media.video)
    assert parse_track_defaults(init) == TrackDefaults(track_id=1)
    moov, mvex = _box(init, "moov"), _box(init, "moov/mvex")
    no_mvex = bytearray(init[: mvex.offset] + init[mvex.end :])
    struct.pack_into(">I", no_mvex, moov.offset, moov.size - mvex.size)
    with pytest.raises(UnsupportedMedia, match="not a fragmented MP4"):
        parse_track_defaults(bytes(no_mvex))


def _bits(*fields: tuple[int, int]) -> bytes:
    value, count = 0, 0
    for width, field in fields:
        value, count = value << width | field, count + width
    pad = -count % 8
    return (value << pad).to_bytes((count + pad) // 8, "big")


@pytest.mark.parametrize(
    ("asc", "expected"),
    [
        (_bits((5, 2), (4, 3), (4, 2)), (2, 48000, 2)),  # AAC-LC 48 kHz stereo
        (_bits((5, 5), (4, 6), (4, 2), (4, 3), (5, 2)), (5, 48000, 2)),  # HE-AAC: SBR to 48 kHz
        (_bits((5, 31), (6, 10), (4, 15), (24, 44056), (4, 7)), (42, 44056, 8)),  # escapes
    ],
)
def test_audio_specific_config_is_decoded(asc: bytes, expected: tuple[int, int, int]) -> None:
    """Object type, output rate and channels come out right, including HE-AAC and escapes."""
    assert parse_audio_specific_config(asc) == expected


def test_audio_specific_config_cut_short_is_malformed() -> None:
    """A config too short for its fields is refused."""
    with pytest.raises(MalformedBox, match="cut short"):
        parse_audio_specific_config(b"\x17")
