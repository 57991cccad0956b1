"""Sans-IO cores: lifecycle, entitlement rules, admission, rate limits, breaker, bulkhead, caches, sessions."""

from __future__ import annotations

import math
import random
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.common.admission import (
    AdmissionController,
    AdmissionPolicy,
    Admitted,
    Bulkhead,
    Priority,
    Shed,
)
from mainevent.common.breaker import BreakerState, CircuitBreaker
from mainevent.common.ratelimit import KeyedRateLimiter, TokenBucket
from mainevent.control.decisions import DecisionCache
from mainevent.control.entitlement import (
    Blackout,
    Denial,
    EventFacts,
    Policy,
    RegionTable,
    ViewerFacts,
    age_on,
    check_entitlement,
    check_event_window,
    check_region,
)
from mainevent.control.lifecycle import TRANSITIONS, EventStatus, check_transition
from mainevent.control.sessions import SessionRegistry

S = EventStatus
LEGAL = {(a, b) for a, bs in TRANSITIONS.items() for b in bs}
ALL_PAIRS = [(a, b) for a in S for b in S]
T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("current", "target"), [p for p in ALL_PAIRS if p not in LEGAL], ids=lambda s: str(s)
)
def test_every_illegal_transition_is_refused(current: EventStatus, target: EventStatus) -> None:
    """Operators cannot skip, reverse or repeat lifecycle steps; the answer lists what is allowed."""
    illegal = check_transition(current, target, starts_at=None, ends_at=None)
    assert illegal is not None
    assert illegal.reason in ("illegal_transition", "already_in_state")
    assert set(illegal.allowed) == TRANSITIONS[current]


def test_lifecycle_is_the_documented_chain() -> None:
    """draft → scheduled → rehearsal → live ⇄ paused → ended → archived, nothing else."""
    assert sorted((a.value, b.value) for a, b in LEGAL) == sorted(
        [
            ("draft", "scheduled"),
            ("scheduled", "rehearsal"),
            ("rehearsal", "live"),
            ("live", "paused"),
            ("paused", "live"),
            ("live", "ended"),
            ("paused", "ended"),
            ("ended", "archived"),
        ]
    )


def _event(**kw: object) -> EventFacts:
    base: dict[str, object] = {"id": "e", "status": S.LIVE, "starts_at": T0, "ends_at": T0 + 3600}
    return EventFacts(**(base | kw))  # type: ignore[arg-type]


def test_event_window_rules() -> None:
    """Waiting room opens preauth_window before the start; ended/draft/archived are refused."""
    ev = _event(status=S.SCHEDULED)
    assert check_event_window(ev, T0 - 7200, 3600) is Denial.WAITING_ROOM_CLOSED
    pre = check_event_window(ev, T0 - 100, 3600)
    assert not isinstance(pre, Denial)
    assert pre.preauth
    assert pre.valid_from == T0
    late = check_event_window(ev, T0 + 5, 3600)  # scheduled but the start passed: play now
    assert not isinstance(late, Denial)
    assert not late.preauth
    assert check_event_window(_event(status=S.ENDED), T0, 0) is Denial.EVENT_ENDED
    assert check_event_window(_event(status=S.DRAFT), T0, 0) is Denial.EVENT_NOT_PUBLISHED
    assert not isinstance(check_event_window(_event(status=S.PAUSED), T0, 0), Denial)


def test_region_and_time_windowed_blackout() -> None:
    """A blackout only applies inside its window; unknown regions fail closed only when regions are limited."""
    ev = _event(blackouts=(Blackout(frozenset({"GB"}), T0, T0 + 60),))
    assert check_region(ev, "GB", T0 + 10) is Denial.BLACKOUT
    assert check_region(ev, "GB", T0 + 61) is None
    assert check_region(ev, None, T0) is None
    limited = _event(allowed_regions=frozenset({"FR"}))
    assert check_region(limited, None, T0) is Denial.REGION_UNKNOWN
    assert check_region(limited, "DE", T0) is Denial.REGION_NOT_ALLOWED
    table = RegionTable([("10.0.0.0/8", "A"), ("10.1.0.0/16", "B"), ("2001:db8::/32", "C")])
    assert (table.lookup("10.1.2.3"), table.lookup("10.2.0.1"), table.lookup("2001:db8::1")) == (
        "B",
        "A",
        "C",
    )
    assert table.lookup("192.0.2.1") is None
    assert table.lookup("not-an-ip") is None


@given(
    born=st.dates(date(1900, 1, 1), date(2025, 12, 31)),
    today=st.dates(date(1990, 1, 1), date(2030, 12, 31)),
)
def test_age_matches_birthday_arithmetic(born: date, today: date) -> None:
    """A viewer turns N exactly on their Nth birthday (29 Feb birthdays count on 1 Mar)."""
    age = age_on(born, today)
    assert age == today.year - born.year - (
        1 if (today.month, today.day) < (born.month, born.day) else 0
    )


