"""Request and response bodies of the control-plane API (pydantic models → OpenAPI)."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mainevent.common.eventspec import DEMO_LADDER, Rung, ladder_problem, segment_duration_problem
from mainevent.control.lifecycle import EventStatus

_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_REGION = r"^[A-Za-z0-9_-]{1,32}$"
ID_PATTERN = _ID
"""Event ids (also the `<event>` of media paths) and CDN names."""
DEFAULT_CDNS = ("cdn-a", "cdn-b", "cdn-c")
"""The CDN edges `mainevent up` starts; the control plane's `cdns` setting defaults to them."""
MAX_RUNGS = 8
FEATURES = ("dvr", "telemetry_detail")
"""Optional features an operator may switch off for an event (degrade before playback does)."""
Feature = Literal["dvr", "telemetry_detail"]
PipelineMode = Literal["auto", "primary", "backup"]

Region = Annotated[str, StringConstraints(pattern=_REGION)]
CdnName = Annotated[str, StringConstraints(pattern=_ID)]
Tier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlackoutSpec(_Model):
    """Regions where the event is blacked out, optionally only in a time window."""

    regions: list[Region] = Field(
        min_length=1, max_length=300, description="Region codes (see the CIDR → region table)."
    )
    starts_at: AwareDatetime | None = Field(
        default=None, description="Blackout begins (None: always)."
    )
    ends_at: AwareDatetime | None = Field(default=None, description="Blackout ends (None: never).")

    @model_validator(mode="after")
    def _window(self, info: ValidationInfo) -> BlackoutSpec:
        if _stored(info):
            return self
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("a blackout's ends_at must be after its starts_at")
        return self


class EntitlementPolicy(_Model):
    """Who may watch."""

    subscription_tiers: list[Tier] = Field(
        default_factory=list, max_length=100, description="Plans that include the event."
    )
    ppv_product: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Pay-per-view product id."
    )
    ppv_price_cents: int | None = Field(
        default=None, ge=0, le=100_000_000, description="Price of the pay-per-view product."
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
    port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Primary feed's listen port (0 = the media plane picks one; `GET /v1/events/{id}/media` shows it).",
    )
    backup_port: int = Field(
        default=0, ge=0, le=65535, description="Backup feed's listen port (0 = picked)."
    )


def _stored(info: ValidationInfo) -> bool:
    """Validating a row read back from the store: rules added later must not make it unreadable."""
    return bool(info.context and info.context.get("stored"))


def _check_segment_duration(v: int) -> int:
    problem = segment_duration_problem(v)
    if problem is not None:
        raise ValueError(problem + " (the stack encodes at 30 fps with 500 ms parts)")
    return v


def _check_ladder(v: list[Rung]) -> list[Rung]:
    problem = ladder_problem(r.id for r in v)
    if problem is not None:
        raise ValueError(problem)
    return v


