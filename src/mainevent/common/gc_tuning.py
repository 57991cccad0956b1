"""Garbage-collector settings of the long-running servers."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]


def tune_gc() -> None:
    """Move everything allocated so far (imports, settings, the app) out of the collector's reach
    and make full collections rarer. Servers hold many long-lived small objects (held LL-HLS
    requests, playback and steering sessions): left to the default thresholds, each full
    collection re-scans them all, a 50-680 ms pause on a busy core (MEASUREMENTS.md). Freed by
    reference counting as before; only cycles wait longer. Call once, after startup."""
    gc.collect()
    gc.freeze()
    # Young collections stay frequent (cheap); older generations are scanned 10× less often.
    gen0, _gen1, _gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 10_000), 50, 100)
