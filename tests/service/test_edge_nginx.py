"""Interop: Debian nginx, configured by `nginx_shield_config`, as the shield in front of our origin."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from mainevent.commands.stack import _Server
from mainevent.common.tokens import TokenSigner
from mainevent.media.cmaf import InitSection, Part, Segment, TrackInfo
from mainevent.media.edge.nginx import NginxShield, find_nginx, write_config
from mainevent.media.origin.app import create_app
from mainevent.media.origin.live import LiveEvent, RenditionSpec
from mainevent.media.store import LocalSegmentStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TS = 90_000
MSN0 = 900_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def segment(msn: int, size: int) -> Segment:
    d = 2 * TS
    parts = tuple(
        Part(msn, k, msn * d + k * d // 4, d // 4, k == 0, bytes([k, msn % 256]) * (size // 8))
        for k in range(4)
    )
    return Segment(msn, msn * d, d, TS, parts, b"".join(p.data for p in parts))


class Recorder:
    """ASGI wrapper that records every request target reaching the origin.

    Blocking-reload requests (`_HLS_msn`) are answered here with a cacheable playlist
    (Appendix B: ≈ 6 × TD), so the key test does not depend on the origin's latency mode.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: Counter[str] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            q = scope.get("query_string", b"").decode()
            self.seen[scope["path"] + (f"?{q}" if q else "")] += 1
            if "_HLS_msn=" in q:
                body = f"#EXTM3U\n# {q}\n".encode()
                headers = [(b"content-type", b"application/vnd.apple.mpegurl")]
                headers += [
                    (b"cache-control", b"max-age=12"),
                    (b"content-length", b"%d" % len(body)),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@dataclass
class Interop:
    url: str
    origin: Recorder
    event: LiveEvent
    workdir: Path


@pytest.fixture
async def interop(tmp_path: Path) -> AsyncIterator[Interop]:
    nginx = find_nginx()
    if nginx is None:
        pytest.skip(
            "nginx is not installed and could not be installed (make setup installs Debian's nginx as root)"
        )
    ev = LiveEvent(
        event_id="final",
        renditions=[RenditionSpec("v360", "video", 600, 640, 360)],
        store=LocalSegmentStore(tmp_path / "store"),
        segment_duration_ms=2000,
        window_segments=3,
        fps=30,
    )
    await ev.on_init(
        "v360", InitSection(b"VINIT", TrackInfo(1, "video", TS, "avc1.64001e", 640, 360))
    )
    for msn in range(MSN0, MSN0 + 3):
        await ev.on_segment("v360", segment(msn, 200_000))
    recorder = Recorder(create_app({"final": ev}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    origin_port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(recorder, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    port = free_port()
    workdir = tmp_path / "nginx"
    conf = write_config(
        NginxShield(
            port, "127.0.0.1", origin_port, workdir, user="root" if os.geteuid() == 0 else None
        )
    )
    proc = await asyncio.create_subprocess_exec(
        nginx,
        "-p",
        str(workdir),
        "-c",
        str(conf),
        "-e",
        str(workdir / "error.log"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                await w.wait_closed()
                break
            except OSError:
                assert proc.returncode is None, (workdir / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                await asyncio.sleep(0.05)
        yield Interop(f"http://127.0.0.1:{port}", recorder, ev, workdir)
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        server.should_exit = True
        await task


async def test_nginx_collapses_a_cold_segment_storm(interop: Interop) -> None:
    """300 concurrent requests for an uncached segment through nginx: 1 origin fetch, same bytes."""
    path = f"/live/final/v360/{MSN0 + 2}.m4s"
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=400)) as c:
        rs = await asyncio.gather(
            *(c.get(interop.url + path + f"?CMCD=sid%3D%22{i}%22") for i in range(300))
        )
    assert {r.status_code for r in rs} == {200}
    assert len({r.content for r in rs}) == 1
    assert len(rs[0].content) == 200_000
    assert sum(n for t, n in interop.origin.seen.items() if t.startswith(path)) == 1


async def test_nginx_cache_key_has_ll_hls_params_but_not_cmcd(interop: Interop) -> None:
    """_HLS_msn/_HLS_part/_HLS_skip split the cache; CMCD and _HLS_throughput neither split nor reach the origin."""
    base = interop.url + "/live/final/v360/index.m3u8"
    m = MSN0 + 2  # already published: the origin answers at once, LL-HLS or not
    async with httpx.AsyncClient(timeout=10) as c:
        for q in (
            f"_HLS_msn={m}&CMCD=a",
            f"_HLS_msn={m}&CMCD=b&_HLS_throughput=9",
            f"_HLS_msn={m}",
        ):
            assert (await c.get(f"{base}?{q}")).status_code == 200
        await c.get(f"{base}?_HLS_msn={m}&_HLS_part=0")
        await c.get(f"{base}?_HLS_msn={m}&_HLS_skip=YES")
    seen = {t: n for t, n in interop.origin.seen.items() if "index.m3u8" in t}
    assert seen == {
        f"/live/final/v360/index.m3u8?_HLS_msn={m}&": 1,
        f"/live/final/v360/index.m3u8?_HLS_msn={m}&_HLS_part=0&": 1,
        f"/live/final/v360/index.m3u8?_HLS_msn={m}&_HLS_skip=YES&": 1,
    }


async def test_nginx_strips_the_token_from_path_and_key(interop: Interop) -> None:
    """/t/<token>/live/... reaches the origin as /live/... and shares the cache entry."""
    signer = TokenSigner({"k1": "00112233445566778899aabbccddeeff"})
    now = int(time.time())
    token = signer.sign(acl="/live/final/*", start=now, expires=now + 600)
    path = f"/live/final/v360/{MSN0 + 1}.m4s"
    async with httpx.AsyncClient(timeout=10) as c:
        plain = await c.get(interop.url + path)
        tokened = await c.get(f"{interop.url}/t/{token}{path}")
    assert tokened.status_code == 200
    assert tokened.content == plain.content
    assert tokened.headers["x-cache"] == "HIT"
    assert interop.origin.seen[path] == 1
    assert not any(t.startswith("/t/") for t in interop.origin.seen)
