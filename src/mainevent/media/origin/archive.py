"""Everything one event published since its first segment: the start-over (EVENT) playlists
while it runs, the post-event VOD playlists and MPD once it ended.

`EventArchive` keeps one growing EVENT `RenditionWindow` per rendition beside the live
windows (same segments, same write-before-publish order: `LiveEvent` hands each published
segment to both) and remembers which MSNs were slate. Sans-IO: `now` comes in, rendered
bytes are cached until the next publication of that rendition.

    /live/<event>/startover.m3u8              multivariant playlist of the start-over playlists
    /live/<event>/<rendition>/startover.m3u8  EVENT playlist from the first segment (ENDLIST at the end)
    /live/<event>/vod.m3u8                    post-event VOD multivariant playlist (404 before the end)
    /live/<event>/<rendition>/vod.m3u8        PLAYLIST-TYPE:VOD media playlist
    /live/<event>/vod.mpd                     static DASH MPD over the same segments

The end itself is persisted beside the media (`EndRecord`, `ended.json` in the event's
store, written whole before the end is acknowledged), so an origin restarted without being
told again still serves the VOD and never reopens the live window.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mainevent.media.manifest import (
    MediaPlaylist,
    PublishedSegment,
    RenditionWindow,
    render_media_playlist,
)
from mainevent.media.manifest.dvr import (
    VodGaps,
    delta_update,
    dvr_playlist,
    startover_playlist,
    vod_playlist,
)

__all__ = ["END_RECORD", "EndRecord", "EventArchive", "VodRun"]

_SECOND = 1_000_000
END_RECORD = "ended.json"
"""Name of the end record in the event's store (`SegmentStore.put_event_meta`)."""


