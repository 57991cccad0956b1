"""Redundant ingest end to end: primary + backup feeds, per-segment selection at the origin.

Two real venue feeds (`mainevent feed`, SRT) push the same epoch-locked test pattern into the
primary and backup pipelines of one `mainevent up`; the tests cut feeds as a venue would
(killing the encoder process) and watch the published playlist, health and players.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mainevent.media.encode.ffmpeg import BARCODE_BITS
from mainevent.media.redundancy.ops import ADMIN_SECRET_HEADER
from mainevent.player import PlaybackReport, play
from mainevent.testing.barcode import segment_frame_numbers
from mainevent.testing.browser import CHROMIUM, player_page, sample_stats, timeline
from mainevent.testing.continuity import PlaylistRecorder
from mainevent.testing.feeds import Feed
from mainevent.testing.probes import metric, wait_until
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]

D = 2.0
HOLD_S = 6.0


@pytest.fixture
def redundant(tmp_path: Path) -> Iterator[tuple[RunningStack, dict[str, Feed]]]:
    stack = start_stack(
        tmp_path / "data",
        extra_args=("--no-feed", "--no-edges"),
        env={
            "MAINEVENT_REDUNDANCY__BACKUP": "true",
            "MAINEVENT_REDUNDANCY__FAILBACK_HOLD_S": str(HOLD_S),
        },
        wait_ready=False,
    )
    assert stack.backup_ingest_url is not None
    feeds = {"primary": Feed(stack.ingest_url), "backup": Feed(stack.backup_ingest_url)}
    try:
        for f in feeds.values():
            f.start()
        stack.wait_ready(60)
        wait_until(lambda: all_healthy(stack), 30, "both pipelines healthy")
        stack.wait_window(4)
        yield stack, feeds
    finally:
        for f in feeds.values():
            f.kill()
        assert not stack.stop()


def all_healthy(stack: RunningStack) -> bool:
    pipes = stack.redundancy()["pipelines"]
    return all(p["healthy"] for p in pipes.values())


def mid_segment(at: float = 0.9) -> None:
    """Sleep until `at` seconds into the current epoch segment."""
    now = time.time()
    wait = (at - now % D) % D
    time.sleep(wait)


def playlist(stack: RunningStack, rendition: str = "v360") -> str:
    return f"{stack.base_url}/live/{stack.event}/{rendition}/index.m3u8"


@pytest.mark.browser
def test_primary_cut_mid_segment_fails_over_without_a_gap_and_fails_back(
    redundant: tuple[RunningStack, dict[str, Feed]], tmp_path: Path
) -> None:
    """Cut the primary feed mid-segment: continuity, no stall, loss seen ≤ 2 s, failback."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    stack, feeds = redundant
    headless: dict[str, object] = {}

    def headless_player() -> None:
        headless["report"] = asyncio.run(play(stack.master_url, duration_s=34))

    player_thread = threading.Thread(target=headless_player, daemon=True)
    with (
        PlaylistRecorder(playlist(stack)) as video,
        PlaylistRecorder(playlist(stack, "a128")) as audio,
        player_page(
            f"{stack.base_url}/player/?src=/live/{stack.event}/master.m3u8", tmp_path / "p"
        ) as page,
    ):
        player_thread.start()
        before = sample_stats(page, 4)
        mid_segment()
        feeds["primary"].kill()
        lost_after = wait_until(
            lambda: stack.pipeline_by_name("primary")["verdict"] == "lost", 10, "primary lost"
        )
        during = sample_stats(page, 12)
        assert stack.redundancy()["preferred"] == "backup"
        # The primary comes back; after HOLD_S of good health it is preferred again.
        restarted = time.monotonic()
        feeds["primary"].start()
        wait_until(
            lambda: stack.redundancy()["pipelines"]["primary"]["healthy"], 30, "primary healthy"
        )
        wait_until(lambda: stack.redundancy()["preferred"] == "primary", 30, "failback")
        failback_s = time.monotonic() - restarted
        after = sample_stats(page, 4)
        samples = before + during + after
    player_thread.join(60)
    v, a = video.report(), audio.report()

    assert lost_after <= 2.0, f"primary reported lost {lost_after:.2f} s after the cut"
    for rep in (v, a):
        assert rep.missing == [], f"MSNs never listed: {rep.missing}"
        assert rep.gaps == [], f"gaps listed: {rep.gaps}"
        assert rep.changed == [], f"segments whose content changed: {rep.changed}"
        assert rep.discontinuities == [], "identical encoders need no discontinuity"
        assert len(rep.media) >= 12
    # Around the cut, segments came from the backup (the selection says so).
    st = stack.redundancy()
    assert st["switches"] >= 2, st
    assert st["pipelines"]["backup"]["published_segments"] >= 3, st
    # Failback waits for the hold after the primary is back (and delivering on time), no longer
    # than the hold plus the time a returning feed needs to produce segments again.
    assert HOLD_S <= failback_s <= HOLD_S + 10, failback_s

    last = samples[-1]
    assert not last["fatal"], last["errors"]
    assert last["stalls"] == 0, timeline(samples)
    # After the cut, the browser never ran low: two segments (minus one frame) buffered ahead.
    post_cut = [s["bufferSec"] for s in during]
    assert min(post_cut) >= 2 * D - 0.04, timeline(samples)
    report = headless["report"]
    assert isinstance(report, PlaybackReport), headless
    assert report.fatal is None, report
    assert report.stalls == 0, report


