"""Multi-CDN steering in the simulator: the production `SteeringPolicy`, fed simulated health,
steering a fixed budget of representative sessions that stand for the cohorts' viewers.

The platform's steering server runs `mainevent.control.steering.policy.SteeringPolicy` (a
sans-IO core); the simulator imports that class and drives it the way the server does:

* **Health.** Every tick each (region, CDN) gets a `CdnSignal` like the edge prober's
  (`error_rate`, `availability`, `ttfb_p95_ms`, a few samples) for `(region, ANY, cdn)`;
  the policy's quorum, hysteresis and minimum dwell decide when a link is degraded or healthy.
  A CDN that does not serve a region is reported down there (the policy never places on it
  unless everything else is down, as for a real unreachable edge).
* **Sessions.** A viewer is not a session here: every representative session stands for
  `weight` = max(1, audience / `steering.sessions`) viewers of one (region, ISP) group. New
  viewers accumulate per group; each `weight` of them opens one session, which arrives as the
  playback API grants it (pathway = the region's first CDN, the grant's `p=`) and is steered
  at once (the player's first steering request). Every session is steered again once per TTL
  window (the players' RELOAD-URI round), carrying the state the policy gave it last time, with
  the pathway the player is really on.
* **Player failover.** A session whose CDN fails (an outage in its region) does what the player
  does: retries, then moves to the next pathway of its last priority list that works; its next
  steering request reports where it is, and the policy counts it there.
* **Cohorts follow sessions.** When a share of the sessions of a group on CDN A moves to B, the
  same share of that group's viewers on A (every device and bandwidth cohort) moves to B.
  Caps (`cdns[].steering_capacity`, viewers) are handed to the policy in sessions (÷ weight).

Error: moves are quantised to one session (`weight` viewers); a group with few sessions drains in
coarser steps than the policy's `ceil(k · share · N)` over real sessions; all sessions of a
window are steered at its first tick (real players are spread over the TTL).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mainevent.control.steering.model import ANY, CdnSignal, CdnSpec, HealthReport, SessionState
from mainevent.sim.policies import SteeringPolicy
from mainevent.sim.scenario import Scenario

__all__ = ["Moves", "PopHealth", "SteeringModel"]

Moves = dict[tuple[int, int, int], dict[int, float]]
"""(region, ISP, from CDN) → {to CDN: share of the group's viewers on `from` that moved}."""


@dataclass(frozen=True, slots=True)
class PopHealth:
    """What the prober would see of one CDN in one region over the last tick."""

    error_rate: float
    ttfb_ms: float


@dataclass(slots=True)
class _Rep:
    """One representative session: its steering state as its RELOAD-URI carries it."""

    state: SessionState
    priority: tuple[str, ...]


class SteeringModel:
    """See the module docstring. Indices (region, ISP, CDN) are the scenario's."""

    def __init__(self, sc: Scenario, rng: random.Random) -> None:
        st = sc.steering
        self.weight = max(1.0, sc.audience.viewers / st.sessions)
        costs = [c.cost_per_gb for c in sc.cdns]
        cheapest = min([c for c in costs if c > 0] or [1.0])
        specs = [
            CdnSpec(
                c.name,
                cost=c.cost_per_gb / cheapest if c.cost_per_gb > 0 else 1.0,
                capacity=None
                if c.steering_capacity is None
                else max(0, math.floor(c.steering_capacity / self.weight)),
            )
            for c in sc.cdns
        ]
        self.policy = SteeringPolicy(specs, st.policy_config())
        self._rng = rng
        self._regions = [r.name for r in sc.regions]
        self._isps = [i.name for i in sc.isps]
        self._cdns = [c.name for c in sc.cdns]
        self._index = {c: i for i, c in enumerate(self._cdns)}
        self._serves = [[not c.regions or r in c.regions for r in self._regions] for c in sc.cdns]
        self._first: list[str] = []
        for r in sc.regions:
            order = [
                c for c in (r.cdns or self._cdns) if self._serves[self._index[c]][len(self._first)]
            ]
            self._first.append((order or self._cdns)[0])
        self._groups: dict[tuple[int, int], list[_Rep]] = defaultdict(list)
        self._acc: dict[tuple[int, int], float] = defaultdict(float)
        self._last_new: dict[tuple[int, int], str] = {}
        self._window: int | None = None
        self._failing: set[tuple[int, int]] = set()
        self._seq = 0
        self.steer_calls = 0
        self.failovers = 0

    # -- inputs -------------------------------------------------------------------------------

    def observe(self, health: Mapping[tuple[int, int], PopHealth], now: float) -> None:
        """Probe results of the last tick, (CDN, region) → health (absent: no data)."""
        signals: dict[tuple[str, str, str], CdnSignal] = {}
        for ci, cdn in enumerate(self._cdns):
            for ri, region in enumerate(self._regions):
                h = health.get((ci, ri))
                if not self._serves[ci][ri]:
                    h = PopHealth(1.0, 0.0)
                if h is None:
                    continue
                signals[(region, ANY, cdn)] = CdnSignal(
                    error_rate=h.error_rate,
                    availability=1.0 - h.error_rate,
                    ttfb_p95_ms=h.ttfb_ms,
                    samples=5,
                )
        self.policy.update_health(HealthReport(signals), now)

    def step(self, failing: set[tuple[int, int]], now: float) -> Moves:
        """Players on a failing (CDN, region) fail over; at a new TTL window every session is
        steered. Returns the moves, as shares of each group's viewers per CDN."""
        self._failing = failing
        before = {g: self._census(reps) for g, reps in self._groups.items()}
        for (ri, _), reps in self._groups.items():
            for rep in reps:
                self._fail_over(rep, ri)
        window = math.floor(now / self.policy.config.ttl_s)
        if window != self._window:
            self._window = window
            for (ri, _), reps in self._groups.items():
                for rep in reps:
                    self._steer(rep, ri, now)
        moves: Moves = {}
        for g, reps in self._groups.items():
            start = before[g]
            for rep, origin in zip(reps, start[1], strict=True):
                if rep.state.pathway != origin:
                    a, b = self._index[origin], self._index[rep.state.pathway or origin]
                    to = moves.setdefault((g[0], g[1], a), {})
                    to[b] = to.get(b, 0.0) + 1.0 / start[0][origin]
        return moves

    def join(self, ri: int, ii: int, viewers: float, now: float) -> list[tuple[int, float, bool]]:
        """New viewers of group (region, ISP) this tick: [(CDN, share, retried)] — where they
        start, and whether their first CDN failed first (they retried, then failed over)."""
        g = (ri, ii)
        self._acc[g] += viewers
        n_new = int(self._acc[g] / self.weight)
        self._acc[g] -= n_new * self.weight
        if n_new == 0:
            cdn = self._last_new.get(g) or self._first[ri]
            retried = (self._index[cdn], ri) in self._failing
            if retried:
                cdn = self._next_working(ri, (cdn, *self._cdns), cdn)
            return [(self._index[cdn], 1.0, retried)]
        out: dict[tuple[int, bool], float] = defaultdict(float)
        for _ in range(n_new):
            self._seq += 1
            granted = self._first[ri]
            rep = _Rep(
                SessionState(f"s{self._seq}", self._regions[ri], self._isps[ii], granted, None),
                (granted,),
            )
            self._steer(rep, ri, now)
            retried = self._fail_over(rep, ri)
            self._groups[g].append(rep)
            cdn = rep.state.pathway or granted
            self._last_new[g] = cdn
            out[(self._index[cdn], retried)] += 1.0 / n_new
        return [(ci, share, retried) for (ci, retried), share in out.items()]

    def leave(self, share: float) -> None:
        """A share of every group's sessions ends (half time): the policy forgets them."""
        for reps in self._groups.values():
            n = round(len(reps) * share)
            gone = set(self._rng.sample(range(len(reps)), n)) if n else set()
            for i in gone:
                self.policy.forget(reps[i].state.session_id)
            reps[:] = [r for i, r in enumerate(reps) if i not in gone]

    def escape(self, ri: int, ci: int) -> int:
        """Where viewers on a failing CDN go when no session of theirs is there to follow."""
        return self._index[self._next_working(ri, (), self._cdns[ci])]

    @property
    def sessions_created(self) -> int:
        return self._seq

    def sessions_on(self) -> dict[str, int]:
        """Representative sessions per CDN (the policy's own count)."""
        return dict(self.policy.statistics().per_cdn)

    # -- internals ------------------------------------------------------------------------------

    def _census(self, reps: Sequence[_Rep]) -> tuple[dict[str, int], list[str]]:
        count: dict[str, int] = defaultdict(int)
        where = []
        for rep in reps:
            p = rep.state.pathway or self._first[0]
            count[p] += 1
            where.append(p)
        return count, where

    def _steer(self, rep: _Rep, ri: int, now: float) -> None:
        self.steer_calls += 1
        d = self.policy.steer(rep.state, now)
        rep.state, rep.priority = d.state, d.priority

    def _fail_over(self, rep: _Rep, ri: int) -> bool:
        """The player on a failing CDN moves to the next working pathway it knows of."""
        current = rep.state.pathway or self._first[ri]
        if (self._index[current], ri) not in self._failing:
            return False
        nxt = self._next_working(ri, rep.priority, current)
        if nxt != current:
            self.failovers += 1
            rep.state = SessionState(
                rep.state.session_id,
                rep.state.region,
                rep.state.isp,
                nxt,
                rep.state.home,
                rep.state.moved_at,
            )
        return True

    def _next_working(self, ri: int, priority: Sequence[str], current: str) -> str:
        for c in [*priority, *self._cdns]:
            ci = self._index[c]
            if c != current and self._serves[ci][ri] and (ci, ri) not in self._failing:
                return c
        return current
