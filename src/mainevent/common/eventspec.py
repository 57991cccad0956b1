"""What an event's media settings must satisfy: one rule set for the media plane's settings
(``mainevent.config.EventSettings``) and the control plane's event API, so neither accepts what
the other would refuse.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_LADDER",
    "DEFAULT_PART_TARGET_MS",
    "DEMO_LADDER",
    "MAX_SEGMENT_DURATION_MS",
    "MIN_SEGMENT_DURATION_MS",
    "Rung",
    "ladder_problem",
    "segment_duration_problem",
]

MIN_SEGMENT_DURATION_MS = 1000
MAX_SEGMENT_DURATION_MS = 10_000
DEFAULT_FPS = 30
"""Output frame rate of the stack unless ``event.fps`` says otherwise."""
DEFAULT_PART_TARGET_MS = 250
"""LL-HLS part cut of the stack unless ``event.part_target_ms`` says otherwise.

250 ms (declared PART-TARGET 0.267 s, PART-HOLD-BACK 0.801 s at 30 fps): stock hls.js and Shaka
in low-latency mode, which start PART-HOLD-BACK behind the edge and never speed up, play at
≈ 1.5–1.6 s through an edge; with 0.5 s parts their floor was ≈ 2.2–2.6 s (BENCHMARKS.md)."""
_DAY_MS = 86_400_000


def segment_duration_problem(
    segment_duration_ms: int,
    *,
    fps: int = DEFAULT_FPS,
    part_target_ms: int = DEFAULT_PART_TARGET_MS,
) -> str | None:
    """Why the media plane would refuse this segment duration (None: it accepts it).

    The message names the setting and the rule, never the value, so it can go to any client.
    """
    if not MIN_SEGMENT_DURATION_MS <= segment_duration_ms <= MAX_SEGMENT_DURATION_MS:
        return (
            f"segment_duration_ms must be between {MIN_SEGMENT_DURATION_MS} and "
            f"{MAX_SEGMENT_DURATION_MS} ms"
        )
    if _DAY_MS % segment_duration_ms:
        return "segment_duration_ms must divide a day (86,400,000 ms) so epoch and time-of-day boundaries agree"
    if (segment_duration_ms * fps) % 1000:
        return "segment_duration_ms must be a whole number of frames at fps"
    if part_target_ms > segment_duration_ms or segment_duration_ms % part_target_ms:
        return "part_target_ms must divide segment_duration_ms"
    return None


class Rung(BaseModel):
    """One video rendition of the ladder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="Stable rendition id used in URLs, e.g. `v720`.",
    )
    width: int = Field(ge=16, le=7680, description="Output width in pixels (even).")
    height: int = Field(ge=16, le=4320, description="Output height in pixels (even).")
    bitrate_kbps: int = Field(
        ge=50, le=100_000, description="Target video bitrate (CBR-like, kbit/s)."
    )

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (4:2:0 chroma)")
        return v


def ladder_problem(rung_ids: Iterable[str], audio_id: str | None = None) -> str | None:
    """Why the media plane would refuse a ladder with these rendition ids (None: it accepts it)."""
    ids = list(rung_ids)
    if not ids:
        return "the ladder needs at least one rung"
    if audio_id is not None:
        ids.append(audio_id)
    if len(set(ids)) != len(ids):
        return "rendition ids must be unique (rungs and the audio rendition)"
    return None


DEFAULT_LADDER = (
    Rung(id="v1080", width=1920, height=1080, bitrate_kbps=6000),
    Rung(id="v720", width=1280, height=720, bitrate_kbps=3000),
    Rung(id="v480", width=854, height=480, bitrate_kbps=1200),
    Rung(id="v360", width=640, height=360, bitrate_kbps=600),
)

DEMO_LADDER = (
    Rung(id="v720", width=1280, height=720, bitrate_kbps=2500),
    Rung(id="v360", width=640, height=360, bitrate_kbps=700),
)
