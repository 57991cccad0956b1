"""Parse a CMAF header (ftyp + moov): the track, its RFC 6381 codec string, its trex defaults.

Only single-track H.264 (`avc1`/`avc3`) and MPEG-4 audio (`mp4a`) headers are supported, which
is what the transcoder's ffmpeg outputs carry. The published header is the input with any edit
list (`edts`) removed: the packager puts epoch time in `tfdt`, and an edit list would shift it.
"""

from __future__ import annotations

import struct

from mainevent.media.cmaf.boxes import Box, children, find_box, iter_boxes
from mainevent.media.cmaf.errors import MalformedBox, UnsupportedMedia
from mainevent.media.cmaf.model import InitSection, TrackDefaults, TrackInfo, TrackKind

__all__ = ["parse_audio_specific_config", "parse_init", "parse_track_defaults"]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

_HANDLERS: dict[str, TrackKind] = {"vide": "video", "soun": "audio"}
_AAC_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
_AAC_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
_VISUAL_ENTRY_FIELDS = 78  # SampleEntry (8) + VisualSampleEntry fields (70)
_AUDIO_ENTRY_FIELDS = 28  # SampleEntry (8) + AudioSampleEntry fields (20)
_MPEG4_AUDIO = 0x40


def _need(box: Box, pos: int, length: int) -> None:
    if pos + length > box.end:
        raise MalformedBox(f"'{box.type}' box at byte {box.offset} is cut short ({box.size} bytes)")


def _child(data: bytes, parent: Box, path: str) -> Box:
    box = find_box(data, path, parent.payload_offset, parent.end)
    if box is None:
        raise MalformedBox(f"'{parent.type}' box at byte {parent.offset} has no '{path}'")
    return box


def _full_box(data: bytes, box: Box, body: int) -> tuple[int, int]:
    """(version, offset of the fields) of a full box, checking `body` bytes of fields exist."""
    _need(box, box.payload_offset, 4 + body)
    return data[box.payload_offset], box.payload_offset + 4


def _single_trak(data: bytes) -> tuple[Box, Box]:
    top = list(iter_boxes(data))
    if not top or top[0].type != "ftyp":
        raise MalformedBox("a CMAF header must start with an 'ftyp' box")
    moovs = [b for b in top if b.type == "moov"]
    if len(moovs) != 1:
        raise MalformedBox(f"a CMAF header needs exactly one 'moov' box, found {len(moovs)}")
    moov = moovs[0]
    traks = [b for b in children(data, moov) if b.type == "trak"]
    if len(traks) != 1:
        raise UnsupportedMedia(f"init section has {len(traks)} tracks; CMAF needs exactly one")
    return moov, traks[0]


def parse_init(data: bytes) -> InitSection:
    """Parse ftyp + moov; the published `data` has any `edts` removed from the track."""
    moov, trak = _single_trak(data)
    tkhd = _child(data, trak, "tkhd")
    version, at = _full_box(data, tkhd, 20)
    (track_id,) = _U32.unpack_from(data, at + (16 if version == 1 else 8))
    mdia = _child(data, trak, "mdia")
    mdhd = _child(data, mdia, "mdhd")
    version, at = _full_box(data, mdhd, 20)
    (timescale,) = _U32.unpack_from(data, at + (16 if version == 1 else 8))
    if timescale == 0:
        raise MalformedBox("'mdhd' timescale is 0")
    hdlr = _child(data, mdia, "hdlr")
    _, at = _full_box(data, hdlr, 8)
    handler = data[at + 4 : at + 8].decode("latin-1")
    kind = _HANDLERS.get(handler)
    if kind is None:
        raise UnsupportedMedia(f"track handler '{handler}' is neither 'vide' nor 'soun'")
    entry = _sample_entry(data, _child(data, mdia, "minf/stbl/stsd"))
    if kind == "video":
        codec, width, height = _visual_entry(data, entry)
        info = TrackInfo(track_id, kind, timescale, codec, width=width, height=height)
    else:
        codec, rate, channels = _audio_entry(data, entry)
        info = TrackInfo(track_id, kind, timescale, codec, sample_rate=rate, channels=channels)
    return InitSection(_without_edts(data, moov, trak), info)


def parse_track_defaults(data: bytes) -> TrackDefaults:
    """The `trex` defaults of the header's track; a header without `mvex` is not fragmented."""
    moov, trak = _single_trak(data)
    tkhd = _child(data, trak, "tkhd")
    version, at = _full_box(data, tkhd, 20)
    (track_id,) = _U32.unpack_from(data, at + (16 if version == 1 else 8))
    mvex = find_box(data, "mvex", moov.payload_offset, moov.end)
    if mvex is None:
        raise UnsupportedMedia("init section has no 'mvex': not a fragmented MP4")
    for trex in children(data, mvex):
        if trex.type != "trex":
            continue
        _, at = _full_box(data, trex, 20)
        fields = struct.unpack_from(">5I", data, at)
        if fields[0] == track_id:
            return TrackDefaults(*fields)
    raise UnsupportedMedia(f"init section has no 'trex' for track {track_id}")


def _sample_entry(data: bytes, stsd: Box) -> Box:
    _, at = _full_box(data, stsd, 4)
    (count,) = _U32.unpack_from(data, at)
    if count != 1:
        raise UnsupportedMedia(f"'stsd' has {count} sample descriptions; expected one")
    entry = next(iter_boxes(data, at + 4, stsd.end), None)
    if entry is None:
        raise MalformedBox("'stsd' is empty")
    return entry


