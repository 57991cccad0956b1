"""Parsers of HLS playlist text into our playlist values.

Strict about the syntax of every tag we emit (a malformed one raises `PlaylistError` with its
line number), tolerant of what we do not emit: unknown tags, unknown attributes and comments
are ignored, as rfc8216bis asks of clients. Parsing checks syntax and structure only; the
rules of SPEC §1 are checked by `validate_*` in `hls.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, cast

from mainevent.media.manifest._syntax import Attributes, parse_date, parse_integer, parse_us
from mainevent.media.manifest.errors import PlaylistError
from mainevent.media.manifest.model import (
    ContentSteering,
    DateRange,
    MediaPlaylist,
    MediaRendition,
    MultivariantPlaylist,
    PartEntry,
    PlaylistType,
    PreloadHint,
    RenditionReport,
    SegmentEntry,
    ServerControl,
    Variant,
)

# Tags that only make sense in the other kind of playlist: seeing one means the caller
# handed us the wrong playlist, which rfc8216bis says must fail to parse.
_MEDIA_ONLY = frozenset(
    {
        "EXTINF", "EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE", "EXT-X-DISCONTINUITY-SEQUENCE",
        "EXT-X-ENDLIST", "EXT-X-PLAYLIST-TYPE", "EXT-X-I-FRAMES-ONLY", "EXT-X-PART",
        "EXT-X-PART-INF", "EXT-X-SERVER-CONTROL", "EXT-X-SKIP", "EXT-X-PRELOAD-HINT",
        "EXT-X-RENDITION-REPORT", "EXT-X-MAP", "EXT-X-BYTERANGE", "EXT-X-DISCONTINUITY",
        "EXT-X-PROGRAM-DATE-TIME", "EXT-X-GAP", "EXT-X-KEY", "EXT-X-BITRATE", "EXT-X-DATERANGE",
    }
)  # fmt: skip
_MULTIVARIANT_ONLY = frozenset(
    {
        "EXT-X-STREAM-INF", "EXT-X-MEDIA", "EXT-X-I-FRAME-STREAM-INF", "EXT-X-SESSION-DATA",
        "EXT-X-SESSION-KEY", "EXT-X-CONTENT-STEERING",
    }
)  # fmt: skip
_ONCE = frozenset(
    {
        "EXT-X-VERSION", "EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE",
        "EXT-X-DISCONTINUITY-SEQUENCE", "EXT-X-PLAYLIST-TYPE", "EXT-X-PART-INF",
        "EXT-X-SERVER-CONTROL", "EXT-X-SKIP", "EXT-X-INDEPENDENT-SEGMENTS", "EXT-X-ENDLIST",
        "EXT-X-CONTENT-STEERING", "EXT-X-START",
    }
)  # fmt: skip
_BEFORE_SEGMENTS = frozenset({"EXT-X-MEDIA-SEQUENCE", "EXT-X-DISCONTINUITY-SEQUENCE", "EXT-X-SKIP"})
_NEEDS_VALUE = frozenset(
    {
        "EXT-X-VERSION", "EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE",
        "EXT-X-DISCONTINUITY-SEQUENCE", "EXT-X-PLAYLIST-TYPE", "EXT-X-PART-INF",
        "EXT-X-SERVER-CONTROL", "EXT-X-SKIP", "EXTINF", "EXT-X-PROGRAM-DATE-TIME", "EXT-X-MAP",
        "EXT-X-PART", "EXT-X-PRELOAD-HINT", "EXT-X-RENDITION-REPORT", "EXT-X-DATERANGE",
        "EXT-X-STREAM-INF", "EXT-X-MEDIA", "EXT-X-CONTENT-STEERING", "EXT-X-START",
    }
)  # fmt: skip
_NO_VALUE = frozenset(
    {"EXT-X-INDEPENDENT-SEGMENTS", "EXT-X-ENDLIST", "EXT-X-DISCONTINUITY", "EXT-X-GAP"}
)

# (line number, tag name, value after ':') for tags, (line number, None, line) for URI lines.
_Line = tuple[int, str | None, str | None]


def _lines(text: str, wrong_kind: frozenset[str], kind: str) -> Iterator[_Line]:
    lines = text.split("\n")
    if lines[0].removesuffix("\r") != "#EXTM3U":
        raise PlaylistError("a playlist must start with #EXTM3U", 1)
    seen: set[str] = set()
    for number, raw in enumerate(lines[1:], 2):
        line = raw.removesuffix("\r")
        if not line or line.isspace():
            continue
        if not line.startswith("#"):
            yield number, None, line
            continue
        if not line.startswith("#EXT"):
            continue  # a comment
        colon = line.find(":")
        tag, value = (line[1:], None) if colon < 0 else (line[1:colon], line[colon + 1 :])
        if tag in wrong_kind:
            raise PlaylistError(f"{tag} cannot appear in a {kind} playlist", number)
        if tag in _ONCE:
            if tag in seen:
                raise PlaylistError(f"{tag} appears more than once", number)
            seen.add(tag)
        if tag in _NO_VALUE:
            if value is not None:
                raise PlaylistError(f"{tag} takes no value", number)
        elif value is None and tag in _NEEDS_VALUE:
            raise PlaylistError(f"{tag} needs a value after ':'", number)
        yield number, tag, value


@dataclass(slots=True)
class _Pending:
    """Tags seen since the last URI line: they belong to the next segment."""

    first_line: int | None = None
    extinf: tuple[int, str, int] | None = None  # (duration µs, title, line)
    discontinuity: bool = False
    pdt_ms: int | None = None
    gap: bool = False
    map_uri: str | None = None
    parts: list[PartEntry] = field(default_factory=list)


class _MediaParser:
    def __init__(self) -> None:
        self.version = 1
        self.target: int | None = None
        self.media_sequence = 0
        self.discontinuity_sequence = 0
        self.playlist_type: PlaylistType | None = None
        self.independent = False
        self.endlist = False
        self.part_target_us: int | None = None
        self.server_control: ServerControl | None = None
        self.skipped = 0
        self.segments: list[SegmentEntry] = []
        self.pending = _Pending()
        self.hints: list[PreloadHint] = []
        self.reports: list[RenditionReport] = []
        self.date_ranges: list[DateRange] = []
        self.start_offset_us: int | None = None
        self.start_precise = False
        self.handlers: dict[str, Callable[[str | None, int], None]] = {
            "EXT-X-VERSION": self._version,
            "EXT-X-TARGETDURATION": self._target,
            "EXT-X-MEDIA-SEQUENCE": self._media_sequence,
            "EXT-X-DISCONTINUITY-SEQUENCE": self._discontinuity_sequence,
            "EXT-X-PLAYLIST-TYPE": self._playlist_type,
            "EXT-X-INDEPENDENT-SEGMENTS": self._independent,
            "EXT-X-ENDLIST": self._endlist,
            "EXT-X-PART-INF": self._part_inf,
            "EXT-X-SERVER-CONTROL": self._server_control,
            "EXT-X-SKIP": self._skip,
            "EXTINF": self._extinf,
            "EXT-X-DISCONTINUITY": self._discontinuity,
            "EXT-X-PROGRAM-DATE-TIME": self._pdt,
            "EXT-X-GAP": self._gap,
            "EXT-X-MAP": self._map,
            "EXT-X-PART": self._part,
            "EXT-X-PRELOAD-HINT": self._preload_hint,
            "EXT-X-RENDITION-REPORT": self._rendition_report,
            "EXT-X-DATERANGE": self._date_range,
            "EXT-X-START": self._start,
        }

    def parse(self, text: str) -> MediaPlaylist:
        for number, tag, value in _lines(text, _MULTIVARIANT_ONLY, "media"):
            if tag is None:
                self._uri(cast(str, value), number)
                continue
            if tag in _BEFORE_SEGMENTS and (self.segments or self.pending.first_line is not None):
                raise PlaylistError(f"{tag} must appear before the first segment", number)
            handler = self.handlers.get(tag)
            if handler is not None:
                handler(value, number)
        p = self.pending
        if p.extinf is not None:
            raise PlaylistError("EXTINF without a URI line after it", p.extinf[2])
        if p.first_line is not None and not p.parts:
            raise PlaylistError(
                "segment tags after the last segment apply to no segment", p.first_line
            )
        if self.target is None:
            raise PlaylistError("missing EXT-X-TARGETDURATION")
        return MediaPlaylist(
            target_duration_s=self.target,
            media_sequence=self.media_sequence,
            segments=tuple(self.segments),
            version=self.version,
            discontinuity_sequence=self.discontinuity_sequence,
            playlist_type=self.playlist_type,
            independent_segments=self.independent,
            part_target_us=self.part_target_us,
            server_control=self.server_control,
            skipped_segments=self.skipped,
            preload_hints=tuple(self.hints),
            rendition_reports=tuple(self.reports),
            endlist=self.endlist,
            pending_parts=tuple(p.parts),
            date_ranges=tuple(self.date_ranges),
            start_offset_us=self.start_offset_us,
            start_precise=self.start_precise,
        )

    # -- playlist tags ----------------------------------------------------------------

    def _version(self, value: str | None, line: int) -> None:
        self.version = parse_integer(cast(str, value), "EXT-X-VERSION", line)

    def _target(self, value: str | None, line: int) -> None:
        self.target = parse_integer(cast(str, value), "EXT-X-TARGETDURATION", line)

    def _media_sequence(self, value: str | None, line: int) -> None:
        self.media_sequence = parse_integer(cast(str, value), "EXT-X-MEDIA-SEQUENCE", line)

    def _discontinuity_sequence(self, value: str | None, line: int) -> None:
        self.discontinuity_sequence = parse_integer(
            cast(str, value), "EXT-X-DISCONTINUITY-SEQUENCE", line
        )

    def _independent(self, value: str | None, line: int) -> None:
        self.independent = True

    def _endlist(self, value: str | None, line: int) -> None:
        self.endlist = True

    def _playlist_type(self, value: str | None, line: int) -> None:
        if value == "EVENT":
            self.playlist_type = "EVENT"
        elif value == "VOD":
            self.playlist_type = "VOD"
        else:
            raise PlaylistError(f"EXT-X-PLAYLIST-TYPE must be EVENT or VOD, got {value!r}", line)

    def _part_inf(self, value: str | None, line: int) -> None:
        attrs = Attributes(cast(str, value), "EXT-X-PART-INF", line)
        self.part_target_us = attrs.required_us("PART-TARGET")

    def _server_control(self, value: str | None, line: int) -> None:
        attrs = Attributes(cast(str, value), "EXT-X-SERVER-CONTROL", line)
        self.server_control = ServerControl(
            can_block_reload=attrs.yes("CAN-BLOCK-RELOAD"),
            part_hold_back_us=attrs.us("PART-HOLD-BACK"),
            hold_back_us=attrs.us("HOLD-BACK"),
            can_skip_until_us=attrs.us("CAN-SKIP-UNTIL"),
        )

    def _start(self, value: str | None, line: int) -> None:
        attrs = Attributes(cast(str, value), "EXT-X-START", line)
        self.start_offset_us = attrs.required_signed_us("TIME-OFFSET")
        self.start_precise = attrs.yes("PRECISE")

    def _skip(self, value: str | None, line: int) -> None:
        attrs = Attributes(cast(str, value), "EXT-X-SKIP", line)
        self.skipped = attrs.required_integer("SKIPPED-SEGMENTS")

    def _preload_hint(self, value: str | None, line: int) -> None:
        attrs = Attributes(cast(str, value), "EXT-X-PRELOAD-HINT", line)
        kind = attrs.enum("TYPE", ("PART", "MAP"))
        if kind is None:
            raise PlaylistError("EXT-X-PRELOAD-HINT: missing required attribute TYPE", line)
        hint_type = cast(Literal["PART", "MAP"], kind)
        self.hints.append(PreloadHint(uri=attrs.required_quoted("URI"), type=hint_type))

    def _rendition_report(self, value: str | None, line: int) -> None:
        attrs = Attributes(cast(str, value), "EXT-X-RENDITION-REPORT", line)
        self.reports.append(
            RenditionReport(
                uri=attrs.required_quoted("URI"),
                last_msn=attrs.required_integer("LAST-MSN"),
                last_part=attrs.integer("LAST-PART"),
            )
        )

    def _date_range(self, value: str | None, line: int) -> None:
        attrs = Attributes(cast(str, value), "EXT-X-DATERANGE", line)
        start = attrs.date("START-DATE")
        if start is None:
            raise PlaylistError("EXT-X-DATERANGE: missing required attribute START-DATE", line)
        self.date_ranges.append(
            DateRange(
                id=attrs.required_quoted("ID"),
                start_date_ms=start,
                class_name=attrs.quoted("CLASS"),
                end_date_ms=attrs.date("END-DATE"),
                duration_us=attrs.us("DURATION"),
                planned_duration_us=attrs.us("PLANNED-DURATION"),
                end_on_next=attrs.enum("END-ON-NEXT", ("YES",)) == "YES",
                client_attributes=attrs.client_attributes(),
            )
        )

    # -- segment tags -----------------------------------------------------------------

    def _touch(self, line: int) -> _Pending:
        if self.pending.first_line is None:
            self.pending.first_line = line
        return self.pending

    def _extinf(self, value: str | None, line: int) -> None:
        pending = self._touch(line)
        if pending.extinf is not None:
            raise PlaylistError("EXTINF without a URI line after it", pending.extinf[2])
        duration, comma, title = cast(str, value).partition(",")
        if not comma:
            raise PlaylistError(f"EXTINF must be '<duration>,[<title>]', got {value!r}", line)
        pending.extinf = (parse_us(duration, "EXTINF duration", line), title, line)

    def _discontinuity(self, value: str | None, line: int) -> None:
        self._touch(line).discontinuity = True

    def _pdt(self, value: str | None, line: int) -> None:
        ms = parse_date(cast(str, value), "EXT-X-PROGRAM-DATE-TIME", line)
        self._touch(line).pdt_ms = ms

    def _gap(self, value: str | None, line: int) -> None:
        self._touch(line).gap = True

    def _map(self, value: str | None, line: int) -> None:
        uri = Attributes(cast(str, value), "EXT-X-MAP", line).required_quoted("URI")
        self._touch(line).map_uri = uri

    def _part(self, value: str | None, line: int) -> None:
        attrs = Attributes(cast(str, value), "EXT-X-PART", line)
        part = PartEntry(
            uri=attrs.required_quoted("URI"),
            duration_us=attrs.required_us("DURATION"),
            independent=attrs.yes("INDEPENDENT"),
            gap=attrs.yes("GAP"),
        )
        self._touch(line).parts.append(part)

    def _uri(self, uri: str, line: int) -> None:
        p = self.pending
        if p.extinf is None:
            raise PlaylistError(f"URI line {uri!r} has no EXTINF before it", line)
        duration_us, title, _ = p.extinf
        self.segments.append(
            SegmentEntry(
                uri=uri,
                duration_us=duration_us,
                program_date_time_ms=p.pdt_ms,
                discontinuity=p.discontinuity,
                gap=p.gap,
                map_uri=p.map_uri,
                parts=tuple(p.parts),
                title=title,
            )
        )
        self.pending = _Pending()


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse a media playlist; `PlaylistError` (with the line number) if it is malformed."""
    return _MediaParser().parse(text)


