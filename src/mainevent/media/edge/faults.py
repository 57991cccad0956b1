"""Fault injection for drills (sans-IO): what an edge does wrong to one request, and why.

A `Fault` is set through the authenticated admin endpoint or `mainevent edge fault`; it applies
to every request, or only to requests whose `X-Client-Region` header names `region`. The random
draw for `error_rate` is passed in, so tests decide it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Fault", "FaultDecision", "FaultError", "decide"]

NO_FAULT_REASON = ""


class FaultError(ValueError):
    """A fault specification is invalid (the message says which field and why)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One drill: any combination of errors, latency, a throughput cap, blackhole, serve-stale."""

    error_rate: float = 0.0
    """Fraction of requests (0..1) answered with `error_status` instead of the object."""
    error_status: int = 503
    latency_ms: int = 0
    """Added before every response."""
    throughput_kbps: int = 0
    """Cap on each response's body rate (0 = no cap)."""
    blackhole: bool = False
    """Accept requests and never answer them."""
    serve_stale: bool = False
    """Never contact upstream; serve whatever is cached, however old (504 when nothing is)."""
    region: str | None = None
    """Only requests with `X-Client-Region: <region>` are affected (None = all)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise FaultError(f"error_rate {self.error_rate} must be between 0 and 1")
        if not 500 <= self.error_status <= 599 and self.error_status not in (403, 404, 429):
            raise FaultError(f"error_status {self.error_status} must be 5xx, 403, 404 or 429")
        if self.latency_ms < 0 or self.latency_ms > 600_000:
            raise FaultError(f"latency_ms {self.latency_ms} must be 0..600000")
        if self.throughput_kbps < 0:
            raise FaultError(f"throughput_kbps {self.throughput_kbps} must not be negative")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build from the admin endpoint's JSON body; unknown fields are an error."""
        known = set(cls.__dataclass_fields__)
        extra = set(data) - known
        if extra:
            raise FaultError(f"unknown fault fields {sorted(extra)}; known: {sorted(known)}")
        try:
            return cls(
                error_rate=float(data.get("error_rate", 0.0)),
                error_status=int(data.get("error_status", 503)),
                latency_ms=int(data.get("latency_ms", 0)),
                throughput_kbps=int(data.get("throughput_kbps", 0)),
                blackhole=bool(data.get("blackhole", False)),
                serve_stale=bool(data.get("serve_stale", False)),
                region=None if data.get("region") in (None, "") else str(data["region"]),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, FaultError):
                raise
            raise FaultError(f"bad fault value: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def applies(self, region: str | None) -> bool:
        return self.region is None or self.region == region


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to one request."""

    error_status: int = 0
    delay_s: float = 0.0
    rate_bytes_s: float = 0.0
    blackhole: bool = False
    serve_stale: bool = False


PASS = FaultDecision()


def decide(fault: Fault | None, region: str | None, draw: float) -> FaultDecision:
    """The decision for a request from `region`; `draw` is uniform in [0, 1)."""
    if fault is None or not fault.applies(region):
        return PASS
    return FaultDecision(
        error_status=fault.error_status if draw < fault.error_rate else 0,
        delay_s=fault.latency_ms / 1000.0,
        rate_bytes_s=fault.throughput_kbps * 125.0,
        blackhole=fault.blackhole,
        serve_stale=fault.serve_stale,
    )
