"""Movie fragments: what encoders write is read right, and what we write reads back the same."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.cmaf import (
    SAMPLE_IS_NON_SYNC,
    MalformedBox,
    Sample,
    TrackDefaults,
    ValidationError,
    find_box,
    iter_boxes,
    parse_fragment,
    write_fragment,
)

SYNC = 0x02000000
NON_SYNC = 0x01010000
DEFAULTS = TrackDefaults(track_id=1)


def box(kind: str, payload: bytes) -> bytes:
    """A plain box."""
    return struct.pack(">I4s", 8 + len(payload), kind.encode()) + payload


def full_box(kind: str, version: int, flags: int, payload: bytes) -> bytes:
    """A full box (version + 24-bit flags)."""
    return box(kind, struct.pack(">I", version << 24 | flags) + payload)


def encoder_fragment(make_traf: Callable[[int], bytes], payload: bytes) -> tuple[bytes, bytes]:
    """(moof, mdat) whose traf is built knowing the mdat payload's offset from the moof start."""
    mfhd = full_box("mfhd", 0, 0, struct.pack(">I", 1))
    size = len(box("moof", mfhd + box("traf", make_traf(0))))
    moof = box("moof", mfhd + box("traf", make_traf(size + 8)))
    assert len(moof) == size
    return moof, box("mdat", payload)


def split(fragment: bytes) -> tuple[bytes, bytes]:
    """(moof, mdat) of a written fragment."""
    moof, mdat = iter_boxes(fragment)
    return fragment[: moof.end], fragment[mdat.offset :]


samples_st = st.integers(min_value=0, max_value=1 << 40).flatmap(
    lambda start: st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=0xFFFFFFFF),
            st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1),
            st.sampled_from([SYNC, NON_SYNC, 0, 0x00010000, 0x01010000 | 0xFFFF]),
            st.binary(max_size=40),
        ),
        min_size=1,
        max_size=40,
    ).map(lambda rows: _contiguous(start, rows))
)


def _contiguous(start: int, rows: list[tuple[int, int, int, bytes]]) -> list[Sample]:
    out, dts = [], start
    for duration, cts, flags, data in rows:
        out.append(Sample(dts, duration, cts, not flags & SAMPLE_IS_NON_SYNC, flags, data))
        dts += duration
    return out


@given(
    samples_st,
    st.integers(min_value=1, max_value=0xFFFFFFFF),
    st.integers(min_value=0, max_value=0xFFFFFFFF),
)
def test_written_fragment_reads_back_the_same_samples(
    samples: list[Sample], track_id: int, sequence: int
) -> None:
    """A part the packager writes decodes to exactly the samples it was given."""
    fragment = write_fragment(
        samples, track_id=track_id, sequence_number=sequence, base_dts=samples[0].dts
    )
    moof, mdat = split(fragment)
    base, parsed = parse_fragment(moof, mdat, TrackDefaults(track_id=track_id))
    assert base == samples[0].dts
    assert parsed == samples


def test_written_fragment_uses_the_cmaf_chunk_layout() -> None:
    """Parts carry default-base-is-moof, a 64-bit tfdt, and a v1 trun with every sample field."""
    samples = [
        Sample(0, 3000, 0, True, SYNC, b"key"),
        Sample(3000, 3000, -3000, False, NON_SYNC, b"p"),
    ]
    fragment = write_fragment(samples, track_id=1, sequence_number=7, base_dts=9_000_000_000)
    assert [b.type for b in iter_boxes(fragment)] == ["moof", "mdat"]
    tfhd = find_box(fragment, "moof/traf/tfhd")
    tfdt = find_box(fragment, "moof/traf/tfdt")
    trun = find_box(fragment, "moof/traf/trun")
    mfhd = find_box(fragment, "moof/mfhd")
    assert tfhd is not None
    assert tfdt is not None
    assert trun is not None
    assert mfhd is not None
    assert struct.unpack_from(">II", fragment, tfhd.payload_offset) == (0x020000, 1)
    assert struct.unpack_from(">IQ", fragment, tfdt.payload_offset) == (1 << 24, 9_000_000_000)
    assert struct.unpack_from(">III", fragment, trun.payload_offset) == (
        1 << 24 | 0xF01,
        2,
        trun.end + 8,
    )
    assert struct.unpack_from(">I", fragment, mfhd.payload_offset + 4) == (7,)
    assert fragment.endswith(b"keyp")


def test_reads_ffmpeg_style_fragment_with_tfhd_defaults_and_first_sample_flags() -> None:
    """Encoder fragments relying on tfhd defaults and first-sample-flags give the right samples."""
    payload = b"A" * 100 + b"B" * 100 + b"C" * 100

    def traf(offset: int) -> bytes:
        tfhd = full_box("tfhd", 0, 0x020038, struct.pack(">IIII", 1, 3000, 100, NON_SYNC))
        tfdt = full_box("tfdt", 0, 0, struct.pack(">I", 90_000))
        trun = full_box("trun", 0, 0x005, struct.pack(">IiI", 3, offset, SYNC))
        return tfhd + tfdt + trun

    moof, mdat = encoder_fragment(traf, payload)
    base, samples = parse_fragment(moof, mdat, DEFAULTS)
    assert base == 90_000
    assert [(s.dts, s.duration, s.is_sync, s.data[:1]) for s in samples] == [
        (90_000, 3000, True, b"A"),
        (93_000, 3000, False, b"B"),
        (96_000, 3000, False, b"C"),
    ]