def test_entitlement_rules() -> None:
    """Plans, expiry, purchases, free events and age limits combine as documented."""
    now, today = T0, date(2027, 1, 15)
    tiers = Policy(subscription_tiers=frozenset({"premium"}))
    both = Policy(subscription_tiers=frozenset({"premium"}), ppv_product="ppv")
    assert check_entitlement(Policy(), ViewerFacts("a"), now, today) is None
    assert check_entitlement(tiers, None, now, today) is Denial.ACCOUNT_NOT_FOUND
    assert check_entitlement(tiers, ViewerFacts("a", plan="premium"), now, today) is None
    assert (
        check_entitlement(tiers, ViewerFacts("a", plan="premium", plan_valid_until=now), now, today)
        is Denial.SUBSCRIPTION_EXPIRED
    )
    assert (
        check_entitlement(both, ViewerFacts("a", purchased_products=frozenset({"ppv"})), now, today)
        is None
    )
    assert check_entitlement(both, ViewerFacts("a"), now, today) is Denial.PURCHASE_REQUIRED
    adult = Policy(min_age=18)
    assert (
        check_entitlement(adult, ViewerFacts("a", date_of_birth=date(2009, 1, 15)), now, today)
        is None
    )
    assert (
        check_entitlement(adult, ViewerFacts("a", date_of_birth=date(2009, 1, 16)), now, today)
        is Denial.AGE_RESTRICTED
    )


def test_admission_sheds_lowest_priority_first_and_never_refreshes_below_the_cap() -> None:
    """Under rising delay polling goes first, then purchases, then new starts; refreshes keep being served."""
    ctl = AdmissionController(AdmissionPolicy(max_in_flight=100), random.Random(1))
    for _ in range(50):
        ctl.observe_delay(0.015)  # between the new-start target (5 ms) and full (30 ms)
    assert ctl.delay == pytest.approx(0.015, rel=1e-3)
    served = {p: sum(isinstance(ctl.admit(p), Admitted) for _ in range(40)) for p in Priority}
    assert served[Priority.REFRESH] == 40
    assert served[Priority.POLL] == 0
    assert served[Priority.PURCHASE] == 0
    assert 0 < served[Priority.NEW_START] < 40
    shed = ctl.admit(Priority.POLL)
    assert isinstance(shed, Shed)
    assert 5.0 <= shed.retry_after <= 7.0


def test_admission_in_flight_shares() -> None:
    """Low priorities may only fill part of the in-flight budget, leaving room for refreshes."""
    ctl = AdmissionController(AdmissionPolicy(max_in_flight=10), random.Random(1))
    tickets = [ctl.admit(Priority.NEW_START) for _ in range(10)]
    assert sum(isinstance(t, Admitted) for t in tickets) == 8  # in flight may reach 7.5: 8 admitted
    assert isinstance(ctl.admit(Priority.REFRESH), Admitted)
    for t in tickets:
        if isinstance(t, Admitted):
            ctl.release(t)
    assert ctl.statistics().in_flight == 1
    ctl.observe_delay(0.0)
    assert ctl.delay == 0.0


def test_admission_queue_is_bounded_and_sheds_lower_priorities_first() -> None:
    """With the worker's queue filling up, polls are shed first, then purchases, then new starts; refreshes never."""
    policy = AdmissionPolicy(max_queued=(math.inf, 6, 4, 2))
    ctl = AdmissionController(policy, random.Random(1))
    queued = [ctl.enqueue(Priority.REFRESH) for _ in range(2)]
    assert all(isinstance(t, Admitted) for t in queued)
    assert isinstance(ctl.enqueue(Priority.POLL), Shed)  # 2 waiting: polls already go
    queued += [ctl.enqueue(Priority.PURCHASE) for _ in range(3)]
    assert [isinstance(t, Admitted) for t in queued[2:]] == [True, True, False]
    queued += [ctl.enqueue(Priority.NEW_START) for _ in range(3)]
    assert [isinstance(t, Admitted) for t in queued[5:]] == [True, True, False]
    for _ in range(100):
        assert isinstance(ctl.enqueue(Priority.REFRESH), Admitted)
    stats = ctl.statistics()
    assert stats.queued == 106
    assert stats.shed == (0, 1, 1, 1)
    for t in queued:  # the worker gets to them: the queue drains, new starts are admitted again
        if isinstance(t, Admitted):
            assert ctl.start(t, 0.001) is t
    assert ctl.statistics().queued == 100


