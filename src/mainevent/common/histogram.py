"""Sans-IO latency histogram with fixed log-spaced buckets (Prometheus-compatible, mergeable)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["BUCKETS", "LatencyHistogram"]

#: Upper bounds in seconds: 0.5 ms … ~16 s, ×1.25 per step (≤ 12 % error on a percentile).
BUCKETS: tuple[float, ...] = tuple(0.0005 * 1.25**i for i in range(47))


@dataclass(slots=True)
class LatencyHistogram:
    """Counts of observations per bucket; the last slot counts values beyond the last bound."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        """Record one latency."""
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += 1
        self.sum += seconds

    def percentile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-th percentile (0 < q ≤ 100); NaN when empty."""
        if self.total == 0:
            return float("nan")
        rank = q / 100 * self.total
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return BUCKETS[i] if i < len(BUCKETS) else float("inf")
        return float("inf")

    def minus(self, earlier: LatencyHistogram) -> LatencyHistogram:
        """Observations made since ``earlier`` (a copy taken before)."""
        return LatencyHistogram(
            [a - b for a, b in zip(self.counts, earlier.counts, strict=True)],
            self.total - earlier.total,
            self.sum - earlier.sum,
        )

    def copy(self) -> LatencyHistogram:
        """A snapshot."""
        return LatencyHistogram(list(self.counts), self.total, self.sum)
