"""Origin down for 10 s behind a real shield and edge: stale-if-error, then recovery without a herd.

Everything is a real process: `mainevent up --no-edges` (feed, pipeline, origin), a shield
(`mainevent edge serve`, upstream = origin) and edge `cdn-a` (upstream = shield). Light players
reload a media playlist through the edge and fetch its newest segments; the origin is stopped
with Ctrl-C, kept down for 10 s while viewers keep playing and new ones join, then started again
on the same port and data dir. The restarted origin's request counter starts at zero and the
shield is its only client, so it counts exactly what the recovery cost the origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mainevent.commands.stack import free_port
from mainevent.media.manifest import parse_media_playlist
from mainevent.testing.probes import metric
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OUTAGE_S = 10.0
WARM_S = 6.0
RECOVERY_S = 12.0
"""How long players keep going once the origin is back (a herd would happen here)."""
PLAYERS = 6
POLL_S = 0.25
RENDITIONS = ("v360", "v180")
STACK_ARGS = ("--no-edges",)
PLAYLIST_MAX_AGE_S = 1
"""The origin's Cache-Control for live media playlists: max-age = target duration / 2."""


@dataclass(frozen=True, slots=True)
class Response:
    """One request made through the edge."""

    at: float
    took_s: float
    phase: str
    kind: str
    """`master`, `playlist`, `init` or `segment`."""
    url: str
    status: int
    """0 when no HTTP response came back at all."""
    cache: str
    age: int
    known: bool
    """The edge had served this URL with 200 before this request was made."""
    last_msn: int | None = None
    last_pdt_ms: int | None = None


@dataclass
class Run:
    """What the viewers saw; `phase` is set by the test as it breaks and restores the origin."""

    phase: str = "warm"
    responses: list[Response] = field(default_factory=list)
    served: set[str] = field(default_factory=set)
    rewinds: list[str] = field(default_factory=list)

    def of(self, *phases: str, kinds: tuple[str, ...] = ()) -> list[Response]:
        return [r for r in self.responses if r.phase in phases and (not kinds or r.kind in kinds)]


class EdgeProcess:
    """`mainevent edge serve` in a subprocess, its output in a log file."""

    def __init__(self, name: str, upstream: str, log_dir: Path) -> None:
        self.name = name
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "mainevent.cli", "edge", "serve"),
                    *("--name", name, "--upstream", upstream, "--port", str(port)),
                    *("--stale-if-error", "60", "--log-level", "warning"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"edge {self.name} did not start:\n{self.log()}")

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).raise_for_status().text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        """Ctrl-C, as an operator would; killed only if it hangs. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Origin:
    """The `mainevent up` process running now (replaced when the origin restarts)."""

    stack: RunningStack | None = None

    def metrics(self) -> str:
        assert self.stack is not None
        return httpx.get(f"{self.stack.base_url}/metrics", timeout=5).raise_for_status().text

    def health(self) -> dict[str, object]:
        assert self.stack is not None
        return self.stack.health()

    def stop(self) -> None:
        stack, self.stack = self.stack, None
        if stack is not None:
            leftovers = stack.stop()
            assert not leftovers, f"processes left behind after Ctrl-C: {leftovers}"


@pytest.fixture
def cleanup() -> Iterator[contextlib.ExitStack]:
    """Stops every process the test started, in reverse order, whether it passed or not."""
    with contextlib.ExitStack() as stack:
        yield stack


async def fetch(http: httpx.AsyncClient, run: Run, kind: str, url: str) -> httpx.Response | None:
    """GET `url` through the edge and record what came back."""
    phase, known, t0 = run.phase, url in run.served, time.monotonic()
    try:
        r = await http.get(url)
    except httpx.HTTPError:
        took = time.monotonic() - t0
        run.responses.append(Response(t0, took, phase, kind, url, 0, "", -1, known))
        return None
    took = time.monotonic() - t0
    last_msn = last_pdt = None
    if r.status_code == 200:
        run.served.add(url)
        if kind == "playlist":
            pl = parse_media_playlist(r.text)
            last_msn = pl.last_msn
            last_pdt = pl.segments[-1].program_date_time_ms if pl.segments else None
    cache, age = r.headers.get("x-cache", ""), int(r.headers.get("age", "-1"))
    run.responses.append(
        Response(t0, took, phase, kind, url, r.status_code, cache, age, known, last_msn, last_pdt)
    )
    return r


def media(playlist_url: str, text: str) -> tuple[str | None, list[str]]:
    """The init section's URL and the segments' URLs, oldest first. EXT-X-GAP entries (the hole
    the outage leaves in the feed) are left out: players never fetch them."""
    base = playlist_url.rsplit("/", 1)[0]
    segments = parse_media_playlist(text).segments
    init = next((f"{base}/{s.map_uri}" for s in segments if s.map_uri), None)
    return init, [f"{base}/{s.uri}" for s in segments if not s.gap]


async def play(i: int, edge: str, event: str, run: Run, stop: asyncio.Event) -> None:
    """One light player: reload the media playlist, fetch the init section once and the newest
    two segments it lacks; the media sequence it sees must never go back."""
    url = f"{edge}/live/{event}/{RENDITIONS[i % len(RENDITIONS)]}/index.m3u8"
    have: set[str] = set()
    last_msn = -1
    await asyncio.sleep(i * POLL_S / PLAYERS)  # spread the players over the poll interval
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        while not stop.is_set():
            r = await fetch(http, run, "playlist", url)
            if r is not None and r.status_code == 200:
                msn = parse_media_playlist(r.text).last_msn
                if msn < last_msn:
                    run.rewinds.append(f"player {i}: {last_msn} → {msn} ({run.phase})")
                last_msn = max(last_msn, msn)
                init, segments = media(url, r.text)
                wanted = ([init] if init else []) + segments[-2:]
                for target in wanted:
                    if target not in have:
                        kind = "init" if target == init else "segment"
                        s = await fetch(http, run, kind, target)
                        if s is not None and s.status_code == 200:
                            have.add(target)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)


async def join(edge: str, event: str, run: Run) -> None:
    """A viewer joining now: the multivariant playlist, then per rendition its playlist, init
    section and every segment listed (a player starting at the back of the window)."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        await fetch(http, run, "master", f"{edge}/live/{event}/master.m3u8")
        for rendition in RENDITIONS:
            url = f"{edge}/live/{event}/{rendition}/index.m3u8"
            r = await fetch(http, run, "playlist", url)
            if r is not None and r.status_code == 200:
                init, segments = media(url, r.text)
                if init:
                    await fetch(http, run, "init", init)
                for seg in segments:
                    await fetch(http, run, "segment", seg)


