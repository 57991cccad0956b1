"""The per-segment selector between redundant pipelines (sans-IO)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainevent.media.redundancy import (
    Discard,
    Gap,
    Publish,
    Selector,
    SelectorError,
    Switched,
)

D = 2.0


def make(**kw: float) -> Selector:
    args: dict[str, float] = {
        "segment_duration_s": D,
        "late_after_s": 1.0,
        "gap_after_s": 1.5,
        "failback_hold_s": 10.0,
    }
    args.update(kw)
    s = Selector(pipelines=("primary", "backup"), renditions=("v", "a"), **args)
    s.set_health("primary", True, 0.0)
    s.set_health("backup", True, 0.0)
    return s


def end(msn: int) -> float:
    """Wall time at which segment `msn` has been captured whole."""
    return (msn + 1) * D


def published(actions: list[object]) -> list[tuple[str, int, str]]:
    return [(a.rendition, a.msn, a.pipeline) for a in actions if isinstance(a, Publish)]


def test_preferred_copy_is_published_at_once_and_the_other_discarded() -> None:
    s = make()
    assert published(s.offer("primary", "v", 100, end(100) + 0.3)) == [("v", 100, "primary")]
    late = s.offer("backup", "v", 100, end(100) + 0.4)
    assert late == [Discard("v", 100, "backup", "msn 100 already published from primary")]


def test_standby_copy_waits_for_the_preferred_one() -> None:
    s = make()
    assert s.offer("backup", "v", 100, end(100) + 0.2) == []
    acts = s.offer("primary", "v", 100, end(100) + 0.5)
    assert published(acts) == [("v", 100, "primary")]
    assert any(isinstance(a, Discard) and a.pipeline == "backup" for a in acts)


def test_late_preferred_copy_falls_back_after_the_deadline() -> None:
    s = make()
    s.offer("backup", "v", 100, end(100) + 0.2)
    assert s.tick(end(100) + 0.9) == []
    acts = s.tick(end(100) + 1.0)
    assert acts == [Publish("v", 100, "backup", "fallback: preferred copy late")]
    # The preferred copy arriving afterwards is never published a second time.
    assert isinstance(s.offer("primary", "v", 100, end(100) + 1.2)[0], Discard)


def test_rejected_preferred_copy_is_replaced_immediately() -> None:
    s = make()
    s.offer("backup", "v", 100, end(100) + 0.2)
    acts = s.reject("primary", "v", 100, end(100) + 0.3)
    assert acts == [Publish("v", 100, "backup", "fallback: preferred copy failed validation")]
    # …and when the rejection comes first, the standby copy is published on arrival.
    s.reject("primary", "v", 101, end(101) + 0.2)
    assert published(s.offer("backup", "v", 101, end(101) + 0.3)) == [("v", 101, "backup")]


def test_preferred_moving_past_an_msn_releases_the_standby_copy() -> None:
    s = make()
    s.offer("primary", "v", 99, end(99))
    s.offer("backup", "v", 100, end(100) + 0.1)
    acts = s.offer("primary", "v", 101, end(101) + 0.1)
    assert published(acts) == [("v", 100, "backup"), ("v", 101, "primary")]


def test_msns_are_published_in_order() -> None:
    s = make()
    s.offer("primary", "v", 99, end(99))
    s.offer("backup", "v", 100, end(100) + 0.1)
    s.offer("backup", "v", 101, end(100) + 0.2)  # the standby runs ahead
    acts = s.tick(end(100) + 1.0)
    assert published(acts) == [("v", 100, "backup")]  # 101 is not late yet
    assert published(s.tick(end(101) + 1.0)) == [("v", 101, "backup")]


def test_total_loss_lists_gaps_and_media_resumes() -> None:
    s = make()
    s.offer("primary", "v", 10, end(10))
    s.offer("primary", "a", 10, end(10))
    # The primary is waited for until it has been silent for 2·D + the gap allowance.
    assert s.tick(end(10) + 2 * D + 1.4) == []
    acts = s.tick(end(10) + 2 * D + 1.6)
    assert Gap("v", 12) in acts
    assert Gap("a", 12) in acts
    # A long silence is covered in one step (the window fills every MSN in between).
    acts = s.tick(end(20) + 1.6)
    assert Gap("v", 20) in acts
    assert published(s.offer("backup", "v", 21, end(21) + 0.2)) == []  # waits for primary
    assert published(s.tick(end(21) + 1.0)) == [("v", 21, "backup")]
    assert s.last_msn("v") == 21


def test_nothing_is_gapped_before_the_first_segment() -> None:
    s = make()
    assert s.tick(10_000.0) == []


def test_copies_for_a_gapped_msn_are_discarded() -> None:
    s = make()
    s.offer("primary", "v", 10, end(10))
    s.tick(end(10) + 2 * D + 1.6)
    assert isinstance(s.offer("primary", "v", 11, end(10) + 2 * D + 1.7)[0], Discard)


def test_every_pipeline_rejecting_an_msn_leaves_it_to_the_window() -> None:
    s = make()
    s.offer("primary", "v", 10, end(10))
    s.reject("primary", "v", 11, end(11))
    assert s.reject("backup", "v", 11, end(11)) == []
    assert published(s.offer("primary", "v", 12, end(12))) == [("v", 12, "primary")]


def test_failover_on_unhealthy_and_failback_after_hold_without_flapping() -> None:
    s = make(failback_hold_s=10.0)
    acts = s.set_health("primary", False, 100.0)
    assert acts == [Switched("primary", "backup", "failover: primary unhealthy")]
    assert s.set_health("primary", True, 101.0) == []
    assert s.tick(110.9) == []
    # Flapping health restarts the hold.
    s.set_health("primary", False, 111.0)
    s.set_health("primary", True, 112.0)
    assert s.tick(121.9) == []
    acts = s.tick(122.0)
    assert len(acts) == 1
    assert isinstance(acts[0], Switched)
    assert acts[0].current == "primary"
    assert acts[0].reason.startswith("failback")


def test_a_primary_that_misses_segments_does_not_fail_back() -> None:
    s = make(failback_hold_s=3.0)
    s.set_health("primary", False, end(9))
    s.offer("backup", "v", 10, end(10))
    s.set_health("primary", True, end(10))
    # Primary is "healthy" but delivers nothing: every late deadline resets its hold.
    for msn in range(11, 15):
        s.offer("backup", "v", msn, end(msn))
        s.offer("backup", "a", msn, end(msn))
        assert not any(isinstance(a, Switched) for a in s.tick(end(msn) + 1.0))
    assert s.preferred == "backup"


def test_operator_force_and_auto() -> None:
    s = make()
    assert s.force("backup", 1.0) == [Switched("primary", "backup", "forced by operator")]
    # Forced: a healthy primary does not take over again.
    assert s.tick(1000.0) == []
    assert s.preferred == "backup"
    s.force("auto", 1001.0)
    assert s.preferred == "primary"  # healthy for ≥ hold: back at once
    with pytest.raises(SelectorError, match="unknown pipeline 'tertiary'"):
        s.force("tertiary", 1.0)


def test_bad_construction_and_inputs() -> None:
    with pytest.raises(SelectorError):
        Selector(
            pipelines=("a", "a"),
            renditions=("v",),
            segment_duration_s=2,
            late_after_s=1,
            gap_after_s=2,
            failback_hold_s=1,
        )
    with pytest.raises(SelectorError):
        Selector(
            pipelines=("a",),
            renditions=("v",),
            segment_duration_s=2,
            late_after_s=2,
            gap_after_s=1,
            failback_hold_s=1,
        )
    s = make()
    with pytest.raises(SelectorError, match="unknown rendition"):
        s.offer("primary", "nope", 1, 0.0)


_event = st.tuples(
    st.sampled_from(["offer", "suspect", "reject", "tick", "health"]),
    st.sampled_from(["primary", "backup"]),
    st.sampled_from(["v", "a"]),
    st.integers(0, 6),  # msn offset
    st.floats(0, 1.5),  # time step in segments
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, max_size=60))
def test_any_interleaving_publishes_each_msn_at_most_once_in_order(
    events: list[tuple[str, str, str, int, float, bool]],
) -> None:
    s = make()
    now = end(100)
    published_msns: dict[str, list[int]] = {"v": [], "a": []}
    decided: dict[str, int] = {"v": -1, "a": -1}
    rejected: set[tuple[str, str, int]] = set()
    offered: set[tuple[str, str, int]] = set()
    for kind, p, r, off, step, flag in events:
        now += step * D
        msn = 100 + off
        if kind in ("offer", "suspect") and (p, r, msn) not in offered | rejected:
            offered.add((p, r, msn))
            acts = s.offer(p, r, msn, now, suspect=kind == "suspect")
        elif kind == "reject" and (p, r, msn) not in offered | rejected:
            rejected.add((p, r, msn))
            acts = s.reject(p, r, msn, now)
        elif kind == "health":
            acts = s.set_health(p, flag, now)
        else:
            acts = s.tick(now)
        for a in acts:
            if isinstance(a, Publish):
                assert (a.pipeline, a.rendition, a.msn) in offered
                assert (a.pipeline, a.rendition, a.msn) not in rejected
                assert a.msn > decided[a.rendition]
                decided[a.rendition] = a.msn
                published_msns[a.rendition].append(a.msn)
            elif isinstance(a, Gap):
                assert a.msn > decided[a.rendition]
                decided[a.rendition] = a.msn
            elif isinstance(a, Discard):
                assert a.msn <= decided[a.rendition]
    for msns in published_msns.values():
        assert msns == sorted(set(msns))


def test_suspect_preferred_copy_is_replaced_by_a_clean_one() -> None:
    s = make()
    assert s.offer("primary", "v", 100, end(100) + 0.2, suspect=True) == []
    acts = s.offer("backup", "v", 100, end(100) + 0.3)
    assert published(acts) == [("v", 100, "backup")]
    assert acts[0] == Publish(
        "v", 100, "backup", "fallback: preferred copy made from damaged input"
    )
    assert any(isinstance(a, Discard) and a.pipeline == "primary" for a in acts)


def test_a_clean_copy_already_held_wins_over_a_suspect_preferred_one() -> None:
    s = make()
    s.offer("backup", "v", 100, end(100) + 0.1)
    acts = s.offer("primary", "v", 100, end(100) + 0.2, suspect=True)
    assert published(acts) == [("v", 100, "backup")]


def test_a_suspect_copy_is_published_when_no_clean_copy_comes() -> None:
    s = make()
    s.offer("primary", "v", 100, end(100) + 0.2, suspect=True)
    assert s.tick(end(100) + 0.9) == []
    acts = s.tick(end(100) + 1.0)
    assert acts == [Publish("v", 100, "primary", "suspect: no clean copy in time")]
    # …at once when the other pipeline has rejected its copy.
    s.offer("primary", "v", 101, end(101) + 0.2, suspect=True)
    acts = s.reject("backup", "v", 101, end(101) + 0.3)
    assert published(acts) == [("v", 101, "primary")]


def test_failback_hold_restarts_at_the_last_miss() -> None:
    s = make(failback_hold_s=3.0)
    s.set_health("primary", False, end(9))
    s.set_health("primary", True, end(9) + 0.5)
    s.offer("backup", "v", 10, end(10))
    s.offer("backup", "a", 10, end(10))
    s.tick(end(10) + 1.0)  # primary missed 10: its hold restarts here
    for msn in (11, 12):
        for r in ("v", "a"):
            s.offer("primary", r, msn, end(msn) + 0.1)
            s.offer("backup", r, msn, end(msn) + 0.1)
    assert s.preferred == "backup"
    assert s.tick(end(10) + 3.9) == []
    acts = s.tick(end(10) + 4.0)
    assert [a.current for a in acts if isinstance(a, Switched)] == ["primary"]


def run_both(s: Selector, msns: range, lateness_s: float) -> list[object]:
    """Both pipelines deliver every segment of both renditions `lateness_s` after its capture
    end, with the adapter's 0.1 s ticks in between; returns every action."""
    acts: list[object] = []
    for msn in msns:
        at = end(msn) + lateness_s
        t = end(msn - 1) + lateness_s + 0.1
        while t < at:
            acts += s.tick(t)
            t += 0.1
        for p in ("primary", "backup"):
            for r in ("v", "a"):
                acts += s.offer(p, r, msn, at + (0.05 if p == "backup" else 0.0))
    return acts


