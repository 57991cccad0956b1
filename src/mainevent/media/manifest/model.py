"""Value types of HLS playlists (RFC 8216bis): what the renderer writes and the parser reads.

Durations are integer microseconds and program-date-times integer epoch milliseconds, so a
render → parse round trip is exact (no float seconds anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

PlaylistType = Literal["EVENT", "VOD"]


@dataclass(frozen=True, slots=True)
class PartEntry:
    """One `EXT-X-PART` (LL-HLS partial segment)."""

    uri: str
    duration_us: int
    independent: bool = False
    gap: bool = False


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """One media segment and the tags that precede its URI line.

    `map_uri` is set on the first segment after which a (new) `EXT-X-MAP` applies; the
    renderer writes `EXT-X-MAP` before this segment when it differs from the one in force.
    `parts` are the `EXT-X-PART` tags of this segment (written before its URI line).
    """

    uri: str
    duration_us: int
    program_date_time_ms: int | None = None
    discontinuity: bool = False
    gap: bool = False
    map_uri: str | None = None
    parts: tuple[PartEntry, ...] = ()
    title: str = ""


@dataclass(frozen=True, slots=True)
class ServerControl:
    """`EXT-X-SERVER-CONTROL`."""

    can_block_reload: bool = False
    part_hold_back_us: int | None = None
    hold_back_us: int | None = None
    can_skip_until_us: int | None = None


@dataclass(frozen=True, slots=True)
class PreloadHint:
    """`EXT-X-PRELOAD-HINT`."""

    uri: str
    type: Literal["PART", "MAP"] = "PART"


@dataclass(frozen=True, slots=True)
class RenditionReport:
    """`EXT-X-RENDITION-REPORT`."""

    uri: str
    last_msn: int
    last_part: int | None = None


@dataclass(frozen=True, slots=True)
class DateRange:
    """`EXT-X-DATERANGE` (highlights, markers). Needs a PDT somewhere in the playlist.

    `client_attributes` are the `X-<NAME>` attributes as (name, value as written): a quoted
    string keeps its quotes (`'"abc"'`), hexadecimal and decimal values are bare.
    """

    id: str
    start_date_ms: int
    class_name: str | None = None
    end_date_ms: int | None = None
    duration_us: int | None = None
    planned_duration_us: int | None = None
    end_on_next: bool = False
    client_attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    """A media playlist. `segments` are the listed segments (after any skipped ones).

    `media_sequence` is the MSN of the first segment *including* skipped ones, as on the
    wire; `skipped_segments` > 0 renders `EXT-X-SKIP` (delta update).
    """

    target_duration_s: int
    media_sequence: int
    segments: tuple[SegmentEntry, ...]
    version: int = 6
    discontinuity_sequence: int = 0
    playlist_type: PlaylistType | None = None
    independent_segments: bool = True
    part_target_us: int | None = None
    server_control: ServerControl | None = None
    skipped_segments: int = 0
    preload_hints: tuple[PreloadHint, ...] = ()
    rendition_reports: tuple[RenditionReport, ...] = ()
    endlist: bool = False
    # EXT-X-PART tags after the last URI line: the segment still being produced (LL-HLS).
    pending_parts: tuple[PartEntry, ...] = ()
    date_ranges: tuple[DateRange, ...] = ()
    # EXT-X-START:TIME-OFFSET (negative: from the end of the playlist), e.g. the live edge of
    # a DVR window; `start_precise` writes PRECISE=YES.
    start_offset_us: int | None = None
    start_precise: bool = False

    @property
    def last_msn(self) -> int:
        """MSN of the last listed segment (media_sequence - 1 when empty)."""
        return self.media_sequence + self.skipped_segments + len(self.segments) - 1


@dataclass(frozen=True, slots=True)
class MediaRendition:
    """`EXT-X-MEDIA` (an alternative rendition, e.g. the audio group)."""

    type: Literal["AUDIO", "VIDEO", "SUBTITLES"]
    group_id: str
    name: str
    uri: str | None = None
    default: bool = False
    autoselect: bool = False
    language: str | None = None
    channels: str | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    """`EXT-X-STREAM-INF` plus its URI line."""

    uri: str
    bandwidth: int
    average_bandwidth: int | None = None
    codecs: str | None = None
    resolution: tuple[int, int] | None = None
    frame_rate: Fraction | None = None
    audio: str | None = None
    pathway_id: str | None = None
    stable_variant_id: str | None = None


@dataclass(frozen=True, slots=True)
class ContentSteering:
    """`EXT-X-CONTENT-STEERING`."""

    server_uri: str
    pathway_id: str | None = None


@dataclass(frozen=True, slots=True)
class MultivariantPlaylist:
    """A multivariant (master) playlist."""

    variants: tuple[Variant, ...]
    media: tuple[MediaRendition, ...] = ()
    version: int = 6
    independent_segments: bool = True
    content_steering: ContentSteering | None = None


@dataclass(frozen=True, slots=True)
class PublishedPart:
    """A part of a published segment, as the packager produced it (kept for LL-HLS listing)."""

    index: int
    duration_us: int
    independent: bool


@dataclass(frozen=True, slots=True)
class LowLatency:
    """LL-HLS settings of a `RenditionWindow` (rfc8216bis §4.4.3.7-8, §6.2.5).

    `part_target_us` is the declared PART-TARGET: it must be at least the longest part the
    packager cuts (audio parts overrun the cut by up to one AAC frame), while `part_us` is the
    nominal cut, used to know how many parts a segment has (for the preload hint).
    """

    part_target_us: int
    part_us: int
    part_hold_back_us: int
    hold_back_us: int
    can_skip_until_us: int
    version: int = 9


@dataclass(frozen=True, slots=True)
class PartPosition:
    """The newest part a playlist lists: `msn` (its parent segment) and part `index`.

    `index` is -1 when segment `msn` is listed whole and has no parts.
    """

    msn: int
    index: int


@dataclass(frozen=True, slots=True)
class PublishedSegment:
    """A segment handed to a `RenditionWindow`: stored whole, ready to be listed."""

    msn: int
    duration_us: int
    program_date_time_ms: int
    init_uri: str
    parts: tuple[PublishedPart, ...] = ()
    gap: bool = False
    discontinuity: bool = False


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Snapshot of a `RenditionWindow` (for metrics and health)."""

    published_segments: int  # segments handed to publish()
    filled_gaps: int  # missing MSNs the window listed as EXT-X-GAP
    listed_segments: int
    listed_duration_us: int
    media_sequence: int | None  # None until the first publish
    discontinuity_sequence: int
    last_msn: int | None
    retained_segments: int  # removed from the playlist but still available
    ended: bool