def test_both_feeds_lost_keep_the_window_advancing_with_the_slate(
    redundant: tuple[RunningStack, dict[str, Feed]],
) -> None:
    """Both feeds cut for 10 s: the slate keeps the window moving; media returns after."""
    stack, feeds = redundant
    with PlaylistRecorder(playlist(stack)) as video:
        time.sleep(2)
        mid_segment()
        cut = time.time()
        for f in feeds.values():
            f.kill()
        time.sleep(10)
        back = time.time()
        for f in feeds.values():
            f.start()
        wait_until(
            lambda: any(e.discontinuity and e.first_seen > back for e in video.listed.values()),
            30,
            "live media after the feeds came back",
        )
        time.sleep(D)
    rep = video.report()
    assert rep.missing == [], rep.missing
    assert rep.gaps == [], "slate mode lists the slate, not gaps"
    # Exactly one slate run, set off by a discontinuity on each side.
    assert len(rep.discontinuities) == 2, rep.discontinuities
    slate_first, live_again = rep.discontinuities
    slate = list(range(slate_first, live_again))
    assert len(slate) >= 3, slate
    assert rep.changed == [], rep.changed
    # The playlist never froze for more than 1.5 × TD (plus one poll).
    assert rep.longest_freeze_s(cut, back) <= 1.5 * D + 0.5, rep.advances
    # Live media resumes within two segments of the feeds' return (capture time msn·D).
    resumed_s = live_again * D - back
    assert resumed_s <= 2 * D, f"first live segment starts {resumed_s:.2f} s after the return"
    metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
    assert 'mainevent_manifest_stall_alarms_total{event="demo",rendition="v360"}' in metrics
    assert 'mainevent_slate_segments_total{event="demo",rendition="v360"}' in metrics


