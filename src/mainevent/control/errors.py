"""Errors of the control plane, translated to HTTP at the API boundary.

ControlError                     reason + message + HTTP status (+ Retry-After)
 ├── NotFound (404)
 ├── Conflict (409)              illegal transition, idempotency key reused with another body
 ├── PreconditionFailed (412)    If-Match does not match the current ETag
 ├── PayloadTooLarge (413)       request body over ``max_body_bytes``
 ├── Invalid (422)               a field breaks a rule (``invalid_request``, one entry per field)
 ├── Forbidden / Unauthorized    operator or viewer credentials
 └── Unavailable (503)           overload, dependency down: retry after ``retry_after`` seconds

Messages name the field and the rule, never the value sent: a client's input is not echoed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Conflict",
    "ControlError",
    "Forbidden",
    "Invalid",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Unauthorized",
    "Unavailable",
    "invalid_request",
]

MAX_LISTED_ERRORS = 10
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ControlError(Exception):
    """An answer other than success; ``reason`` is machine-readable."""

    status = 400

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.details = details


class NotFound(ControlError):
    """The resource does not exist."""

    status = 404


class Conflict(ControlError):
    """The request conflicts with the resource's state."""

    status = 409


class PreconditionFailed(ControlError):
    """The resource changed since the client read it."""

    status = 412


class Unauthorized(ControlError):
    """No or invalid credentials."""

    status = 401


class Forbidden(ControlError):
    """Valid credentials without the right to do this."""

    status = 403


class Unavailable(ControlError):
    """Try again later."""

    status = 503


class PayloadTooLarge(ControlError):
    """The request body is larger than the server accepts."""

    status = 413


class Invalid(ControlError):
    """The request is well-formed but a field breaks a rule."""

    status = 422


def _field(loc: Sequence[int | str]) -> str:
    # Locations can hold client-chosen names (an unknown key): only short plain names are shown.
    parts = [
        str(p) if isinstance(p, int) or _SAFE_NAME.fullmatch(p) else "(unrecognised name)"
        for p in loc
    ]
    return ".".join(parts) or "body"


def invalid_request(
    errors: Iterable[Mapping[str, Any]], *, prefix: tuple[str, ...] = ()
) -> Invalid:
    """A 422 naming each offending field and the rule it breaks (pydantic errors, input dropped)."""
    listed: list[dict[str, str]] = []
    total = 0
    for e in errors:
        total += 1
        if len(listed) < MAX_LISTED_ERRORS:
            loc = tuple(e.get("loc", ()))
            if prefix and loc[: len(prefix)] != prefix:
                loc = prefix + loc
            msg = str(e.get("msg", "invalid"))
            listed.append(
                {"field": _field(loc), "rule": str(e.get("type", "invalid")), "message": msg}
            )
    summary = "; ".join(f"{x['field']}: {x['message']}" for x in listed[:3])
    more = total - min(total, 3)
    message = f"invalid request: {summary}" + (f" (and {more} more)" if more else "")
    details: dict[str, Any] = {"errors": listed}
    if total > len(listed):
        details["more_errors"] = total - len(listed)
    return Invalid("invalid_request", message, details=details)
