"""HLS playlist text (rfc8216bis): render and validate our playlist values, parse playlist text.

Renderers refuse (`PlaylistError`) to write a playlist that breaks a rule of SPEC §1-§3;
the same checks are public (`validate_*`) so conformance tests can apply them to what they
parsed. Rendering is on the live path (every playlist update), so it only appends to a list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NoReturn

from mainevent.media.manifest._parse import parse_media_playlist, parse_multivariant_playlist
from mainevent.media.manifest._syntax import (
    MAX_DATE_MS,
    MIN_DATE_MS,
    format_date,
    format_frame_rate,
    format_us,
    is_client_value,
    is_quotable,
)
from mainevent.media.manifest.errors import PlaylistError
from mainevent.media.manifest.model import (
    DateRange,
    MediaPlaylist,
    MediaRendition,
    MultivariantPlaylist,
    PartEntry,
    ServerControl,
    Variant,
)

__all__ = [
    "parse_media_playlist",
    "parse_multivariant_playlist",
    "render_media_playlist",
    "render_multivariant_playlist",
    "validate_media_playlist",
    "validate_multivariant_playlist",
]

_PATHWAY_ID = re.compile(r"[A-Za-z0-9._-]+")
_STABLE_VARIANT_ID = re.compile(r"[A-Za-z0-9+/=._-]+")
_CLIENT_ATTRIBUTE = re.compile(r"X-[A-Z0-9-]+")
_SECOND = 1_000_000


# -- rendering --------------------------------------------------------------------------


def render_media_playlist(pl: MediaPlaylist) -> str:
    """The playlist as text (LF line ends, final newline); `PlaylistError` if it is invalid."""
    validate_media_playlist(pl)
    out = ["#EXTM3U", f"#EXT-X-VERSION:{pl.version}"]
    if pl.independent_segments:
        out.append("#EXT-X-INDEPENDENT-SEGMENTS")
    out.append(f"#EXT-X-TARGETDURATION:{pl.target_duration_s}")
    if pl.server_control is not None:
        out.append(_server_control(pl.server_control))
    if pl.part_target_us is not None:
        out.append(f"#EXT-X-PART-INF:PART-TARGET={format_us(pl.part_target_us)}")
    out.append(f"#EXT-X-MEDIA-SEQUENCE:{pl.media_sequence}")
    out.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{pl.discontinuity_sequence}")
    if pl.playlist_type is not None:
        out.append(f"#EXT-X-PLAYLIST-TYPE:{pl.playlist_type}")
    if pl.start_offset_us is not None:
        out.append(_start(pl.start_offset_us, pl.start_precise))
    if pl.skipped_segments:
        out.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={pl.skipped_segments}")
    out.extend(_date_range(dr) for dr in pl.date_ranges)
    map_in_force: str | None = None
    for seg in pl.segments:
        if seg.discontinuity:
            out.append("#EXT-X-DISCONTINUITY")
        if seg.map_uri is not None and seg.map_uri != map_in_force:
            out.append(f'#EXT-X-MAP:URI="{seg.map_uri}"')
            map_in_force = seg.map_uri
        if seg.program_date_time_ms is not None:
            out.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_date(seg.program_date_time_ms)}")
        if seg.gap:
            out.append("#EXT-X-GAP")
        out.extend(_part(p) for p in seg.parts)
        out.append(f"#EXTINF:{format_us(seg.duration_us)},{seg.title}")
        out.append(seg.uri)
    out.extend(_part(p) for p in pl.pending_parts)
    out.extend(f'#EXT-X-PRELOAD-HINT:TYPE={h.type},URI="{h.uri}"' for h in pl.preload_hints)
    for rr in pl.rendition_reports:
        last_part = "" if rr.last_part is None else f",LAST-PART={rr.last_part}"
        out.append(f'#EXT-X-RENDITION-REPORT:URI="{rr.uri}",LAST-MSN={rr.last_msn}{last_part}')
    if pl.endlist:
        out.append("#EXT-X-ENDLIST")
    out.append("")
    return "\n".join(out)


def _start(offset_us: int, precise: bool) -> str:
    sign = "-" if offset_us < 0 else ""
    tail = ",PRECISE=YES" if precise else ""
    return f"#EXT-X-START:TIME-OFFSET={sign}{format_us(abs(offset_us))}{tail}"


def _server_control(sc: ServerControl) -> str:
    attrs = []
    if sc.can_block_reload:
        attrs.append("CAN-BLOCK-RELOAD=YES")
    if sc.can_skip_until_us is not None:
        attrs.append(f"CAN-SKIP-UNTIL={format_us(sc.can_skip_until_us)}")
    if sc.hold_back_us is not None:
        attrs.append(f"HOLD-BACK={format_us(sc.hold_back_us)}")
    if sc.part_hold_back_us is not None:
        attrs.append(f"PART-HOLD-BACK={format_us(sc.part_hold_back_us)}")
    return "#EXT-X-SERVER-CONTROL:" + ",".join(attrs)


def _part(p: PartEntry) -> str:
    flags = (",INDEPENDENT=YES" if p.independent else "") + (",GAP=YES" if p.gap else "")
    return f'#EXT-X-PART:DURATION={format_us(p.duration_us)},URI="{p.uri}"{flags}'


def _date_range(dr: DateRange) -> str:
    attrs = [f'ID="{dr.id}"']
    if dr.class_name is not None:
        attrs.append(f'CLASS="{dr.class_name}"')
    attrs.append(f'START-DATE="{format_date(dr.start_date_ms)}"')
    if dr.end_date_ms is not None:
        attrs.append(f'END-DATE="{format_date(dr.end_date_ms)}"')
    if dr.duration_us is not None:
        attrs.append(f"DURATION={format_us(dr.duration_us)}")
    if dr.planned_duration_us is not None:
        attrs.append(f"PLANNED-DURATION={format_us(dr.planned_duration_us)}")
    attrs.extend(f"{name}={value}" for name, value in dr.client_attributes)
    if dr.end_on_next:
        attrs.append("END-ON-NEXT=YES")
    return "#EXT-X-DATERANGE:" + ",".join(attrs)


def render_multivariant_playlist(pl: MultivariantPlaylist) -> str:
    """The multivariant playlist as text; `PlaylistError` if it is invalid."""
    validate_multivariant_playlist(pl)
    out = ["#EXTM3U", f"#EXT-X-VERSION:{pl.version}"]
    if pl.independent_segments:
        out.append("#EXT-X-INDEPENDENT-SEGMENTS")
    cs = pl.content_steering
    if cs is not None:
        pathway = "" if cs.pathway_id is None else f',PATHWAY-ID="{cs.pathway_id}"'
        out.append(f'#EXT-X-CONTENT-STEERING:SERVER-URI="{cs.server_uri}"{pathway}')
    out.extend(_media(m) for m in pl.media)
    for v in pl.variants:
        out.append(_stream_inf(v))
        out.append(v.uri)
    out.append("")
    return "\n".join(out)


def _media(m: MediaRendition) -> str:
    attrs = [f"TYPE={m.type}", f'GROUP-ID="{m.group_id}"', f'NAME="{m.name}"']
    if m.language is not None:
        attrs.append(f'LANGUAGE="{m.language}"')
    attrs.append("DEFAULT=YES" if m.default else "DEFAULT=NO")
    attrs.append("AUTOSELECT=YES" if m.autoselect else "AUTOSELECT=NO")
    if m.channels is not None:
        attrs.append(f'CHANNELS="{m.channels}"')
    if m.uri is not None:
        attrs.append(f'URI="{m.uri}"')
    return "#EXT-X-MEDIA:" + ",".join(attrs)


def _stream_inf(v: Variant) -> str:
    attrs = [f"BANDWIDTH={v.bandwidth}"]
    if v.average_bandwidth is not None:
        attrs.append(f"AVERAGE-BANDWIDTH={v.average_bandwidth}")
    if v.codecs is not None:
        attrs.append(f'CODECS="{v.codecs}"')
    if v.resolution is not None:
        attrs.append(f"RESOLUTION={v.resolution[0]}x{v.resolution[1]}")
    if v.frame_rate is not None:
        attrs.append(f"FRAME-RATE={format_frame_rate(v.frame_rate)}")
    if v.audio is not None:
        attrs.append(f'AUDIO="{v.audio}"')
    if v.pathway_id is not None:
        attrs.append(f'PATHWAY-ID="{v.pathway_id}"')
    if v.stable_variant_id is not None:
        attrs.append(f'STABLE-VARIANT-ID="{v.stable_variant_id}"')
    return "#EXT-X-STREAM-INF:" + ",".join(attrs)


# -- validation -------------------------------------------------------------------------


def validate_media_playlist(pl: MediaPlaylist) -> None:
    """Raise `PlaylistError` naming the first rule of SPEC §1-§2 that `pl` breaks."""
    td = pl.target_duration_s
    if td < 1:
        _fail(f"target duration must be at least 1 s, got {td}")
    if pl.version < 3:
        _fail(
            f"EXTINF durations are written as decimals, which needs EXT-X-VERSION ≥ 3, not {pl.version}"
        )
    for name in ("media_sequence", "discontinuity_sequence", "skipped_segments"):
        if getattr(pl, name) < 0:
            _fail(f"{name} must not be negative, got {getattr(pl, name)}")
    if pl.part_target_us is not None and pl.part_target_us <= 0:
        _fail(f"part target must be positive, got {pl.part_target_us} µs")
    msn = pl.media_sequence + pl.skipped_segments
    has_pdt = False
    for seg in pl.segments:
        what = f"segment {msn}"
        _uri_line(seg.uri, what)
        if seg.duration_us <= 0:
            _fail(f"{what} has duration {seg.duration_us} µs; it must be positive")
        if (seg.duration_us + _SECOND // 2) // _SECOND > td:
            _fail(
                f"{what} lasts {format_us(seg.duration_us)} s, which rounds to more than the "
                f"target duration of {td} s; raise the target duration or cut shorter segments"
            )
        if seg.map_uri is not None:
            if pl.version < 6:
                _fail(f"EXT-X-MAP needs EXT-X-VERSION ≥ 6, not {pl.version}")
            _quoted(seg.map_uri, f"EXT-X-MAP URI of {what}")
        if seg.program_date_time_ms is not None:
            _date(seg.program_date_time_ms, f"program date time of {what}")
            has_pdt = True
        if "\n" in seg.title or "\r" in seg.title:
            _fail(f"title of {what} contains a line break")
        _parts(pl, seg.parts, what)
        msn += 1
    _parts(pl, pl.pending_parts, "the pending segment")
    if pl.skipped_segments:
        if pl.version < 9:
            _fail(f"EXT-X-SKIP needs EXT-X-VERSION ≥ 9, not {pl.version}")
        if pl.server_control is None or pl.server_control.can_skip_until_us is None:
            _fail("EXT-X-SKIP without CAN-SKIP-UNTIL in EXT-X-SERVER-CONTROL")
    if pl.endlist and (pl.preload_hints or pl.skipped_segments):
        _fail("an ENDLIST playlist has no preload hints and is never a delta update")
    _server_control_rules(pl)
    _start_rules(pl)
    for hint in pl.preload_hints:
        _quoted(hint.uri, "preload hint URI")
    for rr in pl.rendition_reports:
        _quoted(rr.uri, "rendition report URI")
        if rr.last_msn < 0 or (rr.last_part is not None and rr.last_part < 0):
            _fail(f"rendition report {rr.uri!r} has a negative LAST-MSN or LAST-PART")
    _date_ranges(pl.date_ranges, has_pdt)


def _parts(pl: MediaPlaylist, parts: Iterable[PartEntry], what: str) -> None:
    for part in parts:
        if pl.part_target_us is None:
            _fail(f"{what} lists parts but the playlist has no EXT-X-PART-INF (part target)")
        _quoted(part.uri, f"part URI of {what}")
        if not 0 < part.duration_us <= pl.part_target_us:
            _fail(
                f"part {part.uri!r} of {what} lasts {part.duration_us} µs; parts last more than "
                f"0 and at most the part target ({pl.part_target_us} µs)"
            )


def _server_control_rules(pl: MediaPlaylist) -> None:
    sc = pl.server_control
    td_us = pl.target_duration_s * _SECOND
    if pl.part_target_us is not None and (sc is None or sc.part_hold_back_us is None):
        _fail("EXT-X-PART-INF requires PART-HOLD-BACK in EXT-X-SERVER-CONTROL")
    if sc is None:
        return
    if sc == ServerControl():
        _fail("EXT-X-SERVER-CONTROL with no attribute; leave server_control None instead")
    if sc.hold_back_us is not None and sc.hold_back_us < 3 * td_us:
        _fail(f"HOLD-BACK {format_us(sc.hold_back_us)} s is less than 3 × target duration")
    if sc.can_skip_until_us is not None and sc.can_skip_until_us < 6 * td_us:
        _fail(
            f"CAN-SKIP-UNTIL {format_us(sc.can_skip_until_us)} s is less than 6 × target duration"
        )
    if sc.part_hold_back_us is not None:
        if pl.part_target_us is None:
            _fail("PART-HOLD-BACK without EXT-X-PART-INF")
        elif sc.part_hold_back_us < 3 * pl.part_target_us:
            _fail(
                f"PART-HOLD-BACK {format_us(sc.part_hold_back_us)} s is less than 3 × part target"
            )


def _start_rules(pl: MediaPlaylist) -> None:
    offset = pl.start_offset_us
    if offset is None or pl.endlist or pl.skipped_segments:
        return
    # rfc8216bis §4.4.2.2: on a live playlist the start SHOULD NOT be within 3 × TD of its end.
    total = sum(s.duration_us for s in pl.segments)
    from_end = -offset if offset < 0 else total - offset
    if from_end < 3 * pl.target_duration_s * _SECOND:
        _fail(
            f"EXT-X-START TIME-OFFSET {offset / _SECOND:g} s on a live playlist of "
            f"{total / _SECOND:g} s starts {from_end / _SECOND:g} s before its end; start at "
            "least 3 × target duration before the end"
        )


def _date_ranges(ranges: tuple[DateRange, ...], has_pdt: bool) -> None:
    if ranges and not has_pdt:
        _fail("EXT-X-DATERANGE needs an EXT-X-PROGRAM-DATE-TIME in the playlist")
    ids: set[str] = set()
    for dr in ranges:
        what = f"date range {dr.id!r}"
        _quoted(dr.id, "date range ID")
        if dr.id in ids:
            _fail(f"{what} appears twice; IDs must be unique")
        ids.add(dr.id)
        if dr.class_name is not None:
            _quoted(dr.class_name, f"CLASS of {what}")
        _date(dr.start_date_ms, f"START-DATE of {what}")
        if dr.end_date_ms is not None:
            _date(dr.end_date_ms, f"END-DATE of {what}")
            if dr.end_date_ms < dr.start_date_ms:
                _fail(f"{what} ends before it starts")
            if (
                dr.duration_us is not None
                and dr.start_date_ms * 1000 + dr.duration_us != dr.end_date_ms * 1000
            ):
                _fail(f"{what}: END-DATE must equal START-DATE + DURATION")
        for us in (dr.duration_us, dr.planned_duration_us):
            if us is not None and us < 0:
                _fail(f"{what} has a negative duration")
        if dr.end_on_next and (
            dr.class_name is None or dr.duration_us is not None or dr.end_date_ms is not None
        ):
            _fail(f"{what}: END-ON-NEXT needs a CLASS and no DURATION or END-DATE")
        names: set[str] = set()
        for name, value in dr.client_attributes:
            if _CLIENT_ATTRIBUTE.fullmatch(name) is None or name in names:
                _fail(f"{what}: client attribute name {name!r} is not X-<NAME> or is repeated")
            if not is_client_value(value):
                _fail(f"{what}: {name} value {value!r} is not a quoted string, hex or decimal")
            names.add(name)


def validate_multivariant_playlist(pl: MultivariantPlaylist) -> None:
    """Raise `PlaylistError` naming the first rule of SPEC §1/§3 that `pl` breaks."""
    if pl.version < 1:
        _fail(f"EXT-X-VERSION must be at least 1, got {pl.version}")
    if not pl.variants:
        _fail("a multivariant playlist needs at least one variant")
    audio_groups = {m.group_id for m in pl.media if m.type == "AUDIO"}
    defaults: set[tuple[str, str]] = set()
    names: set[tuple[str, str, str]] = set()
    for m in pl.media:
        what = f"{m.type} rendition {m.name!r} of group {m.group_id!r}"
        _quoted(m.group_id, f"GROUP-ID of {what}")
        _quoted(m.name, f"NAME of {what}")
        for label, value in (("LANGUAGE", m.language), ("CHANNELS", m.channels), ("URI", m.uri)):
            if value is not None:
                _quoted(value, f"{label} of {what}")
        if m.type == "SUBTITLES" and m.uri is None:
            _fail(f"{what} needs a URI")
        if (m.type, m.group_id, m.name) in names:
            _fail(f"{what} appears twice; names must be unique within a group")
        names.add((m.type, m.group_id, m.name))
        if m.default:
            if not m.autoselect:
                _fail(f"{what} has DEFAULT=YES, which requires AUTOSELECT=YES")
            if (m.type, m.group_id) in defaults:
                _fail(f"group {m.group_id!r} has more than one DEFAULT=YES rendition")
            defaults.add((m.type, m.group_id))
    pathways = set()
    for v in pl.variants:
        what = f"variant {v.uri!r}"
        _uri_line(v.uri, what)
        if v.bandwidth <= 0 or (v.average_bandwidth is not None and v.average_bandwidth <= 0):
            _fail(f"{what} needs a positive BANDWIDTH (and AVERAGE-BANDWIDTH if given)")
        if v.codecs is not None:
            _quoted(v.codecs, f"CODECS of {what}")
        if v.resolution is not None and min(v.resolution) <= 0:
            _fail(f"{what} has a non-positive RESOLUTION {v.resolution}")
        if v.frame_rate is not None and v.frame_rate <= 0:
            _fail(f"{what} has a non-positive FRAME-RATE")
        if v.audio is not None and v.audio not in audio_groups:
            _fail(f"{what} names AUDIO group {v.audio!r}, which no EXT-X-MEDIA defines")
        if v.pathway_id is not None and _PATHWAY_ID.fullmatch(v.pathway_id) is None:
            _fail(f"{what}: PATHWAY-ID {v.pathway_id!r} may only use A-Z a-z 0-9 . _ -")
        if (
            v.stable_variant_id is not None
            and _STABLE_VARIANT_ID.fullmatch(v.stable_variant_id) is None
        ):
            _fail(
                f"{what}: STABLE-VARIANT-ID {v.stable_variant_id!r} may only use A-Z a-z 0-9 + / = . _ -"
            )
        pathways.add(v.pathway_id or ".")
    cs = pl.content_steering
    if cs is not None:
        _quoted(cs.server_uri, "content steering SERVER-URI")
        if cs.pathway_id is not None and cs.pathway_id not in pathways:
            _fail(
                f"content steering PATHWAY-ID {cs.pathway_id!r} is not the pathway of any variant"
            )


def _fail(reason: str) -> NoReturn:
    raise PlaylistError(reason)


def _quoted(value: str, what: str) -> None:
    if not value or not is_quotable(value):
        _fail(f"{what} must be non-empty and free of '\"', CR and LF: {value!r}")


def _uri_line(uri: str, what: str) -> None:
    if not uri or uri != uri.strip() or uri.startswith("#") or "\n" in uri or "\r" in uri:
        _fail(
            f"URI of {what} must be non-empty, unpadded, one line and not start with '#': {uri!r}"
        )


def _date(ms: int, what: str) -> None:
    if not MIN_DATE_MS <= ms <= MAX_DATE_MS:
        _fail(f"{what} ({ms} ms since epoch) is outside years 1-9999")
