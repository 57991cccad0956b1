"""Post-event static DASH MPD (ISO/IEC 23009-1 on-demand use of the live profile), sans-IO.

One Period per run of contiguous segments (a cut slate/gap run or an encoder restart starts a
new Period), back to back on the presentation timeline; inside a Period `$Number$` is still the
epoch MSN and `presentationTimeOffset` the run's epoch `tfdt`, so the live segments are listed
as they are stored, never rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from mainevent.media.manifest.dash import DashRepresentation
from mainevent.media.manifest.errors import ManifestError

__all__ = ["MpdRun", "render_vod_mpd"]


@dataclass(frozen=True, slots=True)
class MpdRun:
    """Segments `[first, first + count)`; `inits` maps each representation id to its init URL."""

    first: int
    count: int
    inits: Mapping[str, str]


def _duration(ms: int) -> str:
    whole, frac = divmod(ms, 1000)
    return f"PT{whole}S" if not frac else f"PT{whole}.{frac:03d}".rstrip("0") + "S"


def render_vod_mpd(
    runs: Sequence[MpdRun], representations: Sequence[DashRepresentation], segment_duration_ms: int
) -> str:
    """The static MPD text; `ManifestError` without runs or representations."""
    if not runs or not representations:
        raise ManifestError("a VOD MPD needs at least one run of segments and one representation")
    d = segment_duration_ms
    total_ms = sum(r.count for r in runs) * d
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" '
        'profiles="urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019" '
        f'type="static" mediaPresentationDuration="{_duration(total_ms)}" '
        f'maxSegmentDuration="{_duration(d)}" minBufferTime="{_duration(d)}">',
    ]
    start_ms = 0
    for n, run in enumerate(runs):
        out.append(
            f'  <Period id="{n}" start="{_duration(start_ms)}" duration="{_duration(run.count * d)}">'
        )
        for set_id, kind in enumerate(("video", "audio")):
            reps = sorted(
                (r for r in representations if r.kind == kind), key=lambda r: -r.bandwidth
            )
            if not reps:
                continue
            out.append(
                f'    <AdaptationSet id="{set_id}" contentType="{kind}" mimeType="{kind}/mp4" '
                'segmentAlignment="true" startWithSAP="1">'
            )
            for r in reps:
                init = run.inits.get(r.id)
                if init is None:
                    raise ManifestError(f"run at {run.first} names no init section for {r.id}")
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
                out.append(f"      <Representation {' '.join(attrs)}>")
                pto = run.first * d * r.timescale // 1000
                out.append(
                    f'        <SegmentTemplate timescale="{r.timescale}" '
                    f'duration="{d * r.timescale // 1000}" startNumber="{run.first}" '
                    f'presentationTimeOffset="{pto}" '
                    f"initialization={quoteattr(init)} media={quoteattr(r.id + '/$Number$.m4s')}/>"
                )
                out.append("      </Representation>")
            out.append("    </AdaptationSet>")
        out.append("  </Period>")
        start_ms += run.count * d
    out.append("</MPD>")
    out.append("")
    return "\n".join(out)
