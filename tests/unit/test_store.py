"""The local segment store: whole files only, and what was stored comes back after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from mainevent.media.store import LocalSegmentStore, SegmentRecord, StoreError

pytestmark = pytest.mark.anyio


def rec(msn: int, data: bytes) -> SegmentRecord:
    return SegmentRecord(
        msn=msn,
        duration_us=2_000_000,
        program_date_time_ms=msn * 2000,
        init_name="init.mp4",
        size=len(data),
        parts=((500_000, True), (500_000, False)),
    )


async def test_round_trip_and_restart(tmp_path: Path) -> None:
    """Segments and inits written are read back, and a new store on the same dir lists them."""
    s = LocalSegmentStore(tmp_path, memory_segments=4)
    await s.put_init("ev", "v1", "init.mp4", b"INIT")
    for msn in range(10, 15):
        await s.put_segment("ev", "v1", rec(msn, b"x" * msn), b"x" * msn)
    assert await s.read("ev", "v1", "12.m4s") == b"x" * 12
    again = LocalSegmentStore(tmp_path)
    assert [r.msn for r in again.records("ev", "v1")] == [10, 11, 12, 13, 14]
    assert again.records("ev", "v1")[0] == rec(10, b"x" * 10)
    assert again.inits("ev", "v1") == {"init.mp4": b"INIT"}
    assert await again.read("ev", "v1", "14.m4s") == b"x" * 14
    assert await again.read("ev", "v1", "99.m4s") is None


async def test_torn_index_and_missing_files_are_skipped(tmp_path: Path) -> None:
    """A crash mid-write leaves no half segment listed: torn lines and short files are ignored."""
    s = LocalSegmentStore(tmp_path)
    for msn in (1, 2, 3):
        await s.put_segment("ev", "v1", rec(msn, b"abc"), b"abc")
    d = tmp_path / "ev" / "v1"
    (d / "2.m4s").write_bytes(b"ab")  # truncated behind our back
    (d / "3.m4s").unlink()
    index = d / "index.jsonl"
    index.write_text(index.read_text() + '{"msn": 4, "dur')  # torn append
    assert [r.msn for r in LocalSegmentStore(tmp_path).records("ev", "v1")] == [1]
    assert not list(d.glob(".*.tmp")), "temporary files left behind"


async def test_size_mismatch_is_refused(tmp_path: Path) -> None:
    """A record that does not match its bytes is refused before anything is written."""
    s = LocalSegmentStore(tmp_path)
    with pytest.raises(StoreError, match="record says"):
        await s.put_segment("ev", "v1", rec(1, b"abcd"), b"abc")
    assert s.records("ev", "v1") == []


async def test_parts_are_memory_only_and_forgotten(tmp_path: Path) -> None:
    """Parts are served from memory and dropped with their segment."""
    s = LocalSegmentStore(tmp_path)
    s.put_part("ev", "v1", 5, 0, b"p0")
    assert await s.read("ev", "v1", "5.0.m4s") == b"p0"
    s.forget("ev", "v1", [5])
    assert await s.read("ev", "v1", "5.0.m4s") is None


async def test_unwritable_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A store that cannot write says which file and why."""
    blocker = tmp_path / "ev"
    blocker.write_text("not a dir")
    s = LocalSegmentStore(tmp_path)
    with pytest.raises(StoreError, match="cannot"):
        await s.put_segment("ev", "v1", rec(1, b"a"), b"a")
