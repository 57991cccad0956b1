"""`mainevent up --origins 2 --edges-per-cdn 2`: a headless player keeps playing through edge
`cdn-a` while the preferred origin process, then one of cdn-a's edge processes, is killed -9.

Real processes throughout: the packager publishes every object to both origin processes (ingest
fan-out), the shield fails over between them (the packager's own origin last), nginx balances
each CDN's two edges. Both killed processes are restarted by the stack; the restarted origin
re-lists its disk and catches up from the fan-out queue.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from mainevent.media.manifest import parse_media_playlist
from mainevent.player import play
from mainevent.testing.stack import start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]

PLAY_S = 30.0
KILL_ORIGIN_AT_S = 8.0
KILL_EDGE_AT_S = 18.0
SEGMENT_S = 2.0


def _listed(url: str) -> list[tuple[int, bool]]:
    """(MSN, gap) of the playlist at `url`; empty while the origin is down, starting or hiding
    the event (it catches up after a restart)."""
    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return []
    if r.status_code != 200:
        return []
    return [(int(s.uri.split(".")[0]), s.gap) for s in parse_media_playlist(r.text).segments]


def test_playback_survives_an_origin_then_an_edge_killed(tmp_path: Path) -> None:
    """0 stalls longer than one segment, no fatal error; the shield failed over; afterwards both
    origins list the same MSNs as the packager (none lost or reused), the killed one included."""
    stack = start_stack(
        tmp_path / "data", extra_args=("--origins", "2", "--edges-per-cdn", "2"), timeout=120
    )
    try:
        origins = stack.info["origins"]
        edges = [e for e in stack.info["edge_processes"] if e["cdn"] == "cdn-a"]
        assert len(origins) == 2, stack.info
        assert len(edges) == 2, stack.info
        url = stack.edge_master_url("cdn-a")
        rendition = "v180"
        playlist = f"/live/{stack.event}/{rendition}/index.m3u8"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_listed(origins[1]["url"] + playlist)) < 3:
            time.sleep(0.25)

        async def watch() -> tuple[object, list[str]]:
            notes: list[str] = []
            player = asyncio.create_task(play(url, duration_s=PLAY_S))
            await asyncio.sleep(KILL_ORIGIN_AT_S)
            os.kill(origins[0]["pid"], signal.SIGKILL)
            notes.append(f"killed origin {origins[0]['url']}")
            await asyncio.sleep(KILL_EDGE_AT_S - KILL_ORIGIN_AT_S)
            os.kill(edges[0]["pid"], signal.SIGKILL)
            notes.append(f"killed edge {edges[0]['url']}")
            return await player, notes

        report, notes = asyncio.run(watch())
        assert report.fatal is None, report.to_json()  # type: ignore[attr-defined]
        assert report.played_s >= PLAY_S - 1, report.to_json()  # type: ignore[attr-defined]
        # No stall longer than one segment (in total, so none single one either).
        assert report.stall_time_s <= SEGMENT_S, report.to_json()  # type: ignore[attr-defined]

        assert stack.shield_url is not None
        shield = httpx.get(f"{stack.shield_url}/healthz", timeout=5).json()
        assert shield["upstreams"][0]["failovers"] >= 1, shield

        # The restarted origin and the survivor list what the packager lists: same MSNs, no gap.
        want = _listed(stack.base_url + playlist)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = [_listed(o["url"] + playlist) for o in origins]
            if all(g[-3:] == want[-3:] for g in got):
                break
            time.sleep(0.5)
            want = _listed(stack.base_url + playlist)
        for g in got:
            assert g[-3:] == want[-3:], (got, want, notes)
            assert not any(gap for _, gap in g[-3:])
        fanout = stack.health()["ingest_fanout"]
        assert isinstance(fanout, list)
        assert all(o["breaker"] == "closed" for o in fanout), fanout
    finally:
        leftovers = stack.stop()
    assert not leftovers, f"processes left behind: {leftovers}"
