"""What the console needs at run time: its settings, the login sessions and the live view."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from mainevent.control.auth import OperatorAuth
from mainevent.control.console.live import LiveView
from mainevent.control.console.sessions import (
    COOKIE,
    CSRF_HEADER,
    ConsoleSessions,
    ConsoleSessionStore,
    LoginLimiter,
    MemoryConsoleSessionStore,
)
from mainevent.control.console.settings import ConsoleSettings
from mainevent.control.store import Actor

__all__ = ["ConsoleRuntime", "build_console"]


@dataclass
class ConsoleRuntime:
    """The console of one control-plane process (its sessions live in `sessions.store`)."""

    settings: ConsoleSettings
    sessions: ConsoleSessions
    clock: Callable[[], float]
    live: LiveView | None = field(default=None)
    """Built by the routes (it reads the app's own /metrics in-process)."""

    def has_session(self, request: Request) -> bool:
        """The request carries a console cookie (and no API key)."""
        return COOKIE in request.cookies

    async def authorize(self, request: Request, need: str) -> Actor:
        """The operator behind the request's console cookie (CSRF-checked for changes)."""
        return await self.sessions.authorize(
            request.cookies.get(COOKIE),
            request.headers.get(CSRF_HEADER),
            request.method,
            need,
            self.clock(),
        )


def build_console(
    settings: ConsoleSettings,
    operators: OperatorAuth,
    clock: Callable[[], float],
    store: ConsoleSessionStore | None = None,
) -> ConsoleRuntime:
    """Sessions over the operators' API keys, with the failed-login limit of ``settings``, in
    ``store`` (None: this process's memory, at most ``settings.max_sessions``)."""
    return ConsoleRuntime(
        settings=settings,
        sessions=ConsoleSessions(
            operators,
            ttl_s=settings.session_ttl_s,
            limiter=LoginLimiter(settings.login_failures, settings.login_window_s),
            store=store or MemoryConsoleSessionStore(settings.max_sessions),
        ),
        clock=clock,
    )
