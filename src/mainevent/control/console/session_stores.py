"""Console sessions in shared state: the control database (default) or Redis (``redis_url``).

Both keep a session by the SHA-256 of its id (the cookie value is never stored), with the
operator's name and role, the CSRF token and the expiry; a lookup after ``expires_at`` answers
None and forgets the session, logout deletes it. So a control-plane restart keeps operators
signed in, and every control worker (``control serve --workers N``) knows every session.

The database store runs its statements in a worker thread; expired rows are also swept on
every login. On Redis a session is one hash ``<prefix>cs:<digest>`` that Redis itself drops some
minutes after its expiry (``PEXPIRE``; the expiry stored in the hash is what counts, compared
with the caller's ``now``, as in the memory store). Database and Redis errors become
:class:`SharedStateUnavailable` at this boundary.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from mainevent.common.shared import SharedStateUnavailable
from mainevent.control.console.sessions import ConsoleSession
from mainevent.control.db import ConsoleSessionRow, Database
from mainevent.control.store import Actor

__all__ = ["DatabaseConsoleSessionStore", "RedisConsoleSessionStore"]

_GC_MARGIN_MS = 600_000


class DatabaseConsoleSessionStore:
    """Sessions in the control database's ``console_sessions`` table (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except SQLAlchemyError as exc:
            raise SharedStateUnavailable(f"database: {type(exc).__name__}: {exc}") from exc

    def _put(self, digest: str, s: ConsoleSession) -> None:
        with self.db.write.begin() as tx:
            tx.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= s.created_at)
            )
            tx.merge(
                ConsoleSessionRow(
                    digest=digest,
                    actor=s.actor.name,
                    role=s.actor.role,
                    csrf=s.csrf,
                    created_at=s.created_at,
                    expires_at=s.expires_at,
                )
            )

    def _get(self, digest: str, now: float) -> ConsoleSession | None:
        with self.db.read() as tx:
            row = tx.execute(
                select(ConsoleSessionRow).where(ConsoleSessionRow.digest == digest)
            ).scalar_one_or_none()
        if row is None:
            return None
        if now >= row.expires_at:
            self._delete(digest)
            return None
        return ConsoleSession(Actor(row.actor, row.role), row.csrf, row.created_at, row.expires_at)

    def _delete(self, digest: str) -> None:
        with self.db.write.begin() as tx:
            tx.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.digest == digest))

    async def put(self, digest: str, session: ConsoleSession) -> None:
        await self._run(self._put, digest, session)

    async def get(self, digest: str, now: float) -> ConsoleSession | None:
        found: ConsoleSession | None = await self._run(self._get, digest, now)
        return found

    async def delete(self, digest: str) -> None:
        await self._run(self._delete, digest)

    async def aclose(self) -> None:
        return None  # the database belongs to the control plane


class RedisConsoleSessionStore:
    """Sessions on Redis (one primary), shared by every control worker."""

    def __init__(self, client: aioredis.Redis, prefix: str = "me:") -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, digest: str) -> str:
        return f"{self.prefix}cs:{digest}"

    async def put(self, digest: str, session: ConsoleSession) -> None:
        key = self._key(digest)
        fields: dict[Any, Any] = {
            "actor": session.actor.name,
            "role": session.actor.role,
            "csrf": session.csrf,
            "created_at": repr(session.created_at),
            "expires_at": repr(session.expires_at),
        }
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=fields)
                # Relative to Redis's clock, with a margin: the hash's `expires_at` decides,
                # Redis's expiry only collects the garbage.
                ttl_ms = math.ceil((session.expires_at - session.created_at) * 1000)
                pipe.pexpire(key, ttl_ms + _GC_MARGIN_MS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SharedStateUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def get(self, digest: str, now: float) -> ConsoleSession | None:
        try:
            raw = await self.client.hgetall(self._key(digest))
            h = {str(k): str(v) for k, v in raw.items()}
            if not h:
                return None
            if now >= float(h["expires_at"]):
                await self.client.delete(self._key(digest))
                return None
        except (RedisError, OSError) as exc:
            raise SharedStateUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        return ConsoleSession(
            Actor(h["actor"], h["role"]), h["csrf"], float(h["created_at"]), float(h["expires_at"])
        )

    async def delete(self, digest: str) -> None:
        try:
            await self.client.delete(self._key(digest))
        except (RedisError, OSError) as exc:
            raise SharedStateUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self.client.aclose()
