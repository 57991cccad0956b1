"""Headless player `play()` against an in-process synthetic live origin (ASGI, no sockets).

Time runs 8x faster than real time: the player and the origin share a scaled clock and the
player sleeps in that clock's seconds, so a 2 s segment takes 0.25 s and a test seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

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
from mainevent.player import PlaybackReport, PlayerConfig, play

SPEED = 8.0
SEG_S = 2
WINDOW = 6
LADDER = {"v360": 800_000, "v720": 3_000_000}
AUDIO = ("a128", 128_000)
HLS = "application/vnd.apple.mpegurl"


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


class LiveOrigin:
    """Epoch-locked synthetic live stream: segment n covers [n x 2 s, (n+1) x 2 s) of the clock.

    A segment is listed once complete. `hold(start, end)` freezes the playlists between those
    clock times (the encoder stalled); `failing_hosts` answer 500 to everything;
    `throughput_bps` paces segment bodies like a slow link.
    """

    def __init__(self, clock: ScaledClock) -> None:
        self.clock = clock
        self.holds: list[tuple[float, float]] = []
        self.failing_hosts: set[str] = set()
        self.throughput_bps: float | None = None
        self.requests: list[tuple[str, str]] = []  # (host, path)
        self.app = Starlette(
            routes=[
                Route("/live/demo/master.m3u8", self.master),
                Route("/live/demo/{rendition}/index.m3u8", self.media),
                Route("/live/demo/{rendition}/init.mp4", self.init),
                Route("/live/demo/{rendition}/{msn:int}.m4s", self.segment),
            ]
        )

    def hold(self, start: float, end: float) -> None:
        self.holds.append((start, end))

    def _published_until(self) -> float:
        now = self.clock()
        for start, end in self.holds:
            if start <= now < end:
                return start
        return now

    def _failing(self, request: Request) -> bool:
        self.requests.append((request.url.hostname or "", request.url.path))
        return request.url.hostname in self.failing_hosts

    async def master(self, request: Request) -> Response:
        if self._failing(request):
            return PlainTextResponse("boom", status_code=500)
        text = render_multivariant_playlist(
            MultivariantPlaylist(
                variants=tuple(
                    Variant(
                        uri=f"{name}/index.m3u8",
                        bandwidth=bps + AUDIO[1],
                        codecs="avc1.64001f,mp4a.40.2",
                        resolution=(int(name[1:]) * 16 // 9, int(name[1:])),
                        audio="aud",
                    )
                    for name, bps in LADDER.items()
                ),
                media=(
                    MediaRendition(
                        type="AUDIO",
                        group_id="aud",
                        name="main",
                        uri=f"{AUDIO[0]}/index.m3u8",
                        default=True,
                        autoselect=True,
                    ),
                ),
            )
        )
        return PlainTextResponse(text, media_type=HLS)

    async def media(self, request: Request) -> Response:
        if self._failing(request):
            return PlainTextResponse("boom", status_code=500)
        last = int(self._published_until() // SEG_S) - 1  # last complete segment
        first = last - WINDOW + 1
        segments = tuple(
            SegmentEntry(
                uri=f"{n}.m4s",
                duration_us=SEG_S * 1_000_000,
                program_date_time_ms=n * SEG_S * 1000,
                map_uri="init.mp4" if n == first else None,
            )
            for n in range(first, last + 1)
        )
        playlist = MediaPlaylist(target_duration_s=SEG_S, media_sequence=first, segments=segments)
        return PlainTextResponse(render_media_playlist(playlist), media_type=HLS)

    async def init(self, request: Request) -> Response:
        if self._failing(request):
            return PlainTextResponse("boom", status_code=500)
        return Response(b"\0" * 800, media_type="video/mp4")

    async def segment(self, request: Request) -> Response:
        if self._failing(request):
            return PlainTextResponse("boom", status_code=500)
        rendition = request.path_params["rendition"]
        msn = request.path_params["msn"]
        if (msn + 1) * SEG_S > self._published_until():
            return PlainTextResponse("not yet", status_code=404)
        bps = AUDIO[1] if rendition == AUDIO[0] else LADDER[rendition]
        size = bps * SEG_S // 8
        if self.throughput_bps is not None:
            await self.clock.sleep(size * 8 / self.throughput_bps)
        return Response(b"\0" * size, media_type="video/iso.segment")


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock()


@pytest.fixture
def origin(clock: ScaledClock) -> LiveOrigin:
    return LiveOrigin(clock)


async def run_play(
    origin: LiveOrigin,
    url: str = "http://cdn-a/live/demo/master.m3u8",
    *,
    duration_s: float = 12.0,
    fallback_urls: tuple[str, ...] = (),
    config: PlayerConfig | None = None,
) -> PlaybackReport:
    transport = httpx.ASGITransport(app=origin.app)
    async with httpx.AsyncClient(transport=transport) as client:
        return await play(
            url,
            duration_s=duration_s,
            client=client,
            fallback_urls=fallback_urls,
            clock=origin.clock,
            sleep=origin.clock.sleep,
            config=config,
        )


@pytest.mark.anyio
async def test_plays_live_stream_without_stalls(origin: LiveOrigin) -> None:
    """Segments published in time: quick startup, no stall, latency near 3 x TD + one segment."""
    report = await run_play(origin)
    assert report.fatal is None
    assert report.startup_s is not None
    assert 0 < report.startup_s < 1.0
    assert report.stalls == 0
    assert report.stall_time_s == 0
    assert report.played_s == pytest.approx(12.0, abs=0.5)
    assert report.latency.p50_s is not None
    assert report.latency.max_s is not None
    assert 3 * SEG_S <= report.latency.p50_s <= 4 * SEG_S + 0.5
    assert report.latency.max_s <= 4 * SEG_S + 0.5
    assert report.http_errors == {}
    # video and audio both fetched, with their init sections
    paths = [p for _h, p in origin.requests]
    assert any(p.startswith("/live/demo/a128/") and p.endswith(".m4s") for p in paths)
    assert "/live/demo/a128/init.mp4" in paths
    assert report.segments_fetched >= 2 * (12 // SEG_S)
    assert report.bytes_fetched > 0


@pytest.mark.anyio
async def test_reloads_follow_the_spec_schedule(origin: LiveOrigin) -> None:
    """Media playlists are reloaded about once per segment duration, not hammered."""
    await run_play(origin, duration_s=12.0)
    reloads = [p for _h, p in origin.requests if p == "/live/demo/v720/index.m3u8"]
    # ~14 s of session at one reload per 2 s (+ TD/2 retries when unchanged)
    assert 4 <= len(reloads) <= 16


@pytest.mark.anyio
async def test_abr_climbs_on_a_fast_link(origin: LiveOrigin) -> None:
    """Starting low (500 kbit/s assumed), the player moves up to 720p on a fast link."""
    report = await run_play(origin)
    names = [r.rendition for r in report.renditions]
    assert names[0] == "v360"
    assert names[-1] == "v720"


@pytest.mark.anyio
async def test_abr_stays_low_on_a_slow_link(origin: LiveOrigin) -> None:
    """On a 1.6 Mbit/s link the 3 Mbit/s rung is never fetched."""
    origin.throughput_bps = 1_600_000
    report = await run_play(origin)
    assert [r.rendition for r in report.renditions] == ["v360"]
    assert not any("/v720/" in p and p.endswith(".m4s") for _h, p in origin.requests)
    assert report.stalls == 0


@pytest.mark.anyio
async def test_stall_counted_when_origin_withholds_segments(origin: LiveOrigin) -> None:
    """When no new segment is published for 12 s, the buffer runs dry and a stall is counted."""
    start = origin.clock()
    origin.hold(start + 2, start + 14)
    report = await run_play(origin, duration_s=18.0)
    assert report.fatal is None
    assert report.stalls >= 1
    assert report.stall_time_s >= 2.0
    assert report.played_s + report.stall_time_s == pytest.approx(18.0, abs=0.5)
    assert report.latency.max_s is not None
    assert report.latency.p50_s is not None
    assert report.latency.max_s > report.latency.p50_s + 1.0  # latency grew while stalled


@pytest.mark.anyio
async def test_fails_over_to_second_base_url(origin: LiveOrigin) -> None:
    """The first CDN answers 500: after 3 failed attempts the player moves to the second."""
    origin.failing_hosts.add("cdn-a")
    report = await run_play(origin, fallback_urls=("http://cdn-b",))
    assert report.fatal is None
    assert report.failovers == 1
    assert report.final_url == "http://cdn-b/live/demo/master.m3u8"
    assert report.http_errors == {"500": 3}
    assert report.startup_s is not None
    assert report.stalls == 0
    assert {h for h, p in origin.requests if p.endswith(".m4s")} == {"cdn-b"}


@pytest.mark.anyio
async def test_fails_over_mid_stream(origin: LiveOrigin) -> None:
    """A CDN that dies during playback is left for the fallback before the buffer runs out."""

    async def kill_cdn_a() -> None:
        await origin.clock.sleep(4)
        origin.failing_hosts.add("cdn-a")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(kill_cdn_a())
        task = tg.create_task(
            run_play(origin, fallback_urls=("http://cdn-b/live/demo/master.m3u8",))
        )
    report = task.result()
    assert report.fatal is None
    assert report.failovers >= 1
    assert report.stalls == 0
    assert report.final_url.startswith("http://cdn-b/")


@pytest.mark.anyio
async def test_fatal_when_every_base_fails(origin: LiveOrigin) -> None:
    """With no working CDN the session ends with a fatal error instead of hanging."""
    origin.failing_hosts.update({"cdn-a", "cdn-b"})
    config = PlayerConfig(failover_after=2, fatal_after=4)
    report = await run_play(origin, fallback_urls=("http://cdn-b",), config=config)
    assert report.fatal is not None
    assert "500" in report.fatal
    assert report.startup_s is None
    assert report.http_errors == {"500": 4}
    assert report.failovers == 1  # a -> b after 2 attempts; fatal at the 4th


@pytest.mark.anyio
async def test_plays_a_media_playlist_given_directly(origin: LiveOrigin) -> None:
    """A media playlist URL plays as a single rendition (no ABR, no separate audio)."""
    report = await run_play(origin, "http://cdn-a/live/demo/v360/index.m3u8", duration_s=4.0)
    assert report.fatal is None
    assert [r.rendition for r in report.renditions] == ["v360"]
    assert report.stalls == 0
    assert not any("/a128/" in p for _h, p in origin.requests)


@pytest.mark.anyio
async def test_report_serialises_to_json(origin: LiveOrigin) -> None:
    """The report is plain JSON for load-test tooling."""
    report = await run_play(origin, duration_s=4.0)
    data = json.loads(report.to_json())
    assert data["stalls"] == 0
    assert data["renditions"][0][1] == "v360"
    assert set(data["latency"]) == {"samples", "p50_s", "p95_s", "max_s"}
    assert data["fatal"] is None


def test_cli_registers_play(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mainevent play URL --duration S --fallback URL --json` parses into the play command."""
    from mainevent.cli import build_parser

    args = build_parser().parse_args(
        [
            "play",
            "http://x/live/demo/master.m3u8",
            "--duration",
            "5",
            "--fallback",
            "http://y",
            "--json",
        ]
    )
    assert args.command == "play"
    assert args.duration == 5.0
    assert args.fallback == ["http://y"]
    assert args.json is True
    run: Callable[..., int] = args.func
    assert callable(run)
