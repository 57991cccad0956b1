"""The ingest fan-out core: every origin gets every object, in order, and none blocks another."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mainevent.common.breaker import BreakerState
from mainevent.media.origin.fanout import (
    Dropped,
    DropReason,
    FanoutCore,
    IngestObject,
    ObjectKind,
    Offered,
    Outcome,
    Send,
    SendDone,
    Tick,
)


def init(rendition: str = "v720") -> IngestObject:
    return IngestObject(
        "demo", rendition, "init.mp4", ObjectKind.INIT, b"init-" + rendition.encode()
    )


def seg(msn: int, rendition: str = "v720") -> IngestObject:
    return IngestObject("demo", rendition, f"{msn}.m4s", ObjectKind.SEGMENT, b"s%d" % msn)


def part(msn: int, k: int, rendition: str = "v720") -> IngestObject:
    return IngestObject("demo", rendition, f"{msn}.{k}.m4s", ObjectKind.PART, b"p%d.%d" % (msn, k))


def sends(actions: list[Send | Dropped], origin: int | None = None) -> list[Send]:
    return [a for a in actions if isinstance(a, Send) and origin in (None, a.origin)]


def done(core: FanoutCore, s: Send, outcome: Outcome, now: float) -> list[Send | Dropped]:
    return core.handle(SendDone(s.origin, s.seq, outcome), now)


def test_every_origin_gets_each_object_and_a_lane_sends_one_at_a_time_in_order() -> None:
    """Each origin gets init then segments of a rendition in order, one PUT in flight per lane."""
    core = FanoutCore(2)
    first = core.handle(Offered(init()), 0.0)
    assert [(s.origin, s.obj.name) for s in sends(first)] == [(0, "init.mp4"), (1, "init.mp4")]
    assert sends(core.handle(Offered(seg(10)), 0.0)) == []  # the lane is busy with the init
    nxt = done(core, sends(first, 0)[0], Outcome.STORED, 0.01)
    assert [(s.origin, s.obj.name) for s in sends(nxt)] == [(0, "10.m4s")]


def test_renditions_are_separate_lanes() -> None:
    """Audio does not wait behind video: each rendition's objects go out concurrently."""
    core = FanoutCore(1)
    a = core.handle(Offered(init("v720")), 0.0)
    b = core.handle(Offered(init("a128")), 0.0)
    assert [s.obj.rendition for s in sends(a + b)] == ["v720", "a128"]


def test_a_dead_origin_never_blocks_the_others_and_its_breaker_opens() -> None:
    """Origin 0 refuses connections: origin 1 gets every segment at once; 0 backs off, then
    its breaker opens and only a probe goes after the open interval."""
    core = FanoutCore(2, breaker_failures=3, breaker_open_s=1.0, base_backoff_s=0.1)
    now = 0.0
    pending = sends(core.handle(Offered(seg(1)), now))
    delivered_1 = []
    for msn in range(2, 8):
        nxt: list[Send] = []
        for s in pending:
            outcome = Outcome.UNREACHABLE if s.origin == 0 else Outcome.STORED
            if s.origin == 1:
                delivered_1.append(s.obj.name)
            nxt += sends(done(core, s, outcome, now))
        nxt += sends(core.handle(Offered(seg(msn)), now))
        now += 0.5
        nxt += sends(core.handle(Tick(), now))
        pending = nxt
    assert delivered_1 == [f"{m}.m4s" for m in range(1, 7)]
    assert core.statistics(0).breaker in (BreakerState.OPEN, BreakerState.HALF_OPEN)
    assert core.statistics(0).queued == 7  # nothing lost, nothing sent
    # At most one probe is out to the dead origin; without one, a timer waits for the next.
    probes = [s for s in pending if s.origin == 0]
    assert len(probes) <= 1
    assert probes or core.next_deadline() is not None


def test_breaker_probe_then_recovery_resends_the_init_first() -> None:
    """After being unreachable, an origin first gets the rendition's init section again (it may
    have restarted with an empty disk), then the queued segments in order."""
    core = FanoutCore(1, breaker_failures=1, breaker_open_s=1.0)
    s = sends(core.handle(Offered(init()), 0.0))[0]
    core.handle(SendDone(0, s.seq, Outcome.STORED), 0.0)
    s = sends(core.handle(Offered(seg(5)), 0.0))[0]
    assert sends(done(core, s, Outcome.UNREACHABLE, 0.1)) == []
    core.handle(Offered(seg(6)), 0.2)
    assert sends(core.handle(Tick(), 0.5)) == []  # breaker open
    assert core.next_deadline() == 1.1
    probe = sends(core.handle(Tick(), 1.2))
    assert [p.obj.name for p in probe] == ["init.mp4"]
    after = sends(done(core, probe[0], Outcome.SAME, 1.21))
    assert [p.obj.name for p in after] == ["5.m4s"]
    after = sends(done(core, after[0], Outcome.STORED, 1.22))
    assert [p.obj.name for p in after] == ["6.m4s"]
    assert core.statistics(0).breaker is BreakerState.CLOSED