def parse_multivariant_playlist(text: str) -> MultivariantPlaylist:
    """Parse a multivariant playlist; `PlaylistError` (with the line number) if it is malformed."""
    version = 1
    independent = False
    steering: ContentSteering | None = None
    media: list[MediaRendition] = []
    variants: list[Variant] = []
    stream_inf: Attributes | None = None
    for number, tag, value in _lines(text, _MEDIA_ONLY, "multivariant"):
        if tag is None:
            if stream_inf is None:
                raise PlaylistError(f"URI line {value!r} has no EXT-X-STREAM-INF before it", number)
            variants.append(_variant(stream_inf, cast(str, value)))
            stream_inf = None
        elif tag == "EXT-X-STREAM-INF":
            if stream_inf is not None:
                raise PlaylistError("EXT-X-STREAM-INF without a URI line after it", stream_inf.line)
            stream_inf = Attributes(cast(str, value), tag, number)
        elif tag == "EXT-X-MEDIA":
            rendition = _media(Attributes(cast(str, value), tag, number))
            if rendition is not None:
                media.append(rendition)
        elif tag == "EXT-X-VERSION":
            version = parse_integer(cast(str, value), tag, number)
        elif tag == "EXT-X-INDEPENDENT-SEGMENTS":
            independent = True
        elif tag == "EXT-X-CONTENT-STEERING":
            attrs = Attributes(cast(str, value), tag, number)
            steering = ContentSteering(
                attrs.required_quoted("SERVER-URI"), attrs.quoted("PATHWAY-ID")
            )
    if stream_inf is not None:
        raise PlaylistError("EXT-X-STREAM-INF without a URI line after it", stream_inf.line)
    return MultivariantPlaylist(
        variants=tuple(variants),
        media=tuple(media),
        version=version,
        independent_segments=independent,
        content_steering=steering,
    )


