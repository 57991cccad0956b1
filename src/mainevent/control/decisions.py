"""Sans-IO cache of entitlement answers per (account, event), with known-good memory for outages.

A fresh entry (younger than ``ttl``, same account generation) is reused instead of asking the
store. Purchases and plan changes bump the account's generation, so the next request asks again.
Positive answers are also remembered as *known good* for ``known_good_ttl``: while the store is
failing, such viewers keep access (fail-open) and everyone else gets a retryable error.

:class:`DecisionStore` is the role the playback service talks to: :class:`MemoryDecisionStore`
(this process) or the Redis store of ``mainevent.control.redis_state`` (shared by every worker,
so a purchase on one worker is seen by all).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from mainevent.control.entitlement import Denial

__all__ = ["CachedDecision", "DecisionCache", "DecisionStore", "MemoryDecisionStore"]


@dataclass(frozen=True, slots=True)
class CachedDecision:
    """An entitlement answer: ``denial`` is None when the viewer is entitled."""

    denial: Denial | None
    at: float
    generation: int


class DecisionCache:
    """Bounded LRU; all times are passed in (epoch or monotonic, but consistently)."""

    __slots__ = ("_entries", "_generations", "_known_good", "known_good_ttl", "max_entries", "ttl")

    def __init__(self, ttl: float, known_good_ttl: float, max_entries: int = 1_000_000) -> None:
        self.ttl = ttl
        self.known_good_ttl = known_good_ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], CachedDecision] = OrderedDict()
        self._known_good: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._generations: dict[str, int] = {}

    def get(self, account_id: str, event_id: str, now: float) -> CachedDecision | None:
        """A fresh, still-valid answer, or None (ask the store)."""
        entry = self._entries.get((account_id, event_id))
        if entry is None:
            return None
        if now - entry.at >= self.ttl or entry.generation != self._generations.get(account_id, 0):
            return None
        return entry

    def put(self, account_id: str, event_id: str, denial: Denial | None, now: float) -> None:
        """Remember an answer from the store."""
        key = (account_id, event_id)
        self._entries[key] = CachedDecision(denial, now, self._generations.get(account_id, 0))
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if denial is None:
            self.mark_known_good(account_id, event_id, now)

    def mark_known_good(self, account_id: str, event_id: str, now: float) -> None:
        """Record a positive decision (also used for viewers pre-authorised in the waiting room)."""
        key = (account_id, event_id)
        self._known_good[key] = now
        self._known_good.move_to_end(key)
        if len(self._known_good) > self.max_entries:
            self._known_good.popitem(last=False)

    def known_good(self, account_id: str, event_id: str, now: float) -> bool:
        """Whether this viewer had a positive decision recently enough to fail open for them."""
        at = self._known_good.get((account_id, event_id))
        return at is not None and now - at < self.known_good_ttl

    def invalidate_account(self, account_id: str) -> None:
        """A purchase or plan change: stop reusing this account's answers."""
        self._generations[account_id] = self._generations.get(account_id, 0) + 1

    def __len__(self) -> int:
        return len(self._entries)


class DecisionStore(Protocol):
    """Where entitlement answers are cached; the operations of :class:`DecisionCache`, awaitable.

    A distributed store raises ``SharedStateUnavailable`` when it cannot answer.
    """

    async def get(self, account_id: str, event_id: str, now: float) -> CachedDecision | None:
        """See :meth:`DecisionCache.get`."""
        ...

    async def put(self, account_id: str, event_id: str, denial: Denial | None, now: float) -> None:
        """See :meth:`DecisionCache.put`."""
        ...

    async def mark_known_good(self, account_id: str, event_id: str, now: float) -> None:
        """See :meth:`DecisionCache.mark_known_good`."""
        ...

    async def known_good(self, account_id: str, event_id: str, now: float) -> bool:
        """See :meth:`DecisionCache.known_good`."""
        ...

    async def invalidate_account(self, account_id: str) -> None:
        """See :meth:`DecisionCache.invalidate_account`."""
        ...


class MemoryDecisionStore:
    """The embedded store: a :class:`DecisionCache` in this process (never suspends)."""

    __slots__ = ("core",)

    def __init__(self, ttl: float, known_good_ttl: float, max_entries: int = 1_000_000) -> None:
        self.core = DecisionCache(ttl, known_good_ttl, max_entries)

    async def get(self, account_id: str, event_id: str, now: float) -> CachedDecision | None:
        """See :meth:`DecisionCache.get`."""
        return self.core.get(account_id, event_id, now)

    async def put(self, account_id: str, event_id: str, denial: Denial | None, now: float) -> None:
        """See :meth:`DecisionCache.put`."""
        self.core.put(account_id, event_id, denial, now)

    async def mark_known_good(self, account_id: str, event_id: str, now: float) -> None:
        """See :meth:`DecisionCache.mark_known_good`."""
        self.core.mark_known_good(account_id, event_id, now)

    async def known_good(self, account_id: str, event_id: str, now: float) -> bool:
        """See :meth:`DecisionCache.known_good`."""
        return self.core.known_good(account_id, event_id, now)

    async def invalidate_account(self, account_id: str) -> None:
        """See :meth:`DecisionCache.invalidate_account`."""
        self.core.invalidate_account(account_id)
