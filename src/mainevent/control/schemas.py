"""Request and response bodies of the control-plane API (pydantic models → OpenAPI)."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from mainevent.config import DEMO_LADDER, Rung
from mainevent.control.lifecycle import EventStatus

_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_REGION = r"^[A-Za-z0-9_-]{1,32}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlackoutSpec(_Model):
    """Regions where the event is blacked out, optionally only in a time window."""

    regions: list[str] = Field(
        min_length=1, description="Region codes (see the CIDR → region table)."
    )
    starts_at: AwareDatetime | None = Field(
        default=None, description="Blackout begins (None: always)."
    )
    ends_at: AwareDatetime | None = Field(default=None, description="Blackout ends (None: never).")


class EntitlementPolicy(_Model):
    """Who may watch."""

    subscription_tiers: list[str] = Field(
        default_factory=list, description="Plans that include the event."
    )
    ppv_product: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Pay-per-view product id."
    )
    ppv_price_cents: int | None = Field(
        default=None, ge=0, description="Price of the pay-per-view product."
    )
    currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency of the price."
    )
    min_age: int | None = Field(
        default=None, ge=0, le=99, description="Minimum viewer age in years."
    )
    max_streams: int = Field(default=2, ge=1, le=50, description="Concurrent streams per account.")

    @model_validator(mode="after")
    def _price(self) -> EntitlementPolicy:
        if self.ppv_product is not None and self.ppv_price_cents is None:
            raise ValueError("ppv_price_cents is required with ppv_product")
        return self


def _stream_key() -> str:
    return secrets.token_urlsafe(18)


class IngestCredentials(_Model):
    """How the venue pushes its feeds; shown in full only to operators and admins."""

    protocol: Literal["srt", "rtmp"] = "srt"
    stream_key: str = Field(default_factory=_stream_key, pattern=r"^[A-Za-z0-9._-]{8,128}$")
    passphrase: str | None = Field(
        default=None, min_length=10, max_length=79, description="SRT passphrase."
    )


class EventSpecFields(_Model):
    """Operational configuration of an event (everything except id, status and schedule)."""

    allowed_regions: list[str] = Field(
        default_factory=list, description="Regions that may watch; empty = everywhere."
    )
    blackouts: list[BlackoutSpec] = Field(default_factory=list)
    policy: EntitlementPolicy = Field(default_factory=EntitlementPolicy)
    ladder: list[Rung] = Field(default_factory=lambda: list(DEMO_LADDER), min_length=1)
    segment_duration_ms: int = Field(default=2000, ge=1000, le=10_000)
    latency_mode: Literal["standard", "low"] = Field(
        default="low", description="`low` = LL-HLS with parts."
    )
    ingest: IngestCredentials = Field(default_factory=IngestCredentials)
    cdns: list[str] = Field(
        default_factory=lambda: ["origin"],
        min_length=1,
        description="CDNs enabled, preferred first.",
    )
    dvr_window_s: int = Field(
        default=0, ge=0, le=86_400, description="Seconds viewers may seek back (0 = live only)."
    )


class EventCreate(EventSpecFields):
    """Body of POST /v1/events."""

    id: str = Field(pattern=_ID, description="Event id, the `<event>` in `/live/<event>/...`.")
    title: str = Field(min_length=1, max_length=200)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _schedule(self) -> EventCreate:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class EventUpdate(_Model):
    """Body of PATCH /v1/events/{id}: only the fields given change."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    allowed_regions: list[str] | None = None
    blackouts: list[BlackoutSpec] | None = None
    policy: EntitlementPolicy | None = None
    ladder: list[Rung] | None = Field(default=None, min_length=1)
    segment_duration_ms: int | None = Field(default=None, ge=1000, le=10_000)
    latency_mode: Literal["standard", "low"] | None = None
    ingest: IngestCredentials | None = None
    cdns: list[str] | None = Field(default=None, min_length=1)
    dvr_window_s: int | None = Field(default=None, ge=0, le=86_400)


