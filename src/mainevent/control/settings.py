"""Control-plane settings: frozen, validated, loaded once from defaults → TOML → environment.

They live under the ``control`` table of the config file and the ``MAINEVENT_CONTROL__`` prefix in
the environment, e.g. ``MAINEVENT_CONTROL__DATABASE_URL=postgresql+psycopg://...``. Lists and
tables are given as JSON in the environment.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mainevent.common.tokens import DEV_TOKEN_KEY_HEX, DEV_TOKEN_KID
from mainevent.config import ENV_PREFIX, ConfigError
from mainevent.control.console.settings import ConsoleSettings

Role = Literal["admin", "operator", "read-only"]

# Development-only defaults: a fixed playback-token key (from mainevent.common.tokens) and viewer-JWT
# secret let the origin, the control plane and the load generator agree out of the box.
# Production configs must replace them.
DEV_IDP_SECRET = "mainevent-development-identity-provider-secret"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiKeySetting(_Frozen):
    """One operator API key (sent as `Authorization: Bearer <key>`)."""

    name: str = Field(
        min_length=1,
        max_length=64,
        description="Who holds the key; recorded as the actor in the audit log.",
    )
    role: Role = Field(
        description="`admin` (everything), `operator` (events), `read-only` (GET only)."
    )
    key_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="Hex SHA-256 of the key (the key itself is never stored).",
    )


class TokenKeySetting(_Frozen):
    """One playback-token signing key (EdgeAuth HMAC secret)."""

    kid: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Key id carried in tokens as `kid=`."
    )
    secret_hex: str = Field(
        pattern=r"^([0-9a-fA-F]{2}){16,}$", description="Hex-encoded secret, at least 16 bytes."
    )
    not_after: float | None = Field(
        default=None,
        description="Epoch seconds after which tokens signed with this key are refused (`key_retired`).",
    )


class RegionRange(_Frozen):
    """One row of the client-address → region table (the telemetry collector's too)."""

    cidr: str = Field(description="IPv4 or IPv6 network, e.g. `203.0.113.0/24`.")
    region: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Region code (ISO country or a custom region).",
    )
    isp: str = Field(
        default="unknown",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Network operator of addresses in the network (telemetry's ISP dimension; "
        "the control plane does not use it).",
    )

    @field_validator("cidr")
    @classmethod
    def _net(cls, v: str) -> str:
        ipaddress.ip_network(v, strict=False)
        return v


class SteeringSettings(_Frozen):
    """Content steering: the policy's parameters (`mainevent.control.steering`) and its probes."""

    ttl_s: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="TTL of steering manifests: players reload this often; drains move a share per TTL.",
    )
    quorum: int = Field(
        default=2,
        ge=1,
        le=4,
        description="Bad signals (error rate, rebuffer ratio, TTFB p95, probe availability) that make a CDN degraded in a region.",
    )
    min_dwell_s: float = Field(
        default=30.0,
        ge=0,
        description="A session that moved stays this long; a CDN's state lasts at least this long.",
    )
    recover_hold_s: float = Field(
        default=30.0,
        ge=0,
        description="A degraded CDN must look healthy this long before sessions return to it.",
    )
    failure_drain_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of a failing CDN's sessions in a region moved off per TTL (0.5: all within 2 TTLs).",
    )
    drain_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Default share per TTL of an operator drain or pin given without a rate.",
    )
    return_share: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Share of the sessions that left a recovered CDN sent back per TTL.",
    )
    session_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A session whose player stopped asking for this long stops counting against caps (at least one TTL).",
    )
    capacity: dict[str, int] = Field(
        default={},
        description="CDN name → most sessions it may carry (absent: unlimited).",
    )
    cost: dict[str, float] = Field(
        default={},
        description="CDN name → relative cost per session (default 1); new sessions spread ∝ 1/cost.",
    )
    min_reload_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="A session asking more often than this (after a burst of 5) gets 429 with Retry-After.",
    )
    probe_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the steering server probes each CDN edge from each region in `probe_regions`.",
    )
    probe_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="A probe slower than this counts as failed (and its TTFB as this long).",
    )
    probe_window: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Probes per (region, CDN) that make up its signal (the last N): availability = share that succeeded, TTFB p95 counting failures as the timeout; with the default thresholds two failures in ten make a CDN degraded there.",
    )
    public_url: str = Field(
        default="/steering",
        description="Steering URL prefix given to players in playback grants (the media plane's `delivery.steering_url`).",
    )
    probe_path: str | None = Field(
        default=None,
        pattern=r"^/",
        description="Path probed on every CDN (e.g. `/live/final/master.m3u8`); None: no probes. `mainevent up` probes its event's multivariant playlist.",
    )
    probe_regions: tuple[str, ...] = Field(
        default=(),
        description="Regions to probe from (sent as `X-Client-Region`); empty: one probe for every region.",
    )


