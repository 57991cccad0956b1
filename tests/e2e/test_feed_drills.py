"""Drills on a live feed: the simulator breaks on command and ingest health says what broke."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mainevent.commands.stack import free_port
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]


@pytest.fixture
def drill(tmp_path: Path) -> Iterator[tuple[RunningStack, str]]:
    """A platform waiting for a venue feed, and a simulator feeding it with its drill API."""
    stack = start_stack(tmp_path / "data", extra_args=("--no-feed",), wait_ready=False)
    control = f"127.0.0.1:{free_port()}"
    feed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mainevent.cli",
            "feed",
            stack.ingest_url,
            "--size",
            "640x360",
            "--bitrate",
            "1500",
            "--control",
            control,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        stack.wait_ready(60)
        yield stack, f"http://{control}"
    finally:
        feed.terminate()
        feed.wait(10)
        assert not stack.stop()


def poll_verdict(
    stack: RunningStack, want: str, timeout: float, reason: str = ""
) -> tuple[float, dict[str, object]]:
    """Wait for verdict `want` (whose reason contains `reason`, if given)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        st = stack.pipeline_status()
        if st["verdict"] == want and reason in str(st["reason"]):
            return time.monotonic() - start, st
        time.sleep(0.1)
    raise AssertionError(f"verdict never became {want} ({reason}): {stack.pipeline_status()}")


def ctl(control: str, action: str, **body: object) -> None:
    httpx.post(f"{control}/faults/{action}", json=body, timeout=5).raise_for_status()


def test_desync_then_stall_then_recovery(drill: tuple[RunningStack, str]) -> None:
    """A/V desync degrades the feed (reason: A/V offset); a stalled feed is lost within ~D; both recover."""
    stack, control = drill
    poll_verdict(stack, "healthy", 20)
    ctl(control, "desync", audio_offset_ms=400)
    # The pusher re-interleaves by timestamp, so the shift may first show as a brief frame
    # rate dip; the verdict must come to name the A/V offset itself.
    _, st = poll_verdict(stack, "degraded", 10, reason="audio/video offset")
    assert "audio/video offset +0.4" in str(st["reason"]), st
    # the venue's remedy: clear the fault and restart its encoder (a new connection starts in step)
    ctl(control, "clear")
    ctl(control, "restart")
    poll_verdict(stack, "healthy", 40)
    ctl(control, "stall", seconds=6)
    took, st = poll_verdict(stack, "lost", 10)
    assert took < 4, f"feed loss detected after {took:.1f} s"
    assert st["reason"] in ("feed disconnected",) or "no data" in str(st["reason"])
    # the venue restarts its encoder (a new connection) and the pipeline publishes again
    ctl(control, "clear")
    ctl(control, "restart")
    poll_verdict(stack, "healthy", 40)
    metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
    assert 'mainevent_feed_verdict{pipeline="primary",verdict="healthy"} 1.0' in metrics
    assert "mainevent_feed_bitrate_kbps" in metrics