@dataclass(frozen=True, slots=True)
class EndRecord:
    """The end of an event as persisted: when (wall clock, epoch s: retention counts from it)
    and the last MSN each rendition listed (segments stored later are never listed)."""

    ended_wall: float
    last_msns: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, ended_wall: float, last_msns: Mapping[str, int | None]) -> EndRecord:
        """The record of an end now; renditions that never published are left out."""
        pairs = tuple(sorted((r, m) for r, m in last_msns.items() if m is not None))
        return cls(ended_wall, pairs)

    def last_msn(self, rendition: str) -> int | None:
        """The last MSN `rendition` listed at the end (None: it had published nothing)."""
        return dict(self.last_msns).get(rendition)

    def encode(self) -> bytes:
        body = {"ended_wall": self.ended_wall, "last_msn": dict(self.last_msns)}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> EndRecord:
        """The record in `data`; `ValueError` naming what is wrong when it is not one."""
        try:
            body = json.loads(data)
            wall = float(body["ended_wall"])
            lasts = {str(r): int(m) for r, m in dict(body["last_msn"]).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an end record ({exc.__class__.__name__}: {exc})") from None
        return cls.of(wall, lasts)


@dataclass(frozen=True, slots=True)
class VodRun:
    """Contiguous MSNs `[first, first + count)` of one rendition with one init section."""

    first: int
    count: int
    init_uri: str


class EventArchive:
    """The EVENT playlists of one event's renditions, and their VOD form after the end."""

    def __init__(
        self,
        renditions: list[str],
        *,
        target_duration_s: int,
        segment_duration_us: int,
        gaps: VodGaps = "exclude",
        can_skip_until_us: int | None = None,
    ) -> None:
        self.gaps: VodGaps = gaps
        self.can_skip_until_us = can_skip_until_us
        self.segment_duration_us = segment_duration_us
        self.target_duration_s = target_duration_s
        # The smallest window that passes the 3 × TD rule: an EVENT window never slides anyway.
        minimum = -(-3 * target_duration_s * _SECOND // segment_duration_us)
        self._windows = {
            r: RenditionWindow(
                target_duration_s=target_duration_s,
                window_segments=minimum,
                segment_duration_us=segment_duration_us,
                playlist_type="EVENT",
            )
            for r in renditions
        }
        self._slate: dict[str, set[int]] = {r: set() for r in renditions}
        self._bodies: dict[tuple[str, str], bytes] = {}
        self.ended_at: float | None = None

    # -- inputs -----------------------------------------------------------------------

    def publish(self, rendition: str, seg: PublishedSegment, now: float, *, slate: bool) -> None:
        """List `seg` (stored whole already, listed in the live window too)."""
        w = self._windows[rendition]
        last = w.last_msn
        if w.ended or (last is not None and seg.msn <= last):
            return
        w.publish(seg, now)
        if slate:
            self._slate[rendition].add(seg.msn)
        self._drop(rendition)

    def end(self, now: float) -> None:
        """The event ended: start-over playlists get ENDLIST, VOD playlists exist from now."""
        if self.ended_at is not None:
            return
        self.ended_at = now
        for w in self._windows.values():
            w.end(now)
        self._bodies.clear()

    # -- outputs ----------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def first_msn(self, rendition: str) -> int | None:
        """The event's first listed MSN in `rendition` (None before its first segment)."""
        return self._windows[rendition].statistics().media_sequence

    def lists(self, rendition: str, msn: int) -> bool:
        """Whether a start-over (or VOD) playlist lists segment `msn` as media (not a gap)."""
        w = self._windows[rendition]
        return w.is_available(msn, 0.0)

    def startover(self, rendition: str, now: float) -> MediaPlaylist | None:
        """The start-over playlist value (None before the first segment)."""
        w = self._windows[rendition]
        if w.last_msn is None:
            return None
        pl = w.playlist(now)
        return startover_playlist(
            dvr_playlist(pl, can_skip_until_us=self.can_skip_until_us, start_offset_us=None)
        )

    def startover_body(self, rendition: str, now: float, *, skip: bool = False) -> bytes | None:
        """The start-over playlist (or its delta update) as response bytes."""
        key = ("startover-delta" if skip else "startover", rendition)
        body = self._bodies.get(key)
        if body is None:
            pl = self.startover(rendition, now)
            if pl is None:
                return None
            body = self._bodies[key] = render_media_playlist(
                delta_update(pl) if skip else pl
            ).encode()
        return body

    def vod(self, rendition: str, now: float) -> MediaPlaylist | None:
        """The VOD playlist value: None before the end (or when nothing was published)."""
        w = self._windows[rendition]
        if not self.ended or w.last_msn is None:
            return None
        try:
            return vod_playlist(w.playlist(now), slate_msns=self._slate[rendition], gaps=self.gaps)
        except ValueError:
            return None

    def vod_body(self, rendition: str, now: float) -> bytes | None:
        key = ("vod", rendition)
        body = self._bodies.get(key)
        if body is None:
            pl = self.vod(rendition, now)
            if pl is None:
                return None
            body = self._bodies[key] = render_media_playlist(pl).encode()
        return body

    def vod_runs(self, rendition: str, now: float, msn_of: Callable[[str], int]) -> list[VodRun]:
        """The VOD playlist of `rendition` as runs of contiguous MSNs with one init section
        (what a static MPD lists as one Period each); `msn_of` maps a segment URI to its MSN."""
        pl = self.vod(rendition, now)
        if pl is None:
            return []
        runs: list[VodRun] = []
        init = ""
        for seg in pl.segments:
            msn = msn_of(seg.uri)
            if seg.map_uri is not None:
                init = seg.map_uri
            last = runs[-1] if runs else None
            if (
                last is not None
                and not seg.discontinuity
                and not seg.gap
                and last.first + last.count == msn
                and last.init_uri == init
            ):
                runs[-1] = VodRun(last.first, last.count + 1, init)
            elif not seg.gap:
                runs.append(VodRun(msn, 1, init))
        return runs

    def listed_msns(self, rendition: str) -> range | None:
        """The MSN range any start-over/VOD playlist of `rendition` lists (None: nothing)."""
        stats = self._windows[rendition].statistics()
        if stats.media_sequence is None or stats.last_msn is None:
            return None
        return range(stats.media_sequence, stats.last_msn + 1)

    def _drop(self, rendition: str) -> None:
        for kind in ("startover", "startover-delta", "vod"):
            self._bodies.pop((kind, rendition), None)
