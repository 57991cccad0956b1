"""A mergeable quantile sketch: Datadog's DDSketch (relative-accuracy guarantee), made storable.

Values are non-negative durations in ms. Quantiles are within ``RELATIVE_ACCURACY`` of the true
value of the merged data, however the data was split across windows or collectors.
"""

from __future__ import annotations

from typing import Any

from ddsketch import DDSketch

__all__ = ["RELATIVE_ACCURACY", "Sketch"]

RELATIVE_ACCURACY = 0.01
"""Quantiles come back within ±1 % of the exact value (DDSketch's alpha)."""


class Sketch:
    """Weighted values in, quantiles out; ``merge`` is exact up to the sketch's bin resolution."""

    __slots__ = ("_dd",)

    def __init__(self) -> None:
        self._dd = DDSketch(RELATIVE_ACCURACY)

    @property
    def count(self) -> float:
        """Total weight added."""
        return float(self._dd.count)

    def add(self, value: float, weight: float = 1.0) -> None:
        """Record ``value`` (clamped at 0) with ``weight`` (1/sample rate for sampled inputs)."""
        self._dd.add(max(0.0, float(value)), weight)

    def merge(self, other: Sketch) -> None:
        """Add every value of ``other`` into this sketch."""
        if other._dd.count:
            self._dd.merge(other._dd)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0..1), or None when empty."""
        if not self._dd.count:
            return None
        v = self._dd.get_quantile_value(q)
        return None if v is None else float(v)

    def to_json(self) -> dict[str, Any]:
        """Bins and totals; the store's dense bins are written sparsely."""
        dd = self._dd
        store = dd._store
        bins = {
            str(store.offset + i): c
            for i, c in enumerate(store.bins)
            if c  # offset = first key
        }
        return {
            "n": dd._count,
            "s": dd._sum,
            "lo": dd._min,
            "hi": dd._max,
            "z": dd._zero_count,
            "b": bins,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sketch:
        sk = cls()
        dd = sk._dd
        for key, c in data["b"].items():
            dd._store.add(int(key), float(c))
        dd._count = float(data["n"])
        dd._sum = float(data["s"])
        dd._min = float(data["lo"])
        dd._max = float(data["hi"])
        dd._zero_count = float(data["z"])
        return sk
