"""Sans-IO playback rules: event status, region, blackout, age, subscription/purchase, streams.

Every rule is a pure function of the facts and ``now`` (epoch seconds) and answers with ``None``
(passes) or a :class:`Denial` whose value is the machine-readable reason returned to players.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from mainevent.control.lifecycle import EventStatus

__all__ = [
    "Blackout",
    "Denial",
    "EventFacts",
    "Policy",
    "RegionTable",
    "ViewerFacts",
    "age_on",
    "check_entitlement",
    "check_event_window",
    "check_region",
]


class Denial(StrEnum):
    """Reasons a playback request is refused (HTTP status in :data:`DENIAL_STATUS`)."""

    MISSING_CREDENTIALS = "missing_credentials"
    INVALID_CREDENTIALS = "invalid_credentials"
    CREDENTIALS_EXPIRED = "credentials_expired"
    EVENT_NOT_FOUND = "event_not_found"
    EVENT_NOT_PUBLISHED = "event_not_published"
    WAITING_ROOM_CLOSED = "waiting_room_closed"
    EVENT_ENDED = "event_ended"
    REGION_UNKNOWN = "region_unknown"
    REGION_NOT_ALLOWED = "region_not_allowed"
    BLACKOUT = "blackout"
    ACCOUNT_NOT_FOUND = "account_not_found"
    AGE_UNKNOWN = "age_unknown"
    AGE_RESTRICTED = "age_restricted"
    SUBSCRIPTION_REQUIRED = "subscription_required"
    SUBSCRIPTION_EXPIRED = "subscription_expired"
    PURCHASE_REQUIRED = "purchase_required"
    CONCURRENT_STREAM_LIMIT = "concurrent_stream_limit"
    SESSION_NOT_FOUND = "session_not_found"
    SESSION_MISMATCH = "session_mismatch"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    ENTITLEMENT_UNAVAILABLE = "entitlement_unavailable"
    SESSION_STORE_UNAVAILABLE = "session_store_unavailable"


DENIAL_STATUS: dict[Denial, int] = {
    Denial.MISSING_CREDENTIALS: 401,
    Denial.INVALID_CREDENTIALS: 401,
    Denial.CREDENTIALS_EXPIRED: 401,
    Denial.EVENT_NOT_FOUND: 404,
    Denial.SESSION_NOT_FOUND: 404,
    Denial.RATE_LIMITED: 429,
    Denial.OVERLOADED: 503,
    Denial.ENTITLEMENT_UNAVAILABLE: 503,
    Denial.SESSION_STORE_UNAVAILABLE: 503,
}
"""HTTP status per denial; every other denial is 403."""


@dataclass(frozen=True, slots=True)
class Blackout:
    """Regions where the event may not be shown, optionally only between two epoch times."""

    regions: frozenset[str]
    starts_at: float | None = None
    ends_at: float | None = None

    def active(self, now: float) -> bool:
        """Whether the blackout applies at ``now``."""
        return (self.starts_at is None or now >= self.starts_at) and (
            self.ends_at is None or now < self.ends_at
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may watch: subscription tiers and/or a pay-per-view product, a minimum age, a stream limit."""

    subscription_tiers: frozenset[str] = frozenset()
    ppv_product: str | None = None
    ppv_price_cents: int | None = None
    currency: str = "USD"
    min_age: int | None = None
    max_streams: int = 2


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the playback rules need to know about an event (a snapshot, cached by the adapter)."""

    id: str
    status: EventStatus
    starts_at: float | None
    ends_at: float | None
    allowed_regions: frozenset[str] = frozenset()
    blackouts: tuple[Blackout, ...] = ()
    policy: Policy = field(default_factory=Policy)
    cdns: tuple[str, ...] = ("origin",)
    latency_mode: str = "low"
    dvr_window_s: int = 0
    segment_duration_ms: int = 2000


@dataclass(frozen=True, slots=True)
class ViewerFacts:
    """What the entitlement store knows about an account."""

    account_id: str
    country: str | None = None
    date_of_birth: date | None = None
    plan: str | None = None
    plan_valid_until: float | None = None
    purchased_products: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class WindowDecision:
    """The event may be played: ``preauth`` when the viewer is in the waiting room before the start."""

    preauth: bool
    valid_from: float


def check_event_window(
    event: EventFacts, now: float, preauth_window_s: float
) -> WindowDecision | Denial:
    """Whether the event's status and schedule allow a playback grant at ``now``."""
    status = event.status
    if status in (EventStatus.DRAFT, EventStatus.ARCHIVED):
        return Denial.EVENT_NOT_PUBLISHED if status is EventStatus.DRAFT else Denial.EVENT_ENDED
    if status is EventStatus.ENDED:
        return Denial.EVENT_ENDED
    if status in (EventStatus.LIVE, EventStatus.PAUSED):
        return WindowDecision(False, now)
    # scheduled / rehearsal: the waiting room. Viewers are pre-authorised with a token valid from
    # the start, so the bell itself needs no entitlement lookups.
    start = event.starts_at
    if start is None or now < start - preauth_window_s:
        return Denial.WAITING_ROOM_CLOSED
    return WindowDecision(now < start, start if now < start else now)


