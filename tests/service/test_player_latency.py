"""Live latency and stalls of `play()` against an origin shaped like the real platform.

An in-process ASGI origin publishes a live stream on a sped-up clock: 2 s video segments (PDT =
capture time on every segment) and a separate audio rendition cut on AAC frame boundaries (each
audio segment starts 0-21 ms after the video boundary and lasts 1.984 or 2.005 s), each segment
listed 0.75 s after its last frame was captured, a 6-segment window, TD 2. Standard HLS starts
HOLD-BACK = 3 x TD behind the end of the playlist, so the measured latency (wall clock - PDT at
the playhead, SPEC.md §6) must be hold-back + publish delay (+ how stale the playlist was when
the player started) and, with segments arriving in time, there must be no stall.
"""

from __future__ import annotations

import asyncio
import math
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mainevent.media.manifest import (
    MediaPlaylist,
    MediaRendition,
    MultivariantPlaylist,
    SegmentEntry,
    Variant,
    render_media_playlist,
    render_multivariant_playlist,
)
from mainevent.player import PlaybackReport, play

SPEED = 8.0
TD = 2
SEG_US = TD * 1_000_000
WINDOW = 6
PUBLISH_DELAY_S = 0.75
HOLD_BACK_S = 3 * TD
HLS = "application/vnd.apple.mpegurl"
LADDER = {"v180": 200_000, "v360": 600_000}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # play() uses asyncio.TaskGroup


class ScaledClock:
    """Epoch clock running SPEED x real time, and a sleep in its seconds."""

    def __init__(self) -> None:
        self._epoch0 = time.time()
        self._mono0 = time.monotonic()

    def __call__(self) -> float:
        return self._epoch0 + (time.monotonic() - self._mono0) * SPEED

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / SPEED)

    async def sleep_until(self, t: float) -> None:
        await self.sleep(max(0.0, t - self()))


def video_start_us(n: int) -> int:
    return n * SEG_US


