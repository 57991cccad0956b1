"""Two real origin processes fed by the ingest fan-out, one killed -9 mid-stream: the other keeps
listing every segment, the shield fails over (no MSN lost or reused), and the restarted origin
re-lists its disk and catches up from the fan-out's queue, then is preferred again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mainevent.commands.stack import free_port
from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.manifest import parse_media_playlist
from mainevent.media.origin.fanout import FanoutCore, IngestObject, ObjectKind
from mainevent.media.origin.ingest_client import FanoutPublisher
from tests.service.ingest_media import RENDITION, Media, make_media
from tests.unit.cmaf_media import FIRST_MSN

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SECRET = "failover-secret"
PLAYLIST = f"/live/demo/{RENDITION}/index.m3u8"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return make_media(Path(tmp_path_factory.mktemp("failover-media")), runs=4)


@dataclass
class OriginProcess:
    """`mainevent origin serve` on `host:port`, in network namespace `netns` when given."""

    settings: Path
    port: int
    host: str = "127.0.0.1"
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        argv = ["origin", "serve", "--settings-json", str(self.settings)]
        argv += ["--host", self.host, "--port", str(self.port)]
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        return subprocess.Popen(
            [*inside, sys.executable, "-m", "mainevent.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def start(self) -> None:
        self.proc = self.spawn()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        assert json.loads(line)["origin"] == self.url

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def settings_file(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(
        json.dumps(
            {
                "event": {
                    "id": "demo",
                    "ladder": [{"id": RENDITION, "width": 320, "height": 180, "bitrate_kbps": 300}],
                    "segment_duration_ms": 2000,
                    "window_segments": 12,
                },
                "origin": {"data_dir": str(tmp / name), "ingest_secret": SECRET},
            }
        )
    )
    return path


@pytest.fixture
async def origins(tmp_path: Path) -> AsyncIterator[list[OriginProcess]]:
    procs = [OriginProcess(settings_file(tmp_path, f"o{i}"), free_port()) for i in range(2)]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield procs
    finally:
        for p in procs:
            p.kill()


async def listed(c: httpx.AsyncClient, base: str) -> list[tuple[int, bool]]:
    try:
        r = await c.get(base + PLAYLIST)
    except httpx.ConnectError:
        return []  # a restarted origin not yet listening
    if r.status_code != 200:
        return []
    pl = parse_media_playlist(r.text)
    return [(int(s.uri.split(".")[0]), s.gap) for s in pl.segments]


async def until_listed(c: httpx.AsyncClient, base: str, msn: int) -> list[tuple[int, bool]]:
    async with asyncio.timeout(30):
        while True:
            got = await listed(c, base)
            if got and got[-1][0] >= msn:
                return got
            await asyncio.sleep(0.05)


def seg_obj(media: Media, i: int) -> IngestObject:
    s = media.segments[i]
    return IngestObject("demo", RENDITION, f"{s.msn}.m4s", ObjectKind.SEGMENT, s.data)


async def test_one_origin_killed_mid_stream(origins: list[OriginProcess], media: Media) -> None:
    """kill -9 of the preferred origin: no segment lost, no MSN reused, the shield fails over
    and returns to the restarted origin once it has caught up."""
    await kill_one_origin(origins, media)


async def kill_one_origin(origins: list[OriginProcess], media: Media) -> None:
    """The scenario (also run with the origins on hosts of their own, `test_origin_netns.py`)."""
    o0, o1 = origins
    publisher = FanoutPublisher(
        [o0.url, o1.url],
        secret=SECRET,
        core=FanoutCore(2, breaker_failures=2, breaker_open_s=0.5),
        registry=CollectorRegistry(),
    )
    shield = EdgeServer(
        EdgeConfig(name="shield", upstream=o0.url, upstreams=(o1.url,), upstream_backoff_s=0.5)
    )
    await shield.start()
    serve = asyncio.create_task(publisher.serve())
    seen: dict[int, bool] = {}  # MSN → gap, as the shield's playlists list it

    async def watch_shield(c: httpx.AsyncClient) -> None:
        got = await listed(c, shield.url)
        prev = max(seen, default=-1)
        for msn, gap in got:
            assert seen.setdefault(msn, gap) == gap, f"MSN {msn} changed meaning"
        assert not got or got[-1][0] >= prev - 1  # never more than the cache's second behind

    try:
        async with httpx.AsyncClient(timeout=10) as c:
            publisher.offer(
                IngestObject("demo", RENDITION, "init.mp4", ObjectKind.INIT, media.init.data)
            )
            for i in range(4):
                publisher.offer(seg_obj(media, i))
            for o in origins:
                await until_listed(c, o.url, FIRST_MSN + 3)
            await watch_shield(c)

            o0.kill()
            for i in range(4, 8):
                publisher.offer(seg_obj(media, i))
                await asyncio.sleep(0.3)
                await watch_shield(c)
            await until_listed(c, o1.url, FIRST_MSN + 7)
            # The shield fails over: the newest playlist and its media come from o1.
            async with asyncio.timeout(20):
                while max(seen, default=0) < FIRST_MSN + 7:
                    await watch_shield(c)
                    await asyncio.sleep(0.2)
            newest = media.segments[7]
            r = await c.get(f"{shield.url}/live/demo/{RENDITION}/{newest.msn}.m4s")
            assert (r.status_code, r.content) == (200, newest.data)
            health = (await c.get(f"{shield.url}/healthz")).json()
            assert health["upstreams"][0]["failovers"] >= 1

            await o0.start()  # same port, same data directory
            got0 = await until_listed(c, o0.url, FIRST_MSN + 7)
            for i in range(8, 12):
                publisher.offer(seg_obj(media, i))
                await asyncio.sleep(0.3)
                await watch_shield(c)
            got0 = await until_listed(c, o0.url, FIRST_MSN + 11)
            got1 = await until_listed(c, o1.url, FIRST_MSN + 11)
            want = [(FIRST_MSN + i, False) for i in range(12)]
            assert got1 == want  # the survivor listed every segment
            assert got0 == want  # the restarted origin caught up: no gap, same numbers
            for i in (5, 11):  # bytes it got from the queue and after
                seg = media.segments[i]
                r = await c.get(f"{o0.url}/live/demo/{RENDITION}/{seg.msn}.m4s")
                assert r.content == seg.data
            assert [s["dropped"] for s in publisher.statistics()] == [0, 0]
            async with asyncio.timeout(20):
                while True:  # the shield prefers o0 again (its breaker closed)
                    health = (await c.get(f"{shield.url}/healthz")).json()
                    if health["upstreams"][0]["breaker"] == "closed":
                        break
                    await c.get(f"{shield.url}{PLAYLIST}")
                    await asyncio.sleep(0.2)
            async with asyncio.timeout(20):
                while max(seen) < FIRST_MSN + 11:
                    await watch_shield(c)
                    await asyncio.sleep(0.2)
        assert sorted(seen) == list(range(min(seen), FIRST_MSN + 12))
        assert not any(seen.values())  # no gap ever listed
    finally:
        serve.cancel()
        await asyncio.gather(serve, return_exceptions=True)
        await shield.close()
