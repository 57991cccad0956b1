"""Live DASH MPD (ISO/IEC 23009-1, DASH-IF IOP live profile), sans-IO, over the HLS CMAF media.

The MPD points at the same init sections and segments as the HLS playlists: `$Number$` is the
epoch media sequence number, so number n covers epoch time [n·D, (n+1)·D). The timeline is
anchored at `availability_start_ms` (a multiple of D): `startNumber` = anchor / D and
`presentationTimeOffset` = anchor in each track's timescale, which is exactly the epoch `tfdt`
the packager writes. Times are integer milliseconds; no float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from mainevent.media.manifest._syntax import format_date
from mainevent.media.manifest.errors import ManifestError
from mainevent.media.manifest.pathways import DashSteering

__all__ = ["DashRepresentation", "MpdInfo", "render_mpd", "suggested_presentation_delay_ms"]

UTC_HTTP_ISO = "urn:mpeg:dash:utc:http-iso:2014"


@dataclass(frozen=True, slots=True)
class DashRepresentation:
    """One CMAF track as a DASH Representation (one per AdaptationSet kind)."""

    id: str
    kind: Literal["video", "audio"]
    codecs: str
    bandwidth: int
    timescale: int
    init: str  # URL relative to the MPD, e.g. "v720/init.mp4"
    width: int | None = None
    height: int | None = None
    frame_rate: int | None = None
    audio_sampling_rate: int | None = None


@dataclass(frozen=True, slots=True)
class MpdInfo:
    """Timing of a live MPD (all integer milliseconds)."""

    availability_start_ms: int
    publish_time_ms: int
    segment_duration_ms: int
    start_number: int
    time_shift_buffer_ms: int
    minimum_update_period_ms: int
    suggested_presentation_delay_ms: int
    min_buffer_ms: int
    utc_timing_url: str


def suggested_presentation_delay_ms(segment_duration_ms: int) -> int:
    """How far behind the live edge a DASH player should play: 2 × D, so DASH players sit
    where HLS players do (HOLD-BACK = 3 × target duration behind the newest listed segment).

    With `SegmentTemplate@duration` a segment is available once its capture has ended, so the
    newest available segment ends up to D before the wall clock. Shaka places its live edge
    at that segment's end (now − maxSegmentDuration) and plays `suggestedPresentationDelay`
    behind it: 2 × D there is 3 × D behind the wall clock, the HLS hold-back. dash.js plays
    the delay behind the wall clock itself, so 2 × D puts it ahead of the HLS players, still
    a whole segment behind the newest one published. 3 × D (before) put Shaka a segment behind
    every HLS player.
    """
    return 2 * segment_duration_ms


def _duration(ms: int) -> str:
    """xs:duration in seconds with millisecond precision, e.g. PT2S, PT1.5S."""
    whole, frac = divmod(ms, 1000)
    return f"PT{whole}S" if not frac else f"PT{whole}.{frac:03d}".rstrip("0") + "S"


def representation_lines(
    r: DashRepresentation,
    segment_duration_ms: int,
    *,
    start_number: int,
    start_ms: int,
    init: str | None = None,
) -> list[str]:
    """A `<Representation>` with its `SegmentTemplate`: `$Number$` from `start_number`, whose
    media starts at epoch `start_ms` (the `presentationTimeOffset`); `init` overrides `r.init`."""
    attrs = [
        f"id={quoteattr(r.id)}",
        f"codecs={quoteattr(r.codecs)}",
        f'bandwidth="{max(1, r.bandwidth)}"',
    ]
    if r.width and r.height:
        attrs.append(f'width="{r.width}" height="{r.height}"')
    if r.frame_rate:
        attrs.append(f'frameRate="{r.frame_rate}"')
    if r.audio_sampling_rate:
        attrs.append(f'audioSamplingRate="{r.audio_sampling_rate}"')
    pto = start_ms * r.timescale // 1000
    return [
        f"      <Representation {' '.join(attrs)}>",
        f'        <SegmentTemplate timescale="{r.timescale}" '
        f'duration="{segment_duration_ms * r.timescale // 1000}" startNumber="{start_number}" '
        f'presentationTimeOffset="{pto}" '
        f"initialization={quoteattr(init or r.init)} media={quoteattr(r.id + '/$Number$.m4s')}/>",
        "      </Representation>",
    ]


def render_mpd(
    info: MpdInfo,
    representations: list[DashRepresentation],
    steering: DashSteering | None = None,
) -> str:
    """The MPD text; `ManifestError` if the timing does not line up with the epoch grid."""
    d = info.segment_duration_ms
    if d <= 0 or info.availability_start_ms % d:
        raise ManifestError(
            f"availabilityStartTime ({info.availability_start_ms} ms) must be a multiple of the "
            f"segment duration ({d} ms) so $Number$ stays the epoch segment number"
        )
    if info.start_number * d != info.availability_start_ms:
        raise ManifestError("startNumber must be availabilityStartTime / segment duration")
    if not representations:
        raise ManifestError("an MPD needs at least one representation")
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" '
        'profiles="urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019" '
        'type="dynamic" '
        f'availabilityStartTime="{format_date(info.availability_start_ms)}" '
        f'publishTime="{format_date(info.publish_time_ms)}" '
        f'minimumUpdatePeriod="{_duration(info.minimum_update_period_ms)}" '
        f'timeShiftBufferDepth="{_duration(info.time_shift_buffer_ms)}" '
        f'suggestedPresentationDelay="{_duration(info.suggested_presentation_delay_ms)}" '
        f'maxSegmentDuration="{_duration(d)}" '
        f'minBufferTime="{_duration(info.min_buffer_ms)}">',
    ]
    if steering is not None:
        # One BaseURL per CDN (relative SegmentTemplate URLs resolve against it, token
        # included) and the DASH-IF ContentSteering element naming the steering server.
        out.extend(
            f"  <BaseURL serviceLocation={quoteattr(loc)}>{escape(url)}</BaseURL>"
            for loc, url in steering.base_urls
        )
        out.append(
            f"  <ContentSteering defaultServiceLocation={quoteattr(steering.default_location)} "
            f'queryBeforeStart="true">{escape(steering.server_url)}</ContentSteering>'
        )
    out.append('  <Period id="0" start="PT0S">')
    for set_id, kind in enumerate(("video", "audio")):
        reps = sorted((r for r in representations if r.kind == kind), key=lambda r: -r.bandwidth)
        if not reps:
            continue
        out.append(
            f'    <AdaptationSet id="{set_id}" contentType="{kind}" mimeType="{kind}/mp4" '
            'segmentAlignment="true" startWithSAP="1">'
        )
        for r in reps:
            out.extend(
                representation_lines(
                    r, d, start_number=info.start_number, start_ms=info.availability_start_ms
                )
            )
        out.append("    </AdaptationSet>")
    out.append("  </Period>")
    out.append(
        f'  <UTCTiming schemeIdUri="{UTC_HTTP_ISO}" value={quoteattr(info.utc_timing_url)}/>'
    )
    out.append("</MPD>")
    out.append("")
    return "\n".join(out)