class RegionTable:
    """Client address → region by longest-prefix match over a CIDR table."""

    #: Addresses whose answer is remembered (parsing one costs ~5 us; a storm repeats them).
    memo_size = 65_536

    def __init__(self, rows: Iterable[tuple[str, str]]) -> None:
        nets = [(ipaddress.ip_network(cidr, strict=False), region) for cidr, region in rows]
        nets.sort(key=lambda r: r[0].prefixlen, reverse=True)
        self._rows: Sequence[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = nets
        self._memo: dict[str, str | None] = {}

    def lookup(self, address: str | None) -> str | None:
        """The region of ``address``, or None when it is unknown or not an IP address."""
        if not address:
            return None
        memo = self._memo
        if address in memo:
            return memo[address]
        region = self._lookup(address)
        if len(memo) >= self.memo_size:
            memo.clear()  # a table is immutable, so forgetting only costs re-parsing
        memo[address] = region
        return region

    def _lookup(self, address: str) -> str | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        for net, region in self._rows:
            if ip.version == net.version and ip in net:
                return region
        return None

    def contains(self, address: str, cidrs: Iterable[str]) -> bool:
        """Whether ``address`` is inside any of ``cidrs`` (used for trusted edges)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(c, strict=False) for c in cidrs)


def check_region(event: EventFacts, region: str | None, now: float) -> Denial | None:
    """Allowed regions (empty = everywhere) and active blackouts."""
    if event.allowed_regions:
        if region is None:
            return Denial.REGION_UNKNOWN
        if region not in event.allowed_regions:
            return Denial.REGION_NOT_ALLOWED
    for blackout in event.blackouts:
        if blackout.active(now) and region is not None and region in blackout.regions:
            return Denial.BLACKOUT
    return None


def age_on(born: date, today: date) -> int:
    """Completed years between ``born`` and ``today``."""
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def check_entitlement(
    policy: Policy, viewer: ViewerFacts | None, now: float, today: date
) -> Denial | None:
    """Account, age and subscription/purchase rules (the stable part worth caching)."""
    if viewer is None:
        return Denial.ACCOUNT_NOT_FOUND
    if policy.min_age is not None:
        if viewer.date_of_birth is None:
            return Denial.AGE_UNKNOWN
        if age_on(viewer.date_of_birth, today) < policy.min_age:
            return Denial.AGE_RESTRICTED
    if not policy.subscription_tiers and policy.ppv_product is None:
        return None  # free event for every signed-in viewer
    if policy.ppv_product is not None and policy.ppv_product in viewer.purchased_products:
        return None
    if viewer.plan is not None and viewer.plan in policy.subscription_tiers:
        if viewer.plan_valid_until is None or now < viewer.plan_valid_until:
            return None
        if policy.ppv_product is None:
            return Denial.SUBSCRIPTION_EXPIRED
    if policy.ppv_product is not None:
        return Denial.PURCHASE_REQUIRED
    return Denial.SUBSCRIPTION_REQUIRED
