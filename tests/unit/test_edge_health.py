"""Upstream health without sockets: backoff after failures, one probe per interval, stale now."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainevent.media.edge import Cache, Fetch, Hit, Stale, UpstreamHealth, UpstreamResponse, Wait


def resp(body: bytes = b"x", cc: str = "max-age=1", status: int = 200) -> UpstreamResponse:
    return UpstreamResponse(status, (("Cache-Control", cc),), body)


def test_backoff_grows_with_each_failed_probe_up_to_the_cap() -> None:
    """A dead upstream is asked once per interval, and the intervals grow 1, 2, 4, 4 s."""
    h = UpstreamHealth(base_s=1.0, max_s=4.0)
    assert not h.failing
    assert not h.probe(0.0)  # a healthy upstream needs no probe: everything goes upstream
    h.failed(0.0, 0.0)
    assert (h.failing, h.backoff_s) == (True, 1.0)
    now, seen = 0.0, []
    for _ in range(4):
        later = now + h.backoff_s
        assert not h.probe(later - 0.01)
        assert h.probe(later)
        now = later + 0.01
        h.failed(later, now)  # the probe was refused
        seen.append(h.backoff_s)
    assert seen == [2.0, 4.0, 4.0, 4.0]
    assert h.stats().probes == 4
    assert h.stats().marked_failing == 1


def test_one_probe_per_interval_even_when_it_hangs() -> None:
    """While failing, one request per interval may probe; a probe that never returns does not
    stop the next interval's probe (so a recovery is still noticed within about one interval)."""
    h = UpstreamHealth(base_s=1.0, max_s=8.0)
    h.failed(0.0, 0.0)
    assert h.probe(1.0)
    assert [h.probe(t) for t in (1.0, 1.2, 1.9)] == [False, False, False]
    assert h.probe(2.0)  # the first probe is still out
    assert h.stats().probes == 2


def test_fetches_already_out_do_not_grow_the_backoff() -> None:
    """Fetches that were under way when the upstream broke, or sent during the interval for
    objects with no stale copy, fail for the same reason: the interval stays as it was."""
    h = UpstreamHealth(base_s=1.0, max_s=8.0)
    h.failed(-2.0, 0.0)
    h.failed(-1.0, 0.3)  # started before the mark
    h.failed(0.5, 0.6)  # a miss with nothing stale to serve, sent during the interval
    assert h.backoff_s == 1.0
    assert h.stats().failures == 3
    assert not h.probe(0.9)
    h.failed(1.2, 1.3)  # sent after the interval ended: news that it is still down
    assert h.backoff_s == 2.0


def test_first_success_resets_the_backoff() -> None:
    """One answer from the upstream marks it healthy; the next outage starts from 1 s again."""
    h = UpstreamHealth(base_s=1.0, max_s=8.0)
    h.failed(0.0, 0.0)
    assert h.probe(1.0)
    h.failed(1.0, 1.0)
    assert h.backoff_s == 2.0
    h.succeeded()
    assert not h.failing
    assert h.stats().healthy
    assert h.stats().backoff_s == 0.0
    assert h.stats().failing_since is None
    h.failed(10.0, 10.0)
    assert (h.backoff_s, h.stats().failing_since, h.stats().marked_failing) == (1.0, 10.0, 2)


def test_settings_are_checked() -> None:
    """A backoff that is not positive, or a cap below it, is refused with the reason."""
    with pytest.raises(ValueError, match="must be positive"):
        UpstreamHealth(base_s=0.0)
    with pytest.raises(ValueError, match="at least the first"):
        UpstreamHealth(base_s=2.0, max_s=1.0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["probe", "fail_probe", "fail_old", "fail_new", "succeed"]),
            st.floats(min_value=0.0, max_value=3.0),
        ),
        max_size=60,
    )
)
def test_probes_are_at_least_one_interval_apart(ops: list[tuple[str, float]]) -> None:
    """Whatever happens, probes to a failing upstream are ≥ one backoff interval apart, and the
    interval stays between the first backoff and the cap."""
    h = UpstreamHealth(base_s=0.5, max_s=3.0)
    now = 0.0
    last_probe: tuple[float, float] | None = None  # (when, interval then)
    outstanding: list[float] = []
    for op, dt in ops:
        now += dt
        if op == "probe":
            if h.probe(now):
                if last_probe is not None:
                    assert now - last_probe[0] >= last_probe[1] - 1e-9
                last_probe = (now, h.backoff_s)
                outstanding.append(now)
        elif op == "fail_probe" and outstanding:
            h.failed(outstanding.pop(0), now)
        elif op == "fail_old":
            h.failed(now - 5.0, now)
        elif op == "fail_new":
            h.failed(now, now)
        elif op == "succeed":
            h.succeeded()
            last_probe = None
        if h.failing:
            assert 0.5 <= h.backoff_s <= 3.0
        else:
            assert h.backoff_s == 0.0
            assert not h.probe(now)