class EventOut(EventSpecFields):
    """An event as the API returns it."""

    id: str
    title: str
    status: EventStatus
    starts_at: datetime | None
    ends_at: datetime | None
    version: int
    allowed_transitions: list[EventStatus]
    created_at: datetime
    updated_at: datetime


class EventList(BaseModel):
    """GET /v1/events."""

    events: list[EventOut]


class TransitionRequest(_Model):
    """Body of POST /v1/events/{id}/transitions."""

    to: EventStatus


class AuditOut(BaseModel):
    """One audit-log entry."""

    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    idempotency_key: str | None


class AuditList(BaseModel):
    """GET /v1/audit."""

    entries: list[AuditOut]


class AccountIn(_Model):
    """Body of PUT /v1/accounts/{id}."""

    country: str | None = Field(default=None, pattern=_REGION)
    date_of_birth: date | None = None
    plan: str | None = Field(default=None, max_length=64)
    plan_valid_until: AwareDatetime | None = None


class AccountOut(AccountIn):
    """An account as the API returns it."""

    id: str
    version: int
    updated_at: datetime


class PurchaseIn(_Model):
    """Body of POST /v1/purchases (viewer JWT; Idempotency-Key required)."""

    event_id: str = Field(pattern=_ID)


class PurchaseOut(BaseModel):
    """A purchase and its payment outcome."""

    id: str
    account_id: str
    event_id: str
    product_id: str
    amount_cents: int
    currency: str
    status: Literal["pending", "paid", "failed", "error"]
    failure: str | None


class DeviceInfo(_Model):
    """The device asking to play."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="Stable device id (counts once against the stream limit).",
    )
    type: Literal["web", "mobile", "tv", "console", "other"] = "web"
    model: str | None = Field(default=None, max_length=128)


class PlaybackRequest(_Model):
    """Body of POST /v1/events/{id}/playback."""

    device: DeviceInfo


class RefreshRequest(_Model):
    """Body of POST /v1/sessions/{id}/refresh: the playback token being replaced."""

    token: str = Field(max_length=2048)


class CdnChoice(BaseModel):
    """Where to fetch from: base URL and manifest URL on that CDN."""

    name: str
    manifest_url: str


class PlayerConfig(BaseModel):
    """Settings the player applies."""

    low_latency: bool
    segment_duration_ms: int
    dvr_window_s: int
    heartbeat_interval_s: float
    refresh_at: int = Field(description="Epoch seconds at which to call the refresh endpoint.")


class SteeringChoice(BaseModel):
    """Content steering for this session, consistent with `cdn` (its initial pathway)."""

    pathway: str = Field(description="Initial pathway: the name of `cdn`.")
    url: str = Field(description="HLS steering manifest of this session (SERVER-URI).")
    dash_url: str = Field(description="DASH-IF steering manifest of this session.")
    manifest_url: str = Field(
        description="`cdn.manifest_url` asking the origin to start the session on `pathway`."
    )


class PlaybackGrant(BaseModel):
    """A successful authorisation."""

    session_id: str
    token: str
    valid_from: int
    expires_at: int
    manifest_url: str
    cdn: CdnChoice
    fallbacks: list[CdnChoice]
    waiting_room: bool = Field(
        description="True when pre-authorised before the start (token valid from the start)."
    )
    degraded: bool = Field(
        description="True when granted from a known-good decision while the entitlement store was unavailable."
    )
    player: PlayerConfig
    steering: SteeringChoice | None = None


class ErrorBody(BaseModel):
    """Every error: a machine-readable reason, a message for people, whether retrying can help."""

    reason: str
    message: str
    retryable: bool = False
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """Error envelope."""

    error: ErrorBody


class DevTokenRequest(_Model):
    """Body of POST /dev/idp/token (development identity provider)."""

    sub: str = Field(pattern=r"^[A-Za-z0-9._:@-]{1,128}$", description="Account id.")
    ttl_s: int = Field(default=3600, ge=1, le=7 * 86_400)


class DevTokenResponse(BaseModel):
    """A viewer JWT minted by the development identity provider."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
