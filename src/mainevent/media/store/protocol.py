"""The segment store protocol and its record type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StoreError(Exception):
    """A store operation failed; the message names the object and the cause."""


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """What the origin needs to list a stored segment again after a restart."""

    msn: int
    duration_us: int
    program_date_time_ms: int
    init_name: str
    size: int
    # (duration_us, independent) of each LL-HLS part, in order.
    parts: tuple[tuple[int, bool], ...] = ()
    # Listed after EXT-X-DISCONTINUITY (e.g. the first slate segment, or live media after it).
    discontinuity: bool = False
    # The slate standing in for lost input (left out of, or marked in, the post-event VOD).
    slate: bool = False


class SegmentStore(Protocol):
    """Where published media lives. `put_*` return only once the bytes are stored whole."""

    async def put_init(self, event: str, rendition: str, name: str, data: bytes) -> None:
        """Store an init section under `name` (e.g. `init.mp4`)."""
        ...

    async def put_segment(
        self, event: str, rendition: str, record: SegmentRecord, data: bytes
    ) -> None:
        """Store a validated segment, then append its record to the rendition's index."""
        ...

    def put_part(self, event: str, rendition: str, msn: int, index: int, data: bytes) -> None:
        """Keep an LL-HLS part in memory (parts are re-creatable from their segment)."""
        ...

    async def read(self, event: str, rendition: str, name: str) -> bytes | None:
        """Bytes of `name` (`init*.mp4`, `<msn>.m4s`, `<msn>.<part>.m4s`), or None."""
        ...

    def records(self, event: str, rendition: str) -> list[SegmentRecord]:
        """Every stored segment record of a rendition, in MSN order (used after a restart)."""
        ...

    def inits(self, event: str, rendition: str) -> dict[str, bytes]:
        """Every stored init section of a rendition by name."""
        ...

    def forget(self, event: str, rendition: str, msns: list[int]) -> None:
        """Drop segments (and their parts) from memory; disk copies stay for DVR/VOD."""
        ...

    async def delete(self, event: str, rendition: str, msns: list[int]) -> None:
        """Delete segments for good (retention): memory, disk and index; missing ones are fine."""
        ...

    async def put_event_meta(self, event: str, name: str, data: bytes) -> None:
        """Store a small per-event document (e.g. the end record) crash-safe: it is on stable
        storage, whole, under `name` when this returns (and a crash leaves the old one)."""
        ...

    def event_meta(self, event: str, name: str) -> bytes | None:
        """The per-event document `name`, or None (used after a restart)."""
        ...