def test_full_queue_drops_the_oldest_part_first_then_the_oldest_segment_never_the_init() -> None:
    """A dead origin's backlog stays bounded; parts go first, the init section is kept."""
    core = FanoutCore(1, max_queued=4, breaker_failures=1, breaker_open_s=100.0)
    s = sends(core.handle(Offered(init()), 0.0))[0]
    done(core, s, Outcome.UNREACHABLE, 0.0)  # init stays queued, breaker open
    dropped: list[Dropped] = []
    for obj in (part(1, 0), seg(1), part(2, 0), seg(2), seg(3)):
        dropped += [a for a in core.handle(Offered(obj), 0.1) if isinstance(a, Dropped)]
    assert [(d.obj.name, d.reason) for d in dropped] == [
        ("1.0.m4s", DropReason.QUEUE_FULL),
        ("2.0.m4s", DropReason.QUEUE_FULL),
    ]
    more = [a for a in core.handle(Offered(seg(4)), 0.2) if isinstance(a, Dropped)]
    assert [d.obj.name for d in more] == ["1.m4s"]
    assert core.statistics(0).queued == 4


def test_an_end_is_never_dropped_for_room() -> None:
    """A full queue drops media, not the `end` that makes the origin list EXT-X-ENDLIST."""
    core = FanoutCore(1, max_queued=2, breaker_failures=1, breaker_open_s=100.0)
    s = sends(core.handle(Offered(seg(1)), 0.0))[0]
    done(core, s, Outcome.UNREACHABLE, 0.0)
    end = IngestObject("demo", "v720", "end", ObjectKind.END, b"")
    core.handle(Offered(end), 0.1)
    dropped = [a for a in core.handle(Offered(seg(2)), 0.2) if isinstance(a, Dropped)]
    assert [d.obj.name for d in dropped] == ["1.m4s"]


def test_conflict_and_rejection_are_final_same_is_delivered() -> None:
    """409/4xx are never retried (counted as dropped); 204 counts as delivered."""
    core = FanoutCore(1)
    s = sends(core.handle(Offered(seg(1)), 0.0))[0]
    core.handle(Offered(seg(2)), 0.0)
    out = done(core, s, Outcome.CONFLICT, 0.0)
    assert [(d.obj.name, d.reason) for d in out if isinstance(d, Dropped)] == [
        ("1.m4s", DropReason.CONFLICT)
    ]
    s2 = sends(out)[0]
    assert s2.obj.name == "2.m4s"
    done(core, s2, Outcome.SAME, 0.0)
    st_ = core.statistics(0)
    assert (st_.delivered, st_.dropped, st_.queued) == (1, 1, 0)


def test_server_errors_are_retried_with_backoff_then_given_up() -> None:
    """A 5xx for one object is retried after a doubling backoff, `max_attempts` times at most."""
    core = FanoutCore(1, max_attempts=3, base_backoff_s=0.1, breaker_failures=10)
    s = sends(core.handle(Offered(seg(1)), 0.0))[0]
    assert sends(done(core, s, Outcome.SERVER_ERROR, 0.0)) == []
    assert core.next_deadline() == 0.1
    s = sends(core.handle(Tick(), 0.1))[0]
    assert s.attempt == 2
    done(core, s, Outcome.SERVER_ERROR, 0.1)
    deadline = core.next_deadline()
    assert deadline is not None
    assert abs(deadline - 0.3) < 1e-9  # the backoff doubled
    s = sends(core.handle(Tick(), deadline))[0]
    out = done(core, s, Outcome.SERVER_ERROR, deadline)
    assert [(d.obj.name, d.reason) for d in out if isinstance(d, Dropped)] == [
        ("1.m4s", DropReason.RETRIES_EXHAUSTED)
    ]


def test_init_required_resends_the_init_then_the_object() -> None:
    """409 init_required (a restarted origin) → the lane's init section, then the object again."""
    core = FanoutCore(1)
    s = sends(core.handle(Offered(init()), 0.0))[0]
    done(core, s, Outcome.STORED, 0.0)
    s = sends(core.handle(Offered(seg(3)), 0.0))[0]
    again = sends(done(core, s, Outcome.NEEDS_INIT, 0.0))
    assert [a.obj.name for a in again] == ["init.mp4"]
    nxt = sends(done(core, again[0], Outcome.STORED, 0.0))
    assert [a.obj.name for a in nxt] == ["3.m4s"]


_OUTCOMES = st.sampled_from(list(Outcome))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), _OUTCOMES), min_size=1, max_size=80))
def test_property_order_and_bound_hold_whatever_the_origins_answer(
    script: list[tuple[int, Outcome]],
) -> None:
    """Whatever the answers, each origin gets a lane's objects in offered order (re-sent
    inits aside), its queue never exceeds the bound, and a healthy origin gets everything."""
    core = FanoutCore(3, max_queued=6, breaker_failures=2, breaker_open_s=0.5)
    now = 0.0
    in_flight: dict[int, list[Send]] = {0: [], 1: [], 2: []}
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    offered = 0

    def take(actions: list[Send | Dropped]) -> None:
        for s in sends(actions):
            in_flight[s.origin].append(s)
            if s.obj.kind is ObjectKind.SEGMENT:
                seen[s.origin].append(int(s.obj.name.split(".")[0]))

    take(core.handle(Offered(init()), now))
    for origin, outcome in script:
        offered += 1
        take(core.handle(Offered(seg(offered)), now))
        now += 0.3
        take(core.handle(Tick(), now))
        for o in (0, 1, 2):
            answer = outcome if o == origin else Outcome.STORED
            if o == 2:
                answer = Outcome.STORED  # origin 2 is always healthy
            while in_flight[o]:
                s = in_flight[o].pop(0)
                take(done(core, s, answer, now))
        for o in (0, 1, 2):
            assert core.statistics(o).queued <= 6
    for o in (0, 1, 2):
        # Retries repeat a number; never does a lower number follow a higher one.
        assert all(a <= b for a, b in zip(seen[o], seen[o][1:], strict=False)), seen[o]
    assert sorted(set(seen[2])) == list(range(1, offered + 1))
