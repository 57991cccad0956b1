"""Sans-IO playback session registry: heartbeats, expiry and the concurrent-stream limit.

:class:`SessionRegistry` is the sans-IO core; :class:`SessionStore` is the role the playback
service talks to, embedded (:class:`MemorySessionStore`, this process) or on Redis
(``mainevent.control.redis_state``: the same rules in Lua scripts, so the stream limit holds
across workers). Times are epoch seconds passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

__all__ = ["MemorySessionStore", "PlaybackSession", "SessionRegistry", "SessionStore"]


@dataclass(frozen=True, slots=True)
class PlaybackSession:
    """One player's session for one event on one device."""

    id: str
    account_id: str
    event_id: str
    device_id: str
    expires_at: float


class SessionRegistry:
    """Sessions by id and by account; expired sessions do not count and are swept lazily."""

    __slots__ = ("_by_account", "_by_id", "ttl")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._by_id: dict[str, PlaybackSession] = {}
        self._by_account: dict[str, set[str]] = {}

    def per_event(self, now: float) -> dict[str, int]:
        """Live sessions per event (the console's audience figure); expired ones not counted."""
        out: dict[str, int] = {}
        for s in self._by_id.values():
            if s.expires_at > now:
                out[s.event_id] = out.get(s.event_id, 0) + 1
        return out

    def active(self, account_id: str, now: float) -> list[PlaybackSession]:
        """Live sessions of an account (expired ones are dropped on the way)."""
        ids = self._by_account.get(account_id)
        if not ids:
            return []
        out = []
        for sid in list(ids):
            s = self._by_id[sid]
            if s.expires_at <= now:
                self.end(sid)
            else:
                out.append(s)
        return out

    def start(
        self,
        *,
        session_id: str,
        account_id: str,
        event_id: str,
        device_id: str,
        now: float,
        limit: int,
        until: float | None = None,
    ) -> PlaybackSession | None:
        """Open a session unless the account is at ``limit``; the same device replaces its old one."""
        active = self.active(account_id, now)
        others = [s for s in active if s.device_id != device_id]
        if len(others) >= limit:
            return None
        if len(others) != len(active):
            for s in active:
                if s.device_id == device_id:
                    self.end(s.id)
        session = PlaybackSession(
            session_id, account_id, event_id, device_id, max(now + self.ttl, until or 0.0)
        )
        self._by_id[session_id] = session
        self._by_account.setdefault(account_id, set()).add(session_id)
        return session

    def get(self, session_id: str, now: float) -> PlaybackSession | None:
        """The session if it exists and has not expired."""
        s = self._by_id.get(session_id)
        if s is None or s.expires_at <= now:
            return None
        return s

    def heartbeat(self, session_id: str, now: float) -> PlaybackSession | None:
        """Extend a live session; None if it is unknown or expired."""
        s = self.get(session_id, now)
        if s is None:
            return None
        s = replace(s, expires_at=max(s.expires_at, now + self.ttl))
        self._by_id[session_id] = s
        return s

    def restore(self, session: PlaybackSession, now: float) -> PlaybackSession:
        """Re-register a session proven by a valid playback token (e.g. after expiry or a restart)."""
        s = replace(session, expires_at=max(session.expires_at, now + self.ttl))
        self._by_id[s.id] = s
        self._by_account.setdefault(s.account_id, set()).add(s.id)
        return s

    def end(self, session_id: str) -> None:
        """Forget a session (player stopped)."""
        s = self._by_id.pop(session_id, None)
        if s is not None:
            ids = self._by_account.get(s.account_id)
            if ids is not None:
                ids.discard(session_id)
                if not ids:
                    del self._by_account[s.account_id]

    def __len__(self) -> int:
        return len(self._by_id)


class SessionStore(Protocol):
    """Where playback sessions live; the operations of :class:`SessionRegistry`, awaitable.

    A distributed store raises ``SharedStateUnavailable`` when it cannot answer.
    """

    @property
    def ttl(self) -> float:
        """Seconds a session lives without a heartbeat."""
        ...

    async def start(
        self,
        *,
        session_id: str,
        account_id: str,
        event_id: str,
        device_id: str,
        now: float,
        limit: int,
        until: float | None = None,
    ) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.start` (atomic: two workers never both take the last slot)."""
        ...

    async def get(self, session_id: str, now: float) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.get`."""
        ...

    async def heartbeat(self, session_id: str, now: float) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.heartbeat`."""
        ...

    async def restore(self, session: PlaybackSession, now: float) -> PlaybackSession:
        """See :meth:`SessionRegistry.restore`."""
        ...

    async def end(self, session_id: str) -> None:
        """See :meth:`SessionRegistry.end`."""
        ...

    async def count(self) -> int | None:
        """Sessions held (for /metrics), or None when the store cannot count cheaply."""
        ...

    async def per_event(self, now: float) -> dict[str, int] | None:
        """Live sessions per event; None where the store does not count them."""
        ...


class MemorySessionStore:
    """The embedded store: a :class:`SessionRegistry` in this process (never suspends)."""

    __slots__ = ("core",)

    def __init__(self, ttl: float) -> None:
        self.core = SessionRegistry(ttl)

    @property
    def ttl(self) -> float:
        """Seconds a session lives without a heartbeat."""
        return self.core.ttl

    async def start(
        self,
        *,
        session_id: str,
        account_id: str,
        event_id: str,
        device_id: str,
        now: float,
        limit: int,
        until: float | None = None,
    ) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.start`."""
        return self.core.start(
            session_id=session_id,
            account_id=account_id,
            event_id=event_id,
            device_id=device_id,
            now=now,
            limit=limit,
            until=until,
        )

    async def get(self, session_id: str, now: float) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.get`."""
        return self.core.get(session_id, now)

    async def heartbeat(self, session_id: str, now: float) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.heartbeat`."""
        return self.core.heartbeat(session_id, now)

    async def restore(self, session: PlaybackSession, now: float) -> PlaybackSession:
        """See :meth:`SessionRegistry.restore`."""
        return self.core.restore(session, now)

    async def end(self, session_id: str) -> None:
        """See :meth:`SessionRegistry.end`."""
        self.core.end(session_id)

    async def count(self) -> int | None:
        """Sessions held."""
        return len(self.core)

    async def per_event(self, now: float) -> dict[str, int] | None:
        """Live sessions per event."""
        return self.core.per_event(now)
