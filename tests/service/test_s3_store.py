"""The S3-API segment store against moto's standalone server (real HTTP on loopback): uploads in
the background, reads back what left local disk, and a dead bucket never slows publication."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mainevent.media.store import LocalSegmentStore, SegmentRecord
from mainevent.media.store.s3 import S3Config, S3SegmentStore, backoff_s
from mainevent.testing.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BUCKET = "segments"
D_US = 2_000_000


@pytest.fixture
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    server.create_bucket(BUCKET)
    try:
        yield server
    finally:
        server.stop()


def make_store(root: Path, server: S3Server, **kw: object) -> S3SegmentStore:
    cfg = S3Config(
        bucket=BUCKET,
        endpoint_url=server.url,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        prefix="p/",
        retry_base_s=0.05,
        retry_max_s=0.5,
        timeout_s=1.0,
        **kw,  # type: ignore[arg-type]
    )
    return S3SegmentStore(LocalSegmentStore(root, memory_segments=4), cfg)


def record(msn: int, data: bytes) -> SegmentRecord:
    return SegmentRecord(msn, D_US, msn * 2000, "init.mp4", len(data))


async def publish(store: S3SegmentStore, msns: range) -> list[float]:
    """Store init + segments as the packager does; returns each put's duration."""
    await store.put_init("ev", "v1", "init.mp4", b"INIT")
    took = []
    for msn in msns:
        data = f"segment {msn}".encode() * 100
        t0 = time.perf_counter()
        await store.put_segment("ev", "v1", record(msn, data), data)
        took.append(time.perf_counter() - t0)
    return took


async def until_idle(store: S3SegmentStore, within_s: float = 60.0) -> None:
    async with asyncio.timeout(within_s):
        await store.wait_idle()


async def test_segments_reach_the_bucket_and_come_back_after_leaving_disk(
    tmp_path: Path, s3: S3Server
) -> None:
    """Every object is uploaded; beyond `local_segments` the old ones leave disk and are read back."""
    store = make_store(tmp_path, s3, local_segments=3)
    async with asyncio.TaskGroup() as tg:
        uploader = tg.create_task(store.serve())
        await publish(store, range(100, 110))
        await until_idle(store)
        uploader.cancel()
    keys = s3.keys(BUCKET, "p/ev/v1/")
    assert keys == {"p/ev/v1/init.mp4", *(f"p/ev/v1/{m}.m4s" for m in range(100, 110))}
    on_disk = sorted(int(p.stem) for p in (tmp_path / "ev" / "v1").glob("*.m4s"))
    assert on_disk == [107, 108, 109]
    store.forget("ev", "v1", list(range(100, 110)))  # out of memory too
    assert await store.read("ev", "v1", "101.m4s") == b"segment 101" * 100
    assert [r.msn for r in store.records("ev", "v1")] == list(range(100, 110))
    # A plain local store over the same directory no longer lists what only the bucket has.
    assert [r.msn for r in LocalSegmentStore(tmp_path).records("ev", "v1")] == [107, 108, 109]
    assert await store.read("ev", "v1", "99.m4s") is None
    st = store.statistics()
    # (the start-up sweep may upload an object the queue also carries: at least once each)
    assert st.uploaded >= 11
    assert st.evicted == 7
    assert st.fetched == 1


async def test_a_dead_bucket_never_blocks_publication_and_is_caught_up(
    tmp_path: Path, s3: S3Server
) -> None:
    """With the S3 server down, puts stay local-disk fast, the bounded queue overflows, and once
    the server is back every object reaches the bucket (none evicted before it did)."""
    s3.stop()
    store = make_store(tmp_path, s3, queue_max=4, local_segments=2)
    async with asyncio.TaskGroup() as tg:
        uploader = tg.create_task(store.serve())
        took = await publish(store, range(0, 30))
        for _ in range(600):  # ≤ 30 s: the uploader tries the dead port and backs off
            if store.statistics().failures >= 2:
                break
            await asyncio.sleep(0.05)
        st = store.statistics()
        assert st.failures >= 2, st
        assert st.overflowed > 0, st
        assert st.uploaded == 0, st
        assert max(took) < 0.5, max(took)  # local writes only, never the bucket
        assert len(list((tmp_path / "ev" / "v1").glob("*.m4s"))) == 30  # nothing evicted
        s3.start()
        s3.create_bucket(BUCKET)
        await until_idle(store)
        uploader.cancel()
    assert s3.keys(BUCKET, "p/ev/v1/") >= {f"p/ev/v1/{m}.m4s" for m in range(30)}
    assert "p/ev/v1/init.mp4" in s3.keys(BUCKET)
    assert not store.statistics().backlog


async def test_restart_uploads_what_a_crash_left_local_only(tmp_path: Path, s3: S3Server) -> None:
    """Segments stored while no uploader ran (crash) are uploaded by the next process's sweep."""
    first = make_store(tmp_path, s3)
    await publish(first, range(5, 9))  # no serve(): the queue dies with the process
    second = make_store(tmp_path, s3)
    async with asyncio.TaskGroup() as tg:
        uploader = tg.create_task(second.serve())
        await until_idle(second)
        uploader.cancel()
    assert s3.keys(BUCKET, "p/ev/v1/") == {
        "p/ev/v1/init.mp4",
        *(f"p/ev/v1/{m}.m4s" for m in range(5, 9)),
    }


def test_backoff_doubles_up_to_the_cap() -> None:
    """Retries wait 0.2, 0.4, 0.8 … seconds, never more than the cap."""
    assert [backoff_s(a, 0.2, 1.0) for a in (1, 2, 3, 4, 50)] == [0.2, 0.4, 0.8, 1.0, 1.0]


async def test_retention_delete_removes_local_and_bucket_copies(
    tmp_path: Path, s3: S3Server
) -> None:
    """`delete` (retention) removes a segment from disk and bucket; a restart never lists it."""
    store = make_store(tmp_path, s3, local_segments=2)
    async with asyncio.TaskGroup() as tg:
        uploader = tg.create_task(store.serve())
        await publish(store, range(100, 106))
        await until_idle(store)
        uploader.cancel()
    assert await store.read("ev", "v1", "100.m4s") is not None, "read back from the bucket"
    await store.delete("ev", "v1", [100, 101, 105])
    for msn in (100, 101, 105):
        assert await store.read("ev", "v1", f"{msn}.m4s") is None
    assert await store.read("ev", "v1", "102.m4s") is not None
    restarted = make_store(tmp_path, s3, local_segments=2)
    assert [r.msn for r in restarted.records("ev", "v1")] == [102, 103, 104]
