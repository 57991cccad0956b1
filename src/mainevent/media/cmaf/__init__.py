"""Sans-IO CMAF packager: parse the encoder's fragmented MP4, cut epoch-locked parts and segments.

`Cutter` is the entry point; the box, init and fragment functions are exported for tools and
tests that inspect or build CMAF bytes.
"""

from mainevent.media.cmaf.boxes import (
    Box,
    BoxStreamReader,
    children,
    find_box,
    find_boxes,
    iter_boxes,
)
from mainevent.media.cmaf.cutter import Cutter
from mainevent.media.cmaf.errors import CmafError, MalformedBox, UnsupportedMedia, ValidationError
from mainevent.media.cmaf.fragment import (
    SAMPLE_IS_NON_SYNC,
    parse_fragment,
    read_base_dts,
    write_fragment,
)
from mainevent.media.cmaf.init import (
    parse_audio_specific_config,
    parse_init,
    parse_track_defaults,
)
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
    TrackInfo,
    TrackKind,
    TrackTiming,
)

__all__ = [
    "SAMPLE_IS_NON_SYNC",
    "Box",
    "BoxStreamReader",
    "CmafError",
    "Cutter",
    "CutterEvent",
    "CutterStatistics",
    "InitReady",
    "InitSection",
    "MalformedBox",
    "Part",
    "PartReady",
    "Sample",
    "Segment",
    "SegmentReady",
    "SegmentRejected",
    "StreamFailed",
    "TrackDefaults",
    "TrackInfo",
    "TrackKind",
    "TrackTiming",
    "UnsupportedMedia",
    "ValidationError",
    "children",
    "find_box",
    "find_boxes",
    "iter_boxes",
    "parse_audio_specific_config",
    "parse_fragment",
    "parse_init",
    "parse_track_defaults",
    "read_base_dts",
    "write_fragment",
]
