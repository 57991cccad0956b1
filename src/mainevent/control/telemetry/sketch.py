"""A mergeable quantile sketch: Datadog's DDSketch (relative-accuracy guarantee), made storable.

Values are non-negative durations in ms. Quantiles are within ``RELATIVE_ACCURACY`` of the true
value of the merged data, however the data was split across windows or collectors.

``add`` only appends to a buffer (it runs once per report on the ingest hot path); the buffer
is folded into the DDSketch bins the first time the sketch is read, merged or stored, with one
vectorised log/bincount over the whole buffer when it is long (the bin of each value is the
same ``ceil(log_gamma(v))`` the DDSketch mapping computes value by value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ddsketch import DDSketch

__all__ = ["RELATIVE_ACCURACY", "Sketch"]

RELATIVE_ACCURACY = 0.01
"""Quantiles come back within ±1 % of the exact value (DDSketch's alpha)."""

_VECTOR_FROM = 32
"""Buffers at least this long are binned with numpy; shorter ones value by value."""


class Sketch:
    """Weighted values in, quantiles out; ``merge`` is exact up to the sketch's bin resolution."""

    __slots__ = ("_dd", "_values", "_weights")

    def __init__(self) -> None:
        self._dd = DDSketch(RELATIVE_ACCURACY)
        self._values: list[float] = []
        self._weights: list[float] = []

    @property
    def count(self) -> float:
        """Total weight added."""
        if self._values:
            self._fold()
        return float(self._dd.count)

    def add(self, value: float, weight: float = 1.0) -> None:
        """Record ``value`` (clamped at 0) with ``weight`` (1/sample rate for sampled inputs)."""
        if weight <= 0.0:
            raise ValueError(f"weight must be positive, got {weight!r}")
        self._values.append(value)
        self._weights.append(weight)

    def settle(self) -> None:
        """Bin what ``add`` buffered now (reads do it anyway; see the module docstring)."""
        if self._values:
            self._fold()

    def _fold(self) -> None:
        values, weights = self._values, self._weights
        self._values, self._weights = [], []
        dd = self._dd
        if len(values) < _VECTOR_FROM:
            add = dd.add
            for v, w in zip(values, weights, strict=True):
                add(max(0.0, float(v)), w)
            return
        arr = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
        wts = np.asarray(weights, dtype=np.float64)
        mapping = dd._mapping
        positive = arr > mapping.min_possible
        vp = arr[positive]
        if vp.size:
            # LogarithmicMapping.key: ceil(log2(v) * multiplier) + offset.
            keys = np.ceil(np.log2(vp) * mapping._multiplier) + mapping._offset
            uniq, inverse = np.unique(keys.astype(np.int64), return_inverse=True)
            per_key = np.bincount(inverse, weights=wts[positive])
            store_add = dd._store.add
            for key, c in zip(uniq.tolist(), per_key.tolist(), strict=True):
                store_add(key, c)
        dd._zero_count += float(wts[~positive].sum())
        dd._count += float(wts.sum())
        dd._sum += float((arr * wts).sum())
        lo, hi = float(arr.min()), float(arr.max())
        if lo < dd._min:
            dd._min = lo
        if hi > dd._max:
            dd._max = hi

    def merge(self, other: Sketch) -> None:
        """Add every value of ``other`` into this sketch."""
        if other._values:
            if len(other._values) < _VECTOR_FROM:
                # Cheaper to take the buffered values over than to bin them twice.
                self._values.extend(other._values)
                self._weights.extend(other._weights)
            else:
                other._fold()
        if other._dd.count:
            if self._values:
                self._fold()
            self._dd.merge(other._dd)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0..1), or None when empty."""
        if self._values:
            self._fold()
        if not self._dd.count:
            return None
        v = self._dd.get_quantile_value(q)
        return None if v is None else float(v)

    def to_json(self) -> dict[str, Any]:
        """Bins and totals; the store's dense bins are written sparsely."""
        if self._values:
            self._fold()
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
