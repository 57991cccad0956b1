"""Highlights in manifests, sans-IO: `EXT-X-DATERANGE` and DASH `EventStream` entries for the
operator's marked points and ranges, and the VOD clip playlist of a range.

Times are integer epoch milliseconds (capture time, the PDT timeline). A clip is
segment-accurate: it lists every stored segment that overlaps `[start, end)`, so it starts at
the segment boundary at or before the marked start (at most one segment early).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape, quoteattr

from mainevent.media.manifest.errors import ManifestError
from mainevent.media.manifest.model import DateRange, MediaPlaylist, SegmentEntry

__all__ = [
    "DATERANGE_CLASS",
    "EVENT_SCHEME",
    "ClipSegment",
    "Highlight",
    "clip_playlist",
    "clip_segments",
    "highlight_date_ranges",
    "insert_event_stream",
    "with_highlights",
]

DATERANGE_CLASS = "com.mainevent.highlight"
EVENT_SCHEME = "urn:mainevent:highlight:2026"
HIGHLIGHT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TITLE_UNSAFE = re.compile(r'["\r\n\x00-\x1f\x7f]')


@dataclass(frozen=True, slots=True)
class Highlight:
    """A marked point (`end_ms` None) or range `[start_ms, end_ms)` of capture time."""

    id: str
    title: str
    start_ms: int
    end_ms: int | None = None
    number: int = 0
    """Positive integer id for DASH (`Event@id` is an unsigned int); the control plane's row id."""

    def __post_init__(self) -> None:
        if not HIGHLIGHT_ID.fullmatch(self.id):
            raise ManifestError(f"highlight id {self.id!r} must match {HIGHLIGHT_ID.pattern}")
        if not self.title or len(self.title) > 200 or _TITLE_UNSAFE.search(self.title):
            raise ManifestError(
                f"highlight {self.id}: title must be 1-200 characters without quotes or control characters"
            )
        if self.start_ms < 0:
            raise ManifestError(f"highlight {self.id}: start before the epoch")
        if self.end_ms is not None and self.end_ms <= self.start_ms:
            raise ManifestError(f"highlight {self.id}: end must be after start")
        if self.number < 0:
            raise ManifestError(f"highlight {self.id}: number must not be negative")

    @property
    def is_range(self) -> bool:
        return self.end_ms is not None


def highlight_date_ranges(
    highlights: Iterable[Highlight], first_pdt_ms: int | None
) -> tuple[DateRange, ...]:
    """`EXT-X-DATERANGE`s for the highlights still inside a playlist starting at `first_pdt_ms`
    (a highlight that ended before the first listed segment is left out), by start time."""
    if first_pdt_ms is None:
        return ()
    out = []
    for h in sorted(highlights, key=lambda h: (h.start_ms, h.id)):
        if (h.end_ms if h.end_ms is not None else h.start_ms) < first_pdt_ms:
            continue
        out.append(
            DateRange(
                id=f"highlight-{h.id}",
                class_name=DATERANGE_CLASS,
                start_date_ms=h.start_ms,
                end_date_ms=h.end_ms,
                duration_us=None if h.end_ms is None else (h.end_ms - h.start_ms) * 1000,
                client_attributes=(("X-TITLE", f'"{h.title}"'),),
            )
        )
    return tuple(out)


def with_highlights(pl: MediaPlaylist, highlights: Sequence[Highlight]) -> MediaPlaylist:
    """`pl` with the date ranges of `highlights` (replacing none it had of its own class)."""
    if not highlights:
        return pl
    first_pdt = next(
        (s.program_date_time_ms for s in pl.segments if s.program_date_time_ms is not None), None
    )
    own = tuple(d for d in pl.date_ranges if d.class_name != DATERANGE_CLASS)
    return replace(pl, date_ranges=own + highlight_date_ranges(highlights, first_pdt))


def insert_event_stream(mpd: str, highlights: Sequence[Highlight], period_start_ms: int) -> str:
    """The MPD text with an `EventStream` of the highlights as the Period's first child.

    `period_start_ms`: epoch ms of the Period start (the MPD's availabilityStartTime + the
    Period's start), so `presentationTime` (ms, timescale 1000) is relative to it as DASH wants.
    Works on the rendered text so the MPD renderer needs no knowledge of highlights.
    """
    if not highlights:
        return mpd
    marker = mpd.find("<Period ")
    end = mpd.find(">", marker)
    if marker < 0 or end < 0:
        raise ManifestError("MPD has no Period to add the highlights' EventStream to")
    lines = [f'\n    <EventStream schemeIdUri="{EVENT_SCHEME}" timescale="1000">']
    for h in sorted(highlights, key=lambda h: (h.start_ms, h.id)):
        t = h.start_ms - period_start_ms
        if t < 0:
            continue
        dur = "" if h.end_ms is None else f' duration="{h.end_ms - h.start_ms}"'
        lines.append(
            f'      <Event presentationTime="{t}"{dur} id="{h.number}" '
            f"messageData={quoteattr(h.id)}>{escape(h.title)}</Event>"
        )
    lines.append("    </EventStream>")
    return mpd[: end + 1] + "\n".join(lines) + mpd[end + 1 :]


@dataclass(frozen=True, slots=True)
class ClipSegment:
    """A stored segment a clip may list."""

    msn: int
    duration_us: int
    program_date_time_ms: int
    init_name: str
    discontinuity: bool = False


def clip_segments(stored: Iterable[ClipSegment], start_ms: int, end_ms: int) -> list[ClipSegment]:
    """The stored segments overlapping `[start_ms, end_ms)`, in MSN order."""
    return sorted(
        (
            s
            for s in stored
            if s.program_date_time_ms < end_ms
            and s.program_date_time_ms + s.duration_us // 1000 > start_ms
        ),
        key=lambda s: s.msn,
    )


def clip_playlist(
    segments: Sequence[ClipSegment], target_duration_s: int, highlight: Highlight
) -> MediaPlaylist:
    """The VOD media playlist of a clip (URIs relative to the clip's rendition directory).

    A hole in the MSNs (media never stored) or a stored discontinuity is listed as
    `EXT-X-DISCONTINUITY`, so players do not expect continuous timestamps across it.
    """
    if not segments:
        raise ManifestError(f"highlight {highlight.id}: no stored segment in its range")
    entries = []
    prev: ClipSegment | None = None
    for s in segments:
        disc = prev is not None and (s.discontinuity or s.msn != prev.msn + 1)
        entries.append(
            SegmentEntry(
                uri=f"{s.msn}.m4s",
                duration_us=s.duration_us,
                program_date_time_ms=s.program_date_time_ms,
                discontinuity=disc,
                map_uri=s.init_name,
            )
        )
        prev = s
    longest_s = max(-(-s.duration_us // 1_000_000) for s in segments)
    ranges = highlight_date_ranges([highlight], segments[0].program_date_time_ms)
    return MediaPlaylist(
        target_duration_s=max(target_duration_s, longest_s),
        media_sequence=segments[0].msn,
        segments=tuple(entries),
        playlist_type="VOD",
        endlist=True,
        date_ranges=ranges,
    )