def test_reads_base_data_offset_and_several_truns() -> None:
    """An explicit base-data-offset and a trun continuing the previous one's data are honoured."""
    payload = b"aa" + b"bbb" + b"c"
    moof_offset = 5000  # where the moof sits in the encoder's stream

    def traf(offset: int) -> bytes:
        tfhd = full_box("tfhd", 0, 0x01, struct.pack(">IQ", 1, moof_offset))
        tfdt = full_box("tfdt", 1, 0, struct.pack(">Q", 1 << 33))
        first = full_box(
            "trun",
            1,
            0xB01,
            struct.pack(">Ii", 2, offset)
            + struct.pack(">IIi", 10, 2, -5)
            + struct.pack(">IIi", 10, 3, 5),
        )
        second = full_box(
            "trun", 0, 0x700, struct.pack(">I", 1) + struct.pack(">III", 20, 1, NON_SYNC)
        )
        return tfhd + tfdt + first + second

    moof, mdat = encoder_fragment(traf, payload)
    defaults = TrackDefaults(track_id=1, sample_flags=SYNC)
    base, samples = parse_fragment(moof, mdat, defaults, moof_offset=moof_offset)
    assert base == 1 << 33
    assert samples == [
        Sample(1 << 33, 10, -5, True, SYNC, b"aa"),
        Sample((1 << 33) + 10, 10, 5, True, SYNC, b"bbb"),
        Sample((1 << 33) + 20, 20, 0, False, NON_SYNC, b"c"),
    ]


def test_trex_defaults_apply_when_the_fragment_omits_fields() -> None:
    """Fields absent from tfhd and trun come from the init section's trex."""

    def traf(offset: int) -> bytes:
        tfhd = full_box("tfhd", 0, 0x020000, struct.pack(">I", 1))
        tfdt = full_box("tfdt", 0, 0, struct.pack(">I", 0))
        return tfhd + tfdt + full_box("trun", 0, 0x001, struct.pack(">Ii", 2, offset))

    moof, mdat = encoder_fragment(traf, b"xxyy")
    defaults = TrackDefaults(track_id=1, sample_duration=1024, sample_size=2, sample_flags=SYNC)
    _, samples = parse_fragment(moof, mdat, defaults)
    assert [(s.dts, s.duration, s.data, s.is_sync) for s in samples] == [
        (0, 1024, b"xx", True),
        (1024, 1024, b"yy", True),
    ]


def test_truncated_mdat_is_malformed() -> None:
    """A fragment whose mdat is shorter than its trun says is refused, not read past."""
    samples = [Sample(0, 1, 0, True, SYNC, b"abcd"), Sample(1, 1, 0, True, SYNC, b"efgh")]
    moof, mdat = split(write_fragment(samples, track_id=1, sequence_number=1, base_dts=0))
    short = struct.pack(">I4s", len(mdat) - 3, b"mdat") + mdat[8:-3]
    with pytest.raises(MalformedBox, match=r"sample 1 .* outside the mdat payload"):
        parse_fragment(moof, short, DEFAULTS)


def test_trun_longer_than_its_box_is_malformed() -> None:
    """A sample count larger than the trun's table is refused."""

    def traf(offset: int) -> bytes:
        tfhd = full_box("tfhd", 0, 0x020000, struct.pack(">I", 1))
        tfdt = full_box("tfdt", 0, 0, struct.pack(">I", 0))
        return tfhd + tfdt + full_box("trun", 0, 0x201, struct.pack(">IiI", 1000, offset, 1))

    moof, mdat = encoder_fragment(traf, b"x")
    with pytest.raises(MalformedBox, match="too short for 1000 samples"):
        parse_fragment(moof, mdat, DEFAULTS)


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ([], "at least one sample"),
        (
            [Sample(0, 10, 0, True, SYNC, b"a"), Sample(11, 10, 0, True, SYNC, b"b")],
            "sample 1 has dts 11, expected 10",
        ),
        ([Sample(0, 10, 0, True, NON_SYNC, b"a")], "is_sync=True but flags"),
        ([Sample(0, 1 << 32, 0, True, SYNC, b"a")], "does not fit"),
    ],
)
def test_write_refuses_samples_it_cannot_write_faithfully(
    samples: list[Sample], message: str
) -> None:
    """Non-contiguous, inconsistent or oversized samples are refused before any byte is written."""
    with pytest.raises(ValidationError, match=message):
        write_fragment(samples, track_id=1, sequence_number=1, base_dts=0)