def test_pipelines_delivering_late_are_listed_never_gapped() -> None:
    """Regression (issue 9): both pipelines 1.8 s behind (beyond the 1.5 s gap deadline, e.g.
    a transcoder backlog under CPU load) were slated for good while media kept coming."""
    s = make()
    acts = run_both(s, range(100, 130), lateness_s=1.8)
    assert not [a for a in acts if isinstance(a, Gap)]
    assert [m for r, m, _ in published(acts) if r == "v"] == list(range(100, 130))


def test_media_that_turns_late_after_a_loss_is_listed_again() -> None:
    """After a total loss, pipelines that come back late are listed again (latency grows):
    the copies of MSNs already covered are discarded, later ones are published."""
    s = make()
    acts = run_both(s, range(100, 105), lateness_s=0.3)
    # Both go silent for 6 s (gaps are right: nobody is delivering)…
    gaps = [a for a in s.tick(end(104) + 6.0) if isinstance(a, Gap)]
    assert gaps
    assert "silent for" in gaps[0].cause
    assert "primary" in gaps[0].cause
    assert "backup" in gaps[0].cause
    # …then resume 3.3 s behind their capture clock (the backlog they built up).
    acts = run_both(s, range(106, 130), lateness_s=3.3)
    listed = [m for r, m, _ in published(acts) if r == "v"]
    assert listed
    assert listed == list(range(listed[0], 130))
    assert listed[0] <= 108
    later_gaps = [a for a in acts if isinstance(a, Gap) and a.msn >= listed[0]]
    assert later_gaps == []


