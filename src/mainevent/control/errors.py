"""Errors of the control plane, translated to HTTP at the API boundary.

ControlError                     reason + message + HTTP status (+ Retry-After)
 ├── NotFound (404)
 ├── Conflict (409)              illegal transition, idempotency key reused with another body
 ├── PreconditionFailed (412)    If-Match does not match the current ETag
 ├── Forbidden / Unauthorized    operator or viewer credentials
 └── Unavailable (503)           overload, dependency down: retry after ``retry_after`` seconds
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "ControlError",
    "Forbidden",
    "NotFound",
    "PreconditionFailed",
    "Unauthorized",
    "Unavailable",
]


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
