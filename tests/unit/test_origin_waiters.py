"""Held LL-HLS requests (`Waiters`): released together, bounded, timed out, cancelled; and the
PART-TARGET the origin declares for its parts."""

from __future__ import annotations

import asyncio
import gc
import time
from fractions import Fraction

import pytest

from mainevent.media.origin.blocking import HoldLimitReached, Waiters
from mainevent.media.origin.live import declared_part_target_us

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_release_answers_every_matching_hold_once_in_arrival_order() -> None:
    """A publication answers all players waiting for it, first come first answered, and no one else."""
    w = Waiters(100)
    calls: list[tuple[str, bool]] = []
    for name, key in (("a", 1), ("b", 2), ("c", 1), ("d", 1)):
        w.hold(key, 10, lambda ok, name=name: calls.append((name, ok)))
    assert (w.held, w.peak) == (4, 4)
    generation = w.generation
    assert w.release_if(lambda k: k == 1) == 3
    assert calls == [("a", True), ("c", True), ("d", True)]
    assert w.generation == generation + 1
    assert w.keys() == [2]
    assert w.release_if(lambda k: k == 1) == 0
    assert w.generation == generation + 1  # nothing released, nothing to prepare
    assert (w.held, w.peak) == (1, 4)


async def test_hold_times_out_once_and_cancel_is_silent() -> None:
    """A hold that is not released answers False after its time; a cancelled one never answers."""
    w = Waiters(10)
    calls: list[bool] = []
    h = w.hold("k", 0.05, calls.append)
    gone = w.hold("k", 0.05, calls.append)
    gone.cancel()
    gone.cancel()
    assert w.held == 1
    deadline = time.monotonic() + 2
    while not calls:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert calls == [False]
    assert (w.held, w.keys(), h.active) == (0, [], False)
    assert w.release_if(lambda k: True) == 0
    assert calls == [False]


async def test_bound_refuses_at_once_and_frees_on_release() -> None:
    """Beyond `limit` held requests the next one is refused immediately; released room is reusable."""
    seen: list[object] = []
    w = Waiters(2, on_hold=seen.append)
    w.hold("k", 10, lambda ok: None)
    w.hold("k", 10, lambda ok: None)
    with pytest.raises(HoldLimitReached):
        w.hold("k", 10, lambda ok: None)
    w.release_if(lambda k: True)
    w.hold("j", 10, lambda ok: None)
    assert w.held == 1
    assert seen == ["k", "k", "j"]  # every request held, not the one refused


async def test_a_failing_answer_does_not_keep_others_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One broken connection's callback raising does not stop the release of the others."""
    w = Waiters(10)
    calls: list[bool] = []

    def broken(ok: bool) -> None:
        raise RuntimeError("transport gone")

    w.hold("k", 10, broken)
    w.hold("k", 10, calls.append)
    assert w.release_if(lambda k: True) == 2
    assert calls == [True]
    assert "answering a held request failed" in caplog.text


async def test_no_collection_during_a_release_and_gc_state_restored() -> None:
    """The collector is off while a release runs (a pause would delay every player after it)
    and back to how it was afterwards."""
    w = Waiters(10)
    seen: list[bool] = []
    w.hold("k", 10, lambda ok: seen.append(gc.isenabled()))
    assert gc.isenabled()
    w.release_if(lambda k: True)
    assert seen == [False]
    assert gc.isenabled()
    gc.disable()
    try:
        w.hold("k", 10, lambda ok: None)
        w.release_if(lambda k: True)
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_wait_is_the_awaitable_form() -> None:
    """`wait` returns True when released, False on timeout, and a cancelled waiter leaves."""
    w = Waiters(10)
    task = asyncio.ensure_future(w.wait("k", 10))
    await asyncio.sleep(0)
    w.release_if(lambda k: True)
    assert await task
    assert not await w.wait("k", 0.01)
    task = asyncio.ensure_future(w.wait("k", 10))
    await asyncio.sleep(0)
    assert w.held == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert w.held == 0


def longest_part(cut: Fraction, sample: Fraction, offset: Fraction, parts: int) -> Fraction:
    """Cut a stream of `sample`-long samples (first at `offset`) as the cutter does — each
    sample in the part its start falls in — and return the longest part."""
    longest = Fraction(0)
    n = 0
    for k in range(parts):
        first = None
        while offset + n * sample < (k + 1) * cut:
            if offset + n * sample >= k * cut and first is None:
                first = n
            n += 1
        if first is not None:
            longest = max(longest, (n - first) * sample)
    return longest


@pytest.mark.parametrize("part_ms", [200, 250, 400, 500, 1000])
@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_declared_part_target_covers_the_longest_part(part_ms: int, fps: int) -> None:
    """PART-TARGET is at least the longest part the cutter makes, audio (AAC frames starting
    one priming frame early) or video, and less than 1 ms more."""
    cut = Fraction(part_ms, 1000)
    aac = Fraction(1024, 48_000)
    parts = 8 * 1000 // part_ms  # 8 s: every phase of AAC frames against the part grid
    longest = max(
        longest_part(cut, aac, -aac, parts), longest_part(cut, Fraction(1, fps), Fraction(0), parts)
    )
    declared = Fraction(declared_part_target_us(part_ms, fps), 1_000_000)
    assert longest <= declared < longest + Fraction(1, 1000)


def test_default_part_target_is_declared_as_512_ms() -> None:
    """With the default 0.5 s cut the longest part is 24 AAC frames: PART-TARGET 0.512 s."""
    assert declared_part_target_us(500, 30) == 512_000