def _variant(attrs: Attributes, uri: str) -> Variant:
    bandwidth = attrs.integer("BANDWIDTH")
    if bandwidth is None:
        raise PlaylistError("EXT-X-STREAM-INF: missing required attribute BANDWIDTH", attrs.line)
    return Variant(
        uri=uri,
        bandwidth=bandwidth,
        average_bandwidth=attrs.integer("AVERAGE-BANDWIDTH"),
        codecs=attrs.quoted("CODECS"),
        resolution=attrs.resolution("RESOLUTION"),
        frame_rate=attrs.frame_rate("FRAME-RATE"),
        audio=attrs.quoted("AUDIO"),
        pathway_id=attrs.quoted("PATHWAY-ID"),
        stable_variant_id=attrs.quoted("STABLE-VARIANT-ID"),
    )


def _media(attrs: Attributes) -> MediaRendition | None:
    kind = attrs.enum("TYPE", ("AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS"))
    if kind is None:
        raise PlaylistError("EXT-X-MEDIA: missing required attribute TYPE", attrs.line)
    group_id, name = attrs.required_quoted("GROUP-ID"), attrs.required_quoted("NAME")
    if kind == "CLOSED-CAPTIONS":
        return None  # carried in the video stream; nothing for us to fetch
    return MediaRendition(
        type=cast(Literal["AUDIO", "VIDEO", "SUBTITLES"], kind),
        group_id=group_id,
        name=name,
        uri=attrs.quoted("URI"),
        default=attrs.yes("DEFAULT"),
        autoselect=attrs.yes("AUTOSELECT"),
        language=attrs.quoted("LANGUAGE"),
        channels=attrs.quoted("CHANNELS"),
    )