def test_operator_forces_a_pipeline(redundant: tuple[RunningStack, dict[str, Feed]]) -> None:
    """PUT /_ops/redundancy (and the CLI) force a pipeline; bad requests get precise errors."""
    stack, _ = redundant
    url = f"{stack.base_url}/_ops/redundancy"
    assert stack.admin_secret
    auth = {ADMIN_SECRET_HEADER: stack.admin_secret}
    assert httpx.put(url, json={"mode": "backup"}, timeout=5).status_code == 401
    r = httpx.put(url, json={"mode": "backup"}, headers={ADMIN_SECRET_HEADER: "x"}, timeout=5)
    assert r.status_code == 403
    r = httpx.put(url, json={"mode": "tertiary"}, headers=auth, timeout=5)
    assert r.status_code == 422
    assert "auto, primary, backup" in r.json()["detail"]
    r = httpx.put(url, content=b"{", headers=auth, timeout=5)
    assert r.status_code == 400
    assert r.json()["error"] == "bad_json"
    before = stack.redundancy()["recent"]["v360"][-1]
    assert before["pipeline"] == "primary", before
    r = httpx.put(url, json={"mode": "backup"}, headers=auth, timeout=5)
    assert r.status_code == 200
    assert r.json()["preferred"] == "backup"
    assert r.json()["mode"] == "backup"
    # Forced: segments now come from the backup even though the primary is healthy.
    time.sleep(3 * D)
    recent = stack.redundancy()["recent"]["v360"]
    assert recent[-1]["pipeline"] == "backup", recent
    # Segment n of either pipeline holds exactly the frames captured in [n·D, (n+1)·D): the
    # burnt-in frame barcode of the primary's and the backup's segments, decoded.
    for decision in (before, recent[-1]):
        msn = decision["msn"]
        first = msn * int(D) * 30 % (1 << BARCODE_BITS)
        frames = segment_frames(stack, msn)
        assert frames == [(first + i) % (1 << BARCODE_BITS) for i in range(60)], (
            decision,
            frames[:3],
            first,
        )
    # Operator takeover of a live feed (the gateway lets the next publisher replace it).
    r = httpx.post(f"{stack.base_url}/_ops/ingest/primary/takeover", headers=auth, timeout=5)
    assert r.status_code == 200
    assert r.json()["takeover"].startswith("armed")
    r = httpx.post(f"{stack.base_url}/_ops/ingest/tertiary/takeover", headers=auth, timeout=5)
    assert r.status_code == 404
    assert httpx.post(f"{stack.base_url}/_ops/ingest/primary/takeover").status_code == 401
    # The CLI does the same.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mainevent.cli",
            "pipeline",
            "force",
            "auto",
            "--url",
            stack.base_url,
            "--secret",
            stack.admin_secret,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "preferred primary" in out.stdout
    assert stack.redundancy()["mode"] == "auto"


def segment_frames(stack: RunningStack, msn: int) -> list[int]:
    """Frame numbers (barcode) of v360 segment `msn`, decoded."""
    base = f"{stack.base_url}/live/{stack.event}/v360"
    init = httpx.get(f"{base}/init.mp4", timeout=5).raise_for_status().content
    seg = httpx.get(f"{base}/{msn}.m4s", timeout=5).raise_for_status().content
    return segment_frame_numbers(init, seg, 640, 360)


def rejected(metrics: str, reason: str) -> float:
    return metric(metrics, "mainevent_segments_rejected_total", reason=reason)


def test_corrupt_primary_segments_are_replaced_by_the_backup(
    redundant: tuple[RunningStack, dict[str, Feed]],
) -> None:
    """Garbage in the primary feed and a transcoder killed mid-fragment: the damaged and the
    truncated segments are rejected (counted, logged) and the backup's copies published."""
    stack, feeds = redundant
    with PlaylistRecorder(playlist(stack)) as video:
        time.sleep(D)
        feeds["primary"].ctl("corrupt", packets=300, raw_bytes=2000)
        wait_until(
            lambda: rejected(httpx.get(f"{stack.base_url}/metrics").text, "input corrupt") > 0,
            4 * D,
            "a segment made from damaged input to be replaced",
        )
        # The damaged primary may still be degraded (and so not preferred): the operator pins
        # it, so the truncated fragment below hits the preferred pipeline.
        secret = {ADMIN_SECRET_HEADER: stack.admin_secret or ""}
        r = httpx.put(f"{stack.base_url}/_ops/redundancy", json={"mode": "primary"}, headers=secret)
        assert r.status_code == 200, r.text
        wait_until(
            lambda: stack.pipeline_by_name("primary")["transcoder"] is not None,
            30,
            "a primary transcoder run",
        )
        mid_segment(1.0)
        pid = stack.pipeline_by_name("primary")["transcoder"]["pid"]
        os.kill(int(pid), signal.SIGKILL)
        wait_until(
            lambda: rejected(httpx.get(f"{stack.base_url}/metrics").text, "incomplete") > 0,
            4 * D,
            "the truncated segment to be rejected",
        )
        time.sleep(2 * D)
    rep = video.report()
    assert rep.missing == [], rep.missing
    assert rep.gaps == [], rep.gaps
    assert rep.changed == [], rep.changed
    log = "\n".join(stack.log)
    assert re.search(r"segment \d+ from primary rejected: input corrupt: \d+ corrupt-input", log)
    assert re.search(r"segment \d+ from primary rejected: incomplete", log)
    assert stack.redundancy()["pipelines"]["backup"]["published_segments"] > 0