def _visual_entry(data: bytes, entry: Box) -> tuple[str, int, int]:
    at = entry.payload_offset
    _need(entry, at, _VISUAL_ENTRY_FIELDS)
    width, height = struct.unpack_from(">HH", data, at + 24)
    if entry.type not in ("avc1", "avc3"):
        raise UnsupportedMedia(f"video sample entry '{entry.type}' is not H.264 (avc1/avc3)")
    avcc = find_box(data, "avcC", at + _VISUAL_ENTRY_FIELDS, entry.end)
    if avcc is None:
        raise MalformedBox(f"'{entry.type}' sample entry has no 'avcC'")
    _need(avcc, avcc.payload_offset, 4)
    profile, constraints, level = data[avcc.payload_offset + 1 : avcc.payload_offset + 4]
    # RFC 6381 §3.3: the sample entry's four-character code, then hex profile/flags/level.
    return f"{entry.type}.{profile:02x}{constraints:02x}{level:02x}", width, height


def _audio_entry(data: bytes, entry: Box) -> tuple[str, int, int]:
    at = entry.payload_offset
    _need(entry, at, _AUDIO_ENTRY_FIELDS)
    (qt_version,) = _U16.unpack_from(data, at + 8)
    (channels,) = _U16.unpack_from(data, at + 16)
    (rate_fixed,) = _U32.unpack_from(data, at + 24)
    if entry.type != "mp4a":
        raise UnsupportedMedia(f"audio sample entry '{entry.type}' is not MPEG-4 audio (mp4a)")
    # QuickTime sound description versions 1 and 2 carry extra fields before the children.
    extra = {0: 0, 1: 16, 2: 36}.get(qt_version)
    if extra is None:
        raise UnsupportedMedia(f"'mp4a' sound description version {qt_version}")
    esds = find_box(data, "esds", at + _AUDIO_ENTRY_FIELDS + extra, entry.end)
    if esds is None:
        raise MalformedBox("'mp4a' sample entry has no 'esds'")
    _, body = _full_box(data, esds, 0)
    oti, asc = _decoder_config(data[body : esds.end])
    if oti != _MPEG4_AUDIO:
        raise UnsupportedMedia(f"'mp4a' object type 0x{oti:02x} is not MPEG-4 audio (0x40)")
    aot, rate, asc_channels = parse_audio_specific_config(asc)
    return f"mp4a.40.{aot}", rate or rate_fixed >> 16, asc_channels or channels


def _descriptor(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of the MPEG-4 descriptor at `pos` (ISO 14496-1)."""
    try:
        tag = buf[pos]
        length = 0
        pos += 1
        for _ in range(4):
            byte = buf[pos]
            pos += 1
            length = length << 7 | byte & 0x7F
            if not byte & 0x80:
                break
    except IndexError:
        raise MalformedBox("'esds' descriptor header cut short") from None
    if pos + length > len(buf):
        raise MalformedBox(f"'esds' descriptor 0x{tag:02x} overruns its box")
    return tag, pos, pos + length


def _decoder_config(esds: bytes) -> tuple[int, bytes]:
    """(objectTypeIndication, DecoderSpecificInfo bytes) from an esds payload."""
    tag, pos, end = _descriptor(esds, 0)
    if tag != 0x03 or end - pos < 3:
        raise MalformedBox("'esds' does not start with an ES_Descriptor")
    flags = esds[pos + 2]
    pos += 3
    if flags & 0x80:  # streamDependenceFlag
        pos += 2
    if flags & 0x40 and pos < end:  # URL_Flag
        pos += 1 + esds[pos]
    if flags & 0x20:  # OCRstreamFlag
        pos += 2
    while pos < end:
        tag, body, stop = _descriptor(esds, pos)
        if tag == 0x04:
            if stop - body < 13:
                raise MalformedBox("'esds' DecoderConfigDescriptor cut short")
            sub = body + 13
            while sub < stop:
                inner, start, finish = _descriptor(esds, sub)
                if inner == 0x05:
                    return esds[body], esds[start:finish]
                sub = finish
            raise MalformedBox("'esds' has no DecoderSpecificInfo (AudioSpecificConfig)")
        pos = stop
    raise MalformedBox("'esds' has no DecoderConfigDescriptor")


class _Bits:
    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def read(self, count: int) -> int:
        if count > self._left:
            raise MalformedBox("AudioSpecificConfig cut short")
        self._left -= count
        return self._value >> self._left & ((1 << count) - 1)


def parse_audio_specific_config(asc: bytes) -> tuple[int, int, int]:
    """(audio object type, output sample rate, channels) from an AudioSpecificConfig.

    Channels is 0 when the config defers to a program config element; for explicitly signalled
    SBR/PS (object types 5 and 29) the rate is the SBR output rate.
    """
    bits = _Bits(asc)

    def object_type() -> int:
        aot = bits.read(5)
        return 32 + bits.read(6) if aot == 31 else aot

    def sample_rate() -> int:
        index = bits.read(4)
        if index == 15:
            return bits.read(24)
        if index >= len(_AAC_RATES):
            raise MalformedBox(f"AudioSpecificConfig sampling frequency index {index} is reserved")
        return _AAC_RATES[index]

    aot = object_type()
    rate = sample_rate()
    channels = _AAC_CHANNELS.get(bits.read(4), 0)
    if aot in (5, 29):
        rate = sample_rate()
    return aot, rate, channels


def _without_edts(data: bytes, moov: Box, trak: Box) -> bytes:
    edts = find_box(data, "edts", trak.payload_offset, trak.end)
    if edts is None:
        return data
    out = bytearray(data[: edts.offset])
    out += data[edts.end :]
    for parent in (moov, trak):  # both start before the edts, so their offsets still hold
        if parent.header_size >= 16 and _U32.unpack_from(out, parent.offset)[0] == 1:
            _U64.pack_into(out, parent.offset + 8, parent.size - edts.size)
        else:
            _U32.pack_into(out, parent.offset, parent.size - edts.size)
    return bytes(out)
