"""DVR end to end: a real event with 1 s segments and a 90 s DVR window, hls.js in Chromium.

One stack for the module, used in order: while ~70 s of media accumulate the DVR playlists
are checked against the conformance rules; then a player joins at the live edge, seeks 60 s
back, plays without a stall and returns to live; start-over plays from the first segment;
the event is ended on command and the VOD playlist plays in hls.js and remuxes with
`ffmpeg -c copy` to a file as long as the event; decoded end to end, the VOD holds every
captured frame of its segments once, in order (the feed's burnt-in frame-number barcode).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.media.encode.ffmpeg import BARCODE_BITS, find_ffmpeg
from mainevent.media.manifest import (
    parse_media_playlist,
    parse_multivariant_playlist,
    validate_media_playlist,
)
from mainevent.media.redundancy.ops import ADMIN_SECRET_HEADER
from mainevent.testing.barcode import stream_frame_numbers
from mainevent.testing.browser import CHROMIUM, player_page, sample_stats, timeline
from mainevent.testing.stack import RunningStack, start_stack
from tests.e2e.hls import rendition_urls

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

D_S = 1.0
AAC_SLACK_S = 0.05
"""Two AAC frames at 48 kHz: how far the audio track of a remux may outlast the video."""
DVR_S = 90
BEHIND_S = 60
FPS = 30


ENV = {"MAINEVENT_EVENT__SEGMENT_DURATION_MS": "1000", "MAINEVENT_DVR__WINDOW_S": str(DVR_S)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    s = start_stack(tmp_path_factory.mktemp("dvr"), env=ENV)
    yield s
    leftovers = s.stop()
    assert not leftovers, f"processes left behind: {leftovers}"


def _media_s(client: httpx.Client, url: str) -> float:
    pl = parse_media_playlist(client.get(url).raise_for_status().text)
    return sum(s.duration_us for s in pl.segments) / 1e6


def test_dvr_playlists_conform_while_the_window_fills(stack: RunningStack) -> None:
    """Until 70 s are listed: every DVR playlist validates, grows to at most the window, has
    contiguous PDTs, offers delta updates that agree with it, and every listed segment is there."""
    checked = 0
    with httpx.Client(timeout=10) as client:
        urls = rendition_urls(client, stack.master_url)
        deadline = time.monotonic() + 150
        while True:
            for rid, url in urls.items():
                text = client.get(url).raise_for_status().text
                pl = parse_media_playlist(text)
                validate_media_playlist(pl)
                assert pl.playlist_type is None
                assert pl.start_offset_us == -3_000_000, "start at the live edge (3 × TD)"
                assert pl.server_control is not None
                assert pl.server_control.can_skip_until_us == 6_000_000
                listed_s = sum(s.duration_us for s in pl.segments) / 1e6
                assert listed_s <= DVR_S + D_S
                for a, b in itertools.pairwise(pl.segments):
                    assert a.program_date_time_ms is not None
                    assert b.program_date_time_ms is not None
                    step = b.program_date_time_ms - a.program_date_time_ms
                    assert abs(step - a.duration_us / 1000) <= 1, f"{rid}: PDT not contiguous"
                delta = parse_media_playlist(client.get(url + "?_HLS_skip=YES").text)
                assert delta.last_msn >= pl.last_msn
                if listed_s > 8:
                    assert delta.skipped_segments > 0
                base = url.rsplit("/", 1)[0]
                for seg in (pl.segments[0], pl.segments[len(pl.segments) // 2]):
                    r = client.get(f"{base}/{seg.uri}")
                    assert r.status_code == 200, f"{rid}: listed {seg.uri} → {r.status_code}"
                checked += 1
            if _media_s(client, urls["v180"]) >= 72:
                break
            assert time.monotonic() < deadline, "the DVR window never reached 72 s"
            time.sleep(2)
    assert checked >= 20


def _wait(page: Any, expression: str, timeout_s: float = 30) -> None:
    page.wait_for_function(expression, timeout=timeout_s * 1000)


@pytest.mark.browser
def test_browser_seeks_back_plays_and_returns_to_live(stack: RunningStack, tmp_path: Path) -> None:
    """hls.js joins at the live edge, seeks 60 s back, plays 10 s without a stall, goes live."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    url = f"{stack.base_url}/player/?src=/live/{stack.event}/master.m3u8"
    with player_page(url, tmp_path / "profile") as page:
        join = sample_stats(page, 2)[-1]
        assert join["latencySec"] < 10, join
        assert (
            page.evaluate("window.mainevent.dvr.window().end - window.mainevent.dvr.window().start")
            > 65
        )
        assert page.evaluate(f"window.mainevent.dvr.seekBy(-{BEHIND_S})")
        _wait(
            page,
            f"window.mainevent.stats().latencySec > {BEHIND_S} && window.mainevent.stats().playing",
        )
        before = page.evaluate("window.mainevent.stats()")
        samples = sample_stats(page, 10)
        last = samples[-1]
        assert last["stalls"] == before["stalls"], timeline(samples)
        assert last["currentTime"] - before["currentTime"] > 8, timeline(samples)
        assert BEHIND_S - 5 < last["latencySec"] < BEHIND_S + 15, timeline(samples)
        assert not last["fatal"], last["errors"]
        assert page.evaluate("window.mainevent.dvr.live()")
        _wait(page, "window.mainevent.stats().latencySec < 10 && window.mainevent.stats().playing")
        back = sample_stats(page, 3)[-1]
        assert back["latencySec"] < 10, back
        page.screenshot(path=str(tmp_path / "dvr.png"))


