"""Multi-CDN steering policy: a sans-IO core that turns CDN health per region × ISP into a pathway
priority list per session. No asyncio, no clock, no I/O: the live steering server, the tests and
the internet-scale simulator run this same class.

Public API::

    policy = SteeringPolicy(cdns=[CdnSpec("cdn-a"), CdnSpec("cdn-b", cost=2, capacity=50_000)],
                            config=SteeringConfig(ttl_s=10))
    policy.update_health(HealthReport({("eu", ANY, "cdn-b"): CdnSignal(error_rate=1.0,
                                                                        availability=0.0,
                                                                        samples=5)}), now)
    policy.set_override(Override("eu", "cdn-b", OverrideAction.DRAIN, rate=0.25, at=now))
    policy.clear_override("eu", "cdn-b", now)
    decision = policy.steer(SessionState("s-1", region="eu", pathway="cdn-b"), now)
    decision.priority        # ("cdn-a", "cdn-c", "cdn-b"): PATHWAY-PRIORITY
    decision.state           # what goes into the RELOAD-URI for next time
    policy.forget("s-1")     # session ended; policy.expire(now) forgets idle ones
    policy.statistics()      # frozen snapshot: sessions per (region, cdn), link states, moves

`now` is wall-clock seconds (time.time()): session state travels in RELOAD-URIs between
requests and processes, so it needs a clock that every steering server shares.

Rules:

* **Health with quorum and hysteresis.** Per (region, ISP, CDN) link, a signal is bad beyond
  `Thresholds`; a link goes DEGRADED when `quorum` known signals are bad (all of them when fewer
  are known), and back to HEALTHY only after every known signal has stayed within the stricter
  `recover_*` thresholds for `recover_hold_s`; a link keeps a state at least `min_dwell_s`
  before it may return. Signals with no samples are ignored.
* **Sticky sessions.** A session stays on its CDN unless the CDN is degraded in its group,
  drained by an operator, or another CDN is pinned for its region.
* **Gradual drain.** A drain of one CDN in one region (a failure there, or an operator's
  drain or pin) is an episode: after k TTL windows at most ceil(k · share · N) of its N
  sessions have moved (`failure_drain_share`, or the override's rate), so one window moves
  about share · N and never more than ceil(2 · share · N) even after a slow one. Which sessions
  go first is fixed by a per-session hash (those with hash < k · share), so the same session
  gets the same answer on a retry and on another server.
* **Minimum dwell.** A session that moved does not move again for `min_dwell_s`.
* **Capacity.** A move or placement never takes a CDN past its `capacity`.
* **Cost.** New sessions are placed by weighted rendezvous hashing (weight 1/cost) over the
  healthy CDNs with room; that is also the order of the fallbacks in the priority list.
* **Return.** After its home CDN recovered, a session goes back at `return_share` per TTL.
* **Relative health.** When every other CDN is degraded too, a session still leaves one whose
  availability is at least 0.5 below another's (down → slow); an operator's drain or pin also
  moves sessions onto CDNs that only look degraded.

Cost per `steer()`: a few dict lookups; hashes are computed once per session.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from mainevent.control.steering.model import (
    ANY,
    CdnSignal,
    CdnSpec,
    Decision,
    HealthReport,
    LinkState,
    Override,
    OverrideAction,
    Reason,
    SessionState,
    SteeringConfig,
)

__all__ = ["PolicyStatistics", "SteeringPolicy", "session_hash"]

_MUCH_BETTER = 0.5
"""Availability margin for leaving a degraded CDN for another degraded one."""


def session_hash(session_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (session, salt): the same in every process."""
    d = hashlib.blake2b(f"{salt}\0{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(d, "big") / 2**64


@dataclass(slots=True)
class _Link:
    state: LinkState = LinkState.HEALTHY
    since: float = -math.inf
    good_since: float | None = None
    availability: float | None = None
    """Last known availability (to compare degraded links with each other)."""


@dataclass(slots=True)
class _Session:
    region: str
    isp: str
    pathway: str
    home: str
    moved_at: float | None
    last_seen: float
    order: tuple[str, ...]
    """CDNs by this session's cost-weighted rendezvous score, best first."""
    u: float
    """Its place in every drain queue, uniform in [0, 1)."""
    window: int = -1
    decision: Decision | None = None
    before: str | None = None
    """Its pathway before the last decision."""
    decided_at: float = -math.inf


@dataclass(slots=True)
class _Episode:
    """One drain (or return) of one CDN in one region, from `since`."""

    start_window: int
    base: int
    """Sessions concerned: the most seen at once (moved + still to move)."""
    moved: int = 0


@dataclass(frozen=True, slots=True)
class PolicyStatistics:
    """A snapshot for metrics, status pages and tests."""

    sessions: dict[tuple[str, str], int]
    """(region, cdn) → sessions."""
    per_cdn: dict[str, int]
    links: dict[tuple[str, str, str], LinkState]
    moves: int
    overrides: tuple[Override, ...]


class SteeringPolicy:
    """See the module docstring."""

    def __init__(self, cdns: Iterable[CdnSpec], config: SteeringConfig | None = None) -> None:
        self.cdns: dict[str, CdnSpec] = {c.name: c for c in cdns}
        if not self.cdns:
            raise ValueError("steering needs at least one CDN")
        self.config = config or SteeringConfig()
        self._names = tuple(self.cdns)
        self._weights = tuple(1.0 / c.cost for c in self.cdns.values())
        self._links: dict[tuple[str, str, str], _Link] = {}
        self._overrides: dict[tuple[str, str], Override] = {}
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._count: dict[tuple[str, str], int] = {}
        self._per_cdn: dict[str, int] = dict.fromkeys(self.cdns, 0)
        self._episodes: dict[tuple[Reason, str, str, float], _Episode] = {}
        self._away: dict[tuple[str, str], int] = {}
        """(region, home) → sessions of that home currently on another CDN."""
        self._recovered_at: dict[tuple[str, str, str], float] = {}
        self._moves = 0
        self._unwanted_cache: dict[tuple[str, str, str], tuple[Reason, float, float] | None] = {}

    # -- inputs ---------------------------------------------------------------------------------

    def update_health(self, report: HealthReport, now: float) -> None:
        """Feed a snapshot of signals; links absent from it keep their state."""
        for key, signal in report.signals.items():
            if key[2] not in self.cdns or signal.samples <= 0:
                continue
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = _Link()
                self._unwanted_cache.clear()
            self._step_link(key, link, signal, now)

    def _step_link(self, key: tuple[str, str, str], link: _Link, s: CdnSignal, now: float) -> None:
        t = self.config.thresholds
        link.availability = s.availability
        known = bad = good = 0
        for value, limit, recover, higher_is_bad in (
            (s.error_rate, t.error_rate, t.recover_error_rate, True),
            (s.rebuffer_ratio, t.rebuffer_ratio, t.recover_rebuffer_ratio, True),
            (s.ttfb_p95_ms, t.ttfb_p95_ms, t.recover_ttfb_p95_ms, True),
            (s.availability, t.availability, t.recover_availability, False),
        ):
            if value is None:
                continue
            known += 1
            if higher_is_bad:
                bad += value > limit
                good += value <= recover
            else:
                bad += value < limit
                good += value >= recover
        if not known:
            return
        if link.state is LinkState.HEALTHY:
            if bad >= min(self.config.quorum, known):
                link.state, link.since, link.good_since = LinkState.DEGRADED, now, None
                self._unwanted_cache.clear()
            return
        if good < known:
            link.good_since = None
            return
        if link.good_since is None:
            link.good_since = now
        if (
            now - link.good_since >= self.config.recover_hold_s
            and now - link.since >= self.config.min_dwell_s
        ):
            link.state, link.since, link.good_since = LinkState.HEALTHY, now, None
            self._unwanted_cache.clear()
            self._recovered_at[key] = now

    def set_override(self, override: Override) -> None:
        """Drain or pin a CDN in a region (replaces an earlier override of the same pair)."""
        if override.cdn not in self.cdns:
            raise ValueError(f"unknown CDN {override.cdn!r}; known: {', '.join(self.cdns)}")
        if override.action is OverrideAction.PIN:
            # One pin per region: a new pin replaces the old one.
            for k, o in list(self._overrides.items()):
                if k[0] == override.region and o.action is OverrideAction.PIN:
                    del self._overrides[k]
        self._overrides[(override.region, override.cdn)] = override
        self._unwanted_cache.clear()

    def clear_override(self, region: str, cdn: str, now: float) -> Override | None:
        """Restore: remove the override of (region, cdn); returns it (None if there was none).

        Sessions that left return gradually from `now`, as after a recovery."""
        o = self._overrides.pop((region, cdn), None)
        self._unwanted_cache.clear()
        if o is not None:
            self._recovered_at[(region, ANY, cdn)] = now
            for key in list(self._recovered_at):
                if key[2] == cdn and key[0] == region:
                    self._recovered_at[key] = now
        return o

    def overrides(self) -> tuple[Override, ...]:
        return tuple(self._overrides.values())

    # -- per session ----------------------------------------------------------------------------

    def link_state(self, region: str, isp: str, cdn: str) -> tuple[LinkState, float]:
        """The most specific known state of `cdn` for (region, isp), and since when."""
        for key in ((region, isp, cdn), (region, ANY, cdn), (ANY, ANY, cdn)):
            link = self._links.get(key)
            if link is not None:
                return link.state, link.since
        return LinkState.HEALTHY, -math.inf

    def _recovered(self, region: str, isp: str, cdn: str) -> float | None:
        for key in ((region, isp, cdn), (region, ANY, cdn), (ANY, ANY, cdn)):
            if key in self._recovered_at:
                return self._recovered_at[key]
        return None

    def _unwanted(self, region: str, isp: str, cdn: str) -> tuple[Reason, float, float] | None:
        """Why sessions should leave `cdn` here: (reason, since, share per TTL), or None.

        Cached until a link changes state or an override changes (the per-session hot path)."""
        key = (region, isp, cdn)
        try:
            return self._unwanted_cache[key]
        except KeyError:
            pass
        why = self._unwanted_now(region, isp, cdn)
        self._unwanted_cache[key] = why
        return why

    def _unwanted_now(self, region: str, isp: str, cdn: str) -> tuple[Reason, float, float] | None:
        for r in (region, ANY):
            o = self._overrides.get((r, cdn))
            if o is not None and o.action is OverrideAction.DRAIN:
                return Reason.MOVED_DRAIN, o.at, o.rate
        for r in (region, ANY):
            for (reg, other), o in self._overrides.items():
                if reg == r and o.action is OverrideAction.PIN and other != cdn:
                    return Reason.MOVED_PIN, o.at, o.rate
        state, since = self.link_state(region, isp, cdn)
        if state is LinkState.DEGRADED:
            return Reason.MOVED_UNHEALTHY, since, self.config.failure_drain_share
        return None

    def _availability(self, region: str, isp: str, cdn: str) -> float:
        for key in ((region, isp, cdn), (region, ANY, cdn), (ANY, ANY, cdn)):
            link = self._links.get(key)
            if link is not None:
                return 1.0 if link.availability is None else link.availability
        return 1.0

    def _why(self, region: str, isp: str, cdn: str) -> Reason | None:
        w = self._unwanted(region, isp, cdn)
        return None if w is None else w[0]

    def _has_room(self, cdn: str) -> bool:
        cap = self.cdns[cdn].capacity
        return cap is None or self._per_cdn[cdn] < cap

    def _order(self, session_id: str) -> tuple[tuple[str, ...], float]:
        """CDNs by weighted rendezvous score (-w / ln u, w = 1/cost), best first, and the
        session's drain-queue position: all from one hash of the session id."""
        names = self._names
        d = hashlib.blake2b(session_id.encode(), digest_size=8 * (len(names) + 1)).digest()
        scored = []
        for i, name in enumerate(names):
            u = (int.from_bytes(d[8 * i : 8 * i + 8], "big") + 0.5) / 2**64
            scored.append((-self._weights[i] / math.log(u), name))
        scored.sort(reverse=True)
        u_drain = int.from_bytes(d[-8:], "big") / 2**64
        return tuple(name for _, name in scored), u_drain

    def _window(self, now: float) -> int:
        return math.floor(now / self.config.ttl_s)

    def _take(
        self,
        key: tuple[Reason, str, str, float],
        u: float,
        pending: int,
        share: float,
        window: int,
    ) -> bool:
        """One move of this episode, if its schedule allows: in its k-th TTL window sessions
        with hash u < k · share may go, and at most ceil(k · share · base) of its `base`
        sessions have moved by then."""
        e = self._episodes.get(key)
        if e is None:
            e = self._episodes[key] = _Episode(start_window=window, base=0)
        k = window - e.start_window + 1
        if u >= share * k:
            return False
        e.base = max(e.base, e.moved + pending)
        if e.moved >= math.ceil(share * e.base * k - 1e-9):
            return False
        e.moved += 1
        return True

    def _move(self, s: _Session, target: str, now: float) -> None:
        self._count[(s.region, s.pathway)] -= 1
        self._per_cdn[s.pathway] -= 1
        self._count[(s.region, target)] = self._count.get((s.region, target), 0) + 1
        self._per_cdn[target] += 1
        if s.pathway != s.home:
            self._away[(s.region, s.home)] -= 1
        if target != s.home:
            self._away[(s.region, s.home)] = self._away.get((s.region, s.home), 0) + 1
        s.pathway, s.moved_at = target, now
        self._moves += 1

    def _priority(self, s: _Session) -> tuple[str, ...]:
        ok: list[str] = []
        bad: list[str] = []
        for c in s.order:
            if c == s.pathway:
                continue
            (bad if self._unwanted(s.region, s.isp, c) else ok).append(c)
        return (s.pathway, *ok, *bad)

    def _admit(self, state: SessionState, now: float) -> tuple[_Session, bool]:
        """The table entry for `state` (created from what it carries when unknown)."""
        s = self._sessions.get(state.session_id)
        if s is not None:
            self._sessions.move_to_end(state.session_id)
            s.last_seen = now
            reported = state.pathway
            if (
                reported in self.cdns
                and reported != s.pathway
                and not (reported == s.before and now - s.decided_at < 2 * self.config.ttl_s)
            ):
                # The player is elsewhere than we told it (it penalised a pathway that failed
                # for it): count it where it is. A report of the pathway it had before our
                # last answer, within two TTLs, is a retry or a switch still under way.
                self._move(s, reported, now)
                s.decision = None
            return s, False
        order, u = self._order(state.session_id)
        pathway = state.pathway if state.pathway in self.cdns else None
        placed = pathway is None
        if pathway is None:
            candidates = [
                c for c in order if self._unwanted(state.region, state.isp, c) is None
            ] or list(order)
            with_room = [c for c in candidates if self._has_room(c)]
            pathway = (with_room or candidates)[0]
        home = state.home if state.home in self.cdns else pathway
        s = _Session(
            region=state.region,
            isp=state.isp,
            pathway=pathway,
            home=home,
            moved_at=state.moved_at,
            last_seen=now,
            order=order,
            u=u,
        )
        self._sessions[state.session_id] = s
        self._count[(s.region, pathway)] = self._count.get((s.region, pathway), 0) + 1
        self._per_cdn[pathway] += 1
        if pathway != home:
            self._away[(s.region, home)] = self._away.get((s.region, home), 0) + 1
        return s, placed

    def steer(self, state: SessionState, now: float) -> Decision:
        """The pathway priority for this session now (idempotent within one TTL window)."""
        s, placed = self._admit(state, now)
        window = self._window(now)
        if s.window == window and s.decision is not None:
            return s.decision
        before = s.pathway
        reason = Reason.PLACED if placed else self._decide(state.session_id, s, now, window)
        same = (
            state.region == s.region
            and state.isp == s.isp
            and state.pathway == s.pathway
            and state.home == s.home
            and state.moved_at == s.moved_at
        )
        decision = Decision(
            state=state
            if same  # what the player carried is what we answer: no copy
            else SessionState(
                session_id=state.session_id,
                region=s.region,
                isp=s.isp,
                pathway=s.pathway,
                home=s.home,
                moved_at=s.moved_at,
            ),
            priority=self._priority(s),
            reason=reason,
        )
        s.window, s.decision, s.before, s.decided_at = window, decision, before, now
        return decision

    def _decide(self, sid: str, s: _Session, now: float, window: int) -> Reason:
        cfg = self.config
        why = self._unwanted(s.region, s.isp, s.pathway)
        if why is None:
            return self._maybe_return(s, now, window)
        reason, since, share = why
        if s.moved_at is not None and now - s.moved_at < cfg.min_dwell_s:
            return Reason.HELD_DWELL
        # Where to: a CDN nothing is wrong with; for an operator's drain or pin, also one that
        # only looks degraded (when every CDN looks shaky, the operator's word still counts).
        acceptable = {None} if reason is Reason.MOVED_UNHEALTHY else {None, Reason.MOVED_UNHEALTHY}
        fit = [c for c in s.order if c != s.pathway and self._why(s.region, s.isp, c) in acceptable]
        if not fit and reason is Reason.MOVED_UNHEALTHY:
            # Every other CDN looks degraded too: still leave one that is far worse (it fails
            # requests) for one that mostly answers. Slow is better than down.
            mine = self._availability(s.region, s.isp, s.pathway)
            fit = [
                c
                for c in s.order
                if c != s.pathway
                and self._why(s.region, s.isp, c) is Reason.MOVED_UNHEALTHY
                and self._availability(s.region, s.isp, c) >= mine + _MUCH_BETTER
            ]
        target = next((c for c in fit if self._has_room(c)), None)
        if target is None:
            return Reason.HELD_CAPACITY if fit else Reason.STAY
        pending = self._count.get((s.region, s.pathway), 0)
        if not self._take((reason, s.region, s.pathway, since), s.u, pending, share, window):
            return Reason.HELD_RATE
        self._move(s, target, now)
        return reason

    def _maybe_return(self, s: _Session, now: float, window: int) -> Reason:
        if s.home == s.pathway:
            return Reason.STAY
        cfg = self.config
        if self._unwanted(s.region, s.isp, s.home) is not None:
            return Reason.STAY
        if s.moved_at is not None and now - s.moved_at < cfg.min_dwell_s:
            return Reason.STAY
        if not self._has_room(s.home):
            return Reason.STAY
        recovered = self._recovered(s.region, s.isp, s.home)
        key = (Reason.RETURNED, s.region, s.home, -math.inf if recovered is None else recovered)
        pending = self._away.get((s.region, s.home), 0)
        if not self._take(key, s.u, pending, cfg.return_share, window):
            return Reason.STAY
        self._move(s, s.home, now)
        return Reason.RETURNED

    # -- bookkeeping ----------------------------------------------------------------------------

    def forget(self, session_id: str) -> bool:
        """The session ended: it stops counting against caps."""
        s = self._sessions.pop(session_id, None)
        if s is None:
            return False
        self._count[(s.region, s.pathway)] -= 1
        self._per_cdn[s.pathway] -= 1
        if s.pathway != s.home:
            self._away[(s.region, s.home)] -= 1
        return True

    def expire(self, now: float) -> int:
        """Forget sessions not seen for `session_timeout_s`; returns how many."""
        limit = now - self.config.session_timeout_s
        n = 0
        while self._sessions:
            sid, s = next(iter(self._sessions.items()))
            if s.last_seen > limit:
                break
            self.forget(sid)
            n += 1
        return n

    def next_deadline(self) -> float | None:
        """When `expire` next has something to do (None: no sessions)."""
        if not self._sessions:
            return None
        s = next(iter(self._sessions.values()))
        return s.last_seen + self.config.session_timeout_s

    def session(self, session_id: str) -> SessionState | None:
        s = self._sessions.get(session_id)
        if s is None:
            return None
        return SessionState(session_id, s.region, s.isp, s.pathway, s.home, s.moved_at)

    def statistics(self) -> PolicyStatistics:
        return PolicyStatistics(
            sessions={k: v for k, v in self._count.items() if v},
            per_cdn=dict(self._per_cdn),
            links={k: link.state for k, link in self._links.items()},
            moves=self._moves,
            overrides=self.overrides(),
        )
