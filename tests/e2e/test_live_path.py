"""The live media path end to end: venue feed → ffmpeg ladder → packager → origin → players."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mainevent.media.cmaf import iter_boxes
from mainevent.media.encode.ffmpeg import find_ffmpeg
from mainevent.testing.browser import CHROMIUM, player_page, sample_stats, timeline
from mainevent.testing.stack import RunningStack, start_stack
from tests.e2e.hls import fetch_playlist, rendition_urls

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.exclusive]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One real platform for the module's tests."""
    s = start_stack(tmp_path_factory.mktemp("live"))
    yield s
    leftovers = s.stop()
    assert not leftovers, f"processes left behind after Ctrl-C: {leftovers}"


def test_multivariant_describes_the_real_media(stack: RunningStack) -> None:
    """The multivariant playlist names every rung with measured bandwidth and real codecs."""
    text = httpx.get(stack.master_url, timeout=5).raise_for_status().text
    assert "#EXT-X-STREAM-INF" in text
    infs = re.findall(r"#EXT-X-STREAM-INF:(.*)", text)
    assert len(infs) == 2
    for inf in infs:
        assert re.search(r'CODECS="avc1\.[0-9a-f]{6},mp4a\.40\.2"', inf), inf
        assert re.search(r"BANDWIDTH=\d+", inf)
        assert re.search(r"AVERAGE-BANDWIDTH=\d+", inf)
        assert "FRAME-RATE=30.000" in inf
        assert 'AUDIO="aud"' in inf
    assert "RESOLUTION=640x360" in text
    assert "RESOLUTION=320x180" in text
    assert re.search(r"#EXT-X-MEDIA:TYPE=AUDIO.*URI=\"a128/index.m3u8\"", text)


