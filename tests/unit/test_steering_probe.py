"""Edge probes as a health signal: one lost probe is noise, two in the window are a failure."""

from __future__ import annotations

from mainevent.control.steering import ANY, CdnSpec, HealthReport, LinkState, SteeringPolicy
from mainevent.control.steering.probe import ProbeBook, ProbeResult

OK = ProbeResult(True, 20.0)
LOST = ProbeResult(False, 2000.0)


def degraded_after(results: list[ProbeResult]) -> bool:
    book = ProbeBook(window=10)
    policy = SteeringPolicy([CdnSpec("cdn-a"), CdnSpec("cdn-b")])
    for i, r in enumerate(results):
        book.record("eu", "cdn-b", r)
        policy.update_health(book.report(), 1000.0 + i)
    return policy.link_state("eu", ANY, "cdn-b")[0] is LinkState.DEGRADED


def test_one_lost_probe_is_not_a_failure_two_are() -> None:
    """Availability and TTFB p95 both have to go bad (quorum 2): one timeout is not enough."""
    assert not degraded_after([OK] * 10 + [LOST] + [OK] * 5)
    assert degraded_after([OK] * 10 + [LOST, LOST])


def test_the_signal_names_its_sample_and_leaves_error_rate_to_telemetry() -> None:
    """Probes fill availability and TTFB p95 (failures count as the timeout), not error rate."""
    book = ProbeBook(window=4)
    for r in (OK, OK, OK, LOST, OK):
        book.record("eu", "cdn-a", r)
    s = book.signal("eu", "cdn-a")
    assert (s.samples, s.availability, s.ttfb_p95_ms, s.error_rate) == (4, 0.75, 2000.0, None)
    report = book.report()
    assert isinstance(report, HealthReport)
    assert set(report.signals) == {("eu", ANY, "cdn-a")}
