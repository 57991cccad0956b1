"""What the stores of shared state (sessions, rate limits, decisions) have in common.

Each store is a Protocol with an embedded implementation (process memory, around a sans-IO core)
and a distributed one (Redis). A distributed store that cannot answer raises
:class:`SharedStateUnavailable`; callers decide per operation whether that fails open or closed.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["SharedStateUnavailable", "complete_now"]

T = TypeVar("T")


class SharedStateUnavailable(Exception):
    """The shared store (Redis) did not answer in time or refused the operation."""


def complete_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (embedded stores only) to its result, synchronously.

    The control plane's HTTP front answers cached playback starts inside the protocol's
    ``data_received``, where it cannot await; it only does so when every store is embedded, whose
    async methods return without ever yielding to the loop. Raises RuntimeError (after closing
    the coroutine) if ``coro`` would suspend after all.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("complete_now: the coroutine suspended (a distributed store?)")
