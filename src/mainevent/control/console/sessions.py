"""Console logins: an operator signs in with their API key and gets an opaque session.

The session id travels in an ``HttpOnly; SameSite=Strict`` cookie and is stored by its SHA-256
only (a dump of the store does not yield usable cookies). Each session carries a CSRF token the
page reads from ``GET /console/api/session`` and sends as ``X-CSRF-Token`` with every change;
a change authenticated by the cookie alone is refused. Failed logins are limited per client
address (then 429 with ``Retry-After``).

Where sessions live is a :class:`ConsoleSessionStore`: in this process's memory
(:class:`MemoryConsoleSessionStore`, tests), in the control database or on Redis
(``mainevent.control.console.session_stores``), so that a restart of the control plane keeps
operators signed in and every control worker knows every session. No clock of its own: every
call takes ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Protocol

from mainevent.common.shared import SharedStateUnavailable
from mainevent.control.auth import ROLE_RANK, OperatorAuth
from mainevent.control.errors import ControlError, Forbidden, Unauthorized
from mainevent.control.store import Actor

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "ConsoleSession",
    "ConsoleSessionStore",
    "ConsoleSessions",
    "LoginLimiter",
    "MemoryConsoleSessionStore",
    "session_digest",
]

log = logging.getLogger(__name__)

COOKIE = "mainevent_console"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_digest(token: str) -> str:
    """What a store keeps of a session id: its SHA-256 (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """One signed-in operator."""

    actor: Actor
    csrf: str
    created_at: float
    expires_at: float


class LoginLimiter:
    """At most ``failures`` failed logins per address within ``window_s``."""

    def __init__(self, failures: int, window_s: float, max_addresses: int = 10_000) -> None:
        self.failures = failures
        self.window_s = window_s
        self._max = max_addresses
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until ``address`` may try again, or None when it may try now."""
        times = self._seen.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) < self.failures:
            return None
        return times[0] + self.window_s - now

    def failed(self, address: str, now: float) -> None:
        """Count one failed login of ``address``."""
        times = self._seen.setdefault(address, deque())
        self._seen.move_to_end(address)
        times.append(now)
        while len(times) > self.failures:
            times.popleft()
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def succeeded(self, address: str) -> None:
        """A good login clears the address's failures."""
        self._seen.pop(address, None)


class ConsoleSessionStore(Protocol):
    """Console sessions by the digest of their id (``session_digest``); times are epoch s.

    A store that cannot answer raises :class:`SharedStateUnavailable`."""

    async def put(self, digest: str, session: ConsoleSession) -> None:
        """Keep ``session`` until its ``expires_at``."""
        ...

    async def get(self, digest: str, now: float) -> ConsoleSession | None:
        """The session, or None when there is none or it expired by ``now`` (then forgotten)."""
        ...

    async def delete(self, digest: str) -> None:
        """Forget the session (nothing happens when there is none)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class MemoryConsoleSessionStore:
    """This process's memory, the oldest forgotten first beyond ``max_sessions`` (tests, and
    the behaviour the shared stores must match)."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        self._max = max_sessions
        self._by_digest: OrderedDict[str, ConsoleSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    async def put(self, digest: str, session: ConsoleSession) -> None:
        self._by_digest[digest] = session
        while len(self._by_digest) > self._max:
            self._by_digest.popitem(last=False)

    async def get(self, digest: str, now: float) -> ConsoleSession | None:
        session = self._by_digest.get(digest)
        if session is None:
            return None
        if now >= session.expires_at:
            del self._by_digest[digest]
            return None
        return session

    async def delete(self, digest: str) -> None:
        self._by_digest.pop(digest, None)

    async def aclose(self) -> None:
        return None


def _unavailable(exc: SharedStateUnavailable) -> ControlError:
    # The cause (host, port, driver message) goes to the log, not to the browser.
    log.warning("console sessions: store unavailable: %s", exc)
    return ControlError(
        "console_sessions_unavailable",
        "the console's session store does not answer; try again shortly (API keys still work)",
        status=503,
        retry_after=1,
    )


class ConsoleSessions:
    """Logins, lookups and authorisation over a :class:`ConsoleSessionStore`."""

    def __init__(
        self,
        operators: OperatorAuth,
        *,
        ttl_s: float,
        limiter: LoginLimiter,
        store: ConsoleSessionStore | None = None,
    ) -> None:
        self.operators = operators
        self.ttl_s = ttl_s
        self.limiter = limiter
        self.store: ConsoleSessionStore = store or MemoryConsoleSessionStore()

    async def login(self, key: str, address: str, now: float) -> tuple[str, ConsoleSession]:
        """A new session for the holder of API key ``key``: (cookie value, session).

        401 ``invalid_credentials`` for an unknown key, 429 ``login_rate_limited`` once the
        address has failed too often (checked before the key, so guessing costs the same).
        """
        wait = self.limiter.retry_after(address, now)
        if wait is not None:
            raise ControlError(
                "login_rate_limited",
                "too many failed logins from this address; wait and try again",
                status=429,
                retry_after=wait,
            )
        try:
            actor = self.operators.authenticate(f"Bearer {key}", "read-only")
        except Unauthorized:
            self.limiter.failed(address, now)
            raise Unauthorized(
                "invalid_credentials", "that API key is not valid; check it and try again"
            ) from None
        self.limiter.succeeded(address)
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(
            actor=actor,
            csrf=secrets.token_urlsafe(24),
            created_at=now,
            expires_at=now + self.ttl_s,
        )
        try:
            await self.store.put(session_digest(token), session)
        except SharedStateUnavailable as exc:
            raise _unavailable(exc) from exc
        return token, session

    async def get(self, token: str | None, now: float) -> ConsoleSession | None:
        """The live session behind cookie value ``token``, or None (also when its operator's
        key is no longer configured, or no longer has that role)."""
        if not token:
            return None
        digest = session_digest(token)
        try:
            session = await self.store.get(digest, now)
            if session is not None and not self.operators.knows(session.actor):
                await self.store.delete(digest)
                return None
        except SharedStateUnavailable as exc:
            raise _unavailable(exc) from exc
        return session

    async def logout(self, token: str | None) -> None:
        """Forget the session (everywhere: the store is shared)."""
        if not token:
            return
        try:
            await self.store.delete(session_digest(token))
        except SharedStateUnavailable as exc:
            raise _unavailable(exc) from exc

    async def authorize(
        self, token: str | None, csrf: str | None, method: str, need: str, now: float
    ) -> Actor:
        """The operator of a cookie-authenticated request, if it may do ``method`` at role ``need``.

        401 without a live session; 403 ``csrf_token_invalid`` for a change without the
        session's CSRF token; 403 ``insufficient_role`` below ``need``.
        """
        session = await self.get(token, now)
        if session is None:
            raise Unauthorized(
                "missing_credentials",
                "sign in at /console/ or send the operator API key as `Authorization: Bearer <key>`",
            )
        if method.upper() not in SAFE_METHODS and not (
            csrf and hmac.compare_digest(csrf.encode(), session.csrf.encode())
        ):
            raise Forbidden(
                "csrf_token_invalid",
                "a change made with the console session needs its X-CSRF-Token header",
            )
        actor = session.actor
        if ROLE_RANK[actor.role] < ROLE_RANK[need]:
            raise Forbidden(
                "insufficient_role",
                f"this needs role {need!r}; {actor.name!r} has {actor.role!r}",
            )
        return actor