@pytest.mark.browser
def test_browser_start_over_plays_from_the_first_segment(
    stack: RunningStack, tmp_path: Path
) -> None:
    """The start-over playlist plays in hls.js from the event's first segment."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    with httpx.Client(timeout=10) as client:
        so = f"{stack.base_url}/live/{stack.event}/v180/startover.m3u8"
        pl = parse_media_playlist(client.get(so).raise_for_status().text)
    assert pl.playlist_type == "EVENT"
    first_pdt = pl.segments[0].program_date_time_ms
    assert first_pdt is not None
    url = f"{stack.base_url}/player/?src=/live/{stack.event}/startover.m3u8"
    with player_page(url, tmp_path / "profile") as page:
        samples = sample_stats(page, 4)
        last = samples[-1]
        assert last["playheadDate"] is not None, timeline(samples)
        from datetime import datetime

        played_ms = (
            datetime.fromisoformat(last["playheadDate"].replace("Z", "+00:00")).timestamp() * 1000
        )
        # Within the first few segments of the event (start-up plus 4 s of playing).
        assert first_pdt <= played_ms < first_pdt + 10_000, (first_pdt, last["playheadDate"])
        assert last["stalls"] == 0, timeline(samples)


@pytest.mark.browser
def test_after_the_end_vod_plays_and_remuxes_to_the_event_length(
    stack: RunningStack, tmp_path: Path
) -> None:
    """Ended on command, the VOD playlist is there within one segment, passes as VOD, plays in
    hls.js to its end, and `ffmpeg -c copy` makes an MP4 as long as the event (± 1 segment)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    vod_url = f"{stack.base_url}/live/{stack.event}/vod.m3u8"
    with httpx.Client(timeout=10) as client:
        assert client.get(vod_url).status_code == 404, "no VOD before the end"
        t0 = time.monotonic()
        r = client.post(
            f"{stack.base_url}/_ops/events/{stack.event}/end",
            headers={ADMIN_SECRET_HEADER: stack.edge_admin_secret or ""},
        )
        assert r.status_code == 200, r.text
        while client.get(vod_url).status_code != 200:
            assert time.monotonic() - t0 < D_S, "VOD not available within one segment duration"
            time.sleep(0.05)
        mv = parse_multivariant_playlist(client.get(vod_url).text)
        media_url = f"{stack.base_url}/live/{stack.event}/{mv.variants[0].uri}"
        vod = parse_media_playlist(client.get(media_url).text)
        validate_media_playlist(vod)
        assert vod.playlist_type == "VOD"
        assert vod.endlist
        assert vod.server_control is None
        assert not any(s.parts for s in vod.segments)
        first, last = vod.segments[0], vod.segments[-1]
        assert first.program_date_time_ms is not None
        assert last.program_date_time_ms is not None
        event_s = (
            last.program_date_time_ms + last.duration_us / 1000 - first.program_date_time_ms
        ) / 1000
        listed_s = sum(s.duration_us for s in vod.segments) / 1e6
        assert listed_s > 70
        mpd = client.get(f"{stack.base_url}/live/{stack.event}/vod.mpd")
        assert mpd.status_code == 200
        assert 'type="static"' in mpd.text
    out = tmp_path / "out.mp4"
    proc = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-v", "error", "-y", "-i", vod_url, "-c", "copy", str(out)],
        capture_output=True,
        timeout=120,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-i", str(out)], capture_output=True, text=True, timeout=30
    ).stderr
    m = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", info)
    assert m is not None, info
    mp4_s = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    # ± 1 segment, plus the audio's frame alignment: the MP4 spans both tracks, and an AAC
    # frame (21 ms at 48 kHz) can stick out past the video's end (CI: 99.01 s for 98.0 s).
    assert abs(mp4_s - event_s) <= D_S + AAC_SLACK_S, (mp4_s, event_s, listed_s)
    url = f"{stack.base_url}/player/?src=/live/{stack.event}/vod.m3u8"
    with player_page(url, tmp_path / "profile") as page:
        samples = sample_stats(page, 3)
        assert samples[-1]["currentTime"] > 1, timeline(samples)
        duration = page.evaluate("document.getElementById('video').duration")
        assert abs(duration - listed_s) <= D_S, (duration, listed_s)
        # Played to its end: jump close to it and let it finish.
        page.evaluate(f"document.getElementById('video').currentTime = {duration - 4}")
        _wait(page, "document.getElementById('video').ended", timeout_s=30)
        end = page.evaluate("window.mainevent.stats()")
        assert not end["fatal"], end["errors"]


