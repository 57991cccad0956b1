"""The origin: an ASGI app serving the live event's playlists and media (ARCHITECTURE.md URLs).

    /live/<event>/master.m3u8                multivariant playlist
    /live/<event>/<rendition>/index.m3u8     media playlist
    /live/<event>/<rendition>/init*.mp4      CMAF init section
    /live/<event>/<rendition>/<msn>.m4s      segment
    /live/<event>/<rendition>/<msn>.<k>.m4s  LL-HLS part
    /player/, /static/...                    web player
    /healthz, /metrics

Names are matched by strict patterns and never joined into file paths as given, so there is no
path traversal. Unknown and future objects are 404 with a short negative TTL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mainevent.media.origin.live import LiveEvent

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
_SEGMENT = re.compile(r"^(?P<msn>\d{1,18})\.m4s$")
_PART = re.compile(r"^(?P<msn>\d{1,18})\.(?P<part>\d{1,4})\.m4s$")
_INIT = re.compile(r"^init(-[0-9a-f]{12})?\.mp4$")
IMMUTABLE = "public, max-age=31536000, immutable"


def web_dir() -> Path:
    """Directory of the static player files (inside the installed package)."""
    return Path(str(resources.files("mainevent") / "web"))


class Origin:
    """Request handlers bound to the live events this origin serves."""

    def __init__(
        self,
        events: Mapping[str, LiveEvent],
        *,
        cors_origin: str = "*",
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.events = events
        self.cors_origin = cors_origin
        self.health_extra = health
        self.started = time.monotonic()

    def _headers(self, cache: str) -> dict[str, str]:
        return {"Cache-Control": cache, "Access-Control-Allow-Origin": self.cors_origin}

    def _count(self, event: LiveEvent | None, kind: str, status: int) -> None:
        if event is not None:
            event.metrics.requests.labels(kind, str(status)).inc()

    def _not_found(self, event: LiveEvent | None, kind: str, what: str) -> Response:
        self._count(event, kind, 404)
        return PlainTextResponse(f"not found: {what}\n", 404, headers=self._headers("max-age=1"))

    def _half_td(self, event: LiveEvent) -> str:
        return f"max-age={max(1, event.target_duration_s // 2)}"

    async def master(self, request: Request) -> Response:
        event = self.events.get(request.path_params["event"])
        if event is None:
            return self._not_found(None, "master", f"event {request.path_params['event']!r}")
        text = event.multivariant()
        if text is None:
            self._count(event, "master", 503)
            headers = self._headers("no-store") | {"Retry-After": "1"}
            return PlainTextResponse(
                "stream starting: no segment published yet\n", 503, headers=headers
            )
        self._count(event, "master", 200)
        return Response(
            text, 200, media_type=PLAYLIST_TYPE, headers=self._headers(self._half_td(event))
        )

    async def media_playlist(self, request: Request) -> Response:
        event = self.events.get(request.path_params["event"])
        rendition = request.path_params["rendition"]
        if event is None or not event.has_rendition(rendition):
            return self._not_found(event, "playlist", f"rendition {rendition!r}")
        text = event.playlist(rendition)
        if text is None:
            self._count(event, "playlist", 404)
            return PlainTextResponse(
                "no segment published yet\n", 404, headers=self._headers("max-age=1")
            )
        self._count(event, "playlist", 200)
        return Response(
            text, 200, media_type=PLAYLIST_TYPE, headers=self._headers(self._half_td(event))
        )

    async def media(self, request: Request) -> Response:
        event = self.events.get(request.path_params["event"])
        rendition = request.path_params["rendition"]
        name = request.path_params["name"]
        if event is None or not event.has_rendition(rendition):
            return self._not_found(event, "media", f"rendition {rendition!r}")
        if _INIT.match(name):
            kind = "init"
        elif m := _SEGMENT.match(name):
            kind = "segment"
            # Only segments listed now, or removed but still inside the RFC availability
            # period; future or long-gone numbers are 404 even if a copy is on disk.
            if not event.is_available(rendition, int(m["msn"])):
                return self._not_found(event, kind, name)
        elif _PART.match(name):
            kind = "part"
        else:
            return self._not_found(event, "other", name)
        data = await event.store.read(event.event_id, rendition, name)
        if data is None:
            return self._not_found(event, kind, name)
        self._count(event, kind, 200)
        return Response(
            data,
            200,
            media_type="video/mp4" if kind != "segment" else "video/iso.segment",
            headers=self._headers(IMMUTABLE),
        )

    async def healthz(self, request: Request) -> Response:
        body: dict[str, Any] = {
            "status": "ok",
            "uptime_s": round(time.monotonic() - self.started, 3),
            "events": {},
        }
        for eid, ev in self.events.items():
            body["events"][eid] = {
                r: {"last_msn": ev.last_msn(r), "since_publish_s": ev.stalled_for(r)}
                for r in ev.rendition_ids
            }
        if self.health_extra is not None:
            body.update(self.health_extra())
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def metrics(self, request: Request) -> Response:
        seen: set[int] = set()
        chunks = []
        for ev in self.events.values():
            reg = ev.metrics.registry
            if id(reg) not in seen:
                seen.add(id(reg))
                chunks.append(generate_latest(reg))
        return Response(b"".join(chunks), 200, media_type=CONTENT_TYPE_LATEST)

    async def player(self, request: Request) -> Response:
        path = web_dir() / "player.html"
        if not path.exists():
            return PlainTextResponse("player page not installed\n", 404)
        return FileResponse(path, headers={"Cache-Control": "no-cache"})


def create_app(
    events: Mapping[str, LiveEvent],
    *,
    cors_origin: str = "*",
    health: Callable[[], dict[str, Any]] | None = None,
) -> Starlette:
    """The origin ASGI app for `events` (event id → LiveEvent)."""
    origin = Origin(events, cors_origin=cors_origin, health=health)
    routes = [
        Route("/live/{event}/master.m3u8", origin.master),
        Route("/live/{event}/{rendition}/index.m3u8", origin.media_playlist),
        Route("/live/{event}/{rendition}/{name}", origin.media),
        Route("/healthz", origin.healthz),
        Route("/metrics", origin.metrics),
        Route("/player/", origin.player),
        Route(
            "/player",
            lambda r: RedirectResponse("/player/" + (f"?{r.url.query}" if r.url.query else "")),
        ),
        Mount("/static", StaticFiles(directory=web_dir(), check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.origin = origin
    return app
