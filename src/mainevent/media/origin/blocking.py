"""LL-HLS request rules (SPEC §2, rfc8216bis §6.2.5-6.2.6, Appendix B) and the held-request registry.

`parse_directives` and `check_directives` are sans-IO: query text and window facts in, a
decision out. `Waiters` is the thin asyncio part: one callback and one timer per held request,
grouped by what it waits for, answered in one pass by the publication that satisfies them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from urllib.parse import parse_qsl

__all__ = [
    "Directives",
    "Hold",
    "HoldLimitReached",
    "Rejection",
    "Waiters",
    "cache_control",
    "check_directives",
    "parse_directives",
]

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"[0-9]{1,18}")
_NAMES = ("_HLS_msn", "_HLS_part", "_HLS_skip")


@dataclass(frozen=True, slots=True)
class Directives:
    """The delivery directives of a media playlist request."""

    msn: int | None = None
    part: int | None = None
    skip: bool = False

    @property
    def blocking(self) -> bool:
        return self.msn is not None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request the origin answers with an error at once: `status` and a reason for humans."""

    status: int
    reason: str


def parse_directives(query: str) -> Directives | Rejection:
    """Read `_HLS_msn`, `_HLS_part`, `_HLS_skip` from a query string; other keys are ignored.

    Values must be plain decimal numbers (at most 18 digits: no sign, no spaces) and each
    directive may appear once; anything else is a 400, never a held request.
    """
    seen: dict[str, str] = {}
    if "_HLS_" in query:
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in _NAMES:
                if key in seen:
                    return Rejection(400, f"{key} given more than once")
                seen[key] = value
    numbers: dict[str, int] = {}
    for name in ("_HLS_msn", "_HLS_part"):
        text = seen.get(name)
        if text is not None:
            if _NUMBER.fullmatch(text) is None:
                return Rejection(400, f"{name}={text[:40]!r} is not a non-negative decimal number")
            numbers[name] = int(text)
    skip = seen.get("_HLS_skip")
    if skip is not None and skip not in ("YES", "v2"):
        return Rejection(400, f"_HLS_skip={skip[:40]!r}: only YES or v2 are defined")
    msn, part = numbers.get("_HLS_msn"), numbers.get("_HLS_part")
    if part is not None and msn is None:
        return Rejection(400, "_HLS_part without _HLS_msn")
    return Directives(msn=msn, part=part, skip=skip is not None)


def check_directives(
    d: Directives,
    *,
    low_latency: bool,
    ended: bool,
    last_msn: int,
    delta_updates: bool = False,
) -> Directives | Rejection:
    """The directives to act on, or why the request is refused (SPEC §2).

    On an ENDLIST playlist every directive is ignored. A playlist without
    EXT-X-SERVER-CONTROL (standard latency mode) offers neither blocking reload nor delta
    updates, so asking for them is a client error rather than a silently different answer.
    A standard-mode DVR playlist (`delta_updates`: CAN-SKIP-UNTIL without CAN-BLOCK-RELOAD)
    offers delta updates only.
    """
    if ended:
        return Directives()
    if not low_latency:
        if delta_updates and not d.blocking:
            return d
        if delta_updates:
            return Rejection(
                400,
                "this playlist offers delta updates (_HLS_skip) but no blocking reload "
                "(the event runs in standard latency mode)",
            )
        if d.blocking or d.skip:
            return Rejection(
                400,
                "this playlist offers no blocking reload or delta updates "
                "(no EXT-X-SERVER-CONTROL: the event runs in standard latency mode)",
            )
        return d
    if d.msn is not None and d.msn > last_msn + 2:
        return Rejection(
            400, f"_HLS_msn={d.msn} is more than 2 beyond the last segment ({last_msn})"
        )
    return d


def cache_control(target_duration_s: int, *, blocking: bool, error: bool = False) -> str:
    """Cache-Control for LL-HLS playlist responses (rfc8216bis Appendix B, SPEC §2)."""
    if error:
        return f"max-age={target_duration_s}"
    if blocking:
        return f"public, max-age={6 * target_duration_s}"
    # TD/2, in whole seconds as caches keep it, but never 0 (that would disable caching).
    return f"public, max-age={max(1, target_duration_s // 2)}"