class ControlSettings(_Frozen):
    """Event control plane and playback API."""

    host: str = Field(
        default="127.0.0.1", description="Listen address of `mainevent control serve`."
    )
    port: int = Field(
        default=8090, ge=0, le=65535, description="Listen port (0 = pick a free one)."
    )
    database_url: str = Field(
        default="sqlite:///data/control.db",
        description="SQLAlchemy URL: a SQLite file by default, `postgresql+psycopg://user@host/db` for PostgreSQL.",
    )
    redis_url: str | None = Field(
        default=None,
        pattern=r"^(redis|rediss|unix)://",
        description="Redis holding playback sessions, rate-limit buckets and the decision cache, shared by every control-plane worker (e.g. `redis://127.0.0.1:6379/0`); None: kept in this process (one worker only).",
    )
    redis_prefix: str = Field(
        default="me:",
        pattern=r"^[A-Za-z0-9:._-]{0,32}$",
        description="Prefix of every Redis key (several deployments may share one Redis).",
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="A Redis call slower than this fails: new starts get 503 `session_store_unavailable`, refreshes of playing sessions go on (fail-open).",
    )
    data_dir: Path = Field(
        default=Path("data"),
        description="Where the generated development admin key is written when no API keys are configured.",
    )
    api_keys: tuple[ApiKeySetting, ...] = Field(
        default=(),
        description="Operator API keys. When empty, `control serve` generates an admin key and writes it to `<data_dir>/control-admin.key`.",
    )
    token_keys: tuple[TokenKeySetting, ...] = Field(
        default=(TokenKeySetting(kid=DEV_TOKEN_KID, secret_hex=DEV_TOKEN_KEY_HEX),),
        min_length=1,
        description="Playback-token keys; several may be active for rotation. The default is a public development key.",
    )
    signing_kid: str | None = Field(
        default=None,
        description="Key id new tokens are signed with (default: the first of `token_keys`).",
    )
    retired_kids: tuple[str, ...] = Field(
        default=(), description="Key ids no longer accepted (answered `key_retired`)."
    )
    token_ttl_s: int = Field(
        default=3600,
        ge=60,
        le=86_400,
        description="Lifetime of a playback token; players refresh before it ends.",
    )
    preauth_window_s: int = Field(
        default=3600,
        ge=0,
        le=7 * 86_400,
        description="How long before the start viewers are pre-authorised in the waiting room (token valid from the start).",
    )
    jwt_issuer: str = Field(
        default="mainevent-dev-idp", description="Required `iss` of viewer JWTs."
    )
    jwt_audience: str = Field(default="mainevent", description="Required `aud` of viewer JWTs.")
    jwt_public_keys_pem: tuple[str, ...] = Field(
        default=(), description="PEM public keys (RS256/ES256) of the production identity provider."
    )
    dev_idp_secret: str | None = Field(
        default=DEV_IDP_SECRET,
        description="HS256 secret of the built-in development identity provider; None disables it (and `/dev/idp/token`).",
    )
    regions: tuple[RegionRange, ...] = Field(
        default=(
            RegionRange(cidr="127.0.0.0/8", region="local", isp="loopback"),
            RegionRange(cidr="::1/128", region="local", isp="loopback"),
        ),
        description="Client address → region (and ISP) table, longest prefix wins; the telemetry collector uses it too unless `telemetry.networks` is set.",
    )
    trusted_edges: tuple[str, ...] = Field(
        default=(),
        description="CIDRs of edges whose `X-Forwarded-For` and region header are trusted.",
    )
    edge_region_header: str = Field(
        default="x-edge-region", description="Header a trusted edge sets to the viewer's region."
    )
    cdns: dict[str, str] = Field(
        default={"cdn-a": "", "cdn-b": "", "cdn-c": ""},
        min_length=1,
        description="CDN name → base URL prepended to manifest URLs (empty: same host). Events may only name these; the default is the edges `mainevent up` starts.",
    )
    media_ops_url: str | None = Field(
        default=None,
        description="Origin base URL the control plane pushes each event's highlights to (`PUT <url>/_ops/events/<id>/highlights`); None keeps them in the control plane only. `mainevent up` sets its own origin.",
    )
    media_admin_secret: str | None = Field(
        default=None,
        description="Admin secret sent with the push (`X-Mainevent-Admin-Secret`); `mainevent up` uses its own.",
    )
    max_body_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request body accepted, on every route; larger ones (declared or chunked) are answered 413 `body_too_large` before they are read.",
    )
    session_ttl_s: float = Field(
        default=90.0,
        gt=0,
        le=3600,
        description="A playback session without a heartbeat for this long no longer counts against the stream limit.",
    )
    heartbeat_interval_s: float = Field(
        default=30.0, gt=0, le=600, description="Heartbeat interval told to players."
    )
    account_rate: float = Field(
        default=2.0,
        gt=0,
        description="Playback/purchase requests per second per account (token bucket).",
    )
    account_burst: float = Field(default=20.0, ge=1, description="Bucket size per account.")
    address_rate: float = Field(
        default=50.0, gt=0, description="Requests per second per client address (token bucket)."
    )
    address_burst: float = Field(default=500.0, ge=1, description="Bucket size per client address.")
    max_in_flight: int = Field(
        default=512, ge=1, description="Admission control: hard cap of requests in progress."
    )
    lean_playback: bool = Field(
        default=True,
        description="Answer playback starts whose decision is cached in the HTTP front, without FastAPI (same responses; off: every request goes through the route).",
    )
    decision_ttl_s: float = Field(
        default=60.0,
        ge=0,
        description="How long an entitlement answer is reused without asking the store.",
    )
    known_good_ttl_s: float = Field(
        default=6 * 3600.0,
        ge=0,
        description="How long a positive answer keeps a viewer playing when the store is failing.",
    )
    fail_open_known_good: bool = Field(
        default=True,
        description="Keep granting viewers with a cached or prior positive decision while the entitlement store is down.",
    )
    store_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="Entitlement-store lookups slower than this count as failures.",
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive store failures that open the circuit breaker."
    )
    breaker_open_s: float = Field(
        default=5.0,
        gt=0,
        description="How long the breaker stays open before probing the store again.",
    )
    purchase_concurrency: int = Field(
        default=8, ge=1, description="Size of the purchase bulkhead (payment calls in flight)."
    )
    payment_latency_s: float = Field(
        default=0.05, ge=0, description="Latency of the built-in test-double payment provider."
    )
    payment_failure_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of test-double payment calls that fail (provider unavailable).",
    )
    steering: SteeringSettings = Field(
        default=SteeringSettings(),
        description="Content steering (multi-CDN), see `SteeringSettings`.",
    )
    console: ConsoleSettings = Field(
        default=ConsoleSettings(),
        description="Operations console at `/console/` (login, live view), see `ConsoleSettings`.",
    )

    @field_validator("cdns")
    @classmethod
    def _cdn_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
                raise ValueError(
                    "CDN names must be 1-64 lowercase letters, digits, '-' or '_' (starting with a letter or digit)"
                )
        return v

    @field_validator("dev_idp_secret")
    @classmethod
    def _empty_disables(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None  # an empty value switches the development identity provider off
        if len(v) < 16:
            raise ValueError(
                "must be at least 16 characters (or empty to disable the development issuer)"
            )
        return v


def load_control_settings(
    *,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ControlSettings:
    """Build control settings from defaults, the `[control]` table of a TOML file, the environment and overrides."""
    from mainevent.config import _env_tree, _merge  # same parsing rules as the main settings

    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = dict(tomllib.loads(file.read_text()).get("control", {}))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    if environ is not None:
        env = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX + "CONTROL__")}
        data = _merge(data, _env_tree(env).get("control", {}))
    if overrides:
        data = _merge(data, overrides)
    try:
        return ControlSettings.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  control.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError("invalid control-plane configuration:\n" + "\n".join(lines)) from None


def _shown_default(name: str, default: Any) -> str:
    if name in ("token_keys", "regions"):
        return "see below"
    if isinstance(default, Path):
        return f"`{default}`"
    if isinstance(default, str | dict | tuple | list):
        return f"`{json.dumps(list(default) if isinstance(default, tuple) else default)}`"
    return f"`{default!r}`"


def control_settings_reference() -> str:
    """The `[control]` settings as a Markdown table (kept in docs/control-plane.md, checked by a test)."""
    rows = ["| Setting | Default | Meaning |", "|---|---|---|"]
    for name, f in ControlSettings.model_fields.items():
        if isinstance(f.default, BaseModel):  # a nested section: one row per field
            for sub, sf in type(f.default).model_fields.items():
                desc = (sf.description or "").replace("|", "\\|")
                shown = _shown_default(sub, getattr(f.default, sub))
                rows.append(f"| `{name}.{sub}` | {shown} | {desc} |")
            continue
        desc = (f.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_shown_default(name, f.default)} | {desc} |")
    return "\n".join(rows)
