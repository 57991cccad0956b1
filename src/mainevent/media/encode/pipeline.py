"""One live pipeline: ingest relay → transcoder (one ffmpeg) → packagers → LiveEvent.

Adapter code only: the decisions live in the sans-IO `TsProbe` and `Cutter`. The ingest ffmpeg
listens for the contribution feed and relays it untouched; its bytes go through `TsProbe` (feed
health, venue clock) and into the transcoder's stdin. The transcoder is started once the venue
clock is known, at the next epoch segment boundary T, and is restarted when it crashes, stalls
or the feed comes back; each run gets a later T, so segment numbers never rewind or repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mainevent.media.cmaf import (
    CmafError,
    Cutter,
    InitReady,
    InitSection,
    Part,
    PartReady,
    Segment,
    SegmentReady,
    SegmentRejected,
    StreamFailed,
)
from mainevent.media.encode.ffmpeg import (
    AAC_ENCODER_DELAY,
    SECONDS_PER_DAY,
    IngestSpec,
    LadderSpec,
    ingest_command,
    transcode_command,
)
from mainevent.media.encode.process import cancel_and_wait, die_with_parent
from mainevent.media.ingest.gateway import IngestGateway
from mainevent.media.ingest.ts import (
    PTS_HZ,
    AvOffsetTracker,
    PesStart,
    TsProbe,
    TsStatistics,
    first_keyframe,
)
from mainevent.media.store import StoreError

log = logging.getLogger(__name__)

INPUT_QUEUE_CHUNKS = 256  # × 64 KiB ≈ 16 MiB of contribution feed
# A connected feed silent this long is dropped and the listener restarted (the venue reconnects).
RELISTEN_AFTER_S = 3.0
# How far (venue seconds) around a corrupt-input event the damage may reach: a contribution GOP.
DAMAGE_REACH_S = 1.0


def epoch_of_time_of_day(tod: Fraction, now: float) -> Fraction:
    """The epoch instant with time of day `tod` nearest to `now` (handles midnight)."""
    base = Fraction(math.floor(now / SECONDS_PER_DAY) * SECONDS_PER_DAY)
    candidates = (base - SECONDS_PER_DAY + tod, base + tod, base + SECONDS_PER_DAY + tod)
    return min(candidates, key=lambda c: abs(float(c) - now))


def next_boundary(t: Fraction, segment_ms: int) -> Fraction:
    """The first epoch segment boundary at or after `t`."""
    d = Fraction(segment_ms, 1000)
    return Fraction(math.ceil(t / d)) * d


@dataclass(slots=True)
class FeedHealth:
    """Feed health as the ingest measures it (updated on every chunk, read any time)."""

    connected: bool = False
    bytes_total: int = 0
    last_packet_monotonic: float | None = None
    window: list[tuple[float, int, int]] = field(default_factory=list)  # (t, bytes, frames)
    last_video_tod: Fraction | None = None
    last_audio_pts: int | None = None
    av: AvOffsetTracker = field(default_factory=AvOffsetTracker)
    last_video_pts: int | None = None
    feed_delay_s: float | None = None  # wall clock − venue clock of the newest frame
    continuity_errors: int = 0
    sync_losses: int = 0
    decode_errors: int = 0
    connects: int = 0

    fps: int = 30  # the contribution's nominal frame rate (frame cadence checks)
    dropped_frames: int = 0  # gaps in the video decode-time cadence, in frames
    duplicated_frames: int = 0  # video frames whose decode time repeats or goes back
    last_video_dts: int | None = None
    error_times: list[float] = field(default_factory=list)  # when corrupt-input events were seen
    damage: list[float] = field(default_factory=list)  # venue epoch seconds of those events

    def on_connect(self) -> None:
        """A contribution connection began (a new connection starts with A/V in step)."""
        self.connected = True
        self.connects += 1
        self.av = AvOffsetTracker()
        self.last_video_dts = None  # a new connection's first frame is no gap

    def observe(
        self, now: float, wall: float, nbytes: int, events: list[PesStart], stats: TsStatistics
    ) -> bool:
        """Account one chunk of the feed; True when the venue clock went back a day (midnight)."""
        wrapped = False
        frames = 0
        for ev in events:
            if ev.kind == "video":
                frames += 1
                if (
                    self.last_video_pts is not None
                    and ev.pts < self.last_video_pts - 12 * 3600 * PTS_HZ
                ):
                    wrapped = True
                self.last_video_pts = ev.pts
                dts = ev.pts if ev.dts is None else ev.dts
                self._cadence(dts)
                # Decode time: steady with B-frames, where PTS order is not.
                self.av.push("video", dts, after_loss=ev.after_loss)
                self.last_video_tod = Fraction(ev.pts, PTS_HZ)
            else:
                self.last_audio_pts = ev.pts
                self.av.push("audio", ev.pts, after_loss=ev.after_loss)
        seen = stats.continuity_errors + stats.sync_losses
        self.note_errors(now, seen - self.continuity_errors - self.sync_losses)
        self.continuity_errors, self.sync_losses = stats.continuity_errors, stats.sync_losses
        self.bytes_total += nbytes
        self.last_packet_monotonic = now
        self.window.append((now, nbytes, frames))
        if len(self.window) > 512 or now - self.window[0][0] > 2.0:
            self.window = [w for w in self.window if now - w[0] <= 1.0]
        if self.last_video_tod is not None:
            self.feed_delay_s = float(
                Fraction(wall) - epoch_of_time_of_day(self.last_video_tod, wall)
            )
        return wrapped

    def _cadence(self, dts: int) -> None:
        """Dropped / duplicated frames from the decode-time cadence (1/fps per frame)."""
        last, self.last_video_dts = self.last_video_dts, dts
        if last is None:
            return
        step = dts - last
        frame = PTS_HZ / self.fps
        if step <= 0 and step > -PTS_HZ:  # repeated or back in time (not a midnight wrap)
            self.duplicated_frames += 1
        elif frame * 1.5 < step < 10 * PTS_HZ:  # missing frames (a longer jump is a new run)
            self.dropped_frames += round(step / frame) - 1

    def note_errors(self, now: float, count: int, wall: float | None = None) -> None:
        if count > 0:
            self.error_times.extend([now] * min(count, 100))
            del self.error_times[:-1000]
            if self.last_video_tod is not None:
                venue = epoch_of_time_of_day(
                    self.last_video_tod, time.time() if wall is None else wall
                )
                self.damage.append(float(venue))
                del self.damage[:-1000]

    def damage_between(self, start_s: float, end_s: float) -> int:
        """Corrupt-input events whose damage may reach into capture interval [start, end).

        An event is stamped with the newest venue time at detection; the damaged frames lie
        within about a contribution GOP (≤ 1 s) of it, before or after (the transcoder
        reports decode errors a little behind the ingest).
        """
        return sum(
            1 for t in self.damage if t - DAMAGE_REACH_S < end_s and t + DAMAGE_REACH_S > start_s
        )

    def verdict(self, now: float, *, input_timeout_s: float, fps: int) -> tuple[str, str]:
        """(healthy | degraded | lost, reason) from the live counters."""
        if not self.connected:
            return "lost", "never connected" if self.connects == 0 else "feed disconnected"
        age = None if self.last_packet_monotonic is None else now - self.last_packet_monotonic
        if age is not None and age > input_timeout_s:
            return "lost", f"no data for {age:.1f} s"
        snap = self.snapshot(now)
        reasons = []
        recent = sum(1 for t in self.error_times if now - t <= 5.0)
        if recent:
            reasons.append(f"{recent} corrupt-input events in the last 5 s")
        if snap["fps"] < 0.9 * fps:
            reasons.append(f"frame rate {snap['fps']} below {fps}")
        offset = snap["av_offset_s"]
        if abs(offset) > 0.1:
            reasons.append(f"audio/video offset {offset:+.3f} s")
        if reasons:
            return "degraded", "; ".join(reasons)
        return "healthy", "ok"

    def snapshot(self, now: float) -> dict[str, Any]:
        recent = [(t, b, f) for t, b, f in self.window if now - t <= 1.0]
        age = None if self.last_packet_monotonic is None else now - self.last_packet_monotonic
        return {
            "connected": self.connected,
            "bitrate_kbps": round(sum(b for _, b, _ in recent) * 8 / 1000, 1),
            "fps": sum(f for _, _, f in recent),
            "since_last_packet_s": None if age is None else round(age, 3),
            "av_offset_s": round(self.av.offset_s, 3),
            "feed_delay_s": None if self.feed_delay_s is None else round(self.feed_delay_s, 3),
            "continuity_errors": self.continuity_errors,
            "sync_losses": self.sync_losses,
            "decode_errors": self.decode_errors,
            "dropped_frames": self.dropped_frames,
            "duplicated_frames": self.duplicated_frames,
            "connects": self.connects,
        }


class _Run:
    """One transcoder process and the packagers reading its outputs."""

    def __init__(self, proc: asyncio.subprocess.Process, start_epoch: Fraction) -> None:
        self.proc = proc
        self.start_epoch = start_epoch
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(INPUT_QUEUE_CHUNKS)
        # Input starts at a contribution keyframe (with PAT/PMT in front), so the decoder
        # never sees a GOP it cannot decode.
        self.awaiting_keyframe = True
        self.last_output = time.monotonic()
        self.started = time.monotonic()
        self.segments = 0
        self.failed: str | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def feed(self, chunk: bytes) -> bool:
        try:
            self.queue.put_nowait(chunk)
        except asyncio.QueueFull:
            return False
        return True


class PipelineSink(Protocol):
    """Where a pipeline's packaged media goes: the LiveEvent itself (one pipeline), or one
    input of the redundancy selector, which picks per segment between pipelines."""

    async def on_init(self, rendition: str, init: InitSection) -> str: ...

    def on_part(self, rendition: str, part: Part) -> None: ...

    async def on_segment(
        self, rendition: str, segment: Segment, *, suspect: str | None = None
    ) -> None: ...

    def on_rejected(
        self, rendition: str, msn: int, reason: str, *, drop_parts: bool = True
    ) -> None: ...

    def next_msn_floor(self) -> int: ...


class Pipeline:
    """Supervises ingest and transcoding for one feed, publishing into a `PipelineSink`."""

    def __init__(
        self,
        *,
        name: str,
        sink: PipelineSink,
        ffmpeg: str,
        ingest: IngestSpec,
        ladder: LadderSpec,
        stall_timeout_s: float = 6.0,
        input_timeout_s: float = 2.0,
        restart_backoff_s: float = 0.5,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.sink = sink
        self.ffmpeg = ffmpeg
        self.ingest = ingest
        self.ladder = ladder
        self.stall_timeout_s = stall_timeout_s
        self.input_timeout_s = input_timeout_s
        self.restart_backoff_s = restart_backoff_s
        self.wall = wall
        self.health = FeedHealth(fps=ladder.fps)
        self.run: _Run | None = None
        self.ingest_proc: asyncio.subprocess.Process | None = None
        self.gateway = IngestGateway(name, ingest)
        self.restarts = 0
        self.runs = 0
        self.state = "waiting for feed"
        self._failures = 0
        self._next_start_not_before = 0.0
        self._stopping = False

    # -- public ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Health of this pipeline (feed + transcoder), JSON-able."""
        now = time.monotonic()
        run = self.run
        verdict, reason = self.verdict(now)
        return {
            "pipeline": self.name,
            "state": self.state,
            "verdict": verdict,
            "reason": reason,
            "feed": self.health.snapshot(now),
            "transcoder": None
            if run is None
            else {
                "pid": run.proc.pid,
                "since_output_s": round(now - run.last_output, 3),
                "segments": run.segments,
                "start_epoch": float(run.start_epoch),
            },
            "transcoder_runs": self.runs,
            "transcoder_restarts": self.restarts,
            "ingest": self.gateway.status(),
        }

    def is_healthy(self) -> bool:
        """Feed healthy and a transcoder running: fit to be the preferred pipeline (whether
        it delivers on time is for the selector to judge)."""
        verdict, _ = self.verdict(time.monotonic())
        return verdict == "healthy" and self.run is not None and self.state == "transcoding"

    def verdict(self, now: float) -> tuple[str, str]:
        """The feed's verdict (healthy / degraded / lost) and its reason, as of `now`."""
        return self.health.verdict(now, input_timeout_s=self.input_timeout_s, fps=self.ladder.fps)

    async def serve(self) -> None:
        """Run until cancelled; cleans up every child process on the way out."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._ingest_loop())
                tg.create_task(self._watchdog())
        finally:
            self._stopping = True
            await self._stop_run(kill=True)
            await _terminate(self.ingest_proc)

    def _count_input_error(self, line: str) -> None:
        # The transcoder only logs at error level: each line is a decode/demux complaint
        # about the contribution feed (corrupt input), which feed health reports.
        self.health.decode_errors += 1
        self.health.note_errors(time.monotonic(), 1)

    # -- ingest ---------------------------------------------------------------------------

    async def _ingest_loop(self) -> None:
        # The gateway is the public front door and this ffmpeg listens on a private loopback
        # port (RTMP: the gateway authenticates, then hands the connection over; SRT: the
        # gateway's UDP relay forwards admitted callers, libsrt checks the passphrase here and
        # the gateway counts its refusals from the listener's stderr).
        async with self.gateway.running():
            while True:
                self.state = "waiting for feed"
                proc = await asyncio.create_subprocess_exec(
                    *ingest_command(self.ffmpeg, self.gateway.listener_spec()),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
                self.ingest_proc = proc
                assert proc.stdout is not None
                assert proc.stderr is not None
                stderr_task = asyncio.create_task(
                    _log_stream(proc.stderr, f"{self.name} ingest", self.gateway.on_listener_log)
                )
                probe = TsProbe()
                try:
                    await self._relay(proc.stdout, probe)
                finally:
                    self.health.connected = False
                    # A relay has nothing to flush, and a listener blocked in an SRT read
                    # ignores SIGTERM: do not keep the venue waiting to reconnect.
                    await _terminate(proc, grace_s=0.3)
                    await cancel_and_wait(stderr_task)
                log.info("%s: feed ended or lost; transcoder input closed", self.name)
                await self._end_run_input()
                await asyncio.sleep(0.05)

    async def _relay(self, stdout: asyncio.StreamReader, probe: TsProbe) -> None:
        h = self.health
        first = True
        stream_pos = 0
        silent_since: float | None = None
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that
                # arrives as the read completes (the loop then outlives shutdown).
                async with asyncio.timeout(self.input_timeout_s if not first else None):
                    chunk = await stdout.read(65536)
            except TimeoutError:
                now = time.monotonic()
                if silent_since is None:
                    # A stalled feed: flush and end this run (its partial segment is rejected);
                    # keep the connection, the venue may resume on it.
                    silent_since = now - self.input_timeout_s
                    log.warning(
                        "%s: no contribution data for %.1f s: feed lost",
                        self.name,
                        self.input_timeout_s,
                    )
                    self.state = "feed lost (connection open)"
                    await self._end_run_input()
                elif now - silent_since > RELISTEN_AFTER_S:
                    log.warning(
                        "%s: feed silent for %.0f s: listening anew", self.name, now - silent_since
                    )
                    return
                continue
            if not chunk:
                return
            if silent_since is not None:
                log.info(
                    "%s: feed resumed after %.1f s", self.name, time.monotonic() - silent_since
                )
                silent_since = None
                self.state = "feed connected"
            now = time.monotonic()
            chunk_start, stream_pos = stream_pos, stream_pos + len(chunk)
            if first:
                first = False
                h.on_connect()
                self.state = "feed connected"
                log.info("%s: feed connected", self.name)
            events = probe.push(chunk)
            if h.observe(now, self.wall(), len(chunk), events, probe.statistics()):
                # Venue clock passed midnight: PTS went back a day; start a new run.
                log.info("%s: venue clock wrapped at midnight; restarting transcoder", self.name)
                await self._stop_run(kill=True)
            run = self.run
            if run is None and h.last_video_tod is not None and now >= self._next_start_not_before:
                # A run starts at a contribution keyframe K, at the first epoch boundary ≥ K:
                # everything from there on is decodable, and media (re)starts within one
                # segment of the feed (re)appearing.
                key = first_keyframe(events, chunk_start)
                if key is None:
                    continue
                run = await self._start_run(Fraction(key.pts, PTS_HZ))
            if run is not None and run.awaiting_keyframe:
                key = first_keyframe(events, chunk_start)
                if key is None:
                    continue
                run.awaiting_keyframe = False
                log.info(
                    "%s: feeding transcoder from the keyframe at venue time %.3f",
                    self.name,
                    key.pts / PTS_HZ,
                )
                chunk = probe.program_header() + chunk[key.offset - chunk_start :]
            if run is not None and not run.feed(chunk):
                log.warning(
                    "%s: transcoder input queue full: transcoder is not keeping up", self.name
                )
                run.failed = run.failed or "input queue full"

    # -- transcoder -----------------------------------------------------------------------

    async def _start_run(self, key_tod: Fraction) -> _Run:
        """Start a transcoder run whose input begins at the keyframe at venue time `key_tod`."""
        wall = self.wall()
        seg_ms = self.ladder.segment_duration_ms
        key = epoch_of_time_of_day(key_tod, wall)
        start = next_boundary(key, seg_ms)
        floor_msn = self.sink.next_msn_floor()
        d = Fraction(seg_ms, 1000)
        if start / d < floor_msn:
            start = floor_msn * d
            if start - key > 2 * d:
                # The window (e.g. slate listed by the wall clock) ran ahead of this feed's
                # venue clock: nothing can be published until the feed reaches the floor.
                log.error(
                    "%s: feed's venue clock is %.1f s behind the published edge (msn %d): "
                    "this run discards its input until then; a feed lagging the wall clock "
                    "this much cannot catch up at real-time rate",
                    self.name,
                    float(start - key),
                    floor_msn,
                )
        ids = [r.id for r in self.ladder.rungs] + [self.ladder.audio_id]
        pipes = {rid: os.pipe() for rid in ids}
        outputs = {rid: w for rid, (_, w) in pipes.items()}
        cmd = transcode_command(self.ffmpeg, self.ladder, start % SECONDS_PER_DAY, outputs)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=tuple(outputs.values()),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            for w in outputs.values():
                os.close(w)
        run = _Run(proc, start)
        # Nothing can come out before the first frame at T, which the feed reaches after
        # T − K of its own (venue) time: the stall clock starts there (a run that had to wait
        # for a floor ahead of the feed was once killed as "stalled" every 6 s, forever).
        run.last_output = time.monotonic() + max(0.0, float(start) - wall, float(start - key))
        self.run = run
        self.runs += 1
        self.state = "transcoding"
        origin_ms = int(start * 1000)
        min_msn = int(start / d)
        log.info(
            "%s: transcoder run %d (pid %d) starts at epoch %.3f, msn %d",
            self.name,
            self.runs,
            proc.pid,
            float(start),
            min_msn,
        )
        assert proc.stdin is not None
        assert proc.stderr is not None
        run.tasks.append(asyncio.create_task(self._writer(run, proc.stdin)))
        run.tasks.append(
            asyncio.create_task(
                _log_stream(proc.stderr, f"{self.name} transcoder", self._count_input_error)
            )
        )
        for rid, (r, _) in pipes.items():
            delay = AAC_ENCODER_DELAY if rid == self.ladder.audio_id else Fraction(0)
            cutter = Cutter(
                rendition=rid,
                segment_duration_ms=seg_ms,
                part_target_ms=self.ladder.part_target_ms,
                origin_epoch_ms=origin_ms,
                encoder_delay=delay,
                min_msn=min_msn,
            )
            run.tasks.append(asyncio.create_task(self._package(run, rid, r, cutter)))
        return run

    async def _writer(self, run: _Run, stdin: asyncio.StreamWriter) -> None:
        try:
            while (chunk := await run.queue.get()) is not None:
                stdin.write(chunk)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                stdin.close()

    async def _package(self, run: _Run, rendition: str, fd: int, cutter: Cutter) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while True:
                data = await reader.read(1 << 16)
                try:
                    events = cutter.push(data) if data else cutter.finish()
                except CmafError as exc:
                    # e.g. an init we cannot package: this run's output is unusable.
                    events = [StreamFailed(f"{type(exc).__name__}: {exc}")]
                run.last_output = time.monotonic()
                for ev in events:
                    try:
                        await self._handle(run, rendition, ev)
                    except StoreError as exc:
                        # Not stored whole → not published; the next segment may succeed.
                        msn = ev.segment.msn if isinstance(ev, SegmentReady) else -1
                        self.sink.on_rejected(rendition, msn, f"store: {exc}")
                if not data:
                    return
        finally:
            transport.close()

    async def _handle(self, run: _Run, rendition: str, ev: object) -> None:
        if isinstance(ev, InitReady):
            await self.sink.on_init(rendition, ev.init)
        elif isinstance(ev, PartReady):
            self.sink.on_part(rendition, ev.part)
        elif isinstance(ev, SegmentReady):
            seg = ev.segment
            start = seg.program_date_time_ms / 1000
            damaged = self.health.damage_between(start, start + seg.duration / seg.timescale)
            suspect = f"{damaged} corrupt-input events during its capture" if damaged else None
            await self.sink.on_segment(rendition, seg, suspect=suspect)
            run.segments += 1
            self._failures = 0
        elif isinstance(ev, SegmentRejected):
            self.sink.on_rejected(rendition, ev.msn, ev.reason)
        elif isinstance(ev, StreamFailed):
            log.error("%s: %s output unusable: %s", self.name, rendition, ev.reason)
            run.failed = run.failed or f"{rendition}: {ev.reason}"

    async def _end_run_input(self) -> None:
        """The feed is gone: let the transcoder flush what it has, then reap it."""
        run = self.run
        if run is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            run.queue.put_nowait(None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await run.proc.wait()
        await self._stop_run(kill=True)

    async def _stop_run(self, *, kill: bool) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        if run.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                run.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await run.proc.wait()
        # Let packagers drain what the pipes still hold (finish() rejects the partial segment).
        pending = [t for t in run.tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=3.0)
            for t in still:
                await cancel_and_wait(t)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            run = self.run
            if run is None:
                continue
            now = time.monotonic()
            reason = None
            if run.proc.returncode is not None:
                reason = f"transcoder exited with code {run.proc.returncode}"
            elif run.failed:
                reason = run.failed
            elif now - run.last_output > self.stall_timeout_s and self.health.connected:
                reason = f"transcoder produced nothing for {now - run.last_output:.1f} s (stalled)"
            if reason is None:
                continue
            if not self.health.connected and run.proc.returncode is not None:
                continue  # feed ended; the ingest loop reaps this run
            log.error("%s: %s; restarting", self.name, reason)
            self.state = f"restarting: {reason}"
            await self._stop_run(kill=True)
            self.restarts += 1
            self._failures += 1
            backoff = min(8.0, self.restart_backoff_s * (2 ** max(0, self._failures - 1)))
            self._next_start_not_before = time.monotonic() + backoff


async def _terminate(proc: asyncio.subprocess.Process | None, grace_s: float = 3.0) -> None:
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(grace_s):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _log_stream(
    stream: asyncio.StreamReader, what: str, on_line: Callable[[str], None] | None = None
) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        if text:
            log.warning("%s: %s", what, text)
            if on_line is not None:
                on_line(text)


class PipelineCollector:
    """Prometheus collector reading pipelines' health at scrape time (no per-chunk metric cost)."""

    def __init__(self, pipelines: list[Pipeline]) -> None:
        self.pipelines = pipelines

    def collect(self) -> Iterator[Metric]:
        labels = ["pipeline"]
        g = {
            "connected": GaugeMetricFamily(
                "mainevent_feed_connected",
                "1 while the contribution feed is connected",
                labels=labels,
            ),
            "bitrate": GaugeMetricFamily(
                "mainevent_feed_bitrate_kbps",
                "Incoming feed bitrate over the last second",
                labels=labels,
            ),
            "fps": GaugeMetricFamily(
                "mainevent_feed_fps", "Incoming video frames over the last second", labels=labels
            ),
            "age": GaugeMetricFamily(
                "mainevent_feed_since_last_packet_seconds",
                "Time since the last contribution packet",
                labels=labels,
            ),
            "drift": GaugeMetricFamily(
                "mainevent_feed_av_offset_seconds",
                "Audio timestamps moved against video since the feed connected",
                labels=labels,
            ),
            "delay": GaugeMetricFamily(
                "mainevent_feed_delay_seconds",
                "Wall clock minus venue clock of the newest frame",
                labels=labels,
            ),
        }
        verdict = GaugeMetricFamily(
            "mainevent_feed_verdict",
            "1 for the feed's current verdict",
            labels=["pipeline", "verdict"],
        )
        errors = CounterMetricFamily(
            "mainevent_feed_input_errors",
            "Corrupt-input events (TS continuity, sync loss, decode)",
            labels=["pipeline", "kind"],
        )
        restarts = CounterMetricFamily(
            "mainevent_transcoder_restarts",
            "Transcoder restarts after a crash or stall",
            labels=labels,
        )
        refused = CounterMetricFamily(
            "mainevent_ingest_refused",
            "Contribution connection attempts the ingest refused, by reason",
            labels=["pipeline", "reason"],
        )
        pending = GaugeMetricFamily(
            "mainevent_ingest_connections_pending",
            "Ingest connections not yet authenticated (RTMP) or not yet live (SRT)",
            labels=labels,
        )
        for p in self.pipelines:
            st = p.status()
            f = st["feed"]
            name = [p.name]
            g["connected"].add_metric(name, 1.0 if f["connected"] else 0.0)
            g["bitrate"].add_metric(name, float(f["bitrate_kbps"]))
            g["fps"].add_metric(name, float(f["fps"]))
            if f["since_last_packet_s"] is not None:
                g["age"].add_metric(name, float(f["since_last_packet_s"]))
            g["drift"].add_metric(name, float(f["av_offset_s"]))
            if f["feed_delay_s"] is not None:
                g["delay"].add_metric(name, float(f["feed_delay_s"]))
            for v in ("healthy", "degraded", "lost"):
                verdict.add_metric([p.name, v], 1.0 if st["verdict"] == v else 0.0)
            for kind in (
                "continuity_errors",
                "sync_losses",
                "decode_errors",
                "dropped_frames",
                "duplicated_frames",
            ):
                errors.add_metric([p.name, kind], float(f[kind]))
            restarts.add_metric(name, float(st["transcoder_restarts"]))
            ingest = st["ingest"]
            for reason, count in ingest["refused"].items():
                refused.add_metric([p.name, reason], float(count))
            pending.add_metric(name, float(ingest["pending"]))
        yield from g.values()
        yield verdict
        yield errors
        yield restarts
        yield refused
        yield pending