def audio_start_us(n: int) -> int:
    """First AAC frame (1024 samples at 48 kHz) boundary at or after video boundary n."""
    frames = -(-n * 375 // 4)  # 93.75 frames per 2 s
    return frames * 1024 * 1_000_000 // 48_000


class PlatformOrigin:
    """Segment n covers [2n, 2n + 2) s of the clock (capture time) and is listed, with PDT,
    PUBLISH_DELAY_S after its end; segments from `first_msn` on exist (the stream began then).
    """

    def __init__(self, clock: ScaledClock, first_msn: int) -> None:
        self.clock = clock
        self.first_msn = first_msn
        self.early_requests = 0  # segments asked for before they were listed
        self.app = Starlette(
            routes=[
                Route("/live/demo/master.m3u8", self.master),
                Route("/live/demo/{rendition}/index.m3u8", self.media),
                Route("/live/demo/{rendition}/init.mp4", self.init),
                Route("/live/demo/{rendition}/{msn:int}.m4s", self.segment),
            ]
        )

    def published_at(self, n: int) -> float:
        return video_start_us(n + 1) / 1_000_000 + PUBLISH_DELAY_S

    def last_listed(self) -> int:
        return math.floor((self.clock() - PUBLISH_DELAY_S) * 1_000_000 / SEG_US) - 1

    async def master(self, request: Request) -> Response:
        text = render_multivariant_playlist(
            MultivariantPlaylist(
                variants=tuple(
                    Variant(
                        uri=f"{name}/index.m3u8",
                        bandwidth=bps + 128_000,
                        codecs="avc1.42c01e,mp4a.40.2",
                        resolution=(int(name[1:]) * 16 // 9, int(name[1:])),
                        audio="aud",
                    )
                    for name, bps in LADDER.items()
                ),
                media=(
                    MediaRendition(
                        type="AUDIO",
                        group_id="aud",
                        name="a128",
                        uri="a128/index.m3u8",
                        default=True,
                        autoselect=True,
                    ),
                ),
            )
        )
        return PlainTextResponse(text, media_type=HLS)

    async def media(self, request: Request) -> Response:
        start = audio_start_us if request.path_params["rendition"] == "a128" else video_start_us
        last = self.last_listed()
        first = max(self.first_msn, last - WINDOW + 1)
        segments = tuple(
            SegmentEntry(
                uri=f"{n}.m4s",
                duration_us=start(n + 1) - start(n),
                program_date_time_ms=start(n) // 1000,
                map_uri="init.mp4" if n == first else None,
            )
            for n in range(first, last + 1)
        )
        playlist = MediaPlaylist(target_duration_s=TD, media_sequence=first, segments=segments)
        return PlainTextResponse(render_media_playlist(playlist), media_type=HLS)

    async def init(self, request: Request) -> Response:
        return Response(b"\0" * 800, media_type="video/mp4")

    async def segment(self, request: Request) -> Response:
        msn = request.path_params["msn"]
        if msn > self.last_listed():
            self.early_requests += 1
            return PlainTextResponse("not yet", status_code=404)
        return Response(b"\0" * 20_000, media_type="video/iso.segment")


async def run_play(origin: PlatformOrigin, duration_s: float) -> PlaybackReport:
    transport = httpx.ASGITransport(app=origin.app)
    async with httpx.AsyncClient(transport=transport) as client:
        return await play(
            "http://cdn/live/demo/master.m3u8",
            duration_s=duration_s,
            client=client,
            clock=origin.clock,
            sleep=origin.clock.sleep,
        )


@pytest.mark.anyio
async def test_fresh_stream_starts_hold_back_behind_and_never_stalls() -> None:
    """Play requested as soon as a new stream lists its first segment (what `bench/latency.py`
    does after `mainevent up` is ready): the player waits until the playlist holds 3 x TD, then
    plays at hold-back + publish delay (+ < 1 reload interval), with no stall."""
    clock = ScaledClock()
    first = math.floor(clock() * 1_000_000 / SEG_US) + 1
    origin = PlatformOrigin(clock, first)
    await clock.sleep_until(origin.published_at(first) + 0.05)
    assert origin.last_listed() == first
    requested_at = clock()
    report = await run_play(origin, duration_s=30.0)
    assert report.fatal is None
    assert report.http_errors == {}
    assert origin.early_requests == 0
    assert report.stalls == 0
    assert report.stall_time_s == 0
    assert report.played_s == pytest.approx(30.0, abs=0.5)
    # it waited for segments first+1 and first+2 to be listed (4 s), within one reload interval
    assert report.startup_s is not None
    assert 2 * TD <= report.startup_s <= 3 * TD + 0.5
    # Where it went: the wait for the hold-back is in the media playlists phase; the three
    # phases add up to the start-up.
    multivariant, playlists, media = report.startup_phases_s
    assert sum(report.startup_phases_s) == pytest.approx(report.startup_s, abs=1e-6)
    assert playlists >= 2 * TD - 0.5
    assert multivariant < 0.5
    assert media < 0.5
    lat = report.latency
    assert lat.p50_s is not None
    assert lat.max_s is not None
    assert lat.samples >= 100
    # SPEC.md §6: wall clock - PDT at the playhead. The playhead started at the first segment
    # (exactly 3 x TD before the end of a 3-segment playlist) when playback started.
    start_pdt_s = video_start_us(first) / 1_000_000
    assert lat.p50_s == pytest.approx(requested_at + report.startup_s - start_pdt_s, abs=0.05)
    floor = HOLD_BACK_S + PUBLISH_DELAY_S
    assert floor - 0.1 <= lat.p50_s <= floor + TD + 0.3
    assert lat.max_s - lat.p50_s < 0.05  # 1x playback, no stall: latency does not drift


@pytest.mark.anyio
async def test_running_stream_latency_is_hold_back_plus_publish_delay() -> None:
    """Play requested just after a segment is listed on a full window: latency = wall clock -
    PDT at the playhead = 3 x TD + 0.75 s, and no stall over 40 s."""
    clock = ScaledClock()
    origin = PlatformOrigin(clock, first_msn=0)
    newest = origin.last_listed() + 1
    await clock.sleep_until(origin.published_at(newest) + 0.05)
    assert origin.last_listed() == newest
    requested_at = clock()
    report = await run_play(origin, duration_s=40.0)
    assert report.fatal is None
    assert report.http_errors == {}
    assert report.stalls == 0
    assert report.startup_s is not None
    assert report.startup_s < 0.5
    lat = report.latency
    assert lat.p50_s is not None
    assert lat.max_s is not None
    # SPEC.md §6: wall clock - PDT at the playhead, the playhead having started 3 x TD before
    # the end of the playlist loaded at the request.
    start_pdt_s = video_start_us(newest + 1) / 1_000_000 - HOLD_BACK_S
    assert lat.p50_s == pytest.approx(requested_at + report.startup_s - start_pdt_s, abs=0.05)
    assert lat.p50_s == pytest.approx(HOLD_BACK_S + PUBLISH_DELAY_S, abs=0.5)
    assert lat.max_s - lat.p50_s < 0.05
