"""Highlights end to end: `mainevent up` (real feed, ffmpeg, origin), a range marked on the
origin's ops API, its EXT-X-DATERANGE / EventStream in the live manifests, its VOD clip
playlist, and its exported MP4, whose first frame's burnt-in clock is read back.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mainevent.media.encode.ffmpeg import BARCODE_BITS, find_ffmpeg
from mainevent.media.manifest import parse_media_playlist, validate_media_playlist
from mainevent.testing.barcode import read_barcode
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET_HEADER = "X-Mainevent-Admin-Secret"
D_MS = 2000
FPS = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # With the delivery tier and the control plane: highlights are marked on the control plane
    # and clips fetched through an edge in the last test.
    s = start_stack(tmp_path_factory.mktemp("highlights"), steering=True)
    try:
        s.wait_window(4, timeout=60)
        yield s
    finally:
        assert not s.stop()


def _put(
    stack: RunningStack, highlights: list[dict[str, object]], **headers: str
) -> httpx.Response:
    h = {SECRET_HEADER: stack.admin_secret or ""} | headers
    return httpx.put(
        f"{stack.base_url}/_ops/events/{stack.event}/highlights",
        json={"highlights": highlights},
        headers=h,
        timeout=10,
    )


def _wait_ok(url: str, timeout: float = 30.0) -> httpx.Response:
    """GET until it is not 409 (the clip's range still being captured)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url, timeout=30)
        if r.status_code != 409 or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def _first_frame_number(mp4: Path, width: int, height: int) -> int:
    out = subprocess.run(
        [
            find_ffmpeg(),
            "-v",
            "error",
            "-i",
            str(mp4),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "pipe:1",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert len(out) == width * height
    return read_barcode(out, width, height)


@pytest.mark.timeout(180)
def test_marked_range_is_listed_clipped_and_exported(stack: RunningStack, tmp_path: Path) -> None:
    """A marked range shows in the live playlist and MPD; its clip is segment-accurate VOD and
    its MP4 decodes, starts at 0 and opens within one segment of the marked start."""
    base = f"{stack.base_url}/live/{stack.event}"
    # Not the first segment of the stream: under load (CI, two test workers) the first
    # segment's burnt-in frame numbers were seen to start 1.9 s after its PDT (opening frames
    # lost while the feed connection settles, suspected).
    deadline = time.monotonic() + 30
    while True:
        live = parse_media_playlist(httpx.get(f"{base}/v360/index.m3u8", timeout=10).text)
        if len(live.segments) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(live.segments) >= 4, "the stack lists fewer than 4 segments after 30 s"
    first_pdt = live.segments[-3].program_date_time_ms
    assert first_pdt is not None
    start = first_pdt + 700  # inside a segment: the clip starts at that segment's boundary
    end = start + 3000
    point = start + 100
    r = _put(
        stack,
        [
            {"id": "ko", "title": "Knockout", "start_ms": start, "end_ms": end, "number": 1},
            {"id": "bell", "title": "Bell", "start_ms": point, "number": 2},
        ],
    )
    assert r.status_code == 200, r.text

    text = httpx.get(f"{base}/v360/index.m3u8", timeout=10).text
    pl = parse_media_playlist(text)
    validate_media_playlist(pl)
    ids = {d.id: d for d in pl.date_ranges}
    assert ids["highlight-ko"].start_date_ms == start
    assert ids["highlight-ko"].end_date_ms == end
    assert ids["highlight-bell"].end_date_ms is None
    mpd = httpx.get(f"{base}/manifest.mpd", timeout=10).text
    assert "<EventStream" in mpd
    assert 'messageData="ko"' in mpd

    clip_pl = _wait_ok(f"{base}/clips/ko/v360/index.m3u8")
    assert clip_pl.status_code == 200, clip_pl.text
    clip = parse_media_playlist(clip_pl.text)
    validate_media_playlist(clip)
    assert clip.playlist_type == "VOD"
    assert clip.endlist
    pdts = [s.program_date_time_ms for s in clip.segments]
    assert pdts[0] is not None
    assert pdts[0] <= start < pdts[0] + D_MS
    last = pdts[-1]
    assert last is not None
    assert last < end <= last + D_MS
    seg = httpx.get(f"{base}/clips/ko/v360/{clip.segments[0].uri}", timeout=10)
    assert seg.status_code == 200
    assert seg.content[4:8] == b"moof"
    master = httpx.get(f"{base}/clips/ko/master.m3u8", timeout=10)
    assert master.status_code == 200
    assert "v360/index.m3u8" in master.text

    mp4 = _wait_ok(f"{base}/clips/ko/clip.mp4", timeout=60)
    assert mp4.status_code == 200, mp4.text
    assert "attachment" in mp4.headers["content-disposition"]
    path = tmp_path / "ko.mp4"
    path.write_bytes(mp4.content)
    decoded = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert decoded.returncode == 0, decoded.stderr[-2000:]
    assert "start: 0.000000" in decoded.stderr, decoded.stderr[:2000]
    assert "Video: h264" in decoded.stderr
    assert "Audio: aac" in decoded.stderr
    # The first frame's burnt-in frame number (since the epoch, mod 2^24) is its capture time.
    n = _first_frame_number(path, 640, 360)
    expected = start * FPS // 1000
    full = expected - ((expected - n) % (1 << BARCODE_BITS))
    if expected - full > (1 << BARCODE_BITS) // 2:
        full += 1 << BARCODE_BITS
    first_frame_ms = full * 1000 // FPS
    assert abs(first_frame_ms - start) <= D_MS, (first_frame_ms, start)
    assert first_frame_ms == pdts[0]


def test_bad_highlight_pushes_and_clip_requests_are_refused(stack: RunningStack) -> None:
    """Wrong or missing secret, unknown event, reversed range, points and future ranges: precise 4xx."""
    base = f"{stack.base_url}/live/{stack.event}"
    ok = [{"id": "a", "title": "A", "start_ms": 10_000, "end_ms": 12_000}]
    assert _put(stack, ok, **{SECRET_HEADER: "wrong"}).status_code == 403
    r = httpx.put(f"{stack.base_url}/_ops/events/{stack.event}/highlights", json={"highlights": ok})
    assert r.status_code == 401
    r = httpx.put(
        f"{stack.base_url}/_ops/events/nope/highlights",
        json={"highlights": ok},
        headers={SECRET_HEADER: stack.admin_secret or ""},
    )
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_event"
    reversed_ = [{"id": "r", "title": "R", "start_ms": 12_000, "end_ms": 10_000}]
    r = _put(stack, reversed_)
    assert r.status_code == 422
    assert "end must be after start" in r.json()["detail"]
    now_ms = int(time.time() * 1000)
    r = _put(
        stack,
        [
            {"id": "future", "title": "F", "start_ms": now_ms + 60_000, "end_ms": now_ms + 70_000},
            {"id": "pt", "title": "P", "start_ms": now_ms},
        ],
    )
    assert r.status_code == 200
    fut = httpx.get(f"{base}/clips/future/v360/index.m3u8", timeout=10)
    assert fut.status_code == 409
    assert int(fut.headers["retry-after"]) >= 50
    assert httpx.get(f"{base}/clips/pt/v360/index.m3u8", timeout=10).status_code == 404
    assert httpx.get(f"{base}/clips/none/v360/index.m3u8", timeout=10).status_code == 404
    listed = httpx.get(f"{stack.base_url}/_ops/events/{stack.event}/highlights", timeout=10).json()
    assert [h["id"] for h in listed["highlights"]] == ["future", "pt"]


@pytest.mark.timeout(120)
def test_operator_marks_a_range_on_the_control_plane_and_an_edge_serves_its_clip(
    stack: RunningStack,
) -> None:
    """Control plane → origin: a range marked with the operator API is listed live and its clip
    plays through a CDN edge."""
    assert stack.control_url is not None
    auth = {"Authorization": f"Bearer {stack.control_admin_key}"}
    now = datetime.now(UTC)
    r = httpx.post(
        f"{stack.control_url}/v1/events",
        json={
            "id": stack.event,
            "title": "Demo",
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=2)).isoformat(),
        },
        headers=auth | {"Idempotency-Key": "create-demo"},
        timeout=30,
    )
    assert r.status_code in (201, 409), r.text  # 409: an earlier run of this module made it
    start = now - timedelta(seconds=7)
    r = httpx.post(
        f"{stack.control_url}/v1/events/{stack.event}/highlights",
        json={
            "title": "Round 1",
            "start": start.isoformat(),
            "end": (start + timedelta(seconds=3)).isoformat(),
        },
        headers=auth | {"Idempotency-Key": "mark-1"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    assert r.headers["media-sync"] == "ok"
    hl = r.json()
    text = httpx.get(f"{stack.base_url}/live/{stack.event}/v360/index.m3u8", timeout=10).text
    assert f'ID="highlight-{hl["id"]}"' in text
    edge = stack.edges["cdn-a"]
    clip = _wait_ok(f"{edge}/live/{stack.event}/clips/{hl['id']}/v360/index.m3u8")
    assert clip.status_code == 200, clip.text
    pl = parse_media_playlist(clip.text)
    assert pl.endlist
    seg = httpx.get(
        f"{edge}/live/{stack.event}/clips/{hl['id']}/v360/{pl.segments[0].uri}", timeout=10
    )
    assert seg.status_code == 200
