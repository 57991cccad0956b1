"""Drill API of the venue feed simulator: break one feed on command, over HTTP.

    GET  /status                       what the simulator is doing
    POST /faults/drop                  kill the feed abruptly (cut cable); it comes back if restart is on
    POST /faults/restart               stop the feed cleanly and start it again (new connection)
    POST /faults/stall   {"seconds": S}            send nothing for S seconds, connection open
    POST /faults/corrupt {"packets": N, "raw_bytes": B}   garbage in N TS payloads + B raw bytes
    POST /faults/desync  {"audio_offset_ms": MS}   shift audio against video (0 = back in sync)
    POST /faults/clear                 remove every fault

Bodies are validated; a bad one is answered 422 with the field and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mainevent.media.feed import FeedProcess


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


B = TypeVar("B", bound=_Body)


class Stall(_Body):
    seconds: float = Field(gt=0, le=3600)


class Corrupt(_Body):
    packets: int = Field(default=200, ge=0, le=1_000_000)
    raw_bytes: int = Field(default=0, ge=0, le=10_000_000)


class Desync(_Body):
    audio_offset_ms: int = Field(ge=-10_000, le=10_000)


def _command(feed: FeedProcess, name: str, model: type[B], apply: Callable[[B], None]) -> Route:
    """POST /faults/<name>: validate the JSON body with `model`, apply it, answer the status."""

    async def endpoint(request: Request) -> JSONResponse:
        try:
            body = model.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "reason": e["msg"]}
                for e in exc.errors()
            ]
            return JSONResponse({"error": "invalid body", "details": errors}, 422)
        apply(body)
        return JSONResponse({"ok": True, "action": name, "status": feed.status()})

    return Route(f"/faults/{name}", endpoint, methods=["POST"])


def create_feed_control_app(feed: FeedProcess) -> Starlette:
    """The drill API bound to one running feed."""

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(feed.status())

    routes: list[Any] = [
        Route("/status", status),
        _command(feed, "drop", _Body, lambda _: feed.drop()),
        _command(feed, "restart", _Body, lambda _: feed.restart()),
        _command(feed, "clear", _Body, lambda _: feed.clear()),
        _command(feed, "stall", Stall, lambda b: feed.stall(b.seconds)),
        _command(feed, "corrupt", Corrupt, lambda b: feed.inject_garbage(b.packets, b.raw_bytes)),
        _command(feed, "desync", Desync, lambda b: feed.desync_audio(b.audio_offset_ms)),
    ]
    return Starlette(routes=routes)
