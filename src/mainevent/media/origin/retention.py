"""Per-event retention: which stored segments may be deleted now, and when to look again.

Sans-IO rule: a segment is deleted once `retention_s` have passed since its capture ended,
and never while any playlist still lists it or may still hand it out (the live/DVR window with
its availability period after removal, the start-over and VOD playlists while they are
offered). The adapter (`LiveEvent.apply_retention`) passes wall-clock `now` and what is
listed, deletes what this returns, and arms one timer for `next_deadline`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["RetentionPolicy", "StoredSegment"]


@dataclass(frozen=True, slots=True)
class StoredSegment:
    """A segment on the store: its MSN and the epoch ms its capture ended."""

    msn: int
    end_ms: int


class RetentionPolicy:
    """Retention of one event (`retention_s` None: keep everything)."""

    def __init__(self, retention_s: int | None) -> None:
        if retention_s is not None and retention_s < 1:
            raise ValueError(f"retention_s must be at least 1 s (or None), got {retention_s}")
        self.retention_s = retention_s

    def due(
        self, stored: Iterable[StoredSegment], listed: Sequence[range], now_ms: int
    ) -> list[int]:
        """MSNs to delete now: past retention and in none of the `listed` MSN ranges."""
        if self.retention_s is None:
            return []
        limit = now_ms - self.retention_s * 1000
        return [s.msn for s in stored if s.end_ms <= limit and not any(s.msn in r for r in listed)]

    def next_deadline(self, stored: Iterable[StoredSegment], listed: Sequence[range]) -> int | None:
        """Epoch ms at which the oldest unlisted segment passes retention (None: nothing waits
        on time alone; a listing change is what frees the rest)."""
        if self.retention_s is None:
            return None
        ends = [s.end_ms for s in stored if not any(s.msn in r for r in listed)]
        return None if not ends else min(ends) + self.retention_s * 1000
