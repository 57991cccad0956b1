"""Clip export: remux stored CMAF tracks (init + segments) into one progressive MP4 with ffmpeg
`-c copy` (no re-encoding). The only place besides the pipeline that runs ffmpeg.

The CMAF fragments carry epoch decode times; ffmpeg shifts each input to start at its own
first timestamp, so the file starts at 0 (video and audio of the same segments start within
one AAC frame of each other).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mainevent.media.encode.process import die_with_parent

__all__ = ["RemuxError", "TrackData", "remux_command", "remux_mp4"]

REMUX_TIMEOUT_S = 120.0


class RemuxError(Exception):
    """ffmpeg could not remux the clip; the message carries the end of its log."""


@dataclass(frozen=True, slots=True)
class TrackData:
    """One CMAF track of a clip: its init section and its segments' bytes, in order."""

    init: bytes
    segments: Sequence[bytes]


def remux_command(ffmpeg: str, inputs: Sequence[Path], out: Path) -> list[str]:
    """ffmpeg arguments muxing the first stream of each input file into `out` as-is."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y"]
    for p in inputs:
        cmd += ["-i", str(p)]
    for i in range(len(inputs)):
        cmd += ["-map", f"{i}:0"]
    cmd += ["-c", "copy", "-avoid_negative_ts", "make_zero", "-movflags", "+faststart"]
    cmd += ["-f", "mp4", str(out)]
    return cmd


async def remux_mp4(ffmpeg: str, tracks: Sequence[TrackData], out: Path) -> None:
    """Write `tracks` (e.g. one video, one audio) as one MP4 at `out` (atomically: a temporary
    name, renamed once ffmpeg succeeded). Raises `RemuxError`."""
    if not tracks:
        raise RemuxError("a clip needs at least one track")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".remux-") as tmp:
        inputs = []
        for i, t in enumerate(tracks):
            p = Path(tmp) / f"track{i}.mp4"
            await asyncio.to_thread(p.write_bytes, t.init + b"".join(t.segments))
            inputs.append(p)
        partial = Path(tmp) / "out.mp4"
        proc = await asyncio.create_subprocess_exec(
            *remux_command(ffmpeg, inputs, partial),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), REMUX_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RemuxError(
                f"ffmpeg did not finish the remux within {REMUX_TIMEOUT_S} s"
            ) from None
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise RemuxError(f"ffmpeg remux failed ({proc.returncode}): {' | '.join(tail)}")
        partial.replace(out)
