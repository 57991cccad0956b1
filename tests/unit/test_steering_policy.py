"""The steering policy's rules, one by one, with no sockets and no clock."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from mainevent.control.steering import (
    ANY,
    CdnSignal,
    CdnSpec,
    HealthReport,
    LinkState,
    Override,
    OverrideAction,
    Reason,
    SessionState,
    SteeringConfig,
    SteeringPolicy,
)

T0 = 1_900_000_000.0  # a multiple of 10: TTL windows start on it
CDNS = ("cdn-a", "cdn-b", "cdn-c")
DOWN = CdnSignal(error_rate=1.0, availability=0.0, ttfb_p95_ms=None, samples=5)
UP = CdnSignal(error_rate=0.0, availability=1.0, ttfb_p95_ms=50.0, samples=5)


def policy(**cfg: float) -> SteeringPolicy:
    return SteeringPolicy([CdnSpec(c) for c in CDNS], SteeringConfig(**cfg))  # type: ignore[arg-type]


def place(p: SteeringPolicy, n: int, region: str, now: float, on: str | None = None) -> list[str]:
    ids = [f"{region}-{i}" for i in range(n)]
    for sid in ids:
        p.steer(SessionState(sid, region, pathway=on), now)
    return ids


def on(p: SteeringPolicy, ids: list[str], cdn: str) -> int:
    return sum(1 for sid in ids if (s := p.session(sid)) is not None and s.pathway == cdn)


def test_placement_is_weighted_by_cost_and_the_same_in_every_process() -> None:
    """New sessions spread ∝ 1/cost, and two servers place a session on the same CDN."""
    cdns = [CdnSpec("cdn-a"), CdnSpec("cdn-b", cost=2.0), CdnSpec("cdn-c", cost=4.0)]
    p1, p2 = SteeringPolicy(cdns), SteeringPolicy(cdns)
    got = Counter()
    for i in range(7000):
        d1 = p1.steer(SessionState(f"s{i}", "eu"), T0)
        d2 = p2.steer(SessionState(f"s{i}", "eu"), T0 + 3)
        assert d1.priority == d2.priority
        assert d1.reason is Reason.PLACED
        got[d1.pathway] += 1
    # weights 1 : 1/2 : 1/4 → 4000 : 2000 : 1000
    assert 3700 < got["cdn-a"] < 4300
    assert 1750 < got["cdn-b"] < 2250
    assert 800 < got["cdn-c"] < 1200


def test_healthy_sessions_stay_where_they_are() -> None:
    """Sticky: with nothing wrong a session keeps its CDN, whatever the hash prefers."""
    p = policy()
    ids = place(p, 50, "eu", T0, on="cdn-c")
    for k in range(1, 20):
        for sid in ids:
            d = p.steer(SessionState(sid, "eu", pathway="cdn-c"), T0 + 10 * k)
            assert (d.pathway, d.reason) == ("cdn-c", Reason.STAY)


def test_failure_in_one_region_moves_its_sessions_within_two_ttls_and_nobody_else() -> None:
    """cdn-b down in eu: eu's cdn-b sessions leave in ≤ 2 TTLs, half per TTL; us keeps cdn-b."""
    p = policy(ttl_s=10, failure_drain_share=0.5)
    eu = place(p, 100, "eu", T0, on="cdn-b")
    us = place(p, 100, "us", T0, on="cdn-b")
    p.update_health(HealthReport({("eu", ANY, "cdn-b"): DOWN}), T0 + 1)
    assert p.link_state("eu", ANY, "cdn-b")[0] is LinkState.DEGRADED
    left = []
    for k in (1, 2):
        for sid in eu + us:
            region = sid.split("-")[0]
            d = p.steer(SessionState(sid, region), T0 + 10 * k)
            if region == "eu" and d.pathway != "cdn-b":
                assert d.priority[-1] == "cdn-b"  # the failed pathway goes last
        left.append(100 - on(p, eu, "cdn-b"))
    assert left[0] <= 50 < left[1] or left[0] == 50
    assert left[1] == 100
    assert on(p, us, "cdn-b") == 100


def test_one_bad_signal_is_not_a_quorum() -> None:
    """Slow first bytes alone (errors and availability fine) do not move anyone."""
    p = policy(quorum=2)
    ids = place(p, 20, "eu", T0, on="cdn-b")
    slow = CdnSignal(error_rate=0.0, availability=1.0, ttfb_p95_ms=5000.0, samples=9)
    p.update_health(HealthReport({("eu", ANY, "cdn-b"): slow}), T0 + 1)
    for sid in ids:
        assert p.steer(SessionState(sid, "eu"), T0 + 30).pathway == "cdn-b"


