"""Post-event static DASH MPD (ISO/IEC 23009-1 on-demand use of the live profile), sans-IO.

One Period per run of contiguous segments (a cut slate/gap run or an encoder restart starts a
new Period), back to back on the presentation timeline; inside a Period `$Number$` is still the
epoch MSN and `presentationTimeOffset` the run's epoch `tfdt`, so the live segments are listed
as they are stored, never rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mainevent.media.manifest.dash import DashRepresentation, _duration, representation_lines
from mainevent.media.manifest.errors import ManifestError

__all__ = ["MpdRun", "render_vod_mpd"]


@dataclass(frozen=True, slots=True)
class MpdRun:
    """Segments `[first, first + count)`; `inits` maps each representation id to its init URL."""

    first: int
    count: int
    inits: Mapping[str, str]


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
                out.extend(
                    representation_lines(
                        r, d, start_number=run.first, start_ms=run.first * d, init=init
                    )
                )
            out.append("    </AdaptationSet>")
        out.append("  </Period>")
        start_ms += run.count * d
    out.append("</MPD>")
    out.append("")
    return "\n".join(out)
