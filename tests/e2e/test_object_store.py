"""`mainevent up` with `origin.store = "s3"` against moto's standalone S3 server (real HTTP):
segments reach the bucket, leave local disk and are read back for clips; the bucket going down
never holds up the live edge, and the uploads catch up when it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mainevent.media.manifest import parse_media_playlist
from mainevent.testing.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from mainevent.testing.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUCKET = "live-segments"
KEEP = 3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    server.create_bucket(BUCKET)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[RunningStack]:
    env = {
        "MAINEVENT_ORIGIN__STORE": "s3",
        "MAINEVENT_S3__BUCKET": BUCKET,
        "MAINEVENT_S3__ENDPOINT_URL": s3.url,
        "MAINEVENT_S3__REGION": REGION,
        "MAINEVENT_S3__ACCESS_KEY_ID": ACCESS_KEY,
        "MAINEVENT_S3__SECRET_ACCESS_KEY": SECRET_KEY,
        "MAINEVENT_S3__LOCAL_SEGMENTS": str(KEEP),
        # A small memory cache, so old segments are read from disk or the bucket, not memory.
        "MAINEVENT_ORIGIN__MEMORY_SEGMENTS": "4",
        "MAINEVENT_S3__RETRY_MAX_S": "1",
        "MAINEVENT_S3__TIMEOUT_S": "2",
    }
    s = start_stack(tmp_path_factory.mktemp("s3"), extra_args=("--no-edges",), env=env)
    try:
        s.wait_window(4, timeout=60)
        yield s
    finally:
        assert not s.stop()


def _s3_health(stack: RunningStack) -> dict[str, Any]:
    h = stack.health()["s3"]
    assert isinstance(h, dict)
    return h


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _last_msn(stack: RunningStack) -> int:
    text = httpx.get(f"{stack.base_url}/live/{stack.event}/v360/index.m3u8", timeout=10).text
    return parse_media_playlist(text).last_msn


@pytest.mark.timeout(180)
def test_old_segments_leave_disk_and_clips_read_them_back(
    stack: RunningStack, s3: S3Server, tmp_path: Path
) -> None:
    """Beyond `s3.local_segments` segments exist only in the bucket; a clip over them still
    plays (its segments come from the bucket) and exports."""
    index = (stack.data_dir / stack.event / "v360" / "index.jsonl").read_text()
    first = int(index.split('"msn":', 1)[1].split(",", 1)[0])  # the first segment published
    _wait(lambda: _last_msn(stack) >= first + 12, 60, "more segments")
    _wait(
        lambda: s3.keys(BUCKET, f"{stack.event}/v360/") >= {f"{stack.event}/v360/{first}.m4s"},
        30,
        "upload",
    )
    local = stack.data_dir / stack.event / "v360"
    _wait(lambda: not (local / f"{first}.m4s").exists(), 30, f"segment {first} leaving disk")
    assert len(list(local.glob("*.m4s"))) <= KEEP + 2  # newest ones (+ uploads in flight)

    start_ms = first * 2000
    r = httpx.put(
        f"{stack.base_url}/_ops/events/{stack.event}/highlights",
        json={
            "highlights": [
                {"id": "old", "title": "Old", "start_ms": start_ms, "end_ms": start_ms + 2000}
            ]
        },
        headers={"X-Mainevent-Admin-Secret": stack.admin_secret or ""},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    base = f"{stack.base_url}/live/{stack.event}/clips/old"
    clip = parse_media_playlist(httpx.get(f"{base}/v360/index.m3u8", timeout=10).text)
    assert [s.uri for s in clip.segments] == [f"{first}.m4s"]
    seg = httpx.get(f"{base}/v360/{first}.m4s", timeout=10)
    assert seg.status_code == 200
    assert (
        seg.content
        == s3.client()
        .get_object(Bucket=BUCKET, Key=f"{stack.event}/v360/{first}.m4s")["Body"]
        .read()
    )
    mp4 = httpx.get(f"{base}/clip.mp4", timeout=60)
    assert mp4.status_code == 200, mp4.text
    assert mp4.content[4:8] == b"ftyp"
    assert _s3_health(stack)["fetched"] >= 1


@pytest.mark.timeout(240)
def test_bucket_outage_never_holds_up_the_live_edge(stack: RunningStack, s3: S3Server) -> None:
    """With the S3 server down the playlist keeps advancing on time; afterwards every segment
    published during the outage reaches the bucket."""
    s3.stop()
    try:
        before = _last_msn(stack)
        t0 = time.monotonic()
        _wait(lambda: _last_msn(stack) >= before + 4, 40, "live segments during the outage")
        # 4 segments of 2 s in well under 4 × 2 s + slack: publication did not wait on S3.
        assert time.monotonic() - t0 < 20
        newest = _last_msn(stack)
        assert abs(newest * 2 + 2 - time.time()) < 8  # the live edge stays near the wall clock
        _wait(lambda: _s3_health(stack)["failures"] >= 1, 30, "failed uploads")
        during = range(before + 1, newest + 1)
    finally:
        s3.start()
    s3.create_bucket(BUCKET)  # moto keeps objects in memory: the restarted one is empty
    _wait(
        lambda: (
            {f"{stack.event}/v360/{m}.m4s" for m in during}
            <= s3.keys(BUCKET, f"{stack.event}/v360/")
        ),
        120,
        "the outage's segments to reach the bucket",
    )
