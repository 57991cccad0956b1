"""Read and write movie fragments (moof + mdat) of a single-track CMAF stream.

`parse_fragment` accepts what encoders write (every tfhd/trun option, trex defaults);
`write_fragment` writes the one layout the packager publishes: default-base-is-moof, a 64-bit
`tfdt`, and one version-1 `trun` carrying every per-sample field.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from mainevent.media.cmaf.boxes import Box, children, iter_boxes
from mainevent.media.cmaf.errors import MalformedBox, UnsupportedMedia, ValidationError
from mainevent.media.cmaf.model import Sample, TrackDefaults

__all__ = ["SAMPLE_IS_NON_SYNC", "parse_fragment", "read_base_dts", "write_fragment"]

SAMPLE_IS_NON_SYNC = 0x00010000  # sample_is_non_sync_sample bit of ISO BMFF sample_flags

_TFHD_BASE_DATA_OFFSET = 0x000001
_TFHD_SAMPLE_DESCRIPTION_INDEX = 0x000002
_TFHD_DEFAULT_DURATION = 0x000008
_TFHD_DEFAULT_SIZE = 0x000010
_TFHD_DEFAULT_FLAGS = 0x000020
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000

_TRUN_DATA_OFFSET = 0x001
_TRUN_FIRST_SAMPLE_FLAGS = 0x004
_TRUN_DURATION = 0x100
_TRUN_SIZE = 0x200
_TRUN_FLAGS = 0x400
_TRUN_CTS = 0x800
_TRUN_ALL = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS | _TRUN_CTS

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_VF = struct.Struct(">B3s")
_ENTRY = struct.Struct(">IIIi")
_U32_MAX = 0xFFFFFFFF


def _only_box(data: bytes, kind: str) -> Box:
    boxes = list(iter_boxes(data))
    if len(boxes) != 1 or boxes[0].type != kind:
        found = ", ".join(b.type for b in boxes) or "nothing"
        raise MalformedBox(f"expected one '{kind}' box, found {found}")
    return boxes[0]


def _version_flags(data: bytes, box: Box, body: int) -> tuple[int, int]:
    if box.size - box.header_size < 4 + body:
        raise MalformedBox(f"'{box.type}' box at byte {box.offset} is cut short ({box.size} bytes)")
    version, flags = _VF.unpack_from(data, box.payload_offset)
    return version, int.from_bytes(flags, "big")


def _our_traf(moof: bytes, track_id: int) -> tuple[Box, list[Box]]:
    """(tfhd, other traf children) of the traf for `track_id`."""
    moof_box = _only_box(moof, "moof")
    trafs = [b for b in children(moof, moof_box) if b.type == "traf"]
    if not trafs:
        raise MalformedBox("'moof' has no 'traf'")
    if len(trafs) > 1:
        raise UnsupportedMedia(f"'moof' has {len(trafs)} track fragments; expected one")
    boxes = list(children(moof, trafs[0]))
    tfhds = [b for b in boxes if b.type == "tfhd"]
    if len(tfhds) != 1:
        raise MalformedBox(f"'traf' has {len(tfhds)} 'tfhd' boxes; expected one")
    _version_flags(moof, tfhds[0], 4)
    (found,) = _U32.unpack_from(moof, tfhds[0].payload_offset + 4)
    if found != track_id:
        raise UnsupportedMedia(f"fragment is for track {found}, the init section for {track_id}")
    return tfhds[0], boxes


def read_base_dts(moof: bytes, track_id: int) -> int:
    """The `tfdt` base media decode time of a fragment (raises like `parse_fragment`)."""
    return _base_dts(moof, _our_traf(moof, track_id)[1])


def _base_dts(moof: bytes, boxes: list[Box]) -> int:
    tfdt = next((b for b in boxes if b.type == "tfdt"), None)
    if tfdt is None:
        raise MalformedBox("'traf' has no 'tfdt' (CMAF requires one)")
    version, _ = _version_flags(moof, tfdt, 4)
    if version == 1:
        _version_flags(moof, tfdt, 8)
        return int(_U64.unpack_from(moof, tfdt.payload_offset + 4)[0])
    return int(_U32.unpack_from(moof, tfdt.payload_offset + 4)[0])


def parse_fragment(
    moof: bytes, mdat: bytes, defaults: TrackDefaults, *, moof_offset: int = 0
) -> tuple[int, list[Sample]]:
    """(base decode time, samples) of a moof with the mdat that immediately follows it.

    Sample data offsets are resolved relative to the moof's first byte; an explicit tfhd
    base-data-offset is a stream position, so pass the moof's stream offset as `moof_offset`.
    Raises `MalformedBox` if any sample's bytes lie outside the mdat payload.
    """
    tfhd, boxes = _our_traf(moof, defaults.track_id)
    base_dts = _base_dts(moof, boxes)
    mdat_box = _only_box(mdat, "mdat")
    payload_lo = len(moof) + mdat_box.header_size
    payload_hi = len(moof) + len(mdat)

    _, flags = _version_flags(moof, tfhd, 4)
    pos = tfhd.payload_offset + 8
    base = 0
    duration, size, sample_flags = (
        defaults.sample_duration,
        defaults.sample_size,
        defaults.sample_flags,
    )
    optional = (
        (_TFHD_BASE_DATA_OFFSET, 8),
        (_TFHD_SAMPLE_DESCRIPTION_INDEX, 4),
        (_TFHD_DEFAULT_DURATION, 4),
        (_TFHD_DEFAULT_SIZE, 4),
        (_TFHD_DEFAULT_FLAGS, 4),
    )
    if pos + sum(n for bit, n in optional if flags & bit) > tfhd.end:
        raise MalformedBox(f"'tfhd' flags 0x{flags:06x} need more fields than its size holds")
    if flags & _TFHD_BASE_DATA_OFFSET:
        base = _U64.unpack_from(moof, pos)[0] - moof_offset
        pos += 8
    # Without base-data-offset the base is the moof start, whether or not default-base-is-moof
    # is set, because the moof has a single traf.
    if flags & _TFHD_SAMPLE_DESCRIPTION_INDEX:
        pos += 4
    if flags & _TFHD_DEFAULT_DURATION:
        (duration,) = _U32.unpack_from(moof, pos)
        pos += 4
    if flags & _TFHD_DEFAULT_SIZE:
        (size,) = _U32.unpack_from(moof, pos)
        pos += 4
    if flags & _TFHD_DEFAULT_FLAGS:
        (sample_flags,) = _U32.unpack_from(moof, pos)

    samples: list[Sample] = []
    dts = base_dts
    data_pos = base
    with memoryview(mdat) as view:
        run = _Payload(view, len(moof), payload_lo, payload_hi, samples)
        for trun in (b for b in boxes if b.type == "trun"):
            data_pos, dts = _read_trun(
                moof, trun, (duration, size, sample_flags), base, data_pos, dts, run
            )
    return base_dts, samples


class _Payload:
    """The mdat bytes and where they sit relative to the moof start; collects samples."""

    __slots__ = ("hi", "lo", "mdat", "moof_len", "samples")

    def __init__(
        self, mdat: memoryview, moof_len: int, lo: int, hi: int, samples: list[Sample]
    ) -> None:
        self.mdat, self.moof_len, self.lo, self.hi, self.samples = mdat, moof_len, lo, hi, samples

    def add(self, dts: int, duration: int, cts: int, flags: int, pos: int, size: int) -> None:
        if pos < self.lo or pos + size > self.hi:
            raise MalformedBox(
                f"sample {len(self.samples)} (bytes {pos}..{pos + size} from the moof start) "
                f"lies outside the mdat payload (bytes {self.lo}..{self.hi})"
            )
        start = pos - self.moof_len
        data = bytes(self.mdat[start : start + size])
        self.samples.append(Sample(dts, duration, cts, not flags & SAMPLE_IS_NON_SYNC, flags, data))


def _read_trun(
    moof: bytes,
    trun: Box,
    defaults: tuple[int, int, int],
    base: int,
    data_pos: int,
    dts: int,
    out: _Payload,
) -> tuple[int, int]:
    """Add a trun's samples to `out`; return the (data position, dts) after them."""
    version, flags = _version_flags(moof, trun, 4)
    pos = trun.payload_offset + 4
    (count,) = _U32.unpack_from(moof, pos)
    pos += 4
    fixed = 4 * bool(flags & _TRUN_DATA_OFFSET) + 4 * bool(flags & _TRUN_FIRST_SAMPLE_FLAGS)
    fields = "".join(
        code
        for bit, code in (
            (_TRUN_DURATION, "I"),
            (_TRUN_SIZE, "I"),
            (_TRUN_FLAGS, "I"),
            (_TRUN_CTS, "i" if version else "I"),
        )
        if flags & bit
    )
    entry = struct.Struct(">" + fields)
    if pos + fixed + count * entry.size > trun.end:
        raise MalformedBox(f"'trun' at byte {trun.offset} is too short for {count} samples")
    if not fields and count > out.hi - out.lo:  # bounds memory when all sizes are defaults
        raise MalformedBox(f"'trun' claims {count} samples for {out.hi - out.lo} bytes of data")
    if flags & _TRUN_DATA_OFFSET:
        data_pos = base + _I32.unpack_from(moof, pos)[0]
        pos += 4
    default_duration, default_size, default_flags = defaults
    first_flags = default_flags
    if flags & _TRUN_FIRST_SAMPLE_FLAGS:
        (first_flags,) = _U32.unpack_from(moof, pos)
        pos += 4
    has_duration, has_size = bool(flags & _TRUN_DURATION), bool(flags & _TRUN_SIZE)
    has_flags, has_cts = bool(flags & _TRUN_FLAGS), bool(flags & _TRUN_CTS)
    rows = (
        struct.iter_unpack(entry.format, moof[pos : pos + count * entry.size]) if fields else None
    )
    for i in range(count):
        row: tuple[int, ...] = next(rows) if rows is not None else ()
        col = 0
        duration = row[col] if has_duration else default_duration
        col += has_duration
        size = row[col] if has_size else default_size
        col += has_size
        if has_flags:
            sample_flags = row[col]
            col += 1
        else:
            sample_flags = default_flags
        if i == 0 and flags & _TRUN_FIRST_SAMPLE_FLAGS:
            sample_flags = first_flags
        out.add(dts, duration, row[col] if has_cts else 0, sample_flags, data_pos, size)
        dts += duration
        data_pos += size
    return data_pos, dts