def test_origin_down_10s_edges_serve_stale_then_recover_without_herd(
    tmp_path: Path, cleanup: contextlib.ExitStack
) -> None:
    """Origin down 10 s: the edge serves what it had (stale); on return ≈ 1 fetch per object."""
    data_dir = tmp_path / "origin"
    origin = Origin(start_stack(data_dir, extra_args=STACK_ARGS))
    cleanup.callback(origin.stop)
    assert origin.stack is not None
    event = origin.stack.event
    origin_url = origin.stack.base_url
    origin_port = int(origin_url.rsplit(":", 1)[1])
    shield = EdgeProcess("shield", origin_url, tmp_path)
    cleanup.callback(shield.stop)
    shield.wait_listening()
    edge = EdgeProcess("cdn-a", shield.url, tmp_path)
    cleanup.callback(edge.stop)
    edge.wait_listening()

    run = Run()
    marks: dict[str, float] = {}
    scrapes: dict[str, str] = {}

    async def drill() -> None:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            for i in range(PLAYERS):
                tg.create_task(play(i, edge.url, event, run, stop))
            try:
                await asyncio.sleep(WARM_S)
                await join(edge.url, event, run)  # warms the edge with what joiners will ask
                scrapes["shield_before"] = await asyncio.to_thread(shield.metrics)
                run.phase = "stopping"
                marks["stopping"] = time.monotonic()
                await asyncio.to_thread(origin.stop)
                run.phase = "down"
                marks["down"] = time.monotonic()
                for at in (2.0, OUTAGE_S - 2):  # viewers who join while the origin is away
                    await asyncio.sleep(marks["down"] + at - time.monotonic())
                    await join(edge.url, event, run)
                await asyncio.sleep(marks["down"] + OUTAGE_S - time.monotonic())
                scrapes["shield_down"] = await asyncio.to_thread(shield.metrics)
                scrapes["edge_down"] = await asyncio.to_thread(edge.metrics)
                run.phase = "restarting"
                marks["restart_wall"] = time.time()
                origin.stack = await asyncio.to_thread(
                    start_stack, data_dir, extra_args=STACK_ARGS, port=origin_port
                )
                run.phase = "back"
                marks["back"] = time.monotonic()
                scrapes["shield_back"] = await asyncio.to_thread(shield.metrics)
                await asyncio.sleep(RECOVERY_S)
                marks["end"] = time.monotonic()
                scrapes["shield_end"] = await asyncio.to_thread(shield.metrics)
                scrapes["origin_end"] = await asyncio.to_thread(origin.metrics)
                uptime = (await asyncio.to_thread(origin.health))["uptime_s"]
                assert isinstance(uptime, int | float)
                marks["origin_uptime"] = uptime
            finally:
                stop.set()

    asyncio.run(drill())

    # --- while the origin was down ------------------------------------------------------
    outage = ("stopping", "down", "restarting")
    lists = ("master", "playlist")
    objects = ("init", "segment")
    bad_lists = [r for r in run.responses if r.kind in lists and r.status != 200]
    assert not bad_lists, f"playlists not served by the edge: {bad_lists[:5]}"
    down_lists = run.of("down", kinds=lists)
    assert {r.cache for r in down_lists} <= {"STALE", "HIT"}
    assert any(r.cache == "STALE" for r in down_lists)
    slowest_s = max(r.took_s for r in run.of(*outage, kinds=lists))
    assert slowest_s < 2, "stale playlists must not wait long for a dead origin"
    down_objects = run.of(*outage, kinds=objects)
    bad_known = [r for r in down_objects if r.known and r.status != 200]
    assert not bad_known, f"cached media not served while the origin was down: {bad_known[:5]}"
    known_down = [r for r in run.of("down", kinds=objects) if r.known]
    assert {r.kind for r in known_down} == {"init", "segment"}
    assert len(known_down) >= 4 * len(RENDITIONS)
    shield_errors = metric(scrapes["shield_down"], "edge_upstream_errors_total") - metric(
        scrapes["shield_before"], "edge_upstream_errors_total"
    )
    assert shield_errors > 0
    edge_stale = metric(scrapes["edge_down"], "edge_requests_total", cache="STALE")
    assert edge_stale > 0

    # --- once it was back ---------------------------------------------------------------
    back = run.of("back")
    back_lists = [r for r in back if r.kind == "playlist"]
    back_objects = [r for r in back if r.kind in objects]
    assert back_objects
    bad_back = [r for r in back if r.status != 200]
    assert not bad_back, f"requests failed after the origin returned: {bad_back[:5]}"
    assert not run.rewinds, run.rewinds
    fresh = next(
        (r for r in back_lists if r.cache != "STALE" and r.age <= PLAYLIST_MAX_AGE_S), None
    )
    assert fresh is not None, "the edge never served a fresh playlist again"
    fresh_after_s = fresh.at - marks["back"]
    restart_ms = marks["restart_wall"] * 1000
    live = next((r for r in back_lists if (r.last_pdt_ms or 0) >= restart_ms), None)
    assert live is not None, "no segment captured after the restart reached the edge"
    live_after_s = live.at - marks["back"]

    # The restarted origin counts from zero, and the shield is its only client.
    origin_end = scrapes["origin_end"]
    origin_by_type = {
        t: int(metric(origin_end, "mainevent_origin_requests_total", type=t))
        for t in ("master", "playlist", "init", "segment", "part")
    }
    origin_total = sum(origin_by_type.values())
    shield_fetches = metric(scrapes["shield_end"], "edge_upstream_fetches_total") - metric(
        scrapes["shield_back"], "edge_upstream_fetches_total"
    )
    elapsed = marks["end"] - marks["back"]
    uptime = marks["origin_uptime"]
    distinct_objects = len({r.url for r in back_objects})
    print(
        f"\norigin unreachable ≈ {marks['back'] - marks['stopping']:.1f} s (Ctrl-C "
        f"{marks['down'] - marks['stopping']:.1f} s, down {OUTAGE_S:.0f} s, restart "
        f"{marks['back'] - marks['down'] - OUTAGE_S:.1f} s): "
        f"{len(run.of(*outage, kinds=lists))} playlist requests at the edge, all 200 "
        f"(slowest {slowest_s * 1000:.0f} ms); {len(down_objects)} init/segment requests, "
        f"{sum(r.known for r in down_objects)} for cached objects (all 200), "
        f"{sum(not r.known and r.status == 200 for r in down_objects)} others served, "
        f"{sum(r.status != 200 for r in down_objects)} not; shield upstream errors "
        f"{shield_errors:.0f}, edge STALE answers {edge_stale:.0f}\n"
        f"recovery: fresh playlist {fresh_after_s:.1f} s and a segment captured after the "
        f"restart {live_after_s:.1f} s after the origin was back\n"
        f"after return ({elapsed:.1f} s; restarted origin up {uptime:.1f} s): players made "
        f"{len(back)} requests to the edge "
        f"({len(back_lists)} playlists, {len(back_objects)} init/segments of "
        f"{distinct_objects} distinct); origin fetches {origin_total} {origin_by_type}; "
        f"shield upstream fetches {shield_fetches:.0f}"
    )
    assert fresh_after_s < 5, "playlists stayed stale after the origin returned"
    assert live_after_s < 20, "the live window did not resume"
    # No herd: each new object fetched once by the shield, each playlist at most once per
    # max-age, however many players ask (a herd would be one origin fetch per request).
    assert origin_by_type["segment"] + origin_by_type["init"] <= distinct_objects
    assert origin_by_type["playlist"] <= len(RENDITIONS) * (uptime / PLAYLIST_MAX_AGE_S + 2)
    assert origin_total * 3 <= len(back)

    for proc in (edge, shield):
        assert proc.stop() == 0, proc.log()