def test_requests_that_waited_too_long_are_shed_when_they_are_about_to_run() -> None:
    """An admitted new start that waited past its budget gets 503 + Retry-After instead of a late answer; a refresh never does."""
    ctl = AdmissionController(AdmissionPolicy(), random.Random(1))
    late, on_time, refresh = (
        ctl.enqueue(Priority.NEW_START),
        ctl.enqueue(Priority.NEW_START),
        ctl.enqueue(Priority.REFRESH),
    )
    assert isinstance(late, Admitted)
    assert isinstance(on_time, Admitted)
    assert isinstance(refresh, Admitted)
    shed = ctl.start(late, 0.031)
    assert isinstance(shed, Shed)
    assert shed.reason == "overloaded_late"
    assert 2.0 <= shed.retry_after <= 4.0
    assert ctl.start(on_time, 0.029) is on_time
    assert ctl.start(refresh, 60.0) is refresh
    stats = ctl.statistics()
    assert (stats.in_flight, stats.queued) == (2, 0)  # the late one's slot is free again
    assert stats.late == (0, 1, 0, 0)
    assert stats.shed == (0, 1, 0, 0)
    ctl.release(on_time)
    ctl.release(refresh)
    gone = ctl.enqueue(Priority.PURCHASE)
    assert isinstance(gone, Admitted)
    ctl.withdraw(gone)  # it could not be parsed after all
    assert (ctl.statistics().in_flight, ctl.statistics().queued) == (0, 0)


def test_admission_policy_rejects_a_negative_queue_bound() -> None:
    """A negative queue bound is a configuration error, not a silent shed-everything."""
    with pytest.raises(ValueError, match="max_queued"):
        AdmissionPolicy(max_queued=(math.inf, -1, 0, 0))


def test_token_bucket_and_keyed_limits() -> None:
    """A bucket allows its burst, then one request per 1/rate, and says how long to wait."""
    b = TokenBucket(rate=2.0, burst=3.0, updated=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)
    assert b.take(0.5) == 0.0
    keyed = KeyedRateLimiter(rate=1.0, burst=1.0, max_keys=2)
    assert keyed.take("a", 0.0) == 0.0
    assert keyed.take("a", 0.0) > 0
    assert keyed.take("b", 0.0) == 0.0
    assert keyed.take("c", 0.0) == 0.0
    assert len(keyed) == 2
    assert keyed.take("a", 0.0) == 0.0


def test_circuit_breaker_opens_probes_and_closes() -> None:
    """Consecutive failures or slow calls open the breaker; after open_s one probe decides."""
    br = CircuitBreaker(failure_threshold=2, slow_call_s=0.1, open_s=5)
    br.record(0, True, 0.5)  # slow counts as failure
    assert br.allow(0)
    br.record(0, False)
    assert br.state is BreakerState.OPEN
    assert not br.allow(4.9)
    assert br.allow(5.0)
    assert not br.allow(5.0)
    br.record(5.0, False)
    assert br.state is BreakerState.OPEN
    assert br.allow(10.0)
    br.record(10.0, True, 0.01)
    assert br.state is BreakerState.CLOSED
    assert br.trips == 2


def test_bulkhead() -> None:
    """A full bulkhead refuses instead of queueing."""
    b = Bulkhead(1)
    assert b.try_acquire()
    assert not b.try_acquire()
    b.release()
    assert b.try_acquire()
    b.release()
    with pytest.raises(RuntimeError):
        b.release()


def test_decision_cache_ttl_invalidation_and_known_good() -> None:
    """Answers are reused until their TTL or a plan/purchase change; positives are remembered for outages."""
    c = DecisionCache(ttl=60, known_good_ttl=3600)
    c.put("a", "e", None, 0)
    c.put("b", "e", Denial.PURCHASE_REQUIRED, 0)
    assert c.get("a", "e", 59) is not None
    assert c.get("a", "e", 60) is None
    c.invalidate_account("b")
    assert c.get("b", "e", 1) is None
    assert c.known_good("a", "e", 3599)
    assert not c.known_good("a", "e", 3600)
    assert not c.known_good("b", "e", 1)


def test_session_registry_limits_and_expiry() -> None:
    """Stream limits count live sessions; a device replaces its own; expired sessions free their slot."""
    reg = SessionRegistry(ttl=90)
    assert reg.start(session_id="1", account_id="a", event_id="e", device_id="tv", now=0, limit=1)
    assert (
        reg.start(session_id="2", account_id="a", event_id="e", device_id="pc", now=1, limit=1)
        is None
    )
    assert reg.start(session_id="3", account_id="a", event_id="e", device_id="tv", now=1, limit=1)
    assert reg.get("1", 1) is None
    assert len(reg) == 1
    assert reg.heartbeat("3", 80) is not None
    assert reg.active("a", 160)
    assert not reg.active("a", 171)
