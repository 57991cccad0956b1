"""HLS manifests, sans-IO: playlist values, their text (render/parse), and the live window."""

from mainevent.media.manifest.errors import ManifestError, PlaylistError, WindowError
from mainevent.media.manifest.hls import (
    parse_media_playlist,
    parse_multivariant_playlist,
    render_media_playlist,
    render_multivariant_playlist,
    validate_media_playlist,
    validate_multivariant_playlist,
)
from mainevent.media.manifest.model import (
    ContentSteering,
    DateRange,
    MediaPlaylist,
    MediaRendition,
    MultivariantPlaylist,
    PartEntry,
    PlaylistType,
    PreloadHint,
    PublishedPart,
    PublishedSegment,
    RenditionReport,
    SegmentEntry,
    ServerControl,
    Variant,
    WindowStats,
)
from mainevent.media.manifest.window import RenditionWindow

__all__ = [
    "ContentSteering",
    "DateRange",
    "ManifestError",
    "MediaPlaylist",
    "MediaRendition",
    "MultivariantPlaylist",
    "PartEntry",
    "PlaylistError",
    "PlaylistType",
    "PreloadHint",
    "PublishedPart",
    "PublishedSegment",
    "RenditionReport",
    "RenditionWindow",
    "SegmentEntry",
    "ServerControl",
    "Variant",
    "WindowError",
    "WindowStats",
    "parse_media_playlist",
    "parse_multivariant_playlist",
    "render_media_playlist",
    "render_multivariant_playlist",
    "validate_media_playlist",
    "validate_multivariant_playlist",
]
