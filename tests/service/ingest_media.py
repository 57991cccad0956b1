"""Real CMAF media for the ingest tests: one short ffmpeg encode, cut again and again at later
epoch offsets so a test has as many consecutive segments as it needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mainevent.media.cmaf import InitReady, InitSection, Segment
from tests.unit.cmaf_media import (
    FIRST_MSN,
    ORIGIN_MS,
    SECONDS,
    encode_media,
    run_cutter,
    segments,
    video_cutter,
)

RENDITION = "v180"


@dataclass(frozen=True, slots=True)
class Media:
    init: InitSection
    segments: tuple[Segment, ...]
    """Consecutive, from `FIRST_MSN`."""


def make_media(directory: Path, runs: int = 4) -> Media:
    """`runs` × 3 consecutive 2 s video segments (plus their parts) of the test pattern."""
    video = encode_media(directory).video
    init: InitSection | None = None
    out: list[Segment] = []
    for k in range(runs):
        events = run_cutter(video_cutter(origin_epoch_ms=ORIGIN_MS + k * SECONDS * 1000), video)
        init = init or next(e.init for e in events if isinstance(e, InitReady))
        out.extend(segments(events))
    assert init is not None
    assert [s.msn for s in out] == list(range(FIRST_MSN, FIRST_MSN + len(out)))
    return Media(init, tuple(out))
