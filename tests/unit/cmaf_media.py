"""Test media for the CMAF packager: real ffmpeg output, and streams rebuilt from its samples."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg

from mainevent.media.cmaf import (
    SAMPLE_IS_NON_SYNC,
    Cutter,
    CutterEvent,
    PartReady,
    Sample,
    Segment,
    SegmentReady,
    TrackDefaults,
    iter_boxes,
    parse_fragment,
    parse_track_defaults,
    write_fragment,
)

SEGMENT_MS = 2000
PART_MS = 500
ORIGIN_MS = 1_700_000_000_000  # an epoch segment boundary: 850_000_000 × 2 s
FIRST_MSN = ORIGIN_MS // SEGMENT_MS
AAC_DELAY = Fraction(1024, 48000)
SECONDS = 6
NON_SYNC_FLAGS = 0x01010000  # depends on others, not a sync sample


class EncodedMedia:
    """One ffmpeg run's two outputs, as the transcoder writes them (fragmented MP4 streams)."""

    __slots__ = ("audio", "video")

    def __init__(self, video: bytes, audio: bytes) -> None:
        self.video, self.audio = video, audio

    def __repr__(self) -> str:
        return f"EncodedMedia(video=<{len(self.video)} bytes>, audio=<{len(self.audio)} bytes>)"


def encode_media(directory: Path) -> EncodedMedia:
    """Encode 6 s of test pattern and tone the way the live transcoder does (about 0.2 s)."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    frag = ["-movflags", "frag_keyframe+empty_moov+default_base_moof", "-frag_duration", "500000"]
    video, audio = directory / "v.mp4", directory / "a.mp4"
    cmd = [
        ffmpeg,
        *("-hide_banner", "-loglevel", "error", "-nostdin"),
        *("-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=30:duration={SECONDS}"),
        *("-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate=48000:duration={SECONDS}"),
        *("-map", "0:v", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"),
        *("-profile:v", "high", "-level:v", "3.1", "-x264-params", "scenecut=0"),  # avc1.64001f
        *("-g", "60", "-keyint_min", "60", "-b:v", "300k", "-video_track_timescale", "90000"),
        *frag,
        *("-f", "mp4", str(video)),
        *("-map", "1:a", "-c:a", "aac", "-b:a", "128k", *frag, "-f", "mp4", str(audio)),
    ]
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    return EncodedMedia(video.read_bytes(), audio.read_bytes())


def split_stream(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(init section, [(moof, mdat)]) of an ffmpeg fragmented MP4 stream."""
    boxes = [b for b in iter_boxes(data) if b.type != "mfra"]
    assert [b.type for b in boxes[:2]] == ["ftyp", "moov"]
    init = data[: boxes[1].end]
    pairs = [
        (data[m.offset : m.end], data[d.offset : d.end])
        for m, d in zip(boxes[2::2], boxes[3::2], strict=True)
    ]
    return init, pairs


def stream_samples(data: bytes) -> tuple[bytes, TrackDefaults, list[Sample]]:
    """(init, trex defaults, every sample in decode order) of an encoder stream."""
    init, pairs = split_stream(data)
    defaults = parse_track_defaults(init)
    samples: list[Sample] = []
    for moof, mdat in pairs:
        samples.extend(parse_fragment(moof, mdat, defaults)[1])
    return init, defaults, samples


def build_stream(init: bytes, samples: Sequence[Sample], per_fragment: int = 15) -> bytes:
    """An encoder-like stream of `samples`, re-fragmented; a new fragment at every dts jump."""
    out = [init]
    run: list[Sample] = []
    for s in samples:
        if run and (len(run) == per_fragment or s.dts != run[-1].dts + run[-1].duration):
            out.append(_fragment(run, len(out)))
            run = []
        run.append(s)
    if run:
        out.append(_fragment(run, len(out)))
    return b"".join(out)


def _fragment(samples: Sequence[Sample], sequence: int) -> bytes:
    return write_fragment(samples, track_id=1, sequence_number=sequence, base_dts=samples[0].dts)


def as_non_sync(sample: Sample) -> Sample:
    """The same sample flagged as a non-keyframe."""
    assert NON_SYNC_FLAGS & SAMPLE_IS_NON_SYNC
    return replace(sample, is_sync=False, flags=NON_SYNC_FLAGS)


def video_cutter(*, min_msn: int = 0, origin_epoch_ms: int = ORIGIN_MS) -> Cutter:
    """A cutter for the test video, tick 0 captured at `origin_epoch_ms`."""
    return Cutter(
        rendition="v180",
        segment_duration_ms=SEGMENT_MS,
        part_target_ms=PART_MS,
        origin_epoch_ms=origin_epoch_ms,
        min_msn=min_msn,
    )


def audio_cutter(*, min_msn: int = 0) -> Cutter:
    """A cutter for the test audio: tick 0 is 1024 samples (AAC priming) before ORIGIN_MS."""
    return Cutter(
        rendition="a128",
        segment_duration_ms=SEGMENT_MS,
        part_target_ms=PART_MS,
        origin_epoch_ms=ORIGIN_MS,
        encoder_delay=AAC_DELAY,
        min_msn=min_msn,
    )


def chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """`data` split at the given offsets (clamped to its length)."""
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]


def run_cutter(cutter: Cutter, data: bytes, chunk: int = 4096) -> list[CutterEvent]:
    """Every event of a whole stream pushed in `chunk`-byte pieces, then finished."""
    events: list[CutterEvent] = []
    for i in range(0, len(data), chunk):
        events.extend(cutter.push(data[i : i + chunk]))
    events.extend(cutter.finish())
    return events


def segments(events: Sequence[CutterEvent]) -> list[Segment]:
    """The published segments, in order."""
    return [e.segment for e in events if isinstance(e, SegmentReady)]


def parts_of(events: Sequence[CutterEvent], msn: int) -> list[PartReady]:
    """The PartReady events of one segment."""
    return [e for e in events if isinstance(e, PartReady) and e.part.msn == msn]