def write_fragment(
    samples: Sequence[Sample], *, track_id: int, sequence_number: int, base_dts: int
) -> bytes:
    """One CMAF chunk (moof + mdat) holding `samples`, with `tfdt` = `base_dts`.

    Raises `ValidationError` for an empty list, non-contiguous dts, a sample whose `is_sync`
    disagrees with its flags, or a value that does not fit its field.
    """
    count = len(samples)
    if not count:
        raise ValidationError("a fragment needs at least one sample")
    if not 0 < track_id <= _U32_MAX or not 0 <= sequence_number <= _U32_MAX:
        raise ValidationError(f"track_id {track_id} / sequence_number {sequence_number} not u32")
    if not 0 <= base_dts < 1 << 64:
        raise ValidationError(f"base_dts {base_dts} does not fit a 64-bit tfdt")
    trun_size = 20 + _ENTRY.size * count
    traf_size = 8 + 16 + 20 + trun_size
    moof_size = 8 + 16 + traf_size
    payload = sum(len(s.data) for s in samples)
    mdat_header = 8 if payload + 8 <= _U32_MAX else 16
    head = bytearray(moof_size + mdat_header)
    struct.pack_into(
        ">I4s I4sII I4s I4sII I4sIQ I4sIIi",
        head,
        0,
        *(moof_size, b"moof", 16, b"mfhd", 0, sequence_number, traf_size, b"traf"),
        *(16, b"tfhd", _TFHD_DEFAULT_BASE_IS_MOOF, track_id),
        *(20, b"tfdt", 1 << 24, base_dts),
        *(trun_size, b"trun", 1 << 24 | _TRUN_ALL, count, moof_size + mdat_header),
    )
    pos = moof_size - _ENTRY.size * count
    expected = samples[0].dts
    for i, s in enumerate(samples):
        if s.dts != expected:
            raise ValidationError(
                f"sample {i} has dts {s.dts}, expected {expected} (previous dts + duration)"
            )
        if s.is_sync == bool(s.flags & SAMPLE_IS_NON_SYNC):
            raise ValidationError(f"sample {i}: is_sync={s.is_sync} but flags 0x{s.flags:08x}")
        try:
            _ENTRY.pack_into(head, pos, s.duration, len(s.data), s.flags, s.cts_offset)
        except struct.error as exc:
            raise ValidationError(f"sample {i}: a field does not fit the trun: {exc}") from None
        pos += _ENTRY.size
        expected += s.duration
    if mdat_header == 8:
        struct.pack_into(">I4s", head, moof_size, payload + 8, b"mdat")
    else:
        struct.pack_into(">I4sQ", head, moof_size, 1, b"mdat", payload + 16)
    return b"".join([head, *(s.data for s in samples)])
