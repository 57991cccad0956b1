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
    return _read_row(gray, y * width, x0, bit_w)


def _read_row(gray: bytes, row: int, x0: int, bit_w: int) -> int:
    value = 0
    for bit in range(BARCODE_BITS):
        if gray[row + x0 + bit * bit_w + bit_w // 2] > 128:
            value |= 1 << bit
    return value


def stream_frame_numbers(url: str, width: int, height: int, *, timeout_s: float = 120) -> list[int]:
    """Barcode of every frame of a whole stream (e.g. a VOD playlist URL) as ffmpeg decodes
    it, in order, each decoded frame once (`-fps_mode passthrough`: no frame is duplicated or
    dropped to make a constant rate, so a hole or a repeat in the media shows). Only the
    barcode strip is decoded out (`crop`), so a long stream costs little memory."""
    x0, bit_w, strip_h = barcode_geometry(width, height)
    proc = subprocess.run(
        [
            find_ffmpeg(),
            "-hide_banner",
            "-v",
            "error",
            "-i",
            url,
            "-map",
            "0:v:0",
            "-vf",
            f"crop={width}:{strip_h}:0:{height - strip_h}",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "pipe:1",
        ],
        capture_output=True,
        timeout=timeout_s,
        check=True,
    )
    size = width * strip_h
    row = (strip_h - strip_h // 2) * width  # the same row `read_barcode` reads in a frame
    out = proc.stdout
    return [_read_row(out, i + row, x0, bit_w) for i in range(0, len(out) - size + 1, size)]


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
