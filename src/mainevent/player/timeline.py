"""Where each listed segment sits on the player's media timeline (sans-IO).

Positions are integer microseconds. When segments carry `EXT-X-PROGRAM-DATE-TIME` (mainevent
always writes it) a position *is* the capture time in epoch microseconds, so the audio and
video renditions, every rung of the ladder and every CDN agree on it without coordination.
Without PDT, positions accumulate segment durations from a shared anchor MSN.
"""

from __future__ import annotations

from dataclasses import dataclass

from mainevent.media.manifest.model import MediaPlaylist

# A segment whose end is this close to the wanted position counts as already played: PDT has
# millisecond precision, durations microsecond, so neighbours can overlap by up to 1 ms.
_EDGE_SLACK_US = 1_000
# Entries kept for MSNs that left the playlist, so the playhead's segment stays known.
_KEEP_BEHIND = 32


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """One listed segment, placed on the timeline."""

    msn: int
    uri: str
    start_us: int
    duration_us: int
    pdt_ms: int | None
    map_uri: str | None
    gap: bool = False

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us


class TimelineAnchor:
    """Shared between the tracks of one session: pins an MSN to a position when there is no PDT."""

    __slots__ = ("msn", "start_us")

    def __init__(self) -> None:
        self.msn: int | None = None
        self.start_us = 0


class SegmentTimeline:
    """The segments of one rendition's latest playlist, with positions; `update()` per reload."""

    __slots__ = ("_anchor", "_head_msn", "_known", "_slid", "playlist", "segments")

    def __init__(self, anchor: TimelineAnchor | None = None) -> None:
        self._anchor = anchor or TimelineAnchor()
        self._known: dict[int, SegmentRef] = {}
        self._head_msn: int | None = None  # first MSN of the first playlist loaded
        self._slid = False  # segments have been removed from the head since
        self.playlist: MediaPlaylist | None = None
        self.segments: tuple[SegmentRef, ...] = ()

    def for_switch(self) -> SegmentTimeline:
        """A timeline for another rendition that keeps the positions known so far.

        Renditions share MSNs and timing (RFC 8216bis), so the new rendition's segment n goes
        where this one's did even when there is no PDT to say so.
        """
        other = SegmentTimeline(self._anchor)
        other._known = dict(self._known)
        other._head_msn = self._head_msn
        other._slid = self._slid
        return other

    def update(self, playlist: MediaPlaylist) -> None:
        """Take a freshly loaded playlist of this rendition."""
        first_msn = playlist.media_sequence + playlist.skipped_segments
        if self._head_msn is None:
            self._head_msn = first_msn
        elif first_msn > self._head_msn:
            self._slid = True
        listed = playlist.segments
        mean_us = sum(s.duration_us for s in listed) // len(listed) if listed else 0
        refs: list[SegmentRef] = []
        map_uri: str | None = None
        prev: SegmentRef | None = self._known.get(first_msn - 1)
        for i, entry in enumerate(listed):
            msn = first_msn + i
            map_uri = entry.map_uri or map_uri
            if entry.program_date_time_ms is not None:
                start = entry.program_date_time_ms * 1000
            elif msn in self._known:
                start = self._known[msn].start_us
            elif prev is not None:
                start = prev.end_us
            else:
                if self._anchor.msn is None:
                    self._anchor.msn = msn
                start = self._anchor.start_us + (msn - self._anchor.msn) * mean_us
            pdt = entry.program_date_time_ms
            if (
                pdt is None
                and prev is not None
                and prev.pdt_ms is not None
                and not entry.discontinuity
            ):
                pdt = prev.pdt_ms + prev.duration_us // 1000
            ref = SegmentRef(msn, entry.uri, start, entry.duration_us, pdt, map_uri, entry.gap)
            refs.append(ref)
            self._known[msn] = ref
            prev = ref
        if map_uri is None and refs:
            # The EXT-X-MAP in force may have been attached to a segment no longer listed.
            older = self._known.get(first_msn - 1)
            if older is not None and older.map_uri is not None:
                refs = [_with_map(r, older.map_uri) for r in refs]
                for r in refs:
                    self._known[r.msn] = r
        for msn in [m for m in self._known if m < first_msn - _KEEP_BEHIND]:
            del self._known[msn]
        self.playlist = playlist
        self.segments = tuple(refs)

    def locate(self, position_us: int) -> SegmentRef | None:
        """The first listed segment that still has media after `position_us` (None: none yet)."""
        for ref in self.segments:
            if ref.end_us > position_us + _EDGE_SLACK_US:
                return ref
        return None

    def is_behind_window(self, position_us: int) -> bool:
        """Whether `position_us` is before the first listed segment (it fell off the window)."""
        return bool(self.segments) and position_us + _EDGE_SLACK_US < self.segments[0].start_us

    @property
    def live_edge_us(self) -> int | None:
        return self.segments[-1].end_us if self.segments else None

    @property
    def target_duration_us(self) -> int:
        return self.playlist.target_duration_s * 1_000_000 if self.playlist else 0

    def hold_back_us(self) -> int:
        """Distance behind the end of the playlist to start at (RFC 8216bis 6.3.3, hls.js).

        EXT-X-SERVER-CONTROL HOLD-BACK when the playlist has one (the server must make it at
        least 3 x target duration; a smaller value is raised to that), else 3 x target duration.
        """
        hold_back = 3 * self.target_duration_us
        control = self.playlist.server_control if self.playlist else None
        if control is not None and control.hold_back_us is not None:
            hold_back = max(hold_back, control.hold_back_us)
        return hold_back

    def start_position_us(self) -> int | None:
        """Where standard (non-LL) playback starts; None while a live playlist is too short.

        RFC 8216bis 6.3.3: the client SHOULD NOT choose a segment that starts less than
        HOLD-BACK (at least 3 x target duration) from the end of the playlist. The distance is
        playlist time, the sum of the EXTINF durations after the segment's start (not a PDT
        difference: PDT has millisecond precision and may jump). Within that segment playback
        starts exactly HOLD-BACK before the end, as hls.js does (its liveSyncPosition).

        A live playlist holding less than HOLD-BACK of media (a stream that just began) has no
        such segment: the answer is None and the player keeps reloading until it has one.
        Starting at its first segment instead would put the playhead about one segment behind
        the live edge for the whole session, with too little buffer to ride out the reload
        schedule (stalls). Only a sliding window that has already dropped segments from its
        head and is still shorter than HOLD-BACK (it will never hold more) starts at its first
        segment, as hls.js clamps. For a finished (ENDLIST) playlist: the first segment.
        """
        if not self.segments or self.playlist is None:
            return None
        if self.playlist.endlist:
            return self.segments[0].start_us
        hold_back = self.hold_back_us()
        remaining = 0  # playlist time from the start of `ref` to the end of the playlist
        for ref in reversed(self.segments):
            remaining += ref.duration_us
            if remaining + _EDGE_SLACK_US >= hold_back:
                return ref.start_us + max(0, remaining - hold_back)
        return self.segments[0].start_us if self._slid else None

    def resync_position_us(self) -> int | None:
        """Where to jump back to after falling out of the live window.

        The start position; the first listed segment if the playlist is (against the RFC)
        shorter than the hold-back.
        """
        start = self.start_position_us()
        if start is None and self.segments:
            return self.segments[0].start_us
        return start


def _with_map(ref: SegmentRef, map_uri: str) -> SegmentRef:
    return SegmentRef(ref.msn, ref.uri, ref.start_us, ref.duration_us, ref.pdt_ms, map_uri, ref.gap)