def test_a_move_never_takes_the_receiving_cdn_past_its_cap() -> None:
    """cdn-a has room for 30 more: the rest wait on cdn-b (held_capacity) or go to cdn-c."""
    cdns = [CdnSpec("cdn-a", capacity=30), CdnSpec("cdn-b"), CdnSpec("cdn-c", capacity=0)]
    p = SteeringPolicy(cdns, SteeringConfig(failure_drain_share=1.0))
    ids = place(p, 100, "eu", T0, on="cdn-b")
    p.update_health(HealthReport({("eu", ANY, "cdn-b"): DOWN}), T0 + 1)
    reasons = Counter(p.steer(SessionState(s, "eu"), T0 + 10).reason for s in ids)
    assert p.statistics().per_cdn["cdn-a"] == 30
    assert reasons[Reason.HELD_CAPACITY] == 70
    p.forget(next(s for s in ids if p.session(s).pathway == "cdn-a"))  # type: ignore[union-attr]
    for s in ids:
        p.steer(SessionState(s, "eu"), T0 + 20)
    assert p.statistics().per_cdn["cdn-a"] == 30


def test_a_moved_session_dwells_before_moving_again() -> None:
    """After a move, a second failure within min_dwell_s does not move the session again."""
    p = policy(min_dwell_s=30, failure_drain_share=1.0)
    [sid] = place(p, 1, "eu", T0, on="cdn-b")
    p.update_health(HealthReport({("eu", ANY, "cdn-b"): DOWN}), T0 + 1)
    first = p.steer(SessionState(sid, "eu"), T0 + 10)
    assert first.reason is Reason.MOVED_UNHEALTHY
    p.update_health(HealthReport({("eu", ANY, first.pathway): DOWN}), T0 + 11)
    assert p.steer(SessionState(sid, "eu"), T0 + 20).reason is Reason.HELD_DWELL
    assert p.steer(SessionState(sid, "eu"), T0 + 40).reason is Reason.MOVED_UNHEALTHY


def test_recovery_needs_a_hold_and_sessions_return_gradually() -> None:
    """Back to healthy only after recover_hold_s of good signals; then a share per TTL returns."""
    p = policy(failure_drain_share=1.0, recover_hold_s=30, min_dwell_s=20, return_share=0.2)
    ids = place(p, 200, "eu", T0, on="cdn-b")
    p.update_health(HealthReport({("eu", ANY, "cdn-b"): DOWN}), T0 + 1)
    for s in ids:
        p.steer(SessionState(s, "eu"), T0 + 10)
    assert on(p, ids, "cdn-b") == 0
    for t in range(20, 50, 5):
        p.update_health(HealthReport({("eu", ANY, "cdn-b"): UP}), T0 + t)
    assert p.link_state("eu", ANY, "cdn-b")[0] is LinkState.DEGRADED  # 25 s of good < 30 s hold
    p.update_health(HealthReport({("eu", ANY, "cdn-b"): UP}), T0 + 50)
    assert p.link_state("eu", ANY, "cdn-b")[0] is LinkState.HEALTHY
    back = []
    for k in range(6, 12):
        for s in ids:
            p.steer(SessionState(s, "eu"), T0 + 10 * k)
        back.append(on(p, ids, "cdn-b"))
    # not all in one TTL: after k TTLs at most k · 20 % of them are back
    assert all(b <= math.ceil(0.2 * 200 * k) for k, b in enumerate(back, start=1))
    assert back[0] < back[1] < back[2]
    assert back[-1] == 200


def test_operator_drain_honours_its_rate_and_restore_brings_sessions_back() -> None:
    """Drain cdn-b in eu at 0.25/TTL: after k TTLs ≤ k · 25 % left; restore: they come back."""
    p = policy(return_share=0.5, min_dwell_s=0)
    ids = place(p, 120, "eu", T0, on="cdn-b")
    p.set_override(Override("eu", "cdn-b", OverrideAction.DRAIN, rate=0.25, at=T0 + 1))
    remaining = [120]
    for k in range(1, 6):
        for s in ids:
            p.steer(SessionState(s, "eu"), T0 + 10 * k)
        remaining.append(on(p, ids, "cdn-b"))
        assert 120 - remaining[-1] <= math.ceil(0.25 * 120 * k)  # the drain's schedule
    assert remaining[4] == 0
    assert p.clear_override("eu", "cdn-b", T0 + 55) is not None
    for k in range(6, 12):
        for s in ids:
            p.steer(SessionState(s, "eu"), T0 + 10 * k)
    assert on(p, ids, "cdn-b") == 120