def test_a_late_pipeline_that_stops_lets_the_loss_be_declared() -> None:
    """Waiting for a late pipeline ends when it stops delivering: the window moves on."""
    s = make()
    run_both(s, range(100, 110), lateness_s=1.8)
    # Nothing after 109: waited for while silent for up to 2·D + the allowance…
    last = end(109) + 1.8
    assert not any(isinstance(a, Gap) for a in s.tick(last + 2 * D + 1.4))
    # …then the loss is declared.
    assert any(isinstance(a, Gap) and a.msn >= 110 for a in s.tick(last + 2 * D + 1.6))


def test_a_pipeline_slipping_further_behind_is_still_waited_for() -> None:
    """A starved transcoder slipping ~2 s per segment (one every ~4 s) is not taken for
    stopped: its media is listed, later and later, and no slate comes."""
    s = make()
    acts: list[object] = []
    t = end(100)
    for i, msn in enumerate(range(100, 110)):
        at = end(msn) + 0.5 + 2.0 * i
        while t + 0.1 < at:
            t += 0.1
            acts += s.tick(t)
        t = at
        for r in ("v", "a"):
            acts += s.offer("primary", r, msn, at)
    assert not [a for a in acts if isinstance(a, Gap)]
    assert [m for r, m, _ in published(acts) if r == "v"] == list(range(100, 110))
    # Silent for longer than 2·D + the allowance: stopped; the window moves on.
    assert any(isinstance(a, Gap) for a in s.tick(t + 2 * D + 1.6))


