"""Adaptive bitrate decisions (sans-IO): a throughput estimate and the rendition it affords.

Modelled on hls.js 1.x: the estimate is the lower of a fast and a slow exponentially weighted
moving average of segment download throughput (half-lives of 3 s and 9 s of download time, a
500 kbit/s default until the first sample), and a rendition is chosen when its bitrate fits the
estimate with a safety factor — 0.95 to stay or go down, 0.7 to go up. The gap between the two
factors is the hysteresis that keeps a constant throughput from flapping between two rungs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AbrConfig:
    """Tuning of the throughput estimate and of the rendition choice."""

    fast_half_life_s: float = 3.0
    """Half-life of the fast EWMA, in seconds of download time (hls.js `abrEwmaFastLive`)."""
    slow_half_life_s: float = 9.0
    """Half-life of the slow EWMA (hls.js `abrEwmaSlowLive`)."""
    default_estimate_bps: float = 500_000.0
    """Estimate used before any segment was measured (hls.js `abrEwmaDefaultEstimate`)."""
    min_sample_s: float = 0.05
    """Downloads shorter than this count as this long: a cached 50 ms hit is not 10 Gbit/s."""
    down_factor: float = 0.95
    """A rendition at or below the current one fits if bitrate <= estimate x this."""
    up_factor: float = 0.7
    """A rendition above the current one fits if bitrate <= estimate x this."""
    high_buffer_segments: float = 2.5
    """With at least this many segments buffered the current rendition may be kept after a dip..."""
    safe_buffer_segments: float = 1.0
    """...as long as fetching its next segment would leave at least this many buffered."""

    def __post_init__(self) -> None:
        if self.fast_half_life_s <= 0 or self.slow_half_life_s <= 0:
            raise ValueError("EWMA half-lives must be positive")
        if not 0 < self.up_factor <= self.down_factor <= 1:
            raise ValueError("need 0 < up_factor <= down_factor <= 1")
        if self.default_estimate_bps <= 0 or self.min_sample_s <= 0:
            raise ValueError("default estimate and minimum sample duration must be positive")


class Ewma:
    """Exponentially weighted moving average whose weights are durations (hls.js `EWMA`)."""

    __slots__ = ("_alpha", "_estimate", "_total_weight")

    def __init__(self, half_life_s: float) -> None:
        self._alpha = math.exp(math.log(0.5) / half_life_s)
        self._estimate = 0.0
        self._total_weight = 0.0

    def sample(self, weight: float, value: float) -> None:
        """Add `value` observed over `weight` seconds."""
        adj_alpha = self._alpha**weight
        self._estimate = value * (1 - adj_alpha) + adj_alpha * self._estimate
        self._total_weight += weight

    @property
    def total_weight(self) -> float:
        return self._total_weight

    def estimate(self) -> float:
        """The average, corrected for its zero start (as hls.js does)."""
        zero_factor = 1 - self._alpha**self._total_weight
        return self._estimate / zero_factor if zero_factor > 0 else 0.0


class ThroughputEstimator:
    """Throughput estimate (bits/s) from segment downloads: min(fast EWMA, slow EWMA)."""

    __slots__ = ("_config", "_fast", "_slow")

    def __init__(self, config: AbrConfig | None = None) -> None:
        self._config = config or AbrConfig()
        self._fast = Ewma(self._config.fast_half_life_s)
        self._slow = Ewma(self._config.slow_half_life_s)

    def sample(self, duration_s: float, nbytes: int) -> None:
        """Record one download of `nbytes` that took `duration_s` (request to last byte)."""
        if nbytes <= 0:
            return
        duration_s = max(duration_s, self._config.min_sample_s)
        bps = nbytes * 8 / duration_s
        self._fast.sample(duration_s, bps)
        self._slow.sample(duration_s, bps)

    @property
    def has_samples(self) -> bool:
        return self._fast.total_weight > 0

    def estimate_bps(self) -> float:
        if not self.has_samples:
            return self._config.default_estimate_bps
        return min(self._fast.estimate(), self._slow.estimate())


def choose_level(
    bitrates: Sequence[int],
    current: int | None,
    estimate_bps: float,
    buffer_s: float,
    segment_s: float,
    config: AbrConfig | None = None,
) -> int:
    """Index of the rendition to fetch next.

    `bitrates` are the renditions' advertised bandwidths in ascending order, `current` the
    index being fetched (None before the first choice), `buffer_s` the media buffered ahead of
    the playhead and `segment_s` the segment duration. The highest rendition that fits the
    estimate wins (lowest if none fits); the current one is kept after a throughput dip while
    the buffer is high enough to absorb its next segment.
    """
    cfg = config or AbrConfig()
    if not bitrates:
        raise ValueError("no renditions to choose from")
    if any(lo > hi for lo, hi in itertools.pairwise(bitrates)):
        raise ValueError("bitrates must be in ascending order")
    if current is not None and not 0 <= current < len(bitrates):
        raise ValueError(f"current level {current} out of range")
    current_bps = bitrates[current] if current is not None else 0
    for level in range(len(bitrates) - 1, -1, -1):
        factor = cfg.up_factor if bitrates[level] > current_bps else cfg.down_factor
        if bitrates[level] <= estimate_bps * factor:
            if (
                current is not None
                and level < current
                and _can_keep(bitrates[current], estimate_bps, buffer_s, segment_s, cfg)
            ):
                return current
            return level
    if current is not None and _can_keep(bitrates[current], estimate_bps, buffer_s, segment_s, cfg):
        return current
    return 0


def _can_keep(
    bitrate: int, estimate_bps: float, buffer_s: float, segment_s: float, cfg: AbrConfig
) -> bool:
    if segment_s <= 0 or estimate_bps <= 0:
        return False
    if buffer_s < cfg.high_buffer_segments * segment_s:
        return False
    fetch_s = bitrate * segment_s / estimate_bps
    return fetch_s <= buffer_s - cfg.safe_buffer_segments * segment_s


class AbrController:
    """Keeps the estimate and the current rendition; `decide()` before each segment request."""

    __slots__ = ("_bitrates", "_config", "_current", "estimator")

    def __init__(self, bitrates: Sequence[int], config: AbrConfig | None = None) -> None:
        self._config = config or AbrConfig()
        self._bitrates = tuple(bitrates)
        choose_level(self._bitrates, None, 0.0, 0.0, 0.0, self._config)  # validates
        self._current: int | None = None
        self.estimator = ThroughputEstimator(self._config)

    @property
    def current(self) -> int | None:
        return self._current

    def sample(self, duration_s: float, nbytes: int) -> None:
        """Record one segment download."""
        self.estimator.sample(duration_s, nbytes)

    def decide(self, buffer_s: float, segment_s: float) -> int:
        """Choose (and remember) the rendition for the next segment."""
        self._current = choose_level(
            self._bitrates,
            self._current,
            self.estimator.estimate_bps(),
            buffer_s,
            segment_s,
            self._config,
        )
        return self._current
