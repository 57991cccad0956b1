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

from mainevent.media.encode.ffmpeg import FeedSpec, feed_command
from mainevent.media.encode.process import die_with_parent

log = logging.getLogger(__name__)
TS_PACKET = 188


def grid_start(now: float, fps: int) -> Fraction:
    """The next instant on the epoch frame grid k/fps after `now`."""
    return Fraction(math.ceil(now * fps) + 1, fps)


def pusher_command(ffmpeg: str, url: str) -> list[str]:
    """ffmpeg copying MPEG-TS from stdin to the contribution URL, timestamps untouched."""
    out = (
        ["-f", "flv", url]
        if url.startswith("rtmp")
        else ["-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", url]
    )
    return [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-copyts",
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


class FeedProcess:
    """Runs the simulator (pattern generator + relay + pusher); restarts it if it dies."""

    def __init__(self, ffmpeg: str, spec: FeedSpec, *, restart: bool = True) -> None:
        self.ffmpeg = ffmpeg
        self.spec = spec
        self.restart = restart
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
                if not self.restart:
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
            while chunk := await _read_packets(src, 64):
                if f.stall_until > time.monotonic():
                    continue  # frames generated during a stall are lost, as at a venue
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
            buf[off + 4 : off + TS_PACKET] = os.urandom(TS_PACKET - 4)
            f.garbage_packets -= 1
        if f.garbage_bytes > 0:
            n, f.garbage_bytes = f.garbage_bytes, 0
            buf[len(buf) // 2 : len(buf) // 2] = os.urandom(n)
        return bytes(buf)


async def _read_packets(src: asyncio.StreamReader, count: int) -> bytes:
    """Up to `count` whole TS packets (fewer only at the end), keeping packet alignment."""
    try:
        return await src.readexactly(TS_PACKET * count)
    except asyncio.IncompleteReadError as exc:
        return exc.partial


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