def _check_cdns(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("each CDN may be named once")
    return v


_SEGMENT_DURATION_DOC = (
    "Segment duration in ms, as the media plane accepts it: 1000-10000, dividing a day, whole "
    "frames at 30 fps and a multiple of the 500 ms LL-HLS part."
)


class EventSpecFields(_Model):
    """Operational configuration of an event (everything except id, status and schedule)."""

    allowed_regions: list[Region] = Field(
        default_factory=list,
        max_length=300,
        description="Regions that may watch; empty = everywhere.",
    )
    blackouts: list[BlackoutSpec] = Field(default_factory=list, max_length=100)
    policy: EntitlementPolicy = Field(default_factory=EntitlementPolicy)
    ladder: list[Rung] = Field(
        default_factory=lambda: list(DEMO_LADDER),
        min_length=1,
        max_length=MAX_RUNGS,
        description="Video rungs; rendition ids unique.",
    )
    segment_duration_ms: int = Field(
        default=2000, ge=1000, le=10_000, multiple_of=500, description=_SEGMENT_DURATION_DOC
    )
    latency_mode: Literal["standard", "low"] = Field(
        default="low", description="`low` = LL-HLS with parts."
    )
    ingest: IngestCredentials = Field(default_factory=IngestCredentials)
    cdns: list[CdnName] = Field(
        default_factory=lambda: list(DEFAULT_CDNS),
        min_length=1,
        max_length=16,
        description="CDNs enabled, preferred first: names from the control plane's `cdns` setting (default: all of them).",
    )
    dvr_window_s: int = Field(
        default=0, ge=0, le=86_400, description="Seconds viewers may seek back (0 = live only)."
    )
    rehearsal_lead_s: int = Field(
        default=1800,
        ge=0,
        le=7 * 86_400,
        description="A scheduled event enters rehearsal this long before `starts_at` (the supervisor moves it; 0 = at the start).",
    )
    pipeline_mode: PipelineMode = Field(
        default="auto",
        description="Which pipeline's segments are published: `auto` (health-based), or forced `primary` / `backup` (the `force_pipeline` command).",
    )
    degraded: list[Feature] = Field(
        default_factory=list,
        max_length=len(FEATURES),
        description="Optional features switched off for this event (the `degrade` command).",
    )

    @field_validator("segment_duration_ms")
    @classmethod
    def _segment_duration(cls, v: int, info: ValidationInfo) -> int:
        return v if _stored(info) else _check_segment_duration(v)

    @field_validator("ladder")
    @classmethod
    def _ladder(cls, v: list[Rung], info: ValidationInfo) -> list[Rung]:
        return v if _stored(info) else _check_ladder(v)

    @field_validator("cdns")
    @classmethod
    def _cdns(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return v if _stored(info) else _check_cdns(v)


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


# PATCH fields that may be left out but not set to null (null = "no value" only for the schedule):
# _not_null refuses an explicit null, and _no_null_in_schema keeps it out of the OpenAPI document.
_NOT_NULL = (
    "title",
    "allowed_regions",
    "blackouts",
    "policy",
    "ladder",
    "segment_duration_ms",
    "latency_mode",
    "ingest",
    "cdns",
    "dvr_window_s",
    "rehearsal_lead_s",
)


def _no_null_in_schema(schema: dict[str, Any]) -> None:
    for name in _NOT_NULL:
        prop = schema["properties"][name]
        branches = [b for b in prop.pop("anyOf", []) if b != {"type": "null"}]
        if len(branches) == 1:
            prop.update(branches[0])
        prop.pop("default", None)


class EventUpdate(_Model):
    """Body of PATCH /v1/events/{id}: only the fields given change (null only for the schedule)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_in_schema)

    title: str | None = Field(default=None, min_length=1, max_length=200)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    allowed_regions: list[Region] | None = Field(default=None, max_length=300)
    blackouts: list[BlackoutSpec] | None = Field(default=None, max_length=100)
    policy: EntitlementPolicy | None = None
    ladder: list[Rung] | None = Field(default=None, min_length=1, max_length=MAX_RUNGS)
    segment_duration_ms: int | None = Field(
        default=None, ge=1000, le=10_000, multiple_of=500, description=_SEGMENT_DURATION_DOC
    )
    latency_mode: Literal["standard", "low"] | None = None
    ingest: IngestCredentials | None = None
    cdns: list[CdnName] | None = Field(default=None, min_length=1, max_length=16)
    dvr_window_s: int | None = Field(default=None, ge=0, le=86_400)
    rehearsal_lead_s: int | None = Field(default=None, ge=0, le=7 * 86_400)

    @field_validator(*_NOT_NULL, mode="before")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("must not be null: leave the field out to keep its value")
        return v

    @field_validator("segment_duration_ms")
    @classmethod
    def _segment_duration(cls, v: int | None) -> int | None:
        return None if v is None else _check_segment_duration(v)

    @field_validator("ladder")
    @classmethod
    def _ladder(cls, v: list[Rung] | None) -> list[Rung] | None:
        return None if v is None else _check_ladder(v)

    @field_validator("cdns")
    @classmethod
    def _cdns(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_cdns(v)

    @model_validator(mode="after")
    def _schedule(self) -> EventUpdate:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class EventOut(EventSpecFields):
    """An event as the API returns it."""

    id: str
    title: str
    status: EventStatus
    starts_at: datetime | None
    ends_at: datetime | None
    segment_duration_ms: int = Field(description="Segment duration in ms.")
    version: int
    allowed_transitions: list[EventStatus]
    created_at: datetime
    updated_at: datetime


class EventList(BaseModel):
    """GET /v1/events."""

    events: list[EventOut]


class Override(_Model):
    """Go live although preflight checks fail: why (audited as `event.preflight.override`)."""

    reason: str = Field(min_length=3, max_length=500)


class TransitionRequest(_Model):
    """Body of POST /v1/events/{id}/transitions."""

    to: EventStatus
    override: Override | None = Field(
        default=None,
        description="Going live with failing (or no) preflight checks: the reason (audited).",
    )


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
