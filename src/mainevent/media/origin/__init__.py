"""The origin: live event state (`LiveEvent`), LL-HLS request rules, and the ASGI app."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]


def tune_gc() -> None:
    """Move everything allocated so far (imports, settings) out of the collector's reach and
    make full collections rarer: with thousands of held LL-HLS requests a full collection
    paused an origin worker for 150-680 ms (MEASUREMENTS.md). Call once, after startup."""
    gc.collect()
    gc.freeze()
    # Young collections stay frequent (cheap); older generations are scanned 10× less often.
    gen0, _gen1, _gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 10_000), 50, 100)
