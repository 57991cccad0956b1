"""Entitlement sources: the SQL one, and a fault-injecting wrapper for drills and tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import anyio

from mainevent.control.entitlement import EventFacts, ViewerFacts
from mainevent.control.store import ControlStore

__all__ = ["EntitlementSource", "FaultInjectingSource", "StoreSource"]


class StoreUnavailable(Exception):
    """The entitlement store failed (injected or real)."""


class EntitlementSource(Protocol):
    """Where account facts and event snapshots come from."""

    async def viewer(self, account_id: str) -> ViewerFacts | None:
        """Entitlement facts of an account (None: no such account)."""
        ...

    async def event(self, event_id: str) -> EventFacts | None:
        """Playback snapshot of an event (None: no such event)."""
        ...


@dataclass
class StoreSource:
    """The SQL store: called from worker threads for a networked database; inline for a local
    SQLite file, whose primary-key lookups (~0.1 ms) cost less than the hop to a thread and back
    through a busy event loop."""

    store: ControlStore

    def __post_init__(self) -> None:
        self.inline = self.store.db.url.startswith("sqlite")

    async def viewer(self, account_id: str) -> ViewerFacts | None:
        """See :meth:`EntitlementSource.viewer`."""
        if self.inline:
            return self.store.load_viewer(account_id)
        return await anyio.to_thread.run_sync(self.store.load_viewer, account_id)

    async def event(self, event_id: str) -> EventFacts | None:
        """See :meth:`EntitlementSource.event`."""
        if self.inline:
            return self.store.event_facts(event_id)
        return await anyio.to_thread.run_sync(self.store.event_facts, event_id)


@dataclass
class FaultInjectingSource:
    """Wraps a source: ``fail`` makes viewer lookups raise, ``delay_s`` makes them slow."""

    inner: EntitlementSource
    fail: bool = False
    delay_s: float = 0.0
    viewer_calls: int = 0

    async def viewer(self, account_id: str) -> ViewerFacts | None:
        """See :meth:`EntitlementSource.viewer`."""
        self.viewer_calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise StoreUnavailable("injected entitlement-store failure")
        return await self.inner.viewer(account_id)

    async def event(self, event_id: str) -> EventFacts | None:
        """See :meth:`EntitlementSource.event`."""
        return await self.inner.event(event_id)
