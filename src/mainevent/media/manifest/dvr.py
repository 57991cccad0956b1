"""DVR, start-over and post-event VOD playlists, derived from the windows' playlist values.

Sans-IO, pure functions over `MediaPlaylist`: a DVR playlist is the live playlist carrying the
longer window (rfc8216bis has no separate "DVR playlist"), with `CAN-SKIP-UNTIL` so a reload
can be a delta update (`EXT-X-SKIP`) and `EXT-X-START` at the live edge so players do not start
at the head of a two-hour window. A start-over playlist is the EVENT playlist from the event's
first segment, starting at its head; at the end it gets ENDLIST. The post-event VOD playlist
lists the stored segments with PLAYLIST-TYPE VOD, slate and gap runs left out (a DISCONTINUITY
where a run was cut) or kept marked, as configured.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Literal

from mainevent.media.manifest.model import MediaPlaylist, SegmentEntry, ServerControl

__all__ = [
    "VodGaps",
    "delta_update",
    "dvr_playlist",
    "skippable_segments",
    "startover_playlist",
    "vod_playlist",
]

VodGaps = Literal["exclude", "mark"]
"""Post-event VOD: `exclude` leaves slate and EXT-X-GAP runs out; `mark` keeps them listed
(gaps as EXT-X-GAP, slate as the media it is, set off by discontinuities)."""

_SECOND = 1_000_000
DELTA_VERSION = 9  # EXT-X-SKIP needs EXT-X-VERSION 9


def dvr_playlist(
    pl: MediaPlaylist, *, can_skip_until_us: int | None, start_offset_us: int | None
) -> MediaPlaylist:
    """The live playlist `pl` (its window as long as the DVR window) with the DVR controls:
    `CAN-SKIP-UNTIL` (merged into any LL-HLS server control) and `EXT-X-START`."""
    sc = pl.server_control
    if can_skip_until_us is not None and not pl.endlist:
        sc = replace(sc or ServerControl(), can_skip_until_us=can_skip_until_us)
    version = (
        max(pl.version, DELTA_VERSION) if sc is not None and sc.can_skip_until_us else pl.version
    )
    return replace(
        pl,
        server_control=sc,
        version=version,
        start_offset_us=None if pl.endlist else start_offset_us,
    )


def skippable_segments(pl: MediaPlaylist, can_skip_until_us: int) -> int:
    """How many head segments a delta update may replace by EXT-X-SKIP: those that end at least
    CAN-SKIP-UNTIL before the end of the playlist (rfc8216bis §6.2.5.1), never the last one."""
    n = len(pl.segments)
    ages = [0] * n
    age = 0
    for i in range(n - 1, -1, -1):
        ages[i] = age
        age += pl.segments[i].duration_us
    skipped = 0
    while skipped < n - 1 and ages[skipped] >= can_skip_until_us:
        skipped += 1
    return skipped


def delta_update(pl: MediaPlaylist) -> MediaPlaylist:
    """The delta update of a full playlist that declares CAN-SKIP-UNTIL (`_HLS_skip=YES`):
    its old segments replaced by EXT-X-SKIP; the full playlist when nothing is old enough,
    when it ended (an ENDLIST playlist is never a delta update) or declares no CAN-SKIP-UNTIL."""
    sc = pl.server_control
    if pl.endlist or pl.skipped_segments or sc is None or sc.can_skip_until_us is None:
        return pl
    skipped = skippable_segments(pl, sc.can_skip_until_us)
    if not skipped:
        return pl
    rest = list(pl.segments[skipped:])
    # The client keeps the init section it has; naming it again costs one line and keeps the
    # delta update self-describing for a client that joined on it.
    first = rest[0]
    if first.map_uri is None:
        map_uri = next(
            (s.map_uri for s in reversed(pl.segments[:skipped]) if s.map_uri is not None), None
        )
        rest[0] = replace(first, map_uri=map_uri)
    return replace(pl, segments=tuple(rest), skipped_segments=skipped)


def startover_playlist(pl: MediaPlaylist) -> MediaPlaylist:
    """The start-over view of an EVENT playlist: players start at its first segment
    (EXT-X-START:TIME-OFFSET=0), once it is long enough to start 3 × TD before its end."""
    total = sum(s.duration_us for s in pl.segments)
    room = total >= 3 * pl.target_duration_s * _SECOND
    return replace(pl, start_offset_us=0 if (room or pl.endlist) else None, start_precise=True)


def vod_playlist(
    archive: MediaPlaylist, *, slate_msns: Collection[int] = (), gaps: VodGaps = "exclude"
) -> MediaPlaylist:
    """The post-event VOD playlist over `archive` (the event's EVENT playlist, every segment
    since the first): PLAYLIST-TYPE VOD, ENDLIST, no live-only tags (server control, parts,
    preload hints, rendition reports). With `gaps="exclude"`, slate segments (`slate_msns`)
    and EXT-X-GAP segments are left out and the segment after a cut run carries a
    DISCONTINUITY (its timestamps jump). `ValueError` if nothing is left to list."""
    if archive.skipped_segments:
        raise ValueError("a VOD playlist is built from a full playlist, not a delta update")
    out: list[SegmentEntry] = []
    map_in_force: str | None = None
    cut = False
    msn = archive.media_sequence
    first_msn: int | None = None
    for seg in archive.segments:
        if seg.map_uri is not None:
            map_in_force = seg.map_uri
        leave_out = gaps == "exclude" and (seg.gap or msn in slate_msns)
        if leave_out:
            cut = cut or bool(out)
        else:
            if first_msn is None:
                first_msn = msn
            need_map = not out or (seg.map_uri is not None) or cut
            out.append(
                replace(
                    seg,
                    parts=(),
                    discontinuity=(seg.discontinuity or cut) and bool(out),
                    map_uri=map_in_force if need_map else None,
                )
            )
            cut = False
        msn += 1
    if not out or first_msn is None:
        raise ValueError("the event has no media segment to list in a VOD playlist")
    return MediaPlaylist(
        target_duration_s=archive.target_duration_s,
        media_sequence=first_msn,
        segments=tuple(out),
        version=6,
        discontinuity_sequence=0,
        playlist_type="VOD",
        independent_segments=archive.independent_segments,
        endlist=True,
        date_ranges=archive.date_ranges,
    )
