"""Telemetry end to end: hls.js in Chromium reports through its own CMCD v2 options, the edges
post access records, and the collector started by `mainevent up` shows the session within 2 s."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.testing.browser import CHROMIUM, player_page
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    s = start_stack(tmp_path_factory.mktemp("telemetry"))
    yield s
    leftovers = s.stop()
    assert not leftovers, f"processes left behind after Ctrl-C: {leftovers}"


def _poll(fn: Any, timeout_s: float, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(every_s)


def _target_duration_s(client: httpx.Client, master_url: str) -> float:
    """EXT-X-TARGETDURATION of the first media playlist `master_url` lists."""
    master = client.get(master_url).text
    media = next(ln for ln in master.splitlines() if ln and not ln.startswith("#"))
    playlist = client.get(httpx.URL(master_url).join(media)).text
    tag = "#EXT-X-TARGETDURATION:"
    return float(next(ln for ln in playlist.splitlines() if ln.startswith(tag))[len(tag) :])


@pytest.mark.browser
def test_hls_js_session_shows_in_the_api_as_the_page_shows_it(
    stack: RunningStack, tmp_path: Path
) -> None:
    """Start time, bitrate and live latency in the API agree with the page (10 %) within 2 s."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    assert stack.telemetry_url, "mainevent up started no collector"
    tele = stack.telemetry_url
    stack.wait_window()
    src = stack.edge_master_url("cdn-a")
    # Heartbeats every 0.5 s: the first report after the first frame then reaches the collector
    # well inside the 2 s the issue allows, even on a loaded machine.
    interval_s = 0.5
    url = f"{stack.base_url}/player/?src={src}&telemetry={tele}&ti={interval_s}"
    with httpx.Client(timeout=5) as client, player_page(url, tmp_path / "profile") as page:
        stats = page.evaluate("window.mainevent.stats()")
        sid = stats["sessionId"]
        assert sid

        def started() -> dict[str, Any] | None:
            r = client.get(f"{tele}/v1/telemetry/sessions/{sid}")
            body: dict[str, Any] = r.json()
            return body if r.status_code == 200 and body["video_start_time_ms"] else None

        view = _poll(started, 10.0)
        assert view, "the collector never saw the session start"
        # From the page's first frame to the collector knowing it (and the API showing it),
        # both on this machine's wall clock; the test's own polling delay is not counted.
        shown_after = view["start_known_at"] - stats["firstFrameAtMs"] / 1000
        assert shown_after <= 2.0, f"session start visible {shown_after:.2f} s after first frame"
        assert view["dims"]["cdn"] == "cdn-a"
        assert view["dims"]["region"] == "local"
        assert view["dims"]["device"] == "headless"

        # Bitrate within 2 s of the first frame as well (the test's own 0.1 s poll counts
        # against it). Live latency: hls.js sends no `ltc`, and the collector's estimate needs
        # a media response after the first frame (docs/telemetry.md), so it is known at most
        # one segment duration later than that; those 2 s are counted from there.
        def known(key: str) -> Any:
            def probe() -> dict[str, Any] | None:
                body: dict[str, Any] = client.get(f"{tele}/v1/telemetry/sessions/{sid}").json()
                return body if body[key] is not None else None

            return probe

        first_frame_s = stats["firstFrameAtMs"] / 1000
        assert _poll(known("bitrate_kbps"), 10.0), "the API never showed the session's bitrate"
        bitrate_after = time.time() - first_frame_s
        assert bitrate_after <= 2.0, f"bitrate visible {bitrate_after:.2f} s after the first frame"
        assert _poll(known("live_latency_ms"), 10.0), "the API never showed the live latency"
        latency_after = time.time() - first_frame_s
        segment_s = _target_duration_s(client, src)
        assert latency_after <= segment_s + 2.0, (
            f"live latency visible {latency_after:.2f} s after the first frame"
        )
        page_startup_ms = stats["startupSec"] * 1000
        # hls.js's play-state report (`e=ps`, `sta=p`) carries the `playing` instant as its
        # `ts`, and its first report the instant the page handed it the source: the start time
        # is the page's own to within the 10 %.
        assert abs(view["video_start_time_ms"] - page_startup_ms) <= 0.1 * page_startup_ms, (
            view,
            stats,
        )
        # Let the session play; note the page's latency meanwhile (the API's session latency
        # is the median of its last five estimates, one per media response: about the last
        # 5 s of playback), then compare bitrate and latency.
        page_latencies: list[float] = []
        for _ in range(12):
            time.sleep(0.5)
            page_latencies.append(page.evaluate("window.mainevent.stats()")["latencySec"] * 1000)
        stats = page.evaluate("window.mainevent.stats()")
        view = client.get(f"{tele}/v1/telemetry/sessions/{sid}").json()
        assert view["state"] in ("p", "r")  # playing (a loaded machine may stall it)
        page_kbps = stats["bitrate"] / 1000
        assert abs(view["bitrate_kbps"] - page_kbps) <= 0.1 * page_kbps, (view, stats)
        page_latency_ms = stats["latencySec"] * 1000
        api_latency_ms = view["live_latency_ms"]
        # The aggregate series for cdn-a has the attempt, the played time and edge requests:
        # its 1 s points over the last 30 s (a 30 s step would be aligned to the stored rows and
        # answered only once whole, so the session could fall in the step still in progress).
        now = time.time()
        r = client.get(
            f"{tele}/v1/telemetry/qoe",
            params={"event": stack.event, "by": "cdn", "from": now - 30, "to": now, "step": 1},
        )
        assert r.status_code == 200, r.text
        series = {s["labels"]["cdn"]: s["points"] for s in r.json()["series"]}
        points = series["cdn-a"]
        assert {p["step_s"] for p in points} == {1}
        played_s = sum(p["played_s"] for p in points)
        assert sum(p["play_attempts"] for p in points) == 1
        assert played_s > 3
        assert sum(p["requests"] for p in points) > 5  # access records posted by the cdn-a edge
        assert all(not p["error_rate"] for p in points), points
        assert any(p["live_latency_p50_ms"] is not None for p in points)
        # The series' average bitrate (bits played ÷ time played): the rendition the page
        # plays, or (had hls.js switched level meanwhile) a mean between the ladder's rungs.
        avg_kbps = sum((p["average_bitrate_kbps"] or 0) * p["played_s"] for p in points) / played_s
        rungs = [lv["bitrate"] / 1000 for lv in stats["levels"] if lv["bitrate"]]
        assert abs(avg_kbps - page_kbps) <= 0.1 * page_kbps or (
            min(rungs) * 0.9 <= avg_kbps <= max(rungs) * 1.1
        ), (points, stats)
        metrics = client.get(f"{tele}/metrics").text
        assert 'mainevent_qoe_concurrent_sessions{cdn="cdn-a"' in metrics
        print(
            f"start API {view['video_start_time_ms']:.0f} ms / page {page_startup_ms:.0f} ms;"
            f" bitrate API {view['bitrate_kbps']:.0f} / page {page_kbps:.0f} kbps;"
            f" latency API {api_latency_ms:.0f} / page {page_latency_ms:.0f} ms;"
            f" start visible {shown_after:.2f} s, bitrate {bitrate_after:.2f} s, latency"
            f" {latency_after:.2f} s after the first frame"
        )
        # hls.js 1.7.4 sends no `ltc`: the collector estimates it from response records
        # (docs/telemetry.md, "Live latency from hls.js reports").
        # Compared with what the page showed now, or over the seconds the API's median spans
        # (hls.js moves its latency when it catches up: the median follows a few seconds later).
        page_recent_ms = statistics.median(page_latencies[-10:])
        assert any(
            abs(api_latency_ms - ms) <= 0.1 * ms for ms in (page_latency_ms, page_recent_ms)
        ), (
            f"live latency: API {api_latency_ms:.0f} ms vs page {page_latency_ms:.0f} ms"
            f" (median of its last 5 s {page_recent_ms:.0f} ms, samples {page_latencies})",
            view,
            stats,
        )
