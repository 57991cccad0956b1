"""The slate: a pre-encoded "we will be right back" segment at every rung, for total input loss.

Encoded once at startup through the event's own ladder (same codecs, sizes, segment duration),
packaged by the same Cutter, then re-stamped for whichever segment number it stands in for:
only the `tfdt` of each fragment moves, so a slate segment `n` covers exactly the capture
interval `[n·D, (n+1)·D)` like the live segment it replaces.

AAC frames (1024 samples) do not divide every segment duration: segment `n`'s first audio
frame depends on `n` modulo a short period (4 for 2 s segments at 48 kHz). The slate is encoded
for one whole period, and segment `n` reuses the template of `n mod period`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import struct
from dataclasses import dataclass, replace
from fractions import Fraction

from mainevent.media.cmaf import (
    Cutter,
    InitReady,
    InitSection,
    Segment,
    SegmentReady,
)
from mainevent.media.cmaf.boxes import find_boxes
from mainevent.media.encode.ffmpeg import (
    AAC_ENCODER_DELAY,
    AUDIO_SAMPLE_RATE,
    LadderSpec,
    slate_command,
    transcode_command,
)
from mainevent.media.encode.process import die_with_parent

log = logging.getLogger(__name__)

AAC_FRAME = 1024
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class SlateError(Exception):
    """The slate could not be encoded or re-stamped."""


def slate_period(segment_duration_ms: int) -> int:
    """Segments after which AAC frame boundaries line up with segment boundaries again."""
    samples = segment_duration_ms * AUDIO_SAMPLE_RATE // 1000
    return AAC_FRAME // math.gcd(samples, AAC_FRAME)


def restamp(data: bytes, shift: int) -> bytes:
    """`data` (moof + mdat fragments) with every `tfdt` moved by `shift` ticks."""
    out = bytearray(data)
    for tfdt in find_boxes(out, "moof/traf/tfdt"):
        pos = tfdt.payload_offset
        version = out[pos]
        if version == 1:
            (base,) = _U64.unpack_from(out, pos + 4)
            _U64.pack_into(out, pos + 4, base + shift)
        else:
            (base,) = _U32.unpack_from(out, pos + 4)
            if not 0 <= base + shift < 1 << 32:
                raise SlateError(f"tfdt {base + shift} does not fit a version-0 tfdt")
            _U32.pack_into(out, pos + 4, base + shift)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class SlateRendition:
    """The slate of one rendition: its init section and one template per period phase."""

    init: InitSection
    templates: tuple[Segment, ...]  # templates[k] is segment k (msn k of the slate encode)
    segment_duration_ms: int

    def at(self, msn: int) -> tuple[Segment, list[bytes]]:
        """The slate as segment `msn` (epoch-stamped), and its parts' bytes in order."""
        period = len(self.templates)
        tpl = self.templates[msn % period]
        ticks = Fraction(self.segment_duration_ms * tpl.timescale, 1000)
        shift = int((msn - msn % period) * ticks)
        parts: list[bytes] = []
        pos = 0
        for p in tpl.parts:
            parts.append(restamp(tpl.data[pos : pos + len(p.data)], shift))
            pos += len(p.data)
        seg = replace(
            tpl,
            msn=msn,
            start=tpl.start + shift,
            parts=tuple(replace(p, msn=msn, start=p.start + shift, data=b"") for p in tpl.parts),
            data=b"".join(parts),
        )
        return seg, parts


async def encode_slate(ffmpeg: str, ladder: LadderSpec) -> dict[str, SlateRendition]:
    """Encode the slate through `ladder` (one period of segments) and package it."""
    # Same encoder settings as the live ladder (same codec configuration, so DASH players, which
    # keep one init per representation, can decode it), at the lowest CPU priority so it never
    # starves the live pipelines starting at the same moment (their SRT input would drop).
    seg_ms = ladder.segment_duration_ms
    period = slate_period(seg_ms)
    seconds = period * seg_ms / 1000 + 1.0
    width = max(r.width for r in ladder.rungs)
    height = max(r.height for r in ladder.rungs)
    ids = [r.id for r in ladder.rungs] + [ladder.audio_id]
    pipes = {rid: os.pipe() for rid in ids}
    src_r, src_w = os.pipe()
    try:
        src = await asyncio.create_subprocess_exec(
            *slate_command(ffmpeg, width, height, ladder.fps, seconds),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=src_w,
            preexec_fn=_background,
        )
        enc = await asyncio.create_subprocess_exec(
            *transcode_command(ffmpeg, ladder, Fraction(0), {k: w for k, (_, w) in pipes.items()}),
            stdin=src_r,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=tuple(w for _, w in pipes.values()),
            preexec_fn=_background,
        )
    finally:
        os.close(src_r)
        os.close(src_w)
        for _, w in pipes.values():
            os.close(w)
    try:
        results = await asyncio.gather(
            *(
                _package(
                    rid,
                    pipes[rid][0],
                    Cutter(
                        rendition=rid,
                        segment_duration_ms=seg_ms,
                        part_target_ms=ladder.part_target_ms,
                        origin_epoch_ms=0,
                        encoder_delay=AAC_ENCODER_DELAY if rid == ladder.audio_id else Fraction(0),
                        min_msn=0,
                    ),
                    period,
                )
                for rid in ids
            )
        )
        assert enc.stderr is not None
        errors = (await enc.stderr.read()).decode(errors="replace").strip()
        if await enc.wait() != 0 or await src.wait() != 0:
            raise SlateError(f"slate encode failed: {errors[-500:]}")
    finally:
        for proc in (src, enc):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    slate = {rid: SlateRendition(init, templates, seg_ms) for rid, init, templates in results}
    log.info("slate encoded: %d renditions × %d segments of %d ms", len(slate), period, seg_ms)
    return slate


def _background() -> None:
    """preexec hook: die with the parent, at the lowest CPU priority."""
    die_with_parent()
    os.nice(19)


async def _package(
    rid: str, fd: int, cutter: Cutter, period: int
) -> tuple[str, InitSection, tuple[Segment, ...]]:
    loop = asyncio.get_running_loop()
    init: InitSection | None = None
    segments: dict[int, Segment] = {}
    with os.fdopen(fd, "rb", buffering=0) as f:
        while True:
            data = await loop.run_in_executor(None, f.read, 1 << 16)
            for ev in cutter.push(data) if data else cutter.finish():
                if isinstance(ev, InitReady):
                    init = ev.init
                elif isinstance(ev, SegmentReady):
                    segments[ev.segment.msn] = ev.segment
            if not data:
                break
    missing = [k for k in range(period) if k not in segments]
    if init is None or missing:
        raise SlateError(f"slate {rid}: no init section or segments {missing} missing")
    return rid, init, tuple(segments[k] for k in range(period))
