"""ISO BMFF box framing: iterate boxes in a buffer, and split a byte stream into top-level boxes.

Everything here reads box headers only; payloads are interpreted by `init` and `fragment`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from mainevent.media.cmaf.errors import MalformedBox

__all__ = [
    "DEFAULT_MAX_BOX_SIZE",
    "Box",
    "BoxStreamReader",
    "children",
    "find_box",
    "find_boxes",
    "iter_boxes",
]

DEFAULT_MAX_BOX_SIZE = 64 * 1024 * 1024

_HEADER = struct.Struct(">I4s")
_U64 = struct.Struct(">Q")

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Box:
    """Where a box lies in a buffer: `offset` of its first header byte, total `size`."""

    type: str
    offset: int
    size: int
    header_size: int  # 8, 16 with a 64-bit largesize, +16 for a `uuid` extended type

    @property
    def end(self) -> int:
        """Offset one past the box's last byte."""
        return self.offset + self.size

    @property
    def payload_offset(self) -> int:
        """Offset of the first byte after the header."""
        return self.offset + self.header_size


def _describe_type(raw: bytes) -> str:
    return raw.decode("ascii") if _is_printable(raw) else repr(raw)


def _is_printable(raw: bytes) -> bool:
    return raw.isascii() and raw.decode("ascii").isprintable()


def iter_boxes(data: Buffer, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """Yield the boxes laid end to end in `data[start:end]`.

    A size of 0 means "to the end of the range", as ISO BMFF allows for the last box of a file.
    Raises `MalformedBox` when a header is cut short or a size does not fit the range. Types
    are decoded as Latin-1 so that `udta` children such as `©nam` keep their names.
    """
    stop = len(data) if end is None else end
    pos = start
    while pos < stop:
        left = stop - pos
        if left < 8:
            raise MalformedBox(f"{left} stray bytes at byte {pos}: too short for a box header")
        size, raw = _HEADER.unpack_from(data, pos)
        header = 8
        if size == 1:
            if left < 16:
                raise MalformedBox(f"box at byte {pos}: 64-bit size cut short")
            (size,) = _U64.unpack_from(data, pos + 8)
            header = 16
        elif size == 0:
            size = left
        kind = raw.decode("latin-1")
        if kind == "uuid":
            header += 16
        if size < header:
            raise MalformedBox(
                f"box '{kind}' at byte {pos}: size {size} is smaller than its {header}-byte header"
            )
        if size > left:
            raise MalformedBox(
                f"box '{kind}' at byte {pos}: size {size} overruns its parent "
                f"by {size - left} bytes"
            )
        yield Box(kind, pos, size, header)
        pos += size


def children(data: Buffer, box: Box) -> Iterator[Box]:
    """The boxes inside a plain container box (not for full boxes such as `stsd`)."""
    return iter_boxes(data, box.payload_offset, box.end)


def find_boxes(data: Buffer, path: str, start: int = 0, end: int | None = None) -> list[Box]:
    """Every box matching a slash-separated path of plain containers, e.g. `"moov/trak"`."""
    ranges = [(start, len(data) if end is None else end)]
    found: list[Box] = []
    for name in path.split("/"):
        found = [b for lo, hi in ranges for b in iter_boxes(data, lo, hi) if b.type == name]
        ranges = [(b.payload_offset, b.end) for b in found]
    return found


def find_box(data: Buffer, path: str, start: int = 0, end: int | None = None) -> Box | None:
    """The first box at a slash-separated path (first match at each level), or None."""
    box: Box | None = None
    lo, hi = start, len(data) if end is None else end
    for name in path.split("/"):
        box = next((b for b in iter_boxes(data, lo, hi) if b.type == name), None)
        if box is None:
            return None
        lo, hi = box.payload_offset, box.end
    return box


class BoxStreamReader:
    """Splits a byte stream (e.g. an encoder's stdout) into complete top-level boxes.

    Memory is bounded: at most one incomplete box (≤ `max_box_size`) is kept between calls.
    Errors are sticky: once the stream is malformed, every later `feed` raises the same error.
    When a chunk holds good boxes followed by a bad header, `feed` returns the good boxes and
    records the error in `error` (raising it on the next call), so no complete box is lost.
    """

    def __init__(self, max_box_size: int = DEFAULT_MAX_BOX_SIZE) -> None:
        if max_box_size < 16:
            raise ValueError(f"max_box_size must be at least 16 bytes, got {max_box_size}")
        self._max = max_box_size
        self._buf = bytearray()
        self._position = 0
        self._error: MalformedBox | None = None

    @property
    def position(self) -> int:
        """Stream offset of the first byte not yet returned in a box."""
        return self._position

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete box."""
        return len(self._buf)

    @property
    def error(self) -> MalformedBox | None:
        """The error that ended the stream, if any."""
        return self._error

    def feed(self, chunk: Buffer) -> list[tuple[str, bytes]]:
        """Add bytes; return the top-level boxes they complete as (type, whole box bytes)."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += chunk
        out: list[tuple[str, bytes]] = []
        pos = 0
        have = len(buf)
        try:
            with memoryview(buf) as view:
                while have - pos >= 8:
                    size = self._check_size(view, pos, have)
                    if size == 0:  # 64-bit size not all here yet
                        break
                    if have - pos < size:
                        break
                    out.append(
                        (
                            bytes(view[pos + 4 : pos + 8]).decode("ascii"),
                            bytes(view[pos : pos + size]),
                        )
                    )
                    pos += size
        except MalformedBox as exc:
            self._error = exc
            self._buf = bytearray()
            if not out:
                raise
            return out
        if pos:
            del buf[:pos]
            self._position += pos
        return out

    def _check_size(self, view: memoryview, pos: int, have: int) -> int:
        """Size of the box whose header is at `pos`, or 0 if more bytes are needed to tell."""
        size: int
        raw: bytes
        size, raw = _HEADER.unpack_from(view, pos)
        at = self._position + pos
        if not _is_printable(raw):
            raise MalformedBox(
                f"garbage at byte {at}: box type {raw!r} is not 4 printable ASCII characters"
            )
        kind = raw.decode("ascii")
        header = 8
        if size == 1:
            if have - pos < 16:
                return 0
            (size,) = _U64.unpack_from(view, pos + 8)
            header = 16
        elif size == 0:
            raise MalformedBox(f"box '{kind}' at byte {at}: size 0 (to end of file) in a stream")
        if kind == "uuid":
            header += 16
        if size < header:
            raise MalformedBox(
                f"box '{kind}' at byte {at}: size {size} is smaller than its {header}-byte header"
            )
        if size > self._max:
            raise MalformedBox(
                f"box '{kind}' at byte {at}: size {size} exceeds the {self._max}-byte limit"
            )
        return size