def probes(action: Hit | Stale | Fetch | Wait) -> bool:
    """A stale answer given without asking the upstream: does it also start the probe?"""
    assert isinstance(action, Stale)
    assert action.upstream_failing
    return action.revalidate


def stored(c: Cache, key: str, cc: str, now: float) -> None:
    assert isinstance(c.lookup(key, now), Fetch)
    c.finish(key, resp(cc=cc), now)


def test_cache_serves_stale_at_once_while_the_upstream_is_failing() -> None:
    """After a failed fetch, expired objects within stale-if-error are served stale with no
    upstream fetch, one probe per interval refreshes in the background, objects with no copy
    still go upstream, and the first success restores normal refreshing."""
    c = Cache(default_stale_if_error=30, health=UpstreamHealth(base_s=1.0, max_s=4.0))
    stored(c, "/a.m3u8", "max-age=1", 0.0)
    stored(c, "/b.m3u8", "max-age=1", 0.0)
    assert isinstance(c.lookup("/a.m3u8", 2.0), Fetch)
    assert isinstance(c.lookup("/a.m3u8", 2.0), Wait)  # healthy so far: collapsed as before
    f = c.finish("/a.m3u8", None, 2.0)  # refused
    assert f.stale
    assert c.health.failing

    for t in (2.1, 2.5, 2.9):
        for key in ("/a.m3u8", "/b.m3u8"):
            s = c.lookup(key, t)
            assert isinstance(s, Stale)
            assert (s.revalidate, s.upstream_failing) == (False, True)
    assert c.stats().in_flight == 0

    probe = c.lookup("/b.m3u8", 3.0)
    assert isinstance(probe, Stale)
    assert probe.revalidate  # the adapter fetches it in the background
    again = c.lookup("/b.m3u8", 3.05)
    assert isinstance(again, Stale)
    assert not again.revalidate
    assert not probes(c.lookup("/a.m3u8", 3.05))
    c.finish("/b.m3u8", None, 3.1)  # the probe failed too: the next interval is 2 s
    assert c.health.backoff_s == 2.0

    # Nothing stale to fall back on: still asked (and collapsed) as before; its failure, during
    # the interval, does not stretch it.
    assert isinstance(c.lookup("/new.m4s", 3.2), Fetch)
    assert isinstance(c.lookup("/new.m4s", 3.2), Wait)
    assert c.finish("/new.m4s", None, 3.3).response is None
    assert c.health.backoff_s == 2.0

    assert not probes(c.lookup("/a.m3u8", 5.0))
    probe = c.lookup("/a.m3u8", 5.2)
    assert isinstance(probe, Stale)
    assert probe.revalidate
    c.finish("/a.m3u8", resp(b"v2"), 5.5)  # the upstream is back
    assert not c.health.failing
    hit = c.lookup("/a.m3u8", 5.6)
    assert isinstance(hit, Hit)
    assert hit.entry.response.body == b"v2"
    assert isinstance(c.lookup("/b.m3u8", 5.6), Fetch)  # normal refreshing again


def test_failing_upstream_and_nothing_usable_still_goes_upstream() -> None:
    """A copy past its stale-if-error allowance is not served: the request goes upstream."""
    c = Cache(default_stale_if_error=5, health=UpstreamHealth())
    stored(c, "/a.m3u8", "max-age=1", 0.0)
    c.lookup("/x", 3.0)
    c.finish("/x", None, 3.0)
    assert c.health.failing
    assert isinstance(c.lookup("/a.m3u8", 3.5), Stale)
    assert isinstance(c.lookup("/a.m3u8", 6.0), Fetch)
    assert isinstance(c.lookup("/a.m3u8", 6.0), Wait)


def test_5xx_marks_failing_and_404_counts_as_an_answer() -> None:
    """A 5xx from the upstream is a failure; any answer below 500 (a 404 too) is a success."""
    c = Cache(default_stale_if_error=30)
    c.lookup("/a", 0.0)
    c.finish("/a", resp(status=503, cc="no-store"), 0.0)
    assert c.health.failing
    c.lookup("/b", 0.1)
    c.finish("/b", resp(status=404), 0.1)
    assert not c.health.failing


def test_stale_while_revalidate_under_a_failing_upstream_refreshes_only_as_a_probe() -> None:
    """Within stale-while-revalidate, a failing upstream gets no refresh per key, only the probe."""
    c = Cache(health=UpstreamHealth(base_s=1.0))
    stored(c, "/a.m3u8", "max-age=1, stale-while-revalidate=10", 0.0)
    stored(c, "/b.m3u8", "max-age=1, stale-while-revalidate=10", 0.0)
    c.lookup("/x", 1.0)
    c.finish("/x", None, 1.0)
    revalidations = [c.lookup(k, t) for t in (1.5, 2.0, 2.5) for k in ("/a.m3u8", "/b.m3u8")]
    assert all(isinstance(s, Stale) and s.upstream_failing for s in revalidations)
    assert sum(s.revalidate for s in revalidations if isinstance(s, Stale)) == 1
