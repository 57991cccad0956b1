"""The RTMP ingest gateway in front of a real pipeline: real ffmpeg, real sockets on loopback.

What a venue and an operator notice: the right stream key goes live (the feed simulator's TS
reaches the pipeline's relay); a wrong key or app, garbage, a stalled handshake, a second
publisher or a flood of connections is refused, logged with the peer address and counted — and
starts nothing, and never disturbs the publisher that is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mainevent.media.encode.ffmpeg import (
    FeedSpec,
    IngestSpec,
    LadderSpec,
    RungSpec,
    find_ffmpeg,
)
from mainevent.media.encode.pipeline import Pipeline, PipelineCollector
from mainevent.media.feed import FeedProcess, grid_start
from mainevent.media.ingest.rtmp import HANDSHAKE_SIZE, client_handshake
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.store import LocalSegmentStore

pytestmark = pytest.mark.anyio

FFMPEG = find_ffmpeg()
KEY = "venue-key-1"
FPS = 15
GATEWAY_LOG = "mainevent.media.ingest.gateway"


def make_pipeline(tmp_path: Path, spec: IngestSpec) -> Pipeline:
    """A real pipeline (tiny ladder) publishing into a real LiveEvent and store."""
    store = LocalSegmentStore(tmp_path / "data", memory_segments=8)
    event = LiveEvent(
        event_id="gw",
        renditions=[RenditionSpec("v90", "video", 100, 160, 90), RenditionSpec("a64", "audio", 64)],
        store=store,
        segment_duration_ms=2000,
        window_segments=6,
        fps=FPS,
    )
    ladder = LadderSpec(
        rungs=(RungSpec("v90", 160, 90, 100),),
        audio_id="a64",
        audio_bitrate_kbps=64,
        fps=FPS,
        segment_duration_ms=2000,
        part_target_ms=500,
        preset="ultrafast",
        threads=1,
    )
    return Pipeline(
        name="primary", sink=event, ffmpeg=FFMPEG, ingest=spec, ladder=ladder, input_timeout_s=2.0
    )


@contextlib.asynccontextmanager
async def serving(pipeline: Pipeline) -> AsyncIterator[Pipeline]:
    task = asyncio.create_task(pipeline.serve())
    try:
        await asyncio.wait_for(pipeline.gateway.listening.wait(), 10)
        yield pipeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def rtmp_url(pipeline: Pipeline, key: str = KEY, app: str = "live") -> str:
    return f"rtmp://127.0.0.1:{pipeline.gateway.port}/{app}/{key}"


@contextlib.asynccontextmanager
async def venue_feed(url: str) -> AsyncIterator[FeedProcess]:
    """The feed simulator (`mainevent feed`'s engine) pushing to `url`, no automatic restart."""
    spec = FeedSpec(
        url=url,
        start_epoch=grid_start(time.time(), FPS),
        width=320,
        height=180,
        fps=FPS,
        bitrate_kbps=400,
    )
    feed = FeedProcess(FFMPEG, spec, restart=False)
    task = asyncio.create_task(feed.serve())
    try:
        yield feed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def push(url: str, seconds: float = 2.0, within: float = 30.0) -> tuple[int, str]:
    """A plain ffmpeg encoder pushing a short clip to `url`: (exit code, stderr)."""
    fmt = "flv" if url.startswith("rtmp") else "mpegts"
    proc = await asyncio.create_subprocess_exec(
        *[FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin"],
        *["-re", "-f", "lavfi", "-i", f"testsrc2=size=160x90:rate={FPS}"],
        *["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"],
        *["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS)],
        *["-c:a", "aac", "-f", fmt, url],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), within)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


async def until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def keeps_flowing(pipeline: Pipeline, nbytes: int = 40_000, within: float = 10.0) -> None:
    """The live feed's TS keeps reaching the pipeline's relay."""
    start = pipeline.health.bytes_total
    await until(
        lambda: pipeline.health.bytes_total >= start + nbytes, within, "the live feed to flow"
    )


async def closed_by_server(reader: asyncio.StreamReader, within: float = 10.0) -> bool:
    """True once the gateway has closed (or reset) the connection."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except ConnectionError:
        pass
    return True


def refusals(pipeline: Pipeline) -> dict[str, int]:
    refused: dict[str, int] = pipeline.status()["ingest"]["refused"]
    return refused


def spec(**kw: Any) -> IngestSpec:
    return replace(IngestSpec("rtmp", "127.0.0.1", 0, KEY), **kw)


@pytest.mark.slow
async def test_right_key_goes_live_through_the_gateway(tmp_path: Path) -> None:
    """The feed simulator with the right key goes live: its TS reaches the relay, a transcoder runs."""
    pipeline = make_pipeline(tmp_path, spec())
    async with serving(pipeline), venue_feed(rtmp_url(pipeline)):
        await keeps_flowing(pipeline, 100_000, within=20)
        await until(lambda: pipeline.runs == 1, 15, "the transcoder to start")
        ingest = pipeline.status()["ingest"]
        assert ingest["live_peer"].startswith("127.0.0.1:")
        assert ingest["accepted"] == 1
        assert sum(ingest["refused"].values()) == 0
        assert pipeline.health.connects == 1


@pytest.mark.slow
async def test_wrong_key_or_app_is_refused_logged_counted_and_starts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong key or app is told so and closed; the log names the peer; /metrics counts it."""
    caplog.set_level(logging.WARNING, logger=GATEWAY_LOG)
    pipeline = make_pipeline(tmp_path, spec())
    registry = CollectorRegistry()
    registry.register(PipelineCollector([pipeline]))
    async with serving(pipeline):
        rc, err = await push(rtmp_url(pipeline, key="venue-key-2"))
        assert rc != 0
        assert "stream key rejected" in err
        rc, err = await push(rtmp_url(pipeline, app="other"))
        assert rc != 0
        assert refusals(pipeline)["wrong_key"] == 1
        assert refusals(pipeline)["wrong_app"] == 1
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("wrong_key from 127.0.0.1:" in line for line in lines), lines
        assert any("wrong_app from 127.0.0.1:" in line for line in lines), lines
        assert not any("venue-key-2" in line for line in lines)  # a near miss is never logged
        # Nothing reached ffmpeg, nothing started.
        assert pipeline.health.bytes_total == 0
        assert pipeline.health.connects == 0
        assert pipeline.runs == 0
        assert pipeline.status()["transcoder"] is None
        text = generate_latest(registry).decode()
        assert 'mainevent_ingest_refused_total{pipeline="primary",reason="wrong_key"} 1.0' in text
        assert 'mainevent_ingest_refused_total{pipeline="primary",reason="malformed"} 0.0' in text
        assert 'mainevent_ingest_connections_pending{pipeline="primary"} 0.0' in text
        # The internal listener was never touched: the right key still gets in at once.
        async with venue_feed(rtmp_url(pipeline)):
            await keeps_flowing(pipeline, within=20)
        assert pipeline.health.connects == 1


async def test_garbage_and_stalled_handshakes_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage, HTTP, a broken chunk stream, a silent or vanishing client: closed and counted."""
    caplog.set_level(logging.WARNING, logger=GATEWAY_LOG)
    pipeline = make_pipeline(tmp_path, spec(handshake_timeout_s=1.0))
    async with serving(pipeline):
        port = pipeline.gateway.port
        assert port is not None

        async def attempt(data: bytes, *, close: bool = False) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            if close:
                writer.close()
                return
            assert await closed_by_server(reader)
            writer.close()

        await attempt(os.urandom(4096))
        await attempt(b"GET /live/venue-key-1 HTTP/1.1\r\nHost: x\r\n\r\n")
        handshake = client_handshake(b"") + bytes(HANDSHAKE_SIZE)
        await attempt(handshake + b"\x43" + os.urandom(300))  # type-1 header on a new stream
        await attempt(b"")  # silent: the handshake deadline closes it
        await attempt(handshake[:100], close=True)  # goes away mid-handshake
        await until(lambda: refusals(pipeline)["incomplete"] == 1, 5, "the vanished client")
        counts = refusals(pipeline)
        assert counts["malformed"] == 3
        assert counts["handshake_timeout"] == 1
        assert pipeline.status()["ingest"]["pending"] == 0
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("malformed from 127.0.0.1:" in line for line in lines), lines
        assert pipeline.health.bytes_total == 0
        assert pipeline.runs == 0


@pytest.mark.slow
async def test_second_publisher_is_refused_and_the_live_one_keeps_flowing(tmp_path: Path) -> None:
    """A second encoder with the right key is refused while one is live; the live one is untouched."""
    pipeline = make_pipeline(tmp_path, spec())
    async with serving(pipeline), venue_feed(rtmp_url(pipeline)):
        await keeps_flowing(pipeline, within=20)
        live_peer = pipeline.status()["ingest"]["live_peer"]
        rc, err = await push(rtmp_url(pipeline))
        assert rc != 0
        assert "another publisher is live" in err
        assert refusals(pipeline)["role_busy"] == 1
        await keeps_flowing(pipeline)
        assert pipeline.status()["ingest"]["live_peer"] == live_peer
        assert pipeline.health.connects == 1
        assert pipeline.restarts == 0


@pytest.mark.slow
async def test_operator_takeover_replaces_the_live_publisher(tmp_path: Path) -> None:
    """After allow_takeover() the next encoder with the right key replaces the live one."""
    pipeline = make_pipeline(tmp_path, spec())
    async with serving(pipeline), venue_feed(rtmp_url(pipeline)) as first:
        await keeps_flowing(pipeline, within=20)
        first_peer = pipeline.status()["ingest"]["live_peer"]
        pipeline.gateway.allow_takeover()
        async with venue_feed(rtmp_url(pipeline)):
            await until(lambda: pipeline.health.connects == 2, 30, "the new publisher")
            await keeps_flowing(pipeline)
            ingest = pipeline.status()["ingest"]
            assert ingest["live_peer"] != first_peer
            assert ingest["takeover_armed"] is False
            assert ingest["refused"]["role_busy"] == 0
            # The replaced encoder was disconnected (its pusher sees a broken pipe and ends).
            await until(lambda: not first.status()["running"], 10, "the old encoder to stop")


@pytest.mark.slow
async def test_connection_flood_is_refused_while_the_live_feed_flows(tmp_path: Path) -> None:
    """200 connection attempts at once: each refused and counted; pending stays capped; the live
    feed flows on, on the same connection, with no transcoder restart."""
    pipeline = make_pipeline(tmp_path, spec(handshake_timeout_s=1.0))
    max_pending = pipeline.gateway.guard.limits.max_pending
    async with serving(pipeline), venue_feed(rtmp_url(pipeline)):
        await keeps_flowing(pipeline, within=20)
        await until(lambda: pipeline.runs == 1, 15, "the transcoder to start")
        live_peer = pipeline.status()["ingest"]["live_peer"]
        port = pipeline.gateway.port
        assert port is not None
        before = pipeline.health.bytes_total
        peak = dropped = 0

        async def attempt(i: int) -> None:
            # Half from one address (rate limited), half from 100 others (pending-capped).
            local = "127.0.0.1" if i < 100 else f"127.0.{1 + i // 250}.{2 + i % 250}"
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(local, 0)
                )
            except OSError:
                nonlocal dropped
                dropped += 1  # dropped by the kernel's backlog: refused too, never counted
                return
            writer.write(os.urandom(3000) if i % 2 else b"\x03")  # garbage, or stall
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            assert await closed_by_server(reader)
            writer.close()

        async def watch_pending() -> None:
            nonlocal peak
            while True:
                peak = max(peak, pipeline.status()["ingest"]["pending"])
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch_pending())
        await asyncio.gather(*(attempt(i) for i in range(200)))
        watcher.cancel()
        counts = refusals(pipeline)
        assert sum(counts.values()) + dropped == 200, (counts, dropped)
        assert counts["rate_limited"] >= 85
        assert counts["too_many_pending"] > 0
        assert counts["malformed"] + counts["handshake_timeout"] > 0
        assert peak <= max_pending
        assert pipeline.status()["ingest"]["pending"] == 0
        # The live publisher never noticed.
        assert pipeline.health.bytes_total > before
        await keeps_flowing(pipeline)
        assert pipeline.status()["ingest"]["live_peer"] == live_peer
        assert pipeline.health.connects == 1
        assert pipeline.restarts == 0
        assert pipeline.runs == 1