@pytest.mark.browser
def test_browser_plays_live_stream(stack: RunningStack, tmp_path: Path) -> None:
    """hls.js in Chromium plays ≥ 20 s live with no stall, several renditions, low latency."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it as root)")
    stack.wait_window()
    url = f"{stack.base_url}/player/?src=/live/{stack.event}/master.m3u8"
    with player_page(url, tmp_path / "profile") as page:
        first, *samples = sample_stats(page, 24)
        page.screenshot(path=str(tmp_path / "player.png"))
    last = samples[-1]
    assert not last["fatal"], last["errors"]
    assert last["currentTime"] - first["currentTime"] >= 20, (first, last)
    assert last["stalls"] == 0, timeline([first, *samples])
    assert len(last["levels"]) >= 2
    latencies = [s["latencySec"] for s in samples if s["latencySec"] is not None]
    assert latencies, "player reported no live latency"
    # hls.js starts 3 × TD behind the edge of the playlist it loaded, which may be up to one
    # segment old (+ the publish delay): 3 × TD + TD + 1 s.
    assert max(latencies[len(latencies) // 2 :]) < 3 * 2 + 2 + 1, latencies


def test_independent_client_decodes_every_rendition(stack: RunningStack) -> None:
    """ffmpeg reads ≥ 10 s of every rendition through the multivariant URL without an error."""
    proc = subprocess.run(
        [
            find_ffmpeg(),
            "-hide_banner",
            "-v",
            "error",
            "-live_start_index",
            "-4",
            "-i",
            stack.master_url,
            "-map",
            "0",
            "-t",
            "10",
            "-f",
            "framecrc",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    frames: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        if line and not line.startswith("#"):
            idx = line.split(",", 1)[0].strip()
            frames[idx] = frames.get(idx, 0) + 1
    # 2 video renditions (+ audio exposed per variant): every stream got ≥ 10 s of media.
    assert len(frames) >= 3, frames
    counts = sorted(frames.values())
    assert counts[0] >= 10 * 30 * 0.95 or counts[0] >= 10 * 46 * 0.95, frames


def test_playlists_conform_over_a_live_minute(stack: RunningStack) -> None:
    """Over a real minute, every media playlist follows SPEC.md §1 and removed segments stay up."""
    with httpx.Client(timeout=5) as client:
        _check_minute(client, stack)


def _check_minute(client: httpx.Client, stack: RunningStack) -> None:
    urls = rendition_urls(client, stack.master_url)
    assert set(urls) == {"v360", "v180", "a128"}
    td = None
    history: dict[str, dict[int, tuple[str, int, int]]] = {r: {} for r in urls}
    last_seq: dict[str, int] = {}
    last_change: dict[str, float] = {}
    max_gap_between_updates = 0.0
    removed_checked = 0
    pdt_by_msn: dict[int, dict[str, int]] = {}
    end = time.monotonic() + 60
    while time.monotonic() < end:
        for rid, url in urls.items():
            pl = fetch_playlist(client, url)
            now = time.monotonic()
            td = td or pl.target_duration_s
            assert pl.target_duration_s == td, "target duration changed"
            assert pl.playlist_type is None
            assert not pl.endlist
            for seg in pl.segments:
                assert round(seg.duration_us / 1e6) <= td, "EXTINF rounds above the target duration"
                assert seg.program_date_time_ms is not None, "segment without PROGRAM-DATE-TIME"
            window_us = sum(s.duration_us for s in pl.segments)
            assert window_us >= 3 * td * 1_000_000 * 0.98, f"{rid}: window {window_us} µs < 3 × TD"
            assert pl.segments[0].map_uri, "no EXT-X-MAP on the first segment"
            # monotonic media sequence, stable history
            prev = last_seq.get(rid)
            assert prev is None or pl.media_sequence >= prev, "media sequence went backwards"
            if prev is not None and pl.media_sequence > prev:
                # the segments that left the head must still be downloadable
                for msn in range(prev, pl.media_sequence):
                    if msn in history[rid]:
                        uri = history[rid][msn][0]
                        r = client.get(url.rsplit("/", 1)[0] + "/" + uri)
                        assert r.status_code == 200, (
                            f"removed segment {msn} of {rid}: {r.status_code}"
                        )
                        removed_checked += 1
            last_seq[rid] = pl.media_sequence
            for i, seg in enumerate(pl.segments):
                msn = pl.media_sequence + i
                entry = (seg.uri, seg.duration_us, seg.program_date_time_ms or 0)
                old = history[rid].get(msn)
                assert old is None or old == entry, f"{rid} msn {msn} changed: {old} → {entry}"
                if old is None and rid != "a128":
                    pdt_by_msn.setdefault(msn, {})[rid] = entry[2]
                history[rid][msn] = entry
                if i:
                    prev_seg = pl.segments[i - 1]
                    assert prev_seg.program_date_time_ms is not None
                    assert seg.program_date_time_ms is not None
                    step = seg.program_date_time_ms - prev_seg.program_date_time_ms
                    assert abs(step - prev_seg.duration_us / 1000) <= 1, "PDT not contiguous"
            newest = max(history[rid])
            key = f"{rid}:{newest}"
            if key not in last_change:
                if rid in {k.split(":")[0] for k in last_change}:
                    prev_t = max(t for k, t in last_change.items() if k.startswith(rid + ":"))
                    max_gap_between_updates = max(max_gap_between_updates, now - prev_t)
                last_change[key] = now
        time.sleep(0.5)
    assert td == 2
    assert removed_checked >= 3 * 20, removed_checked
    # a new segment at least every 1.5 × TD (+ polling slack)
    assert max_gap_between_updates <= 1.5 * td + 0.6, max_gap_between_updates
    # epoch-locked: the same msn has the same capture time in every video rendition
    for msn, per in pdt_by_msn.items():
        if len(per) > 1:
            assert len(set(per.values())) == 1, (msn, per)
            assert next(iter(per.values())) == msn * 2000
    # segments are CMAF: moof/mdat pairs, epoch tfdt
    base = urls["v360"].rsplit("/", 1)[0]
    msn = max(history["v360"])
    data = client.get(f"{base}/{msn}.m4s").raise_for_status().content
    assert [b.type for b in iter_boxes(data)][:2] == ["moof", "mdat"]


def test_segments_start_on_the_captured_frame_of_their_epoch_boundary(stack: RunningStack) -> None:
    """Segment n of every rung starts with the frame captured at n·D: epoch lock measured, not assumed."""
    from mainevent.media.encode.ffmpeg import BARCODE_BITS
    from mainevent.testing.barcode import segment_frame_numbers

    with httpx.Client(timeout=10) as client:
        urls = rendition_urls(client, stack.master_url)
        for rid, (w, h) in {"v360": (640, 360), "v180": (320, 180)}.items():
            base = urls[rid].rsplit("/", 1)[0]
            pl = fetch_playlist(client, urls[rid])
            init = client.get(f"{base}/init.mp4").raise_for_status().content
            msn = pl.last_msn
            seg = client.get(f"{base}/{msn}.m4s").raise_for_status().content
            frames = segment_frame_numbers(init, seg, w, h)
            first = msn * 2 * 30 % (1 << BARCODE_BITS)
            assert len(frames) == 60
            assert frames == [(first + i) % (1 << BARCODE_BITS) for i in range(60)], (
                rid,
                frames[:5],
                first,
            )


def test_rtmp_contribution_feed(tmp_path: Path) -> None:
    """A venue pushing RTMP (stream key in the path) goes live with epoch-numbered segments too."""
    s = start_stack(
        tmp_path / "rtmp", ladder="v180:320x180:200", extra_args=("--ingest-protocol", "rtmp")
    )
    try:
        assert s.ingest_url.startswith("rtmp://")
        assert s.ingest_url.endswith("/live/demo-key")
        with httpx.Client(timeout=5) as client:
            pl = fetch_playlist(client, f"{s.base_url}/live/{s.event}/v180/index.m3u8")
        seg = pl.segments[-1]
        assert seg.program_date_time_ms == pl.last_msn * 2000
    finally:
        assert not s.stop()
