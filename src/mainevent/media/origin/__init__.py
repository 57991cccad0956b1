"""The origin: live event state (`LiveEvent`), LL-HLS request rules, and the ASGI app."""

from __future__ import annotations

from mainevent.common.gc_tuning import tune_gc

__all__ = ["tune_gc"]
