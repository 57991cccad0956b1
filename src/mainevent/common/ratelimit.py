"""Sans-IO token-bucket rate limits, single and keyed (per account, per client address).

:class:`RateLimitStore` is where keyed buckets live: :class:`MemoryRateLimitStore` (one process,
around :class:`KeyedRateLimiter`) or the Redis store of ``mainevent.control.redis_state``, which
runs the same arithmetic in a Lua script so several workers share one bucket per key.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

__all__ = ["KeyedRateLimiter", "MemoryRateLimitStore", "RateLimitStore", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens: 0.0 if allowed, else the seconds until it would be (Retry-After)."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def is_full(self, now: float) -> bool:
        """Whether the bucket would be full at ``now`` (and can be forgotten)."""
        return self.tokens + (now - self.updated) * self.rate >= self.burst


class KeyedRateLimiter:
    """One bucket per key, at most ``max_keys`` remembered (least recently used forgotten first).

    Forgetting a key hands it a full bucket, which errs on the side of serving: a limiter must
    never be the reason a legitimate viewer is refused because memory was tight.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend from ``key``'s bucket: 0.0 if allowed, else seconds to wait (Retry-After)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimitStore(Protocol):
    """Keyed token buckets of one ``rate`` and ``burst``, wherever they are kept."""

    @property
    def rate(self) -> float:
        """Tokens per second."""
        ...

    @property
    def burst(self) -> float:
        """Bucket size."""
        ...

    async def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend from ``key``'s bucket: 0.0 if allowed, else seconds to wait.

        A distributed store raises ``SharedStateUnavailable`` when it cannot answer.
        """
        ...

    async def take_in_turn(
        self, key: str, then: RateLimitStore, then_key: str, now: float
    ) -> tuple[RateLimitStore | None, float]:
        """Spend one from ``key``'s bucket and, only if that was allowed, from ``then_key``'s
        bucket of ``then``: ``(None, 0.0)`` if both allowed, else the store that refused and
        its wait. A distributed store does both in one round trip where it can.
        """
        ...


class MemoryRateLimitStore:
    """The embedded store: a :class:`KeyedRateLimiter` in this process (never suspends)."""

    __slots__ = ("core",)

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.core = KeyedRateLimiter(rate, burst, max_keys)

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.core.rate

    @property
    def burst(self) -> float:
        """Bucket size."""
        return self.core.burst

    async def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """See :meth:`RateLimitStore.take`."""
        return self.core.take(key, now, cost)

    async def take_in_turn(
        self, key: str, then: RateLimitStore, then_key: str, now: float
    ) -> tuple[RateLimitStore | None, float]:
        """See :meth:`RateLimitStore.take_in_turn`."""
        return await take_in_turn(self, key, then, then_key, now)


async def take_in_turn(
    first: RateLimitStore, key: str, then: RateLimitStore, then_key: str, now: float
) -> tuple[RateLimitStore | None, float]:
    """:meth:`RateLimitStore.take_in_turn` as two takes, one after the other."""
    wait = await first.take(key, now)
    if wait > 0:
        return first, wait
    wait = await then.take(then_key, now)
    return (then, wait) if wait > 0 else (None, 0.0)
