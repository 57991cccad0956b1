"""Value types of the CMAF packager: tracks, samples, and what the cutter publishes.

Media time is always an integer number of ticks of the track's timescale, never float seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

TrackKind = Literal["video", "audio"]


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """What the init section says about its (single) track."""

    track_id: int
    kind: TrackKind
    timescale: int
    codec: str  # RFC 6381 string read from the sample entry, e.g. "avc1.64001f", "mp4a.40.2"
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True, slots=True)
class InitSection:
    """A CMAF header (ftyp + moov) as published, with its parsed track."""

    data: bytes
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackDefaults:
    """Per-sample defaults from the init section's `trex`, used where a fragment omits a field."""

    track_id: int
    sample_description_index: int = 1
    sample_duration: int = 0
    sample_size: int = 0
    sample_flags: int = 0


@dataclass(frozen=True, slots=True)
class Sample:
    """One media sample of a fragment, with resolved defaults (tfhd/trex)."""

    dts: int
    duration: int
    cts_offset: int
    is_sync: bool
    flags: int  # raw ISO BMFF sample_flags
    data: bytes


@dataclass(frozen=True, slots=True)
class TrackTiming:
    """Maps the encoder's output time to epoch media time.

    The encoder's output timeline starts at tick 0 (ffmpeg's MP4 muxer re-bases it); tick 0
    is epoch time `origin_ticks` (in the track's timescale). So epoch dts = origin_ticks + dts.
    """

    origin_ticks: int


@dataclass(frozen=True, slots=True)
class Part:
    """An LL-HLS partial segment: one CMAF chunk (moof + mdat) written by the packager."""

    msn: int
    index: int
    start: int  # epoch dts of the first sample, in track ticks
    duration: int  # ticks
    independent: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class Segment:
    """A validated media segment: the concatenation of its parts' bytes."""

    msn: int
    start: int  # epoch dts of the first sample, ticks
    duration: int  # ticks
    timescale: int
    parts: tuple[Part, ...]
    data: bytes

    @property
    def program_date_time_ms(self) -> int:
        """Capture time of the first sample, epoch milliseconds."""
        return self.start * 1000 // self.timescale


@dataclass(frozen=True, slots=True)
class InitReady:
    """The cutter parsed the encoder's init section (emitted once per encoder run)."""

    init: InitSection


@dataclass(frozen=True, slots=True)
class PartReady:
    """A part is complete and may be stored, then listed."""

    part: Part


@dataclass(frozen=True, slots=True)
class SegmentReady:
    """A segment is complete and passed validation."""

    segment: Segment


@dataclass(frozen=True, slots=True)
class SegmentRejected:
    """A segment failed validation (or was incomplete) and must not be published."""

    msn: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """The encoder's byte stream is unusable (garbage, malformed boxes, a second init section).

    The cutter emits nothing after this event; restart the encoder and start a new cutter.
    """

    reason: str


CutterEvent = InitReady | PartReady | SegmentReady | SegmentRejected | StreamFailed


@dataclass(frozen=True, slots=True)
class CutterStatistics:
    """A snapshot of one cutter's counters (only events it emitted are counted)."""

    rendition: str
    bytes_in: int
    parts_published: int
    segments_published: int
    bytes_published: int  # segment bytes
    segments_rejected: int
    rejected_by_reason: Mapping[str, int]  # reason category ("no keyframe", "timestamp gap", ...)
    samples_dropped: int  # samples that belonged to no publishable segment
    failed: bool
