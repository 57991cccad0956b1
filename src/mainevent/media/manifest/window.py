"""The live window of one rendition: which published segments its media playlist lists.

Sans-IO: the caller passes monotonic `now` seconds in. The window applies the live server
rules of SPEC §1 (rfc8216bis §6.2.2): media sequence numbers stay contiguous (missing MSNs are
listed as EXT-X-GAP), the head slides one segment at a time without ever leaving less than
3 × target duration listed, and a removed segment stays available for its duration plus the
duration of the longest playlist that contained it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mainevent.media.manifest.errors import WindowError
from mainevent.media.manifest.model import (
    MediaPlaylist,
    PlaylistType,
    PublishedPart,
    PublishedSegment,
    SegmentEntry,
    WindowStats,
)

__all__ = ["PublishedPart", "PublishedSegment", "RenditionWindow", "WindowStats"]

_SECOND = 1_000_000


def _default_segment_uri(msn: int) -> str:
    return f"{msn}.m4s"


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
        self._target_s = target_duration_s
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
        self._append(_Entry(seg, discontinuity, filled=False))
        self._published += 1
        self._slide(now)

    def end(self, now: float) -> None:
        """The event ended: the playlist gets EXT-X-ENDLIST and takes no more segments."""
        self._ended = True
        self._cached = None

    # -- outputs --------------------------------------------------------------------------

    @property
    def last_msn(self) -> int | None:
        """MSN of the last listed segment, None before the first publish."""
        return self._listed[-1].seg.msn if self._listed else None

    def playlist(self, now: float) -> MediaPlaylist:
        """The media playlist to serve now; `WindowError` before the first publish."""
        if not self._listed:
            raise WindowError("no segment published yet: there is no playlist to serve")
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

    def _append(self, entry: _Entry) -> None:
        self._listed.append(entry)
        self._listed_us += entry.seg.duration_us
        self._cached = None

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


def _rounded_s(us: int) -> int:
    """Seconds rounded to nearest, as EXT-X-TARGETDURATION is compared (rfc8216bis §4.4.3.1)."""
    return (us + _SECOND // 2) // _SECOND
