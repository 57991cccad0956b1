"""Venue feed simulator: a test pattern with the capture clock burnt in, pushed in real time.

The pattern generator (ffmpeg) writes MPEG-TS whose timestamps are the capture time of day;
this module relays it to a pusher (ffmpeg, SRT or RTMP) and can damage the stream on command
(garbage bytes, a stall, a drop), so tests and drills reproduce venue failures. Frames sit on
the epoch grid k/fps, so two feeds started at different moments agree on capture times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from fractions import Fraction

from mainevent.media.encode.ffmpeg import LOW_DELAY_TS, FeedSpec, feed_command
from mainevent.media.encode.process import die_with_parent

log = logging.getLogger(__name__)
TS_PACKET = 188


def grid_start(now: float, fps: int) -> Fraction:
    """The next instant on the epoch frame grid k/fps after `now`."""
    return Fraction(math.ceil(now * fps) + 1, fps)


def pusher_command(ffmpeg: str, url: str) -> list[str]:
    """ffmpeg copying MPEG-TS from stdin to the contribution URL, timestamps untouched."""
    out = ["-f", "flv", url] if url.startswith("rtmp") else [*LOW_DELAY_TS, "-f", "mpegts", url]
    return [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-copyts",
        # The input is our own generator's TS (keyframe first): a short probe lets the feed
        # reach the ingest within half a second instead of after ffmpeg's default 5 s.
        "-probesize",
        "500000",
        "-analyzeduration",
        "500000",
        "-f",
        "mpegts",
        "-i",
        "pipe:0",
        "-map",
        "0",
        "-c",
        "copy",
        *out,
    ]


@dataclass(slots=True)
class FeedFaults:
    """Damage to apply to the relayed feed (set by drills; cleared by assigning defaults)."""

    garbage_packets: int = 0  # overwrite the payload of the next N TS packets with random bytes
    garbage_bytes: int = 0  # insert N raw random bytes (loss of TS sync)
    stall_until: float = 0.0  # monotonic time until which nothing is sent
    audio_offset_ticks: int = 0  # shift audio PTS/DTS by this many 90 kHz ticks (A/V desync)


class FeedProcess:
    """Runs the simulator (pattern generator + relay + pusher); restarts it if it dies."""

    def __init__(self, ffmpeg: str, spec: FeedSpec, *, restart: bool = True) -> None:
        self.ffmpeg = ffmpeg
        self.spec = spec
        self.auto_restart = restart
        self.faults = FeedFaults()
        self.bytes_sent = 0
        self.starts = 0
        self._procs: list[asyncio.subprocess.Process] = []
        self._stop_current = asyncio.Event()

    def inject_garbage(self, packets: int = 50, raw_bytes: int = 0) -> None:
        """Corrupt the payload of the next `packets` TS packets and insert raw garbage."""
        self.faults.garbage_packets += packets
        self.faults.garbage_bytes += raw_bytes

    async def corrupt_periodically(self, every_s: float, packets: int) -> None:
        """Drill: damage the feed every `every_s` seconds (payload garbage + raw bytes)."""
        while True:
            await asyncio.sleep(every_s)
            log.warning("feed: injecting garbage into %d TS packets and 1000 raw bytes", packets)
            self.inject_garbage(packets, raw_bytes=1000)

    def stall(self, seconds: float) -> None:
        """Send nothing for `seconds` (the connection stays open)."""
        self.faults.stall_until = time.monotonic() + seconds

    def desync_audio(self, offset_ms: int) -> None:
        """Shift audio timestamps against video by `offset_ms` (0 restores sync)."""
        self.faults.audio_offset_ticks = offset_ms * 90

    def clear(self) -> None:
        """Remove every pending or ongoing fault (in place: the relay holds this object)."""
        f = self.faults
        f.garbage_packets = f.garbage_bytes = f.audio_offset_ticks = 0
        f.stall_until = 0.0

    def restart(self) -> None:
        """Stop the current feed cleanly; it starts again (new connection) if restart is on."""
        for p in self._procs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()

    def status(self) -> dict[str, object]:
        """What the simulator is doing now (JSON-able)."""
        f = self.faults
        return {
            "url": self.spec.url,
            "running": bool(self._procs),
            "starts": self.starts,
            "bytes_sent": self.bytes_sent,
            "stalled_for_s": max(0.0, round(f.stall_until - time.monotonic(), 3)),
            "pending_garbage_packets": f.garbage_packets,
            "audio_offset_ms": f.audio_offset_ticks // 90,
        }

    def drop(self) -> None:
        """Kill the current feed abruptly (as a cut cable would); it restarts if enabled."""
        for p in self._procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()

    async def serve(self) -> None:
        """Push the feed until cancelled (or until it ends, when restart is off)."""
        try:
            while True:
                await self._once()
                if not self.auto_restart:
                    return
                await asyncio.sleep(0.5)
        finally:
            for p in self._procs:
                await _reap(p)

    async def _once(self) -> None:
        spec = replace(self.spec, start_epoch=grid_start(time.time(), self.spec.fps))
        self.starts += 1
        gen = await asyncio.create_subprocess_exec(
            *feed_command(self.ffmpeg, replace(spec, url="pipe:1")),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        push = await asyncio.create_subprocess_exec(
            *pusher_command(self.ffmpeg, spec.url),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        self._procs = [gen, push]
        assert gen.stdout is not None
        assert push.stdin is not None
        try:
            await self._relay(gen.stdout, push.stdin)
        finally:
            for p in (gen, push):
                await _reap(p)
            self._procs = []
        log.info(
            "feed %s ended (generator %s, pusher %s)", spec.url, gen.returncode, push.returncode
        )

    async def _relay(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        f = self.faults
        try:
            reader = _PacketReader(src)
            while chunk := await reader.read():
                if f.stall_until > time.monotonic():
                    continue  # frames generated during a stall are lost, as at a venue
                if f.audio_offset_ticks:
                    chunk = shift_audio_timestamps(chunk, f.audio_offset_ticks)
                if f.garbage_packets > 0 or f.garbage_bytes > 0:
                    chunk = self._damage(chunk)
                dst.write(chunk)
                await dst.drain()
                self.bytes_sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                dst.close()

    def _damage(self, chunk: bytes) -> bytes:
        f = self.faults
        buf = bytearray(chunk)
        for off in range(0, len(buf) - TS_PACKET + 1, TS_PACKET):
            if f.garbage_packets <= 0:
                break
            pid = ((buf[off + 1] & 0x1F) << 8) | buf[off + 2]
            if pid in (0, 0x1000):  # keep PAT/PMT so the stream stays decodable afterwards
                continue
            if buf[off + 1] & 0x40:
                # Keep PES headers: the damaged payload then reaches the decoder as a corrupt
                # frame. (The relay hands on whole frames, so damage starting at a frame
                # would otherwise take its header, and the demuxer drops the frame unseen.)
                continue
            buf[off + 4 : off + TS_PACKET] = os.urandom(TS_PACKET - 4)
            f.garbage_packets -= 1
        if f.garbage_bytes > 0:
            n, f.garbage_bytes = f.garbage_bytes, 0
            buf[len(buf) // 2 : len(buf) // 2] = os.urandom(n)
        return bytes(buf)


def _read_ts(b: bytearray, i: int) -> int:
    return (
        ((b[i] >> 1) & 0x07) << 30
        | b[i + 1] << 22
        | (b[i + 2] >> 1) << 15
        | b[i + 3] << 7
        | b[i + 4] >> 1
    )


def _write_ts(b: bytearray, i: int, prefix: int, value: int) -> None:
    value %= 1 << 33
    b[i] = (prefix << 4) | ((value >> 29) & 0x0E) | 1
    b[i + 1] = (value >> 22) & 0xFF
    b[i + 2] = ((value >> 14) & 0xFE) | 1
    b[i + 3] = (value >> 7) & 0xFF
    b[i + 4] = ((value << 1) & 0xFE) | 1


def shift_audio_timestamps(chunk: bytes, ticks: int) -> bytes:
    """Add `ticks` (90 kHz) to the PTS/DTS of every audio PES starting in these TS packets."""
    buf = bytearray(chunk)
    for off in range(0, len(buf) - TS_PACKET + 1, TS_PACKET):
        if buf[off] != 0x47 or not buf[off + 1] & 0x40:
            continue
        afc = (buf[off + 3] >> 4) & 0x3
        p = off + 4 + (1 + buf[off + 4] if afc & 0x2 else 0)
        if not afc & 0x1 or p + 19 > off + TS_PACKET:
            continue
        if buf[p : p + 3] != b"\x00\x00\x01" or not 0xC0 <= buf[p + 3] <= 0xDF:
            continue
        flags = buf[p + 7] >> 6
        if flags & 0x2:
            _write_ts(buf, p + 9, 0x3 if flags == 0x3 else 0x2, _read_ts(buf, p + 9) + ticks)
        if flags == 0x3:
            _write_ts(buf, p + 14, 0x1, _read_ts(buf, p + 14) + ticks)
    return bytes(buf)


class _PacketReader:
    """Whole TS packets as soon as the generator has written them, keeping packet alignment.

    Waiting for a fixed count instead (it was 64 packets, 12 kB) held each frame back until
    enough of the next had been written: ~60 ms of feed delay at 1.5 Mbit/s."""

    def __init__(self, src: asyncio.StreamReader, limit: int = 256 * TS_PACKET) -> None:
        self._src = src
        self._limit = limit
        self._rest = b""

    async def read(self) -> bytes:
        """The next whole packets; b"" at the end (a trailing partial packet is dropped)."""
        while True:
            data = await self._src.read(self._limit)
            if not data:
                return b""
            buf = self._rest + data
            whole = len(buf) - len(buf) % TS_PACKET
            self._rest = buf[whole:]
            if whole:
                return buf[:whole]


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(3.0):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
