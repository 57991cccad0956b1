"""Property tests: every valid playlist value renders to text that parses back to the same value."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.manifest import (
    ContentSteering,
    DateRange,
    MediaPlaylist,
    MediaRendition,
    MultivariantPlaylist,
    PartEntry,
    PreloadHint,
    RenditionReport,
    SegmentEntry,
    ServerControl,
    Variant,
    parse_media_playlist,
    parse_multivariant_playlist,
    render_media_playlist,
    render_multivariant_playlist,
    validate_media_playlist,
    validate_multivariant_playlist,
)

SECOND = 1_000_000
MIN_DATE_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
MAX_DATE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

# Quoted-string values: anything but '"', CR and LF; commas and '=' included on purpose.
quoted = st.text(
    alphabet=st.characters(exclude_characters='"\r\n', codec="utf-8"),
    min_size=1,
    max_size=12,
)
uri_line = st.from_regex(r"[A-Za-z0-9_./:?=&%~-][A-Za-z0-9_./:?=&%~,#-]{0,20}", fullmatch=True)
title = st.text(alphabet=st.characters(exclude_characters="\r\n", codec="utf-8"), max_size=10)
dates = st.integers(MIN_DATE_MS, MAX_DATE_MS)
pathway_ids = st.from_regex(r"[A-Za-z0-9._-]{1,8}", fullmatch=True)
stable_ids = st.from_regex(r"[A-Za-z0-9+/=._-]{1,8}", fullmatch=True)
client_names = st.from_regex(r"X-[A-Z0-9-]{1,8}", fullmatch=True)
client_values = st.one_of(
    quoted.map(lambda s: f'"{s}"'),
    st.from_regex(r"0[xX][0-9A-Fa-f]{1,16}", fullmatch=True),
    st.from_regex(r"[0-9]{1,6}(\.[0-9]{0,6})?", fullmatch=True),
)


def parts(part_target_us: int) -> st.SearchStrategy[tuple[PartEntry, ...]]:
    part = st.builds(
        PartEntry,
        uri=quoted,
        duration_us=st.integers(1, part_target_us),
        independent=st.booleans(),
        gap=st.booleans(),
    )
    return st.lists(part, max_size=3).map(tuple)


@st.composite
def date_ranges(draw: st.DrawFn) -> tuple[DateRange, ...]:
    ids = draw(st.lists(quoted, max_size=3, unique=True))
    out = []
    for id_ in ids:
        start = draw(dates)
        end_on_next = draw(st.booleans())
        class_name = draw(quoted) if end_on_next else draw(st.none() | quoted)
        end = dur = None
        if not end_on_next:
            bounds = draw(st.sampled_from(["open", "duration", "end", "both"]))
            if bounds == "duration":
                dur = draw(st.integers(0, 10**12))
            elif bounds == "end":
                end = draw(st.integers(start, MAX_DATE_MS))
            elif bounds == "both":  # END-DATE = START-DATE + DURATION, at ms precision
                dur_ms = draw(st.integers(0, min(10**9, MAX_DATE_MS - start)))
                dur, end = dur_ms * 1000, start + dur_ms
        names = draw(st.lists(client_names, max_size=2, unique=True))
        out.append(
            DateRange(
                id=id_,
                start_date_ms=start,
                class_name=class_name,
                end_date_ms=end,
                duration_us=dur,
                planned_duration_us=draw(st.none() | st.integers(0, 10**12)),
                end_on_next=end_on_next,
                client_attributes=tuple((n, draw(client_values)) for n in names),
            )
        )
    return tuple(out)


@st.composite
def media_playlists(draw: st.DrawFn) -> MediaPlaylist:
    td = draw(st.integers(1, 12))
    part_target = draw(st.none() | st.integers(1, td * SECOND))
    seg_parts = parts(part_target) if part_target is not None else st.just(())
    segments = []
    map_in_force = None
    for _ in range(draw(st.integers(0, 6))):
        map_uri = draw(st.none() | st.sampled_from(["init-a.mp4", "init-b.mp4", "i,n=it.mp4"]))
        if map_uri == map_in_force:
            map_uri = None  # the renderer writes EXT-X-MAP only where it changes
        map_in_force = map_uri or map_in_force
        segments.append(
            SegmentEntry(
                uri=draw(uri_line),
                duration_us=draw(st.integers(1, td * SECOND + SECOND // 2 - 1)),
                program_date_time_ms=draw(st.none() | dates),
                discontinuity=draw(st.booleans()),
                gap=draw(st.booleans()),
                map_uri=map_uri,
                parts=draw(seg_parts),
                title=draw(title),
            )
        )
    ranges: tuple[DateRange, ...] = ()
    if segments and segments[0].program_date_time_ms is not None:
        ranges = draw(date_ranges())
    endlist = draw(st.booleans())
    skipped = 0 if endlist else draw(st.integers(0, 5))
    server_control = None
    if part_target is not None or skipped or draw(st.booleans()):
        server_control = ServerControl(
            can_block_reload=draw(st.booleans()),
            part_hold_back_us=None
            if part_target is None
            else draw(st.integers(3 * part_target, 3 * part_target + 10 * SECOND)),
            hold_back_us=draw(st.none() | st.integers(3 * td * SECOND, 40 * SECOND)),
            can_skip_until_us=draw(st.integers(6 * td * SECOND, 100 * SECOND))
            if skipped
            else draw(st.none() | st.integers(6 * td * SECOND, 100 * SECOND)),
        )
        if server_control == ServerControl():
            server_control = ServerControl(can_block_reload=True)
    report = st.builds(
        RenditionReport,
        uri=quoted,
        last_msn=st.integers(0, 2**40),
        last_part=st.none() | st.integers(0, 50),
    )
    hint = st.builds(PreloadHint, uri=quoted, type=st.sampled_from(["PART", "MAP"]))
    return MediaPlaylist(
        target_duration_s=td,
        media_sequence=draw(st.integers(0, 2**63)),
        segments=tuple(segments),
        version=draw(st.integers(9 if skipped else 6, 12)),
        discontinuity_sequence=draw(st.integers(0, 2**32)),
        playlist_type=draw(st.sampled_from([None, "EVENT", "VOD"])),
        independent_segments=draw(st.booleans()),
        part_target_us=part_target,
        server_control=server_control,
        skipped_segments=skipped,
        preload_hints=() if endlist else tuple(draw(st.lists(hint, max_size=2))),
        rendition_reports=tuple(draw(st.lists(report, max_size=2))),
        endlist=endlist,
        pending_parts=draw(seg_parts),
        date_ranges=ranges,
    )


@st.composite
def multivariant_playlists(draw: st.DrawFn) -> MultivariantPlaylist:
    media = []
    seen: set[tuple[str, str, str]] = set()
    defaults: set[tuple[str, str]] = set()
    for _ in range(draw(st.integers(0, 4))):
        kind: Literal["AUDIO", "VIDEO", "SUBTITLES"] = draw(
            st.sampled_from(["AUDIO", "VIDEO", "SUBTITLES"])
        )
        group = draw(st.sampled_from(["aud", "a,2", "subs"]))
        name = draw(quoted)
        if (kind, group, name) in seen:
            continue
        seen.add((kind, group, name))
        default = (kind, group) not in defaults and draw(st.booleans())
        if default:
            defaults.add((kind, group))
        uri = draw(quoted) if kind == "SUBTITLES" else draw(st.none() | quoted)
        media.append(
            MediaRendition(
                type=kind,
                group_id=group,
                name=name,
                uri=uri,
                default=default,
                autoselect=default or draw(st.booleans()),
                language=draw(st.none() | quoted),
                channels=draw(st.none() | quoted),
            )
        )
    audio_groups = sorted({m.group_id for m in media if m.type == "AUDIO"})
    variant = st.builds(
        Variant,
        uri=uri_line,
        bandwidth=st.integers(1, 10**10),
        average_bandwidth=st.none() | st.integers(1, 10**10),
        codecs=st.none() | quoted,
        resolution=st.none() | st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)),
        frame_rate=st.none() | st.integers(1, 10**6).map(lambda n: Fraction(n, 1000)),
        audio=st.none() | st.sampled_from(audio_groups) if audio_groups else st.none(),
        pathway_id=st.none() | pathway_ids,
        stable_variant_id=st.none() | stable_ids,
    )
    variants = tuple(draw(st.lists(variant, min_size=1, max_size=4)))
    steering = None
    if draw(st.booleans()):
        pathways = sorted({v.pathway_id or "." for v in variants})
        steering = ContentSteering(
            server_uri=draw(quoted), pathway_id=draw(st.none() | st.sampled_from(pathways))
        )
    return MultivariantPlaylist(
        variants=variants,
        media=tuple(media),
        version=draw(st.integers(1, 12)),
        independent_segments=draw(st.booleans()),
        content_steering=steering,
    )


@given(media_playlists())
def test_media_playlist_round_trips(pl: MediaPlaylist) -> None:
    """A player reading any playlist we write sees exactly the segments, parts and tags we meant."""
    validate_media_playlist(pl)
    text = render_media_playlist(pl)
    assert parse_media_playlist(text) == pl
    assert parse_media_playlist(text.replace("\n", "\r\n")) == pl


@given(multivariant_playlists())
def test_multivariant_playlist_round_trips(pl: MultivariantPlaylist) -> None:
    """A player reading any multivariant playlist we write sees exactly our variants and groups."""
    validate_multivariant_playlist(pl)
    assert parse_multivariant_playlist(render_multivariant_playlist(pl)) == pl
