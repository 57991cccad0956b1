"""ISO BMFF box framing: whole-buffer iteration and the incremental stream reader."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.cmaf import (
    BoxStreamReader,
    MalformedBox,
    children,
    find_box,
    find_boxes,
    iter_boxes,
)
from tests.unit.cmaf_media import chunked


def box(kind: str, payload: bytes = b"", *, large: bool = False) -> bytes:
    """One box, with a 64-bit largesize header if asked."""
    if large:
        return struct.pack(">I4sQ", 1, kind.encode(), 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload), kind.encode()) + payload


box_types = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=4, max_size=4
)
boxes_st = st.lists(
    st.builds(
        box, box_types.filter(lambda t: t != "uuid"), st.binary(max_size=80), large=st.booleans()
    ),
    max_size=12,
)


@given(boxes_st, st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_stream_reader_matches_whole_buffer_parse_for_any_chunking(
    stream: list[bytes], cuts: list[int]
) -> None:
    """However the encoder's pipe splits its output, the packager sees the same boxes."""
    data = b"".join(stream)
    reader = BoxStreamReader()
    got: list[tuple[str, bytes]] = []
    for piece in chunked(data, cuts):
        got.extend(reader.feed(piece))
    expected = [(b.type, data[b.offset : b.end]) for b in iter_boxes(data)]
    assert got == expected
    assert reader.buffered == 0
    assert reader.position == len(data)


def test_iter_boxes_reads_largesize_uuid_and_to_end_boxes() -> None:
    """Boxes with 64-bit sizes, uuid extended types and size 0 (to end of file) are framed right."""
    uuid_box = struct.pack(">I4s", 8 + 16 + 3, b"uuid") + bytes(16) + b"abc"
    tail = struct.pack(">I4s", 0, b"mdat") + b"rest"
    data = box("ftyp", b"isom") + box("mdat", b"x" * 5, large=True) + uuid_box + tail
    found = [(b.type, b.offset, b.size, b.header_size) for b in iter_boxes(data)]
    assert found == [
        ("ftyp", 0, 12, 8),
        ("mdat", 12, 21, 16),
        ("uuid", 33, 27, 24),
        ("mdat", 60, 12, 8),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x00", "too short"),
        (struct.pack(">I4s", 4, b"free"), "smaller than its 8-byte header"),
        (struct.pack(">I4s", 20, b"free") + b"x", "overruns its parent"),
        (struct.pack(">I4s", 1, b"free") + b"\x00", "64-bit size cut short"),
    ],
)
def test_iter_boxes_rejects_broken_framing(data: bytes, message: str) -> None:
    """Truncated or inconsistent box sizes are reported, never read past."""
    with pytest.raises(MalformedBox, match=message):
        list(iter_boxes(data))


def test_find_box_walks_container_paths() -> None:
    """Nested boxes are found by path, and missing ones give None."""
    trak1 = box("trak", box("tkhd", b"1") + box("mdia", box("mdhd", b"A")))
    trak2 = box("trak", box("tkhd", b"2"))
    data = box("ftyp") + box("moov", box("mvhd") + trak1 + trak2)
    mdhd = find_box(data, "moov/trak/mdia/mdhd")
    assert mdhd is not None
    assert data[mdhd.payload_offset : mdhd.end] == b"A"
    assert find_box(data, "moov/mvex/trex") is None
    assert [data[b.payload_offset : b.end] for b in find_boxes(data, "moov/trak/tkhd")] == [
        b"1",
        b"2",
    ]
    moov = find_box(data, "moov")
    assert moov is not None
    assert [b.type for b in children(data, moov)] == ["mvhd", "trak", "trak"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (struct.pack(">I4s", 0, b"mdat"), "size 0"),
        (struct.pack(">I4s", 7, b"free"), "smaller than its 8-byte header"),
        (b"\xde\xad\xbe\xef\x00\x01\x02\x03", "not 4 printable ASCII"),
        (struct.pack(">I4s", 1 << 20, b"mdat"), "exceeds the 65536-byte limit"),
        (struct.pack(">I4sQ", 1, b"mdat", 1 << 40), "exceeds the 65536-byte limit"),
    ],
)
def test_stream_reader_rejects_garbage_and_oversized_boxes(bad: bytes, message: str) -> None:
    """Garbage or a box too big to buffer ends the stream at once, after the good boxes."""
    reader = BoxStreamReader(max_box_size=65536)
    good = box("free", b"ok")
    assert reader.feed(good + bad + b"more") == [("free", good)]
    assert reader.error is not None
    assert reader.buffered == 0
    with pytest.raises(MalformedBox, match=message):
        reader.feed(b"")
    with pytest.raises(MalformedBox, match=message):
        reader.feed(good)


def test_stream_reader_raises_when_the_chunk_starts_with_garbage() -> None:
    """A chunk that is garbage from its first byte raises instead of returning nothing."""
    reader = BoxStreamReader()
    with pytest.raises(MalformedBox, match="garbage at byte 0"):
        reader.feed(b"\x00\x00\x00\x10\x00\x00\x00\x00" + bytes(8))


def test_stream_reader_keeps_only_the_incomplete_box() -> None:
    """Memory held between chunks is at most one partial box."""
    reader = BoxStreamReader()
    big = box("mdat", bytes(10_000))
    assert reader.feed(box("free") + big[:5000]) == [("free", box("free"))]
    assert reader.buffered == 5000
    assert reader.feed(big[5000:]) == [("mdat", big)]
    assert reader.buffered == 0


def test_package_exports_resolve() -> None:
    """Every name the packager package advertises can be imported by its adapters."""
    import mainevent.media.cmaf as cmaf

    assert sorted(cmaf.__all__) == sorted(set(cmaf.__all__))
    for name in cmaf.__all__:
        assert getattr(cmaf, name) is not None, name
