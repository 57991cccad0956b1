"""Console routes on the control plane.

    GET  /console/                        the console page (login form until signed in)
    GET  /console/assets/{name}           its script, style sheet and vendored uPlot
    POST /console/api/login               {"key": "<API key>"} → session cookie + CSRF token
    POST /console/api/logout              forget the session
    GET  /console/api/session             who is signed in, role, CSRF token
    GET  /console/api/audience            live playback sessions per event
    GET  /console/api/events/{id}/live    the live view of one event (polled every second)

The page then calls the operator API itself (``/v1/events``, ``/v1/audit``, ``/v1/steering``…)
with the cookie and ``X-CSRF-Token``; the operator dependency of the app accepts either that
or ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from mainevent.control.auth import OperatorAuth
from mainevent.control.console.live import LiveView
from mainevent.control.console.runtime import ConsoleRuntime
from mainevent.control.console.sessions import COOKIE, ConsoleSession
from mainevent.control.errors import ControlError, Forbidden, NotFound
from mainevent.control.schemas import ID_PATTERN
from mainevent.control.store import Actor, ControlStore

__all__ = ["LoginIn", "add_console_routes"]

_ID = re.compile(ID_PATTERN)

_ASSETS = {
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
}
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class LoginIn(BaseModel):
    """A console login: the operator's API key."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=256, description="The operator's API key.")


def _web_dir() -> Path:
    return Path(str(resources.files("mainevent") / "web"))


def _session_out(s: ConsoleSession) -> dict[str, Any]:
    return {
        "name": s.actor.name,
        "role": s.actor.role,
        "csrf": s.csrf,
        "expires_at": s.expires_at,
    }


def _same_origin(request: Request) -> bool:
    """A browser's ``Origin`` (when sent) names this host: no login from another site's page."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def add_console_routes(
    app: FastAPI,
    console: ConsoleRuntime,
    operators: OperatorAuth,
    store: ControlStore,
    own_metrics: Callable[[], Awaitable[str]],
    audience: Callable[[], Awaitable[dict[str, int] | None]],
    errors: Callable[..., dict[int | str, dict[str, Any]]],
) -> None:
    """Add the routes above; ``own_metrics`` renders the app's own ``/metrics`` text,
    ``audience`` counts the live playback sessions per event, ``errors(*codes)`` the app's
    OpenAPI error responses (the error envelope)."""
    s = console.settings
    live = console.live = LiveView(
        telemetry_url=s.telemetry_url,
        metrics_targets=s.metrics_targets,
        own_metrics=own_metrics,
        timeout_s=s.scrape_timeout_s,
        clock=console.clock,
    )

    async def actor_of(request: Request, need: str) -> Actor:
        header = request.headers.get("authorization")
        if header is None and console.has_session(request):
            return await console.authorize(request, need)
        return operators.authenticate(header, need)

    @app.get("/console", include_in_schema=False)
    def console_redirect() -> Response:
        return RedirectResponse("/console/", status_code=308)

    @app.get("/console/", include_in_schema=False)
    def console_page() -> Response:
        path = _web_dir() / "console.html"
        if not path.is_file():
            return Response("console page not installed\n", 404, media_type="text/plain")
        return Response(
            path.read_bytes(), media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )

    @app.get("/console/assets/{name}", include_in_schema=False)
    def console_asset(name: str) -> Response:
        entry = _ASSETS.get(name)
        path = _web_dir() / entry[0] if entry else None
        if entry is None or path is None or not path.is_file():
            raise NotFound("not_found", f"no console asset {name!r}")
        return Response(
            path.read_bytes(),
            media_type=entry[1],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @app.post(
        "/console/api/login", tags=["console"], responses=errors(401, 403, 413, 422, 429, 503)
    )
    async def login(body: LoginIn, request: Request) -> Response:
        """Sign in with an operator API key: sets the session cookie (HttpOnly, SameSite=Strict)
        and answers the CSRF token every change must carry (429 after repeated failures)."""
        if not _same_origin(request):
            raise Forbidden("cross_origin", "sign in from the console page itself")
        address = request.client.host if request.client else "-"
        token, session = await console.sessions.login(body.key, address, console.clock())
        resp = JSONResponse(_session_out(session), headers={"Cache-Control": "no-store"})
        resp.set_cookie(
            COOKIE,
            token,
            max_age=int(s.session_ttl_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=s.secure_cookie,
        )
        return resp

    @app.post(
        "/console/api/logout",
        tags=["console"],
        status_code=204,
        responses=errors(403, 413, 422, 503),
    )
    async def logout(request: Request) -> Response:
        """Forget the console session (and its cookie)."""
        if not _same_origin(request):
            raise Forbidden("cross_origin", "sign out from the console page itself")
        await console.sessions.logout(request.cookies.get(COOKIE))
        resp = Response(status_code=204)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    @app.get("/console/api/session", tags=["console"], responses=errors(401, 422, 503))
    async def session(request: Request) -> Response:
        """Who is signed in, with which role, and the CSRF token (401 when nobody is)."""
        current = await console.sessions.get(request.cookies.get(COOKIE), console.clock())
        if current is None:
            raise ControlError("not_signed_in", "sign in with your API key", status=401)
        return JSONResponse(_session_out(current), headers={"Cache-Control": "no-store"})

    @app.get("/console/api/audience", tags=["console"], responses=errors(401, 403, 422))
    async def event_audience(request: Request) -> dict[str, Any]:
        """Live playback sessions per event (the events list's audience column); `sessions` is
        null where the session store does not count them (Redis: shared by several workers)."""
        await actor_of(request, "read-only")
        return {"at": console.clock(), "sessions": await audience()}

    @app.get(
        "/console/api/events/{event_id}/live",
        tags=["console"],
        responses=errors(401, 403, 404, 422),
    )
    async def event_live(event_id: str, request: Request) -> Response:
        """The live view of an event: QoE series (last 120 s, per second, by event, CDN and
        region), alerts, pipelines, renditions' freshness, delivery tiers, playback counters."""
        await actor_of(request, "read-only")
        if not _valid_id(event_id):
            raise NotFound("event_not_found", f"no event {event_id!r}")
        await anyio.to_thread.run_sync(store.get_event, event_id)  # 404 for an unknown event
        body = await live.snapshot(event_id)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _valid_id(event_id: str) -> bool:
    return _ID.fullmatch(event_id) is not None