class HoldLimitReached(Exception):
    """The origin already holds as many requests as it is allowed to."""


class Hold:
    """One held request: its group key, what to call when it ends, and its timer."""

    __slots__ = ("_on_done", "_timer", "_waiters", "key")

    def __init__(self, waiters: Waiters, key: Hashable, on_done: Callable[[bool], None]) -> None:
        self._waiters: Waiters | None = waiters
        self._on_done = on_done
        self._timer: asyncio.TimerHandle | None = None
        self.key = key

    @property
    def active(self) -> bool:
        return self._waiters is not None

    def cancel(self) -> None:
        """Stop holding without an answer (the client went away); idempotent."""
        waiters, self._waiters = self._waiters, None
        if waiters is not None:
            waiters._remove(self)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _finish(self, ok: bool) -> None:
        self._waiters = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self._on_done(ok)
        except Exception:
            # One broken client must not keep the others of its group waiting.
            log.exception("answering a held request failed")

    def _expire(self) -> None:
        self._timer = None
        waiters, self._waiters = self._waiters, None
        if waiters is not None:
            waiters._remove(self)
            self._finish(False)


class Waiters:
    """Held requests of one origin, grouped by key, released together when their key is met.

    A held request is a callback (plus one timer handle), not a task: `release_if` answers a
    whole group synchronously, in one pass, from inside the publication that satisfies it, so
    an adapter that writes pre-rendered bytes in the callback (`protocol.py`) answers thousands
    of players without a single coroutine switch. `wait` is the awaitable form for ASGI.
    """

    def __init__(self, limit: int, on_hold: Callable[[Hashable], None] | None = None) -> None:
        """`on_hold(key)` is called for every request held (not for one refused at the limit)."""
        self.limit = limit
        self._on_hold = on_hold
        self.held = 0
        self.peak = 0
        self.generation = 0  # counts `release_if` calls: answers prepared once per release
        self._by_key: dict[Hashable, dict[Hold, None]] = {}

    def keys(self) -> list[Hashable]:
        return list(self._by_key)

    def hold(self, key: Hashable, hold_s: float, on_done: Callable[[bool], None]) -> Hold:
        """Hold until `release_if` accepts `key` (`on_done(True)`) or `hold_s` seconds pass
        (`on_done(False)`); `on_done` is called exactly once unless the hold is cancelled.

        Raises `HoldLimitReached` at once when `limit` requests are held already.
        """
        if self.held >= self.limit:
            raise HoldLimitReached(f"{self.held} requests held already (limit {self.limit})")
        h = Hold(self, key, on_done)
        group = self._by_key.get(key)
        if group is None:
            group = self._by_key[key] = {}
        group[h] = None
        h._timer = asyncio.get_running_loop().call_later(hold_s, h._expire)
        self.held += 1
        if self.held > self.peak:
            self.peak = self.held
        if self._on_hold is not None:
            self._on_hold(key)
        return h

    async def wait(self, key: Hashable, hold_s: float) -> bool:
        """Hold until `release_if` accepts `key` (True) or `hold_s` seconds pass (False).

        Raises `HoldLimitReached` at once when `limit` requests are held already.
        """
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def settle(ok: bool) -> None:
            if not fut.done():
                fut.set_result(ok)

        h = self.hold(key, hold_s, settle)
        try:
            return await fut
        finally:
            h.cancel()

    def release_if(self, satisfied: Callable[[Hashable], bool]) -> int:
        """Release every group whose key `satisfied` accepts; returns how many were released."""
        count = 0
        keys = [k for k in self._by_key if satisfied(k)]
        if not keys:
            return 0
        self.generation += 1
        # A collection in the middle of a release would hold up every player after it (with
        # thousands of connections alive it takes tens of ms): it runs after the release.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for key in keys:
                group = self._by_key.pop(key)
                self.held -= len(group)
                count += len(group)
                for h in group:
                    h._finish(True)
        finally:
            if collecting:
                gc.enable()
        return count

    def _remove(self, h: Hold) -> None:
        group = self._by_key.get(h.key)
        if group is not None and h in group:
            del group[h]
            self.held -= 1
            if not group:
                del self._by_key[h.key]
