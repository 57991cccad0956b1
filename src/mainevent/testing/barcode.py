"""Read the feed simulator's frame-number barcode back out of decoded video.

The feed draws the frame number since the epoch (mod 2^24) as white boxes along the bottom of
every frame; reading it from a published segment tells exactly which captured frame a segment
starts with, so epoch alignment is measured rather than assumed.
"""

from __future__ import annotations

import subprocess

from mainevent.media.encode.ffmpeg import BARCODE_BITS, barcode_geometry, find_ffmpeg


def read_barcode(gray: bytes, width: int, height: int) -> int:
    """Frame number encoded in one 8-bit grayscale frame."""
    x0, bit_w, strip_h = barcode_geometry(width, height)
    y = height - strip_h // 2
    value = 0
    for bit in range(BARCODE_BITS):
        x = x0 + bit * bit_w + bit_w // 2
        if gray[y * width + x] > 128:
            value |= 1 << bit
    return value


def segment_frame_numbers(init: bytes, segment: bytes, width: int, height: int) -> list[int]:
    """Barcode of every frame of a CMAF segment (decoded with ffmpeg)."""
    proc = subprocess.run(
        [
            find_ffmpeg(),
            "-hide_banner",
            "-v",
            "error",
            "-i",
            "pipe:0",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "pipe:1",
        ],
        input=init + segment,
        capture_output=True,
        timeout=60,
        check=True,
    )
    size = width * height
    frames = [proc.stdout[i : i + size] for i in range(0, len(proc.stdout), size)]
    return [read_barcode(f, width, height) for f in frames if len(f) == size]
