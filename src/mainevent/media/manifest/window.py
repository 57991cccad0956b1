"""The live window of one rendition: which published segments its media playlist lists.

Sans-IO: the caller passes monotonic `now` seconds in. The window applies the live server
rules of SPEC §1 (rfc8216bis §6.2.2): media sequence numbers stay contiguous (missing MSNs are
listed as EXT-X-GAP), the head slides one segment at a time without ever leaving less than
3 × target duration listed, and a removed segment stays available for its duration plus the
duration of the longest playlist that contained it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from mainevent.media.manifest.errors import WindowError
from mainevent.media.manifest.model import (
    LowLatency,
    MediaPlaylist,
    PartEntry,
    PartPosition,
    PlaylistType,
    PreloadHint,
    PublishedPart,
    PublishedSegment,
    RenditionReport,
    SegmentEntry,
    ServerControl,
    WindowStats,
)

__all__ = [
    "LowLatency",
    "PartPosition",
    "PartState",
    "PublishedPart",
    "PublishedSegment",
    "RenditionWindow",
    "WindowStats",
]

# Where a part stands: listed now; not produced yet; or never going to be (its segment is
# complete without it, was withdrawn, or has left the window).
PartState = Literal["listed", "future", "never"]

_SECOND = 1_000_000


def _default_segment_uri(msn: int) -> str:
    return f"{msn}.m4s"


def _default_part_uri(msn: int, index: int) -> str:
    return f"{msn}.{index}.m4s"


@dataclass(slots=True)
class _Entry:
    """A listed segment and what the window derived for it."""

    seg: PublishedSegment
    discontinuity: bool  # as listed: the caller's flag, or forced by an init change
    filled: bool  # a missing MSN the window listed as a gap (never handed in by the caller)
    longest_us: int = 0  # duration of the longest playlist that has listed it so far


class RenditionWindow:
    """Sliding (or, for EVENT/VOD, growing) list of one rendition's published segments."""

    def __init__(
        self,
        *,
        target_duration_s: int,
        window_segments: int,
        segment_duration_us: int,
        segment_uri: Callable[[int], str] = _default_segment_uri,
        playlist_type: PlaylistType | None = None,
        low_latency: LowLatency | None = None,
        part_uri: Callable[[int, int], str] = _default_part_uri,
    ) -> None:
        if target_duration_s < 1 or window_segments < 1 or segment_duration_us <= 0:
            raise WindowError(
                "target_duration_s, window_segments and segment_duration_us must be positive, got "
                f"{target_duration_s}, {window_segments}, {segment_duration_us}"
            )
        if _rounded_s(segment_duration_us) > target_duration_s:
            raise WindowError(
                f"segments of {segment_duration_us / _SECOND:g} s do not fit a target duration "
                f"of {target_duration_s} s; raise target_duration_s"
            )
        min_us = 3 * target_duration_s * _SECOND
        if window_segments * segment_duration_us < min_us:
            needed = -(-min_us // segment_duration_us)
            raise WindowError(
                f"a window of {window_segments} segments of {segment_duration_us / _SECOND:g} s "
                f"lists {window_segments * segment_duration_us / _SECOND:g} s of media, less than "
                f"3 × target duration ({3 * target_duration_s} s) that players need (SPEC §1); "
                f"set window_segments to at least {needed}"
            )
        if low_latency is not None:
            _check_low_latency(low_latency, target_duration_s, segment_duration_us)
        self._target_s = target_duration_s
        self._ll = low_latency
        self._part_uri = part_uri
        # Parts of the segment being produced (LL-HLS), listed before the segment is whole.
        self._pending_msn: int | None = None
        self._pending: list[PublishedPart] = []
        self._cached_delta: MediaPlaylist | None = None
        self._window_segments = window_segments
        self._segment_us = segment_duration_us
        self._segment_uri = segment_uri
        self._playlist_type = playlist_type
        self._keeps_all = playlist_type is not None
        self._min_listed_us = min_us
        self._listed: deque[_Entry] = deque()
        self._listed_us = 0
        # Removed segments the caller published, until they expire: msn -> (deadline, gap).
        self._removed: dict[int, tuple[float, bool]] = {}
        self._discontinuity_sequence = 0
        self._ended = False
        self._published = 0
        self._filled = 0
        self._cached: MediaPlaylist | None = None

    # -- inputs ---------------------------------------------------------------------------

    def publish(self, seg: PublishedSegment, now: float) -> None:
        """List `seg` (stored whole already) and slide the head; `WindowError` if out of order."""
        if self._ended:
            raise WindowError(f"segment {seg.msn} published after the window ended")
        if seg.msn < 0:
            raise WindowError(f"segment MSN must not be negative, got {seg.msn}")
        if seg.duration_us <= 0 or _rounded_s(seg.duration_us) > self._target_s:
            raise WindowError(
                f"segment {seg.msn} lasts {seg.duration_us / _SECOND:g} s; it must last more than 0 "
                f"and round to at most the target duration ({self._target_s} s), which never changes"
            )
        if self._ll is not None:
            for part in seg.parts:
                _check_part_duration(self._ll, seg.msn, part)
        last = self._listed[-1].seg if self._listed else None
        if last is not None:
            if seg.msn <= last.msn:
                raise WindowError(
                    f"segment {seg.msn} published after segment {last.msn}: MSNs must increase"
                )
            if seg.msn > last.msn + 1:
                self._fill_gap(last, seg.msn)
                last = self._listed[-1].seg
        discontinuity = seg.discontinuity or (last is not None and last.init_uri != seg.init_uri)
        if self._pending_msn is not None and self._pending_msn <= seg.msn:
            self._pending_msn, self._pending = None, []
        self._append(_Entry(seg, discontinuity, filled=False))
        self._published += 1
        self._slide(now)

    def add_part(self, msn: int, part: PublishedPart, now: float) -> None:
        """List a part of segment `msn` (stored whole already) before the segment completes.

        Parts of one segment come in index order; a part of a later segment withdraws the
        pending parts of an earlier one that never completed. `WindowError` if out of order.
        """
        ll = self._ll
        if ll is None:
            raise WindowError("parts are listed only in low-latency mode")
        if self._ended:
            raise WindowError(f"part {msn}.{part.index} added after the window ended")
        last = self.last_msn
        if last is not None and msn <= last:
            raise WindowError(f"part {msn}.{part.index} added after segment {last} completed")
        if self._pending_msn is not None and msn != self._pending_msn:
            if msn < self._pending_msn:
                raise WindowError(
                    f"part {msn}.{part.index} added after parts of segment {self._pending_msn}"
                )
            self._pending = []
        if part.index != len(self._pending):
            raise WindowError(
                f"part {msn}.{part.index} added out of order: expected part {len(self._pending)}"
            )
        _check_part_duration(ll, msn, part)
        self._pending_msn = msn
        self._pending.append(part)
        self._invalidate()

    def drop_parts(self, msn: int) -> None:
        """Withdraw the listed parts of segment `msn`, which will never complete (rejected)."""
        if self._pending_msn == msn:
            self._pending_msn, self._pending = None, []
            self._invalidate()

    def resize(self, window_segments: int, now: float) -> None:
        """Keep `window_segments` from now on (the event's DVR window changed while live).

        Shrinking drops the head at once, as sliding would (never below 3 × TD; the removed
        segments stay available for the RFC's period). Growing lists more as new segments
        come: segments that already left are not listed again, so the media sequence never
        goes back. EVENT/VOD windows keep everything anyway. `WindowError` for a window that
        could not list 3 × target duration."""
        if window_segments * self._segment_us < self._min_listed_us:
            raise WindowError(
                f"a window of {window_segments} segments lists less than 3 × target duration "
                f"({3 * self._target_s} s) that players need (SPEC §1)"
            )
        if window_segments == self._window_segments:
            return
        self._window_segments = window_segments
        if not self._ended and len(self._listed) > window_segments:
            self._slide(now)
            self._invalidate()

    @property
    def window_segments(self) -> int:
        """How many segments the window lists at most (EVENT/VOD windows: all of them)."""
        return self._window_segments

    def end(self, now: float) -> None:
        """The event ended: the playlist gets EXT-X-ENDLIST and takes no more segments."""
        self._ended = True
        self._pending_msn, self._pending = None, []
        self._invalidate()

    # -- outputs --------------------------------------------------------------------------

    @property
    def last_msn(self) -> int | None:
        """MSN of the last listed segment, None before the first publish."""
        return self._listed[-1].seg.msn if self._listed else None

    @property
    def low_latency(self) -> LowLatency | None:
        return self._ll

    @property
    def ended(self) -> bool:
        return self._ended

    def position(self) -> PartPosition | None:
        """The newest part listed (or the last segment with index -1 if it has no parts)."""
        if self._pending_msn is not None:
            return PartPosition(self._pending_msn, len(self._pending) - 1)
        if not self._listed:
            return None
        last = self._listed[-1].seg
        return PartPosition(last.msn, len(last.parts) - 1)

    def contains(self, msn: int, part: int | None = None) -> bool:
        """Whether the playlist lists segment `msn` (whole), or part `part` of it.

        A part index past the final part of a complete segment means part 0 of the next one
        (rfc8216bis §6.2.5.2). This is the condition a blocking playlist reload waits for.
        """
        last = self.last_msn
        if last is None:
            return False
        if part is None:
            return msn <= last
        if msn <= last:
            first = self._listed[0].seg.msn
            if msn < first:
                return True
            parts = self._listed[msn - first].seg.parts
            if not parts or part < len(parts):
                return True
            msn, part = msn + 1, 0
            if msn <= last:
                return True
        return self._pending_msn == msn and part < len(self._pending)

    def part_state(self, msn: int, index: int) -> PartState:
        """Whether part `index` of segment `msn` is listed, may still come, or never will."""
        last = self.last_msn
        if last is not None and msn <= last:
            first = self._listed[0].seg.msn
            if msn < first:
                return "never"
            return "listed" if index < len(self._listed[msn - first].seg.parts) else "never"
        if self._pending_msn is not None:
            if msn < self._pending_msn:
                return "never"  # withdrawn with a segment that never completed
            if msn == self._pending_msn and index < len(self._pending):
                return "listed"
        if self._ended:
            return "never"
        return "future"

    def preload_hint(self) -> PartPosition | None:
        """The part a client may request ahead of time: the one after the newest listed."""
        ll = self._ll
        if ll is None or self._ended:
            return None
        per_segment = max(1, self._segment_us // ll.part_us)
        if self._pending_msn is not None:
            msn, index = self._pending_msn, len(self._pending)
            if index >= per_segment:
                msn, index = msn + 1, 0
            return PartPosition(msn, index)
        last = self.last_msn
        return None if last is None else PartPosition(last + 1, 0)

    def playlist(
        self,
        now: float,
        *,
        skip: bool = False,
        reports: Sequence[RenditionReport] = (),
    ) -> MediaPlaylist:
        """The media playlist to serve now; `WindowError` before the first publish.

        In low-latency mode `skip` asks for a delta update (EXT-X-SKIP; a full playlist when no
        segment is old enough to skip) and `reports` are the other renditions' reports.
        """
        if not self._listed:
            raise WindowError("no segment published yet: there is no playlist to serve")
        if self._ll is not None:
            pl = self._ll_playlist(skip)
            return replace(pl, rendition_reports=tuple(reports)) if reports else pl
        if self._cached is None:
            entries = []
            map_in_force: str | None = None
            for e in self._listed:
                s = e.seg
                entries.append(
                    SegmentEntry(
                        uri=self._segment_uri(s.msn),
                        duration_us=s.duration_us,
                        program_date_time_ms=s.program_date_time_ms,
                        discontinuity=e.discontinuity,
                        gap=s.gap,
                        map_uri=s.init_uri if s.init_uri != map_in_force else None,
                    )
                )
                map_in_force = s.init_uri
            self._cached = MediaPlaylist(
                target_duration_s=self._target_s,
                media_sequence=self._listed[0].seg.msn,
                segments=tuple(entries),
                discontinuity_sequence=self._discontinuity_sequence,
                playlist_type=self._playlist_type,
                endlist=self._ended,
            )
        return self._cached

    def is_available(self, msn: int, now: float) -> bool:
        """Whether segment `msn` may be served: listed, or removed recently enough (never gaps)."""
        if self._listed:
            first = self._listed[0].seg.msn
            if first <= msn <= self._listed[-1].seg.msn:
                return not self._listed[msn - first].seg.gap
        removed = self._removed.get(msn)
        return removed is not None and not removed[1] and now < removed[0]

    def expired(self, now: float) -> list[int]:
        """MSNs published by the caller that are no longer available, each returned once."""
        gone = [msn for msn, (deadline, _) in self._removed.items() if deadline <= now]
        for msn in gone:
            del self._removed[msn]
        return gone

    def statistics(self) -> WindowStats:
        """A snapshot of the window's counters."""
        return WindowStats(
            published_segments=self._published,
            filled_gaps=self._filled,
            listed_segments=len(self._listed),
            listed_duration_us=self._listed_us,
            media_sequence=self._listed[0].seg.msn if self._listed else None,
            discontinuity_sequence=self._discontinuity_sequence,
            last_msn=self.last_msn,
            retained_segments=len(self._removed),
            ended=self._ended,
        )

    # -- internals ------------------------------------------------------------------------

    def _invalidate(self) -> None:
        self._cached = None
        self._cached_delta = None

    def _append(self, entry: _Entry) -> None:
        self._listed.append(entry)
        self._listed_us += entry.seg.duration_us
        self._invalidate()

    def _ll_playlist(self, skip: bool) -> MediaPlaylist:
        ll = self._ll
        assert ll is not None
        if skip and self._cached_delta is not None:
            return self._cached_delta
        if not skip and self._cached is not None:
            return self._cached
        td_us = self._target_s * _SECOND
        # Parts are listed for the segments that end within 3 × TD of the live edge.
        part_horizon_us = 3 * td_us
        pending_us = sum(p.duration_us for p in self._pending)
        listed = self._listed
        n = len(listed)
        with_parts = [False] * n
        ages = [0] * n  # how long before the last segment's end each segment ends
        edge_age = pending_us
        age = 0
        for i in range(n - 1, -1, -1):
            with_parts[i] = age + edge_age <= part_horizon_us
            ages[i] = age
            age += listed[i].seg.duration_us
        skipped = 0
        if skip and not self._ended:
            while skipped < n - 1 and ages[skipped] >= ll.can_skip_until_us:
                skipped += 1
        entries = []
        map_in_force: str | None = None
        for i in range(skipped, n):
            e = listed[i]
            s = e.seg
            map_uri = s.init_uri if s.init_uri != map_in_force else None
            parts: tuple[PartEntry, ...] = ()
            if with_parts[i]:
                parts = tuple(
                    PartEntry(self._part_uri(s.msn, p.index), p.duration_us, p.independent)
                    for p in s.parts
                )
            entries.append(
                SegmentEntry(
                    uri=self._segment_uri(s.msn),
                    duration_us=s.duration_us,
                    program_date_time_ms=s.program_date_time_ms,
                    discontinuity=e.discontinuity,
                    gap=s.gap,
                    map_uri=map_uri,
                    parts=parts,
                )
            )
            map_in_force = s.init_uri
        pending: tuple[PartEntry, ...] = ()
        if self._pending_msn is not None:
            msn = self._pending_msn
            pending = tuple(
                PartEntry(self._part_uri(msn, p.index), p.duration_us, p.independent)
                for p in self._pending
            )
        hint = self.preload_hint()
        hints = () if hint is None else (PreloadHint(self._part_uri(hint.msn, hint.index)),)
        pl = MediaPlaylist(
            target_duration_s=self._target_s,
            media_sequence=listed[0].seg.msn,
            segments=tuple(entries),
            version=ll.version,
            discontinuity_sequence=self._discontinuity_sequence,
            playlist_type=self._playlist_type,
            part_target_us=ll.part_target_us,
            server_control=ServerControl(
                can_block_reload=True,
                part_hold_back_us=ll.part_hold_back_us,
                hold_back_us=ll.hold_back_us,
                can_skip_until_us=ll.can_skip_until_us,
            ),
            skipped_segments=skipped,
            preload_hints=hints,
            endlist=self._ended,
            pending_parts=pending,
        )
        if skip:
            self._cached_delta = pl
        else:
            self._cached = pl
        return pl

    def _fill_gap(self, last: PublishedSegment, msn: int) -> None:
        """List the MSNs between `last` and `msn` as gaps with extrapolated PDTs."""
        self._filled += msn - last.msn - 1
        first = last.msn + 1
        if not self._keeps_all:
            # Older fillers would leave the sliding window at once: do not build them.
            first = max(first, msn - self._window_segments)
        pdt_us = last.program_date_time_ms * 1000 + last.duration_us
        pdt_us += (first - last.msn - 1) * self._segment_us
        for m in range(first, msn):
            filler = PublishedSegment(
                msn=m,
                duration_us=self._segment_us,
                program_date_time_ms=(pdt_us + 500) // 1000,
                init_uri=last.init_uri,
                gap=True,
            )
            self._append(_Entry(filler, discontinuity=False, filled=True))
            pdt_us += self._segment_us

    def _slide(self, now: float) -> None:
        if self._keeps_all:
            return  # nothing ever leaves an EVENT/VOD playlist
        listed = self._listed
        while (
            len(listed) > self._window_segments
            and self._listed_us - listed[0].seg.duration_us >= self._min_listed_us
        ):
            e = listed.popleft()
            d = e.seg.duration_us
            self._listed_us -= d
            if e.discontinuity:
                self._discontinuity_sequence += 1
            if not e.filled:
                self._removed[e.seg.msn] = (now + (d + e.longest_us) / _SECOND, e.seg.gap)
        total = self._listed_us
        for e in listed:
            if e.longest_us < total:
                e.longest_us = total


def _check_low_latency(ll: LowLatency, target_duration_s: int, segment_us: int) -> None:
    td_us = target_duration_s * _SECOND
    if not 0 < ll.part_us <= ll.part_target_us or ll.part_us > segment_us:
        raise WindowError(
            f"need 0 < part cut ({ll.part_us} µs) ≤ declared part target "
            f"({ll.part_target_us} µs), and a part cut no longer than a segment"
        )
    if ll.part_hold_back_us < 3 * ll.part_target_us:
        raise WindowError("PART-HOLD-BACK must be at least 3 × the part target (SPEC §2)")
    if ll.hold_back_us < 3 * td_us:
        raise WindowError("HOLD-BACK must be at least 3 × the target duration (SPEC §2)")
    if ll.can_skip_until_us < 6 * td_us:
        raise WindowError("CAN-SKIP-UNTIL must be at least 6 × the target duration (SPEC §2)")
    if ll.version < 9:
        raise WindowError("delta updates (EXT-X-SKIP) need EXT-X-VERSION 9")


def _rounded_s(us: int) -> int:
    """Seconds rounded to nearest, as EXT-X-TARGETDURATION is compared (rfc8216bis §4.4.3.1)."""
    return (us + _SECOND // 2) // _SECOND


def _check_part_duration(ll: LowLatency, msn: int, part: PublishedPart) -> None:
    """`WindowError` unless the part lasts more than 0 and at most the declared PART-TARGET."""
    if not 0 < part.duration_us <= ll.part_target_us:
        raise WindowError(
            f"part {msn}.{part.index} lasts {part.duration_us} µs; parts last more than 0 "
            f"and at most the declared part target ({ll.part_target_us} µs)"
        )
