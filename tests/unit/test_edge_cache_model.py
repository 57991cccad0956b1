"""The cache core against a reference model (hypothesis state machine).

The model keeps, per key, the stored response's birth time, TTL and size, plus an ordered list for
LRU, the budget, and the set of keys with a fetch in flight. Every lookup's answer must match; a
fetch ends whole (stored by the model's rules, already aged by the upstream's `Age`) or fails —
refused, timed out or cut off mid-body — which leaves the store exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mainevent.media.edge import Cache, Fetch, Hit, Stale, UpstreamResponse, Wait

KEYS = ["/a.m3u8", "/b.m4s", "/c.m4s", "/d.mp4"]
BUDGET = 2000
HEADER_COST = len("Cache-Control") + 64  # matches Cache._store's size estimate


@dataclass
class _Model:
    born: float
    ttl: float
    size: int
    status: int


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache = Cache(max_bytes=BUDGET, negative_ttl=1.0, default_stale_if_error=0.0)
        self.now = 0.0
        self.stored: dict[str, _Model] = {}
        self.lru: list[str] = []
        self.inflight: dict[str, int] = {}

    def _touch(self, key: str) -> None:
        self.lru.remove(key)
        self.lru.append(key)

    @rule(dt=st.floats(min_value=0.0, max_value=3.0))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(key=st.sampled_from(KEYS))
    def lookup(self, key: str) -> None:
        action = self.cache.lookup(key, self.now)
        m = self.stored.get(key)
        if m is not None and self.now - m.born < m.ttl:
            assert isinstance(action, Hit), action
            assert action.entry.response.status == m.status
            self._touch(key)
        elif key in self.inflight:
            assert isinstance(action, Wait), action
            self.inflight[key] += 1
        else:
            assert isinstance(action, Fetch), action
            self.inflight[key] = 0
        assert not isinstance(action, Stale)  # no stale-while-revalidate in this model

    @precondition(lambda self: bool(self.inflight))
    @rule(
        data=st.data(),
        size=st.integers(min_value=0, max_value=1500),
        ttl=st.integers(min_value=0, max_value=5),
        status=st.sampled_from([200, 200, 404, 503]),
        store=st.booleans(),
        age=st.sampled_from([0.0, 0.0, 0.5, 2.0, 9.0]),
    )
    def finish(
        self, data: st.DataObject, size: int, ttl: int, status: int, store: bool, age: float
    ) -> None:
        key = data.draw(st.sampled_from(sorted(self.inflight)))
        cc = f"max-age={ttl}" if store else "no-store"
        arrival = self.cache.arrived(status, cc, age)
        assert arrival.stream == (status < 500)  # a 5xx is held: stale-if-error may replace it
        waiters = self.inflight.pop(key)
        done = self.cache.finish(
            key, UpstreamResponse(status, (("Cache-Control", cc),), b"x" * size, age), self.now
        )
        assert done.waiters == waiters
        if status >= 500:
            assert done.response is not None
            assert done.response.status == status
            return  # not stored; an old copy (if any) stays
        assert done.response is not None
        assert len(done.response.body) == size
        eff_ttl = min(1.0, ttl) if status == 404 else float(ttl)
        # What the streamed head said (X-Cache: STALE) is what the finished response says.
        assert done.stale == arrival.stale == (store and eff_ttl > 0 and age >= eff_ttl)
        cost = size + len(cc) + HEADER_COST
        self.stored.pop(key, None)
        if key in self.lru:
            self.lru.remove(key)
        if store and eff_ttl > 0 and cost <= BUDGET:
            self.stored[key] = _Model(self.now - age, eff_ttl, cost, status)
            self.lru.append(key)
            while sum(self.stored[k].size for k in self.lru) > BUDGET:
                self.stored.pop(self.lru.pop(0))

    @precondition(lambda self: bool(self.inflight))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.inflight)))
        waiters = self.inflight.pop(key)
        done = self.cache.finish(key, None, self.now)
        assert done.waiters == waiters
        # Nothing usable (no stale-if-error allowance in this model), nothing partial stored.
        assert done.response is None
        assert done.entry is None

    @rule()
    def expire(self) -> None:
        self.cache.expire(self.now)
        for key in [k for k, m in self.stored.items() if self.now >= m.born + m.ttl]:
            del self.stored[key]
            self.lru.remove(key)

    @invariant()
    def same_contents(self) -> None:
        for key in KEYS:
            assert (key in self.cache) == (key in self.stored), key
        assert self.cache.stats().bytes == sum(m.size for m in self.stored.values())
        assert self.cache.stats().bytes <= BUDGET
        assert self.cache.stats().in_flight == len(self.inflight)


CacheMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCacheModel = CacheMachine.TestCase
TestCacheModel.__doc__ = (
    "Freshness, LRU/TTL eviction, collapse, negative caching and failed fetches match the model."
)
