"""The sans-IO packager core: encoder fMP4 bytes in, validated epoch-locked parts and segments out.

The cutter does not trust the encoder's fragmentation: it takes the samples out of every
fragment, places each one by its epoch decode time into segment `n` = [n·D, (n+1)·D) and part
`k` = [n·D + k·P, n·D + (k+1)·P), and writes each part as its own CMAF chunk whose `tfdt` is
epoch media time. A segment's bytes are exactly its parts' bytes, concatenated.

Events per segment, in order: `PartReady` for each part as soon as it is complete and valid,
then `SegmentReady` or `SegmentRejected`. A segment is rejected as soon as a fault is known, and
nothing more is emitted for it; its parts already emitted must then be withdrawn by the caller.
Every msn gets at most one `SegmentReady`/`SegmentRejected`, in increasing msn order.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Literal

from mainevent.media.cmaf.boxes import DEFAULT_MAX_BOX_SIZE, BoxStreamReader
from mainevent.media.cmaf.errors import MalformedBox, UnsupportedMedia, ValidationError
from mainevent.media.cmaf.fragment import parse_fragment, read_base_dts, write_fragment
from mainevent.media.cmaf.init import parse_init, parse_track_defaults
from mainevent.media.cmaf.model import (
    CutterEvent,
    CutterStatistics,
    InitReady,
    InitSection,
    Part,
    PartReady,
    Sample,
    Segment,
    SegmentReady,
    SegmentRejected,
    StreamFailed,
    TrackDefaults,
)

__all__ = ["Cutter"]

# Top-level boxes an encoder may interleave that carry nothing the packager republishes.
_IGNORED = frozenset({"free", "skip", "styp", "sidx", "ssix", "prft", "emsg", "mfra", "uuid"})
_U32_WRAP = 1 << 32


@dataclass(slots=True)
class _OpenSegment:
    msn: int
    start: int  # n·D, epoch ticks
    live: bool = True  # False once rejected (or below min_msn): its samples are dropped
    samples: int = 0
    first_dts: int = 0
    max_duration: int = 0
    part_index: int = 0
    part_start: int = 0  # epoch dts of the current part's first sample
    part_bytes: int = 0
    part_samples: list[Sample] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Timing:
    timescale: int
    origin: int  # epoch ticks of encoder tick 0
    segment: int  # D, ticks
    part: int  # P, ticks
    parts_per_segment: int


def _ticks(value: Fraction, what: str, timescale: int) -> int:
    if value.denominator != 1:
        raise UnsupportedMedia(f"{what} is not a whole number of ticks at timescale {timescale}")
    return int(value)


class Cutter:
    """Cuts one rendition's encoder output (fragmented MP4 bytes) into parts and segments.

    `origin_epoch_ms` is the capture time of the encoder's first video frame (tick 0);
    `encoder_delay` (seconds) is how much earlier this track's tick 0 is, e.g. AAC priming
    `Fraction(1024, 48000)`. Unsupported media in the init section (a codec we do not package,
    epoch timing that is not a whole number of ticks) raises `UnsupportedMedia` from `push`;
    every other problem in the stream is reported as events.
    """

    def __init__(
        self,
        *,
        rendition: str,
        segment_duration_ms: int,
        part_target_ms: int,
        origin_epoch_ms: int,
        encoder_delay: Fraction = Fraction(0),
        min_msn: int = 0,
        max_part_bytes: int = 32 * 1024 * 1024,
        max_box_size: int = DEFAULT_MAX_BOX_SIZE,
    ) -> None:
        if segment_duration_ms <= 0 or not 0 < part_target_ms <= segment_duration_ms:
            raise ValueError(
                f"need 0 < part_target_ms ({part_target_ms}) "
                f"<= segment_duration_ms ({segment_duration_ms})"
            )
        if max_part_bytes <= 0:
            raise ValueError(f"max_part_bytes must be positive, got {max_part_bytes}")
        self.rendition = rendition
        self._segment_ms = segment_duration_ms
        self._part_ms = part_target_ms
        self._origin_ms = origin_epoch_ms
        self._delay = Fraction(encoder_delay)
        self._min_msn = min_msn
        self._max_part_bytes = max_part_bytes
        self._reader = BoxStreamReader(max_box_size)
        self._state: Literal["running", "failed", "finished"] = "running"
        self._offset = 0  # stream offset of the next box
        self._ftyp: bytes | None = None
        self._init: InitSection | None = None
        self._defaults = TrackDefaults(track_id=1)
        self._timing: _Timing | None = None
        self._needs_keyframe = True
        self._moof: tuple[bytes, int] | None = None  # waiting for its mdat, with its offset
        self._seg: _OpenSegment | None = None
        self._next_msn: int | None = None  # segments below it are closed
        self._last_end: int | None = None  # epoch end of the last accepted sample
        self._last_duration = 0
        self._bytes_in = 0
        self._parts = 0
        self._segments = 0
        self._bytes_published = 0
        self._dropped = 0
        self._rejected: Counter[str] = Counter()

    @property
    def init(self) -> InitSection | None:
        """The parsed init section, once seen."""
        return self._init

    def statistics(self) -> CutterStatistics:
        """A frozen snapshot of this cutter's counters."""
        return CutterStatistics(
            rendition=self.rendition,
            bytes_in=self._bytes_in,
            parts_published=self._parts,
            segments_published=self._segments,
            bytes_published=self._bytes_published,
            segments_rejected=sum(self._rejected.values()),
            rejected_by_reason=MappingProxyType(dict(self._rejected)),
            samples_dropped=self._dropped,
            failed=self._state == "failed",
        )

    def push(self, data: bytes) -> list[CutterEvent]:
        """Feed encoder output bytes (any chunking); return what became ready."""
        events: list[CutterEvent] = []
        if self._state != "running":
            return events
        self._bytes_in += len(data)
        try:
            for kind, box in self._reader.feed(data):
                self._on_box(kind, box, events)
                self._offset += len(box)
                if self._state != "running":
                    return events
            if self._reader.error is not None:
                raise self._reader.error
        except MalformedBox as exc:
            self._fail(str(exc), events)
        except UnsupportedMedia:
            self._release()
            self._state = "failed"
            raise
        return events

    def finish(self) -> list[CutterEvent]:
        """End of stream: reject the segment in progress, if any. Later pushes do nothing."""
        events: list[CutterEvent] = []
        if self._state == "running":
            if self._seg is not None:
                self._reject(self._seg, "incomplete: stream ended mid-segment", events)
            self._state = "finished"
            self._release()
        return events

    def _release(self) -> None:
        self._seg = None
        self._moof = None
        self._reader = BoxStreamReader(16)

    def _fail(self, reason: str, events: list[CutterEvent]) -> None:
        seg = self._seg
        if seg is not None:
            self._reject(seg, f"malformed: {reason}", events)
        elif self._moof is not None and self._timing is not None and self._next_msn is not None:
            # The bad fragment may be the first of the next segment: name it if its tfdt says so.
            try:
                dts = read_base_dts(self._moof[0], self._defaults.track_id) + self._timing.origin
            except (MalformedBox, UnsupportedMedia):
                dts = -1
            if dts >= 0 and dts // self._timing.segment == self._next_msn:
                doomed = _OpenSegment(self._next_msn, self._next_msn * self._timing.segment)
                self._reject(doomed, f"malformed: {reason}", events)
        events.append(StreamFailed(reason))
        self._state = "failed"
        self._release()

    def _on_box(self, kind: str, box: bytes, events: list[CutterEvent]) -> None:
        if self._moof is not None and kind != "mdat":
            raise MalformedBox(f"'{kind}' at byte {self._offset} follows a 'moof'; expected 'mdat'")
        if kind in ("ftyp", "moov"):
            if self._init is not None:
                self._fail(
                    f"second init section ('{kind}' at byte {self._offset}): "
                    "a restarted encoder needs a new Cutter",
                    events,
                )
            elif kind == "ftyp":
                self._ftyp = box
            elif self._ftyp is None:
                raise MalformedBox(f"'moov' at byte {self._offset} is not preceded by 'ftyp'")
            else:
                self._on_init(self._ftyp + box, events)
        elif kind == "moof":
            if self._timing is None:
                raise MalformedBox(f"fragment at byte {self._offset} before the init section")
            self._moof = (box, self._offset)
        elif kind == "mdat":
            if self._moof is None:
                raise MalformedBox(f"'mdat' at byte {self._offset} without a preceding 'moof'")
            moof, at = self._moof
            try:
                _, samples = parse_fragment(moof, box, self._defaults, moof_offset=at)
            except UnsupportedMedia as exc:  # mid-stream: report it like any broken fragment
                self._fail(f"unsupported fragment at byte {at}: {exc}", events)
                return
            self._moof = None
            for sample in samples:
                self._on_sample(sample, events)
        elif kind not in _IGNORED:
            raise MalformedBox(f"unexpected top-level box '{kind}' at byte {self._offset}")

    def _on_init(self, data: bytes, events: list[CutterEvent]) -> None:
        init = parse_init(data)
        defaults = parse_track_defaults(data)
        ts = init.track.timescale
        origin = Fraction(self._origin_ms * ts, 1000) - self._delay * ts
        segment = _ticks(Fraction(self._segment_ms * ts, 1000), "the segment duration", ts)
        part = _ticks(Fraction(self._part_ms * ts, 1000), "the part target", ts)
        self._timing = _Timing(
            timescale=ts,
            origin=_ticks(origin, "origin_epoch_ms minus encoder_delay", ts),
            segment=segment,
            part=part,
            parts_per_segment=math.ceil(segment / part),
        )
        self._init, self._defaults = init, defaults
        self._needs_keyframe = init.track.kind == "video"
        events.append(InitReady(init))

    def _on_sample(self, sample: Sample, events: list[CutterEvent]) -> None:
        timing = self._timing
        assert timing is not None  # fragments are refused before the init section
        dts = sample.dts + timing.origin
        msn = dts // timing.segment
        seg = self._seg
        if seg is not None:
            if msn == seg.msn:
                if not seg.live:
                    self._dropped += 1
                elif dts != self._last_end:
                    self._reject(seg, self._discontinuity(dts), events)
                    self._dropped += 1
                else:
                    self._append(seg, dts, sample, events)
                return
            if msn < seg.msn:
                if seg.live:
                    self._reject(seg, self._discontinuity(dts), events)
                self._dropped += 1
                return
            if seg.live:  # the segment never reached its end: samples are missing
                self._reject(seg, self._discontinuity(dts), events)
            self._close(seg)
        if self._next_msn is not None and msn < self._next_msn:
            self._dropped += 1  # time went back into a segment that is already closed
            return
        self._open(msn, dts, sample, events)

    def _discontinuity(self, dts: int) -> str:
        last = self._last_end
        assert last is not None
        if dts > last:
            return f"timestamp gap: {dts - last} ticks missing before the sample at dts {dts}"
        return f"timestamp overlap: sample at dts {dts} starts {last - dts} ticks too early"

    def _open(self, msn: int, dts: int, sample: Sample, events: list[CutterEvent]) -> None:
        timing = self._timing
        assert timing is not None
        seg = _OpenSegment(msn, msn * timing.segment)
        self._seg = seg
        if msn < self._min_msn:
            seg.live = False
            self._dropped += 1
            return
        last = self._last_end
        late = dts - seg.start
        if last is not None and dts < last:
            self._reject(seg, self._discontinuity(dts), events)
        elif sample.duration > 0 and late >= self._tolerance(sample, contiguous=dts == last):
            if last is None:
                self._reject(seg, "incomplete: run started mid-segment", events)
            elif dts > last:
                self._reject(
                    seg,
                    f"timestamp gap: {dts - last} ticks missing before the sample at dts {dts}, "
                    f"so the segment starts {late} ticks after its boundary",
                    events,
                )
            else:
                self._reject(
                    seg, f"late start: segment starts {late} ticks after its boundary", events
                )
        else:
            self._append(seg, dts, sample, events)
            return
        self._dropped += 1

    def _tolerance(self, sample: Sample, *, contiguous: bool) -> int:
        """How late a segment or part may start: one sample duration (this or the previous)."""
        return max(sample.duration, self._last_duration if contiguous else 0)

    def _append(
        self, seg: _OpenSegment, dts: int, sample: Sample, events: list[CutterEvent]
    ) -> None:
        timing = self._timing
        assert timing is not None
        index = (dts - seg.start) // timing.part
        problem: str | None = None
        if sample.duration <= 0:
            problem = f"bad sample: sample at dts {dts} has duration {sample.duration}"
        elif not sample.data:
            problem = f"bad sample: sample at dts {dts} is empty"
        elif index != seg.part_index:
            problem = f"empty part: no sample starts in part {seg.part_index}"
        elif not seg.part_samples:
            part_start = seg.start + index * timing.part
            late = dts - part_start
            if index == 0 and self._needs_keyframe and not sample.is_sync:
                problem = f"no keyframe at segment start: sample at dts {dts} is not a sync sample"
            elif late >= self._tolerance(sample, contiguous=dts == self._last_end):
                problem = f"late start: part {index} starts {late} ticks after its boundary"
            else:
                seg.part_start = dts
                if index == 0:
                    seg.first_dts = dts
        if problem is None and seg.part_bytes + len(sample.data) > self._max_part_bytes:
            problem = f"part too large: part {index} exceeds {self._max_part_bytes} bytes"
        if problem is not None:
            self._reject(seg, problem, events)
            self._dropped += 1
            return
        seg.part_samples.append(sample)
        seg.part_bytes += len(sample.data)
        seg.samples += 1
        seg.max_duration = max(seg.max_duration, sample.duration)
        end = dts + sample.duration
        self._last_end, self._last_duration = end, sample.duration
        if end >= min(seg.start + (index + 1) * timing.part, seg.start + timing.segment):
            self._complete_part(seg, events)

    def _complete_part(self, seg: _OpenSegment, events: list[CutterEvent]) -> None:
        timing = self._timing
        assert timing is not None
        assert self._last_end is not None
        index = seg.part_index
        last = index == timing.parts_per_segment - 1
        if last:
            duration = self._last_end - seg.first_dts
            tolerance = max(seg.max_duration, seg.first_dts - seg.start)
            if abs(duration - timing.segment) > tolerance:
                reason = f"bad duration: {duration} ticks, expected {timing.segment}±{tolerance}"
                self._reject(seg, reason, events)
                return
        samples = seg.part_samples
        try:
            data = write_fragment(
                samples,
                track_id=self._defaults.track_id,
                sequence_number=(seg.msn * timing.parts_per_segment + index) % _U32_WRAP,
                base_dts=seg.part_start,
            )
        except ValidationError as exc:
            self._reject(seg, f"bad sample: part {index}: {exc}", events)
            return
        part = Part(
            msn=seg.msn,
            index=index,
            start=seg.part_start,
            duration=self._last_end - seg.part_start,
            independent=samples[0].is_sync,
            data=data,
        )
        seg.parts.append(part)
        seg.part_index += 1
        seg.part_samples = []
        seg.part_bytes = 0
        self._parts += 1
        events.append(PartReady(part))
        if last:
            segment = Segment(
                msn=seg.msn,
                start=seg.first_dts,
                duration=self._last_end - seg.first_dts,
                timescale=timing.timescale,
                parts=tuple(seg.parts),
                data=b"".join(p.data for p in seg.parts),
            )
            self._segments += 1
            self._bytes_published += len(segment.data)
            events.append(SegmentReady(segment))
            self._close(seg)

    def _close(self, seg: _OpenSegment) -> None:
        self._seg = None
        self._next_msn = seg.msn + 1

    def _reject(self, seg: _OpenSegment, reason: str, events: list[CutterEvent]) -> None:
        """Mark a segment failed; report it once, as "<category>: <detail>"."""
        if not seg.live:
            return
        seg.live = False
        self._dropped += seg.samples
        seg.part_samples, seg.parts = [], []
        if seg.msn >= self._min_msn:
            self._rejected[reason.split(":", 1)[0]] += 1
            events.append(SegmentRejected(seg.msn, reason))
