"""Sans-IO upstream health of one shield or edge: after a failure, back off instead of retrying.

A failed upstream fetch (refused, reset, timed out, cut off, or a 5xx) marks the upstream
failing for a backoff interval — `base_s`, doubled by each interval that ends in another
failure, at most `max_s` — and the first success marks it healthy again (nginx's
`max_fails=1 fail_timeout`, Varnish grace with a sick backend, with a growing interval). While it
is failing the cache answers requests that have a stale copy from that copy without asking the
upstream, and lets one *probe* go upstream per interval to notice the recovery. No clock here:
time comes in as `now` (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HealthStats", "UpstreamHealth"]


@dataclass(frozen=True, slots=True)
class HealthStats:
    """A snapshot of the upstream's health for `/metrics` and `/healthz`."""

    healthy: bool
    backoff_s: float
    """Length of the current backoff interval (0 while healthy)."""
    failing_since: float | None
    """When the upstream was marked failing (monotonic seconds), None while healthy."""
    marked_failing: int
    """Times the upstream went from healthy to failing."""
    failures: int
    """Failed upstream fetches, all told."""
    probes: int
    """Probes sent upstream while it was marked failing."""


@dataclass(slots=True)
class UpstreamHealth:
    """Healthy, or failing until the current backoff interval ends (then one probe may go)."""

    base_s: float = 1.0
    max_s: float = 4.0
    failing: bool = False
    """A plain attribute: the cache reads it on every miss."""
    backoff_s: float = 0.0
    failing_since: float = 0.0
    marked_failing: int = 0
    failures: int = 0
    probes: int = 0
    _interval_end: float = 0.0
    _next_probe: float = 0.0

    def __post_init__(self) -> None:
        if not self.base_s > 0:
            raise ValueError(f"upstream backoff {self.base_s} s must be positive")
        if not self.max_s >= self.base_s:
            raise ValueError(
                f"maximum upstream backoff {self.max_s} s must be at least the first "
                f"backoff ({self.base_s} s)"
            )

    def failed(self, started: float, now: float) -> None:
        """A fetch that went upstream at `started` failed at `now`.

        Only a fetch sent once the current interval was over (a probe, or any fetch after
        that) makes the interval grow: fetches already under way when the upstream broke, or
        sent during the interval by requests with nothing to fall back on, fail for the same
        reason and say nothing new.
        """
        self.failures += 1
        if not self.failing:
            self.failing = True
            self.failing_since = now
            self.marked_failing += 1
            self._begin(self.base_s, now)
        elif started >= self._interval_end:
            self._begin(min(self.max_s, self.backoff_s * 2), now)

    def succeeded(self) -> None:
        """An upstream fetch got an answer (any status below 500): the upstream is back."""
        if self.failing:
            self.failing = False
            self.backoff_s = 0.0

    def probe(self, now: float) -> bool:
        """While failing: may one request go upstream now? True claims this interval's probe.

        The next probe may go one interval later even if this one never comes back (a hanging
        upstream), so a recovery is noticed within about one interval either way.
        """
        if not self.failing or now < self._next_probe:
            return False
        self._next_probe = now + self.backoff_s
        self.probes += 1
        return True

    def stats(self) -> HealthStats:
        return HealthStats(
            not self.failing,
            self.backoff_s,
            self.failing_since if self.failing else None,
            self.marked_failing,
            self.failures,
            self.probes,
        )

    def _begin(self, backoff_s: float, now: float) -> None:
        self.backoff_s = backoff_s
        self._interval_end = self._next_probe = now + backoff_s
