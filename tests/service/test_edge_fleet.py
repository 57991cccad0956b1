"""Two edge processes of one CDN behind the generated nginx, missing to one shield (a stub origin
here): a viewer's GETs keep being answered when one edge is killed -9, and the killed edge is
restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import httpx
import pytest

from mainevent.commands.scaleout import EdgeFleet, run_all
from mainevent.commands.stack import free_port
from mainevent.common.nginx import find_nginx
from mainevent.media.edge import EdgeConfig, EdgeServer
from mainevent.media.edge.stub import StubObject, StubUpstream

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(find_nginx() is None, reason="Debian nginx is not installed"),
]

PLAYLIST = "/live/final/v360/index.m3u8"
SEG = "/live/final/v360/7.m4s"


async def test_a_cdn_keeps_answering_when_one_of_its_edges_is_killed(tmp_path: Path) -> None:
    """Every GET through the CDN's address is answered 200 while an edge dies and comes back."""
    stub = StubUpstream()
    await stub.start()
    stub.set_playlist_msn(PLAYLIST, 7)
    stub.publish(SEG, StubObject(b"seg" * 1000, cache_control="max-age=60"))
    shield = EdgeServer(EdgeConfig("shield", stub.url))
    await shield.start()
    fleet = EdgeFleet.plan(
        ["cdn-a"],
        per_cdn=2,
        host="127.0.0.1",
        listen_ports=[free_port()],
        edge_ports=[[free_port(), free_port()]],
        shield_urls=[shield.url],
        regions={"cdn-a": ("eu",)},
        workdir=tmp_path / "edge-lb",
        admin_secret=None,
        token_keys=None,
    )
    runner = asyncio.create_task(run_all([*fleet.children, fleet.balancer()]))
    cdn = fleet.urls["cdn-a"]
    statuses: list[int] = []
    try:
        async with asyncio.timeout(60):
            for c in fleet.children:
                await c.ready.wait()
        async with httpx.AsyncClient(timeout=10) as client:
            async with asyncio.timeout(30):
                while True:  # nginx up (it starts beside the edges)
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(cdn + PLAYLIST)).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            victim = fleet.children[0]
            assert victim.proc is not None
            first_pid = victim.proc.pid
            for i in range(60):
                if i == 10:
                    os.kill(first_pid, signal.SIGKILL)
                r = await client.get(cdn + (SEG if i % 2 else PLAYLIST))
                statuses.append(r.status_code)
                await asyncio.sleep(0.05)
            async with asyncio.timeout(30):
                while victim.proc is None or victim.proc.pid == first_pid:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert victim.restarts == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await shield.close()
        await stub.stop()
    assert statuses == [200] * 60
    assert all(c.proc is not None and c.proc.returncode is not None for c in fleet.children)