def test_gap_cause_names_each_pipeline_and_how_late_it_is() -> None:
    """The gap's cause says which deadline passed and where each pipeline stands."""
    s = make()
    s.offer("primary", "v", 10, end(10) + 0.4)
    acts = s.tick(end(13) + 1.6)
    gap = next(a for a in acts if isinstance(a, Gap) and a.rendition == "v")
    assert "deadline for segment" in gap.cause
    assert "primary (healthy, silent for" in gap.cause
    assert "newest segment 10, 0.4 s after its capture end" in gap.cause
    assert "backup (healthy): delivered nothing" in gap.cause


def test_health_flickering_on_both_pipelines_causes_no_failover() -> None:
    """Under CPU load both verdicts dropped within 100 ms: no needless switch."""
    s = make(failover_hold_s=1.0)
    assert s.set_health("primary", False, 100.0) == []
    assert s.set_health("backup", False, 100.05) == []
    assert s.tick(100.5) == []
    assert s.set_health("primary", True, 100.6) == []
    assert s.set_health("backup", True, 100.65) == []
    assert s.tick(105.0) == []
    assert s.preferred == "primary"
    assert s.switches == 0


def test_a_lasting_unhealthy_verdict_still_fails_over_after_the_hold() -> None:
    """A real failure (the verdict stays bad) fails over once the hold has passed."""
    s = make(failover_hold_s=1.0)
    s.set_health("primary", False, 100.0)
    assert s.set_health("primary", False, 100.9) == []
    acts = s.set_health("primary", False, 101.0)
    assert acts == [Switched("primary", "backup", "failover: primary unhealthy for 1.0 s")]
    with pytest.raises(SelectorError, match="failover_hold_s"):
        make(failover_hold_s=-1.0)