def test_pin_moves_a_region_to_one_cdn() -> None:
    """Pin cdn-c in us: us sessions end on cdn-c; eu sessions do not move."""
    p = policy(drain_share=1.0)
    us = place(p, 40, "us", T0)
    eu = place(p, 40, "eu", T0)
    before = {s: p.session(s).pathway for s in eu}  # type: ignore[union-attr]
    p.set_override(Override("us", "cdn-c", OverrideAction.PIN, rate=1.0, at=T0 + 1))
    for s in us + eu:
        p.steer(SessionState(s, s.split("-")[0]), T0 + 10)
    assert on(p, us, "cdn-c") == 40
    assert {s: p.session(s).pathway for s in eu} == before  # type: ignore[union-attr]


def test_a_retry_in_the_same_ttl_gets_the_same_answer() -> None:
    """Retries agree: the decision is fixed for the session's TTL window."""
    p = policy(failure_drain_share=0.5)
    ids = place(p, 30, "eu", T0, on="cdn-b")
    p.update_health(HealthReport({("eu", ANY, "cdn-b"): DOWN}), T0 + 1)
    first = {s: p.steer(SessionState(s, "eu", pathway="cdn-b"), T0 + 10) for s in ids}
    again = {s: p.steer(SessionState(s, "eu", pathway="cdn-b"), T0 + 15) for s in ids}
    assert first == again


def test_idle_sessions_expire_and_stop_counting() -> None:
    """A session not seen for session_timeout_s no longer holds a place under a cap."""
    p = policy(session_timeout_s=60)
    place(p, 10, "eu", T0)
    assert p.next_deadline() == T0 + 60
    assert p.expire(T0 + 59) == 0
    assert p.expire(T0 + 61) == 10
    assert sum(p.statistics().per_cdn.values()) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_s": 0}, "ttl_s"),
        ({"drain_share": 0.0}, "drain_share"),
        ({"session_timeout_s": 1}, "session_timeout_s"),
    ],
)
def test_bad_configuration_is_refused_with_its_name(kwargs: dict[str, float], message: str) -> None:
    """A misconfigured policy fails at construction, naming the setting."""
    with pytest.raises(ValueError, match=message):
        SteeringConfig(**kwargs)  # type: ignore[arg-type]


def test_an_override_of_an_unknown_cdn_is_refused() -> None:
    """Draining a CDN that does not exist says which ones do."""
    with pytest.raises(ValueError, match="known: cdn-a, cdn-b, cdn-c"):
        policy().set_override(Override("eu", "cdn-x", OverrideAction.DRAIN, 0.5, T0))


def test_an_operator_drain_moves_sessions_even_when_every_other_cdn_looks_degraded() -> None:
    """The operator's drain is obeyed onto degraded-looking CDNs; a failure alone is not."""
    p = policy(failure_drain_share=1.0)
    ids = place(p, 10, "eu", T0, on="cdn-b")
    p.update_health(
        HealthReport({("eu", ANY, c): DOWN for c in ("cdn-a", "cdn-b", "cdn-c")}), T0 + 1
    )
    for s in ids:
        assert p.steer(SessionState(s, "eu"), T0 + 10).pathway == "cdn-b"  # nowhere better
    p.set_override(Override("eu", "cdn-b", OverrideAction.DRAIN, rate=1.0, at=T0 + 11))
    for s in ids:
        assert p.steer(SessionState(s, "eu"), T0 + 20).pathway != "cdn-b"


def test_when_every_cdn_looks_degraded_a_down_one_is_still_left_for_a_slow_one() -> None:
    """All degraded: sessions leave cdn-b (nothing answers) for cdn-a (slow but answering)."""
    p = policy(failure_drain_share=1.0)
    ids = place(p, 10, "eu", T0, on="cdn-b")
    slow = CdnSignal(availability=0.8, ttfb_p95_ms=4000.0, samples=10)
    p.update_health(
        HealthReport(
            {("eu", ANY, "cdn-a"): slow, ("eu", ANY, "cdn-b"): DOWN, ("eu", ANY, "cdn-c"): DOWN}
        ),
        T0 + 1,
    )
    assert all(p.steer(SessionState(s, "eu"), T0 + 10).pathway == "cdn-a" for s in ids)
