"""Operator API for pipeline selection, mounted beside the origin under `/_ops/`.

    GET  /_ops/redundancy                    selection status (mode, preferred, health, …)
    PUT  /_ops/redundancy                    {"mode": "auto" | "primary" | "backup"}  (secret)
    POST /_ops/ingest/{pipeline}/takeover    the next publisher with the right key replaces
                                             the live one of that feed within 60 s  (secret)
    POST /_ops/events/{event}/end            end the event: ENDLIST everywhere, start-over
                                             turns VOD, the VOD playlists and MPD appear, the
                                             end persisted for restarts (secret; 503 if the
                                             end record could not be written: retry)

Changing the selection needs the admin secret in `X-Mainevent-Admin-Secret` (401 without it,
403 when wrong). Errors are JSON `{"error": code, "detail": text}`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mainevent.media.redundancy.publisher import RedundantPublisher
from mainevent.media.redundancy.selector import AUTO, SelectorError
from mainevent.media.store import StoreError

ADMIN_SECRET_HEADER = "X-Mainevent-Admin-Secret"
PREFIX = "/_ops/"
ORIGIN_OPS = "/_ops/events/"
"""Per-event operator routes the origin app answers itself (highlights, `origin/clips.py`)."""


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


class Takeover(Protocol):
    def allow_takeover(self, within_s: float = 60.0) -> None: ...


class HasGateway(Protocol):
    @property
    def gateway(self) -> Takeover: ...


class Endable(Protocol):
    async def end(self) -> None: ...


def ops_app(
    publisher: RedundantPublisher | Callable[[], RedundantPublisher | None] | None,
    admin_secret: str | None,
    pipelines: Mapping[str, HasGateway] | None = None,
    events: Mapping[str, Endable] | None = None,
) -> Starlette:
    """The `/_ops/` routes for one stack (`publisher` may be a callable: the event whose
    selection they control starts after the origin does)."""

    def current() -> RedundantPublisher | None:
        return publisher() if callable(publisher) else publisher

    def denied(request: Request) -> JSONResponse | None:
        given = request.headers.get(ADMIN_SECRET_HEADER)
        if given is None:
            return _error(401, "missing_secret", f"send the admin secret in {ADMIN_SECRET_HEADER}")
        if not admin_secret or not hmac.compare_digest(given.encode(), admin_secret.encode()):
            return _error(403, "bad_secret", "the admin secret does not match")
        return None

    async def takeover(request: Request) -> JSONResponse:
        if (refused := denied(request)) is not None:
            return refused
        name = request.path_params["pipeline"]
        if pipelines is None or name not in pipelines:
            known = ", ".join(pipelines or ())
            return _error(404, "unknown_pipeline", f"no pipeline {name!r}; known: {known}")
        pipelines[name].gateway.allow_takeover()
        return JSONResponse({"pipeline": name, "takeover": "armed for 60 s"})

    async def status(request: Request) -> JSONResponse:
        publisher = current()
        if publisher is None:
            return _error(404, "no_redundancy", "this platform runs a single pipeline")
        return JSONResponse(publisher.status())

    async def force(request: Request) -> JSONResponse:
        if (refused := denied(request)) is not None:
            return refused
        publisher = current()
        if publisher is None:
            return _error(404, "no_redundancy", "this platform runs a single pipeline")
        try:
            body: Any = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, "bad_json", f"body is not JSON: {exc}")
        mode = body.get("mode") if isinstance(body, dict) else None
        if not isinstance(mode, str) or set(body) != {"mode"}:
            return _error(400, "bad_body", 'expected exactly {"mode": "<pipeline>|auto"}')
        try:
            return JSONResponse(await publisher.force(mode))
        except SelectorError as exc:
            choices = ", ".join((AUTO, *publisher.selector.order))
            return _error(422, "unknown_mode", f"{exc}; choose one of: {choices}")

    async def end(request: Request) -> JSONResponse:
        if (refused := denied(request)) is not None:
            return refused
        name = request.path_params["event"]
        if events is None or name not in events:
            known = ", ".join(events or ())
            return _error(404, "unknown_event", f"no event {name!r}; known: {known}")
        try:
            await events[name].end()  # persisted (crash-safe) before the answer
        except StoreError as exc:
            # The playlists ended already; only the record that keeps them ended across a
            # restart is missing. The end is idempotent: retrying writes it.
            return _error(503, "end_not_persisted", f"event {name!r} ended, but {exc}; retry")
        return JSONResponse(
            {
                "event": name,
                "ended": True,
                "vod": f"/live/{name}/vod.m3u8",
                "mpd": f"/live/{name}/vod.mpd",
            }
        )

    return Starlette(
        routes=[
            Route("/_ops/events/{event}/end", end, methods=["POST"]),
            Route("/_ops/redundancy", status, methods=["GET"]),
            Route("/_ops/redundancy", force, methods=["PUT"]),
            Route("/_ops/ingest/{pipeline}/takeover", takeover, methods=["POST"]),
        ]
    )


def _owns(ops: Starlette, scope: Scope) -> bool:
    """Whether one of the operator API's own routes matches (e.g. `/_ops/events/<e>/end`
    among the per-event routes the origin answers)."""
    return any(route.matches(scope)[0] is Match.FULL for route in ops.routes)


def with_ops(
    origin: ASGIApp,
    publisher: RedundantPublisher | Callable[[], RedundantPublisher | None] | None,
    secret: str | None,
    pipelines: Mapping[str, HasGateway] | None = None,
    events: Mapping[str, Endable] | None = None,
) -> ASGIApp:
    """`origin`, with `/_ops/...` requests answered by the operator API."""
    ops = ops_app(publisher, secret, pipelines, events)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path.startswith(PREFIX) and (not path.startswith(ORIGIN_OPS) or _owns(ops, scope)):
            await ops(scope, receive, send)
        else:
            await origin(scope, receive, send)

    return app
