"""Real-time speed factor of the live transcoder's ladders on this machine.

Speed = media seconds produced per wall second (≥ 1.0 is needed to keep up live; the margin is
headroom for a harder source, the packager and a second pipeline). The transcoder runs the
exact command line the platform runs (`transcode_command`), fed from a pre-recorded synthetic
venue feed as fast as it can go. A reference run in the same process (decode + scale only, no
encode) is printed alongside so figures from noisy shared machines can be compared as ratios.

    .venv/bin/python bench/transcode.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from mainevent.config import DEFAULT_LADDER, DEMO_LADDER, Rung
from mainevent.media.encode.ffmpeg import (
    FeedSpec,
    LadderSpec,
    RungSpec,
    feed_command,
    find_ffmpeg,
    transcode_command,
)


def make_feed(ffmpeg: str, path: Path, width: int, height: int, seconds: float) -> None:
    spec = FeedSpec(
        url=str(path),
        start_epoch=Fraction(1_800_000_000),
        width=width,
        height=height,
        duration_s=seconds,
    )
    cmd = [c for c in feed_command(ffmpeg, spec) if c not in ("-re",)]
    # drop "-readrate_initial_burst 0" pairs that only make sense with -re
    out: list[str] = []
    skip = False
    for c in cmd:
        if skip:
            skip = False
            continue
        if c == "-readrate_initial_burst":
            skip = True
            continue
        out.append(c)
    out.insert(-1, "-y")
    subprocess.run(out, check=True)


def run_ladder(
    ffmpeg: str, feed: Path, rungs: tuple[Rung, ...], preset: str, seconds: float
) -> float:
    ladder = LadderSpec(
        rungs=tuple(RungSpec(r.id, r.width, r.height, r.bitrate_kbps) for r in rungs),
        audio_id="a128",
        audio_bitrate_kbps=128,
        fps=30,
        segment_duration_ms=2000,
        part_target_ms=500,
        preset=preset,
    )
    ids = [r.id for r in rungs] + ["a128"]
    null = {rid: os.open(os.devnull, os.O_WRONLY) for rid in ids}
    start_tod = Fraction(1_800_000_000) % 86400
    cmd = transcode_command(ffmpeg, ladder, start_tod, null)
    t0 = time.perf_counter()
    with open(feed, "rb") as f:
        subprocess.run(cmd, stdin=f, check=True, pass_fds=tuple(null.values()))
    wall = time.perf_counter() - t0
    for fd in null.values():
        os.close(fd)
    return seconds / wall


def reference(ffmpeg: str, feed: Path, seconds: float) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(feed),
            "-vf",
            "scale=640:360",
            "-f",
            "null",
            "-",
        ],
        check=True,
    )
    return seconds / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="media seconds per run")
    args = ap.parse_args()
    ffmpeg = find_ffmpeg()
    print(f"ffmpeg: {ffmpeg}\ncores: {os.cpu_count()}  media per run: {args.seconds:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        f1080 = Path(tmp) / "feed1080.ts"
        f720 = Path(tmp) / "feed720.ts"
        make_feed(ffmpeg, f1080, 1920, 1080, args.seconds)
        make_feed(ffmpeg, f720, 1280, 720, args.seconds)
        ref = reference(ffmpeg, f1080, args.seconds)
        print(f"{'run':58s} {'x realtime':>10s} {'÷ reference':>11s}")
        print(f"{'reference: decode 1080p feed + scale, no encode':58s} {ref:10.2f} {1.0:11.2f}")
        runs = [
            (
                "default ladder 1080/720/480/360 + AAC, veryfast (1080p feed)",
                f1080,
                DEFAULT_LADDER,
                "veryfast",
            ),
            (
                "default ladder 1080/720/480/360 + AAC, ultrafast",
                f1080,
                DEFAULT_LADDER,
                "ultrafast",
            ),
            ("demo ladder 720/360 + AAC, veryfast (720p feed)", f720, DEMO_LADDER, "veryfast"),
            (
                "test ladder 360/180 + AAC, ultrafast (720p feed)",
                f720,
                (
                    Rung(id="v360", width=640, height=360, bitrate_kbps=600),
                    Rung(id="v180", width=320, height=180, bitrate_kbps=200),
                ),
                "ultrafast",
            ),
        ]
        for name, feed, rungs, preset in runs:
            speed = run_ladder(ffmpeg, feed, rungs, preset, args.seconds)
            print(f"{name:58s} {speed:10.2f} {speed / ref:11.2f}", flush=True)


if __name__ == "__main__":
    main()
