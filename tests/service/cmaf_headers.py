"""Minimal, valid CMAF headers (ftyp + moov with one track) built in memory, for service tests
that restart an origin: `restore()` parses the stored init sections again, so they must be real
headers, and these need no ffmpeg."""

from __future__ import annotations

import struct

from mainevent.media.cmaf import InitSection, parse_init


def _box(kind: str, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind.encode()) + body


def _full(kind: str, *payload: bytes) -> bytes:
    return _box(kind, b"\0\0\0\0", *payload)  # version 0, flags 0


def _header(timescale: int, handler: bytes, entry: bytes) -> bytes:
    tkhd = _full("tkhd", struct.pack(">III", 0, 0, 1), bytes(68))
    mdhd = _full("mdhd", struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    hdlr = _full("hdlr", b"\0\0\0\0", handler, bytes(12), b"\0")
    stsd = _full("stsd", struct.pack(">I", 1), entry)
    minf = _box("minf", _box("stbl", stsd))
    trak = _box("trak", tkhd, _box("mdia", mdhd, hdlr, minf))
    return _box("ftyp", b"iso6", b"\0\0\0\0", b"iso6cmfc") + _box("moov", trak)


def video_init(width: int = 640, height: int = 360) -> InitSection:
    """An H.264 (avc1.64001e) track header at 90 kHz."""
    fields = bytes(6) + struct.pack(">H", 1) + bytes(16) + struct.pack(">HH", width, height)
    fields += bytes(78 - len(fields))
    avcc = _box("avcC", bytes([1, 0x64, 0x00, 0x1E, 0xFF, 0xE0, 0x00]))
    return parse_init(_header(90_000, b"vide", _box("avc1", fields, avcc)))


def audio_init() -> InitSection:
    """An AAC-LC (mp4a.40.2) 48 kHz stereo track header."""
    fields = bytes(6) + struct.pack(">H", 1) + bytes(8)
    fields += struct.pack(">HHHHI", 2, 16, 0, 0, 48_000 << 16)
    asc = bytes([0x11, 0x90])  # AAC-LC, 48 kHz, 2 channels
    dsi = bytes([0x05, len(asc)]) + asc
    dcd = bytes([0x04, 13 + len(dsi), 0x40, 0x15]) + bytes(11) + dsi
    es = bytes([0x03, 3 + len(dcd), 0, 1, 0]) + dcd
    return parse_init(_header(48_000, b"soun", _box("mp4a", fields, _full("esds", es))))
