"""Demo logins of the console: with no API keys configured, `mainevent up` generates one key per
role (kept in the data directory, so a restart keeps them) and prints the console URL with them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from mainevent.control.auth import hash_api_key
from mainevent.control.console.settings import ConsoleSettings
from mainevent.control.server import ensure_admin_key
from mainevent.control.settings import ApiKeySetting, ControlSettings, Role

__all__ = ["DEMO_KEY_FILES", "console_for_stack", "ensure_demo_logins"]

DEMO_KEY_FILES: dict[Role, tuple[str, str]] = {
    "operator": ("local-operator", "control-operator.key"),
    "read-only": ("local-viewer", "control-readonly.key"),
}
"""Role → (key name, file in the data directory)."""


def _key_in(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "me_" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def ensure_demo_logins(settings: ControlSettings) -> tuple[ControlSettings, dict[str, str]]:
    """With no API keys configured: an admin, an operator and a read-only key (role → key).
    With keys configured, nothing is generated and no login is returned."""
    if settings.api_keys:
        return settings, {}
    settings, admin = ensure_admin_key(settings)
    assert admin is not None
    logins = {"admin": admin}
    keys = list(settings.api_keys)
    for role, (name, file) in DEMO_KEY_FILES.items():
        key = _key_in(settings.data_dir / file)
        keys.append(ApiKeySetting(name=name, role=role, key_sha256=hash_api_key(key)))
        logins[role] = key
    return settings.model_copy(update={"api_keys": tuple(keys)}), logins


def console_for_stack(
    console: ConsoleSettings, *, telemetry_url: str, metrics_targets: Mapping[str, str]
) -> ConsoleSettings:
    """The console of a one-command platform: this stack's collector and `/metrics` targets,
    unless the settings name their own."""
    return console.model_copy(
        update={
            "telemetry_url": console.telemetry_url or telemetry_url,
            "metrics_targets": dict(metrics_targets) | dict(console.metrics_targets),
        }
    )
