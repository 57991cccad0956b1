"""The delivery tier end to end: origin → shield → edges cdn-a/b/c started by `mainevent up`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mainevent.media.edge import ADMIN_HEADER
from mainevent.player import play
from mainevent.testing.browser import CHROMIUM, player_page, sample_stats, timeline
from mainevent.testing.probes import metric
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One real platform with its delivery tier for the module's tests."""
    s = start_stack(tmp_path_factory.mktemp("delivery"))
    yield s
    leftovers = s.stop()
    assert not leftovers, f"processes left behind after Ctrl-C: {leftovers}"


def set_fault(stack: RunningStack, base: str, **fault: object) -> None:
    assert stack.edge_admin_secret
    headers = {ADMIN_HEADER: stack.edge_admin_secret}
    if fault:
        r = httpx.post(f"{base}/_edge/fault", json=fault, headers=headers, timeout=5)
    else:
        r = httpx.delete(f"{base}/_edge/fault", headers=headers, timeout=5)
    assert r.status_code == 200, r.text


def test_up_announces_edges_and_they_serve_the_stream(stack: RunningStack) -> None:
    """`mainevent up` starts cdn-a/b/c behind a shield; each serves the multivariant playlist."""
    assert sorted(stack.edges) == ["cdn-a", "cdn-b", "cdn-c"]
    assert any(re.match(r"\s*cdn-a\s+http://", line) for line in stack.log)
    for name in stack.edges:
        r = httpx.get(stack.edge_master_url(name), timeout=10)
        assert r.status_code == 200
        assert "#EXT-X-STREAM-INF" in r.text
        assert f'n="{name}"' in r.headers["cmsd-static"]
        assert r.headers["access-control-allow-origin"] == "*"
    assert stack.shield_url is not None
    assert "edge_upstream_fetches_total" in httpx.get(f"{stack.shield_url}/metrics").text


@pytest.mark.browser
def test_browser_plays_through_edge_shield_origin(stack: RunningStack, tmp_path: Path) -> None:
    """hls.js in Chromium plays ≥ 20 s from cdn-a (→ shield → origin) with no stall."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    stack.wait_window()
    url = f"{stack.base_url}/player/?src={stack.edge_master_url('cdn-a')}"
    with player_page(url, tmp_path / "profile") as page:
        first, *samples = sample_stats(page, 23)
    last = samples[-1]
    assert not last["fatal"], last["errors"]
    assert last["currentTime"] - first["currentTime"] >= 20, (first, last)
    assert last["stalls"] == 0, timeline([first, *samples])
    m = httpx.get(f"{stack.edges['cdn-a']}/metrics", timeout=5).text
    assert (
        metric(m, "edge_requests_total", type="segment", cache="HIT")
        + metric(m, "edge_requests_total", type="segment", cache="MISS")
        > 0
    )


def test_player_fails_over_when_cdn_a_errors(stack: RunningStack) -> None:
    """cdn-a at 100 % errors: the headless player with fallback edges keeps playing; metrics show the fault."""
    a = stack.edges["cdn-a"]
    set_fault(stack, a, error_rate=1.0)
    try:
        report = asyncio.run(
            play(
                stack.edge_master_url("cdn-a"),
                duration_s=12,
                fallback_urls=[stack.edges["cdn-b"], stack.edges["cdn-c"]],
            )
        )
        m = httpx.get(f"{a}/metrics", timeout=5).text
    finally:
        set_fault(stack, a)
    assert report.fatal is None, report.to_json()
    assert report.played_s >= 12, report.to_json()
    assert report.failovers >= 1
    assert "cdn-b" in report.final_url or stack.edges["cdn-b"] in report.final_url
    assert metric(m, "edge_fault_active", edge="cdn-a") == 1
    assert metric(m, "edge_fault", edge="cdn-a", setting="error_rate") == 1.0
    assert metric(m, "edge_requests_total", edge="cdn-a", cache="FAULT") >= 1


def test_upstream_outage_served_stale_then_recovers_without_herd(stack: RunningStack) -> None:
    """The shield's upstream fails for 10 s: edges keep serving what they have; recovery is one fetch per key."""
    b = stack.edges["cdn-b"]
    url = f"{b}/live/{stack.event}/v360/index.m3u8"
    assert httpx.get(url, timeout=5).status_code == 200
    assert stack.shield_url is not None
    set_fault(stack, stack.shield_url, error_rate=1.0)  # every shield response is a 503
    statuses: set[int] = set()
    caches: set[str] = set()
    try:
        deadline = time.monotonic() + 10
        with httpx.Client(timeout=5) as c:
            while time.monotonic() < deadline:
                r = c.get(url)
                statuses.add(r.status_code)
                caches.add(r.headers.get("x-cache", ""))
                time.sleep(0.2)
    finally:
        set_fault(stack, stack.shield_url)
    assert statuses == {200}
    assert "STALE" in caches
    before = metric(httpx.get(f"{b}/metrics").text, "edge_upstream_fetches_total", type="playlist")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as c:
            return await asyncio.gather(*(c.get(url) for _ in range(200)))

    rs = asyncio.run(burst())
    after = metric(httpx.get(f"{b}/metrics").text, "edge_upstream_fetches_total", type="playlist")
    assert {r.status_code for r in rs} == {200}
    print(f"edge cdn-b playlist fetches for a 200-request burst after recovery: {after - before}")
    assert after - before <= 2
