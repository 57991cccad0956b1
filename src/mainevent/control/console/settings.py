"""Settings of the operations console (``console`` in the control plane's settings)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConsoleSettings"]


class ConsoleSettings(BaseModel):
    """Where the console's live view reads from, and how long a console login lasts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="Serve the console at `/console/`.")
    session_ttl_s: float = Field(
        default=12 * 3600,
        gt=0,
        le=7 * 86_400,
        description="A console login lasts this long (then the operator signs in again).",
    )
    max_sessions: int = Field(
        default=10_000,
        ge=1,
        description="Console logins kept at once by the in-memory store (tests; the oldest forgotten first). The control plane keeps them in its database, or on Redis with `redis_url`, until they expire.",
    )
    login_failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins allowed per client address per `login_window_s` (then 429).",
    )
    login_window_s: float = Field(
        default=60.0, gt=0, description="Window of the failed-login limit, seconds."
    )
    secure_cookie: bool = Field(
        default=False,
        description="Mark the session cookie `Secure` (set it when the console is behind HTTPS).",
    )
    telemetry_url: str = Field(
        default="",
        description="Telemetry service base URL (QoE charts and alerts); empty = no QoE charts.",
    )
    metrics_targets: dict[str, str] = Field(
        default_factory=dict,
        description="Name → `/metrics` URL scraped for the live view (`origin`, `shield`, edge names); "
        "the control plane's own counters are read in-process.",
    )
    scrape_timeout_s: float = Field(
        default=0.8, gt=0, le=10, description="Per-target timeout of one live-view refresh."
    )