def _first_difference(got: list[int], want: list[int]) -> str:
    i = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if i is None:
        i = min(len(got), len(want))
    missing = sorted(set(want) - set(got))
    repeated = len(got) - len(set(got))
    return (
        f"{len(got)} frames decoded, {len(want)} expected; first difference at frame {i} "
        f"(got {got[i : i + 3]}, expected {want[i : i + 3]}); {len(missing)} missing "
        f"(first {missing[:5]}), {repeated} repeated"
    )


def test_vod_decodes_to_every_frame_of_its_segments_once_in_order(stack: RunningStack) -> None:
    """After the end, ffmpeg decodes the whole VOD playlist of the smallest rung, and the
    burnt-in frame numbers are exactly those captured in the segments it lists: segment n
    holds frames n·D·fps … (n+1)·D·fps − 1, none missing, none twice, none out of order
    (runs the VOD leaves out, slate or gaps, are left out of the expectation too)."""
    with httpx.Client(timeout=10) as client:
        # Ended by the VOD test before; ending is idempotent, so this test also runs alone.
        r = client.post(
            f"{stack.base_url}/_ops/events/{stack.event}/end",
            headers={ADMIN_SECRET_HEADER: stack.edge_admin_secret or ""},
        )
        assert r.status_code == 200, r.text
        url = f"{stack.base_url}/live/{stack.event}/v180/vod.m3u8"
        deadline = time.monotonic() + 10
        while (resp := client.get(url)).status_code != 200:
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.1)
        vod = parse_media_playlist(resp.text)
    assert vod.playlist_type == "VOD"
    per_segment = round(D_S * FPS)
    want: list[int] = []
    for seg in vod.segments:
        if seg.gap:
            continue
        msn = int(seg.uri.split(".", 1)[0])
        want += [(msn * per_segment + k) % (1 << BARCODE_BITS) for k in range(per_segment)]
    assert len(want) >= 70 * FPS, "the VOD covers the ~70 s the event ran"
    got = stream_frame_numbers(url, 320, 180, timeout_s=120)
    assert got == want, _first_difference(got, want)


def _rejected_after_end(client: httpx.Client, base_url: str) -> float:
    metrics = client.get(f"{base_url}/metrics").raise_for_status().text
    found = re.findall(
        r'mainevent_segments_rejected_total\{[^}]*reason="event ended"[^}]*\} ([0-9.e+]+)', metrics
    )
    return sum(float(v) for v in found)


def test_after_a_restart_the_ended_event_stays_vod(stack: RunningStack) -> None:
    """The platform restarted over the same data dir, nobody telling it of the end: the same
    VOD playlist, a static MPD, ENDLIST on the live playlist; what its encoder produces anew
    is never listed (counted as rejected) and a segment past the end is 410."""
    with httpx.Client(timeout=10) as client:
        r = client.post(
            f"{stack.base_url}/_ops/events/{stack.event}/end",
            headers={ADMIN_SECRET_HEADER: stack.edge_admin_secret or ""},
        )
        assert r.status_code == 200, r.text
        path = f"/live/{stack.event}/v180"
        vod_before = client.get(f"{stack.base_url}{path}/vod.m3u8").raise_for_status().text
        live_before = parse_media_playlist(client.get(f"{stack.base_url}{path}/index.m3u8").text)
    assert live_before.endlist
    assert not stack.stop(), "processes left behind"
    again = start_stack(stack.data_dir, env=ENV)
    try:
        with httpx.Client(timeout=10) as client:
            base = f"{again.base_url}{path}"
            assert client.get(f"{base}/vod.m3u8").raise_for_status().text == vod_before
            mpd = client.get(f"{again.base_url}/live/{again.event}/vod.mpd")
            assert mpd.status_code == 200
            assert 'type="static"' in mpd.text
            deadline = time.monotonic() + 60
            while _rejected_after_end(client, again.base_url) < 2:
                assert time.monotonic() < deadline, "the restarted encoder produced nothing"
                time.sleep(0.5)
            live = parse_media_playlist(client.get(f"{base}/index.m3u8").text)
            assert live.endlist
            assert live.last_msn == live_before.last_msn, "no segment listed after the end"
            late = client.get(f"{base}/{live.last_msn + 3}.m4s")
            assert late.status_code == 410, late.text
            assert "ended" in late.text
    finally:
        assert not again.stop(), "processes left behind"
